#include "server/batcher.h"

#include <filesystem>
#include <future>
#include <numeric>

#include "base/testing/status_matchers.h"
#include "compiler/driver/compiler.h"
#include "compiler/frontend/onnx/onnx_importer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/model_manager.h"
#include "server/test_models.h"

namespace nimble::server {
namespace {

using ::nimble::testing::IsOk;
using ::nimble::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr char kBatchingConfig[] = R"({
  "max_batch_size": 4,
  "buckets": {"s": {"bounds": [4, 8]}},
  "inputs": [{"name": "x", "paddable_axes": [1], "pad_value": 0.5},
             {"name": "m", "paddable_axes": [1], "pad_value": -1}],
  "outputs": [{"name": "y", "slice_axes": [1]}, {"name": "w", "slice_axes": [1]}]
})";

std::shared_ptr<const vm::Executable> CompileSequenceModel() {
  auto module = compiler::ImportOnnxModelFromBytes(testing::SequenceModel(), "");
  EXPECT_THAT(module, IsOk());
  auto exe = compiler::CompileModule(**module);
  EXPECT_THAT(exe, IsOk());
  return *exe;
}

absl::StatusOr<BatchPlan> Plan(const vm::Executable& exe, const std::string& json) {
  NIMBLE_ASSIGN_OR_RETURN(ModelConfigFile config, ParseModelConfig(json));
  NIMBLE_RETURN_IF_ERROR(ResolveAgainstModel(exe, config));
  return BatchPlan::Create(config, exe);
}

using testing::SequenceRequest;
using testing::Values;

TEST(BatchPlanTest, KeysShareABucketOnlyWherePaddingIsDeclared) {
  auto exe = CompileSequenceModel();
  NIMBLE_ASSERT_OK_AND_ASSIGN(BatchPlan plan, Plan(*exe, kBatchingConfig));
  ASSERT_TRUE(plan.batching());
  const BatchKey a = plan.Classify(SequenceRequest(1, 5, 0));
  const BatchKey b = plan.Classify(SequenceRequest(2, 7, 0));
  const BatchKey c = plan.Classify(SequenceRequest(1, 3, 0));
  const BatchKey d = plan.Classify(SequenceRequest(1, 9, 0));
  EXPECT_EQ(a.shape, b.shape);  // 5 and 7 both pad to the bound 8
  EXPECT_NE(a.shape, c.shape);  // 3 is in the bucket of 4
  EXPECT_EQ(a.bucket, "s=8");
  EXPECT_EQ(c.bucket, "s=4");
  EXPECT_EQ(d.bucket, "s>8");
  EXPECT_EQ(a.batch, 1);
  EXPECT_EQ(b.batch, 2);
  // Past the last bound only equal lengths share a key.
  EXPECT_NE(d.shape, plan.Classify(SequenceRequest(1, 10, 0)).shape);

  // Without paddable axes only identical shapes batch; without buckets the label is generic.
  NIMBLE_ASSERT_OK_AND_ASSIGN(BatchPlan exact, Plan(*exe, R"({"max_batch_size": 4})"));
  EXPECT_NE(exact.Classify(SequenceRequest(1, 5, 0)).shape,
            exact.Classify(SequenceRequest(1, 7, 0)).shape);
  EXPECT_EQ(exact.Classify(SequenceRequest(1, 5, 0)).shape,
            exact.Classify(SequenceRequest(3, 5, 1)).shape);
  EXPECT_EQ(exact.Classify(SequenceRequest(1, 5, 0)).bucket, "generic");

  // Paddable symbols without buckets pad to the next power of two.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      BatchPlan pow2,
      Plan(*exe, R"({"max_batch_size": 4, "inputs": [{"name": "x", "paddable_axes": [1]},
                                                     {"name": "m", "paddable_axes": [1]}]})"));
  EXPECT_EQ(pow2.Classify(SequenceRequest(1, 5, 0)).shape,
            pow2.Classify(SequenceRequest(1, 8, 0)).shape);
  EXPECT_NE(pow2.Classify(SequenceRequest(1, 8, 0)).shape,
            pow2.Classify(SequenceRequest(1, 9, 0)).shape);
}

TEST(BatchPlanTest, CombinePadsWithThePadValueAndSplitCutsBack) {
  auto exe = CompileSequenceModel();
  NIMBLE_ASSERT_OK_AND_ASSIGN(BatchPlan plan, Plan(*exe, kBatchingConfig));
  const std::vector<vm::Tensor> r0 = SequenceRequest(1, 2, 10);
  const std::vector<vm::Tensor> r1 = SequenceRequest(2, 3, 100);
  const std::vector<const std::vector<vm::Tensor>*> requests = {&r0, &r1};
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::vector<vm::Tensor> combined, plan.Combine(requests));
  ASSERT_EQ(combined.size(), 2u);
  EXPECT_THAT(combined[0].shape(), ElementsAre(3, 3, 4));
  EXPECT_THAT(combined[1].shape(), ElementsAre(3, 3));
  // m: request 0's row padded with -1, then request 1's two rows.
  EXPECT_THAT(Values<int64_t>(combined[1]), ElementsAre(10, 11, -1, 100, 101, 102, 103, 104, 105));
  const std::vector<float> x = Values<float>(combined[0]);
  EXPECT_THAT(std::vector<float>(x.begin(), x.begin() + 12),
              ElementsAre(10, 11, 12, 13, 14, 15, 16, 17, 0.5, 0.5, 0.5, 0.5));
  EXPECT_EQ(x[12], 100);
  EXPECT_EQ(x.back(), 123);

  // Run the model on the combined batch and split: equal to running each request alone.
  vm::VirtualMachine machine(exe);
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::vector<vm::Tensor> outputs, machine.Run(combined));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto split, plan.Split(outputs, requests));
  ASSERT_EQ(split.size(), 2u);
  for (size_t j = 0; j < 2; ++j) {
    NIMBLE_ASSERT_OK_AND_ASSIGN(std::vector<vm::Tensor> alone, machine.Run(*requests[j]));
    ASSERT_EQ(split[j].size(), 3u);
    EXPECT_THAT(split[j][0].shape(), ElementsAreArray(alone[0].shape()));  // y sliced to s
    EXPECT_THAT(Values<float>(split[j][0]), ElementsAreArray(Values<float>(alone[0])));
    EXPECT_THAT(split[j][2].shape(), ElementsAreArray(alone[2].shape()));  // w sliced to s
    EXPECT_THAT(Values<int64_t>(split[j][2]), ElementsAreArray(Values<int64_t>(alone[2])));
    EXPECT_THAT(split[j][1].shape(), ElementsAre(j == 0 ? 1 : 2, 4));  // z has no seq axis
  }
  // z sums over the padded axis: pad 0.5 adds 0.5 per padded position of request 0.
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::vector<vm::Tensor> alone0, machine.Run(r0));
  EXPECT_FLOAT_EQ(split[0][1].data<float>()[0], alone0[1].data<float>()[0] + 0.5f);

  // An output whose batch dim does not match the combined batch is an internal error.
  std::vector<vm::Tensor> wrong = {vm::Tensor::FromVector<float>({1, 2}, {2, 1})};
  EXPECT_THAT(plan.Split(wrong, requests), StatusIs(absl::StatusCode::kInternal));
}

TEST(BatchPlanTest, RejectsDeclarationsThatCannotWork) {
  auto exe = CompileSequenceModel();
  EXPECT_THAT(Plan(*exe, R"({"inputs": [{"name": "x", "paddable_axes": [1]}]})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_batch_size > 1")));
  EXPECT_THAT(Plan(*exe, R"({"max_batch_size": 2, "inputs": [{"name": "x",
                                                              "paddable_axes": [0]}]})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("batch dim")));
  EXPECT_THAT(Plan(*exe, R"({"max_batch_size": 2, "inputs": [{"name": "x",
                                                              "paddable_axes": [2]}]})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("static dim")));
  EXPECT_THAT(Plan(*exe, R"({"max_batch_size": 2, "inputs": [{"name": "x",
                                                              "paddable_axes": [1]}]})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not on every input")));
  EXPECT_THAT(Plan(*exe, R"({"max_batch_size": 2,
                             "inputs": [{"name": "x", "paddable_axes": [1]},
                                        {"name": "m", "paddable_axes": [1], "pad_value": 0.5}]})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("pad_value 0.5")));
  EXPECT_THAT(Plan(*exe, R"({"max_batch_size": 2, "outputs": [{"name": "y",
                                                               "slice_axes": [1]}]})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("slice axis 1")));
  // The elementwise model's dim 0 is the symbol 'n': it may batch.
  auto module = compiler::ImportOnnxModelFromBytes(testing::ElementwiseModel("Add"), "");
  ASSERT_THAT(module, IsOk());
  auto elementwise = compiler::CompileModule(**module);
  ASSERT_THAT(elementwise, IsOk());
  EXPECT_THAT(Plan(**elementwise, R"({"max_batch_size": 4})"), IsOk());  // dim 0 is 'n'
}

// Through the model manager and the instance's queues: requests of one bucket become one run.
class BatchingInstanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ::testing::TempDir() + "/nimble_batcher_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_);
    repo_ = std::make_unique<ModelRepository>(root_);
    cache_ = std::make_unique<ExecutableCache>(ExecutableCache::Options{}, registry_);
    manager_ = std::make_unique<ModelManager>(repo_.get(), cache_.get(), ModelManager::Options{});
  }

  // Loads the sequence model with `config`. The configs here declare no buckets: with buckets the
  // version would first serve from the generic variant and swap in the specialized one in the
  // background, stopping the instance a test holds. Paddable axes then pad to powers of two.
  absl::StatusOr<std::shared_ptr<ModelInstance>> Load(const std::string& config) {
    ModelUpload upload;
    upload.files = {{"file:1/model.onnx", testing::SequenceModel()}};
    upload.config_json = config;
    std::promise<absl::Status> done;
    manager_->Load("seq", std::move(upload), [&](absl::Status s) { done.set_value(s); });
    NIMBLE_RETURN_IF_ERROR(done.get_future().get());
    return manager_->Get("seq", "");
  }

  std::string root_;
  prometheus::Registry registry_;
  std::unique_ptr<ModelRepository> repo_;
  std::unique_ptr<ExecutableCache> cache_;
  std::unique_ptr<ModelManager> manager_;
};

TEST_F(BatchingInstanceTest, OneBucketsRequestsRunAsOneBatchAndComeBackSliced) {
  // A long delay: the batch runs when it is full (4), not when the delay ends.
  const std::string config = R"({
    "max_batch_size": 4, "max_queue_delay_us": 60000000,
    "inputs": [{"name": "x", "paddable_axes": [1]}, {"name": "m", "paddable_axes": [1]}],
    "outputs": [{"name": "y", "slice_axes": [1]}, {"name": "w", "slice_axes": [1]}]})";
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto instance, Load(config));

  const std::vector<int64_t> lengths = {5, 8, 6, 7};  // all pad to 8: batch 1+1+1+1
  std::vector<std::promise<std::pair<absl::StatusOr<std::vector<vm::Tensor>>, JobTiming>>> done(
      lengths.size());
  for (size_t i = 0; i < lengths.size(); ++i) {
    InferJob job;
    job.inputs = SequenceRequest(1, lengths[i], static_cast<float>(i * 1000));
    job.enqueued = Clock::now();
    job.done = [&, i](absl::StatusOr<std::vector<vm::Tensor>> result, const JobTiming& timing) {
      done[i].set_value({std::move(result), timing});
    };
    ASSERT_THAT(instance->Submit(std::move(job)), IsOk());
  }
  vm::VirtualMachine machine(instance->executable());
  int executions = 0;
  for (size_t i = 0; i < lengths.size(); ++i) {
    auto [result, timing] = done[i].get_future().get();
    ASSERT_THAT(result, IsOk());
    EXPECT_EQ(timing.executed_batch, 4);
    executions += timing.counts_execution ? 1 : 0;
    NIMBLE_ASSERT_OK_AND_ASSIGN(
        auto alone, machine.Run(SequenceRequest(1, lengths[i], static_cast<float>(i * 1000))));
    EXPECT_THAT((*result)[0].shape(), ElementsAre(1, lengths[i], 4));
    EXPECT_THAT(Values<float>((*result)[0]), ElementsAreArray(Values<float>(alone[0])));
    EXPECT_THAT(Values<float>((*result)[1]), ElementsAreArray(Values<float>(alone[1])));
    EXPECT_THAT(Values<int64_t>((*result)[2]), ElementsAreArray(Values<int64_t>(alone[2])));
  }
  EXPECT_EQ(executions, 1);
}

TEST_F(BatchingInstanceTest, DifferentBucketsNeverShareARunAndTheDelayBoundsTheWait) {
  const std::string config = R"({
    "max_batch_size": 8, "max_queue_delay_us": 20000,
    "inputs": [{"name": "x", "paddable_axes": [1]}, {"name": "m", "paddable_axes": [1]}],
    "outputs": [{"name": "y", "slice_axes": [1]}, {"name": "w", "slice_axes": [1]}]})";
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto instance, Load(config));
  const std::vector<int64_t> lengths = {3, 7, 4, 8, 3, 5};  // pad targets 4, 8, 4, 8, 4, 8
  std::vector<std::promise<std::pair<absl::StatusOr<std::vector<vm::Tensor>>, JobTiming>>> done(
      lengths.size());
  for (size_t i = 0; i < lengths.size(); ++i) {
    InferJob job;
    job.inputs = SequenceRequest(1, lengths[i], static_cast<float>(i));
    job.enqueued = Clock::now();
    job.done = [&, i](absl::StatusOr<std::vector<vm::Tensor>> result, const JobTiming& timing) {
      done[i].set_value({std::move(result), timing});
    };
    ASSERT_THAT(instance->Submit(std::move(job)), IsOk());
  }
  // Neither key fills (8); each runs once its oldest request waited 20 ms.
  int64_t batched = 0;
  for (size_t i = 0; i < lengths.size(); ++i) {
    auto [result, timing] = done[i].get_future().get();
    ASSERT_THAT(result, IsOk());
    EXPECT_THAT((*result)[0].shape(), ElementsAre(1, lengths[i], 4));
    EXPECT_LE(timing.executed_batch, 3);
    batched += timing.counts_execution ? timing.executed_batch : 0;
    // The batch's oldest request (the one counting the execution) waited the whole delay.
    if (timing.counts_execution) {
      EXPECT_GE(timing.queue_ns, 20'000'000u);
    }
  }
  EXPECT_EQ(batched, 6);
}

TEST_F(BatchingInstanceTest, ARequestWhoseDeadlineIsCloserThanTheDelayRunsWithoutWaiting) {
  const std::string config = R"({
    "max_batch_size": 8, "max_queue_delay_us": 60000000,
    "inputs": [{"name": "x", "paddable_axes": [1]}, {"name": "m", "paddable_axes": [1]}],
    "outputs": [{"name": "y", "slice_axes": [1]}, {"name": "w", "slice_axes": [1]}]})";
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto instance, Load(config));
  std::promise<absl::Status> done;
  InferJob job;
  job.inputs = SequenceRequest(1, 3, 0);
  job.enqueued = Clock::now();
  job.deadline = job.enqueued + std::chrono::seconds(30);  // half the batching delay
  job.done = [&](absl::StatusOr<std::vector<vm::Tensor>> result, const JobTiming&) {
    done.set_value(result.status());
  };
  ASSERT_THAT(instance->Submit(std::move(job)), IsOk());
  // Waiting the 60 s delay would miss the deadline: it runs at once and succeeds.
  auto future = done.get_future();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  EXPECT_THAT(future.get(), IsOk());
}

}  // namespace
}  // namespace nimble::server
