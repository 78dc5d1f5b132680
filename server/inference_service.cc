#include "server/inference_service.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace nimble::server {
namespace {

// A stream that ends at once with `status` (used until ModelStreamInfer is implemented).
class FinishedStream final : public grpc::ServerBidiReactor<inference::ModelInferRequest,
                                                            inference::ModelStreamInferResponse> {
 public:
  explicit FinishedStream(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

std::string NotYetMessage(absl::string_view method) {
  return absl::StrCat(method,
                      " is not implemented yet: model loading and inference arrive with the "
                      "serving issue; this build answers ServerLive, ServerReady and "
                      "ServerMetadata");
}

}  // namespace

InferenceService::InferenceService(const ServerState* state, prometheus::Registry& registry)
    : state_(state),
      requests_(prometheus::BuildCounter()
                    .Name("nimble_grpc_requests_total")
                    .Help("gRPC calls of the inference service, by method and status code.")
                    .Register(registry)) {}

grpc::ServerUnaryReactor* InferenceService::Finish(grpc::CallbackServerContext* context,
                                                   absl::string_view method,
                                                   const grpc::Status& status) {
  requests_
      .Add({{"method", std::string(method)},
            {"code", std::string(absl::StatusCodeToString(
                         static_cast<absl::StatusCode>(status.error_code())))}})
      .Increment();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::NotYet(grpc::CallbackServerContext* context,
                                                   absl::string_view method) {
  return Finish(context, method,
                grpc::Status(grpc::StatusCode::UNIMPLEMENTED, NotYetMessage(method)));
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
  // Extensions are advertised only once they work; none of the optional ones do yet.
  return Finish(context, "ServerMetadata", grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceService::ModelReady(grpc::CallbackServerContext* context,
                                                       const inference::ModelReadyRequest*,
                                                       inference::ModelReadyResponse*) {
  return NotYet(context, "ModelReady");
}

grpc::ServerUnaryReactor* InferenceService::ModelMetadata(grpc::CallbackServerContext* context,
                                                          const inference::ModelMetadataRequest*,
                                                          inference::ModelMetadataResponse*) {
  return NotYet(context, "ModelMetadata");
}

grpc::ServerUnaryReactor* InferenceService::ModelInfer(grpc::CallbackServerContext* context,
                                                       const inference::ModelInferRequest*,
                                                       inference::ModelInferResponse*) {
  return NotYet(context, "ModelInfer");
}

grpc::ServerBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse>*
InferenceService::ModelStreamInfer(grpc::CallbackServerContext*) {
  requests_.Add({{"method", "ModelStreamInfer"}, {"code", "UNIMPLEMENTED"}}).Increment();
  return new FinishedStream(
      grpc::Status(grpc::StatusCode::UNIMPLEMENTED, NotYetMessage("ModelStreamInfer")));
}

grpc::ServerUnaryReactor* InferenceService::ModelConfig(grpc::CallbackServerContext* context,
                                                        const inference::ModelConfigRequest*,
                                                        inference::ModelConfigResponse*) {
  return NotYet(context, "ModelConfig");
}

grpc::ServerUnaryReactor* InferenceService::ModelStatistics(
    grpc::CallbackServerContext* context, const inference::ModelStatisticsRequest*,
    inference::ModelStatisticsResponse*) {
  return NotYet(context, "ModelStatistics");
}

grpc::ServerUnaryReactor* InferenceService::RepositoryIndex(
    grpc::CallbackServerContext* context, const inference::RepositoryIndexRequest*,
    inference::RepositoryIndexResponse*) {
  return NotYet(context, "RepositoryIndex");
}

grpc::ServerUnaryReactor* InferenceService::RepositoryModelLoad(
    grpc::CallbackServerContext* context, const inference::RepositoryModelLoadRequest*,
    inference::RepositoryModelLoadResponse*) {
  return NotYet(context, "RepositoryModelLoad");
}

grpc::ServerUnaryReactor* InferenceService::RepositoryModelUnload(
    grpc::CallbackServerContext* context, const inference::RepositoryModelUnloadRequest*,
    inference::RepositoryModelUnloadResponse*) {
  return NotYet(context, "RepositoryModelUnload");
}

}  // namespace nimble::server
