// Normalization kernels: Softmax, LogSoftmax, Hardmax, LayerNormalization, RMSNormalization,
// BatchNormalization (inference, and training_mode=1 from the batch statistics),
// InstanceNormalization, GroupNormalization, LpNormalization, MeanVarianceNormalization, and
// the compiler's EmbedLayerNorm (embedding lookups summed and layer-normalised in one pass).
//
// Design: every op normalises rows of a [outer, R, inner] view. The hot f32 cases (softmax and
// layer/RMS norm over the last axis) run SIMD row bodies compiled per ISA: softmax makes two
// passes over the row (max; exp + sum with the exponentials stored) and a scale pass, layer
// norm computes mean and variance in two passes (no E[x^2] - E[x]^2 cancellation) and a fused
// normalise-scale-shift pass. Rows are spread over TBB. f64 runs scalar loops in double;
// f16/bf16 are converted to f32.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vm/kernels/cpu/broadcast.h"
#include "vm/kernels/cpu/cpu_kernels.h"
#include "vm/kernels/cpu/elementwise_internal.h"

namespace nimble::vm::cpu {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Rows per task so that a task touches ~16K elements.
int64_t RowGrain(int64_t row_elements) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(row_elements, 1));
}

void SplitAt(absl::Span<const int64_t> shape, int axis, int64_t* outer, int64_t* r,
             int64_t* inner) {
  *outer = 1;
  *inner = 1;
  for (int i = 0; i < axis; ++i) *outer *= shape[i];
  *r = shape[axis];
  for (size_t i = axis + 1; i < shape.size(); ++i) *inner *= shape[i];
}

template <typename V>
NIMBLE_SIMD_INLINE V LoadFill(const float* p, int64_t n, float fill) {
  float buf[sizeof(V) / sizeof(float)];
  for (size_t k = 0; k < sizeof(V) / sizeof(float); ++k) buf[k] = fill;
  std::memcpy(buf, p, n * sizeof(float));
  return LoadV<V>(buf);
}

// ------------------------------------------------------------------------------------------
// Softmax family.

template <bool kLog>
struct SoftmaxRowBody {
  template <int W>
  static NIMBLE_SIMD_INLINE void Run(const float* x, float* y, int64_t n) {
    using V = typename Simd<W>::F;
    // Max (NaN propagates into the whole row through exp below).
    V m0 = SplatV<V>(kNegInf), m1 = m0;
    int64_t i = 0;
    for (; i + 2 * W <= n; i += 2 * W) {
      m0 = MaxV(m0, LoadV<V>(x + i));
      m1 = MaxV(m1, LoadV<V>(x + i + W));
    }
    for (; i + W <= n; i += W) m0 = MaxV(m0, LoadV<V>(x + i));
    if (i < n) m1 = MaxV(m1, LoadFill<V>(x + i, n - i, kNegInf));
    const float m = HorizontalMax(MaxV(m0, m1));
    const V vm = SplatV<V>(m);
    V s0 = SplatV<V>(0.f), s1 = s0;
    i = 0;
    if constexpr (kLog) {
      for (; i + 2 * W <= n; i += 2 * W) {
        s0 += ExpFastV(LoadV<V>(x + i) - vm);
        s1 += ExpFastV(LoadV<V>(x + i + W) - vm);
      }
      for (; i + W <= n; i += W) s0 += ExpFastV(LoadV<V>(x + i) - vm);
      if (i < n)
        s1 += ExpFastV(LoadFill<V>(x + i, n - i, kNegInf) - vm);  // pads give exp(-inf) = 0
      const V shift = SplatV<V>(m + std::log(HorizontalSum(s0 + s1)));
      i = 0;
      for (; i + W <= n; i += W) StoreV(y + i, LoadV<V>(x + i) - shift);
      for (; i < n; ++i) y[i] = x[i] - shift[0];
    } else {
      for (; i + 2 * W <= n; i += 2 * W) {
        const V e0 = ExpFastV(LoadV<V>(x + i) - vm);
        const V e1 = ExpFastV(LoadV<V>(x + i + W) - vm);
        StoreV(y + i, e0);
        StoreV(y + i + W, e1);
        s0 += e0;
        s1 += e1;
      }
      for (; i + W <= n; i += W) {
        const V e = ExpFastV(LoadV<V>(x + i) - vm);
        StoreV(y + i, e);
        s0 += e;
      }
      if (i < n) {
        const V e = ExpFastV(LoadFill<V>(x + i, n - i, kNegInf) - vm);
        float buf[W];
        StoreV(buf, e);
        std::memcpy(y + i, buf, (n - i) * sizeof(float));
        s1 += e;
      }
      const V inv = SplatV<V>(1.0f / HorizontalSum(s0 + s1));
      i = 0;
      for (; i + W <= n; i += W) StoreV(y + i, LoadV<V>(y + i) * inv);
      for (; i < n; ++i) y[i] *= inv[0];
    }
  }
};

enum class SoftmaxKind { kSoftmax, kLogSoftmax, kHardmax };

// Generic [outer, R, inner] softmax for one outer index (T = float or double).
template <typename T>
void SoftmaxColumns(SoftmaxKind kind, const T* x, T* y, int64_t r_count, int64_t inner,
                    std::vector<T>& m, std::vector<T>& s) {
  m.assign(inner, -std::numeric_limits<T>::infinity());
  s.assign(inner, T(0));
  if (kind == SoftmaxKind::kHardmax) {
    std::vector<int64_t> arg(inner, 0);
    for (int64_t r = 0; r < r_count; ++r) {
      for (int64_t j = 0; j < inner; ++j) {
        const T v = x[r * inner + j];
        if (r == 0 || v > m[j]) {
          m[j] = v;
          arg[j] = r;
        }
      }
    }
    for (int64_t r = 0; r < r_count; ++r) {
      for (int64_t j = 0; j < inner; ++j) y[r * inner + j] = arg[j] == r ? T(1) : T(0);
    }
    return;
  }
  for (int64_t r = 0; r < r_count; ++r) {
    for (int64_t j = 0; j < inner; ++j) {
      const T v = x[r * inner + j];
      m[j] = (v > m[j] || v != v) ? v : m[j];
    }
  }
  for (int64_t r = 0; r < r_count; ++r) {
    T* row = y + r * inner;
    for (int64_t j = 0; j < inner; ++j) row[j] = x[r * inner + j] - m[j];
    if constexpr (std::is_same_v<T, float>) {
      if (kind == SoftmaxKind::kSoftmax) {
        ApplyFloatUnary(FloatUnary::kExp, row, row, inner);
      } else {
        for (int64_t j = 0; j < inner; ++j) s[j] += std::exp(row[j]);
        continue;
      }
    } else {
      if (kind == SoftmaxKind::kSoftmax) {
        for (int64_t j = 0; j < inner; ++j) row[j] = std::exp(row[j]);
      } else {
        for (int64_t j = 0; j < inner; ++j) s[j] += std::exp(row[j]);
        continue;
      }
    }
    for (int64_t j = 0; j < inner; ++j) s[j] += row[j];
  }
  if (kind == SoftmaxKind::kSoftmax) {
    for (int64_t j = 0; j < inner; ++j) s[j] = T(1) / s[j];
    for (int64_t r = 0; r < r_count; ++r) {
      for (int64_t j = 0; j < inner; ++j) y[r * inner + j] *= s[j];
    }
  } else {
    for (int64_t j = 0; j < inner; ++j) s[j] = std::log(s[j]);
    for (int64_t r = 0; r < r_count; ++r) {
      for (int64_t j = 0; j < inner; ++j) y[r * inner + j] -= s[j];
    }
  }
}

template <typename T>
void SoftmaxLayout(const KernelContext& ctx, SoftmaxKind kind, const T* x, T* y, int64_t outer,
                   int64_t r_count, int64_t inner) {
  if (r_count == 0) return;
  ParallelFor(ctx, outer, RowGrain(r_count * inner), [&](int64_t b, int64_t e) {
    std::vector<T> m, s;
    for (int64_t o = b; o < e; ++o) {
      const T* xo = x + o * r_count * inner;
      T* yo = y + o * r_count * inner;
      if constexpr (std::is_same_v<T, float>) {
        if (inner == 1 && kind == SoftmaxKind::kSoftmax) {
          RunSimd<SoftmaxRowBody<false>>(xo, yo, r_count);
          continue;
        }
        if (inner == 1 && kind == SoftmaxKind::kLogSoftmax) {
          RunSimd<SoftmaxRowBody<true>>(xo, yo, r_count);
          continue;
        }
      }
      SoftmaxColumns(kind, xo, yo, r_count, inner, m, s);
    }
  });
}

class SoftmaxKernel final : public Kernel {
 public:
  SoftmaxKernel(std::string op, SoftmaxKind kind, int64_t axis)
      : op_(std::move(op)), kind_(kind), axis_(axis) {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op_, inputs, 1, 1, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(op_, inputs, 1));
    const Tensor& x = inputs[0];
    NIMBLE_RETURN_IF_ERROR(CheckOutput(op_, outputs[0], x.dtype(), x.shape()));
    if (!IsFloat(x.dtype())) {
      return absl::InvalidArgumentError(
          absl::StrCat(op_, ": unsupported dtype ", DTypeName(x.dtype())));
    }
    if (x.rank() == 0) {
      return absl::InvalidArgumentError(absl::StrCat(op_, ": input must have rank >= 1"));
    }
    NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(op_, axis_, x.rank()));
    int64_t outer, r, inner;
    SplitAt(x.shape(), axis, &outer, &r, &inner);
    if (x.num_elements() == 0) return absl::OkStatus();
    if (x.dtype() == DType::kF64) {
      SoftmaxLayout(ctx, kind_, x.data<double>(), outputs[0].data<double>(), outer, r, inner);
      return absl::OkStatus();
    }
    if (x.dtype() == DType::kF32) {
      SoftmaxLayout(ctx, kind_, x.data<float>(), outputs[0].data<float>(), outer, r, inner);
      return absl::OkStatus();
    }
    NIMBLE_ASSIGN_OR_RETURN(Tensor xf, CastTo(x, DType::kF32, op_));
    SoftmaxLayout(ctx, kind_, xf.data<float>(), xf.data<float>(), outer, r, inner);
    return CastInto(xf, outputs[0], op_);
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.size() != 1 || !inputs[0].defined() || output_shapes.size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(op_, ": expected one input and one output"));
    }
    output_shapes[0] = inputs[0].shape();
    return absl::OkStatus();
  }

 private:
  const std::string op_;
  const SoftmaxKind kind_;
  const int64_t axis_;
};

// ------------------------------------------------------------------------------------------
// LayerNormalization / RMSNormalization.

template <bool kRms>
struct LayerNormRowBody {
  // y = (x - mean) * inv_std * scale + bias over one row; scale/bias may be null (1 / 0).
  template <int W>
  static NIMBLE_SIMD_INLINE void Run(const float* x, float* y, int64_t n, const float* scale,
                                     const float* bias, float epsilon, float* mean_out,
                                     float* inv_out) {
    using V = typename Simd<W>::F;
    float mean = 0.f;
    int64_t i = 0;
    if constexpr (!kRms) {
      V a0 = SplatV<V>(0.f), a1 = a0, a2 = a0, a3 = a0;
      for (; i + 4 * W <= n; i += 4 * W) {
        a0 += LoadV<V>(x + i);
        a1 += LoadV<V>(x + i + W);
        a2 += LoadV<V>(x + i + 2 * W);
        a3 += LoadV<V>(x + i + 3 * W);
      }
      for (; i + W <= n; i += W) a0 += LoadV<V>(x + i);
      float s = HorizontalSum((a0 + a1) + (a2 + a3));
      for (; i < n; ++i) s += x[i];
      mean = s / static_cast<float>(n);
    }
    const V vm = SplatV<V>(mean);
    V q0 = SplatV<V>(0.f), q1 = q0, q2 = q0, q3 = q0;
    i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
      const V d0 = LoadV<V>(x + i) - vm;
      const V d1 = LoadV<V>(x + i + W) - vm;
      const V d2 = LoadV<V>(x + i + 2 * W) - vm;
      const V d3 = LoadV<V>(x + i + 3 * W) - vm;
      q0 += d0 * d0;
      q1 += d1 * d1;
      q2 += d2 * d2;
      q3 += d3 * d3;
    }
    for (; i + W <= n; i += W) {
      const V d = LoadV<V>(x + i) - vm;
      q0 += d * d;
    }
    float q = HorizontalSum((q0 + q1) + (q2 + q3));
    for (; i < n; ++i) q += (x[i] - mean) * (x[i] - mean);
    const float inv = 1.0f / std::sqrt(q / static_cast<float>(n) + epsilon);
    if (mean_out != nullptr) *mean_out = mean;
    if (inv_out != nullptr) *inv_out = inv;
    const V vinv = SplatV<V>(inv);
    i = 0;
    if (scale != nullptr && bias != nullptr) {
      for (; i + W <= n; i += W) {
        StoreV(y + i, (LoadV<V>(x + i) - vm) * vinv * LoadV<V>(scale + i) + LoadV<V>(bias + i));
      }
      for (; i < n; ++i) y[i] = (x[i] - mean) * inv * scale[i] + bias[i];
    } else if (scale != nullptr) {
      for (; i + W <= n; i += W) {
        StoreV(y + i, (LoadV<V>(x + i) - vm) * vinv * LoadV<V>(scale + i));
      }
      for (; i < n; ++i) y[i] = (x[i] - mean) * inv * scale[i];
    } else {
      for (; i + W <= n; i += W) StoreV(y + i, (LoadV<V>(x + i) - vm) * vinv);
      for (; i < n; ++i) y[i] = (x[i] - mean) * inv;
    }
  }
};

template <bool kRms>
void LayerNormRowF64(const double* x, double* y, int64_t n, const double* scale, const double* bias,
                     double epsilon, double* mean_out, double* inv_out) {
  double mean = 0;
  if constexpr (!kRms) {
    for (int64_t i = 0; i < n; ++i) mean += x[i];
    mean /= static_cast<double>(n);
  }
  double q = 0;
  for (int64_t i = 0; i < n; ++i) q += (x[i] - mean) * (x[i] - mean);
  const double inv = 1.0 / std::sqrt(q / static_cast<double>(n) + epsilon);
  *mean_out = mean;
  *inv_out = inv;
  for (int64_t i = 0; i < n; ++i) {
    double v = (x[i] - mean) * inv;
    if (scale != nullptr) v *= scale[i];
    if (bias != nullptr) v += bias[i];
    y[i] = v;
  }
}

// `param` broadcast to `shape` (elements of the input dtype, converted to `dtype`).
absl::StatusOr<Tensor> ExpandTo(absl::string_view op, absl::string_view what, const Tensor& param,
                                absl::Span<const int64_t> shape, DType dtype) {
  Tensor p = param;
  if (p.dtype() != dtype) {
    NIMBLE_ASSIGN_OR_RETURN(p, CastTo(p, dtype, op));
  }
  if (absl::Span<const int64_t>(p.shape()) == shape) return p;
  auto plan = BroadcastPlan::Create({p.shape()}, shape);
  if (!plan.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": ", what, " ", param.TypeString(), " does not broadcast to ", ShapeToString(shape)));
  }
  NIMBLE_ASSIGN_OR_RETURN(Tensor out, Tensor::Empty(dtype, shape));
  const size_t es = DTypeSize(dtype);
  const char* src = static_cast<const char*>(p.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
  plan->ForEachSegment(
      0, plan->num_elements(), [&](int64_t o, absl::Span<const int64_t> offs, int64_t len) {
        for (int64_t k = 0; k < len; ++k) {
          std::memcpy(dst + (o + k) * es, src + (offs[0] + k * plan->inner_stride(0)) * es, es);
        }
      });
  return out;
}

// A scale/bias parameter laid out for row-wise use: either one row of `norm` values shared by
// every row (stride 0) or a full tensor with one row per outer index (stride norm).
struct RowParam {
  Tensor tensor;
  int64_t row_stride = 0;
};

absl::Status PrepareRowParam(absl::string_view op, absl::string_view what, const Tensor& param,
                             absl::Span<const int64_t> x_shape, int axis, DType dtype,
                             RowParam* rp) {
  if (!param.defined()) return absl::OkStatus();
  const absl::Span<const int64_t> norm_shape = x_shape.subspan(axis);
  // Leading dims of size 1 beyond the normalised dims are harmless.
  bool row_only = param.shape().size() <= x_shape.size();
  const size_t extra =
      param.shape().size() > norm_shape.size() ? param.shape().size() - norm_shape.size() : 0;
  for (size_t i = 0; row_only && i < extra; ++i) row_only = param.shape()[i] == 1;
  if (row_only) {
    Shape trimmed(param.shape().begin() + extra, param.shape().end());
    NIMBLE_ASSIGN_OR_RETURN(Tensor t, param.Reshape(trimmed));
    NIMBLE_ASSIGN_OR_RETURN(rp->tensor, ExpandTo(op, what, t, norm_shape, dtype));
    rp->row_stride = 0;
    return absl::OkStatus();
  }
  NIMBLE_ASSIGN_OR_RETURN(rp->tensor, ExpandTo(op, what, param, x_shape, dtype));
  int64_t norm = 1;
  for (int64_t d : norm_shape) norm *= d;
  rp->row_stride = norm;
  return absl::OkStatus();
}

class LayerNormKernel final : public Kernel {
 public:
  LayerNormKernel(std::string op, bool rms, int64_t axis, double epsilon)
      : op_(std::move(op)), rms_(rms), axis_(axis), epsilon_(epsilon) {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    const size_t max_inputs = rms_ ? 2 : 3;
    NIMBLE_RETURN_IF_ERROR(CheckArity(op_, inputs, rms_ ? 2 : 1, max_inputs, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(op_, inputs, 1));
    const Tensor& x = inputs[0];
    if (!IsFloat(x.dtype())) {
      return absl::InvalidArgumentError(
          absl::StrCat(op_, ": unsupported dtype ", DTypeName(x.dtype())));
    }
    if (x.rank() == 0) {
      return absl::InvalidArgumentError(absl::StrCat(op_, ": input must have rank >= 1"));
    }
    NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(op_, axis_, x.rank()));
    NIMBLE_RETURN_IF_ERROR(CheckOutput(op_, outputs[0], x.dtype(), x.shape()));
    Shape stat_shape(x.shape().begin(), x.shape().begin() + axis);
    stat_shape.resize(x.rank(), 1);
    // Optional Mean / InvStdDev outputs (f32 or the input's float type).
    for (size_t k = 1; k < outputs.size() && k < 3; ++k) {
      if (!outputs[k].defined()) continue;
      if (!IsFloat(outputs[k].dtype())) {
        return absl::InvalidArgumentError(absl::StrCat(op_, ": output ", k, " must be float"));
      }
      NIMBLE_RETURN_IF_ERROR(CheckOutput(op_, outputs[k], outputs[k].dtype(), stat_shape, k));
    }
    int64_t outer = 1, norm = 1;
    for (int i = 0; i < axis; ++i) outer *= x.dim(i);
    for (int i = axis; i < x.rank(); ++i) norm *= x.dim(i);

    const DType cdtype = x.dtype() == DType::kF64 ? DType::kF64 : DType::kF32;
    RowParam scale, bias;
    NIMBLE_RETURN_IF_ERROR(PrepareRowParam(op_, "scale", inputs.size() > 1 ? inputs[1] : Tensor(),
                                           x.shape(), axis, cdtype, &scale));
    NIMBLE_RETURN_IF_ERROR(PrepareRowParam(op_, "bias", inputs.size() > 2 ? inputs[2] : Tensor(),
                                           x.shape(), axis, cdtype, &bias));
    Tensor xc = x;
    Tensor yc = outputs[0];
    if (x.dtype() != cdtype) {
      NIMBLE_ASSIGN_OR_RETURN(xc, CastTo(x, cdtype, op_));
      yc = xc;  // normalise in place
    }
    const bool want_stats = (outputs.size() > 1 && outputs[1].defined()) ||
                            (outputs.size() > 2 && outputs[2].defined());
    Tensor mean, inv;
    if (want_stats) {
      NIMBLE_ASSIGN_OR_RETURN(mean, Tensor::Empty(cdtype, stat_shape));
      NIMBLE_ASSIGN_OR_RETURN(inv, Tensor::Empty(cdtype, stat_shape));
    }
    if (norm > 0 && outer > 0) {
      if (cdtype == DType::kF32) {
        Compute<float>(ctx, xc, yc, scale, bias, mean, inv, outer, norm);
      } else {
        Compute<double>(ctx, xc, yc, scale, bias, mean, inv, outer, norm);
      }
    }
    if (x.dtype() != cdtype) NIMBLE_RETURN_IF_ERROR(CastInto(yc, outputs[0], op_));
    if (outputs.size() > 1 && outputs[1].defined()) {
      NIMBLE_RETURN_IF_ERROR(CastInto(mean, outputs[1], op_));
    }
    if (outputs.size() > 2 && outputs[2].defined()) {
      NIMBLE_RETURN_IF_ERROR(CastInto(inv, outputs[2], op_));
    }
    return absl::OkStatus();
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.empty() || !inputs[0].defined() || output_shapes.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(op_, ": expected X and an output"));
    }
    const Tensor& x = inputs[0];
    NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(op_, axis_, x.rank()));
    output_shapes[0] = x.shape();
    Shape stat_shape(x.shape().begin(), x.shape().begin() + axis);
    stat_shape.resize(x.rank(), 1);
    for (size_t k = 1; k < output_shapes.size(); ++k) output_shapes[k] = stat_shape;
    return absl::OkStatus();
  }

 private:
  template <typename T>
  void Compute(const KernelContext& ctx, const Tensor& x, Tensor& y, const RowParam& scale,
               const RowParam& bias, Tensor& mean, Tensor& inv, int64_t outer, int64_t norm) const {
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    const T* sp = scale.tensor.defined() ? scale.tensor.data<T>() : nullptr;
    const T* bp = bias.tensor.defined() ? bias.tensor.data<T>() : nullptr;
    T* mp = mean.defined() ? mean.data<T>() : nullptr;
    T* ip = inv.defined() ? inv.data<T>() : nullptr;
    const T eps = static_cast<T>(epsilon_);
    // Three passes per row over data a multi-threaded producer (a GEMM) mostly left in other
    // cores' caches, so pulling it in dominates and spreads with the rows: one task a thread, of
    // at least 4K elements. BERT-base at 16 threads on the device Xeon, LayerNorm at 128 rows of
    // 768: 0.74-1.7 ms a run with 4K-element tasks or one a thread, against 2.0-2.1 with the
    // former 32K-element tasks (4 of them); whole-model times moved within the machines' noise
    // (bench/results/cpu/layernorm_tasks_2026-12-06.txt).
    const int64_t team = std::max(ctx.num_threads, 1);
    ParallelFor(
        ctx, outer,
        std::max({int64_t{1}, 4096 / std::max<int64_t>(norm, 1), (outer + team - 1) / team}),
        [&](int64_t b, int64_t e) {
          T unused_mean, unused_inv;
          for (int64_t o = b; o < e; ++o) {
            const T* s = sp != nullptr ? sp + o * scale.row_stride : nullptr;
            const T* bb = bp != nullptr ? bp + o * bias.row_stride : nullptr;
            T* m = mp != nullptr ? mp + o : &unused_mean;
            T* iv = ip != nullptr ? ip + o : &unused_inv;
            if constexpr (std::is_same_v<T, float>) {
              if (rms_) {
                RunSimd<LayerNormRowBody<true>>(xp + o * norm, yp + o * norm, norm, s, bb, eps, m,
                                                iv);
              } else {
                RunSimd<LayerNormRowBody<false>>(xp + o * norm, yp + o * norm, norm, s, bb, eps, m,
                                                 iv);
              }
            } else {
              if (rms_) {
                LayerNormRowF64<true>(xp + o * norm, yp + o * norm, norm, s, bb, eps, m, iv);
              } else {
                LayerNormRowF64<false>(xp + o * norm, yp + o * norm, norm, s, bb, eps, m, iv);
              }
            }
          }
        });
  }

  const std::string op_;
  const bool rms_;
  const int64_t axis_;
  const double epsilon_;
};

// ------------------------------------------------------------------------------------------
// Per-channel normalizations over [N, C, spatial]: Batch (inference), Instance, Group.

// A per-channel parameter (any float dtype) as doubles; kInvalidArgument unless it has
// `count` elements.
absl::StatusOr<std::vector<double>> ChannelParam(absl::string_view op, absl::string_view what,
                                                 const Tensor& t, int64_t count) {
  if (!IsFloat(t.dtype())) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", what, " must be float, got ", DTypeName(t.dtype())));
  }
  if (t.num_elements() != count) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", what, " has ", t.num_elements(), " elements, expected ", count));
  }
  NIMBLE_ASSIGN_OR_RETURN(Tensor d, CastTo(t, DType::kF64, op));
  return std::vector<double>(d.data<double>(), d.data<double>() + count);
}

// y = x * a[row % period] + b[row % period] over `rows` rows of `spatial` elements.
template <typename T>
void AffineRows(const KernelContext& ctx, const T* x, T* y, int64_t rows, int64_t spatial,
                const std::vector<double>& a, const std::vector<double>& b) {
  const int64_t period = static_cast<int64_t>(a.size());
  ParallelFor(ctx, rows, RowGrain(spatial), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const T av = static_cast<T>(a[row % period]);
      const T bv = static_cast<T>(b[row % period]);
      const T* xr = x + row * spatial;
      T* yr = y + row * spatial;
      for (int64_t k = 0; k < spatial; ++k) yr[k] = xr[k] * av + bv;
    }
  });
}

enum class ChannelNormKind { kBatch, kInstance, kGroup };

class ChannelNormKernel final : public Kernel {
 public:
  ChannelNormKernel(std::string op, ChannelNormKind kind, double epsilon, int64_t num_groups,
                    bool training = false, double momentum = 0.9)
      : op_(std::move(op)),
        kind_(kind),
        epsilon_(epsilon),
        num_groups_(num_groups),
        training_(training),
        momentum_(momentum) {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    const size_t arity = kind_ == ChannelNormKind::kBatch ? 5 : 3;
    NIMBLE_RETURN_IF_ERROR(CheckArity(op_, inputs, arity, arity, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(op_, inputs, arity));
    const Tensor& x = inputs[0];
    if (!IsFloat(x.dtype())) {
      return absl::InvalidArgumentError(
          absl::StrCat(op_, ": unsupported dtype ", DTypeName(x.dtype())));
    }
    if (x.rank() < 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(op_, ": input must have rank >= 2 (N, C, ...), got ", x.TypeString()));
    }
    NIMBLE_RETURN_IF_ERROR(CheckOutput(op_, outputs[0], x.dtype(), x.shape()));
    const int64_t n = x.dim(0);
    const int64_t c = x.dim(1);
    int64_t spatial = 1;
    for (int i = 2; i < x.rank(); ++i) spatial *= x.dim(i);

    std::vector<double> a, b;  // per (n?, c) affine: y = x * a + b
    Tensor xc = x;
    if (IsHalf(x.dtype())) {
      NIMBLE_ASSIGN_OR_RETURN(xc, CastTo(x, DType::kF32, op_));
    }
    Tensor yc = IsHalf(x.dtype()) ? xc : outputs[0];

    if (kind_ == ChannelNormKind::kBatch) {
      NIMBLE_ASSIGN_OR_RETURN(std::vector<double> scale, ChannelParam(op_, "scale", inputs[1], c));
      NIMBLE_ASSIGN_OR_RETURN(std::vector<double> bias, ChannelParam(op_, "B", inputs[2], c));
      NIMBLE_ASSIGN_OR_RETURN(std::vector<double> mean,
                              ChannelParam(op_, "input_mean", inputs[3], c));
      NIMBLE_ASSIGN_OR_RETURN(std::vector<double> var,
                              ChannelParam(op_, "input_var", inputs[4], c));
      if (training_) return RunTraining(ctx, inputs, outputs, xc, yc, scale, bias, mean, var);
      a.resize(c);
      b.resize(c);
      for (int64_t k = 0; k < c; ++k) {
        a[k] = scale[k] / std::sqrt(var[k] + epsilon_);
        b[k] = bias[k] - mean[k] * a[k];
      }
      Affine(ctx, xc, yc, n * c, spatial, a, b);
      // Older opsets may list running/saved mean and variance outputs; in inference they are
      // the inputs' statistics.
      for (size_t k = 1; k < outputs.size() && k < 5; ++k) {
        if (!outputs[k].defined()) continue;
        const Tensor& src = inputs[k % 2 == 1 ? 3 : 4];
        if (outputs[k].num_elements() != c) {
          return absl::InvalidArgumentError(
              absl::StrCat(op_, ": output ", k, " must have ", c, " elements"));
        }
        NIMBLE_RETURN_IF_ERROR(CastInto(src, outputs[k], op_));
      }
    } else {
      int64_t groups = c;
      if (kind_ == ChannelNormKind::kGroup) {
        groups = num_groups_;
        if (groups <= 0 || c % groups != 0) {
          return absl::InvalidArgumentError(
              absl::StrCat(op_, ": num_groups ", groups, " does not divide the ", c, " channels"));
        }
      }
      // Scale/bias per channel; GroupNormalization-18 gave them per group.
      const int64_t per =
          kind_ == ChannelNormKind::kGroup && inputs[1].num_elements() == groups && groups != c
              ? c / groups
              : 1;
      NIMBLE_ASSIGN_OR_RETURN(std::vector<double> scale,
                              ChannelParam(op_, "scale", inputs[1], c / per));
      NIMBLE_ASSIGN_OR_RETURN(std::vector<double> bias,
                              ChannelParam(op_, "bias", inputs[2], c / per));
      // Statistics per (n, group) over (c / groups) * spatial contiguous elements.
      const int64_t group_size = (c / groups) * spatial;
      std::vector<double> mean(n * groups), inv(n * groups);
      NIMBLE_RETURN_IF_ERROR(Stats(ctx, xc, n * groups, group_size, mean, inv));
      a.resize(n * c);
      b.resize(n * c);
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t k = 0; k < c; ++k) {
          const int64_t g = i * groups + k / (c / groups);
          a[i * c + k] = scale[k / per] * inv[g];
          b[i * c + k] = bias[k / per] - mean[g] * a[i * c + k];
        }
      }
      Affine(ctx, xc, yc, n * c, spatial, a, b);
    }
    if (IsHalf(x.dtype())) return CastInto(yc, outputs[0], op_);
    return absl::OkStatus();
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.empty() || !inputs[0].defined() || output_shapes.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(op_, ": expected X and an output"));
    }
    output_shapes[0] = inputs[0].shape();
    if (inputs[0].rank() < 2) {
      return absl::InvalidArgumentError(absl::StrCat(op_, ": input must have rank >= 2"));
    }
    for (size_t k = 1; k < output_shapes.size(); ++k) output_shapes[k] = {inputs[0].dim(1)};
    return absl::OkStatus();
  }

 private:
  // BatchNormalization with training_mode=1 (opset 14+): Y normalized by the batch's own mean and
  // (population) variance per channel; outputs 1 and 2, when asked for, are the running mean and
  // variance input * momentum + batch statistic * (1 - momentum).
  absl::Status RunTraining(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                           absl::Span<Tensor> outputs, const Tensor& xc, Tensor& yc,
                           const std::vector<double>& scale, const std::vector<double>& bias,
                           const std::vector<double>& running_mean,
                           const std::vector<double>& running_var) const {
    const Tensor& x = inputs[0];
    if (outputs.size() > 3) {
      return absl::InvalidArgumentError(absl::StrCat(
          op_, ": training_mode=1 has at most 3 outputs (Y, running_mean, running_var), got ",
          outputs.size()));
    }
    const int64_t n = x.dim(0), c = x.dim(1);
    int64_t spatial = 1;
    for (int i = 2; i < x.rank(); ++i) spatial *= x.dim(i);
    const double count = static_cast<double>(n * spatial);
    std::vector<double> mean(c, 0.0), var(c, 0.0);
    auto accumulate = [&](const auto* p) {
      for (int64_t k = 0; k < c; ++k) {
        double sum = 0;
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t j = 0; j < spatial; ++j) sum += p[(i * c + k) * spatial + j];
        }
        mean[k] = count > 0 ? sum / count : 0.0;
        double sq = 0;
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t j = 0; j < spatial; ++j) {
            const double d = p[(i * c + k) * spatial + j] - mean[k];
            sq += d * d;
          }
        }
        var[k] = count > 0 ? sq / count : 0.0;
      }
    };
    if (xc.dtype() == DType::kF64) {
      accumulate(xc.data<double>());
    } else {
      accumulate(xc.data<float>());
    }
    std::vector<double> a(c), b(c);
    for (int64_t k = 0; k < c; ++k) {
      a[k] = scale[k] / std::sqrt(var[k] + epsilon_);
      b[k] = bias[k] - mean[k] * a[k];
    }
    Affine(ctx, xc, yc, n * c, spatial, a, b);
    const std::vector<double>* batch[] = {&mean, &var};
    const std::vector<double>* running[] = {&running_mean, &running_var};
    for (size_t k = 1; k < outputs.size(); ++k) {
      if (!outputs[k].defined()) continue;
      if (outputs[k].num_elements() != c) {
        return absl::InvalidArgumentError(
            absl::StrCat(op_, ": output ", k, " must have ", c, " elements"));
      }
      std::vector<double> updated(c);
      for (int64_t i = 0; i < c; ++i) {
        updated[i] = (*running[k - 1])[i] * momentum_ + (*batch[k - 1])[i] * (1 - momentum_);
      }
      NIMBLE_RETURN_IF_ERROR(CastInto(Tensor::FromVector<double>(updated, {c}), outputs[k], op_));
    }
    if (IsHalf(x.dtype())) return CastInto(yc, outputs[0], op_);
    return absl::OkStatus();
  }

  // a/b have c entries (shared by every n) or n * c entries.
  void Affine(const KernelContext& ctx, const Tensor& x, Tensor& y, int64_t rows, int64_t spatial,
              const std::vector<double>& a, const std::vector<double>& b) const {
    if (x.dtype() == DType::kF64) {
      AffineRows(ctx, x.data<double>(), y.data<double>(), rows, spatial, a, b);
    } else {
      AffineRows(ctx, x.data<float>(), y.data<float>(), rows, spatial, a, b);
    }
  }

  // Mean and 1/sqrt(var + eps) of `rows` contiguous rows of `len` elements (two-pass, double).
  absl::Status Stats(const KernelContext& ctx, const Tensor& x, int64_t rows, int64_t len,
                     std::vector<double>& mean, std::vector<double>& inv) const {
    auto run = [&](auto* data) {
      ParallelFor(ctx, rows, RowGrain(len), [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
          const auto* p = data + r * len;
          double s = 0;
          for (int64_t k = 0; k < len; ++k) s += p[k];
          const double m = len > 0 ? s / static_cast<double>(len) : 0.0;
          double q = 0;
          for (int64_t k = 0; k < len; ++k) q += (p[k] - m) * (p[k] - m);
          mean[r] = m;
          inv[r] = 1.0 / std::sqrt((len > 0 ? q / static_cast<double>(len) : 0.0) + epsilon_);
        }
      });
    };
    if (x.dtype() == DType::kF64) {
      run(x.data<double>());
    } else {
      run(x.data<float>());
    }
    return absl::OkStatus();
  }

  const std::string op_;
  const ChannelNormKind kind_;
  const double epsilon_;
  const int64_t num_groups_;
  const bool training_;  // BatchNormalization training_mode=1
  const double momentum_;
};

// ------------------------------------------------------------------------------------------
// LpNormalization.

class LpNormKernel final : public Kernel {
 public:
  LpNormKernel(int64_t axis, int64_t p) : axis_(axis), p_(p) {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("LpNormalization", inputs, 1, 1, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired("LpNormalization", inputs, 1));
    const Tensor& x = inputs[0];
    if (!IsFloat(x.dtype())) {
      return absl::InvalidArgumentError(
          absl::StrCat("LpNormalization: unsupported dtype ", DTypeName(x.dtype())));
    }
    if (x.rank() == 0) {
      return absl::InvalidArgumentError("LpNormalization: input must have rank >= 1");
    }
    NIMBLE_RETURN_IF_ERROR(CheckOutput("LpNormalization", outputs[0], x.dtype(), x.shape()));
    NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis("LpNormalization", axis_, x.rank()));
    int64_t outer, r, inner;
    SplitAt(x.shape(), axis, &outer, &r, &inner);
    if (x.num_elements() == 0) return absl::OkStatus();
    if (x.dtype() == DType::kF64) {
      Compute(ctx, x.data<double>(), outputs[0].data<double>(), outer, r, inner);
      return absl::OkStatus();
    }
    if (x.dtype() == DType::kF32) {
      Compute(ctx, x.data<float>(), outputs[0].data<float>(), outer, r, inner);
      return absl::OkStatus();
    }
    NIMBLE_ASSIGN_OR_RETURN(Tensor xf, CastTo(x, DType::kF32, "LpNormalization"));
    Compute(ctx, xf.data<float>(), xf.data<float>(), outer, r, inner);
    return CastInto(xf, outputs[0], "LpNormalization");
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.size() != 1 || !inputs[0].defined() || output_shapes.size() != 1) {
      return absl::InvalidArgumentError("LpNormalization: expected one input and one output");
    }
    output_shapes[0] = inputs[0].shape();
    return absl::OkStatus();
  }

 private:
  template <typename T>
  void Compute(const KernelContext& ctx, const T* x, T* y, int64_t outer, int64_t r_count,
               int64_t inner) const {
    ParallelFor(ctx, outer, RowGrain(r_count * inner), [&](int64_t b, int64_t e) {
      std::vector<T> norm(inner);
      for (int64_t o = b; o < e; ++o) {
        const T* xo = x + o * r_count * inner;
        T* yo = y + o * r_count * inner;
        std::fill(norm.begin(), norm.end(), T(0));
        for (int64_t r = 0; r < r_count; ++r) {
          for (int64_t j = 0; j < inner; ++j) {
            const T v = xo[r * inner + j];
            norm[j] += p_ == 1 ? std::abs(v) : v * v;
          }
        }
        for (int64_t j = 0; j < inner; ++j) {
          const T nv = p_ == 1 ? norm[j] : std::sqrt(norm[j]);
          norm[j] = nv == T(0) ? T(0) : T(1) / nv;  // all-zero vectors stay zero
        }
        for (int64_t r = 0; r < r_count; ++r) {
          for (int64_t j = 0; j < inner; ++j) yo[r * inner + j] = xo[r * inner + j] * norm[j];
        }
      }
    });
  }

  const int64_t axis_;
  const int64_t p_;
};

// ------------------------------------------------------------------------------------------
// MeanVarianceNormalization: y = (x - mean) / (sqrt(var) + 1e-9) over `axes`.

class MvnKernel final : public Kernel {
 public:
  explicit MvnKernel(std::vector<int64_t> axes) : axes_(std::move(axes)) {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    constexpr absl::string_view kOp = "MeanVarianceNormalization";
    NIMBLE_RETURN_IF_ERROR(CheckArity(kOp, inputs, 1, 1, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(kOp, inputs, 1));
    const Tensor& x = inputs[0];
    if (!IsFloat(x.dtype())) {
      return absl::InvalidArgumentError(
          absl::StrCat(kOp, ": unsupported dtype ", DTypeName(x.dtype())));
    }
    NIMBLE_RETURN_IF_ERROR(CheckOutput(kOp, outputs[0], x.dtype(), x.shape()));
    Shape stat_shape = x.shape();
    std::vector<bool> seen(x.rank(), false);
    for (int64_t a : axes_) {
      NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(kOp, a, x.rank()));
      if (seen[axis]) {
        return absl::InvalidArgumentError(absl::StrCat(kOp, ": axis ", a, " is repeated"));
      }
      seen[axis] = true;
      stat_shape[axis] = 1;
    }
    if (x.num_elements() == 0) return absl::OkStatus();
    NIMBLE_ASSIGN_OR_RETURN(Tensor xd, CastTo(x, DType::kF64, kOp));
    NIMBLE_ASSIGN_OR_RETURN(int64_t stats, NumElements(stat_shape));
    const double count = static_cast<double>(x.num_elements()) / static_cast<double>(stats);
    NIMBLE_ASSIGN_OR_RETURN(BroadcastPlan plan, BroadcastPlan::Create({stat_shape}, x.shape()));
    std::vector<double> mean(stats, 0.0), var(stats, 0.0);
    double* v = xd.data<double>();
    const int64_t s0 = plan.inner_stride(0);
    auto walk = [&](auto&& fn) {
      plan.ForEachSegment(0, plan.num_elements(),
                          [&](int64_t o, absl::Span<const int64_t> offs, int64_t len) {
                            for (int64_t k = 0; k < len; ++k) fn(v[o + k], offs[0] + k * s0);
                          });
    };
    walk([&](double xv, int64_t s) { mean[s] += xv; });
    for (double& m : mean) m /= count;
    walk([&](double xv, int64_t s) { var[s] += (xv - mean[s]) * (xv - mean[s]); });
    for (double& q : var) q = 1.0 / (std::sqrt(q / count) + 1e-9);
    walk([&](double& xv, int64_t s) { xv = (xv - mean[s]) * var[s]; });
    (void)ctx;
    return CastInto(xd, outputs[0], kOp);
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.size() != 1 || !inputs[0].defined() || output_shapes.size() != 1) {
      return absl::InvalidArgumentError(
          "MeanVarianceNormalization: expected one input and one output");
    }
    output_shapes[0] = inputs[0].shape();
    return absl::OkStatus();
  }

 private:
  const std::vector<int64_t> axes_;
};

// EmbedLayerNorm (compiler/transforms/fuse_embedding.h): inputs (table_k, ids_k) for the
// `embeddings` k, then gamma and beta (optional). y[..., :] = LayerNorm(sum_k table_k[ids_k[...],
// :]) * gamma + beta over the last axis; ids broadcast (numpy rules) to the output's leading
// dims, negative ids count from the end, absent ids are the positions along the last leading
// dim. f32 tables; the row sums in fp32, statistics in double.
class EmbedLayerNormKernel final : public Kernel {
 public:
  EmbedLayerNormKernel(int n, double epsilon) : n_(n), epsilon_(epsilon) {}

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    NIMBLE_RETURN_IF_ERROR(CheckInputs(inputs));
    if (output_shapes.size() != 1) return absl::InvalidArgumentError("EmbedLayerNorm: 1 output");
    NIMBLE_ASSIGN_OR_RETURN(output_shapes[0], OutShape(inputs));
    return absl::OkStatus();
  }

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckInputs(inputs));
    if (outputs.size() != 1 || !outputs[0].defined()) {
      return absl::InvalidArgumentError("EmbedLayerNorm: expected one output");
    }
    NIMBLE_ASSIGN_OR_RETURN(vm::Shape shape, OutShape(inputs));
    const Tensor& y = outputs[0];
    if (y.dtype() != DType::kF32 || y.shape() != shape) {
      return absl::InvalidArgumentError(absl::StrCat("EmbedLayerNorm: output is ", y.TypeString(),
                                                     ", expected f32", ShapeToString(shape)));
    }
    const int64_t cols = shape.back();
    const int lead = static_cast<int>(shape.size()) - 1;
    int64_t rows = 1;
    for (int d = 0; d < lead; ++d) rows *= shape[d];
    // Per embedding: each output row's table row (validated up front, so nothing is written
    // for bad ids).
    std::vector<std::vector<int64_t>> table_rows(n_);
    for (int k = 0; k < n_; ++k) {
      const Tensor ids = Present(inputs, 2 * k + 1) ? inputs[2 * k + 1] : Tensor();
      const int64_t vocab = inputs[2 * k].dim(0);
      std::vector<int64_t>& out = table_rows[k];
      out.resize(rows);
      if (!ids.defined()) {  // positions along the last leading dim
        if (lead == 0) return absl::InvalidArgumentError("EmbedLayerNorm: positions of a scalar");
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t pos = r % shape[lead - 1];
          if (pos >= vocab) {
            return absl::InvalidArgumentError(absl::StrCat("EmbedLayerNorm: position ", pos,
                                                           " of embedding ", k,
                                                           " is out of range [0, ", vocab, ")"));
          }
          out[r] = pos;
        }
        continue;
      }
      // OutShape checked that the ids broadcast to the leading dims.
      const vm::Shape strides =
          BroadcastStrides(ids.shape(), absl::MakeConstSpan(shape).subspan(0, lead));
      for (int64_t r = 0; r < rows; ++r) {
        int64_t rest = r, offset = 0;
        for (int d = lead - 1; d >= 0; --d) {
          offset += (rest % shape[d]) * strides[d];
          rest /= shape[d];
        }
        const int64_t given = ids.dtype() == DType::kI64
                                  ? ids.data<int64_t>()[offset]
                                  : static_cast<int64_t>(ids.data<int32_t>()[offset]);
        const int64_t id = given < 0 ? given + vocab : given;
        if (id < 0 || id >= vocab) {
          return absl::InvalidArgumentError(absl::StrCat("EmbedLayerNorm: index ", given,
                                                         " of embedding ", k, " is out of range [-",
                                                         vocab, ", ", vocab, ")"));
        }
        out[r] = id;
      }
    }
    const float* gamma = Present(inputs, 2 * n_) ? inputs[2 * n_].data<float>() : nullptr;
    const float* beta = Present(inputs, 2 * n_ + 1) ? inputs[2 * n_ + 1].data<float>() : nullptr;
    float* out = y.data<float>();
    ParallelFor(ctx, rows, RowGrain(cols * n_), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        float* row = out + r * cols;
        const float* first = inputs[0].data<float>() + table_rows[0][r] * cols;
        std::copy(first, first + cols, row);
        for (int k = 1; k < n_; ++k) {
          const float* t = inputs[2 * k].data<float>() + table_rows[k][r] * cols;
          for (int64_t c = 0; c < cols; ++c) row[c] += t[c];
        }
        double sum = 0.0;
        for (int64_t c = 0; c < cols; ++c) sum += row[c];
        const double mean = sum / static_cast<double>(cols);
        double sq = 0.0;
        for (int64_t c = 0; c < cols; ++c) sq += (row[c] - mean) * (row[c] - mean);
        const double rstd = 1.0 / std::sqrt(sq / static_cast<double>(cols) + epsilon_);
        for (int64_t c = 0; c < cols; ++c) {
          double v = (row[c] - mean) * rstd;
          if (gamma != nullptr) v *= gamma[c];
          if (beta != nullptr) v += beta[c];
          row[c] = static_cast<float>(v);
        }
      }
    });
    return absl::OkStatus();
  }

 private:
  static bool Present(absl::Span<const Tensor> t, size_t i) {
    return i < t.size() && t[i].defined();
  }

  absl::Status CheckInputs(absl::Span<const Tensor> inputs) const {
    // The last ids may be absent (positions) and dropped.
    if (static_cast<int>(inputs.size()) < 2 * n_ - 1 ||
        static_cast<int>(inputs.size()) > 2 * n_ + 2) {
      return absl::InvalidArgumentError(absl::StrCat("EmbedLayerNorm: expected ", 2 * n_, " to ",
                                                     2 * n_ + 2, " inputs, got ", inputs.size()));
    }
    int64_t cols = -1;
    for (int k = 0; k < n_; ++k) {
      const Tensor& table = inputs[2 * k];
      const Tensor ids = Present(inputs, 2 * k + 1) ? inputs[2 * k + 1] : Tensor();
      if (!table.defined()) {
        return absl::InvalidArgumentError(
            absl::StrCat("EmbedLayerNorm: embedding ", k, " has no table"));
      }
      if (table.dtype() != DType::kF32 || table.rank() != 2 ||
          (cols >= 0 && table.dim(1) != cols)) {
        return absl::InvalidArgumentError(
            absl::StrCat("EmbedLayerNorm: table ", k, " is ", table.TypeString(),
                         ", expected f32[vocab, ", cols >= 0 ? absl::StrCat(cols) : "cols", "]"));
      }
      cols = table.dim(1);
      if (ids.defined() && ids.dtype() != DType::kI64 && ids.dtype() != DType::kI32) {
        return absl::InvalidArgumentError(
            absl::StrCat("EmbedLayerNorm: ids ", k, " are ", ids.TypeString(), ", not i32/i64"));
      }
    }
    for (int k = 0; k < 2; ++k) {
      if (!Present(inputs, 2 * n_ + k)) continue;
      const Tensor& p = inputs[2 * n_ + k];
      if (p.dtype() != DType::kF32 || p.num_elements() != cols) {
        return absl::InvalidArgumentError(
            absl::StrCat("EmbedLayerNorm: ", k == 0 ? "gamma" : "beta", " is ", p.TypeString(),
                         ", expected f32[", cols, "]"));
      }
    }
    return absl::OkStatus();
  }

  // Broadcast of the ids' shapes, then the row length.
  absl::StatusOr<vm::Shape> OutShape(absl::Span<const Tensor> inputs) const {
    std::vector<vm::Shape> ids;
    for (int k = 0; k < n_; ++k) {
      if (Present(inputs, 2 * k + 1)) ids.push_back(inputs[2 * k + 1].shape());
    }
    if (ids.empty()) return absl::InvalidArgumentError("EmbedLayerNorm: no ids shape the output");
    absl::StatusOr<vm::Shape> lead = BroadcastShapes(ids);
    if (!lead.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("EmbedLayerNorm: ids do not broadcast: ", lead.status().message()));
    }
    vm::Shape out = *std::move(lead);
    out.push_back(inputs[0].dim(1));
    return out;
  }

  const int n_;
  const double epsilon_;
};

using Factory = absl::StatusOr<std::unique_ptr<Kernel>>;

}  // namespace

void RegisterNormalizationKernels(KernelRegistry& registry) {
  const std::pair<const char*, SoftmaxKind> softmaxes[] = {
      {"Softmax", SoftmaxKind::kSoftmax},
      {"LogSoftmax", SoftmaxKind::kLogSoftmax},
      {"Hardmax", SoftmaxKind::kHardmax},
  };
  for (const auto& [name, kind] : softmaxes) {
    const std::string op = name;
    registry.Register(op, DeviceType::kCPU, [op, kind = kind](const Attributes& attrs) -> Factory {
      return std::make_unique<SoftmaxKernel>(op, kind, attrs.GetOr<int64_t>("axis", -1));
    });
  }
  registry.Register("LayerNormalization", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    return std::make_unique<LayerNormKernel>("LayerNormalization", false,
                                             attrs.GetOr<int64_t>("axis", -1),
                                             attrs.GetOr<double>("epsilon", 1e-5));
  });
  registry.Register("EmbedLayerNorm", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    const int64_t n = attrs.GetOr<int64_t>("embeddings", 0);
    if (n < 1 || n > 16) {
      return absl::InvalidArgumentError(
          absl::StrCat("EmbedLayerNorm: attribute embeddings must be 1 to 16, got ", n));
    }
    return std::make_unique<EmbedLayerNormKernel>(static_cast<int>(n),
                                                  attrs.GetOr<double>("epsilon", 1e-5));
  });
  registry.Register("RMSNormalization", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    return std::make_unique<LayerNormKernel>("RMSNormalization", true,
                                             attrs.GetOr<int64_t>("axis", -1),
                                             attrs.GetOr<double>("epsilon", 1e-5));
  });
  registry.Register("BatchNormalization", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    const int64_t training = attrs.GetOr<int64_t>("training_mode", 0);
    if (training != 0 && training != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("BatchNormalization: training_mode must be 0 or 1, got ", training));
    }
    return std::make_unique<ChannelNormKernel>("BatchNormalization", ChannelNormKind::kBatch,
                                               attrs.GetOr<double>("epsilon", 1e-5), 0,
                                               training == 1, attrs.GetOr<double>("momentum", 0.9));
  });
  registry.Register(
      "InstanceNormalization", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
        return std::make_unique<ChannelNormKernel>("InstanceNormalization",
                                                   ChannelNormKind::kInstance,
                                                   attrs.GetOr<double>("epsilon", 1e-5), 0);
      });
  registry.Register("GroupNormalization", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    NIMBLE_ASSIGN_OR_RETURN(int64_t groups, attrs.Get<int64_t>("num_groups"));
    if (groups <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("GroupNormalization: num_groups must be positive, got ", groups));
    }
    return std::make_unique<ChannelNormKernel>("GroupNormalization", ChannelNormKind::kGroup,
                                               attrs.GetOr<double>("epsilon", 1e-5), groups);
  });
  registry.Register("LpNormalization", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    const int64_t p = attrs.GetOr<int64_t>("p", 2);
    if (p != 1 && p != 2) {
      return absl::InvalidArgumentError(absl::StrCat("LpNormalization: p must be 1 or 2, got ", p));
    }
    return std::make_unique<LpNormKernel>(attrs.GetOr<int64_t>("axis", -1), p);
  });
  registry.Register(
      "MeanVarianceNormalization", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
        return std::make_unique<MvnKernel>(attrs.GetOr<std::vector<int64_t>>("axes", {0, 2, 3}));
      });
}

}  // namespace nimble::vm::cpu
