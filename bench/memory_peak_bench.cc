// Peak memory of a dynamic model under a workload of random lengths against the peak of its
// largest single call (issue target: at most 1.2x after 1000 calls of lengths 1..512).
//
//   bench_memory_peak MODEL.onnx [--calls 1000] [--max-len 512] [--threads 2]
//
// Every input dim named "seq" (or any symbolic dim after the first, batch = 1) takes the call's
// length. Reports the VM allocator's peak reserved bytes (in use + cached) and the process's
// peak resident set above its level before the first call (VmHWM, reset through clear_refs),
// for the largest call alone and after the random workload, and their ratios.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "compiler/driver/compiler.h"
#include "tbb/global_control.h"
#include "vm/runtime/allocator.h"
#include "vm/virtual_machine.h"

namespace {

int64_t StatusKb(const char* key) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key, 0) == 0) return std::stoll(line.substr(std::strlen(key)));
  }
  return -1;
}

void ResetPeakRss() { std::ofstream("/proc/self/clear_refs") << "5"; }

std::vector<nimble::vm::Tensor> Inputs(const nimble::vm::Executable& exe, int64_t len,
                                       std::mt19937& rng) {
  std::vector<nimble::vm::Tensor> out;
  for (const nimble::vm::TensorSignature& sig : exe.inputs) {
    std::vector<int64_t> shape;
    for (size_t i = 0; i < sig.dims.size(); ++i) {
      shape.push_back(sig.dims[i] >= 0 ? sig.dims[i] : (i == 0 ? 1 : len));
    }
    nimble::vm::Tensor t = *nimble::vm::Tensor::Empty(sig.dtype, shape);
    if (sig.dtype == nimble::vm::DType::kI64) {
      for (int64_t i = 0; i < t.num_elements(); ++i) t.data<int64_t>()[i] = rng() % 2;
    } else if (sig.dtype == nimble::vm::DType::kF32) {
      for (int64_t i = 0; i < t.num_elements(); ++i) t.data<float>()[i] = (rng() % 1000) / 1e3f;
    } else {
      std::memset(t.raw_data(), 0, t.nbytes());
    }
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL.onnx [--calls N] [--max-len N] [--threads N]\n", argv[0]);
    return 2;
  }
  int calls = 1000, max_len = 512, threads = 2;
  for (int i = 2; i + 1 < argc; i += 2) {
    int v = 0;
    if (!absl::SimpleAtoi(argv[i + 1], &v) || v <= 0) {
      std::fprintf(stderr, "bad value for %s\n", argv[i]);
      return 2;
    }
    if (std::strcmp(argv[i], "--calls") == 0)
      calls = v;
    else if (std::strcmp(argv[i], "--max-len") == 0)
      max_len = v;
    else if (std::strcmp(argv[i], "--threads") == 0)
      threads = v;
  }
  tbb::global_control gc(tbb::global_control::max_allowed_parallelism, threads);
  auto exe = nimble::compiler::CompileOnnxFile(argv[1]);
  if (!exe.ok()) {
    std::fprintf(stderr, "%s\n", std::string(exe.status().message()).c_str());
    return 1;
  }
  nimble::vm::CpuAllocator allocator;
  nimble::vm::VirtualMachineOptions options;
  options.allocators = {{nimble::vm::kCpu, &allocator}};
  options.num_threads = threads;
  nimble::vm::VirtualMachine vm(*exe, options);
  std::mt19937 rng(1);
  // Warm the process (oneDNN primitives, thread pools) on a small call, then measure the
  // largest call from a clean allocator.
  (void)vm.Run(Inputs(**exe, 8, rng));
  allocator.Trim();
  nimble::vm::CpuAllocator fresh;
  const int64_t rss0 = StatusKb("VmRSS:");
  ResetPeakRss();
  {
    nimble::vm::VirtualMachineOptions o = options;
    o.allocators = {{nimble::vm::kCpu, &fresh}};
    nimble::vm::VirtualMachine single(*exe, o);
    auto out = single.Run(Inputs(**exe, max_len, rng));
    if (!out.ok()) {
      std::fprintf(stderr, "%s\n", std::string(out.status().message()).c_str());
      return 1;
    }
  }
  const int64_t single_reserved = fresh.stats().peak_reserved_bytes;
  const int64_t single_hwm = StatusKb("VmHWM:");
  const int64_t single_rss = single_hwm - rss0;
  fresh.Trim();
  ResetPeakRss();
  std::uniform_int_distribution<int> len(1, max_len);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) {
    auto out = vm.Run(Inputs(**exe, len(rng), rng));
    if (!out.ok()) {
      std::fprintf(stderr, "%s\n", std::string(out.status().message()).c_str());
      return 1;
    }
  }
  const int64_t many_reserved = allocator.stats().peak_reserved_bytes;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const int64_t many_hwm = StatusKb("VmHWM:");
  const int64_t many_rss = many_hwm - rss0;
  std::printf(
      "| workload | VM allocator peak reserved | process peak RSS | peak RSS above start |\n");
  std::printf("|---|---|---|---|\n");
  std::printf("| one call, length %d | %.1f MiB | %.1f MiB | %.1f MiB |\n", max_len,
              single_reserved / 1048576.0, single_hwm / 1024.0, single_rss / 1024.0);
  std::printf(
      "| %d calls, lengths 1..%d (%.1f ms/call) | %.1f MiB (%.2fx) | %.1f MiB (%.2fx) | "
      "%.1f MiB (%.2fx) |\n",
      calls, max_len, 1000 * seconds / calls, many_reserved / 1048576.0,
      static_cast<double>(many_reserved) / single_reserved, many_hwm / 1024.0,
      static_cast<double>(many_hwm) / single_hwm, many_rss / 1024.0,
      static_cast<double>(many_rss) / std::max<int64_t>(1, single_rss));
  return 0;
}
