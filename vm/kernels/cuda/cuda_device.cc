#include "vm/kernels/cuda/cuda_device.h"

#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vm/cuda/cuda_status.h"

namespace nimble::vm::cuda_device {

absl::StatusOr<void*> CudaAllocator::Allocate(size_t bytes) {
  return allocator_->Allocate(static_cast<int64_t>(bytes), stream_);
}

void CudaAllocator::Free(void* ptr, size_t bytes) {
  (void)bytes;
  if (ptr != nullptr) (void)allocator_->Free(ptr, stream_);
}

AllocatorStats CudaAllocator::stats() const {
  AllocatorStats s;
  absl::StatusOr<cuda::DeviceMemoryStats> d = allocator_->Stats();
  if (!d.ok()) return s;
  s.in_use_bytes = d->in_use_bytes;
  s.cached_bytes = d->reserved_bytes > d->in_use_bytes ? d->reserved_bytes - d->in_use_bytes : 0;
  s.peak_in_use_bytes = d->peak_in_use_bytes;
  s.peak_reserved_bytes = d->peak_reserved_bytes;
  s.system_allocations = d->allocations;
  return s;
}

void CudaAllocator::Trim() { (void)allocator_->Trim(); }

namespace {

constexpr int kMaxDevices = 16;

struct PerDevice {
  std::once_flag once;
  absl::Status status;
  std::unique_ptr<cuda::DeviceAllocator> pool;
  std::unique_ptr<CudaAllocator> allocator;
  std::unique_ptr<cuda::GemmRunner> gemm;
};

PerDevice* Devices() {
  static PerDevice* devices = new PerDevice[kMaxDevices];
  return devices;
}

absl::StatusOr<PerDevice*> Init(int ordinal) {
  if (ordinal < 0 || ordinal >= kMaxDevices) {
    return absl::InvalidArgumentError(absl::StrCat("cuda:", ordinal, " is out of range"));
  }
  PerDevice* d = &Devices()[ordinal];
  std::call_once(d->once, [d, ordinal] {
    d->status = [&]() -> absl::Status {
      NIMBLE_CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal));
      size_t free_bytes = 0, total_bytes = 0;
      NIMBLE_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
      cuda::DeviceAllocatorOptions options;
      options.device = ordinal;
      options.byte_limit = static_cast<int64_t>(static_cast<double>(total_bytes) * 0.8);
      options.release_threshold = int64_t{256} << 20;
      NIMBLE_ASSIGN_OR_RETURN(d->pool, cuda::DeviceAllocator::Create(options));
      d->allocator = std::make_unique<CudaAllocator>(d->pool.get(), ordinal, nullptr);
      NIMBLE_ASSIGN_OR_RETURN(d->gemm, cuda::GemmRunner::Create(ordinal));
      return absl::OkStatus();
    }();
  });
  NIMBLE_RETURN_IF_ERROR(d->status);
  return d;
}

class CudaApi final : public DeviceApi {
 public:
  absl::Status Copy(void* dst, Device to, const void* src, Device from, size_t bytes,
                    void* stream) override {
    if (bytes == 0) return absl::OkStatus();
    auto s = static_cast<cudaStream_t>(stream);
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s));
    // A host destination is read as soon as we return (pinned memory would not wait).
    if (to.type == DeviceType::kCPU) NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s));
    (void)from;
    return absl::OkStatus();
  }
  absl::Status Synchronize(void* stream) override {
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
    return absl::OkStatus();
  }
  absl::StatusOr<Allocator*> DefaultAllocator(int ordinal) override {
    NIMBLE_ASSIGN_OR_RETURN(CudaAllocator * a, cuda_device::DefaultAllocator(ordinal));
    return a;
  }
};

}  // namespace

absl::StatusOr<CudaAllocator*> DefaultAllocator(int ordinal) {
  NIMBLE_ASSIGN_OR_RETURN(PerDevice * d, Init(ordinal));
  return d->allocator.get();
}

absl::StatusOr<cuda::DeviceAllocator*> DevicePool(int ordinal) {
  NIMBLE_ASSIGN_OR_RETURN(PerDevice * d, Init(ordinal));
  return d->pool.get();
}

absl::StatusOr<cuda::GemmRunner*> Gemm(int ordinal) {
  NIMBLE_ASSIGN_OR_RETURN(PerDevice * d, Init(ordinal));
  return d->gemm.get();
}

DeviceApi* Api() {
  static CudaApi* api = new CudaApi();
  return api;
}

}  // namespace nimble::vm::cuda_device
