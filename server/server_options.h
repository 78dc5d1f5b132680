// What nimble-server is asked to do, and the checks that turn bad values into one clear error
// before anything starts.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace nimble::server {

struct ServerOptions {
  std::string model_repository;
  std::string grpc_address = "127.0.0.1:8001";
  std::string metrics_address = "0.0.0.0";
  int metrics_port = 8002;  // 0 picks a free port; -1 turns the endpoint off
  absl::Duration shutdown_grace = absl::Seconds(30);
  std::string cache_dir = "";                     // "" = executables cached in memory only
  int64_t cache_memory_bytes = int64_t{1} << 30;  // in-memory executable cache bound
  int64_t cache_disk_bytes = int64_t{10} << 30;   // --cache-dir bound (0 = none)
  int64_t max_request_bytes = int64_t{64} << 20;  // ModelInfer message bound
  int64_t max_upload_bytes = int64_t{1} << 30;    // RepositoryModelLoad message bound
  int compile_threads = 1;                        // models compiled at once
};

struct HostPort {
  std::string host;
  int port = 0;
};

// "127.0.0.1:8001", "[::1]:8001", "0.0.0.0:0", "localhost:8001". The port must be 0..65535.
absl::StatusOr<HostPort> ParseHostPort(absl::string_view address);

// kNotFound when `path` does not exist, kInvalidArgument when it is not a directory.
absl::Status CheckModelRepository(const std::string& path);

// kUnavailable when a TCP listener on host:port cannot be created now (port in use, address
// not local). Port 0 always passes. Checked before gRPC binds, whose own failure is less clear.
absl::Status CheckPortBindable(const HostPort& address);

// All of the above for a full set of options.
absl::Status ValidateOptions(const ServerOptions& options);

}  // namespace nimble::server
