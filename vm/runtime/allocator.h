// Device memory allocators. The VM allocates every tensor through one of these; they pool
// freed blocks by size class so that steady-state calls do not hit malloc/cudaMalloc, bound
// both what is in use and what is cached, and give cached memory back (TVM's exact-size pool
// grew without bound under shape churn: every new length was a new size).
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "vm/runtime/device.h"

namespace nimble::vm {

struct AllocatorStats {
  int64_t in_use_bytes = 0;         // handed out, by size class
  int64_t cached_bytes = 0;         // freed and kept for reuse
  int64_t peak_in_use_bytes = 0;    // high-water mark of in_use_bytes
  int64_t peak_reserved_bytes = 0;  // high-water mark of in_use + cached
  int64_t system_allocations = 0;   // calls that reached the system allocator
  int64_t pool_hits = 0;            // allocations served from the cache
};

// Thread-safe: all methods may be called concurrently.
class Allocator {
 public:
  virtual ~Allocator() = default;
  // At least `bytes` bytes aligned to kAlignment. kResourceExhausted past the limit.
  virtual absl::StatusOr<void*> Allocate(size_t bytes) = 0;
  // `bytes` must be the value given to Allocate for `ptr`.
  virtual void Free(void* ptr, size_t bytes) = 0;
  virtual Device device() const = 0;
  virtual AllocatorStats stats() const = 0;
  // Returns all cached blocks to the system.
  virtual void Trim() = 0;

  static constexpr size_t kAlignment = 64;
};

// Size class of a request: multiples of 64 B up to 4 KiB, then four classes per power of two
// (2^k, 1.25·2^k, 1.5·2^k, 1.75·2^k), so rounding wastes at most 25% and a workload of
// random lengths touches a logarithmic number of classes.
size_t SizeClassBytes(size_t bytes);

// The pooled allocator over raw system memory of one device. Subclasses provide the system
// calls (aligned_alloc for CPU, cudaMalloc for CUDA).
// Thread-safe: one mutex guards the free lists and the counters.
class PooledAllocator : public Allocator {
 public:
  struct Limits {
    int64_t max_in_use_bytes = int64_t{64} << 30;  // beyond this, kResourceExhausted
    int64_t max_cached_bytes = int64_t{2} << 30;   // beyond this, freed blocks go back
  };

  explicit PooledAllocator(Limits limits) : limits_(limits) {}
  ~PooledAllocator() override;

  absl::StatusOr<void*> Allocate(size_t bytes) override;
  void Free(void* ptr, size_t bytes) override;
  AllocatorStats stats() const override;
  void Trim() override;

 protected:
  virtual void* SystemAllocate(size_t bytes) = 0;
  virtual void SystemFree(void* ptr, size_t bytes) = 0;
  // Subclasses call this from their destructor (virtual calls are gone in ours).
  void ReleaseAll();

 private:
  struct FreeList {
    size_t class_bytes = 0;
    std::vector<void*> blocks;
  };
  FreeList& ListFor(size_t class_bytes);  // requires mutex_

  const Limits limits_;
  mutable std::mutex mutex_;  // guards lists_ and stats_
  std::vector<FreeList> lists_;
  AllocatorStats stats_;
};

// Host memory, 64-byte aligned.
class CpuAllocator final : public PooledAllocator {
 public:
  explicit CpuAllocator(Limits limits = {}) : PooledAllocator(limits) {}
  ~CpuAllocator() override { ReleaseAll(); }
  Device device() const override { return kCpu; }

 protected:
  void* SystemAllocate(size_t bytes) override;
  void SystemFree(void* ptr, size_t bytes) override;
};

// The process-wide host allocator.
Allocator* DefaultCpuAllocator();

}  // namespace nimble::vm
