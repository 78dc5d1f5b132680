// One loaded version of a model: its executable, resolved config, statistics and execution
// instances. Each instance is a thread with its own VirtualMachine (a VM runs one call at a
// time) and its own TBB task_arena of the configured thread count, so kernels' TBB loops of
// concurrent calls do not oversubscribe the cores.
//
// Requests wait in a bounded queue per priority level in front of the instances. This queue is
// where the dynamic batcher plugs in: it would take jobs of one (model, bucket) from here,
// pad and concatenate them, and hand one job to an instance (see Submit / NextJob).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "oneapi/tbb/task_arena.h"
#include "server/model_config.h"
#include "server/model_stats.h"
#include "vm/executable.h"
#include "vm/runtime/tensor.h"
#include "vm/virtual_machine.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
}  // namespace prometheus

namespace nimble::server {

// Handles of the inference service's metric series for one loaded version, looked up once
// instead of per request (prometheus-cpp's Family::Add locks and hashes the labels).
struct InstanceMetrics {
  prometheus::Counter* ok = nullptr;
  prometheus::Counter* inferences = nullptr;  // batch sizes summed
  prometheus::Counter* executions = nullptr;  // model runs (inferences / executions = avg batch)
  prometheus::Gauge* pending = nullptr;
  prometheus::Histogram* queue = nullptr;
  prometheus::Histogram* compute_input = nullptr;
  prometheus::Histogram* compute_infer = nullptr;
  prometheus::Histogram* compute_output = nullptr;
};

using Clock = std::chrono::steady_clock;

struct InferJob {
  std::vector<vm::Tensor> inputs;  // in the executable's input order, validated
  uint32_t priority = 0;           // 1 = highest; 0 = the model's default
  Clock::time_point enqueued;
  Clock::time_point deadline = Clock::time_point::max();
  // Set when the client went away: the job is dropped instead of run.
  std::shared_ptr<std::atomic<bool>> cancelled;
  // Called once on an instance thread with the outputs (in the executable's order) or the error,
  // and the queue and infer times.
  std::function<void(absl::StatusOr<std::vector<vm::Tensor>>, uint64_t queue_ns, uint64_t infer_ns)>
      done;
};

// Thread-safe: Submit from any thread; Stop once (by the model manager).
class ModelInstance {
 public:
  static absl::StatusOr<std::shared_ptr<ModelInstance>> Create(
      std::string name, int64_t version, std::shared_ptr<const vm::Executable> executable,
      ModelConfigFile config);
  ~ModelInstance();

  const std::string& name() const { return name_; }
  int64_t version() const { return version_; }
  const std::shared_ptr<const vm::Executable>& executable() const { return executable_; }
  const ModelConfigFile& config() const { return config_; }
  ModelStats& stats() { return stats_; }
  const std::shared_ptr<ModelStats>& shared_stats() const { return stats_ptr_; }

  // Queues a job. kUnavailable once the version is being unloaded or replaced,
  // kResourceExhausted when the queue is at max_queue_size, kInvalidArgument for a priority
  // outside 1..priority_levels. On error `job` is left as it was and `job.done` is not called.
  absl::Status Submit(InferJob&& job);

  // Runs one call synchronously through the queue (warm-up). Not for RPC threads.
  absl::StatusOr<std::vector<vm::Tensor>> RunAndWait(std::vector<vm::Tensor> inputs);

  // Waits until every instance thread has run the warm-up on its own VM before taking jobs:
  // the config's runs, or one with every dynamic dim at 1 (a failure of that default run is
  // only logged: zeros may not be valid data for every model). The first failure, if any.
  absl::Status WarmUp();

  // Stops taking jobs; with `replaced` true a new version took over (callers retry on that one).
  void StopAccepting(bool replaced);
  bool replaced() const { return replaced_.load(std::memory_order_acquire); }

  // StopAccepting, runs what is queued, joins the instance threads. Idempotent.
  void Stop();

  int64_t pending() const;

  // The metric handles, made by `make` on first use.
  const InstanceMetrics& metrics(const std::function<InstanceMetrics()>& make) {
    std::call_once(metrics_once_, [&] { metrics_ = make(); });
    return metrics_;
  }

 private:
  ModelInstance(std::string name, int64_t version, std::shared_ptr<const vm::Executable> exe,
                ModelConfigFile config);
  void Worker(int index);
  absl::Status WarmUpOn(vm::VirtualMachine& machine, tbb::task_arena& arena);
  // Blocks until a job is available or the instance stops with an empty queue (false).
  bool NextJob(InferJob* job);

  const std::string name_;
  const int64_t version_;
  const std::shared_ptr<const vm::Executable> executable_;
  const ModelConfigFile config_;
  std::shared_ptr<ModelStats> stats_ptr_;
  ModelStats& stats_;

  mutable std::mutex mu_;  // guards queues_, queued_, accepting_, stopping_, warmed_, warm_status_
  std::condition_variable cv_;
  std::condition_variable cv_warm_;
  int warmed_ = 0;  // instance threads done with their warm-up
  absl::Status warm_status_;
  std::vector<std::deque<InferJob>> queues_;  // per priority level, highest first
  int64_t queued_ = 0;
  bool accepting_ = true;
  bool stopping_ = false;
  std::atomic<bool> replaced_{false};
  std::vector<std::thread> workers_;
  std::once_flag stop_once_;
  std::once_flag metrics_once_;
  InstanceMetrics metrics_;  // written once under metrics_once_
};

}  // namespace nimble::server
