#include "server/server.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "spdlog/spdlog.h"

#ifndef NIMBLE_VERSION
#define NIMBLE_VERSION "0.0.0"
#endif

namespace nimble::server {

absl::StatusOr<std::unique_ptr<Server>> Server::Create(const ServerOptions& options) {
  NIMBLE_RETURN_IF_ERROR(ValidateOptions(options));
  std::unique_ptr<Server> server(new Server(options));
  server->state_.version = NIMBLE_VERSION;

  if (options.metrics_port >= 0) {
    NIMBLE_ASSIGN_OR_RETURN(server->metrics_,
                            MetricsServer::Create(options.metrics_address, options.metrics_port));
  }
  // Without a metrics endpoint the counters still need a registry; it is simply not exposed.
  static prometheus::Registry unexposed_registry;
  prometheus::Registry& registry =
      server->metrics_ ? server->metrics_->registry() : unexposed_registry;
  auto& build_info = prometheus::BuildGauge()
                         .Name("nimble_build_info")
                         .Help("Always 1; labels say which build is running.")
                         .Register(registry);
  build_info.Add({{"version", NIMBLE_VERSION}}).Set(1);

  server->service_ = std::make_unique<InferenceService>(&server->state_, registry);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // gRPC sets SO_REUSEPORT by default, which lets a second server silently share a port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(options.grpc_address, grpc::InsecureServerCredentials(),
                           &server->grpc_port_);
  builder.RegisterService(server->service_.get());
  server->grpc_server_ = builder.BuildAndStart();
  if (server->grpc_server_ == nullptr || server->grpc_port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("--grpc-address: cannot listen on ", options.grpc_address));
  }
  server->grpc_server_->GetHealthCheckService()->SetServingStatus(true);
  server->state_.ready.store(true, std::memory_order_release);
  spdlog::info("nimble-server {} serving gRPC on port {} (repository '{}'), metrics on port {}",
               NIMBLE_VERSION, server->grpc_port_, options.model_repository,
               server->metrics_port());
  return server;
}

Server::~Server() { Shutdown(); }

void Server::BeginDrain() {
  if (state_.draining.exchange(true, std::memory_order_acq_rel)) return;
  state_.ready.store(false, std::memory_order_release);
  if (grpc_server_) grpc_server_->GetHealthCheckService()->SetServingStatus(false);
  spdlog::info("draining: health is NOT_SERVING, in-flight calls continue");
}

void Server::Shutdown() {
  if (shut_down_ || grpc_server_ == nullptr) return;
  shut_down_ = true;
  BeginDrain();
  const auto deadline =
      std::chrono::system_clock::now() + absl::ToChronoNanoseconds(options_.shutdown_grace);
  grpc_server_->Shutdown(deadline);
  grpc_server_->Wait();
  spdlog::info("gRPC server stopped");
}

}  // namespace nimble::server
