// Device fills (ConstantOfShape, zero-initialised accumulators), stream-ordered.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace nimble::vm::cuda {

// Writes `value` to `count` floats at device pointer `dst` on `stream`. Asynchronous: errors
// of the launch are reported here, errors of the execution at the next synchronisation.
absl::Status FillF32(float* dst, int64_t count, float value, cudaStream_t stream);

}  // namespace nimble::vm::cuda
