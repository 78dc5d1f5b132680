// nimble-server: flags → validated options → Server; SIGINT/SIGTERM drain it and exit 0.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "grpc/support/log.h"
#include "server/logging.h"
#include "server/server.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, model_repository, "",
          "Directory of models: <repo>/<model>/<version>/model.onnx (required).");
ABSL_FLAG(std::string, grpc_address, "127.0.0.1:8001",
          "HOST:PORT for the KServe v2 gRPC service; port 0 picks a free port.");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0", "Address the Prometheus endpoint binds.");
ABSL_FLAG(int, metrics_port, 8002,
          "Port of the Prometheus /metrics endpoint; 0 picks a free port, -1 turns it off.");
ABSL_FLAG(std::string, log_format, "text", "Log format: text or json (one object per line).");
ABSL_FLAG(std::string, log_level, "info",
          "Log level: trace, debug, info, warn, error, critical or off.");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(30),
          "On SIGINT/SIGTERM, how long in-flight calls may run before they are cancelled.");
ABSL_FLAG(std::string, cache_dir, "",
          "Directory of compiled executables (<digest>.nbx); restarts and identical uploads load "
          "from it instead of compiling. Empty: in-memory cache only.");
ABSL_FLAG(int64_t, cache_memory_bytes, int64_t{1} << 30,
          "Bound of the in-memory executable cache (LRU, serialized bytes).");
ABSL_FLAG(int64_t, cache_disk_bytes, int64_t{10} << 30,
          "Bound of --cache-dir (least recently used executables are deleted first; 0: none).");
ABSL_FLAG(int64_t, max_request_bytes, int64_t{64} << 20,
          "Largest ModelInfer request; larger ones get RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, max_upload_bytes, int64_t{1} << 30,
          "Largest RepositoryModelLoad message (model upload).");
ABSL_FLAG(int, compile_threads, 1, "Models compiled at the same time (background loads).");
ABSL_FLAG(std::string, port_file, "",
          "If set, once serving write 'grpc=PORT\\nmetrics=PORT\\n' here (for port 0 users).");

namespace nimble::server {
namespace {

// gRPC's own log lines go through our logger so they share its format and level.
void GrpcLogToSpdlog(gpr_log_func_args* args) {
  const spdlog::level::level_enum level =
      args->severity == GPR_LOG_SEVERITY_ERROR  ? spdlog::level::err
      : args->severity == GPR_LOG_SEVERITY_INFO ? spdlog::level::info
                                                : spdlog::level::debug;
  spdlog::log(level, "grpc: {} ({}:{})", args->message, args->file, args->line);
}

absl::Status WritePortFile(const std::string& path, const Server& server) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << "grpc=" << server.grpc_port() << "\nmetrics=" << server.metrics_port() << "\n";
    if (!out.good()) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  // Rename so a reader never sees a half-written file.
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

absl::Status Run() {
  auto format = ParseLogFormat(absl::GetFlag(FLAGS_log_format));
  if (!format.ok()) return Annotate(format.status(), "--log-format");
  auto level = ParseLogLevel(absl::GetFlag(FLAGS_log_level));
  if (!level.ok()) return Annotate(level.status(), "--log-level");
  ConfigureLogging(*format, *level);
  gpr_set_log_function(GrpcLogToSpdlog);

  // Block the shutdown signals in every thread (threads inherit the mask); this thread then
  // takes them synchronously with sigwait, so no async-signal-safety puzzles.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  ServerOptions options;
  options.model_repository = absl::GetFlag(FLAGS_model_repository);
  options.grpc_address = absl::GetFlag(FLAGS_grpc_address);
  options.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  options.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  options.shutdown_grace = absl::GetFlag(FLAGS_shutdown_grace);
  options.cache_dir = absl::GetFlag(FLAGS_cache_dir);
  options.cache_memory_bytes = absl::GetFlag(FLAGS_cache_memory_bytes);
  options.cache_disk_bytes = absl::GetFlag(FLAGS_cache_disk_bytes);
  options.max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  options.max_upload_bytes = absl::GetFlag(FLAGS_max_upload_bytes);
  options.compile_threads = absl::GetFlag(FLAGS_compile_threads);
  NIMBLE_ASSIGN_OR_RETURN(std::unique_ptr<Server> server, Server::Create(options));

  const std::string port_file = absl::GetFlag(FLAGS_port_file);
  if (!port_file.empty()) NIMBLE_RETURN_IF_ERROR(WritePortFile(port_file, *server));

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  spdlog::info("received {}, shutting down (grace {})", strsignal(signal_number),
               absl::FormatDuration(options.shutdown_grace));
  server->Shutdown();
  spdlog::info("bye");
  return absl::OkStatus();
}

// Abseil flags are spelled with underscores; users (and the README) write dashes. Rewrites the
// name part of every "--some-flag[=value]" argument before Abseil parses them.
void AcceptDashedFlagNames(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    char* arg = argv[i];
    if (arg[0] != '-' || arg[1] != '-' || arg[2] == '\0') continue;
    for (char* c = arg + 2; *c != '\0' && *c != '='; ++c) {
      if (*c == '-') *c = '_';
    }
  }
}

}  // namespace
}  // namespace nimble::server

int main(int argc, char** argv) {
  nimble::server::AcceptDashedFlagNames(argc, argv);
  absl::SetProgramUsageMessage(
      "Serves ONNX models over the KServe v2 gRPC protocol.\n"
      "  nimble-server --model-repository=models [--grpc-address=127.0.0.1:8001]");
  absl::ParseCommandLine(argc, argv);
  absl::Status status = nimble::server::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "nimble-server: error: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
