#include "loadtest/request_builder.h"

#include <cstring>

#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nimble::load {
namespace {

using ::nimble::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

ModelSpec Bert(int64_t max_batch_size = 4) {
  ModelSpec m;
  m.name = "bert";
  m.inputs = {{"input_ids", "INT64", {-1, -1}},
              {"attention_mask", "INT64", {-1, -1}},
              {"token_type_ids", "INT64", {-1, -1}}};
  m.max_batch_size = max_batch_size;
  return m;
}

std::vector<int64_t> Int64s(const std::string& raw) {
  std::vector<int64_t> v(raw.size() / 8);
  std::memcpy(v.data(), raw.data(), raw.size());
  return v;
}

TEST(ModelSpecTest, FromMetadataAndConfig) {
  inference::ModelMetadataResponse metadata;
  metadata.set_name("bert");
  auto* in = metadata.add_inputs();
  in->set_name("input_ids");
  in->set_datatype("INT64");
  in->add_shape(-1);
  in->add_shape(-1);
  inference::ModelConfigResponse config;
  config.mutable_config()->set_max_batch_size(8);
  NIMBLE_ASSERT_OK_AND_ASSIGN(ModelSpec spec, ModelSpecFromProtos(metadata, &config));
  EXPECT_EQ(spec.max_batch_size, 8);
  ASSERT_EQ(spec.inputs.size(), 1u);
  EXPECT_THAT(spec.inputs[0].dims, ElementsAre(-1, -1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(spec, ModelSpecFromProtos(metadata, nullptr));
  EXPECT_EQ(spec.max_batch_size, 0);
  metadata.clear_inputs();
  EXPECT_THAT(ModelSpecFromProtos(metadata, nullptr).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no inputs")));
}

TEST(RequestBuilderTest, BatchDimOneAndSequenceLengthOnEveryInput) {
  BuilderOptions options;
  options.max_seq_len = 128;
  options.int_max_per_input["token_type_ids"] = 2;
  NIMBLE_ASSERT_OK_AND_ASSIGN(RequestBuilder b, RequestBuilder::Create(Bert(), options));
  inference::ModelInferRequest request;
  b.Build(37, 0, &request);
  EXPECT_EQ(request.model_name(), "bert");
  ASSERT_EQ(request.inputs_size(), 3);
  ASSERT_EQ(request.raw_input_contents_size(), 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_THAT(request.inputs(i).shape(), ElementsAre(1, 37));
    EXPECT_EQ(request.inputs(i).datatype(), "INT64");
    EXPECT_EQ(request.raw_input_contents(i).size(), 37u * 8);
  }
  for (int64_t v : Int64s(request.raw_input_contents(0))) {
    EXPECT_GE(v, 0);
    EXPECT_LT(v, 100);
  }
  for (int64_t v : Int64s(request.raw_input_contents(2))) EXPECT_TRUE(v == 0 || v == 1);
  EXPECT_EQ(b.batch(), 1);
  EXPECT_THAT(b.Describe()[0], ::testing::Pair("input_ids", "INT64[batch=1,seq]"));
}

TEST(RequestBuilderTest, WithoutBatchingEveryDynamicDimIsTheSequence) {
  ModelSpec m;
  m.name = "identity";
  m.inputs = {{"x", "FP32", {-1, 4}}};
  BuilderOptions options;
  options.max_seq_len = 16;
  NIMBLE_ASSERT_OK_AND_ASSIGN(RequestBuilder b, RequestBuilder::Create(m, options));
  inference::ModelInferRequest request;
  b.Build(16, 0, &request);
  EXPECT_THAT(request.inputs(0).shape(), ElementsAre(16, 4));
  ASSERT_EQ(request.raw_input_contents(0).size(), 16u * 4 * 4);
  std::vector<float> values(64);
  std::memcpy(values.data(), request.raw_input_contents(0).data(), 256);
  for (float v : values) {
    EXPECT_GE(v, 0);
    EXPECT_LT(v, 1);
  }
  // --batch forces dim 0 to be a batch dim.
  options.batch = 3;
  NIMBLE_ASSERT_OK_AND_ASSIGN(b, RequestBuilder::Create(m, options));
  EXPECT_THAT(b.Shape(0, 9), ElementsAre(3, 4));
}

TEST(RequestBuilderTest, SeqAxisPicksOneAxisAndOthersGetOne) {
  ModelSpec m;
  m.name = "m";
  m.inputs = {{"a", "FP16", {-1, -1, -1}}, {"b", "BOOL", {-1, 2}}};
  BuilderOptions options;
  options.max_seq_len = 8;
  options.seq_axis = 2;
  NIMBLE_ASSERT_OK_AND_ASSIGN(RequestBuilder b, RequestBuilder::Create(m, options));
  EXPECT_THAT(b.Shape(0, 8), ElementsAre(1, 1, 8));
  EXPECT_THAT(b.Shape(1, 8), ElementsAre(1, 2));
  inference::ModelInferRequest request;
  b.Build(8, 0, &request);
  EXPECT_EQ(request.raw_input_contents(0).size(), 8u * 2);
  EXPECT_EQ(request.raw_input_contents(1).size(), 2u);
  options.seq_axis = 1;
  m.inputs = {{"a", "FP32", {-1, 4}}};
  EXPECT_THAT(RequestBuilder::Create(m, options).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--seq-axis 1")));
}

TEST(RequestBuilderTest, RejectsWhatItCannotBuild) {
  ModelSpec m;
  m.name = "m";
  m.inputs = {{"a", "COMPLEX64", {4}}};
  EXPECT_THAT(RequestBuilder::Create(m, {}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unsupported datatype")));
  BuilderOptions options;
  options.int_max_per_input["nope"] = 2;
  EXPECT_THAT(RequestBuilder::Create(Bert(), options).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no input 'nope'")));
  m.inputs = {{"a", "FP32", {2, 4}}};
  options = {};
  options.batch = 3;
  EXPECT_THAT(RequestBuilder::Create(m, options).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not the batch size 3")));
}

TEST(RequestBuilderTest, ShapesFileGivesShapesAndContents) {
  BuilderOptions options;
  options.max_seq_len = 4;
  options.shapes_json = R"({"data": [
      {"input_ids": {"shape": [1, 3], "content": [[101, 2000, 102]]},
       "attention_mask": {"shape": [1, 3], "content": [1, 1, 0]}},
      {"input_ids": {"shape": [1, 6]}}]})";
  NIMBLE_ASSERT_OK_AND_ASSIGN(RequestBuilder b, RequestBuilder::Create(Bert(), options));
  inference::ModelInferRequest first;
  b.Build(4, 0, &first);
  EXPECT_THAT(first.inputs(0).shape(), ElementsAre(1, 3));
  EXPECT_THAT(Int64s(first.raw_input_contents(0)), ElementsAre(101, 2000, 102));
  EXPECT_THAT(Int64s(first.raw_input_contents(1)), ElementsAre(1, 1, 0));
  EXPECT_THAT(first.inputs(2).shape(), ElementsAre(1, 4));  // not in the entry: drawn length
  inference::ModelInferRequest second;
  b.Build(4, 1, &second);  // a shape without contents: random, longer than --seq-len's max
  EXPECT_THAT(second.inputs(0).shape(), ElementsAre(1, 6));
  EXPECT_EQ(second.raw_input_contents(0).size(), 6u * 8);
  inference::ModelInferRequest third;
  b.Build(2, 2, &third);  // entries repeat
  EXPECT_THAT(Int64s(third.raw_input_contents(0)), ElementsAre(101, 2000, 102));
}

TEST(RequestBuilderTest, ShapesFileErrors) {
  BuilderOptions options;
  auto error = [&](const std::string& json) {
    options.shapes_json = json;
    return RequestBuilder::Create(Bert(), options).status();
  };
  EXPECT_THAT(error("{not json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not valid JSON")));
  EXPECT_THAT(error(R"({"rows": []})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"data\" list")));
  EXPECT_THAT(error(R"({"data": [{"pixels": {"shape": [1, 2]}}]})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a model input")));
  EXPECT_THAT(error(R"({"data": [{"input_ids": {"content": [1]}}]})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs \"shape\"")));
  EXPECT_THAT(error(R"({"data": [{"input_ids": {"shape": [1, 3], "content": [1, 2]}}]})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has 2 elements")));
  EXPECT_THAT(error(R"({"data": [{"input_ids": {"shape": [3], "content": [1, 2, 3]}}]})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank 1")));
  EXPECT_THAT(error(R"({"data": [{"input_ids": {"shape": [1, 1], "content": ["a"]}}]})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("datatype INT64")));
}

}  // namespace
}  // namespace nimble::load
