// Unary elementwise kernels: math (Abs ... Erf), logic (Not, BitwiseNot, IsNaN, IsInf) and
// activations (Relu ... Mish).
//
// Each (op, dtype) pair is one tight loop over a chunk; chunks run in parallel. The f32 forms
// of Exp, Tanh, Erf, Sigmoid and Gelu use the SIMD approximations of elementwise_internal.h
// (relative error ~3e-7); the rest call the C library. f16/bf16 are converted to float in
// blocks.
#include <memory>
#include <string>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vm/kernels/cpu/elementwise_internal.h"

namespace nimble::vm::cpu {
namespace {

enum class UnaryKind {
  kAbs,
  kNeg,
  kSqrt,
  kReciprocal,
  kExp,
  kLog,
  kCeil,
  kFloor,
  kRound,
  kSign,
  kSin,
  kCos,
  kTan,
  kAsin,
  kAcos,
  kAtan,
  kSinh,
  kCosh,
  kAsinh,
  kAcosh,
  kAtanh,
  kErf,
  kNot,
  kBitwiseNot,
  kIsNaN,
  kIsInf,
  kRelu,
  kLeakyRelu,
  kElu,
  kSelu,
  kCelu,
  kSigmoid,
  kHardSigmoid,
  kHardSwish,
  kSoftplus,
  kSoftsign,
  kTanh,
  kThresholdedRelu,
  kGelu,
  kGeluTanh,
  kMish,
};

struct UnaryParams {
  double alpha = 0;
  double beta = 0;
  double gamma = 0;
  bool detect_negative = true;
  bool detect_positive = true;
};

template <typename T, typename F>
inline void Map(const T* x, T* y, int64_t n, const F& f) {
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

template <typename T>
T Softplus(T x) {
  return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
}

// Float ops on a serial run of n elements (T = float or double).
template <typename T>
void FloatUnaryRun(UnaryKind kind, const UnaryParams& p, const T* x, T* y, int64_t n) {
  const T alpha = static_cast<T>(p.alpha);
  const T beta = static_cast<T>(p.beta);
  const T gamma = static_cast<T>(p.gamma);
  constexpr bool kF32 = std::is_same_v<T, float>;
  switch (kind) {
    case UnaryKind::kAbs:
      return Map(x, y, n, [](T v) { return std::abs(v); });
    case UnaryKind::kNeg:
      return Map(x, y, n, [](T v) { return -v; });
    case UnaryKind::kSqrt:
      return Map(x, y, n, [](T v) { return std::sqrt(v); });
    case UnaryKind::kReciprocal:
      return Map(x, y, n, [](T v) { return T(1) / v; });
    case UnaryKind::kExp:
      if constexpr (kF32) return ApplyFloatUnary(FloatUnary::kExp, x, y, n);
      return Map(x, y, n, [](T v) { return std::exp(v); });
    case UnaryKind::kLog:
      return Map(x, y, n, [](T v) { return std::log(v); });
    case UnaryKind::kCeil:
      return Map(x, y, n, [](T v) { return std::ceil(v); });
    case UnaryKind::kFloor:
      return Map(x, y, n, [](T v) { return std::floor(v); });
    // nearbyint in the default rounding mode: halves to even.
    case UnaryKind::kRound:
      return Map(x, y, n, [](T v) { return std::nearbyint(v); });
    case UnaryKind::kSign:
      return Map(x, y, n, [](T v) { return v > 0 ? T(1) : (v < 0 ? T(-1) : v * T(0)); });
    case UnaryKind::kSin:
      return Map(x, y, n, [](T v) { return std::sin(v); });
    case UnaryKind::kCos:
      return Map(x, y, n, [](T v) { return std::cos(v); });
    case UnaryKind::kTan:
      return Map(x, y, n, [](T v) { return std::tan(v); });
    case UnaryKind::kAsin:
      return Map(x, y, n, [](T v) { return std::asin(v); });
    case UnaryKind::kAcos:
      return Map(x, y, n, [](T v) { return std::acos(v); });
    case UnaryKind::kAtan:
      return Map(x, y, n, [](T v) { return std::atan(v); });
    case UnaryKind::kSinh:
      return Map(x, y, n, [](T v) { return std::sinh(v); });
    case UnaryKind::kCosh:
      return Map(x, y, n, [](T v) { return std::cosh(v); });
    case UnaryKind::kAsinh:
      return Map(x, y, n, [](T v) { return std::asinh(v); });
    case UnaryKind::kAcosh:
      return Map(x, y, n, [](T v) { return std::acosh(v); });
    case UnaryKind::kAtanh:
      return Map(x, y, n, [](T v) { return std::atanh(v); });
    case UnaryKind::kErf:
      if constexpr (kF32) return ApplyFloatUnary(FloatUnary::kErf, x, y, n);
      return Map(x, y, n, [](T v) { return std::erf(v); });
    case UnaryKind::kRelu:
      return Map(x, y, n, [](T v) { return v < 0 ? T(0) : v; });
    case UnaryKind::kLeakyRelu:
      return Map(x, y, n, [alpha](T v) { return v < 0 ? alpha * v : v; });
    case UnaryKind::kElu:
      return Map(x, y, n, [alpha](T v) { return v < 0 ? alpha * std::expm1(v) : v; });
    case UnaryKind::kSelu:
      return Map(x, y, n, [alpha, gamma](T v) {
        return v > 0 ? gamma * v : gamma * (alpha * std::exp(v) - alpha);
      });
    case UnaryKind::kCelu:
      return Map(x, y, n, [alpha](T v) { return v > 0 ? v : alpha * std::expm1(v / alpha); });
    case UnaryKind::kSigmoid:
      if constexpr (kF32) return ApplyFloatUnary(FloatUnary::kSigmoid, x, y, n);
      return Map(x, y, n, [](T v) {
        if (v >= 0) return T(1) / (T(1) + std::exp(-v));
        const T e = std::exp(v);
        return e / (T(1) + e);
      });
    case UnaryKind::kHardSigmoid:
      return Map(x, y, n, [alpha, beta](T v) {
        const T r = alpha * v + beta;
        return r < 0 ? T(0) : (r > 1 ? T(1) : r);
      });
    case UnaryKind::kHardSwish:
      return Map(x, y, n, [](T v) {
        const T r = v / T(6) + T(0.5);
        return v * (r < 0 ? T(0) : (r > 1 ? T(1) : r));
      });
    case UnaryKind::kSoftplus:
      return Map(x, y, n, [](T v) { return Softplus(v); });
    case UnaryKind::kSoftsign:
      return Map(x, y, n, [](T v) { return v / (T(1) + std::abs(v)); });
    case UnaryKind::kTanh:
      if constexpr (kF32) return ApplyFloatUnary(FloatUnary::kTanh, x, y, n);
      return Map(x, y, n, [](T v) { return std::tanh(v); });
    case UnaryKind::kThresholdedRelu:
      return Map(x, y, n, [alpha](T v) { return v > alpha ? v : T(0); });
    case UnaryKind::kGelu:
      if constexpr (kF32) return ApplyFloatUnary(FloatUnary::kGelu, x, y, n);
      return Map(x, y, n, [](T v) { return T(0.5) * v * (T(1) + std::erf(v * T(M_SQRT1_2))); });
    case UnaryKind::kGeluTanh:
      if constexpr (kF32) return ApplyFloatUnary(FloatUnary::kGeluTanh, x, y, n);
      return Map(x, y, n, [](T v) {
        const T inner = T(0.79788456080286535588) * (v + T(0.044715) * v * v * v);
        return T(0.5) * v * (T(1) + std::tanh(inner));
      });
    case UnaryKind::kMish:
      return Map(x, y, n, [](T v) { return v * std::tanh(Softplus(v)); });
    case UnaryKind::kNot:
    case UnaryKind::kBitwiseNot:
    case UnaryKind::kIsNaN:
    case UnaryKind::kIsInf:
      break;  // not float -> float ops
  }
}

// Integer forms of the ops that allow them.
template <typename T>
void IntUnaryRun(UnaryKind kind, const T* x, T* y, int64_t n) {
  using U = std::make_unsigned_t<std::common_type_t<T, unsigned>>;
  switch (kind) {
    case UnaryKind::kAbs:
      if constexpr (std::is_signed_v<T>) {
        return Map(x, y, n, [](T v) { return v < 0 ? static_cast<T>(U(0) - U(v)) : v; });
      }
      return Map(x, y, n, [](T v) { return v; });
    case UnaryKind::kNeg:
      return Map(x, y, n, [](T v) { return static_cast<T>(U(0) - U(v)); });
    case UnaryKind::kSign:
      if constexpr (std::is_signed_v<T>) {
        return Map(x, y, n, [](T v) { return static_cast<T>(v > 0 ? 1 : (v < 0 ? -1 : 0)); });
      }
      return Map(x, y, n, [](T v) { return static_cast<T>(v > 0 ? 1 : 0); });
    case UnaryKind::kRelu:
      return Map(x, y, n, [](T v) { return v < 0 ? T(0) : v; });
    case UnaryKind::kBitwiseNot:
      return Map(x, y, n, [](T v) { return static_cast<T>(~v); });
    default:
      break;
  }
}

// Dtypes each op accepts (besides f16/bf16, which every float op takes through float).
uint32_t AllowedDTypes(UnaryKind kind) {
  switch (kind) {
    case UnaryKind::kAbs:
    case UnaryKind::kSign:
      return kNumeric;
    case UnaryKind::kNeg:
    case UnaryKind::kRelu:
      return kF32F64 | kSignedInts;
    case UnaryKind::kNot:
      return kBoolBit;
    case UnaryKind::kBitwiseNot:
      return kInts;
    default:
      return kF32F64;
  }
}

bool TakesHalf(UnaryKind kind) { return kind != UnaryKind::kNot && kind != UnaryKind::kBitwiseNot; }

class UnaryKernel final : public Kernel {
 public:
  UnaryKernel(std::string op, UnaryKind kind, UnaryParams params)
      : op_(std::move(op)), kind_(kind), params_(params) {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op_, inputs, 1, 1, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(op_, inputs, 1));
    const Tensor& x = inputs[0];
    Tensor& y = outputs[0];
    const DType dtype = x.dtype();
    const bool to_bool = kind_ == UnaryKind::kIsNaN || kind_ == UnaryKind::kIsInf;
    const bool half = IsHalf(dtype) && TakesHalf(kind_);
    if (!half && (AllowedDTypes(kind_) & DTypeBit(dtype)) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(op_, ": unsupported dtype ", DTypeName(dtype)));
    }
    NIMBLE_RETURN_IF_ERROR(CheckOutput(op_, y, to_bool ? DType::kBool : dtype, x.shape()));
    const int64_t n = x.num_elements();
    if (to_bool) return Classify(ctx, x, y);
    if (half) {
      ParallelFor(ctx, n, kElementwiseGrain / 4, [&](int64_t b, int64_t e) {
        constexpr int64_t kBlock = 1024;
        float buf[kBlock];
        const auto* in = static_cast<const uint16_t*>(x.raw_data());
        auto* out = static_cast<uint16_t*>(y.raw_data());
        for (int64_t i = b; i < e; i += kBlock) {
          const int64_t m = std::min(kBlock, e - i);
          HalfToFloat(dtype, in + i, buf, m);
          FloatUnaryRun<float>(kind_, params_, buf, buf, m);
          FloatToHalf(dtype, buf, out + i, m);
        }
      });
      return absl::OkStatus();
    }
    if (kind_ == UnaryKind::kNot) {
      const bool* in = x.data<bool>();
      bool* out = y.data<bool>();
      ParallelFor(ctx, n, kElementwiseGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) out[i] = !in[i];
      });
      return absl::OkStatus();
    }
    return VisitDType<kNumeric>(dtype, op_, [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* in = x.data<T>();
      T* out = y.data<T>();
      ParallelFor(ctx, n, Grain(), [&](int64_t b, int64_t e) {
        if constexpr (std::is_floating_point_v<T>) {
          FloatUnaryRun<T>(kind_, params_, in + b, out + b, e - b);
        } else {
          IntUnaryRun<T>(kind_, in + b, out + b, e - b);
        }
      });
      return absl::OkStatus();
    });
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
  // Transcendental ops cost ~10-50x a copy per element: split them finer.
  int64_t Grain() const {
    switch (kind_) {
      case UnaryKind::kAbs:
      case UnaryKind::kNeg:
      case UnaryKind::kRelu:
      case UnaryKind::kCeil:
      case UnaryKind::kFloor:
      case UnaryKind::kRound:
      case UnaryKind::kSign:
      case UnaryKind::kBitwiseNot:
      case UnaryKind::kLeakyRelu:
        return kElementwiseGrain;
      default:
        return kElementwiseGrain / 8;
    }
  }

  absl::Status Classify(const KernelContext& ctx, const Tensor& x, Tensor& y) const {
    bool* out = y.data<bool>();
    const bool neg = params_.detect_negative;
    const bool pos = params_.detect_positive;
    const bool is_nan = kind_ == UnaryKind::kIsNaN;
    auto classify = [&](auto* in, int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const float v = static_cast<float>(in[i]);
        out[i] = is_nan ? v != v : (std::isinf(v) && ((v > 0 && pos) || (v < 0 && neg)));
      }
    };
    if (x.dtype() == DType::kF64) {
      const double* in = x.data<double>();
      ParallelFor(ctx, x.num_elements(), kElementwiseGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          const double v = in[i];
          out[i] = is_nan ? v != v : (std::isinf(v) && ((v > 0 && pos) || (v < 0 && neg)));
        }
      });
      return absl::OkStatus();
    }
    if (x.dtype() == DType::kF32) {
      const float* in = x.data<float>();
      ParallelFor(ctx, x.num_elements(), kElementwiseGrain,
                  [&](int64_t b, int64_t e) { classify(in, b, e); });
      return absl::OkStatus();
    }
    // f16 / bf16 through float.
    const auto* in = static_cast<const uint16_t*>(x.raw_data());
    ParallelFor(ctx, x.num_elements(), kElementwiseGrain, [&](int64_t b, int64_t e) {
      constexpr int64_t kBlock = 1024;
      float buf[kBlock];
      for (int64_t i = b; i < e; i += kBlock) {
        const int64_t m = std::min(kBlock, e - i);
        HalfToFloat(x.dtype(), in + i, buf, m);
        for (int64_t k = 0; k < m; ++k) {
          const float v = buf[k];
          out[i + k] = is_nan ? v != v : (std::isinf(v) && ((v > 0 && pos) || (v < 0 && neg)));
        }
      }
    });
    return absl::OkStatus();
  }

  const std::string op_;
  const UnaryKind kind_;
  const UnaryParams params_;
};

using Factory = absl::StatusOr<std::unique_ptr<Kernel>>;

}  // namespace

void RegisterUnaryKernels(KernelRegistry& registry) {
  struct Entry {
    const char* name;
    UnaryKind kind;
    double alpha, beta, gamma;  // ONNX defaults
  };
  const Entry entries[] = {
      {"Abs", UnaryKind::kAbs, 0, 0, 0},
      {"Neg", UnaryKind::kNeg, 0, 0, 0},
      {"Sqrt", UnaryKind::kSqrt, 0, 0, 0},
      {"Reciprocal", UnaryKind::kReciprocal, 0, 0, 0},
      {"Exp", UnaryKind::kExp, 0, 0, 0},
      {"Log", UnaryKind::kLog, 0, 0, 0},
      {"Ceil", UnaryKind::kCeil, 0, 0, 0},
      {"Floor", UnaryKind::kFloor, 0, 0, 0},
      {"Round", UnaryKind::kRound, 0, 0, 0},
      {"Sign", UnaryKind::kSign, 0, 0, 0},
      {"Sin", UnaryKind::kSin, 0, 0, 0},
      {"Cos", UnaryKind::kCos, 0, 0, 0},
      {"Tan", UnaryKind::kTan, 0, 0, 0},
      {"Asin", UnaryKind::kAsin, 0, 0, 0},
      {"Acos", UnaryKind::kAcos, 0, 0, 0},
      {"Atan", UnaryKind::kAtan, 0, 0, 0},
      {"Sinh", UnaryKind::kSinh, 0, 0, 0},
      {"Cosh", UnaryKind::kCosh, 0, 0, 0},
      {"Asinh", UnaryKind::kAsinh, 0, 0, 0},
      {"Acosh", UnaryKind::kAcosh, 0, 0, 0},
      {"Atanh", UnaryKind::kAtanh, 0, 0, 0},
      {"Erf", UnaryKind::kErf, 0, 0, 0},
      {"Not", UnaryKind::kNot, 0, 0, 0},
      {"BitwiseNot", UnaryKind::kBitwiseNot, 0, 0, 0},
      {"IsNaN", UnaryKind::kIsNaN, 0, 0, 0},
      {"IsInf", UnaryKind::kIsInf, 0, 0, 0},
      {"Relu", UnaryKind::kRelu, 0, 0, 0},
      {"LeakyRelu", UnaryKind::kLeakyRelu, 0.01, 0, 0},
      {"Elu", UnaryKind::kElu, 1.0, 0, 0},
      {"Selu", UnaryKind::kSelu, 1.67326319217681884765625, 0, 1.05070102214813232421875},
      {"Celu", UnaryKind::kCelu, 1.0, 0, 0},
      {"Sigmoid", UnaryKind::kSigmoid, 0, 0, 0},
      {"HardSigmoid", UnaryKind::kHardSigmoid, 0.2, 0.5, 0},
      {"HardSwish", UnaryKind::kHardSwish, 0, 0, 0},
      {"Softplus", UnaryKind::kSoftplus, 0, 0, 0},
      {"Softsign", UnaryKind::kSoftsign, 0, 0, 0},
      {"Tanh", UnaryKind::kTanh, 0, 0, 0},
      {"ThresholdedRelu", UnaryKind::kThresholdedRelu, 1.0, 0, 0},
      {"Gelu", UnaryKind::kGelu, 0, 0, 0},
      {"Mish", UnaryKind::kMish, 0, 0, 0},
  };
  for (const Entry& e : entries) {
    const std::string op = e.name;
    registry.Register(op, DeviceType::kCPU, [op, e](const Attributes& attrs) -> Factory {
      UnaryParams p;
      p.alpha = attrs.GetOr<double>("alpha", e.alpha);
      p.beta = attrs.GetOr<double>("beta", e.beta);
      p.gamma = attrs.GetOr<double>("gamma", e.gamma);
      p.detect_negative = attrs.GetOr<int64_t>("detect_negative", 1) != 0;
      p.detect_positive = attrs.GetOr<int64_t>("detect_positive", 1) != 0;
      UnaryKind kind = e.kind;
      if (kind == UnaryKind::kGelu) {
        const std::string approximate = attrs.GetOr<std::string>("approximate", "none");
        if (approximate == "tanh") {
          kind = UnaryKind::kGeluTanh;
        } else if (approximate != "none") {
          return absl::InvalidArgumentError(
              absl::StrCat("Gelu: approximate must be 'none' or 'tanh', got '", approximate, "'"));
        }
      }
      if (kind == UnaryKind::kCelu && p.alpha == 0) {
        return absl::InvalidArgumentError("Celu: alpha must be nonzero");
      }
      return std::make_unique<UnaryKernel>(op, kind, p);
    });
  }
}

}  // namespace nimble::vm::cpu
