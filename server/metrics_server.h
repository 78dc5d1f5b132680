// The Prometheus endpoint: an HTTP exposer on --metrics-port serving /metrics from one
// registry, with the process_* metrics always present.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"
#include "server/process_metrics.h"

namespace nimble::server {

// Thread-safe: the registry synchronises its own families; the exposer serves on its threads.
class MetricsServer {
 public:
  // Binds `address:port` (port 0 picks a free one). kUnavailable when the port cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Create(const std::string& address,
                                                               int port);

  prometheus::Registry& registry() { return *registry_; }
  // Serves `collectable`'s metrics too (collected at each scrape, on the exposer's threads).
  void Add(const std::shared_ptr<prometheus::Collectable>& collectable) {
    exposer_->RegisterCollectable(collectable);
  }
  void Remove(const std::shared_ptr<prometheus::Collectable>& collectable) {
    exposer_->RemoveCollectable(collectable);
  }
  int port() const { return port_; }

 private:
  MetricsServer() = default;

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<ProcessCollector> process_collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

}  // namespace nimble::server
