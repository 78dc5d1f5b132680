// The dynamic batcher's data side: which requests may share one model run, and how their
// tensors are combined and taken apart again.
//
// With `max_batch_size` > 1 in the config, dim 0 of every input and output is the batch dim.
// Each request gets a batch key: every input's dims after the batch dim, where each declared
// paddable axis is replaced by its pad target — the bound of the config's bucket for that
// axis's dim symbol (smallest bound >= the length), or the next power of two when the symbol
// has no buckets. Requests with equal keys may run together: each paddable axis is padded with
// the input's `pad_value` to the longest length among them (never beyond the bucket bound, so
// the run stays in the bucket's specialized variant), the inputs are concatenated along the
// batch dim, and every output is split along its batch dim and cut back along its
// `slice_axes` to the request's own length of that axis's dim symbol. Without paddable axes
// only identical shapes share a key.
//
// The scheduling side (per-key queues, the wait of up to max_queue_delay_us for a fuller batch)
// is in model_instance.cc.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "server/model_config.h"
#include "vm/executable.h"
#include "vm/runtime/tensor.h"

namespace nimble::server {

struct BatchKey {
  // Requests with equal `shape` may be batched together. Empty when batching is off.
  std::vector<int64_t> shape;
  // The metric label of the shape bucket: "seq=128" (the bucket bound of each bucketed dim
  // symbol, joined by ','), "seq>512" past the last bound, or "generic" without buckets.
  std::string bucket;
  // The request's size along the batch dim (1 when batching is off).
  int64_t batch = 1;
};

class BatchPlan {
 public:
  // Checks the config's batching declarations against the executable: a dynamic batch dim on
  // every input and output when max_batch_size > 1, paddable axes that are dynamic dims after
  // the batch dim, a pad value the input's dtype can hold, slice axes whose dim symbol is that
  // of a paddable input axis. kInvalidArgument naming the tensor and axis otherwise.
  static absl::StatusOr<BatchPlan> Create(const ModelConfigFile& config,
                                          const vm::Executable& executable);

  // Whether requests may share a run (max_batch_size > 1).
  bool batching() const { return max_batch_size_ > 1; }
  int64_t max_batch_size() const { return max_batch_size_; }

  // The key of a validated request's inputs (in the executable's input order).
  BatchKey Classify(absl::Span<const vm::Tensor> inputs) const;

  // One model run's inputs for several requests of one key: padded to the longest length
  // per paddable axis and concatenated along the batch dim.
  absl::StatusOr<std::vector<vm::Tensor>> Combine(
      absl::Span<const std::vector<vm::Tensor>* const> requests) const;

  // Splits a combined run's outputs back into per-request outputs (the same order as
  // `requests` given to Combine), cut along the slice axes. kInternal when an output's batch
  // dim does not match the combined batch.
  absl::StatusOr<std::vector<std::vector<vm::Tensor>>> Split(
      absl::Span<const vm::Tensor> outputs,
      absl::Span<const std::vector<vm::Tensor>* const> requests) const;

 private:
  struct InputPlan {
    vm::DType dtype = vm::DType::kInvalid;
    std::vector<bool> paddable;        // per axis
    std::vector<std::string> symbols;  // per axis, "" for static or anonymous dims
    std::string pad_bytes;             // one element of the pad value
  };
  struct SliceAxis {
    int axis = 0;
    int input = 0;  // where the request's length of this axis's symbol is read
    int input_axis = 0;
  };
  struct OutputPlan {
    std::vector<SliceAxis> slices;
  };

  int64_t PadTarget(const std::string& symbol, int64_t length) const;

  int64_t max_batch_size_ = 0;
  std::vector<InputPlan> inputs_;
  std::vector<OutputPlan> outputs_;
  std::map<std::string, std::vector<int64_t>> buckets_;  // CompileBuckets(config)
  // Per bucketed symbol, where a request's value of it is read: (input, axis).
  std::vector<std::pair<std::string, std::pair<int, int>>> bucket_sources_;
};

}  // namespace nimble::server
