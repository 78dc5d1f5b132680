// A child process for integration tests: the real server binary with its stdout/stderr in
// files, started and stopped the way an operator would.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace nimble::testing {

// Not thread-safe; one test thread owns it. The destructor kills a still-running child.
class ChildProcess {
 public:
  // Runs `binary args...` with stdout and stderr captured in files under `work_dir`.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(const std::string& binary,
                                                             const std::vector<std::string>& args,
                                                             const std::string& work_dir);
  ~ChildProcess();

  pid_t pid() const { return pid_; }

  // Polls (bounded by `timeout`) until `path` exists or the child exits.
  absl::Status WaitForFile(const std::string& path, absl::Duration timeout);

  // Sends `signal`.
  void Signal(int signal);

  // Waits up to `timeout` for the child to exit; its exit code, or an error if it was killed by
  // a signal or did not exit in time.
  absl::StatusOr<int> WaitForExit(absl::Duration timeout);

  std::string Stdout() const;
  std::string Stderr() const;

 private:
  ChildProcess() = default;
  std::optional<int> Reap(bool block);

  pid_t pid_ = -1;
  bool exited_ = false;
  int exit_status_ = 0;  // raw waitpid status once exited_
  std::string stdout_path_;
  std::string stderr_path_;
};

// Reads `key=value` lines from a file (the server's --port-file).
absl::StatusOr<int> ReadPort(const std::string& port_file, const std::string& key);

// GET http://127.0.0.1:port/path over a plain socket; the body of the response.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

}  // namespace nimble::testing
