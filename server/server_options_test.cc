#include "server/server_options.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "base/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace nimble::server {
namespace {

using ::nimble::testing::IsOk;
using ::nimble::testing::StatusIs;
using ::testing::HasSubstr;

// A listening loopback socket on a kernel-chosen port, closed at scope end.
class Listener {
 public:
  Listener() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    listen(fd_, 1);
    socklen_t len = sizeof(addr);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~Listener() { close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

TEST(ServerOptionsTest, ParsesHostPort) {
  EXPECT_EQ(ParseHostPort("127.0.0.1:8001")->port, 8001);
  EXPECT_EQ(ParseHostPort("127.0.0.1:8001")->host, "127.0.0.1");
  EXPECT_EQ(ParseHostPort("[::1]:0")->host, "::1");
  EXPECT_EQ(ParseHostPort("localhost:65535")->port, 65535);
  EXPECT_THAT(ParseHostPort("8001"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not HOST:PORT")));
  EXPECT_THAT(ParseHostPort("localhost:http"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no valid port")));
  EXPECT_THAT(ParseHostPort("localhost:70000"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no valid port")));
}

TEST(ServerOptionsTest, RepositoryMustBeAnExistingDirectory) {
  const std::filesystem::path dir = ::testing::TempDir() + "/nimble_repo_test";
  std::filesystem::create_directories(dir);
  EXPECT_THAT(CheckModelRepository(dir.string()), IsOk());
  EXPECT_THAT(CheckModelRepository((dir / "missing").string()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("does not exist")));
  std::ofstream(dir / "file") << "x";
  EXPECT_THAT(CheckModelRepository((dir / "file").string()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a directory")));
  EXPECT_THAT(CheckModelRepository(""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("required")));
}

TEST(ServerOptionsTest, PortInUseIsUnavailable) {
  Listener taken;
  EXPECT_THAT(CheckPortBindable({"127.0.0.1", taken.port()}),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("Address already in use")));
  EXPECT_THAT(CheckPortBindable({"127.0.0.1", 0}), IsOk());
  EXPECT_THAT(CheckPortBindable({"no-such-host.invalid", 80}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cannot resolve")));
}

TEST(ServerOptionsTest, ValidateNamesTheBadFlag) {
  const std::string repo = ::testing::TempDir();
  Listener taken;
  ServerOptions options{.model_repository = repo, .grpc_address = "127.0.0.1:0", .metrics_port = 0};
  EXPECT_THAT(ValidateOptions(options), IsOk());

  ServerOptions grpc_taken = options;
  grpc_taken.grpc_address = "127.0.0.1:" + std::to_string(taken.port());
  EXPECT_THAT(ValidateOptions(grpc_taken),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("--grpc-address")));

  ServerOptions metrics_taken = options;
  metrics_taken.metrics_address = "127.0.0.1";
  metrics_taken.metrics_port = taken.port();
  EXPECT_THAT(ValidateOptions(metrics_taken),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("--metrics-port")));

  ServerOptions bad_port = options;
  bad_port.metrics_port = 70000;
  EXPECT_THAT(ValidateOptions(bad_port),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("out of range")));
}

}  // namespace
}  // namespace nimble::server
