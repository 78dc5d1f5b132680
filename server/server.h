// The nimble-server process: gRPC inference service + health + reflection, and the metrics
// endpoint, with an orderly drain on shutdown.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/server.h"
#include "server/executable_cache.h"
#include "server/inference_service.h"
#include "server/metrics_server.h"
#include "server/model_manager.h"
#include "server/repository.h"
#include "server/server_options.h"
#include "server/server_state.h"

namespace nimble::server {

// Serves ModelManager::CollectMetrics at scrape time until Detach (before the manager goes).
class ModelMetricsCollector final : public prometheus::Collectable {
 public:
  explicit ModelMetricsCollector(const ModelManager* manager) : manager_(manager) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return manager_ != nullptr ? manager_->CollectMetrics()
                               : std::vector<prometheus::MetricFamily>{};
  }
  // Waits for a running Collect; later ones return nothing.
  void Detach() {
    std::lock_guard<std::mutex> lock(mu_);
    manager_ = nullptr;
  }

 private:
  mutable std::mutex mu_;  // guards manager_
  const ModelManager* manager_;
};

// Thread-safe: BeginDrain() and Shutdown() may be called from any thread, Shutdown() once.
class Server {
 public:
  // Validates `options`, binds both ports and starts serving. Errors name the bad option.
  static absl::StatusOr<std::unique_ptr<Server>> Create(const ServerOptions& options);
  ~Server();

  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_ ? metrics_->port() : -1; }
  const ServerState& state() const { return state_; }
  ModelManager& models() { return *manager_; }

  // Health turns NOT_SERVING and ServerReady false; calls already accepted keep running.
  void BeginDrain();

  // BeginDrain(), stop accepting calls, wait up to the grace period for in-flight calls, then
  // cancel what is left. Returns when the gRPC server has stopped.
  void Shutdown();

 private:
  explicit Server(const ServerOptions& options) : options_(options) {}

  ServerOptions options_;
  ServerState state_;
  std::unique_ptr<MetricsServer> metrics_;
  std::unique_ptr<ModelRepository> repository_;
  std::unique_ptr<ExecutableCache> cache_;
  std::unique_ptr<ModelManager> manager_;
  std::shared_ptr<ModelMetricsCollector> model_metrics_;
  std::unique_ptr<InferenceService> service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  int grpc_port_ = 0;
  bool shut_down_ = false;  // guarded by being called from one owner thread
};

}  // namespace nimble::server
