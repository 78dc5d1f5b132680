#include "server/server.h"

#include <algorithm>
#include <chrono>
#include <limits>

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

  server->repository_ = std::make_unique<ModelRepository>(options.model_repository);
  server->repository_->CleanUp();
  ExecutableCache::Options cache_options;
  cache_options.dir = options.cache_dir;
  cache_options.memory_bytes = options.cache_memory_bytes;
  cache_options.disk_bytes = options.cache_disk_bytes;
  server->cache_ = std::make_unique<ExecutableCache>(cache_options, registry);
  ModelManager::Options manager_options;
  manager_options.compile_threads = options.compile_threads;
  server->manager_ = std::make_unique<ModelManager>(server->repository_.get(), server->cache_.get(),
                                                    manager_options);
  server->model_metrics_ = std::make_shared<ModelMetricsCollector>(server->manager_.get());
  if (server->metrics_) server->metrics_->Add(server->model_metrics_);
  InferenceLimits limits;
  limits.max_request_bytes = options.max_request_bytes;
  server->service_ =
      std::make_unique<InferenceService>(&server->state_, server->manager_.get(), limits, registry);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // gRPC sets SO_REUSEPORT by default, which lets a second server silently share a port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // gRPC's own bound (4 MiB by default) would refuse uploads and large requests before our
  // checks could say which limit applies; ours are checked per RPC.
  const int64_t max_message =
      std::min<int64_t>(std::max(options.max_request_bytes, options.max_upload_bytes) + 4096,
                        std::numeric_limits<int>::max());
  builder.SetMaxReceiveMessageSize(static_cast<int>(max_message));
  builder.AddListeningPort(options.grpc_address, grpc::InsecureServerCredentials(),
                           &server->grpc_port_);
  builder.RegisterService(server->service_.get());
  server->grpc_server_ = builder.BuildAndStart();
  if (server->grpc_server_ == nullptr || server->grpc_port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("--grpc-address: cannot listen on ", options.grpc_address));
  }
  // Ready (ServerReady, health SERVING) once every model in the repository has finished its
  // first load, successfully or not; failures are visible in RepositoryIndex.
  Server* self = server.get();
  server->grpc_server_->GetHealthCheckService()->SetServingStatus(false);
  server->manager_->LoadAll([self] {
    if (self->state_.draining.load(std::memory_order_acquire)) return;
    self->state_.ready.store(true, std::memory_order_release);
    self->grpc_server_->GetHealthCheckService()->SetServingStatus(true);
    spdlog::info("initial model loads finished: ready");
  });
  spdlog::info("nimble-server {} serving gRPC on port {} (repository '{}'), metrics on port {}",
               NIMBLE_VERSION, server->grpc_port_, options.model_repository,
               server->metrics_port());
  return server;
}

Server::~Server() {
  Shutdown();
  if (model_metrics_) model_metrics_->Detach();
}

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
  // Running compiles finish, queued requests are answered, instance threads are joined.
  model_metrics_->Detach();
  manager_.reset();
}

}  // namespace nimble::server
