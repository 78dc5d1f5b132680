// The FusedElementwise program encoding: the contract between the compiler's elementwise
// fusion and every backend's FusedElementwise kernel (the CPU interpreter of it today, NVRTC
// code generation later). Attributes of the kernel:
//   "program"   std::vector<int64_t>: instructions of 4 words: [opcode, dst, a, b]
//   "constants" std::vector<double>:  immediates referenced by kConst
// Slots are float32 registers holding one block of the output (or a broadcast value); inputs
// are f32 tensors broadcast (numpy rules) to the output shape; outputs are f32 of that shape.
//
//   opcode          dst           a               b
//   kLoad   = 0     slot          input index     -       slot <- inputs[a]
//   kConst  = 1     slot          constant index  -       slot <- constants[a]
//   kStore  = 2     output index  slot            -       outputs[dst] <- slot
//   binary          slot          slot            slot    slot <- a (op) b
//   unary           slot          slot            -       slot <- op(a)
#pragma once

#include <cstdint>

namespace nimble::vm {

enum class FusedOp : int64_t {
  kLoad = 0,
  kConst = 1,
  kStore = 2,
  kAdd = 10,
  kSub = 11,
  kMul = 12,
  kDiv = 13,
  kMax = 14,
  kMin = 15,
  kPow = 16,
  kNeg = 30,
  kExp = 31,
  kLog = 32,
  kSqrt = 33,
  kRsqrt = 34,
  kTanh = 35,
  kErf = 36,
  kSigmoid = 37,
  kRelu = 38,
  kGelu = 39,      // erf form
  kGeluTanh = 40,  // tanh approximation
  kAbs = 41,
  kReciprocal = 42,
};

inline constexpr int kFusedProgramMaxSlots = 32;

}  // namespace nimble::vm
