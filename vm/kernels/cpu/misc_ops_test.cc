#include <cmath>
#include <cstdint>
#include <limits>
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
using Ints = std::vector<int64_t>;

TEST(MiscOpsTest, RotaryEmbeddingHalves) {
  // cos = [1, 0], sin = [0, 1]: the first pair is kept, the second rotated by 90 degrees.
  const Tensor x = F({1, 2, 3, 4}, {1, 1, 1, 4});
  const Tensor cos = F({1, 0}, {1, 1, 2});
  const Tensor sin = F({0, 1}, {1, 1, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("RotaryEmbedding", {}, {x, cos, sin}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1, 1, 4));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, -4, 3, 2));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("RotaryEmbedding", Attrs({{"interleaved", int64_t{1}}}), {x, cos, sin}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 2, -4, 3));
}

TEST(MiscOpsTest, RotaryEmbeddingPositionIds3DAndRotaryDim) {
  // 3-D input with 2 heads of size 4, rotating only the first 2 dims; position id 1 picks
  // cos = 0, sin = 1.
  const Tensor x = F({1, 2, 3, 4, 5, 6, 7, 8}, {1, 1, 8});
  const Tensor cos = F({1, 0}, {2, 1});
  const Tensor sin = F({0, 1}, {2, 1});
  const Tensor pos = I64({1}, {1, 1});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("RotaryEmbedding",
                      Attrs({{"num_heads", int64_t{2}}, {"rotary_embedding_dim", int64_t{2}}}),
                      {x, cos, sin, pos}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(-2, 1, 3, 4, -6, 5, 7, 8));
  // Out-of-range position ids are rejected.
  EXPECT_THAT(RunOp("RotaryEmbedding",
                    Attrs({{"num_heads", int64_t{2}}, {"rotary_embedding_dim", int64_t{2}}}),
                    {x, cos, sin, I64({2}, {1, 1})}),
              StatusIs(kInvalid, HasSubstr("RotaryEmbedding")));
}

TEST(MiscOpsTest, WindowFunctions) {
  // Periodic Hann of 4 points: 0.5 - 0.5 cos(2 pi n / 4) = 0, 0.5, 1, 0.5.
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("HannWindow", {}, {I64({4}, {})}, 1, {DType::kF32}));
  EXPECT_THAT(out[0].shape(), ElementsAre(4));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(FloatNear(0, 1e-7f), FloatNear(0.5f, 1e-7f),
                                                 FloatNear(1, 1e-7f), FloatNear(0.5f, 1e-7f)));
  // Symmetric Hamming of 3 points (N = 2): 25/46 - 21/46 cos(pi n) = 4/46, 1, 4/46; as double.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out,
      RunOp("HammingWindow", Attrs({{"periodic", int64_t{0}}, {"output_datatype", int64_t{11}}}),
            {I64({3}, {})}, 1, {DType::kF64}));
  ASSERT_EQ(out[0].dtype(), DType::kF64);
  EXPECT_NEAR(out[0].data<double>()[0], 4.0 / 46.0, 1e-12);
  EXPECT_NEAR(out[0].data<double>()[1], 1.0, 1e-12);
  // Blackman, periodic, 2 points: 0.42 - 0.5 + 0.08 = 0, then 0.42 + 0.5 + 0.08 = 1.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("BlackmanWindow", {}, {I64({2}, {})}, 1, {DType::kF32}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(FloatNear(0, 1e-6f), FloatNear(1, 1e-6f)));
  // A one-point symmetric window is 1; an empty one is empty; a negative size is an error.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("HannWindow", Attrs({{"periodic", int64_t{0}}}),
                                         {I64({1}, {})}, 1, {DType::kF32}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1.0f));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("HannWindow", {}, {I64({0}, {})}, 1, {DType::kF32}));
  EXPECT_EQ(out[0].num_elements(), 0);
  EXPECT_THAT(RunOp("HannWindow", {}, {I64({-3}, {})}), StatusIs(kInvalid, HasSubstr("size")));
}

TEST(MiscOpsTest, DynamicQuantizeLinear) {
  // The ONNX operator page's example: range [-3, 2], scale 5 / 255, zero point 153; -2.5 / scale
  // is -127.49999 in float32, so it rounds to -127 (26), not half-to-even from -127.5.
  const Tensor x = F({0, 2, -3, -2.5f, 1.34f, 0.5f}, {6});
  const std::vector<DType> types = {DType::kU8, DType::kF32, DType::kU8};
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("DynamicQuantizeLinear", {}, {x}, 3, types));
  ASSERT_EQ(out.size(), 3u);
  EXPECT_NEAR(out[1].data<float>()[0], 5.0f / 255.0f, 1e-7f);
  EXPECT_EQ(out[2].data<uint8_t>()[0], 153);
  EXPECT_THAT(Values<uint8_t>(out[0]), ElementsAre(153, 255, 0, 26, 221, 179));
  // All zeros: scale 0, zero point 0, zeros.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("DynamicQuantizeLinear", {}, {F({0, 0}, {2})}, 3, types));
  EXPECT_EQ(out[1].data<float>()[0], 0.0f);
  EXPECT_THAT(Values<uint8_t>(out[0]), ElementsAre(0, 0));
  EXPECT_THAT(RunOp("DynamicQuantizeLinear", {}, {I64({1}, {1})}, 3, types),
              StatusIs(kInvalid, HasSubstr("float32")));
}

TEST(MiscOpsTest, Det) {
  // det [[1, 2], [3, 4]] = -2; a batch of 3x3: identity scaled by 2 (8) and a singular one (0);
  // a row swap flips the sign.
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Det", {}, {F({1, 2, 3, 4}, {2, 2})}));
  EXPECT_EQ(out[0].rank(), 0);
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(FloatNear(-2, 1e-6f)));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out,
      RunOp("Det", {},
            {F({2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3, 2, 4, 6, 0, 1, 1, 0, 1, 0, 1, 0, 0, 0, 0, 1},
               {3, 3, 3})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(3));
  EXPECT_THAT(Values<float>(out[0]),
              ElementsAre(FloatNear(8, 1e-5f), FloatNear(0, 1e-6f), FloatNear(-1, 1e-6f)));
  EXPECT_THAT(RunOp("Det", {}, {F({1, 2, 3, 4, 5, 6}, {2, 3})}),
              StatusIs(kInvalid, HasSubstr("[..., M, M]")));
}

TEST(MiscOpsTest, Swish) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out,
                              RunOp("Swish", Attrs({{"alpha", 2.0}}), {F({0, 1, -1}, {3})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, FloatNear(1 / (1 + std::exp(-2.0f)), 1e-6f),
                                                 FloatNear(-1 / (1 + std::exp(2.0f)), 1e-6f)));
  EXPECT_THAT(RunOp("Swish", {}, {I64({1}, {1})}), StatusIs(kInvalid, HasSubstr("floating")));
}

TEST(MiscOpsTest, BitCast) {
  // 1.0f is 0x3f800000; -1 as int4 is 0b1111, 15 as uint4, and back.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("BitCast", Attrs({{"to", int64_t{6}}}), {F({1, -2}, {2})}, 1, {DType::kI32}));
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(0x3f800000, static_cast<int32_t>(0xc0000000)));
  Tensor i4 = *Tensor::Empty(DType::kI4, {2});
  i4.data<int8_t>()[0] = -1, i4.data<int8_t>()[1] = 7;
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("BitCast", Attrs({{"to", int64_t{21}}}), {i4}, 1, {DType::kU4}));
  EXPECT_THAT(Values<uint8_t>(out[0]), ElementsAre(15, 7));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("BitCast", Attrs({{"to", int64_t{22}}}), {out[0]}, 1, {DType::kI4}));
  EXPECT_THAT(Values<int8_t>(out[0]), ElementsAre(-1, 7));
  // Different widths are an error.
  EXPECT_THAT(RunOp("BitCast", Attrs({{"to", int64_t{7}}}), {F({1}, {1})}, 1, {DType::kI64}),
              StatusIs(kInvalid, HasSubstr("bit widths")));
}

TEST(MiscOpsTest, QLinearMatMul) {
  // (a - 2)(b - 1) with a = [[3, 4], [5, 6]] (uint8, zero point 2), b = identity + 1 (zero
  // point 1): [[1, 2], [3, 4]]; scaled by 0.5 * 4 / 1 = 2 and shifted by 10: 12, 14, 16, 18.
  const Tensor a = Make<uint8_t>({3, 4, 5, 6}, {2, 2});
  const Tensor b = Make<uint8_t>({2, 1, 1, 2}, {2, 2});
  auto run = [&](const Tensor& y_zp, float y_scale) {
    return RunOp("QLinearMatMul", {},
                 {a, F({0.5f}, {}), Make<uint8_t>({2}, {}), b, F({4}, {}), Make<uint8_t>({1}, {}),
                  F({y_scale}, {}), y_zp},
                 1, {y_zp.dtype()});
  };
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, run(Make<uint8_t>({10}, {}), 1.0f));
  EXPECT_THAT(Values<uint8_t>(out[0]), ElementsAre(12, 14, 16, 18));
  // int8 output saturates at 127.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, run(Make<int8_t>({120}, {}), 1.0f));
  EXPECT_THAT(Values<int8_t>(out[0]), ElementsAre(122, 124, 126, 127));
  // Per-row scales are not implemented: a clear error, not wrong numbers.
  EXPECT_THAT(RunOp("QLinearMatMul", {},
                    {a, F({0.5f, 1}, {2}), Make<uint8_t>({2}, {}), b, F({4}, {}),
                     Make<uint8_t>({1}, {}), F({1}, {}), Make<uint8_t>({0}, {})},
                    1, {DType::kU8}),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("per-tensor")));
  // A zero or NaN scale is refused (it would turn into a NaN cast to an integer).
  EXPECT_THAT(run(Make<uint8_t>({10}, {}), 0.0f),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("finite and positive")));
  EXPECT_THAT(run(Make<uint8_t>({10}, {}), std::nanf("")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("finite and positive")));
}

TEST(MiscOpsTest, Dft) {
  // The shifted impulse [0, 1, 0, 0] has X[k] = e^{-i pi k / 2}: 1, -i, -1, i.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("DFT", Attrs({{"axis", int64_t{1}}}), {F({0, 1, 0, 0}, {1, 4, 1})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 4, 2));
  EXPECT_THAT(Values<float>(out[0]),
              ElementsAre(FloatNear(1, 1e-6f), FloatNear(0, 1e-6f), FloatNear(0, 1e-6f),
                          FloatNear(-1, 1e-6f), FloatNear(-1, 1e-6f), FloatNear(0, 1e-6f),
                          FloatNear(0, 1e-6f), FloatNear(1, 1e-6f)));
  const Tensor spectrum = out[0];
  // The inverse gives the signal back (complex); onesided keeps floor(4 / 2) + 1 = 3 terms; the
  // inverse real transform of those 3 restores the 4 real samples.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("DFT", Attrs({{"axis", int64_t{1}}, {"inverse", int64_t{1}}}), {spectrum}));
  EXPECT_THAT(Values<float>(out[0]),
              ElementsAre(FloatNear(0, 1e-6f), FloatNear(0, 1e-6f), FloatNear(1, 1e-6f),
                          FloatNear(0, 1e-6f), FloatNear(0, 1e-6f), FloatNear(0, 1e-6f),
                          FloatNear(0, 1e-6f), FloatNear(0, 1e-6f)));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto half,
                              RunOp("DFT", Attrs({{"axis", int64_t{1}}, {"onesided", int64_t{1}}}),
                                    {F({0, 1, 0, 0}, {1, 4, 1})}));
  EXPECT_THAT(half[0].shape(), ElementsAre(1, 3, 2));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out,
      RunOp("DFT", Attrs({{"axis", int64_t{1}}, {"inverse", int64_t{1}}, {"onesided", int64_t{1}}}),
            {half[0]}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 4, 1));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(FloatNear(0, 1e-6f), FloatNear(1, 1e-6f),
                                                 FloatNear(0, 1e-6f), FloatNear(0, 1e-6f)));
  EXPECT_THAT(RunOp("DFT", {}, {F({1, 2, 3}, {1, 1, 3})}),
              StatusIs(kInvalid, HasSubstr("[..., 1 or 2]")));
}

TEST(MiscOpsTest, MelWeightMatrix) {
  // One filter, dft_length 16 at 16 Hz, 0..8 Hz: the three mel points 0, 2.66 and 5.32 Hz fall
  // in bins floor(17 hz / 16) = 0, 2 and 5, so the filter rises over bins 0..2 and falls to 5.
  const std::vector<Tensor> in = {I64({1}, {}), I64({16}, {}), I64({16}, {}), F({0}, {}),
                                  F({8}, {})};
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("MelWeightMatrix", {}, in, 1, {DType::kF32}));
  EXPECT_THAT(out[0].shape(), ElementsAre(9, 1));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 0.5f, 1, FloatNear(2.0f / 3, 1e-7f),
                                                 FloatNear(1.0f / 3, 1e-7f), 0, 0, 0, 0));
  // An upper edge past the Nyquist frequency has no bin; bad sizes are refused.
  EXPECT_THAT(RunOp("MelWeightMatrix", {},
                    {I64({1}, {}), I64({16}, {}), I64({16}, {}), F({0}, {}), F({20}, {})}, 1,
                    {DType::kF32}),
              StatusIs(kInvalid, HasSubstr("spectrogram bin")));
  EXPECT_THAT(
      RunOp("MelWeightMatrix", {},
            {I64({0}, {}), I64({16}, {}), I64({16}, {}), F({0}, {}), F({8}, {})}, 1, {DType::kF32}),
      StatusIs(kInvalid, HasSubstr("positive")));
}

// Kernels that allocate their outputs (string tensors are never views of raw storage).
absl::StatusOr<std::vector<Tensor>> RunAllocating(const std::string& op, const Attributes& attrs,
                                                  std::vector<Tensor> inputs, int outputs) {
  NIMBLE_ASSIGN_OR_RETURN(auto kernel, KernelRegistry::Global().Create(op, kCpu.type, attrs));
  EXPECT_TRUE(kernel->allocates_outputs());
  return RunOp(op, attrs, std::move(inputs), outputs);
}

TEST(MiscOpsTest, StringConcatBroadcasts) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunAllocating("StringConcat", {}, {Str({"a", "bc"}, {2, 1}), Str({"x", "", "z"}, {3})},
                              1));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 3));
  EXPECT_THAT(Values<std::string>(out[0]), ElementsAre("ax", "a", "az", "bcx", "bc", "bcz"));
  EXPECT_THAT(RunAllocating("StringConcat", {}, {Str({"a"}, {1}), F({1}, {1})}, 1),
              StatusIs(kInvalid, HasSubstr("string")));
}

TEST(MiscOpsTest, StringSplit) {
  // A delimiter keeps empty pieces; whitespace splitting drops them; maxsplit leaves the rest.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunAllocating("StringSplit", Attrs({{"delimiter", std::string(",")}}),
                              {Str({"a,,b", "c"}, {2})}, 2));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 3));
  EXPECT_THAT(Values<std::string>(out[0]), ElementsAre("a", "", "b", "c", "", ""));
  EXPECT_THAT(Values<int64_t>(out[1]), ElementsAre(3, 1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunAllocating("StringSplit", Attrs({{"maxsplit", int64_t{1}}}),
                         {Str({"  one two  three ", ""}, {2})}, 2));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 2));
  EXPECT_THAT(Values<std::string>(out[0]), ElementsAre("one", "two  three", "", ""));
  EXPECT_THAT(Values<int64_t>(out[1]), ElementsAre(2, 0));
}

TEST(MiscOpsTest, StringNormalizer) {
  // Case-insensitive stopwords by default; [1, C] keeps its leading 1; UTF-8 upper-cased.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunAllocating("StringNormalizer",
                              Attrs({{"case_change_action", std::string("UPPER")},
                                     {"stopwords", std::vector<std::string>{"monday"}}}),
                              {Str({"Monday", "caf\u00e9", "MONDAY", "x"}, {1, 4})}, 1));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 2));
  EXPECT_THAT(Values<std::string>(out[0]), ElementsAre("CAF\u00c9", "X"));
  // Case-sensitive: only the exact stopword goes; LOWER applies afterwards.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunAllocating("StringNormalizer",
                         Attrs({{"case_change_action", std::string("LOWER")},
                                {"is_case_sensitive", int64_t{1}},
                                {"stopwords", std::vector<std::string>{"monday"}}}),
                         {Str({"monday", "Monday"}, {2})}, 1));
  EXPECT_THAT(out[0].shape(), ElementsAre(1));
  EXPECT_THAT(Values<std::string>(out[0]), ElementsAre("monday"));
  // Everything dropped: [1] holding "" ([1, 1] for a [1, C] input).
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunAllocating("StringNormalizer", Attrs({{"stopwords", std::vector<std::string>{"a"}}}),
                         {Str({"a", "A"}, {2})}, 1));
  EXPECT_THAT(out[0].shape(), ElementsAre(1));
  EXPECT_THAT(Values<std::string>(out[0]), ElementsAre(""));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunAllocating("StringNormalizer", Attrs({{"stopwords", std::vector<std::string>{"a"}}}),
                         {Str({"a"}, {1, 1})}, 1));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1));
  EXPECT_THAT(RunAllocating("StringNormalizer", {}, {Str({"a", "b"}, {2, 1})}, 1),
              StatusIs(kInvalid, HasSubstr("[1, C]")));
  EXPECT_THAT(RunAllocating("StringNormalizer", {}, {F({1}, {1})}, 1),
              StatusIs(kInvalid, HasSubstr("string")));
  EXPECT_THAT(
      KernelRegistry::Global().Create("StringNormalizer", kCpu.type,
                                      Attrs({{"case_change_action", std::string("TITLE")}})),
      StatusIs(kInvalid, HasSubstr("case_change_action")));
  EXPECT_THAT(KernelRegistry::Global().Create("StringNormalizer", kCpu.type,
                                              Attrs({{"locale", std::string("xx_NOWHERE")}})),
              StatusIs(kInvalid, HasSubstr("locale")));
}

TEST(MiscOpsTest, TfIdfVectorizer) {
  // Unigrams 2, 3 (columns 0, 1) and bigrams (4, 5), (5, 4) (columns 2, 3) over 4 5 4 9 5 2 with
  // one skip: unigrams count once (2 -> 1); bigrams at distance 1 give (4, 5) and (5, 4), at
  // distance 2 (4, 5) again.
  auto attrs = [](std::string mode, std::vector<double> weights) {
    Attributes a = Attrs({{"mode", std::move(mode)},
                          {"min_gram_length", int64_t{1}},
                          {"max_gram_length", int64_t{2}},
                          {"max_skip_count", int64_t{1}},
                          {"ngram_counts", Ints{0, 2}},
                          {"ngram_indexes", Ints{0, 1, 2, 3}},
                          {"pool_int64s", Ints{2, 3, 4, 5, 5, 4}}});
    if (!weights.empty()) a.Set("weights", std::move(weights));
    return a;
  };
  const Tensor x = I32({4, 5, 4, 9, 5, 2}, {6});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out,
                              RunOp("TfIdfVectorizer", attrs("TF", {}), {x}, 1, {DType::kF32}));
  EXPECT_THAT(out[0].shape(), ElementsAre(4));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 0, 2, 1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("TfIdfVectorizer", attrs("TFIDF", {0.5, 1, 2, 3}), {x}, 1, {DType::kF32}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0.5f, 0, 4, 3));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("TfIdfVectorizer", attrs("IDF", {0.5, 1, 2, 3}), {x}, 1, {DType::kF32}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0.5f, 0, 2, 3));
  // A huge max_skip_count counts the bigrams at every distance the row allows ((4, 5) three
  // times, (5, 4) once) and returns at once.
  Attributes far = attrs("TF", {});
  far.Set("max_skip_count", std::numeric_limits<int64_t>::max());
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("TfIdfVectorizer", far, {x}, 1, {DType::kF32}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 0, 3, 1));
  // Strings, [B, C], ngram_indexes permuting the columns.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("TfIdfVectorizer",
                 Attrs({{"mode", std::string("TF")},
                        {"min_gram_length", int64_t{1}},
                        {"max_gram_length", int64_t{1}},
                        {"ngram_counts", Ints{0}},
                        {"ngram_indexes", Ints{1, 0}},
                        {"pool_strings", std::vector<std::string>{"a", "b"}}}),
                 {Str({"a", "a", "c", "b", "x", "y"}, {2, 3})}, 1, {DType::kF32}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 2, 1, 0));
  // Unigrams outside [min, max] still take their pool ordinal: bigram (1, 2) is the second
  // n-gram, so it counts in ngram_indexes[1] = 0 of six columns.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("TfIdfVectorizer",
                                         Attrs({{"mode", std::string("TF")},
                                                {"min_gram_length", int64_t{2}},
                                                {"max_gram_length", int64_t{2}},
                                                {"ngram_counts", Ints{0, 1}},
                                                {"ngram_indexes", Ints{5, 0}},
                                                {"pool_int64s", Ints{7, 1, 2}}}),
                                         {I64({7, 1, 2}, {3})}, 1, {DType::kF32}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 0, 0, 0, 0, 0));
  // Bad input and attributes.
  EXPECT_THAT(RunOp("TfIdfVectorizer", attrs("TF", {}), {F({1}, {1})}, 1, {DType::kF32}),
              StatusIs(kInvalid, HasSubstr("int32 or int64")));
  EXPECT_THAT(RunOp("TfIdfVectorizer", attrs("TF", {}), {I64({1}, {1, 1, 1})}, 1, {DType::kF32}),
              StatusIs(kInvalid, HasSubstr("[B, C]")));
  EXPECT_THAT(KernelRegistry::Global().Create("TfIdfVectorizer", kCpu.type, attrs("BM25", {})),
              StatusIs(kInvalid, HasSubstr("mode")));
  EXPECT_THAT(KernelRegistry::Global().Create("TfIdfVectorizer", kCpu.type, attrs("TF", {1.0})),
              StatusIs(kInvalid, HasSubstr("1 weights for 4 output columns")));
}

TEST(MiscOpsTest, TrainingOptimizers) {
  const Tensor r = F({0.1f}, {}), t = I64({1}, {});
  // Momentum, standard: V' = 0.9 * 1 + 1 * 2 = 2.9, X' = 1 - 0.1 * 2.9 = 0.71; nesterov:
  // X' = 1 - 0.1 * (2 + 0.9 * 2.9) = 0.539.
  for (const auto& [mode, x_new] : {std::pair<std::string, float>{"standard", 0.71f},
                                    std::pair<std::string, float>{"nesterov", 0.539f}}) {
    NIMBLE_ASSERT_OK_AND_ASSIGN(
        auto out, RunOp("ai.onnx.preview.training.Momentum",
                        Attrs({{"alpha", 0.9}, {"beta", 1.0}, {"mode", mode}}),
                        {r, t, F({1}, {1}), F({2}, {1}), F({1}, {1})}, 2,
                        {DType::kF32, DType::kF32}));
    EXPECT_THAT(Values<float>(out[0]), ElementsAre(FloatNear(x_new, 1e-6f))) << mode;
    EXPECT_THAT(Values<float>(out[1]), ElementsAre(FloatNear(2.9f, 1e-6f))) << mode;
  }
  // Adagrad: H' = 0 + 4, X' = 1 - 0.1 * 2 / (2 + 1e-6).
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("ai.onnx.preview.training.Adagrad", {},
                      {r, t, F({1}, {1}), F({2}, {1}), F({0}, {1})}, 2, {DType::kF32, DType::kF32}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(FloatNear(0.9f, 1e-6f)));
  EXPECT_THAT(Values<float>(out[1]), ElementsAre(4.0f));
  // Lists of unequal length are refused.
  EXPECT_THAT(RunOp("ai.onnx.preview.training.Adam", {}, {r, t, F({1}, {1}), F({2}, {1})}, 1),
              StatusIs(kInvalid, HasSubstr("lists of equal length")));
}

TEST(MiscOpsTest, RegexBinarizerArrayFeatureExtractor) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("RegexFullMatch", Attrs({{"pattern", std::string("[a-z]+@(x|y)\\.com")}}),
                      {Str({"me@x.com", "me@z.com", "ME@x.com", "me@x.com "}, {4})}, 1,
                      {DType::kBool}));
  EXPECT_THAT(Values<bool>(out[0]), ElementsAre(true, false, false, false));
  EXPECT_THAT(KernelRegistry::Global().Create("RegexFullMatch", kCpu.type,
                                              Attrs({{"pattern", std::string("(unclosed")}})),
              StatusIs(kInvalid, HasSubstr("bad pattern")));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("ai.onnx.ml.Binarizer", Attrs({{"threshold", 0.5}}),
                                         {F({0.2f, 0.5f, 0.7f}, {3})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 0, 1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunAllocating("ai.onnx.ml.ArrayFeatureExtractor", {},
                         {F({1, 2, 3, 4, 5, 6}, {2, 3}), I64({2, 0}, {2})}, 1));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(3, 1, 6, 4));
  EXPECT_THAT(RunAllocating("ai.onnx.ml.ArrayFeatureExtractor", {},
                            {F({1, 2}, {2}), I64({2}, {1})}, 1),
              StatusIs(kInvalid, HasSubstr("outside")));
}

TEST(MiscOpsTest, TensorScatter) {
  // A cache [2 batch, 4 positions, 1] and 2 new entries per row at positions 1 (row 0) and 3
  // (row 1, circular: 3 then 0).
  const Tensor past = F({0, 0, 0, 0, 0, 0, 0, 0}, {2, 4, 1});
  const Tensor update = F({1, 2, 3, 4}, {2, 2, 1});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("TensorScatter", Attrs({{"mode", std::string("circular")}}),
                      {past, update, I64({1, 3}, {2})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 1, 2, 0, 4, 0, 0, 3));
  // Linear mode refuses a write past the end.
  EXPECT_THAT(RunOp("TensorScatter", {}, {past, update, I64({1, 3}, {2})}),
              StatusIs(kInvalid, HasSubstr("does not fit")));
}

TEST(MiscOpsTest, LabelEncoder) {
  // Strings to int64 with the default -1; int64 to strings (kernel-allocated) with a default.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out,
      RunOp("ai.onnx.ml.LabelEncoder",
            Attrs({{"keys_strings", std::vector<std::string>{"a", "b"}},
                   {"values_int64s", std::vector<int64_t>{10, 20}}}),
            {Str({"b", "z", "a"}, {3})}, 1, {DType::kI64}));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(20, -1, 10));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunAllocating("ai.onnx.ml.LabelEncoder",
                         Attrs({{"keys_int64s", std::vector<int64_t>{1, 2}},
                                {"values_strings", std::vector<std::string>{"one", "two"}},
                                {"default_string", std::string("?")}}),
                         {I64({2, 3}, {2})}, 1));
  EXPECT_THAT(Values<std::string>(out[0]), ElementsAre("two", "?"));
  EXPECT_THAT(KernelRegistry::Global().Create(
                  "ai.onnx.ml.LabelEncoder", kCpu.type,
                  Attrs({{"keys_int64s", std::vector<int64_t>{1}},
                         {"values_int64s", std::vector<int64_t>{1, 2}}})),
              StatusIs(kInvalid, HasSubstr("1 keys but 2 values")));
}

TEST(MiscOpsTest, Stft) {
  // Frames of 2 every 2 samples of [1, 1, 2, -2]: sums 2 and 0, differences 0 and 4 (onesided
  // keeps bins 0 and 1 of 2).
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("STFT", {},
                                              {F({1, 1, 2, -2}, {1, 4, 1}), I64({2}, {}),
                                               Tensor(), I64({2}, {})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 2, 2, 2));
  EXPECT_THAT(Values<float>(out[0]),
              ElementsAre(FloatNear(2, 1e-6f), FloatNear(0, 1e-6f), FloatNear(0, 1e-6f),
                          FloatNear(0, 1e-6f), FloatNear(0, 1e-6f), FloatNear(0, 1e-6f),
                          FloatNear(4, 1e-6f), FloatNear(0, 1e-6f)));
  EXPECT_THAT(RunOp("STFT", {}, {F({1, 1}, {1, 2, 1}), I64({1}, {})}),
              StatusIs(kInvalid, HasSubstr("window or frame_length")));
}

TEST(MiscOpsTest, TreeEnsemble) {
  // Tree 0: x0 <= 1 ? leaf 0 (10 -> target 0) : (x1 in {2, 5} ? leaf 1 (20 -> 1) : leaf 2
  // (30 -> 0)); NaN x0 goes the true way. Tree 1 is the single leaf 3 (1 -> target 1).
  const float nan = std::nanf("");
  auto attrs = [&](int64_t aggregate, int64_t post, Ints true_ids) {
    return Attrs({{"nodes_modes", Tensor::FromVector<uint8_t>({0, 6, 0}, {3})},
                  {"nodes_splits", F({1, nan, 0}, {3})},
                  {"nodes_featureids", Ints{0, 1, 0}},
                  {"nodes_truenodeids", std::move(true_ids)},
                  {"nodes_falsenodeids", Ints{1, 2, 3}},
                  {"nodes_trueleafs", Ints{1, 1, 1}},
                  {"nodes_falseleafs", Ints{0, 1, 1}},
                  {"nodes_missing_value_tracks_true", Ints{1, 0, 0}},
                  {"membership_values", F({2, 5, nan}, {3})},
                  {"leaf_targetids", Ints{0, 1, 0, 1}},
                  {"leaf_weights", F({10, 20, 30, 1}, {4})},
                  {"tree_roots", Ints{0, 2}},
                  {"n_targets", int64_t{2}},
                  {"aggregate_function", aggregate},
                  {"post_transform", post}});
  };
  const Tensor x = F({0.5f, 9, 3, 5, 3, 7, nan, 2}, {4, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out,
                              RunOp("ai.onnx.ml.TreeEnsemble", attrs(1, 0, {0, 1, 3}), {x}));
  EXPECT_THAT(out[0].shape(), ElementsAre(4, 2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(10, 1, 0, 21, 30, 1, 10, 1));
  // AVERAGE over the two trees; MAX leaves an untouched target at the lowest float.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("ai.onnx.ml.TreeEnsemble", attrs(0, 0, {0, 1, 3}), {x}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(5, 0.5f, 0, 10.5f, 15, 0.5f, 5, 0.5f));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("ai.onnx.ml.TreeEnsemble", attrs(3, 0, {0, 1, 3}), {x}));
  EXPECT_EQ(out[0].data<float>()[2], -std::numeric_limits<float>::max());
  EXPECT_EQ(out[0].data<float>()[3], 20);
  // LOGISTIC after SUM, on double input.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("ai.onnx.ml.TreeEnsemble", attrs(1, 2, {0, 1, 3}), {D({0.5, 9}, {1, 2})}));
  ASSERT_EQ(out[0].dtype(), DType::kF64);
  EXPECT_NEAR(out[0].data<double>()[0], 1 / (1 + std::exp(-10.0)), 1e-12);
  EXPECT_NEAR(out[0].data<double>()[1], 1 / (1 + std::exp(-1.0)), 1e-12);
  // A node that branches to itself is a cycle; a feature past X's width and a leaf past the
  // leaves are refused.
  auto cyclic = attrs(1, 0, {0, 1, 3});
  cyclic.Set("nodes_trueleafs", Ints{0, 1, 1});
  EXPECT_THAT(RunOp("ai.onnx.ml.TreeEnsemble", cyclic, {F({0}, {1, 2})}),
              StatusIs(kInvalid, HasSubstr("cycle")));
  EXPECT_THAT(RunOp("ai.onnx.ml.TreeEnsemble", attrs(1, 0, {0, 1, 3}), {F({0}, {1, 1})}),
              StatusIs(kInvalid, HasSubstr("feature 1")));
  EXPECT_THAT(
      KernelRegistry::Global().Create("ai.onnx.ml.TreeEnsemble", kCpu.type, attrs(1, 0, {9, 1, 3})),
      StatusIs(kInvalid, HasSubstr("branches to leaf 9")));
}

TEST(MiscOpsTest, Shrink) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Shrink", Attrs({{"lambd", 1.0}, {"bias", 0.5}}),
                                              {F({-2, -1, 0, 1, 2}, {5})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(-1.5f, 0, 0, 0, 1.5f));
}

TEST(MiscOpsTest, Lrn) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out,
      RunOp("LRN", Attrs({{"size", int64_t{2}}, {"alpha", 2.0}, {"beta", 1.0}, {"bias", 1.0}}),
            {F({1, 2}, {1, 2, 1, 1})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(FloatNear(1.0f / 6, 1e-6), FloatNear(0.4f, 1e-6)));
  EXPECT_THAT(RunOp("LRN", Attrs({{"size", int64_t{2}}}), {F({1, 2}, {2})}),
              StatusIs(kInvalid, HasSubstr("LRN")));
}

TEST(MiscOpsTest, LpPool) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("LpPool", Attrs({{"kernel_shape", Ints{2}}, {"strides", Ints{2}}}),
                      {F({1, -2, 3, 4}, {1, 1, 4})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1, 2));
  EXPECT_THAT(Values<float>(out[0]),
              ElementsAre(FloatNear(std::sqrt(5.0f), 1e-6), FloatNear(5, 1e-6)));
  // p = 1 with a zero pad on each side: sums of absolute values.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("LpPool",
                                         Attrs({{"kernel_shape", Ints{2}},
                                                {"strides", Ints{2}},
                                                {"pads", Ints{1, 1}},
                                                {"p", int64_t{1}}}),
                                         {F({1, -2, 3, 4}, {1, 1, 4})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1, 3));
  EXPECT_THAT(Values<float>(out[0]),
              ElementsAre(FloatNear(1, 1e-6), FloatNear(5, 1e-6), FloatNear(4, 1e-6)));
  EXPECT_THAT(RunOp("LpPool", Attrs({{"kernel_shape", Ints{2, 2}}}), {F({1, 2}, {1, 1, 2})}),
              StatusIs(kInvalid, HasSubstr("LpPool")));
}

TEST(MiscOpsTest, QuantizeLinearRoundsHalfToEvenAndSaturates) {
  // Per-tensor, int8 (from the zero point): x / 2 rounded half to even, plus 1, saturated.
  const Tensor x = F({0, 3, 5, -1000, 1000, -3}, {6});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out,
      RunOp("QuantizeLinear", {}, {x, F({2}, {}), Make<int8_t>({1}, {})}, 1, {DType::kI8}));
  EXPECT_THAT(Values<int8_t>(out[0]), ElementsAre(1, 3, 3, -128, 127, -1));
  // Per-axis (axis 1 of [2, 2]), uint8 without a zero point.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out,
      RunOp("QuantizeLinear", {}, {F({2, 2, -4, 600}, {2, 2}), F({1, 2}, {2})}, 1, {DType::kU8}));
  EXPECT_THAT(Values<uint8_t>(out[0]), ElementsAre(2, 1, 0, 255));
  EXPECT_THAT(RunOp("QuantizeLinear", {}, {F({1, 2, 3}, {3}), F({1, 2}, {2})}, 1, {DType::kU8}),
              StatusIs(kInvalid, HasSubstr("QuantizeLinear")));
}

TEST(MiscOpsTest, DequantizeLinear) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("DequantizeLinear", {},
                                              {Make<uint8_t>({0, 3, 128, 255}, {4}), F({0.5f}, {}),
                                               Make<uint8_t>({128}, {})},
                                              1, {DType::kF32}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(-64, -62.5f, 0, 63.5f));
  // Per-axis int32, axis 0, no zero point.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("DequantizeLinear", Attrs({{"axis", int64_t{0}}}),
                 {I32({1, 2, 3, 4}, {2, 2}), F({2, 10}, {2})}, 1, {DType::kF32}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(2, 4, 30, 40));
}

// A tensor of a one-byte low-precision dtype holding `bytes` (values or bit patterns).
Tensor Lowp(DType dtype, std::vector<int> bytes, Shape shape) {
  Tensor t = *Tensor::Empty(dtype, shape);
  for (size_t i = 0; i < bytes.size(); ++i) {
    static_cast<uint8_t*>(t.raw_data())[i] = static_cast<uint8_t>(bytes[i]);
  }
  return t;
}

TEST(MiscOpsTest, QuantizeLinearLowPrecision) {
  const Tensor x = F({0, 3, 5, -1000, 1000, -3}, {6});
  // int4 with a zero point of 1: x / 2 rounded half to even, plus 1, saturated to [-8, 7].
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out,
      RunOp("QuantizeLinear", {}, {x, F({2}, {}), Lowp(DType::kI4, {1}, {})}, 1, {DType::kI4}));
  EXPECT_THAT(Values<int8_t>(out[0]), ElementsAre(1, 3, 3, -8, 7, -1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("QuantizeLinear", {}, {x, F({2}, {})}, 1, {DType::kU2}));
  EXPECT_THAT(Values<uint8_t>(out[0]), ElementsAre(0, 2, 2, 0, 3, 0));
  // float8: x / scale cast with saturation (the default) or without.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out,
                              RunOp("QuantizeLinear", {}, {x, F({2}, {})}, 1, {DType::kF8E4M3FN}));
  EXPECT_THAT(Values<uint8_t>(out[0]), ElementsAre(0x00, 0x3C, 0x42, 0xFE, 0x7E, 0xBC));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("QuantizeLinear", Attrs({{"saturate", int64_t{0}}}),
                                         {x, F({2}, {})}, 1, {DType::kF8E4M3FN}));
  EXPECT_THAT(Values<uint8_t>(out[0]), ElementsAre(0x00, 0x3C, 0x42, 0xFF, 0x7F, 0xBC));
  // The zero point must have the output's dtype.
  EXPECT_THAT(RunOp("QuantizeLinear", {}, {x, F({2}, {}), Make<int8_t>({1}, {})}, 1, {DType::kI4}),
              StatusIs(kInvalid, HasSubstr("zero point dtype i8 differs from the output's i4")));
}

TEST(MiscOpsTest, DequantizeLinearLowPrecision) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("DequantizeLinear", {},
                                              {Lowp(DType::kI4, {-8, -1, 0, 7}, {4}), F({0.5f}, {}),
                                               Lowp(DType::kI4, {-1}, {})},
                                              1, {DType::kF32}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(-3.5f, 0, 0.5f, 4));
  // float8e4m3fn 0x38 = 1, 0xC0 = -2, 0x7E = 448, 0x7F = NaN.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out,
      RunOp("DequantizeLinear", {},
            {Lowp(DType::kF8E4M3FN, {0x38, 0xC0, 0x7E, 0x7F}, {4}), F({2}, {})}, 1, {DType::kF32}));
  const std::vector<float> v = Values<float>(out[0]);
  EXPECT_EQ(v[0], 2.0f);
  EXPECT_EQ(v[1], -4.0f);
  EXPECT_EQ(v[2], 896.0f);
  EXPECT_TRUE(std::isnan(v[3]));
}

TEST(MiscOpsTest, MaxUnpool) {
  // [1, 1, 2] pooled with kernel 2, stride 2 -> [1, 1, 4].
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("MaxUnpool", Attrs({{"kernel_shape", Ints{2}}, {"strides", Ints{2}}}),
                      {F({5, 7}, {1, 1, 2}), I64({1, 2}, {1, 1, 2})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1, 4));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 5, 7, 0));
  // An explicit output_shape: indices address the inferred [1, 1, 4] output, placed at the
  // origin of [1, 1, 5]. Out-of-range indices are rejected.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("MaxUnpool", Attrs({{"kernel_shape", Ints{2}}, {"strides", Ints{2}}}),
                 {F({5, 7}, {1, 1, 2}), I64({1, 3}, {1, 1, 2}), I64({1, 1, 5}, {3})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1, 5));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 5, 0, 7, 0));
  EXPECT_THAT(RunOp("MaxUnpool", Attrs({{"kernel_shape", Ints{2}}, {"strides", Ints{2}}}),
                    {F({5, 7}, {1, 1, 2}), I64({1, 4}, {1, 1, 2})}),
              StatusIs(kInvalid, HasSubstr("MaxUnpool")));
}

}  // namespace
}  // namespace nimble::vm::cpu
