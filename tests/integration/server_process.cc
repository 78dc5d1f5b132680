#include "tests/integration/server_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace nimble::testing {
namespace {

std::string ReadWhole(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(
    const std::string& binary, const std::vector<std::string>& args, const std::string& work_dir) {
  std::unique_ptr<ChildProcess> child(new ChildProcess());
  static int counter = 0;
  const std::string stem = absl::StrCat(work_dir, "/child_", getpid(), "_", counter++);
  child->stdout_path_ = stem + ".stdout";
  child->stderr_path_ = stem + ".stderr";

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, child->stdout_path_.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, child->stderr_path_.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(binary.c_str()));
  for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  const int rc = posix_spawn(&child->pid_, binary.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("posix_spawn ", binary, ": ", std::strerror(rc)));
  }
  return child;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !exited_) {
    kill(pid_, SIGKILL);
    Reap(/*block=*/true);
  }
}

std::optional<int> ChildProcess::Reap(bool block) {
  if (exited_) return exit_status_;
  int status = 0;
  const pid_t r = waitpid(pid_, &status, block ? 0 : WNOHANG);
  if (r == pid_) {
    exited_ = true;
    exit_status_ = status;
    return status;
  }
  return std::nullopt;
}

absl::Status ChildProcess::WaitForFile(const std::string& path, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (std::filesystem::exists(path)) return absl::OkStatus();
    if (Reap(/*block=*/false)) {
      return absl::FailedPreconditionError(
          absl::StrCat("server exited before writing ", path, "; stderr:\n", Stderr()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // poll interval
  }
  return absl::DeadlineExceededError(absl::StrCat(path, " did not appear; stderr:\n", Stderr()));
}

void ChildProcess::Signal(int signal) {
  if (!exited_) kill(pid_, signal);
}

absl::StatusOr<int> ChildProcess::WaitForExit(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!Reap(/*block=*/false)) {
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("process ", pid_, " did not exit"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // poll interval
  }
  if (WIFSIGNALED(exit_status_)) {
    return absl::AbortedError(
        absl::StrCat("killed by signal ", WTERMSIG(exit_status_), "; stderr:\n", Stderr()));
  }
  return WEXITSTATUS(exit_status_);
}

std::string ChildProcess::Stdout() const { return ReadWhole(stdout_path_); }
std::string ChildProcess::Stderr() const { return ReadWhole(stderr_path_); }

absl::StatusOr<int> ReadPort(const std::string& port_file, const std::string& key) {
  for (absl::string_view line : absl::StrSplit(ReadWhole(port_file), '\n')) {
    std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
    int port = 0;
    if (kv.first == key && absl::SimpleAtoi(kv.second, &port)) return port;
  }
  return absl::NotFoundError(absl::StrCat("no '", key, "=' in ", port_file));
}

absl::StatusOr<std::string> HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("connect to port ", port, ": ", std::strerror(errno)));
  }
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  send(fd, request.data(), request.size(), 0);
  std::string response;
  char buffer[4096];
  ssize_t n;
  while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0) response.append(buffer, n);
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.", 0) != 0 || body == std::string::npos) {
    return absl::InternalError(absl::StrCat("not an HTTP response: ", response.substr(0, 200)));
  }
  if (response.find(" 200 ") == std::string::npos ||
      response.find(" 200 ") > response.find("\r\n")) {
    return absl::InternalError(
        absl::StrCat("HTTP error: ", response.substr(0, response.find("\r\n"))));
  }
  return response.substr(body + 4);
}

}  // namespace nimble::testing
