#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vm/kernels/cpu/elementwise_test_util.h"

namespace nimble::vm::cpu {
namespace {

using ::nimble::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pointwise;
using namespace ::nimble::vm::cpu::testing;  // NOLINT

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
constexpr char kNll[] = "NegativeLogLikelihoodLoss";
constexpr char kSce[] = "SoftmaxCrossEntropyLoss";

Attributes Reduce(const std::string& r) { return Attrs({{"reduction", r}}); }

// Log-probabilities [[1, 2, 3], [4, 5, 6]] (N=2, C=3).
Tensor Input() { return F({1, 2, 3, 4, 5, 6}, {2, 3}); }

TEST(LossesTest, NllReductions) {
  const Tensor target = I64({2, 0}, {2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp(kNll, Reduce("none"), {Input(), target}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(-3, -4));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp(kNll, Reduce("sum"), {Input(), target}));
  EXPECT_THAT(out[0].shape(), IsEmpty());
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(-7));
  // Default reduction is mean.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp(kNll, {}, {Input(), I32({2, 0}, {2})}));
  EXPECT_THAT(out[0].shape(), IsEmpty());
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(-3.5f));
}

TEST(LossesTest, NllWeightsAndIgnoreIndex) {
  const Tensor target = I64({2, 0}, {2});
  const Tensor weight = F({0.5f, 1, 2}, {3});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp(kNll, Reduce("none"), {Input(), target, weight}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(-6, -2));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp(kNll, Reduce("sum"), {Input(), target, weight}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(-8));
  // Mean divides by the applied weights: -8 / (2 + 0.5).
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp(kNll, {}, {Input(), target, weight}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(-3.2f));
  // ignore_index = 0: the second entry contributes nothing, its weight is excluded.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp(kNll, Attrs({{"ignore_index", int64_t{0}}}), {Input(), target, weight}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(-3));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp(kNll, Attrs({{"ignore_index", int64_t{0}}, {"reduction", std::string("none")}}),
                 {Input(), target, weight}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(-6, 0));
  // A negative ignore_index outside [0, C) is accepted in the target.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp(kNll, Attrs({{"ignore_index", int64_t{-1}}}), {Input(), I64({-1, 1}, {2})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(-5));
}

TEST(LossesTest, NllSpatialAndDouble) {
  // N=1, C=2, d=2: input[0, c, d] = 2c + d + 1.
  const Tensor input = D({1, 2, 3, 4}, {1, 2, 2});
  const Tensor target = I64({1, 0}, {1, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp(kNll, Reduce("none"), {input, target}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 2));
  EXPECT_THAT(Values<double>(out[0]), ElementsAre(-3, -2));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp(kNll, {}, {input, target}));
  EXPECT_THAT(Values<double>(out[0]), ElementsAre(-2.5));
}

TEST(LossesTest, NllHalf) {
  const Tensor input = Half(DType::kF16, {1, 2, 3, 4, 5, 6}, {2, 3});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp(kNll, Reduce("sum"), {input, I64({1, 2}, {2})}));
  EXPECT_EQ(out[0].dtype(), DType::kF16);
  EXPECT_THAT(HalfValues(out[0]), ElementsAre(-8));
}

TEST(LossesTest, NllErrors) {
  EXPECT_THAT(RunOp(kNll, {}, {Input(), I64({3, 0}, {2})}),
              StatusIs(kInvalid, HasSubstr("NegativeLogLikelihoodLoss: target value 3")));
  EXPECT_THAT(RunOp(kNll, {}, {Input(), I64({-1, 0}, {2})}),
              StatusIs(kInvalid, HasSubstr("out of range")));
  // ignore_index does not excuse other out-of-range targets.
  EXPECT_THAT(RunOp(kNll, Attrs({{"ignore_index", int64_t{-1}}}), {Input(), I64({-2, 0}, {2})}),
              StatusIs(kInvalid, HasSubstr("target value -2")));
  EXPECT_THAT(RunOp(kNll, {}, {Input(), I64({0, 0, 0}, {3})}),
              StatusIs(kInvalid, HasSubstr("does not match")));
  EXPECT_THAT(RunOp(kNll, {}, {Input(), I64({0, 0}, {2}), F({1, 1}, {2})}),
              StatusIs(kInvalid, HasSubstr("weight must have shape [3]")));
  EXPECT_THAT(RunOp(kNll, Reduce("avg"), {Input(), I64({0, 0}, {2})}),
              StatusIs(kInvalid, HasSubstr("reduction")));
  EXPECT_THAT(RunOp(kNll, {}, {I64({1, 2}, {1, 2}), I64({0}, {1})}, 1, {DType::kF32}),
              StatusIs(kInvalid));
}

TEST(LossesTest, SoftmaxCrossEntropy) {
  // Row 0: log_softmax([0, ln 3]) = [-ln 4, ln 3 - ln 4]; row 1: [-ln 2, -ln 2].
  const Tensor scores = F({0, static_cast<float>(std::log(3.0)), 1, 1}, {2, 2});
  const Tensor labels = I64({0, 1}, {2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp(kSce, {}, {scores, labels}, 2));
  EXPECT_THAT(out[0].shape(), IsEmpty());
  EXPECT_NEAR(out[0].data<float>()[0], 1.5 * std::log(2.0), 1e-6);
  EXPECT_THAT(out[1].shape(), ElementsAre(2, 2));
  const std::vector<double> log_prob = {-std::log(4.0), std::log(3.0) - std::log(4.0),
                                        -std::log(2.0), -std::log(2.0)};
  EXPECT_THAT(Values<float>(out[1]), Pointwise(NearRel(0.0, 1e-6), log_prob));
  // Weights [1, 3], none: [ln 4, 3 ln 2]; ignore_index=1 with mean: ln 4 / 1.
  const Tensor weights = F({1, 3}, {2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp(kSce, Reduce("none"), {scores, labels, weights}));
  EXPECT_THAT(Values<float>(out[0]),
              Pointwise(NearRel(0.0, 1e-6), std::vector<double>{std::log(4.0), 3 * std::log(2.0)}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp(kSce, Attrs({{"ignore_index", int64_t{1}}}), {scores, labels, weights}));
  EXPECT_NEAR(out[0].data<float>()[0], std::log(4.0), 1e-6);
  EXPECT_THAT(RunOp(kSce, {}, {scores, I64({0, 2}, {2})}),
              StatusIs(kInvalid, HasSubstr("SoftmaxCrossEntropyLoss: target value 2")));
}

TEST(LossesTest, SoftmaxCrossEntropySpatial) {
  // N=1, C=2, d=2; class axis is 1: position 0 sees [0, 0], position 1 sees [2, 0].
  const Tensor scores = D({0, 2, 0, 0}, {1, 2, 2});
  const Tensor labels = I32({1, 0}, {1, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp(kSce, Reduce("sum"), {scores, labels}, 2));
  const double lp1 = 2 - std::log(std::exp(2.0) + 1);  // log_prob at [0, 0, 1]
  EXPECT_NEAR(out[0].data<double>()[0], std::log(2.0) - lp1, 1e-12);
  EXPECT_THAT(
      Values<double>(out[1]),
      Pointwise(NearRel(0.0, 1e-12), std::vector<double>{-std::log(2.0), lp1, -std::log(2.0),
                                                         -std::log(std::exp(2.0) + 1)}));
}

TEST(LossesTest, DropoutInference) {
  const Tensor x = F({1, -2, 3}, {3});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Dropout", {}, {x}, 2, {DType::kF32, DType::kBool}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, -2, 3));
  EXPECT_THAT(BoolValues(out[1]), ElementsAre(1, 1, 1));
  // Ratio given, training_mode false: still the identity.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Dropout", {}, {x, F({0.5f}, {}), B({0}, {})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, -2, 3));
  // Training with ratio 0 is the identity too.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Dropout", {}, {x, F({0}, {}), B({1}, {})}, 2, {DType::kF32, DType::kBool}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, -2, 3));
  EXPECT_THAT(BoolValues(out[1]), ElementsAre(1, 1, 1));
  EXPECT_THAT(RunOp("Dropout", {}, {x, F({0.5f}, {}), B({1}, {})}),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("training mode")));
  // Training with the default ratio (0.5).
  EXPECT_THAT(RunOp("Dropout", {}, {x, Tensor(), B({1}, {})}),
              StatusIs(absl::StatusCode::kUnimplemented));
}

TEST(LossesTest, CumProd) {
  const Tensor x = F({1, 2, 3, 4}, {4});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("CumProd", {}, {x, I64({0}, {})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 2, 6, 24));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("CumProd", Attrs({{"exclusive", int64_t{1}}}), {x, I64({0}, {})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 1, 2, 6));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("CumProd", Attrs({{"reverse", int64_t{1}}}), {x, I32({0}, {})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(24, 24, 12, 4));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("CumProd", Attrs({{"reverse", int64_t{1}}, {"exclusive", int64_t{1}}}),
                 {x, I64({0}, {})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(24, 12, 4, 1));
  // 2-D: axis 0 (inner > 1) and negative axis on int32.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out,
                              RunOp("CumProd", {}, {D({1, 2, 3, 4, 5, 6}, {2, 3}), I64({0}, {})}));
  EXPECT_THAT(Values<double>(out[0]), ElementsAre(1, 2, 3, 4, 10, 18));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("CumProd", {}, {I32({1, 2, 3, 4, 5, 6}, {2, 3}), I64({-1}, {})}));
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(1, 2, 6, 4, 20, 120));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("CumProd", Attrs({{"exclusive", int64_t{1}}}),
                                         {Make<uint64_t>({2, 3, 4}, {3}), I64({0}, {})}));
  EXPECT_THAT(Values<uint64_t>(out[0]), ElementsAre(1, 2, 6));
  EXPECT_THAT(RunOp("CumProd", {}, {x, I64({1}, {})}), StatusIs(kInvalid));
}

}  // namespace
}  // namespace nimble::vm::cpu
