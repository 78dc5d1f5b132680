// The KServe v2 GRPCInferenceService, on gRPC's callback API: handlers run on gRPC's threads and
// never block them.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string_view>

#include "grpc_service.grpc.pb.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/model_manager.h"
#include "server/server_state.h"

namespace nimble::server {

struct InferenceLimits {
  int64_t max_request_bytes = int64_t{64} << 20;  // ModelInfer messages above it are refused
};

// Thread-safe: handlers read ServerState, ask the (thread-safe) ModelManager and bump
// thread-safe counters. Inference runs on the model's instance threads; handlers only decode,
// validate and queue, and finish their reactor from the completion callback.
class InferenceService final : public inference::GRPCInferenceService::CallbackService {
 public:
  InferenceService(const ServerState* state, ModelManager* manager, InferenceLimits limits,
                   prometheus::Registry& registry);

  // The inference path shared by ModelInfer and ModelStreamInfer: `done` runs exactly once,
  // on this thread (errors found before queueing) or an instance thread.
  using InferDone = std::function<void(const absl::Status&, inference::ModelInferResponse*)>;
  void Infer(const inference::ModelInferRequest& request,
             std::shared_ptr<std::atomic<bool>> cancelled,
             std::chrono::system_clock::time_point deadline, InferDone done);

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const inference::ServerLiveRequest* request,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const inference::ServerReadyRequest* request,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const inference::ServerMetadataRequest* request,
                                           inference::ServerMetadataResponse* response) override;

  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const inference::ModelInferRequest* request,
                                       inference::ModelInferResponse* response) override;
  grpc::ServerBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse>*
  ModelStreamInfer(grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* ModelConfig(grpc::CallbackServerContext* context,
                                        const inference::ModelConfigRequest* request,
                                        inference::ModelConfigResponse* response) override;
  grpc::ServerUnaryReactor* ModelStatistics(grpc::CallbackServerContext* context,
                                            const inference::ModelStatisticsRequest* request,
                                            inference::ModelStatisticsResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryIndex(grpc::CallbackServerContext* context,
                                            const inference::RepositoryIndexRequest* request,
                                            inference::RepositoryIndexResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryModelLoad(
      grpc::CallbackServerContext* context, const inference::RepositoryModelLoadRequest* request,
      inference::RepositoryModelLoadResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryModelUnload(
      grpc::CallbackServerContext* context, const inference::RepositoryModelUnloadRequest* request,
      inference::RepositoryModelUnloadResponse* response) override;

 private:
  // Finishes a unary call with `status`, counting it by method and code.
  grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context, absl::string_view method,
                                   const grpc::Status& status);
  void Count(absl::string_view method, grpc::StatusCode code);

  const ServerState* state_;
  ModelManager* manager_;
  const InferenceLimits limits_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Counter>& inferences_;
  prometheus::Family<prometheus::Counter>& inference_count_;
  prometheus::Family<prometheus::Counter>& execution_count_;
  prometheus::Family<prometheus::Histogram>& phase_seconds_;
  prometheus::Family<prometheus::Gauge>& pending_;
};

}  // namespace nimble::server
