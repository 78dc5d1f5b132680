// Helpers shared by the CUDA kernel tests (label cuda): host <-> device copies of tensors on
// cuda:0's process-wide allocator and attribute literals.
#pragma once

#include <cuda_runtime_api.h>

#include <initializer_list>
#include <string>
#include <utility>

#include "gtest/gtest.h"
#include "vm/kernels/cuda/cuda_device.h"
#include "vm/kernels/kernel.h"

namespace nimble::vm::cuda_testing {

inline Allocator* Gpu() { return *cuda_device::DefaultAllocator(0); }

// A device copy of `t` (undefined stays undefined).
inline Tensor ToDevice(const Tensor& t, Allocator* allocator = Gpu()) {
  if (!t.defined()) return t;
  Tensor d = *Tensor::Empty(t.dtype(), t.shape(), allocator);
  EXPECT_EQ(cudaMemcpy(d.raw_data(), t.raw_data(), t.nbytes(), cudaMemcpyHostToDevice),
            cudaSuccess);
  return d;
}

inline Tensor ToHost(const Tensor& t) {
  Tensor h = *Tensor::Empty(t.dtype(), t.shape());
  EXPECT_EQ(cudaMemcpy(h.raw_data(), t.raw_data(), t.nbytes(), cudaMemcpyDeviceToHost),
            cudaSuccess);
  return h;
}

inline Attributes A(std::initializer_list<std::pair<std::string, AttrValue>> values) {
  Attributes a;
  for (const auto& [k, v] : values) a.Set(k, v);
  return a;
}

}  // namespace nimble::vm::cuda_testing
