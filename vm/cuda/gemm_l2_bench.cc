// The GEMMs of BERT-base's 12 encoder layers (fp16, tokens M = 16..384, distinct random weights
// per layer: 170 MB, more than L2 holds) as one CUDA graph, as the model runs them:
//   qkv  = x * Wqkv + b           M x 2304 x 768
//   y    = x * Wo + b + x         M x 768 x 768 (residual)
//   h    = gelu(y * W1 + b)       M x 3072 x 768
//   x    = h * W2 + b + y         M x 768 x 3072 (residual)
// Variants, each captured once and replayed after an L2 flush (median of 30 replays, events
// around the graph launch):
//   plain      the GEMMs only, the heuristic's first algorithm
//   tuned      the same with GemmRunner's cold-L2 autotuning
//   pf-same    before each GEMM, an L2 prefetch of the next GEMM's weights on the same stream
//   pf-side    the same prefetch on a forked stream (a parallel graph branch) joined before the
//              GEMM that reads the weights
//   pf-side2   the forked prefetch two GEMMs ahead
// Prints one row per M. Answers whether weight prefetching and cold-cache tuning pay before
// either is wired into the CUDA kernels. On the H100 (2026-12-06, bench/results/gpu/
// run-2026-12-06e) neither did: the prefetch variants took 690-990 us against 268-352 us plain
// (about 8 us more per GEMM, on the same stream or a forked one), and tuning moved nothing.
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

enum class Variant { kPlain, kSame, kSide, kSide2 };

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

absl::Status Enqueue(GemmRunner& runner, const Buffers& b, int64_t m, Variant variant,
                     cudaStream_t main, cudaStream_t side, cudaEvent_t fork[2],
                     cudaEvent_t join[2]) {
  const int total = kLayers * 4;
  auto weight_bytes = [](int i) { return kGemms[i % 4].n * kGemms[i % 4].k * 2; };
  const int ahead = variant == Variant::kSide2 ? 2 : 1;
  auto prefetch_side = [&](int target) -> absl::Status {
    if (target >= total) return absl::OkStatus();
    cudaEvent_t f = fork[target % 2], j = join[target % 2];
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaEventRecord(f, main));
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(side, f, 0));
    NIMBLE_RETURN_IF_ERROR(PrefetchL2(b.weights[target], weight_bytes(target), side));
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaEventRecord(j, side));
    return absl::OkStatus();
  };
  if (variant == Variant::kSide2) NIMBLE_RETURN_IF_ERROR(prefetch_side(1));
  for (int i = 0; i < total; ++i) {
    const Gemm& g = kGemms[i % 4];
    if (variant == Variant::kSame && i + 1 < total) {
      NIMBLE_RETURN_IF_ERROR(PrefetchL2(b.weights[i + 1], weight_bytes(i + 1), main));
    }
    if (variant == Variant::kSide || variant == Variant::kSide2) {
      if (i >= ahead) {  // the prefetch of this GEMM's weights joins here
        NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(main, join[i % 2], 0));
      }
      NIMBLE_RETURN_IF_ERROR(prefetch_side(i + ahead));
    }
    void* in = i % 4 == 3 ? b.h : (i % 4 == 2 ? b.y : b.x);
    void* out = i % 4 == 0 ? b.qkv : (i % 4 == 1 ? b.y : (i % 4 == 2 ? b.h : b.x));
    void* residual = i % 4 == 1 ? b.x : (i % 4 == 3 ? b.y : nullptr);
    GemmOperands ops{
        .a = in, .b = b.weights[i], .d = out, .bias = b.biases[i], .residual = residual};
    // y = x*Wo + x reads x as both A and residual while writing y: fine. x = h*W2 + y writes
    // x, which no operand of this GEMM is.
    NIMBLE_RETURN_IF_ERROR(
        runner.Run({.m = m, .n = g.n, .k = g.k}, GemmPrecision::kF16, g.epilogue, ops, main));
  }
  return absl::OkStatus();
}

absl::StatusOr<double> TimeVariant(GemmRunner& runner, const Buffers& b, int64_t m, Variant variant,
                                   cudaStream_t main, cudaStream_t side) {
  cudaEvent_t fork[2], join[2], start, stop;
  for (auto* e : {&fork[0], &fork[1], &join[0], &join[1]}) {
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(e, cudaEventDisableTiming));
  }
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop));
  // Eager once: plans (and tuning) happen outside the capture.
  NIMBLE_RETURN_IF_ERROR(Enqueue(runner, b, m, variant, main, side, fork, join));
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(main));
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(side));
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(main, cudaStreamCaptureModeThreadLocal));
  const absl::Status enqueued = Enqueue(runner, b, m, variant, main, side, fork, join);
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
  for (auto e : {fork[0], fork[1], join[0], join[1], start, stop}) cudaEventDestroy(e);
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
  auto plain = GemmRunner::Create();
  auto tuned = GemmRunner::Create();
  auto main_stream = Stream::Create();
  auto side_stream = Stream::Create();
  if (!plain.ok() || !tuned.ok() || !main_stream.ok() || !side_stream.ok()) {
    std::printf("setup failed\n");
    return 1;
  }
  (*plain)->SetAutotune(false);
  (*tuned)->SetAutotune(true);
  cudaStream_t main = (*main_stream)->get(), side = (*side_stream)->get();
  if (!(*plain)->ReserveWorkspace(main).ok() || !(*tuned)->ReserveWorkspace(main).ok()) return 1;
  std::printf("48 GEMMs of BERT-base fp16 in one graph, cold L2, median us\n");
  std::printf("%5s %9s %9s %9s %9s %9s %9s\n", "M", "plain", "tuned", "pf-same", "pf-side",
              "pf-side2", "tuned+pf");
  for (int64_t m : {16, 64, 128, 384}) {
    std::string row;
    auto cell = [&](GemmRunner& r, Variant v) {
      auto us = TimeVariant(r, b, m, v, main, side);
      if (!us.ok()) {
        std::printf("M=%ld: %s\n", m, us.status().ToString().c_str());
        return std::string(" ERR");
      }
      char text[32];
      std::snprintf(text, sizeof(text), " %9.1f", *us);
      return std::string(text);
    };
    row += cell(**plain, Variant::kPlain);
    row += cell(**tuned, Variant::kPlain);
    row += cell(**plain, Variant::kSame);
    row += cell(**plain, Variant::kSide);
    row += cell(**plain, Variant::kSide2);
    row += cell(**tuned, Variant::kSide);
    std::printf("%5ld%s\n", m, row.c_str());
  }
  const GemmStats st = (*tuned)->Stats();
  std::printf("tuned plans: %ld of %ld\n", st.tuned, st.cached_algorithms);
  return 0;
}

}  // namespace
}  // namespace nimble::vm::cuda

int main() { return nimble::vm::cuda::Main(); }
