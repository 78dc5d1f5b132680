// GPU time of the transformer kernels of ops.cu at BERT-base's shapes (batch 1, 12 heads of 64,
// hidden 768, fp16): Attention over a packed QKV tensor [1, seq, 2304] with an additive key
// padding mask [1, 1, 1, seq], and LayerNorm of [seq, 768]. Each figure: 20 launches captured
// in one CUDA graph (so inter-kernel gaps are the model's), replayed 25 times; the median
// replay divided by 20, in microseconds. Kernel choice follows the environment
// (NIMBLE_CUDA_ATTENTION=v1: the first split-key kernel) so variants are compared by running
// the binary twice in one device call.
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <vector>

#include "vm/kernels/cuda/ops_cuda.h"

namespace nimble::vm::cuda_ops {
namespace {

__global__ void SpinKernel(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}

// The SM clock the GPU runs at now: a kernel that spins for a known number of cycles, timed.
double ClockMHz(cudaStream_t s) {
  constexpr long long kCycles = 20'000'000;
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cudaEventRecord(start, s);
  SpinKernel<<<1, 1, 0, s>>>(kCycles);
  cudaEventRecord(stop, s);
  cudaEventSynchronize(stop);
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms > 0 ? kCycles / (ms * 1e3) : 0;
}

void* DeviceHalf(int64_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<__half> host(static_cast<size_t>(n));
  for (auto& v : host) v = __float2half(d(rng));
  void* p = nullptr;
  if (cudaMalloc(&p, n * 2) != cudaSuccess ||
      cudaMemcpy(p, host.data(), n * 2, cudaMemcpyHostToDevice) != cudaSuccess) {
    return nullptr;
  }
  return p;
}

// Median microseconds per launch of `launch` (20 launches per graph).
double Time(cudaStream_t s, const std::function<cudaError_t()>& launch) {
  constexpr int kPerGraph = 20;
  if (launch() != cudaSuccess || cudaStreamSynchronize(s) != cudaSuccess) return -1;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  if (cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) != cudaSuccess) return -1;
  for (int i = 0; i < kPerGraph; ++i) launch();
  if (cudaStreamEndCapture(s, &graph) != cudaSuccess ||
      cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) {
    return -1;
  }
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  for (int r = 0; r < 50; ++r) cudaGraphLaunch(exec, s);  // clocks up before timing
  std::vector<float> ms;
  for (int r = 0; r < 28; ++r) {
    cudaEventRecord(start, s);
    cudaGraphLaunch(exec, s);
    cudaEventRecord(stop, s);
    cudaEventSynchronize(stop);
    float t = 0;
    cudaEventElapsedTime(&t, start, stop);
    if (r >= 3) ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2] * 1e3 / kPerGraph;
}

int Main(int argc, char** argv) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("no GPU\n");
    return 77;
  }
  cudaStream_t s;
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  std::mt19937 rng(3);
  constexpr int64_t kMax = 512, kHeads = 12, kHead = 64, kHidden = kHeads * kHead;
  void* qkv = DeviceHalf(kMax * 3 * kHidden, rng, -1, 1);
  void* y = DeviceHalf(kMax * kHidden, rng, -1, 1);
  void* mask = DeviceHalf(kMax, rng, -1, 0);
  void* gamma = DeviceHalf(kHidden, rng, 0.5, 1.5);
  void* beta = DeviceHalf(kHidden, rng, -0.5, 0.5);
  if (qkv == nullptr || y == nullptr || mask == nullptr) return 1;
  // Half a second of work first: the GPU leaves its idle clocks.
  for (int i = 0; i < 40000; ++i) {
    LayerNorm(qkv, gamma, beta, y, kMax, kHidden, 1e-12f, FloatType::kF16, FloatType::kF16, s);
  }
  cudaStreamSynchronize(s);
  std::printf("SM clock %.0f MHz\n", ClockMHz(s));
  std::printf("%5s %14s %14s\n", "seq", "attention us", "layernorm us");
  std::vector<int64_t> seqs = {16, 32, 64, 128, 256, 384, 512};
  if (argc > 1) {  // the lengths to time, e.g. "vm_cuda_ops_bench 128 384"
    seqs.clear();
    for (int i = 1; i < argc; ++i) seqs.push_back(std::min<int64_t>(std::atoll(argv[i]), kMax));
  }
  for (int64_t seq : seqs) {
    AttentionArgs a;
    a.q = qkv;
    a.k = static_cast<__half*>(qkv) + kHidden;
    a.v = static_cast<__half*>(qkv) + 2 * kHidden;
    a.y = y;
    a.type = FloatType::kF16;
    a.mask = mask;
    a.mask_type = FloatType::kF16;
    a.mask_strides[0] = seq;
    a.mask_strides[3] = 1;
    a.mask_keys = seq;
    a.batch = 1, a.q_heads = kHeads, a.kv_heads = kHeads, a.q_seq = seq, a.kv_seq = seq;
    a.head = kHead, a.v_head = kHead;
    for (auto* st : {a.q_strides, a.k_strides, a.v_strides}) {
      st[0] = seq * 3 * kHidden, st[1] = kHead, st[2] = 3 * kHidden;
    }
    a.y_strides[0] = seq * kHidden, a.y_strides[1] = kHead, a.y_strides[2] = kHidden;
    a.scale = 0.125f;
    const double attention = Time(s, [&] { return Attention(a, s); });
    const double layernorm = Time(s, [&] {
      return LayerNorm(y, gamma, beta, qkv, seq, kHidden, 1e-12f, FloatType::kF16, FloatType::kF16,
                       s);
    });
    std::printf("%5ld %14.2f %14.2f\n", seq, attention, layernorm);
  }
  std::printf("SM clock %.0f MHz\n", ClockMHz(s));
  return 0;
}

}  // namespace
}  // namespace nimble::vm::cuda_ops

int main(int argc, char** argv) { return nimble::vm::cuda_ops::Main(argc, argv); }
