#include "vm/cuda/cuda_status.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace nimble::vm::cuda {
namespace {

using CuGetErrorFn = CUresult (*)(CUresult, const char**);

// cuGetErrorName / cuGetErrorString through the runtime's driver entry-point lookup, so that
// nothing here links libcuda. Null when no driver is loadable.
CuGetErrorFn DriverErrorFn(const char* symbol) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult query = cudaDriverEntryPointSymbolNotFound;
  if (cudaGetDriverEntryPointByVersion(symbol, &fn, 12000, cudaEnableDefault, &query) !=
          cudaSuccess ||
      query != cudaDriverEntryPointSuccess) {
    cudaGetLastError();  // a failed lookup must not linger as the last error
    return nullptr;
  }
  return reinterpret_cast<CuGetErrorFn>(fn);
}

}  // namespace

absl::Status CudaStatus(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return absl::OkStatus();
  // The error is reported through the returned status; clear the runtime's last-error slot so a
  // later launch check (cudaGetLastError) does not report it a second time. Sticky errors stay.
  cudaGetLastError();
  std::string message =
      absl::StrCat(what, ": ", cudaGetErrorName(error), " (", cudaGetErrorString(error), ")");
  switch (error) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
    case cudaErrorCallRequiresNewerDriver:
      return absl::FailedPreconditionError(message);
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status CuStatus(CUresult result, const char* what) {
  if (result == CUDA_SUCCESS) return absl::OkStatus();
  const char* name = nullptr;
  const char* text = nullptr;
  static const CuGetErrorFn get_name = DriverErrorFn("cuGetErrorName");
  static const CuGetErrorFn get_string = DriverErrorFn("cuGetErrorString");
  if (get_name != nullptr) get_name(result, &name);
  if (get_string != nullptr) get_string(result, &text);
  std::string message = absl::StrCat(what, ": ", name != nullptr ? name : "CUresult", " (",
                                     text != nullptr ? text : "no description", ", code ",
                                     static_cast<int>(result), ")");
  switch (result) {
    case CUDA_ERROR_NO_DEVICE:
    case CUDA_ERROR_NOT_INITIALIZED:
    case CUDA_ERROR_INVALID_DEVICE:
    case CUDA_ERROR_NOT_SUPPORTED:
      return absl::FailedPreconditionError(message);
    case CUDA_ERROR_OUT_OF_MEMORY:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status CublasStatus(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  std::string message = absl::StrCat(what, ": ", cublasLtGetStatusName(status), " (",
                                     cublasLtGetStatusString(status), ")");
  switch (status) {
    case CUBLAS_STATUS_ALLOC_FAILED:
      return absl::ResourceExhaustedError(message);
    case CUBLAS_STATUS_NOT_SUPPORTED:
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return absl::UnimplementedError(message);
    case CUBLAS_STATUS_INVALID_VALUE:
      return absl::InvalidArgumentError(message);
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return absl::FailedPreconditionError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status NvrtcStatus(nvrtcResult result, const char* what) {
  if (result == NVRTC_SUCCESS) return absl::OkStatus();
  std::string message = absl::StrCat(what, ": ", nvrtcGetErrorString(result));
  if (result == NVRTC_ERROR_OUT_OF_MEMORY) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

}  // namespace nimble::vm::cuda
