// Recurrent kernels: LSTM, GRU, RNN (ONNX semantics: forward/reverse/bidirectional, layout 0
// and 1, optional bias, sequence_lens, initial states, LSTM peepholes and input_forget, GRU
// linear_before_reset, clip, and the ONNX activation functions with their alpha/beta lists).
//
// LSTM with the default activations and batch <= 16 (the usual exported language model) takes
// the fast path, RunFastLstm. When W is an executable's constant, all timesteps' inputs of all
// directions are first projected onto the gates (X · W^T through the Gemm kernel: W repacked
// once, oneDNN or SmallGemm by row count, on oneDNN's OpenMP team; from 8 threads in blocks of
// SmallGemm's 64 rows). Then one persistent team of the worker's thread budget (StepTeam: that
// OpenMP team, or the caller plus TBB workers without one; claimable work items, a spin wait per
// step instead of a fork/join) runs every direction at once; with a W that is not a constant,
// its first round projects (column blocks of ~256, single-threaded sgemm). In every other
// round, one per step, an item is a fixed slice of units of one direction, so its rows of R stay
// in one core's cache: it computes the slice's recurrent dot products (AVX-512/AVX2/SSE by
// RunSimd; at batch 1 a GEMV, which sgemm does poorly) with the gate math fused behind them.
// When R is an executable's constant the products read it repacked (PackLstmR: each unit's four
// gate rows interleaved in 64-byte chunks), packed on the first call and kept with the kernel
// while R lives; otherwise they read row-major R. Nothing is packed per call.
//
// The general path (GRU, RNN, other activations, larger batches): per direction, the input
// projection of every timestep is one GEMM, X[T*B, I] · W^T, with both biases folded in (except
// GRU's recurrent h-gate bias under linear_before_reset, which the reset gate multiplies). Each
// step then runs one small GEMM of the hidden state with R^T (two for GRU without
// linear_before_reset, whose h-gate needs r ⊙ h first) and the fused gate math. GEMMs are
// oneDNN's sgemm on the worker's thread budget.
//
// Both: batch rows whose sequence has ended keep their state; a reverse direction starts each
// row at its own last valid step; Y is zero past a row's length.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/status_macros.h"
#include "tbb/task_arena.h"
#include "tbb/task_group.h"
#include "vm/kernels/cpu/cpu_kernels.h"
#include "vm/kernels/cpu/elementwise_internal.h"
#include "vm/kernels/cpu/onednn_util.h"
#include "vm/kernels/cpu/small_gemm.h"

// GCC 12 reports absl::InlinedVector's copy of an inlined (small) Shape as "maybe uninitialized"
// (a known false positive of its inliner).
#if defined(__GNUC__) && !defined(__clang__)  // clang has no such warning
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace nimble::vm::cpu {
namespace {

using kernel_util::CheckDefined;
using kernel_util::Present;

using KernelPtr = std::unique_ptr<Kernel>;

// ---------------------------------------------------------------------------------------------
// Activation functions

enum class ActKind {
  kSigmoid,
  kTanh,
  kRelu,
  kAffine,
  kLeakyRelu,
  kThresholdedRelu,
  kScaledTanh,
  kHardSigmoid,
  kElu,
  kSoftsign,
  kSoftplus
};

struct Act {
  ActKind kind = ActKind::kSigmoid;
  float alpha = 0.0f;
  float beta = 0.0f;
};

// Parses `names` with their alpha/beta lists, consumed in order by the functions that take them.
absl::StatusOr<std::vector<Act>> ParseActivations(const std::vector<std::string>& names,
                                                  const std::vector<double>& alphas,
                                                  const std::vector<double>& betas) {
  std::vector<Act> out;
  size_t ai = 0, bi = 0;
  auto alpha = [&](float fallback) {
    return ai < alphas.size() ? static_cast<float>(alphas[ai++]) : fallback;
  };
  auto beta = [&](float fallback) {
    return bi < betas.size() ? static_cast<float>(betas[bi++]) : fallback;
  };
  for (const std::string& raw : names) {
    const std::string n = absl::AsciiStrToLower(raw);
    Act a;
    if (n == "sigmoid") {
      a.kind = ActKind::kSigmoid;
    } else if (n == "tanh") {
      a.kind = ActKind::kTanh;
    } else if (n == "relu") {
      a.kind = ActKind::kRelu;
    } else if (n == "affine") {
      a.kind = ActKind::kAffine;
      a.alpha = alpha(1.0f);
      a.beta = beta(0.0f);
    } else if (n == "leakyrelu") {
      a.kind = ActKind::kLeakyRelu;
      a.alpha = alpha(0.01f);
    } else if (n == "thresholdedrelu") {
      a.kind = ActKind::kThresholdedRelu;
      a.alpha = alpha(1.0f);
    } else if (n == "scaledtanh") {
      a.kind = ActKind::kScaledTanh;
      a.alpha = alpha(1.0f);
      a.beta = beta(1.0f);
    } else if (n == "hardsigmoid") {
      a.kind = ActKind::kHardSigmoid;
      a.alpha = alpha(0.2f);
      a.beta = beta(0.5f);
    } else if (n == "elu") {
      a.kind = ActKind::kElu;
      a.alpha = alpha(1.0f);
    } else if (n == "softsign") {
      a.kind = ActKind::kSoftsign;
    } else if (n == "softplus") {
      a.kind = ActKind::kSoftplus;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown activation '", raw, "'"));
    }
    out.push_back(a);
  }
  return out;
}

inline float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// x[i] = act(x[i]) for i < n; the switch sits outside the loop so each loop vectorises or at
// least stays tight.
void Apply(const Act& a, float* x, int64_t n) {
  switch (a.kind) {
    case ActKind::kSigmoid:
      for (int64_t i = 0; i < n; ++i) x[i] = Sigmoid(x[i]);
      return;
    case ActKind::kTanh:
      for (int64_t i = 0; i < n; ++i) x[i] = std::tanh(x[i]);
      return;
    case ActKind::kRelu:
      for (int64_t i = 0; i < n; ++i) x[i] = std::max(x[i], 0.0f);
      return;
    case ActKind::kAffine:
      for (int64_t i = 0; i < n; ++i) x[i] = a.alpha * x[i] + a.beta;
      return;
    case ActKind::kLeakyRelu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] >= 0 ? x[i] : a.alpha * x[i];
      return;
    case ActKind::kThresholdedRelu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] > a.alpha ? x[i] : 0.0f;
      return;
    case ActKind::kScaledTanh:
      for (int64_t i = 0; i < n; ++i) x[i] = a.alpha * std::tanh(a.beta * x[i]);
      return;
    case ActKind::kHardSigmoid:
      for (int64_t i = 0; i < n; ++i) x[i] = std::clamp(a.alpha * x[i] + a.beta, 0.0f, 1.0f);
      return;
    case ActKind::kElu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] >= 0 ? x[i] : a.alpha * (std::exp(x[i]) - 1);
      return;
    case ActKind::kSoftsign:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1 + std::fabs(x[i]));
      return;
    case ActKind::kSoftplus:
      for (int64_t i = 0; i < n; ++i) x[i] = std::log1p(std::exp(x[i]));
      return;
  }
}

void Clip(float* x, int64_t n, float clip) {
  if (clip <= 0) return;
  for (int64_t i = 0; i < n; ++i) x[i] = std::clamp(x[i], -clip, clip);
}

// c[m, n] = a[m, k] · b[n, k]^T on `num_threads` TBB threads, each running single-threaded sgemm
// on a block of columns.
absl::Status ParallelSgemmNT(int num_threads, int64_t m, int64_t n, int64_t k, const float* a,
                             int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc) {
  absl::Status status;
  std::mutex mutex;  // guards status
  const int threads = onednn::ThreadsFor(num_threads, 2.0 * static_cast<double>(m) * n * k);
  const int64_t grain = std::max<int64_t>(16, (n + 2 * threads - 1) / (2 * threads));
  kernel_util::ParallelFor(threads, n, grain, [&](int64_t j0, int64_t j1) {
    absl::Status s = onednn::Sgemm(1, false, true, m, j1 - j0, k, 1.0f, a, lda, b + j0 * ldb, ldb,
                                   0.0f, c + j0, ldc);
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(mutex);
      status = s;
    }
  });
  return status;
}

// ---------------------------------------------------------------------------------------------
// Step team: the threads of one recurrence.

std::atomic<bool> g_fast_lstm{true};  // SetLstmFastPathForTesting

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

inline int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
// NIMBLE_LSTM_TRACE (any value): each team prints, per participant and round after the first,
// the time inside its own items and the time waiting for the round to finish (stderr).
const bool kTrace = std::getenv("NIMBLE_LSTM_TRACE") != nullptr;

// Runs `steps` rounds of `chunks` independent work items, fn(step, chunk, participant); round
// s + 1 starts once every item of round s is done. The caller and up to threads - 1 TBB workers
// (an arena of `threads` slots) take part. Participant p claims the items it owns
// (c % threads == p), so each keeps the same slice of the weights in its cache from step to
// step. Claims are per item, so a round completes with whoever shows up: a participant whose
// round is not done after a short spin takes the items still unclaimed, one at a time, so a
// worker that starts late or is descheduled only loses its items to the others, and nothing
// waits for a thread that never comes (the failure mode of an OpenMP team on a loaded machine). One
// who had to steal in a round steals at once in the next. The finisher of a round's last item
// publishes the round; the others spin on that (pause), then yield.
class StepTeam {
 public:
  StepTeam(int64_t steps, int chunks) : claimed_(chunks), steps_(steps), chunks_(chunks) {
    for (Slot& s : claimed_) s.round.store(-1, std::memory_order_relaxed);
  }
  ~StepTeam() {
    if (!kTrace || steps_ < 2) return;
    int64_t work = 0, wait = 0, wmax = 0, parts = 0, first_max = 0, first_done = 0;
    for (const auto& t : times_) {
      if (t.work + t.wait == 0) continue;
      work += t.work, wait += t.wait, ++parts;
      wmax = std::max<int64_t>(wmax, t.work);
      first_max = std::max<int64_t>(first_max, t.first_work);
      first_done = std::max<int64_t>(first_done, t.first_done);
    }
    const double n =
        static_cast<double>(steps_ - 1) * static_cast<double>(std::max<int64_t>(parts, 1));
    std::fprintf(stderr,
                 "team %d items x %lld rounds: per participant-round work %.2f us, wait %.2f us; "
                 "slowest participant's work %.2f us a round; first round: slowest work %.1f us, "
                 "done after %.1f us\n",
                 chunks_, static_cast<long long>(steps_), work / n / 1e3, wait / n / 1e3,
                 wmax / static_cast<double>(steps_ - 1) / 1e3, first_max / 1e3, first_done / 1e3);
  }

  void Participate(int p, int threads,
                   absl::FunctionRef<void(int64_t step, int chunk, int participant)> fn) {
    bool eager = false;  // stole in the previous round
    for (int64_t s = round_.load(std::memory_order_acquire); s < steps_; ++s) {
      const int64_t t0 = kTrace ? NowNs() : 0;
      for (int c = p; c < chunks_; c += threads) {
        if (Claim(c, s)) Run(fn, s, c, p);
      }
      const int64_t t1 = kTrace ? NowNs() : 0;
      bool scanned = false, stole = false;
      for (int spins = 0; round_.load(std::memory_order_acquire) <= s; ++spins) {
        if (!scanned && (eager || spins >= kStealAfter)) {
          // Take one item nobody has claimed, then look again: owners that turn up meanwhile
          // still get theirs. Once none is left the round only waits on running items.
          scanned = true;
          for (int i = 1; i <= chunks_; ++i) {
            const int c = (p + i) % chunks_;
            if (Claim(c, s)) {
              Run(fn, s, c, p);
              stole = true;
              scanned = false;
              break;
            }
          }
        } else if (spins < kSpins) {
          CpuRelax();
        } else {
          std::this_thread::yield();
        }
      }
      eager = stole;
      if (kTrace && s > 0 && p < 64) {
        times_[p].work += t1 - t0;
        times_[p].wait += NowNs() - t1;
      } else if (kTrace && p < 64) {  // the first round, from the team's start
        times_[p].first_work = t1 - start_ns_;
        times_[p].first_done = NowNs() - start_ns_;
      }
    }
  }

 private:
  static constexpr int kStealAfter = 256;  // pauses: a few microseconds
  static constexpr int kSpins = 4096;      // then yield the core
  struct alignas(64) Slot {
    std::atomic<int64_t> round;  // the last round that claimed the item
  };
  bool Claim(int c, int64_t s) {
    int64_t expected = s - 1;
    return claimed_[c].round.load(std::memory_order_relaxed) == expected &&
           claimed_[c].round.compare_exchange_strong(expected, s, std::memory_order_acq_rel);
  }
  void Run(absl::FunctionRef<void(int64_t, int, int)> fn, int64_t s, int c, int p) {
    fn(s, c, p);
    if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == (s + 1) * chunks_) {
      round_.store(s + 1, std::memory_order_release);
    }
  }

  struct alignas(64) Times {
    int64_t work = 0, wait = 0;
    int64_t first_work = 0, first_done = 0;  // ns from the team's start
  };
  const int64_t start_ns_ = kTrace ? NowNs() : 0;
  std::vector<Times> times_ = std::vector<Times>(kTrace ? 64 : 0);  // per participant < 64
  std::vector<Slot> claimed_;
  alignas(64) std::atomic<int64_t> done_{0};   // items finished over all rounds
  alignas(64) std::atomic<int64_t> round_{0};  // rounds finished
  const int64_t steps_;
  const int chunks_;
};

// StepTeam on `threads` threads: oneDNN's OpenMP team where there is one, else the caller and
// threads - 1 tasks of a per-thread TBB arena (like kernel_util::ParallelFor, so the worker's
// budget bounds it either way). NIMBLE_LSTM_TEAM=tbb keeps TBB (A/B measurements).
void RunSteps(int threads, int64_t steps, int chunks,
              absl::FunctionRef<void(int64_t step, int chunk, int participant)> fn) {
  if (steps <= 0 || chunks <= 0) return;
  StepTeam team(steps, chunks);
  if (threads <= 1) {
    team.Participate(0, 1, fn);
    return;
  }
  static const bool kTbbTeam = [] {
    const char* v = std::getenv("NIMBLE_LSTM_TEAM");
    return v != nullptr && std::string(v) == "tbb";
  }();
  // On oneDNN's OpenMP team when there is one, like kernel_util::ParallelFor: the threads that
  // ran the input projection's GEMM, and no TBB worker competing with them while they spin.
  // Each participant index is taken once; one that a late thread takes finds every round done.
  if (!kTbbTeam && onednn::OmpParallelFor(threads, threads, threads, [&](int64_t b, int64_t e) {
        for (int64_t p = b; p < e; ++p) team.Participate(static_cast<int>(p), threads, fn);
      })) {
    return;
  }
  thread_local std::unique_ptr<tbb::task_arena> arena;
  thread_local int arena_threads = 0;
  if (arena == nullptr || arena_threads != threads) {
    arena = std::make_unique<tbb::task_arena>(threads);
    arena_threads = threads;
  }
  arena->execute([&] {
    std::atomic<int> next{1};
    tbb::task_group group;
    for (int i = 1; i < threads; ++i) {
      group.run([&] { team.Participate(next.fetch_add(1), threads, fn); });
    }
    team.Participate(0, threads, fn);
    group.wait();
  });
}

// ---------------------------------------------------------------------------------------------
// Fast LSTM step: default activations (sigmoid, tanh, tanh); peepholes, clip and input_forget
// are per-item flags. One work item is a slice of units [j0, j1) of one direction: it computes the
// four gates' recurrent dot products for its units from R (packed, or row-major [4h, h], where
// each product reads one contiguous row), adds the precomputed input projection and biases, and
// runs the cell update, writing h, c and Y for its units.

template <int W>
NIMBLE_SIMD_INLINE float HSum(const typename Simd<W>::F& v) {
  if constexpr (W == 1) {
    return v[0];
  } else {
    typename Simd<W / 2>::F lo, hi;
    std::memcpy(&lo, &v, sizeof(lo));
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(lo), sizeof(hi));
    return HSum<W / 2>(lo + hi);
  }
}

// out[m] = dot(rows[m][0, k), x[0, k)) for m < M.
template <int W, int M>
NIMBLE_SIMD_INLINE void Dots(const float* const* rows, const float* x, int64_t k, float* out) {
  using V = typename Simd<W>::F;
  using I = typename Simd<W>::I;
  V acc[M];
  for (int m = 0; m < M; ++m) acc[m] = V{};
  int64_t i = 0;
  for (; i + W <= k; i += W) {
    const V xv = LoadV<V>(x + i);
    for (int m = 0; m < M; ++m) acc[m] += LoadV<V>(rows[m] + i) * xv;
  }
  if (i < k && k >= W) {
    // The last W elements, with the lanes the loop already counted masked off.
    const int64_t base = k - W;
    I lane;
    for (int l = 0; l < W; ++l) lane[l] = l;
    const I keep = lane >= static_cast<int32_t>(i - base);
    const V xv = LoadV<V>(x + base);
    for (int m = 0; m < M; ++m) {
      const V p = LoadV<V>(rows[m] + base) * xv;
      acc[m] += keep ? p : V{};
    }
    i = k;
  }
  for (int m = 0; m < M; ++m) {
    float sum = HSum<W>(acc[m]);
    for (int64_t j = i; j < k; ++j) sum += rows[m][j] * x[j];
    out[m] = sum;
  }
}

// R repacked for the step's dot products (PackLstmR): per unit, per 16-column chunk, the four
// gates' 16 values side by side, so a unit's rows are one contiguous, 64-byte aligned stream
// instead of four rows 2600 bytes (h = 650) apart that every vector load splits across cache
// lines. The last chunk holds columns [h - 16, h) with the columns an earlier chunk covered set
// to zero, the same lanes Dots masks off. Twice the GEMV speed when a thread's slice of R sits
// in its L2 (16 threads: 0.42 MB, 64 -> 120 GB/s on one Xeon core); no change from L3.
constexpr int64_t kPackChunk = 16;
int64_t PackedChunks(int64_t h) { return (h + kPackChunk - 1) / kPackChunk; }

// out[q] (and out[4 + q] for M == 8: the next unit) = dot(gate q of the unit, x[0, h)), from the
// packed blocks starting at `unit` (h, the rows' length, >= 16).
template <int W, int M>
NIMBLE_SIMD_INLINE void DotsPacked(const float* unit, const float* x, int64_t h, int64_t chunks,
                                   float* out) {
  static_assert(kPackChunk % W == 0 && (M == 4 || M == 8), "chunk of whole vectors");
  using V = typename Simd<W>::F;
  V acc[M];
  for (int m = 0; m < M; ++m) acc[m] = V{};
  const float* next = unit + chunks * 4 * kPackChunk;
  for (int64_t c = 0; c < chunks; ++c) {
    const float* xc = x + (c + 1 == chunks ? h - kPackChunk : c * kPackChunk);
    const float* b0 = unit + c * 4 * kPackChunk;
    const float* b1 = next + c * 4 * kPackChunk;
    for (int s = 0; s < kPackChunk / W; ++s) {
      const V xv = LoadV<V>(xc + s * W);
      for (int q = 0; q < 4; ++q) acc[q] += LoadV<V>(b0 + q * kPackChunk + s * W) * xv;
      if constexpr (M == 8) {
        for (int q = 0; q < 4; ++q) acc[4 + q] += LoadV<V>(b1 + q * kPackChunk + s * W) * xv;
      }
    }
  }
  for (int m = 0; m < M; ++m) out[m] = HSum<W>(acc[m]);
}

// R [dirs, 4h, h] in DotsPacked's layout: [dirs][h units][chunks][4 gates][16]; or, for
// StackedLSTM's wavefront, each gate row of [W | R] (W [4h, k - h] first), so one dot product
// over [x_t ; h_prev] gives the input projection and the recurrent product at once.
struct PackedLstmR {
  std::weak_ptr<Storage> owner;    // R's storage: the packing is valid while it lives
  std::weak_ptr<Storage> owner_w;  // W's, when W's rows lead
  const float* source = nullptr;
  const float* source_w = nullptr;
  int64_t h = 0, k = 0, dirs = 0, chunks = 0;  // k: the row length (h, or W's columns + h)
  std::unique_ptr<float, decltype(&std::free)> data{nullptr, &std::free};

  const float* Direction(int dir) const { return data.get() + dir * h * chunks * 4 * kPackChunk; }
};

// Packs R [dirs, 4h, h], preceded per row by W [dirs, 4h, k - h] when `w` is given (k > h).
std::unique_ptr<PackedLstmR> PackLstmRows(const Tensor* w, const Tensor& r, int64_t h, int64_t k,
                                          int64_t dirs) {
  auto packed = std::make_unique<PackedLstmR>();
  packed->owner = r.storage();
  packed->source = r.data<float>();
  if (w != nullptr) packed->owner_w = w->storage(), packed->source_w = w->data<float>();
  const int64_t in = k - h;
  packed->h = h, packed->k = k, packed->dirs = dirs, packed->chunks = PackedChunks(k);
  const int64_t chunks = packed->chunks;
  const size_t bytes = static_cast<size_t>(dirs * h * chunks * 4 * kPackChunk) * sizeof(float);
  packed->data.reset(static_cast<float*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64)));
  if (packed->data == nullptr) return nullptr;
  float* out = packed->data.get();
  for (int64_t dir = 0; dir < dirs; ++dir) {
    for (int64_t u = 0; u < h; ++u) {
      for (int64_t c = 0; c < chunks; ++c) {
        const bool last = c + 1 == chunks;
        const int64_t base = last ? k - kPackChunk : c * kPackChunk;
        for (int64_t q = 0; q < 4; ++q) {
          const int64_t row = dir * 4 * h + q * h + u;
          for (int64_t l = 0; l < kPackChunk; ++l) {
            const int64_t col = base + l;
            const float v =
                col < in ? packed->source_w[row * in + col] : packed->source[row * h + col - in];
            *out++ = last && col < c * kPackChunk ? 0.0f : v;
          }
        }
      }
    }
  }
  return packed;
}

// Packings of constant weights (PackLstmRows), made on first use and kept while the weights'
// storage lives; one per kernel instance, shared by its concurrent callers.
class PackCache {
 public:
  // R packed, preceded per row by W when given; null when R or W is not an executable's
  // constant (the caller then reads R itself) or the allocation fails.
  std::shared_ptr<const PackedLstmR> Get(const Tensor* w, const Tensor& r, int64_t h, int64_t k,
                                         int64_t dirs) {
    auto constant = [](const Tensor& t) {
      return t.storage() != nullptr && t.storage()->constant();
    };
    if (!constant(r) || (w != nullptr && !constant(*w))) return nullptr;
    const float* w_data = w != nullptr ? w->data<float>() : nullptr;
    absl::MutexLock lock(&mu_);
    std::erase_if(packs_, [](const auto& p) {
      return p->owner.expired() || (p->source_w != nullptr && p->owner_w.expired());
    });
    for (const auto& p : packs_) {
      if (p->source == r.data<float>() && p->source_w == w_data && p->h == h && p->k == k &&
          p->dirs == dirs && p->owner.lock() == r.storage() &&
          (w == nullptr || p->owner_w.lock() == w->storage())) {
        return p;
      }
    }
    std::shared_ptr<const PackedLstmR> packed = PackLstmRows(w, r, h, k, dirs);
    if (packed != nullptr) packs_.push_back(packed);
    return packed;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::shared_ptr<const PackedLstmR>> packs_ ABSL_GUARDED_BY(mu_);
};

// out [rows, N] = X [rows, input] · W [N, input]^T through `gemm` (the Gemm kernel with transB and
// constant_b: W repacked once) on `threads`. From kSmallGemmManyThreads threads SmallGemm beats
// oneDNN up to SmallGemmMaxRows rows (64), so a longer input goes in blocks of that many rows:
// at 16 threads, seq 128, one 128-row call took 1.08 ms a layer, 64 rows 0.24 ms (device Xeon).
absl::Status ProjectInputs(const Kernel& gemm, const KernelContext& ctx, int threads,
                           const Tensor& x, const Tensor& w, Tensor& out) {
  const int64_t rows = out.dim(0), n = out.dim(1), in = w.dim(1);
  const int64_t block = threads >= kSmallGemmManyThreads ? SmallGemmMaxRows(threads) : rows;
  KernelContext gemm_ctx = ctx;
  gemm_ctx.num_threads = threads;
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    const int64_t m = std::min(block, rows - r0);
    NIMBLE_ASSIGN_OR_RETURN(
        Tensor xb,
        Tensor::View(x.storage(), x.byte_offset() + r0 * in * sizeof(float), DType::kF32, {m, in}));
    NIMBLE_ASSIGN_OR_RETURN(Tensor ob,
                            Tensor::View(out.storage(), out.byte_offset() + r0 * n * sizeof(float),
                                         DType::kF32, {m, n}));
    NIMBLE_RETURN_IF_ERROR(gemm.Run(gemm_ctx, {xb, w}, absl::MakeSpan(&ob, 1)));
  }
  return absl::OkStatus();
}

struct LstmChunkArgs {
  const float* r;          // R of the direction, [4h, h] (may be null with `packed`)
  const float* packed;     // the direction's PackedLstmR blocks, or null (read r)
  int64_t chunks;          // PackedChunks(k) with `packed`
  int64_t k;               // the dot products' length: h, or (packed [W | R]) input + h
  const float* bias;       // Wb + Rb of the direction, [4h]
  const float* h_prev;     // [batch, k]: h_prev, or [x_t ; h_prev] for packed [W | R]
  float* h_next;           // [batch, h]
  float* cell;             // [batch, h], updated in place
  const float* const* xw;  // per batch row: its input projection [4h], null once it ended
  float* const* y;         // per batch row: its Y row [h], or null
  float* pre;              // scratch [batch, 4, j1 - j0]
  const float* peep;       // P of the direction [3h] (i, o, f), or null
  float clip;              // <= 0: none
  bool input_forget;
  int64_t h, batch, j0, j1;
  bool backward;  // walk the units from j1 down (odd steps)
  bool prefetch;  // request h_prev's and the slice's xw lines before the dot products
};

// Teams of at least this many prefetch (LstmChunkArgs::prefetch): on the device's Xeon at 16
// threads a participant's own work a round fell from 6.5-8.2 to 5.9-6.8 µs (four trace pairs);
// at 2 threads the round's work fell 4% but whole-model p50s came out worse in four of four pairs
// (bench/results/cpu/lstm_prefetch_device_2026-12-06.txt), so smaller teams do not.
constexpr int kLstmPrefetchMinThreads = 8;

// NIMBLE_LSTM_PREFETCH=0 turns LstmChunkArgs::prefetch off (A/B measurements).
bool LstmPrefetch() {
  static const bool on = [] {
    const char* v = std::getenv("NIMBLE_LSTM_PREFETCH");
    return v == nullptr || v[0] != '0';
  }();
  return on;
}

// Clamps to [-clip, clip] (NaN stays NaN, as with std::clamp).
template <typename V>
NIMBLE_SIMD_INLINE V ClipV(const V& x, float clip) {
  return ClampLowV(ClampHighV(x, clip), -clip);
}

// Gate math for units u .. u + lanes(V) of the slice (u relative to j0), in the order of
// LstmUnits (the general path): peepholes, clip, activations, input_forget.
template <typename V>
NIMBLE_SIMD_INLINE void LstmGates(const LstmChunkArgs& a, int64_t b, int64_t u) {
  const int64_t h = a.h, n = a.j1 - a.j0, j = a.j0 + u;
  const float* xw = a.xw[b];
  V pre[4];  // (no lambda: it would not inherit the body's target ISA)
  for (int q = 0; q < 4; ++q) {
    pre[q] = LoadV<V>(a.pre + (b * 4 + q) * n + u) + LoadV<V>(xw + q * h + j) +
             LoadV<V>(a.bias + q * h + j);
  }
  float* cs = a.cell + b * h + j;
  const V c_prev = LoadV<V>(cs);
  if (a.peep != nullptr) {
    pre[0] += LoadV<V>(a.peep + j) * c_prev;
    pre[2] += LoadV<V>(a.peep + 2 * h + j) * c_prev;
  }
  if (a.clip > 0) {
    pre[0] = ClipV(pre[0], a.clip);
    pre[2] = ClipV(pre[2], a.clip);
    pre[3] = ClipV(pre[3], a.clip);
  }
  const V i = SigmoidV(pre[0]);
  const V f = a.input_forget ? 1.0f - i : SigmoidV(pre[2]);
  const V g = TanhV(pre[3]);
  const V c = f * c_prev + i * g;
  StoreV(cs, c);
  if (a.peep != nullptr) pre[1] += LoadV<V>(a.peep + h + j) * c;
  if (a.clip > 0) pre[1] = ClipV(pre[1], a.clip);
  const V hv = SigmoidV(pre[1]) * TanhV(c);
  StoreV(a.h_next + b * h + j, hv);
  if (a.y[b] != nullptr) StoreV(a.y[b] + j, hv);
}

struct LstmChunk {
  template <int W>
  static NIMBLE_SIMD_INLINE void Run(const LstmChunkArgs* args) {
    const LstmChunkArgs& a = *args;
    const int64_t h = a.h, n = a.j1 - a.j0;
    const int64_t gate_stride = h * h;  // elements between gate blocks of R
    // Pairs of units (eight rows share each load of x), the last one maybe single; each pair's
    // rows serve every batch row while they are in L1. Every other step walks the pairs
    // backwards, so the rows read last, still in cache, come first: a slice larger than the
    // cache then hits for a cache's worth instead of never (LRU).
    const int64_t pairs = (n + 1) / 2;
    if (a.prefetch) {
      // h_prev was written last round by every participant and xw by the projection: their
      // lines sit in other cores' caches. Ask for all of them at once rather than one miss at a
      // time as the first pair's dot products and the gate math reach them.
      for (int64_t b = 0; b < a.batch; ++b) {
        if (a.xw[b] == nullptr) continue;
        for (int64_t i = 0; i < a.k; i += 16) __builtin_prefetch(a.h_prev + b * a.k + i);
        for (int q = 0; q < 4; ++q) {
          for (int64_t j = a.j0; j < a.j1; j += 16) __builtin_prefetch(a.xw[b] + q * h + j);
          __builtin_prefetch(a.xw[b] + q * h + a.j1 - 1);
        }
      }
    }
    for (int64_t i = 0; i < pairs; ++i) {
      const int64_t u = 2 * (a.backward ? pairs - 1 - i : i);
      // Row-major R's rows of the pair (only without packing: r may then be null).
      const float* r0 = a.packed == nullptr ? a.r + (a.j0 + u) * h : nullptr;
      const float* rows[8] = {};
      if (r0 != nullptr) {
        for (int q = 0; q < 4; ++q) {
          rows[q] = r0 + q * gate_stride;
          rows[4 + q] = r0 + h + q * gate_stride;
        }
      }
      for (int64_t b = 0; b < a.batch; ++b) {
        if (a.xw[b] == nullptr) continue;
        const float* x = a.h_prev + b * a.k;
        float* pre = a.pre + b * 4 * n;
        float out[8];
        const float* unit =
            a.packed != nullptr ? a.packed + (a.j0 + u) * a.chunks * 4 * kPackChunk : nullptr;
        if (u + 1 == n) {
          if (a.packed != nullptr) {
            DotsPacked<W, 4>(unit, x, a.k, a.chunks, out);
          } else {
            Dots<W, 4>(rows, x, h, out);
          }
          for (int q = 0; q < 4; ++q) pre[q * n + u] = out[q];
        } else {
          if (a.packed != nullptr) {
            DotsPacked<W, 8>(unit, x, a.k, a.chunks, out);
          } else {
            Dots<W, 8>(rows, x, h, out);
          }
          for (int q = 0; q < 4; ++q) {
            pre[q * n + u] = out[q];
            pre[q * n + u + 1] = out[4 + q];
          }
        }
      }
    }
    for (int64_t b = 0; b < a.batch; ++b) {
      if (a.xw[b] == nullptr) {  // the sequence ended: keep the state
        std::memcpy(a.h_next + b * h + a.j0, a.h_prev + b * a.k + (a.k - h) + a.j0,
                    n * sizeof(float));
        continue;
      }
      int64_t u = 0;
      for (; u + W <= n; u += W) LstmGates<typename Simd<W>::F>(a, b, u);
      for (; u < n; ++u) LstmGates<typename Simd<1>::F>(a, b, u);
    }
  }
};

// Threads worth using for a recurrence whose step does `flops`: each step ends in a wait for
// the slowest item, a microsecond or so, so every thread should get ~64 KFLOP of it.
int RecurrenceThreads(int budget, double flops) {
  return static_cast<int>(
      std::clamp(flops / 65536.0, 1.0, static_cast<double>(std::max(budget, 1))));
}

// ---------------------------------------------------------------------------------------------

enum class Cell { kLstm, kGru, kRnn };

struct RnnConfig {
  Cell cell = Cell::kLstm;
  int num_dirs = 1;
  bool reverse_only = false;
  int64_t hidden_size = 0;  // 0: from R
  std::vector<Act> acts;    // acts_per_dir() per direction, forward first
  float clip = 0.0f;        // <= 0: none
  bool input_forget = false;
  bool linear_before_reset = false;
  int64_t layout = 0;

  int gates() const { return cell == Cell::kLstm ? 4 : cell == Cell::kGru ? 3 : 1; }
  // An LSTM the fast path runs: default activations (sigmoid, tanh, tanh).
  bool plain_lstm() const {
    if (cell != Cell::kLstm) return false;
    for (size_t i = 0; i < acts.size(); ++i) {
      if (acts[i].kind != (i % 3 == 0 ? ActKind::kSigmoid : ActKind::kTanh)) return false;
    }
    return true;
  }
  int acts_per_dir() const { return cell == Cell::kLstm ? 3 : cell == Cell::kGru ? 2 : 1; }
  const char* name() const {
    return cell == Cell::kLstm ? "LSTM" : cell == Cell::kGru ? "GRU" : "RNN";
  }
};

class RecurrentKernel final : public Kernel {
 public:
  RecurrentKernel(RnnConfig config, std::unique_ptr<Kernel> projection)
      : c_(std::move(config)), projection_(std::move(projection)) {}

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    NIMBLE_ASSIGN_OR_RETURN(Dims d, Plan(inputs));
    for (size_t i = 0; i < output_shapes.size(); ++i) output_shapes[i] = OutShape(d, i);
    return absl::OkStatus();
  }

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(Dims d, Plan(inputs));
    const size_t max_outputs = c_.cell == Cell::kLstm ? 3 : 2;
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputs(c_.name(), outputs, 0, max_outputs));
    std::vector<Shape> shapes;
    for (size_t i = 0; i < outputs.size(); ++i) {
      shapes.push_back(OutShape(d, i));
      NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputDType(c_.name(), outputs[i], DType::kF32));
    }
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputShapes(c_.name(), outputs, shapes));

    std::vector<int64_t> lens(d.batch, d.seq);
    if (Present(inputs, 4)) {
      NIMBLE_ASSIGN_OR_RETURN(lens, kernel_util::ReadInts(inputs[4], c_.name(), "sequence_lens"));
      for (int64_t l : lens) {
        if (l < 0 || l > d.seq) {
          return absl::InvalidArgumentError(
              absl::StrCat(c_.name(), ": sequence length ", l, " is outside [0, ", d.seq, "]"));
        }
      }
    }
    Tensor* y = outputs.size() > 0 && outputs[0].defined() ? &outputs[0] : nullptr;
    Tensor* y_h = outputs.size() > 1 && outputs[1].defined() ? &outputs[1] : nullptr;
    Tensor* y_c = outputs.size() > 2 && outputs[2].defined() ? &outputs[2] : nullptr;
    if (y != nullptr) std::memset(y->raw_data(), 0, y->nbytes());

    if (c_.plain_lstm() && d.batch <= kFastMaxBatch &&
        g_fast_lstm.load(std::memory_order_relaxed)) {
      return RunFastLstm(ctx, inputs, d, lens, y, y_h, y_c);
    }
    const int64_t h = d.hidden, g = c_.gates(), gh = g * h, rows = d.seq * d.batch;
    NIMBLE_ASSIGN_OR_RETURN(Tensor xw, Tensor::Empty(DType::kF32, {rows, gh}, ctx.allocator));
    NIMBLE_ASSIGN_OR_RETURN(Tensor scratch,
                            Tensor::Empty(DType::kF32, {d.batch, 2 * gh + 3 * h}, ctx.allocator));
    // Rows whose sequence ended still go through the recurrent GEMM; keep what they read defined.
    std::memset(scratch.raw_data(), 0, scratch.nbytes());
    const float* x = inputs[0].data<float>();
    for (int dir = 0; dir < c_.num_dirs; ++dir) {
      const bool reverse = c_.reverse_only || dir == 1;
      const float* w = inputs[1].data<float>() + dir * gh * d.input;
      const float* r = inputs[2].data<float>() + dir * gh * h;
      const float* bias = Present(inputs, 3) ? inputs[3].data<float>() + dir * 2 * gh : nullptr;
      // xw = X · W^T + Wb + Rb (GRU under linear_before_reset: without Rb of the h gate).
      // Split over TBB like the steps below, so no OpenMP team spins beside the TBB workers.
      NIMBLE_RETURN_IF_ERROR(ParallelSgemmNT(ctx.num_threads, rows, gh, d.input, x, d.input, w,
                                             d.input, xw.data<float>(), gh));
      if (bias != nullptr) {
        std::vector<float> b(gh);
        for (int64_t j = 0; j < gh; ++j) {
          const bool skip_rb = c_.cell == Cell::kGru && c_.linear_before_reset && j >= 2 * h;
          b[j] = bias[j] + (skip_rb ? 0.0f : bias[gh + j]);
        }
        float* p = xw.data<float>();
        for (int64_t row = 0; row < rows; ++row) {
          for (int64_t j = 0; j < gh; ++j) p[row * gh + j] += b[j];
        }
      }
      NIMBLE_RETURN_IF_ERROR(RunDirection(ctx, inputs, d, dir, reverse, lens, xw.data<float>(), r,
                                          bias == nullptr ? nullptr : bias + gh,
                                          scratch.data<float>(), y, y_h, y_c));
    }
    return absl::OkStatus();
  }

 private:
  struct Dims {
    int64_t seq = 0, batch = 0, input = 0, hidden = 0;
  };

  // Y, Y_h, Y_c shapes.
  Shape OutShape(const Dims& d, size_t i) const {
    if (i == 0) {
      return c_.layout == 0 ? Shape{d.seq, c_.num_dirs, d.batch, d.hidden}
                            : Shape{d.batch, d.seq, c_.num_dirs, d.hidden};
    }
    return StateShape(d);
  }
  Shape StateShape(const Dims& d) const {
    return c_.layout == 0 ? Shape{c_.num_dirs, d.batch, d.hidden}
                          : Shape{d.batch, c_.num_dirs, d.hidden};
  }

  absl::StatusOr<Dims> Plan(absl::Span<const Tensor> inputs) const {
    const std::string op = c_.name();
    const size_t max_inputs = c_.cell == Cell::kLstm ? 8 : 6;
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckArity(op, inputs.size(), 3, max_inputs));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op, inputs, 0, "X"));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op, inputs, 1, "W"));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op, inputs, 2, "R"));
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (i != 4 && inputs[i].defined() && inputs[i].dtype() != DType::kF32) {
        return absl::InvalidArgumentError(
            absl::StrCat(op, ": input ", i, " must be f32, got ", inputs[i].TypeString()));
      }
    }
    const Tensor& x = inputs[0];
    const Tensor& w = inputs[1];
    const Tensor& r = inputs[2];
    if (x.rank() != 3 || w.rank() != 3 || r.rank() != 3) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": X, W and R must be 3-D, got ",
                                                     x.TypeString(), ", ", w.TypeString(), ", ",
                                                     r.TypeString()));
    }
    Dims d;
    d.seq = c_.layout == 0 ? x.dim(0) : x.dim(1);
    d.batch = c_.layout == 0 ? x.dim(1) : x.dim(0);
    d.input = x.dim(2);
    d.hidden = r.dim(2);
    const int64_t g = c_.gates(), h = d.hidden;
    if ((c_.hidden_size > 0 && c_.hidden_size != h) || w.dim(0) != c_.num_dirs ||
        w.dim(1) != g * h || w.dim(2) != d.input || r.dim(0) != c_.num_dirs || r.dim(1) != g * h) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": W ", w.TypeString(), " and R ", r.TypeString(), " do not fit X ",
                       x.TypeString(), " with ", c_.num_dirs, " direction(s)"));
    }
    auto expect = [&](size_t i, Shape shape, const char* name) -> absl::Status {
      if (Present(inputs, i) && inputs[i].shape() != shape) {
        return absl::InvalidArgumentError(absl::StrCat(
            op, ": ", name, " is ", inputs[i].TypeString(), ", expected ", ShapeToString(shape)));
      }
      return absl::OkStatus();
    };
    NIMBLE_RETURN_IF_ERROR(expect(3, {c_.num_dirs, 2 * g * h}, "B"));
    if (Present(inputs, 4) && inputs[4].num_elements() != d.batch) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": sequence_lens ", inputs[4].TypeString(),
                                                     " does not match batch ", d.batch));
    }
    NIMBLE_RETURN_IF_ERROR(expect(5, StateShape(d), "initial_h"));
    if (c_.cell == Cell::kLstm) {
      NIMBLE_RETURN_IF_ERROR(expect(6, StateShape(d), "initial_c"));
      NIMBLE_RETURN_IF_ERROR(expect(7, {c_.num_dirs, 3 * h}, "P"));
    }
    return d;
  }

  // Element offset of state row (dir, b) in Y_h-like tensors.
  int64_t StateOffset(const Dims& d, int dir, int64_t b) const {
    return (c_.layout == 0 ? (dir * d.batch + b) : (b * c_.num_dirs + dir)) * d.hidden;
  }
  // Element offset of Y row (t, dir, b).
  int64_t YOffset(const Dims& d, int64_t t, int dir, int64_t b) const {
    return (c_.layout == 0 ? ((t * c_.num_dirs + dir) * d.batch + b)
                           : ((b * d.seq + t) * c_.num_dirs + dir)) *
           d.hidden;
  }
  // Row of X (and xw) for (t, b).
  int64_t XRow(const Dims& d, int64_t t, int64_t b) const {
    return c_.layout == 0 ? t * d.batch + b : b * d.seq + t;
  }

  // R packed for the fast path when it is an executable's constant (R >= 16 units), made on the
  // first call and kept while R's storage lives; null otherwise (the step then reads R itself).
  std::shared_ptr<const PackedLstmR> PackedR(const Tensor& r, int64_t h, int64_t dirs) const {
    static const bool disabled = [] {  // NIMBLE_LSTM_PACK=0: always read R (A/B measurements)
      const char* v = std::getenv("NIMBLE_LSTM_PACK");
      return v != nullptr && v[0] == '0';
    }();
    if (disabled || h < kPackChunk) return nullptr;
    return packs_.Get(nullptr, r, h, h, dirs);
  }

  // The Gemm kernel (transB, constant_b) that projects the fast path's inputs when W is an
  // executable's constant: oneDNN on W repacked in its preferred layout, or SmallGemm's panels
  // at a few rows (linalg.cc), the dispatch the transformer GEMMs were tuned with. Null when W
  // is not a constant or NIMBLE_LSTM_PROJECTION=items (A/B measurements): the team's first
  // round then projects with single-threaded sgemm calls.
  const Kernel* ProjectionGemm(const Tensor& w) const {
    static const bool disabled = [] {
      const char* v = std::getenv("NIMBLE_LSTM_PROJECTION");
      return v != nullptr && std::string(v) == "items";
    }();
    if (disabled || projection_ == nullptr || w.storage() == nullptr || !w.storage()->constant()) {
      return nullptr;
    }
    return projection_.get();
  }

  // The fast path re-reads each unit's R rows from L1 for every batch row; past this batch the
  // per-step GEMMs of the general path use the weights better.
  static constexpr int64_t kFastMaxBatch = 16;

  // LSTM with default activations (any peepholes, clip, input_forget). All directions run
  // together on one StepTeam whose items are slices of units of one direction: the first round
  // projects the inputs of all steps onto the slice's gates (GEMMs), then one round per step
  // runs LstmChunk.
  absl::Status RunFastLstm(const KernelContext& ctx, absl::Span<const Tensor> inputs, const Dims& d,
                           const std::vector<int64_t>& lens, Tensor* y, Tensor* y_h,
                           Tensor* y_c) const {
    const int dirs = c_.num_dirs;
    const int64_t h = d.hidden, gh = 4 * h, batch = d.batch, rows = d.seq * batch;
    const int64_t xw_stride = dirs * gh;  // xw row (t, b): [dirs, 4h]
    NIMBLE_ASSIGN_OR_RETURN(Tensor xw_t,
                            Tensor::Empty(DType::kF32, {rows, xw_stride}, ctx.allocator));
    float* xw = xw_t.data<float>();
    std::vector<float> bias(dirs * gh, 0.0f);
    if (Present(inputs, 3)) {
      const float* b = inputs[3].data<float>();
      for (int dir = 0; dir < dirs; ++dir) {
        for (int64_t j = 0; j < gh; ++j) {
          bias[dir * gh + j] = b[dir * 2 * gh + j] + b[dir * 2 * gh + gh + j];
        }
      }
    }
    // Hidden state, double-buffered by step parity: [2][dirs][batch][h]; cell state in place.
    const int64_t state_size = dirs * batch * h;
    std::vector<float> hbuf(2 * state_size, 0.0f), cell(state_size, 0.0f);
    for (int dir = 0; dir < dirs; ++dir) {
      for (int64_t b = 0; b < batch; ++b) {
        const int64_t at = (dir * batch + b) * h;
        if (Present(inputs, 5)) {
          std::memcpy(&hbuf[at], inputs[5].data<float>() + StateOffset(d, dir, b),
                      h * sizeof(float));
        }
        if (Present(inputs, 6)) {
          std::memcpy(&cell[at], inputs[6].data<float>() + StateOffset(d, dir, b),
                      h * sizeof(float));
        }
      }
    }
    const int64_t max_len = lens.empty() ? 0 : *std::max_element(lens.begin(), lens.end());
    const std::shared_ptr<const PackedLstmR> packed_r = PackedR(inputs[2], h, dirs);
    const int threads =
        RecurrenceThreads(ctx.num_threads, 2.0 * static_cast<double>(batch) * gh * h * dirs);
    // One slice per thread and direction (at least 8 units each).
    const int64_t per_dir = std::clamp<int64_t>(h / 8, 1, threads);
    const int chunks = static_cast<int>(dirs * per_dir);
    const int64_t max_units = (h + per_dir - 1) / per_dir;
    // Per participant: the gate products of its slice and the per-row pointers of a step, each
    // participant's on cache lines of its own.
    const int64_t scratch_stride = (4 * max_units * batch + 15) / 16 * 16;
    const int64_t rows_stride = (batch + 7) / 8 * 8;
    std::vector<float> pre((threads + 1) * scratch_stride);
    std::vector<const float*> xw_rows((threads + 1) * rows_stride);
    std::vector<float*> y_rows((threads + 1) * rows_stride);
    float* y_data = y != nullptr ? y->data<float>() : nullptr;
    absl::Status status;
    std::mutex status_mutex;  // guards status
    // With the Gemm projection (W constant) the rounds are the steps. Otherwise round 0
    // projects: item c multiplies the inputs of every step by its share of the gate rows of W of
    // all directions: xw columns [c * n / chunks, (c + 1) * n / chunks), in sgemm calls of at
    // most ~256 columns (column counts rounded to 16). oneDNN's sgemm runs a few timesteps' rows
    // at half rate both far narrower (an item's own units, 41 columns a gate at 16 threads) and
    // far wider (1300 columns at 16 rows). Rounds 1 .. max_len are then the steps.
    const int64_t col_blocks = (xw_stride + 256 * chunks - 1) / (256 * chunks) * chunks;
    const Kernel* projection = ProjectionGemm(inputs[1]);
    if (projection != nullptr && max_len > 0) {
      // X [rows, input] · W[dirs * 4h, input]^T, on the OpenMP team that then runs the steps.
      const int64_t g0 = kTrace ? NowNs() : 0;
      NIMBLE_ASSIGN_OR_RETURN(Tensor w2, inputs[1].Reshape({xw_stride, d.input}));
      NIMBLE_RETURN_IF_ERROR(ProjectInputs(*projection, ctx, threads, inputs[0], w2, xw_t));
      if (kTrace) std::fprintf(stderr, "projection %.1f us\n", (NowNs() - g0) / 1e3);
    }
    const int64_t first_step = projection == nullptr ? 1 : 0;  // the round of step 0
    const int64_t rounds = max_len > 0 ? max_len + first_step : 0;
    const bool prefetch = threads >= kLstmPrefetchMinThreads && LstmPrefetch();
    RunSteps(threads, rounds, chunks, [&](int64_t round, int c, int p) {
      const int dir = static_cast<int>(c / per_dir);
      const int64_t k = c % per_dir;
      const int64_t j0 = k * h / per_dir, j1 = (k + 1) * h / per_dir;
      if (round < first_step) {
        const int64_t per_item = col_blocks / chunks;
        for (int64_t blk = c * per_item; blk < (c + 1) * per_item; ++blk) {
          const int64_t n0 = std::min(xw_stride, (blk * xw_stride / col_blocks + 15) / 16 * 16);
          const int64_t n1 =
              std::min(xw_stride, ((blk + 1) * xw_stride / col_blocks + 15) / 16 * 16);
          absl::Status st = onednn::Sgemm(
              1, false, true, rows, n1 - n0, d.input, 1.0f, inputs[0].data<float>(), d.input,
              inputs[1].data<float>() + n0 * d.input, d.input, 0.0f, xw + n0, xw_stride);
          if (!st.ok()) {
            std::lock_guard<std::mutex> lock(status_mutex);
            status.Update(st);
          }
        }
        return;
      }
      const int64_t s = round - first_step;
      const bool reverse = c_.reverse_only || dir == 1;
      LstmChunkArgs a;
      a.r = inputs[2].data<float>() + dir * gh * h;
      a.packed = packed_r != nullptr ? packed_r->Direction(dir) : nullptr;
      a.chunks = PackedChunks(h);
      a.k = h;
      a.bias = bias.data() + dir * gh;
      a.h_prev = hbuf.data() + (s & 1) * state_size + dir * batch * h;
      a.h_next = hbuf.data() + ((s + 1) & 1) * state_size + dir * batch * h;
      a.cell = cell.data() + dir * batch * h;
      const float** xr = xw_rows.data() + p * rows_stride;
      float** yr = y_rows.data() + p * rows_stride;
      for (int64_t b = 0; b < batch; ++b) {
        if (s >= lens[b]) {
          xr[b] = nullptr;
          yr[b] = nullptr;
          continue;
        }
        const int64_t t = reverse ? lens[b] - 1 - s : s;
        xr[b] = xw + XRow(d, t, b) * xw_stride + dir * gh;
        yr[b] = y_data != nullptr ? y_data + YOffset(d, t, dir, b) : nullptr;
      }
      a.xw = xr;
      a.y = yr;
      a.pre = pre.data() + p * scratch_stride;
      a.peep = Present(inputs, 7) ? inputs[7].data<float>() + dir * 3 * h : nullptr;
      a.clip = c_.clip;
      a.input_forget = c_.input_forget;
      a.h = h;
      a.batch = batch;
      a.j0 = j0;
      a.j1 = j1;
      a.backward = (s & 1) != 0;
      a.prefetch = prefetch;
      RunSimd<LstmChunk>(static_cast<const LstmChunkArgs*>(&a));
    });
    NIMBLE_RETURN_IF_ERROR(status);
    const float* state = hbuf.data() + (max_len & 1) * state_size;
    for (int dir = 0; dir < dirs; ++dir) {
      for (int64_t b = 0; b < batch; ++b) {
        const int64_t at = (dir * batch + b) * h;
        if (y_h != nullptr) {
          std::memcpy(y_h->data<float>() + StateOffset(d, dir, b), state + at, h * sizeof(float));
        }
        if (y_c != nullptr) {
          std::memcpy(y_c->data<float>() + StateOffset(d, dir, b), &cell[at], h * sizeof(float));
        }
      }
    }
    return absl::OkStatus();
  }

  absl::Status RunDirection(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                            const Dims& d, int dir, bool reverse, const std::vector<int64_t>& lens,
                            const float* xw, const float* r, const float* rb, float* scratch,
                            Tensor* y, Tensor* y_h, Tensor* y_c) const {
    const int64_t h = d.hidden, gh = c_.gates() * h, batch = d.batch;
    const Act* acts = c_.acts.data() + dir * c_.acts_per_dir();
    // Scratch: recurrent products [batch, gh], gate values [batch, gh], the new state and
    // GRU's r ⊙ h [batch, h] each, and the cell state [batch, h].
    float* hr = scratch;
    float* gates = hr + batch * gh;
    float* next = gates + batch * gh;
    float* rh = next + batch * h;
    float* cell = rh + batch * h;
    std::vector<float> state_buf(batch * h, 0.0f);
    float* state = state_buf.data();
    std::fill(cell, cell + batch * h, 0.0f);
    if (Present(inputs, 5)) {
      for (int64_t b = 0; b < batch; ++b) {
        std::memcpy(state + b * h, inputs[5].data<float>() + StateOffset(d, dir, b),
                    h * sizeof(float));
      }
    }
    if (c_.cell == Cell::kLstm && Present(inputs, 6)) {
      for (int64_t b = 0; b < batch; ++b) {
        std::memcpy(cell + b * h, inputs[6].data<float>() + StateOffset(d, dir, b),
                    h * sizeof(float));
      }
    }
    const float* peep = c_.cell == Cell::kLstm && Present(inputs, 7)
                            ? inputs[7].data<float>() + dir * 3 * h
                            : nullptr;
    const int64_t max_len = lens.empty() ? 0 : *std::max_element(lens.begin(), lens.end());
    const bool gru_two_phase = c_.cell == Cell::kGru && !c_.linear_before_reset;
    // Units are split across threads; each chunk runs its slice of the recurrent GEMM
    // (single-threaded sgemm per gate) and its gate math. TBB degrades to the calling thread
    // when the others are busy, where OpenMP's barrier would wait for them every step.
    const int threads =
        onednn::ThreadsFor(ctx.num_threads, 2.0 * static_cast<double>(batch) * gh * h);
    const int64_t grain = std::max<int64_t>(16, (h + 2 * threads - 1) / (2 * threads));
    absl::Status status;
    std::mutex status_mutex;  // guards status
    auto fail = [&](const absl::Status& s) {
      std::lock_guard<std::mutex> lock(status_mutex);
      if (status.ok()) status = s;
    };
    // hr[:, q*h + j0 .. j1) = in · R_q[j0 .. j1)^T for the gates in [q0, q1).
    auto recurrent = [&](const float* in, int q0, int q1, int64_t j0, int64_t j1) {
      for (int q = q0; q < q1; ++q) {
        absl::Status s = onednn::Sgemm(1, false, true, batch, j1 - j0, h, 1.0f, in, h,
                                       r + (q * h + j0) * h, h, 0.0f, hr + q * h + j0, gh);
        if (!s.ok()) fail(s);
      }
    };
    for (int64_t s = 0; s < max_len; ++s) {
      auto step = [&](int64_t j0, int64_t j1) {
        const int64_t n = j1 - j0;
        recurrent(state, 0, gru_two_phase ? 2 : c_.gates(), j0, j1);
        for (int64_t b = 0; b < batch; ++b) {
          const float* old_h = state + b * h;
          float* new_h = next + b * h;
          if (s >= lens[b]) {
            std::memcpy(new_h + j0, old_h + j0, n * sizeof(float));
            continue;
          }
          const int64_t t = reverse ? lens[b] - 1 - s : s;
          const float* xg = xw + XRow(d, t, b) * gh;
          const float* hg = hr + b * gh;
          float* gt = gates + b * gh;
          switch (c_.cell) {
            case Cell::kLstm:
              LstmUnits(acts, xg, hg, peep, gt, new_h, cell + b * h, h, j0, n);
              break;
            case Cell::kRnn:
              for (int64_t j = j0; j < j1; ++j) new_h[j] = xg[j] + hg[j];
              Clip(new_h + j0, n, c_.clip);
              Apply(acts[0], new_h + j0, n);
              break;
            case Cell::kGru: {
              float* z = gt + j0;
              float* rg = gt + h + j0;
              for (int64_t j = 0; j < n; ++j) {
                z[j] = xg[j0 + j] + hg[j0 + j];
                rg[j] = xg[h + j0 + j] + hg[h + j0 + j];
              }
              Clip(z, n, c_.clip);
              Clip(rg, n, c_.clip);
              Apply(acts[0], z, n);
              Apply(acts[0], rg, n);
              if (gru_two_phase) {
                for (int64_t j = 0; j < n; ++j) rh[b * h + j0 + j] = rg[j] * old_h[j0 + j];
                break;  // the h gate needs all of r ⊙ h: second phase
              }
              float* hh = gt + 2 * h + j0;
              for (int64_t j = 0; j < n; ++j) {
                const float rbh = rb != nullptr ? rb[2 * h + j0 + j] : 0.0f;
                hh[j] = xg[2 * h + j0 + j] + rg[j] * (hg[2 * h + j0 + j] + rbh);
              }
              Clip(hh, n, c_.clip);
              Apply(acts[1], hh, n);
              for (int64_t j = 0; j < n; ++j) {
                new_h[j0 + j] = (1 - z[j]) * hh[j] + z[j] * old_h[j0 + j];
              }
              break;
            }
          }
        }
      };
      kernel_util::ParallelFor(threads, h, grain, step);
      if (gru_two_phase) {
        kernel_util::ParallelFor(threads, h, grain, [&](int64_t j0, int64_t j1) {
          const int64_t n = j1 - j0;
          recurrent(rh, 2, 3, j0, j1);
          for (int64_t b = 0; b < batch; ++b) {
            if (s >= lens[b]) continue;
            const int64_t t = reverse ? lens[b] - 1 - s : s;
            const float* xg = xw + XRow(d, t, b) * gh;
            const float* z = gates + b * gh + j0;
            float* hh = gates + b * gh + 2 * h + j0;
            for (int64_t j = 0; j < n; ++j)
              hh[j] = xg[2 * h + j0 + j] + hr[b * gh + 2 * h + j0 + j];
            Clip(hh, n, c_.clip);
            Apply(acts[1], hh, n);
            const float* old_h = state + b * h + j0;
            float* new_h = next + b * h + j0;
            for (int64_t j = 0; j < n; ++j) new_h[j] = (1 - z[j]) * hh[j] + z[j] * old_h[j];
          }
        });
      }
      NIMBLE_RETURN_IF_ERROR(status);
      std::swap(state, next);
      if (y != nullptr) {
        for (int64_t b = 0; b < batch; ++b) {
          if (s >= lens[b]) continue;
          const int64_t t = reverse ? lens[b] - 1 - s : s;
          std::memcpy(y->data<float>() + YOffset(d, t, dir, b), state + b * h, h * sizeof(float));
        }
      }
    }
    for (int64_t b = 0; b < batch; ++b) {
      if (y_h != nullptr) {
        std::memcpy(y_h->data<float>() + StateOffset(d, dir, b), state + b * h, h * sizeof(float));
      }
      if (y_c != nullptr) {
        std::memcpy(y_c->data<float>() + StateOffset(d, dir, b), cell + b * h, h * sizeof(float));
      }
    }
    return absl::OkStatus();
  }

  // LSTM gate math for units [j0, j0 + n) of one batch row. Gate blocks in W/R/B order: i, o,
  // f, c, each h wide; xg and hg hold the input and recurrent products of the whole row.
  void LstmUnits(const Act* acts, const float* xg, const float* hg, const float* peep, float* gt,
                 float* new_h, float* cs, int64_t h, int64_t j0, int64_t n) const {
    float* gi = gt + j0;
    float* go = gt + h + j0;
    float* gf = gt + 2 * h + j0;
    float* gc = gt + 3 * h + j0;
    cs += j0;
    for (int q = 0; q < 4; ++q) {
      for (int64_t j = 0; j < n; ++j) gt[q * h + j0 + j] = xg[q * h + j0 + j] + hg[q * h + j0 + j];
    }
    if (peep != nullptr) {
      const float* pi = peep + j0;
      const float* pf = peep + 2 * h + j0;
      for (int64_t j = 0; j < n; ++j) {
        gi[j] += pi[j] * cs[j];
        gf[j] += pf[j] * cs[j];
      }
    }
    Clip(gi, n, c_.clip);
    Apply(acts[0], gi, n);
    if (c_.input_forget) {
      for (int64_t j = 0; j < n; ++j) gf[j] = 1.0f - gi[j];
    } else {
      Clip(gf, n, c_.clip);
      Apply(acts[0], gf, n);
    }
    Clip(gc, n, c_.clip);
    Apply(acts[1], gc, n);
    for (int64_t j = 0; j < n; ++j) cs[j] = gf[j] * cs[j] + gi[j] * gc[j];
    if (peep != nullptr) {
      const float* po = peep + h + j0;
      for (int64_t j = 0; j < n; ++j) go[j] += po[j] * cs[j];
    }
    Clip(go, n, c_.clip);
    Apply(acts[0], go, n);
    // new_h = o ⊙ h(C); gc is free again and holds h(C).
    std::memcpy(gc, cs, n * sizeof(float));
    Apply(acts[2], gc, n);
    for (int64_t j = 0; j < n; ++j) new_h[j0 + j] = go[j] * gc[j];
  }

  const RnnConfig c_;
  mutable PackCache packs_;
  const std::unique_ptr<Kernel> projection_;  // ProjectionGemm (LSTM only)
};

absl::StatusOr<KernelPtr> MakeRecurrent(Cell cell, const Attributes& a) {
  RnnConfig c;
  c.cell = cell;
  const std::string direction = a.GetOr<std::string>("direction", "forward");
  if (direction == "bidirectional") {
    c.num_dirs = 2;
  } else if (direction == "reverse") {
    c.reverse_only = true;
  } else if (direction != "forward") {
    return absl::InvalidArgumentError(absl::StrCat("unknown direction '", direction, "'"));
  }
  c.hidden_size = a.GetOr<int64_t>("hidden_size", 0);
  c.clip = a.Has("clip") ? static_cast<float>(a.GetOr<double>("clip", 0.0)) : 0.0f;
  if (a.Has("clip") && c.clip <= 0) return absl::InvalidArgumentError("clip must be positive");
  c.input_forget = a.GetOr<int64_t>("input_forget", 0) != 0;
  c.linear_before_reset = a.GetOr<int64_t>("linear_before_reset", 0) != 0;
  c.layout = a.GetOr<int64_t>("layout", 0);
  if (c.layout != 0 && c.layout != 1) return absl::InvalidArgumentError("layout must be 0 or 1");
  std::vector<std::string> names = a.GetOr<std::vector<std::string>>("activations", {});
  const size_t per_dir = c.acts_per_dir();
  if (names.empty()) {
    const std::vector<std::string> defaults =
        cell == Cell::kLstm  ? std::vector<std::string>{"Sigmoid", "Tanh", "Tanh"}
        : cell == Cell::kGru ? std::vector<std::string>{"Sigmoid", "Tanh"}
                             : std::vector<std::string>{"Tanh"};
    for (int dir = 0; dir < c.num_dirs; ++dir)
      names.insert(names.end(), defaults.begin(), defaults.end());
  } else if (names.size() == per_dir && c.num_dirs == 2) {
    const std::vector<std::string> one = names;  // one list for both directions
    names.insert(names.end(), one.begin(), one.end());
  }
  if (names.size() != per_dir * c.num_dirs) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", per_dir * c.num_dirs, " activations, got ", names.size()));
  }
  NIMBLE_ASSIGN_OR_RETURN(
      c.acts, ParseActivations(names, a.GetOr<std::vector<double>>("activation_alpha", {}),
                               a.GetOr<std::vector<double>>("activation_beta", {})));
  KernelPtr projection;  // the LSTM fast path's input projection (ProjectionGemm)
  if (cell == Cell::kLstm) {
    Attributes attrs;
    attrs.Set("transB", int64_t{1});
    attrs.Set("constant_b", int64_t{1});
    NIMBLE_ASSIGN_OR_RETURN(projection,
                            KernelRegistry::Global().Create("Gemm", DeviceType::kCPU, attrs));
  }
  return KernelPtr(new RecurrentKernel(std::move(c), std::move(projection)));
}

// ---------------------------------------------------------------------------------------------
// StackedLSTM (compiler/transforms/fuse_stacked_lstm.h): two forward LSTM layers, the second
// reading the first's Y. Inputs: X, W1, R1, B1, initial_h1, initial_c1, W2, R2, B2, initial_h2,
// initial_c2 (layout 0, one direction each); outputs: Y2 [seq, 1, batch, h2], Y_h1, Y_c1, Y_h2,
// Y_c2.
//
// By default the layers run one after the other through the LSTM kernel, as without the
// fusion. The wavefront form (NIMBLE_LSTM_WAVEFRONT=1, at batch 1; =auto: where the weights
// fit the team's L2 caches) runs both layers in one team: round r runs layer 1's step r and
// layer 2's step r - 1, whose dot products read [y1_{r-1} ; h2_{r-2}] against layer 2's packed
// [W | R] rows, so layer 2's input projection needs no GEMM of its own and the recurrence takes
// seq + 1 rounds instead of 2 seq. Both layers' state vectors sit side by side in two buffers
// by round parity, [h1 | h2] (with NIMBLE_LSTM_WAVEFRONT_X=1 [x | h1 | h2], layer 1's input
// projection then inside its dots too), so each layer's input is one contiguous vector.
// 0: never (the default); 1: wherever it applies; -1: where the weights fit the team's L2
// caches. NIMBLE_LSTM_WAVEFRONT=1 / auto, or SetStackedLstmWavefrontForTesting. Off by default:
// on the device's Xeon at 16 threads (where it fits) it measured 3.20-3.30 ms at seq 128 against
// 3.33-3.37 for the layers in turn, but 0.90 against 0.61 ms at seq 16 (its rounds do three
// GEMVs' worth of L2 reads, 17-18 µs a round against 6.4 µs; the projection GEMM it saves is
// 0.6 ms a layer at seq 128; bench/results/cpu/lstm_wavefront_device_2026-12-07.txt).
std::atomic<int> g_wavefront{[] {
  const char* v = std::getenv("NIMBLE_LSTM_WAVEFRONT");
  if (v == nullptr) return 0;
  return std::string(v) == "auto" ? -1 : (v[0] == '1' ? 1 : 0);
}()};

// Whether the wavefront also folds layer 1's input projection into its dots (over [W1 | R1]
// and [x_t ; h1_{t-1}]) instead of one GEMM before the rounds: NIMBLE_LSTM_WAVEFRONT_X=1 (A/B).
std::atomic<bool> g_wavefront_fold_x{[] {
  const char* v = std::getenv("NIMBLE_LSTM_WAVEFRONT_X");
  return v != nullptr && v[0] == '1';
}()};

class StackedLstmKernel final : public Kernel {
 public:
  StackedLstmKernel(KernelPtr layer1, KernelPtr layer2, KernelPtr projection)
      : layer1_(std::move(layer1)),
        layer2_(std::move(layer2)),
        projection_(std::move(projection)) {}

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    NIMBLE_ASSIGN_OR_RETURN(const Dims d, Plan(inputs));
    const Shape shapes[5] = {{d.seq, 1, d.batch, d.h2},
                             {1, d.batch, d.h1},
                             {1, d.batch, d.h1},
                             {1, d.batch, d.h2},
                             {1, d.batch, d.h2}};
    for (size_t i = 0; i < output_shapes.size() && i < 5; ++i) output_shapes[i] = shapes[i];
    return absl::OkStatus();
  }

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(const Dims d, Plan(inputs));
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputs(kOp, outputs, 0, 5));
    std::vector<Shape> shapes(outputs.size());
    NIMBLE_RETURN_IF_ERROR(OutputShapes(inputs, absl::MakeSpan(shapes)));
    for (const Tensor& o : outputs) {
      NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputDType(kOp, o, DType::kF32));
    }
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputShapes(kOp, outputs, shapes));
    auto out = [&](size_t i) -> Tensor* {
      return i < outputs.size() && outputs[i].defined() ? &outputs[i] : nullptr;
    };
    const int threads = RecurrenceThreads(
        ctx.num_threads, 8.0 * static_cast<double>(d.h1 * d.h1 + d.h2 * (d.h1 + d.h2)));
    // Without fold_x layer 1's projection is the Gemm kernel, which keeps W1 repacked by its
    // address: W1 must be a constant too.
    const bool w1_constant = inputs[1].storage() != nullptr && inputs[1].storage()->constant();
    if (UseWavefront(d, threads) &&
        (w1_constant || g_wavefront_fold_x.load(std::memory_order_relaxed))) {
      const bool fold_x = g_wavefront_fold_x.load(std::memory_order_relaxed);
      std::shared_ptr<const PackedLstmR> r1 =
          fold_x ? packs_.Get(&inputs[1], inputs[2], d.h1, d.input + d.h1, 1)
                 : packs_.Get(nullptr, inputs[2], d.h1, d.h1, 1);
      std::shared_ptr<const PackedLstmR> wr2 =
          packs_.Get(&inputs[6], inputs[7], d.h2, d.h1 + d.h2, 1);
      if (r1 != nullptr && wr2 != nullptr) {
        return RunWavefront(ctx, inputs, d, threads, fold_x, *r1, *wr2, out(0), out(1), out(2),
                            out(3), out(4));
      }
    }
    // The layers one after the other.
    NIMBLE_ASSIGN_OR_RETURN(Tensor y1,
                            Tensor::Empty(DType::kF32, {d.seq, 1, d.batch, d.h1}, ctx.allocator));
    Tensor none;
    const Tensor in1[7] = {inputs[0], inputs[1],      inputs[2],     Opt(inputs, 3),
                           none,      Opt(inputs, 4), Opt(inputs, 5)};
    Tensor out1[3] = {y1, out(1) ? *out(1) : none, out(2) ? *out(2) : none};
    NIMBLE_RETURN_IF_ERROR(layer1_->Run(ctx, in1, out1));
    NIMBLE_ASSIGN_OR_RETURN(Tensor x2, y1.Reshape({d.seq, d.batch, d.h1}));
    const Tensor in2[7] = {x2,   inputs[6],      inputs[7],      Opt(inputs, 8),
                           none, Opt(inputs, 9), Opt(inputs, 10)};
    Tensor out2[3] = {out(0) ? *out(0) : none, out(3) ? *out(3) : none, out(4) ? *out(4) : none};
    return layer2_->Run(ctx, in2, out2);
  }

 private:
  static constexpr const char* kOp = "StackedLSTM";
  struct Dims {
    int64_t seq = 0, batch = 0, input = 0, h1 = 0, h2 = 0;
  };

  static Tensor Opt(absl::Span<const Tensor> inputs, size_t i) {
    return Present(inputs, i) ? inputs[i] : Tensor();
  }

  static absl::StatusOr<Dims> Plan(absl::Span<const Tensor> inputs) {
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckArity(kOp, inputs.size(), 8, 11));
    for (size_t i : {0, 1, 2, 6, 7}) {
      NIMBLE_RETURN_IF_ERROR(CheckDefined(kOp, inputs, i, i == 0 ? "X" : "W or R"));
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (inputs[i].defined() && inputs[i].dtype() != DType::kF32) {
        return absl::InvalidArgumentError(
            absl::StrCat(kOp, ": input ", i, " must be f32, got ", inputs[i].TypeString()));
      }
    }
    const Tensor &x = inputs[0], &w1 = inputs[1], &r1 = inputs[2], &w2 = inputs[6], &r2 = inputs[7];
    if (x.rank() != 3 || w1.rank() != 3 || r1.rank() != 3 || w2.rank() != 3 || r2.rank() != 3) {
      return absl::InvalidArgumentError(
          absl::StrCat(kOp, ": X, W and R must be 3-D, got X ", x.TypeString()));
    }
    Dims d{x.dim(0), x.dim(1), x.dim(2), r1.dim(2), r2.dim(2)};
    auto layer_ok = [](const Tensor& w, const Tensor& r, int64_t in, int64_t h) {
      return w.dim(0) == 1 && r.dim(0) == 1 && w.dim(1) == 4 * h && r.dim(1) == 4 * h &&
             w.dim(2) == in;
    };
    if (!layer_ok(w1, r1, d.input, d.h1) || !layer_ok(w2, r2, d.h1, d.h2)) {
      return absl::InvalidArgumentError(absl::StrCat(
          kOp, ": weights W1 ", w1.TypeString(), ", R1 ", r1.TypeString(), ", W2 ", w2.TypeString(),
          ", R2 ", r2.TypeString(), " do not fit X ", x.TypeString()));
    }
    const std::pair<size_t, Shape> expected[] = {{3, {1, 8 * d.h1}},      {4, {1, d.batch, d.h1}},
                                                 {5, {1, d.batch, d.h1}}, {8, {1, 8 * d.h2}},
                                                 {9, {1, d.batch, d.h2}}, {10, {1, d.batch, d.h2}}};
    for (const auto& [i, shape] : expected) {
      if (Present(inputs, i) && inputs[i].shape() != shape) {
        return absl::InvalidArgumentError(absl::StrCat(kOp, ": input ", i, " is ",
                                                       inputs[i].TypeString(), ", expected ",
                                                       ShapeToString(shape)));
      }
    }
    return d;
  }

  static bool UseWavefront(const Dims& d, int threads) {
    const int mode = g_wavefront.load(std::memory_order_relaxed);
    if (mode == 0 || d.batch != 1 || d.seq < 1 || d.h1 < kPackChunk || d.h2 < kPackChunk ||
        !g_fast_lstm.load(std::memory_order_relaxed)) {
      return false;
    }
    if (mode == 1) return true;
    // The weights the rounds read, with a quarter to spare for everything else.
    static const int64_t l2 = [] {
      const long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
      return v > 0 ? static_cast<int64_t>(v) : int64_t{1} << 20;
    }();
    const int64_t bytes = 16 * (d.h1 * d.h1 + d.h2 * (d.h1 + d.h2)) * 5 / 4;
    return static_cast<int64_t>(threads) * l2 >= bytes;
  }

  // Layer 1's R, or layer 2's [W | R], packed on the first call and kept while the weights live.
  absl::Status RunWavefront(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                            const Dims& d, int threads, bool fold_x, const PackedLstmR& r1,
                            const PackedLstmR& wr2, Tensor* y2, Tensor* y_h1, Tensor* y_c1,
                            Tensor* y_h2, Tensor* y_c2) const {
    const int64_t in = d.input, h1 = d.h1, h2 = d.h2, seq = d.seq;
    // State vectors by round parity: zbuf[p] = [x | h1 | h2] (x only with fold_x). Round r
    // writes h1_r into zbuf[r & 1] and h2_{r-1} beside it (and, with fold_x, x_{r+1} in front);
    // layer 1 reads [x_r ;] h1_{r-1} from zbuf[(r - 1) & 1], layer 2 [h1_{r-1} ; h2_{r-2}].
    const int64_t xs = fold_x ? in : 0, z = xs + h1 + h2;
    const float* x = inputs[0].data<float>();
    // Without fold_x, layer 1's input projection for every step first: X [seq, input] · W1^T,
    // as the LSTM fast path does.
    Tensor xw_t;
    if (!fold_x) {
      NIMBLE_ASSIGN_OR_RETURN(xw_t, Tensor::Empty(DType::kF32, {seq, 4 * h1}, ctx.allocator));
      NIMBLE_ASSIGN_OR_RETURN(Tensor w1, inputs[1].Reshape({4 * h1, in}));
      NIMBLE_RETURN_IF_ERROR(ProjectInputs(*projection_, ctx, threads, inputs[0], w1, xw_t));
    }
    const float* xw1 = fold_x ? nullptr : xw_t.data<float>();
    auto fold_bias = [&](size_t i, int64_t h) {
      std::vector<float> b(4 * h, 0.0f);
      if (Present(inputs, i)) {
        const float* p = inputs[i].data<float>();
        for (int64_t j = 0; j < 4 * h; ++j) b[j] = p[j] + p[4 * h + j];
      }
      return b;
    };
    const std::vector<float> bias1 = fold_bias(3, h1), bias2 = fold_bias(8, h2);
    // The "projection" of a layer whose input product is inside its dots.
    const std::vector<float> zeros(4 * std::max(h1, h2), 0.0f);
    std::vector<float> zbuf(2 * z, 0.0f), cell1(h1, 0.0f), cell2(h2, 0.0f);
    if (fold_x) std::memcpy(&zbuf[z], x, in * sizeof(float));  // x_0, read in round 0
    if (Present(inputs, 4)) {
      std::memcpy(&zbuf[z + xs], inputs[4].data<float>(), h1 * sizeof(float));
    }
    if (Present(inputs, 9)) {
      std::memcpy(&zbuf[xs + h1], inputs[9].data<float>(), h2 * sizeof(float));
    }
    if (Present(inputs, 5)) std::memcpy(cell1.data(), inputs[5].data<float>(), h1 * sizeof(float));
    if (Present(inputs, 10)) {
      std::memcpy(cell2.data(), inputs[10].data<float>(), h2 * sizeof(float));
    }
    const int64_t per1 = std::clamp<int64_t>(h1 / 8, 1, threads);
    const int64_t per2 = std::clamp<int64_t>(h2 / 8, 1, threads);
    const int chunks = static_cast<int>(per1 + per2);
    const int64_t max_units = std::max((h1 + per1 - 1) / per1, (h2 + per2 - 1) / per2);
    const int64_t scratch_stride = (4 * max_units + 15) / 16 * 16;
    std::vector<float> pre((threads + 1) * scratch_stride);
    // Per participant: its one-row xw and y pointers (LstmChunkArgs reads arrays of them).
    struct alignas(64) Rows {
      const float* xw;
      float* y;
    };
    std::vector<Rows> rows(threads + 1);
    float* y_data = y2 != nullptr ? y2->data<float>() : nullptr;
    const bool prefetch = threads >= kLstmPrefetchMinThreads && LstmPrefetch();
    RunSteps(threads, seq + 1, chunks, [&](int64_t round, int c, int p) {
      const bool upper = c >= per1;
      const int64_t s = upper ? round - 1 : round;  // the layer's step
      if (s < 0 || s >= seq) return;
      const int64_t k = upper ? c - per1 : c, per = upper ? per2 : per1, h = upper ? h2 : h1;
      const float* prev = zbuf.data() + ((round + 1) & 1) * z;
      float* next = zbuf.data() + (round & 1) * z;
      if (fold_x && !upper && s + 1 < seq) {  // this slice's share of x_{s+1}, read next round
        const int64_t c0 = k * in / per1, c1 = (k + 1) * in / per1;
        std::memcpy(next + c0, x + (s + 1) * in + c0, (c1 - c0) * sizeof(float));
      }
      Rows& row = rows[p];
      row.xw = upper || fold_x ? zeros.data() : xw1 + s * 4 * h1;
      row.y = upper && y_data != nullptr ? y_data + s * h2 : nullptr;
      LstmChunkArgs a;
      a.r = nullptr;
      a.packed = upper ? wr2.Direction(0) : r1.Direction(0);
      a.chunks = upper ? wr2.chunks : r1.chunks;
      a.k = upper ? h1 + h2 : xs + h1;
      a.bias = upper ? bias2.data() : bias1.data();
      a.h_prev = upper ? prev + xs : prev;
      a.h_next = next + xs + (upper ? h1 : 0);
      a.cell = upper ? cell2.data() : cell1.data();
      a.xw = &row.xw;
      a.y = &row.y;
      a.pre = pre.data() + p * scratch_stride;
      a.peep = nullptr;
      a.clip = 0.0f;
      a.input_forget = false;
      a.h = h;
      a.batch = 1;
      a.j0 = k * h / per;
      a.j1 = (k + 1) * h / per;
      a.backward = (s & 1) != 0;
      a.prefetch = prefetch;
      RunSimd<LstmChunk>(static_cast<const LstmChunkArgs*>(&a));
    });
    // h1_{seq-1} was written in round seq - 1, h2_{seq-1} in round seq.
    const float* last1 = zbuf.data() + ((seq - 1) & 1) * z + xs;
    const float* last2 = zbuf.data() + (seq & 1) * z + xs + h1;
    if (y_h1 != nullptr) std::memcpy(y_h1->data<float>(), last1, h1 * sizeof(float));
    if (y_c1 != nullptr) std::memcpy(y_c1->data<float>(), cell1.data(), h1 * sizeof(float));
    if (y_h2 != nullptr) std::memcpy(y_h2->data<float>(), last2, h2 * sizeof(float));
    if (y_c2 != nullptr) std::memcpy(y_c2->data<float>(), cell2.data(), h2 * sizeof(float));
    return absl::OkStatus();
  }

  const KernelPtr layer1_, layer2_, projection_;
  mutable PackCache packs_;  // layer 1's R (or [W1 | R1]) and layer 2's [W2 | R2]
};

absl::StatusOr<KernelPtr> MakeStackedLstm(const Attributes& a) {
  Attributes layer;
  NIMBLE_ASSIGN_OR_RETURN(KernelPtr layer1, MakeRecurrent(Cell::kLstm, layer));
  NIMBLE_ASSIGN_OR_RETURN(KernelPtr layer2, MakeRecurrent(Cell::kLstm, layer));
  (void)a;  // hidden sizes come from R
  Attributes gemm;
  gemm.Set("transB", int64_t{1});
  gemm.Set("constant_b", int64_t{1});
  NIMBLE_ASSIGN_OR_RETURN(KernelPtr projection,
                          KernelRegistry::Global().Create("Gemm", DeviceType::kCPU, gemm));
  return KernelPtr(
      new StackedLstmKernel(std::move(layer1), std::move(layer2), std::move(projection)));
}

}  // namespace

void SetLstmFastPathForTesting(bool enabled) { g_fast_lstm.store(enabled); }
void SetStackedLstmWavefrontForTesting(int mode, bool fold_x) {
  g_wavefront.store(mode);
  g_wavefront_fold_x.store(fold_x);
}

void RegisterRnnKernels(KernelRegistry& registry) {
  registry.Register("LSTM", DeviceType::kCPU,
                    [](const Attributes& a) { return MakeRecurrent(Cell::kLstm, a); });
  registry.Register("GRU", DeviceType::kCPU,
                    [](const Attributes& a) { return MakeRecurrent(Cell::kGru, a); });
  registry.Register("RNN", DeviceType::kCPU,
                    [](const Attributes& a) { return MakeRecurrent(Cell::kRnn, a); });
  registry.Register("StackedLSTM", DeviceType::kCPU, MakeStackedLstm);
}

}  // namespace nimble::vm::cpu
