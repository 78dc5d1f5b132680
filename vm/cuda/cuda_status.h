// Every CUDA runtime call is checked and turned into an absl::Status at the call site.
#pragma once

#include <cuda_runtime_api.h>

#include "absl/status/status.h"

namespace nimble::vm::cuda {

// OK for cudaSuccess; otherwise a status naming `what` and the CUDA error. A missing driver or
// device maps to kFailedPrecondition, out-of-memory to kResourceExhausted, the rest to kInternal.
absl::Status CudaStatus(cudaError_t error, const char* what);

}  // namespace nimble::vm::cuda

#define NIMBLE_CUDA_RETURN_IF_ERROR(call) \
  NIMBLE_RETURN_IF_ERROR(::nimble::vm::cuda::CudaStatus((call), #call))
