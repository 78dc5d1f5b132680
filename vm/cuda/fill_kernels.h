// Device fills (ConstantOfShape, zero-initialised accumulators), stream-ordered.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace nimble::vm::cuda {

// Writes `value` to `count` floats at device pointer `dst` on `stream`. Asynchronous: errors
// of the launch are reported here, errors of the execution at the next synchronisation.
absl::Status FillF32(float* dst, int64_t count, float value, cudaStream_t stream);

// Queues one block on `stream` that first lets the kernels depending on it through
// programmatic edges launch (griddepcontrol.launch_dependents), then spins for `delay_ns` and
// only then sets `bytes` bytes at `dst` to `value`: a primary whose dependents read too early
// if they do not wait for it (GemmRunner probes cuBLASLt's kernels with it).
absl::Status FillBytesLate(void* dst, int64_t bytes, uint8_t value, int64_t delay_ns,
                           cudaStream_t stream);

}  // namespace nimble::vm::cuda
