// The real nimble-server binary, started as a separate process and called over loopback: what
// `make serve` users and orchestrators see.
#include "tests/integration/server_process.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "base/testing/status_matchers.h"
#include "grpc_service.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "health.grpc.pb.h"
#include "reflection.grpc.pb.h"

namespace nimble::testing {
namespace {

using ::testing::AllOf;
using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr absl::Duration kStartTimeout = absl::Seconds(30);
constexpr absl::Duration kExitTimeout = absl::Seconds(30);

class ServerProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The pid keeps concurrent runs (other checkouts on the same machine) apart.
    work_dir_ = ::testing::TempDir() + "/nimble_server_process_" + std::to_string(getpid()) + "_" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(work_dir_);
    std::filesystem::create_directories(work_dir_ + "/repo");
  }

  void TearDown() override {
    if (!HasFailure()) std::filesystem::remove_all(work_dir_);
  }

  // Runs the server with `args` to completion (for flags that must be rejected).
  void ExpectRejected(const std::vector<std::string>& args, const std::string& message) {
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto child,
                                ChildProcess::Start(NIMBLE_SERVER_BINARY, args, work_dir_));
    NIMBLE_ASSERT_OK_AND_ASSIGN(int code, child->WaitForExit(kExitTimeout));
    EXPECT_NE(code, 0);
    const std::string err = child->Stderr();
    EXPECT_THAT(err, HasSubstr(message));
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << "want one line, got:\n" << err;
    EXPECT_THAT(err, ::testing::StartsWith("nimble-server: error: "));
  }

  std::string work_dir_;
};

TEST_F(ServerProcessTest, ServesHealthMetadataReflectionMetricsAndExitsCleanlyOnSigterm) {
  const std::string port_file = work_dir_ + "/ports";
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto server,
      ChildProcess::Start(NIMBLE_SERVER_BINARY,
                          {"--model-repository=" + work_dir_ + "/repo",
                           "--grpc-address=127.0.0.1:0", "--metrics-address=127.0.0.1",
                           "--metrics-port=0", "--port-file=" + port_file, "--log-format=json"},
                          work_dir_));
  ASSERT_THAT(server->WaitForFile(port_file, kStartTimeout), IsOk());
  NIMBLE_ASSERT_OK_AND_ASSIGN(int grpc_port, ReadPort(port_file, "grpc"));
  NIMBLE_ASSERT_OK_AND_ASSIGN(int metrics_port, ReadPort(port_file, "metrics"));

  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(grpc_port),
                                     grpc::InsecureChannelCredentials());
  auto inference = inference::GRPCInferenceService::NewStub(channel);
  {
    grpc::ClientContext context;
    inference::ServerLiveResponse response;
    ASSERT_TRUE(inference->ServerLive(&context, {}, &response).ok());
    EXPECT_TRUE(response.live());
  }
  {
    grpc::ClientContext context;
    inference::ServerMetadataResponse response;
    ASSERT_TRUE(inference->ServerMetadata(&context, {}, &response).ok());
    EXPECT_EQ(response.name(), "nimble");
    EXPECT_FALSE(response.version().empty());
  }
  {
    auto health = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckResponse response;
    ASSERT_TRUE(health->Check(&context, {}, &response).ok());
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
  {
    auto reflection = grpc::reflection::v1alpha::ServerReflection::NewStub(channel);
    grpc::ClientContext context;
    auto stream = reflection->ServerReflectionInfo(&context);
    grpc::reflection::v1alpha::ServerReflectionRequest request;
    request.set_list_services("");
    ASSERT_TRUE(stream->Write(request));
    grpc::reflection::v1alpha::ServerReflectionResponse response;
    ASSERT_TRUE(stream->Read(&response));
    stream->WritesDone();
    EXPECT_TRUE(stream->Finish().ok());
    std::vector<std::string> services;
    for (const auto& s : response.list_services_response().service()) services.push_back(s.name());
    EXPECT_THAT(services, ::testing::Contains("inference.GRPCInferenceService"));
  }

  NIMBLE_ASSERT_OK_AND_ASSIGN(std::string metrics, HttpGet(metrics_port, "/metrics"));
  EXPECT_THAT(metrics, ContainsRegex("\nprocess_resident_memory_bytes [0-9.e+]+\n"));
  EXPECT_THAT(metrics, ContainsRegex("\nprocess_open_fds [0-9]+\n"));
  EXPECT_THAT(metrics, HasSubstr("nimble_build_info{version=\""));
  EXPECT_THAT(
      metrics,
      ContainsRegex("nimble_grpc_requests_total\\{code=\"OK\",method=\"ServerLive\"\\} 1\n"));

  server->Signal(SIGTERM);
  NIMBLE_ASSERT_OK_AND_ASSIGN(int code, server->WaitForExit(kExitTimeout));
  EXPECT_EQ(code, 0) << server->Stderr();
  const std::string log = server->Stderr();
  EXPECT_THAT(log, HasSubstr(R"("msg":"received Terminated, shutting down)"));
  EXPECT_THAT(log, HasSubstr(R"("msg":"bye"})"));
  EXPECT_THAT(log, Not(HasSubstr(R"("level":"error")")));
}

TEST_F(ServerProcessTest, SigintAlsoStopsCleanly) {
  const std::string port_file = work_dir_ + "/ports";
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto server, ChildProcess::Start(
                       NIMBLE_SERVER_BINARY,
                       {"--model-repository=" + work_dir_ + "/repo", "--grpc-address=127.0.0.1:0",
                        "--metrics-port=-1", "--port-file=" + port_file},
                       work_dir_));
  ASSERT_THAT(server->WaitForFile(port_file, kStartTimeout), IsOk());
  server->Signal(SIGINT);
  NIMBLE_ASSERT_OK_AND_ASSIGN(int code, server->WaitForExit(kExitTimeout));
  EXPECT_EQ(code, 0) << server->Stderr();
}

TEST_F(ServerProcessTest, RejectsUnknownLogLevel) {
  ExpectRejected({"--model-repository=" + work_dir_ + "/repo", "--log-level=loud"},
                 "--log-level: unknown log level 'loud'");
}

TEST_F(ServerProcessTest, RejectsUnknownLogFormat) {
  ExpectRejected({"--model-repository=" + work_dir_ + "/repo", "--log-format=xml"},
                 "--log-format: unknown log format 'xml'");
}

TEST_F(ServerProcessTest, RejectsMissingRepository) {
  ExpectRejected({"--model-repository=" + work_dir_ + "/nope", "--grpc-address=127.0.0.1:0",
                  "--metrics-port=0"},
                 "model repository '" + work_dir_ + "/nope' does not exist");
}

TEST_F(ServerProcessTest, RejectsGrpcPortInUse) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  ExpectRejected({"--model-repository=" + work_dir_ + "/repo",
                  "--grpc-address=127.0.0.1:" + std::to_string(port), "--metrics-port=0"},
                 "--grpc-address: cannot listen on 127.0.0.1:" + std::to_string(port) +
                     ": Address already in use");
  ExpectRejected({"--model-repository=" + work_dir_ + "/repo", "--grpc-address=127.0.0.1:0",
                  "--metrics-address=127.0.0.1", "--metrics-port=" + std::to_string(port)},
                 "--metrics-port: cannot listen on 127.0.0.1:" + std::to_string(port));
  close(fd);
}

}  // namespace
}  // namespace nimble::testing
