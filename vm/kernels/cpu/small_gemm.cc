// SmallGemm: few rows times a constant weight repacked into column panels (small_gemm.h).
#include "vm/kernels/cpu/small_gemm.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <utility>
#include <vector>

#include "vm/kernels/cpu/elementwise_internal.h"

namespace nimble::vm::cpu {
namespace {

// Panel rows (64 bytes each) to prefetch ahead of the one being multiplied: the hardware
// prefetcher alone falls behind at 16 FMAs a row. On the device's Xeon (BERT-base, seq 16, 2
// threads, bench/results/cpu/small_gemm_2026-12-06.txt) 48 rows ahead: 22.2-24.2 ms; 24:
// 24.9-26.8; 96: 23.5-24.2; none: 34.7.
constexpr int64_t kPrefetchAhead = 48;

// One block of up to 16 rows over panels [p0, p1).
struct SmallGemmArgs {
  const float* xt;      // the block's rows of A transposed: [k][16], rows past the block zero
  const float* panels;  // [panels][k][16]
  float* c;
  const SmallGemmEpilogue* e;
  int64_t row0, n, k, p0, p1;  // the block's first row of C
};

template <typename V>
NIMBLE_SIMD_INLINE V ActivateV(const V& x, SmallGemmAct act) {
  switch (act) {
    case SmallGemmAct::kNone:
      return x;
    case SmallGemmAct::kRelu:
      return x > 0.0f ? x : V{};
    case SmallGemmAct::kGelu:
      return GeluV(x);
    case SmallGemmAct::kGeluTanh:
      return GeluTanhV(x);
    case SmallGemmAct::kTanh:
      return TanhV(x);
    case SmallGemmAct::kSigmoid:
      return 1.0f / (1.0f + ExpV(-x));
  }
  return x;
}

// Panels p0 .. p1 for a block of M rows: per panel, M x (16 / W) accumulators over the whole K.
template <int M>
struct PanelBody {
  template <int W>
  static NIMBLE_SIMD_INLINE void Run(const SmallGemmArgs* args) {
    using V = typename Simd<W>::F;
    constexpr int kV = kSmallGemmPanel / W;
    const SmallGemmArgs& a = *args;
    const SmallGemmEpilogue& e = *a.e;
    for (int64_t p = a.p0; p < a.p1; ++p) {
      const float* w = a.panels + p * a.k * kSmallGemmPanel;
      V acc[M][kV];
      for (int r = 0; r < M; ++r) {
        for (int v = 0; v < kV; ++v) acc[r][v] = V{};
      }
      for (int64_t q = 0; q < a.k; ++q) {
        // The stream runs ahead of the hardware prefetcher at these compute rates.
        __builtin_prefetch(w + (q + kPrefetchAhead) * kSmallGemmPanel);
        V wv[kV];
        for (int v = 0; v < kV; ++v) wv[v] = LoadV<V>(w + q * kSmallGemmPanel + v * W);
        const float* x = a.xt + q * kSmallGemmRowBlock;
        for (int r = 0; r < M; ++r) {
          for (int v = 0; v < kV; ++v) acc[r][v] += wv[v] * x[r];
        }
      }
      for (int v = 0; v < kV; ++v) {
        const int64_t col = p * kSmallGemmPanel + v * W;
        if (col >= a.n) break;
        const bool full = col + W <= a.n;
        for (int r = 0; r < M; ++r) {
          V y = acc[r][v] * e.alpha;
          const int64_t at = (a.row0 + r) * a.n + col;
          if (full) {
            if (e.bias != nullptr) y += LoadV<V>(e.bias + col);
            y = ActivateV(y, e.act);
            if (e.residual != nullptr) y += LoadV<V>(e.residual + at);
            StoreV(a.c + at, y);
          } else {  // the last columns of a width that is not a multiple of W
            for (int64_t j = 0; col + j < a.n; ++j) {
              typename Simd<1>::F s = {y[j] + (e.bias != nullptr ? e.bias[col + j] : 0.0f)};
              s = ActivateV(s, e.act);
              a.c[at + j] = s[0] + (e.residual != nullptr ? e.residual[at + j] : 0.0f);
            }
          }
        }
      }
    }
  }
};

template <int M>
void RunPanels(const SmallGemmArgs& args) {
  RunSimdAvx512<PanelBody<M>>(&args);
}

using PanelFn = void (*)(const SmallGemmArgs&);
template <int... Ms>
constexpr std::array<PanelFn, sizeof...(Ms)> MakeTable(std::integer_sequence<int, Ms...>) {
  return {&RunPanels<Ms + 1>...};
}

}  // namespace

bool SmallGemmAvailable() {
  static const bool disabled = [] {
    const char* v = std::getenv("NIMBLE_SMALL_GEMM");
    return v != nullptr && v[0] == '0';
  }();
  return !disabled && GetSimdLevel() == SimdLevel::kAvx512;
}

int64_t SmallGemmPanelFloats(int64_t k, int64_t n) {
  return (n + kSmallGemmPanel - 1) / kSmallGemmPanel * k * kSmallGemmPanel;
}

void SmallGemmPack(const float* b, int64_t k, int64_t n, int64_t stride_k, int64_t stride_n,
                   float* panels) {
  const int64_t count = (n + kSmallGemmPanel - 1) / kSmallGemmPanel;
  for (int64_t p = 0; p < count; ++p) {
    for (int64_t q = 0; q < k; ++q) {
      float* out = panels + (p * k + q) * kSmallGemmPanel;
      for (int64_t l = 0; l < kSmallGemmPanel; ++l) {
        const int64_t col = p * kSmallGemmPanel + l;
        out[l] = col < n ? b[q * stride_k + col * stride_n] : 0.0f;
      }
    }
  }
}

int64_t SmallGemmMaxRows(int threads) {
  static const int64_t forced = [] {
    const char* v = std::getenv("NIMBLE_SMALL_GEMM_MAX_M");
    return v != nullptr ? std::clamp<int64_t>(std::atoll(v), 0, kSmallGemmMaxM) : int64_t{-1};
  }();
  if (forced >= 0) return forced;
  return threads >= kSmallGemmManyThreads ? kSmallGemmManyThreadsMaxM : kSmallGemmDefaultMaxM;
}

void SmallGemm(int threads, const float* a, int64_t lda, const float* panels, float* c, int64_t m,
               int64_t n, int64_t k, const SmallGemmEpilogue& e) {
  static constexpr auto kTable = MakeTable(std::make_integer_sequence<int, kSmallGemmRowBlock>());
  if (m < 1 || m > kSmallGemmMaxM || n < 1 || k < 1) return;
  // A transposed block by block: [blocks][k][16], rows past M zero.
  const int64_t blocks = (m + kSmallGemmRowBlock - 1) / kSmallGemmRowBlock;
  std::vector<float> xt(static_cast<size_t>(blocks * k * kSmallGemmRowBlock), 0.0f);
  for (int64_t r = 0; r < m; ++r) {
    float* block = xt.data() + r / kSmallGemmRowBlock * k * kSmallGemmRowBlock;
    const int64_t lane = r % kSmallGemmRowBlock;
    for (int64_t q = 0; q < k; ++q) block[q * kSmallGemmRowBlock + lane] = a[r * lda + q];
  }
  const int64_t count = (n + kSmallGemmPanel - 1) / kSmallGemmPanel;
  // One contiguous stretch of panels per thread: each reads one stream of B from memory, and
  // every row block reuses a panel while it is in cache.
  const int64_t per_thread = (count + std::max(threads, 1) - 1) / std::max(threads, 1);
  kernel_util::ParallelFor(threads, count, per_thread, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t rows = std::min(kSmallGemmRowBlock, m - blk * kSmallGemmRowBlock);
        const SmallGemmArgs args{xt.data() + blk * k * kSmallGemmRowBlock,
                                 panels,
                                 c,
                                 &e,
                                 blk * kSmallGemmRowBlock,
                                 n,
                                 k,
                                 p,
                                 p + 1};
        kTable[rows - 1](args);
      }
    }
  });
}

}  // namespace nimble::vm::cpu
