// Cast and CastLike, and the dtype conversion every other kernel uses for half types.
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vm/kernels/cpu/elementwise_internal.h"
#include "vm/kernels/cpu/fp16.h"
#include "vm/kernels/cpu/lowp.h"

namespace nimble::vm::cpu {
namespace {

// Float -> integer: truncation toward zero, NaN -> 0, saturation to the int64 (or uint64) range,
// then the C++20 modular narrowing (what x86 and numpy do for in-range int64 values).
template <typename D, typename S>
D FloatToInt(S v) {
  if (v != v) return 0;
  const double d = static_cast<double>(v);
  if constexpr (std::is_same_v<D, uint64_t>) {
    if (d >= 18446744073709551616.0) return std::numeric_limits<uint64_t>::max();
    if (d >= 9223372036854775808.0) return static_cast<uint64_t>(d);
  }
  int64_t i;
  if (d >= 9223372036854775808.0) {
    i = std::numeric_limits<int64_t>::max();
  } else if (d < -9223372036854775808.0) {
    i = std::numeric_limits<int64_t>::min();
  } else {
    i = static_cast<int64_t>(d);
  }
  return static_cast<D>(i);
}

template <typename D, typename S>
D ConvertValue(S v) {
  if constexpr (std::is_same_v<D, bool>) {
    return v != S(0);
  } else if constexpr (std::is_floating_point_v<S> && std::is_integral_v<D>) {
    return FloatToInt<D>(v);
  } else {
    return static_cast<D>(v);
  }
}

template <typename S, typename D>
void ConvertRun(const S* in, D* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = ConvertValue<D>(in[i]);
}

std::string FloatToString(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v < 0 ? "-INF" : "INF";
  char buf[64];
  const int len = std::snprintf(buf, sizeof(buf), "%.8g", v);
  return std::string(buf, len > 0 ? static_cast<size_t>(len) : 0);
}

template <typename S>
std::string ToString(S v) {
  if constexpr (std::is_floating_point_v<S>) {
    return FloatToString(static_cast<double>(v));
  } else if constexpr (std::is_same_v<S, bool>) {
    return v ? "1" : "0";
  } else if constexpr (std::is_signed_v<S>) {
    return absl::StrCat(static_cast<int64_t>(v));
  } else {
    return absl::StrCat(static_cast<uint64_t>(v));
  }
}

absl::Status ParseError(absl::string_view op, const std::string& s, absl::string_view type) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": cannot parse string '", s, "' as ", type));
}

// ONNX parses with strtod/strtoll: numbers, "NaN", "INF", "-inf", ...
absl::Status ParseDouble(absl::string_view op, const std::string& s, double* out) {
  if (absl::SimpleAtod(s, out)) return absl::OkStatus();
  return ParseError(op, s, "a number");
}

template <typename D>
absl::Status FromString(absl::string_view op, const std::string& s, D* out) {
  if constexpr (std::is_floating_point_v<D>) {
    double d;
    NIMBLE_RETURN_IF_ERROR(ParseDouble(op, s, &d));
    *out = static_cast<D>(d);
    return absl::OkStatus();
  } else if constexpr (std::is_same_v<D, bool>) {
    const std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(s));
    if (lower == "true") {
      *out = true;
      return absl::OkStatus();
    }
    if (lower == "false") {
      *out = false;
      return absl::OkStatus();
    }
    double d;
    NIMBLE_RETURN_IF_ERROR(ParseDouble(op, s, &d));
    *out = d != 0;
    return absl::OkStatus();
  } else if constexpr (std::is_signed_v<D>) {
    int64_t v;
    if (absl::SimpleAtoi(s, &v)) {
      *out = static_cast<D>(v);
      return absl::OkStatus();
    }
    double d;
    NIMBLE_RETURN_IF_ERROR(ParseDouble(op, s, &d));
    *out = FloatToInt<D>(d);
    return absl::OkStatus();
  } else {
    uint64_t v;
    if (absl::SimpleAtoi(s, &v)) {
      *out = static_cast<D>(v);
      return absl::OkStatus();
    }
    double d;
    NIMBLE_RETURN_IF_ERROR(ParseDouble(op, s, &d));
    *out = FloatToInt<D>(d);
    return absl::OkStatus();
  }
}

inline constexpr uint32_t kCastable = kNumeric | kBoolBit;

// One-byte-per-element 4- and 2-bit integers (sign-extended when signed) <-> int64.
void LowPrecisionIntToInt64(DType d, const char* in, int64_t* out, int64_t n) {
  const bool is_signed = d == DType::kI4 || d == DType::kI2;
  for (int64_t k = 0; k < n; ++k) {
    out[k] = is_signed ? static_cast<int64_t>(static_cast<int8_t>(in[k]))
                       : static_cast<int64_t>(static_cast<uint8_t>(in[k]));
  }
}

// Integer -> 4- or 2-bit integer wraps (keeps the low bits, like the C narrowing of the wider
// integer types).
void Int64ToLowPrecisionInt(DType d, const int64_t* in, char* out, int64_t n) {
  const int bits = PackedBits(d);
  const bool is_signed = d == DType::kI4 || d == DType::kI2;
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  for (int64_t k = 0; k < n; ++k) {
    uint64_t v = static_cast<uint64_t>(in[k]) & mask;
    if (is_signed && (v >> (bits - 1)) != 0) v |= ~mask;
    out[k] = static_cast<char>(static_cast<uint8_t>(v));
  }
}

void LowPrecisionToFloat(DType d, const char* in, float* out, int64_t n) {
  if (IsLowPrecisionInteger(d)) {
    const bool is_signed = d == DType::kI4 || d == DType::kI2;
    for (int64_t k = 0; k < n; ++k) {
      out[k] = is_signed ? static_cast<float>(static_cast<int8_t>(in[k]))
                         : static_cast<float>(static_cast<uint8_t>(in[k]));
    }
    return;
  }
  // A 256-entry table per low-precision float type, built on first use.
  static const auto* const kTables = [] {
    auto* t = new std::array<std::array<float, 256>, kNumDTypes>();
    for (int dt = 0; dt < kNumDTypes; ++dt) {
      if (!IsLowPrecisionFloat(static_cast<DType>(dt))) continue;
      for (int b = 0; b < 256; ++b) {
        (*t)[dt][b] = LowPrecisionFloatToFloat(static_cast<DType>(dt), static_cast<uint8_t>(b));
      }
    }
    return t;
  }();
  const std::array<float, 256>& table = (*kTables)[static_cast<int>(d)];
  for (int64_t k = 0; k < n; ++k) out[k] = table[static_cast<uint8_t>(in[k])];
}

// Float -> 4- or 2-bit integer: like float -> the wider integers (truncation toward zero, NaN ->
// 0), then wraps to the low bits (what the ONNX reference, through ml_dtypes, does: -9 -> 7 for
// INT4).
void FloatToLowPrecision(DType d, const float* in, char* out, int64_t n,
                         const CastOptions& options) {
  if (IsLowPrecisionInteger(d)) {
    int64_t buf[1024];
    for (int64_t i = 0; i < n; i += 1024) {
      const int64_t m = std::min<int64_t>(1024, n - i);
      for (int64_t k = 0; k < m; ++k) buf[k] = FloatToInt<int64_t>(in[i + k]);
      Int64ToLowPrecisionInt(d, buf, out + i, m);
    }
    return;
  }
  for (int64_t k = 0; k < n; ++k) {
    out[k] = static_cast<char>(
        FloatToLowPrecisionFloat(d, in[k], options.saturate, options.e8m0_rounding));
  }
}

// Converts elements [begin, end) of src into dst.
absl::Status CastRange(const Tensor& src, Tensor& dst, int64_t begin, int64_t end,
                       absl::string_view op, const CastOptions& options) {
  const int64_t n = end - begin;
  if (n <= 0) return absl::OkStatus();
  const DType sd = src.dtype();
  const DType dd = dst.dtype();
  const size_t ss = DTypeSize(sd);
  const size_t ds = DTypeSize(dd);
  const char* in = static_cast<const char*>(src.raw_data()) + begin * ss;
  char* out = static_cast<char*>(dst.raw_data()) + begin * ds;
  if (sd == dd) {
    if (sd == DType::kString) {
      const auto* s = reinterpret_cast<const std::string*>(in);
      auto* d = reinterpret_cast<std::string*>(out);
      for (int64_t i = 0; i < n; ++i) d[i] = s[i];
    } else if (in != out) {
      std::memmove(out, in, n * ss);
    }
    return absl::OkStatus();
  }
  // The 4- and 2-bit integers to and from integers and bool go through int64 (exactly).
  const auto int_like = [](DType d) {
    return IsInteger(d) || d == DType::kBool || IsLowPrecisionInteger(d);
  };
  if ((IsLowPrecisionInteger(sd) || IsLowPrecisionInteger(dd)) && int_like(sd) && int_like(dd)) {
    constexpr int64_t kBlock = 1024;
    int64_t buf[kBlock];
    for (int64_t i = 0; i < n; i += kBlock) {
      const int64_t m = std::min(kBlock, n - i);
      if (IsLowPrecisionInteger(sd)) {
        LowPrecisionIntToInt64(sd, in + i, buf, m);
      } else {
        NIMBLE_RETURN_IF_ERROR(VisitDType<kCastable>(sd, op, [&](auto tag) {
          using S = typename decltype(tag)::type;
          ConvertRun(reinterpret_cast<const S*>(in) + i, buf, m);
          return absl::OkStatus();
        }));
      }
      if (IsLowPrecisionInteger(dd)) {
        Int64ToLowPrecisionInt(dd, buf, out + i, m);
      } else {
        NIMBLE_RETURN_IF_ERROR(VisitDType<kCastable>(dd, op, [&](auto tag) {
          using D = typename decltype(tag)::type;
          ConvertRun(buf, reinterpret_cast<D*>(out) + i, m);
          return absl::OkStatus();
        }));
      }
    }
    return absl::OkStatus();
  }
  // Half and low-precision types go through float in blocks.
  const auto via_float = [](DType d) { return IsHalf(d) || IsLowPrecision(d); };
  if (via_float(sd) || via_float(dd)) {
    constexpr int64_t kBlock = 1024;
    float buf[kBlock];
    for (int64_t i = 0; i < n; i += kBlock) {
      const int64_t m = std::min(kBlock, n - i);
      // Source block -> float.
      if (IsHalf(sd)) {
        HalfToFloat(sd, in + i * ss, buf, m);
      } else if (IsLowPrecision(sd)) {
        LowPrecisionToFloat(sd, in + i, buf, m);
      } else if (sd == DType::kString) {
        const auto* s = reinterpret_cast<const std::string*>(in) + i;
        for (int64_t k = 0; k < m; ++k) NIMBLE_RETURN_IF_ERROR(FromString(op, s[k], &buf[k]));
      } else {
        NIMBLE_RETURN_IF_ERROR(VisitDType<kCastable>(sd, op, [&](auto tag) {
          using S = typename decltype(tag)::type;
          ConvertRun(reinterpret_cast<const S*>(in) + i, buf, m);
          return absl::OkStatus();
        }));
      }
      // Float block -> destination.
      if (IsHalf(dd)) {
        FloatToHalf(dd, buf, out + i * ds, m);
      } else if (IsLowPrecision(dd)) {
        FloatToLowPrecision(dd, buf, out + i, m, options);
      } else if (dd == DType::kString) {
        auto* d = reinterpret_cast<std::string*>(out) + i;
        for (int64_t k = 0; k < m; ++k) d[k] = ToString(buf[k]);
      } else {
        NIMBLE_RETURN_IF_ERROR(VisitDType<kCastable>(dd, op, [&](auto tag) {
          using D = typename decltype(tag)::type;
          ConvertRun(buf, reinterpret_cast<D*>(out) + i, m);
          return absl::OkStatus();
        }));
      }
    }
    return absl::OkStatus();
  }
  if (sd == DType::kString) {
    const auto* s = reinterpret_cast<const std::string*>(in);
    return VisitDType<kCastable>(dd, op, [&](auto tag) -> absl::Status {
      using D = typename decltype(tag)::type;
      D* d = reinterpret_cast<D*>(out);
      for (int64_t k = 0; k < n; ++k) NIMBLE_RETURN_IF_ERROR(FromString(op, s[k], &d[k]));
      return absl::OkStatus();
    });
  }
  if (dd == DType::kString) {
    auto* d = reinterpret_cast<std::string*>(out);
    return VisitDType<kCastable>(sd, op, [&](auto tag) {
      using S = typename decltype(tag)::type;
      const S* s = reinterpret_cast<const S*>(in);
      for (int64_t k = 0; k < n; ++k) d[k] = ToString(s[k]);
      return absl::OkStatus();
    });
  }
  return VisitDType<kCastable>(sd, op, [&](auto stag) {
    using S = typename decltype(stag)::type;
    return VisitDType<kCastable>(dd, op, [&](auto dtag) {
      using D = typename decltype(dtag)::type;
      ConvertRun(reinterpret_cast<const S*>(in), reinterpret_cast<D*>(out), n);
      return absl::OkStatus();
    });
  });
}

absl::Status CheckCastable(absl::string_view op, DType d) {
  if (d == DType::kInvalid) return absl::InvalidArgumentError(absl::StrCat(op, ": invalid dtype"));
  return absl::OkStatus();
}

absl::Status ParallelCast(const KernelContext& ctx, const Tensor& src, Tensor& dst,
                          absl::string_view op, const CastOptions& options) {
  NIMBLE_RETURN_IF_ERROR(CheckCastable(op, src.dtype()));
  NIMBLE_RETURN_IF_ERROR(CheckCastable(op, dst.dtype()));
  if (src.num_elements() != dst.num_elements()) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": output ", dst.TypeString(),
                                                   " does not match input ", src.TypeString()));
  }
  const bool strings = src.dtype() == DType::kString || dst.dtype() == DType::kString;
  if (strings || ctx.num_threads <= 1) {
    return CastRange(src, dst, 0, src.num_elements(), op, options);
  }
  // Numeric conversions cannot fail once the dtypes are valid (checked above).
  ParallelFor(ctx, src.num_elements(), kElementwiseGrain,
              [&](int64_t b, int64_t e) { CastRange(src, dst, b, e, op, options).IgnoreError(); });
  return absl::OkStatus();
}

class CastKernel final : public Kernel {
 public:
  CastKernel(std::string op, DType to, CastOptions options)
      : op_(std::move(op)), to_(to), options_(options) {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    const size_t arity = op_ == "CastLike" ? 2 : 1;
    NIMBLE_RETURN_IF_ERROR(CheckArity(op_, inputs, arity, arity, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(op_, inputs, arity));
    const DType to = arity == 2 ? inputs[1].dtype() : to_;
    NIMBLE_RETURN_IF_ERROR(CheckOutput(op_, outputs[0], to, inputs[0].shape()));
    return ParallelCast(ctx, inputs[0], outputs[0], op_, options_);
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.empty() || !inputs[0].defined() || output_shapes.size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(op_, ": expected an input and one output"));
    }
    output_shapes[0] = inputs[0].shape();
    return absl::OkStatus();
  }

 private:
  const std::string op_;
  const DType to_;
  const CastOptions options_;
};

// Cast's and CastLike's 'saturate' (default 1) and 'round_mode' (default "up").
absl::StatusOr<CastOptions> CastOptionsFrom(absl::string_view op, const Attributes& attrs) {
  CastOptions options;
  options.saturate = attrs.GetOr<int64_t>("saturate", 1) != 0;
  const std::string mode = attrs.GetOr<std::string>("round_mode", "up");
  if (mode == "up") {
    options.e8m0_rounding = E8M0Rounding::kUp;
  } else if (mode == "down") {
    options.e8m0_rounding = E8M0Rounding::kDown;
  } else if (mode == "nearest") {
    options.e8m0_rounding = E8M0Rounding::kNearest;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": round_mode must be \"up\", \"down\" or \"nearest\", got \"", mode, "\""));
  }
  return options;
}

}  // namespace

void HalfToFloat(DType d, const void* in, float* out, int64_t n) {
  const auto* h = static_cast<const uint16_t*>(in);
  if (d == DType::kF16) {
    cpu::HalfToFloat(h, out, n);
  } else {
    cpu::BFloat16ToFloat(h, out, n);
  }
}

void FloatToHalf(DType d, const float* in, void* out, int64_t n) {
  auto* h = static_cast<uint16_t*>(out);
  if (d == DType::kF16) {
    cpu::FloatToHalf(in, h, n);
  } else {
    cpu::FloatToBFloat16(in, h, n);
  }
}

absl::Status CastInto(const Tensor& src, Tensor& dst, absl::string_view op,
                      const CastOptions& options) {
  return ParallelCast(KernelContext{}, src, dst, op, options);
}

absl::StatusOr<Tensor> CastTo(const Tensor& src, DType dtype, absl::string_view op,
                              const CastOptions& options) {
  NIMBLE_ASSIGN_OR_RETURN(Tensor dst, Tensor::Empty(dtype, src.shape()));
  NIMBLE_RETURN_IF_ERROR(CastInto(src, dst, op, options));
  return dst;
}

namespace {

// BitCast (opset 26): the input's bits reinterpreted as `to` of the same bit width. Elements of
// the 4- and 2-bit types live one per byte (sign-extended when signed), so between those the
// low bits are kept and re-extended for the target's signedness; all others copy bytes.
class BitCastKernel final : public Kernel {
 public:
  explicit BitCastKernel(DType to) : to_(to) {}

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("BitCast", inputs, 1, 1, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired("BitCast", inputs, 1));
    const Tensor& x = inputs[0];
    NIMBLE_RETURN_IF_ERROR(CheckWidths(x.dtype()));
    NIMBLE_RETURN_IF_ERROR(CheckOutput("BitCast", outputs[0], to_, x.shape()));
    const int packed = PackedBits(to_);
    if (packed == 0) {
      if (x.nbytes() > 0) std::memcpy(outputs[0].raw_data(), x.raw_data(), x.nbytes());
      return absl::OkStatus();
    }
    const auto* in = static_cast<const uint8_t*>(x.raw_data());
    auto* out = static_cast<uint8_t*>(outputs[0].raw_data());
    const unsigned mask = (1u << packed) - 1;
    const bool sign = IsSigned(to_);
    for (int64_t i = 0; i < x.num_elements(); ++i) {
      unsigned v = in[i] & mask;
      if (sign && (v >> (packed - 1)) != 0) v |= ~mask;  // sign-extend into the byte
      out[i] = static_cast<uint8_t>(v);
    }
    return absl::OkStatus();
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.empty() || !inputs[0].defined()) {
      return absl::InvalidArgumentError("BitCast: input is required");
    }
    NIMBLE_RETURN_IF_ERROR(CheckWidths(inputs[0].dtype()));
    output_shapes[0] = inputs[0].shape();
    return absl::OkStatus();
  }

 private:
  static int Bits(DType d) {
    return PackedBits(d) != 0 ? PackedBits(d) : static_cast<int>(8 * DTypeSize(d));
  }
  absl::Status CheckWidths(DType from) const {
    if (from == DType::kString || to_ == DType::kString || Bits(from) != Bits(to_)) {
      return absl::InvalidArgumentError(absl::StrCat("BitCast from ", DTypeName(from), " to ",
                                                     DTypeName(to_),
                                                     ": the bit widths must be equal"));
    }
    return absl::OkStatus();
  }

  const DType to_;
};

}  // namespace

void RegisterCastKernels(KernelRegistry& registry) {
  registry.Register("BitCast", DeviceType::kCPU,
                    [](const Attributes& attrs) -> absl::StatusOr<std::unique_ptr<Kernel>> {
                      NIMBLE_ASSIGN_OR_RETURN(int64_t to, attrs.Get<int64_t>("to"));
                      NIMBLE_ASSIGN_OR_RETURN(DType dtype, DTypeFromOnnx(to));
                      return std::make_unique<BitCastKernel>(dtype);
                    });
  registry.Register("Cast", DeviceType::kCPU,
                    [](const Attributes& attrs) -> absl::StatusOr<std::unique_ptr<Kernel>> {
                      NIMBLE_ASSIGN_OR_RETURN(int64_t to, attrs.Get<int64_t>("to"));
                      NIMBLE_ASSIGN_OR_RETURN(DType dtype, DTypeFromOnnx(to));
                      NIMBLE_ASSIGN_OR_RETURN(CastOptions options, CastOptionsFrom("Cast", attrs));
                      return std::make_unique<CastKernel>("Cast", dtype, options);
                    });
  registry.Register("CastLike", DeviceType::kCPU,
                    [](const Attributes& attrs) -> absl::StatusOr<std::unique_ptr<Kernel>> {
                      NIMBLE_ASSIGN_OR_RETURN(CastOptions options,
                                              CastOptionsFrom("CastLike", attrs));
                      return std::make_unique<CastKernel>("CastLike", DType::kInvalid, options);
                    });
}

}  // namespace nimble::vm::cpu
