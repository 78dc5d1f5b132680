#include "vm/cuda/pinned_host_pool.h"

#include <cuda_runtime_api.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vm/cuda/cuda_status.h"

namespace nimble::vm::cuda {
namespace {

// Index of the smallest class holding `bytes`: class i holds kMinClassBytes << i.
int ClassOf(int64_t bytes) {
  int index = 0;
  while ((PinnedHostPool::kMinClassBytes << index) < bytes) ++index;
  return index;
}

}  // namespace

PinnedBuffer::PinnedBuffer(PinnedBuffer&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      capacity_(std::exchange(other.capacity_, 0)) {}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& other) noexcept {
  if (this != &other) {
    Release();
    owner_ = std::exchange(other.owner_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    capacity_ = std::exchange(other.capacity_, 0);
  }
  return *this;
}

PinnedBuffer::~PinnedBuffer() { Release(); }

void PinnedBuffer::Release() {
  if (owner_ != nullptr && data_ != nullptr) owner_->Return(data_, capacity_);
  owner_ = nullptr;
  data_ = nullptr;
}

absl::StatusOr<std::unique_ptr<PinnedHostPool>> PinnedHostPool::Create(int64_t max_cached_bytes) {
  if (max_cached_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("PinnedHostPool: max_cached_bytes ", max_cached_bytes, " < 0"));
  }
  return std::unique_ptr<PinnedHostPool>(new PinnedHostPool(max_cached_bytes));
}

PinnedHostPool::~PinnedHostPool() {
  absl::MutexLock lock(&mu_);
  for (std::vector<void*>& list : free_) {
    for (void* data : list) cudaFreeHost(data);
  }
}

absl::StatusOr<PinnedBuffer> PinnedHostPool::Acquire(int64_t bytes) {
  if (bytes <= 0 || bytes > (kMinClassBytes << (kClasses - 1))) {
    return absl::InvalidArgumentError(absl::StrCat("pinned host buffer of ", bytes, " bytes"));
  }
  const int index = ClassOf(bytes);
  const int64_t capacity = kMinClassBytes << index;
  {
    absl::MutexLock lock(&mu_);
    if (!free_[index].empty()) {
      void* data = free_[index].back();
      free_[index].pop_back();
      stats_.cached_bytes -= capacity;
      stats_.outstanding_bytes += capacity;
      ++stats_.reuses;
      return PinnedBuffer(this, data, bytes, capacity);
    }
  }
  void* data = nullptr;
  NIMBLE_RETURN_IF_ERROR(CudaStatus(
      cudaHostAlloc(&data, static_cast<size_t>(capacity), cudaHostAllocPortable), "cudaHostAlloc"));
  absl::MutexLock lock(&mu_);
  stats_.outstanding_bytes += capacity;
  ++stats_.host_allocations;
  return PinnedBuffer(this, data, bytes, capacity);
}

void PinnedHostPool::Return(void* data, int64_t capacity) {
  {
    absl::MutexLock lock(&mu_);
    stats_.outstanding_bytes -= capacity;
    if (stats_.cached_bytes + capacity <= max_cached_bytes_) {
      free_[ClassOf(capacity)].push_back(data);
      stats_.cached_bytes += capacity;
      return;
    }
  }
  cudaFreeHost(data);  // outside the lock: it synchronises the device
}

PinnedHostPoolStats PinnedHostPool::Stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace nimble::vm::cuda
