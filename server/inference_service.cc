#include "server/inference_service.h"

#include <deque>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/infer_codec.h"
#include "server/kserve_types.h"
#include "spdlog/spdlog.h"

namespace nimble::server {
namespace {

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

uint64_t NsSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
}

uint64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The `status` label of nimble_inference_requests_total (deploy/README.md): "success", or the
// code in snake case ("invalid_argument", "resource_exhausted", ...).
std::string StatusLabel(absl::StatusCode code) {
  if (code == absl::StatusCode::kOk) return "success";
  return absl::AsciiStrToLower(absl::StatusCodeToString(code));
}

const std::vector<double>& LatencyBuckets() {
  static const std::vector<double> buckets = {25e-6,  50e-6, 100e-6, 250e-6, 500e-6, 1e-3,
                                              2.5e-3, 5e-3,  10e-3,  25e-3,  50e-3,  0.1,
                                              0.25,   0.5,   1,      2.5,    5,      10};
  return buckets;
}

// Finishes a unary reactor at most once, from whichever thread gets there first (the
// completion callback, or OnCancel when the client goes away).
class Once {
 public:
  Once(grpc::ServerUnaryReactor* reactor, std::function<void(grpc::StatusCode)> count)
      : reactor_(reactor), count_(std::move(count)) {}

  // Runs `fill` (writes the response) and finishes; false if already finished.
  bool Finish(const grpc::Status& status, const std::function<void()>& fill = nullptr) {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return false;
    finished_ = true;
    if (fill && status.ok()) fill();
    count_(status.error_code());
    reactor_->Finish(status);
    return true;
  }

  const std::shared_ptr<std::atomic<bool>>& cancelled() const { return cancelled_; }

 private:
  std::mutex mu_;  // guards finished_ and the call to reactor_->Finish
  bool finished_ = false;
  grpc::ServerUnaryReactor* reactor_;  // valid until OnDone, which follows Finish
  std::function<void(grpc::StatusCode)> count_;
  std::shared_ptr<std::atomic<bool>> cancelled_ = std::make_shared<std::atomic<bool>>(false);
};

// A unary reactor finished later from another thread.
class AsyncReactor final : public grpc::ServerUnaryReactor {
 public:
  explicit AsyncReactor(std::function<void(grpc::StatusCode)> count)
      : once_(std::make_shared<Once>(this, std::move(count))) {}
  void OnCancel() override {
    std::shared_ptr<Once> once = once_;  // alive through Finish whatever OnDone does
    once->cancelled()->store(true, std::memory_order_release);
    once->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled"));
  }
  void OnDone() override { delete this; }
  const std::shared_ptr<Once>& once() const { return once_; }

 private:
  std::shared_ptr<Once> once_;
};

// ModelStreamInfer: every request read is answered by one response (an error goes in
// error_message); the stream ends once the client has half-closed and every answer is written.
class InferStream final : public grpc::ServerBidiReactor<inference::ModelInferRequest,
                                                         inference::ModelStreamInferResponse> {
 public:
  InferStream(InferenceService* service, grpc::CallbackServerContext* context,
              std::function<void(grpc::StatusCode)> count)
      : service_(service), context_(context), count_(std::move(count)) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      std::unique_lock<std::mutex> lock(mu_);
      reads_done_ = true;
      MaybeFinish(lock);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++pending_;
    }
    const std::string id = request_.id();
    const std::string model = request_.model_name();
    const std::string version = request_.model_version();
    service_->Infer(request_, cancelled_, context_->deadline(),
                    [this, id, model, version](const absl::Status& status,
                                               inference::ModelInferResponse* response) {
                      inference::ModelStreamInferResponse out;
                      if (status.ok()) {
                        out.mutable_infer_response()->Swap(response);
                      } else {
                        out.set_error_message(std::string(status.message()));
                        out.mutable_infer_response()->set_id(id);
                        out.mutable_infer_response()->set_model_name(model);
                        out.mutable_infer_response()->set_model_version(version);
                      }
                      Write(std::move(out));
                    });
    StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock<std::mutex> lock(mu_);
    writes_.pop_front();
    if (!ok) write_failed_ = true;
    if (!writes_.empty() && !write_failed_) {
      StartWrite(&writes_.front());
      return;
    }
    writes_.clear();
    writing_ = false;
    MaybeFinish(lock);
  }

  void OnCancel() override { cancelled_->store(true, std::memory_order_release); }
  void OnDone() override { delete this; }

 private:
  void Write(inference::ModelStreamInferResponse response) {
    std::unique_lock<std::mutex> lock(mu_);
    --pending_;
    if (!write_failed_) {
      writes_.push_back(std::move(response));
      if (!writing_) {
        writing_ = true;
        StartWrite(&writes_.front());
        return;
      }
    }
    MaybeFinish(lock);
  }

  // Finishes once every request is answered and written. Unlocks `lock` first: OnDone (which
  // deletes this) may run as soon as Finish is called, and Write runs on instance threads, not
  // as a reaction that OnDone would wait for.
  void MaybeFinish(std::unique_lock<std::mutex>& lock) {
    if (!reads_done_ || pending_ > 0 || writing_ || finished_) return;
    finished_ = true;
    const grpc::Status status =
        cancelled_->load() ? grpc::Status(grpc::StatusCode::CANCELLED, "the stream was cancelled")
                           : grpc::Status::OK;
    lock.unlock();
    count_(status.error_code());
    Finish(status);
  }

  InferenceService* service_;
  grpc::CallbackServerContext* context_;
  std::function<void(grpc::StatusCode)> count_;
  inference::ModelInferRequest request_;  // reused by every read
  std::shared_ptr<std::atomic<bool>> cancelled_ = std::make_shared<std::atomic<bool>>(false);
  std::mutex mu_;                                           // guards everything below
  std::deque<inference::ModelStreamInferResponse> writes_;  // front() is being written
  int64_t pending_ = 0;                                     // requests read, not yet answered
  bool reads_done_ = false;
  bool writing_ = false;
  bool write_failed_ = false;
  bool finished_ = false;
};

}  // namespace

InferenceService::InferenceService(const ServerState* state, ModelManager* manager,
                                   InferenceLimits limits, prometheus::Registry& registry)
    : state_(state),
      manager_(manager),
      limits_(limits),
      requests_(prometheus::BuildCounter()
                    .Name("nimble_grpc_requests_total")
                    .Help("gRPC calls of the inference service, by method and status code.")
                    .Register(registry)),
      inferences_(prometheus::BuildCounter()
                      .Name("nimble_inference_requests_total")
                      .Help("Inference requests by model, version and outcome (status code).")
                      .Register(registry)),
      inference_count_(prometheus::BuildCounter()
                           .Name("nimble_inference_count_total")
                           .Help("Inferences (batch sizes summed) by model, version and bucket.")
                           .Register(registry)),
      execution_count_(prometheus::BuildCounter()
                           .Name("nimble_execution_count_total")
                           .Help("Model executions by model, version and bucket; "
                                 "inference_count / execution_count is the average batch size.")
                           .Register(registry)),
      phase_seconds_(prometheus::BuildHistogram()
                         .Name("nimble_request_duration_seconds")
                         .Help("Time per stage of successful requests (queue, compute_input, "
                               "compute_infer, compute_output, total) by model, version and "
                               "bucket.")
                         .Register(registry)),
      pending_(prometheus::BuildGauge()
                   .Name("nimble_pending_requests")
                   .Help("Inference requests accepted and not yet answered, by model and "
                         "version.")
                   .Register(registry)) {}

void InferenceService::Count(absl::string_view method, grpc::StatusCode code) {
  requests_
      .Add({{"method", std::string(method)},
            {"code", std::string(absl::StatusCodeToString(static_cast<absl::StatusCode>(code)))}})
      .Increment();
}

grpc::ServerUnaryReactor* InferenceService::Finish(grpc::CallbackServerContext* context,
                                                   absl::string_view method,
                                                   const grpc::Status& status) {
  Count(method, status.error_code());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::ServerLive(grpc::CallbackServerContext* context,
                                                       const inference::ServerLiveRequest*,
                                                       inference::ServerLiveResponse* response) {
  // Live means the process can answer; it stays live while draining so that orchestrators do
  // not kill it before in-flight work finishes.
  response->set_live(true);
  return Finish(context, "ServerLive", grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceService::ServerReady(grpc::CallbackServerContext* context,
                                                        const inference::ServerReadyRequest*,
                                                        inference::ServerReadyResponse* response) {
  response->set_ready(state_->ready.load(std::memory_order_acquire) &&
                      !state_->draining.load(std::memory_order_acquire));
  return Finish(context, "ServerReady", grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceService::ServerMetadata(
    grpc::CallbackServerContext* context, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  response->set_name(state_->name);
  response->set_version(state_->version);
  response->add_extensions("model_repository");
  response->add_extensions("model_configuration");
  response->add_extensions("statistics");
  return Finish(context, "ServerMetadata", grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceService::ModelReady(grpc::CallbackServerContext* context,
                                                       const inference::ModelReadyRequest* request,
                                                       inference::ModelReadyResponse* response) {
  auto instance = manager_->Get(request->name(), request->version());
  if (!instance.ok() && instance.status().code() == absl::StatusCode::kInvalidArgument) {
    return Finish(context, "ModelReady", ToGrpc(instance.status()));
  }
  response->set_ready(instance.ok());
  return Finish(context, "ModelReady", grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceService::ModelMetadata(
    grpc::CallbackServerContext* context, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  auto instance = manager_->Get(request->name(), request->version());
  if (!instance.ok()) return Finish(context, "ModelMetadata", ToGrpc(instance.status()));
  const ModelConfigFile& config = (*instance)->config();
  response->set_name(request->name());
  for (int64_t v : manager_->ReadyVersions(request->name())) {
    response->add_versions(std::to_string(v));
  }
  response->set_platform("nimble_onnx");
  for (const auto& t : config.inputs()) {
    auto* m = response->add_inputs();
    m->set_name(t.name());
    m->set_datatype(t.datatype());
    m->mutable_shape()->Assign(t.dims().begin(), t.dims().end());
  }
  for (const auto& t : config.outputs()) {
    auto* m = response->add_outputs();
    m->set_name(t.name());
    m->set_datatype(t.datatype());
    m->mutable_shape()->Assign(t.dims().begin(), t.dims().end());
  }
  return Finish(context, "ModelMetadata", grpc::Status::OK);
}

void InferenceService::Infer(const inference::ModelInferRequest& request,
                             std::shared_ptr<std::atomic<bool>> cancelled,
                             std::chrono::system_clock::time_point grpc_deadline, InferDone done) {
  const Clock::time_point arrival = Clock::now();
  // Before the version is resolved the label is what the request named ("" for the default).
  std::string version_label = request.model_version();
  auto fail = [&](const absl::Status& status) {
    inferences_
        .Add({{"model", request.model_name()},
              {"version", version_label},
              {"status", StatusLabel(status.code())}})
        .Increment();
    done(status, nullptr);
  };
  if (state_->draining.load(std::memory_order_acquire)) {
    return fail(absl::UnavailableError("the server is shutting down"));
  }
  const size_t bytes = request.ByteSizeLong();
  if (static_cast<int64_t>(bytes) > limits_.max_request_bytes) {
    return fail(absl::ResourceExhaustedError(absl::StrCat(
        "request is ", bytes, " bytes, over --max-request-bytes=", limits_.max_request_bytes)));
  }
  for (int attempt = 0;; ++attempt) {
    auto instance = manager_->Get(request.model_name(), request.model_version());
    if (!instance.ok()) return fail(instance.status());
    ModelInstance& model = **instance;
    version_label = std::to_string(model.version());
    auto decoded = DecodeRequest(request, *model.executable(), model.config());
    if (!decoded.ok()) {
      model.stats().RecordFailure(NsSince(arrival));
      return fail(Annotate(decoded.status(), absl::StrCat("model '", model.name(), "'")));
    }
    const uint64_t compute_input_ns = NsSince(arrival);

    InferJob job;
    job.inputs = std::move(decoded->inputs);
    job.key = model.batch_plan().Classify(job.inputs);
    job.classified = true;
    job.priority = decoded->priority;
    job.enqueued = Clock::now();
    uint64_t timeout_us = decoded->timeout_us;
    if (timeout_us == 0) timeout_us = model.config().default_timeout_us();
    if (timeout_us > 0) job.deadline = arrival + std::chrono::microseconds(timeout_us);
    if (grpc_deadline != std::chrono::system_clock::time_point::max()) {
      const auto left = grpc_deadline - std::chrono::system_clock::now();
      job.deadline =
          std::min(job.deadline, Clock::now() + std::chrono::duration_cast<Clock::duration>(left));
    }
    job.cancelled = cancelled;
    const std::string version = version_label;
    const InstanceMetrics& metrics = model.metrics([&] {
      InstanceMetrics m;
      m.ok =
          &inferences_.Add({{"model", model.name()}, {"version", version}, {"status", "success"}});
      m.pending = &pending_.Add({{"model", model.name()}, {"version", version}});
      return m;
    });
    const BucketMetrics& bucket = model.bucket_metrics(job.key.bucket, [&] {
      const prometheus::Labels labels = {
          {"model", model.name()}, {"version", version}, {"bucket", job.key.bucket}};
      auto stage = [&](const char* name) {
        prometheus::Labels l = labels;
        l["stage"] = name;
        return &phase_seconds_.Add(l, LatencyBuckets());
      };
      BucketMetrics m;
      m.inferences = &inference_count_.Add(labels);
      m.executions = &execution_count_.Add(labels);
      m.queue = stage("queue");
      m.compute_input = stage("compute_input");
      m.compute_infer = stage("compute_infer");
      m.compute_output = stage("compute_output");
      m.total = stage("total");
      return m;
    });
    prometheus::Gauge& pending = *metrics.pending;
    job.done = [this, exe = model.executable(), stats = model.shared_stats(), name = model.name(),
                version, id = request.id(), outputs = decoded->outputs,
                batch_size = decoded->batch_size, arrival, compute_input_ns, &metrics, &bucket,
                done](absl::StatusOr<std::vector<vm::Tensor>> result, const JobTiming& timing) {
      metrics.pending->Decrement();
      inference::ModelInferResponse response;
      absl::Status status = result.status();
      const Clock::time_point output_start = Clock::now();
      if (status.ok()) {
        response.set_model_name(name);
        response.set_model_version(version);
        response.set_id(id);
        status = EncodeResponse(*exe, *result, outputs, &response);
      }
      RequestTimings t;
      t.queue_ns = timing.queue_ns;
      t.compute_input_ns = compute_input_ns;
      t.compute_infer_ns = timing.infer_ns;
      t.compute_output_ns = NsSince(output_start);
      t.total_ns = NsSince(arrival);
      if (timing.counts_execution) {
        // The run happened whether or not this request's response could be encoded.
        stats->RecordExecution(t, static_cast<uint64_t>(timing.executed_batch));
        bucket.executions->Increment();
      }
      if (status.ok()) {
        spdlog::debug(
            "request '{}' to model '{}' v{}: ok in {} us (queue {} us, infer {} us, "
            "batch {})",
            id, name, version, t.total_ns / 1000, t.queue_ns / 1000, t.compute_infer_ns / 1000,
            timing.executed_batch);
        stats->RecordSuccess(t, batch_size, NowMs());
        bucket.queue->Observe(static_cast<double>(t.queue_ns) * 1e-9);
        bucket.compute_input->Observe(static_cast<double>(t.compute_input_ns) * 1e-9);
        bucket.compute_infer->Observe(static_cast<double>(t.compute_infer_ns) * 1e-9);
        bucket.compute_output->Observe(static_cast<double>(t.compute_output_ns) * 1e-9);
        bucket.total->Observe(static_cast<double>(t.total_ns) * 1e-9);
        bucket.inferences->Increment(static_cast<double>(batch_size));
        metrics.ok->Increment();
      } else {
        stats->RecordFailure(t.total_ns);
        spdlog::debug("request '{}' to model '{}' failed: {}", id, name,
                      std::string(status.message()));
        inferences_
            .Add({{"model", name}, {"version", version}, {"status", StatusLabel(status.code())}})
            .Increment();
      }
      done(status, status.ok() ? &response : nullptr);
    };
    pending.Increment();
    absl::Status submitted = model.Submit(std::move(job));
    if (submitted.ok()) return;
    pending.Decrement();
    // A reload swapped versions between Get and Submit: the new one takes the request.
    if (model.replaced() && attempt == 0) continue;
    model.stats().RecordFailure(NsSince(arrival));
    return fail(submitted);
  }
}

grpc::ServerUnaryReactor* InferenceService::ModelInfer(grpc::CallbackServerContext* context,
                                                       const inference::ModelInferRequest* request,
                                                       inference::ModelInferResponse* response) {
  auto* reactor = new AsyncReactor([this](grpc::StatusCode code) { Count("ModelInfer", code); });
  std::shared_ptr<Once> once = reactor->once();
  Infer(*request, once->cancelled(), context->deadline(),
        [once, response](const absl::Status& status, inference::ModelInferResponse* out) {
          once->Finish(ToGrpc(status), [&] { response->Swap(out); });
        });
  return reactor;
}

grpc::ServerBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse>*
InferenceService::ModelStreamInfer(grpc::CallbackServerContext* context) {
  return new InferStream(this, context,
                         [this](grpc::StatusCode code) { Count("ModelStreamInfer", code); });
}

grpc::ServerUnaryReactor* InferenceService::ModelConfig(
    grpc::CallbackServerContext* context, const inference::ModelConfigRequest* request,
    inference::ModelConfigResponse* response) {
  auto instance = manager_->Get(request->name(), request->version());
  if (!instance.ok()) return Finish(context, "ModelConfig", ToGrpc(instance.status()));
  *response->mutable_config() = ToTritonConfig(request->name(), (*instance)->config());
  return Finish(context, "ModelConfig", grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceService::ModelStatistics(
    grpc::CallbackServerContext* context, const inference::ModelStatisticsRequest* request,
    inference::ModelStatisticsResponse* response) {
  auto instances = manager_->ReadyInstances(request->name(), request->version());
  if (!instances.ok()) return Finish(context, "ModelStatistics", ToGrpc(instances.status()));
  for (const auto& instance : *instances) {
    inference::ModelStatistics* s = response->add_model_stats();
    s->set_name(instance->name());
    s->set_version(std::to_string(instance->version()));
    instance->stats().Snapshot(s);
  }
  return Finish(context, "ModelStatistics", grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceService::RepositoryIndex(
    grpc::CallbackServerContext* context, const inference::RepositoryIndexRequest* request,
    inference::RepositoryIndexResponse* response) {
  for (const ModelIndexEntry& e : manager_->Index()) {
    if (request->ready() && e.state != VersionState::kReady) continue;
    auto* m = response->add_models();
    m->set_name(e.name);
    m->set_version(e.version);
    m->set_state(std::string(VersionStateName(e.state)));
    m->set_reason(e.reason);
  }
  return Finish(context, "RepositoryIndex", grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceService::RepositoryModelLoad(
    grpc::CallbackServerContext* context, const inference::RepositoryModelLoadRequest* request,
    inference::RepositoryModelLoadResponse*) {
  if (state_->draining.load(std::memory_order_acquire)) {
    return Finish(context, "RepositoryModelLoad",
                  grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is shutting down"));
  }
  ModelUpload upload;
  for (const auto& [key, value] : request->parameters()) {
    if (key == "config") {
      if (value.parameter_choice_case() == inference::ModelRepositoryParameter::kStringParam) {
        upload.config_json = value.string_param();
      } else if (value.parameter_choice_case() ==
                 inference::ModelRepositoryParameter::kBytesParam) {
        upload.config_json = value.bytes_param();
      } else {
        return Finish(context, "RepositoryModelLoad",
                      grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   "parameter 'config' must be a JSON string"));
      }
    } else if (key.rfind("file:", 0) == 0) {
      if (value.parameter_choice_case() != inference::ModelRepositoryParameter::kBytesParam) {
        return Finish(context, "RepositoryModelLoad",
                      grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   absl::StrCat("parameter '", key, "' must be bytes")));
      }
      upload.files[key] = value.bytes_param();
    }
  }
  auto* reactor =
      new AsyncReactor([this](grpc::StatusCode code) { Count("RepositoryModelLoad", code); });
  std::shared_ptr<Once> once = reactor->once();
  manager_->Load(request->model_name(), std::move(upload),
                 [once](absl::Status status) { once->Finish(ToGrpc(status)); });
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::RepositoryModelUnload(
    grpc::CallbackServerContext* context, const inference::RepositoryModelUnloadRequest* request,
    inference::RepositoryModelUnloadResponse*) {
  return Finish(context, "RepositoryModelUnload", ToGrpc(manager_->Unload(request->model_name())));
}

}  // namespace nimble::server
