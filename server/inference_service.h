// The KServe v2 GRPCInferenceService, on gRPC's callback API: handlers run on gRPC's threads and
// never block them.
#pragma once

#include <string_view>

#include "grpc_service.grpc.pb.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"
#include "server/server_state.h"

namespace nimble::server {

// Thread-safe: handlers only read ServerState and bump thread-safe counters.
class InferenceService final : public inference::GRPCInferenceService::CallbackService {
 public:
  InferenceService(const ServerState* state, prometheus::Registry& registry);

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const inference::ServerLiveRequest* request,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const inference::ServerReadyRequest* request,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const inference::ServerMetadataRequest* request,
                                           inference::ServerMetadataResponse* response) override;

  // Until the serving issue lands these answer UNIMPLEMENTED with a message saying so.
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
  grpc::ServerUnaryReactor* NotYet(grpc::CallbackServerContext* context, absl::string_view method);

  const ServerState* state_;
  prometheus::Family<prometheus::Counter>& requests_;
};

}  // namespace nimble::server
