#include "vm/runtime/allocator.h"

#include <cstring>
#include <random>
#include <vector>

#include "base/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace nimble::vm {
namespace {

using ::nimble::testing::StatusIs;

TEST(SizeClassTest, RoundsUpByAtMostAQuarter) {
  EXPECT_EQ(SizeClassBytes(1), 64u);
  EXPECT_EQ(SizeClassBytes(64), 64u);
  EXPECT_EQ(SizeClassBytes(65), 128u);
  for (size_t bytes : {4097u, 10000u, 1u << 20, (1u << 20) + 1, 123456789u}) {
    const size_t c = SizeClassBytes(bytes);
    EXPECT_GE(c, bytes);
    EXPECT_LE(c, bytes + bytes / 4 + 64) << bytes;
  }
}

TEST(PooledAllocatorTest, ReusesFreedBlocksOfTheSameClass) {
  CpuAllocator a;
  NIMBLE_ASSERT_OK_AND_ASSIGN(void* p, a.Allocate(1000));
  std::memset(p, 1, 1000);
  a.Free(p, 1000);
  NIMBLE_ASSERT_OK_AND_ASSIGN(void* q, a.Allocate(990));  // same class
  EXPECT_EQ(p, q);
  EXPECT_EQ(a.stats().pool_hits, 1);
  EXPECT_EQ(a.stats().system_allocations, 1);
  a.Free(q, 990);
  a.Trim();
  EXPECT_EQ(a.stats().cached_bytes, 0);
  EXPECT_EQ(a.stats().in_use_bytes, 0);
}

TEST(PooledAllocatorTest, EnforcesTheInUseLimit) {
  CpuAllocator a(PooledAllocator::Limits{.max_in_use_bytes = 1 << 20});
  NIMBLE_ASSERT_OK_AND_ASSIGN(void* p, a.Allocate(1 << 19));
  EXPECT_THAT(a.Allocate(1 << 20), StatusIs(absl::StatusCode::kResourceExhausted));
  a.Free(p, 1 << 19);
}

// Calls of changing sizes (an arena per call, like the VM's) never reserve more than the
// largest call used: misses give back cached blocks of other classes first.
TEST(PooledAllocatorTest, ReservedMemoryStaysWithinTheLargestCall) {
  CpuAllocator a;
  std::mt19937 rng(7);
  std::uniform_int_distribution<size_t> len(1, 512);
  auto call = [&](size_t n) {
    std::vector<std::pair<void*, size_t>> blocks;
    for (size_t bytes : {n * 3072, n * 12288, n * n * 48, size_t{4096}}) {
      auto p = a.Allocate(bytes);
      ASSERT_TRUE(p.ok());
      std::memset(*p, 0, bytes);
      blocks.emplace_back(*p, bytes);
    }
    for (auto [p, bytes] : blocks) a.Free(p, bytes);
  };
  call(512);
  const int64_t largest = a.stats().peak_reserved_bytes;
  for (int i = 0; i < 300; ++i) call(len(rng));
  EXPECT_LE(a.stats().peak_reserved_bytes, largest);
  EXPECT_GT(a.stats().pool_hits, 0);
}

}  // namespace
}  // namespace nimble::vm
