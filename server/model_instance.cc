#include "server/model_instance.h"

#include <cstring>
#include <future>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "oneapi/tbb/task_arena.h"
#include "server/kserve_types.h"
#include "spdlog/spdlog.h"
#include "vm/virtual_machine.h"

namespace nimble::server {

ModelInstance::ModelInstance(std::string name, int64_t version,
                             std::shared_ptr<const vm::Executable> exe, ModelConfigFile config)
    : name_(std::move(name)),
      version_(version),
      executable_(std::move(exe)),
      config_(std::move(config)),
      stats_ptr_(std::make_shared<ModelStats>()),
      stats_(*stats_ptr_),
      queues_(std::max<uint32_t>(1, config_.priority_levels())) {}

absl::StatusOr<std::shared_ptr<ModelInstance>> ModelInstance::Create(
    std::string name, int64_t version, std::shared_ptr<const vm::Executable> executable,
    ModelConfigFile config) {
  std::shared_ptr<ModelInstance> instance(
      new ModelInstance(std::move(name), version, std::move(executable), std::move(config)));
  const int count = CpuInstanceCount(instance->config_);
  for (int i = 0; i < count; ++i)
    instance->workers_.emplace_back(&ModelInstance::Worker, instance.get(), i);
  return instance;
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
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_) {
      return absl::UnavailableError(
          absl::StrCat("model '", name_, "' version ", version_,
                       replaced() ? " was replaced by a reload" : " is being unloaded"));
    }
    if (config_.max_queue_size() > 0 && queued_ >= config_.max_queue_size()) {
      return absl::ResourceExhaustedError(absl::StrCat("model '", name_, "' queue is full (",
                                                       config_.max_queue_size(), " requests)"));
    }
    queues_[priority - 1].push_back(std::move(job));
    ++queued_;
  }
  cv_.notify_one();
  return absl::OkStatus();
}

bool ModelInstance::NextJob(InferJob* job) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return queued_ > 0 || stopping_; });
  if (queued_ == 0) return false;
  for (auto& queue : queues_) {
    if (queue.empty()) continue;
    *job = std::move(queue.front());
    queue.pop_front();
    --queued_;
    return true;
  }
  return false;
}

void ModelInstance::Worker(int index) {
  const int threads = CpuThreadsPerInstance(config_);
  vm::VirtualMachineOptions options;
  options.num_threads = threads;
  vm::VirtualMachine machine(executable_, options);
  tbb::task_arena arena(threads);
  absl::Status warm = WarmUpOn(machine, arena);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (warm_status_.ok() && !warm.ok()) {
      warm_status_ = Annotate(warm, absl::StrCat("instance ", index));
    }
    ++warmed_;
  }
  cv_warm_.notify_all();
  InferJob job;
  while (NextJob(&job)) {
    const Clock::time_point start = Clock::now();
    const uint64_t queue_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(start - job.enqueued).count();
    if (job.cancelled && job.cancelled->load(std::memory_order_acquire)) {
      job.done(absl::CancelledError("the client cancelled the request"), queue_ns, 0);
      job = {};
      continue;
    }
    if (start > job.deadline) {
      job.done(absl::DeadlineExceededError(absl::StrCat("request timed out after ", queue_ns / 1000,
                                                        " us in the queue of model '", name_, "'")),
               queue_ns, 0);
      job = {};
      continue;
    }
    absl::StatusOr<std::vector<vm::Tensor>> result;
    arena.execute([&] { result = machine.Run(job.inputs); });
    const uint64_t infer_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
    if (!result.ok()) {
      result = Annotate(result.status(), absl::StrCat("model '", name_, "' version ", version_,
                                                      " (instance ", index, ")"));
    }
    job.done(std::move(result), queue_ns, infer_ns);
    job = {};
  }
}

absl::StatusOr<std::vector<vm::Tensor>> ModelInstance::RunAndWait(std::vector<vm::Tensor> inputs) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<std::vector<vm::Tensor>>>>();
  auto future = promise->get_future();
  InferJob job;
  job.inputs = std::move(inputs);
  job.enqueued = Clock::now();
  job.done = [promise](absl::StatusOr<std::vector<vm::Tensor>> result, uint64_t, uint64_t) {
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
  cv_warm_.wait(lock, [&] { return warmed_ == CpuInstanceCount(config_); });
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

int64_t ModelInstance::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queued_;
}

}  // namespace nimble::server
