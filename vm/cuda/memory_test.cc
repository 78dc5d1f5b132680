// Device allocator, pinned staging pool, copies, streams and events. Runs only with a GPU (the
// `cuda` test main exits 77 — skipped — without one).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <random>
#include <thread>
#include <vector>

#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vm/cuda/cuda_status.h"
#include "vm/cuda/device_allocator.h"
#include "vm/cuda/device_copy.h"
#include "vm/cuda/fill_kernels.h"
#include "vm/cuda/pinned_host_pool.h"
#include "vm/cuda/stream.h"

namespace nimble::vm::cuda {
namespace {

using ::nimble::testing::IsOk;
using ::nimble::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr int64_t kMiB = int64_t{1} << 20;

TEST(CudaStatusTest, DriverCublasAndNvrtcErrorsCarryCallTextAndName) {
  EXPECT_THAT(CuStatus(CUDA_SUCCESS, "cuInit(0)"), IsOk());
  EXPECT_THAT(
      CuStatus(CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc(&p, n)"),
      StatusIs(absl::StatusCode::kResourceExhausted,
               AllOf(HasSubstr("cuMemAlloc(&p, n)"), HasSubstr("CUDA_ERROR_OUT_OF_MEMORY"))));
  EXPECT_THAT(
      CublasStatus(CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatmul(...)"),
      StatusIs(absl::StatusCode::kUnimplemented,
               AllOf(HasSubstr("cublasLtMatmul(...)"), HasSubstr("CUBLAS_STATUS_NOT_SUPPORTED"))));
  EXPECT_THAT(NvrtcStatus(NVRTC_ERROR_INVALID_INPUT, "nvrtcCreateProgram"),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("NVRTC_ERROR_INVALID_INPUT")));
  // A reported runtime error does not linger as the last error of a later launch check.
  void* p = nullptr;
  EXPECT_THAT(CudaStatus(cudaMalloc(&p, ~size_t{0} >> 1), "cudaMalloc(huge)"),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("cudaMalloc(huge)")));
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

TEST(StreamTest, EventsOrderStreamsAndTime) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto producer, Stream::Create());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto consumer, Stream::Create());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto start, Event::Create());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto produced, Event::Create());
  constexpr int64_t kCount = 1 << 24;
  float* a = nullptr;
  float* b = nullptr;
  ASSERT_THAT(
      CudaStatus(cudaMalloc(reinterpret_cast<void**>(&a), kCount * sizeof(float)), "cudaMalloc"),
      IsOk());
  ASSERT_THAT(
      CudaStatus(cudaMalloc(reinterpret_cast<void**>(&b), kCount * sizeof(float)), "cudaMalloc"),
      IsOk());
  ASSERT_THAT(start->Record(producer->get()), IsOk());
  ASSERT_THAT(FillF32(a, kCount, 3.5f, producer->get()), IsOk());
  ASSERT_THAT(produced->Record(producer->get()), IsOk());
  ASSERT_THAT(consumer->WaitFor(*produced), IsOk());
  ASSERT_THAT(CopyDeviceToDeviceAsync(b, a, kCount * sizeof(float), consumer->get()), IsOk());
  std::vector<float> host(kCount, 0.0f);
  ASSERT_THAT(CopyDeviceToHostAsync(host.data(), b, kCount * sizeof(float), consumer->get()),
              IsOk());
  ASSERT_THAT(consumer->Synchronize(), IsOk());
  NIMBLE_ASSERT_OK_AND_ASSIGN(bool done, produced->Query());
  EXPECT_TRUE(done);
  NIMBLE_ASSERT_OK_AND_ASSIGN(float ms, Event::ElapsedMs(*start, *produced));
  EXPECT_GT(ms, 0.0f);
  EXPECT_EQ(host.front(), 3.5f);
  EXPECT_EQ(host[kCount / 2 + 17], 3.5f);
  EXPECT_EQ(host.back(), 3.5f);
  cudaFree(a);
  cudaFree(b);
}

TEST(DeviceAllocatorTest, RejectsBadOptions) {
  EXPECT_THAT(DeviceAllocator::Create({.byte_limit = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("byte_limit")));
}

TEST(DeviceAllocatorTest, EnforcesByteLimitWithResourceExhausted) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto stream, Stream::Create());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto allocator, DeviceAllocator::Create({.byte_limit = 64 * kMiB}));
  EXPECT_THAT(allocator->Allocate(64 * kMiB + 1, stream->get()),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("device memory limit")));
  EXPECT_THAT(allocator->Allocate(-1, stream->get()), StatusIs(absl::StatusCode::kInvalidArgument));
  NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceBuffer a, allocator->AllocateBuffer(40 * kMiB, stream->get()));
  NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceBuffer b, allocator->AllocateBuffer(20 * kMiB, stream->get()));
  EXPECT_THAT(allocator->AllocateBuffer(8 * kMiB, stream->get()),
              StatusIs(absl::StatusCode::kResourceExhausted));
  NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceMemoryStats stats, allocator->Stats());
  EXPECT_EQ(stats.in_use_bytes, 60 * kMiB);
  EXPECT_EQ(stats.rejected, 2);
  EXPECT_GE(stats.reserved_bytes, 60 * kMiB);
  ASSERT_THAT(a.Reset(), IsOk());
  NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceBuffer c, allocator->AllocateBuffer(8 * kMiB, stream->get()));
  ASSERT_NE(c.data(), nullptr);
  ASSERT_THAT(FillF32(c.as<float>(), 8 * kMiB / 4, 1.0f, stream->get()), IsOk());
  NIMBLE_ASSERT_OK_AND_ASSIGN(stats, allocator->Stats());
  EXPECT_EQ(stats.in_use_bytes, 28 * kMiB);
  EXPECT_EQ(stats.peak_in_use_bytes, 60 * kMiB);
  EXPECT_THAT(allocator->Free(reinterpret_cast<void*>(0x1000), stream->get()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("did not allocate")));
  ASSERT_THAT(stream->Synchronize(), IsOk());
}

// Shape churn: 10k allocations of sizes drawn from 1 KiB..16 MiB (log-uniform, not multiples of
// anything), up to 12 alive at once, freed in random order. The pool must reuse what was freed:
// reserved memory stays bounded by the byte limit throughout and falls back under the release
// threshold once everything is freed and the stream synchronised.
TEST(DeviceAllocatorTest, ShapeChurnLeavesReservedBounded) {
  constexpr int64_t kLimit = 512 * kMiB;
  constexpr int64_t kThreshold = 32 * kMiB;
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto stream, Stream::Create());
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto allocator,
      DeviceAllocator::Create({.byte_limit = kLimit, .release_threshold = kThreshold}));
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> log_size(10.0, 24.0);
  std::deque<DeviceBuffer> live;
  int64_t max_reserved = 0;
  for (int i = 0; i < 10000; ++i) {
    const int64_t bytes = static_cast<int64_t>(std::exp2(log_size(rng))) + (i % 7) * 3;
    NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceBuffer buffer,
                                allocator->AllocateBuffer(bytes, stream->get()));
    if (i % 64 == 0) {  // touch some of it so the memory is really mapped and used
      ASSERT_THAT(FillF32(buffer.as<float>(), bytes / 4, 1.0f, stream->get()), IsOk());
    }
    live.push_back(std::move(buffer));
    if (live.size() > 12) {
      const size_t victim = rng() % live.size();
      ASSERT_THAT(live[victim].Reset(), IsOk());
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(victim));
    }
    if (i % 500 == 0) {
      NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceMemoryStats stats, allocator->Stats());
      max_reserved = std::max(max_reserved, stats.reserved_bytes);
      ASSERT_LE(stats.in_use_bytes, 13 * 16 * kMiB + 13 * DeviceAllocator::kAllocationGranule);
    }
  }
  live.clear();
  ASSERT_THAT(stream->Synchronize(), IsOk());
  NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceMemoryStats stats, allocator->Stats());
  EXPECT_EQ(stats.in_use_bytes, 0);
  EXPECT_EQ(stats.allocations, 10000);
  EXPECT_LE(stats.peak_reserved_bytes, kLimit) << "pool grew past the byte limit";
  EXPECT_LE(max_reserved, kLimit);
  EXPECT_LE(stats.reserved_bytes, kThreshold + 2 * kMiB)
      << "unused memory above the release threshold was kept after a synchronisation";
  ASSERT_THAT(allocator->Trim(0), IsOk());
  NIMBLE_ASSERT_OK_AND_ASSIGN(stats, allocator->Stats());
  EXPECT_EQ(stats.reserved_bytes, 0);
  std::printf("churn: peak in use %.1f MiB, peak reserved %.1f MiB\n",
              static_cast<double>(stats.peak_in_use_bytes) / kMiB,
              static_cast<double>(stats.peak_reserved_bytes) / kMiB);
}

TEST(DeviceAllocatorTest, ConcurrentThreadsOnOwnStreamsKeepExactAccounting) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto allocator, DeviceAllocator::Create({.byte_limit = 256 * kMiB}));
  constexpr int kThreads = 4;
  std::vector<absl::Status> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      results[t] = [&]() -> absl::Status {
        NIMBLE_ASSIGN_OR_RETURN(auto stream, Stream::Create());
        std::mt19937 rng(t);
        std::vector<DeviceBuffer> live;
        for (int i = 0; i < 2000; ++i) {
          NIMBLE_ASSIGN_OR_RETURN(
              DeviceBuffer b, allocator->AllocateBuffer(1 + static_cast<int64_t>(rng() % (1 << 20)),
                                                        stream->get()));
          live.push_back(std::move(b));
          if (live.size() > 8) {
            NIMBLE_RETURN_IF_ERROR(live[rng() % live.size()].Reset());
            live.erase(std::remove_if(live.begin(), live.end(),
                                      [](const DeviceBuffer& x) { return x.data() == nullptr; }),
                       live.end());
          }
        }
        live.clear();
        return stream->Synchronize();
      }();
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (const absl::Status& status : results) EXPECT_THAT(status, IsOk());
  NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceMemoryStats stats, allocator->Stats());
  EXPECT_EQ(stats.in_use_bytes, 0);
  EXPECT_EQ(stats.allocations, kThreads * 2000);
  EXPECT_LE(stats.peak_in_use_bytes, kThreads * 9 * kMiB + kThreads * 9 * 256);
}

TEST(PinnedHostPoolTest, ReusesBySizeClassAndBoundsTheCache) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto pool, PinnedHostPool::Create(/*max_cached_bytes=*/kMiB));
  {
    NIMBLE_ASSERT_OK_AND_ASSIGN(PinnedBuffer a, pool->Acquire(5000));
    EXPECT_EQ(a.capacity(), 8192);
    EXPECT_EQ(a.size(), 5000);
    cudaPointerAttributes attrs;
    ASSERT_THAT(CudaStatus(cudaPointerGetAttributes(&attrs, a.data()), "attrs"), IsOk());
    EXPECT_EQ(attrs.type, cudaMemoryTypeHost);
  }
  { NIMBLE_ASSERT_OK_AND_ASSIGN(PinnedBuffer b, pool->Acquire(8000)); }
  PinnedHostPoolStats stats = pool->Stats();
  EXPECT_EQ(stats.host_allocations, 1);
  EXPECT_EQ(stats.reuses, 1);
  EXPECT_EQ(stats.cached_bytes, 8192);
  { NIMBLE_ASSERT_OK_AND_ASSIGN(PinnedBuffer big, pool->Acquire(2 * kMiB)); }
  stats = pool->Stats();
  EXPECT_EQ(stats.cached_bytes, 8192) << "a buffer over the cache bound must be freed";
  EXPECT_EQ(stats.outstanding_bytes, 0);
  EXPECT_THAT(pool->Acquire(0), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(DeviceCopyTest, StagedRoundTripOfOddSizeThroughSmallChunks) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto stream, Stream::Create());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto allocator, DeviceAllocator::Create({}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto pool, PinnedHostPool::Create(16 * kMiB));
  constexpr int64_t kBytes = 3 * kMiB + 12345;
  std::vector<uint8_t> in(kBytes);
  std::mt19937 rng(3);
  for (uint8_t& v : in) v = static_cast<uint8_t>(rng());
  NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceBuffer a, allocator->AllocateBuffer(kBytes, stream->get()));
  NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceBuffer b, allocator->AllocateBuffer(kBytes, stream->get()));
  ASSERT_THAT(CopyFromPageable(a.data(), in.data(), kBytes, *pool, stream->get(), 1 << 18), IsOk());
  ASSERT_THAT(CopyDeviceToDeviceAsync(b.data(), a.data(), kBytes, stream->get()), IsOk());
  std::vector<uint8_t> out(kBytes, 0xAB);
  ASSERT_THAT(CopyToPageable(out.data(), b.data(), kBytes, *pool, stream->get(), 1 << 18), IsOk());
  EXPECT_EQ(std::memcmp(in.data(), out.data(), kBytes), 0);
  EXPECT_EQ(pool->Stats().host_allocations, 2) << "second copy reuses the two staging buffers";
  EXPECT_THAT(CopyHostToDeviceAsync(a.data(), nullptr, 4, stream->get()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("null")));
}

}  // namespace
}  // namespace nimble::vm::cuda
