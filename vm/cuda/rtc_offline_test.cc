// NVRTC compilation and the disk cache with a fixed target: needs the NVRTC library but no GPU,
// so it runs wherever the CUDA backend builds (CI included).
#include <stdlib.h>

#include <filesystem>
#include <string>

#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vm/cuda/rtc_compiler.h"

namespace nimble::vm::cuda {
namespace {

using ::nimble::testing::StatusIs;
using ::testing::HasSubstr;

constexpr char kSource[] = R"(
extern "C" __global__ void axpy(float a, const float* x, float* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] += a * x[i];
}
)";

TEST(RtcOfflineTest, CompilesForSm90AndSecondCompileHitsTheCache) {
  std::string pattern = (std::filesystem::temp_directory_path() / "nimble_rtc_XXXXXX").string();
  ASSERT_NE(mkdtemp(pattern.data()), nullptr);
  const std::string dir = pattern;
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto compiler, RtcCompiler::Create({.arch = 90, .cache_dir = dir}));
  EXPECT_EQ(compiler->arch(), "sm_90");
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::string cubin, compiler->CompileToCubin(kSource, "axpy.cu"));
  ASSERT_GT(cubin.size(), 4u);
  EXPECT_EQ(cubin.substr(0, 4),
            "\x7f"
            "ELF");
  EXPECT_NE(cubin.find("axpy"), std::string::npos) << "kernel symbol in the CUBIN";
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::string again, compiler->CompileToCubin(kSource, "axpy.cu"));
  EXPECT_EQ(again, cubin);
  RtcStats stats = compiler->Stats();
  EXPECT_EQ(stats.compilations, 1);
  EXPECT_EQ(stats.disk_hits, 1);
  EXPECT_EQ(stats.disk_writes, 1);
  EXPECT_THAT(compiler->CompileToCubin("__global__ void k() { nope(); }", "bad.cu"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("nope")));
  EXPECT_THAT(RtcCompiler::Create({.arch = 11}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("sm_11")));
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
}

}  // namespace
}  // namespace nimble::vm::cuda
