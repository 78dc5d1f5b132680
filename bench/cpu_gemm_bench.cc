// The CPU FusedMatMul kernel against a constant weight at BERT-base's shapes (M tokens x K
// times K x N, bias; GELU on the 3072-wide one), as the compiled model runs it. Which path
// runs is chosen as in a model: SmallGemm's column panels up to SmallGemmMaxRows() rows,
// oneDNN's prepacked matmul past them; run the binary under NIMBLE_SMALL_GEMM=0 (oneDNN
// everywhere), NIMBLE_SMALL_GEMM_MAX_M=128 (SmallGemm up to 128 rows) and
// NIMBLE_SMALL_GEMM_PAIRS=0 (one panel a block) to compare them on the same machine:
//   build/bench/bench_cpu_gemm --benchmark_filter='/64/'
// Reports GFLOP/s as the "flops" counter.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "vm/kernels/kernel.h"
#include "vm/runtime/attributes.h"
#include "vm/runtime/tensor.h"

namespace nimble::vm {
namespace {

std::vector<float> Random(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(gen);
  return v;
}

// Runs `kernel` for the benchmark's iterations and reports FLOP/s of an m x n x k product.
void TimeKernel(benchmark::State& state, const Kernel& kernel, const KernelContext& ctx,
                const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs, int64_t m,
                int64_t n, int64_t k) {
  for (auto _ : state) {
    const absl::Status status = kernel.Run(ctx, inputs, absl::MakeSpan(outputs));
    if (!status.ok()) {
      state.SkipWithError(std::string(status.message()).c_str());
      return;
    }
    benchmark::ClobberMemory();
  }
  const double flops = 2.0 * static_cast<double>(m * n * k);
  state.counters["flops"] = benchmark::Counter(flops * static_cast<double>(state.iterations()),
                                               benchmark::Counter::kIsRate);
}

// Args: M, N, K, threads.
void BM_FusedMatMul(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  Attributes attrs;
  attrs.Set("constant_b", int64_t{1});
  attrs.Set("activation", std::string(n == 3072 ? "gelu" : ""));
  auto kernel = KernelRegistry::Global().Create("FusedMatMul", kCpu.type, attrs);
  if (!kernel.ok()) {
    state.SkipWithError(std::string(kernel.status().message()).c_str());
    return;
  }
  KernelContext ctx;
  ctx.num_threads = static_cast<int>(state.range(3));
  const std::vector<Tensor> inputs = {Tensor::FromVector<float>(Random(m * k, 1), {m, k}),
                                      Tensor::FromVector<float>(Random(k * n, 2), {k, n}),
                                      Tensor::FromVector<float>(Random(n, 3), {n})};
  std::vector<Tensor> outputs = {*Tensor::Empty(DType::kF32, {m, n})};
  TimeKernel(state, **kernel, ctx, inputs, outputs, m, n, k);
}

void Shapes(benchmark::internal::Benchmark* b) {
  for (int64_t threads : {1, 2, 16}) {
    for (int64_t m : {16, 64, 128}) {
      for (auto [n, k] : {std::pair<int64_t, int64_t>{768, 768}, {2304, 768}, {3072, 768},
                          {768, 3072}}) {
        b->Args({m, n, k, threads});
      }
    }
  }
}

BENCHMARK(BM_FusedMatMul)->Apply(Shapes)->UseRealTime()->MinTime(0.2);

// The LSTM fast path's input projection: Gemm(X [M, K], W [N, K], transB) with W constant, as
// RecurrentKernel runs it (LSTM 2x650: K = 650, N = 4 * 650). Args: M, N, K, threads.
void BM_GemmTransB(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  Attributes attrs;
  attrs.Set("transB", int64_t{1});
  attrs.Set("constant_b", int64_t{1});
  auto kernel = KernelRegistry::Global().Create("Gemm", kCpu.type, attrs);
  if (!kernel.ok()) {
    state.SkipWithError(std::string(kernel.status().message()).c_str());
    return;
  }
  KernelContext ctx;
  ctx.num_threads = static_cast<int>(state.range(3));
  Tensor w = Tensor::FromVector<float>(Random(n * k, 2), {n, k});
  w.storage()->MarkConstant();
  const std::vector<Tensor> inputs = {Tensor::FromVector<float>(Random(m * k, 1), {m, k}), w};
  std::vector<Tensor> outputs = {*Tensor::Empty(DType::kF32, {m, n})};
  TimeKernel(state, **kernel, ctx, inputs, outputs, m, n, k);
}

BENCHMARK(BM_GemmTransB)
    ->Args({16, 2600, 650, 2})
    ->Args({64, 2600, 650, 2})
    ->Args({128, 2600, 650, 2})
    ->Args({128, 2600, 650, 16})
    ->UseRealTime()
    ->MinTime(0.2);

}  // namespace
}  // namespace nimble::vm

BENCHMARK_MAIN();
