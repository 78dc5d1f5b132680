#include "vm/cuda/cuda_status.h"
#include "vm/cuda/l2_prefetch.h"

namespace nimble::vm::cuda {
namespace {

constexpr int64_t kChunk = 32 << 10;  // bytes per bulk prefetch (a multiple of 16)

// One thread per chunk. The range is widened to 16-byte boundaries (the bulk form's rule);
// prefetching a few bytes outside the allocation is harmless: prefetches never fault.
__global__ void PrefetchL2Kernel(uintptr_t begin, int64_t bytes) {
  const int64_t offset = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kChunk;
  if (offset >= bytes) return;
  const int64_t left = bytes - offset;
  const uint32_t size = static_cast<uint32_t>(left < kChunk ? (left + 15) & ~int64_t{15} : kChunk);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(begin + offset), "r"(size)
               : "memory");
#else
  for (uint32_t i = 0; i < size; i += 128) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(begin + offset + i));
  }
#endif
}

}  // namespace

absl::Status PrefetchL2(const void* ptr, int64_t bytes, cudaStream_t stream) {
  if (bytes <= 0 || ptr == nullptr) return absl::OkStatus();
  const uintptr_t raw = reinterpret_cast<uintptr_t>(ptr);
  const uintptr_t begin = raw & ~uintptr_t{15};
  const int64_t span = bytes + static_cast<int64_t>(raw - begin);
  const int64_t chunks = (span + kChunk - 1) / kChunk;
  constexpr int kThreads = 128;
  const int blocks = static_cast<int>((chunks + kThreads - 1) / kThreads);
  PrefetchL2Kernel<<<blocks, kThreads, 0, stream>>>(begin, span);
  return CudaStatus(cudaGetLastError(), "PrefetchL2Kernel launch");
}

absl::Status FlushL2(void* scratch, int64_t scratch_bytes, cudaStream_t stream) {
  return CudaStatus(cudaMemsetAsync(scratch, 0x5a, static_cast<size_t>(scratch_bytes), stream),
                    "FlushL2 memset");
}

}  // namespace nimble::vm::cuda
