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
using ::testing::Pointwise;
using namespace ::nimble::vm::cpu::testing;  // NOLINT

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

// Softmax / LogSoftmax of rows of `x` ([outer, n] row-major), in double.
std::vector<double> SoftmaxRef(const std::vector<float>& x, int64_t n, bool log) {
  std::vector<double> out(x.size());
  for (size_t r = 0; r < x.size() / n; ++r) {
    double m = -1e300;
    for (int64_t k = 0; k < n; ++k) m = std::max(m, static_cast<double>(x[r * n + k]));
    double s = 0;
    for (int64_t k = 0; k < n; ++k) s += std::exp(x[r * n + k] - m);
    for (int64_t k = 0; k < n; ++k) {
      out[r * n + k] = log ? x[r * n + k] - m - std::log(s) : std::exp(x[r * n + k] - m) / s;
    }
  }
  return out;
}

TEST(NormalizationTest, SoftmaxLastAxisOnEveryIsa) {
  for (int64_t n : {1, 5, 16, 37, 128, 768, 1029}) {
    const int64_t rows = 6;
    std::vector<float> x(rows * n);
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::cos(static_cast<float>(i) * 0.7f) * 8.0f;
    for (int level = 0; level <= static_cast<int>(DetectedSimdLevel()); ++level) {
      SetSimdLevelForTesting(static_cast<SimdLevel>(level));
      for (bool log : {false, true}) {
        NIMBLE_ASSERT_OK_AND_ASSIGN(
            auto out, RunOp(log ? "LogSoftmax" : "Softmax", {}, {F(x, {2, 3, n})}, 1, {}, 4));
        EXPECT_THAT(Values<float>(out[0]), Pointwise(NearRel(2e-6, 1e-7), SoftmaxRef(x, n, log)))
            << "n=" << n << " level=" << level << " log=" << log;
      }
    }
    SetSimdLevelForTesting(SimdLevel::kAvx512);
  }
}

TEST(NormalizationTest, SoftmaxOtherAxesTypesAndEdges) {
  // axis 0 of [3, 2] equals the last axis of its transpose.
  const std::vector<float> xt = {1, 4, 2, 5, 3, 9};
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out,
                              RunOp("Softmax", Attrs({{"axis", int64_t{0}}}), {F(xt, {3, 2})}));
  std::vector<double> ref = SoftmaxRef({1, 2, 3, 4, 5, 9}, 3, false);
  EXPECT_THAT(Values<float>(out[0]),
              Pointwise(NearRel(2e-6, 1e-7),
                        std::vector<double>{ref[0], ref[3], ref[1], ref[4], ref[2], ref[5]}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out,
                              RunOp("LogSoftmax", Attrs({{"axis", int64_t{-2}}}), {F(xt, {3, 2})}));
  ref = SoftmaxRef({1, 2, 3, 4, 5, 9}, 3, true);
  EXPECT_THAT(Values<float>(out[0]),
              Pointwise(NearRel(2e-6, 1e-7),
                        std::vector<double>{ref[0], ref[3], ref[1], ref[4], ref[2], ref[5]}));
  // Large values and -inf (masked) entries.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Softmax", {}, {F({1000, 1000, -kInf, 999}, {4})}));
  const double e = std::exp(-1.0);
  EXPECT_THAT(Values<float>(out[0]),
              Pointwise(NearRel(2e-6, 1e-7),
                        std::vector<double>{1 / (2 + e), 1 / (2 + e), 0, e / (2 + e)}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Softmax", {}, {D({1, 2, 3}, {3})}));
  EXPECT_THAT(Values<double>(out[0]),
              Pointwise(NearRel(1e-12, 0), SoftmaxRef({1, 2, 3}, 3, false)));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("LogSoftmax", {}, {Half(DType::kF16, {1, 2, 3}, {3})}));
  EXPECT_THAT(HalfValues(out[0]), Pointwise(NearRel(2e-3, 1e-3), SoftmaxRef({1, 2, 3}, 3, true)));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Softmax", {}, {F({}, {2, 0})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 0));
  // Hardmax: 1 at the first maximum.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Hardmax", {}, {F({1, 3, 3, 0, -1, -2}, {2, 3})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 1, 0, 1, 0, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Hardmax", Attrs({{"axis", int64_t{0}}}), {F({1, 3, 3, 0, -1, 4}, {2, 3})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 1, 0, 0, 0, 1));
  EXPECT_THAT(RunOp("Softmax", Attrs({{"axis", int64_t{2}}}), {F({1, 2}, {1, 2})}),
              StatusIs(kInvalid, HasSubstr("Softmax: axis 2 is out of range")));
  EXPECT_THAT(RunOp("Softmax", {}, {I32({1, 2}, {2})}),
              StatusIs(kInvalid, HasSubstr("Softmax: unsupported dtype i32")));
}

// Layer norm of rows of n elements, in double.
std::vector<double> LayerNormRef(const std::vector<float>& x, int64_t n,
                                 const std::vector<float>& scale, const std::vector<float>& bias,
                                 double eps, bool rms, std::vector<double>* means = nullptr,
                                 std::vector<double>* invs = nullptr) {
  std::vector<double> out(x.size());
  for (size_t r = 0; r < x.size() / n; ++r) {
    double m = 0;
    if (!rms) {
      for (int64_t k = 0; k < n; ++k) m += x[r * n + k];
      m /= n;
    }
    double q = 0;
    for (int64_t k = 0; k < n; ++k) q += (x[r * n + k] - m) * (x[r * n + k] - m);
    const double inv = 1 / std::sqrt(q / n + eps);
    if (means) means->push_back(m);
    if (invs) invs->push_back(inv);
    for (int64_t k = 0; k < n; ++k) {
      out[r * n + k] = (x[r * n + k] - m) * inv * (scale.empty() ? 1.0 : scale[k]) +
                       (bias.empty() ? 0.0 : bias[k]);
    }
  }
  return out;
}

TEST(NormalizationTest, LayerNormLastAxisOnEveryIsa) {
  for (int64_t n : {1, 3, 16, 45, 768, 1030}) {
    const int64_t rows = 5;
    std::vector<float> x(rows * n), scale(n), bias(n);
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(static_cast<float>(i) * 1.3f) * 4 + 10;
    for (int64_t k = 0; k < n; ++k) {
      scale[k] = 0.5f + static_cast<float>(k % 5) * 0.25f;
      bias[k] = static_cast<float>(k % 3) - 1.0f;
    }
    for (int level = 0; level <= static_cast<int>(DetectedSimdLevel()); ++level) {
      SetSimdLevelForTesting(static_cast<SimdLevel>(level));
      std::vector<double> means, invs;
      const std::vector<double> ref = LayerNormRef(x, n, scale, bias, 1e-5, false, &means, &invs);
      NIMBLE_ASSERT_OK_AND_ASSIGN(
          auto out, RunOp("LayerNormalization", {}, {F(x, {rows, n}), F(scale, {n}), F(bias, {n})},
                          3, {}, 4));
      EXPECT_THAT(Values<float>(out[0]), Pointwise(NearRel(1e-5, 1e-5), ref)) << n;
      EXPECT_THAT(out[1].shape(), ElementsAre(rows, 1));
      EXPECT_THAT(Values<float>(out[1]), Pointwise(NearRel(1e-6, 1e-6), means)) << n;
      EXPECT_THAT(Values<float>(out[2]), Pointwise(NearRel(1e-5, 1e-6), invs)) << n;
      NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("RMSNormalization", Attrs({{"epsilon", 1e-3}}),
                                             {F(x, {rows, n}), F(scale, {n})}));
      EXPECT_THAT(Values<float>(out[0]),
                  Pointwise(NearRel(1e-5, 1e-5), LayerNormRef(x, n, scale, {}, 1e-3, true)))
          << n;
    }
    SetSimdLevelForTesting(SimdLevel::kAvx512);
  }
}

TEST(NormalizationTest, LayerNormAxesBroadcastAndTypes) {
  const std::vector<float> x = {1, 2, 3, 4, 5, 6, -1, 0, 7, 2, 2, 9};
  // axis 1 of [2, 3, 2]: normalise over the last 6 elements of each batch.
  const std::vector<float> scale = {1, 2, 3, 4, 5, 6};
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("LayerNormalization", Attrs({{"axis", int64_t{1}}}),
                                              {F(x, {2, 3, 2}), F(scale, {3, 2})}, 2));
  EXPECT_THAT(Values<float>(out[0]),
              Pointwise(NearRel(1e-5, 1e-6), LayerNormRef(x, 6, scale, {}, 1e-5, false)));
  EXPECT_THAT(out[1].shape(), ElementsAre(2, 1, 1));
  // Scale broadcast from [1, 2] over the normalised [3, 2]... shape [2]; bias a scalar.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("LayerNormalization", Attrs({{"axis", int64_t{-1}}, {"epsilon", 0.1}}),
                 {F(x, {6, 2}), F({2, 3}, {1, 2}), F({0.5f}, {})}));
  EXPECT_THAT(Values<float>(out[0]),
              Pointwise(NearRel(1e-5, 1e-6), LayerNormRef(x, 2, {2, 3}, {0.5f, 0.5f}, 0.1, false)));
  // A scale that varies per row ([2, 1, 2] over X [2, 3, 2], axis -1).
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("LayerNormalization", {}, {F(x, {2, 3, 2}), F({1, 2, 3, 4}, {2, 1, 2})}));
  std::vector<double> ref = LayerNormRef(x, 2, {}, {}, 1e-5, false);
  for (size_t i = 0; i < ref.size(); ++i) ref[i] *= (i < 6 ? (i % 2 ? 2 : 1) : (i % 2 ? 4 : 3));
  EXPECT_THAT(Values<float>(out[0]), Pointwise(NearRel(1e-5, 1e-6), ref));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out,
      RunOp("LayerNormalization", {}, {D({1, 2, 3, 4}, {2, 2}), D({1, 1}, {2}), D({0, 1}, {2})}));
  EXPECT_THAT(
      Values<double>(out[0]),
      Pointwise(NearRel(1e-9, 1e-12), LayerNormRef({1, 2, 3, 4}, 2, {1, 1}, {0, 1}, 1e-5, false)));
  // f16 input, f32 statistics.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("LayerNormalization", {},
                 {Half(DType::kF16, {1, 2, 3, 4}, {2, 2}), Half(DType::kF16, {1, 2}, {2})}, 3,
                 {DType::kF16, DType::kF32, DType::kF32}));
  EXPECT_THAT(
      HalfValues(out[0]),
      Pointwise(NearRel(2e-3, 1e-3), LayerNormRef({1, 2, 3, 4}, 2, {1, 2}, {}, 1e-5, false)));
  EXPECT_THAT(Values<float>(out[1]), ElementsAre(1.5f, 3.5f));
  EXPECT_THAT(RunOp("LayerNormalization", {}, {F(x, {6, 2}), F({1, 2, 3}, {3})}),
              StatusIs(kInvalid, HasSubstr("LayerNormalization: scale f32[3] does not broadcast")));
  EXPECT_THAT(RunOp("LayerNormalization", Attrs({{"axis", int64_t{2}}}), {F(x, {6, 2})}),
              StatusIs(kInvalid, HasSubstr("axis 2 is out of range")));
  EXPECT_THAT(RunOp("LayerNormalization", {}, {I32({1, 2}, {2})}),
              StatusIs(kInvalid, HasSubstr("LayerNormalization: unsupported dtype i32")));
  EXPECT_THAT(RunOp("RMSNormalization", {}, {F(x, {6, 2})}),
              StatusIs(kInvalid, HasSubstr("RMSNormalization: expected 2 inputs")));
}

// The compiler's EmbedLayerNorm against Gather + Add + LayerNorm written out here: word ids
// [2, 3] (one negative), position ids [1, 3] broadcast over the batch, i32 type ids [2, 3].
TEST(NormalizationTest, EmbedLayerNormSumsLookupsAndNormalises) {
  const int64_t d = 5;
  auto table = [&](int64_t vocab, float seed) {
    std::vector<float> t(vocab * d);
    for (size_t i = 0; i < t.size(); ++i) t[i] = std::sin(static_cast<float>(i) * seed) * 3;
    return t;
  };
  const std::vector<float> word = table(7, 0.7f), pos = table(4, 1.9f), type = table(2, 0.3f);
  const std::vector<int64_t> ids = {3, 0, 6, -1, 2, 5};
  const std::vector<int64_t> positions = {0, 1, 2};
  const std::vector<int32_t> types = {0, 0, 1, 1, 0, 1};
  const std::vector<float> gamma = {1, 0.5f, 2, -1, 1.5f}, beta = {0, 1, -1, 0.25f, 2};
  std::vector<float> sum;
  for (int64_t r = 0; r < 6; ++r) {
    const int64_t w = ids[r] < 0 ? ids[r] + 7 : ids[r];
    for (int64_t c = 0; c < d; ++c) {
      sum.push_back(word[w * d + c] + pos[positions[r % 3] * d + c] + type[types[r] * d + c]);
    }
  }
  const std::vector<double> ref = LayerNormRef(sum, d, gamma, beta, 1e-12, false);
  const Attributes attrs = Attrs({{"embeddings", int64_t{3}}, {"epsilon", 1e-12}});
  std::vector<Tensor> in = {F(word, {7, d}),        I64(ids, {2, 3}), F(pos, {4, d}),
                            I64(positions, {1, 3}), F(type, {2, d}),  I32(types, {2, 3}),
                            F(gamma, {d}),          F(beta, {d})};
  for (int threads : {1, 4}) {
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto out,
                                RunOp("EmbedLayerNorm", attrs, in, 1, {DType::kF32}, threads));
    EXPECT_THAT(out[0].shape(), ElementsAre(2, 3, d));
    EXPECT_THAT(Values<float>(out[0]), Pointwise(NearRel(1e-5, 1e-6), ref));
  }
  // Absent position ids: the positions along the last leading dim (0, 1, 2 here).
  std::vector<Tensor> counted = in;
  counted[3] = Tensor();
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("EmbedLayerNorm", attrs, counted, 1, {DType::kF32}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 3, d));
  EXPECT_THAT(Values<float>(out[0]), Pointwise(NearRel(1e-5, 1e-6), ref));
  // Without gamma and beta: plain normalisation of one lookup.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("EmbedLayerNorm", Attrs({{"embeddings", int64_t{1}}}),
                                         {F(word, {7, d}), I64({2}, {1})}, 1, {DType::kF32}));
  EXPECT_THAT(Values<float>(out[0]),
              Pointwise(NearRel(1e-5, 1e-6),
                        LayerNormRef(std::vector<float>(word.begin() + 2 * d, word.begin() + 3 * d),
                                     d, {}, {}, 1e-5, false)));
  // Bad input is an error naming the index and the table's range, never a read past it.
  in[1] = I64({3, 0, 7, 1, 2, 5}, {2, 3});
  EXPECT_THAT(RunOp("EmbedLayerNorm", attrs, in, 1, {DType::kF32}),
              StatusIs(kInvalid, HasSubstr("index 7 of embedding 0 is out of range [-7, 7)")));
  in[1] = I64({3, 0, -8, 1, 2, 5}, {2, 3});
  EXPECT_THAT(RunOp("EmbedLayerNorm", attrs, in, 1, {DType::kF32}),
              StatusIs(kInvalid, HasSubstr("index -8 of embedding 0")));
  // Positions past the table (here: 3 positions, a table of 2 rows).
  counted[2] = F(std::vector<float>(2 * d, 1.0f), {2, d});
  EXPECT_THAT(RunOp("EmbedLayerNorm", attrs, counted, 1, {DType::kF32}),
              StatusIs(kInvalid, HasSubstr("position 2 of embedding 1 is out of range [0, 2)")));
  in[1] = I64({3, 0, 1, 1}, {2, 2});
  EXPECT_THAT(RunOp("EmbedLayerNorm", attrs, in, 1, {DType::kF32}),
              StatusIs(kInvalid, HasSubstr("ids do not broadcast")));
  in[1] = I64(ids, {2, 3});
  in[2] = F(std::vector<float>(8, 1.0f), {2, 4});
  EXPECT_THAT(RunOp("EmbedLayerNorm", attrs, in, 1, {DType::kF32}),
              StatusIs(kInvalid, HasSubstr("table 1 is f32[2, 4], expected f32[vocab, 5]")));
  EXPECT_THAT(RunOp("EmbedLayerNorm", Attrs({{"embeddings", int64_t{0}}}), {F(word, {7, d})}),
              StatusIs(kInvalid, HasSubstr("embeddings must be 1 to 16")));
}

TEST(NormalizationTest, BatchNormalization) {
  // X [2, 2, 2]: channel c: y = (x - mean) / sqrt(var + eps) * scale + B.
  const Tensor x = F({1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("BatchNormalization", Attrs({{"epsilon", 0.0}}),
                      {x, F({1, 2}, {2}), F({0, 1}, {2}), F({1, 4}, {2}), F({4, 1}, {2})}));
  EXPECT_THAT(Values<float>(out[0]),
              Pointwise(NearRel(1e-6, 1e-6), std::vector<double>{0, 0.5, -1, 1, 2, 2.5, 7, 9}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("BatchNormalization", {},
                                         {Half(DType::kF16, {1, 2}, {1, 2}), F({1, 1}, {2}),
                                          F({0, 0}, {2}), D({0, 0}, {2}), D({1, 1}, {2})}));
  EXPECT_THAT(HalfValues(out[0]), Pointwise(NearRel(1e-3, 0), std::vector<double>{1, 2}));
  // Opset < 14 running-statistics outputs carry the input statistics in inference.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("BatchNormalization", {},
                 {x, F({1, 2}, {2}), F({0, 1}, {2}), F({1, 4}, {2}), F({4, 1}, {2})}, 3));
  EXPECT_THAT(out[1].shape(), ElementsAre(2));
  EXPECT_THAT(Values<float>(out[1]), ElementsAre(1, 4));
  EXPECT_THAT(Values<float>(out[2]), ElementsAre(4, 1));
  EXPECT_THAT(
      RunOp("BatchNormalization", {}, {x, F({1}, {1}), F({0}, {1}), F({0}, {1}), F({1}, {1})}),
      StatusIs(kInvalid, HasSubstr("BatchNormalization: scale has 1 elements, expected 2")));
  EXPECT_THAT(RunOp("BatchNormalization", Attrs({{"training_mode", int64_t{2}}}), {x}),
              StatusIs(kInvalid, HasSubstr("training_mode must be 0 or 1")));
  EXPECT_THAT(RunOp("BatchNormalization", {},
                    {F({1}, {1}), F({1}, {1}), F({0}, {1}), F({0}, {1}), F({1}, {1})}),
              StatusIs(kInvalid, HasSubstr("rank >= 2")));
}

TEST(NormalizationTest, BatchNormalizationTrainingMode) {
  // X [2, 2, 2]: channel 0 holds 1, 2, 5, 6 (mean 3.5), channel 1 3, 4, 7, 8 (mean 5.5); both have
  // population variance 4.25. Y uses these; running stats = input * 0.5 + batch * 0.5.
  const Tensor x = F({1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2});
  const Attributes attrs =
      Attrs({{"epsilon", 0.0}, {"momentum", 0.5}, {"training_mode", int64_t{1}}});
  const std::vector<Tensor> inputs = {x, F({1, 2}, {2}), F({0, 1}, {2}), F({1, 4}, {2}),
                                      F({4, 1}, {2})};
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("BatchNormalization", attrs, inputs, 3));
  const double sd = std::sqrt(4.25);
  std::vector<double> want;
  for (int n = 0; n < 2; ++n) {
    for (double v : {1.0, 2.0}) want.push_back((v + 4 * n - 3.5) / sd);
    for (double v : {3.0, 4.0}) want.push_back(2 * (v + 4 * n - 5.5) / sd + 1);
  }
  EXPECT_THAT(Values<float>(out[0]), Pointwise(NearRel(1e-6, 1e-6), want));
  EXPECT_THAT(Values<float>(out[1]), ElementsAre(2.25f, 4.75f));
  EXPECT_THAT(Values<float>(out[2]), ElementsAre(4.125f, 2.625f));
  // Y alone; f16 X with f32 statistics (opset 15 lets them differ).
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("BatchNormalization", attrs, inputs));
  EXPECT_THAT(Values<float>(out[0]), Pointwise(NearRel(1e-6, 1e-6), want));
  std::vector<Tensor> half = inputs;
  half[0] = Half(DType::kF16, {1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("BatchNormalization", attrs, half, 3, {DType::kF16, DType::kF32, DType::kF32}));
  EXPECT_THAT(HalfValues(out[0]), Pointwise(NearRel(2e-3, 2e-3), want));
  EXPECT_THAT(Values<float>(out[1]), ElementsAre(2.25f, 4.75f));
  EXPECT_THAT(RunOp("BatchNormalization", attrs, inputs, 5),
              StatusIs(kInvalid, HasSubstr("at most 3 outputs")));
}

TEST(NormalizationTest, InstanceAndGroupNormalization) {
  // X [1, 2, 3]: each channel normalised over its 3 values.
  const Tensor x = F({1, 2, 3, 2, 4, 9}, {1, 2, 3});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("InstanceNormalization", Attrs({{"epsilon", 0.0}}),
                                              {x, F({1, 2}, {2}), F({0, 1}, {2})}));
  std::vector<double> ref0 = LayerNormRef({1, 2, 3}, 3, {}, {}, 0, false);
  std::vector<double> ref1 = LayerNormRef({2, 4, 9}, 3, {}, {}, 0, false);
  EXPECT_THAT(
      Values<float>(out[0]),
      Pointwise(NearRel(1e-5, 1e-6), std::vector<double>{ref0[0], ref0[1], ref0[2], 2 * ref1[0] + 1,
                                                         2 * ref1[1] + 1, 2 * ref1[2] + 1}));
  // GroupNormalization with 1 group over both channels, per-channel scale/bias (opset 21).
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("GroupNormalization", Attrs({{"num_groups", int64_t{1}}, {"epsilon", 0.0}}),
                 {x, F({1, 2}, {2}), F({0, 1}, {2})}));
  std::vector<double> g = LayerNormRef({1, 2, 3, 2, 4, 9}, 6, {}, {}, 0, false);
  EXPECT_THAT(Values<float>(out[0]),
              Pointwise(NearRel(1e-5, 1e-6), std::vector<double>{g[0], g[1], g[2], 2 * g[3] + 1,
                                                                 2 * g[4] + 1, 2 * g[5] + 1}));
  // Two groups = instance norm; opset-18 per-group scale (num_groups entries).
  const Tensor x4 = F({1, 2, 3, 4, 5, 6, 7, 9}, {1, 4, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("GroupNormalization", Attrs({{"num_groups", int64_t{2}}, {"epsilon", 0.0}}),
                 {x4, F({1, 3}, {2}), F({0, -1}, {2})}));
  std::vector<double> a = LayerNormRef({1, 2, 3, 4}, 4, {}, {}, 0, false);
  std::vector<double> b = LayerNormRef({5, 6, 7, 9}, 4, {}, {}, 0, false);
  std::vector<double> expected(a.begin(), a.end());
  for (double v : b) expected.push_back(3 * v - 1);
  EXPECT_THAT(Values<float>(out[0]), Pointwise(NearRel(1e-5, 1e-6), expected));
  EXPECT_THAT(RunOp("GroupNormalization", Attrs({{"num_groups", int64_t{3}}}),
                    {x4, F({1, 1, 1}, {3}), F({0, 0, 0}, {3})}),
              StatusIs(kInvalid, HasSubstr("num_groups 3 does not divide the 4 channels")));
  EXPECT_THAT(RunOp("GroupNormalization", {}, {x4, F({1}, {1}), F({0}, {1})}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("num_groups")));
}

TEST(NormalizationTest, LpAndMeanVarianceNormalization) {
  const Tensor x = F({3, 4, 0, 0, -1, 1}, {3, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("LpNormalization", {}, {x}));
  EXPECT_THAT(
      Values<float>(out[0]),
      Pointwise(NearRel(1e-6, 1e-7),
                std::vector<double>{0.6, 0.8, 0, 0, -1 / std::sqrt(2.0), 1 / std::sqrt(2.0)}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("LpNormalization", Attrs({{"p", int64_t{1}}, {"axis", int64_t{0}}}), {x}));
  EXPECT_THAT(Values<float>(out[0]),
              Pointwise(NearRel(1e-6, 1e-7), std::vector<double>{0.75, 0.8, 0, 0, -0.25, 0.2}));
  EXPECT_THAT(RunOp("LpNormalization", Attrs({{"p", int64_t{3}}}), {x}),
              StatusIs(kInvalid, HasSubstr("p must be 1 or 2")));

  // Default axes {0, 2, 3} on [2, 2, 1, 2]: statistics per channel over 4 values.
  const std::vector<float> v = {1, 2, 10, 20, 3, 4, 30, 60};
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("MeanVarianceNormalization", {}, {F(v, {2, 2, 1, 2})}));
  auto mvn = [](std::vector<double> c) {
    double m = 0, q = 0;
    for (double e : c) m += e / c.size();
    for (double e : c) q += (e - m) * (e - m) / c.size();
    for (double& e : c) e = (e - m) / (std::sqrt(q) + 1e-9);
    return c;
  };
  const std::vector<double> c0 = mvn({1, 2, 3, 4}), c1 = mvn({10, 20, 30, 60});
  EXPECT_THAT(Values<float>(out[0]),
              Pointwise(NearRel(1e-6, 1e-7), std::vector<double>{c0[0], c0[1], c1[0], c1[1], c0[2],
                                                                 c0[3], c1[2], c1[3]}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("MeanVarianceNormalization", Attrs({{"axes", std::vector<int64_t>{-1}}}),
                 {F(v, {4, 2})}));
  EXPECT_THAT(Values<float>(out[0]),
              Pointwise(NearRel(1e-6, 1e-6), std::vector<double>{-1, 1, -1, 1, -1, 1, -1, 1}));
  EXPECT_THAT(RunOp("MeanVarianceNormalization", {}, {F(v, {8})}),
              StatusIs(kInvalid, HasSubstr("axis 2 is out of range")));
}

// The pack-qkv form: one [b, s, (Hq + 2 Hkv) D] tensor as Q, K and V (qkv_packed = 1) gives
// what the three separate tensors give, grouped heads and an additive mask included.
TEST(AttentionTest, PackedQkvMatchesSeparateTensors) {
  const int64_t b = 2, s = 5, hq = 4, hkv = 2, d = 8, width = (hq + 2 * hkv) * d;
  std::vector<float> qkv(b * s * width), q, k, v, mask(b * s);
  for (size_t i = 0; i < qkv.size(); ++i) qkv[i] = std::sin(static_cast<float>(i) * 0.37f);
  for (int64_t r = 0; r < b * s; ++r) {
    const float* row = qkv.data() + r * width;
    q.insert(q.end(), row, row + hq * d);
    k.insert(k.end(), row + hq * d, row + (hq + hkv) * d);
    v.insert(v.end(), row + (hq + hkv) * d, row + width);
  }
  for (int64_t i = 0; i < b * s; ++i) mask[i] = i % s == s - 1 ? -1e4f : 0.0f;
  const auto heads = Attrs({{"q_num_heads", hq}, {"kv_num_heads", hkv}});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto separate, RunOp("Attention", heads,
                           {F(q, {b, s, hq * d}), F(k, {b, s, hkv * d}), F(v, {b, s, hkv * d}),
                            F(mask, {b, 1, 1, s})}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto packed,
      RunOp("Attention",
            Attrs({{"q_num_heads", hq}, {"kv_num_heads", hkv}, {"qkv_packed", int64_t{1}}}),
            {F(qkv, {b, s, width}), F(qkv, {b, s, width}), F(qkv, {b, s, width}),
             F(mask, {b, 1, 1, s})}));
  ASSERT_EQ(packed[0].shape(), (Shape{b, s, hq * d}));
  EXPECT_THAT(Values<float>(packed[0]), Pointwise(::testing::FloatEq(), Values<float>(separate[0])));
  // A width that does not split into the heads is an error, not a misread.
  EXPECT_THAT(RunOp("Attention",
                    Attrs({{"q_num_heads", hq}, {"kv_num_heads", hkv}, {"qkv_packed", int64_t{1}}}),
                    {F(std::vector<float>(b * s * 12), {b, s, 12}),
                     F(std::vector<float>(b * s * 12), {b, s, 12}),
                     F(std::vector<float>(b * s * 12), {b, s, 12})}),
              StatusIs(kInvalid, HasSubstr("packed QKV")));
}

// mask_scale / mask_offset (fuse-attention-mask): an i64 or i32 padding mask with the affine
// form of (1 - m) * -1e4 gives what that f32 mask gives, in f32 and f16; a bool mask with them
// is an error.
TEST(AttentionTest, IntegerMasksWithScaleAndOffsetMatchTheirFloatMask) {
  const int64_t b = 2, s = 5, h = 2, d = 4;
  std::vector<float> x(b * s * h * d), additive(b * s);
  std::vector<int64_t> keep(b * s);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::cos(static_cast<float>(i) * 0.29f);
  for (int64_t i = 0; i < b * s; ++i) {
    keep[i] = (i / s == 0 && i % s >= 3) ? 0 : 1;
    additive[i] = (1.0f - static_cast<float>(keep[i])) * -1e4f;
  }
  const Tensor xs = F(x, {b, s, h * d});
  const auto heads = Attrs({{"q_num_heads", h}, {"kv_num_heads", h}});
  const auto affine =
      Attrs({{"q_num_heads", h}, {"kv_num_heads", h}, {"mask_scale", 1e4}, {"mask_offset", -1e4}});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto want,
                              RunOp("Attention", heads, {xs, xs, xs, F(additive, {b, 1, 1, s})}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto got64,
                              RunOp("Attention", affine, {xs, xs, xs, I64(keep, {b, 1, 1, s})}));
  std::vector<int32_t> keep32(keep.begin(), keep.end());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto got32,
                              RunOp("Attention", affine, {xs, xs, xs, I32(keep32, {b, 1, 1, s})}));
  EXPECT_THAT(Values<float>(got64[0]), Pointwise(::testing::FloatEq(), Values<float>(want[0])));
  EXPECT_THAT(Values<float>(got32[0]), Pointwise(::testing::FloatEq(), Values<float>(want[0])));
  const Tensor hs = Half(DType::kF16, x, {b, s, h * d});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto want16,
      RunOp("Attention", heads, {hs, hs, hs, Half(DType::kF16, additive, {b, 1, 1, s})}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto got16,
                              RunOp("Attention", affine, {hs, hs, hs, I64(keep, {b, 1, 1, s})}));
  EXPECT_EQ(Values<uint16_t>(got16[0]), Values<uint16_t>(want16[0]));
  EXPECT_THAT(
      RunOp("Attention", affine, {xs, xs, xs, B({1, 1, 1, 0, 0, 1, 1, 1, 1, 1}, {b, 1, 1, s})}),
      StatusIs(kInvalid, HasSubstr("not bool")));
}

}  // namespace
}  // namespace nimble::vm::cpu
