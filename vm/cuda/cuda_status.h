// Every CUDA runtime, driver, cuBLASLt and NVRTC call is checked and turned into an absl::Status
// at the call site; the message names the call text and the library's error name and string.
//
//   NIMBLE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, n, kind, stream));
//   -> INTERNAL: cudaMemcpyAsync(dst, src, n, kind, stream): cudaErrorInvalidValue (invalid
//      argument)
#pragma once

#include <cublasLt.h>
#include <cuda.h>  // CUresult only: we never link libcuda (it exists only where a driver does).
#include <cuda_runtime_api.h>
#include <nvrtc.h>

#include "absl/status/status.h"
#include "base/status_macros.h"

namespace nimble::vm::cuda {

// OK for cudaSuccess; otherwise a status naming `what` and the CUDA error. A missing driver or
// device maps to kFailedPrecondition, out-of-memory to kResourceExhausted, the rest to kInternal.
absl::Status CudaStatus(cudaError_t error, const char* what);

// Driver API results (from entry points fetched through cudaGetDriverEntryPointByVersion). The
// error's name and string are looked up through the driver when it is loadable.
absl::Status CuStatus(CUresult result, const char* what);

// cuBLAS / cuBLASLt. CUBLAS_STATUS_ALLOC_FAILED -> kResourceExhausted, NOT_SUPPORTED ->
// kUnimplemented, INVALID_VALUE -> kInvalidArgument, NOT_INITIALIZED -> kFailedPrecondition.
absl::Status CublasStatus(cublasStatus_t status, const char* what);

// NVRTC. A failed compilation is reported by the compiler with the program log, not here;
// this maps NVRTC_ERROR_OUT_OF_MEMORY -> kResourceExhausted, the rest to kInternal.
absl::Status NvrtcStatus(nvrtcResult result, const char* what);

}  // namespace nimble::vm::cuda

#define NIMBLE_CUDA_RETURN_IF_ERROR(call) \
  NIMBLE_RETURN_IF_ERROR(::nimble::vm::cuda::CudaStatus((call), #call))
#define NIMBLE_CU_RETURN_IF_ERROR(call) \
  NIMBLE_RETURN_IF_ERROR(::nimble::vm::cuda::CuStatus((call), #call))
#define NIMBLE_CUBLAS_RETURN_IF_ERROR(call) \
  NIMBLE_RETURN_IF_ERROR(::nimble::vm::cuda::CublasStatus((call), #call))
#define NIMBLE_NVRTC_RETURN_IF_ERROR(call) \
  NIMBLE_RETURN_IF_ERROR(::nimble::vm::cuda::NvrtcStatus((call), #call))
