// One VM instruction. Fixed-size so that the interpreter indexes code directly; variable
// operand lists live in the function's operand pool.
#pragma once

#include <cstdint>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "vm/runtime/dtype.h"

namespace nimble::vm {

enum class Opcode : uint8_t {
#define NIMBLE_OPCODE(Name, mnemonic, operands, list) k##Name,
#include "vm/isa/opcodes.def"
#undef NIMBLE_OPCODE
};

inline constexpr int kNumOpcodes = 0
#define NIMBLE_OPCODE(Name, mnemonic, operands, list) +1
#include "vm/isa/opcodes.def"
#undef NIMBLE_OPCODE
    ;

struct OpcodeInfo {
  absl::string_view mnemonic;
  absl::string_view operands;  // kinds of dst, a, b, c (see opcodes.def)
  char list;                   // kind of the list operand
};

inline constexpr OpcodeInfo kOpcodeInfo[] = {
#define NIMBLE_OPCODE(Name, mnemonic, operands, list) {mnemonic, operands, list},
#include "vm/isa/opcodes.def"
#undef NIMBLE_OPCODE
};

inline const OpcodeInfo& GetOpcodeInfo(Opcode op) { return kOpcodeInfo[static_cast<int>(op)]; }

// Operations of ScalarBinary / ScalarBinaryImm (field c). Comparisons yield 0 or 1. FloorDiv
// and Mod round toward negative infinity (Python semantics, as ONNX shape arithmetic needs);
// division by zero fails the call.
enum class ScalarOp : int32_t {
  kAdd = 0,
  kSub = 1,
  kMul = 2,
  kFloorDiv = 3,
  kMod = 4,
  kMin = 5,
  kMax = 6,
  kEq = 7,
  kNe = 8,
  kLt = 9,
  kLe = 10,
  kAnd = 11,
  kOr = 12,
  kCeilDiv = 13,
};
inline constexpr int kNumScalarOps = 14;

// InvokePacked flags (field c) and, with kInvokePackedShapeFunction, the output dtypes packed
// into imm, 5 bits per output: output i has dtype (imm >> 5*i) & 0x1F. (Format version 1 used
// 4-bit fields and 16 outputs; 5 bits hold every DType, and 12 fields fit in 64 bits.)
// device_copy's imm: a copy of a function result to the host that nothing reads before the
// function returns, so it need not finish before the next instruction (VirtualMachine::
// ExecDeviceCopy).
inline constexpr int64_t kDeviceCopyResult = 1;

inline constexpr int32_t kInvokePackedAllocatesOutputs = 1;
inline constexpr int32_t kInvokePackedShapeFunction = 2;
inline constexpr int32_t kInvokePackedSequenceInputs = 4;
inline constexpr int32_t kInvokePackedSequenceOutput = 8;
inline constexpr int kOutputDTypeBits = 5;
inline constexpr int kMaxShapeFunctionOutputs = 64 / kOutputDTypeBits;  // 12
static_assert(kNumDTypes <= (1 << kOutputDTypeBits),
              "output dtypes of InvokePacked are 5-bit fields");

inline constexpr int64_t EncodeOutputDTypes(absl::Span<const DType> dtypes) {
  uint64_t imm = 0;
  for (size_t i = 0; i < dtypes.size() && i < kMaxShapeFunctionOutputs; ++i) {
    imm |= uint64_t{static_cast<uint8_t>(dtypes[i])} << (kOutputDTypeBits * i);
  }
  return static_cast<int64_t>(imm);
}
// kInvalid for an output past the 12 fields.
inline constexpr DType DecodeOutputDType(int64_t imm, int output) {
  if (output < 0 || output >= kMaxShapeFunctionOutputs) return DType::kInvalid;
  return static_cast<DType>((static_cast<uint64_t>(imm) >> (kOutputDTypeBits * output)) &
                            ((1u << kOutputDTypeBits) - 1));
}

// ScalarOp kAnd / kOr are logical: the result is 1 when both / either operand is non-zero.

struct Instruction {
  Opcode op = Opcode::kMove;
  int32_t dst = -1;
  int32_t a = -1;
  int32_t b = -1;
  int32_t c = -1;
  int64_t imm = 0;
  uint32_t list_begin = 0;  // into Function::operand_pool
  uint32_t list_size = 0;
};

}  // namespace nimble::vm
