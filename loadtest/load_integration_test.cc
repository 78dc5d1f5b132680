// nimble-load end to end: the real binary against an in-process nimble-server on a loopback
// port, closed loop, open loop and a sweep for a fixed request count, checked through its JSON
// and CSV and the server's own statistics; plus the one-line failures (unknown model,
// unreachable server, a request the model rejects, a bad flag).
// GCC 12 reports a bogus -Wrestrict inside std::string (PR 105329) once protobuf builders are
// inlined here.
#pragma GCC diagnostic ignored "-Wrestrict"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/testing/status_matchers.h"
#include "compiler/frontend/onnx/onnx.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpc_service.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "spdlog/spdlog.h"
#include "tests/integration/server_process.h"

namespace nimble::load {
namespace {

using ::nimble::testing::ChildProcess;
using ::nimble::testing::IsOk;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kModel[] = "seq_identity";
constexpr absl::Duration kExitTimeout = absl::Seconds(60);

// y = Identity(x), x: FP32[b, s, 4] with b and s symbols; served with max_batch_size 4, so b is
// the batch dim and s the sequence axis.
std::string SeqIdentityModel() {
  nimble::onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(17);
  auto* graph = model.mutable_graph();
  graph->set_name("seq_identity");
  auto* node = graph->add_node();
  node->set_op_type("Identity");
  node->add_input("x");
  node->add_output("y");
  for (const char* name : {"x", "y"}) {
    auto* value = std::string(name) == "x" ? graph->add_input() : graph->add_output();
    value->set_name(name);
    auto* tensor = value->mutable_type()->mutable_tensor_type();
    tensor->set_elem_type(1);  // FLOAT
    tensor->mutable_shape()->add_dim()->set_dim_param("b");
    tensor->mutable_shape()->add_dim()->set_dim_param("s");
    tensor->mutable_shape()->add_dim()->set_dim_value(4);
  }
  return model.SerializeAsString();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

struct LoadRun {
  int exit_code = -1;
  std::string stdout_text;
  std::string stderr_text;
};

class LoadIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    spdlog::set_level(spdlog::level::warn);
    work_dir_ = new std::string(::testing::TempDir() + "nimble_load_integration");
    std::filesystem::remove_all(*work_dir_);
    std::filesystem::create_directories(*work_dir_ + "/repo");
    server::ServerOptions options{.model_repository = *work_dir_ + "/repo",
                                  .grpc_address = "127.0.0.1:0",
                                  .metrics_address = "127.0.0.1",
                                  .metrics_port = 0};
    auto server = server::Server::Create(options);
    ASSERT_THAT(server.status(), IsOk());
    server_ = server->release();
    auto stub = inference::GRPCInferenceService::NewStub(
        grpc::CreateChannel(Url(), grpc::InsecureChannelCredentials()));
    // RepositoryModelLoad answers once the model is READY (or with the compile error).
    grpc::ClientContext context;
    inference::RepositoryModelLoadRequest load;
    load.set_model_name(kModel);
    (*load.mutable_parameters())["config"].set_string_param(R"({"max_batch_size": 4})");
    (*load.mutable_parameters())["file:1/model.onnx"].set_bytes_param(SeqIdentityModel());
    inference::RepositoryModelLoadResponse response;
    const grpc::Status status = stub->RepositoryModelLoad(&context, load, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }

  static void TearDownTestSuite() {
    if (server_ != nullptr) server_->Shutdown();
    delete server_;
    server_ = nullptr;
    delete work_dir_;
  }

  static std::string Url() { return absl::StrCat("127.0.0.1:", server_->grpc_port()); }

  static LoadRun RunLoad(std::vector<std::string> args) {
    LoadRun run;
    auto child = ChildProcess::Start(NIMBLE_LOAD_BINARY, args, *work_dir_);
    EXPECT_THAT(child.status(), IsOk());
    if (!child.ok()) return run;
    auto code = (*child)->WaitForExit(kExitTimeout);
    EXPECT_THAT(code.status(), IsOk());
    run.exit_code = code.ok() ? *code : -1;
    run.stdout_text = (*child)->Stdout();
    run.stderr_text = (*child)->Stderr();
    return run;
  }

  // The JSON report, parsed (fails the test when it is not well-formed JSON).
  static google::protobuf::Struct ParseJson(const std::string& path) {
    google::protobuf::Struct root;
    const std::string text = ReadFile(path);
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(text, &root).ok()) << text;
    return root;
  }

  static std::string Path(absl::string_view name) { return absl::StrCat(*work_dir_, "/", name); }

  static server::Server* server_;
  static std::string* work_dir_;
};

server::Server* LoadIntegrationTest::server_ = nullptr;
std::string* LoadIntegrationTest::work_dir_ = nullptr;

const google::protobuf::Value& Field(const google::protobuf::Struct& s, const std::string& key) {
  static const google::protobuf::Value* missing = new google::protobuf::Value();
  auto it = s.fields().find(key);
  EXPECT_NE(it, s.fields().end()) << "no field " << key;
  return it == s.fields().end() ? *missing : it->second;
}

TEST_F(LoadIntegrationTest, ClosedLoopFixedRequestCount) {
  const LoadRun run = RunLoad(
      {"--url",         Url(),
       "--model",       kModel,
       "--concurrency", "3",
       "--requests",    "200",
       "--warmup",      "0s",
       "--window",      "60s",
       "--seq-len",     "lognormal:mean=12,max=32",
       "--json",        Path("closed.json"),
       "--csv",         Path("closed.csv"),
       "--metrics-url", absl::StrCat("http://127.0.0.1:", server_->metrics_port(), "/metrics"),
       "--quiet"});
  ASSERT_EQ(run.exit_code, 0) << run.stderr_text;
  EXPECT_THAT(run.stdout_text, HasSubstr("concurrency"));
  const google::protobuf::Struct root = ParseJson(Path("closed.json"));
  EXPECT_EQ(Field(root, "mode").string_value(), "closed");
  EXPECT_EQ(Field(Field(root, "inputs").struct_value(), "x").string_value(), "FP32[batch=1,seq,4]");
  ASSERT_EQ(Field(root, "levels").list_value().values_size(), 1);
  const auto& level = Field(root, "levels").list_value().values(0).struct_value();
  EXPECT_EQ(Field(level, "concurrency").number_value(), 3);
  EXPECT_EQ(Field(level, "stop_reason").string_value(), "requests");
  EXPECT_EQ(Field(level, "completed").number_value(), 200);
  EXPECT_EQ(Field(level, "failed").number_value(), 0);
  EXPECT_EQ(Field(level, "errors").list_value().values_size(), 0);
  const auto& latency = Field(level, "latency").struct_value();
  EXPECT_GT(Field(latency, "p50_us").number_value(), 0);
  EXPECT_LE(Field(latency, "p50_us").number_value(), Field(latency, "p99_us").number_value());
  // The server saw exactly the measured requests (the preflight request precedes the snapshot).
  const auto& server = Field(level, "server").struct_value();
  EXPECT_TRUE(Field(server, "available").bool_value());
  EXPECT_EQ(Field(server, "requests").number_value(), 200);
  // max_batch_size 4 batches concurrent requests of identical shapes (3 clients: at most 3).
  EXPECT_GE(Field(server, "avg_batch").number_value(), 1);
  EXPECT_LE(Field(server, "avg_batch").number_value(), 3);
  const auto& deltas = Field(Field(level, "metrics").struct_value(), "deltas").struct_value();
  EXPECT_EQ(Field(deltas, absl::StrCat("nimble_inference_requests_total{model=\"", kModel,
                                       "\",status=\"success\",version=\"1\"}"))
                .number_value(),
            200);

  const std::vector<std::string> csv =
      absl::StrSplit(ReadFile(Path("closed.csv")), '\n', absl::SkipEmpty());
  ASSERT_EQ(csv.size(), 2u);
  EXPECT_THAT(csv[0], StartsWith("Concurrency,Inferences/Second,Client Send,"));
  EXPECT_THAT(csv[1], StartsWith("3,"));
}

TEST_F(LoadIntegrationTest, OpenLoopPoissonFixedRequestCount) {
  const LoadRun run =
      RunLoad({"--url", Url(), "--model", kModel, "--rate", "400", "--arrivals", "poisson",
               "--requests", "150", "--warmup", "0s", "--window", "60s", "--seq-len",
               "zipf:s=1.1,max=64", "--json", Path("open.json"), "--quiet"});
  ASSERT_EQ(run.exit_code, 0) << run.stderr_text;
  EXPECT_THAT(run.stdout_text, HasSubstr("behind schedule"));
  const google::protobuf::Struct root = ParseJson(Path("open.json"));
  EXPECT_EQ(Field(root, "mode").string_value(), "open");
  EXPECT_EQ(Field(root, "arrivals").string_value(), "poisson");
  const auto& level = Field(root, "levels").list_value().values(0).struct_value();
  EXPECT_EQ(Field(level, "rate").number_value(), 400);
  EXPECT_EQ(Field(level, "sent").number_value(), 150);
  EXPECT_EQ(Field(level, "completed").number_value(), 150);
  EXPECT_EQ(Field(level, "failed").number_value(), 0);
  EXPECT_GE(Field(level, "late_sends").number_value(), 0);
  EXPECT_LE(Field(level, "late_sends").number_value(), 150);
}

TEST_F(LoadIntegrationTest, ConcurrencySweepGivesOneRowPerLevel) {
  const LoadRun run = RunLoad({"--url", Url(), "--model", kModel, "--concurrency", "1:4:x2",
                               "--requests", "40", "--warmup", "0s", "--csv", Path("sweep.csv"),
                               "--json", Path("sweep.json"), "--quiet"});
  ASSERT_EQ(run.exit_code, 0) << run.stderr_text;
  const std::vector<std::string> csv =
      absl::StrSplit(ReadFile(Path("sweep.csv")), '\n', absl::SkipEmpty());
  ASSERT_EQ(csv.size(), 4u);
  EXPECT_THAT(csv[1], StartsWith("1,"));
  EXPECT_THAT(csv[2], StartsWith("2,"));
  EXPECT_THAT(csv[3], StartsWith("4,"));
  const google::protobuf::Struct root = ParseJson(Path("sweep.json"));
  for (const auto& level : Field(root, "levels").list_value().values()) {
    EXPECT_EQ(Field(level.struct_value(), "completed").number_value(), 40);
  }
}

TEST_F(LoadIntegrationTest, WindowsEndAtMaxWindowsOrDuration) {
  // Two windows can never meet the three-window stability rule: "unstable" at --max-windows.
  LoadRun run = RunLoad({"--url", Url(), "--model", kModel, "--concurrency", "2", "--warmup",
                         "100ms", "--window", "150ms", "--max-windows", "2", "--json",
                         Path("windows.json"), "--quiet"});
  ASSERT_EQ(run.exit_code, 0) << run.stderr_text;
  google::protobuf::Struct root = ParseJson(Path("windows.json"));
  const auto& unstable = Field(root, "levels").list_value().values(0).struct_value();
  EXPECT_EQ(Field(unstable, "stop_reason").string_value(), "unstable");
  EXPECT_FALSE(Field(unstable, "stable").bool_value());
  EXPECT_EQ(Field(unstable, "windows").list_value().values_size(), 2);
  EXPECT_EQ(Field(unstable, "reported_windows").number_value(), 2);
  EXPECT_GT(Field(unstable, "completed").number_value(), 0);
  EXPECT_EQ(Field(unstable, "failed").number_value(), 0);

  // --duration cuts the second window short.
  run = RunLoad({"--url", Url(), "--model", kModel, "--rate", "200", "--warmup", "0s", "--window",
                 "150ms", "--duration", "200ms", "--json", Path("duration.json"), "--quiet"});
  ASSERT_EQ(run.exit_code, 0) << run.stderr_text;
  root = ParseJson(Path("duration.json"));
  const auto& timed = Field(root, "levels").list_value().values(0).struct_value();
  EXPECT_EQ(Field(timed, "stop_reason").string_value(), "duration");
  EXPECT_EQ(Field(timed, "windows").list_value().values_size(), 2);
  // Wake-up latency on a loaded machine is the tolerance.
  EXPECT_NEAR(Field(timed, "seconds").number_value(), 0.2, 0.1);
}

TEST_F(LoadIntegrationTest, UnknownModelIsOneLineAndExitCodeOne) {
  const LoadRun run = RunLoad({"--url", Url(), "--model", "no_such_model", "--requests", "5"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.stderr_text, StartsWith("nimble-load: model 'no_such_model': "));
  EXPECT_THAT(run.stderr_text, HasSubstr("NOT_FOUND"));
  EXPECT_EQ(std::count(run.stderr_text.begin(), run.stderr_text.end(), '\n'), 1);
}

TEST_F(LoadIntegrationTest, UnreachableServerFailsWithinTheConnectDeadline) {
  // Nothing listens on loopback port 1.
  const absl::Time start = absl::Now();
  const LoadRun run =
      RunLoad({"--url", "127.0.0.1:1", "--model", kModel, "--connect-timeout", "1s"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_EQ(run.stderr_text, "nimble-load: cannot connect to 127.0.0.1:1 within 1s\n");
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
}

TEST_F(LoadIntegrationTest, RejectedShapeReportsTheServersMessage) {
  // max_batch_size is 4: the server refuses a batch of 8.
  const LoadRun run =
      RunLoad({"--url", Url(), "--model", kModel, "--batch", "8", "--requests", "5"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.stderr_text,
              StartsWith("nimble-load: model 'seq_identity' rejected a request (x FP32[8,"));
  EXPECT_THAT(run.stderr_text, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_EQ(std::count(run.stderr_text.begin(), run.stderr_text.end(), '\n'), 1);
}

TEST_F(LoadIntegrationTest, BadFlagIsUsageErrorTwo) {
  const LoadRun run = RunLoad({"--url", Url(), "--model", kModel, "--seq-len", "gauss:3"});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_THAT(run.stderr_text, StartsWith("nimble-load: --seq-len 'gauss:3'"));
}

}  // namespace
}  // namespace nimble::load
