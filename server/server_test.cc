// The server in-process, called over a real loopback gRPC channel.
#include "server/server.h"

#include <filesystem>

#include "base/testing/status_matchers.h"
#include "grpc_service.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "health.grpc.pb.h"

namespace nimble::server {
namespace {

using ::nimble::testing::StatusIs;
using ::testing::HasSubstr;

// An empty repository of its own (the temp directory itself may hold anything).
std::string EmptyRepository() {
  const std::string dir = ::testing::TempDir() + "/nimble_server_test_repo";
  std::filesystem::create_directories(dir);
  return dir;
}

ServerOptions TestOptions() {
  return ServerOptions{.model_repository = EmptyRepository(),
                       .grpc_address = "127.0.0.1:0",
                       .metrics_address = "127.0.0.1",
                       .metrics_port = 0,
                       .shutdown_grace = absl::Seconds(5)};
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    NIMBLE_ASSERT_OK_AND_ASSIGN(server_, Server::Create(TestOptions()));
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->grpc_port()),
                                   grpc::InsecureChannelCredentials());
    inference_ = inference::GRPCInferenceService::NewStub(channel_);
    health_ = grpc::health::v1::Health::NewStub(channel_);
  }

  grpc::health::v1::HealthCheckResponse::ServingStatus Health() {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = health_->Check(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.status();
  }

  bool Ready() {
    grpc::ClientContext context;
    inference::ServerReadyResponse response;
    EXPECT_TRUE(inference_->ServerReady(&context, {}, &response).ok());
    return response.ready();
  }

  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> inference_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

TEST_F(ServerTest, AnswersLivenessReadinessAndMetadata) {
  EXPECT_GT(server_->grpc_port(), 0);
  EXPECT_GT(server_->metrics_port(), 0);

  grpc::ClientContext live_context;
  inference::ServerLiveResponse live;
  ASSERT_TRUE(inference_->ServerLive(&live_context, {}, &live).ok());
  EXPECT_TRUE(live.live());
  EXPECT_TRUE(Ready());

  grpc::ClientContext metadata_context;
  inference::ServerMetadataResponse metadata;
  ASSERT_TRUE(inference_->ServerMetadata(&metadata_context, {}, &metadata).ok());
  EXPECT_EQ(metadata.name(), "nimble");
  EXPECT_EQ(metadata.version(), NIMBLE_VERSION);
  EXPECT_EQ(Health(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(ServerTest, UnknownModelIsNotFoundAndAnEmptyStreamEndsOk) {
  grpc::ClientContext context;
  inference::ModelInferRequest request;
  request.set_model_name("bert");
  inference::ModelInferResponse response;
  grpc::Status status = inference_->ModelInfer(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("unknown model 'bert'"));

  grpc::ClientContext stream_context;
  auto stream = inference_->ModelStreamInfer(&stream_context);
  stream->WritesDone();
  inference::ModelStreamInferResponse ignored;
  EXPECT_FALSE(stream->Read(&ignored));
  grpc::Status stream_status = stream->Finish();
  EXPECT_TRUE(stream_status.ok()) << stream_status.error_message();
}

TEST_F(ServerTest, DrainingTurnsHealthAndReadinessOffButStaysLive) {
  server_->BeginDrain();
  EXPECT_EQ(Health(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  EXPECT_FALSE(Ready());
  grpc::ClientContext context;
  inference::ServerLiveResponse live;
  ASSERT_TRUE(inference_->ServerLive(&context, {}, &live).ok());
  EXPECT_TRUE(live.live());
  server_->Shutdown();
  grpc::ClientContext after;
  after.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  EXPECT_FALSE(inference_->ServerLive(&after, {}, &live).ok());
}

TEST(ServerCreateTest, SecondServerOnTheSamePortFails) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto first, Server::Create(TestOptions()));
  ServerOptions options = TestOptions();
  options.grpc_address = "127.0.0.1:" + std::to_string(first->grpc_port());
  EXPECT_THAT(Server::Create(options),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("--grpc-address")));
}

TEST(ServerCreateTest, MissingRepositoryFails) {
  ServerOptions options = TestOptions();
  options.model_repository = ::testing::TempDir() + "/does/not/exist";
  EXPECT_THAT(Server::Create(options),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("does not exist")));
}

}  // namespace
}  // namespace nimble::server
