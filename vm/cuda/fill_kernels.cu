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

__device__ uint64_t GlobalTimerNs() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__global__ void FillBytesLateKernel(uint8_t* dst, int64_t bytes, uint8_t value, int64_t delay_ns) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
  const uint64_t start = GlobalTimerNs();
  while (GlobalTimerNs() - start < static_cast<uint64_t>(delay_ns)) {
  }
  for (int64_t i = threadIdx.x; i < bytes; i += blockDim.x) dst[i] = value;
}

}  // namespace

absl::Status FillBytesLate(void* dst, int64_t bytes, uint8_t value, int64_t delay_ns,
                           cudaStream_t stream) {
  FillBytesLateKernel<<<1, 1024, 0, stream>>>(static_cast<uint8_t*>(dst), bytes, value, delay_ns);
  return CudaStatus(cudaGetLastError(), "FillBytesLateKernel launch");
}

absl::Status FillF32(float* dst, int64_t count, float value, cudaStream_t stream) {
  if (count <= 0) return absl::OkStatus();
  constexpr int kThreads = 256;
  const int64_t wanted_blocks = (count + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(wanted_blocks < 65535 ? wanted_blocks : 65535);
  FillF32Kernel<<<blocks, kThreads, 0, stream>>>(dst, count, value);
  return CudaStatus(cudaGetLastError(), "FillF32Kernel launch");
}

}  // namespace nimble::vm::cuda
