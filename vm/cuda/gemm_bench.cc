// GEMM throughput of GemmRunner on the local GPU: BERT-base-class shapes (tokens x 3072 x 768
// FC1 with bias+GELU, tokens x 768 x 3072 FC2 with bias) and a square 4096^3 for the ceiling.
// Each figure is the median over 15 groups of 20 back-to-back runs timed with events, after a
// warm-up; inputs are random (never zeros). "host us" is the CPU time of one Run call (enqueue
// only): when it exceeds the GPU time, back-to-back small GEMMs are launch-bound. Prints a table.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "vm/cuda/device_info.h"
#include "vm/cuda/gemm.h"
#include "vm/cuda/stream.h"

namespace nimble::vm::cuda {
namespace {

struct Shape {
  int64_t m, n, k;
  GemmEpilogue epilogue;
};

int Main() {
  auto devices = ListDevices();
  if (!devices.ok()) {
    std::printf("no GPU: %s\n", devices.status().ToString().c_str());
    return 77;
  }
  std::printf("device: %s\n", Describe(devices->front()).c_str());
  auto runner = GemmRunner::Create();
  auto stream = Stream::Create();
  auto start = Event::Create();
  auto stop = Event::Create();
  if (!runner.ok() || !stream.ok() || !start.ok() || !stop.ok()) {
    std::printf("setup failed\n");
    return 1;
  }
  const Shape shapes[] = {{768, 3072, 768, GemmEpilogue::kBiasGelu},
                          {768, 768, 3072, GemmEpilogue::kBias},
                          {4096, 3072, 768, GemmEpilogue::kBiasGelu},
                          {4096, 4096, 4096, GemmEpilogue::kNone}};
  const GemmPrecision precisions[] = {GemmPrecision::kF32, GemmPrecision::kTF32,
                                      GemmPrecision::kF16, GemmPrecision::kBF16};
  // One random buffer big enough for every operand; random bits of small magnitude.
  const size_t bytes = size_t{4096} * 4096 * 4;
  std::vector<uint16_t> host(bytes / 2);
  std::mt19937 rng(5);
  for (auto& v : host) v = static_cast<uint16_t>(0x3000 | (rng() & 0x0FFF));  // ~[0.125, 0.5)
  void *a = nullptr, *b = nullptr, *d = nullptr, *bias = nullptr;
  if (cudaMalloc(&a, bytes) || cudaMalloc(&b, bytes) || cudaMalloc(&d, bytes) ||
      cudaMalloc(&bias, 4096 * 4) || cudaMemcpy(a, host.data(), bytes, cudaMemcpyHostToDevice) ||
      cudaMemcpy(b, host.data(), bytes, cudaMemcpyHostToDevice) ||
      cudaMemcpy(bias, host.data(), 4096 * 4, cudaMemcpyHostToDevice)) {
    std::printf("allocation failed\n");
    return 1;
  }
  std::printf("%-5s %-20s %-10s %10s %10s %10s\n", "prec", "MxNxK", "epilogue", "us", "TFLOP/s",
              "host us");
  for (const Shape& s : shapes) {
    for (GemmPrecision p : precisions) {
      GemmShape shape{.m = s.m, .n = s.n, .k = s.k, .trans_b = true};
      const bool with_bias = s.epilogue != GemmEpilogue::kNone;
      GemmOperands ops{.a = a, .b = b, .d = d, .bias = with_bias ? bias : nullptr};
      cudaStream_t st = (*stream)->get();
      absl::Status status;
      for (int i = 0; i < 10 && status.ok(); ++i)
        status = (*runner)->Run(shape, p, s.epilogue, ops, st);
      if (status.ok()) status = (*stream)->Synchronize();
      if (!status.ok()) {
        std::printf("%-5s %ldx%ldx%ld: %s\n", PrecisionName(p), s.m, s.n, s.k,
                    status.ToString().c_str());
        continue;
      }
      constexpr int kGroups = 15, kReps = 20;
      std::vector<float> per_run_ms;
      std::vector<double> host_us;
      for (int g = 0; g < kGroups && status.ok(); ++g) {
        status = (*start)->Record(st);
        const auto host_start = std::chrono::steady_clock::now();
        for (int r = 0; r < kReps && status.ok(); ++r) {
          status = (*runner)->Run(shape, p, s.epilogue, ops, st);
        }
        host_us.push_back(
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - host_start)
                .count() /
            kReps);
        if (status.ok()) status = (*stop)->Record(st);
        if (status.ok()) status = (*stop)->Synchronize();
        auto ms = Event::ElapsedMs(**start, **stop);
        if (status.ok() && ms.ok()) per_run_ms.push_back(*ms / kReps);
      }
      if (!status.ok() || per_run_ms.empty() || host_us.empty()) {
        std::printf("timing failed: %s\n", status.ToString().c_str());
        continue;
      }
      std::sort(per_run_ms.begin(), per_run_ms.end());
      std::sort(host_us.begin(), host_us.end());
      const double ms = per_run_ms[per_run_ms.size() / 2];
      const double tflops = 2.0 * s.m * s.n * s.k / (ms * 1e-3) / 1e12;
      char dims[64];
      std::snprintf(dims, sizeof(dims), "%ldx%ldx%ld", s.m, s.n, s.k);
      std::printf("%-5s %-20s %-10s %10.1f %10.1f %10.1f\n", PrecisionName(p), dims,
                  EpilogueName(s.epilogue), ms * 1e3, tflops, host_us[host_us.size() / 2]);
    }
  }
  cudaFree(a);
  cudaFree(b);
  cudaFree(d);
  cudaFree(bias);
  return 0;
}

}  // namespace
}  // namespace nimble::vm::cuda

int main() { return nimble::vm::cuda::Main(); }
