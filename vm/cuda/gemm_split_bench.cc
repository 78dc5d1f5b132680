// BERT-base's feed-forward block (fp16, tokens M, 12 layers with distinct weights, one CUDA
// graph replayed after an L2 flush, median of 30 replays divided by 12) as the model runs it and
// split into S independent column slices of the hidden layer on S parallel graph branches:
//   one   h = gelu(x * W1 + b1)           M x 3072 x 768
//         y = h * W2 + b2 + r             M x 768 x 3072 (residual)
//   tpS   per branch s < S: h_s = gelu(x * W1[:, s] + b1[s])   M x 3072/S x 768
//                           y_s = h_s * W2[s, :] (+ b2 + r on branch 0)   M x 768 x 3072/S
//         (the consumer, LayerNorm, would read y_0 + ... + y_{S-1})
// The second GEMM's K loop is S times shorter per branch and the branches' blocks fill the
// multiprocessors that one 72-block GEMM at M = 384 leaves idle. Answers whether splitting the
// block pays before the compiler does it. Also times the attention output projection alone (M x
// 768 x 768 with residual) per layer, as the floor of what a GEMM of that shape costs.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <random>
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
constexpr int64_t kHidden = 768, kFfn = 3072, kMaxM = 384;
constexpr int kMaxSplit = 4;

struct Buffers {
  // [layer][split]: W1 slice [768, 3072 / S], b1 slice, W2 slice [3072 / S, 768]; per split
  // count S in 1, 2, 3, 4 (index S - 1).
  std::vector<void*> w1[kMaxSplit], b1[kMaxSplit], w2[kMaxSplit];
  std::vector<void*> b2;
  void *x, *r, *wo, *bo;
  void* h[kMaxSplit];
  void* y[kMaxSplit];
  void* flush;
  int64_t flush_bytes;
};

absl::Status Enqueue(GemmRunner& runner, const Buffers& b, int64_t m, int split, bool proj,
                     cudaStream_t main, const std::vector<cudaStream_t>& side,
                     std::vector<cudaEvent_t>& fork, std::vector<cudaEvent_t>& join) {
  const int S = split;
  const int64_t cols = kFfn / S;
  for (int l = 0; l < kLayers; ++l) {
    if (proj) {
      GemmOperands ops{.a = b.x, .b = b.wo, .d = b.y[0], .bias = b.bo, .residual = b.r};
      NIMBLE_RETURN_IF_ERROR(runner.Run({.m = m, .n = kHidden, .k = kHidden}, GemmPrecision::kF16,
                                        GemmEpilogue::kBias, ops, main));
      continue;
    }
    if (S > 1) NIMBLE_CUDA_RETURN_IF_ERROR(cudaEventRecord(fork[l], main));
    for (int s = 0; s < S; ++s) {
      cudaStream_t st = s == 0 ? main : side[s - 1];
      if (s > 0) NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(st, fork[l], 0));
      const int i = l * S + s;
      GemmOperands up{.a = b.x, .b = b.w1[S - 1][i], .d = b.h[s], .bias = b.b1[S - 1][i]};
      NIMBLE_RETURN_IF_ERROR(runner.Run({.m = m, .n = cols, .k = kHidden}, GemmPrecision::kF16,
                                        GemmEpilogue::kBiasGelu, up, st));
      GemmOperands down{.a = b.h[s], .b = b.w2[S - 1][i], .d = b.y[s]};
      if (s == 0) down.bias = b.b2[l], down.residual = b.r;
      NIMBLE_RETURN_IF_ERROR(runner.Run({.m = m, .n = kHidden, .k = cols}, GemmPrecision::kF16,
                                        s == 0 ? GemmEpilogue::kBias : GemmEpilogue::kNone, down,
                                        st));
      if (s > 0) {
        NIMBLE_CUDA_RETURN_IF_ERROR(cudaEventRecord(join[l * kMaxSplit + s], st));
        NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(main, join[l * kMaxSplit + s], 0));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<double> TimeVariant(GemmRunner& runner, const Buffers& b, int64_t m, int split,
                                   bool proj, cudaStream_t main,
                                   const std::vector<cudaStream_t>& side) {
  EventList fork(kLayers), join(kLayers * kMaxSplit);
  NIMBLE_RETURN_IF_ERROR(fork.status());
  NIMBLE_RETURN_IF_ERROR(join.status());
  NIMBLE_ASSIGN_OR_RETURN(const float ms,
                          MedianGraphReplayMs(
                              main, 30,
                              [&] {
                                return Enqueue(runner, b, m, split, proj, main, side, fork.events(),
                                               join.events());
                              },
                              [&] { return FlushL2(b.flush, b.flush_bytes, main); }));
  return ms * 1e3 / kLayers;  // microseconds a layer
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
  for (int S = 1; S <= kMaxSplit; ++S) {
    const int64_t cols = kFfn / S;
    for (int i = 0; i < kLayers * S; ++i) {
      b.w1[S - 1].push_back(DeviceRandom(kHidden * cols, rng));
      b.b1[S - 1].push_back(DeviceRandom(cols, rng));
      b.w2[S - 1].push_back(DeviceRandom(cols * kHidden, rng));
    }
  }
  for (int l = 0; l < kLayers; ++l) b.b2.push_back(DeviceRandom(kHidden, rng));
  b.x = DeviceRandom(kMaxM * kHidden, rng);
  b.r = DeviceRandom(kMaxM * kHidden, rng);
  b.wo = DeviceRandom(kHidden * kHidden, rng);
  b.bo = DeviceRandom(kHidden, rng);
  for (int s = 0; s < kMaxSplit; ++s) {
    b.h[s] = DeviceRandom(kMaxM * kFfn, rng);
    b.y[s] = DeviceRandom(kMaxM * kHidden, rng);
  }
  b.flush_bytes = int64_t{256} << 20;
  if (cudaMalloc(&b.flush, b.flush_bytes) != cudaSuccess || b.x == nullptr ||
      b.h[kMaxSplit - 1] == nullptr) {
    std::printf("allocation failed\n");
    return 1;
  }
  auto runner = GemmRunner::Create();
  if (!runner.ok()) return 1;
  const char* tune = std::getenv("NIMBLE_GEMM_AUTOTUNE");
  (*runner)->SetAutotune(tune != nullptr && tune[0] == '1');
  std::vector<std::unique_ptr<Stream>> streams;
  for (int s = 0; s < kMaxSplit; ++s) {
    auto st = Stream::Create();
    if (!st.ok() || !(*runner)->ReserveWorkspace((*st)->get()).ok()) return 1;
    streams.push_back(std::move(*st));
  }
  cudaStream_t main = streams[0]->get();
  std::vector<cudaStream_t> side;
  for (int s = 1; s < kMaxSplit; ++s) side.push_back(streams[s]->get());
  std::printf("BERT-base feed-forward block, fp16, cold L2, median us a layer\n");
  std::printf("%5s %9s %9s %9s %9s %9s\n", "M", "one", "tp2", "tp3", "tp4", "proj");
  for (int64_t m : {128, 384, 256, 64}) {
    std::printf("%5ld", m);
    for (int v = 1; v <= kMaxSplit + 1; ++v) {
      const bool proj = v == kMaxSplit + 1;
      auto us = TimeVariant(**runner, b, m, proj ? 1 : v, proj, main, side);
      if (!us.ok()) {
        std::printf("\nM=%ld variant %d: %s\n", m, v, us.status().ToString().c_str());
        return 1;
      }
      std::printf(" %9.2f", *us);
      std::fflush(stdout);
    }
    std::printf("\n");
  }
  return 0;
}

}  // namespace
}  // namespace nimble::vm::cuda

int main() { return nimble::vm::cuda::Main(); }
