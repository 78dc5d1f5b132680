// GCC 12 reports a bogus -Wrestrict inside std::string (PR 105329) in inlined string building.
#pragma GCC diagnostic ignored "-Wrestrict"

#include "server/model_manager.h"

#include <filesystem>
#include <future>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/test_models.h"

namespace nimble::server {
namespace {

using ::nimble::testing::IsOk;
using ::nimble::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class ModelManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ::testing::TempDir() + "/nimble_model_manager_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_);
    repo_ = std::make_unique<ModelRepository>(root_);
    cache_ = std::make_unique<ExecutableCache>(ExecutableCache::Options{}, registry_);
    manager_ = std::make_unique<ModelManager>(repo_.get(), cache_.get(), ModelManager::Options{});
  }

  absl::Status LoadAndWait(const std::string& model, ModelUpload upload = {}) {
    std::promise<absl::Status> done;
    manager_->Load(model, std::move(upload), [&](absl::Status s) { done.set_value(s); });
    return done.get_future().get();
  }

  static ModelUpload Files(std::map<std::string, std::string> files) {
    ModelUpload upload;
    upload.files = std::move(files);
    return upload;
  }

  // Runs `model` on x = [[1, 2, 3, 4]] and returns y.
  absl::StatusOr<std::vector<float>> Run(const std::string& model, const std::string& version) {
    NIMBLE_ASSIGN_OR_RETURN(auto instance, manager_->Get(model, version));
    std::vector<float> x = {1, 2, 3, 4};
    NIMBLE_ASSIGN_OR_RETURN(auto outputs,
                            instance->RunAndWait({vm::Tensor::FromVector<float>(x, {1, 4})}));
    const float* y = outputs[0].data<float>();
    return std::vector<float>(y, y + 4);
  }

  std::string root_;
  prometheus::Registry registry_;
  std::unique_ptr<ModelRepository> repo_;
  std::unique_ptr<ExecutableCache> cache_;
  std::unique_ptr<ModelManager> manager_;
};

TEST_F(ModelManagerTest, LoadsEveryModelAtStartWithVersions) {
  ASSERT_THAT(repo_->WriteModel("m", std::nullopt,
                                {{"file:1/model.onnx", testing::ElementwiseModel("Add")},
                                 {"file:2/model.onnx", testing::ElementwiseModel("Mul")}}),
              IsOk());
  std::promise<void> all;
  manager_->LoadAll([&] { all.set_value(); });
  all.get_future().get();
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto latest, Run("m", ""));
  EXPECT_EQ(latest, (std::vector<float>{1, 4, 9, 16}));  // version 2 (Mul) by default
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto v1, Run("m", "1"));
  EXPECT_EQ(v1, (std::vector<float>{2, 4, 6, 8}));
  EXPECT_THAT(manager_->Get("m", "3"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no version 3")));
  EXPECT_THAT(manager_->Get("m", "x"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(manager_->Get("nope", ""), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(manager_->ReadyVersions("m"), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(cache_->compilations(), 2);
}

TEST_F(ModelManagerTest, CompileFailureIsUnavailableWithTheCompilersMessage) {
  ASSERT_THAT(LoadAndWait("good", Files({{"file:1/model.onnx", testing::ElementwiseModel("Add")}})),
              IsOk());
  absl::Status failed =
      LoadAndWait("broken", Files({{"file:1/model.onnx", testing::ElementwiseModel("NoSuchOp")}}));
  EXPECT_THAT(failed, StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("NoSuchOp"))) << failed;
  EXPECT_THAT(manager_->Get("broken", ""),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("NoSuchOp")));
  bool listed = false;
  for (const ModelIndexEntry& e : manager_->Index()) {
    if (e.name != "broken") continue;
    listed = true;
    EXPECT_EQ(e.state, VersionState::kUnavailable);
    EXPECT_THAT(e.reason, HasSubstr("NoSuchOp"));
  }
  EXPECT_TRUE(listed);
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto y, Run("good", ""));  // the other model still serves
  EXPECT_EQ(y[3], 8);
}

TEST_F(ModelManagerTest, ADeclaredWarmUpMustSucceedOnEveryInstance) {
  ModelUpload upload = Files({{"file:1/model.onnx", testing::ElementwiseModel("Add")}});
  upload.config_json =
      R"({"instance_groups": {"cpu": {"count": 3, "threads": 1}},
          "warmup": [{"inputs": {"x": {"dims": [2, 4]}}}]})";
  ASSERT_THAT(LoadAndWait("good", upload), IsOk());
  upload.config_json = R"({"warmup": [{"inputs": {"x": {"dims": [2, 5]}}}]})";
  EXPECT_THAT(LoadAndWait("bad", upload),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("warm-up run 0")));
  EXPECT_THAT(manager_->Get("bad", "1"),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("warm-up run 0")));
}

TEST_F(ModelManagerTest, BucketsServeGenericFirstThenSpecializedAndRestartUsesTheCache) {
  const std::string cache_dir = root_ + "_cache";
  std::filesystem::remove_all(cache_dir);
  cache_ =
      std::make_unique<ExecutableCache>(ExecutableCache::Options{cache_dir, 1 << 30, 0}, registry_);
  manager_ = std::make_unique<ModelManager>(repo_.get(), cache_.get(), ModelManager::Options{});
  ModelUpload upload = Files({{"file:1/model.onnx", testing::ElementwiseModel("Add")}});
  upload.config_json = R"({"buckets": {"n": {"bounds": [2, 4]}}})";
  ASSERT_THAT(LoadAndWait("m", upload), IsOk());
  // READY at once on the generic variant; the specialized executable replaces it when compiled.
  auto variants = [&] {
    auto instance = manager_->Get("m", "");
    return instance.ok() ? (*instance)->executable()->variants.size() : size_t{0};
  };
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (variants() != 3 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_EQ(variants(), 3u);  // n=2, n=4 and the generic one
  EXPECT_EQ(cache_->compilations(), 2);
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto y, Run("m", ""));
  EXPECT_EQ(y, (std::vector<float>{2, 4, 6, 8}));

  // A restart finds the specialized executable on disk: no compilation, no generic step.
  manager_.reset();
  prometheus::Registry registry;
  cache_ =
      std::make_unique<ExecutableCache>(ExecutableCache::Options{cache_dir, 1 << 30, 0}, registry);
  manager_ = std::make_unique<ModelManager>(repo_.get(), cache_.get(), ModelManager::Options{});
  ASSERT_THAT(LoadAndWait("m"), IsOk());
  EXPECT_EQ(variants(), 3u);
  EXPECT_EQ(cache_->compilations(), 0);
}

TEST_F(ModelManagerTest, ARejectedUploadLeavesNoTrace) {
  EXPECT_THAT(LoadAndWait("new", Files({{"file:1/model.onnx", "not onnx"}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an ONNX model")));
  EXPECT_THAT(manager_->Get("new", ""), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_TRUE(manager_->Index().empty());
  ModelUpload bad_config;
  bad_config.config_json = "{";
  EXPECT_THAT(LoadAndWait("never", bad_config), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(LoadAndWait("never"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_TRUE(manager_->Index().empty());
}

TEST_F(ModelManagerTest, ReloadSwapsVersionsAndUnloadRefusesNewWork) {
  ASSERT_THAT(LoadAndWait("m", Files({{"file:1/model.onnx", testing::ElementwiseModel("Add")}})),
              IsOk());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto old_instance, manager_->Get("m", "1"));
  ASSERT_THAT(LoadAndWait("m", Files({{"file:1/model.onnx", testing::ElementwiseModel("Mul")}})),
              IsOk());
  EXPECT_TRUE(old_instance->replaced());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto y, Run("m", "1"));
  EXPECT_EQ(y, (std::vector<float>{1, 4, 9, 16}));

  // A config-only load checks the config before writing it.
  ModelUpload bad_config;
  bad_config.config_json = R"({"max_batch_size": -1})";
  EXPECT_THAT(LoadAndWait("m", bad_config),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_batch_size")));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto still, Run("m", "1"));
  EXPECT_EQ(still[0], 1);

  NIMBLE_ASSERT_OK_AND_ASSIGN(auto instance, manager_->Get("m", ""));
  ASSERT_THAT(manager_->Unload("m"), IsOk());
  EXPECT_THAT(manager_->Get("m", ""),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("'m' is unloaded")));
  EXPECT_THAT(instance->RunAndWait({}), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(manager_->Unload("never"), StatusIs(absl::StatusCode::kNotFound));
  // Loading again brings it back (from the in-memory executable cache).
  ASSERT_THAT(LoadAndWait("m"), IsOk());
  EXPECT_THAT(Run("m", ""), IsOk());
  EXPECT_EQ(cache_->compilations(), 2);
}

TEST_F(ModelManagerTest, RequestsWhileLoadingAreUnavailableAndUnloadDiscardsTheLoad) {
  std::promise<void> started, release;
  std::shared_future<void> released = release.get_future().share();
  ModelManager::Options options;
  options.on_load_start = [&](const std::string&) {
    started.set_value();
    released.wait();
  };
  manager_ = std::make_unique<ModelManager>(repo_.get(), cache_.get(), options);
  std::promise<absl::Status> done;
  manager_->Load("m", Files({{"file:1/model.onnx", testing::ElementwiseModel("Add")}}),
                 [&](absl::Status s) { done.set_value(s); });
  started.get_future().wait();
  EXPECT_THAT(manager_->Get("m", ""),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("model 'm' is loading")));
  const auto index = manager_->Index();
  ASSERT_EQ(index.size(), 1u);
  EXPECT_EQ(index[0].state, VersionState::kLoading);
  ASSERT_THAT(manager_->Unload("m"), IsOk());
  release.set_value();
  EXPECT_THAT(done.get_future().get(),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("unloaded or reloaded")));
  EXPECT_THAT(manager_->Get("m", ""),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("is unloaded")));
  manager_ = std::make_unique<ModelManager>(repo_.get(), cache_.get(), ModelManager::Options{});
  ASSERT_THAT(LoadAndWait("m"), IsOk());  // the upload itself was written
  EXPECT_THAT(manager_->Get("m", ""), IsOk());
}

TEST_F(ModelManagerTest, ReloadFinishesEveryRequestTheOldVersionAccepted) {
  ASSERT_THAT(LoadAndWait("m", Files({{"file:1/model.onnx", testing::ElementwiseModel("Add")}})),
              IsOk());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto old_instance, manager_->Get("m", ""));
  constexpr int kJobs = 200;
  std::atomic<int> ok{0}, failed{0};
  std::promise<void> all_done;
  std::atomic<int> remaining{kJobs};
  const std::vector<float> x = {1, 2, 3, 4};
  for (int i = 0; i < kJobs; ++i) {
    InferJob job;
    job.inputs = {vm::Tensor::FromVector<float>(x, {1, 4})};
    job.enqueued = Clock::now();
    job.done = [&](absl::StatusOr<std::vector<vm::Tensor>> result, const JobTiming&) {
      (result.ok() && (*result)[0].data<float>()[3] == 8 ? ok : failed).fetch_add(1);
      if (remaining.fetch_sub(1) == 1) all_done.set_value();
    };
    ASSERT_THAT(old_instance->Submit(std::move(job)), IsOk());
  }
  // The reload swaps while (most of) those are still queued on the old instance.
  ASSERT_THAT(LoadAndWait("m", Files({{"file:1/model.onnx", testing::ElementwiseModel("Mul")}})),
              IsOk());
  all_done.get_future().wait();
  EXPECT_EQ(ok.load(), kJobs);
  EXPECT_EQ(failed.load(), 0);
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto y, Run("m", ""));
  EXPECT_EQ(y[3], 16);
}

TEST_F(ModelManagerTest, QueueBoundPrioritiesDeadlinesAndCancellation) {
  ModelUpload upload = Files({{"file:1/model.onnx", testing::ElementwiseModel("Add")}});
  upload.config_json = R"({"priority_levels": 2, "max_queue_size": 3})";
  ASSERT_THAT(LoadAndWait("m", upload), IsOk());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto instance, manager_->Get("m", ""));
  const std::vector<float> x = {1, 2, 3, 4};
  std::mutex mu;
  std::vector<std::string> order;  // completion order by job name
  auto make_job = [&](const std::string& name, uint32_t priority) {
    InferJob job;
    job.inputs = {vm::Tensor::FromVector<float>(x, {1, 4})};
    job.priority = priority;
    job.enqueued = Clock::now();
    job.done = [&, name](absl::StatusOr<std::vector<vm::Tensor>> result, const JobTiming&) {
      std::lock_guard<std::mutex> lock(mu);
      order.push_back(absl::StrCat(name, ":", absl::StatusCodeToString(result.status().code())));
    };
    return job;
  };
  // Keep the one instance busy: its job's completion waits for `release`.
  std::promise<void> running, release;
  std::shared_future<void> released = release.get_future().share();
  InferJob blocker = make_job("blocker", 1);
  blocker.done = [&](absl::StatusOr<std::vector<vm::Tensor>>, const JobTiming&) {
    running.set_value();
    released.wait();
  };
  ASSERT_THAT(instance->Submit(std::move(blocker)), IsOk());
  running.get_future().wait();

  InferJob bad_priority = make_job("bad", 3);
  EXPECT_THAT(instance->Submit(std::move(bad_priority)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1..2")));
  ASSERT_THAT(instance->Submit(make_job("low", 2)), IsOk());
  InferJob expired = make_job("expired", 1);
  expired.deadline = Clock::now() - std::chrono::milliseconds(1);
  ASSERT_THAT(instance->Submit(std::move(expired)), IsOk());
  InferJob cancelled = make_job("cancelled", 2);
  cancelled.cancelled = std::make_shared<std::atomic<bool>>(true);
  ASSERT_THAT(instance->Submit(std::move(cancelled)), IsOk());
  // The queue is full (3), but the cancelled request leaves it to make room (answered CANCELLED).
  ASSERT_THAT(instance->Submit(make_job("room", 1)), IsOk());
  EXPECT_THAT(instance->Submit(make_job("over", 1)),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("queue is full")));
  EXPECT_EQ(instance->pending(), 3);
  release.set_value();
  // Stop() runs what is queued (priority 1 first, oldest first), then joins.
  instance->Stop();
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_THAT(order,
              ElementsAre("cancelled:CANCELLED", "expired:DEADLINE_EXCEEDED", "room:OK", "low:OK"));
}

TEST_F(ModelManagerTest, AGpuGroupOnAMissingDeviceFailsTheLoadWithWhy) {
  ModelUpload upload = Files({{"file:1/model.onnx", testing::ElementwiseModel("Add")}});
  // cuda:99 exists nowhere: without the CUDA backend, without a GPU or with fewer GPUs the
  // load fails and says which.
  upload.config_json = R"({"instance_groups": {"gpu": {"devices": [99]}}})";
  absl::Status status = LoadAndWait("m", upload);
  EXPECT_THAT(status,
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("instance_groups.gpu")));
  EXPECT_THAT(std::string(status.message()),
              ::testing::AnyOf(HasSubstr("no CUDA backend"), HasSubstr("no GPU is visible"),
                               HasSubstr("cuda:99 does not exist")));
  EXPECT_THAT(manager_->Get("m", ""), StatusIs(absl::StatusCode::kUnavailable));
  // The server keeps serving others.
  ASSERT_THAT(LoadAndWait("ok", Files({{"file:1/model.onnx", testing::ElementwiseModel("Add")}})),
              IsOk());
  EXPECT_THAT(Run("ok", ""), IsOk());
  // A device listed twice is a config error.
  upload.config_json = R"({"instance_groups": {"gpu": {"devices": [0, 0]}}})";
  EXPECT_THAT(LoadAndWait("m", upload),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("listed twice")));
}

}  // namespace
}  // namespace nimble::server
