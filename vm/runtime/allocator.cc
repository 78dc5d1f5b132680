#include "vm/runtime/allocator.h"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace nimble::vm {

size_t SizeClassBytes(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes <= 4096) return (bytes + 63) & ~size_t{63};
  const int msb = 63 - std::countl_zero(static_cast<uint64_t>(bytes));
  const size_t base = size_t{1} << msb;
  const size_t quarter = base >> 2;
  return base + ((bytes - base + quarter - 1) / quarter) * quarter;
}

PooledAllocator::~PooledAllocator() = default;

PooledAllocator::FreeList& PooledAllocator::ListFor(size_t class_bytes) {
  auto it = std::lower_bound(lists_.begin(), lists_.end(), class_bytes,
                             [](const FreeList& l, size_t c) { return l.class_bytes < c; });
  if (it == lists_.end() || it->class_bytes != class_bytes) {
    it = lists_.insert(it, FreeList{class_bytes, {}});
  }
  return *it;
}

absl::StatusOr<void*> PooledAllocator::Allocate(size_t bytes) {
  const size_t class_bytes = SizeClassBytes(bytes);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stats_.in_use_bytes + static_cast<int64_t>(class_bytes) > limits_.max_in_use_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("allocating ", bytes, " bytes on ", device().ToString(), " would exceed ",
                       "the limit of ", limits_.max_in_use_bytes, " bytes in use (",
                       stats_.in_use_bytes, " in use)"));
    }
    FreeList& list = ListFor(class_bytes);
    if (!list.blocks.empty()) {
      void* ptr = list.blocks.back();
      list.blocks.pop_back();
      stats_.cached_bytes -= class_bytes;
      stats_.in_use_bytes += class_bytes;
      stats_.peak_in_use_bytes = std::max(stats_.peak_in_use_bytes, stats_.in_use_bytes);
      ++stats_.pool_hits;
      return ptr;
    }
  }
  // A miss: before asking the system, give back cached blocks of other classes (largest
  // first) so that reserved memory (in use + cached) stays within the in-use high-water mark.
  // A workload of changing shapes then never holds more than its largest call needed.
  std::vector<std::pair<void*, size_t>> released;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const int64_t need = static_cast<int64_t>(class_bytes);
    const int64_t target = std::max(stats_.peak_in_use_bytes, stats_.in_use_bytes + need);
    for (auto it = lists_.rbegin();
         it != lists_.rend() && stats_.in_use_bytes + stats_.cached_bytes + need > target; ++it) {
      while (!it->blocks.empty() && stats_.in_use_bytes + stats_.cached_bytes + need > target) {
        released.emplace_back(it->blocks.back(), it->class_bytes);
        it->blocks.pop_back();
        stats_.cached_bytes -= static_cast<int64_t>(it->class_bytes);
      }
    }
  }
  for (auto [block, size] : released) SystemFree(block, size);
  void* ptr = SystemAllocate(class_bytes);
  if (ptr == nullptr) {
    // The cache may hold memory of other classes: give it back and try once more.
    Trim();
    ptr = SystemAllocate(class_bytes);
    if (ptr == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("out of memory on ", device().ToString(), " allocating ", bytes, " bytes"));
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.system_allocations;
  stats_.in_use_bytes += class_bytes;
  stats_.peak_in_use_bytes = std::max(stats_.peak_in_use_bytes, stats_.in_use_bytes);
  stats_.peak_reserved_bytes =
      std::max(stats_.peak_reserved_bytes, stats_.in_use_bytes + stats_.cached_bytes);
  return ptr;
}

void PooledAllocator::Free(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  const size_t class_bytes = SizeClassBytes(bytes);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.in_use_bytes -= class_bytes;
    if (stats_.cached_bytes + static_cast<int64_t>(class_bytes) <= limits_.max_cached_bytes) {
      ListFor(class_bytes).blocks.push_back(ptr);
      stats_.cached_bytes += class_bytes;
      return;
    }
  }
  SystemFree(ptr, class_bytes);
}

AllocatorStats PooledAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void PooledAllocator::Trim() {
  std::vector<std::pair<void*, size_t>> blocks;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (FreeList& list : lists_) {
      for (void* ptr : list.blocks) blocks.emplace_back(ptr, list.class_bytes);
      list.blocks.clear();
    }
    stats_.cached_bytes = 0;
  }
  for (auto [ptr, size] : blocks) SystemFree(ptr, size);
}

void PooledAllocator::ReleaseAll() { Trim(); }

namespace {
// Blocks from this size on are mapped directly: freeing them returns the pages to the system
// at once (malloc would keep them in its heap past its adaptive mmap threshold).
constexpr size_t kMapBytes = size_t{1} << 20;
}  // namespace

void* CpuAllocator::SystemAllocate(size_t bytes) {
  bytes = (bytes + kAlignment - 1) & ~(kAlignment - 1);
  if (bytes >= kMapBytes) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
  }
  return std::aligned_alloc(kAlignment, bytes);
}

void CpuAllocator::SystemFree(void* ptr, size_t bytes) {
  bytes = (bytes + kAlignment - 1) & ~(kAlignment - 1);
  if (bytes >= kMapBytes) {
    munmap(ptr, bytes);
    return;
  }
  std::free(ptr);
}

Allocator* DefaultCpuAllocator() {
  static CpuAllocator* allocator = new CpuAllocator();  // never destroyed: outlives all tensors
  return allocator;
}

}  // namespace nimble::vm
