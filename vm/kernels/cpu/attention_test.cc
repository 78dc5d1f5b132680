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
using ::testing::FloatNear;
using ::testing::HasSubstr;
using namespace ::nimble::vm::cpu::testing;  // NOLINT

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

Attributes Linear(const std::string& rule, int64_t q_heads, int64_t kv_heads) {
  return Attrs({{"update_rule", rule},
                {"q_num_heads", q_heads},
                {"kv_num_heads", kv_heads},
                {"scale", 1.0}});
}

TEST(LinearAttentionTest, LinearRuleAccumulatesOuterProducts) {
  // dk = 2, dv = 1. t0: S = k0 v0 = [3, 6], o0 = q0 . S = 1*3 + 1*6 = 9. t1: S += [0, 1] * 1 =
  // [3, 7], o1 = 3.
  const Tensor q = F({1, 1, 1, 0}, {1, 2, 2});
  const Tensor k = F({1, 2, 0, 1}, {1, 2, 2});
  const Tensor v = F({3, 1}, {1, 2, 1});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out,
                              RunOp("LinearAttention", Linear("linear", 1, 1), {q, k, v}, 2));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 2, 1));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(9, 3));
  EXPECT_THAT(out[1].shape(), ElementsAre(1, 1, 2, 1));
  EXPECT_THAT(Values<float>(out[1]), ElementsAre(3, 7));
  // The same in f16; the default scale is 1/sqrt(dk).
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("LinearAttention",
                 Attrs({{"update_rule", std::string("linear")},
                        {"q_num_heads", int64_t{1}},
                        {"kv_num_heads", int64_t{1}}}),
                 {Half(DType::kF16, {1, 1, 1, 0}, {1, 2, 2}),
                  Half(DType::kF16, {1, 2, 0, 1}, {1, 2, 2}), Half(DType::kF16, {3, 1}, {1, 2, 1})},
                 2));
  EXPECT_EQ(out[0].dtype(), DType::kF16);
  EXPECT_THAT(HalfValues(out[0]), ElementsAre(FloatNear(9 / std::sqrt(2.0f), 4e-3f),
                                              FloatNear(3 / std::sqrt(2.0f), 2e-3f)));
  EXPECT_THAT(HalfValues(out[1]), ElementsAre(3, 7));
}

TEST(LinearAttentionTest, GatedDeltaWithPastStateAndGroupedQueries) {
  // One kv head shared by two query heads, dk = dv = 1. S = 2 * exp(log 0.5) = 1; the delta
  // rule writes beta * (v - S k) = 0.5 * (4 - 2) = 1 along k = 2: S = 3; o = [1, -2] * 3.
  const Tensor q = F({1, -2}, {1, 1, 2});
  const Tensor k = F({2}, {1, 1, 1});
  const Tensor v = F({4}, {1, 1, 1});
  const Tensor past = F({2}, {1, 1, 1, 1});
  const Tensor decay = F({std::log(0.5f)}, {1, 1, 1});
  const Tensor beta = F({0.5f}, {1, 1, 1});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("LinearAttention", Linear("gated_delta", 2, 1),
                                              {q, k, v, past, decay, beta}, 2));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1, 2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(FloatNear(3, 1e-5f), FloatNear(-6, 1e-5f)));
  EXPECT_THAT(Values<float>(out[1]), ElementsAre(FloatNear(3, 1e-5f)));
}

TEST(LinearAttentionTest, RejectsBadInputsAndAttributes) {
  const Tensor x = F({1, 2}, {1, 1, 2});
  EXPECT_THAT(RunOp("LinearAttention", Linear("gated", 1, 1), {x, x, x}, 2),
              StatusIs(kInvalid, HasSubstr("requires decay")));
  EXPECT_THAT(RunOp("LinearAttention", Linear("linear", 1, 1),
                    {x, x, x, Tensor(), Tensor(), F({1}, {1, 1, 1})}, 2),
              StatusIs(kInvalid, HasSubstr("takes no beta")));
  EXPECT_THAT(RunOp("LinearAttention", Linear("linear", 1, 1), {x, x, x, F({0}, {1, 1, 1, 1})}, 2),
              StatusIs(kInvalid, HasSubstr("past_state")));
  EXPECT_THAT(RunOp("LinearAttention", Linear("linear", 1, 1), {x, F({1}, {1, 1, 1}), x}, 2),
              StatusIs(kInvalid, HasSubstr("key")));
  EXPECT_THAT(RunOp("LinearAttention", Linear("linear", 1, 1), {F({1, 2}, {2}), x, x}, 2),
              StatusIs(kInvalid, HasSubstr("rank 3")));
  EXPECT_THAT(
      KernelRegistry::Global().Create("LinearAttention", kCpu.type, Linear("softmax", 1, 1)),
      StatusIs(kInvalid, HasSubstr("update_rule")));
  EXPECT_THAT(KernelRegistry::Global().Create("LinearAttention", kCpu.type, Linear("linear", 3, 2)),
              StatusIs(kInvalid, HasSubstr("multiple")));
}

TEST(FlexAttentionTest, SoftmaxAttentionWithGroupedHeads) {
  // Two query heads share one key/value head; keys [0, 1], values [1, 3], scale 1. Head 0 (q = 0)
  // weighs both keys alike: 2. Head 1 (q = ln 3) gives probabilities [1/4, 3/4]: 2.5.
  const Attributes scale = Attrs({{"scale", 1.0}});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("ai.onnx.preview.FlexAttention", scale,
                                              {F({0, std::log(3.0f)}, {1, 2, 1, 1}),
                                               F({0, 1}, {1, 1, 2, 1}), F({1, 3}, {1, 1, 2, 1})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 2, 1, 1));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(FloatNear(2, 1e-6f), FloatNear(2.5f, 1e-6f)));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("ai.onnx.preview.FlexAttention", scale,
                                         {D({0, std::log(3.0)}, {1, 2, 1, 1}),
                                          D({0, 1}, {1, 1, 2, 1}), D({1, 3}, {1, 1, 2, 1})}));
  EXPECT_EQ(out[0].dtype(), DType::kF64);
  EXPECT_THAT(Values<double>(out[0]),
              ElementsAre(::testing::DoubleNear(2, 1e-12), ::testing::DoubleNear(2.5, 1e-12)));
  // Three query heads do not share two key/value heads; 3-D inputs are refused.
  EXPECT_THAT(RunOp("ai.onnx.preview.FlexAttention", {},
                    {F({0, 0, 0}, {1, 3, 1, 1}), F({0, 1}, {1, 2, 1, 1}), F({1, 3}, {1, 2, 1, 1})}),
              StatusIs(kInvalid, HasSubstr("multiple")));
  EXPECT_THAT(RunOp("ai.onnx.preview.FlexAttention", {},
                    {F({0}, {1, 1, 1}), F({0}, {1, 1, 1}), F({0}, {1, 1, 1})}),
              StatusIs(kInvalid, HasSubstr("FlexAttention")));
}

TEST(FlexAttentionTest, StagesSplitScoresFromApply) {
  // Stage 1: scale * Q K^T per query head (both heads read the one key head); stage 2: P V.
  const Tensor q = F({1, 2}, {1, 2, 1, 1});
  const Tensor k = F({3, 4}, {1, 1, 2, 1});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out,
                              RunOp("ai.onnx.preview.FlexAttention",
                                    Attrs({{"flex_stage", int64_t{1}}, {"scale", 0.5}}), {q, k}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 2, 1, 2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1.5f, 2, 3, 4));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("ai.onnx.preview.FlexAttention", Attrs({{"flex_stage", int64_t{2}}}),
                 {F({0.25f, 0.75f, 1, 0}, {1, 2, 1, 2}), F({4, 8, 1, 2}, {1, 1, 2, 2})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 2, 1, 2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1.75f, 3.5f, 4, 8));
  EXPECT_THAT(RunOp("ai.onnx.preview.FlexAttention", Attrs({{"flex_stage", int64_t{2}}}),
                    {F({1, 0, 0}, {1, 1, 1, 3}), F({4, 8, 1, 2}, {1, 1, 2, 2})}),
              StatusIs(kInvalid, HasSubstr("FlexAttention")));
  EXPECT_THAT(KernelRegistry::Global().Create("ai.onnx.preview.FlexAttention", kCpu.type,
                                              Attrs({{"flex_stage", int64_t{3}}})),
              StatusIs(kInvalid, HasSubstr("flex_stage")));
}

}  // namespace
}  // namespace nimble::vm::cpu
