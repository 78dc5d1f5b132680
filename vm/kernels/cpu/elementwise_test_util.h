// Test helpers shared by elementwise_test.cc, reduction_test.cc and normalization_test.cc.
#pragma once

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "base/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vm/kernels/cpu/fp16.h"
#include "vm/kernels/kernel.h"

namespace nimble::vm::cpu::testing {

template <typename T>
Tensor Make(std::vector<T> v, Shape shape) {
  return Tensor::FromVector<T>(v, shape);
}
inline Tensor F(std::vector<float> v, Shape shape) { return Make<float>(std::move(v), shape); }
inline Tensor D(std::vector<double> v, Shape shape) { return Make<double>(std::move(v), shape); }
inline Tensor I32(std::vector<int32_t> v, Shape shape) {
  return Make<int32_t>(std::move(v), shape);
}
inline Tensor I64(std::vector<int64_t> v, Shape shape) {
  return Make<int64_t>(std::move(v), shape);
}
inline Tensor B(std::vector<int> v, Shape shape) {
  Tensor t = *Tensor::Empty(DType::kBool, shape);
  for (size_t i = 0; i < v.size(); ++i) t.data<bool>()[i] = v[i] != 0;
  return t;
}
inline Tensor Str(std::vector<std::string> v, Shape shape) {
  Tensor t = *Tensor::Empty(DType::kString, shape);
  for (size_t i = 0; i < v.size(); ++i) t.data<std::string>()[i] = v[i];
  return t;
}
// f16 / bf16 tensors from float values (rounded to nearest even).
inline Tensor Half(DType dtype, const std::vector<float>& v, Shape shape) {
  Tensor t = *Tensor::Empty(dtype, shape);
  auto* p = static_cast<uint16_t*>(t.raw_data());
  for (size_t i = 0; i < v.size(); ++i) {
    p[i] = dtype == DType::kF16 ? FloatToHalf(v[i]) : FloatToBFloat16(v[i]);
  }
  return t;
}
inline std::vector<float> HalfValues(const Tensor& t) {
  std::vector<float> out(t.num_elements());
  const auto* p = static_cast<const uint16_t*>(t.raw_data());
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = t.dtype() == DType::kF16 ? HalfToFloat(p[i]) : BFloat16ToFloat(p[i]);
  }
  return out;
}

template <typename T>
std::vector<T> Values(const Tensor& t) {
  return std::vector<T>(t.data<T>(), t.data<T>() + t.num_elements());
}
inline std::vector<int> BoolValues(const Tensor& t) {
  std::vector<int> out;
  for (int64_t i = 0; i < t.num_elements(); ++i) out.push_back(t.data<bool>()[i] ? 1 : 0);
  return out;
}

inline Attributes Attrs(std::initializer_list<std::pair<std::string, AttrValue>> values) {
  Attributes a;
  for (const auto& [k, v] : values) a.Set(k, v);
  return a;
}

// Runs `op`: shapes from the kernel's OutputShapes, dtypes from `dtypes` (default: the first
// input's), then Run with `num_threads`. Kernels that allocate their outputs get them empty.
inline absl::StatusOr<std::vector<Tensor>> RunOp(const std::string& op, const Attributes& attrs,
                                                 std::vector<Tensor> inputs, int num_outputs = 1,
                                                 std::vector<DType> dtypes = {},
                                                 int num_threads = 1) {
  NIMBLE_ASSIGN_OR_RETURN(auto kernel, KernelRegistry::Global().Create(op, kCpu.type, attrs));
  std::vector<Tensor> outputs(num_outputs);
  if (!kernel->allocates_outputs()) {
    std::vector<Shape> shapes(num_outputs);
    NIMBLE_RETURN_IF_ERROR(kernel->OutputShapes(inputs, absl::MakeSpan(shapes)));
    for (int i = 0; i < num_outputs; ++i) {
      const DType dtype = i < static_cast<int>(dtypes.size()) ? dtypes[i] : inputs[0].dtype();
      NIMBLE_ASSIGN_OR_RETURN(outputs[i], Tensor::Empty(dtype, shapes[i]));
    }
  }
  KernelContext ctx;
  ctx.num_threads = num_threads;
  NIMBLE_RETURN_IF_ERROR(kernel->Run(ctx, inputs, absl::MakeSpan(outputs)));
  return outputs;
}

// Runs `op` into caller-made outputs (to test output validation).
inline absl::Status RunInto(const std::string& op, const Attributes& attrs,
                            std::vector<Tensor> inputs, std::vector<Tensor> outputs) {
  NIMBLE_ASSIGN_OR_RETURN(auto kernel, KernelRegistry::Global().Create(op, kCpu.type, attrs));
  return kernel->Run(KernelContext(), inputs, absl::MakeSpan(outputs));
}

// |actual - expected| <= atol + rtol * |expected|, NaNs matching NaNs.
MATCHER_P2(NearRel, rtol, atol, "") {
  const auto& [actual, expected] = arg;
  const double a = actual, e = expected;
  if (std::isnan(e)) return std::isnan(a);
  if (std::isinf(e)) return a == e;
  return std::abs(a - e) <= atol + rtol * std::abs(e);
}

}  // namespace nimble::vm::cpu::testing
