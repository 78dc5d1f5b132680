// One loaded version of a model: its executable, resolved config, statistics and execution
// instances. Each instance is a thread with its own VirtualMachine (a VM runs one call at a
// time) and its own TBB task_arena of the configured thread count, so kernels' TBB loops of
// concurrent calls do not oversubscribe the cores.
//
// Requests wait in bounded queues in front of the instances: one per batch key (the shape
// bucket, see batcher.h) with a deque per priority level. An idle instance takes the queue whose
// oldest highest-priority request is first in line among those ready to run — full
// (max_batch_size reached), waited max_queue_delay_us, or batching off — pads and concatenates
// up to max_batch_size of its requests into one run, and splits the outputs back.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "oneapi/tbb/task_arena.h"
#include "server/batcher.h"
#include "server/model_config.h"
#include "server/model_stats.h"
#include "vm/executable.h"
#include "vm/runtime/allocator.h"
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
  prometheus::Gauge* pending = nullptr;
};

// The series of one (version, shape bucket).
struct BucketMetrics {
  prometheus::Counter* inferences = nullptr;  // batch sizes summed
  prometheus::Counter* executions = nullptr;  // model runs (inferences / executions = avg batch)
  prometheus::Histogram* queue = nullptr;
  prometheus::Histogram* compute_input = nullptr;
  prometheus::Histogram* compute_infer = nullptr;
  prometheus::Histogram* compute_output = nullptr;
  prometheus::Histogram* total = nullptr;
};

using Clock = std::chrono::steady_clock;

// Where some of a version's instance threads run: the executable compiled for `device` (cpu,
// or cuda:N with compute on that GPU), `instances` threads each running one call at a time
// (each with its own VM; on a GPU its own CUDA stream), `threads` CPU threads per call.
struct ExecutionTarget {
  std::shared_ptr<const vm::Executable> executable;
  vm::Device device = vm::kCpu;
  int instances = 1;
  int threads = 1;
  bool device_graphs = false;  // GPU: CUDA graphs for specialized variants (own stream)
};

// What an instance reports with each job's result.
struct JobTiming {
  uint64_t queue_ns = 0;  // accepted -> picked by an instance
  uint64_t infer_ns = 0;  // the run, with the batch's padding and splitting
  // Batch size of the model run the request was part of (sum of the requests' batch dims);
  // 0 when it was not run (cancelled, expired).
  int64_t executed_batch = 0;
  // True for exactly one request of each run: that one counts the execution.
  bool counts_execution = false;
};

struct InferJob {
  std::vector<vm::Tensor> inputs;  // in the executable's input order, validated
  uint32_t priority = 0;           // 1 = highest; 0 = the model's default
  Clock::time_point enqueued;
  Clock::time_point deadline = Clock::time_point::max();
  // Set when the client went away: the job is dropped instead of run.
  std::shared_ptr<std::atomic<bool>> cancelled;
  // The batch key; Submit fills it in when `classified` is false.
  BatchKey key;
  bool classified = false;
  // Called once on an instance thread with the outputs (in the executable's order) or the error.
  std::function<void(absl::StatusOr<std::vector<vm::Tensor>>, const JobTiming&)> done;
};

// Thread-safe: Submit from any thread; Stop once (by the model manager).
class ModelInstance {
 public:
  // Starts the instance threads of every target (all compiled from the same model: the first
  // one's signature is the version's). All targets take jobs from the same queues, so a free
  // instance on any device takes the next batch (balance by queue depth).
  static absl::StatusOr<std::shared_ptr<ModelInstance>> Create(std::string name, int64_t version,
                                                               std::vector<ExecutionTarget> targets,
                                                               ModelConfigFile config);
  // One CPU target with the config's instance count and threads (tests).
  static absl::StatusOr<std::shared_ptr<ModelInstance>> Create(
      std::string name, int64_t version, std::shared_ptr<const vm::Executable> executable,
      ModelConfigFile config);
  ~ModelInstance();

  const std::string& name() const { return name_; }
  int64_t version() const { return version_; }
  const std::shared_ptr<const vm::Executable>& executable() const { return executable_; }
  const ModelConfigFile& config() const { return config_; }
  ModelStats& stats() { return stats_; }
  const BatchPlan& batch_plan() const { return plan_; }
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

  // Memory this version holds per device ("cpu", "cuda:0", ...): on the host its executables'
  // constants and what its instances' allocator has reserved (in use + cached for reuse); on a
  // GPU the executable's constants (uploaded once per device) and its instances' live
  // allocations.
  std::vector<std::pair<std::string, int64_t>> memory_bytes() const;
  // Seconds its instance threads spent running calls, per device.
  std::vector<std::pair<std::string, double>> busy_seconds() const;
  const std::vector<ExecutionTarget>& targets() const { return targets_; }

  // The metric handles, made by `make` on first use.
  const InstanceMetrics& metrics(const std::function<InstanceMetrics()>& make) {
    std::call_once(metrics_once_, [&] { metrics_ = make(); });
    return metrics_;
  }
  const BucketMetrics& bucket_metrics(const std::string& bucket,
                                      const std::function<BucketMetrics()>& make) {
    std::lock_guard<std::mutex> lock(bucket_metrics_mu_);
    auto it = bucket_metrics_.find(bucket);
    if (it == bucket_metrics_.end()) it = bucket_metrics_.emplace(bucket, make()).first;
    return it->second;  // std::map: references stay valid
  }

 private:
  // The requests of one batch key, per priority level (highest first).
  struct KeyQueue {
    std::vector<std::deque<InferJob>> levels;
    int64_t jobs = 0;
    int64_t batch = 0;  // sum of the jobs' batch sizes
  };

  ModelInstance(std::string name, int64_t version, std::vector<ExecutionTarget> targets,
                ModelConfigFile config, BatchPlan plan);
  // Runs `batch` (one key) on `machine` and answers every job.
  void RunBatch(std::vector<InferJob>& batch, vm::VirtualMachine& machine, tbb::task_arena& arena,
                int target, int index);
  void Worker(int target, int index);
  absl::Status WarmUpOn(vm::VirtualMachine& machine, tbb::task_arena& arena);
  // Moves the queued jobs whose client cancelled into `purged`. Needs mu_.
  void PurgeCancelled(std::vector<InferJob>* purged);
  // Blocks until a batch is ready or the instance stops with empty queues (false).
  bool NextBatch(std::vector<InferJob>* batch);

  const std::string name_;
  const int64_t version_;
  const std::vector<ExecutionTarget> targets_;
  const std::shared_ptr<const vm::Executable> executable_;  // targets_[0]'s
  int total_instances_ = 0;
  // Per target: device bytes held by its instances' GPU contexts, busy nanoseconds.
  std::unique_ptr<std::atomic<int64_t>[]> device_bytes_;
  std::unique_ptr<std::atomic<int64_t>[]> busy_ns_;
  std::vector<int64_t> constant_bytes_;  // per target: its executable's constants
  const ModelConfigFile config_;
  const BatchPlan plan_;
  const Clock::duration max_delay_;
  // Shared by this version's instance threads, so its memory is its own to report and goes
  // away with it. Declared before workers_: the threads join before it is destroyed.
  std::unique_ptr<vm::CpuAllocator> allocator_;
  std::shared_ptr<ModelStats> stats_ptr_;
  ModelStats& stats_;

  mutable std::mutex mu_;  // guards queues_, queued_, accepting_, stopping_, warmed_, warm_status_
  std::condition_variable cv_;
  std::condition_variable cv_warm_;
  int warmed_ = 0;  // instance threads done with their warm-up
  absl::Status warm_status_;
  std::map<std::vector<int64_t>, KeyQueue> queues_;  // by BatchKey::shape; none empty
  int64_t queued_ = 0;
  bool accepting_ = true;
  bool stopping_ = false;
  std::atomic<bool> replaced_{false};
  std::vector<std::thread> workers_;
  std::once_flag stop_once_;
  std::once_flag metrics_once_;
  InstanceMetrics metrics_;  // written once under metrics_once_
  std::mutex bucket_metrics_mu_;
  std::map<std::string, BucketMetrics> bucket_metrics_;  // guarded by bucket_metrics_mu_
};

}  // namespace nimble::server
