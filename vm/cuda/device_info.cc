#include "vm/cuda/device_info.h"

#include <cuda_runtime_api.h>

#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "vm/cuda/cuda_status.h"

namespace nimble::vm::cuda {

absl::StatusOr<std::vector<DeviceInfo>> ListDevices() {
  int count = 0;
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&count));
  if (count == 0) return absl::FailedPreconditionError("no CUDA device is visible");
  std::vector<DeviceInfo> devices;
  devices.reserve(count);
  for (int ordinal = 0; ordinal < count; ++ordinal) {
    cudaDeviceProp prop;
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, ordinal));
    devices.push_back(DeviceInfo{.ordinal = ordinal,
                                 .name = prop.name,
                                 .compute_major = prop.major,
                                 .compute_minor = prop.minor,
                                 .multiprocessors = prop.multiProcessorCount,
                                 .total_memory_bytes = static_cast<int64_t>(prop.totalGlobalMem)});
  }
  return devices;
}

std::string Describe(const DeviceInfo& device) {
  return absl::StrFormat("%s (sm_%d%d, %d SMs, %.1f GiB)", device.name, device.compute_major,
                         device.compute_minor, device.multiprocessors,
                         static_cast<double>(device.total_memory_bytes) / (1 << 30));
}

}  // namespace nimble::vm::cuda
