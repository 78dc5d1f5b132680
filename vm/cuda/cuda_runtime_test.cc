#include <cuda_runtime_api.h>

#include <vector>

#include "base/testing/status_matchers.h"
#include "gtest/gtest.h"
#include "vm/cuda/cuda_status.h"
#include "vm/cuda/device_info.h"
#include "vm/cuda/fill_kernels.h"

namespace nimble::vm::cuda {
namespace {

using ::nimble::testing::IsOk;
using ::nimble::testing::StatusIs;
using ::testing::HasSubstr;

TEST(CudaStatusTest, MapsErrorsToCodes) {
  EXPECT_THAT(CudaStatus(cudaSuccess, "x"), IsOk());
  EXPECT_THAT(CudaStatus(cudaErrorMemoryAllocation, "cudaMalloc"),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("cudaMalloc")));
  EXPECT_THAT(CudaStatus(cudaErrorNoDevice, "probe"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("cudaErrorNoDevice")));
}

TEST(DeviceInfoTest, ListsAtLeastOneDeviceWithSaneProperties) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::vector<DeviceInfo> devices, ListDevices());
  ASSERT_FALSE(devices.empty());
  EXPECT_GT(devices[0].multiprocessors, 0);
  EXPECT_GT(devices[0].total_memory_bytes, int64_t{1} << 30);
  EXPECT_THAT(Describe(devices[0]), HasSubstr("sm_"));
}

TEST(FillKernelsTest, FillsOddCountsExactly) {
  constexpr int64_t kCount = 1000003;  // not a multiple of the block size
  float* device = nullptr;
  ASSERT_THAT(
      CudaStatus(cudaMalloc(reinterpret_cast<void**>(&device), (kCount + 1) * sizeof(float)),
                 "cudaMalloc"),
      IsOk());
  ASSERT_THAT(CudaStatus(cudaMemset(device, 0, (kCount + 1) * sizeof(float)), "memset"), IsOk());
  ASSERT_THAT(FillF32(device, kCount, 2.5f, nullptr), IsOk());
  std::vector<float> host(kCount + 1, -1.0f);
  ASSERT_THAT(CudaStatus(cudaMemcpy(host.data(), device, host.size() * sizeof(float),
                                    cudaMemcpyDeviceToHost),
                         "cudaMemcpy"),
              IsOk());
  cudaFree(device);
  EXPECT_EQ(host[0], 2.5f);
  EXPECT_EQ(host[kCount - 1], 2.5f);
  EXPECT_EQ(host[kCount], 0.0f) << "wrote past the end";
}

}  // namespace
}  // namespace nimble::vm::cuda
