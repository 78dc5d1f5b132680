#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vm/kernels/cpu/broadcast.h"
#include "vm/kernels/cpu/elementwise_internal.h"
#include "vm/kernels/cpu/elementwise_test_util.h"
#include "vm/kernels/cpu/fp16.h"

namespace nimble::vm::cpu {
namespace {

using ::nimble::testing::IsOk;
using ::nimble::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::Pointwise;
using namespace ::nimble::vm::cpu::testing;  // NOLINT

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

// Every SIMD level this CPU has (the kernels must agree on all of them).
std::vector<SimdLevel> Levels() {
  std::vector<SimdLevel> levels;
  for (int l = 0; l <= static_cast<int>(DetectedSimdLevel()); ++l) {
    levels.push_back(static_cast<SimdLevel>(l));
  }
  return levels;
}

struct SimdLevelGuard {
  explicit SimdLevelGuard(SimdLevel l) { SetSimdLevelForTesting(l); }
  ~SimdLevelGuard() { SetSimdLevelForTesting(SimdLevel::kAvx512); }
};

// ------------------------------------------------------------------------------------------
// Broadcasting and conversions.

TEST(BroadcastTest, Shapes) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(Shape s, BroadcastShapes({{2, 1, 3}, {4, 1}, {}}));
  EXPECT_THAT(s, ElementsAre(2, 4, 3));
  NIMBLE_ASSERT_OK_AND_ASSIGN(s, BroadcastShapes({{0, 3}, {1, 3}}));
  EXPECT_THAT(s, ElementsAre(0, 3));
  NIMBLE_ASSERT_OK_AND_ASSIGN(s, BroadcastShapes({}));
  EXPECT_TRUE(s.empty());
  EXPECT_THAT(BroadcastShapes({{2, 3}, {4}}),
              StatusIs(kInvalid, HasSubstr("[2, 3], [4] cannot be broadcast")));
  EXPECT_THAT(BroadcastStrides({3, 1}, {2, 3, 4}), ElementsAre(0, 1, 0));
}

TEST(BroadcastTest, PlanCollapsesDims) {
  // [N, D] + [D]: an outer loop over N, contiguous rows of D.
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto plan, BroadcastPlan::Create({{4, 5, 6}, {6}}, {4, 5, 6}));
  EXPECT_EQ(plan.inner(), 6);
  EXPECT_EQ(plan.outer(), 20);
  EXPECT_EQ(plan.inner_stride(0), 1);
  EXPECT_EQ(plan.inner_stride(1), 1);
  EXPECT_EQ(plan.RowOffset(0, 7), 42);
  EXPECT_EQ(plan.RowOffset(1, 7), 0);
  // Same shapes: one flat loop.
  NIMBLE_ASSERT_OK_AND_ASSIGN(plan, BroadcastPlan::Create({{4, 5, 6}, {4, 5, 6}}, {4, 5, 6}));
  EXPECT_EQ(plan.inner(), 120);
  // Segments of [2, 1, 3] x [1, 4, 1] -> [2, 4, 3].
  NIMBLE_ASSERT_OK_AND_ASSIGN(plan, BroadcastPlan::Create({{2, 1, 3}, {1, 4, 1}}, {2, 4, 3}));
  std::vector<std::vector<int64_t>> segs;
  plan.ForEachSegment(4, 11, [&](int64_t o, absl::Span<const int64_t> offs, int64_t len) {
    segs.push_back({o, offs[0], offs[1], len});
  });
  EXPECT_THAT(
      segs, ElementsAre(ElementsAre(4, 1, 1, 2), ElementsAre(6, 0, 2, 3), ElementsAre(9, 0, 3, 2)));
  EXPECT_THAT(BroadcastPlan::Create({{3}}, {2, 4}), StatusIs(kInvalid, HasSubstr("[3]")));
}

TEST(Fp16Test, HalfRoundTripsAndRoundsToNearestEven) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f))));
      continue;
    }
    ASSERT_EQ(FloatToHalf(f), h) << h;
  }
  EXPECT_EQ(FloatToHalf(1.0f), 0x3C00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xC000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7C00);  // rounds to infinity
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -26)), 0x0000);
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3C00);      // tie -> even
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // tie -> even
  EXPECT_EQ(FloatToHalf(kInf), 0x7C00);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));
}

TEST(Fp16Test, BFloat16) {
  EXPECT_EQ(FloatToBFloat16(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBFloat16(BitsToFloat(0x3F808000)), 0x3F80);  // tie -> even
  EXPECT_EQ(FloatToBFloat16(BitsToFloat(0x3F818000)), 0x3F82);
  EXPECT_EQ(FloatToBFloat16(BitsToFloat(0x3F808001)), 0x3F81);
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(kNaN))));
  EXPECT_EQ(BFloat16ToFloat(0xC040), -3.0f);
}

// ------------------------------------------------------------------------------------------
// Binary ops.

TEST(ElementwiseTest, AddBroadcasts) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("Add", {}, {F({1, 2, 3, 4, 5, 6}, {2, 3}), F({10, 20, 30}, {3})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 3));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(11, 22, 33, 14, 25, 36));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Add", {}, {F({1, 2}, {2, 1}), F({10, 20, 30}, {1, 3})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 3));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(11, 21, 31, 12, 22, 32));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Add", {}, {F({5}, {}), F({1, 2, 3}, {3})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(6, 7, 8));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Add", {}, {F({5}, {}), F({2}, {})}));
  EXPECT_TRUE(out[0].shape().empty());
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(7));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Add", {}, {D({0.5, 1.5}, {2}), D({0.25}, {1})}));
  EXPECT_THAT(Values<double>(out[0]), ElementsAre(0.75, 1.75));
  // Integer overflow wraps.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Add", {}, {I32({std::numeric_limits<int32_t>::max(), -3}, {2}), I32({1}, {1})}));
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(std::numeric_limits<int32_t>::min(), -2));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Add", {}, {Make<uint8_t>({250, 3}, {2}), Make<uint8_t>({10}, {})}));
  EXPECT_THAT(Values<uint8_t>(out[0]), ElementsAre(4, 13));
}

TEST(ElementwiseTest, LargeAndParallelMatchesReference) {
  // Long rows exercise the SIMD bodies (and their tails); 4 threads exercise TBB.
  const int64_t rows = 67, cols = 771;
  std::vector<float> a(rows * cols), b(cols), col(rows);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i % 97) * 0.5f - 20.0f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i % 13) - 6.5f;
  for (size_t i = 0; i < col.size(); ++i) col[i] = static_cast<float>(i) * 0.25f + 1.0f;
  for (SimdLevel level : Levels()) {
    SimdLevelGuard guard(level);
    for (const char* op : {"Add", "Sub", "Mul", "Div", "Max", "Min"}) {
      for (int threads : {1, 4}) {
        NIMBLE_ASSERT_OK_AND_ASSIGN(
            auto out, RunOp(op, {}, {F(a, {rows, cols}), F(b, {cols})}, 1, {}, threads));
        NIMBLE_ASSERT_OK_AND_ASSIGN(
            auto out2, RunOp(op, {}, {F(col, {rows, 1}), F(a, {rows, cols})}, 1, {}, threads));
        const float* y = out[0].data<float>();
        const float* y2 = out2[0].data<float>();
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < cols; ++c) {
            const float x = a[r * cols + c];
            auto ref = [&](float p, float q) {
              const std::string o = op;
              if (o == "Add") return p + q;
              if (o == "Sub") return p - q;
              if (o == "Mul") return p * q;
              if (o == "Div") return p / q;
              if (o == "Max") return std::max(p, q);
              return std::min(p, q);
            };
            ASSERT_EQ(y[r * cols + c], ref(x, b[c])) << op << " " << r << "," << c;
            ASSERT_EQ(y2[r * cols + c], ref(col[r], x)) << op << " " << r << "," << c;
          }
        }
      }
    }
  }
}

TEST(ElementwiseTest, EmptyTensors) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Mul", {}, {F({}, {0, 3}), F({1, 2, 3}, {3})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(0, 3));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Exp", {}, {F({}, {2, 0})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 0));
}

TEST(ElementwiseTest, BinaryErrors) {
  EXPECT_THAT(RunOp("Add", {}, {F({1, 2, 3}, {3}), F({1, 2}, {2})}),
              StatusIs(kInvalid, HasSubstr("Add: shapes [3], [2] cannot be broadcast")));
  EXPECT_THAT(RunOp("Mul", {}, {F({1}, {1}), I32({1}, {1})}),
              StatusIs(kInvalid, HasSubstr("Mul: operand dtypes differ")));
  EXPECT_THAT(RunOp("Add", {}, {Str({"a"}, {1}), Str({"b"}, {1})}),
              StatusIs(kInvalid, HasSubstr("Add: unsupported dtype string")));
  EXPECT_THAT(RunOp("Add", {}, {F({1}, {1})}), StatusIs(kInvalid, HasSubstr("expected 2 inputs")));
  EXPECT_THAT(
      RunInto("Add", {}, {F({1, 2}, {2}), F({1, 2}, {2})}, {*Tensor::Empty(DType::kF32, {3})}),
      StatusIs(kInvalid, HasSubstr("Add: output 0 is f32[3], expected f32[2]")));
  EXPECT_THAT(RunInto("Add", {}, {F({1, 2}, {2}), Tensor()}, {*Tensor::Empty(DType::kF32, {2})}),
              StatusIs(kInvalid, HasSubstr("Add: input 1 is missing")));
  EXPECT_THAT(RunOp("BitShift", Attrs({{"direction", std::string("UP")}}), {}),
              StatusIs(kInvalid, HasSubstr("direction")));
}

TEST(ElementwiseTest, IntegerDivisionTruncatesAndNeverTraps) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("Div", {},
                      {I32({-7, 7, 7, -7, 5, std::numeric_limits<int32_t>::min()}, {6}),
                       I32({2, -2, 2, -2, 0, -1}, {6})}));
  EXPECT_THAT(Values<int32_t>(out[0]),
              ElementsAre(-3, -3, 3, 3, 0, std::numeric_limits<int32_t>::min()));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Div", {}, {F({1, -1, 0}, {3}), F({0}, {1})}));
  EXPECT_EQ(Values<float>(out[0])[0], kInf);
  EXPECT_EQ(Values<float>(out[0])[1], -kInf);
  EXPECT_TRUE(std::isnan(Values<float>(out[0])[2]));
}

TEST(ElementwiseTest, Mod) {
  // fmod=0: the sign of the divisor.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("Mod", {}, {I32({-7, 7, -7, 7, 6, 5}, {6}), I32({3, -3, -3, 3, 3, 0}, {6})}));
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(2, -2, -1, 1, 0, 0));
  // fmod=1: the sign of the dividend.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Mod", Attrs({{"fmod", int64_t{1}}}),
                                         {I64({-7, 7, -7, 7}, {4}), I64({3, -3, -3, 3}, {4})}));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(-1, 1, -1, 1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Mod", Attrs({{"fmod", int64_t{1}}}), {F({-7.5f, 7.5f}, {2}), F({2}, {1})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(-1.5f, 1.5f));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Mod", {}, {F({-7.5f, 7.5f}, {2}), F({2}, {1})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0.5f, 1.5f));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Mod", {}, {Make<uint8_t>({200, 7}, {2}), Make<uint8_t>({7, 0}, {2})}));
  EXPECT_THAT(Values<uint8_t>(out[0]), ElementsAre(4, 0));
  EXPECT_THAT(RunOp("Mod", Attrs({{"fmod", int64_t{2}}}), {}),
              StatusIs(kInvalid, HasSubstr("fmod")));
}

TEST(ElementwiseTest, Pow) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Pow", {}, {F({1, 2, -3, 4}, {4}), F({2}, {})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 4, 9, 16));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Pow", {}, {F({4, 9}, {2}), F({0.5f}, {1})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(2, 3));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Pow", {}, {F({2, 4}, {2}), F({3, -0.5f}, {2})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(8, 0.5f));
  // Mixed dtypes: float base, integer exponent; integer base, integer/float exponent.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Pow", {}, {F({2, 3}, {2}), I64({3}, {1})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(8, 27));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Pow", {}, {I32({2, -3, 2, 1, -1}, {5}), I64({10, 3, -1, -5, -3}, {5})}));
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(1024, -27, 0, 1, -1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Pow", {}, {I64({4, 10}, {2}), F({0.5f, 2}, {2})}));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(2, 100));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Pow", {}, {D({2}, {1}), F({-2}, {1})}));
  EXPECT_THAT(Values<double>(out[0]), ElementsAre(0.25));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Pow", {}, {Half(DType::kF16, {3, 0.5f}, {2}), Half(DType::kF16, {2}, {1})}));
  EXPECT_THAT(HalfValues(out[0]), ElementsAre(9, 0.25f));
}

TEST(ElementwiseTest, VariadicMaxMinSumMean) {
  const Tensor a = F({1, 5, kNaN, 2}, {2, 2});
  const Tensor b = F({3, 4}, {2});
  const Tensor c = F({0}, {});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Max", {}, {a, b, c}));
  std::vector<float> v = Values<float>(out[0]);
  EXPECT_EQ(v[0], 3);
  EXPECT_EQ(v[1], 5);
  EXPECT_TRUE(std::isnan(v[2]));  // NaN propagates
  EXPECT_EQ(v[3], 4);
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Min", {}, {b, a}));
  v = Values<float>(out[0]);
  EXPECT_EQ(v[0], 1);
  EXPECT_EQ(v[1], 4);
  EXPECT_TRUE(std::isnan(v[2]));
  EXPECT_EQ(v[3], 2);
  NIMBLE_ASSERT_OK_AND_ASSIGN(out,
                              RunOp("Sum", {}, {F({1, 2}, {2}), F({10}, {1}), F({100, 200}, {2})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(111, 212));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Mean", {}, {F({1, 2}, {2}), F({3, 6}, {2})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(2, 4));
  // One input broadcast to itself is a copy.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Max", {}, {I32({7, -1}, {2})}));
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(7, -1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Min", {}, {I64({7, -1}, {2}), I64({0}, {1})}));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(0, -1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Sum", {}, {Half(DType::kBF16, {1, 2}, {2}), Half(DType::kBF16, {0.5f}, {1})}));
  EXPECT_THAT(HalfValues(out[0]), ElementsAre(1.5f, 2.5f));
  EXPECT_THAT(RunOp("Mean", {}, {I32({1}, {1})}), StatusIs(kInvalid, HasSubstr("Mean")));
  EXPECT_THAT(RunOp("Sum", {}, {F({1, 2}, {2}), F({1, 2, 3}, {3})}),
              StatusIs(kInvalid, HasSubstr("Sum: shapes")));
}

TEST(ElementwiseTest, PReluAndBitOps) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("PRelu", {}, {F({-1, 2, -3, 4, -5, 6}, {2, 3}), F({0.5f, 1, 2}, {3})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(-0.5f, 2, -6, 4, -5, 6));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("BitShift", Attrs({{"direction", std::string("LEFT")}}),
                 {Make<uint8_t>({1, 3, 255}, {3}), Make<uint8_t>({2, 8, 1}, {3})}));
  EXPECT_THAT(Values<uint8_t>(out[0]), ElementsAre(4, 0, 254));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out,
                              RunOp("BitShift", Attrs({{"direction", std::string("RIGHT")}}),
                                    {Make<uint32_t>({16, 16}, {2}), Make<uint32_t>({2, 40}, {2})}));
  EXPECT_THAT(Values<uint32_t>(out[0]), ElementsAre(4, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("BitwiseAnd", {}, {I32({12, -1}, {2}), I32({10}, {1})}));
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(8, 10));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("BitwiseOr", {}, {I32({12, -1}, {2}), I32({10}, {1})}));
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(14, -1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("BitwiseXor", {}, {I32({12, -1}, {2}), I32({10}, {1})}));
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(6, -11));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("BitwiseNot", {}, {Make<uint8_t>({0, 15}, {2})}));
  EXPECT_THAT(Values<uint8_t>(out[0]), ElementsAre(255, 240));
  EXPECT_THAT(RunOp("BitwiseAnd", {}, {F({1}, {1}), F({1}, {1})}),
              StatusIs(kInvalid, HasSubstr("BitwiseAnd: unsupported dtype f32")));
  EXPECT_THAT(RunOp("BitShift", Attrs({{"direction", std::string("LEFT")}}),
                    {I32({1}, {1}), I32({1}, {1})}),
              StatusIs(kInvalid, HasSubstr("BitShift: unsupported dtype i32")));
}

TEST(ElementwiseTest, LogicAndComparisons) {
  const Tensor p = B({1, 1, 0, 0}, {4});
  const Tensor q = B({1, 0, 1, 0}, {4});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("And", {}, {p, q}));
  EXPECT_THAT(BoolValues(out[0]), ElementsAre(1, 0, 0, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Or", {}, {p, q}));
  EXPECT_THAT(BoolValues(out[0]), ElementsAre(1, 1, 1, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Xor", {}, {p, q}));
  EXPECT_THAT(BoolValues(out[0]), ElementsAre(0, 1, 1, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Not", {}, {p}));
  EXPECT_THAT(BoolValues(out[0]), ElementsAre(0, 0, 1, 1));
  EXPECT_THAT(RunOp("And", {}, {I32({1}, {1}), I32({1}, {1})}),
              StatusIs(kInvalid, HasSubstr("And: unsupported dtype i32")));

  const Tensor x = F({1, 2, 3, kNaN}, {4});
  const Tensor two = F({2}, {});
  const std::vector<DType> kBool = {DType::kBool};
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Equal", {}, {x, two}, 1, kBool));
  EXPECT_THAT(BoolValues(out[0]), ElementsAre(0, 1, 0, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Greater", {}, {x, two}, 1, kBool));
  EXPECT_THAT(BoolValues(out[0]), ElementsAre(0, 0, 1, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("GreaterOrEqual", {}, {x, two}, 1, kBool));
  EXPECT_THAT(BoolValues(out[0]), ElementsAre(0, 1, 1, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Less", {}, {x, two}, 1, kBool));
  EXPECT_THAT(BoolValues(out[0]), ElementsAre(1, 0, 0, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("LessOrEqual", {}, {x, two}, 1, kBool));
  EXPECT_THAT(BoolValues(out[0]), ElementsAre(1, 1, 0, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Equal", {}, {Str({"a", "bc"}, {2, 1}), Str({"bc", "a", "x"}, {3})}, 1, kBool));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 3));
  EXPECT_THAT(BoolValues(out[0]), ElementsAre(0, 1, 0, 1, 0, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Equal", {}, {p, q}, 1, kBool));
  EXPECT_THAT(BoolValues(out[0]), ElementsAre(1, 0, 0, 1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out,
      RunOp("Less", {}, {Half(DType::kF16, {1, 3}, {2}), Half(DType::kF16, {2}, {1})}, 1, kBool));
  EXPECT_THAT(BoolValues(out[0]), ElementsAre(1, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Greater", {}, {Make<uint64_t>({1, 1ull << 63}, {2}), Make<uint64_t>({2}, {1})}, 1,
                 kBool));
  EXPECT_THAT(BoolValues(out[0]), ElementsAre(0, 1));
  EXPECT_THAT(RunInto("Less", {}, {x, two}, {*Tensor::Empty(DType::kF32, {4})}),
              StatusIs(kInvalid, HasSubstr("expected bool[4]")));
}

// ------------------------------------------------------------------------------------------
// Unary ops.

struct UnaryCase {
  const char* op;
  double (*ref)(double);
};

TEST(ElementwiseTest, UnaryMathMatchesLibm) {
  const std::vector<float> xs = {-2.5f, -1.0f, -0.3f, 0.0f, 0.2f, 0.7f, 1.5f, 3.0f};
  const std::vector<float> unit = {-0.9f, -0.5f, 0.0f, 0.3f, 0.99f};
  const std::vector<float> pos = {0.1f, 0.5f, 1.0f, 2.0f, 10.0f};
  const std::vector<float> ge1 = {1.0f, 1.5f, 4.0f};
  struct Case {
    const char* op;
    double (*ref)(double);
    const std::vector<float>* in;
  };
  const Case cases[] = {
      {"Abs", [](double v) { return std::abs(v); }, &xs},
      {"Neg", [](double v) { return -v; }, &xs},
      {"Sqrt", [](double v) { return std::sqrt(v); }, &pos},
      {"Reciprocal", [](double v) { return 1 / v; }, &pos},
      {"Exp", [](double v) { return std::exp(v); }, &xs},
      {"Log", [](double v) { return std::log(v); }, &pos},
      {"Ceil", [](double v) { return std::ceil(v); }, &xs},
      {"Floor", [](double v) { return std::floor(v); }, &xs},
      {"Sin", [](double v) { return std::sin(v); }, &xs},
      {"Cos", [](double v) { return std::cos(v); }, &xs},
      {"Tan", [](double v) { return std::tan(v); }, &xs},
      {"Asin", [](double v) { return std::asin(v); }, &unit},
      {"Acos", [](double v) { return std::acos(v); }, &unit},
      {"Atan", [](double v) { return std::atan(v); }, &xs},
      {"Sinh", [](double v) { return std::sinh(v); }, &xs},
      {"Cosh", [](double v) { return std::cosh(v); }, &xs},
      {"Asinh", [](double v) { return std::asinh(v); }, &xs},
      {"Acosh", [](double v) { return std::acosh(v); }, &ge1},
      {"Atanh", [](double v) { return std::atanh(v); }, &unit},
      {"Erf", [](double v) { return std::erf(v); }, &xs},
      {"Tanh", [](double v) { return std::tanh(v); }, &xs},
      {"Sigmoid", [](double v) { return 1 / (1 + std::exp(-v)); }, &xs},
      {"Relu", [](double v) { return v < 0 ? 0.0 : v; }, &xs},
      {"Softplus", [](double v) { return std::log1p(std::exp(v)); }, &xs},
      {"Softsign", [](double v) { return v / (1 + std::abs(v)); }, &xs},
      {"HardSwish", [](double v) { return v * std::clamp(v / 6 + 0.5, 0.0, 1.0); }, &xs},
      {"Mish", [](double v) { return v * std::tanh(std::log1p(std::exp(v))); }, &xs},
      {"Gelu", [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); }, &xs},
      {"Sign", [](double v) { return v > 0 ? 1.0 : (v < 0 ? -1.0 : 0.0); }, &xs},
  };
  for (const Case& c : cases) {
    std::vector<double> expected;
    for (float v : *c.in) expected.push_back(c.ref(v));
    std::vector<double> in64(c.in->begin(), c.in->end());
    const int64_t n = static_cast<int64_t>(c.in->size());
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp(c.op, {}, {F(*c.in, {n})}));
    EXPECT_THAT(Values<float>(out[0]), Pointwise(NearRel(2e-6, 1e-7), expected)) << c.op;
    NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp(c.op, {}, {D(in64, {n})}));
    EXPECT_THAT(Values<double>(out[0]), Pointwise(NearRel(1e-12, 1e-15), expected)) << c.op;
    // Half types: the reference on the rounded inputs, within the output's rounding.
    for (DType half : {DType::kF16, DType::kBF16}) {
      const Tensor h = Half(half, *c.in, {n});
      std::vector<double> expected_half;
      for (float v : HalfValues(h)) expected_half.push_back(c.ref(v));
      NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp(c.op, {}, {h}));
      const double tol = half == DType::kF16 ? 1e-3 : 8e-3;
      EXPECT_THAT(HalfValues(out[0]), Pointwise(NearRel(tol, 1e-4), expected_half)) << c.op;
    }
  }
}

TEST(ElementwiseTest, RoundHalvesToEven) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("Round", {}, {F({0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 2.4f, -2.6f}, {7})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 2, 2, -0.0f, -2, 2, -3));
}

TEST(ElementwiseTest, SimdMathAccuracyOnEveryIsa) {
  std::vector<float> xs;
  for (int i = -20000; i <= 20000; ++i) xs.push_back(static_cast<float>(i) * 0.0011f);
  for (float v : {-87.0f, -80.0f, 50.0f, 88.0f, 1e-6f, -1e-6f, 3.9f, 4.1f, 9.5f, -15.0f}) {
    xs.push_back(v);
  }
  const int64_t n = static_cast<int64_t>(xs.size());
  struct Fn {
    FloatUnary op;
    double (*ref)(double);
  };
  const Fn fns[] = {
      {FloatUnary::kExp, [](double v) { return std::exp(v); }},
      {FloatUnary::kTanh, [](double v) { return std::tanh(v); }},
      {FloatUnary::kErf, [](double v) { return std::erf(v); }},
      {FloatUnary::kSigmoid, [](double v) { return 1 / (1 + std::exp(-v)); }},
  };
  for (SimdLevel level : Levels()) {
    SimdLevelGuard guard(level);
    for (const Fn& fn : fns) {
      std::vector<float> y(n);
      ApplyFloatUnary(fn.op, xs.data(), y.data(), n);
      double worst = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double e = fn.ref(xs[i]);
        const double err = std::abs(y[i] - e) / std::max(std::abs(e), 1e-30);
        worst = std::max(worst, err);
      }
      EXPECT_LT(worst, 1e-6) << "op " << static_cast<int>(fn.op) << " level "
                             << static_cast<int>(level);
    }
    // Special values.
    const std::vector<float> special = {kInf, -kInf, kNaN, 100.0f, -100.0f, -0.0f};
    std::vector<float> y(special.size());
    ApplyFloatUnary(FloatUnary::kExp, special.data(), y.data(), 6);
    EXPECT_EQ(y[0], kInf);
    EXPECT_EQ(y[1], 0.0f);
    EXPECT_TRUE(std::isnan(y[2]));
    EXPECT_EQ(y[3], kInf);
    EXPECT_NEAR(y[4], std::exp(-100.0), 2e-45);  // subnormal
    EXPECT_EQ(y[5], 1.0f);
    ApplyFloatUnary(FloatUnary::kTanh, special.data(), y.data(), 6);
    EXPECT_THAT(std::vector<float>(y.begin(), y.begin() + 2), ElementsAre(1.0f, -1.0f));
    EXPECT_TRUE(std::isnan(y[2]));
    ApplyFloatUnary(FloatUnary::kErf, special.data(), y.data(), 6);
    EXPECT_THAT(std::vector<float>(y.begin(), y.begin() + 2), ElementsAre(1.0f, -1.0f));
    EXPECT_TRUE(std::isnan(y[2]));
    ApplyFloatUnary(FloatUnary::kSigmoid, special.data(), y.data(), 6);
    EXPECT_THAT(std::vector<float>(y.begin(), y.begin() + 2), ElementsAre(1.0f, 0.0f));
  }
}

TEST(ElementwiseTest, ActivationsWithAttributes) {
  const Tensor x = F({-2, -0.5f, 0, 0.5f, 2}, {5});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("LeakyRelu", {}, {x}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(-0.02f, -0.005f, 0, 0.5f, 2));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("LeakyRelu", Attrs({{"alpha", 0.5}}), {x}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(-1, -0.25f, 0, 0.5f, 2));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Elu", Attrs({{"alpha", 2.0}}), {x}));
  EXPECT_THAT(Values<float>(out[0]),
              Pointwise(NearRel(1e-6, 0), std::vector<double>{2 * std::expm1(-2.0),
                                                              2 * std::expm1(-0.5), 0, 0.5, 2}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Selu", {}, {x}));
  const double a = 1.67326319217681884765625, g = 1.05070102214813232421875;
  EXPECT_THAT(Values<float>(out[0]),
              Pointwise(NearRel(1e-6, 0),
                        std::vector<double>{g * a * std::expm1(-2.0), g * a * std::expm1(-0.5), 0,
                                            g * 0.5, g * 2}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Celu", Attrs({{"alpha", 2.0}}), {x}));
  EXPECT_THAT(Values<float>(out[0]),
              Pointwise(NearRel(1e-6, 0), std::vector<double>{2 * std::expm1(-1.0),
                                                              2 * std::expm1(-0.25), 0, 0.5, 2}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("HardSigmoid", {}, {x}));
  EXPECT_THAT(Values<float>(out[0]),
              Pointwise(NearRel(1e-6, 1e-7), std::vector<double>{0.1, 0.4, 0.5, 0.6, 0.9}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out,
                              RunOp("HardSigmoid", Attrs({{"alpha", 1.0}, {"beta", 0.0}}), {x}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 0, 0, 0.5f, 1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("ThresholdedRelu", {}, {x}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 0, 0, 0, 2));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("ThresholdedRelu", Attrs({{"alpha", 0.1}}), {x}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 0, 0, 0.5f, 2));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out,
                              RunOp("Gelu", Attrs({{"approximate", std::string("tanh")}}), {x}));
  std::vector<double> gelu_tanh;
  for (double v : {-2.0, -0.5, 0.0, 0.5, 2.0}) {
    gelu_tanh.push_back(0.5 * v *
                        (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))));
  }
  EXPECT_THAT(Values<float>(out[0]), Pointwise(NearRel(2e-6, 1e-7), gelu_tanh));
  EXPECT_THAT(RunOp("Gelu", Attrs({{"approximate", std::string("fast")}}), {x}),
              StatusIs(kInvalid, HasSubstr("approximate")));
  EXPECT_THAT(RunOp("Relu", {}, {F({kNaN}, {1})}), IsOk());
}

TEST(ElementwiseTest, UnaryIntegersAndClassification) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("Abs", {}, {I32({-3, 4, std::numeric_limits<int32_t>::min()}, {3})}));
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(3, 4, std::numeric_limits<int32_t>::min()));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Neg", {}, {I64({-3, 4}, {2})}));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(3, -4));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Sign", {}, {Make<int8_t>({-3, 0, 4}, {3})}));
  EXPECT_THAT(Values<int8_t>(out[0]), ElementsAre(-1, 0, 1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Sign", {}, {Make<uint16_t>({0, 9}, {2})}));
  EXPECT_THAT(Values<uint16_t>(out[0]), ElementsAre(0, 1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Relu", {}, {I32({-3, 4}, {2})}));
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(0, 4));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Abs", {}, {Make<uint8_t>({200}, {1})}));
  EXPECT_THAT(Values<uint8_t>(out[0]), ElementsAre(200));
  EXPECT_THAT(RunOp("Sqrt", {}, {I32({4}, {1})}),
              StatusIs(kInvalid, HasSubstr("Sqrt: unsupported dtype i32")));
  EXPECT_THAT(RunOp("Neg", {}, {Make<uint32_t>({4}, {1})}),
              StatusIs(kInvalid, HasSubstr("Neg: unsupported dtype u32")));

  const Tensor x = F({1, kNaN, kInf, -kInf}, {4});
  const std::vector<DType> kBool = {DType::kBool};
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("IsNaN", {}, {x}, 1, kBool));
  EXPECT_THAT(BoolValues(out[0]), ElementsAre(0, 1, 0, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("IsInf", {}, {x}, 1, kBool));
  EXPECT_THAT(BoolValues(out[0]), ElementsAre(0, 0, 1, 1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("IsInf", Attrs({{"detect_negative", int64_t{0}}}), {x}, 1, kBool));
  EXPECT_THAT(BoolValues(out[0]), ElementsAre(0, 0, 1, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("IsInf", Attrs({{"detect_positive", int64_t{0}}}),
                                         {D({kInf, -kInf}, {2})}, 1, kBool));
  EXPECT_THAT(BoolValues(out[0]), ElementsAre(0, 1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out,
                              RunOp("IsNaN", {}, {Half(DType::kF16, {kNaN, 1}, {2})}, 1, kBool));
  EXPECT_THAT(BoolValues(out[0]), ElementsAre(1, 0));
}

// ------------------------------------------------------------------------------------------
// Where, Clip.

TEST(ElementwiseTest, Where) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out,
      RunOp("Where", {}, {B({1, 0}, {2, 1}), F({1, 2, 3}, {3}), F({-1}, {})}, 1, {DType::kF32}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 3));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 2, 3, -1, -1, -1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Where", {}, {B({1, 0, 1}, {3}), I64({1, 2, 3}, {3}), I64({7, 8, 9}, {3})}, 1,
                 {DType::kI64}));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(1, 8, 3));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Where", {}, {B({0, 1}, {2}), Str({"x", "y"}, {2}), Str({"n"}, {1})}, 1,
                 {DType::kString}));
  EXPECT_THAT(Values<std::string>(out[0]), ElementsAre("n", "y"));
  EXPECT_THAT(RunOp("Where", {}, {F({1}, {1}), F({1}, {1}), F({1}, {1})}),
              StatusIs(kInvalid, HasSubstr("Where: condition must be bool")));
  EXPECT_THAT(
      RunOp("Where", {}, {B({1, 0}, {2}), F({1, 2, 3}, {3}), F({1}, {1})}, 1, {DType::kF32}),
      StatusIs(kInvalid, HasSubstr("Where: shapes")));
}

TEST(ElementwiseTest, Clip) {
  const Tensor x = F({-5, -1, 0, 1, 5, kNaN}, {6});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Clip", {}, {x, F({-2}, {}), F({2}, {})}));
  std::vector<float> v = Values<float>(out[0]);
  EXPECT_THAT(std::vector<float>(v.begin(), v.begin() + 5), ElementsAre(-2, -1, 0, 1, 2));
  EXPECT_TRUE(std::isnan(v[5]));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Clip", {}, {x, Tensor(), F({0}, {1})}));
  v = Values<float>(out[0]);
  EXPECT_THAT(std::vector<float>(v.begin(), v.begin() + 5), ElementsAre(-5, -1, 0, 0, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Clip", Attrs({{"min", -1.5}, {"max", 0.5}}), {x}));
  v = Values<float>(out[0]);
  EXPECT_THAT(std::vector<float>(v.begin(), v.begin() + 5), ElementsAre(-1.5f, -1, 0, 0.5f, 0.5f));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Clip", {}, {I32({-5, 3, 9}, {3}), I32({0}, {}), I32({4}, {})}));
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(0, 3, 4));
  // min > max gives max everywhere.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Clip", {}, {I32({-5, 3, 9}, {3}), I32({5}, {}), I32({1}, {})}));
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(1, 1, 1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Clip", {}, {Half(DType::kF16, {-3, 3}, {2}), Half(DType::kF16, {-1}, {})}));
  EXPECT_THAT(HalfValues(out[0]), ElementsAre(-1, 3));
  EXPECT_THAT(RunOp("Clip", {}, {x, F({0, 1}, {2})}), StatusIs(kInvalid, HasSubstr("Clip: min")));
  EXPECT_THAT(RunOp("Clip", {}, {x, D({0}, {})}), StatusIs(kInvalid, HasSubstr("Clip: min dtype")));
}

// ------------------------------------------------------------------------------------------
// Cast.

absl::StatusOr<std::vector<Tensor>> Cast(const Tensor& x, int64_t to, DType dtype) {
  return RunOp("Cast", Attrs({{"to", to}}), {x}, 1, {dtype});
}

TEST(CastTest, Numeric) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out,
                              Cast(F({-1.7f, 2.9f, kNaN, 3e10f, -0.5f}, {5}), 6, DType::kI32));
  // Truncation toward zero; NaN -> 0; out of range: saturate to int64, then wrap.
  EXPECT_THAT(Values<int32_t>(out[0]),
              ElementsAre(-1, 2, 0, static_cast<int32_t>(int64_t{30000001024}), 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, Cast(F({-1, 300, 7.9f}, {3}), 2, DType::kU8));
  EXPECT_THAT(Values<uint8_t>(out[0]), ElementsAre(255, 44, 7));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, Cast(F({0, -0.0f, 2, kNaN}, {4}), 9, DType::kBool));
  EXPECT_THAT(BoolValues(out[0]), ElementsAre(0, 0, 1, 1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, Cast(B({1, 0}, {2}), 1, DType::kF32));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, Cast(I64({int64_t{1} << 40, -3}, {2}), 6, DType::kI32));
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(0, -3));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, Cast(I64({2049, -3}, {2}), 10, DType::kF16));
  EXPECT_THAT(HalfValues(out[0]), ElementsAre(2048, -3));  // 2049 rounds to even
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, Cast(Half(DType::kF16, {0.1f, -2}, {2}), 11, DType::kF64));
  EXPECT_THAT(Values<double>(out[0]), ElementsAre(HalfToFloat(FloatToHalf(0.1f)), -2.0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, Cast(Half(DType::kF16, {1.5f, 300}, {2}), 16, DType::kBF16));
  EXPECT_THAT(HalfValues(out[0]), ElementsAre(1.5f, 300));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, Cast(D({1e300, -2.5}, {2}), 1, DType::kF32));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(kInf, -2.5f));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, Cast(F({1.5e19f, -1}, {2}), 13, DType::kU64));
  EXPECT_EQ(Values<uint64_t>(out[0])[0], static_cast<uint64_t>(static_cast<double>(1.5e19f)));
  // Parallel path.
  std::vector<int32_t> big(100000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<int32_t>(i) - 50000;
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Cast", Attrs({{"to", int64_t{11}}}), {I32(big, {100000})}, 1, {DType::kF64}, 4));
  for (size_t i = 0; i < big.size(); ++i) ASSERT_EQ(out[0].data<double>()[i], big[i]);
}

TEST(CastTest, Strings) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out,
      Cast(F({1.5f, 0.1f, kNaN, -kInf, kInf, 1e-10f, 123456789.0f}, {7}), 8, DType::kString));
  EXPECT_THAT(Values<std::string>(out[0]),
              ElementsAre("1.5", "0.1", "NaN", "-INF", "INF", "1e-10", "1.2345679e+08"));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, Cast(Make<int8_t>({-5, 100}, {2}), 8, DType::kString));
  EXPECT_THAT(Values<std::string>(out[0]), ElementsAre("-5", "100"));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, Cast(B({1, 0}, {2}), 8, DType::kString));
  EXPECT_THAT(Values<std::string>(out[0]), ElementsAre("1", "0"));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out,
                              Cast(Str({"3.25", "-INF", "nan", " 7", "1e3"}, {5}), 1, DType::kF32));
  std::vector<float> v = Values<float>(out[0]);
  EXPECT_EQ(v[0], 3.25f);
  EXPECT_EQ(v[1], -kInf);
  EXPECT_TRUE(std::isnan(v[2]));
  EXPECT_EQ(v[3], 7);
  EXPECT_EQ(v[4], 1000);
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, Cast(Str({"-42", "9000000000", "2.7"}, {3}), 7, DType::kI64));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(-42, 9000000000, 2));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, Cast(Str({"true", "0", "False"}, {3}), 9, DType::kBool));
  EXPECT_THAT(BoolValues(out[0]), ElementsAre(1, 0, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, Cast(Str({"0.5"}, {1}), 10, DType::kF16));
  EXPECT_THAT(HalfValues(out[0]), ElementsAre(0.5f));
  EXPECT_THAT(Cast(Str({"abc"}, {1}), 1, DType::kF32),
              StatusIs(kInvalid, HasSubstr("Cast: cannot parse string 'abc'")));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, Cast(Str({"a", "b"}, {2}), 8, DType::kString));
  EXPECT_THAT(Values<std::string>(out[0]), ElementsAre("a", "b"));
}

TEST(CastTest, Float8SaturateAttribute) {
  const Tensor x = F({1.0f, 470.0f, -1e6f, kNaN, std::numeric_limits<float>::infinity()}, {5});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto sat, Cast(x, 17, DType::kF8E4M3FN));
  EXPECT_THAT(Values<uint8_t>(sat[0]), ElementsAre(0x38, 0x7E, 0xFE, 0x7F, 0x7E));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto nosat, RunOp("Cast", Attrs({{"to", int64_t{17}}, {"saturate", int64_t{0}}}), {x}, 1,
                        {DType::kF8E4M3FN}));
  EXPECT_THAT(Values<uint8_t>(nosat[0]), ElementsAre(0x38, 0x7F, 0xFF, 0x7F, 0x7F));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto e5m2, RunOp("Cast", Attrs({{"to", int64_t{19}}, {"saturate", int64_t{0}}}), {x}, 1,
                       {DType::kF8E5M2}));
  EXPECT_THAT(Values<uint8_t>(e5m2[0]), ElementsAre(0x3C, 0x5F, 0xFC, 0x7E, 0x7C));
  // Back to float (through f16 too): exact.
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto back, Cast(sat[0], 1, DType::kF32));
  EXPECT_EQ(Values<float>(back[0])[1], 448.0f);
  EXPECT_EQ(Values<float>(back[0])[2], -448.0f);
  EXPECT_TRUE(std::isnan(Values<float>(back[0])[3]));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto half, Cast(sat[0], 10, DType::kF16));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto via_half, Cast(half[0], 17, DType::kF8E4M3FN));
  EXPECT_EQ(Values<uint8_t>(via_half[0]), Values<uint8_t>(sat[0]));
}

TEST(CastTest, Float8E8M0RoundMode) {
  const Tensor x = F({3.0f, 1.25f, 0.5f}, {3});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto up, Cast(x, 24, DType::kF8E8M0));
  EXPECT_THAT(Values<uint8_t>(up[0]), ElementsAre(0x81, 0x80, 0x7E));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto down, RunOp("Cast", Attrs({{"to", int64_t{24}}, {"round_mode", std::string("down")}}),
                       {x}, 1, {DType::kF8E8M0}));
  EXPECT_THAT(Values<uint8_t>(down[0]), ElementsAre(0x80, 0x7F, 0x7E));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto nearest,
      RunOp("Cast", Attrs({{"to", int64_t{24}}, {"round_mode", std::string("nearest")}}), {x}, 1,
            {DType::kF8E8M0}));
  EXPECT_THAT(Values<uint8_t>(nearest[0]), ElementsAre(0x81, 0x7F, 0x7E));
}

TEST(CastTest, SubByteIntegersWrap) {
  // Float -> int4 truncates like float -> int64, then keeps the low 4 bits (sign-extended).
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto i4, Cast(F({-9, -8, 7.9f, 8, 15, kNaN}, {6}), 22, DType::kI4));
  EXPECT_THAT(Values<int8_t>(i4[0]), ElementsAre(7, -8, 7, -8, -1, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto u2, Cast(I64({-3, -1, 4, 3}, {4}), 25, DType::kU2));
  EXPECT_THAT(Values<uint8_t>(u2[0]), ElementsAre(1, 3, 0, 3));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto i2, Cast(I32({2, -3, 1}, {3}), 26, DType::kI2));
  EXPECT_THAT(Values<int8_t>(i2[0]), ElementsAre(-2, 1, 1));
  // Back: exact, sign-extended.
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto wide, Cast(i4[0], 7, DType::kI64));
  EXPECT_THAT(Values<int64_t>(wide[0]), ElementsAre(7, -8, 7, -8, -1, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto f, Cast(i2[0], 1, DType::kF32));
  EXPECT_THAT(Values<float>(f[0]), ElementsAre(-2.0f, 1.0f, 1.0f));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto s, Cast(i4[0], 8, DType::kString));
  EXPECT_THAT(Values<std::string>(s[0]), ElementsAre("7", "-8", "7", "-8", "-1", "0"));
  // CastLike takes the dtype of its second input.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto like, RunOp("CastLike", {}, {F({1.5f, -6.5f}, {2}), i4[0]}, 1, {DType::kI4}));
  EXPECT_THAT(Values<int8_t>(like[0]), ElementsAre(1, -6));
}

TEST(CastTest, CastLikeAndErrors) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("CastLike", {}, {F({1.9f, -2.9f}, {2}), I64({}, {0})}, 1, {DType::kI64}));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(1, -2));
  EXPECT_THAT(RunOp("Cast", Attrs({{"to", int64_t{14}}}), {F({1}, {1})}),
              StatusIs(absl::StatusCode::kUnimplemented,
                       HasSubstr("ONNX data type COMPLEX64 (14) is not supported")));
  EXPECT_THAT(RunOp("Cast", Attrs({{"to", int64_t{99}}}), {F({1}, {1})}),
              StatusIs(kInvalid, HasSubstr("unknown ONNX data type 99")));
  EXPECT_THAT(RunOp("Cast", Attrs({{"to", int64_t{24}}, {"round_mode", std::string("odd")}}),
                    {F({1}, {1})}),
              StatusIs(kInvalid, HasSubstr("round_mode must be")));
  EXPECT_THAT(RunOp("Cast", {}, {F({1}, {1})}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("to")));
  EXPECT_THAT(RunInto("Cast", Attrs({{"to", int64_t{7}}}), {F({1}, {1})},
                      {*Tensor::Empty(DType::kI32, {1})}),
              StatusIs(kInvalid, HasSubstr("Cast: output 0 is i32[1], expected i64[1]")));
}

// ------------------------------------------------------------------------------------------
// FusedElementwise.

Attributes Program(std::vector<int64_t> program, std::vector<double> constants = {}) {
  return Attrs({{"program", program}, {"constants", constants}});
}

TEST(FusedElementwiseTest, GeluOfBiasAdd) {
  // y = gelu(x + bias), bias broadcast over rows; long rows to cross blocks and tails.
  const int64_t rows = 5, cols = 1500;
  std::vector<float> x(rows * cols), bias(cols);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 101) * 0.07f - 3.5f;
  for (size_t i = 0; i < bias.size(); ++i) bias[i] = static_cast<float>(i % 7) * 0.1f - 0.3f;
  const Attributes prog = Program({kFusedLoad, 0, 0, 0, kFusedLoad,  1, 1, 0, kFusedAdd, 0, 0, 1,
                                   kFusedGelu, 0, 0, 0, kFusedStore, 0, 0, 0});
  for (SimdLevel level : Levels()) {
    SimdLevelGuard guard(level);
    for (int threads : {1, 4}) {
      NIMBLE_ASSERT_OK_AND_ASSIGN(
          auto out,
          RunOp("FusedElementwise", prog, {F(x, {rows, cols}), F(bias, {cols})}, 1, {}, threads));
      ASSERT_THAT(out[0].shape(), ElementsAre(rows, cols));
      std::vector<double> expected;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          const double v = static_cast<double>(x[r * cols + c] + bias[c]);
          expected.push_back(0.5 * v * (1 + std::erf(v / std::sqrt(2.0))));
        }
      }
      ASSERT_THAT(Values<float>(out[0]), Pointwise(NearRel(2e-6, 1e-7), expected));
    }
  }
}

TEST(FusedElementwiseTest, EveryOpcodeMatchesReference) {
  const std::vector<float> a = {-2.5f, -1, -0.25f, 0.5f, 1, 2, 3.5f, 0.75f, -0.6f, 4};
  const std::vector<float> b = {1.5f, 2, 0.5f, -3, 0.25f, 1, 2, -1, 3, 0.5f};
  const std::vector<float> pos = {0.5f, 1, 2, 3, 4, 0.1f, 7, 9, 1.5f, 2.5f};
  struct Case {
    int64_t op;
    bool binary;
    double (*ref)(double, double);
    bool positive;  // run on `pos`
  };
  const Case cases[] = {
      {kFusedAdd, true, [](double p, double q) { return p + q; }, false},
      {kFusedSub, true, [](double p, double q) { return p - q; }, false},
      {kFusedMul, true, [](double p, double q) { return p * q; }, false},
      {kFusedDiv, true, [](double p, double q) { return p / q; }, false},
      {kFusedMax, true, [](double p, double q) { return std::max(p, q); }, false},
      {kFusedMin, true, [](double p, double q) { return std::min(p, q); }, false},
      {kFusedPow, true, [](double p, double q) { return std::pow(p, q); }, true},
      {kFusedNeg, false, [](double p, double) { return -p; }, false},
      {kFusedExp, false, [](double p, double) { return std::exp(p); }, false},
      {kFusedLog, false, [](double p, double) { return std::log(p); }, true},
      {kFusedSqrt, false, [](double p, double) { return std::sqrt(p); }, true},
      {kFusedRsqrt, false, [](double p, double) { return 1 / std::sqrt(p); }, true},
      {kFusedTanh, false, [](double p, double) { return std::tanh(p); }, false},
      {kFusedErf, false, [](double p, double) { return std::erf(p); }, false},
      {kFusedSigmoid, false, [](double p, double) { return 1 / (1 + std::exp(-p)); }, false},
      {kFusedRelu, false, [](double p, double) { return std::max(p, 0.0); }, false},
      {kFusedGelu, false,
       [](double p, double) { return 0.5 * p * (1 + std::erf(p / std::sqrt(2.0))); }, false},
      {kFusedGeluTanh, false,
       [](double p, double) {
         return 0.5 * p * (1 + std::tanh(std::sqrt(2 / M_PI) * (p + 0.044715 * p * p * p)));
       },
       false},
      {kFusedAbs, false, [](double p, double) { return std::abs(p); }, false},
      {kFusedReciprocal, false, [](double p, double) { return 1 / p; }, false},
  };
  for (const Case& c : cases) {
    const std::vector<float>& x = c.positive ? pos : a;
    std::vector<int64_t> program = {kFusedLoad, 0, 0, 0, kFusedLoad, 1, 1, 0};
    if (c.binary) {
      program.insert(program.end(), {c.op, 2, 0, 1});
    } else {
      program.insert(program.end(), {c.op, 2, 0, 0});
    }
    program.insert(program.end(), {kFusedStore, 0, 2, 0});
    NIMBLE_ASSERT_OK_AND_ASSIGN(
        auto out, RunOp("FusedElementwise", Program(program), {F(x, {10}), F(b, {10})}));
    std::vector<double> expected;
    for (int i = 0; i < 10; ++i) expected.push_back(c.ref(x[i], b[i]));
    EXPECT_THAT(Values<float>(out[0]), Pointwise(NearRel(2e-6, 1e-7), expected)) << c.op;
    // The same op on scalars (a constant and a broadcast input) stays scalar.
    program = {kFusedConst, 0, 0, 0, kFusedLoad, 1, 1, 0, c.op, 2, 0, 1, kFusedStore, 0, 2, 0};
    NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("FusedElementwise", Program(program, {x[3]}),
                                           {F({1, 2, 3}, {3}), F({b[3]}, {1})}));
    const double e = c.ref(x[3], c.binary ? b[3] : 0);
    EXPECT_THAT(Values<float>(out[0]), Pointwise(NearRel(2e-6, 1e-7), std::vector<double>{e, e, e}))
        << c.op;
  }
}

TEST(FusedElementwiseTest, MultipleOutputsConstantsAndBroadcast) {
  // out0 = (x - mean) * rstd ; out1 = out0 * 2 + 1   with mean/rstd per row ([2, 1]).
  const std::vector<int64_t> program = {
      kFusedLoad, 0, 0, 0, kFusedLoad,  1, 1, 0, kFusedLoad,  2, 2, 0, kFusedSub,   3, 0, 1,
      kFusedMul,  3, 3, 2, kFusedStore, 0, 3, 0, kFusedConst, 4, 0, 0, kFusedConst, 5, 1, 0,
      kFusedMul,  4, 3, 4, kFusedAdd,   4, 4, 5, kFusedStore, 1, 4, 0};
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out,
      RunOp("FusedElementwise", Program(program, {2.0, 1.0}),
            {F({1, 2, 3, 10, 20, 30}, {2, 3}), F({2, 20}, {2, 1}), F({1, 0.1f}, {2, 1})}, 2));
  EXPECT_THAT(Values<float>(out[0]),
              Pointwise(NearRel(1e-6, 1e-7), std::vector<double>{-1, 0, 1, -1, 0, 1}));
  EXPECT_THAT(Values<float>(out[1]),
              Pointwise(NearRel(1e-6, 1e-7), std::vector<double>{-1, 1, 3, -1, 1, 3}));
  std::vector<Shape> shapes(2);
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto kernel,
                              KernelRegistry::Global().Create("FusedElementwise", DeviceType::kCPU,
                                                              Program(program, {2.0, 1.0})));
  ASSERT_THAT(
      kernel->OutputShapes({F({1}, {1, 3}), F({1}, {4, 1}), F({1}, {})}, absl::MakeSpan(shapes)),
      IsOk());
  EXPECT_THAT(shapes[0], ElementsAre(4, 3));
  EXPECT_THAT(shapes[1], ElementsAre(4, 3));
}

TEST(FusedElementwiseTest, OutputMayReuseAnInputBuffer) {
  // out0 = x + 1 is stored before out1 = x * 2 reads x again; out0 is x's own buffer.
  const std::vector<int64_t> program = {
      kFusedLoad,  0, 0, 0, kFusedConst, 1, 0, 0, kFusedAdd,   2, 0, 1, kFusedStore, 0, 2, 0,
      kFusedConst, 3, 1, 0, kFusedMul,   4, 0, 3, kFusedStore, 1, 4, 0};
  std::vector<float> values(3000);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i);
  Tensor x = F(values, {3000});
  Tensor out1 = *Tensor::Empty(DType::kF32, {3000});
  ASSERT_THAT(RunInto("FusedElementwise", Program(program, {1.0, 2.0}), {x}, {x, out1}), IsOk());
  for (size_t i = 0; i < values.size(); ++i) {
    ASSERT_EQ(x.data<float>()[i], values[i] + 1) << i;
    ASSERT_EQ(out1.data<float>()[i], values[i] * 2) << i;
  }
}

TEST(FusedElementwiseTest, InvalidProgramsAndInputs) {
  auto create = [](std::vector<int64_t> program, std::vector<double> constants = {}) {
    return KernelRegistry::Global().Create("FusedElementwise", DeviceType::kCPU,
                                           Program(std::move(program), std::move(constants)));
  };
  EXPECT_THAT(create({0, 0, 0}), StatusIs(kInvalid, HasSubstr("4-word")));
  EXPECT_THAT(create({99, 0, 0, 0, 2, 0, 0, 0}), StatusIs(kInvalid, HasSubstr("unknown opcode")));
  EXPECT_THAT(create({kFusedAdd, 0, 1, 2, kFusedStore, 0, 0, 0}),
              StatusIs(kInvalid, HasSubstr("unwritten slot")));
  EXPECT_THAT(create({kFusedConst, 0, 3, 0, kFusedStore, 0, 0, 0}, {1.0}),
              StatusIs(kInvalid, HasSubstr("constant index")));
  EXPECT_THAT(create({kFusedLoad, 40, 0, 0, kFusedStore, 0, 40, 0}),
              StatusIs(kInvalid, HasSubstr("slot")));
  EXPECT_THAT(create({kFusedLoad, 0, 0, 0}), StatusIs(kInvalid, HasSubstr("no output")));
  EXPECT_THAT(create({kFusedLoad, 0, 0, 0, kFusedStore, 1, 0, 0}),
              StatusIs(kInvalid, HasSubstr("output 0 is never stored")));
  const Attributes prog =
      Program({kFusedLoad, 0, 0, 0, kFusedLoad, 1, 1, 0, kFusedAdd, 0, 0, 1, kFusedStore, 0, 0, 0});
  EXPECT_THAT(RunOp("FusedElementwise", prog, {F({1, 2}, {2}), F({1, 2, 3}, {3})}),
              StatusIs(kInvalid, HasSubstr("FusedElementwise: shapes [2], [3]")));
  EXPECT_THAT(RunOp("FusedElementwise", prog, {F({1, 2}, {2}), D({1, 2}, {2})}, 1, {DType::kF32}),
              StatusIs(kInvalid, HasSubstr("input 1 is f64[2], expected f32")));
  EXPECT_THAT(RunOp("FusedElementwise", prog, {F({1, 2}, {2})}),
              StatusIs(kInvalid, HasSubstr("expected 2 to")));
}

}  // namespace
}  // namespace nimble::vm::cpu
