// Low-precision float formats <-> float: the ONNX float8 types (E4M3FN, E4M3FNUZ, E5M2,
// E5M2FNUZ), FLOAT4E2M1 and FLOAT8E8M0, one element per byte (float4 in the low nibble).
//
// Encoding follows the ONNX Cast spec and its reference implementation (ml_dtypes):
//   * round to nearest, ties to even;
//   * saturate (the default of Cast and QuantizeLinear): values beyond the largest finite
//     value, infinities included, become +-max; without it they become NaN, or infinity for
//     E5M2 (the only type with one);
//   * NaN stays NaN (0x7F|sign for E4M3FN, 0x7E|sign for E5M2, 0x80 for the FNUZ types);
//   * the FNUZ types have no negative zero: -0 and negative values that round to zero give 0;
//   * FLOAT4E2M1 has neither infinity nor NaN: it always saturates to +-6; NaN becomes the
//     bit pattern 0x8 (-0), what ml_dtypes and the ONNX test data give;
//   * FLOAT8E8M0 (2^(e-127), 0xFF = NaN, no sign and no zero) takes the float's exponent and
//     rounds by round_mode: "up" (any fraction rounds up, the default), "down" (truncate),
//     "nearest" (ties up); NaN and infinity give NaN; with saturate, rounding never carries
//     past 2^127 (0xFE).
// Decoding is exact.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "vm/runtime/dtype.h"

namespace nimble::vm::cpu {

namespace lowp_internal {

// A sign / exponent / mantissa minifloat.
struct MiniFloat {
  int mant_bits;
  int bias;
  int max_exp_field;  // largest exponent field of a finite value
  int max_mant;       // largest mantissa field at max_exp_field
  enum Kind { kIeee, kFn, kFnuz, kNoNan } kind;
  int sign_bit;  // position of the sign bit
};

// E4M3FN: exponent 15 with mantissa 7 is NaN, no infinity: max 1.75 * 2^8 = 448.
inline constexpr MiniFloat kE4M3FN = {3, 7, 15, 6, MiniFloat::kFn, 7};
// E4M3FNUZ: 0x80 is NaN, no -0: max 1.875 * 2^7 = 240.
inline constexpr MiniFloat kE4M3FNUZ = {3, 8, 15, 7, MiniFloat::kFnuz, 7};
// E5M2: IEEE-like (exponent 31 is Inf/NaN): max 1.75 * 2^15 = 57344.
inline constexpr MiniFloat kE5M2 = {2, 15, 30, 3, MiniFloat::kIeee, 7};
// E5M2FNUZ: 0x80 is NaN, no -0: max 1.75 * 2^15 = 57344.
inline constexpr MiniFloat kE5M2FNUZ = {2, 16, 31, 3, MiniFloat::kFnuz, 7};
// E2M1: no NaN, no infinity: max 1.5 * 2^2 = 6.
inline constexpr MiniFloat kE2M1 = {1, 1, 3, 1, MiniFloat::kNoNan, 3};

inline float Decode(const MiniFloat& f, uint8_t bits) {
  const int exp_bits = f.sign_bit - f.mant_bits;
  const uint32_t sign = (bits >> f.sign_bit) & 1u;
  const int exp = (bits >> f.mant_bits) & ((1 << exp_bits) - 1);
  const int mant = bits & ((1 << f.mant_bits) - 1);
  switch (f.kind) {
    case MiniFloat::kFn:
      if (exp == (1 << exp_bits) - 1 && mant == (1 << f.mant_bits) - 1) {
        return std::numeric_limits<float>::quiet_NaN();
      }
      break;
    case MiniFloat::kFnuz:
      if (sign != 0 && exp == 0 && mant == 0) return std::numeric_limits<float>::quiet_NaN();
      break;
    case MiniFloat::kIeee:
      if (exp == (1 << exp_bits) - 1) {
        if (mant != 0) return std::numeric_limits<float>::quiet_NaN();
        return sign ? -std::numeric_limits<float>::infinity()
                    : std::numeric_limits<float>::infinity();
      }
      break;
    case MiniFloat::kNoNan:
      break;
  }
  const double m =
      exp == 0 ? static_cast<double>(mant) : static_cast<double>(mant + (1 << f.mant_bits));
  const int e = (exp == 0 ? 1 : exp) - f.bias - f.mant_bits;
  const float v = static_cast<float>(std::ldexp(m, e));
  return sign ? -v : v;
}

// What NaN becomes in a type without NaN (FLOAT4E2M1): the "-0" pattern, as ml_dtypes does.
inline constexpr uint8_t kNanFreeNanBits = 0x8;

inline uint8_t NanBits(const MiniFloat& f, uint8_t sign) {
  switch (f.kind) {
    case MiniFloat::kFn:
      return static_cast<uint8_t>(sign | 0x7F);
    case MiniFloat::kIeee:
      return static_cast<uint8_t>(sign | 0x7E);
    case MiniFloat::kFnuz:
      return 0x80;
    case MiniFloat::kNoNan:
      break;
  }
  return kNanFreeNanBits;
}

inline uint8_t Encode(const MiniFloat& f, float x, bool saturate) {
  const uint8_t sign_mask = static_cast<uint8_t>(1u << f.sign_bit);
  const uint8_t sign = std::signbit(x) ? sign_mask : 0;
  const uint8_t max_bits = static_cast<uint8_t>((f.max_exp_field << f.mant_bits) | f.max_mant);
  const bool can_saturate = saturate || f.kind == MiniFloat::kNoNan;
  if (std::isnan(x)) return NanBits(f, sign);
  if (std::isinf(x)) {
    if (can_saturate) return static_cast<uint8_t>(sign | max_bits);
    if (f.kind == MiniFloat::kIeee) return static_cast<uint8_t>(sign | 0x7C);
    return NanBits(f, sign);
  }
  const double a = std::fabs(static_cast<double>(x));
  const int emin = 1 - f.bias;  // exponent of the smallest normal
  int e = a == 0 ? emin : std::ilogb(a);
  if (e < emin) e = emin;
  // Round to a multiple of the quantum of a's binade (the subnormal quantum below emin).
  const double quantum = std::ldexp(1.0, e - f.mant_bits);
  const double r = std::nearbyint(a / quantum);  // ties to even (default rounding mode)
  const double max_value = std::ldexp(static_cast<double>(f.max_mant + (1 << f.mant_bits)),
                                      f.max_exp_field - f.bias - f.mant_bits);
  const double v = r * quantum;
  if (v > max_value) {
    if (can_saturate) return static_cast<uint8_t>(sign | max_bits);
    if (f.kind == MiniFloat::kIeee) return static_cast<uint8_t>(sign | 0x7C);
    return NanBits(f, sign);
  }
  if (v == 0) return f.kind == MiniFloat::kFnuz ? 0 : sign;
  uint32_t code;
  // r counts quanta of 2^(e - mant_bits); r == 2^(mant_bits + 1) carried into the next binade.
  auto m = static_cast<uint32_t>(r);
  if (m < (1u << f.mant_bits)) {
    code = m;  // subnormal (e == emin)
  } else {
    int field = e + f.bias;
    if (m >= (2u << f.mant_bits)) {
      m >>= 1;
      ++field;
    }
    code = (static_cast<uint32_t>(field) << f.mant_bits) | (m - (1u << f.mant_bits));
  }
  return static_cast<uint8_t>(sign | code);
}

}  // namespace lowp_internal

inline float Float8E4M3FNToFloat(uint8_t b) {
  return lowp_internal::Decode(lowp_internal::kE4M3FN, b);
}
inline float Float8E4M3FNUZToFloat(uint8_t b) {
  return lowp_internal::Decode(lowp_internal::kE4M3FNUZ, b);
}
inline float Float8E5M2ToFloat(uint8_t b) { return lowp_internal::Decode(lowp_internal::kE5M2, b); }
inline float Float8E5M2FNUZToFloat(uint8_t b) {
  return lowp_internal::Decode(lowp_internal::kE5M2FNUZ, b);
}
inline float Float4E2M1ToFloat(uint8_t b) {
  return lowp_internal::Decode(lowp_internal::kE2M1, static_cast<uint8_t>(b & 0xF));
}
inline float Float8E8M0ToFloat(uint8_t b) {
  if (b == 0xFF) return std::numeric_limits<float>::quiet_NaN();
  return static_cast<float>(std::ldexp(1.0, static_cast<int>(b) - 127));
}

inline uint8_t FloatToFloat8E4M3FN(float x, bool saturate = true) {
  return lowp_internal::Encode(lowp_internal::kE4M3FN, x, saturate);
}
inline uint8_t FloatToFloat8E4M3FNUZ(float x, bool saturate = true) {
  return lowp_internal::Encode(lowp_internal::kE4M3FNUZ, x, saturate);
}
inline uint8_t FloatToFloat8E5M2(float x, bool saturate = true) {
  return lowp_internal::Encode(lowp_internal::kE5M2, x, saturate);
}
inline uint8_t FloatToFloat8E5M2FNUZ(float x, bool saturate = true) {
  return lowp_internal::Encode(lowp_internal::kE5M2FNUZ, x, saturate);
}
inline uint8_t FloatToFloat4E2M1(float x) {
  return lowp_internal::Encode(lowp_internal::kE2M1, x, true);
}

enum class E8M0Rounding { kUp, kDown, kNearest };

inline uint8_t FloatToFloat8E8M0(float x, bool saturate = true,
                                 E8M0Rounding rounding = E8M0Rounding::kUp) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  uint32_t exp = (bits >> 23) & 0xFF;
  if (exp == 0xFF) return 0xFF;  // NaN and infinities
  bool round_up = false;
  switch (rounding) {
    case E8M0Rounding::kUp:
      round_up = (bits & 0x7FFFFF) != 0;
      break;
    case E8M0Rounding::kDown:
      break;
    case E8M0Rounding::kNearest: {
      // Guard bit set and anything after it, or an odd (non-zero) exponent: ties go up.
      const bool guard = (bits & 0x400000) != 0;
      const bool rest = (bits & 0x3FFFFF) != 0;
      round_up = guard && (rest || exp > 0);
      break;
    }
  }
  if (round_up && !(saturate && exp == 0xFE)) ++exp;
  return static_cast<uint8_t>(exp);
}

// Any low-precision float dtype (IsLowPrecisionFloat) <-> float. Not for other dtypes.
inline float LowPrecisionFloatToFloat(DType d, uint8_t b) {
  switch (d) {
    case DType::kF8E4M3FN:
      return Float8E4M3FNToFloat(b);
    case DType::kF8E4M3FNUZ:
      return Float8E4M3FNUZToFloat(b);
    case DType::kF8E5M2:
      return Float8E5M2ToFloat(b);
    case DType::kF8E5M2FNUZ:
      return Float8E5M2FNUZToFloat(b);
    case DType::kF4E2M1:
      return Float4E2M1ToFloat(b);
    case DType::kF8E8M0:
      return Float8E8M0ToFloat(b);
    default:
      return std::numeric_limits<float>::quiet_NaN();
  }
}

inline uint8_t FloatToLowPrecisionFloat(DType d, float x, bool saturate = true,
                                        E8M0Rounding rounding = E8M0Rounding::kUp) {
  switch (d) {
    case DType::kF8E4M3FN:
      return FloatToFloat8E4M3FN(x, saturate);
    case DType::kF8E4M3FNUZ:
      return FloatToFloat8E4M3FNUZ(x, saturate);
    case DType::kF8E5M2:
      return FloatToFloat8E5M2(x, saturate);
    case DType::kF8E5M2FNUZ:
      return FloatToFloat8E5M2FNUZ(x, saturate);
    case DType::kF4E2M1:
      return FloatToFloat4E2M1(x);
    case DType::kF8E8M0:
      return FloatToFloat8E8M0(x, saturate, rounding);
    default:
      return 0;
  }
}

}  // namespace nimble::vm::cpu
