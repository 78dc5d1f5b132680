// IEEE float16 and bfloat16 <-> float conversions (round to nearest even, NaN kept quiet,
// overflow to infinity), scalar and array forms. Kernels compute half types in float: they
// convert a block, run the float code, and convert back.
#pragma once

#include <cstdint>
#include <cstring>

namespace nimble::vm::cpu {

inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

inline float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

inline float HalfToFloat(uint16_t h) {
  constexpr uint32_t kShiftedExp = 0x7c00u << 13;  // exponent mask after the shift
  uint32_t o = static_cast<uint32_t>(h & 0x7fffu) << 13;
  const uint32_t exp = kShiftedExp & o;
  o += (127u - 15u) << 23;  // rebias
  if (exp == kShiftedExp) {
    o += (128u - 16u) << 23;  // Inf/NaN: exponent all ones
  } else if (exp == 0) {
    o += 1u << 23;  // zero/subnormal: renormalise through a float subtraction
    o = FloatBits(BitsToFloat(o) - BitsToFloat(113u << 23));
  }
  o |= static_cast<uint32_t>(h & 0x8000u) << 16;
  return BitsToFloat(o);
}

inline uint16_t FloatToHalf(float value) {
  uint32_t f = FloatBits(value);
  const uint32_t sign = f & 0x80000000u;
  f ^= sign;
  uint32_t o;
  if (f >= 0x47800000u) {  // >= 65536 (rounds to Inf), Inf or NaN
    o = f > 0x7f800000u ? 0x7e00u : 0x7c00u;
  } else if (f < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    // Adding 0.5 aligns the mantissa so the FPU does the round-to-nearest-even for us.
    const float denorm_magic = BitsToFloat(((127u - 15u) + (23u - 10u) + 1u) << 23);
    o = FloatBits(BitsToFloat(f) + denorm_magic) - FloatBits(denorm_magic);
  } else {
    const uint32_t mant_odd = (f >> 13) & 1u;
    f += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu;  // rebias, round half up
    f += mant_odd;                                          // ... to even
    o = f >> 13;
  }
  return static_cast<uint16_t>(o | (sign >> 16));
}

inline float BFloat16ToFloat(uint16_t b) { return BitsToFloat(static_cast<uint32_t>(b) << 16); }

inline uint16_t FloatToBFloat16(float value) {
  const uint32_t u = FloatBits(value);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // NaN
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

inline void HalfToFloat(const uint16_t* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = HalfToFloat(in[i]);
}
inline void FloatToHalf(const float* in, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = FloatToHalf(in[i]);
}
inline void BFloat16ToFloat(const uint16_t* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = BFloat16ToFloat(in[i]);
}
inline void FloatToBFloat16(const float* in, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = FloatToBFloat16(in[i]);
}

}  // namespace nimble::vm::cpu
