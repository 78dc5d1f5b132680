#include "vm/cuda/cuda_status.h"
#include "vm/cuda/fill_kernels.h"

namespace nimble::vm::cuda {
namespace {

// Grid-stride loop: one launch covers any count with a bounded grid.
__global__ void FillF32Kernel(float* dst, int64_t count, float value) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    dst[i] = value;
  }
}

}  // namespace

absl::Status FillF32(float* dst, int64_t count, float value, cudaStream_t stream) {
  if (count <= 0) return absl::OkStatus();
  constexpr int kThreads = 256;
  const int64_t wanted_blocks = (count + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(wanted_blocks < 65535 ? wanted_blocks : 65535);
  FillF32Kernel<<<blocks, kThreads, 0, stream>>>(dst, count, value);
  return CudaStatus(cudaGetLastError(), "FillF32Kernel launch");
}

}  // namespace nimble::vm::cuda
