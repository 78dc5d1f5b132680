// GPU execution instances (label `cuda`: skipped without a GPU): a model version served by
// instances on cuda:0 with their own streams answers like the CPU executable, under concurrency
// and with padding-batching, and reports its device memory and busy time.
#include <cmath>
#include <filesystem>
#include <future>
#include <numeric>
#include <thread>

#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/gpu_support.h"
#include "server/model_manager.h"
#include "server/test_models.h"
#include "vm/virtual_machine.h"

namespace nimble::server {
namespace {

using ::nimble::testing::IsOk;
using ::nimble::testing::StatusIs;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

using testing::SequenceRequest;
using testing::Values;

class GpuInstanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ::testing::TempDir() + "/nimble_gpu_instance_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_);
    repo_ = std::make_unique<ModelRepository>(root_);
    cache_ = std::make_unique<ExecutableCache>(ExecutableCache::Options{}, registry_);
    manager_ = std::make_unique<ModelManager>(repo_.get(), cache_.get(), ModelManager::Options{});
  }

  absl::StatusOr<std::shared_ptr<ModelInstance>> Load(const std::string& name,
                                                      const std::string& config) {
    ModelUpload upload;
    upload.files = {{"file:1/model.onnx", testing::SequenceModel()}};
    upload.config_json = config;
    std::promise<absl::Status> done;
    manager_->Load(name, std::move(upload), [&](absl::Status s) { done.set_value(s); });
    NIMBLE_RETURN_IF_ERROR(done.get_future().get());
    return manager_->Get(name, "");
  }

  std::string root_;
  prometheus::Registry registry_;
  std::unique_ptr<ModelRepository> repo_;
  std::unique_ptr<ExecutableCache> cache_;
  std::unique_ptr<ModelManager> manager_;
};

TEST_F(GpuInstanceTest, GpuInstancesAnswerLikeTheCpuExecutable) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto gpu,
                              Load("gpu", R"({"max_batch_size": 8, "max_queue_delay_us": 2000,
        "inputs": [{"name": "x", "paddable_axes": [1]}, {"name": "m", "paddable_axes": [1]}],
        "outputs": [{"name": "y", "slice_axes": [1]}, {"name": "w", "slice_axes": [1]}],
        "instance_groups": {"gpu": {"devices": [0], "count": 2}}})"));
  ASSERT_EQ(gpu->targets().size(), 1u);
  EXPECT_EQ(gpu->targets()[0].device.ToString(), "cuda:0");
  EXPECT_EQ(gpu->targets()[0].instances, 2);
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto cpu, Load("cpu", R"({"max_batch_size": 8})"));
  EXPECT_EQ(cpu->targets()[0].device.ToString(), "cpu");

  constexpr int kRequests = 64;
  std::vector<std::promise<absl::StatusOr<std::vector<vm::Tensor>>>> done(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    InferJob job;
    job.inputs = SequenceRequest(1 + i % 2, 1 + (i * 7) % 33, static_cast<float>(i));
    job.enqueued = Clock::now();
    job.done = [&, i](absl::StatusOr<std::vector<vm::Tensor>> result, const JobTiming&) {
      done[i].set_value(std::move(result));
    };
    ASSERT_THAT(gpu->Submit(std::move(job)), IsOk());
  }
  for (int i = 0; i < kRequests; ++i) {
    auto result = done[i].get_future().get();
    ASSERT_THAT(result, IsOk()) << "request " << i;
    NIMBLE_ASSERT_OK_AND_ASSIGN(
        auto expected,
        cpu->RunAndWait(SequenceRequest(1 + i % 2, 1 + (i * 7) % 33, static_cast<float>(i))));
    ASSERT_EQ(result->size(), expected.size());
    EXPECT_THAT((*result)[0].shape(), ElementsAreArray(expected[0].shape()));
    const std::vector<float> got = Values<float>((*result)[0]), want = Values<float>(expected[0]);
    ASSERT_EQ(got.size(), want.size());
    for (size_t k = 0; k < got.size(); ++k) EXPECT_NEAR(got[k], want[k], 1e-4) << i << " " << k;
    EXPECT_THAT(Values<int64_t>((*result)[2]), ElementsAreArray(Values<int64_t>(expected[2])));
  }
  bool has_gpu_memory = false;
  for (const auto& [device, bytes] : gpu->memory_bytes()) {
    if (device == "cuda:0") has_gpu_memory = bytes >= 0;
  }
  EXPECT_TRUE(has_gpu_memory);
  double busy = 0;
  for (const auto& [device, seconds] : gpu->busy_seconds()) {
    if (device == "cuda:0") busy = seconds;
  }
  EXPECT_GT(busy, 0);
}

TEST_F(GpuInstanceTest, AReloadKeepsTheSharedExecutablesDeviceWeightsValid) {
  // The reload reuses the cached executable (and the weights it uploaded) after the first
  // instance, whose stream and allocator uploaded them, has gone.
  const std::string config = R"({"max_batch_size": 4,
      "instance_groups": {"gpu": {"devices": [0]}}})";
  for (int round = 0; round < 3; ++round) {
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto gpu, Load("gpu", config));
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto outputs, gpu->RunAndWait(SequenceRequest(2, 5, 1)));
    EXPECT_FLOAT_EQ(Values<float>(outputs[0])[3], 8.0f) << round;  // y = x + x, x[3] = 4
  }
}

TEST_F(GpuInstanceTest, InstancesOnEveryGpuAnswerLikeOneGpuAndShareTheWork) {
  auto gpus = VisibleGpus();
  ASSERT_THAT(gpus, IsOk());
  if (gpus->size() < 2) GTEST_SKIP() << "needs 2 GPUs; this machine has " << gpus->size();
  // No `devices`: every visible GPU.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto all, Load("all", R"({"max_batch_size": 4, "instance_groups": {"gpu": {}}})"));
  ASSERT_EQ(all->targets().size(), gpus->size());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto one, Load("one", R"({"max_batch_size": 4,
                                 "instance_groups": {"gpu": {"devices": [0]}}})"));
  constexpr int kRequests = 256;
  std::vector<std::promise<absl::StatusOr<std::vector<vm::Tensor>>>> done(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    InferJob job;
    job.inputs = SequenceRequest(1, 1 + i % 40, static_cast<float>(i));
    job.enqueued = Clock::now();
    job.done = [&, i](absl::StatusOr<std::vector<vm::Tensor>> result, const JobTiming&) {
      done[i].set_value(std::move(result));
    };
    ASSERT_THAT(all->Submit(std::move(job)), IsOk());
  }
  for (int i = 0; i < kRequests; ++i) {
    auto result = done[i].get_future().get();
    ASSERT_THAT(result, IsOk()) << "request " << i;
    NIMBLE_ASSERT_OK_AND_ASSIGN(
        auto expected, one->RunAndWait(SequenceRequest(1, 1 + i % 40, static_cast<float>(i))));
    EXPECT_THAT(Values<float>((*result)[0]), ElementsAreArray(Values<float>(expected[0])));
    EXPECT_THAT(Values<float>((*result)[1]), ElementsAreArray(Values<float>(expected[1])));
  }
  // Every device took work from the shared queue.
  for (const auto& [device, seconds] : all->busy_seconds()) EXPECT_GT(seconds, 0) << device;
}

TEST_F(GpuInstanceTest, Fp16WithGraphsStaysCloseToFp32) {
  // Buckets make the specialized variants graphs are captured for. A version is READY on the
  // generic executable first; wait (bounded) until the specialized one has replaced it.
  auto specialized = [&](const std::string& name) -> std::shared_ptr<ModelInstance> {
    for (int i = 0; i < 6000; ++i) {
      auto instance = manager_->Get(name, "");
      if (instance.ok() && (*instance)->executable()->variants.size() > 1) return *instance;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // a background compile
    }
    return nullptr;
  };
  const std::string base = R"({"buckets": {"s": {"bounds": [8, 16]}}, "max_batch_size": 4,
      "instance_groups": {"gpu": {"devices": [0])";
  ASSERT_THAT(Load("fp32", base + "}}}"), IsOk());
  ASSERT_THAT(Load("fp16", base + R"(, "precision": "fp16", "graphs": true}}})"), IsOk());
  auto fp32 = specialized("fp32");
  auto fp16 = specialized("fp16");
  ASSERT_NE(fp32, nullptr);
  ASSERT_NE(fp16, nullptr);
  for (int round = 0; round < 4; ++round) {  // eager, capture, replay, replay
    for (int64_t seq : {8, 16}) {
      NIMBLE_ASSERT_OK_AND_ASSIGN(auto want,
                                  fp32->RunAndWait(SequenceRequest(1, seq, 0.5f * round)));
      NIMBLE_ASSERT_OK_AND_ASSIGN(auto got,
                                  fp16->RunAndWait(SequenceRequest(1, seq, 0.5f * round)));
      const std::vector<float> a = Values<float>(got[0]), b = Values<float>(want[0]);
      ASSERT_EQ(a.size(), b.size());
      for (size_t k = 0; k < a.size(); ++k) {
        EXPECT_NEAR(a[k], b[k], 1e-2 * std::max(1.0f, std::fabs(b[k]))) << round << " " << k;
      }
    }
  }
}

TEST_F(GpuInstanceTest, AMissingDeviceIsAClearError) {
  EXPECT_THAT(Load("m", R"({"instance_groups": {"gpu": {"devices": [0, 63]}}})"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("cuda:63 does not exist")));
}

}  // namespace
}  // namespace nimble::server
