// The load engine: connects to a KServe v2 gRPC server, discovers the model's inputs, and
// drives one closed- or open-loop level at a time through measurement windows until the
// stability rule (or a bound) ends it.
//
// Design: calls use the gRPC callback API on one channel. Closed loop keeps N calls in flight;
// each completion records its latency and issues the next call from the completion thread.
// Open loop runs one scheduler thread that computes send times from the arrival process and
// issues each call at (or, when it is behind, as soon as possible after) its scheduled time;
// latency is measured from the scheduled time, so a late send adds to the measured latency
// instead of hiding queueing (coordinated omission). Only calls issued after the warm-up count.
#pragma once

#include <memory>
#include <ostream>

#include "absl/status/statusor.h"
#include "grpc_service.grpc.pb.h"
#include "loadtest/distributions.h"
#include "loadtest/options.h"
#include "loadtest/report.h"
#include "loadtest/request_builder.h"

namespace nimble::load {

// Not thread-safe: one thread calls Create() then Run().
class LoadEngine {
 public:
  // Connects within options.connect_timeout, reads ModelMetadata/ModelConfig, and sends one
  // request at the longest sequence length. Errors are one line each: kUnavailable (server
  // unreachable), the server's code for an unknown model, and the server's message for a
  // request the model rejects.
  static absl::StatusOr<std::unique_ptr<LoadEngine>> Create(const LoadOptions& options,
                                                            std::ostream* progress);
  ~LoadEngine();

  // Every level of the sweep, in order.
  absl::StatusOr<RunReport> Run();

 private:
  class Level;
  LoadEngine(const LoadOptions& options, std::ostream* progress);
  absl::Status Connect();
  absl::Status Discover();
  absl::Status Preflight();
  LevelReport RunLevel(double level);

  LoadOptions options_;
  std::ostream* progress_;  // null = quiet
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub_;
  std::unique_ptr<SeqLenDistribution> seq_len_;
  std::unique_ptr<RequestBuilder> builder_;
  ModelSpec model_;
};

}  // namespace nimble::load
