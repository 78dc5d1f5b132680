// BERT compiled for the GPU (--device=cuda) against the same model compiled for the CPU
// (label `cuda`; skipped with exit 77 without a GPU, and GTEST_SKIP without the model file).
// The model: argv[1], else $NIMBLE_BERT_ONNX, else the small BERT the integration tests export
// (build/models-small/bert/model.onnx).
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "base/testing/status_matchers.h"
#include "compiler/driver/compiler.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vm/kernels/cpu/fp16.h"
#include "vm/kernels/cuda/cuda_device.h"
#include "vm/virtual_machine.h"

namespace nimble::compiler {
namespace {

std::string g_model;

std::vector<vm::Tensor> BertInputs(const vm::Executable& exe, int64_t batch, int64_t seq,
                                   std::mt19937& rng) {
  std::vector<vm::Tensor> inputs;
  for (const vm::TensorSignature& sig : exe.inputs) {
    vm::Tensor t = *vm::Tensor::Empty(vm::DType::kI64, {batch, seq});
    int64_t* d = t.data<int64_t>();
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t valid = std::max<int64_t>(1, seq - b);  // later rows padded
      for (int64_t s = 0; s < seq; ++s) {
        int64_t& v = d[b * seq + s];
        if (sig.name == "input_ids") {
          v = std::uniform_int_distribution<int64_t>(0, 999)(rng);
        } else if (sig.name == "attention_mask") {
          v = s < valid ? 1 : 0;
        } else {
          v = s >= seq / 2 ? 1 : 0;
        }
      }
    }
    inputs.push_back(std::move(t));
  }
  return inputs;
}

double MaxAbsDiff(const std::vector<vm::Tensor>& a, const std::vector<vm::Tensor>& b) {
  double m = 0;
  EXPECT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    EXPECT_EQ(a[i].shape(), b[i].shape());
    EXPECT_EQ(b[i].device().type, vm::DeviceType::kCPU);
    for (int64_t j = 0; j < a[i].num_elements(); ++j) {
      const double d = std::abs(static_cast<double>(a[i].data<float>()[j]) - b[i].data<float>()[j]);
      m = std::max(m, std::isnan(d) ? INFINITY : d);
    }
  }
  return m;
}

class CudaBertTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(g_model)) GTEST_SKIP() << "no model at " << g_model;
  }
};

TEST_F(CudaBertTest, MatchesTheCpuExecutableAndDoesNotGrowDeviceMemory) {
  CompileOptions cpu_options;
  CompileOptions gpu_options;
  gpu_options.device = vm::Device{vm::DeviceType::kCUDA, 0};
  CompileReport report;
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto cpu_exe, CompileOnnxFile(g_model, cpu_options));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto gpu_exe, CompileOnnxFile(g_model, gpu_options, &report));
  std::printf("model %s: %d kernel calls, %d on cuda:0, %d device copies\n", g_model.c_str(),
              report.codegen.num_kernel_calls, report.codegen.num_device_kernel_calls,
              report.codegen.num_device_copies);
  EXPECT_GT(report.codegen.num_device_kernel_calls, report.codegen.num_kernel_calls / 2);
  // The executable round-trips through the file format.
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::string bytes, gpu_exe->Serialize());
  NIMBLE_ASSERT_OK_AND_ASSIGN(gpu_exe, vm::Executable::Load(bytes));

  vm::VirtualMachine cpu(cpu_exe);
  vm::VirtualMachine gpu(gpu_exe);
  std::mt19937 rng(7);
  double worst = 0;
  for (auto [batch, seq] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 1}, {1, 7}, {2, 33}, {1, 128}, {4, 64}, {3, 128}, {1, 384}}) {
    std::vector<vm::Tensor> in = BertInputs(*cpu_exe, batch, seq, rng);
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto want, cpu.Run(in));
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto got, gpu.Run(in));
    const double diff = MaxAbsDiff(want, got);
    std::printf("batch %lld seq %lld: max |cuda - cpu| = %.3g\n", static_cast<long long>(batch),
                static_cast<long long>(seq), diff);
    EXPECT_LE(diff, 1e-3) << "batch " << batch << " seq " << seq;
    worst = std::max(worst, diff);
  }

  // 10,000 calls of mixed shapes: live device memory returns to the same level.
  vm::Allocator* device = *vm::cuda_device::DefaultAllocator(0);
  std::vector<vm::Tensor> big = BertInputs(*cpu_exe, 4, 128, rng);
  ASSERT_THAT(gpu.Run(big).status(), testing::IsOk());
  const vm::AllocatorStats before = device->stats();
  const auto start = std::chrono::steady_clock::now();
  constexpr int kCalls = 10000;
  for (int i = 0; i < kCalls; ++i) {
    const int64_t batch = std::uniform_int_distribution<int64_t>(1, 4)(rng);
    const int64_t seq = std::uniform_int_distribution<int64_t>(1, 128)(rng);
    std::vector<vm::Tensor> in = BertInputs(*cpu_exe, batch, seq, rng);
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto got, gpu.Run(in));
    if (i % 1000 == 0) {
      NIMBLE_ASSERT_OK_AND_ASSIGN(auto want, cpu.Run(in));
      EXPECT_LE(MaxAbsDiff(want, got), 1e-3) << "call " << i;
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_THAT(gpu.Run(big).status(), testing::IsOk());
  const vm::AllocatorStats after = device->stats();
  std::printf(
      "%d mixed calls in %.2f s; device in use %lld -> %lld bytes, peak reserved %lld "
      "-> %lld\n",
      kCalls, seconds, static_cast<long long>(before.in_use_bytes),
      static_cast<long long>(after.in_use_bytes),
      static_cast<long long>(before.peak_reserved_bytes),
      static_cast<long long>(after.peak_reserved_bytes));
  EXPECT_EQ(after.in_use_bytes, before.in_use_bytes);
  EXPECT_LE(after.peak_reserved_bytes, 2 * before.peak_reserved_bytes + (int64_t{64} << 20));
}

// max |ref| over all outputs (the scale the half-precision errors are measured against).
double MaxAbs(const std::vector<vm::Tensor>& t) {
  double m = 0;
  for (const vm::Tensor& x : t) {
    for (int64_t j = 0; j < x.num_elements(); ++j) {
      m = std::max(m, std::abs(static_cast<double>(x.data<float>()[j])));
    }
  }
  return m;
}

// --precision tf32 / fp16 / bf16 against the fp32 CPU executable: outputs stay f32 on the host,
// and max |out - ref| / max |ref| stays under each precision's bound (tf32 5e-3, fp16 2e-2,
// bf16 1e-1: ten-bit and seven-bit mantissas over the model's depth).
TEST_F(CudaBertTest, ReducedPrecisionsMatchFp32WithinTolerance) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto cpu_exe, CompileOnnxFile(g_model, CompileOptions{}));
  vm::VirtualMachine cpu(cpu_exe);
  for (auto [precision, bound] : std::vector<std::pair<Precision, double>>{
           {Precision::kTF32, 5e-3}, {Precision::kF16, 2e-2}, {Precision::kBF16, 1e-1}}) {
    CompileOptions options;
    options.device = vm::Device{vm::DeviceType::kCUDA, 0};
    options.precision = precision;
    CompileReport report;
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, CompileOnnxFile(g_model, options, &report));
    std::printf("%s: %d nodes lowered, %d kernel calls, %d on cuda:0, %d device copies\n",
                PrecisionName(precision), report.lowered_precision, report.codegen.num_kernel_calls,
                report.codegen.num_device_kernel_calls, report.codegen.num_device_copies);
    EXPECT_GT(report.lowered_precision, 0);
    EXPECT_GT(report.codegen.num_device_kernel_calls, report.codegen.num_kernel_calls / 2);
    vm::VirtualMachine gpu(exe);
    std::mt19937 rng(11);
    for (auto [batch, seq] :
         std::vector<std::pair<int64_t, int64_t>>{{1, 7}, {2, 33}, {1, 128}, {3, 128}}) {
      std::vector<vm::Tensor> in = BertInputs(*cpu_exe, batch, seq, rng);
      NIMBLE_ASSERT_OK_AND_ASSIGN(auto want, cpu.Run(in));
      NIMBLE_ASSERT_OK_AND_ASSIGN(auto got, gpu.Run(in));
      for (const vm::Tensor& t : got) ASSERT_EQ(t.dtype(), vm::DType::kF32);
      const double diff = MaxAbsDiff(want, got), scale = MaxAbs(want);
      std::printf(
          "  %s batch %lld seq %lld: max |gpu - cpu| = %.3g, max |cpu| = %.3g, "
          "relative %.3g\n",
          PrecisionName(precision), static_cast<long long>(batch), static_cast<long long>(seq),
          diff, scale, diff / scale);
      EXPECT_LE(diff, bound * scale)
          << PrecisionName(precision) << " batch " << batch << " seq " << seq;
    }
  }
}

// --half-outputs: the fp16 executable returns f16 tensors, and widened to f32 they match the fp32
// CPU executable as the f32 outputs do (fp16's bound, plus the outputs' own rounding), eagerly and
// from graph replays.
TEST_F(CudaBertTest, HalfOutputsAreHalfAndMatchFp32) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto cpu_exe, CompileOnnxFile(g_model, CompileOptions{}));
  vm::VirtualMachine cpu(cpu_exe);
  CompileOptions options;
  options.device = vm::Device{vm::DeviceType::kCUDA, 0};
  options.precision = Precision::kF16;
  options.half_outputs = true;
  options.buckets = {{"seq", {16, 128}}};
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, CompileOnnxFile(g_model, options));
  vm::VirtualMachineOptions graph_options;
  graph_options.device_graphs = true;
  vm::VirtualMachine eager(exe), graphed(exe, graph_options);
  std::mt19937 rng(13);
  for (int call = 0; call < 3; ++call) {
    for (auto [batch, seq] : std::vector<std::pair<int64_t, int64_t>>{{1, 128}, {2, 16}, {1, 9}}) {
      std::vector<vm::Tensor> in = BertInputs(*cpu_exe, batch, seq, rng);
      NIMBLE_ASSERT_OK_AND_ASSIGN(auto want, cpu.Run(in));
      for (vm::VirtualMachine* vm : {&eager, &graphed}) {
        NIMBLE_ASSERT_OK_AND_ASSIGN(auto got, vm->Run(in));
        ASSERT_EQ(got.size(), want.size());
        std::vector<vm::Tensor> widened;
        for (const vm::Tensor& t : got) {
          ASSERT_EQ(t.dtype(), vm::DType::kF16);
          ASSERT_EQ(t.device().type, vm::DeviceType::kCPU);
          std::vector<float> f(t.num_elements());
          vm::cpu::HalfToFloat(t.data<uint16_t>(), f.data(), t.num_elements());
          widened.push_back(vm::Tensor::FromVector<float>(f, t.shape()));
        }
        const double diff = MaxAbsDiff(want, widened), scale = MaxAbs(want);
        if (call == 0) {
          std::printf("  fp16, half outputs, %s, batch %lld seq %lld: relative %.3g\n",
                      vm == &eager ? "eager" : "graphs", static_cast<long long>(batch),
                      static_cast<long long>(seq), diff / scale);
        }
        EXPECT_LE(diff, 2e-2 * scale + 1e-3 * scale) << "batch " << batch << " seq " << seq;
      }
    }
  }
  EXPECT_GT(graphed.device_graph_stats().replays, 0);
}

// device_graphs: a bucketed (specialized) variant is captured on its second call and
// replayed after; every replay equals the eager instance bitwise, with fresh inputs each call.
// Shapes off the buckets run the generic variant eagerly.
TEST_F(CudaBertTest, DeviceGraphReplaysEqualEagerRunsBitwise) {
  for (Precision precision : {Precision::kF32, Precision::kF16}) {
    CompileOptions options;
    options.device = vm::Device{vm::DeviceType::kCUDA, 0};
    options.precision = precision;
    options.buckets = {{"seq", {16, 128}}};
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, CompileOnnxFile(g_model, options));
    vm::VirtualMachine eager(exe);
    vm::VirtualMachineOptions graph_options;
    graph_options.device_graphs = true;
    // Every weight of the small model is requested two kernels ahead (BERT-base's are 1.2-4.7
    // MB; these are far below the default minimum): the branch must not change a bit.
    graph_options.weight_prefetch_ahead = 2;
    graph_options.weight_prefetch_min_bytes = 1;
    vm::VirtualMachine graphed(exe, graph_options);
    ASSERT_TRUE(graphed.device_graphs_enabled());
    std::mt19937 rng(5);
    // Every result is kept to the end: a later replay must not write into an earlier call's
    // outputs (replays hand the caller the storage the graph copied into).
    std::vector<std::pair<std::vector<vm::Tensor>, std::vector<vm::Tensor>>> kept;
    for (int call = 0; call < 4; ++call) {
      for (auto [batch, seq] :
           std::vector<std::pair<int64_t, int64_t>>{{1, 128}, {2, 16}, {1, 9}}) {
        std::vector<vm::Tensor> in = BertInputs(*exe, batch, seq, rng);
        NIMBLE_ASSERT_OK_AND_ASSIGN(auto want, eager.Run(in));
        NIMBLE_ASSERT_OK_AND_ASSIGN(auto got, graphed.Run(in));
        ASSERT_EQ(want.size(), got.size());
        for (size_t i = 0; i < want.size(); ++i) {
          ASSERT_EQ(want[i].shape(), got[i].shape());
          EXPECT_EQ(std::memcmp(want[i].raw_data(), got[i].raw_data(), want[i].nbytes()), 0)
              << PrecisionName(precision) << " call " << call << " batch " << batch << " seq "
              << seq << " output " << i;
        }
        kept.emplace_back(std::move(want), std::move(got));
      }
    }
    for (size_t k = 0; k < kept.size(); ++k) {
      const auto& [want, got] = kept[k];
      for (size_t i = 0; i < want.size(); ++i) {
        EXPECT_EQ(std::memcmp(want[i].raw_data(), got[i].raw_data(), want[i].nbytes()), 0)
            << PrecisionName(precision) << " kept result " << k << " output " << i;
      }
    }
    const vm::DeviceGraphStats& s = graphed.device_graph_stats();
    std::printf(
        "%s: %lld captures, %lld replays, %lld eager calls, %lld failed captures, %lld weight "
        "prefetches\n",
        PrecisionName(precision), static_cast<long long>(s.captures),
        static_cast<long long>(s.replays), static_cast<long long>(s.eager_calls),
        static_cast<long long>(s.failed_captures), static_cast<long long>(s.prefetch_requests));
    // (1, 128) and (2, 16) hit buckets: warm-up, capture, then 2 more replays each.
    EXPECT_EQ(s.captures, 2);
    EXPECT_EQ(s.replays, 6);
    EXPECT_EQ(s.failed_captures, 0);
    // The encoder's MatMuls (at least 4 a layer) were prefetched in both captures.
    EXPECT_GE(s.prefetch_requests, 8);
    // Both outputs (last_hidden_state, pooler_output) come straight from the device into the
    // caller's storage at every replay.
    EXPECT_EQ(s.direct_results, 2 * s.replays);
  }
}

// A token id past the vocabulary: the CPU executable rejects it; on the GPU the embedding
// kernel sees it (the host never reads the ids), reports it, and the call fails with the same
// kind of error, eagerly and in a graph replay. The instance keeps serving: the next good call
// matches the CPU. The fp16 executable fuses the embedding layer into one EmbedLayerNorm.
TEST_F(CudaBertTest, TokenIdsPastTheVocabularyAreErrorsOnTheGpuToo) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto cpu_exe, CompileOnnxFile(g_model, CompileOptions{}));
  vm::VirtualMachine cpu(cpu_exe);
  CompileOptions options;
  options.device = vm::Device{vm::DeviceType::kCUDA, 0};
  options.precision = Precision::kF16;
  options.buckets = {{"seq", {16}}};
  CompileReport report;
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, CompileOnnxFile(g_model, options, &report));
  EXPECT_EQ(report.fused_embeddings, 1);
  vm::VirtualMachineOptions graph_options;
  graph_options.device_graphs = true;
  vm::VirtualMachine eager(exe);
  vm::VirtualMachine graphed(exe, graph_options);
  std::mt19937 rng(3);
  for (int call = 0; call < 4; ++call) {
    for (vm::VirtualMachine* gpu : {&eager, &graphed}) {
      for (int64_t seq : {16, 9}) {  // the bucket (graphed: replayed from call 2) and generic
        SCOPED_TRACE(::testing::Message() << (gpu == &eager ? "eager" : "graphed") << " call "
                                          << call << " seq " << seq);
        std::vector<vm::Tensor> in = BertInputs(*exe, 1, seq, rng);
        if (call % 2 == 1) {
          in[0].data<int64_t>()[seq / 2] = 1 << 20;
          EXPECT_THAT(cpu.Run(in).status(),
                      testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                        ::testing::HasSubstr("out of range")));
          EXPECT_THAT(gpu->Run(in).status(),
                      testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                        ::testing::HasSubstr("index 1048576 is out of range")));
          continue;
        }
        NIMBLE_ASSERT_OK_AND_ASSIGN(auto want, cpu.Run(in));
        NIMBLE_ASSERT_OK_AND_ASSIGN(auto got, gpu->Run(in));
        EXPECT_LE(MaxAbsDiff(want, got), 2e-2 * MaxAbs(want));
      }
    }
  }
  EXPECT_GE(graphed.device_graph_stats().replays, 2);
}

}  // namespace
}  // namespace nimble::compiler

// Runs after cuda_test_main's device check (it calls InitGoogleTest and RUN_ALL_TESTS); the
// model path comes from the environment or the default.
static const bool kModelPathSet = [] {
  const char* env = std::getenv("NIMBLE_BERT_ONNX");
  nimble::compiler::g_model = env != nullptr ? env : "build/models-small/bert/model.onnx";
  return true;
}();
