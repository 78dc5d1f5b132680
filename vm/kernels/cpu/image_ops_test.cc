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
using ::testing::ElementsAreArray;
using ::testing::FloatNear;
using ::testing::HasSubstr;
using ::testing::Pointwise;
using namespace ::nimble::vm::cpu::testing;  // NOLINT

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
using Ints = std::vector<int64_t>;

// An empty (unused) optional input.
Tensor Empty() { return F({}, {0}); }

TEST(ImageOpsTest, ResizeNearestHalfPixelUpsample) {
  // half_pixel + round_prefer_floor maps output 0..3 to input 0, 0, 1, 1.
  const Tensor x = F({1, 2, 3, 4}, {1, 1, 2, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Resize", {}, {x, Empty(), F({1, 1, 2, 2}, {4})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1, 4, 4));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4));
}

TEST(ImageOpsTest, ResizeLinearAlignCornersSizes) {
  const Tensor x = F({0, 3}, {1, 1, 1, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("Resize",
                      Attrs({{"mode", std::string("linear")},
                             {"coordinate_transformation_mode", std::string("align_corners")}}),
                      {x, Empty(), Empty(), I64({1, 1, 1, 4}, {4})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1, 1, 4));
  EXPECT_THAT(Values<float>(out[0]), Pointwise(FloatNear(1e-6), std::vector<float>{0, 1, 2, 3}));
}

TEST(ImageOpsTest, ResizeLinearDownsampleHalfPixel) {
  // The ONNX test_resize_downsample_scales_linear case.
  const Tensor x = F({1, 2, 3, 4, 5, 6, 7, 8}, {1, 1, 2, 4});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Resize", Attrs({{"mode", std::string("linear")}}),
                                              {x, Empty(), F({1, 1, 0.6f, 0.6f}, {4})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1, 1, 2));
  EXPECT_THAT(Values<float>(out[0]),
              Pointwise(FloatNear(1e-5), std::vector<float>{2.6666665f, 4.3333331f}));
}

TEST(ImageOpsTest, ResizeCubicDownsample) {
  // The ONNX test_resize_downsample_scales_cubic case (A = -0.75, half_pixel).
  std::vector<float> v;
  for (int i = 1; i <= 16; ++i) v.push_back(static_cast<float>(i));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out,
                              RunOp("Resize", Attrs({{"mode", std::string("cubic")}}),
                                    {F(v, {1, 1, 4, 4}), Empty(), F({1, 1, 0.8f, 0.8f}, {4})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1, 3, 3));
  EXPECT_THAT(
      Values<float>(out[0]),
      Pointwise(FloatNear(1e-4),
                std::vector<float>{1.47119141f, 2.78125f, 4.08251953f, 6.71142578f, 8.02148438f,
                                   9.32275391f, 11.91650391f, 13.2265625f, 14.52783203f}));
}

TEST(ImageOpsTest, ResizeAxesAndAspectPolicy) {
  // sizes [3, 8] with not_larger keeps the aspect ratio: scale min(3/2, 8/2) = 1.5.
  const Tensor x = F({1, 2, 3, 4}, {1, 1, 2, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out,
      RunOp("Resize",
            Attrs({{"axes", Ints{2, 3}}, {"keep_aspect_ratio_policy", std::string("not_larger")}}),
            {x, Empty(), Empty(), I64({3, 8}, {2})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1, 3, 3));
}

TEST(ImageOpsTest, ResizeTfCropAndResizeExtrapolates) {
  // roi [0.5, 1.5] on a 2-wide axis: the second output lies outside and gets the value 9.
  const Tensor x = F({0, 10}, {1, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("Resize",
                      Attrs({{"mode", std::string("linear")},
                             {"coordinate_transformation_mode", std::string("tf_crop_and_resize")},
                             {"extrapolation_value", 9.0}}),
                      {x, F({0, 0.5f, 1, 1.5f}, {4}), Empty(), I64({1, 2}, {2})}));
  EXPECT_THAT(Values<float>(out[0]), Pointwise(FloatNear(1e-5), std::vector<float>{5, 9}));
}

TEST(ImageOpsTest, ResizeRejectsBadInputs) {
  const Tensor x = F({1, 2, 3, 4}, {1, 1, 2, 2});
  EXPECT_THAT(RunOp("Resize", {}, {x, Empty(), Empty(), I64({4, 4}, {2})}),
              StatusIs(kInvalid, HasSubstr("sizes")));
  EXPECT_THAT(RunOp("Resize", {}, {x, Empty(), F({1, 1, -2, 2}, {4})}),
              StatusIs(kInvalid, HasSubstr("positive")));
  EXPECT_THAT(RunOp("Resize", {}, {x, Empty(), Empty(), Empty()}),
              StatusIs(kInvalid, HasSubstr("scales")));
  EXPECT_THAT(
      RunOp("Resize", Attrs({{"mode", std::string("area")}}), {x, Empty(), F({1, 1, 2, 2}, {4})}),
      StatusIs(kInvalid, HasSubstr("mode")));
  EXPECT_THAT(RunOp("Resize", Attrs({{"nearest_mode", std::string("up")}}),
                    {x, Empty(), F({1, 1, 2, 2}, {4})}),
              StatusIs(kInvalid, HasSubstr("nearest_mode")));
}

TEST(ImageOpsTest, ResizeHalfAndIntegerDtypes) {
  // f16 linear (asymmetric): 0, 1, 2, 2 from [0, 2] upsampled 2x with edge clamping.
  const Tensor h = Half(DType::kF16, {0, 2}, {1, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("Resize",
                      Attrs({{"mode", std::string("linear")},
                             {"coordinate_transformation_mode", std::string("asymmetric")}}),
                      {h, Empty(), F({1, 2}, {2})}));
  EXPECT_EQ(out[0].dtype(), DType::kF16);
  EXPECT_THAT(HalfValues(out[0]), ElementsAre(0, 1, 2, 2));
  // int32 linear truncates toward zero like the reference's astype: 0, 0.5 -> 0, 1, 1.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Resize",
                 Attrs({{"mode", std::string("linear")},
                        {"coordinate_transformation_mode", std::string("asymmetric")}}),
                 {I32({0, 1}, {1, 2}), Empty(), F({1, 2}, {2})}));
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(0, 0, 1, 1));
}

TEST(ImageOpsTest, ResizeNearestIsExactForWideIntegers) {
  // 2^60 + 1 is not representable in double; the nearest path copies elements.
  const int64_t big = (int64_t{1} << 60) + 1;
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("Resize", {}, {I64({big, -big}, {1, 2}), Empty(), F({1, 1.5f}, {2})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 3));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(big, big, -big));
}

TEST(ImageOpsTest, NonFiniteCoordinatesDoNotCrash) {
  const Tensor x = F({1, 2, 3, 4}, {1, 1, 2, 2});
  // A NaN roi extrapolates.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("Resize",
                      Attrs({{"mode", std::string("linear")},
                             {"coordinate_transformation_mode", std::string("tf_crop_and_resize")},
                             {"extrapolation_value", 7.0},
                             {"axes", Ints{3}}}),
                      {x, F({NAN, 1}, {2}), Empty(), I64({2}, {1})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(7, 7, 7, 7));
  // NaN and huge grid points read zeros.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("GridSample", {}, {x, F({NAN, 0, 1e30f, -1e30f}, {1, 1, 2, 2})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 0));
  EXPECT_THAT(RunOp("RoiAlign", {}, {x, F({0, 0, INFINITY, 2}, {1, 4}), I64({0}, {1})}),
              StatusIs(kInvalid, HasSubstr("finite")));
  EXPECT_THAT(RunOp("RoiAlign", {}, {x, F({0, 0, 1e9f, 1e9f}, {1, 4}), I64({0}, {1})}),
              StatusIs(kInvalid, HasSubstr("too many samples")));
}

TEST(ImageOpsTest, UpsampleNearestRepeats) {
  const Tensor x = F({1, 2, 3, 4}, {1, 1, 2, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Upsample", {}, {x, F({1, 1, 1, 3}, {4})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1, 2, 6));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4));
}

TEST(ImageOpsTest, LegacyResizeAndUpsampleAttribute) {
  // Opset-10 Resize(X, scales): asymmetric, nearest rounds down when upsampling and up when
  // downsampling (the opset-10 test_resize_downsample_nearest data).
  const Tensor x = F({1, 2, 3, 4, 5, 6, 7, 8}, {1, 1, 2, 4});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Resize", {}, {x, F({1, 1, 0.6f, 0.6f}, {4})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1, 1, 2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 3));
  // Upsample-7 takes its scales as an attribute.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Upsample", Attrs({{"scales", std::vector<double>{1, 2}}}), {F({5, 6}, {1, 2})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(5, 5, 6, 6));
}

TEST(ImageOpsTest, GridSampleBilinearAlignCorners) {
  const Tensor x = F({1, 2, 3, 4}, {1, 1, 2, 2});
  // (x, y) points: top-left, bottom-right, centre, bottom-left.
  const Tensor grid = F({-1, -1, 1, 1, 0, 0, -1, 1}, {1, 1, 4, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("GridSample", Attrs({{"align_corners", int64_t{1}}}), {x, grid}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1, 1, 4));
  EXPECT_THAT(Values<float>(out[0]), Pointwise(FloatNear(1e-6), std::vector<float>{1, 4, 2.5f, 3}));
}

TEST(ImageOpsTest, GridSamplePaddingModes) {
  const Tensor x = F({1, 2, 3, 4}, {1, 1, 2, 2});
  // x = 2 is far right of the image (align_corners=0: pixel centres at -0.5 and 0.5).
  const Tensor grid = F({2, -0.5f}, {1, 1, 1, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto zeros, RunOp("GridSample", {}, {x, grid}));
  EXPECT_THAT(Values<float>(zeros[0]), Pointwise(FloatNear(1e-6), std::vector<float>{0}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto border,
      RunOp("GridSample", Attrs({{"padding_mode", std::string("border")}}), {x, grid}));
  EXPECT_THAT(Values<float>(border[0]), Pointwise(FloatNear(1e-6), std::vector<float>{2}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto nearest,
                              RunOp("GridSample", Attrs({{"mode", std::string("nearest")}}),
                                    {x, F({0.4f, 0.6f}, {1, 1, 1, 2})}));
  EXPECT_THAT(Values<float>(nearest[0]), ElementsAre(4));
  EXPECT_THAT(RunOp("GridSample", {}, {x, F({0, 0, 0}, {1, 1, 1, 3})}),
              StatusIs(kInvalid, HasSubstr("grid")));
  EXPECT_THAT(RunOp("GridSample", Attrs({{"mode", std::string("area")}}), {x, grid}),
              StatusIs(kInvalid, HasSubstr("mode")));
}

TEST(ImageOpsTest, CenterCropPad) {
  const Tensor x = F({1, 2, 3, 4, 5, 6}, {2, 3});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("CenterCropPad", {}, {x, I64({1, 5}, {2})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 5));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 1, 2, 3, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("CenterCropPad", Attrs({{"axes", Ints{-1}}}), {x, I64({1}, {1})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(2, 5));
  EXPECT_THAT(RunOp("CenterCropPad", {}, {x, I64({1}, {1})}),
              StatusIs(kInvalid, HasSubstr("axes")));
}

TEST(ImageOpsTest, Col2ImSumsOverlaps) {
  // Two 1x2 blocks on a 1x3 image overlap in the middle.
  const Tensor cols = F({1, 2, 3, 4}, {1, 2, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out,
                              RunOp("Col2Im", {}, {cols, I64({1, 3}, {2}), I64({1, 2}, {2})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1, 1, 3));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 5, 4));
  EXPECT_THAT(RunOp("Col2Im", {}, {cols, I64({1, 4}, {2}), I64({1, 2}, {2})}),
              StatusIs(kInvalid, HasSubstr("blocks")));
}

TEST(ImageOpsTest, AffineGridIdentity) {
  const Tensor theta = F({1, 0, 0, 0, 1, 0}, {1, 2, 3});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("AffineGrid", Attrs({{"align_corners", int64_t{1}}}),
                                              {theta, I64({1, 1, 2, 2}, {4})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 2, 2, 2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(-1, -1, 1, -1, -1, 1, 1, 1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("AffineGrid", {}, {theta, I64({1, 1, 2, 2}, {4})}));
  EXPECT_THAT(Values<float>(out[0]),
              Pointwise(FloatNear(1e-6),
                        std::vector<float>{-0.5f, -0.5f, 0.5f, -0.5f, -0.5f, 0.5f, 0.5f, 0.5f}));
  EXPECT_THAT(RunOp("AffineGrid", {}, {theta, I64({1, 1, 2}, {3})}),
              StatusIs(kInvalid, HasSubstr("size")));
}

TEST(ImageOpsTest, RoiAlignAvgAndMax) {
  const Tensor x = F({1, 2, 3, 4}, {1, 1, 2, 2});
  const Tensor rois = F({0, 0, 2, 2}, {1, 4});
  const Tensor idx = I64({0}, {1});
  // half_pixel: samples land on the four pixel centres.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("RoiAlign", Attrs({{"sampling_ratio", int64_t{2}}}), {x, rois, idx}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1, 1, 1));
  EXPECT_THAT(Values<float>(out[0]), Pointwise(FloatNear(1e-6), std::vector<float>{2.5f}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("RoiAlign", Attrs({{"sampling_ratio", int64_t{2}}, {"mode", std::string("max")}}),
                 {x, rois, idx}));
  EXPECT_THAT(Values<float>(out[0]), Pointwise(FloatNear(1e-6), std::vector<float>{4}));
  EXPECT_THAT(RunOp("RoiAlign", {}, {x, rois, I64({3}, {1})}),
              StatusIs(kInvalid, HasSubstr("batch index")));
}

TEST(ImageOpsTest, DeformConvZeroOffsetIsConv) {
  std::vector<float> v;
  for (int i = 0; i < 9; ++i) v.push_back(static_cast<float>(i));
  const Tensor x = F(v, {1, 1, 3, 3});
  const Tensor w = F({1, 1, 1, 1}, {1, 1, 2, 2});
  const Tensor offset = F(std::vector<float>(32, 0.0f), {1, 8, 2, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("DeformConv", {}, {x, w, offset}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1, 2, 2));
  EXPECT_THAT(Values<float>(out[0]), Pointwise(FloatNear(1e-5), std::vector<float>{8, 12, 20, 24}));
  // Shifting every tap down half a row, with mask 0.5 and bias 1.
  std::vector<float> off(32, 0.0f);
  for (int t = 0; t < 4; ++t) {
    for (int l = 0; l < 4; ++l) off[t * 8 + l] = 0.5f;
  }
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("DeformConv", {},
                                         {x, w, F(off, {1, 8, 2, 2}), F({1}, {1}),
                                          F(std::vector<float>(16, 0.5f), {1, 4, 2, 2})}));
  // Output (0,0) samples rows 0.5 and 1.5 of columns 0 and 1: (1.5+2.5+4.5+5.5)/2 + 1.
  EXPECT_THAT(Values<float>(out[0])[0], FloatNear(8.0f, 1e-5));
  EXPECT_THAT(RunOp("DeformConv", {}, {x, w, F(std::vector<float>(8, 0.0f), {1, 8, 1, 1})}),
              StatusIs(kInvalid, HasSubstr("offset")));
}

}  // namespace
}  // namespace nimble::vm::cpu
