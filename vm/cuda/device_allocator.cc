#include "vm/cuda/device_allocator.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vm/cuda/cuda_status.h"

namespace nimble::vm::cuda {
namespace {

int64_t RoundUp(int64_t bytes, int64_t granule) {
  return (bytes + granule - 1) / granule * granule;
}

absl::StatusOr<int64_t> PoolAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr) {
  uint64_t value = 0;
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaMemPoolGetAttribute(pool, attr, &value));
  return static_cast<int64_t>(value);
}

}  // namespace

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      stream_(std::exchange(other.stream_, nullptr)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    Reset().IgnoreError();
    owner_ = std::exchange(other.owner_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    stream_ = std::exchange(other.stream_, nullptr);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() { Reset().IgnoreError(); }

absl::Status DeviceBuffer::Reset() {
  if (owner_ == nullptr || data_ == nullptr) return absl::OkStatus();
  absl::Status status = owner_->Free(data_, stream_);
  owner_ = nullptr;
  data_ = nullptr;
  size_ = 0;
  return status;
}

absl::StatusOr<std::unique_ptr<DeviceAllocator>> DeviceAllocator::Create(
    const DeviceAllocatorOptions& options) {
  if (options.byte_limit <= 0 || options.release_threshold < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("DeviceAllocator: byte_limit (", options.byte_limit, ") must be > 0 and ",
                     "release_threshold (", options.release_threshold, ") >= 0"));
  }
  int supported = 0;
  NIMBLE_CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, options.device));
  if (!supported) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", options.device, " does not support stream-ordered memory pools"));
  }
  cudaMemPoolProps props = {};
  props.allocType = cudaMemAllocationTypePinned;
  props.handleTypes = cudaMemHandleTypeNone;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = options.device;
  // The pool's own cap, rounded to the 2 MiB physical granule it maps memory in.
  props.maxSize = static_cast<size_t>(RoundUp(options.byte_limit, int64_t{2} << 20));
  cudaMemPool_t pool = nullptr;
  if (cudaMemPoolCreate(&pool, &props) != cudaSuccess) {
    // Drivers that reject maxSize still get the accounting limit, which Allocate enforces.
    cudaGetLastError();
    props.maxSize = 0;
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaMemPoolCreate(&pool, &props));
  }
  uint64_t threshold = static_cast<uint64_t>(options.release_threshold);
  absl::Status status =
      CudaStatus(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold),
                 "cudaMemPoolSetAttribute(cudaMemPoolAttrReleaseThreshold)");
  if (!status.ok()) {
    cudaMemPoolDestroy(pool);
    return status;
  }
  return std::unique_ptr<DeviceAllocator>(new DeviceAllocator(options, pool));
}

DeviceAllocator::~DeviceAllocator() {
  // Stream-ordered frees may still be pending on some stream; the pool must outlive them.
  int previous = 0;
  cudaGetDevice(&previous);
  cudaSetDevice(options_.device);
  cudaDeviceSynchronize();
  cudaMemPoolDestroy(pool_);
  cudaSetDevice(previous);
}

absl::StatusOr<void*> DeviceAllocator::Allocate(int64_t bytes, cudaStream_t stream) {
  if (bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat("device allocation of ", bytes, " bytes"));
  }
  if (bytes == 0) return nullptr;
  const int64_t rounded = RoundUp(bytes, kAllocationGranule);
  {
    absl::MutexLock lock(&mu_);
    if (in_use_ + rounded > options_.byte_limit) {
      ++rejected_;
      return absl::ResourceExhaustedError(
          absl::StrCat("device memory limit: allocating ", bytes, " bytes with ", in_use_, " of ",
                       options_.byte_limit, " bytes in use on device ", options_.device));
    }
    in_use_ += rounded;  // reserved before the call so concurrent callers see it
  }
  void* ptr = nullptr;
  absl::Status status =
      CudaStatus(cudaMallocFromPoolAsync(&ptr, static_cast<size_t>(rounded), pool_, stream),
                 "cudaMallocFromPoolAsync");
  absl::MutexLock lock(&mu_);
  if (!status.ok()) {
    in_use_ -= rounded;
    ++rejected_;
    return Annotate(status, absl::StrCat("allocating ", bytes, " bytes on device ", options_.device,
                                         " (", in_use_, " bytes in use)"));
  }
  live_[ptr] = rounded;
  peak_in_use_ = std::max(peak_in_use_, in_use_);
  ++allocations_;
  return ptr;
}

absl::Status DeviceAllocator::Free(void* ptr, cudaStream_t stream) {
  if (ptr == nullptr) return absl::OkStatus();
  int64_t rounded = 0;
  {
    absl::MutexLock lock(&mu_);
    auto it = live_.find(ptr);
    if (it == live_.end()) {
      return absl::InvalidArgumentError("DeviceAllocator::Free of a pointer it did not allocate");
    }
    rounded = it->second;
    live_.erase(it);
  }
  absl::Status status = CudaStatus(cudaFreeAsync(ptr, stream), "cudaFreeAsync");
  absl::MutexLock lock(&mu_);
  in_use_ -= rounded;
  return status;
}

absl::StatusOr<DeviceBuffer> DeviceAllocator::AllocateBuffer(int64_t bytes, cudaStream_t stream) {
  NIMBLE_ASSIGN_OR_RETURN(void* ptr, Allocate(bytes, stream));
  return DeviceBuffer(this, ptr, bytes, stream);
}

absl::Status DeviceAllocator::Trim(int64_t keep_bytes) {
  return CudaStatus(cudaMemPoolTrimTo(pool_, static_cast<size_t>(std::max<int64_t>(keep_bytes, 0))),
                    "cudaMemPoolTrimTo");
}

absl::StatusOr<DeviceMemoryStats> DeviceAllocator::Stats() const {
  DeviceMemoryStats stats;
  NIMBLE_ASSIGN_OR_RETURN(stats.reserved_bytes,
                          PoolAttribute(pool_, cudaMemPoolAttrReservedMemCurrent));
  NIMBLE_ASSIGN_OR_RETURN(stats.peak_reserved_bytes,
                          PoolAttribute(pool_, cudaMemPoolAttrReservedMemHigh));
  absl::MutexLock lock(&mu_);
  stats.in_use_bytes = in_use_;
  stats.peak_in_use_bytes = peak_in_use_;
  stats.allocations = allocations_;
  stats.rejected = rejected_;
  return stats;
}

}  // namespace nimble::vm::cuda
