// Loss and training-style ops for inference: NegativeLogLikelihoodLoss,
// SoftmaxCrossEntropyLoss, Dropout (inference only) and CumProd.
//
// The losses compute in double (f32/f64 inputs, f16/bf16 through f32) and write the output
// dtype of the scores; they are small, memory-bound ops, so they run on the calling thread.
// Reductions follow ONNX: "none" keeps the target's shape, "sum" adds the weighted losses,
// "mean" divides that sum by the sum of the weights applied (ignored entries weigh 0).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vm/kernels/cpu/cpu_kernels.h"
#include "vm/kernels/cpu/elementwise_internal.h"

namespace nimble::vm::cpu {
namespace {

using Factory = absl::StatusOr<std::unique_ptr<Kernel>>;

enum class Reduction { kNone, kSum, kMean };

absl::StatusOr<Reduction> ParseReduction(absl::string_view op, const Attributes& attrs) {
  const std::string r = attrs.GetOr<std::string>("reduction", "mean");
  if (r == "none") return Reduction::kNone;
  if (r == "sum") return Reduction::kSum;
  if (r == "mean") return Reduction::kMean;
  return absl::InvalidArgumentError(
      absl::StrCat(op, ": reduction must be 'none', 'sum' or 'mean', got '", r, "'"));
}

// A float tensor's values as doubles (f32, f64, f16, bf16).
absl::StatusOr<std::vector<double>> FloatValues(absl::string_view op, absl::string_view what,
                                                const Tensor& t) {
  std::vector<double> out(t.num_elements());
  if (IsHalf(t.dtype())) {
    NIMBLE_ASSIGN_OR_RETURN(Tensor f, CastTo(t, DType::kF32, op));
    for (int64_t i = 0; i < t.num_elements(); ++i) out[i] = f.data<float>()[i];
    return out;
  }
  absl::Status s = VisitDType<kF32F64>(t.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    for (int64_t i = 0; i < t.num_elements(); ++i) out[i] = t.data<T>()[i];
    return absl::OkStatus();
  });
  if (!s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", what, " must be a float tensor, got ", DTypeName(t.dtype())));
  }
  return out;
}

// Writes `values` into the float tensor `out` (same element count).
absl::Status WriteFloats(absl::string_view op, const std::vector<double>& values, Tensor& out) {
  if (out.num_elements() != static_cast<int64_t>(values.size())) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": output has ", out.num_elements(),
                                                   " elements, expected ", values.size()));
  }
  if (IsHalf(out.dtype())) {
    NIMBLE_ASSIGN_OR_RETURN(Tensor f, Tensor::Empty(DType::kF32, out.shape()));
    for (size_t i = 0; i < values.size(); ++i) f.data<float>()[i] = static_cast<float>(values[i]);
    return CastInto(f, out, op);
  }
  return VisitDType<kF32F64>(out.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    for (size_t i = 0; i < values.size(); ++i) out.data<T>()[i] = static_cast<T>(values[i]);
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<int64_t>> IndexValues(absl::string_view op, const Tensor& t) {
  std::vector<int64_t> out(t.num_elements());
  absl::Status s = VisitDType<kInts>(t.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    for (int64_t i = 0; i < t.num_elements(); ++i) out[i] = static_cast<int64_t>(t.data<T>()[i]);
    return absl::OkStatus();
  });
  if (!s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": target must be an integer tensor, got ", DTypeName(t.dtype())));
  }
  return out;
}

// Checks scores [N, C, d...] against target [N, d...] and weight [C]; sets N*D (positions),
// C and D (product of the trailing dims).
absl::Status CheckLossShapes(absl::string_view op, const Tensor& scores, const Tensor& target,
                             const Tensor& weight, int64_t* positions, int64_t* classes,
                             int64_t* inner) {
  if (scores.rank() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": input must have rank >= 2 ([N, C, ...]), got ", scores.TypeString()));
  }
  bool ok = target.rank() == scores.rank() - 1 && target.dim(0) == scores.dim(0);
  for (int i = 1; ok && i < target.rank(); ++i) ok = target.dim(i) == scores.dim(i + 1);
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": target shape ", target.TypeString(),
                                                   " does not match input ", scores.TypeString()));
  }
  *classes = scores.dim(1);
  if (weight.defined() && (weight.rank() != 1 || weight.dim(0) != *classes)) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": weight must have shape [", *classes, "], got ", weight.TypeString()));
  }
  *inner = 1;
  for (int i = 2; i < scores.rank(); ++i) *inner *= scores.dim(i);
  *positions = target.num_elements();
  return absl::OkStatus();
}

// The NLL of log-probabilities `logp` [N, C, D] at `target` [N, D]; fills `losses` (per
// position, weighted) and returns the reduced value in *reduced.
absl::Status Nll(absl::string_view op, const std::vector<double>& logp,
                 const std::vector<int64_t>& target, const std::vector<double>* weight,
                 std::optional<int64_t> ignore_index, int64_t classes, int64_t inner,
                 Reduction reduction, std::vector<double>* losses, double* reduced) {
  losses->assign(target.size(), 0.0);
  double sum = 0.0, weight_sum = 0.0;
  for (size_t p = 0; p < target.size(); ++p) {
    const int64_t t = target[p];
    if (ignore_index.has_value() && t == *ignore_index) continue;
    if (t < 0 || t >= classes) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": target value ", t, " at position ", p,
                                                     " is out of range [0, ", classes, ")"));
    }
    const int64_t n = static_cast<int64_t>(p) / inner, d = static_cast<int64_t>(p) % inner;
    const double w = weight != nullptr ? (*weight)[t] : 1.0;
    const double loss = -logp[(n * classes + t) * inner + d] * w;
    (*losses)[p] = loss;
    sum += loss;
    weight_sum += w;
  }
  *reduced = reduction == Reduction::kMean ? sum / weight_sum : sum;
  return absl::OkStatus();
}

absl::Status LossOutputShape(absl::string_view op, absl::Span<const Tensor> inputs,
                             Reduction reduction, Shape* shape) {
  if (inputs.size() < 2 || !inputs[1].defined()) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": expected input and target"));
  }
  *shape = reduction == Reduction::kNone ? inputs[1].shape() : Shape{};
  return absl::OkStatus();
}

class LossKernel final : public Kernel {
 public:
  LossKernel(std::string op, bool softmax, Reduction reduction, std::optional<int64_t> ignore_index)
      : op_(std::move(op)), softmax_(softmax), reduction_(reduction), ignore_index_(ignore_index) {}

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    if (outputs.empty() || outputs.size() > (softmax_ ? 2u : 1u)) {
      return absl::InvalidArgumentError(
          absl::StrCat(op_, softmax_ ? ": expected 1 or 2 outputs" : ": expected 1 output"));
    }
    NIMBLE_RETURN_IF_ERROR(CheckArity(op_, inputs, 2, 3, outputs, outputs.size()));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(op_, inputs, 2));
    const Tensor& scores = inputs[0];
    const Tensor& target = inputs[1];
    const Tensor weight = inputs.size() > 2 ? inputs[2] : Tensor();
    int64_t positions = 0, classes = 0, inner = 1;
    NIMBLE_RETURN_IF_ERROR(
        CheckLossShapes(op_, scores, target, weight, &positions, &classes, &inner));
    const Shape out_shape = reduction_ == Reduction::kNone ? target.shape() : Shape{};
    NIMBLE_RETURN_IF_ERROR(CheckOutput(op_, outputs[0], scores.dtype(), out_shape));
    const bool want_log_prob = softmax_ && outputs.size() > 1 && outputs[1].defined();
    if (want_log_prob) {
      NIMBLE_RETURN_IF_ERROR(CheckOutput(op_, outputs[1], scores.dtype(), scores.shape(), 1));
    }
    NIMBLE_ASSIGN_OR_RETURN(std::vector<double> x, FloatValues(op_, "input", scores));
    NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> t, IndexValues(op_, target));
    std::vector<double> w;
    if (weight.defined()) {
      if (weight.dtype() != scores.dtype()) {
        return absl::InvalidArgumentError(absl::StrCat(
            op_, ": weight dtype ", DTypeName(weight.dtype()), " differs from input's"));
      }
      NIMBLE_ASSIGN_OR_RETURN(w, FloatValues(op_, "weight", weight));
    }
    if (softmax_) {
      const int64_t outer = scores.dim(0);
      for (int64_t n = 0; n < outer; ++n) {
        for (int64_t d = 0; d < inner; ++d) {
          double* base = x.data() + n * classes * inner + d;
          double m = -INFINITY;
          for (int64_t c = 0; c < classes; ++c) m = std::max(m, base[c * inner]);
          double s = 0.0;
          for (int64_t c = 0; c < classes; ++c) s += std::exp(base[c * inner] - m);
          const double lse = m + std::log(s);
          for (int64_t c = 0; c < classes; ++c) base[c * inner] -= lse;
        }
      }
      if (want_log_prob) NIMBLE_RETURN_IF_ERROR(WriteFloats(op_, x, outputs[1]));
    }
    std::vector<double> losses;
    double reduced = 0.0;
    NIMBLE_RETURN_IF_ERROR(Nll(op_, x, t, weight.defined() ? &w : nullptr, ignore_index_, classes,
                               inner, reduction_, &losses, &reduced));
    if (reduction_ == Reduction::kNone) return WriteFloats(op_, losses, outputs[0]);
    return WriteFloats(op_, std::vector<double>{reduced}, outputs[0]);
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (output_shapes.empty() || output_shapes.size() > (softmax_ ? 2u : 1u) || inputs.empty() ||
        !inputs[0].defined()) {
      return absl::InvalidArgumentError(absl::StrCat(op_, ": expected input, target, outputs"));
    }
    NIMBLE_RETURN_IF_ERROR(LossOutputShape(op_, inputs, reduction_, &output_shapes[0]));
    if (output_shapes.size() > 1) output_shapes[1] = inputs[0].shape();
    return absl::OkStatus();
  }

 private:
  const std::string op_;
  const bool softmax_;
  const Reduction reduction_;
  const std::optional<int64_t> ignore_index_;
};

// ------------------------------------------------------------------------------------------
// Dropout (inference): the identity, with an all-true mask.

class DropoutKernel final : public Kernel {
 public:
  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    if (outputs.size() == 2 && !outputs[1].defined()) outputs = outputs.subspan(0, 1);
    NIMBLE_RETURN_IF_ERROR(CheckArity("Dropout", inputs, 1, 3, outputs, outputs.size()));
    if (outputs.empty() || outputs.size() > 2) {
      return absl::InvalidArgumentError("Dropout: expected 1 or 2 outputs");
    }
    NIMBLE_RETURN_IF_ERROR(CheckRequired("Dropout", inputs, 1));
    const Tensor& x = inputs[0];
    bool training = false;
    if (inputs.size() > 2 && inputs[2].defined()) {
      const Tensor& tm = inputs[2];
      if (tm.dtype() != DType::kBool || tm.num_elements() != 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("Dropout: training_mode must be a bool scalar, got ", tm.TypeString()));
      }
      training = tm.data<bool>()[0];
    }
    if (training) {
      double ratio = 0.5;
      if (inputs.size() > 1 && inputs[1].defined()) {
        if (inputs[1].num_elements() != 1) {
          return absl::InvalidArgumentError(
              absl::StrCat("Dropout: ratio must be a scalar, got ", inputs[1].TypeString()));
        }
        NIMBLE_ASSIGN_OR_RETURN(std::vector<double> r, FloatValues("Dropout", "ratio", inputs[1]));
        ratio = r[0];
      }
      if (ratio != 0.0) return absl::UnimplementedError("Dropout in training mode");
    }
    NIMBLE_RETURN_IF_ERROR(CheckOutput("Dropout", outputs[0], x.dtype(), x.shape()));
    if (outputs.size() > 1) {
      NIMBLE_RETURN_IF_ERROR(CheckOutput("Dropout", outputs[1], DType::kBool, x.shape(), 1));
      bool* mask = outputs[1].data<bool>();
      for (int64_t i = 0; i < x.num_elements(); ++i) mask[i] = true;
    }
    if (x.raw_data() == outputs[0].raw_data() || x.num_elements() == 0) return absl::OkStatus();
    if (x.dtype() == DType::kString) {
      for (int64_t i = 0; i < x.num_elements(); ++i) {
        outputs[0].data<std::string>()[i] = x.data<std::string>()[i];
      }
      return absl::OkStatus();
    }
    std::memmove(outputs[0].raw_data(), x.raw_data(), x.nbytes());
    return absl::OkStatus();
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.empty() || !inputs[0].defined() || output_shapes.empty() ||
        output_shapes.size() > 2) {
      return absl::InvalidArgumentError("Dropout: expected data and 1 or 2 outputs");
    }
    for (Shape& s : output_shapes) s = inputs[0].shape();
    return absl::OkStatus();
  }
};

// ------------------------------------------------------------------------------------------
// CumProd(x, axis).

template <typename T>
T Multiply(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    return a * b;
  } else {
    using W = std::make_unsigned_t<std::common_type_t<T, unsigned>>;
    return static_cast<T>(static_cast<W>(static_cast<W>(a) * static_cast<W>(b)));
  }
}

template <typename T>
void CumProdLayout(const T* x, T* out, int64_t outer, int64_t r_count, int64_t inner,
                   bool exclusive, bool reverse) {
  std::vector<T> acc(inner);
  for (int64_t o = 0; o < outer; ++o) {
    std::fill(acc.begin(), acc.end(), T(1));
    const T* base = x + o * r_count * inner;
    T* obase = out + o * r_count * inner;
    for (int64_t step = 0; step < r_count; ++step) {
      const int64_t r = reverse ? r_count - 1 - step : step;
      const T* row = base + r * inner;
      T* orow = obase + r * inner;
      for (int64_t j = 0; j < inner; ++j) {
        const T v = row[j];  // read first: out may alias x
        if (exclusive) {
          orow[j] = acc[j];
          acc[j] = Multiply(acc[j], v);
        } else {
          acc[j] = Multiply(acc[j], v);
          orow[j] = acc[j];
        }
      }
    }
  }
}

class CumProdKernel final : public Kernel {
 public:
  CumProdKernel(bool exclusive, bool reverse) : exclusive_(exclusive), reverse_(reverse) {}

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("CumProd", inputs, 2, 2, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired("CumProd", inputs, 2));
    const Tensor& x = inputs[0];
    NIMBLE_RETURN_IF_ERROR(CheckOutput("CumProd", outputs[0], x.dtype(), x.shape()));
    NIMBLE_ASSIGN_OR_RETURN(int64_t a, ScalarInt("CumProd", "axis", inputs[1]));
    NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis("CumProd", a, std::max(x.rank(), 1)));
    if (x.num_elements() == 0) return absl::OkStatus();
    int64_t outer = 1, r = x.num_elements(), inner = 1;
    if (x.rank() > 0) {
      for (int i = 0; i < axis; ++i) outer *= x.dim(i);
      r = x.dim(axis);
      for (int i = axis + 1; i < x.rank(); ++i) inner *= x.dim(i);
    }
    if (IsHalf(x.dtype())) {
      NIMBLE_ASSIGN_OR_RETURN(Tensor xf, CastTo(x, DType::kF32, "CumProd"));
      NIMBLE_ASSIGN_OR_RETURN(Tensor of, Tensor::Empty(DType::kF32, x.shape()));
      CumProdLayout(xf.data<float>(), of.data<float>(), outer, r, inner, exclusive_, reverse_);
      return CastInto(of, outputs[0], "CumProd");
    }
    return VisitDType<kNumeric>(x.dtype(), "CumProd", [&](auto tag) {
      using T = typename decltype(tag)::type;
      CumProdLayout(x.data<T>(), outputs[0].data<T>(), outer, r, inner, exclusive_, reverse_);
      return absl::OkStatus();
    });
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.empty() || !inputs[0].defined() || output_shapes.size() != 1) {
      return absl::InvalidArgumentError("CumProd: expected data and one output");
    }
    output_shapes[0] = inputs[0].shape();
    return absl::OkStatus();
  }

 private:
  const bool exclusive_;
  const bool reverse_;
};

}  // namespace

void RegisterLossKernels(KernelRegistry& registry) {
  for (const bool softmax : {false, true}) {
    const std::string op = softmax ? "SoftmaxCrossEntropyLoss" : "NegativeLogLikelihoodLoss";
    registry.Register(op, DeviceType::kCPU, [op, softmax](const Attributes& attrs) -> Factory {
      NIMBLE_ASSIGN_OR_RETURN(Reduction reduction, ParseReduction(op, attrs));
      std::optional<int64_t> ignore_index;
      if (attrs.Has("ignore_index")) {
        NIMBLE_ASSIGN_OR_RETURN(ignore_index, attrs.Get<int64_t>("ignore_index"));
      }
      return std::make_unique<LossKernel>(op, softmax, reduction, ignore_index);
    });
  }
  registry.Register("Dropout", DeviceType::kCPU,
                    [](const Attributes&) -> Factory { return std::make_unique<DropoutKernel>(); });
  registry.Register("CumProd", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    return std::make_unique<CumProdKernel>(attrs.GetOr<int64_t>("exclusive", 0) != 0,
                                           attrs.GetOr<int64_t>("reverse", 0) != 0);
  });
}

}  // namespace nimble::vm::cpu
