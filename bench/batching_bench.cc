// BERT throughput on a mixed-length workload through an in-process nimble-server over loopback:
// padding-batching versus batching only identical shapes versus no batching (one instance on
// every core, and two instances of half the cores each), same run, same requests. Each mode is one
// server with its own config (same buckets, so the same specialized executables); `kClients` client
// threads send the same pre-built requests with blocking ModelInfer calls (closed loop). Every
// response of the batching modes is checked against the no-batching response of the same request
// (counter max_abs_diff, pooler_output).
//
// Run: build/bench/bench_batching [--model=PATH] [--requests=N] [--clients=C] [--max-len=L]
//   PATH defaults to build/models/bert/model.onnx (BERT-base; inputs input_ids, attention_mask,
//   token_type_ids [batch, seq]; outputs last_hidden_state, pooler_output).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "grpc_service.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/server.h"
#include "spdlog/spdlog.h"

namespace nimble::server {
namespace {

std::string g_model = "build/models/bert/model.onnx";
int g_requests = 192;
int g_clients = 16;
int g_max_len = 128;

enum Mode { kNoBatching = 0, kIdenticalShapes = 1, kPadding = 2, kNoBatchingTwoInstances = 3 };

const char* ModeName(int mode) {
  switch (mode) {
    case kNoBatching:
      return "no_batching";
    case kIdenticalShapes:
      return "identical_shapes";
    case kNoBatchingTwoInstances:
      return "no_batching_2_instances";
    default:
      return "padding";
  }
}

std::string Config(int mode) {
  // Same buckets in every mode: the runs use the same specialized executables.
  std::string buckets;
  for (int b = 16; b <= g_max_len; b *= 2)
    absl::StrAppend(&buckets, buckets.empty() ? "" : ", ", b);
  const bool batching_on = mode == kIdenticalShapes || mode == kPadding;
  const std::string batching =
      batching_on ? R"("max_batch_size": 8, "max_queue_delay_us": 2000)" : R"("max_batch_size": 1)";
  // One instance on every core, or (the oversubscription check) two instances of half each.
  const unsigned half = std::max(1u, std::thread::hardware_concurrency() / 2);
  const std::string instances = mode == kNoBatchingTwoInstances
                                    ? absl::StrCat(R"({"count": 2, "threads": )", half, "}")
                                    : std::string(R"({"count": 1})");
  const std::string pad = mode == kPadding
                              ? R"(, "inputs": [{"name": "input_ids", "paddable_axes": [1]},
                {"name": "attention_mask", "paddable_axes": [1]},
                {"name": "token_type_ids", "paddable_axes": [1]}],
              "outputs": [{"name": "last_hidden_state", "slice_axes": [1]}])"
                              : "";
  return absl::StrCat(R"({"buckets": {"seq": {"bounds": [)", buckets, "]}}, ", batching,
                      R"(, "instance_groups": {"cpu": )", instances, "}", pad, "}");
}

// The workload: lengths uniform in 1..max_len (fixed seed), random token ids, full masks.
std::vector<inference::ModelInferRequest> Requests() {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> length(1, g_max_len);
  std::uniform_int_distribution<int64_t> token(1000, 29999);
  std::vector<inference::ModelInferRequest> requests;
  for (int i = 0; i < g_requests; ++i) {
    const int64_t seq = length(rng);
    inference::ModelInferRequest r;
    r.set_model_name("bert");
    r.set_id(std::to_string(i));
    std::vector<int64_t> ids(seq), mask(seq, 1), types(seq, 0);
    for (int64_t& t : ids) t = token(rng);
    for (const auto& [name, data] :
         {std::pair<const char*, const std::vector<int64_t>*>{"input_ids", &ids},
          {"attention_mask", &mask},
          {"token_type_ids", &types}}) {
      auto* in = r.add_inputs();
      in->set_name(name);
      in->set_datatype("INT64");
      in->add_shape(1);
      in->add_shape(seq);
      r.add_raw_input_contents(reinterpret_cast<const char*>(data->data()),
                               data->size() * sizeof(int64_t));
    }
    requests.push_back(std::move(r));
  }
  return requests;
}

// pooler_output of each request in the no-batching mode: the reference.
std::vector<std::vector<float>>& Reference() {
  static std::vector<std::vector<float>> reference;
  return reference;
}

std::vector<float> Pooler(const inference::ModelInferResponse& response) {
  for (int i = 0; i < response.outputs_size(); ++i) {
    if (response.outputs(i).name() != "pooler_output") continue;
    const std::string& raw = response.raw_output_contents(i);
    std::vector<float> v(raw.size() / sizeof(float));
    std::memcpy(v.data(), raw.data(), v.size() * sizeof(float));
    return v;
  }
  return {};
}

bool WaitReady(inference::GRPCInferenceService::Stub& stub) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(10);
  while (std::chrono::steady_clock::now() < deadline) {
    grpc::ClientContext context;
    inference::ModelReadyRequest ready;
    ready.set_name("bert");
    inference::ModelReadyResponse response;
    if (stub.ModelReady(&context, ready, &response).ok() && response.ready()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // bounded readiness poll
  }
  return false;
}

void BM_MixedLengthBert(benchmark::State& state) {
  spdlog::set_level(spdlog::level::warn);
  const int mode = static_cast<int>(state.range(0));
  state.SetLabel(ModeName(mode));
  if (!std::filesystem::exists(g_model)) {
    state.SkipWithError(absl::StrCat("no model at ", g_model, " (make models)").c_str());
    return;
  }
  const std::filesystem::path repo = std::filesystem::temp_directory_path() /
                                     absl::StrCat("nimble_bench_batching_", ModeName(mode));
  std::filesystem::remove_all(repo);
  std::filesystem::create_directories(repo / "bert" / "1");
  std::filesystem::create_symlink(std::filesystem::absolute(g_model),
                                  repo / "bert" / "1" / "model.onnx");
  std::ofstream(repo / "bert" / "config.json") << Config(mode);
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
  if (!WaitReady(*stub)) {
    state.SkipWithError("model not READY after 10 minutes");
    return;
  }
  // The first load serves from the generic variant while the buckets compile; loading again
  // waits for that compile and takes the specialized executable from the cache.
  {
    grpc::ClientContext context;
    inference::RepositoryModelLoadRequest load;
    load.set_model_name("bert");
    inference::RepositoryModelLoadResponse loaded;
    grpc::Status status = stub->RepositoryModelLoad(&context, load, &loaded);
    if (!status.ok()) {
      state.SkipWithError(status.error_message().c_str());
      return;
    }
  }
  const std::vector<inference::ModelInferRequest> requests = Requests();
  std::vector<std::vector<float>> pooled(requests.size());
  std::vector<double> latency_ms(requests.size());
  std::atomic<int> failures{0};
  std::string first_error;
  std::mutex error_mu;
  double seconds = 0;
  for (auto _ : state) {
    std::atomic<int> next{0};
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> clients;
    for (int c = 0; c < g_clients; ++c) {
      clients.emplace_back([&] {
        for (int i; (i = next.fetch_add(1)) < static_cast<int>(requests.size());) {
          grpc::ClientContext context;
          inference::ModelInferResponse response;
          const auto sent = std::chrono::steady_clock::now();
          grpc::Status status = stub->ModelInfer(&context, requests[i], &response);
          latency_ms[i] =
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - sent)
                  .count();
          if (!status.ok()) {
            if (failures.fetch_add(1) == 0) {
              std::lock_guard<std::mutex> lock(error_mu);
              first_error = status.error_message();
            }
            continue;
          }
          pooled[i] = Pooler(response);
        }
      });
    }
    for (std::thread& t : clients) t.join();
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  if (failures.load() > 0) {
    state.SkipWithError(absl::StrCat(failures.load(), " requests failed: ", first_error).c_str());
    return;
  }
  {
    grpc::ClientContext context;
    inference::ModelStatisticsRequest request;
    request.set_name("bert");
    inference::ModelStatisticsResponse stats;
    if (stub->ModelStatistics(&context, request, &stats).ok() && stats.model_stats_size() == 1) {
      const auto& s = stats.model_stats(0);
      // The warm-up ran before the statistics count; the executions include only requests.
      state.counters["avg_batch"] =
          s.execution_count() > 0
              ? static_cast<double>(s.inference_count()) / static_cast<double>(s.execution_count())
              : 0;
    }
  }
  if (mode == kNoBatching) {
    Reference() = pooled;
  } else if (Reference().size() == pooled.size()) {
    double diff = 0;
    for (size_t i = 0; i < pooled.size(); ++i) {
      if (pooled[i].size() != Reference()[i].size()) {
        diff = INFINITY;
        break;
      }
      for (size_t k = 0; k < pooled[i].size(); ++k) {
        diff = std::max(diff, static_cast<double>(std::fabs(pooled[i][k] - Reference()[i][k])));
      }
    }
    state.counters["max_abs_diff"] = diff;
  }
  std::sort(latency_ms.begin(), latency_ms.end());
  state.counters["infer_per_s"] = static_cast<double>(requests.size()) / seconds;
  state.counters["p50_ms"] = latency_ms[latency_ms.size() / 2];
  state.counters["p99_ms"] = latency_ms[latency_ms.size() * 99 / 100];
  state.SetItemsProcessed(static_cast<int64_t>(requests.size()) * state.iterations());
}
// No batching first: it is the reference the others are checked against.
BENCHMARK(BM_MixedLengthBert)
    ->Arg(kNoBatching)
    ->Arg(kIdenticalShapes)
    ->Arg(kPadding)
    ->Arg(kNoBatchingTwoInstances)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kSecond);

}  // namespace
}  // namespace nimble::server

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* flag) -> const char* {
      return arg.rfind(flag, 0) == 0 ? argv[i] + std::strlen(flag) : nullptr;
    };
    if (const char* v = value("--model=")) {
      nimble::server::g_model = v;
    } else if (const char* v = value("--requests=")) {
      nimble::server::g_requests = std::max(1, std::atoi(v));
    } else if (const char* v = value("--clients=")) {
      nimble::server::g_clients = std::max(1, std::atoi(v));
    } else if (const char* v = value("--max-len=")) {
      nimble::server::g_max_len = std::max(16, std::atoi(v));
    } else {
      std::fprintf(stderr, "unknown argument: %s\n", argv[i]);
      return 2;
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
