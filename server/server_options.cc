#include "server/server_options.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace nimble::server {

absl::StatusOr<HostPort> ParseHostPort(absl::string_view address) {
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("address '", address, "' is not HOST:PORT (e.g. 127.0.0.1:8001)"));
  }
  absl::string_view host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int port = -1;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("address '", address, "' has no valid port (0..65535)"));
  }
  return HostPort{std::string(host), port};
}

absl::Status CheckModelRepository(const std::string& path) {
  if (path.empty()) {
    return absl::InvalidArgumentError("--model-repository is required");
  }
  std::error_code error;
  const auto status = std::filesystem::status(path, error);
  if (status.type() == std::filesystem::file_type::not_found) {
    return absl::NotFoundError(absl::StrCat("model repository '", path, "' does not exist"));
  }
  if (error) {
    return absl::InvalidArgumentError(
        absl::StrCat("model repository '", path, "': ", error.message()));
  }
  if (status.type() != std::filesystem::file_type::directory) {
    return absl::InvalidArgumentError(
        absl::StrCat("model repository '", path, "' is not a directory"));
  }
  return absl::OkStatus();
}

absl::Status CheckPortBindable(const HostPort& address) {
  if (address.port == 0) return absl::OkStatus();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* resolved = nullptr;
  const std::string port = std::to_string(address.port);
  const int rc = getaddrinfo(address.host.c_str(), port.c_str(), &hints, &resolved);
  if (rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve '", address.host, "': ", gai_strerror(rc)));
  }
  absl::Status result = absl::OkStatus();
  for (addrinfo* ai = resolved; ai != nullptr; ai = ai->ai_next) {
    const int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) continue;
    // SO_REUSEADDR as the real listener uses it: TIME_WAIT leftovers are not "in use".
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      const int bind_errno = errno;
      result = absl::UnavailableError(absl::StrCat("cannot listen on ", address.host, ":",
                                                   address.port, ": ", std::strerror(bind_errno)));
    }
    close(fd);
    if (!result.ok()) break;
  }
  freeaddrinfo(resolved);
  return result;
}

absl::Status ValidateOptions(const ServerOptions& options) {
  NIMBLE_RETURN_IF_ERROR(CheckModelRepository(options.model_repository));
  NIMBLE_ASSIGN_OR_RETURN(HostPort grpc, ParseHostPort(options.grpc_address));
  NIMBLE_RETURN_IF_ERROR(Annotate(CheckPortBindable(grpc), "--grpc-address"));
  if (options.metrics_port < -1 || options.metrics_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--metrics-port ", options.metrics_port,
                                                   " is out of range (0..65535, -1 = off)"));
  }
  if (options.metrics_port > 0) {
    NIMBLE_RETURN_IF_ERROR(
        Annotate(CheckPortBindable(HostPort{options.metrics_address, options.metrics_port}),
                 "--metrics-port"));
  }
  if (options.max_request_bytes <= 0 || options.max_upload_bytes <= 0 ||
      options.cache_memory_bytes < 0 || options.cache_disk_bytes < 0) {
    return absl::InvalidArgumentError(
        "--max-request-bytes and --max-upload-bytes must be positive, --cache-memory-bytes and "
        "--cache-disk-bytes >= 0");
  }
  if (options.compile_threads < 1) {
    return absl::InvalidArgumentError("--compile-threads must be at least 1");
  }
  if (options.shutdown_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--shutdown-grace must not be negative");
  }
  return absl::OkStatus();
}

}  // namespace nimble::server
