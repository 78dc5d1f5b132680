#include "vm/cuda/cuda_status.h"
#include "vm/cuda/l2_prefetch.h"

namespace nimble::vm::cuda {
namespace {

// A block covers kBlockBytes, each of its kThreads threads one kThreadBytes piece. Small blocks
// spread the requests over many multiprocessors: one block issuing a whole GEMM weight (3.5 MB)
// took ~8 us on the H100 (2026-12-06, run e), longer than the GEMM it was meant to feed.
constexpr int kThreads = 16;
constexpr int64_t kThreadBytes = 4 << 10;  // one bulk prefetch (a multiple of 16)
constexpr int64_t kBlockBytes = kThreads * kThreadBytes;

// The range is widened to 16-byte boundaries (the bulk form's rule); prefetching a few bytes
// outside the allocation is harmless: prefetches never fault.
__global__ void __launch_bounds__(kThreads)
    PrefetchL2Kernel(uintptr_t begin, int64_t bytes, int lines) {
  const int64_t offset = static_cast<int64_t>(blockIdx.x) * kBlockBytes +
                         static_cast<int64_t>(threadIdx.x) * kThreadBytes;
  if (offset >= bytes) return;
  const int64_t left = bytes - offset;
  const uint32_t size =
      static_cast<uint32_t>(left < kThreadBytes ? (left + 15) & ~int64_t{15} : kThreadBytes);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (!lines) {
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(begin + offset), "r"(size)
                 : "memory");
    return;
  }
#endif
  for (uint32_t i = 0; i < size; i += 128) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(begin + offset + i));
  }
}

}  // namespace

absl::Status PrefetchL2(const void* ptr, int64_t bytes, cudaStream_t stream, L2PrefetchForm form) {
  if (bytes <= 0 || ptr == nullptr) return absl::OkStatus();
  const uintptr_t raw = reinterpret_cast<uintptr_t>(ptr);
  const uintptr_t begin = raw & ~uintptr_t{15};
  const int64_t span = bytes + static_cast<int64_t>(raw - begin);
  const int64_t blocks = (span + kBlockBytes - 1) / kBlockBytes;
  if (blocks > int64_t{1} << 30) return absl::InvalidArgumentError("PrefetchL2: range too large");
  PrefetchL2Kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      begin, span, form == L2PrefetchForm::kLines ? 1 : 0);
  return CudaStatus(cudaGetLastError(), "PrefetchL2Kernel launch");
}

absl::Status FlushL2(void* scratch, int64_t scratch_bytes, cudaStream_t stream) {
  return CudaStatus(cudaMemsetAsync(scratch, 0x5a, static_cast<size_t>(scratch_bytes), stream),
                    "FlushL2 memset");
}

}  // namespace nimble::vm::cuda
