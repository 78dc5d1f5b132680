// gRPC round trip over loopback against an in-process nimble-server: the floor under every
// inference call. Run: build/bench/bench_grpc_roundtrip
#include <filesystem>

#include "benchmark/benchmark.h"
#include "grpc_service.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/server.h"
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

}  // namespace
}  // namespace nimble::server

BENCHMARK_MAIN();
