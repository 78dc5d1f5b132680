// Per model version statistics in Triton's shape (what ModelStatistics answers).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>

#include "grpc_service.pb.h"

namespace nimble::server {

// Durations of one request's phases, in nanoseconds.
struct RequestTimings {
  uint64_t queue_ns = 0;
  uint64_t compute_input_ns = 0;
  uint64_t compute_infer_ns = 0;
  uint64_t compute_output_ns = 0;
  uint64_t total_ns = 0;  // from arrival to response
};

// Thread-safe: one mutex guards every counter.
class ModelStats {
 public:
  // One successful request of `batch_size` inferences.
  void RecordSuccess(const RequestTimings& t, uint64_t batch_size, uint64_t now_ms) {
    std::lock_guard<std::mutex> lock(mu_);
    Add(stats_.mutable_inference_stats()->mutable_success(), t.total_ns);
    Add(stats_.mutable_inference_stats()->mutable_queue(), t.queue_ns);
    Add(stats_.mutable_inference_stats()->mutable_compute_input(), t.compute_input_ns);
    Add(stats_.mutable_inference_stats()->mutable_compute_infer(), t.compute_infer_ns);
    Add(stats_.mutable_inference_stats()->mutable_compute_output(), t.compute_output_ns);
    stats_.set_inference_count(stats_.inference_count() + batch_size);
    stats_.set_last_inference(now_ms);
  }
  // One model execution of `batch_size` inferences (the dynamic batcher's combined run), with
  // the compute times of one of its requests (Triton's batch_stats).
  void RecordExecution(const RequestTimings& t, uint64_t batch_size) {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.set_execution_count(stats_.execution_count() + 1);
    inference::InferBatchStatistics& b = batches_[batch_size];
    b.set_batch_size(batch_size);
    Add(b.mutable_compute_input(), t.compute_input_ns);
    Add(b.mutable_compute_infer(), t.compute_infer_ns);
    Add(b.mutable_compute_output(), t.compute_output_ns);
  }
  void RecordFailure(uint64_t total_ns) {
    std::lock_guard<std::mutex> lock(mu_);
    Add(stats_.mutable_inference_stats()->mutable_fail(), total_ns);
  }
  // Fills everything but name and version.
  void Snapshot(inference::ModelStatistics* out) const {
    std::lock_guard<std::mutex> lock(mu_);
    out->MergeFrom(stats_);
    for (const auto& [size, b] : batches_) *out->add_batch_stats() = b;
  }

 private:
  static void Add(inference::StatisticDuration* d, uint64_t ns) {
    d->set_count(d->count() + 1);
    d->set_ns(d->ns() + ns);
  }
  mutable std::mutex mu_;  // guards stats_ and batches_
  inference::ModelStatistics stats_;
  std::map<uint64_t, inference::InferBatchStatistics> batches_;
};

}  // namespace nimble::server
