// NVRTC compilation, loading through the runtime library API, and the on-disk CUBIN cache.
#include <cuda_runtime_api.h>
#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vm/cuda/cuda_status.h"
#include "vm/cuda/device_allocator.h"
#include "vm/cuda/rtc_compiler.h"
#include "vm/cuda/stream.h"

namespace nimble::vm::cuda {
namespace {

using ::nimble::testing::IsOk;
using ::nimble::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

// What a fusion pass would emit for gelu((x + y) * scale).
constexpr char kFusedSource[] = R"(
extern "C" __global__ void fused_add_scale_gelu(const float* __restrict__ x,
                                                const float* __restrict__ y,
                                                float* __restrict__ out, float scale, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const float v = (x[i] + y[i]) * scale;
    out[i] = 0.5f * v * (1.0f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v)));
  }
}
)";

std::string MakeTempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "nimble_rtc_XXXXXX").string();
  char* dir = mkdtemp(pattern.data());
  return dir == nullptr ? "" : std::string(dir);
}

class RtcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cache_dir_ = MakeTempDir();
    ASSERT_FALSE(cache_dir_.empty());
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(cache_dir_, ignored);
  }

  // Runs the fused kernel of `module` on random data and checks every element.
  void RunFused(const RtcModule& module) {
    NIMBLE_ASSERT_OK_AND_ASSIGN(cudaKernel_t kernel, module.GetKernel("fused_add_scale_gelu"));
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto stream, Stream::Create());
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto allocator, DeviceAllocator::Create({}));
    int n = 1000003;
    std::vector<float> x(n), y(n), out(n, NAN);
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> dist(-4.0f, 4.0f);
    for (int i = 0; i < n; ++i) {
      x[i] = dist(rng);
      y[i] = dist(rng);
    }
    const int64_t bytes = int64_t{n} * 4;
    NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceBuffer dx, allocator->AllocateBuffer(bytes, stream->get()));
    NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceBuffer dy, allocator->AllocateBuffer(bytes, stream->get()));
    NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceBuffer dout, allocator->AllocateBuffer(bytes, stream->get()));
    ASSERT_THAT(CudaStatus(cudaMemcpyAsync(dx.data(), x.data(), bytes, cudaMemcpyHostToDevice,
                                           stream->get()),
                           "h2d"),
                IsOk());
    ASSERT_THAT(CudaStatus(cudaMemcpyAsync(dy.data(), y.data(), bytes, cudaMemcpyHostToDevice,
                                           stream->get()),
                           "h2d"),
                IsOk());
    ASSERT_THAT(CudaStatus(cudaMemsetAsync(dout.data(), 0xFF, bytes, stream->get()), "poison"),
                IsOk());
    const float* px = dx.as<float>();
    const float* py = dy.as<float>();
    float* pout = dout.as<float>();
    float scale = 0.75f;
    void* args[] = {&px, &py, &pout, &scale, &n};
    ASSERT_THAT(module.Launch(kernel, dim3(264), dim3(256), args, 0, stream->get()), IsOk());
    ASSERT_THAT(CudaStatus(cudaMemcpyAsync(out.data(), dout.data(), bytes, cudaMemcpyDeviceToHost,
                                           stream->get()),
                           "d2h"),
                IsOk());
    ASSERT_THAT(stream->Synchronize(), IsOk());
    double max_err = 0;
    for (int i = 0; i < n; ++i) {
      const double v = (static_cast<double>(x[i]) + y[i]) * scale;
      const double ref = 0.5 * v * (1.0 + std::tanh(0.7978845608 * (v + 0.044715 * v * v * v)));
      const double err = std::abs(out[i] - ref) / std::max(1.0, std::abs(ref));
      if (!(err <= max_err)) max_err = err;  // NaN (unwritten) sticks
    }
    EXPECT_LE(max_err, 1e-5);
  }

  std::string cache_dir_;
};

TEST_F(RtcTest, CompilesRunsAndHitsTheDiskCacheOnSecondCompile) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto compiler, RtcCompiler::Create({.cache_dir = cache_dir_}));
  std::printf("RTC target %s\n", compiler->arch().c_str());
  EXPECT_THAT(compiler->arch(), MatchesRegex("sm_[0-9]+"));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto module, compiler->Load(kFusedSource, "fused.cu"));
  RunFused(*module);
  RtcStats stats = compiler->Stats();
  EXPECT_EQ(stats.compilations, 1);
  EXPECT_EQ(stats.disk_writes, 1);
  EXPECT_EQ(stats.disk_hits, 0);
  const std::filesystem::path entry =
      std::filesystem::path(cache_dir_) / (compiler->CacheKey(kFusedSource, {}) + ".cubin");
  EXPECT_TRUE(std::filesystem::exists(entry));

  // A second compiler (a restarted server) finds the entry on disk and does not compile.
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto restarted, RtcCompiler::Create({.cache_dir = cache_dir_}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto cached_module, restarted->Load(kFusedSource, "fused.cu"));
  RunFused(*cached_module);
  stats = restarted->Stats();
  EXPECT_EQ(stats.compilations, 0);
  EXPECT_EQ(stats.disk_hits, 1);

  // Other options are another entry; no temporary files are left behind.
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto fast,
                              restarted->Load(kFusedSource, "fused.cu", {"--use_fast_math"}));
  EXPECT_EQ(restarted->Stats().compilations, 1);
  int entries = 0;
  for (const auto& file : std::filesystem::directory_iterator(cache_dir_)) {
    EXPECT_EQ(file.path().extension(), ".cubin") << file.path();
    ++entries;
  }
  EXPECT_EQ(entries, 2);
}

TEST_F(RtcTest, CorruptCacheEntryIsRecompiledAndReplaced) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto compiler, RtcCompiler::Create({.cache_dir = cache_dir_}));
  const std::filesystem::path entry =
      std::filesystem::path(cache_dir_) / (compiler->CacheKey(kFusedSource, {}) + ".cubin");
  { std::ofstream(entry) << "not a cubin"; }
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto module, compiler->Load(kFusedSource, "fused.cu"));
  RunFused(*module);
  EXPECT_EQ(compiler->Stats().compilations, 1);
  EXPECT_EQ(compiler->Stats().disk_writes, 1);
  EXPECT_GT(std::filesystem::file_size(entry), 100u);
}

TEST_F(RtcTest, ReportsCompileErrorsWithTheLogAndUnknownKernels) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto compiler, RtcCompiler::Create({}));
  EXPECT_THAT(compiler->Load("extern \"C\" __global__ void k() { undeclared_thing(); }", "bad.cu"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("bad.cu"), HasSubstr("undeclared_thing"))));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto module, compiler->Load(kFusedSource, "fused.cu"));
  EXPECT_THAT(module->GetKernel("no_such_kernel"),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("no_such_kernel")));
}

TEST_F(RtcTest, CacheKeyCoversSourceAndOptions) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto compiler, RtcCompiler::Create({}));
  const std::string key = compiler->CacheKey("a", {});
  EXPECT_THAT(key, MatchesRegex("[0-9a-f]{64}"));
  EXPECT_EQ(key, compiler->CacheKey("a", {}));
  EXPECT_NE(key, compiler->CacheKey("b", {}));
  EXPECT_NE(key, compiler->CacheKey("a", {"-lineinfo"}));
  EXPECT_NE(compiler->CacheKey("ab", {"c"}), compiler->CacheKey("a", {"bc"}));
}

}  // namespace
}  // namespace nimble::vm::cuda
