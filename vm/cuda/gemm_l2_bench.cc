// The GEMMs of BERT-base's 12 encoder layers (fp16, tokens M = 16..384, distinct random weights
// per layer: 170 MB, more than L2 holds) as one CUDA graph, as the model runs them:
//   qkv  = x * Wqkv + b           M x 2304 x 768
//   y    = x * Wo + b + x         M x 768 x 768 (residual)
//   h    = gelu(y * W1 + b)       M x 3072 x 768
//   x    = h * W2 + b + y         M x 768 x 3072 (residual)
// Variants, each captured once and replayed after an L2 flush (median of 30 replays, events
// around the graph launch):
//   lt          cuBLASLt, the heuristic's first algorithm
//   split bN    Nimble's split-K kernel (split_gemm.h) aiming at N blocks a multiprocessor
//   split late  the same (2 blocks) without GemmOperands::b_constant: every weight load waits
//               for the previous kernel instead of overlapping its end
// Prints one row per M.
//
// Earlier variants, removed once measured (H100, 2026-12-06, bench/results/gpu/run-2026-12-06e):
// an L2 prefetch of the next GEMM's weights on the same or a forked stream took 690-990 us
// against 268-352 us plain, and cold-L2 autotuning of cuBLASLt moved nothing.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "vm/cuda/cuda_status.h"
#include "vm/cuda/device_info.h"
#include "vm/cuda/gemm.h"
#include "vm/cuda/l2_prefetch.h"
#include "vm/cuda/stream.h"

namespace nimble::vm::cuda {
namespace {

constexpr int kLayers = 12;
constexpr int64_t kHidden = 768, kQkv = 2304, kFfn = 3072, kMaxM = 384;

struct Gemm {
  int64_t n, k;
  GemmEpilogue epilogue;
  bool residual;
};
constexpr Gemm kGemms[4] = {{kQkv, kHidden, GemmEpilogue::kBias, false},
                            {kHidden, kHidden, GemmEpilogue::kBias, true},
                            {kFfn, kHidden, GemmEpilogue::kBiasGelu, false},
                            {kHidden, kFfn, GemmEpilogue::kBias, true}};

struct Variant {
  GemmKernel kernel = GemmKernel::kCublasLt;
  int blocks_per_sm = 2;
  bool b_constant = true;
};

struct Buffers {
  std::vector<void*> weights, biases;  // [layer * 4 + g]
  void *x, *qkv, *y, *h, *flush;
  int64_t flush_bytes;
};

void* DeviceRandom(int64_t elements, std::mt19937& rng) {
  std::vector<uint16_t> host(static_cast<size_t>(elements));
  // fp16 in about [-0.03, 0.03]: activations stay bounded through 12 layers.
  for (auto& v : host) v = static_cast<uint16_t>(0x2000 | (rng() & 0x03FF) | ((rng() & 1) << 15));
  void* p = nullptr;
  if (cudaMalloc(&p, elements * 2) != cudaSuccess ||
      cudaMemcpy(p, host.data(), elements * 2, cudaMemcpyHostToDevice) != cudaSuccess) {
    return nullptr;
  }
  return p;
}

absl::Status Enqueue(GemmRunner& runner, const Buffers& b, int64_t m, const Variant& variant,
                     cudaStream_t main) {
  for (int i = 0; i < kLayers * 4; ++i) {
    const Gemm& g = kGemms[i % 4];
    void* in = i % 4 == 3 ? b.h : (i % 4 == 2 ? b.y : b.x);
    void* out = i % 4 == 0 ? b.qkv : (i % 4 == 1 ? b.y : (i % 4 == 2 ? b.h : b.x));
    void* residual = i % 4 == 1 ? b.x : (i % 4 == 3 ? b.y : nullptr);
    GemmOperands ops{.a = in,
                     .b = b.weights[i],
                     .d = out,
                     .bias = b.biases[i],
                     .residual = residual,
                     .b_constant = variant.b_constant};
    // y = x*Wo + x reads x as both A and residual while writing y: fine. x = h*W2 + y writes
    // x, which no operand of this GEMM is.
    NIMBLE_RETURN_IF_ERROR(
        runner.Run({.m = m, .n = g.n, .k = g.k}, GemmPrecision::kF16, g.epilogue, ops, main));
  }
  return absl::OkStatus();
}

absl::StatusOr<double> TimeVariant(GemmRunner& runner, const Buffers& b, int64_t m,
                                   const Variant& variant, cudaStream_t main) {
  runner.SetKernel(variant.kernel);
  runner.SetSplitBlocksPerSm(variant.blocks_per_sm);
  cudaEvent_t start, stop;
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop));
  // Eager once: plans (and tuning) happen outside the capture.
  NIMBLE_RETURN_IF_ERROR(Enqueue(runner, b, m, variant, main));
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(main));
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(main, cudaStreamCaptureModeThreadLocal));
  const absl::Status enqueued = Enqueue(runner, b, m, variant, main);
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(main, &graph);
  NIMBLE_RETURN_IF_ERROR(enqueued);
  NIMBLE_CUDA_RETURN_IF_ERROR(ended);
  cudaGraphExec_t exec = nullptr;
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaGraphInstantiate(&exec, graph, 0));
  cudaGraphDestroy(graph);
  std::vector<float> ms;
  for (int r = 0; r < 33; ++r) {
    NIMBLE_RETURN_IF_ERROR(FlushL2(b.flush, b.flush_bytes, main));
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaEventRecord(start, main));
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec, main));
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop, main));
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop));
    float t = 0;
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&t, start, stop));
    if (r >= 3) ms.push_back(t);
  }
  cudaGraphExecDestroy(exec);
  for (auto e : {start, stop}) cudaEventDestroy(e);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2] * 1e3;  // microseconds
}

int Main() {
  auto devices = ListDevices();
  if (!devices.ok()) {
    std::printf("no GPU: %s\n", devices.status().ToString().c_str());
    return 77;
  }
  std::printf("device: %s\n", Describe(devices->front()).c_str());
  std::mt19937 rng(7);
  Buffers b;
  for (int l = 0; l < kLayers; ++l) {
    for (const Gemm& g : kGemms) {
      b.weights.push_back(DeviceRandom(g.n * g.k, rng));
      b.biases.push_back(DeviceRandom(g.n, rng));
    }
  }
  b.x = DeviceRandom(kMaxM * kHidden, rng);
  b.y = DeviceRandom(kMaxM * kHidden, rng);
  b.qkv = DeviceRandom(kMaxM * kQkv, rng);
  b.h = DeviceRandom(kMaxM * kFfn, rng);
  b.flush_bytes = int64_t{256} << 20;
  if (cudaMalloc(&b.flush, b.flush_bytes) != cudaSuccess || b.x == nullptr || b.h == nullptr) {
    std::printf("allocation failed\n");
    return 1;
  }
  auto runner = GemmRunner::Create();
  auto main_stream = Stream::Create();
  if (!runner.ok() || !main_stream.ok()) {
    std::printf("setup failed\n");
    return 1;
  }
  (*runner)->SetAutotune(false);
  cudaStream_t main = (*main_stream)->get();
  if (!(*runner)->ReserveWorkspace(main).ok()) return 1;
  const std::pair<const char*, Variant> variants[] = {
      {"lt", {GemmKernel::kCublasLt}},       {"split b1", {GemmKernel::kSplit, 1}},
      {"split b2", {GemmKernel::kSplit, 2}}, {"split b3", {GemmKernel::kSplit, 3}},
      {"split b4", {GemmKernel::kSplit, 4}}, {"split late", {GemmKernel::kSplit, 2, false}},
  };
  std::printf("48 GEMMs of BERT-base fp16 in one graph, cold L2, median us\n%5s", "M");
  for (const auto& [name, v] : variants) std::printf(" %11s", name);
  std::printf("\n");
  for (int64_t m : {1, 16, 64, 128, 256, 384}) {
    std::printf("%5ld", m);
    for (const auto& [name, v] : variants) {
      auto us = TimeVariant(**runner, b, m, v, main);
      if (us.ok()) {
        std::printf(" %11.1f", *us);
      } else {
        std::printf(" ERR\nM=%ld %s: %s\n", m, name, us.status().ToString().c_str());
      }
    }
    std::printf("\n");
  }
  return 0;
}

}  // namespace
}  // namespace nimble::vm::cuda

int main() { return nimble::vm::cuda::Main(); }
