#include "server/model_config.h"

#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nimble::server {
namespace {

using ::nimble::testing::IsOk;
using ::nimble::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

vm::Executable Signature() {
  vm::Executable exe;
  exe.inputs.push_back(
      {"ids", vm::ValueKind::kTensor, vm::DType::kI64, {-1, -1}, {"batch", "seq"}});
  exe.outputs.push_back(
      {"out", vm::ValueKind::kTensor, vm::DType::kF32, {-1, -1, 8}, {"batch", "seq", ""}});
  return exe;
}

TEST(ModelConfigTest, EmptyMeansDefaultsAndResolvesFromTheModel) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(ModelConfigFile config, ParseModelConfig(""));
  ASSERT_THAT(ResolveAgainstModel(Signature(), config), IsOk());
  ASSERT_EQ(config.inputs_size(), 1);
  EXPECT_EQ(config.inputs(0).name(), "ids");
  EXPECT_EQ(config.inputs(0).datatype(), "INT64");
  EXPECT_THAT(config.inputs(0).dims(), ElementsAre(-1, -1));
  EXPECT_EQ(config.outputs(0).datatype(), "FP32");
  EXPECT_EQ(CpuInstanceCount(config), 1);
  EXPECT_GE(CpuThreadsPerInstance(config), 1);
}

TEST(ModelConfigTest, ParsesTheDocumentedSchema) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(ModelConfigFile config, ParseModelConfig(R"({
    "inputs": [{"name": "ids", "dims": [-1, -1], "paddable_axes": [1], "pad_value": 0}],
    "outputs": [{"name": "out", "slice_axes": [1]}],
    "buckets": {"seq": {"max": 100}, "batch": {"bounds": [1, 4, 8]}},
    "max_batch_size": 8, "max_queue_delay_us": 500, "priority_levels": 3,
    "default_priority": 2, "default_timeout_us": 100000, "max_queue_size": 64,
    "instance_groups": {"cpu": {"count": 2, "threads": 3}},
    "warmup": [{"inputs": {"ids": {"dims": [1, 16]}}}]
  })"));
  ASSERT_THAT(ResolveAgainstModel(Signature(), config), IsOk());
  const auto buckets = CompileBuckets(config);
  EXPECT_THAT(buckets.at("seq"), ElementsAre(1, 2, 4, 8, 16, 32, 64, 100));
  EXPECT_THAT(buckets.at("batch"), ElementsAre(1, 4, 8));
  EXPECT_EQ(CpuInstanceCount(config), 2);
  EXPECT_EQ(CpuThreadsPerInstance(config), 3);
  const inference::ModelConfig triton = ToTritonConfig("m", config);
  EXPECT_EQ(triton.max_batch_size(), 8);
  EXPECT_THAT(triton.input(0).dims(), ElementsAre(-1));  // batch dim left out, as in Triton
  EXPECT_EQ(triton.dynamic_batching().default_queue_policy().max_queue_size(), 64u);
  EXPECT_THAT(triton.parameters().at("nimble_config").string_value(), HasSubstr("paddable_axes"));
}

TEST(ModelConfigTest, CanonicalBytesIgnoreKeyOrderAndSpelling) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto a,
      ParseModelConfig(
          R"({"buckets": {"seq": {"max": 64}, "batch": {"max": 4}}, "max_batch_size": 4})"));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto b, ParseModelConfig(
                  R"({"maxBatchSize": 4, "buckets": {"batch": {"max": 4}, "seq": {"max": 64}}})"));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto c, ParseModelConfig(R"({"max_batch_size": 8})"));
  EXPECT_EQ(CanonicalConfigBytes(a), CanonicalConfigBytes(b));
  EXPECT_NE(CanonicalConfigBytes(a), CanonicalConfigBytes(c));
}

TEST(ModelConfigTest, RejectsMalformedJsonUnknownKeysWrongTypesAndBadValues) {
  EXPECT_THAT(ParseModelConfig("{\"max_batch_size\": "),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("config.json")));
  EXPECT_THAT(ParseModelConfig(R"({"max_batch_sise": 4})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_batch_sise")));
  EXPECT_THAT(ParseModelConfig(R"({"max_batch_size": "four"})"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseModelConfig(R"({"instance_groups": {"cpu": {"count": [1]}}})"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseModelConfig(R"({"inputs": [{"name": "x", "dims": [-2]}]})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("-2")));
  EXPECT_THAT(ParseModelConfig(R"({"inputs": [{"name": "x", "datatype": "FLOAT"}]})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("FLOAT")));
  EXPECT_THAT(ParseModelConfig(R"({"buckets": {"seq": {"bounds": [8, 4]}}})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("increasing")));
  EXPECT_THAT(ParseModelConfig(R"({"priority_levels": 2, "default_priority": 3})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("default_priority")));
  EXPECT_THAT(
      ParseModelConfig(R"({"inputs": [{"name": "x", "dims": [-1], "paddable_axes": [1]}]})"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("out of range")));
  EXPECT_THAT(ParseModelConfig(R"({"instance_groups": {"gpu": {"precision": "fp8"}}})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("precision")));
  EXPECT_THAT(ParseModelConfig(R"({"instance_groups": {"gpu": {"precision": "fp16",
                                                               "graphs": true}}})"),
              IsOk());
}

TEST(ModelConfigTest, ResolveRejectsWhatTheModelDoesNotHave) {
  auto resolve = [](const std::string& json) {
    auto config = ParseModelConfig(json);
    if (!config.ok()) return config.status();
    return ResolveAgainstModel(Signature(), *config);
  };
  EXPECT_THAT(resolve(R"({"inputs": [{"name": "tokens"}]})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no input 'tokens'")));
  EXPECT_THAT(resolve(R"({"inputs": [{"name": "ids", "datatype": "INT32"}]})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model's is INT64")));
  EXPECT_THAT(resolve(R"({"outputs": [{"name": "out", "dims": [-1, -1, 9]}]})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model's is 8")));
  EXPECT_THAT(resolve(R"({"buckets": {"len": {"max": 8}}})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no dynamic dim 'len'")));
}

}  // namespace
}  // namespace nimble::server
