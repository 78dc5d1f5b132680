// What the server needs of the GPUs: which exist (to check instance groups against), and per
// GPU execution instance its own CUDA stream and a stream-ordered allocator over the device's
// pool. Without the CUDA backend compiled in, every call says so (kFailedPrecondition).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "vm/runtime/allocator.h"

namespace nimble::server {

struct GpuInfo {
  int ordinal = 0;
  std::string description;  // "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)"
};

// The visible GPUs. kFailedPrecondition when this build has no CUDA backend or the driver finds
// no device (the message says which).
absl::StatusOr<std::vector<GpuInfo>> VisibleGpus();

// Checks that every ordinal in `devices` exists; kFailedPrecondition naming the missing one and
// what is visible.
absl::Status CheckGpus(const std::vector<int>& devices);

// One GPU execution instance's resources: a non-blocking stream on the device and an allocator
// over the device's process-wide pool ordered on that stream, which counts what this instance
// holds. Not thread-safe: one instance thread uses it.
class GpuContext {
 public:
  static absl::StatusOr<std::unique_ptr<GpuContext>> Create(int ordinal);
  virtual ~GpuContext() = default;

  virtual int ordinal() const = 0;
  virtual void* stream() const = 0;  // cudaStream_t
  virtual vm::Allocator* allocator() = 0;
  // Device bytes this instance's allocations hold now (thread-safe).
  virtual int64_t bytes_in_use() const = 0;
  // Makes `ordinal()` the calling thread's current device.
  virtual absl::Status Activate() const = 0;
};

}  // namespace nimble::server
