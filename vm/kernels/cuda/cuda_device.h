// The VM's CUDA device: a vm::Allocator over vm/cuda's DeviceAllocator, the DeviceApi (copies)
// and the process-wide per-device singletons kernels share (allocators, GEMM runners).
#pragma once

#include "absl/status/statusor.h"
#include "vm/cuda/device_allocator.h"
#include "vm/cuda/gemm.h"
#include "vm/cuda/rtc_compiler.h"
#include "vm/kernels/kernel.h"
#include "vm/runtime/allocator.h"

namespace nimble::vm::cuda_device {

// vm::Allocator over a DeviceAllocator; allocations and frees are ordered on `stream` (the
// VM instance using it must run its kernels on that stream, or one ordered after it).
class CudaAllocator final : public Allocator {
 public:
  CudaAllocator(cuda::DeviceAllocator* allocator, int ordinal, cudaStream_t stream)
      : allocator_(allocator), ordinal_(ordinal), stream_(stream) {}
  absl::StatusOr<void*> Allocate(size_t bytes) override;
  void Free(void* ptr, size_t bytes) override;
  Device device() const override { return Device{DeviceType::kCUDA, ordinal_}; }
  AllocatorStats stats() const override;
  void Trim() override;

 private:
  cuda::DeviceAllocator* const allocator_;
  const int ordinal_;
  const cudaStream_t stream_;
};

// Process-wide, created on first use, never destroyed: the device's pool (80% of its memory)
// behind a CudaAllocator on the legacy default stream.
absl::StatusOr<CudaAllocator*> DefaultAllocator(int ordinal);
// The device's process-wide memory pool itself, for allocators ordered on other streams
// (a server instance's own stream: CudaAllocator(pool, ordinal, stream)).
absl::StatusOr<cuda::DeviceAllocator*> DevicePool(int ordinal);
// Process-wide GEMM runner of device `ordinal`.
absl::StatusOr<cuda::GemmRunner*> Gemm(int ordinal);
// Process-wide NVRTC compiler for device `ordinal` (its GPU's arch), caching CUBINs on disk in
// $NIMBLE_RTC_CACHE_DIR (empty: no disk cache), else $XDG_CACHE_HOME/nimble/rtc, else
// $HOME/.cache/nimble/rtc.
absl::StatusOr<cuda::RtcCompiler*> Rtc(int ordinal);
// The CUDA DeviceApi (registered by RegisterCudaKernels).
DeviceApi* Api();

}  // namespace nimble::vm::cuda_device
