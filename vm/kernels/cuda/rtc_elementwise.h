// FusedElementwise programs as CUDA C++ compiled at run time (NVRTC, vm/cuda/rtc_compiler.h):
// one straight-line kernel per (program, storage type, rank, input access pattern), values in
// registers, instead of the interpreter's switch over a slot array in local memory. The
// adapter (ops.cc) compiles on a kernel's first call at a new pattern (cached on disk by
// source hash) and falls back to the interpreter while a stream is capturing, when NVRTC
// fails, or with NIMBLE_CUDA_RTC=0.
//
// The generated kernel, `nimble_fused_elementwise(RtcElementwiseArgs)`, grid-strides over the
// output elements; inputs of the output's shape are read at the element's index, one-element
// inputs at 0, others through broadcast strides. Arithmetic is fp32 with the interpreter's
// formulas; half types convert on load and round once on store.
#pragma once

#include <cstdint>
#include <string>

#include "vm/kernels/cuda/ops_cuda.h"

namespace nimble::vm::cuda_ops {

// How a launch reads each input: bit k of `dense` = input k has the output's shape, bit k of
// `scalar` = input k has one element.
struct RtcElementwiseVariant {
  FloatType type = FloatType::kF32;
  int rank = 0;
  uint32_t dense = 0;
  uint32_t scalar = 0;
  friend bool operator==(const RtcElementwiseVariant& a, const RtcElementwiseVariant& b) {
    return a.type == b.type && a.rank == b.rank && a.dense == b.dense && a.scalar == b.scalar;
  }
};

// The kernel's single parameter (the generated source declares the same layout).
struct RtcElementwiseArgs {
  const void* inputs[kMaxProgramInputs];
  void* outputs[kMaxProgramInputs];
  int64_t dims[kMaxRank];
  int64_t strides[kMaxProgramInputs][kMaxRank];
  int64_t count;
};

inline constexpr char kRtcElementwiseKernel[] = "nimble_fused_elementwise";

// The CUDA C++ source of `program` for `variant`. Unknown opcodes make an error-free source
// whose kernel writes NaN, as the interpreter does.
std::string RtcElementwiseSource(const Program& program, const RtcElementwiseVariant& variant);

}  // namespace nimble::vm::cuda_ops
