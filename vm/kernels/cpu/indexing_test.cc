#include <cstdint>
#include <cstring>
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
using ::testing::HasSubstr;

template <typename T>
Tensor T_(std::vector<T> v, Shape shape) {
  return Tensor::FromVector<T>(v, shape);
}
Tensor B(std::vector<int> v, Shape shape) {
  Tensor t = *Tensor::Empty(DType::kBool, shape);
  for (size_t i = 0; i < v.size(); ++i) t.data<bool>()[i] = v[i] != 0;
  return t;
}
Tensor F(std::vector<float> v, Shape shape) { return T_<float>(std::move(v), shape); }
Tensor I(std::vector<int64_t> v, Shape shape) { return T_<int64_t>(std::move(v), shape); }

template <typename T>
std::vector<T> Values(const Tensor& t) {
  return std::vector<T>(t.data<T>(), t.data<T>() + t.num_elements());
}

Attributes Attrs(std::initializer_list<std::pair<std::string, AttrValue>> values) {
  Attributes a;
  for (const auto& [k, v] : values) a.Set(k, v);
  return a;
}

// Runs `op`; outputs are allocated from OutputShapes with `dtypes` (the first input's dtype
// when empty) unless the kernel allocates them itself.
absl::StatusOr<std::vector<Tensor>> RunOp(const std::string& op, const Attributes& attrs,
                                          std::vector<Tensor> inputs, int num_outputs = 1,
                                          std::vector<DType> dtypes = {}) {
  NIMBLE_ASSIGN_OR_RETURN(auto kernel, KernelRegistry::Global().Create(op, kCpu.type, attrs));
  std::vector<Tensor> outputs(num_outputs);
  if (!kernel->allocates_outputs()) {
    std::vector<Shape> shapes(num_outputs);
    NIMBLE_RETURN_IF_ERROR(kernel->OutputShapes(inputs, absl::MakeSpan(shapes)));
    for (int i = 0; i < num_outputs; ++i) {
      const DType dtype = i < static_cast<int>(dtypes.size()) ? dtypes[i] : inputs[0].dtype();
      NIMBLE_ASSIGN_OR_RETURN(outputs[i], Tensor::Empty(dtype, shapes[i]));
    }
  }
  NIMBLE_RETURN_IF_ERROR(kernel->Run(KernelContext(), inputs, absl::MakeSpan(outputs)));
  return outputs;
}

TEST(GatherTest, AxesAndNegativeIndices) {
  Tensor data = F({1, 2, 3, 4, 5, 6}, {3, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Gather", {}, {data, I({2, -3, 1, 2}, {2, 2})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 2, 2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(5, 6, 1, 2, 3, 4, 5, 6));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Gather", Attrs({{"axis", int64_t{-1}}}), {data, T_<int32_t>({1}, {})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(3));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(2, 4, 6));
  EXPECT_THAT(RunOp("Gather", {}, {data, I({3}, {1})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("out of range")));
  EXPECT_THAT(RunOp("Gather", {}, {data, I({-4}, {1})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("out of range")));
  EXPECT_THAT(RunOp("Gather", {}, {data, F({0}, {1})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("integer")));
}

TEST(GatherTest, Strings) {
  Tensor s = *Tensor::Empty(DType::kString, {3});
  s.data<std::string>()[0] = "a";
  s.data<std::string>()[1] = "bb";
  s.data<std::string>()[2] = "ccc";
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Gather", {}, {s, I({2, 0, 2}, {3})}));
  EXPECT_THAT(Values<std::string>(out[0]), ElementsAre("ccc", "a", "ccc"));
}

TEST(GatherElementsTest, Basic) {
  Tensor data = F({1, 2, 3, 4}, {2, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("GatherElements", Attrs({{"axis", int64_t{1}}}),
                                              {data, I({0, 0, 1, 0}, {2, 2})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 1, 4, 3));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("GatherElements", {}, {data, I({1, -2}, {1, 2})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(3, 2));
  EXPECT_THAT(RunOp("GatherElements", {}, {data, I({2, 0}, {1, 2})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("out of range")));
}

TEST(GatherNDTest, BatchDims) {
  Tensor data = F({0, 1, 2, 3}, {2, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("GatherND", {}, {data, I({0, 0, 1, 1}, {2, 2})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 3));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("GatherND", {}, {data, I({1, 0}, {2, 1})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(2, 3, 0, 1));
  // ONNX example 5: batch_dims = 1.
  Tensor data3 = F({0, 1, 2, 3, 4, 5, 6, 7}, {2, 2, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("GatherND", Attrs({{"batch_dims", int64_t{1}}}), {data3, I({1, 0}, {2, 1})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(2, 3, 4, 5));
  EXPECT_THAT(RunOp("GatherND", {}, {data, I({2, 0}, {1, 2})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("out of range")));
}

TEST(ScatterTest, NDAndElements) {
  Tensor data = F({1, 2, 3, 4, 5, 6, 7, 8}, {8});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("ScatterND", {}, {data, I({4, 3, 1, 7}, {4, 1}), F({9, 10, 11, 12}, {4})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 11, 3, 10, 9, 6, 7, 12));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("ScatterND", Attrs({{"reduction", std::string("add")}}),
                                         {data, I({0, 0}, {2, 1}), F({5, 6}, {2})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(12, 2, 3, 4, 5, 6, 7, 8));
  EXPECT_THAT(RunOp("ScatterND", {}, {data, I({8}, {1, 1}), F({1}, {1})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("out of range")));

  Tensor m = F({0, 0, 0, 0, 0, 0, 0, 0, 0}, {3, 3});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("ScatterElements", {},
                 {m, I({1, 0, 2, 0, 2, 1}, {2, 3}), F({1.0, 1.1, 1.2, 2.0, 2.1, 2.2}, {2, 3})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(2.0, 1.1, 0, 1.0, 0, 2.2, 0, 2.1, 1.2));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out,
      RunOp("ScatterElements", Attrs({{"axis", int64_t{1}}, {"reduction", std::string("max")}}),
            {T_<int32_t>({1, 2, 3, 4, 5}, {1, 5}), I({1, -2, 1}, {1, 3}),
             T_<int32_t>({7, 1, 9}, {1, 3})}));
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(1, 9, 3, 4, 5));
}

TEST(NonZeroTest, Coordinates) {
  Tensor x = F({1, 0, 0, -2, 0, 3}, {2, 3});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("NonZero", {}, {x}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 3));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(0, 1, 1, 0, 0, 2));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("NonZero", {}, {F({0, -0.0f}, {2})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 0));
}

TEST(NonZeroTest, LowPrecisionFloatsCompareByValue) {
  // f8e4m3fn: 0x80 is -0 (zero), 0x7F is NaN (non-zero); f8e8m0 0x00 is 2^-127 (non-zero).
  Tensor f8 = *Tensor::Empty(DType::kF8E4M3FN, {4});
  const uint8_t bits[] = {0x00, 0x80, 0x38, 0x7F};
  std::memcpy(f8.raw_data(), bits, 4);
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("NonZero", {}, {f8}));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(2, 3));
  Tensor e8 = *Tensor::Empty(DType::kF8E8M0, {1});
  e8.data<uint8_t>()[0] = 0;
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("NonZero", {}, {e8}));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(0));
}

TEST(TopKTest, LargestSmallestAndTies) {
  Tensor x = F({1, 3, 3, 2, 5, 5, 5, 0}, {2, 4});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out,
                              RunOp("TopK", {}, {x, I({2}, {1})}, 2, {DType::kF32, DType::kI64}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(3, 3, 5, 5));
  EXPECT_THAT(Values<int64_t>(out[1]), ElementsAre(1, 2, 0, 1));  // ties: lower index first
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("TopK", Attrs({{"largest", int64_t{0}}}), {x, I({3}, {1})},
                                         2, {DType::kF32, DType::kI64}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 2, 3, 0, 5, 5));
  EXPECT_THAT(Values<int64_t>(out[1]), ElementsAre(0, 3, 1, 3, 0, 1));
  // Along axis 0.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("TopK", Attrs({{"axis", int64_t{0}}}), {x, I({1}, {1})}, 2,
                                         {DType::kF32, DType::kI64}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(5, 5, 5, 2));
  EXPECT_THAT(Values<int64_t>(out[1]), ElementsAre(1, 1, 1, 0));
  EXPECT_THAT(RunOp("TopK", {}, {x, I({5}, {1})}, 2, {DType::kF32, DType::kI64}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("k = 5")));
  // NaN sorts above every number instead of breaking the sort.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("TopK", {}, {F({1, NAN, 2}, {3}), I({2}, {1})}, 2, {DType::kF32, DType::kI64}));
  EXPECT_THAT(Values<int64_t>(out[1]), ElementsAre(1, 2));
}

TEST(OneHotTest, AxisAndNegativeIndices) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out,
      RunOp("OneHot", {}, {I({0, -1, 5, 2}, {4}), I({3}, {}), F({0, 1}, {2})}, 1, {DType::kF32}));
  EXPECT_THAT(out[0].shape(), ElementsAre(4, 3));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("OneHot", Attrs({{"axis", int64_t{0}}}),
                 {I({1, 0}, {2}), F({2}, {1}), I({-1, 7}, {2})}, 1, {DType::kI64}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 2));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(-1, 7, 7, -1));
}

TEST(CompressTest, AxisAndFlat) {
  Tensor x = F({1, 2, 3, 4, 5, 6}, {3, 2});
  Tensor cond = B({0, 1, 1}, {3});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out,
                              RunOp("Compress", Attrs({{"axis", int64_t{0}}}), {x, cond}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(3, 4, 5, 6));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Compress", {}, {x, cond}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(2, 3));
}

TEST(UniqueTest, SortedAndUnsorted) {
  Tensor x = F({2, 1, 1, 3, 4, 3}, {6});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Unique", Attrs({{"sorted", int64_t{0}}}), {x}, 4));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(2, 1, 3, 4));
  EXPECT_THAT(Values<int64_t>(out[1]), ElementsAre(0, 1, 3, 4));
  EXPECT_THAT(Values<int64_t>(out[2]), ElementsAre(0, 1, 1, 2, 3, 2));
  EXPECT_THAT(Values<int64_t>(out[3]), ElementsAre(1, 2, 2, 1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Unique", {}, {x}, 4));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 2, 3, 4));
  EXPECT_THAT(Values<int64_t>(out[1]), ElementsAre(1, 0, 3, 4));
  EXPECT_THAT(Values<int64_t>(out[2]), ElementsAre(1, 0, 0, 2, 3, 2));
  EXPECT_THAT(Values<int64_t>(out[3]), ElementsAre(2, 1, 2, 1));
  // ONNX example with axis 0.
  Tensor m = F({1, 0, 0, 1, 0, 0, 2, 3, 4}, {3, 3});
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("Unique", Attrs({{"axis", int64_t{0}}}), {m}, 4));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 3));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 0, 0, 2, 3, 4));
  EXPECT_THAT(Values<int64_t>(out[1]), ElementsAre(0, 2));
  EXPECT_THAT(Values<int64_t>(out[2]), ElementsAre(0, 0, 1));
  EXPECT_THAT(Values<int64_t>(out[3]), ElementsAre(2, 1));
}

TEST(NonMaxSuppressionTest, OnnxExample) {
  // ONNX nonmaxsuppression_suppress_by_IOU.
  Tensor boxes = F({0.0, 0.0,  1.0, 1.0,  0.0, 0.1,  1.0, 1.1,  0.0, -0.1,  1.0, 0.9,
                    0.0, 10.0, 1.0, 11.0, 0.0, 10.1, 1.0, 11.1, 0.0, 100.0, 1.0, 101.0},
                   {1, 6, 4});
  Tensor scores = F({0.9, 0.75, 0.6, 0.95, 0.5, 0.3}, {1, 1, 6});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out,
      RunOp("NonMaxSuppression", {}, {boxes, scores, I({3}, {1}), F({0.5}, {1}), F({0.0}, {1})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(3, 3));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(0, 0, 3, 0, 0, 0, 0, 0, 5));
  // Score threshold 0.4 and center-point boxes (same boxes in center form).
  Tensor centers = F({0.5, 0.5,  1.0, 1.0, 0.5, 0.6,  1.0, 1.0, 0.5, 0.4,   1.0, 1.0,
                      0.5, 10.5, 1.0, 1.0, 0.5, 10.6, 1.0, 1.0, 0.5, 100.5, 1.0, 1.0},
                     {1, 6, 4});
  NIMBLE_ASSERT_OK_AND_ASSIGN(out,
                              RunOp("NonMaxSuppression", Attrs({{"center_point_box", int64_t{1}}}),
                                    {centers, scores, I({3}, {1}), F({0.5}, {1}), F({0.4}, {1})}));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(0, 0, 3, 0, 0, 0));
  // No max_output_boxes_per_class: nothing selected.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("NonMaxSuppression", {}, {boxes, scores}));
  EXPECT_THAT(out[0].shape(), ElementsAre(0, 3));
}

}  // namespace
}  // namespace nimble::vm
