// Time of the hand-written kernels on the local GPU against their memory floor (bytes that must
// move / 3.0 TB/s, the device-to-device copy rate measured on an H100 here) and, for attention,
// the tensor-core floor. Median over 15 groups of 20 launches timed with events; random inputs.
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "vm/cuda/device_info.h"
#include "vm/cuda/kernels.h"
#include "vm/cuda/stream.h"

namespace nimble::vm::cuda {
namespace {

double MedianUs(const std::function<absl::Status()>& launch, Stream& stream, Event& start,
                Event& stop) {
  for (int i = 0; i < 5; ++i) {
    absl::Status status = launch();
    if (status.ok()) status = stream.Synchronize();
    if (!status.ok()) {
      std::printf("failed: %s\n", status.ToString().c_str());
      return -1;
    }
  }
  std::vector<float> per;
  for (int g = 0; g < 15; ++g) {
    if (!start.Record(stream.get()).ok()) return -1;
    for (int r = 0; r < 20; ++r) {
      if (!launch().ok()) return -1;
    }
    if (!stop.Record(stream.get()).ok() || !stop.Synchronize().ok()) return -1;
    auto ms = Event::ElapsedMs(start, stop);
    if (!ms.ok()) return -1;
    per.push_back(*ms / 20);
  }
  std::sort(per.begin(), per.end());
  return per[per.size() / 2] * 1e3;
}

int Main() {
  auto devices = ListDevices();
  if (!devices.ok()) return 77;
  std::printf("device: %s\n", Describe(devices->front()).c_str());
  auto stream = Stream::Create();
  auto start = Event::Create();
  auto stop = Event::Create();
  if (!stream.ok() || !start.ok() || !stop.ok()) return 1;
  // One pool of random fp16 values in [-1, 1) for every operand.
  const size_t elems = size_t{16} << 20;  // >= 4096 x 3072
  std::vector<__half> host(elems);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (auto& v : host) v = __float2half(dist(rng));
  void* buf[6];
  for (void*& b : buf) {
    if (cudaMalloc(&b, elems * 2) != cudaSuccess ||
        cudaMemcpy(b, host.data(), elems * 2, cudaMemcpyHostToDevice) != cudaSuccess) {
      return 1;
    }
  }
  float* mask = nullptr;
  if (cudaMalloc(reinterpret_cast<void**>(&mask), 8 * 512 * 4) != cudaSuccess ||
      cudaMemset(mask, 0, 8 * 512 * 4) != cudaSuccess) {
    return 1;
  }
  cudaStream_t st = (*stream)->get();
  std::printf("%-44s %9s %9s %9s\n", "kernel (fp16)", "us", "floor us", "GB/s");
  auto report = [&](const char* name, double us, double bytes, double flops) {
    const double floor_us = std::max(bytes / 3.0e12, flops / 750e12) * 1e6;
    std::printf("%-44s %9.1f %9.1f %9.0f\n", name, us, floor_us, bytes / (us * 1e-6) / 1e9);
  };
  {
    const int64_t rows = 4096, cols = 768;  // 32 sequences x 128 tokens, BERT-base
    double us = MedianUs(
        [&] {
          return LayerNorm(buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], rows, cols, 1e-5f,
                           DType::kF16, st);
        },
        **stream, **start, **stop);
    report("LayerNorm+residual 4096x768", us, 4.0 * rows * cols * 2, 0);
  }
  {
    const int64_t rows = 32 * 12 * 128, cols = 128;
    double us = MedianUs(
        [&] {
          return Softmax(buf[0], mask, buf[1], rows, cols, 0.125f, 12 * 128, DType::kF16, st);
        },
        **stream, **start, **stop);
    report("Softmax masked 49152x128", us, 2.0 * rows * cols * 2, 0);
  }
  {
    const int64_t n = 4096 * 3072;
    double us = MedianUs([&] { return Gelu(buf[0], buf[1], n, false, DType::kF16, st); }, **stream,
                         **start, **stop);
    report("Gelu erf 4096x3072", us, 2.0 * n * 2, 0);
  }
  for (int64_t seq : {128, 512}) {
    AttentionShape s{.batch = 8,
                     .heads = 12,
                     .seq_q = seq,
                     .seq_k = seq,
                     .head_dim = 64,
                     .mask_batch_stride = seq};
    double us = MedianUs(
        [&] { return Attention(buf[0], buf[1], buf[2], mask, buf[3], s, 0.125f, DType::kF16, st); },
        **stream, **start, **stop);
    char name[64];
    std::snprintf(name, sizeof(name), "Attention b8 h12 s%ld d64 (key mask)", seq);
    report(name, us, 4.0 * 8 * 12 * seq * 64 * 2, 4.0 * 8 * 12 * seq * seq * 64);
  }
  for (void* b : buf) cudaFree(b);
  cudaFree(mask);
  return 0;
}

}  // namespace
}  // namespace nimble::vm::cuda

int main() { return nimble::vm::cuda::Main(); }
