#include "server/model_instance.h"

#include <algorithm>
#include <cstring>
#include <future>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "oneapi/tbb/task_arena.h"
#include "server/gpu_support.h"
#include "server/kserve_types.h"
#include "spdlog/spdlog.h"
#include "vm/virtual_machine.h"

namespace nimble::server {

ModelInstance::ModelInstance(std::string name, int64_t version,
                             std::vector<ExecutionTarget> targets, ModelConfigFile config,
                             BatchPlan plan)
    : name_(std::move(name)),
      version_(version),
      targets_(std::move(targets)),
      executable_(targets_.front().executable),
      config_(std::move(config)),
      plan_(std::move(plan)),
      max_delay_(std::chrono::microseconds(config_.max_queue_delay_us())),
      allocator_(std::make_unique<vm::CpuAllocator>()),
      stats_ptr_(std::make_shared<ModelStats>()),
      stats_(*stats_ptr_) {
  device_bytes_ = std::make_unique<std::atomic<int64_t>[]>(targets_.size());
  busy_ns_ = std::make_unique<std::atomic<int64_t>[]>(targets_.size());
  for (size_t t = 0; t < targets_.size(); ++t) {
    device_bytes_[t] = 0;
    busy_ns_[t] = 0;
    total_instances_ += targets_[t].instances;
    int64_t constants = 0;
    for (const vm::Tensor& c : targets_[t].executable->constants) {
      constants += static_cast<int64_t>(c.nbytes());
    }
    constant_bytes_.push_back(constants);
  }
}

absl::StatusOr<std::shared_ptr<ModelInstance>> ModelInstance::Create(
    std::string name, int64_t version, std::vector<ExecutionTarget> targets,
    ModelConfigFile config) {
  if (targets.empty() || targets.front().executable == nullptr) {
    return absl::InternalError("a model instance needs at least one compiled target");
  }
  NIMBLE_ASSIGN_OR_RETURN(BatchPlan plan, BatchPlan::Create(config, *targets.front().executable));
  std::shared_ptr<ModelInstance> instance(new ModelInstance(
      std::move(name), version, std::move(targets), std::move(config), std::move(plan)));
  for (size_t t = 0; t < instance->targets_.size(); ++t) {
    for (int i = 0; i < instance->targets_[t].instances; ++i) {
      instance->workers_.emplace_back(&ModelInstance::Worker, instance.get(), static_cast<int>(t),
                                      static_cast<int>(instance->workers_.size()));
    }
  }
  return instance;
}

absl::StatusOr<std::shared_ptr<ModelInstance>> ModelInstance::Create(
    std::string name, int64_t version, std::shared_ptr<const vm::Executable> executable,
    ModelConfigFile config) {
  ExecutionTarget target;
  target.executable = std::move(executable);
  target.instances = CpuInstanceCount(config);
  target.threads = CpuThreadsPerInstance(config);
  std::vector<ExecutionTarget> targets;
  targets.push_back(std::move(target));
  return Create(std::move(name), version, std::move(targets), std::move(config));
}

ModelInstance::~ModelInstance() { Stop(); }

absl::Status ModelInstance::Submit(InferJob&& job) {
  const uint32_t levels = config_.priority_levels();
  uint32_t priority = job.priority;
  if (priority == 0)
    priority = config_.default_priority() != 0 ? config_.default_priority() : (levels + 1) / 2;
  if (levels == 0) {
    priority = 1;
  } else if (priority > levels) {
    return absl::InvalidArgumentError(
        absl::StrCat("priority ", job.priority, " is outside the model's levels 1..", levels));
  }
  std::vector<InferJob> purged;  // answered outside the lock
  absl::Cleanup answer_purged = [&] {
    for (InferJob& p : purged) {
      JobTiming timing;
      timing.queue_ns = static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - p.enqueued).count());
      p.done(absl::CancelledError("the client cancelled the request"), timing);
    }
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_) {
      return absl::UnavailableError(
          absl::StrCat("model '", name_, "' version ", version_,
                       replaced() ? " was replaced by a reload" : " is being unloaded"));
    }
    if (config_.max_queue_size() > 0 && queued_ >= config_.max_queue_size()) {
      // Requests whose clients went away leave the queue before it counts as full.
      PurgeCancelled(&purged);
      if (queued_ >= config_.max_queue_size()) {
        return absl::ResourceExhaustedError(absl::StrCat("model '", name_, "' queue is full (",
                                                         config_.max_queue_size(), " requests)"));
      }
    }
    if (!job.classified) {
      job.key = plan_.Classify(job.inputs);
      job.classified = true;
    }
    KeyQueue& queue = queues_[job.key.shape];
    if (queue.levels.empty()) queue.levels.resize(std::max<uint32_t>(1, levels));
    ++queue.jobs;
    queue.batch += job.key.batch;
    queue.levels[priority - 1].push_back(std::move(job));
    ++queued_;
  }
  // Every waiting instance re-checks: a new request may fill a batch another one waits on.
  if (plan_.batching() && max_delay_.count() > 0) {
    cv_.notify_all();
  } else {
    cv_.notify_one();
  }
  return absl::OkStatus();
}

void ModelInstance::PurgeCancelled(std::vector<InferJob>* purged) {
  for (auto it = queues_.begin(); it != queues_.end();) {
    KeyQueue& q = it->second;
    for (std::deque<InferJob>& level : q.levels) {
      for (auto job = level.begin(); job != level.end();) {
        if (job->cancelled && job->cancelled->load(std::memory_order_acquire)) {
          q.batch -= job->key.batch;
          --q.jobs;
          --queued_;
          purged->push_back(std::move(*job));
          job = level.erase(job);
        } else {
          ++job;
        }
      }
    }
    it = q.jobs == 0 ? queues_.erase(it) : std::next(it);
  }
}

bool ModelInstance::NextBatch(std::vector<InferJob>* batch) {
  batch->clear();
  std::unique_lock<std::mutex> lock(mu_);
  const int64_t max_batch = plan_.batching() ? plan_.max_batch_size() : 1;
  for (;;) {
    if (queued_ == 0) {
      if (stopping_) return false;
      cv_.wait(lock);
      continue;
    }
    // The ready queue whose head is first in line: highest priority, then oldest.
    const Clock::time_point now = Clock::now();
    auto best = queues_.end();
    size_t best_level = 0;
    Clock::time_point best_time = Clock::time_point::max();
    Clock::time_point wake = Clock::time_point::max();
    for (auto it = queues_.begin(); it != queues_.end(); ++it) {
      const KeyQueue& q = it->second;
      size_t level = 0;
      while (q.levels[level].empty()) ++level;
      const InferJob& head = q.levels[level].front();
      const bool ready = max_batch <= 1 || max_delay_.count() == 0 || stopping_ ||
                         q.batch >= max_batch || now >= head.enqueued + max_delay_ ||
                         now + max_delay_ >= head.deadline;  // waiting could miss the deadline
      if (!ready) {
        wake = std::min(wake, std::min(head.enqueued + max_delay_, head.deadline - max_delay_));
        continue;
      }
      if (best == queues_.end() || level < best_level ||
          (level == best_level && head.enqueued < best_time)) {
        best = it;
        best_level = level;
        best_time = head.enqueued;
      }
    }
    if (best == queues_.end()) {
      cv_.wait_until(lock, wake);
      continue;
    }
    KeyQueue& q = best->second;
    int64_t size = 0;
    for (std::deque<InferJob>& level : q.levels) {
      while (!level.empty() && (batch->empty() || size + level.front().key.batch <= max_batch)) {
        size += level.front().key.batch;
        q.batch -= level.front().key.batch;
        --q.jobs;
        --queued_;
        batch->push_back(std::move(level.front()));
        level.pop_front();
      }
    }
    if (q.jobs == 0) queues_.erase(best);
    return true;
  }
}

void ModelInstance::Worker(int target, int index) {
  const ExecutionTarget& t = targets_[target];
  vm::VirtualMachineOptions options;
  options.num_threads = t.threads;
  options.allocators.push_back({vm::kCpu, allocator_.get()});
  std::unique_ptr<GpuContext> gpu;
  absl::Status setup;
  if (t.device.type == vm::DeviceType::kCUDA) {
    absl::StatusOr<std::unique_ptr<GpuContext>> context = GpuContext::Create(t.device.ordinal);
    if (context.ok()) {
      gpu = *std::move(context);
      setup = gpu->Activate();
      if (t.device_graphs) {
        // Graph capture needs the VM's own stream and the allocator it orders on it.
        options.device_graphs = true;
      } else {
        options.allocators.push_back({t.device, gpu->allocator()});
        options.stream = gpu->stream();
      }
    } else {
      setup = context.status();
    }
  }
  vm::VirtualMachine machine(t.executable, options);
  tbb::task_arena arena(t.threads);
  absl::Status warm = setup.ok() ? WarmUpOn(machine, arena) : setup;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (warm_status_.ok() && !warm.ok()) {
      warm_status_ = Annotate(warm, absl::StrCat("instance ", index, " on ", t.device.ToString()));
    }
    ++warmed_;
  }
  cv_warm_.notify_all();
  std::vector<InferJob> batch;
  while (NextBatch(&batch)) {
    if (!setup.ok()) {
      // This instance cannot run (its GPU failed at start): answer with why.
      for (InferJob& job : batch) job.done(setup, JobTiming{});
      batch.clear();
      continue;
    }
    RunBatch(batch, machine, arena, target, index);
    if (gpu) device_bytes_[target].store(gpu->bytes_in_use(), std::memory_order_relaxed);
  }
}

void ModelInstance::RunBatch(std::vector<InferJob>& batch, vm::VirtualMachine& machine,
                             tbb::task_arena& arena, int target, int index) {
  const Clock::time_point start = Clock::now();
  auto queue_ns = [&](const InferJob& job) {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(start - job.enqueued).count());
  };
  // Cancelled and expired requests leave here; the rest run.
  std::vector<InferJob*> live;
  for (InferJob& job : batch) {
    JobTiming timing;
    timing.queue_ns = queue_ns(job);
    if (job.cancelled && job.cancelled->load(std::memory_order_acquire)) {
      job.done(absl::CancelledError("the client cancelled the request"), timing);
    } else if (start > job.deadline) {
      job.done(absl::DeadlineExceededError(absl::StrCat("request timed out after ",
                                                        timing.queue_ns / 1000,
                                                        " us in the queue of model '", name_, "'")),
               timing);
    } else {
      live.push_back(&job);
    }
  }
  if (live.empty()) {
    batch.clear();
    return;
  }
  int64_t executed = 0;
  for (const InferJob* job : live) executed += job->key.batch;
  auto annotate = [&](const absl::Status& status) {
    return Annotate(status, absl::StrCat("model '", name_, "' version ", version_, " (instance ",
                                         index, live.size() > 1 ? ", batched run" : "", ")"));
  };
  std::vector<absl::StatusOr<std::vector<vm::Tensor>>> results;
  if (live.size() == 1) {
    absl::StatusOr<std::vector<vm::Tensor>> result;
    arena.execute([&] { result = machine.Run(live[0]->inputs); });
    if (!result.ok()) result = annotate(result.status());
    results.push_back(std::move(result));
  } else {
    std::vector<const std::vector<vm::Tensor>*> requests;
    for (const InferJob* job : live) requests.push_back(&job->inputs);
    absl::StatusOr<std::vector<std::vector<vm::Tensor>>> split =
        [&]() -> absl::StatusOr<std::vector<std::vector<vm::Tensor>>> {
      NIMBLE_ASSIGN_OR_RETURN(std::vector<vm::Tensor> inputs, plan_.Combine(requests));
      absl::StatusOr<std::vector<vm::Tensor>> outputs;
      arena.execute([&] { outputs = machine.Run(inputs); });
      if (!outputs.ok()) return outputs.status();
      return plan_.Split(*outputs, requests);
    }();
    for (size_t j = 0; j < live.size(); ++j) {
      if (split.ok()) {
        results.push_back(std::move((*split)[j]));
      } else {
        results.push_back(annotate(split.status()));
      }
    }
  }
  const uint64_t infer_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
  busy_ns_[target].fetch_add(static_cast<int64_t>(infer_ns), std::memory_order_relaxed);
  for (size_t j = 0; j < live.size(); ++j) {
    JobTiming timing;
    timing.queue_ns = queue_ns(*live[j]);
    timing.infer_ns = infer_ns;
    timing.executed_batch = executed;
    timing.counts_execution = j == 0;
    live[j]->done(std::move(results[j]), timing);
  }
  batch.clear();
}

absl::StatusOr<std::vector<vm::Tensor>> ModelInstance::RunAndWait(std::vector<vm::Tensor> inputs) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<std::vector<vm::Tensor>>>>();
  auto future = promise->get_future();
  InferJob job;
  job.inputs = std::move(inputs);
  job.enqueued = Clock::now();
  job.done = [promise](absl::StatusOr<std::vector<vm::Tensor>> result, const JobTiming&) {
    promise->set_value(std::move(result));
  };
  NIMBLE_RETURN_IF_ERROR(Submit(std::move(job)));
  return future.get();
}

absl::Status ModelInstance::WarmUpOn(vm::VirtualMachine& machine, tbb::task_arena& arena) {
  auto make_inputs = [&](const config::WarmupRun* run) -> absl::StatusOr<std::vector<vm::Tensor>> {
    std::vector<vm::Tensor> inputs;
    for (const config::TensorConfig& t : config_.inputs()) {
      std::vector<int64_t> shape(t.dims().begin(), t.dims().end());
      for (int64_t& d : shape) d = d < 0 ? 1 : d;
      if (run != nullptr) {
        auto it = run->inputs().find(t.name());
        if (it != run->inputs().end()) {
          shape.assign(it->second.dims().begin(), it->second.dims().end());
        }
      }
      NIMBLE_ASSIGN_OR_RETURN(vm::DType dtype, DTypeFromKServe(t.datatype()));
      NIMBLE_ASSIGN_OR_RETURN(vm::Tensor tensor, vm::Tensor::Empty(dtype, shape));
      if (dtype != vm::DType::kString && tensor.nbytes() > 0) {
        std::memset(tensor.raw_data(), 0, tensor.nbytes());
      }
      inputs.push_back(std::move(tensor));
    }
    return inputs;
  };
  auto run = [&](const std::vector<vm::Tensor>& inputs) {
    absl::Status status;
    arena.execute([&] { status = machine.Run(inputs).status(); });
    return status;
  };
  if (config_.warmup().empty()) {
    NIMBLE_ASSIGN_OR_RETURN(std::vector<vm::Tensor> inputs, make_inputs(nullptr));
    // Pages in the weights and primes this instance's allocator and kernel primitive caches.
    absl::Status status = run(inputs);
    if (!status.ok()) {
      spdlog::warn("model '{}' version {}: default warm-up (zeros, dynamic dims 1) failed: {}",
                   name_, version_, std::string(status.message()));
    }
    return absl::OkStatus();
  }
  for (int i = 0; i < config_.warmup_size(); ++i) {
    NIMBLE_ASSIGN_OR_RETURN(std::vector<vm::Tensor> inputs, make_inputs(&config_.warmup(i)));
    absl::Status status = run(inputs);
    if (!status.ok()) return Annotate(status, absl::StrCat("warm-up run ", i));
  }
  return absl::OkStatus();
}

absl::Status ModelInstance::WarmUp() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_warm_.wait(lock, [&] { return warmed_ == total_instances_; });
  return warm_status_;
}

void ModelInstance::StopAccepting(bool replaced) {
  if (replaced) replaced_.store(true, std::memory_order_release);
  std::lock_guard<std::mutex> lock(mu_);
  accepting_ = false;
}

void ModelInstance::Stop() {
  std::call_once(stop_once_, [&] {
    {
      std::lock_guard<std::mutex> lock(mu_);
      accepting_ = false;
      stopping_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : workers_) t.join();
  });
}

std::vector<std::pair<std::string, int64_t>> ModelInstance::memory_bytes() const {
  const vm::AllocatorStats stats = allocator_->stats();
  std::vector<std::pair<std::string, int64_t>> out;
  int64_t host = stats.in_use_bytes + stats.cached_bytes;
  for (size_t t = 0; t < targets_.size(); ++t) {
    const int64_t constants = constant_bytes_[t];
    if (targets_[t].device.type == vm::DeviceType::kCPU) {
      host += constants;
    } else {
      out.emplace_back(targets_[t].device.ToString(),
                       constants + device_bytes_[t].load(std::memory_order_relaxed));
    }
  }
  out.emplace(out.begin(), "cpu", host);
  return out;
}

std::vector<std::pair<std::string, double>> ModelInstance::busy_seconds() const {
  std::vector<std::pair<std::string, double>> out;
  for (size_t t = 0; t < targets_.size(); ++t) {
    const double seconds = static_cast<double>(busy_ns_[t].load(std::memory_order_relaxed)) * 1e-9;
    const std::string device = targets_[t].device.ToString();
    auto it =
        std::find_if(out.begin(), out.end(), [&](const auto& p) { return p.first == device; });
    if (it == out.end()) {
      out.emplace_back(device, seconds);
    } else {
      it->second += seconds;
    }
  }
  return out;
}

int64_t ModelInstance::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queued_;
}

}  // namespace nimble::server
