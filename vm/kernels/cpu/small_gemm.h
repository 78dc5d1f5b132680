// Products with a few rows against a constant weight: C = act(alpha * A B + bias) + residual
// for 8 <= M <= 16, or 64 at 8 threads and more (a transformer's tokens at short sequence
// lengths), f32.
//
// At such M a GEMM streams its weight once and does 2M flops per weight element: the speed is
// how fast B arrives. oneDNN's blocked weight layout still reads each thread's share in several
// places at once; here B is repacked once into column panels, [ceil(N/16)][K][16], so each
// thread reads one contiguous stretch of panels front to back (hardware-prefetched streams,
// helped by software prefetch), while A, transposed to [K][16] per block of rows, broadcasts
// from L1/L2. Up to 16 rows a block holds 16 rows x one panel in registers (16 accumulators of
// 16 lanes) for the whole K loop; past 16 rows blocks of 12 rows take two adjacent panels (24
// accumulators; each broadcast row value feeds two FMAs, 14 loads per 24 FMAs instead of 17 per
// 16). The next block reuses the panels from cache; the epilogue runs on the registers. Work is
// split into (panel group, stretch of row blocks) tasks, rows split only as far as balancing the
// threads needs. AVX-512 machines only (the accumulators need 32 vector registers); others keep
// oneDNN.
#pragma once

#include <cstdint>

namespace nimble::vm::cpu {

// Rows it takes: from 8 (below, a row's few flops per weight element leave oneDNN's GEMV as
// fast: at M = 1 it measured 17.7-20.8 ms for BERT-base at 2 threads against 20.2-22.2) to
// SmallGemmMaxRows(), at most kSmallGemmMaxM. Rows go in blocks of 16 (12 with two panels a
// block), each block reusing the panels from cache.
inline constexpr int64_t kSmallGemmMinM = 8;
inline constexpr int64_t kSmallGemmMaxM = 128;
inline constexpr int64_t kSmallGemmRowBlock = 16;
// Past one block a thread's share is compute-bound, and at 2 threads oneDNN's register blocking
// wins: BERT-base on the device's Xeon, seq 64, 56.8-57.2 ms with oneDNN past 16 rows against
// 62.6-62.7 here (one-panel blocks; with two-panel blocks still behind locally, 2 threads,
// 64-128 rows: ~175 against ~220 GFLOP/s, bench_cpu_gemm). At 16 threads oneDNN splits such
// small products poorly and this wins up to 64 rows: seq 64 20.2-20.5 ms against 24.5-24.6, seq
// 128 28.6-29.2 with 64 against 37.4-37.7 with 128
// (bench/results/cpu/small_gemm_rows_2026-12-06.txt). With two-panel blocks, the parallel
// transpose and the 2-D split: seq 64 14.0-15.8 ms against 20.5-20.6
// (bench/results/cpu/omp_inline_2026-12-06.txt); 128 rows stayed no better than oneDNN
// (bench/results/cpu/smallgemm_pairs_2026-12-06.txt).
inline constexpr int64_t kSmallGemmDefaultMaxM = 16;
inline constexpr int64_t kSmallGemmManyThreadsMaxM = 64;
inline constexpr int kSmallGemmManyThreads = 8;
// The most rows SmallGemm takes at `threads`: kSmallGemmDefaultMaxM, or
// kSmallGemmManyThreadsMaxM from kSmallGemmManyThreads threads; NIMBLE_SMALL_GEMM_MAX_M (up to
// kSmallGemmMaxM) overrides both for A/B measurements.
int64_t SmallGemmMaxRows(int threads);
inline constexpr int64_t kSmallGemmPanel = 16;  // columns a panel

// Whether SmallGemm runs here (AVX-512 at the active SIMD level; NIMBLE_SMALL_GEMM=0 turns it
// off for A/B measurements, NIMBLE_SMALL_GEMM_PAIRS=0 keeps one-panel blocks past 16 rows).
bool SmallGemmAvailable();

// Floats of B's panels.
int64_t SmallGemmPanelFloats(int64_t k, int64_t n);
// Packs B (element (k, n) at b[k * stride_k + n * stride_n]) into panels (zero past N).
void SmallGemmPack(const float* b, int64_t k, int64_t n, int64_t stride_k, int64_t stride_n,
                   float* panels);

enum class SmallGemmAct { kNone, kRelu, kGelu, kGeluTanh, kTanh, kSigmoid };

struct SmallGemmEpilogue {
  float alpha = 1.0f;
  const float* bias = nullptr;  // N, added after alpha
  SmallGemmAct act = SmallGemmAct::kNone;
  const float* residual = nullptr;  // M x N (row stride N), added after the activation
};

// C (M x N, row stride N) from A (M x K, row stride lda) and the panels of B;
// 1 <= M <= kSmallGemmMaxM (any M in range works; callers start at kSmallGemmMinM).
// Splits the panels over up to `threads` threads.
void SmallGemm(int threads, const float* a, int64_t lda, const float* panels, float* c, int64_t m,
               int64_t n, int64_t k, const SmallGemmEpilogue& e);

}  // namespace nimble::vm::cpu
