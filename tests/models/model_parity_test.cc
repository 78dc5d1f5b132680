// Real dynamic models exported from PyTorch (scripts/export_models.py) against PyTorch's own
// outputs: one executable per model, compiled once, runs every case's shapes.
//
// The models directory comes from NIMBLE_MODELS_DIR (set by ctest's export fixture).
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/testing/status_matchers.h"
#include "compiler/driver/compiler.h"
#include "gtest/gtest.h"
#include "vm/runtime/npy.h"
#include "vm/virtual_machine.h"

namespace nimble {
namespace {

namespace fs = std::filesystem;

std::string ModelsDir() {
  const char* dir = std::getenv("NIMBLE_MODELS_DIR");
  return dir ? dir : "";
}

std::vector<std::string> Cases(const fs::path& model_dir) {
  std::vector<std::string> cases;
  std::ifstream manifest(model_dir / "manifest.txt");
  for (std::string line; std::getline(manifest, line);) {
    if (!line.empty()) cases.push_back(line);
  }
  return cases;
}

// Largest elementwise error relative to the reference's scale: |a - b| / (|b| + mean|b|).
double RelativeError(const vm::Tensor& actual, const vm::Tensor& expected) {
  const int64_t n = expected.num_elements();
  std::vector<double> a(n), b(n);
  auto load = [](const vm::Tensor& t, std::vector<double>& out) {
    for (int64_t i = 0; i < t.num_elements(); ++i) {
      switch (t.dtype()) {
        case vm::DType::kF32:
          out[i] = t.data<float>()[i];
          break;
        case vm::DType::kI64:
          out[i] = static_cast<double>(t.data<int64_t>()[i]);
          break;
        default:
          out[i] = NAN;
      }
    }
  };
  load(actual, a);
  load(expected, b);
  double mean_abs = 0;
  for (double v : b) mean_abs += std::abs(v);
  mean_abs = n ? mean_abs / n : 0;
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double err = std::abs(a[i] - b[i]) / (std::abs(b[i]) + mean_abs + 1e-30);
    if (!(err <= worst)) worst = std::isnan(err) ? INFINITY : err;
  }
  return worst;
}

class ModelParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelParityTest, MatchesPyTorchForEveryShapeWithOneExecutable) {
  const fs::path dir = fs::path(ModelsDir()) / GetParam();
  if (ModelsDir().empty() || !fs::exists(dir / "model.onnx")) {
    GTEST_FAIL() << "no exported model at " << dir << " (NIMBLE_MODELS_DIR unset or export failed)";
  }
  compiler::CompileReport report;
  compiler::CompileOptions options;
  options.report_at = {{"batch", 1}, {"seq", 128}, {"past", 0}, {"n", 1}, {"m", 128}};
#ifdef NIMBLE_PARITY_ON_CUDA
  // model_parity_cuda_test: compute on cuda:0 (fp32), the same PyTorch references and bound.
  options.device = vm::Device{vm::DeviceType::kCUDA, 0};
#endif
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto exe, compiler::CompileOnnxFile((dir / "model.onnx").string(), options, &report));
  const std::vector<std::string> cases = Cases(dir);
  ASSERT_FALSE(cases.empty());
  vm::VirtualMachine machine(exe);
  for (const std::string& name : cases) {
    SCOPED_TRACE(absl::StrCat(GetParam(), " case ", name));
    const fs::path case_dir = dir / "cases" / name;
    std::vector<vm::Tensor> inputs;
    for (const vm::TensorSignature& sig : exe->inputs) {
      NIMBLE_ASSERT_OK_AND_ASSIGN(
          vm::Tensor t, vm::ReadNpy((case_dir / "inputs" / (sig.name + ".npy")).string()));
      inputs.push_back(std::move(t));
    }
    NIMBLE_ASSERT_OK_AND_ASSIGN(std::vector<vm::Tensor> outputs, machine.Run(inputs));
    ASSERT_EQ(outputs.size(), exe->outputs.size());
    for (size_t i = 0; i < outputs.size(); ++i) {
      const std::string& out_name = exe->outputs[i].name;
      NIMBLE_ASSERT_OK_AND_ASSIGN(
          vm::Tensor expected, vm::ReadNpy((case_dir / "outputs" / (out_name + ".npy")).string()));
      ASSERT_EQ(outputs[i].dtype(), expected.dtype()) << out_name;
      ASSERT_EQ(outputs[i].shape(), expected.shape()) << out_name;
      EXPECT_LE(RelativeError(outputs[i], expected), 1e-4) << out_name;
    }
  }
#ifdef NIMBLE_PARITY_ON_CUDA
  std::printf("[ %s ] on cuda:0: %d of %d kernel calls, %d device copies\n", GetParam().c_str(),
              report.codegen.num_device_kernel_calls, report.codegen.num_kernel_calls,
              report.codegen.num_device_copies);
  if (GetParam() != "loop") {
    EXPECT_GT(report.codegen.num_device_kernel_calls, 0) << "the model's compute is on the GPU";
  }
#endif
  if (GetParam() == "gpt2") {
    EXPECT_GE(report.fused_attention, 2) << "every GPT-2 block's masked attention is fused";
  }
  if (GetParam() == "bert") {
    EXPECT_GE(report.fused_attention, 2) << "every BERT layer's attention is one Attention node";
  }
  // One executable served every case: nothing was recompiled per shape.
  EXPECT_EQ(exe.use_count(), 2) << "the executable is shared only by this test and its VM";
  std::printf(
      "[ %s ] memory plan at batch 1, length 128: arena %lld bytes vs %lld bytes of "
      "intermediates without reuse (symbolic: %s)\n",
      GetParam().c_str(), static_cast<long long>(report.arena_bytes_at),
      static_cast<long long>(report.intermediate_bytes_at), report.arena_bytes.c_str());
  // (Tiny buffers can cost more aligned to 64 bytes than they hold: only real plans.)
  if (report.intermediate_bytes_at > (1 << 20)) {
    EXPECT_LT(report.arena_bytes_at, report.intermediate_bytes_at) << "the planner reuses nothing";
  }
}

// Placement for the GPU, compiled only (no GPU needed): compute goes to cuda:0 and the
// host <-> device copies stay few. A model whose ops lack CUDA kernels in the middle of its graph
// would bounce tensors across (GPT-2's per-layer Split, Concat with past and mask went host ->
// GPU -> host -> GPU before those kernels existed: 135 copies for 259 kernel calls).
TEST_P(ModelParityTest, GpuPlacementKeepsCopiesFew) {
#ifndef NIMBLE_HAVE_CUDA
  GTEST_SKIP() << "built without the CUDA backend";
#else
  const fs::path dir = fs::path(ModelsDir()) / GetParam();
  if (ModelsDir().empty() || !fs::exists(dir / "model.onnx")) {
    GTEST_FAIL() << "no exported model at " << dir << " (NIMBLE_MODELS_DIR unset or export failed)";
  }
  compiler::CompileReport report;
  compiler::CompileOptions options;
  options.device = vm::Device{vm::DeviceType::kCUDA, 0};
  ASSERT_THAT(compiler::CompileOnnxFile((dir / "model.onnx").string(), options, &report).status(),
              ::nimble::testing::IsOk());
  const auto& c = report.codegen;
  std::printf("[ %s ] placed for cuda:0: %d of %d kernel calls, %d device copies\n",
              GetParam().c_str(), c.num_device_kernel_calls, c.num_kernel_calls,
              c.num_device_copies);
  if (GetParam() == "loop") return;  // its body is host control flow
  EXPECT_GT(c.num_device_kernel_calls, 0);
  if (c.num_kernel_calls >= 20) {  // the transformers (the LSTM model is two LSTM calls)
    EXPECT_GT(c.num_device_kernel_calls, c.num_kernel_calls / 2);
    EXPECT_LT(3 * c.num_device_copies, c.num_kernel_calls);
  }
#endif
}

INSTANTIATE_TEST_SUITE_P(Models, ModelParityTest, ::testing::Values("bert", "gpt2", "lstm", "loop"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace nimble
