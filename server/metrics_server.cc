#include "server/metrics_server.h"

#include <exception>

#include "absl/strings/str_cat.h"

namespace nimble::server {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Create(const std::string& address,
                                                                     int port) {
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics port ", port, " is out of range"));
  }
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->registry_ = std::make_shared<prometheus::Registry>();
  server->process_collector_ = std::make_shared<ProcessCollector>();
  const std::string bind = absl::StrCat(address, ":", port);
  // prometheus-cpp (civetweb) reports bind failures by throwing; this is the boundary where
  // that becomes a Status.
  try {
    server->exposer_ = std::make_unique<prometheus::Exposer>(
        std::vector<std::string>{"listening_ports", bind, "num_threads", "2"});
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", bind, ": ", e.what()));
  }
  std::vector<int> ports = server->exposer_->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", bind));
  }
  server->port_ = ports.front();
  server->exposer_->RegisterCollectable(server->registry_);
  server->exposer_->RegisterCollectable(server->process_collector_);
  return server;
}

}  // namespace nimble::server
