// Device memory for the VM: a stream-ordered, pooled, bounded allocator.
//
// Design: one private cudaMemPool per allocator (not the device's default pool, which other
// libraries share) served by cudaMallocAsync / cudaFreeAsync. The pool reuses freed blocks in
// stream order, so shape churn (every request a different size) does not grow it: freed memory
// is handed to the next allocation on the same stream without a synchronisation, and at each
// synchronisation the pool gives back to the driver whatever it holds beyond the release
// threshold. The byte limit is enforced twice: by our own accounting of live bytes (a request
// over the limit fails with kResourceExhausted before touching CUDA, deterministically), and by
// the pool's maxSize, which caps reserved memory including fragmentation.
//
// Thread-safety: all methods may be called concurrently; the accounting is guarded by a mutex.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace nimble::vm::cuda {

struct DeviceAllocatorOptions {
  int device = 0;
  // Most live bytes (after rounding to kAllocationGranule) at any time.
  int64_t byte_limit = int64_t{1} << 30;
  // Reserved-but-unused bytes the pool keeps across synchronisations for reuse.
  int64_t release_threshold = int64_t{64} << 20;
};

struct DeviceMemoryStats {
  int64_t in_use_bytes = 0;       // live allocations, rounded to kAllocationGranule
  int64_t peak_in_use_bytes = 0;  // high-water mark of in_use_bytes
  int64_t reserved_bytes = 0;     // what the pool holds from the driver now
  int64_t peak_reserved_bytes = 0;
  int64_t allocations = 0;  // successful Allocate calls, ever
  int64_t rejected = 0;     // Allocate calls that returned kResourceExhausted
};

class DeviceAllocator;

// A move-only owner of one allocation; frees it stream-ordered on the stream it was made on.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  ~DeviceBuffer();

  void* data() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  int64_t size() const { return size_; }
  cudaStream_t stream() const { return stream_; }
  // Frees now (stream-ordered) and reports an error, which the destructor cannot.
  absl::Status Reset();

 private:
  friend class DeviceAllocator;
  DeviceBuffer(DeviceAllocator* owner, void* data, int64_t size, cudaStream_t stream)
      : owner_(owner), data_(data), size_(size), stream_(stream) {}

  DeviceAllocator* owner_ = nullptr;
  void* data_ = nullptr;
  int64_t size_ = 0;
  cudaStream_t stream_ = nullptr;
};

class DeviceAllocator {
 public:
  static constexpr int64_t kAllocationGranule = 256;

  static absl::StatusOr<std::unique_ptr<DeviceAllocator>> Create(
      const DeviceAllocatorOptions& options);
  // Waits for the device, then destroys the pool. Every DeviceBuffer must be gone by now.
  ~DeviceAllocator();
  DeviceAllocator(const DeviceAllocator&) = delete;
  DeviceAllocator& operator=(const DeviceAllocator&) = delete;

  // `bytes` >= 0; 0 gives nullptr. The memory may be used by work on `stream` at once, and by
  // other streams once they are ordered after this call's point on `stream`.
  absl::StatusOr<void*> Allocate(int64_t bytes, cudaStream_t stream);
  // Stream-ordered: the memory is reusable once `stream` passes this point.
  absl::Status Free(void* ptr, cudaStream_t stream);
  absl::StatusOr<DeviceBuffer> AllocateBuffer(int64_t bytes, cudaStream_t stream);

  // Gives reserved-but-unused memory above `keep_bytes` back to the driver now.
  absl::Status Trim(int64_t keep_bytes = 0);
  absl::StatusOr<DeviceMemoryStats> Stats() const;

  const DeviceAllocatorOptions& options() const { return options_; }

 private:
  DeviceAllocator(const DeviceAllocatorOptions& options, cudaMemPool_t pool)
      : options_(options), pool_(pool) {}

  const DeviceAllocatorOptions options_;
  const cudaMemPool_t pool_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<void*, int64_t> live_ ABSL_GUARDED_BY(mu_);  // pointer -> rounded bytes
  int64_t in_use_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t peak_in_use_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t allocations_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t rejected_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace nimble::vm::cuda
