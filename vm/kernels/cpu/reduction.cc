// Reductions: ReduceSum/Mean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare, ArgMax/ArgMin,
// CumSum.
//
// Design: the reduced axes are brought into the form [outer, R, inner] by merging adjacent
// dims (size-1 dims dropped). Contiguous reduced axes need no data movement; non-contiguous
// ones (e.g. axes {0, 2}) are first transposed so they come last. Then:
//   inner == 1: each output reduces one contiguous row of R elements (f32 through SIMD row
//               bodies with several vector accumulators; other types with plain loops);
//   inner  > 1: each output row accumulates R input rows elementwise (vectorises across inner).
// Outputs are parallel over outer (and inner chunks). f32 accumulates in f32 like ONNX Runtime;
// f16/bf16 are computed in f32. Integer sums wrap. Empty reductions give the identity: 0 for
// sums, 1 for Prod, -inf / lowest for Max, +inf / max for Min, NaN for a float Mean, -inf for
// LogSum/LogSumExp.
#include <memory>
#include <string>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vm/kernels/cpu/cpu_kernels.h"
#include "vm/kernels/cpu/elementwise_internal.h"

namespace nimble::vm::cpu {
namespace {

enum class ReduceKind { kSum, kMean, kMax, kMin, kProd, kL1, kL2, kLogSum, kLogSumExp, kSumSquare };

template <typename T>
using WrapT = std::make_unsigned_t<std::common_type_t<T, unsigned>>;

// Init / Map / Combine / Final of each reduction on element type T (accumulating in T).
template <ReduceKind K, typename T>
struct Reducer {
  static constexpr bool kFloat = std::is_floating_point_v<T>;
  static T Init() {
    if constexpr (K == ReduceKind::kProd) {
      return T(1);
    } else if constexpr (K == ReduceKind::kMax || K == ReduceKind::kLogSumExp) {
      if constexpr (kFloat) {
        return -std::numeric_limits<T>::infinity();
      } else {
        return std::numeric_limits<T>::lowest();
      }
    } else if constexpr (K == ReduceKind::kMin) {
      if constexpr (kFloat) {
        return std::numeric_limits<T>::infinity();
      } else {
        return std::numeric_limits<T>::max();
      }
    } else {
      return T(0);
    }
  }
  static T Map(T x) {
    if constexpr (K == ReduceKind::kL1) {
      if constexpr (std::is_signed_v<T> && !kFloat) {
        return x < 0 ? static_cast<T>(WrapT<T>(0) - WrapT<T>(x)) : x;
      } else if constexpr (kFloat) {
        return std::abs(x);
      } else {
        return x;
      }
    } else if constexpr (K == ReduceKind::kL2 || K == ReduceKind::kSumSquare) {
      if constexpr (kFloat) {
        return x * x;
      } else {
        return static_cast<T>(WrapT<T>(x) * WrapT<T>(x));
      }
    } else {
      return x;
    }
  }
  static T Combine(T acc, T x) {
    if constexpr (K == ReduceKind::kMax) {
      if constexpr (kFloat) {
        return (x > acc || x != x) ? x : acc;
      } else {
        return x > acc ? x : acc;
      }
    } else if constexpr (K == ReduceKind::kMin) {
      if constexpr (kFloat) {
        return (x < acc || x != x) ? x : acc;
      } else {
        return x < acc ? x : acc;
      }
    } else if constexpr (K == ReduceKind::kProd) {
      if constexpr (kFloat) {
        return acc * x;
      } else {
        return static_cast<T>(WrapT<T>(acc) * WrapT<T>(x));
      }
    } else if constexpr (kFloat) {
      return acc + x;
    } else {
      return static_cast<T>(WrapT<T>(acc) + WrapT<T>(x));
    }
  }
  static T Final(T acc, int64_t count) {
    if constexpr (K == ReduceKind::kMean) {
      if constexpr (kFloat) {
        return acc / static_cast<T>(count);
      } else {
        return count == 0 ? T(0) : static_cast<T>(acc / static_cast<T>(count));
      }
    } else if constexpr (K == ReduceKind::kL2) {
      return static_cast<T>(std::sqrt(static_cast<double>(acc)));
    } else if constexpr (K == ReduceKind::kLogSum) {
      if constexpr (kFloat) {
        return std::log(acc);
      } else {
        return static_cast<T>(std::log(static_cast<double>(acc)));
      }
    } else {
      return acc;
    }
  }
};

// ------------------------------------------------------------------------------------------
// f32 row reductions (SIMD).

template <ReduceKind K>
struct RowReduceF32Body {
  template <typename V>
  static NIMBLE_SIMD_INLINE V Map(const V& x) {
    if constexpr (K == ReduceKind::kL1) return AbsV(x);
    if constexpr (K == ReduceKind::kL2 || K == ReduceKind::kSumSquare) return x * x;
    return x;
  }
  template <typename V>
  static NIMBLE_SIMD_INLINE V Combine(const V& acc, const V& x) {
    if constexpr (K == ReduceKind::kMax) return ((x > acc) | (x != x)) ? x : acc;
    if constexpr (K == ReduceKind::kMin) return ((x < acc) | (x != x)) ? x : acc;
    return acc + x;
  }
  // The raw accumulator over x[0, n) (Final is applied by the caller).
  template <int W>
  static NIMBLE_SIMD_INLINE float Run(const float* x, int64_t n) {
    using V = typename Simd<W>::F;
    const float init = Reducer<K, float>::Init();
    V a0 = SplatV<V>(init), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
      a0 = Combine(a0, Map(LoadV<V>(x + i)));
      a1 = Combine(a1, Map(LoadV<V>(x + i + W)));
      a2 = Combine(a2, Map(LoadV<V>(x + i + 2 * W)));
      a3 = Combine(a3, Map(LoadV<V>(x + i + 3 * W)));
    }
    for (; i + W <= n; i += W) a0 = Combine(a0, Map(LoadV<V>(x + i)));
    if (i < n) {
      float buf[W];
      for (int k = 0; k < W; ++k) buf[k] = init;
      std::memcpy(buf, x + i, (n - i) * sizeof(float));
      a1 = Combine(a1, Map(LoadV<V>(buf)));
    }
    a0 = Combine(Combine(a0, a1), Combine(a2, a3));
    float r = a0[0];
    for (int k = 1; k < W; ++k) r = Reducer<K, float>::Combine(r, a0[k]);
    return r;
  }
};

// sum(exp(x - m)) over a row.
struct RowSumExpF32Body {
  template <int W>
  static NIMBLE_SIMD_INLINE float Run(const float* x, int64_t n, float m) {
    using V = typename Simd<W>::F;
    const V vm = SplatV<V>(m);
    V a0 = SplatV<V>(0.f), a1 = a0;
    int64_t i = 0;
    for (; i + 2 * W <= n; i += 2 * W) {
      a0 += ExpFastV(LoadV<V>(x + i) - vm);
      a1 += ExpFastV(LoadV<V>(x + i + W) - vm);
    }
    for (; i + W <= n; i += W) a0 += ExpFastV(LoadV<V>(x + i) - vm);
    float s = HorizontalSum(a0 + a1);
    for (; i < n; ++i) s += ExpScalar(x[i] - m);
    return s;
  }
};

template <ReduceKind K>
constexpr bool kSimdRow =
    K == ReduceKind::kSum || K == ReduceKind::kMean || K == ReduceKind::kMax ||
    K == ReduceKind::kMin || K == ReduceKind::kL1 || K == ReduceKind::kL2 ||
    K == ReduceKind::kLogSum || K == ReduceKind::kSumSquare;

template <typename T>
T LogSumExpFinish(T m, T s) {
  if (std::isinf(m) || m != m) return m;  // all -inf / empty, +inf, NaN
  return m + std::log(s);
}

// One output from a contiguous row.
template <ReduceKind K, typename T>
T ReduceRow(const T* x, int64_t n) {
  using R = Reducer<K, T>;
  if constexpr (K == ReduceKind::kLogSumExp) {
    const T m = ReduceRow<ReduceKind::kMax, T>(x, n);
    if (std::isinf(m) || m != m) return m;
    T s = 0;
    if constexpr (std::is_same_v<T, float>) {
      s = RunSimd<RowSumExpF32Body>(x, n, m);
    } else {
      for (int64_t i = 0; i < n; ++i) s += std::exp(x[i] - m);
    }
    return LogSumExpFinish(m, s);
  } else {
    if constexpr (std::is_same_v<T, float> && kSimdRow<K>) {
      return R::Final(RunSimd<RowReduceF32Body<K>>(x, n), n);
    }
    // Four independent chains so the loop is not latency bound.
    T a[4] = {R::Init(), R::Init(), R::Init(), R::Init()};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
      for (int k = 0; k < 4; ++k) a[k] = R::Combine(a[k], R::Map(x[i + k]));
    }
    for (; i < n; ++i) a[0] = R::Combine(a[0], R::Map(x[i]));
    return R::Final(R::Combine(R::Combine(a[0], a[1]), R::Combine(a[2], a[3])), n);
  }
}

// [outer, R, inner] with inner > 1: out rows accumulate input rows elementwise.
template <ReduceKind K, typename T>
void ReduceColumns(const T* x, T* out, int64_t r_count, int64_t inner, int64_t j0, int64_t j1,
                   std::vector<T>& scratch) {
  using R = Reducer<K, T>;
  const int64_t w = j1 - j0;
  if constexpr (K == ReduceKind::kLogSumExp) {
    ReduceColumns<ReduceKind::kMax, T>(x, out, r_count, inner, j0, j1, scratch);
    scratch.assign(w, T(0));
    T* s = scratch.data();
    for (int64_t r = 0; r < r_count; ++r) {
      const T* row = x + r * inner + j0;
      for (int64_t j = 0; j < w; ++j) {
        const T m = out[j0 + j];
        s[j] += (std::isinf(m) || m != m) ? T(0) : T(std::exp(row[j] - m));
      }
    }
    for (int64_t j = 0; j < w; ++j) out[j0 + j] = LogSumExpFinish(out[j0 + j], s[j]);
  } else {
    T* acc = out + j0;
    for (int64_t j = 0; j < w; ++j) acc[j] = R::Init();
    for (int64_t r = 0; r < r_count; ++r) {
      const T* row = x + r * inner + j0;
      for (int64_t j = 0; j < w; ++j) acc[j] = R::Combine(acc[j], R::Map(row[j]));
    }
    for (int64_t j = 0; j < w; ++j) acc[j] = R::Final(acc[j], r_count);
  }
}

template <ReduceKind K, typename T>
void ReduceLayout(const KernelContext& ctx, const T* x, T* out, int64_t outer, int64_t r_count,
                  int64_t inner) {
  // Elements per task: a plain sum streams ~1 element/ns per lane group, so small tensors
  // would spend more on task handoff than on the work.
  constexpr int64_t kTaskElements = K == ReduceKind::kLogSumExp ? 16384 : 131072;
  if (inner == 1) {
    const int64_t grain = std::max<int64_t>(1, kTaskElements / std::max<int64_t>(r_count, 1));
    ParallelFor(ctx, outer, grain, [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) out[o] = ReduceRow<K, T>(x + o * r_count, r_count);
    });
    return;
  }
  // Tasks are (outer row, chunk of inner columns).
  constexpr int64_t kChunk = 1024;
  const int64_t chunks = (inner + kChunk - 1) / kChunk;
  const int64_t grain =
      std::max<int64_t>(1, kTaskElements / std::max<int64_t>(r_count * std::min(inner, kChunk), 1));
  ParallelFor(ctx, outer * chunks, grain, [&](int64_t b, int64_t e) {
    std::vector<T> scratch;
    for (int64_t t = b; t < e; ++t) {
      const int64_t o = t / chunks;
      const int64_t j0 = (t % chunks) * kChunk;
      const int64_t j1 = std::min(inner, j0 + kChunk);
      ReduceColumns<K, T>(x + o * r_count * inner, out + o * inner, r_count, inner, j0, j1,
                          scratch);
    }
  });
}

// ------------------------------------------------------------------------------------------
// Layout analysis.

// Reduction of `shape` over `reduced` axes as [outer, R, inner], or a permutation that makes
// the reduced axes trailing when they are not contiguous.
struct Layout {
  int64_t outer = 1, r = 1, inner = 1;
  bool needs_transpose = false;
  std::vector<int> perm;  // kept axes then reduced axes (when needs_transpose)
};

Layout AnalyzeLayout(absl::Span<const int64_t> shape, const std::vector<bool>& reduced) {
  Layout l;
  // Groups of consecutive non-1 dims by reducedness.
  std::vector<std::pair<bool, int64_t>> groups;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 1) continue;
    if (!groups.empty() && groups.back().first == reduced[i]) {
      groups.back().second *= shape[i];
    } else {
      groups.push_back({reduced[i], shape[i]});
    }
  }
  int reduced_groups = 0;
  for (const auto& g : groups) reduced_groups += g.first ? 1 : 0;
  if (reduced_groups <= 1) {
    bool seen_reduced = false;
    for (const auto& g : groups) {
      if (g.first) {
        l.r = g.second;
        seen_reduced = true;
      } else if (seen_reduced) {
        l.inner *= g.second;
      } else {
        l.outer *= g.second;
      }
    }
    return l;
  }
  l.needs_transpose = true;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (!reduced[i]) {
      l.perm.push_back(static_cast<int>(i));
      l.outer *= shape[i];
    }
  }
  for (size_t i = 0; i < shape.size(); ++i) {
    if (reduced[i]) {
      l.perm.push_back(static_cast<int>(i));
      l.r *= shape[i];
    }
  }
  return l;
}

// out = in transposed by perm (out dim k = in dim perm[k]); elements moved by size.
template <typename E>
void PermuteCopy(const E* in, E* out, absl::Span<const int64_t> shape, absl::Span<const int> perm) {
  const int rank = static_cast<int>(shape.size());
  std::vector<int64_t> in_strides(rank, 1);
  for (int k = rank - 2; k >= 0; --k) in_strides[k] = in_strides[k + 1] * shape[k + 1];
  std::vector<int64_t> dims(rank), strides(rank);
  int64_t total = 1;
  for (int k = 0; k < rank; ++k) {
    dims[k] = shape[perm[k]];
    strides[k] = in_strides[perm[k]];
    total *= dims[k];
  }
  if (total == 0) return;
  std::vector<int64_t> idx(rank, 0);
  int64_t off = 0;
  for (int64_t i = 0; i < total; ++i) {
    out[i] = in[off];
    for (int k = rank - 1; k >= 0; --k) {
      off += strides[k];
      if (++idx[k] < dims[k]) break;
      off -= strides[k] * dims[k];
      idx[k] = 0;
    }
  }
}

absl::StatusOr<Tensor> Transpose(const Tensor& in, absl::Span<const int> perm) {
  Shape out_shape;
  for (int p : perm) out_shape.push_back(in.dim(p));
  NIMBLE_ASSIGN_OR_RETURN(Tensor out, Tensor::Empty(in.dtype(), out_shape));
  switch (DTypeSize(in.dtype())) {
    case 1:
      PermuteCopy(in.data<uint8_t>(), out.data<uint8_t>(), in.shape(), perm);
      break;
    case 2:
      PermuteCopy(in.data<uint16_t>(), out.data<uint16_t>(), in.shape(), perm);
      break;
    case 4:
      PermuteCopy(in.data<uint32_t>(), out.data<uint32_t>(), in.shape(), perm);
      break;
    case 8:
      PermuteCopy(in.data<uint64_t>(), out.data<uint64_t>(), in.shape(), perm);
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("cannot transpose ", DTypeName(in.dtype()), " tensors"));
  }
  return out;
}

// [outer, R, inner] around one axis.
void SplitAt(absl::Span<const int64_t> shape, int axis, int64_t* outer, int64_t* r,
             int64_t* inner) {
  *outer = 1;
  *inner = 1;
  for (int i = 0; i < axis; ++i) *outer *= shape[i];
  *r = shape[axis];
  for (size_t i = axis + 1; i < shape.size(); ++i) *inner *= shape[i];
}

// ------------------------------------------------------------------------------------------
// Reduce* kernels.

class ReduceKernel final : public Kernel {
 public:
  ReduceKernel(std::string op, ReduceKind kind, bool keepdims, bool noop_with_empty_axes,
               std::vector<int64_t> attr_axes, bool has_attr_axes)
      : op_(std::move(op)),
        kind_(kind),
        keepdims_(keepdims),
        noop_(noop_with_empty_axes),
        attr_axes_(std::move(attr_axes)),
        has_attr_axes_(has_attr_axes) {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op_, inputs, 1, 2, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(op_, inputs, 1));
    const Tensor& x = inputs[0];
    NIMBLE_ASSIGN_OR_RETURN(std::vector<bool> reduced, ReducedAxes(inputs));
    const Shape out_shape = OutShape(x.shape(), reduced);
    NIMBLE_RETURN_IF_ERROR(CheckOutput(op_, outputs[0], x.dtype(), out_shape));
    const bool noop =
        std::none_of(reduced.begin(), reduced.end(), [](bool b) { return b; }) && noop_;
    if (IsHalf(x.dtype())) {
      NIMBLE_ASSIGN_OR_RETURN(Tensor xf, CastTo(x, DType::kF32, op_));
      NIMBLE_ASSIGN_OR_RETURN(Tensor of, Tensor::Empty(DType::kF32, out_shape));
      NIMBLE_RETURN_IF_ERROR(Compute(ctx, xf, of, reduced, noop));
      return CastInto(of, outputs[0], op_);
    }
    return Compute(ctx, x, outputs[0], reduced, noop);
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.empty() || !inputs[0].defined() || output_shapes.size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(op_, ": expected data and one output"));
    }
    NIMBLE_ASSIGN_OR_RETURN(std::vector<bool> reduced, ReducedAxes(inputs));
    output_shapes[0] = OutShape(inputs[0].shape(), reduced);
    return absl::OkStatus();
  }

 private:
  // Per-axis reduce flags; all false for the no-op case (empty axes with noop_with_empty_axes).
  absl::StatusOr<std::vector<bool>> ReducedAxes(absl::Span<const Tensor> inputs) const {
    const int rank = inputs[0].rank();
    std::vector<int64_t> axes = attr_axes_;
    bool given = has_attr_axes_;
    if (inputs.size() > 1 && inputs[1].defined()) {
      NIMBLE_ASSIGN_OR_RETURN(axes, IntList(op_, "axes", inputs[1]));
      given = true;
    }
    std::vector<bool> reduced(rank, false);
    if (!given || axes.empty()) {
      if (!noop_) reduced.assign(rank, true);
      return reduced;
    }
    for (int64_t a : axes) {
      NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(op_, a, rank));
      if (reduced[axis]) {
        return absl::InvalidArgumentError(absl::StrCat(op_, ": axis ", a, " is repeated"));
      }
      reduced[axis] = true;
    }
    return reduced;
  }

  Shape OutShape(absl::Span<const int64_t> in, const std::vector<bool>& reduced) const {
    Shape out;
    for (size_t i = 0; i < in.size(); ++i) {
      if (!reduced[i]) {
        out.push_back(in[i]);
      } else if (keepdims_) {
        out.push_back(1);
      }
    }
    return out;
  }

  absl::Status Compute(const KernelContext& ctx, const Tensor& x, Tensor& out,
                       const std::vector<bool>& reduced, bool noop) const {
    if (noop) return CastInto(x, out, op_);  // same dtype: a copy
    Layout l = AnalyzeLayout(x.shape(), reduced);
    Tensor src = x;
    if (l.needs_transpose && x.num_elements() > 0) {
      NIMBLE_ASSIGN_OR_RETURN(src, Transpose(x, l.perm));
    }
    if (out.num_elements() == 0) return absl::OkStatus();
    constexpr uint32_t kSet = kNumeric;
    DType dtype = x.dtype();
    if (dtype == DType::kBool && (kind_ == ReduceKind::kMax || kind_ == ReduceKind::kMin)) {
      dtype = DType::kU8;  // bools are bytes 0/1: max is any, min is all
    }
    if (kind_ == ReduceKind::kLogSumExp && !IsFloat(dtype)) {
      return absl::InvalidArgumentError(
          absl::StrCat(op_, ": unsupported dtype ", DTypeName(dtype)));
    }
    return VisitDType<kSet>(dtype, op_, [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* in = static_cast<const T*>(src.raw_data());
      T* o = static_cast<T*>(out.raw_data());
      switch (kind_) {
#define NIMBLE_REDUCE_CASE(K)                                          \
  case ReduceKind::K:                                                  \
    ReduceLayout<ReduceKind::K, T>(ctx, in, o, l.outer, l.r, l.inner); \
    break;
        NIMBLE_REDUCE_CASE(kSum)
        NIMBLE_REDUCE_CASE(kMean)
        NIMBLE_REDUCE_CASE(kMax)
        NIMBLE_REDUCE_CASE(kMin)
        NIMBLE_REDUCE_CASE(kProd)
        NIMBLE_REDUCE_CASE(kL1)
        NIMBLE_REDUCE_CASE(kL2)
        NIMBLE_REDUCE_CASE(kLogSum)
        NIMBLE_REDUCE_CASE(kSumSquare)
#undef NIMBLE_REDUCE_CASE
        case ReduceKind::kLogSumExp:
          if constexpr (std::is_floating_point_v<T>) {
            ReduceLayout<ReduceKind::kLogSumExp, T>(ctx, in, o, l.outer, l.r, l.inner);
          }
          break;
      }
      return absl::OkStatus();
    });
  }

  const std::string op_;
  const ReduceKind kind_;
  const bool keepdims_;
  const bool noop_;
  const std::vector<int64_t> attr_axes_;
  const bool has_attr_axes_;
};

// ------------------------------------------------------------------------------------------
// ArgMax / ArgMin.

template <bool kMax, bool kLast, typename T>
inline bool Better(T x, T best) {
  if constexpr (std::is_floating_point_v<T>) {
    // NaN wins (numpy): the first NaN, or the last one with select_last_index.
    if constexpr (kLast) {
      if (x != x) return true;
      return kMax ? x >= best : x <= best;
    } else {
      if (x != x) return best == best;
      return kMax ? x > best : x < best;
    }
  } else {
    if constexpr (kLast) return kMax ? x >= best : x <= best;
    return kMax ? x > best : x < best;
  }
}

template <bool kMax, bool kLast, typename T>
void ArgLayout(const KernelContext& ctx, const T* x, int64_t* out, int64_t outer, int64_t r_count,
               int64_t inner) {
  ParallelFor(ctx, outer, std::max<int64_t>(1, 16384 / std::max<int64_t>(r_count * inner, 1)),
              [&](int64_t b, int64_t e) {
                std::vector<T> best(inner);
                for (int64_t o = b; o < e; ++o) {
                  const T* base = x + o * r_count * inner;
                  int64_t* idx = out + o * inner;
                  for (int64_t j = 0; j < inner; ++j) {
                    best[j] = base[j];
                    idx[j] = 0;
                  }
                  for (int64_t r = 1; r < r_count; ++r) {
                    const T* row = base + r * inner;
                    for (int64_t j = 0; j < inner; ++j) {
                      if (Better<kMax, kLast>(row[j], best[j])) {
                        best[j] = row[j];
                        idx[j] = r;
                      }
                    }
                  }
                }
              });
}

class ArgKernel final : public Kernel {
 public:
  ArgKernel(std::string op, bool is_max, int64_t axis, bool keepdims, bool last)
      : op_(std::move(op)), is_max_(is_max), axis_(axis), keepdims_(keepdims), last_(last) {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op_, inputs, 1, 1, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(op_, inputs, 1));
    const Tensor& x = inputs[0];
    Shape out_shape;
    NIMBLE_RETURN_IF_ERROR(OutShape(x.shape(), &out_shape));
    NIMBLE_RETURN_IF_ERROR(CheckOutput(op_, outputs[0], DType::kI64, out_shape));
    const int axis = static_cast<int>(axis_ < 0 ? axis_ + x.rank() : axis_);
    if (x.dim(axis) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(op_, ": cannot reduce the empty axis ", axis_, " of ", x.TypeString()));
    }
    Tensor src = x;
    if (IsHalf(x.dtype())) {
      NIMBLE_ASSIGN_OR_RETURN(src, CastTo(x, DType::kF32, op_));
    }
    int64_t outer, r, inner;
    SplitAt(src.shape(), axis, &outer, &r, &inner);
    int64_t* out = outputs[0].data<int64_t>();
    if (outputs[0].num_elements() == 0) return absl::OkStatus();
    return VisitDType<kNumeric>(src.dtype(), op_, [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* in = src.data<T>();
      if (is_max_ && last_) {
        ArgLayout<true, true, T>(ctx, in, out, outer, r, inner);
      } else if (is_max_) {
        ArgLayout<true, false, T>(ctx, in, out, outer, r, inner);
      } else if (last_) {
        ArgLayout<false, true, T>(ctx, in, out, outer, r, inner);
      } else {
        ArgLayout<false, false, T>(ctx, in, out, outer, r, inner);
      }
      return absl::OkStatus();
    });
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.empty() || !inputs[0].defined() || output_shapes.size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(op_, ": expected data and one output"));
    }
    return OutShape(inputs[0].shape(), &output_shapes[0]);
  }

 private:
  absl::Status OutShape(absl::Span<const int64_t> in, Shape* out) const {
    NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(op_, axis_, static_cast<int>(in.size())));
    out->clear();
    for (int i = 0; i < static_cast<int>(in.size()); ++i) {
      if (i != axis) {
        out->push_back(in[i]);
      } else if (keepdims_) {
        out->push_back(1);
      }
    }
    return absl::OkStatus();
  }

  const std::string op_;
  const bool is_max_;
  const int64_t axis_;
  const bool keepdims_;
  const bool last_;
};

// ------------------------------------------------------------------------------------------
// CumSum(x, axis).

template <typename T>
void CumSumLayout(const KernelContext& ctx, const T* x, T* out, int64_t outer, int64_t r_count,
                  int64_t inner, bool exclusive, bool reverse) {
  using R = Reducer<ReduceKind::kSum, T>;
  ParallelFor(ctx, outer, std::max<int64_t>(1, 16384 / std::max<int64_t>(r_count * inner, 1)),
              [&](int64_t b, int64_t e) {
                std::vector<T> acc(inner);
                for (int64_t o = b; o < e; ++o) {
                  std::fill(acc.begin(), acc.end(), T(0));
                  const T* base = x + o * r_count * inner;
                  T* obase = out + o * r_count * inner;
                  for (int64_t step = 0; step < r_count; ++step) {
                    const int64_t r = reverse ? r_count - 1 - step : step;
                    const T* row = base + r * inner;
                    T* orow = obase + r * inner;
                    if (exclusive) {
                      for (int64_t j = 0; j < inner; ++j) {
                        const T v = row[j];  // read first: out may alias x
                        orow[j] = acc[j];
                        acc[j] = R::Combine(acc[j], v);
                      }
                    } else {
                      for (int64_t j = 0; j < inner; ++j) {
                        acc[j] = R::Combine(acc[j], row[j]);
                        orow[j] = acc[j];
                      }
                    }
                  }
                }
              });
}

class CumSumKernel final : public Kernel {
 public:
  CumSumKernel(bool exclusive, bool reverse) : exclusive_(exclusive), reverse_(reverse) {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("CumSum", inputs, 2, 2, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired("CumSum", inputs, 2));
    const Tensor& x = inputs[0];
    NIMBLE_RETURN_IF_ERROR(CheckOutput("CumSum", outputs[0], x.dtype(), x.shape()));
    NIMBLE_ASSIGN_OR_RETURN(int64_t a, ScalarInt("CumSum", "axis", inputs[1]));
    NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis("CumSum", a, std::max(x.rank(), 1)));
    if (x.num_elements() == 0) return absl::OkStatus();
    int64_t outer = 1, r = x.num_elements(), inner = 1;
    if (x.rank() > 0) SplitAt(x.shape(), axis, &outer, &r, &inner);
    if (IsHalf(x.dtype())) {
      NIMBLE_ASSIGN_OR_RETURN(Tensor xf, CastTo(x, DType::kF32, "CumSum"));
      NIMBLE_ASSIGN_OR_RETURN(Tensor of, Tensor::Empty(DType::kF32, x.shape()));
      CumSumLayout(ctx, xf.data<float>(), of.data<float>(), outer, r, inner, exclusive_, reverse_);
      return CastInto(of, outputs[0], "CumSum");
    }
    return VisitDType<kNumeric>(x.dtype(), "CumSum", [&](auto tag) {
      using T = typename decltype(tag)::type;
      CumSumLayout(ctx, x.data<T>(), outputs[0].data<T>(), outer, r, inner, exclusive_, reverse_);
      return absl::OkStatus();
    });
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.empty() || !inputs[0].defined() || output_shapes.size() != 1) {
      return absl::InvalidArgumentError("CumSum: expected data and one output");
    }
    output_shapes[0] = inputs[0].shape();
    return absl::OkStatus();
  }

 private:
  const bool exclusive_;
  const bool reverse_;
};

using Factory = absl::StatusOr<std::unique_ptr<Kernel>>;

}  // namespace

void RegisterReductionKernels(KernelRegistry& registry) {
  const std::pair<const char*, ReduceKind> reductions[] = {
      {"ReduceSum", ReduceKind::kSum},
      {"ReduceMean", ReduceKind::kMean},
      {"ReduceMax", ReduceKind::kMax},
      {"ReduceMin", ReduceKind::kMin},
      {"ReduceProd", ReduceKind::kProd},
      {"ReduceL1", ReduceKind::kL1},
      {"ReduceL2", ReduceKind::kL2},
      {"ReduceLogSum", ReduceKind::kLogSum},
      {"ReduceLogSumExp", ReduceKind::kLogSumExp},
      {"ReduceSumSquare", ReduceKind::kSumSquare},
  };
  for (const auto& [name, kind] : reductions) {
    const std::string op = name;
    registry.Register(op, DeviceType::kCPU, [op, kind = kind](const Attributes& attrs) -> Factory {
      const bool has_axes = attrs.Has("axes");
      std::vector<int64_t> axes;
      if (has_axes) {
        NIMBLE_ASSIGN_OR_RETURN(axes, attrs.Get<std::vector<int64_t>>("axes"));
      }
      return std::make_unique<ReduceKernel>(op, kind, attrs.GetOr<int64_t>("keepdims", 1) != 0,
                                            attrs.GetOr<int64_t>("noop_with_empty_axes", 0) != 0,
                                            std::move(axes), has_axes);
    });
  }
  for (const bool is_max : {true, false}) {
    const std::string op = is_max ? "ArgMax" : "ArgMin";
    registry.Register(op, DeviceType::kCPU, [op, is_max](const Attributes& attrs) -> Factory {
      return std::make_unique<ArgKernel>(op, is_max, attrs.GetOr<int64_t>("axis", 0),
                                         attrs.GetOr<int64_t>("keepdims", 1) != 0,
                                         attrs.GetOr<int64_t>("select_last_index", 0) != 0);
    });
  }
  registry.Register("CumSum", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    return std::make_unique<CumSumKernel>(attrs.GetOr<int64_t>("exclusive", 0) != 0,
                                          attrs.GetOr<int64_t>("reverse", 0) != 0);
  });
}

}  // namespace nimble::vm::cpu
