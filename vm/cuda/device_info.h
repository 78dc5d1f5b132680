// What the CUDA runtime reports about the visible GPUs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace nimble::vm::cuda {

struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  int multiprocessors = 0;
  int64_t total_memory_bytes = 0;
};

// The visible GPUs. kFailedPrecondition (with the driver's reason) when there is no driver or
// no device, so callers can tell "no GPU here" from a real failure.
absl::StatusOr<std::vector<DeviceInfo>> ListDevices();

// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)".
std::string Describe(const DeviceInfo& device);

}  // namespace nimble::vm::cuda
