// gRPC round trip over loopback against an in-process nimble-server: the floor under every
// inference call. Run: build/bench/bench_grpc_roundtrip
// GCC 12 reports a bogus -Wrestrict inside std::string (PR 105329) once the in-memory model
// builder is inlined here.
#pragma GCC diagnostic ignored "-Wrestrict"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "benchmark/benchmark.h"
#include "grpc_service.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/server.h"
#include "server/test_models.h"
#include "spdlog/spdlog.h"

namespace nimble::server {
namespace {

void BM_ServerLiveRoundTrip(benchmark::State& state) {
  spdlog::set_level(spdlog::level::warn);
  // An empty repository of its own: the server loads every model directory it finds.
  const std::filesystem::path repo =
      std::filesystem::temp_directory_path() / "nimble_bench_grpc_roundtrip_repo";
  std::filesystem::create_directories(repo);
  ServerOptions options{
      .model_repository = repo.string(), .grpc_address = "127.0.0.1:0", .metrics_port = -1};
  auto server = Server::Create(options);
  if (!server.ok()) {
    state.SkipWithError(server.status().ToString().c_str());
    return;
  }
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string((*server)->grpc_port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = inference::GRPCInferenceService::NewStub(channel);
  inference::ServerLiveRequest request;
  inference::ServerLiveResponse response;
  for (auto _ : state) {
    grpc::ClientContext context;
    grpc::Status status = stub->ServerLive(&context, request, &response);
    if (!status.ok()) {
      state.SkipWithError(status.error_message().c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ServerLiveRoundTrip)->UseRealTime()->Unit(benchmark::kMicrosecond);

// ModelInfer of an identity model ([n, 4] f32, one row, raw contents) at concurrency 1: request
// decoding, validation, queueing, the VM call and the response. Counters p50_us / p99_us are
// per-call latencies (issue target: p50 <= 100 us over loopback).
void BM_IdentityInferRoundTrip(benchmark::State& state) {
  spdlog::set_level(spdlog::level::warn);
  const std::filesystem::path repo =
      std::filesystem::temp_directory_path() / "nimble_bench_identity_repo";
  std::filesystem::remove_all(repo);
  std::filesystem::create_directories(repo / "identity" / "1");
  std::ofstream(repo / "identity" / "1" / "model.onnx", std::ios::binary)
      << testing::ElementwiseModel("Identity", 1, 1);
  ServerOptions options{
      .model_repository = repo.string(), .grpc_address = "127.0.0.1:0", .metrics_port = -1};
  auto server = Server::Create(options);
  if (!server.ok()) {
    state.SkipWithError(server.status().ToString().c_str());
    return;
  }
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string((*server)->grpc_port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = inference::GRPCInferenceService::NewStub(channel);
  // Wait (bounded) for the background compile and warm-up.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    grpc::ClientContext context;
    inference::ModelReadyRequest ready;
    ready.set_name("identity");
    inference::ModelReadyResponse response;
    if (stub->ModelReady(&context, ready, &response).ok() && response.ready()) break;
    if (std::chrono::steady_clock::now() > deadline) {
      state.SkipWithError("identity model not READY after 60 s");
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  inference::ModelInferRequest request;
  request.set_model_name("identity");
  auto* input = request.add_inputs();
  input->set_name("x");
  input->set_datatype("FP32");
  input->add_shape(1);
  input->add_shape(4);
  const float values[4] = {1, 2, 3, 4};
  request.add_raw_input_contents(reinterpret_cast<const char*>(values), sizeof(values));
  inference::ModelInferResponse response;
  std::vector<double> us;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    grpc::ClientContext context;
    grpc::Status status = stub->ModelInfer(&context, request, &response);
    us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
                     .count());
    if (!status.ok()) {
      state.SkipWithError(status.error_message().c_str());
      break;
    }
  }
  std::sort(us.begin(), us.end());
  if (!us.empty()) {
    state.counters["p50_us"] = us[us.size() / 2];
    state.counters["p99_us"] = us[us.size() * 99 / 100];
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_IdentityInferRoundTrip)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace nimble::server

BENCHMARK_MAIN();
