#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vm/kernels/cpu/elementwise_internal.h"
#include "vm/kernels/cpu/elementwise_test_util.h"

namespace nimble::vm::cpu {
namespace {

using ::nimble::testing::IsOk;
using ::nimble::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pointwise;
using namespace ::nimble::vm::cpu::testing;  // NOLINT

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

Attributes KeepDims(int64_t keepdims) { return Attrs({{"keepdims", keepdims}}); }

// [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]
Tensor Cube() { return F({1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2}); }

TEST(ReductionTest, ReduceSumAxesAsInputOrAttribute) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("ReduceSum", {}, {Cube(), I64({1}, {1})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 1, 2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(4, 6, 12, 14));
  // Negative axis, keepdims=0.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("ReduceSum", KeepDims(0), {Cube(), I64({-1}, {1})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(3, 7, 11, 15));
  // Leading axis (inner > 1 path).
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("ReduceSum", KeepDims(0), {Cube(), I32({0}, {1})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(6, 8, 10, 12));
  // Non-contiguous axes {0, 2} (transposed first).
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("ReduceSum", {}, {Cube(), I64({0, 2}, {2})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 2, 1));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(14, 22));
  // Axes attribute (opset < 13).
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out,
      RunOp("ReduceSum", Attrs({{"axes", std::vector<int64_t>{2, 0}}, {"keepdims", int64_t{0}}}),
            {Cube()}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(14, 22));
  // No axes: everything.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("ReduceSum", KeepDims(0), {Cube()}));
  EXPECT_THAT(out[0].shape(), IsEmpty());
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(36));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("ReduceSum", {}, {Cube(), I64({}, {0})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1, 1));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(36));
  // noop_with_empty_axes: identity.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("ReduceSum", Attrs({{"noop_with_empty_axes", int64_t{1}}}),
                                         {Cube(), I64({}, {0})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 2, 2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 2, 3, 4, 5, 6, 7, 8));
}

TEST(ReductionTest, EveryKind) {
  const Tensor x = F({1, -2, 3, 4, 0.5f, -6}, {2, 3});
  struct Case {
    const char* op;
    std::vector<double> expected;  // over axis 1
  };
  const Case cases[] = {
      {"ReduceSum", {2, -1.5}},
      {"ReduceMean", {2.0 / 3, -0.5}},
      {"ReduceMax", {3, 4}},
      {"ReduceMin", {-2, -6}},
      {"ReduceProd", {-6, -12}},
      {"ReduceL1", {6, 10.5}},
      {"ReduceL2", {std::sqrt(14.0), std::sqrt(52.25)}},
      {"ReduceLogSum", {std::log(2.0), std::nan("")}},
      {"ReduceLogSumExp",
       {std::log(std::exp(1) + std::exp(-2) + std::exp(3)),
        std::log(std::exp(4) + std::exp(0.5) + std::exp(-6))}},
      {"ReduceSumSquare", {14, 52.25}},
  };
  for (const Case& c : cases) {
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp(c.op, KeepDims(0), {x, I64({1}, {1})}));
    EXPECT_THAT(out[0].shape(), ElementsAre(2)) << c.op;
    EXPECT_THAT(Values<float>(out[0]), Pointwise(NearRel(1e-6, 1e-7), c.expected)) << c.op;
    // The same along axis 0 of the transpose (the inner > 1 path).
    const Tensor xt = F({1, 4, -2, 0.5f, 3, -6}, {3, 2});
    NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp(c.op, KeepDims(0), {xt, I64({0}, {1})}));
    EXPECT_THAT(Values<float>(out[0]), Pointwise(NearRel(1e-6, 1e-7), c.expected)) << c.op;
    // And in double.
    const Tensor xd = D({1, -2, 3, 4, 0.5, -6}, {2, 3});
    NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp(c.op, KeepDims(0), {xd, I64({1}, {1})}));
    EXPECT_THAT(Values<double>(out[0]), Pointwise(NearRel(1e-12, 1e-15), c.expected)) << c.op;
  }
}

TEST(ReductionTest, LongRowsOnEveryIsaMatchDouble) {
  for (int64_t n : {1, 7, 16, 37, 100, 768, 1031}) {
    std::vector<float> x(3 * n);
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(static_cast<float>(i) * 0.37f) * 3.0f;
    for (int level = 0; level <= static_cast<int>(DetectedSimdLevel()); ++level) {
      SetSimdLevelForTesting(static_cast<SimdLevel>(level));
      for (const char* op : {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL1",
                             "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"}) {
        NIMBLE_ASSERT_OK_AND_ASSIGN(
            auto out, RunOp(op, KeepDims(0), {F(x, {3, n}), I64({-1}, {1})}, 1, {}, 4));
        std::vector<double> expected;
        for (int64_t r = 0; r < 3; ++r) {
          double sum = 0, mx = -1e300, mn = 1e300, l1 = 0, sq = 0;
          for (int64_t k = 0; k < n; ++k) {
            const double v = x[r * n + k];
            sum += v;
            mx = std::max(mx, v);
            mn = std::min(mn, v);
            l1 += std::abs(v);
            sq += v * v;
          }
          double lse = 0;
          for (int64_t k = 0; k < n; ++k) lse += std::exp(x[r * n + k] - mx);
          const std::string o = op;
          expected.push_back(o == "ReduceSum"         ? sum
                             : o == "ReduceMean"      ? sum / n
                             : o == "ReduceMax"       ? mx
                             : o == "ReduceMin"       ? mn
                             : o == "ReduceL1"        ? l1
                             : o == "ReduceL2"        ? std::sqrt(sq)
                             : o == "ReduceSumSquare" ? sq
                                                      : mx + std::log(lse));
        }
        EXPECT_THAT(Values<float>(out[0]), Pointwise(NearRel(2e-5, 2e-5), expected))
            << op << " n=" << n << " level=" << level;
      }
    }
    SetSimdLevelForTesting(SimdLevel::kAvx512);
  }
}

TEST(ReductionTest, EmptyAndNaN) {
  const Tensor empty = F({}, {2, 0});
  const std::pair<const char*, float> identities[] = {
      {"ReduceSum", 0.0f},        {"ReduceProd", 1.0f},      {"ReduceMax", -kInf},
      {"ReduceMin", kInf},        {"ReduceL2", 0.0f},        {"ReduceLogSum", -kInf},
      {"ReduceLogSumExp", -kInf}, {"ReduceSumSquare", 0.0f},
  };
  for (const auto& [op, value] : identities) {
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp(op, KeepDims(0), {empty, I64({1}, {1})}));
    EXPECT_THAT(Values<float>(out[0]), ElementsAre(value, value)) << op;
  }
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("ReduceMean", KeepDims(0), {empty, I64({1}, {1})}));
  EXPECT_TRUE(std::isnan(Values<float>(out[0])[0]));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out,
                              RunOp("ReduceMax", KeepDims(0), {I32({}, {0, 3}), I64({0}, {1})}));
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(std::numeric_limits<int32_t>::lowest(),
                                                   std::numeric_limits<int32_t>::lowest(),
                                                   std::numeric_limits<int32_t>::lowest()));
  // Reducing the non-empty axis of an empty tensor gives an empty output.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("ReduceSum", KeepDims(0), {empty, I64({0}, {1})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(0));
  // NaN propagates through Max/Min.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("ReduceMax", KeepDims(0), {F({1, kNaN, 3, 4, 5, 6}, {2, 3}), I64({1}, {1})}));
  EXPECT_TRUE(std::isnan(Values<float>(out[0])[0]));
  EXPECT_EQ(Values<float>(out[0])[1], 6);
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("ReduceMin", KeepDims(0), {F({1, kNaN, 3, 4, 5, 6}, {3, 2}), I64({0}, {1})}));
  EXPECT_EQ(Values<float>(out[0])[0], 1);
  EXPECT_TRUE(std::isnan(Values<float>(out[0])[1]));
  // LogSumExp is stable for large inputs.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("ReduceLogSumExp", KeepDims(0), {F({1000, 1000}, {2})}));
  EXPECT_THAT(Values<float>(out[0]),
              Pointwise(NearRel(1e-6, 0), std::vector<double>{1000 + std::log(2.0)}));
}

TEST(ReductionTest, IntegerAndHalfTypes) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("ReduceSum", KeepDims(0), {I32({1, 2, 3, 4, 5, 6}, {2, 3}), I64({1}, {1})}));
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(6, 15));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("ReduceMean", KeepDims(0), {I64({1, 2, 4, -7, 1, 1}, {2, 3}), I64({1}, {1})}));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(2, -1));  // integer division
  NIMBLE_ASSERT_OK_AND_ASSIGN(out,
                              RunOp("ReduceProd", KeepDims(0), {Make<uint8_t>({16, 16, 2}, {3})}));
  EXPECT_THAT(Values<uint8_t>(out[0]), ElementsAre(0));  // wraps
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("ReduceMax", KeepDims(0), {B({0, 1, 0, 0}, {2, 2}), I64({1}, {1})}));
  EXPECT_THAT(BoolValues(out[0]), ElementsAre(1, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out,
                              RunOp("ReduceMin", KeepDims(0), {Make<int8_t>({-3, 7, 2}, {3})}));
  EXPECT_THAT(Values<int8_t>(out[0]), ElementsAre(-3));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("ReduceMean", {}, {Half(DType::kF16, {1, 2, 3, 4}, {2, 2}), I64({0}, {1})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 2));
  EXPECT_THAT(HalfValues(out[0]), ElementsAre(2, 3));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("ReduceSum", KeepDims(0), {Half(DType::kBF16, {1, 2, 3, 4}, {4})}));
  EXPECT_THAT(HalfValues(out[0]), ElementsAre(10));
  EXPECT_THAT(RunOp("ReduceLogSumExp", {}, {I32({1}, {1})}),
              StatusIs(kInvalid, HasSubstr("ReduceLogSumExp: unsupported dtype i32")));
}

TEST(ReductionTest, ErrorsAndOutputShapes) {
  EXPECT_THAT(RunOp("ReduceSum", {}, {Cube(), I64({3}, {1})}),
              StatusIs(kInvalid, HasSubstr("ReduceSum: axis 3 is out of range")));
  EXPECT_THAT(RunOp("ReduceMean", {}, {Cube(), I64({1, -2}, {2})}),
              StatusIs(kInvalid, HasSubstr("ReduceMean: axis -2 is repeated")));
  EXPECT_THAT(RunOp("ReduceMax", {}, {Cube(), F({1}, {1})}),
              StatusIs(kInvalid, HasSubstr("axes must be int32 or int64")));
  EXPECT_THAT(
      RunInto("ReduceSum", {}, {Cube(), I64({0}, {1})}, {*Tensor::Empty(DType::kF32, {2, 2})}),
      StatusIs(kInvalid, HasSubstr("expected f32[1, 2, 2]")));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto kernel, KernelRegistry::Global().Create("ReduceL2", DeviceType::kCPU, KeepDims(0)));
  std::vector<Shape> shapes(1);
  ASSERT_THAT(
      kernel->OutputShapes({F({}, {4, 0, 3, 5}), I64({-1, 1}, {2})}, absl::MakeSpan(shapes)),
      IsOk());
  EXPECT_THAT(shapes[0], ElementsAre(4, 3));
}

TEST(ReductionTest, ArgMaxArgMin) {
  const Tensor x = F({1, 5, 5, 2, 0, 9}, {2, 3});
  const std::vector<DType> kI64 = {DType::kI64};
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out,
                              RunOp("ArgMax", Attrs({{"axis", int64_t{1}}}), {x}, 1, kI64));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 1));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(1, 2));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("ArgMax", Attrs({{"axis", int64_t{-1}}, {"select_last_index", int64_t{1}}}), {x},
                 1, kI64));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(2, 2));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out,
                              RunOp("ArgMin", Attrs({{"keepdims", int64_t{0}}}), {x}, 1, kI64));
  EXPECT_THAT(out[0].shape(), ElementsAre(3));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(0, 1, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("ArgMin", Attrs({{"axis", int64_t{1}}, {"keepdims", int64_t{0}}}),
                 {I32({3, 1, 1, 7, 7, 7}, {2, 3})}, 1, kI64));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(1, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("ArgMin",
                                         Attrs({{"axis", int64_t{1}},
                                                {"keepdims", int64_t{0}},
                                                {"select_last_index", int64_t{1}}}),
                                         {I32({3, 1, 1, 7, 7, 7}, {2, 3})}, 1, kI64));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(2, 2));
  // NaN wins, like numpy.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("ArgMax", Attrs({{"keepdims", int64_t{0}}}),
                                         {F({1, kNaN, 3, kNaN}, {4})}, 1, kI64));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("ArgMin", Attrs({{"keepdims", int64_t{0}}, {"select_last_index", int64_t{1}}}),
                 {F({1, kNaN, 3, kNaN, 0}, {5})}, 1, kI64));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(3));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("ArgMax", Attrs({{"axis", int64_t{1}}}),
                                         {Half(DType::kF16, {1, 3, 2}, {1, 3})}, 1, kI64));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(1));
  EXPECT_THAT(RunOp("ArgMax", Attrs({{"axis", int64_t{2}}}), {x}, 1, kI64),
              StatusIs(kInvalid, HasSubstr("ArgMax: axis 2 is out of range")));
  EXPECT_THAT(RunOp("ArgMax", Attrs({{"axis", int64_t{1}}}), {F({}, {2, 0})}, 1, kI64),
              StatusIs(kInvalid, HasSubstr("ArgMax: cannot reduce the empty axis")));
}

TEST(ReductionTest, CumSum) {
  const Tensor x = F({1, 2, 3, 4, 5, 6}, {2, 3});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("CumSum", {}, {x, I64({1}, {})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 3, 6, 4, 9, 15));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("CumSum", {}, {x, I32({0}, {})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 2, 3, 5, 7, 9));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("CumSum", Attrs({{"exclusive", int64_t{1}}}), {x, I64({-1}, {1})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 1, 3, 0, 4, 9));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out,
                              RunOp("CumSum", Attrs({{"reverse", int64_t{1}}}), {x, I64({1}, {})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(6, 5, 3, 15, 11, 6));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("CumSum", Attrs({{"reverse", int64_t{1}}, {"exclusive", int64_t{1}}}),
                 {x, I64({0}, {})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(4, 5, 6, 0, 0, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("CumSum", {}, {I64({5, -2, 7}, {3}), I32({0}, {})}));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(5, 3, 10));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("CumSum", {}, {Half(DType::kF16, {0.5f, 1, 2}, {3}), I32({0}, {})}));
  EXPECT_THAT(HalfValues(out[0]), ElementsAre(0.5f, 1.5f, 3.5f));
  EXPECT_THAT(RunOp("CumSum", {}, {x, I64({2}, {})}),
              StatusIs(kInvalid, HasSubstr("CumSum: axis 2 is out of range")));
  EXPECT_THAT(RunOp("CumSum", {}, {x, I64({0, 1}, {2})}),
              StatusIs(kInvalid, HasSubstr("CumSum: axis must be a scalar")));
}

}  // namespace
}  // namespace nimble::vm::cpu
