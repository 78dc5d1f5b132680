// The GEMMs of BERT-base's 12 encoder layers (fp16, tokens M = 16..384, distinct random weights
// per layer: 170 MB, more than L2 holds) as one CUDA graph, as the model runs them:
//   qkv  = x * Wqkv + b           M x 2304 x 768
//   y    = x * Wo + b + x         M x 768 x 768 (residual)
//   h    = gelu(y * W1 + b)       M x 3072 x 768
//   x    = h * W2 + b + y         M x 768 x 3072 (residual)
// Variants, each captured once and replayed after an L2 flush (median of 30 replays, events
// around the graph launch):
//   plain      the GEMMs only, the heuristic's first algorithm (no tuning)
//   same1      before each GEMM, an L2 prefetch of the next GEMM's weights on the same stream
//   sideN      the prefetch N GEMMs ahead on a forked stream (a parallel graph branch) that
//              rejoins only at the end: no GEMM waits for a prefetch
//   side2ln    side2 with one prefetch.global.L2 per line instead of the bulk form
//   side2j     side2 joined before the GEMM that reads the weights (the first form tried)
//   warm       plain, but every layer with layer 0's weights (14 MB, resident in L2), no flush
//   tiny       plain with every GEMM M x 64 x 64: the cost of 48 launches beyond their work
// Prints one row per M. Answers whether weight prefetching pays before it is wired into the
// VM. The first form (2026-12-06, bench/results/gpu/run-2026-12-06e: one block issuing a whole
// weight, each GEMM waiting for its prefetch) took 690-990 us against 268-352 us plain, about
// 8 us more per GEMM; tuning from a cold L2 moved nothing and is no longer a column.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "vm/cuda/cuda_status.h"
#include "vm/cuda/device_info.h"
#include "vm/cuda/gemm.h"
#include "vm/cuda/graph_timing.h"
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

// A prefetch schedule: none (ahead == 0), or the weights of GEMM i + ahead requested as GEMM i
// is queued, on the main stream or on a forked one (a parallel graph branch) that either joins
// the main stream before the GEMM that reads the weights or only at the end of the graph.
struct Variant {
  const char* name;
  int ahead = 0;
  bool side = false;
  bool join_each = false;
  L2PrefetchForm form = L2PrefetchForm::kBulk;
  // warm: every layer uses layer 0's weights (14 MB, which stay in L2) and no flush precedes
  // the replay; tiny: every GEMM is M x 64 x 64 (what a kernel costs beyond its work).
  bool warm = false, tiny = false;
};

struct Buffers {
  std::vector<void*> weights, biases;  // [layer * 4 + g]
  void *x, *qkv, *y, *h, *flush;
  int64_t flush_bytes;
};

absl::Status Enqueue(GemmRunner& runner, const Buffers& b, int64_t m, const Variant& v,
                     cudaStream_t main, cudaStream_t side, std::vector<cudaEvent_t>& fork,
                     std::vector<cudaEvent_t>& join) {
  const int total = kLayers * 4;
  auto weight_bytes = [](int i) { return kGemms[i % 4].n * kGemms[i % 4].k * 2; };
  bool forked = false;
  // Requests GEMM `target`'s weights (events indexed by target: each one recorded once).
  auto prefetch = [&](int target) -> absl::Status {
    if (v.ahead == 0 || target >= total) return absl::OkStatus();
    if (!v.side) return PrefetchL2(b.weights[target], weight_bytes(target), main, v.form);
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaEventRecord(fork[target], main));
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(side, fork[target], 0));
    NIMBLE_RETURN_IF_ERROR(PrefetchL2(b.weights[target], weight_bytes(target), side, v.form));
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaEventRecord(join[target], side));
    forked = true;
    return absl::OkStatus();
  };
  for (int i = 1; i < v.ahead; ++i) NIMBLE_RETURN_IF_ERROR(prefetch(i));
  for (int i = 0; i < total; ++i) {
    Gemm g = kGemms[i % 4];
    if (v.tiny) g.n = g.k = 64;
    const int w = v.warm ? i % 4 : i;
    if (v.side && v.join_each && i >= v.ahead && v.ahead > 0) {
      NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(main, join[i], 0));
    }
    NIMBLE_RETURN_IF_ERROR(prefetch(i + v.ahead));
    void* in = i % 4 == 3 ? b.h : (i % 4 == 2 ? b.y : b.x);
    void* out = i % 4 == 0 ? b.qkv : (i % 4 == 1 ? b.y : (i % 4 == 2 ? b.h : b.x));
    void* residual = i % 4 == 1 ? b.x : (i % 4 == 3 ? b.y : nullptr);
    GemmOperands ops{
        .a = in, .b = b.weights[w], .d = out, .bias = b.biases[w], .residual = residual};
    // y = x*Wo + x reads x as both A and residual while writing y: fine. x = h*W2 + y writes
    // x, which no operand of this GEMM is.
    NIMBLE_RETURN_IF_ERROR(
        runner.Run({.m = m, .n = g.n, .k = g.k}, GemmPrecision::kF16, g.epilogue, ops, main));
  }
  if (forked) {  // the branch rejoins once, at the end
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaEventRecord(join[total], side));
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(main, join[total], 0));
  }
  return absl::OkStatus();
}

absl::StatusOr<double> TimeVariant(GemmRunner& runner, const Buffers& b, int64_t m,
                                   const Variant& variant, cudaStream_t main, cudaStream_t side) {
  EventList fork(kLayers * 4 + 1), join(kLayers * 4 + 1);
  NIMBLE_RETURN_IF_ERROR(fork.status());
  NIMBLE_RETURN_IF_ERROR(join.status());
  NIMBLE_ASSIGN_OR_RETURN(
      const float ms,
      MedianGraphReplayMs(
          main, 30,
          [&] { return Enqueue(runner, b, m, variant, main, side, fork.events(), join.events()); },
          [&] { return variant.warm ? absl::OkStatus() : FlushL2(b.flush, b.flush_bytes, main); }));
  return ms * 1e3;  // microseconds
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
  auto side_stream = Stream::Create();
  if (!runner.ok() || !main_stream.ok() || !side_stream.ok()) {
    std::printf("setup failed\n");
    return 1;
  }
  (*runner)->SetAutotune(false);
  cudaStream_t main = (*main_stream)->get(), side = (*side_stream)->get();
  if (!(*runner)->ReserveWorkspace(main).ok()) return 1;
  const Variant variants[] = {
      {"plain"},
      {"same1", 1, false},
      {"side1", 1, true},
      {"side2", 2, true},
      {"side3", 3, true},
      {"side2ln", 2, true, false, L2PrefetchForm::kLines},
      {"side2j", 2, true, true},
      {"warm", 0, false, false, L2PrefetchForm::kBulk, true},
      {"tiny", 0, false, false, L2PrefetchForm::kBulk, false, true},
  };
  std::printf("48 GEMMs of BERT-base fp16 in one graph, cold L2, median us\n");
  std::printf("%5s", "M");
  for (const Variant& v : variants) std::printf(" %9s", v.name);
  std::printf("\n");
  for (int64_t m : {1, 16, 64, 128, 384}) {
    std::printf("%5ld", m);
    for (const Variant& v : variants) {
      auto us = TimeVariant(**runner, b, m, v, main, side);
      if (!us.ok()) {
        std::printf("\nM=%ld %s: %s\n", m, v.name, us.status().ToString().c_str());
        return 1;
      }
      std::printf(" %9.1f", *us);
      std::fflush(stdout);
    }
    std::printf("\n");
  }
  return 0;
}

}  // namespace
}  // namespace nimble::vm::cuda

int main() { return nimble::vm::cuda::Main(); }
