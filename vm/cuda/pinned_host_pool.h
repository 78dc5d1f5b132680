// Pinned (page-locked) host staging buffers, pooled by power-of-two size class.
//
// Why a pool: cudaHostAlloc / cudaFreeHost cost milliseconds and cudaFreeHost synchronises the
// device, so request-sized staging buffers are kept and reused. The pool is bounded: buffers
// returned while more than max_cached_bytes are cached are freed instead of kept.
//
// Thread-safety: Acquire and buffer release may be called concurrently (guarded by a mutex).
// A caller must not release a buffer while an asynchronous copy still reads or writes it:
// synchronise the stream (or an event after the copy) first.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace nimble::vm::cuda {

class PinnedHostPool;

class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(PinnedBuffer&& other) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;
  ~PinnedBuffer();

  void* data() const { return data_; }
  int64_t size() const { return size_; }          // as requested
  int64_t capacity() const { return capacity_; }  // the size class

 private:
  friend class PinnedHostPool;
  PinnedBuffer(PinnedHostPool* owner, void* data, int64_t size, int64_t capacity)
      : owner_(owner), data_(data), size_(size), capacity_(capacity) {}
  void Release();

  PinnedHostPool* owner_ = nullptr;
  void* data_ = nullptr;
  int64_t size_ = 0;
  int64_t capacity_ = 0;
};

struct PinnedHostPoolStats {
  int64_t cached_bytes = 0;       // free buffers held for reuse
  int64_t outstanding_bytes = 0;  // buffers handed out, by capacity
  int64_t host_allocations = 0;   // cudaHostAlloc calls, ever
  int64_t reuses = 0;             // Acquire calls served from the cache
};

class PinnedHostPool {
 public:
  static constexpr int64_t kMinClassBytes = 4096;

  static absl::StatusOr<std::unique_ptr<PinnedHostPool>> Create(int64_t max_cached_bytes);
  // Frees the cached buffers. Every PinnedBuffer must be gone by now.
  ~PinnedHostPool();
  PinnedHostPool(const PinnedHostPool&) = delete;
  PinnedHostPool& operator=(const PinnedHostPool&) = delete;

  // A buffer of at least `bytes` (> 0) bytes.
  absl::StatusOr<PinnedBuffer> Acquire(int64_t bytes);
  PinnedHostPoolStats Stats() const;

 private:
  friend class PinnedBuffer;
  explicit PinnedHostPool(int64_t max_cached_bytes) : max_cached_bytes_(max_cached_bytes) {}
  void Return(void* data, int64_t capacity);

  static constexpr int kClasses = 48;
  const int64_t max_cached_bytes_;
  mutable absl::Mutex mu_;
  std::vector<void*> free_[kClasses] ABSL_GUARDED_BY(mu_);
  PinnedHostPoolStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace nimble::vm::cuda
