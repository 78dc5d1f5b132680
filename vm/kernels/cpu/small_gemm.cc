// SmallGemm: few rows times a constant weight repacked into column panels (small_gemm.h).
#include "vm/kernels/cpu/small_gemm.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <limits>
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

// One block of up to kSmallGemmRowBlock rows times P adjacent panels.
struct SmallGemmArgs {
  const float* xt;      // the block's rows of A transposed: [k][16] (kSmallGemmRowBlock lanes)
  const float* panels;  // [panels][k][16]
  float* c;
  const SmallGemmEpilogue* e;
  int64_t row0, n, k, p;  // the block's first row of C, its first panel
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

// M rows times P panels: M x P x (16 / W) accumulators over the whole K. One panel (P = 1)
// loads a weight vector per 16 FMAs at M = 16; two (P = 2, M <= 12) share each broadcast row
// value between two weight vectors: 14 loads per 24 FMAs.
template <int M, int P>
struct PanelBody {
  template <int W>
  static NIMBLE_SIMD_INLINE void Run(const SmallGemmArgs* args) {
    using V = typename Simd<W>::F;
    constexpr int kV = kSmallGemmPanel / W;
    const SmallGemmArgs& a = *args;
    const SmallGemmEpilogue& e = *a.e;
    const int64_t panel_floats = a.k * kSmallGemmPanel;
    const float* w = a.panels + a.p * panel_floats;
    V acc[M][P][kV];
    for (int r = 0; r < M; ++r) {
      for (int j = 0; j < P; ++j) {
        for (int v = 0; v < kV; ++v) acc[r][j][v] = V{};
      }
    }
    for (int64_t q = 0; q < a.k; ++q) {
      // The stream runs ahead of the hardware prefetcher at these compute rates.
      V wv[P][kV];
      for (int j = 0; j < P; ++j) {
        const float* wj = w + j * panel_floats + q * kSmallGemmPanel;
        __builtin_prefetch(wj + kPrefetchAhead * kSmallGemmPanel);
        for (int v = 0; v < kV; ++v) wv[j][v] = LoadV<V>(wj + v * W);
      }
      const float* x = a.xt + q * kSmallGemmRowBlock;
      for (int r = 0; r < M; ++r) {
        // Scalar times vector: a broadcast from memory (a load), not a shuffle on an FMA port.
        for (int j = 0; j < P; ++j) {
          for (int v = 0; v < kV; ++v) acc[r][j][v] += wv[j][v] * x[r];
        }
      }
    }
    for (int j = 0; j < P; ++j) {
      for (int v = 0; v < kV; ++v) {
        const int64_t col = (a.p + j) * kSmallGemmPanel + v * W;
        if (col >= a.n) break;
        const bool full = col + W <= a.n;
        for (int r = 0; r < M; ++r) {
          V y = acc[r][j][v] * e.alpha;
          const int64_t at = (a.row0 + r) * a.n + col;
          if (full) {
            if (e.bias != nullptr) y += LoadV<V>(e.bias + col);
            y = ActivateV(y, e.act);
            if (e.residual != nullptr) y += LoadV<V>(e.residual + at);
            StoreV(a.c + at, y);
          } else {  // the last columns of a width that is not a multiple of W
            for (int64_t i = 0; col + i < a.n; ++i) {
              typename Simd<1>::F s = {y[i] + (e.bias != nullptr ? e.bias[col + i] : 0.0f)};
              s = ActivateV(s, e.act);
              a.c[at + i] = s[0] + (e.residual != nullptr ? e.residual[at + i] : 0.0f);
            }
          }
        }
      }
    }
  }
};

template <int M, int P>
void RunPanels(const SmallGemmArgs& args) {
  RunSimdAvx512<PanelBody<M, P>>(&args);
}

using PanelFn = void (*)(const SmallGemmArgs&);
template <int P, int... Ms>
constexpr std::array<PanelFn, sizeof...(Ms)> MakeTable(std::integer_sequence<int, Ms...>) {
  return {&RunPanels<Ms + 1, P>...};
}

// Rows a block takes with P panels at a time.
constexpr int64_t kPairRowBlock = 12;
static_assert(kPairRowBlock <= kSmallGemmRowBlock);

// Whether blocks take two panels at a time (NIMBLE_SMALL_GEMM_PAIRS=0: one, for A/B runs).
bool PairsEnabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("NIMBLE_SMALL_GEMM_PAIRS");
    return v == nullptr || v[0] != '0';
  }();
  return enabled;
}

// A's rows transposed block by block into xt ([blocks][k][kSmallGemmRowBlock], `rows` rows a
// block, lanes past them zero), K split over the threads when A is large: at 64 rows by 3072 one
// thread's transpose costs about as much as the product's share of a thread.
void TransposeRows(int threads, const float* a, int64_t lda, int64_t m, int64_t k, int64_t rows,
                   float* xt) {
  const int64_t blocks = (m + rows - 1) / rows;
  auto run = [&](int64_t q0, int64_t q1) {
    for (int64_t blk = 0; blk < blocks; ++blk) {
      float* out = xt + blk * k * kSmallGemmRowBlock;
      const int64_t r0 = blk * rows, r1 = std::min(m, r0 + rows);
      for (int64_t q = q0; q < q1; ++q) {
        float* line = out + q * kSmallGemmRowBlock;
        int64_t lane = 0;
        for (int64_t r = r0; r < r1; ++r, ++lane) line[lane] = a[r * lda + q];
        for (; lane < kSmallGemmRowBlock; ++lane) line[lane] = 0.0f;
      }
    }
  };
  constexpr int64_t kSerialElements = 16384;
  if (threads <= 1 || m * k <= kSerialElements) {
    run(0, k);
    return;
  }
  kernel_util::ParallelFor(threads, k, std::max<int64_t>(32, (k + threads - 1) / threads), run);
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
  static constexpr auto kSingles =
      MakeTable<1>(std::make_integer_sequence<int, kSmallGemmRowBlock>());
  static constexpr auto kPairs = MakeTable<2>(std::make_integer_sequence<int, kPairRowBlock>());
  if (m < 1 || m > kSmallGemmMaxM || n < 1 || k < 1) return;
  const int64_t count = (n + kSmallGemmPanel - 1) / kSmallGemmPanel;
  // Panels a block takes: two past one block of rows (at 16 rows or fewer the weight stream
  // bounds the time, and one 16-row block beats 12 + 4).
  const int64_t width = PairsEnabled() && count > 1 && m > kSmallGemmRowBlock ? 2 : 1;
  const int64_t rows = width == 2 ? kPairRowBlock : kSmallGemmRowBlock;
  const int64_t blocks = (m + rows - 1) / rows;
  // Scratch for A transposed, kept per thread across calls (no allocation or zeroing per call).
  thread_local std::vector<float> xt;
  const size_t xt_floats = static_cast<size_t>(blocks * k * kSmallGemmRowBlock);
  if (xt.size() < xt_floats) xt.resize(xt_floats);
  TransposeRows(threads, a, lda, m, k, rows, xt.data());
  const float* xt_data = xt.data();
  // Tasks are (panel group, stretch of row blocks), numbered group-major; each thread takes one
  // contiguous run of them, so it reads its groups of B front to back and every row block reuses
  // a group while it is in cache. Rows are split only as far as balancing the threads needs
  // (768 columns are 24 pairs: 16 threads would leave 4 idle without halving the rows).
  const int64_t groups = (count + width - 1) / width;
  const int64_t team = std::max(threads, 1);
  int64_t parts = 1, best = std::numeric_limits<int64_t>::max();
  for (int64_t r = 1; r <= blocks; ++r) {
    const int64_t load = (groups * r + team - 1) / team * ((blocks + r - 1) / r);
    if (load < best) best = load, parts = r;
  }
  const int64_t span = (blocks + parts - 1) / parts;  // row blocks a task
  const int64_t tasks = groups * parts;
  kernel_util::ParallelFor(threads, tasks, (tasks + team - 1) / team, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t p = t / parts * width;
      const bool pair = p + 1 < count && width == 2;
      const int64_t b0 = t % parts * span, b1 = std::min(blocks, b0 + span);
      for (int64_t blk = b0; blk < b1; ++blk) {
        const int64_t r = std::min(rows, m - blk * rows);
        const SmallGemmArgs args{
            xt_data + blk * k * kSmallGemmRowBlock, panels, c, &e, blk * rows, n, k, p};
        (pair ? kPairs[r - 1] : kSingles[r - 1])(args);
      }
    }
  });
}

}  // namespace nimble::vm::cpu
