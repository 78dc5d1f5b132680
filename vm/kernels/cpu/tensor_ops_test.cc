#include <cstdint>
#include <string>
#include <vector>

#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vm/kernels/kernel.h"

namespace nimble::vm {
namespace {

using ::nimble::testing::IsOk;
using ::nimble::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

template <typename T>
Tensor T_(std::vector<T> v, Shape shape) {
  return Tensor::FromVector<T>(v, shape);
}
Tensor F(std::vector<float> v, Shape shape) { return T_<float>(std::move(v), shape); }
Tensor I(std::vector<int64_t> v, Shape shape) { return T_<int64_t>(std::move(v), shape); }

template <typename T>
std::vector<T> Values(const Tensor& t) {
  return std::vector<T>(t.data<T>(), t.data<T>() + t.num_elements());
}

// Creates the kernel, computes output shapes, allocates outputs of `dtypes` (the first input's
// dtype when empty) and runs it.
absl::StatusOr<std::vector<Tensor>> RunOp(const std::string& op, const Attributes& attrs,
                                          std::vector<Tensor> inputs, int num_outputs = 1,
                                          std::vector<DType> dtypes = {}, int threads = 1) {
  NIMBLE_ASSIGN_OR_RETURN(auto kernel, KernelRegistry::Global().Create(op, kCpu.type, attrs));
  std::vector<Shape> shapes(num_outputs);
  NIMBLE_RETURN_IF_ERROR(kernel->OutputShapes(inputs, absl::MakeSpan(shapes)));
  std::vector<Tensor> outputs(num_outputs);
  for (int i = 0; i < num_outputs; ++i) {
    const DType dtype = i < static_cast<int>(dtypes.size()) ? dtypes[i] : inputs[0].dtype();
    NIMBLE_ASSIGN_OR_RETURN(outputs[i], Tensor::Empty(dtype, shapes[i]));
  }
  KernelContext ctx;
  ctx.num_threads = threads;
  NIMBLE_RETURN_IF_ERROR(kernel->Run(ctx, inputs, absl::MakeSpan(outputs)));
  return outputs;
}

absl::StatusOr<Shape> OutShape(const std::string& op, const Attributes& attrs,
                               std::vector<Tensor> inputs) {
  NIMBLE_ASSIGN_OR_RETURN(auto kernel, KernelRegistry::Global().Create(op, kCpu.type, attrs));
  Shape shape;
  NIMBLE_RETURN_IF_ERROR(kernel->OutputShapes(inputs, absl::MakeSpan(&shape, 1)));
  return shape;
}

Attributes Attrs(std::initializer_list<std::pair<std::string, AttrValue>> values) {
  Attributes a;
  for (const auto& [k, v] : values) a.Set(k, v);
  return a;
}

std::vector<float> Iota(int64_t n, float start = 0) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = start + static_cast<float>(i);
  return v;
}

TEST(ShapeTest, StartEnd) {
  Tensor x = F(Iota(24), {2, 3, 4});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Shape", {}, {x}, 1, {DType::kI64}));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(2, 3, 4));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Shape", Attrs({{"start", int64_t{-2}}}), {x}, 1, {DType::kI64}));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(3, 4));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out,
      RunOp("Shape", Attrs({{"start", int64_t{1}}, {"end", int64_t{-1}}}), {x}, 1, {DType::kI64}));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(3));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Size", {}, {x}, 1, {DType::kI64}));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(24));
  EXPECT_EQ(out[0].rank(), 0);
}

TEST(ReshapeTest, ZeroAndMinusOne) {
  Tensor x = F(Iota(24), {2, 3, 4});
  NIMBLE_ASSERT_OK_AND_ASSIGN(Shape s, OutShape("Reshape", {}, {x, I({0, -1}, {2})}));
  EXPECT_THAT(s, ElementsAre(2, 12));
  NIMBLE_ASSERT_OK_AND_ASSIGN(s, OutShape("Reshape", {}, {x, I({-1, 0, 2}, {3})}));
  EXPECT_THAT(s, ElementsAre(4, 3, 2));
  EXPECT_THAT(OutShape("Reshape", {}, {x, I({-1, -1}, {2})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("more than one -1")));
  EXPECT_THAT(OutShape("Reshape", {}, {x, I({5, -1}, {2})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cannot reshape")));
  EXPECT_THAT(OutShape("Reshape", {}, {x, I({0, 0, 0, 0}, {4})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("copies dim 3")));
  // allowzero: 0 is a real zero.
  Tensor empty = F({}, {0, 3});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      s, OutShape("Reshape", Attrs({{"allowzero", int64_t{1}}}), {empty, I({3, 0}, {2})}));
  EXPECT_THAT(s, ElementsAre(3, 0));
  EXPECT_THAT(OutShape("Reshape", Attrs({{"allowzero", int64_t{1}}}), {x, I({0, -1}, {2})}),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Reshape", {}, {x, I({4, -1}, {2})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(4, 6));
  EXPECT_EQ(Values<float>(out[0]), Iota(24));
}

TEST(ViewOpsTest, FlattenSqueezeUnsqueeze) {
  Tensor x = F(Iota(24), {2, 1, 3, 4});
  EXPECT_THAT(*OutShape("Flatten", {}, {x}), ElementsAre(2, 12));
  EXPECT_THAT(*OutShape("Flatten", Attrs({{"axis", int64_t{-1}}}), {x}), ElementsAre(6, 4));
  EXPECT_THAT(*OutShape("Flatten", Attrs({{"axis", int64_t{0}}}), {x}), ElementsAre(1, 24));
  EXPECT_THAT(*OutShape("Squeeze", {}, {x}), ElementsAre(2, 3, 4));
  EXPECT_THAT(*OutShape("Squeeze", {}, {x, I({-3}, {1})}), ElementsAre(2, 3, 4));
  EXPECT_THAT(OutShape("Squeeze", {}, {x, I({0}, {1})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is not 1")));
  EXPECT_THAT(*OutShape("Squeeze", Attrs({{"axes", std::vector<int64_t>{1}}}), {x}),
              ElementsAre(2, 3, 4));
  EXPECT_THAT(*OutShape("Unsqueeze", {}, {x, I({0, -1}, {2})}), ElementsAre(1, 2, 1, 3, 4, 1));
  EXPECT_THAT(OutShape("Unsqueeze", {}, {x, I({1, 1}, {2})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("repeated")));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Unsqueeze", {}, {x, I({2}, {1})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 1, 1, 3, 4));
  EXPECT_EQ(Values<float>(out[0]), Iota(24));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Identity", {}, {x}));
  EXPECT_EQ(Values<float>(out[0]), Iota(24));
}

// Naive transpose for checks.
std::vector<float> NaiveTranspose(const std::vector<float>& x, const Shape& shape,
                                  const std::vector<int64_t>& perm) {
  const int r = static_cast<int>(shape.size());
  Shape out_shape(r), in_strides(r, 1);
  for (int i = r - 2; i >= 0; --i) in_strides[i] = in_strides[i + 1] * shape[i + 1];
  for (int i = 0; i < r; ++i) out_shape[i] = shape[perm[i]];
  std::vector<float> out(x.size());
  Shape idx(r, 0);
  for (size_t o = 0; o < out.size(); ++o) {
    int64_t off = 0;
    for (int i = 0; i < r; ++i) off += idx[i] * in_strides[perm[i]];
    out[o] = x[off];
    for (int i = r - 1; i >= 0; --i) {
      if (++idx[i] < out_shape[i]) break;
      idx[i] = 0;
    }
  }
  return out;
}

TEST(TransposeTest, MatchesNaive) {
  struct Case {
    Shape shape;
    std::vector<int64_t> perm;
  };
  const std::vector<Case> cases = {
      {{2, 3}, {1, 0}},
      {{3, 70, 45}, {0, 2, 1}},      // batched 2-D, tiled path
      {{2, 5, 3, 8}, {0, 2, 1, 3}},  // BERT heads split
      {{2, 3, 4, 5}, {3, 1, 0, 2}},  // general
      {{4, 1, 6}, {2, 1, 0}},        // size-1 dim
      {{2, 3, 4}, {0, 1, 2}},        // identity
      {{130, 67}, {1, 0}},           // tiles with remainders
  };
  for (const Case& c : cases) {
    int64_t n = 1;
    for (int64_t d : c.shape) n *= d;
    const std::vector<float> x = Iota(n);
    for (int threads : {1, 2}) {
      NIMBLE_ASSERT_OK_AND_ASSIGN(
          auto out, RunOp("Transpose", Attrs({{"perm", c.perm}}), {F(x, c.shape)}, 1, {}, threads));
      EXPECT_EQ(Values<float>(out[0]), NaiveTranspose(x, c.shape, c.perm))
          << ShapeToString(c.shape);
    }
  }
  // Default perm reverses.
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Transpose", {}, {F(Iota(6), {2, 3})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(3, 2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 3, 1, 4, 2, 5));
  EXPECT_THAT(
      OutShape("Transpose", Attrs({{"perm", std::vector<int64_t>{0, 0}}}), {F(Iota(6), {2, 3})}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("permutation")));
}

TEST(TransposeTest, Strings) {
  std::vector<std::string> s = {"a", "b", "c", "d", "e", "f"};
  Tensor x = *Tensor::Empty(DType::kString, {2, 3});
  std::copy(s.begin(), s.end(), x.data<std::string>());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Transpose", {}, {x}));
  EXPECT_THAT(Values<std::string>(out[0]), ElementsAre("a", "d", "b", "e", "c", "f"));
}

TEST(ConcatSplitTest, Basic) {
  Tensor a = F(Iota(4), {2, 2});
  Tensor b = F(Iota(6, 10), {2, 3});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Concat", Attrs({{"axis", int64_t{-1}}}), {a, b}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 5));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 1, 10, 11, 12, 2, 3, 13, 14, 15));
  EXPECT_THAT(OutShape("Concat", Attrs({{"axis", int64_t{0}}}), {a, b}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cannot concatenate")));

  Tensor x = F(Iota(10), {2, 5});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Split", Attrs({{"axis", int64_t{1}}}), {x, I({2, 3}, {2})}, 2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 1, 5, 6));
  EXPECT_THAT(Values<float>(out[1]), ElementsAre(2, 3, 4, 7, 8, 9));
  // Equal split with a smaller last part (num_outputs).
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Split", Attrs({{"axis", int64_t{-1}}, {"num_outputs", int64_t{2}}}), {x}, 2));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 3));
  EXPECT_THAT(Values<float>(out[1]), ElementsAre(3, 4, 8, 9));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Split", Attrs({{"axis", int64_t{0}}}), {x}, 2));
  EXPECT_THAT(Values<float>(out[1]), ElementsAre(5, 6, 7, 8, 9));
  EXPECT_THAT(RunOp("Split", Attrs({{"axis", int64_t{1}}}), {x, I({2, 2}, {2})}, 2),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("do not split")));
}

TEST(SliceTest, StepsAndClamping) {
  Tensor x = F(Iota(20), {4, 5});
  // x[1:1000, ::2]
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out,
      RunOp("Slice", {}, {x, I({1, 0}, {2}), I({1000, 5}, {2}), I({0, 1}, {2}), I({1, 2}, {2})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(3, 3));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(5, 7, 9, 10, 12, 14, 15, 17, 19));
  // x[::-1, -2:-6:-2] -> rows 3..0, cols 3, 1
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Slice", {},
                                         {x, I({-1, -2}, {2}), I({INT64_MIN, -6}, {2}),
                                          I({0, -1}, {2}), I({-1, -2}, {2})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(4, 2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(18, 16, 13, 11, 8, 6, 3, 1));
  // Start past the end with a negative step clamps to the last element.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Slice", {}, {x, I({100}, {1}), I({2}, {1}), I({1}, {1}), I({-1}, {1})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(4, 2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(4, 3, 9, 8, 14, 13, 19, 18));
  // Extreme steps pick one element.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out,
      RunOp("Slice", {}, {x, I({-1}, {1}), I({INT64_MIN}, {1}), I({1}, {1}), I({INT64_MIN}, {1})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(4, 9, 14, 19));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out,
      RunOp("Slice", {}, {x, I({1}, {1}), I({INT64_MAX}, {1}), I({0}, {1}), I({INT64_MAX}, {1})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(5, 6, 7, 8, 9));
  // Empty result.
  NIMBLE_ASSERT_OK_AND_ASSIGN(Shape s, OutShape("Slice", {}, {x, I({3}, {1}), I({1}, {1})}));
  EXPECT_THAT(s, ElementsAre(0, 5));
  EXPECT_THAT(OutShape("Slice", {}, {x, I({0}, {1}), I({1}, {1}), I({0}, {1}), I({0}, {1})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("step is 0")));
  // int32 starts/ends.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out,
      RunOp("Slice", {}, {x, T_<int32_t>({2}, {1}), T_<int32_t>({3}, {1}), T_<int32_t>({1}, {1})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(2, 7, 12, 17));
}

TEST(ExpandTileTest, Basic) {
  Tensor x = F({1, 2, 3}, {3, 1});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Expand", {}, {x, I({2, 1, 2}, {3})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 3, 2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3));
  EXPECT_THAT(OutShape("Expand", {}, {x, I({2, 2}, {2})}),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  Tensor y = F({1, 2, 3, 4}, {2, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Tile", {}, {y, I({2, 3}, {2})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(4, 6));
  EXPECT_THAT(Values<float>(out[0]), ElementsAreArray({1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4,
                                                       1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4}));
}

TEST(PadTest, Modes) {
  Tensor x = F({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor pads = I({0, 2, 0, 1}, {4});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Pad", {}, {x, pads, F({9}, {})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 6));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(9, 9, 1, 2, 3, 9, 9, 9, 4, 5, 6, 9));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out,
                              RunOp("Pad", Attrs({{"mode", std::string("reflect")}}), {x, pads}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(3, 2, 1, 2, 3, 2, 6, 5, 4, 5, 6, 5));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Pad", Attrs({{"mode", std::string("edge")}}), {x, pads}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 1, 1, 2, 3, 3, 4, 4, 4, 5, 6, 6));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Pad", Attrs({{"mode", std::string("wrap")}}), {x, pads}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(2, 3, 1, 2, 3, 1, 5, 6, 4, 5, 6, 4));
  // Negative pads crop; axes input selects dims.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Pad", {}, {x, I({1, -1}, {2}), Tensor(), I({0}, {1})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 3));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 0, 0, 1, 2, 3));
  EXPECT_THAT(OutShape("Pad", {}, {x, I({0, -4, 0, 0}, {4})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("below zero")));
}

TEST(ConstantRangeTest, Basic) {
  Attributes a;
  a.Set("value", T_<int32_t>({7}, {1}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out,
                              RunOp("ConstantOfShape", a, {I({2, 2}, {2})}, 1, {DType::kI32}));
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(7, 7, 7, 7));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("ConstantOfShape", {}, {I({3}, {1})}, 1, {DType::kF32}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 0, 0));
  EXPECT_THAT(OutShape("ConstantOfShape", {}, {I({-1}, {1})}),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  // A huge size is the allocator's error, not a crash.
  EXPECT_THAT(RunOp("ConstantOfShape", {}, {I({int64_t{1} << 40, 1 << 20}, {2})}, 1, {DType::kF32}),
              ::testing::Not(IsOk()));

  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Range", {}, {I({1}, {}), I({10}, {}), I({3}, {})}));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(1, 4, 7));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Range", {}, {I({10}, {}), I({1}, {}), I({-4}, {})}));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(10, 6, 2));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Range", {}, {F({0}, {}), F({1}, {}), F({0.25}, {})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 0.25, 0.5, 0.75));
  NIMBLE_ASSERT_OK_AND_ASSIGN(Shape s, OutShape("Range", {}, {I({5}, {}), I({1}, {}), I({1}, {})}));
  EXPECT_THAT(s, ElementsAre(0));
  EXPECT_THAT(OutShape("Range", {}, {I({0}, {}), I({1}, {}), I({0}, {})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("delta is 0")));
  EXPECT_THAT(RunOp("Range", {}, {I({0}, {}), I({INT64_MAX}, {}), I({1}, {})}),
              ::testing::Not(IsOk()));
}

TEST(TriluEyeTest, Basic) {
  Tensor x = F(Iota(9, 1), {3, 3});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Trilu", {}, {x}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 2, 3, 0, 5, 6, 0, 0, 9));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out,
                              RunOp("Trilu", Attrs({{"upper", int64_t{0}}}), {x, I({-1}, {})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 0, 0, 4, 0, 0, 7, 8, 0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("EyeLike", Attrs({{"k", int64_t{1}}}), {F(Iota(6), {2, 3})}, 1, {DType::kI32}));
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(0, 1, 0, 0, 0, 1));
}

TEST(SpaceDepthTest, RoundTrip) {
  // ONNX example: DepthToSpace DCR, blocksize 2, x of [1, 8, 2, 3].
  Tensor x = F(Iota(48), {1, 8, 2, 3});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out,
                              RunOp("DepthToSpace", Attrs({{"blocksize", int64_t{2}}}), {x}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 2, 4, 6));
  EXPECT_THAT(Values<float>(out[0]),
              ElementsAreArray({0,  12, 1,  13, 2,  14, 24, 36, 25, 37, 26, 38, 3,  15, 4,  16,
                                5,  17, 27, 39, 28, 40, 29, 41, 6,  18, 7,  19, 8,  20, 30, 42,
                                31, 43, 32, 44, 9,  21, 10, 22, 11, 23, 33, 45, 34, 46, 35, 47}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto crd,
      RunOp("DepthToSpace", Attrs({{"blocksize", int64_t{2}}, {"mode", std::string("CRD")}}), {x}));
  EXPECT_THAT(Values<float>(crd[0]),
              ElementsAreArray({0,  6,  1,  7,  2,  8,  12, 18, 13, 19, 14, 20, 3,  9,  4,  10,
                                5,  11, 15, 21, 16, 22, 17, 23, 24, 30, 25, 31, 26, 32, 36, 42,
                                37, 43, 38, 44, 27, 33, 28, 34, 29, 35, 39, 45, 40, 46, 41, 47}));
  // SpaceToDepth inverts DCR DepthToSpace.
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto back,
                              RunOp("SpaceToDepth", Attrs({{"blocksize", int64_t{2}}}), {out[0]}));
  EXPECT_THAT(back[0].shape(), ElementsAre(1, 8, 2, 3));
  EXPECT_EQ(Values<float>(back[0]), Iota(48));
}

TEST(ReverseSequenceTest, TimeMajor) {
  // [time 4, batch 2, 1]
  Tensor x = F({0, 10, 1, 11, 2, 12, 3, 13}, {4, 2, 1});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("ReverseSequence", {}, {x, I({3, 4}, {2})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(2, 13, 1, 12, 0, 11, 3, 10));
  EXPECT_THAT(RunOp("ReverseSequence", {}, {x, I({5, 4}, {2})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("sequence length")));
}

TEST(TensorKernelsTest, RunRejectsMisallocatedOutput) {
  auto kernel = KernelRegistry::Global().Create("Transpose", kCpu.type, {});
  ASSERT_THAT(kernel, IsOk());
  Tensor x = F(Iota(6), {2, 3});
  std::vector<Tensor> outputs = {*Tensor::Empty(DType::kF32, {2, 3})};
  EXPECT_THAT((*kernel)->Run(KernelContext(), {x}, absl::MakeSpan(outputs)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("allocated as")));
}

// Random shapes and random (often invalid) index, shape and axis values: every call must end in
// OK or an error status, never a crash or a stray access (run under the sanitizers to see those).
TEST(TensorKernelsTest, RandomInputsNeverCrash) {
  uint32_t state = 12345;
  auto next = [&state](int n) {
    state = state * 1664525u + 1013904223u;
    return static_cast<int>((state >> 8) % static_cast<uint32_t>(n));
  };
  auto shape = [&] {
    Shape s(next(4));
    for (int64_t& d : s) d = next(4);
    return s;
  };
  auto data = [&] {
    Shape s = shape();
    Tensor t = *Tensor::Empty(DType::kF32, s);
    for (int64_t i = 0; i < t.num_elements(); ++i)
      t.data<float>()[i] = static_cast<float>(next(7) - 3);
    return t;
  };
  auto ints = [&] {
    Shape s(next(2), next(5));
    Tensor t = *Tensor::Empty(DType::kI64, s);
    for (int64_t i = 0; i < t.num_elements(); ++i) t.data<int64_t>()[i] = next(11) - 5;
    return t;
  };
  auto boolean = [&] {
    Tensor t = *Tensor::Empty(DType::kBool, {next(5)});
    for (int64_t i = 0; i < t.num_elements(); ++i) t.data<bool>()[i] = next(2) == 1;
    return t;
  };
  struct Op {
    std::string name;
    std::vector<char> inputs;  // d: data, i: ints, b: bool
    std::vector<DType> outputs;
    Attributes attrs;
  };
  const DType f = DType::kF32, l = DType::kI64;
  const std::vector<Op> ops = {
      {"Reshape", {'d', 'i'}, {f}, {}},
      {"Squeeze", {'d', 'i'}, {f}, {}},
      {"Unsqueeze", {'d', 'i'}, {f}, {}},
      {"Flatten", {'d'}, {f}, Attrs({{"axis", int64_t{-1}}})},
      {"Transpose", {'d'}, {f}, {}},
      {"Concat", {'d', 'd'}, {f}, Attrs({{"axis", int64_t{-1}}})},
      {"Split", {'d', 'i'}, {f, f}, Attrs({{"axis", int64_t{1}}})},
      {"Slice", {'d', 'i', 'i', 'i', 'i'}, {f}, {}},
      {"Expand", {'d', 'i'}, {f}, {}},
      {"Tile", {'d', 'i'}, {f}, {}},
      {"Pad", {'d', 'i', 'd', 'i'}, {f}, Attrs({{"mode", std::string("reflect")}})},
      {"Pad", {'d', 'i'}, {f}, Attrs({{"mode", std::string("wrap")}})},
      {"ConstantOfShape", {'i'}, {f}, {}},
      {"Trilu", {'d', 'i'}, {f}, {}},
      {"DepthToSpace", {'d'}, {f}, Attrs({{"blocksize", int64_t{2}}})},
      {"SpaceToDepth", {'d'}, {f}, Attrs({{"blocksize", int64_t{2}}})},
      {"ReverseSequence", {'d', 'i'}, {f}, {}},
      {"Gather", {'d', 'i'}, {f}, Attrs({{"axis", int64_t{-1}}})},
      {"GatherElements", {'d', 'i'}, {f}, {}},
      {"GatherND", {'d', 'i'}, {f}, Attrs({{"batch_dims", int64_t{1}}})},
      {"ScatterND", {'d', 'i', 'd'}, {f}, Attrs({{"reduction", std::string("add")}})},
      {"ScatterElements", {'d', 'i', 'd'}, {f}, {}},
      {"TopK", {'d', 'i'}, {f, l}, {}},
      {"OneHot", {'i', 'i', 'd'}, {f}, {}},
      {"NonZero", {'d'}, {l}, {}},
      {"Compress", {'d', 'b'}, {f}, Attrs({{"axis", int64_t{0}}})},
      {"Unique", {'d'}, {f, l, l, l}, Attrs({{"axis", int64_t{0}}})},
      {"MatMul", {'d', 'd'}, {f}, {}},
      {"Einsum", {'d', 'd'}, {f}, Attrs({{"equation", std::string("ij,jk->ik")}})},
      {"MaxPool", {'d'}, {f}, Attrs({{"kernel_shape", std::vector<int64_t>{2}}})},
  };
  int ran = 0;
  for (int iter = 0; iter < 300; ++iter) {
    for (const Op& op : ops) {
      std::vector<Tensor> inputs;
      for (char c : op.inputs) inputs.push_back(c == 'd' ? data() : c == 'i' ? ints() : boolean());
      auto kernel = KernelRegistry::Global().Create(op.name, kCpu.type, op.attrs);
      ASSERT_THAT(kernel, IsOk()) << op.name;
      std::vector<Tensor> outputs(op.outputs.size());
      if (!(*kernel)->allocates_outputs()) {
        std::vector<Shape> shapes(op.outputs.size());
        if (!(*kernel)->OutputShapes(inputs, absl::MakeSpan(shapes)).ok()) continue;
        bool small = true;
        for (size_t i = 0; i < shapes.size() && small; ++i) {
          auto n = NumElements(shapes[i]);
          small = n.ok() && *n <= (1 << 20);
          if (small) outputs[i] = *Tensor::Empty(op.outputs[i], shapes[i]);
        }
        if (!small) continue;
      }
      const absl::Status status = (*kernel)->Run(KernelContext(), inputs, absl::MakeSpan(outputs));
      if (status.ok()) ++ran;
      EXPECT_TRUE(status.ok() || status.code() == absl::StatusCode::kInvalidArgument)
          << op.name << ": " << status;
    }
  }
  EXPECT_GT(ran, 1000);  // most random cases are valid enough to run
}

}  // namespace
}  // namespace nimble::vm
