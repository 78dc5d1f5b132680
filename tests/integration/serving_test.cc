// Serving end to end against the real nimble-server process over loopback: upload of the small
// BERT with RepositoryModelLoad, concurrent inference checked against running the same
// executable in this process, the bidi stream, restart from the disk cache with zero
// compilations, unload under load, and every kind of bad input with its gRPC code.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/testing/status_matchers.h"
#include "compiler/driver/compiler.h"
#include "grpc_service.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/repository.h"
#include "server/test_models.h"
#include "tests/integration/server_process.h"
#include "vm/runtime/npy.h"
#include "vm/virtual_machine.h"

namespace nimble::testing {
namespace {

using ::nimble::testing::IsOk;
using ::testing::HasSubstr;

constexpr absl::Duration kStartTimeout = absl::Seconds(60);
constexpr char kModel[] = "bert";
constexpr char kConfig[] =
    R"({"max_batch_size": 4, "instance_groups": {"cpu": {"count": 2, "threads": 1}}})";
const std::vector<std::string> kInputs = {"input_ids", "attention_mask", "token_type_ids"};

std::string SmallBertPath() {
  const char* dir = std::getenv("NIMBLE_SMALL_MODELS_DIR");
  return absl::StrCat(dir != nullptr ? dir : "build/models-small", "/bert/model.onnx");
}

// A running server with its stub; stopped with SIGTERM (must exit 0).
struct RunningServer {
  std::unique_ptr<ChildProcess> child;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub;
  int metrics_port = 0;

  ~RunningServer() {
    if (child == nullptr) return;
    child->Signal(SIGTERM);
    auto code = child->WaitForExit(absl::Seconds(60));
    EXPECT_TRUE(code.ok() && *code == 0) << child->Stderr();
  }
};

absl::Status StartServer(const std::string& work_dir, const std::string& tag,
                         RunningServer* server) {
  const std::string port_file = absl::StrCat(work_dir, "/ports-", tag);
  std::filesystem::remove(port_file);
  NIMBLE_ASSIGN_OR_RETURN(
      server->child,
      ChildProcess::Start(
          NIMBLE_SERVER_BINARY,
          {"--model-repository=" + work_dir + "/repo", "--grpc-address=127.0.0.1:0",
           "--metrics-port=0", "--metrics-address=127.0.0.1", "--cache-dir=" + work_dir + "/cache",
           "--port-file=" + port_file, "--max-request-bytes=1000000", "--log-level=warn"},
          work_dir));
  NIMBLE_RETURN_IF_ERROR(server->child->WaitForFile(port_file, kStartTimeout));
  NIMBLE_ASSIGN_OR_RETURN(int grpc_port, ReadPort(port_file, "grpc"));
  NIMBLE_ASSIGN_OR_RETURN(server->metrics_port, ReadPort(port_file, "metrics"));
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  server->stub = inference::GRPCInferenceService::NewStub(grpc::CreateCustomChannel(
      absl::StrCat("127.0.0.1:", grpc_port), grpc::InsecureChannelCredentials(), args));
  return absl::OkStatus();
}

// Sum of every sample of a metric family on the /metrics page.
double MetricSum(int port, const std::string& name) {
  auto page = HttpGet(port, "/metrics");
  if (!page.ok()) return -1;
  double sum = 0;
  for (absl::string_view line : absl::StrSplit(*page, '\n')) {
    if (!absl::StartsWith(line, name) || line.size() <= name.size()) continue;
    const char next = line[name.size()];
    if (next != '{' && next != ' ') continue;
    double value = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) sum += value;
  }
  return sum;
}

bool WaitUntilReady(inference::GRPCInferenceService::Stub& stub, const std::string& model,
                    absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    grpc::ClientContext context;
    inference::ModelReadyRequest request;
    request.set_name(model);
    inference::ModelReadyResponse response;
    if (stub.ModelReady(&context, request, &response).ok() && response.ready()) return true;
    absl::SleepFor(absl::Milliseconds(20));  // polling a condition with a deadline
  }
  return false;
}

struct Case {
  int64_t batch = 1;
  int64_t seq = 1;
  std::vector<int64_t> ids, mask, types;
};

Case MakeCase(int64_t batch, int64_t seq, uint32_t seed) {
  std::mt19937 rng(seed);
  Case c{batch, seq, {}, {}, {}};
  for (int64_t i = 0; i < batch * seq; ++i) {
    c.ids.push_back(rng() % 30522);
    c.mask.push_back(i % seq <= seq / 2 + (i / seq) ? 1 : 0);
    c.types.push_back(i % seq >= seq / 2 ? 1 : 0);
  }
  return c;
}

inference::ModelInferRequest MakeRequest(const Case& c, bool raw) {
  inference::ModelInferRequest request;
  request.set_model_name(kModel);
  request.set_id(absl::StrCat("b", c.batch, "s", c.seq));
  const std::vector<const std::vector<int64_t>*> data = {&c.ids, &c.mask, &c.types};
  for (size_t i = 0; i < kInputs.size(); ++i) {
    auto* in = request.add_inputs();
    in->set_name(kInputs[i]);
    in->set_datatype("INT64");
    in->add_shape(c.batch);
    in->add_shape(c.seq);
    if (raw) {
      request.add_raw_input_contents(std::string(reinterpret_cast<const char*>(data[i]->data()),
                                                 data[i]->size() * sizeof(int64_t)));
    } else {
      in->mutable_contents()->mutable_int64_contents()->Assign(data[i]->begin(), data[i]->end());
    }
  }
  return request;
}

// The same executable run directly in this process.
std::vector<vm::Tensor> RunDirectly(const std::shared_ptr<const vm::Executable>& exe,
                                    const Case& c) {
  vm::VirtualMachine machine(exe);
  std::vector<vm::Tensor> inputs;
  for (const auto* data : {&c.ids, &c.mask, &c.types}) {
    inputs.push_back(vm::Tensor::FromVector<int64_t>(*data, {c.batch, c.seq}));
  }
  auto outputs = machine.Run(inputs);
  EXPECT_TRUE(outputs.ok()) << outputs.status();
  return outputs.ok() ? *outputs : std::vector<vm::Tensor>{};
}

// Compares a response with the direct run: names, shapes, and values within 1e-4 (the server's
// instances may split reductions over a different number of threads).
void ExpectSameOutputs(const inference::ModelInferResponse& response,
                       const std::shared_ptr<const vm::Executable>& exe,
                       const std::vector<vm::Tensor>& expected) {
  ASSERT_EQ(response.outputs_size(), static_cast<int>(expected.size()));
  ASSERT_EQ(response.raw_output_contents_size(), response.outputs_size());
  for (int i = 0; i < response.outputs_size(); ++i) {
    EXPECT_EQ(response.outputs(i).name(), exe->outputs[i].name);
    EXPECT_EQ(response.outputs(i).datatype(), "FP32");
    EXPECT_EQ(std::vector<int64_t>(response.outputs(i).shape().begin(),
                                   response.outputs(i).shape().end()),
              std::vector<int64_t>(expected[i].shape().begin(), expected[i].shape().end()));
    const std::string& raw = response.raw_output_contents(i);
    ASSERT_EQ(raw.size(), expected[i].nbytes());
    const float* want = expected[i].data<float>();
    int mismatches = 0;
    for (int64_t k = 0; k < expected[i].num_elements(); ++k) {
      float got;
      std::memcpy(&got, raw.data() + k * 4, 4);
      if (!(std::fabs(got - want[k]) <= 1e-4f + 1e-4f * std::fabs(want[k]))) ++mismatches;
    }
    EXPECT_EQ(mismatches, 0) << "output " << i << " of " << response.id();
  }
}

class ServingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // The pid keeps concurrent runs (other checkouts on the same machine) apart.
    work_dir_ =
        new std::string(::testing::TempDir() + "/nimble_serving_test_" + std::to_string(getpid()));
    std::filesystem::remove_all(*work_dir_);
    std::filesystem::create_directories(*work_dir_ + "/repo");
    auto bytes = server::ReadFile(SmallBertPath());
    ASSERT_TRUE(bytes.ok()) << bytes.status() << " (run the export_small_bert ctest fixture)";
    model_bytes_ = new std::string(*std::move(bytes));
    auto exe = compiler::CompileOnnxFile(SmallBertPath());
    ASSERT_TRUE(exe.ok()) << exe.status();
    exe_ = new std::shared_ptr<const vm::Executable>(*exe);
  }
  static void TearDownTestSuite() {
    // Kept for a look when something failed.
    if (!::testing::UnitTest::GetInstance()->Failed()) std::filesystem::remove_all(*work_dir_);
    delete exe_;
    delete model_bytes_;
    delete work_dir_;
  }

  // Uploads the small BERT as `name` (version 1) with `config` and waits for the answer.
  grpc::Status Upload(inference::GRPCInferenceService::Stub& stub, const std::string& name,
                      const std::string& config, const std::string& file_key = "file:1/model.onnx",
                      const std::string* bytes = nullptr) {
    grpc::ClientContext context;
    inference::RepositoryModelLoadRequest request;
    request.set_model_name(name);
    if (!config.empty()) (*request.mutable_parameters())["config"].set_string_param(config);
    (*request.mutable_parameters())[file_key].set_bytes_param(bytes ? *bytes : *model_bytes_);
    inference::RepositoryModelLoadResponse response;
    return stub.RepositoryModelLoad(&context, request, &response);
  }

  static std::string* work_dir_;
  static std::string* model_bytes_;
  static std::shared_ptr<const vm::Executable>* exe_;
};

std::string* ServingTest::work_dir_ = nullptr;
std::string* ServingTest::model_bytes_ = nullptr;
std::shared_ptr<const vm::Executable>* ServingTest::exe_ = nullptr;

TEST_F(ServingTest, UploadInferConcurrentlyRestartFromCacheStreamAndBadInputs) {
  auto first = std::make_unique<RunningServer>();
  ASSERT_THAT(StartServer(*work_dir_, "first", first.get()), IsOk());
  auto& stub = *first->stub;
  ASSERT_TRUE(Upload(stub, kModel, kConfig).ok());
  ASSERT_TRUE(WaitUntilReady(stub, kModel, absl::Seconds(5)));
  EXPECT_EQ(MetricSum(first->metrics_port, "nimble_compilations_total"), 1);

  // --- 32 concurrent clients, mixed sequence lengths, typed and raw inputs.
  const std::vector<int64_t> seqs = {1, 3, 8, 17, 33, 64};
  std::vector<Case> cases;
  std::vector<std::vector<vm::Tensor>> expected;
  for (size_t i = 0; i < 12; ++i) {
    cases.push_back(MakeCase(1 + i % 2, seqs[i % seqs.size()], static_cast<uint32_t>(i)));
    expected.push_back(RunDirectly(*exe_, cases.back()));
  }
  std::atomic<int> ok_count{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 32; ++t) {
    clients.emplace_back([&, t] {
      for (int r = 0; r < 3; ++r) {
        const size_t k = (t * 3 + r) % cases.size();
        grpc::ClientContext context;
        inference::ModelInferResponse response;
        grpc::Status status =
            stub.ModelInfer(&context, MakeRequest(cases[k], (t + r) % 2 == 0), &response);
        EXPECT_TRUE(status.ok()) << status.error_message();
        if (!status.ok()) continue;
        EXPECT_EQ(response.model_name(), kModel);
        EXPECT_EQ(response.model_version(), "1");
        ExpectSameOutputs(response, *exe_, expected[k]);
        ok_count.fetch_add(1);
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(ok_count.load(), 96);

  // --- A subset of outputs.
  {
    inference::ModelInferRequest request = MakeRequest(cases[2], true);
    request.add_outputs()->set_name("pooler_output");
    grpc::ClientContext context;
    inference::ModelInferResponse response;
    ASSERT_TRUE(stub.ModelInfer(&context, request, &response).ok());
    ASSERT_EQ(response.outputs_size(), 1);
    EXPECT_EQ(response.outputs(0).name(), "pooler_output");
  }

  // --- Metadata, config, statistics, index.
  {
    grpc::ClientContext context;
    inference::ModelMetadataRequest request;
    request.set_name(kModel);
    inference::ModelMetadataResponse metadata;
    ASSERT_TRUE(stub.ModelMetadata(&context, request, &metadata).ok());
    ASSERT_EQ(metadata.inputs_size(), 3);
    EXPECT_EQ(metadata.inputs(0).name(), "input_ids");
    EXPECT_EQ(metadata.inputs(0).datatype(), "INT64");
    EXPECT_EQ(
        std::vector<int64_t>(metadata.inputs(0).shape().begin(), metadata.inputs(0).shape().end()),
        (std::vector<int64_t>{-1, -1}));
    ASSERT_EQ(metadata.outputs_size(), 2);
    EXPECT_EQ(metadata.outputs(0).datatype(), "FP32");
    EXPECT_EQ(std::vector<int64_t>(metadata.outputs(0).shape().begin(),
                                   metadata.outputs(0).shape().end()),
              (std::vector<int64_t>{-1, -1, 128}));
    ASSERT_EQ(metadata.versions_size(), 1);
    EXPECT_EQ(metadata.versions(0), "1");
  }
  {
    grpc::ClientContext context;
    inference::ModelConfigRequest request;
    request.set_name(kModel);
    inference::ModelConfigResponse config;
    ASSERT_TRUE(stub.ModelConfig(&context, request, &config).ok());
    EXPECT_EQ(config.config().name(), kModel);
    ASSERT_EQ(config.config().input_size(), 3);
    EXPECT_EQ(config.config().input(0).name(), "input_ids");
    EXPECT_EQ(config.config().input(0).data_type(), inference::TYPE_INT64);
    EXPECT_EQ(config.config().max_batch_size(), 4);
    // Triton's convention: dims without the batch dim when the model batches.
    EXPECT_EQ(std::vector<int64_t>(config.config().input(0).dims().begin(),
                                   config.config().input(0).dims().end()),
              (std::vector<int64_t>{-1}));
    ASSERT_EQ(config.config().instance_group_size(), 1);
    EXPECT_EQ(config.config().instance_group(0).count(), 2);
  }
  {
    grpc::ClientContext context;
    inference::ModelStatisticsRequest request;
    request.set_name(kModel);
    inference::ModelStatisticsResponse stats;
    ASSERT_TRUE(stub.ModelStatistics(&context, request, &stats).ok());
    ASSERT_EQ(stats.model_stats_size(), 1);
    const auto& s = stats.model_stats(0);
    EXPECT_EQ(s.version(), "1");
    // 96 + 1 requests, batches of 1 and 2 alternate over the 12 cases (warm-up not counted).
    EXPECT_EQ(s.inference_stats().success().count(), 97u);
    EXPECT_EQ(s.inference_stats().compute_infer().count(), 97u);
    EXPECT_GT(s.inference_stats().compute_infer().ns(), 0u);
    EXPECT_EQ(s.inference_count(), 96u / 2 * 1 + 96u / 2 * 2 + 1);
    // max_batch_size 4 without paddable axes: concurrent requests of identical shapes share runs
    // (how many depends on timing), never more than 4 inferences in one.
    EXPECT_LE(s.execution_count(), 97u);
    EXPECT_GE(s.execution_count(), (145u + 3) / 4);
    uint64_t executions = 0, inferences = 0;
    for (const auto& b : s.batch_stats()) {
      EXPECT_GE(b.batch_size(), 1u);
      EXPECT_LE(b.batch_size(), 4u);
      executions += b.compute_infer().count();
      inferences += b.batch_size() * b.compute_infer().count();
    }
    EXPECT_EQ(executions, s.execution_count());
    EXPECT_EQ(inferences, 145u);
    EXPECT_EQ(MetricSum(first->metrics_port, "nimble_inference_count_total"), 145);
    EXPECT_EQ(MetricSum(first->metrics_port, "nimble_execution_count_total"),
              static_cast<double>(s.execution_count()));
    EXPECT_EQ(MetricSum(first->metrics_port, "nimble_model_ready"), 1);
    EXPECT_GT(MetricSum(first->metrics_port, "nimble_model_memory_bytes"), 1e6);
  }
  {
    grpc::ClientContext context;
    inference::RepositoryIndexResponse index;
    ASSERT_TRUE(stub.RepositoryIndex(&context, {}, &index).ok());
    ASSERT_EQ(index.models_size(), 1);
    EXPECT_EQ(index.models(0).name(), kModel);
    EXPECT_EQ(index.models(0).version(), "1");
    EXPECT_EQ(index.models(0).state(), "READY");
  }

  // --- The bidi stream answers every request, errors in error_message.
  {
    grpc::ClientContext context;
    auto stream = stub.ModelStreamInfer(&context);
    constexpr int kRequests = 20;
    for (int i = 0; i < kRequests; ++i) {
      inference::ModelInferRequest request = MakeRequest(cases[i % cases.size()], i % 2 == 0);
      request.set_id(absl::StrCat("stream-", i));
      if (i % 7 == 3) request.set_model_name("no_such_model");
      ASSERT_TRUE(stream->Write(request));
    }
    stream->WritesDone();
    int answered = 0, errors = 0;
    inference::ModelStreamInferResponse response;
    while (stream->Read(&response)) {
      ++answered;
      const int i = std::stoi(response.infer_response().id().substr(7));
      if (i % 7 == 3) {
        ++errors;
        EXPECT_THAT(response.error_message(), HasSubstr("unknown model 'no_such_model'"));
        continue;
      }
      EXPECT_EQ(response.error_message(), "");
      ExpectSameOutputs(response.infer_response(), *exe_, expected[i % cases.size()]);
    }
    EXPECT_TRUE(stream->Finish().ok());
    EXPECT_EQ(answered, kRequests);
    EXPECT_EQ(errors, 3);
  }

  // --- Bad input: each with its code and a message; the server keeps serving.
  auto infer = [&](const inference::ModelInferRequest& request) {
    grpc::ClientContext context;
    inference::ModelInferResponse response;
    return stub.ModelInfer(&context, request, &response);
  };
  auto expect_code = [&](inference::ModelInferRequest request, grpc::StatusCode code,
                         const std::string& message) {
    grpc::Status status = infer(request);
    EXPECT_EQ(status.error_code(), code) << message << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(message));
  };
  const inference::ModelInferRequest good = MakeRequest(cases[1], false);
  {
    auto r = good;
    r.set_model_name("nope");
    expect_code(r, grpc::StatusCode::NOT_FOUND, "unknown model 'nope'");
  }
  {
    auto r = good;
    r.set_model_version("7");
    expect_code(r, grpc::StatusCode::NOT_FOUND, "has no version 7");
  }
  {
    auto r = good;
    r.mutable_inputs()->RemoveLast();
    expect_code(r, grpc::StatusCode::INVALID_ARGUMENT, "missing input 'token_type_ids'");
  }
  {
    auto r = good;
    *r.add_inputs() = r.inputs(0);
    r.mutable_inputs(3)->set_name("extra");
    expect_code(r, grpc::StatusCode::INVALID_ARGUMENT, "unexpected input 'extra'");
  }
  {
    auto r = good;
    r.mutable_inputs(0)->set_datatype("FP32");
    expect_code(r, grpc::StatusCode::INVALID_ARGUMENT, "datatype FP32, the model expects INT64");
  }
  {
    auto r = good;
    r.mutable_inputs(1)->add_shape(1);
    expect_code(r, grpc::StatusCode::INVALID_ARGUMENT, "rank 3");
  }
  {
    auto r = good;  // seq 3 for input_ids, a different seq for the mask
    r.mutable_inputs(1)->set_shape(1, 2);
    r.mutable_inputs(1)->mutable_contents()->mutable_int64_contents()->Truncate(
        r.inputs(1).shape(0) * 2);
    expect_code(r, grpc::StatusCode::INVALID_ARGUMENT, "('seq')");
  }
  {
    auto r = MakeRequest(cases[1], true);
    r.mutable_raw_input_contents(2)->pop_back();
    expect_code(r, grpc::StatusCode::INVALID_ARGUMENT, "raw_input_contents has");
  }
  {
    auto r = MakeRequest(cases[1], false);
    r.mutable_inputs(0)->mutable_contents()->mutable_int64_contents()->RemoveLast();
    expect_code(r, grpc::StatusCode::INVALID_ARGUMENT, "elements, the shape needs");
  }
  {
    Case big = MakeCase(1, 50000, 1);  // 3 x 400 KB > --max-request-bytes=1000000
    expect_code(MakeRequest(big, true), grpc::StatusCode::RESOURCE_EXHAUSTED,
                "over --max-request-bytes");
  }
  {
    auto r = good;  // 1 us cannot cover decoding, queueing and a thread hand-off
    (*r.mutable_parameters())["timeout"].set_int64_param(1);
    expect_code(r, grpc::StatusCode::DEADLINE_EXCEEDED, "timed out");
    (*r.mutable_parameters())["timeout"].set_string_param("soon");
    expect_code(r, grpc::StatusCode::INVALID_ARGUMENT, "'timeout'");
  }
  {
    auto r = good;
    r.add_outputs()->set_name("logits");
    expect_code(r, grpc::StatusCode::INVALID_ARGUMENT, "unknown requested output 'logits'");
  }
  {
    grpc::Status status = Upload(stub, "bad_config", "{\"max_batch_size\": ");
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("config.json"));
    status = Upload(stub, "bad_config", R"({"max_batch_size": 4, "colour": "red"})");
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("colour"));
    status = Upload(stub, "bad_config", R"({"max_batch_size": "many"})");
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    const std::string not_onnx = "#!/bin/sh\necho this is not a model\n";
    grpc::Status status = Upload(stub, "not_onnx", "", "file:1/model.onnx", &not_onnx);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("is not an ONNX model"));
  }
  for (const std::string key : {"file:1/../../escape.onnx", "file:../model.onnx",
                                "file:/etc/passwd", "file:1/a/../../../x"}) {
    grpc::Status status = Upload(stub, "escape", "", key);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << key;
    EXPECT_THAT(status.error_message(), HasSubstr("upload file name")) << key;
  }
  {
    grpc::Status status = Upload(stub, "../evil", "");
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("invalid model name"));
  }
  EXPECT_FALSE(std::filesystem::exists(*work_dir_ + "/escape.onnx"));
  EXPECT_FALSE(std::filesystem::exists(*work_dir_ + "/evil"));
  EXPECT_FALSE(std::filesystem::exists(*work_dir_ + "/repo/not_onnx"));
  {
    // Rejected uploads leave nothing behind: the index still lists only the one model.
    grpc::ClientContext context;
    inference::RepositoryIndexResponse index;
    ASSERT_TRUE(stub.RepositoryIndex(&context, {}, &index).ok());
    ASSERT_EQ(index.models_size(), 1);
    EXPECT_EQ(index.models(0).name(), kModel);
    auto r = good;
    r.set_model_name("not_onnx");
    expect_code(r, grpc::StatusCode::NOT_FOUND, "unknown model 'not_onnx'");
  }
  // Still serving.
  {
    grpc::ClientContext context;
    inference::ModelInferResponse response;
    ASSERT_TRUE(stub.ModelInfer(&context, MakeRequest(cases[4], true), &response).ok());
    ExpectSameOutputs(response, *exe_, expected[4]);
  }

  // --- Restart with the same --cache-dir: READY again with zero compilations.
  first.reset();
  RunningServer server;
  ASSERT_THAT(StartServer(*work_dir_, "second", &server), IsOk());
  ASSERT_TRUE(WaitUntilReady(*server.stub, kModel, absl::Seconds(30)));
  EXPECT_EQ(MetricSum(server.metrics_port, "nimble_compilations_total"), 0);
  EXPECT_EQ(MetricSum(server.metrics_port, "nimble_executable_cache_hits_total"), 1);
  {
    grpc::ClientContext context;
    inference::ModelInferResponse response;
    ASSERT_TRUE(server.stub->ModelInfer(&context, MakeRequest(cases[5], false), &response).ok());
    ExpectSameOutputs(response, *exe_, expected[5]);
  }
  // A model the compiler rejects is UNAVAILABLE with the compiler's message in the index; the
  // others keep serving.
  {
    const std::string broken = server::testing::ElementwiseModel("NoSuchOp");
    grpc::Status status = Upload(*server.stub, "broken", "", "file:1/model.onnx", &broken);
    EXPECT_FALSE(status.ok());
    EXPECT_THAT(status.error_message(), HasSubstr("unsupported operator 'NoSuchOp'"));
    grpc::ClientContext context;
    inference::RepositoryIndexResponse index;
    ASSERT_TRUE(server.stub->RepositoryIndex(&context, {}, &index).ok());
    bool listed = false;
    for (const auto& m : index.models()) {
      if (m.name() != "broken") continue;
      listed = true;
      EXPECT_EQ(m.state(), "UNAVAILABLE");
      EXPECT_THAT(m.reason(), HasSubstr("NoSuchOp"));
    }
    EXPECT_TRUE(listed);
    grpc::ClientContext infer_context;
    inference::ModelInferResponse response;
    ASSERT_TRUE(
        server.stub->ModelInfer(&infer_context, MakeRequest(cases[3], true), &response).ok());
    ExpectSameOutputs(response, *exe_, expected[3]);
  }
  // Re-uploading identical bytes under another name is a cache hit too.
  ASSERT_TRUE(Upload(*server.stub, "bert_copy", kConfig).ok());
  EXPECT_EQ(MetricSum(server.metrics_port, "nimble_compilations_total"), 0);
}

// The reference the server is checked against is `nimblec run` itself: the same executable run
// in this process (which every server response above must match) agrees with it.
TEST_F(ServingTest, DirectRunsAgreeWithNimblecRun) {
  const std::string dir = *work_dir_ + "/nimblec";
  std::filesystem::create_directories(dir);
  for (const Case& c : {MakeCase(1, 5, 21), MakeCase(2, 33, 22)}) {
    std::vector<std::string> args = {"run", SmallBertPath(), "--output-dir", dir + "/out"};
    const std::vector<const std::vector<int64_t>*> data = {&c.ids, &c.mask, &c.types};
    for (size_t i = 0; i < kInputs.size(); ++i) {
      const std::string path = absl::StrCat(dir, "/", kInputs[i], ".npy");
      ASSERT_THAT(vm::WriteNpy(path, vm::Tensor::FromVector<int64_t>(*data[i], {c.batch, c.seq})),
                  IsOk());
      args.push_back("--input");
      args.push_back(absl::StrCat(kInputs[i], "=", path));
    }
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto child, ChildProcess::Start(NIMBLEC_BINARY, args, dir));
    NIMBLE_ASSERT_OK_AND_ASSIGN(int code, child->WaitForExit(absl::Seconds(60)));
    ASSERT_EQ(code, 0) << child->Stderr();
    const std::vector<vm::Tensor> direct = RunDirectly(*exe_, c);
    ASSERT_EQ(direct.size(), (*exe_)->outputs.size());
    for (size_t i = 0; i < direct.size(); ++i) {
      NIMBLE_ASSERT_OK_AND_ASSIGN(
          vm::Tensor from_nimblec,
          vm::ReadNpy(absl::StrCat(dir, "/out/", (*exe_)->outputs[i].name, ".npy")));
      ASSERT_EQ(from_nimblec.shape(), direct[i].shape());
      const float* a = from_nimblec.data<float>();
      const float* b = direct[i].data<float>();
      int mismatches = 0;
      for (int64_t k = 0; k < direct[i].num_elements(); ++k) {
        if (!(std::fabs(a[k] - b[k]) <= 1e-5f + 1e-5f * std::fabs(b[k]))) ++mismatches;
      }
      EXPECT_EQ(mismatches, 0) << (*exe_)->outputs[i].name;
    }
  }
}

TEST_F(ServingTest, UnloadWhileRequestsAreInFlight) {
  RunningServer server;
  ASSERT_THAT(StartServer(*work_dir_, "unload", &server), IsOk());
  auto& stub = *server.stub;
  ASSERT_TRUE(Upload(stub, "bert_unload", "").ok());
  const Case c = MakeCase(2, 64, 9);
  const std::vector<vm::Tensor> expected = RunDirectly(*exe_, c);
  inference::ModelInferRequest request = MakeRequest(c, true);
  request.set_model_name("bert_unload");

  std::atomic<int> ok{0}, unavailable{0}, other{0};
  std::atomic<bool> unloaded{false};
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&] {
      // Each client sends until it is told the model is gone (bounded, in case it never is).
      for (int i = 0; i < 2000; ++i) {
        grpc::ClientContext context;
        inference::ModelInferResponse response;
        grpc::Status status = stub.ModelInfer(&context, request, &response);
        if (status.ok()) {
          ok.fetch_add(1);
          ExpectSameOutputs(response, *exe_, expected);
        } else if (status.error_code() == grpc::StatusCode::UNAVAILABLE &&
                   absl::StrContains(status.error_message(), "bert_unload")) {
          unavailable.fetch_add(1);
          if (unloaded.load()) return;
        } else {
          other.fetch_add(1);
          ADD_FAILURE() << status.error_code() << ": " << status.error_message();
          return;
        }
      }
    });
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (ok.load() < 16 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_GE(ok.load(), 16);
  grpc::ClientContext context;
  inference::RepositoryModelUnloadRequest unload;
  unload.set_model_name("bert_unload");
  inference::RepositoryModelUnloadResponse unload_response;
  ASSERT_TRUE(stub.RepositoryModelUnload(&context, unload, &unload_response).ok());
  unloaded.store(true);
  for (auto& t : clients) t.join();
  EXPECT_EQ(other.load(), 0);
  EXPECT_GE(unavailable.load(), 8);  // every client saw the clear error after the unload
  grpc::ClientContext after_context;
  inference::ModelInferResponse response;
  grpc::Status after = stub.ModelInfer(&after_context, request, &response);
  EXPECT_EQ(after.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(after.error_message(), HasSubstr("model 'bert_unload' is unloaded"));
}

}  // namespace
}  // namespace nimble::testing
