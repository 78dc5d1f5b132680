// main() for tests labelled `cuda`: without a usable GPU the binary prints why and exits 77,
// which ctest reports as "skipped" (SKIP_RETURN_CODE), never as passed.
#include <cstdio>

#include "gtest/gtest.h"
#include "vm/cuda/device_info.h"

int main(int argc, char** argv) {
  auto devices = nimble::vm::cuda::ListDevices();
  if (!devices.ok()) {
    std::printf("SKIPPED: no usable CUDA device: %s\n", devices.status().ToString().c_str());
    return 77;
  }
  std::printf("CUDA device 0: %s\n", nimble::vm::cuda::Describe(devices->front()).c_str());
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
