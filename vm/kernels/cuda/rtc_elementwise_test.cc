// The FusedElementwise code generator against NVRTC with a fixed target (sm_90): every opcode,
// each storage type and access pattern compiles. Needs the NVRTC library but no GPU, so it runs
// wherever the CUDA backend builds (CI included); the GPU results are compared with the CPU
// kernel by vm_cuda_kernels_vs_cpu_test.
#include "vm/kernels/cuda/rtc_elementwise.h"

#include <string>

#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vm/cuda/rtc_compiler.h"
#include "vm/kernels/fused_elementwise_program.h"

namespace nimble::vm::cuda_ops {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Loads inputs 0..2, runs every binary and unary opcode once, stores two outputs.
Program EveryOp() {
  Program p;
  int n = 0;
  auto emit = [&](FusedOp op, int dst, int a, int b) {
    p.code[n][0] = static_cast<int8_t>(op), p.code[n][1] = static_cast<int8_t>(dst);
    p.code[n][2] = static_cast<int8_t>(a), p.code[n][3] = static_cast<int8_t>(b);
    ++n;
  };
  emit(FusedOp::kLoad, 0, 0, 0);
  emit(FusedOp::kLoad, 1, 1, 0);
  emit(FusedOp::kLoad, 2, 2, 0);
  emit(FusedOp::kConst, 3, 0, 0);
  for (FusedOp op : {FusedOp::kAdd, FusedOp::kSub, FusedOp::kMul, FusedOp::kDiv, FusedOp::kMax,
                     FusedOp::kMin, FusedOp::kPow}) {
    emit(op, 4, 4, 1);
  }
  for (FusedOp op : {FusedOp::kNeg, FusedOp::kExp, FusedOp::kLog, FusedOp::kSqrt, FusedOp::kRsqrt,
                     FusedOp::kTanh, FusedOp::kErf, FusedOp::kSigmoid, FusedOp::kRelu,
                     FusedOp::kGelu, FusedOp::kGeluTanh, FusedOp::kAbs, FusedOp::kReciprocal}) {
    emit(op, 5, 0, 0);
  }
  emit(FusedOp::kAdd, 6, 5, 2);
  emit(FusedOp::kStore, 0, 4, 0);
  emit(FusedOp::kStore, 1, 6, 0);
  p.num_instructions = n, p.num_inputs = 3, p.num_outputs = 2;
  p.constants[0] = -1.5f;
  return p;
}

TEST(RtcElementwiseTest, EveryOpcodeTypeAndAccessPatternCompilesForSm90) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto compiler, cuda::RtcCompiler::Create({.arch = 90}));
  const Program p = EveryOp();
  for (FloatType type : {FloatType::kF32, FloatType::kF16, FloatType::kBF16}) {
    // Input 0 dense, 1 a scalar, 2 broadcast through strides, over rank 3.
    const RtcElementwiseVariant variant{.type = type, .rank = 3, .dense = 1, .scalar = 2};
    const std::string src = RtcElementwiseSource(p, variant);
    EXPECT_THAT(src, HasSubstr("in0 + i"));
    EXPECT_THAT(src, HasSubstr("in1 + 0"));
    EXPECT_THAT(src, HasSubstr("in2 + o2"));
    EXPECT_THAT(src, Not(HasSubstr("o0 +=")));
    EXPECT_THAT(src, HasSubstr("__int_as_float(0xbfc00000)"));  // -1.5f, exactly
    NIMBLE_ASSERT_OK_AND_ASSIGN(std::string cubin,
                                compiler->CompileToCubin(src, "fused_elementwise.cu"));
    EXPECT_EQ(cubin.substr(0, 4), "\x7f" "ELF");
    EXPECT_NE(cubin.find(kRtcElementwiseKernel), std::string::npos);
  }
}

TEST(RtcElementwiseTest, SourceDependsOnEveryPartOfTheVariant) {
  const Program p = EveryOp();
  const RtcElementwiseVariant base{.type = FloatType::kF16, .rank = 2, .dense = 1, .scalar = 0};
  const std::string src = RtcElementwiseSource(p, base);
  RtcElementwiseVariant other = base;
  other.type = FloatType::kBF16;
  EXPECT_NE(RtcElementwiseSource(p, other), src);
  other = base, other.rank = 3;
  EXPECT_NE(RtcElementwiseSource(p, other), src);
  other = base, other.dense = 3;
  EXPECT_NE(RtcElementwiseSource(p, other), src);
  other = base, other.scalar = 4;
  EXPECT_NE(RtcElementwiseSource(p, other), src);
}

}  // namespace
}  // namespace nimble::vm::cuda_ops
