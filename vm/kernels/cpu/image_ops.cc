// Image and geometry ops: Resize, Upsample, GridSample, CenterCropPad, Col2Im, AffineGrid,
// RoiAlign, DeformConv.
//
// They follow the ONNX reference implementation's arithmetic: values are gathered into double
// (f16/bf16/f32/ints alike), interpolated in double and cast back to the output dtype (ints
// truncate toward zero like numpy's astype). Resize is separable: one pass per resized axis,
// innermost axis first (the reference nests its 1-D interpolations the same way), each output
// coordinate reading a small table of (input index, weight) taps.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vm/kernels/cpu/cpu_kernels.h"
#include "vm/kernels/cpu/elementwise_internal.h"

namespace nimble::vm::cpu {
namespace {

using Factory = absl::StatusOr<std::unique_ptr<Kernel>>;
using Ints = std::vector<int64_t>;

// ------------------------------------------------------------------------------------------
// Dtype plumbing.

// Whether `t` is given: defined and not empty (models pass empty tensors for unused inputs).
bool Given(absl::Span<const Tensor> inputs, size_t i) {
  return i < inputs.size() && inputs[i].defined() && inputs[i].num_elements() > 0;
}

// A numeric tensor's values as double.
absl::StatusOr<std::vector<double>> ToDoubles(absl::string_view op, absl::string_view what,
                                              const Tensor& t) {
  std::vector<double> out(t.num_elements());
  if (IsHalf(t.dtype())) {
    NIMBLE_ASSIGN_OR_RETURN(Tensor f, CastTo(t, DType::kF32, op));
    std::copy_n(f.data<float>(), out.size(), out.begin());
    return out;
  }
  absl::Status s = VisitDType<kNumeric>(t.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* p = t.data<T>();
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<double>(p[i]);
    return absl::OkStatus();
  });
  if (!s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", what, " must be numeric, got ", DTypeName(t.dtype())));
  }
  return out;
}

// Writes `values` into `out` (same element count): floats round, ints truncate toward zero
// (saturating, NaN -> 0).
absl::Status FromDoubles(absl::string_view op, const std::vector<double>& values, Tensor& out) {
  const int64_t n = out.num_elements();
  if (static_cast<int64_t>(values.size()) != n) {
    return absl::InternalError(absl::StrCat(op, ": output size mismatch"));
  }
  if (IsHalf(out.dtype())) {
    NIMBLE_ASSIGN_OR_RETURN(Tensor f, Tensor::Empty(DType::kF32, out.shape()));
    for (int64_t i = 0; i < n; ++i) f.data<float>()[i] = static_cast<float>(values[i]);
    return CastInto(f, out, op);
  }
  absl::Status s = VisitDType<kNumeric>(out.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* p = out.data<T>();
    if constexpr (std::is_floating_point_v<T>) {
      for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(values[i]);
    } else {
      constexpr double lo = static_cast<double>(std::numeric_limits<T>::min());
      constexpr double hi = static_cast<double>(std::numeric_limits<T>::max());
      for (int64_t i = 0; i < n; ++i) {
        const double v = std::trunc(values[i]);
        p[i] = std::isnan(v)
                   ? T(0)
                   : (v <= lo ? std::numeric_limits<T>::min()
                              : (v >= hi ? std::numeric_limits<T>::max() : static_cast<T>(v)));
      }
    }
    return absl::OkStatus();
  });
  if (!s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": unsupported output dtype ", DTypeName(out.dtype())));
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------------------------------------
// Resize(X, roi?, scales?, sizes?) (opset 11+), Resize(X, scales) (opset 10) and
// Upsample(X, scales?) (scales as attribute before opset 9).

enum class ResizeMode { kNearest, kLinear, kCubic };
enum class CoordMode {
  kHalfPixel,
  kHalfPixelSymmetric,
  kPytorchHalfPixel,
  kAlignCorners,
  kAsymmetric,
  kTfCropAndResize,
  kTfHalfPixelForNn,
};
// kSimple is Upsample's and opset-10 Resize's rounding: floor when upsampling, ceil when
// downsampling.
enum class NearestMode { kRoundPreferFloor, kRoundPreferCeil, kFloor, kCeil, kSimple };
enum class AspectPolicy { kStretch, kNotLarger, kNotSmaller };

struct ResizeOptions {
  ResizeMode mode = ResizeMode::kNearest;
  CoordMode coord = CoordMode::kHalfPixel;
  NearestMode nearest = NearestMode::kRoundPreferFloor;
  double cubic_a = -0.75;
  bool exclude_outside = false;
  double extrapolation = 0.0;
  bool antialias = false;
  std::optional<Ints> axes;
  AspectPolicy policy = AspectPolicy::kStretch;
  bool upsample = false;            // the Upsample op (X, scales) or scales attribute
  std::vector<double> attr_scales;  // Upsample-7 scales attribute
};

// Per-axis resize geometry.
struct AxisPlan {
  int64_t in = 0, out = 0;
  double scale = 1.0;      // scale factor used by the coordinate transform and antialias
  double out_width = 0.0;  // scale * in as the reference computes it (float for scales)
  float roi_start = 0.0f, roi_end = 1.0f;
};

// Taps of one axis: for each output coordinate, n (index, weight) pairs or "extrapolate".
struct AxisTaps {
  int n = 0;
  std::vector<int64_t> index;
  std::vector<double> weight;
  std::vector<char> extrapolate;
};

double CubicWeight(double x, double a) {
  x = std::abs(x);
  const double x2 = x * x, x3 = x2 * x;
  if (x <= 1) return (a + 2) * x3 - (a + 3) * x2 + 1;
  if (x < 2) return a * x3 - 5 * a * x2 + 8 * a * x - 4 * a;
  return 0.0;
}

class ResizeKernel final : public Kernel {
 public:
  explicit ResizeKernel(ResizeOptions opts)
      : opts_(std::move(opts)), op_(opts_.upsample ? "Upsample" : "Resize") {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op_, inputs, 1, 4, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(op_, inputs, 1));
    const Tensor& x = inputs[0];
    NIMBLE_ASSIGN_OR_RETURN(std::vector<AxisPlan> plan, Plan(inputs));
    Shape out_shape;
    for (const AxisPlan& p : plan) out_shape.push_back(p.out);
    NIMBLE_RETURN_IF_ERROR(CheckOutput(op_, outputs[0], x.dtype(), out_shape));
    if (outputs[0].num_elements() == 0) return absl::OkStatus();
    const bool legacy = opts_.upsample || inputs.size() == 2;
    if (opts_.mode == ResizeMode::kNearest && (legacy || !opts_.exclude_outside) &&
        x.dtype() != DType::kString) {
      NIMBLE_ASSIGN_OR_RETURN(bool done, NearestGather(ctx, x, plan, legacy, outputs[0]));
      if (done) return absl::OkStatus();
    }
    NIMBLE_ASSIGN_OR_RETURN(std::vector<double> cur, ToDoubles(op_, "X", x));
    Shape cur_shape = x.shape();
    // Innermost axis first; with an axes attribute the reference nests in axes order.
    std::vector<int> order;
    if (opts_.axes && !legacy) {
      for (int64_t a : *opts_.axes) order.push_back(static_cast<int>(a < 0 ? a + x.rank() : a));
    } else {
      for (int a = 0; a < x.rank(); ++a) order.push_back(a);
    }
    for (auto it = order.rbegin(); it != order.rend(); ++it) {
      const int a = *it;
      NIMBLE_ASSIGN_OR_RETURN(AxisTaps taps, Taps(plan[a], legacy));
      if (IsIdentity(plan[a], taps)) continue;
      int64_t outer = 1, inner = 1;
      for (int i = 0; i < a; ++i) outer *= cur_shape[i];
      for (int i = a + 1; i < x.rank(); ++i) inner *= cur_shape[i];
      const int64_t in_a = plan[a].in, out_a = plan[a].out;
      std::vector<double> next(static_cast<size_t>(outer * out_a * inner));
      const int n = taps.n;
      const double extrap = opts_.extrapolation;
      ParallelFor(ctx, outer * out_a, std::max<int64_t>(1, 4096 / std::max<int64_t>(inner, 1)),
                  [&](int64_t begin, int64_t end) {
                    for (int64_t row = begin; row < end; ++row) {
                      const int64_t o = row % out_a, b = row / out_a;
                      double* dst = next.data() + row * inner;
                      if (taps.extrapolate[o]) {
                        std::fill(dst, dst + inner, extrap);
                        continue;
                      }
                      std::fill(dst, dst + inner, 0.0);
                      for (int k = 0; k < n; ++k) {
                        const double w = taps.weight[o * n + k];
                        if (w == 0.0) continue;
                        const double* src = cur.data() + (b * in_a + taps.index[o * n + k]) * inner;
                        for (int64_t i = 0; i < inner; ++i) dst[i] += w * src[i];
                      }
                    }
                  });
      cur = std::move(next);
      cur_shape[a] = out_a;
    }
    return FromDoubles(op_, cur, outputs[0]);
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.empty() || !inputs[0].defined() || output_shapes.size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(op_, ": expected X and one output"));
    }
    NIMBLE_ASSIGN_OR_RETURN(std::vector<AxisPlan> plan, Plan(inputs));
    Shape s;
    for (const AxisPlan& p : plan) s.push_back(p.out);
    output_shapes[0] = s;
    return absl::OkStatus();
  }

 private:
  // Nearest resize as a gather in the element type (exact for every dtype, and the common
  // case in real models). Returns false when some output must be extrapolated.
  absl::StatusOr<bool> NearestGather(const KernelContext& ctx, const Tensor& x,
                                     const std::vector<AxisPlan>& plan, bool legacy,
                                     Tensor& y) const {
    const int r = x.rank();
    if (r == 0) {
      std::memcpy(y.raw_data(), x.raw_data(), DTypeSize(x.dtype()));
      return true;
    }
    // Per axis: the input element offset of each output coordinate.
    std::vector<std::vector<int64_t>> src(r);
    int64_t stride = 1;
    for (int a = r - 1; a >= 0; --a) {
      NIMBLE_ASSIGN_OR_RETURN(AxisTaps taps, Taps(plan[a], legacy));
      src[a].resize(plan[a].out);
      for (int64_t o = 0; o < plan[a].out; ++o) {
        if (taps.extrapolate[o]) return false;
        int64_t pick = -1;
        for (int k = 0; k < taps.n; ++k) {
          if (taps.weight[o * taps.n + k] != 0.0) pick = taps.index[o * taps.n + k];
        }
        if (pick < 0) return false;
        src[a][o] = pick * stride;
      }
      stride *= plan[a].in;
    }
    const int64_t inner = plan[r - 1].out;
    const int64_t rows = y.num_elements() / inner;
    const size_t elem = DTypeSize(x.dtype());
    const char* in = static_cast<const char*>(x.raw_data());
    char* out = static_cast<char*>(y.raw_data());
    const std::vector<int64_t>& last = src[r - 1];
    ParallelFor(ctx, rows, std::max<int64_t>(1, 16384 / inner), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        int64_t base = 0;
        for (int64_t rem = row, a = r - 2; a >= 0; --a) {
          base += src[a][rem % plan[a].out];
          rem /= plan[a].out;
        }
        char* dst = out + row * inner * elem;
        const char* from = in + base * elem;
        switch (elem) {
          case 1:
            for (int64_t i = 0; i < inner; ++i) dst[i] = from[last[i]];
            break;
          case 2:
            for (int64_t i = 0; i < inner; ++i) std::memcpy(dst + 2 * i, from + 2 * last[i], 2);
            break;
          case 4:
            for (int64_t i = 0; i < inner; ++i) std::memcpy(dst + 4 * i, from + 4 * last[i], 4);
            break;
          default:
            for (int64_t i = 0; i < inner; ++i) {
              std::memcpy(dst + elem * i, from + elem * last[i], elem);
            }
            break;
        }
      }
    });
    return true;
  }

  // Output sizes, scale factors and roi per axis of X.
  absl::StatusOr<std::vector<AxisPlan>> Plan(absl::Span<const Tensor> inputs) const {
    const Tensor& x = inputs[0];
    const int r = x.rank();
    std::vector<AxisPlan> plan(r);
    for (int i = 0; i < r; ++i) {
      plan[i].in = plan[i].out = x.dim(i);
      plan[i].out_width = static_cast<double>(x.dim(i));
    }
    // Opset-10 Resize and Upsample take (X, scales) over every axis.
    const bool legacy = opts_.upsample || inputs.size() == 2;
    std::vector<int> axes;
    if (opts_.axes && !legacy) {
      for (int64_t a : *opts_.axes) {
        NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(op_, a, std::max(r, 1)));
        if (std::find(axes.begin(), axes.end(), axis) != axes.end()) {
          return absl::InvalidArgumentError(absl::StrCat(op_, ": axis ", a, " is repeated"));
        }
        axes.push_back(axis);
      }
    } else {
      for (int a = 0; a < r; ++a) axes.push_back(a);
    }
    const size_t na = axes.size();
    const Tensor* scales_t = nullptr;
    const Tensor* sizes_t = nullptr;
    if (legacy) {
      if (Given(inputs, 1)) scales_t = &inputs[1];
    } else {
      if (Given(inputs, 2)) scales_t = &inputs[2];
      if (Given(inputs, 3)) sizes_t = &inputs[3];
      if (Given(inputs, 1) && opts_.coord == CoordMode::kTfCropAndResize) {
        NIMBLE_ASSIGN_OR_RETURN(std::vector<double> roi, ToDoubles(op_, "roi", inputs[1]));
        if (roi.size() != 2 * na) {
          return absl::InvalidArgumentError(
              absl::StrCat(op_, ": roi has ", roi.size(), " values, expected ", 2 * na));
        }
        for (size_t j = 0; j < na; ++j) {
          plan[axes[j]].roi_start = static_cast<float>(roi[j]);
          plan[axes[j]].roi_end = static_cast<float>(roi[j + na]);
        }
      } else if (opts_.coord == CoordMode::kTfCropAndResize) {
        return absl::InvalidArgumentError(
            absl::StrCat(op_, ": tf_crop_and_resize needs the roi input"));
      }
    }
    if (sizes_t != nullptr) {
      NIMBLE_ASSIGN_OR_RETURN(Ints sizes, IntList(op_, "sizes", *sizes_t));
      if (sizes.size() != na) {
        return absl::InvalidArgumentError(absl::StrCat(
            op_, ": sizes has ", sizes.size(), " values for ", na, " axes of ", x.TypeString()));
      }
      for (size_t j = 0; j < na; ++j) {
        const int64_t in = x.dim(axes[j]);
        if (sizes[j] < 0 || (in == 0 && sizes[j] != 0)) {
          return absl::InvalidArgumentError(absl::StrCat(
              op_, ": size ", sizes[j], " is invalid for axis ", axes[j], " of ", x.TypeString()));
        }
      }
      if (opts_.policy == AspectPolicy::kStretch) {
        for (size_t j = 0; j < na; ++j) {
          AxisPlan& p = plan[axes[j]];
          p.out = sizes[j];
          p.scale = p.in == 0 ? 1.0 : static_cast<double>(sizes[j]) / static_cast<double>(p.in);
          p.out_width = p.scale * static_cast<double>(p.in);
        }
      } else {
        std::optional<double> scale;
        for (size_t j = 0; j < na; ++j) {
          const int64_t in = x.dim(axes[j]);
          if (in == 0) continue;
          const double s = static_cast<double>(sizes[j]) / static_cast<double>(in);
          scale = !scale ? s
                         : (opts_.policy == AspectPolicy::kNotLarger ? std::min(*scale, s)
                                                                     : std::max(*scale, s));
        }
        for (size_t j = 0; j < na; ++j) {
          AxisPlan& p = plan[axes[j]];
          if (!scale || p.in == 0) continue;
          p.scale = *scale;
          p.out = static_cast<int64_t>(*scale * static_cast<double>(p.in) + 0.5);
          p.out_width = p.scale * static_cast<double>(p.in);
        }
      }
      return plan;
    }
    std::vector<double> scales;
    bool scales_f32 = true;
    if (scales_t != nullptr) {
      scales_f32 = scales_t->dtype() == DType::kF32;
      NIMBLE_ASSIGN_OR_RETURN(scales, ToDoubles(op_, "scales", *scales_t));
    } else if (opts_.upsample && !opts_.attr_scales.empty()) {
      scales = opts_.attr_scales;
      for (double& s : scales) s = static_cast<double>(static_cast<float>(s));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(op_, ": one of scales and sizes is required"));
    }
    if (scales.size() != na) {
      return absl::InvalidArgumentError(absl::StrCat(
          op_, ": scales has ", scales.size(), " values for ", na, " axes of ", x.TypeString()));
    }
    for (size_t j = 0; j < na; ++j) {
      const double s = scales[j];
      if (!(s > 0) || !std::isfinite(s)) {
        return absl::InvalidArgumentError(
            absl::StrCat(op_, ": scales must be positive and finite, got ", s));
      }
      AxisPlan& p = plan[axes[j]];
      const double out = std::floor(s * static_cast<double>(p.in));
      if (out > static_cast<double>(int64_t{1} << 40)) {
        return absl::InvalidArgumentError(absl::StrCat(op_, ": scale ", s, " is too large"));
      }
      p.out = static_cast<int64_t>(out);
      p.scale = s;
      // The reference multiplies a float32 scale by the int size in float32.
      p.out_width = scales_f32
                        ? static_cast<double>(static_cast<float>(s) * static_cast<float>(p.in))
                        : s * static_cast<double>(p.in);
    }
    return plan;
  }

  // Source coordinate of output coordinate `o`; nullopt to extrapolate.
  std::optional<double> SourceCoord(const AxisPlan& p, int64_t o, bool legacy) const {
    const double xo = static_cast<double>(o);
    const double in = static_cast<double>(p.in);
    if (legacy) return xo / p.scale;
    switch (opts_.coord) {
      case CoordMode::kAlignCorners:
        return p.out_width == 1.0 ? 0.0 : xo * (in - 1) / (p.out_width - 1);
      case CoordMode::kAsymmetric:
        return xo / p.scale;
      case CoordMode::kTfCropAndResize: {
        const double span = static_cast<double>(p.roi_end - p.roi_start);
        double v =
            p.out_width == 1.0 ? span * (in - 1) / 2 : xo * span * (in - 1) / (p.out_width - 1);
        v += static_cast<double>(p.roi_start * static_cast<float>(p.in - 1));
        if (v < 0 || v > in - 1) return std::nullopt;
        return v;
      }
      case CoordMode::kPytorchHalfPixel:
        return p.out_width == 1.0 ? -0.5 : (xo + 0.5) / p.scale - 0.5;
      case CoordMode::kHalfPixel:
        return (xo + 0.5) / p.scale - 0.5;
      case CoordMode::kTfHalfPixelForNn:
        return (xo + 0.5) / p.scale;
      case CoordMode::kHalfPixelSymmetric: {
        const double adjustment = static_cast<double>(p.out) / p.out_width;
        const double offset = in / 2 * (1 - adjustment);
        return offset + (xo + 0.5) / p.scale - 0.5;
      }
    }
    return xo;
  }

  // Coefficients for fractional offset `ratio` in (0, 1].
  std::vector<double> Coeffs(double ratio, double scale, bool legacy) const {
    const bool integer = ratio == 1.0;
    switch (opts_.mode) {
      case ResizeMode::kNearest: {
        if (integer) return {0, 1};
        NearestMode m = legacy ? NearestMode::kSimple : opts_.nearest;
        if (m == NearestMode::kSimple) m = scale < 1 ? NearestMode::kCeil : NearestMode::kFloor;
        switch (m) {
          case NearestMode::kRoundPreferFloor:
            return {ratio <= 0.5 ? 1.0 : 0.0, ratio > 0.5 ? 1.0 : 0.0};
          case NearestMode::kRoundPreferCeil:
            return {ratio < 0.5 ? 1.0 : 0.0, ratio >= 0.5 ? 1.0 : 0.0};
          case NearestMode::kFloor:
            return {1, 0};
          case NearestMode::kCeil:
          case NearestMode::kSimple:
            return {0, 1};
        }
        return {0, 1};
      }
      case ResizeMode::kLinear: {
        if (!opts_.antialias || legacy) return {1 - ratio, ratio};
        const double s = std::min(scale, 1.0);
        const int64_t start = static_cast<int64_t>(std::floor(-1 / s) + 1);
        const int64_t footprint = 2 - 2 * start;
        std::vector<double> c(footprint);
        double sum = 0;
        for (int64_t i = 0; i < footprint; ++i) {
          const double arg = (static_cast<double>(start + i) - ratio) * s;
          c[i] = std::clamp(1 - std::abs(arg), 0.0, 1.0);
          sum += c[i];
        }
        for (double& v : c) v /= sum;
        return c;
      }
      case ResizeMode::kCubic: {
        const double a = opts_.cubic_a;
        if (!opts_.antialias) {
          const double r1 = ratio + 1, q = 1 - ratio, q1 = q + 1;
          return {((a * r1 - 5 * a) * r1 + 8 * a) * r1 - 4 * a,
                  ((a + 2) * ratio - (a + 3)) * ratio * ratio + 1,
                  ((a + 2) * q - (a + 3)) * q * q + 1,
                  ((a * q1 - 5 * a) * q1 + 8 * a) * q1 - 4 * a};
        }
        const double s = std::min(scale, 1.0);
        const int64_t start = static_cast<int64_t>(std::floor(-2 / s) + 1);
        const int64_t count = 2 - 2 * start;
        std::vector<double> c(count);
        double sum = 0;
        for (int64_t i = 0; i < count; ++i) {
          c[i] = CubicWeight(s * (static_cast<double>(start + i) - ratio), a);
          sum += c[i];
        }
        for (double& v : c) v /= sum;
        return c;
      }
    }
    return {0, 1};
  }

  absl::StatusOr<AxisTaps> Taps(const AxisPlan& p, bool legacy) const {
    AxisTaps t;
    // The tap count depends on the scale only.
    t.n = static_cast<int>(Coeffs(0.5, p.scale, legacy).size());
    const int n = t.n;
    t.extrapolate.assign(p.out, 0);
    t.index.assign(static_cast<size_t>(p.out) * n, 0);
    t.weight.assign(static_cast<size_t>(p.out) * n, 0.0);
    // The reference pads the axis by n/2 edge copies and takes the n nearest padded indices.
    const int64_t pad = (n + 1) / 2;
    for (int64_t o = 0; o < p.out; ++o) {
      const std::optional<double> src = SourceCoord(p, o, legacy);
      if (!src) {
        t.extrapolate[o] = 1;
        continue;
      }
      if (std::isnan(*src)) {
        t.extrapolate[o] = 1;
        continue;
      }
      // Only absurd coordinates (from extreme roi values) are clamped: it keeps the index
      // arithmetic in int64 range.
      constexpr double kLimit = 1e15;
      const double xo = std::clamp(*src, -kLimit, kLimit);
      const double fl = std::floor(xo);
      // The left neighbour is strictly below x: ratio is in (0, 1].
      const bool integer = xo == fl;
      const double ratio = integer ? 1.0 : xo - fl;
      const int64_t left = static_cast<int64_t>(fl) - (integer ? 1 : 0);
      std::vector<double> c = Coeffs(ratio, p.scale, legacy);
      if (static_cast<int>(c.size()) != n) {
        return absl::InternalError(absl::StrCat(op_, ": inconsistent tap counts"));
      }
      int64_t start = left - n / 2 + 1;
      start = std::max(start, -pad);
      start = std::min(start, p.in + pad - n);
      if (opts_.exclude_outside && !legacy) {
        double sum = 0;
        for (int k = 0; k < n; ++k) {
          const int64_t idx = start + k;
          if (idx < 0 || idx >= p.in) c[k] = 0;
          sum += c[k];
        }
        for (double& v : c) v /= sum;
      }
      for (int k = 0; k < n; ++k) {
        t.index[o * n + k] = std::clamp<int64_t>(start + k, 0, p.in - 1);
        t.weight[o * n + k] = c[k];
      }
    }
    return t;
  }

  // Whether the axis maps every output coordinate to the same input coordinate with weight 1.
  static bool IsIdentity(const AxisPlan& p, const AxisTaps& t) {
    if (p.in != p.out) return false;
    for (int64_t o = 0; o < p.out; ++o) {
      if (t.extrapolate[o]) return false;
      for (int k = 0; k < t.n; ++k) {
        const double w = t.weight[o * t.n + k];
        if (w == 0.0) continue;
        if (w != 1.0 || t.index[o * t.n + k] != o) return false;
      }
    }
    return true;
  }

  const ResizeOptions opts_;
  const std::string op_;
};

absl::StatusOr<ResizeOptions> ParseResizeOptions(const Attributes& attrs, bool upsample) {
  ResizeOptions o;
  const absl::string_view op = upsample ? "Upsample" : "Resize";
  o.upsample = upsample;
  const std::string mode = attrs.GetOr<std::string>("mode", "nearest");
  if (mode == "nearest") {
    o.mode = ResizeMode::kNearest;
  } else if (mode == "linear" || mode == "bilinear" || mode == "trilinear") {
    o.mode = ResizeMode::kLinear;
  } else if (mode == "cubic" && !upsample) {
    o.mode = ResizeMode::kCubic;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(op, ": unsupported mode '", mode, "'"));
  }
  if (upsample) {
    o.attr_scales = attrs.GetOr<std::vector<double>>("scales", {});
    return o;
  }
  const std::string coord =
      attrs.GetOr<std::string>("coordinate_transformation_mode", "half_pixel");
  if (coord == "half_pixel") {
    o.coord = CoordMode::kHalfPixel;
  } else if (coord == "half_pixel_symmetric") {
    o.coord = CoordMode::kHalfPixelSymmetric;
  } else if (coord == "pytorch_half_pixel") {
    o.coord = CoordMode::kPytorchHalfPixel;
  } else if (coord == "align_corners") {
    o.coord = CoordMode::kAlignCorners;
  } else if (coord == "asymmetric") {
    o.coord = CoordMode::kAsymmetric;
  } else if (coord == "tf_half_pixel_for_nn") {  // opset 11 only
    o.coord = CoordMode::kTfHalfPixelForNn;
  } else if (coord == "tf_crop_and_resize") {
    o.coord = CoordMode::kTfCropAndResize;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("Resize: unknown coordinate_transformation_mode '", coord, "'"));
  }
  const std::string nearest = attrs.GetOr<std::string>("nearest_mode", "round_prefer_floor");
  if (nearest == "round_prefer_floor") {
    o.nearest = NearestMode::kRoundPreferFloor;
  } else if (nearest == "round_prefer_ceil") {
    o.nearest = NearestMode::kRoundPreferCeil;
  } else if (nearest == "floor") {
    o.nearest = NearestMode::kFloor;
  } else if (nearest == "ceil") {
    o.nearest = NearestMode::kCeil;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("Resize: unknown nearest_mode '", nearest, "'"));
  }
  const std::string policy = attrs.GetOr<std::string>("keep_aspect_ratio_policy", "stretch");
  if (policy == "stretch") {
    o.policy = AspectPolicy::kStretch;
  } else if (policy == "not_larger") {
    o.policy = AspectPolicy::kNotLarger;
  } else if (policy == "not_smaller") {
    o.policy = AspectPolicy::kNotSmaller;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("Resize: unknown keep_aspect_ratio_policy '", policy, "'"));
  }
  o.cubic_a = attrs.GetOr<double>("cubic_coeff_a", -0.75);
  // The reference computes with the float32 attribute value.
  o.cubic_a = static_cast<double>(static_cast<float>(o.cubic_a));
  o.exclude_outside = attrs.GetOr<int64_t>("exclude_outside", 0) != 0;
  o.extrapolation =
      static_cast<double>(static_cast<float>(attrs.GetOr<double>("extrapolation_value", 0.0)));
  o.antialias = attrs.GetOr<int64_t>("antialias", 0) != 0;
  if (o.antialias && o.mode == ResizeMode::kNearest) {
    return absl::InvalidArgumentError("Resize: antialias is not supported with mode 'nearest'");
  }
  if (attrs.Has("axes")) o.axes = attrs.GetOr<Ints>("axes", {});
  return o;
}

// ------------------------------------------------------------------------------------------
// GridSample(X [N, C, D1..Dr], grid [N, O1..Or, r]) -> [N, C, O1..Or]. Grid coordinates run
// innermost-axis first (x, y, z); coordinates are denormalised in float like the reference.

enum class GridMode { kNearest, kLinear, kCubic };
enum class GridPadding { kZeros, kBorder, kReflection };

// Reflects x into [lo, hi] by its nearest border, repeatedly.
double GridReflect(double x, double lo, double hi) {
  const double range = hi - lo;
  if (!(range > 0)) return lo;
  if (x < lo) {
    const double dx = lo - x;
    const double n = std::trunc(dx / range);
    const double r = dx - n * range;
    return std::fmod(n, 2.0) == 0 ? lo + r : hi - r;
  }
  if (x > hi) {
    const double dx = x - hi;
    const double n = std::trunc(dx / range);
    const double r = dx - n * range;
    return std::fmod(n, 2.0) == 0 ? hi - r : lo + r;
  }
  return x;
}

class GridSampleKernel final : public Kernel {
 public:
  GridSampleKernel(GridMode mode, GridPadding padding, bool align_corners)
      : mode_(mode), padding_(padding), align_corners_(align_corners) {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    constexpr char kOp[] = "GridSample";
    NIMBLE_RETURN_IF_ERROR(CheckArity(kOp, inputs, 2, 2, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(kOp, inputs, 2));
    Shape out_shape;
    NIMBLE_RETURN_IF_ERROR(OutputShapes(inputs, absl::MakeSpan(&out_shape, 1)));
    const Tensor& x = inputs[0];
    NIMBLE_RETURN_IF_ERROR(CheckOutput(kOp, outputs[0], x.dtype(), out_shape));
    const int r = x.rank() - 2;
    const int64_t batch = x.dim(0), channels = x.dim(1);
    std::vector<int64_t> dims(r);
    int64_t plane = 1, locs = 1;
    for (int i = 0; i < r; ++i) dims[i] = x.dim(i + 2), plane *= dims[i];
    for (int i = 0; i < r; ++i) locs *= out_shape[i + 2];
    if (plane == 0 && locs > 0 && channels > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(kOp, ": cannot sample the empty input ", x.TypeString()));
    }
    NIMBLE_ASSIGN_OR_RETURN(std::vector<double> xv, ToDoubles(kOp, "X", x));
    NIMBLE_ASSIGN_OR_RETURN(std::vector<double> gv, ToDoubles(kOp, "grid", inputs[1]));
    std::vector<double> out(static_cast<size_t>(outputs[0].num_elements()));
    if (out.empty()) return FromDoubles(kOp, out, outputs[0]);
    const int k = mode_ == GridMode::kNearest ? 1 : (mode_ == GridMode::kLinear ? 2 : 4);
    // Element strides of the spatial axes within a plane.
    std::vector<int64_t> stride(r, 1);
    for (int i = r - 2; i >= 0; --i) stride[i] = stride[i + 1] * dims[i + 1];
    int64_t combos = 1;
    for (int i = 0; i < r; ++i) combos *= k;
    ParallelFor(ctx, batch * locs, std::max<int64_t>(1, 2048 / std::max<int64_t>(channels, 1)),
                [&](int64_t begin, int64_t end) {
                  std::vector<int64_t> tap_off(static_cast<size_t>(r) * k);
                  std::vector<double> tap_w(static_cast<size_t>(r) * k);
                  std::vector<int> digit(r);
                  for (int64_t item = begin; item < end; ++item) {
                    const int64_t n = item / locs, loc = item % locs;
                    const double* g = gv.data() + item * r;
                    for (int i = 0; i < r; ++i) {
                      Taps(static_cast<float>(g[r - 1 - i]), dims[i], k, &tap_off[i * k],
                           &tap_w[i * k]);
                      for (int j = 0; j < k; ++j) {
                        if (tap_off[i * k + j] >= 0) tap_off[i * k + j] *= stride[i];
                      }
                    }
                    for (int64_t c = 0; c < channels; ++c) {
                      const double* src = xv.data() + (n * channels + c) * plane;
                      double acc = 0;
                      std::fill(digit.begin(), digit.end(), 0);
                      for (int64_t m = 0; m < combos; ++m) {
                        double w = 1;
                        int64_t off = 0;
                        bool zero = false;
                        for (int i = 0; i < r; ++i) {
                          const int64_t o = tap_off[i * k + digit[i]];
                          if (o < 0) {
                            zero = true;
                            break;
                          }
                          off += o;
                          w *= tap_w[i * k + digit[i]];
                        }
                        if (!zero) acc += w * src[off];
                        for (int i = r - 1; i >= 0; --i) {
                          if (++digit[i] < k) break;
                          digit[i] = 0;
                        }
                      }
                      out[(n * channels + c) * locs + loc] = acc;
                    }
                  }
                });
    return FromDoubles(kOp, out, outputs[0]);
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.size() != 2 || !inputs[0].defined() || !inputs[1].defined() ||
        output_shapes.size() != 1) {
      return absl::InvalidArgumentError("GridSample: expected X, grid and one output");
    }
    const Tensor& x = inputs[0];
    const Tensor& grid = inputs[1];
    const int r = x.rank() - 2;
    if (r < 1 || grid.rank() != x.rank() || grid.dim(0) != x.dim(0) ||
        grid.dim(grid.rank() - 1) != r) {
      return absl::InvalidArgumentError(absl::StrCat("GridSample: X ", x.TypeString(),
                                                     " needs grid [N, ..., ", r, "], got ",
                                                     grid.TypeString()));
    }
    Shape s = {x.dim(0), x.dim(1)};
    for (int i = 1; i <= r; ++i) s.push_back(grid.dim(i));
    output_shapes[0] = s;
    return absl::OkStatus();
  }

 private:
  // Input index of `i` along an axis of size d after padding; -1 reads zero.
  int64_t PixelIndex(int64_t i, int64_t d, double lo, double hi) const {
    switch (padding_) {
      case GridPadding::kZeros:
        return i >= 0 && i < d ? i : -1;
      case GridPadding::kBorder:
        return std::clamp<int64_t>(i, 0, d - 1);
      case GridPadding::kReflection:
        return std::clamp<int64_t>(
            static_cast<int64_t>(GridReflect(static_cast<double>(i), lo, hi)), 0, d - 1);
    }
    return -1;
  }

  // The k (offset, weight) taps of normalised coordinate `gn` along an axis of size d.
  // Nearest rounds half to even (the suite's expected data does so for 3-D samples too).
  void Taps(float gn, int64_t d, int k, int64_t* off, double* w) const {
    const float df = static_cast<float>(d);
    float xf = align_corners_ ? (gn + 1.0f) / 2.0f * (df - 1.0f) : ((gn + 1.0f) * df - 1.0f) / 2.0f;
    const double lo = align_corners_ ? 0.0 : -0.5;
    const double hi = align_corners_ ? static_cast<double>(d) - 1.0 : static_cast<double>(d) - 0.5;
    if (mode_ == GridMode::kNearest) xf = std::nearbyint(xf);
    if (xf < lo || xf > hi) {
      if (padding_ == GridPadding::kBorder) {
        xf = std::clamp(xf, 0.0f, df - 1.0f);
      } else if (padding_ == GridPadding::kReflection) {
        xf = static_cast<float>(GridReflect(xf, lo, hi));
      }
    }
    if (!std::isfinite(xf)) {
      for (int j = 0; j < k; ++j) off[j] = -1, w[j] = 0.0;
      return;
    }
    // Far outside the image every tap is outside too (only zeros padding gets here).
    xf = std::clamp(xf, -(df + 8.0f), df + 8.0f);
    if (mode_ == GridMode::kNearest) {
      off[0] = PixelIndex(static_cast<int64_t>(xf), d, lo, hi);
      w[0] = 1.0;
      return;
    }
    const float x0f = std::floor(xf);
    const int64_t x0 = static_cast<int64_t>(x0f);
    const float t = xf - x0f;
    if (mode_ == GridMode::kLinear) {
      off[0] = PixelIndex(x0, d, lo, hi);
      off[1] = PixelIndex(x0 + 1, d, lo, hi);
      w[0] = 1.0f - t;
      w[1] = t;
      return;
    }
    constexpr float a = -0.75f;
    const float t1 = t + 1, q = 1 - t, q1 = 2 - t;
    w[0] = ((a * t1 - 5 * a) * t1 + 8 * a) * t1 - 4 * a;
    w[1] = ((a + 2) * t - (a + 3)) * t * t + 1;
    w[2] = ((a + 2) * q - (a + 3)) * q * q + 1;
    w[3] = ((a * q1 - 5 * a) * q1 + 8 * a) * q1 - 4 * a;
    for (int j = 0; j < 4; ++j) off[j] = PixelIndex(x0 - 1 + j, d, lo, hi);
  }

  const GridMode mode_;
  const GridPadding padding_;
  const bool align_corners_;
};

// ------------------------------------------------------------------------------------------
// CenterCropPad(input, shape): centre crops or zero-pads the given axes to `shape`.

class CenterCropPadKernel final : public Kernel {
 public:
  explicit CenterCropPadKernel(std::optional<Ints> axes) : axes_(std::move(axes)) {}

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    constexpr char kOp[] = "CenterCropPad";
    NIMBLE_RETURN_IF_ERROR(CheckArity(kOp, inputs, 2, 2, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(kOp, inputs, 2));
    const Tensor& x = inputs[0];
    Shape out_shape;
    NIMBLE_RETURN_IF_ERROR(OutputShapes(inputs, absl::MakeSpan(&out_shape, 1)));
    NIMBLE_RETURN_IF_ERROR(CheckOutput(kOp, outputs[0], x.dtype(), out_shape));
    if (x.dtype() == DType::kString) {
      return absl::InvalidArgumentError("CenterCropPad: string tensors are not supported");
    }
    Tensor& y = outputs[0];
    const size_t elem = DTypeSize(x.dtype());
    std::memset(y.raw_data(), 0, y.nbytes());
    if (y.num_elements() == 0 || x.num_elements() == 0) return absl::OkStatus();
    const int r = x.rank();
    // Per axis: the copied extent and its start in the input and in the output.
    std::vector<int64_t> len(r), in_start(r), out_start(r);
    for (int i = 0; i < r; ++i) {
      const int64_t d = x.dim(i), s = out_shape[i];
      len[i] = std::min(d, s);
      in_start[i] = d > s ? (d - s) / 2 : 0;
      out_start[i] = s > d ? (s - d) / 2 : 0;
    }
    std::vector<int64_t> in_stride(r, 1), out_stride(r, 1);
    for (int i = r - 2; i >= 0; --i) {
      in_stride[i] = in_stride[i + 1] * x.dim(i + 1);
      out_stride[i] = out_stride[i + 1] * out_shape[i + 1];
    }
    const char* src = static_cast<const char*>(x.raw_data());
    char* dst = static_cast<char*>(y.raw_data());
    if (r == 0) {
      std::memcpy(dst, src, elem);
      return absl::OkStatus();
    }
    // Copy rows of the last axis; odometer over the others.
    int64_t rows = 1;
    for (int i = 0; i < r - 1; ++i) rows *= len[i];
    std::vector<int64_t> idx(r, 0);
    for (int64_t row = 0; row < rows; ++row) {
      int64_t si = in_start[r - 1], di = out_start[r - 1];
      for (int i = 0; i < r - 1; ++i) {
        si += (in_start[i] + idx[i]) * in_stride[i];
        di += (out_start[i] + idx[i]) * out_stride[i];
      }
      std::memcpy(dst + di * elem, src + si * elem, static_cast<size_t>(len[r - 1]) * elem);
      for (int i = r - 2; i >= 0; --i) {
        if (++idx[i] < len[i]) break;
        idx[i] = 0;
      }
    }
    return absl::OkStatus();
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    constexpr char kOp[] = "CenterCropPad";
    if (inputs.size() != 2 || !inputs[0].defined() || !inputs[1].defined() ||
        output_shapes.size() != 1) {
      return absl::InvalidArgumentError("CenterCropPad: expected input, shape and one output");
    }
    const Tensor& x = inputs[0];
    NIMBLE_ASSIGN_OR_RETURN(Ints shape, IntList(kOp, "shape", inputs[1]));
    std::vector<int> axes;
    if (axes_) {
      for (int64_t a : *axes_) {
        NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(kOp, a, std::max(x.rank(), 1)));
        if (std::find(axes.begin(), axes.end(), axis) != axes.end()) {
          return absl::InvalidArgumentError(absl::StrCat(kOp, ": axis ", a, " is repeated"));
        }
        axes.push_back(axis);
      }
    } else {
      for (int a = 0; a < x.rank(); ++a) axes.push_back(a);
    }
    if (shape.size() != axes.size()) {
      return absl::InvalidArgumentError(absl::StrCat(kOp, ": shape has ", shape.size(),
                                                     " values for ", axes.size(), " axes of ",
                                                     x.TypeString()));
    }
    Shape out = x.shape();
    for (size_t j = 0; j < axes.size(); ++j) {
      if (shape[j] < 0) {
        return absl::InvalidArgumentError(absl::StrCat(kOp, ": negative target size ", shape[j]));
      }
      out[axes[j]] = shape[j];
    }
    output_shapes[0] = out;
    return absl::OkStatus();
  }

 private:
  const std::optional<Ints> axes_;
};

// ------------------------------------------------------------------------------------------
// Col2Im(input [N, C * prod(block), L], image_shape, block_shape) -> [N, C, image...]: sums
// each column block back into the image it was taken from.

class Col2ImKernel final : public Kernel {
 public:
  Col2ImKernel(Ints dilations, Ints pads, Ints strides)
      : dilations_(std::move(dilations)), pads_(std::move(pads)), strides_(std::move(strides)) {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    constexpr char kOp[] = "Col2Im";
    NIMBLE_RETURN_IF_ERROR(CheckArity(kOp, inputs, 3, 3, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(kOp, inputs, 3));
    NIMBLE_ASSIGN_OR_RETURN(Geometry g, Geom(inputs));
    const Tensor& x = inputs[0];
    NIMBLE_RETURN_IF_ERROR(CheckOutput(kOp, outputs[0], x.dtype(), g.out_shape));
    NIMBLE_ASSIGN_OR_RETURN(std::vector<double> xv, ToDoubles(kOp, "input", x));
    const int r = static_cast<int>(g.image.size());
    int64_t image_size = 1, kernel_size = 1;
    for (int i = 0; i < r; ++i) image_size *= g.image[i], kernel_size *= g.block[i];
    const int64_t planes = g.out_shape[0] * g.out_shape[1];
    std::vector<double> out(static_cast<size_t>(planes * image_size), 0.0);
    ParallelFor(ctx, planes, 1, [&](int64_t begin, int64_t end) {
      std::vector<int64_t> koff(r), col(r);
      for (int64_t p = begin; p < end; ++p) {
        double* dst = out.data() + p * image_size;
        const double* src = xv.data() + p * kernel_size * g.length;
        for (int64_t k = 0; k < kernel_size; ++k) {
          for (int64_t rem = k, i = r - 1; i >= 0; --i)
            koff[i] = rem % g.block[i], rem /= g.block[i];
          for (int64_t l = 0; l < g.length; ++l) {
            for (int64_t rem = l, i = r - 1; i >= 0; --i)
              col[i] = rem % g.blocks[i], rem /= g.blocks[i];
            int64_t pos = 0;
            bool inside = true;
            for (int i = 0; i < r && inside; ++i) {
              const int64_t v = col[i] * g.strides[i] - g.pads[i] + koff[i] * g.dilations[i];
              inside = v >= 0 && v < g.image[i];
              pos = pos * g.image[i] + v;
            }
            if (inside) dst[pos] += src[k * g.length + l];
          }
        }
      }
    });
    return FromDoubles(kOp, out, outputs[0]);
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (output_shapes.size() != 1) {
      return absl::InvalidArgumentError("Col2Im: expected one output");
    }
    NIMBLE_ASSIGN_OR_RETURN(Geometry g, Geom(inputs));
    output_shapes[0] = g.out_shape;
    return absl::OkStatus();
  }

 private:
  struct Geometry {
    Ints image, block, blocks, dilations, pads, strides;
    int64_t length = 0;
    Shape out_shape;
  };

  absl::StatusOr<Geometry> Geom(absl::Span<const Tensor> inputs) const {
    constexpr char kOp[] = "Col2Im";
    if (inputs.size() != 3 || !inputs[0].defined() || !inputs[1].defined() ||
        !inputs[2].defined()) {
      return absl::InvalidArgumentError("Col2Im: expected input, image_shape and block_shape");
    }
    const Tensor& x = inputs[0];
    Geometry g;
    NIMBLE_ASSIGN_OR_RETURN(g.image, IntList(kOp, "image_shape", inputs[1]));
    NIMBLE_ASSIGN_OR_RETURN(g.block, IntList(kOp, "block_shape", inputs[2]));
    const size_t r = g.image.size();
    if (r == 0 || g.block.size() != r) {
      return absl::InvalidArgumentError(
          "Col2Im: image_shape and block_shape must have the same non-zero length");
    }
    if ((!dilations_.empty() && dilations_.size() != r) ||
        (!strides_.empty() && strides_.size() != r) || (!pads_.empty() && pads_.size() != 2 * r)) {
      return absl::InvalidArgumentError(
          "Col2Im: dilations, strides or pads do not match image_shape");
    }
    if (x.rank() != 3) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Col2Im: input must be [N, C * prod(block_shape), L], got ", x.TypeString()));
    }
    int64_t kernel_size = 1, length = 1;
    g.pads.assign(r, 0);
    for (size_t i = 0; i < r; ++i) {
      const int64_t d = dilations_.empty() ? 1 : dilations_[i];
      const int64_t s = strides_.empty() ? 1 : strides_[i];
      const int64_t pb = pads_.empty() ? 0 : pads_[i], pe = pads_.empty() ? 0 : pads_[i + r];
      constexpr int64_t kMax = int64_t{1} << 31;
      if (g.image[i] <= 0 || g.block[i] <= 0 || d <= 0 || s <= 0 || pb < 0 || pe < 0 ||
          g.image[i] > kMax || g.block[i] > kMax || d > kMax || s > kMax || pb > kMax ||
          pe > kMax) {
        return absl::InvalidArgumentError(
            "Col2Im: image_shape, block_shape, dilations and strides must be positive (and "
            "pads non-negative), all below 2^31");
      }
      const int64_t span = g.image[i] + pb + pe - (d * (g.block[i] - 1) + 1);
      if (span < 0) {
        return absl::InvalidArgumentError("Col2Im: the block does not fit in the padded image");
      }
      g.blocks.push_back(span / s + 1);
      g.dilations.push_back(d);
      g.strides.push_back(s);
      g.pads[i] = pb;
      if (__builtin_mul_overflow(kernel_size, g.block[i], &kernel_size) ||
          __builtin_mul_overflow(length, g.blocks.back(), &length)) {
        return absl::InvalidArgumentError("Col2Im: block_shape or image_shape is too large");
      }
    }
    if (x.dim(1) % kernel_size != 0 || x.dim(2) != length) {
      return absl::InvalidArgumentError(
          absl::StrCat("Col2Im: input ", x.TypeString(), " needs dim 1 divisible by ", kernel_size,
                       " and dim 2 equal to the number of blocks ", length));
    }
    g.length = length;
    g.out_shape = {x.dim(0), x.dim(1) / kernel_size};
    for (int64_t d : g.image) g.out_shape.push_back(d);
    return g;
  }

  const Ints dilations_, pads_, strides_;
};

// ------------------------------------------------------------------------------------------
// AffineGrid(theta [N, 2, 3] | [N, 3, 4], size [N, C, (D,) H, W]) -> [N, (D,) H, W, 2|3].

class AffineGridKernel final : public Kernel {
 public:
  explicit AffineGridKernel(bool align_corners) : align_corners_(align_corners) {}

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    constexpr char kOp[] = "AffineGrid";
    NIMBLE_RETURN_IF_ERROR(CheckArity(kOp, inputs, 2, 2, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(kOp, inputs, 2));
    Shape out_shape;
    NIMBLE_RETURN_IF_ERROR(OutputShapes(inputs, absl::MakeSpan(&out_shape, 1)));
    const Tensor& theta = inputs[0];
    NIMBLE_RETURN_IF_ERROR(CheckOutput(kOp, outputs[0], theta.dtype(), out_shape));
    NIMBLE_ASSIGN_OR_RETURN(std::vector<double> th, ToDoubles(kOp, "theta", theta));
    const int nd = static_cast<int>(out_shape.back());
    const int64_t batch = out_shape[0];
    // Spatial sizes in (D,) H, W order; coordinates in x, y(, z) order.
    std::vector<int64_t> dims(out_shape.begin() + 1, out_shape.end() - 1);
    std::vector<std::vector<double>> base(nd);
    for (int i = 0; i < nd; ++i) {
      const int64_t d = dims[nd - 1 - i];  // coordinate i runs along axis nd-1-i
      const double dd = static_cast<double>(d);
      for (int64_t k = 0; k < d; ++k) {
        double v;
        if (align_corners_) {
          v = d == 1 ? -1.0 : -1.0 + static_cast<double>(k) * (2.0 / (dd - 1));
        } else {
          const double step = 2.0 / dd;
          v = -1.0 + step / 2 + static_cast<double>(k) * step;
        }
        base[i].push_back(v);
      }
    }
    int64_t points = 1;
    for (int64_t d : dims) points *= d;
    std::vector<double> out(static_cast<size_t>(batch * points * nd));
    std::vector<int64_t> idx(nd);
    std::vector<double> p(nd + 1, 1.0);
    for (int64_t b = 0; b < batch; ++b) {
      const double* t = th.data() + b * nd * (nd + 1);
      for (int64_t q = 0; q < points; ++q) {
        for (int64_t rem = q, a = nd - 1; a >= 0; --a) idx[a] = rem % dims[a], rem /= dims[a];
        for (int i = 0; i < nd; ++i) p[i] = base[i][idx[nd - 1 - i]];
        for (int row = 0; row < nd; ++row) {
          double acc = 0;
          for (int col = 0; col <= nd; ++col) acc += t[row * (nd + 1) + col] * p[col];
          out[(b * points + q) * nd + row] = acc;
        }
      }
    }
    return FromDoubles(kOp, out, outputs[0]);
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    constexpr char kOp[] = "AffineGrid";
    if (inputs.size() != 2 || !inputs[0].defined() || !inputs[1].defined() ||
        output_shapes.size() != 1) {
      return absl::InvalidArgumentError("AffineGrid: expected theta, size and one output");
    }
    const Tensor& theta = inputs[0];
    NIMBLE_ASSIGN_OR_RETURN(Ints size, IntList(kOp, "size", inputs[1]));
    if (size.size() != 4 && size.size() != 5) {
      return absl::InvalidArgumentError(
          absl::StrCat("AffineGrid: size must have 4 or 5 values, got ", size.size()));
    }
    const int64_t nd = static_cast<int64_t>(size.size()) - 2;
    if (theta.rank() != 3 || theta.dim(0) != size[0] || theta.dim(1) != nd ||
        theta.dim(2) != nd + 1) {
      return absl::InvalidArgumentError(absl::StrCat("AffineGrid: theta must be [", size[0], ", ",
                                                     nd, ", ", nd + 1, "], got ",
                                                     theta.TypeString()));
    }
    Shape out = {size[0]};
    for (size_t i = 2; i < size.size(); ++i) {
      if (size[i] <= 0) {
        return absl::InvalidArgumentError("AffineGrid: spatial sizes must be positive");
      }
      out.push_back(size[i]);
    }
    out.push_back(nd);
    output_shapes[0] = out;
    return absl::OkStatus();
  }

 private:
  const bool align_corners_;
};

// ------------------------------------------------------------------------------------------
// RoiAlign(X [N, C, H, W], rois [R, 4], batch_indices [R]) -> [R, C, output_height,
// output_width]. Sample coordinates are computed in float like the reference.

class RoiAlignKernel final : public Kernel {
 public:
  RoiAlignKernel(bool max_mode, bool half_pixel, int64_t out_h, int64_t out_w,
                 int64_t sampling_ratio, float spatial_scale)
      : max_mode_(max_mode),
        half_pixel_(half_pixel),
        out_h_(out_h),
        out_w_(out_w),
        sampling_ratio_(sampling_ratio),
        spatial_scale_(spatial_scale) {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    constexpr char kOp[] = "RoiAlign";
    NIMBLE_RETURN_IF_ERROR(CheckArity(kOp, inputs, 3, 3, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(kOp, inputs, 3));
    Shape out_shape;
    NIMBLE_RETURN_IF_ERROR(OutputShapes(inputs, absl::MakeSpan(&out_shape, 1)));
    const Tensor& x = inputs[0];
    NIMBLE_RETURN_IF_ERROR(CheckOutput(kOp, outputs[0], x.dtype(), out_shape));
    NIMBLE_ASSIGN_OR_RETURN(std::vector<double> xv, ToDoubles(kOp, "X", x));
    NIMBLE_ASSIGN_OR_RETURN(std::vector<double> rois, ToDoubles(kOp, "rois", inputs[1]));
    NIMBLE_ASSIGN_OR_RETURN(Ints batch_idx, IntList(kOp, "batch_indices", inputs[2]));
    const int64_t num_rois = out_shape[0], channels = x.dim(1), height = x.dim(2), width = x.dim(3);
    for (int64_t b : batch_idx) {
      if (b < 0 || b >= x.dim(0)) {
        return absl::InvalidArgumentError(
            absl::StrCat(kOp, ": batch index ", b, " is out of range [0, ", x.dim(0), ")"));
      }
    }
    // Per roi: the sampling grid, validated before any work (adaptive grids follow the roi
    // size, so a huge or non-finite roi must not reach the allocation below).
    std::vector<std::pair<int64_t, int64_t>> grids(num_rois);
    for (int64_t n = 0; n < num_rois; ++n) {
      const double* roi = rois.data() + n * 4;
      const float offset = half_pixel_ ? 0.5f : 0.0f;
      float roi_w = (static_cast<float>(roi[2]) * spatial_scale_ - offset) -
                    (static_cast<float>(roi[0]) * spatial_scale_ - offset);
      float roi_h = (static_cast<float>(roi[3]) * spatial_scale_ - offset) -
                    (static_cast<float>(roi[1]) * spatial_scale_ - offset);
      if (!half_pixel_) roi_w = std::max(roi_w, 1.0f), roi_h = std::max(roi_h, 1.0f);
      if (!std::isfinite(roi_w) || !std::isfinite(roi_h)) {
        return absl::InvalidArgumentError(absl::StrCat(kOp, ": roi ", n, " is not finite"));
      }
      const double gh = sampling_ratio_ > 0 ? static_cast<double>(sampling_ratio_)
                                            : std::ceil(roi_h / static_cast<float>(out_h_));
      const double gw = sampling_ratio_ > 0 ? static_cast<double>(sampling_ratio_)
                                            : std::ceil(roi_w / static_cast<float>(out_w_));
      constexpr double kMaxSamples = static_cast<double>(int64_t{1} << 28);
      if (std::abs(gh) * std::abs(gw) * static_cast<double>(out_h_ * out_w_) > kMaxSamples ||
          std::abs(gh) > kMaxSamples || std::abs(gw) > kMaxSamples) {
        return absl::InvalidArgumentError(absl::StrCat(
            kOp, ": roi ", n, " needs too many samples (", gh, " x ", gw, " per bin)"));
      }
      grids[n] = {static_cast<int64_t>(gh), static_cast<int64_t>(gw)};
    }
    std::vector<double> out(static_cast<size_t>(outputs[0].num_elements()));
    struct Sample {
      int64_t pos[4];
      float w[4];
    };
    ParallelFor(ctx, num_rois, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        const float offset = half_pixel_ ? 0.5f : 0.0f;
        const double* roi = rois.data() + n * 4;
        const float start_w = static_cast<float>(roi[0]) * spatial_scale_ - offset;
        const float start_h = static_cast<float>(roi[1]) * spatial_scale_ - offset;
        const float end_w = static_cast<float>(roi[2]) * spatial_scale_ - offset;
        const float end_h = static_cast<float>(roi[3]) * spatial_scale_ - offset;
        float roi_w = end_w - start_w, roi_h = end_h - start_h;
        if (!half_pixel_) roi_w = std::max(roi_w, 1.0f), roi_h = std::max(roi_h, 1.0f);
        const float bin_h = roi_h / static_cast<float>(out_h_);
        const float bin_w = roi_w / static_cast<float>(out_w_);
        // Sampling grids of a negative size (inverted half_pixel rois) sample nothing but still
        // divide by their product, as in the reference.
        const int64_t raw_h = grids[n].first, raw_w = grids[n].second;
        const int64_t grid_h = std::max<int64_t>(raw_h, 0), grid_w = std::max<int64_t>(raw_w, 0);
        const int64_t count = std::max<int64_t>(raw_h * raw_w, 1);
        std::vector<Sample> samples;
        samples.reserve(std::max<int64_t>(0, out_h_ * out_w_ * grid_h * grid_w));
        for (int64_t ph = 0; ph < out_h_; ++ph) {
          for (int64_t pw = 0; pw < out_w_; ++pw) {
            for (int64_t iy = 0; iy < grid_h; ++iy) {
              const float yy = start_h + static_cast<float>(ph) * bin_h +
                               (static_cast<float>(iy) + 0.5f) * bin_h / static_cast<float>(grid_h);
              for (int64_t ix = 0; ix < grid_w; ++ix) {
                const float xx =
                    start_w + static_cast<float>(pw) * bin_w +
                    (static_cast<float>(ix) + 0.5f) * bin_w / static_cast<float>(grid_w);
                Sample smp{{0, 0, 0, 0}, {0, 0, 0, 0}};
                float y = yy, xf = xx;
                if (!(y >= -1.0f && y <= static_cast<float>(height) && xf >= -1.0f &&
                      xf <= static_cast<float>(width)) ||
                    height == 0 || width == 0) {
                  samples.push_back(smp);
                  continue;
                }
                y = std::max(y, 0.0f);
                xf = std::max(xf, 0.0f);
                int64_t y_low = static_cast<int64_t>(y), x_low = static_cast<int64_t>(xf);
                int64_t y_high, x_high;
                if (y_low >= height - 1) {
                  y_high = y_low = height - 1;
                  y = static_cast<float>(y_low);
                } else {
                  y_high = y_low + 1;
                }
                if (x_low >= width - 1) {
                  x_high = x_low = width - 1;
                  xf = static_cast<float>(x_low);
                } else {
                  x_high = x_low + 1;
                }
                const float ly = y - static_cast<float>(y_low);
                const float lx = xf - static_cast<float>(x_low);
                const float hy = 1.0f - ly, hx = 1.0f - lx;
                smp.pos[0] = y_low * width + x_low;
                smp.pos[1] = y_low * width + x_high;
                smp.pos[2] = y_high * width + x_low;
                smp.pos[3] = y_high * width + x_high;
                smp.w[0] = hy * hx;
                smp.w[1] = hy * lx;
                smp.w[2] = ly * hx;
                smp.w[3] = ly * lx;
                samples.push_back(smp);
              }
            }
          }
        }
        const int64_t per_bin = grid_h * grid_w;
        for (int64_t c = 0; c < channels; ++c) {
          const double* src = xv.data() + (batch_idx[n] * channels + c) * height * width;
          double* dst = out.data() + (n * channels + c) * out_h_ * out_w_;
          for (int64_t bin = 0; bin < out_h_ * out_w_; ++bin) {
            double acc = 0;
            bool first = true;
            for (int64_t s = 0; s < per_bin; ++s) {
              const Sample& smp = samples[bin * per_bin + s];
              if (max_mode_) {
                double v = smp.w[0] * src[smp.pos[0]];
                for (int k = 1; k < 4; ++k) v = std::max(v, smp.w[k] * src[smp.pos[k]]);
                acc = first ? v : std::max(acc, v);
                first = false;
              } else {
                for (int k = 0; k < 4; ++k) acc += smp.w[k] * src[smp.pos[k]];
              }
            }
            dst[bin] = max_mode_ ? acc : acc / static_cast<double>(count);
          }
        }
      }
    });
    return FromDoubles(kOp, out, outputs[0]);
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.size() != 3 || !inputs[0].defined() || !inputs[1].defined() ||
        !inputs[2].defined() || output_shapes.size() != 1) {
      return absl::InvalidArgumentError("RoiAlign: expected X, rois, batch_indices, one output");
    }
    const Tensor& x = inputs[0];
    const Tensor& rois = inputs[1];
    const Tensor& bi = inputs[2];
    if (x.rank() != 4 || rois.rank() != 2 || rois.dim(1) != 4 || bi.rank() != 1 ||
        bi.dim(0) != rois.dim(0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("RoiAlign: needs X [N, C, H, W], rois [R, 4] and batch_indices [R], got ",
                       x.TypeString(), ", ", rois.TypeString(), ", ", bi.TypeString()));
    }
    output_shapes[0] = {rois.dim(0), x.dim(1), out_h_, out_w_};
    return absl::OkStatus();
  }

 private:
  const bool max_mode_, half_pixel_;
  const int64_t out_h_, out_w_, sampling_ratio_;
  const float spatial_scale_;
};

// ------------------------------------------------------------------------------------------
// DeformConv(X [N, C, H, W], W [OC, C / group, kh, kw], offset [N, og * kh * kw * 2, oh, ow],
// B?, mask? [N, og * kh * kw, oh, ow]) -> [N, OC, oh, ow] (2-D): a convolution whose taps are
// sampled bilinearly (zeros outside the image) at offset positions, scaled by the mask.

class DeformConvKernel final : public Kernel {
 public:
  DeformConvKernel(Ints dilations, int64_t group, Ints kernel_shape, int64_t offset_group,
                   Ints pads, Ints strides)
      : dilations_(std::move(dilations)),
        group_(group),
        kernel_shape_(std::move(kernel_shape)),
        offset_group_(offset_group),
        pads_(std::move(pads)),
        strides_(std::move(strides)) {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    constexpr char kOp[] = "DeformConv";
    NIMBLE_RETURN_IF_ERROR(CheckArity(kOp, inputs, 3, 5, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(kOp, inputs, 3));
    NIMBLE_ASSIGN_OR_RETURN(Geometry g, Geom(inputs));
    const Tensor& x = inputs[0];
    NIMBLE_RETURN_IF_ERROR(CheckOutput(kOp, outputs[0], x.dtype(), g.out_shape));
    const int64_t n = x.dim(0), c = x.dim(1), ih = x.dim(2), iw = x.dim(3);
    const int64_t oc = g.out_shape[1], oh = g.out_shape[2], ow = g.out_shape[3];
    const int64_t kh = g.kh, kw = g.kw, taps = kh * kw, locs = oh * ow;
    NIMBLE_ASSIGN_OR_RETURN(std::vector<double> xv, ToDoubles(kOp, "X", x));
    NIMBLE_ASSIGN_OR_RETURN(std::vector<double> wv, ToDoubles(kOp, "W", inputs[1]));
    NIMBLE_ASSIGN_OR_RETURN(std::vector<double> off, ToDoubles(kOp, "offset", inputs[2]));
    std::vector<double> bias, mask;
    if (Given(inputs, 3)) {
      NIMBLE_ASSIGN_OR_RETURN(bias, ToDoubles(kOp, "B", inputs[3]));
      if (static_cast<int64_t>(bias.size()) != oc) {
        return absl::InvalidArgumentError(
            absl::StrCat(kOp, ": B must have ", oc, " values, got ", inputs[3].TypeString()));
      }
    }
    if (Given(inputs, 4)) {
      NIMBLE_ASSIGN_OR_RETURN(mask, ToDoubles(kOp, "mask", inputs[4]));
      if (static_cast<int64_t>(mask.size()) != n * offset_group_ * taps * locs) {
        return absl::InvalidArgumentError(absl::StrCat(kOp, ": mask must be [", n, ", ",
                                                       offset_group_ * taps, ", ", oh, ", ", ow,
                                                       "], got ", inputs[4].TypeString()));
      }
    }
    const int64_t icpg = c / group_, ocpg = oc / group_, icpog = c / offset_group_;
    std::vector<double> out(static_cast<size_t>(n * oc * locs));
    ParallelFor(ctx, n * group_, 1, [&](int64_t begin, int64_t end) {
      // Sampled columns of one group: [icpg * taps, locs].
      std::vector<double> col(static_cast<size_t>(icpg * taps * locs));
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / group_, grp = item % group_;
        for (int64_t ci = 0; ci < icpg; ++ci) {
          const int64_t ch = grp * icpg + ci;
          const int64_t og = ch / icpog;
          const double* img = xv.data() + (b * c + ch) * ih * iw;
          for (int64_t t = 0; t < taps; ++t) {
            const int64_t ka = t / kw, kb = t % kw;
            const double* off_h = off.data() + ((b * offset_group_ + og) * taps + t) * 2 * locs;
            const double* off_w = off_h + locs;
            const double* m =
                mask.empty() ? nullptr : mask.data() + ((b * offset_group_ + og) * taps + t) * locs;
            double* dst = col.data() + (ci * taps + t) * locs;
            for (int64_t i = 0; i < oh; ++i) {
              for (int64_t j = 0; j < ow; ++j) {
                const int64_t l = i * ow + j;
                const double h = static_cast<double>(i * g.sh - g.pad_h + ka * g.dh) + off_h[l];
                const double w = static_cast<double>(j * g.sw - g.pad_w + kb * g.dw) + off_w[l];
                double v = Bilinear(img, ih, iw, h, w);
                if (m != nullptr) v *= m[l];
                dst[l] = v;
              }
            }
          }
        }
        for (int64_t o = 0; o < ocpg; ++o) {
          const int64_t och = grp * ocpg + o;
          double* dst = out.data() + (b * oc + och) * locs;
          std::fill(dst, dst + locs, bias.empty() ? 0.0 : bias[och]);
          const double* wrow = wv.data() + och * icpg * taps;
          for (int64_t k = 0; k < icpg * taps; ++k) {
            const double wk = wrow[k];
            const double* src = col.data() + k * locs;
            for (int64_t l = 0; l < locs; ++l) dst[l] += wk * src[l];
          }
        }
      }
    });
    return FromDoubles(kOp, out, outputs[0]);
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (output_shapes.size() != 1) {
      return absl::InvalidArgumentError("DeformConv: expected one output");
    }
    NIMBLE_ASSIGN_OR_RETURN(Geometry g, Geom(inputs));
    output_shapes[0] = g.out_shape;
    return absl::OkStatus();
  }

 private:
  struct Geometry {
    int64_t kh = 0, kw = 0, sh = 1, sw = 1, dh = 1, dw = 1, pad_h = 0, pad_w = 0;
    Shape out_shape;
  };

  // Bilinear sample of an [ih, iw] image at (h, w), zeros outside.
  static double Bilinear(const double* img, int64_t ih, int64_t iw, double h, double w) {
    const double h0f = std::floor(h), w0f = std::floor(w);
    if (!(h0f >= -1 && h0f < static_cast<double>(ih) && w0f >= -1 &&
          w0f < static_cast<double>(iw))) {
      return 0.0;
    }
    const int64_t h0 = static_cast<int64_t>(h0f), w0 = static_cast<int64_t>(w0f);
    const double lh = h - h0f, lw = w - w0f;
    auto at = [&](int64_t y, int64_t x) {
      return y >= 0 && y < ih && x >= 0 && x < iw ? img[y * iw + x] : 0.0;
    };
    return (1 - lh) * ((1 - lw) * at(h0, w0) + lw * at(h0, w0 + 1)) +
           lh * ((1 - lw) * at(h0 + 1, w0) + lw * at(h0 + 1, w0 + 1));
  }

  absl::StatusOr<Geometry> Geom(absl::Span<const Tensor> inputs) const {
    constexpr char kOp[] = "DeformConv";
    if (inputs.size() < 3 || !inputs[0].defined() || !inputs[1].defined() || !inputs[2].defined()) {
      return absl::InvalidArgumentError("DeformConv: expected X, W and offset");
    }
    const Tensor& x = inputs[0];
    const Tensor& w = inputs[1];
    const Tensor& off = inputs[2];
    if (x.rank() != 4 || w.rank() != 4 || off.rank() != 4) {
      return absl::InvalidArgumentError(
          absl::StrCat(kOp, ": only 2-D deformable convolution is supported; got X ",
                       x.TypeString(), ", W ", w.TypeString(), ", offset ", off.TypeString()));
    }
    if (group_ <= 0 || offset_group_ <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(kOp, ": group and offset_group must be positive"));
    }
    if ((!kernel_shape_.empty() && kernel_shape_.size() != 2) ||
        (!strides_.empty() && strides_.size() != 2) ||
        (!dilations_.empty() && dilations_.size() != 2) || (!pads_.empty() && pads_.size() != 4)) {
      return absl::InvalidArgumentError(
          absl::StrCat(kOp, ": kernel_shape, strides, dilations or pads have the wrong length"));
    }
    Geometry g;
    g.kh = w.dim(2), g.kw = w.dim(3);
    if (!kernel_shape_.empty() && (kernel_shape_[0] != g.kh || kernel_shape_[1] != g.kw)) {
      return absl::InvalidArgumentError(
          absl::StrCat(kOp, ": kernel_shape does not match W ", w.TypeString()));
    }
    if (!strides_.empty()) g.sh = strides_[0], g.sw = strides_[1];
    if (!dilations_.empty()) g.dh = dilations_[0], g.dw = dilations_[1];
    int64_t pe_h = 0, pe_w = 0;
    if (!pads_.empty()) g.pad_h = pads_[0], g.pad_w = pads_[1], pe_h = pads_[2], pe_w = pads_[3];
    if (g.sh <= 0 || g.sw <= 0 || g.dh <= 0 || g.dw <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(kOp, ": strides and dilations must be positive"));
    }
    const int64_t c = x.dim(1), oc = w.dim(0);
    if (c != w.dim(1) * group_ || oc % group_ != 0 || c % offset_group_ != 0) {
      return absl::InvalidArgumentError(absl::StrCat(kOp, ": X ", x.TypeString(), " and W ",
                                                     w.TypeString(), " do not match group ", group_,
                                                     " and offset_group ", offset_group_));
    }
    const int64_t span_h = x.dim(2) + g.pad_h + pe_h - ((g.kh - 1) * g.dh + 1);
    const int64_t span_w = x.dim(3) + g.pad_w + pe_w - ((g.kw - 1) * g.dw + 1);
    if (span_h < 0 || span_w < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(kOp, ": the kernel does not fit X ", x.TypeString()));
    }
    const int64_t oh = span_h / g.sh + 1, ow = span_w / g.sw + 1;
    if (off.dim(0) != x.dim(0) || off.dim(1) != offset_group_ * g.kh * g.kw * 2 ||
        off.dim(2) != oh || off.dim(3) != ow) {
      return absl::InvalidArgumentError(absl::StrCat(kOp, ": offset must be [", x.dim(0), ", ",
                                                     offset_group_ * g.kh * g.kw * 2, ", ", oh,
                                                     ", ", ow, "], got ", off.TypeString()));
    }
    g.out_shape = {x.dim(0), oc, oh, ow};
    return g;
  }

  const Ints dilations_;
  const int64_t group_;
  const Ints kernel_shape_;
  const int64_t offset_group_;
  const Ints pads_, strides_;
};
}  // namespace

void RegisterImageKernels(KernelRegistry& registry) {
  for (const bool upsample : {false, true}) {
    registry.Register(upsample ? "Upsample" : "Resize", DeviceType::kCPU,
                      [upsample](const Attributes& attrs) -> Factory {
                        NIMBLE_ASSIGN_OR_RETURN(ResizeOptions o,
                                                ParseResizeOptions(attrs, upsample));
                        return std::make_unique<ResizeKernel>(std::move(o));
                      });
  }
  registry.Register("GridSample", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    const std::string mode = attrs.GetOr<std::string>("mode", "linear");
    GridMode m;
    if (mode == "bilinear" || mode == "linear") {
      m = GridMode::kLinear;
    } else if (mode == "nearest") {
      m = GridMode::kNearest;
    } else if (mode == "bicubic" || mode == "cubic") {
      m = GridMode::kCubic;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("GridSample: unknown mode '", mode, "'"));
    }
    const std::string padding = attrs.GetOr<std::string>("padding_mode", "zeros");
    GridPadding p;
    if (padding == "zeros") {
      p = GridPadding::kZeros;
    } else if (padding == "border") {
      p = GridPadding::kBorder;
    } else if (padding == "reflection") {
      p = GridPadding::kReflection;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("GridSample: unknown padding_mode '", padding, "'"));
    }
    return std::make_unique<GridSampleKernel>(m, p, attrs.GetOr<int64_t>("align_corners", 0) != 0);
  });
  registry.Register("CenterCropPad", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    std::optional<Ints> axes;
    if (attrs.Has("axes")) axes = attrs.GetOr<Ints>("axes", {});
    return std::make_unique<CenterCropPadKernel>(std::move(axes));
  });
  registry.Register("Col2Im", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    return std::make_unique<Col2ImKernel>(attrs.GetOr<Ints>("dilations", {}),
                                          attrs.GetOr<Ints>("pads", {}),
                                          attrs.GetOr<Ints>("strides", {}));
  });
  registry.Register("AffineGrid", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    return std::make_unique<AffineGridKernel>(attrs.GetOr<int64_t>("align_corners", 0) != 0);
  });
  registry.Register("RoiAlign", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    const std::string mode = attrs.GetOr<std::string>("mode", "avg");
    if (mode != "avg" && mode != "max") {
      return absl::InvalidArgumentError(absl::StrCat("RoiAlign: unknown mode '", mode, "'"));
    }
    const std::string coord =
        attrs.GetOr<std::string>("coordinate_transformation_mode", "half_pixel");
    if (coord != "half_pixel" && coord != "output_half_pixel") {
      return absl::InvalidArgumentError(
          absl::StrCat("RoiAlign: unknown coordinate_transformation_mode '", coord, "'"));
    }
    const int64_t h = attrs.GetOr<int64_t>("output_height", 1);
    const int64_t w = attrs.GetOr<int64_t>("output_width", 1);
    if (h <= 0 || w <= 0) {
      return absl::InvalidArgumentError(
          "RoiAlign: output_height and output_width must be positive");
    }
    return std::make_unique<RoiAlignKernel>(
        mode == "max", coord == "half_pixel", h, w, attrs.GetOr<int64_t>("sampling_ratio", 0),
        static_cast<float>(attrs.GetOr<double>("spatial_scale", 1.0)));
  });
  registry.Register("DeformConv", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    return std::make_unique<DeformConvKernel>(
        attrs.GetOr<Ints>("dilations", {}), attrs.GetOr<int64_t>("group", 1),
        attrs.GetOr<Ints>("kernel_shape", {}), attrs.GetOr<int64_t>("offset_group", 1),
        attrs.GetOr<Ints>("pads", {}), attrs.GetOr<Ints>("strides", {}));
  });
}

}  // namespace nimble::vm::cpu
