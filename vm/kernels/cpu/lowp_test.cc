#include "vm/kernels/cpu/lowp.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include "gtest/gtest.h"

namespace nimble::vm::cpu {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

TEST(LowpTest, Float8E4M3FNEncode) {
  EXPECT_EQ(FloatToFloat8E4M3FN(1.0f), 0x38);
  EXPECT_EQ(FloatToFloat8E4M3FN(-2.0f), 0xC0);
  EXPECT_EQ(FloatToFloat8E4M3FN(448.0f), 0x7E);
  EXPECT_EQ(FloatToFloat8E4M3FN(-448.0f), 0xFE);
  EXPECT_EQ(FloatToFloat8E4M3FN(0.015625f), 0x08);       // 2^-6, smallest normal
  EXPECT_EQ(FloatToFloat8E4M3FN(0.001953125f), 0x01);    // 2^-9, smallest subnormal
  EXPECT_EQ(FloatToFloat8E4M3FN(0.0009765625f), 0x00);   // 2^-10: tie, to even (0)
  EXPECT_EQ(FloatToFloat8E4M3FN(0.00146484375f), 0x01);  // 0.75 * 2^-9 rounds up
  EXPECT_EQ(FloatToFloat8E4M3FN(0.0f), 0x00);
  EXPECT_EQ(FloatToFloat8E4M3FN(-0.0f), 0x80);
  // Ties to even: 1.0625 lies between 0x38 (1.0) and 0x39 (1.125); 1.1875 between 0x39 and 0x3A.
  EXPECT_EQ(FloatToFloat8E4M3FN(1.0625f), 0x38);
  EXPECT_EQ(FloatToFloat8E4M3FN(1.1875f), 0x3A);
  // Out of range: saturate to +-448, or NaN without saturation.
  EXPECT_EQ(FloatToFloat8E4M3FN(464.0f, false), 0x7E);  // tie between 448 and 480: even
  EXPECT_EQ(FloatToFloat8E4M3FN(470.0f, true), 0x7E);
  EXPECT_EQ(FloatToFloat8E4M3FN(470.0f, false), 0x7F);
  EXPECT_EQ(FloatToFloat8E4M3FN(1e6f, true), 0x7E);
  EXPECT_EQ(FloatToFloat8E4M3FN(-1e6f, true), 0xFE);
  EXPECT_EQ(FloatToFloat8E4M3FN(-1e6f, false), 0xFF);
  EXPECT_EQ(FloatToFloat8E4M3FN(kInf, true), 0x7E);
  EXPECT_EQ(FloatToFloat8E4M3FN(-kInf, true), 0xFE);
  EXPECT_EQ(FloatToFloat8E4M3FN(kInf, false), 0x7F);
  EXPECT_EQ(FloatToFloat8E4M3FN(kNaN), 0x7F);
  EXPECT_EQ(FloatToFloat8E4M3FN(-kNaN), 0xFF);
}

TEST(LowpTest, Float8E4M3FNDecode) {
  EXPECT_EQ(Float8E4M3FNToFloat(0x38), 1.0f);
  EXPECT_EQ(Float8E4M3FNToFloat(0x7E), 448.0f);
  EXPECT_EQ(Float8E4M3FNToFloat(0xFE), -448.0f);
  EXPECT_EQ(Float8E4M3FNToFloat(0x01), 0.001953125f);
  EXPECT_EQ(Float8E4M3FNToFloat(0x07), 0.013671875f);  // largest subnormal, 7 * 2^-9
  EXPECT_TRUE(std::signbit(Float8E4M3FNToFloat(0x80)));
  EXPECT_EQ(Float8E4M3FNToFloat(0x80), 0.0f);
  EXPECT_TRUE(std::isnan(Float8E4M3FNToFloat(0x7F)));
  EXPECT_TRUE(std::isnan(Float8E4M3FNToFloat(0xFF)));
  // Every non-NaN pattern round-trips.
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7F) == 0x7F) continue;
    EXPECT_EQ(FloatToFloat8E4M3FN(Float8E4M3FNToFloat(static_cast<uint8_t>(b)), false), b) << b;
  }
}

TEST(LowpTest, Float8E4M3FNUZ) {
  EXPECT_EQ(FloatToFloat8E4M3FNUZ(1.0f), 0x40);
  EXPECT_EQ(FloatToFloat8E4M3FNUZ(240.0f), 0x7F);
  EXPECT_EQ(FloatToFloat8E4M3FNUZ(-240.0f), 0xFF);
  EXPECT_EQ(FloatToFloat8E4M3FNUZ(0.0009765625f), 0x01);  // 2^-10, smallest subnormal
  EXPECT_EQ(FloatToFloat8E4M3FNUZ(-0.0f), 0x00);          // no negative zero
  EXPECT_EQ(FloatToFloat8E4M3FNUZ(-0.0001f), 0x00);       // rounds to zero: +0
  EXPECT_EQ(FloatToFloat8E4M3FNUZ(kInf, true), 0x7F);
  EXPECT_EQ(FloatToFloat8E4M3FNUZ(-kInf, true), 0xFF);
  EXPECT_EQ(FloatToFloat8E4M3FNUZ(kInf, false), 0x80);
  EXPECT_EQ(FloatToFloat8E4M3FNUZ(300.0f, false), 0x80);
  EXPECT_EQ(FloatToFloat8E4M3FNUZ(kNaN), 0x80);
  EXPECT_EQ(Float8E4M3FNUZToFloat(0x40), 1.0f);
  EXPECT_EQ(Float8E4M3FNUZToFloat(0x7F), 240.0f);
  EXPECT_TRUE(std::isnan(Float8E4M3FNUZToFloat(0x80)));
  EXPECT_EQ(Float8E4M3FNUZToFloat(0xFF), -240.0f);
}

TEST(LowpTest, Float8E5M2) {
  EXPECT_EQ(FloatToFloat8E5M2(1.0f), 0x3C);
  EXPECT_EQ(FloatToFloat8E5M2(57344.0f), 0x7B);
  EXPECT_EQ(FloatToFloat8E5M2(0.0000152587890625f), 0x01);  // 2^-16, smallest subnormal
  EXPECT_EQ(FloatToFloat8E5M2(-0.0f), 0x80);
  // 61440 is the tie between 57344 (odd mantissa) and 65536 (infinity).
  EXPECT_EQ(FloatToFloat8E5M2(61440.0f, true), 0x7B);
  EXPECT_EQ(FloatToFloat8E5M2(61440.0f, false), 0x7C);
  EXPECT_EQ(FloatToFloat8E5M2(60000.0f, false), 0x7B);
  EXPECT_EQ(FloatToFloat8E5M2(kInf, true), 0x7B);
  EXPECT_EQ(FloatToFloat8E5M2(kInf, false), 0x7C);
  EXPECT_EQ(FloatToFloat8E5M2(-kInf, false), 0xFC);
  EXPECT_EQ(FloatToFloat8E5M2(-1e9f, false), 0xFC);
  EXPECT_EQ(FloatToFloat8E5M2(kNaN), 0x7E);
  EXPECT_EQ(Float8E5M2ToFloat(0x7B), 57344.0f);
  EXPECT_EQ(Float8E5M2ToFloat(0x7C), kInf);
  EXPECT_EQ(Float8E5M2ToFloat(0xFC), -kInf);
  EXPECT_TRUE(std::isnan(Float8E5M2ToFloat(0x7D)));
  EXPECT_TRUE(std::isnan(Float8E5M2ToFloat(0xFF)));
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7F) > 0x7C) continue;
    EXPECT_EQ(FloatToFloat8E5M2(Float8E5M2ToFloat(static_cast<uint8_t>(b)), false), b) << b;
  }
}

TEST(LowpTest, Float8E5M2FNUZ) {
  EXPECT_EQ(FloatToFloat8E5M2FNUZ(1.0f), 0x40);
  EXPECT_EQ(FloatToFloat8E5M2FNUZ(57344.0f), 0x7F);
  EXPECT_EQ(FloatToFloat8E5M2FNUZ(0.00000762939453125f), 0x01);  // 2^-17
  EXPECT_EQ(FloatToFloat8E5M2FNUZ(-0.0f), 0x00);
  EXPECT_EQ(FloatToFloat8E5M2FNUZ(1e6f, true), 0x7F);
  EXPECT_EQ(FloatToFloat8E5M2FNUZ(-1e6f, true), 0xFF);
  EXPECT_EQ(FloatToFloat8E5M2FNUZ(1e6f, false), 0x80);
  EXPECT_EQ(FloatToFloat8E5M2FNUZ(kInf, false), 0x80);
  EXPECT_EQ(FloatToFloat8E5M2FNUZ(kNaN), 0x80);
  EXPECT_EQ(Float8E5M2FNUZToFloat(0x7F), 57344.0f);
  EXPECT_TRUE(std::isnan(Float8E5M2FNUZToFloat(0x80)));
  for (int b = 0; b < 256; ++b) {
    if (b == 0x80) continue;
    EXPECT_EQ(FloatToFloat8E5M2FNUZ(Float8E5M2FNUZToFloat(static_cast<uint8_t>(b)), false), b) << b;
  }
}

TEST(LowpTest, Float4E2M1) {
  const float values[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  for (int b = 0; b < 8; ++b) {
    EXPECT_EQ(Float4E2M1ToFloat(static_cast<uint8_t>(b)), values[b]) << b;
    EXPECT_EQ(Float4E2M1ToFloat(static_cast<uint8_t>(b | 8)), -values[b]) << b;
    EXPECT_EQ(FloatToFloat4E2M1(values[b]), b);
    EXPECT_EQ(FloatToFloat4E2M1(-values[b]), b | 8);
  }
  EXPECT_EQ(FloatToFloat4E2M1(0.25f), 0x0);  // ties to even
  EXPECT_EQ(FloatToFloat4E2M1(0.75f), 0x2);
  EXPECT_EQ(FloatToFloat4E2M1(2.5f), 0x4);
  EXPECT_EQ(FloatToFloat4E2M1(5.0f), 0x6);
  EXPECT_EQ(FloatToFloat4E2M1(5.1f), 0x7);
  EXPECT_EQ(FloatToFloat4E2M1(100.0f), 0x7);  // always saturates
  EXPECT_EQ(FloatToFloat4E2M1(-100.0f), 0xF);
  EXPECT_EQ(FloatToFloat4E2M1(kInf), 0x7);
  EXPECT_EQ(FloatToFloat4E2M1(-kInf), 0xF);
  EXPECT_EQ(FloatToFloat4E2M1(kNaN), 0x8);
  EXPECT_EQ(FloatToFloat4E2M1(-0.0f), 0x8);
  EXPECT_EQ(FloatToFloat4E2M1(0.01f), 0x0);
  EXPECT_EQ(FloatToFloat4E2M1(-3.5f), 0xE);
  EXPECT_EQ(Float4E2M1ToFloat(0xF7), 6.0f);  // only the low nibble counts
}

TEST(LowpTest, Float8E8M0) {
  EXPECT_EQ(FloatToFloat8E8M0(1.0f), 0x7F);
  EXPECT_EQ(FloatToFloat8E8M0(-4.0f), 0x81);  // no sign: the magnitude's exponent
  // 3 = 1.5 * 2^1: up and nearest (a tie, which goes up) give 4, down gives 2.
  EXPECT_EQ(FloatToFloat8E8M0(3.0f, true, E8M0Rounding::kUp), 0x81);
  EXPECT_EQ(FloatToFloat8E8M0(3.0f, true, E8M0Rounding::kDown), 0x80);
  EXPECT_EQ(FloatToFloat8E8M0(3.0f, true, E8M0Rounding::kNearest), 0x81);
  // "nearest" compares the mantissa with 1.5 (the linear midpoint of the binade).
  EXPECT_EQ(FloatToFloat8E8M0(2.9f, true, E8M0Rounding::kNearest), 0x80);
  EXPECT_EQ(FloatToFloat8E8M0(3.1f, true, E8M0Rounding::kNearest), 0x81);
  EXPECT_EQ(FloatToFloat8E8M0(2.5f, true, E8M0Rounding::kNearest), 0x80);
  EXPECT_EQ(FloatToFloat8E8M0(1.25f, true, E8M0Rounding::kNearest), 0x7F);
  EXPECT_EQ(FloatToFloat8E8M0(1.125f, true, E8M0Rounding::kUp), 0x80);
  EXPECT_EQ(FloatToFloat8E8M0(0.0f), 0x00);
  EXPECT_EQ(FloatToFloat8E8M0(kNaN), 0xFF);
  EXPECT_EQ(FloatToFloat8E8M0(kInf), 0xFF);
  EXPECT_EQ(FloatToFloat8E8M0(-kInf), 0xFF);
  // 1.5 * 2^127: rounding up would carry past 2^127.
  const float big = std::ldexp(1.5f, 127);
  EXPECT_EQ(FloatToFloat8E8M0(big, true, E8M0Rounding::kUp), 0xFE);
  EXPECT_EQ(FloatToFloat8E8M0(big, false, E8M0Rounding::kUp), 0xFF);
  EXPECT_EQ(Float8E8M0ToFloat(0x7F), 1.0f);
  EXPECT_EQ(Float8E8M0ToFloat(0x80), 2.0f);
  EXPECT_EQ(Float8E8M0ToFloat(0x00), std::ldexp(1.0f, -127));
  EXPECT_EQ(Float8E8M0ToFloat(0xFE), std::ldexp(1.0f, 127));
  EXPECT_TRUE(std::isnan(Float8E8M0ToFloat(0xFF)));
}

TEST(LowpTest, DispatchByDType) {
  EXPECT_EQ(FloatToLowPrecisionFloat(DType::kF8E4M3FN, 1.0f), 0x38);
  EXPECT_EQ(FloatToLowPrecisionFloat(DType::kF8E5M2, 1.0f), 0x3C);
  EXPECT_EQ(FloatToLowPrecisionFloat(DType::kF4E2M1, -6.0f), 0xF);
  EXPECT_EQ(FloatToLowPrecisionFloat(DType::kF8E8M0, 0.5f), 0x7E);
  EXPECT_EQ(LowPrecisionFloatToFloat(DType::kF8E4M3FNUZ, 0x40), 1.0f);
  EXPECT_EQ(LowPrecisionFloatToFloat(DType::kF8E5M2FNUZ, 0x40), 1.0f);
}

}  // namespace
}  // namespace nimble::vm::cpu
