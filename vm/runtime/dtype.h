// Element types of tensors, shared by the compiler and the VM (the executable format stores
// them as their numeric values, so never renumber).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace nimble::vm {

enum class DType : uint8_t {
  kInvalid = 0,
  kF32 = 1,
  kF16 = 2,
  kBF16 = 3,
  kF64 = 4,
  kI8 = 5,
  kI16 = 6,
  kI32 = 7,
  kI64 = 8,
  kU8 = 9,
  kU16 = 10,
  kU32 = 11,
  kU64 = 12,
  kBool = 13,
  kString = 14,  // elements are std::string objects
  // Low-precision ONNX types. Every one is stored one element per byte in memory: the 8-bit
  // floats as their bit pattern, the 4-bit float as its bit pattern in the low nibble, the
  // 4- and 2-bit integers as their value (sign-extended for the signed ones). They are packed
  // only at the ONNX TensorProto boundary.
  kF8E4M3FN = 15,
  kF8E4M3FNUZ = 16,
  kF8E5M2 = 17,
  kF8E5M2FNUZ = 18,
  kU4 = 19,
  kI4 = 20,
  kF4E2M1 = 21,
  kF8E8M0 = 22,
  kU2 = 23,
  kI2 = 24,
};
inline constexpr int kNumDTypes = 25;

// Bytes per element; 0 for kInvalid. kString elements are sizeof(std::string).
size_t DTypeSize(DType dtype);
// "f32", "i64", "bool", ...
absl::string_view DTypeName(DType dtype);
// f16, bf16, f32, f64: the floats kernels compute in. The storage-only low-precision floats
// (float8, float4) are not included; see IsLowPrecision.
bool IsFloat(DType dtype);
// i8..i64, u8..u64 (not bool, not the 4- and 2-bit integers).
bool IsInteger(DType dtype);
// Signed integers (the 4- and 2-bit ones too) and floats (all but f8e8m0, which has no sign).
bool IsSigned(DType dtype);
// The ONNX low-precision types kF8E4M3FN .. kI2 (float8, float4, 4- and 2-bit integers).
bool IsLowPrecision(DType dtype);
// kF8E4M3FN, kF8E4M3FNUZ, kF8E5M2, kF8E5M2FNUZ, kF4E2M1, kF8E8M0.
bool IsLowPrecisionFloat(DType dtype);
// kU4, kI4, kU2, kI2.
bool IsLowPrecisionInteger(DType dtype);
// Bits per element in the packed ONNX encoding: 4 for kU4/kI4/kF4E2M1, 2 for kU2/kI2, else 0
// (not packed).
int PackedBits(DType dtype);
// The value range of a 4- or 2-bit integer type (e.g. [-8, 7] for kI4); {0, 0} otherwise.
struct IntRange {
  int64_t lo = 0;
  int64_t hi = 0;
};
IntRange LowPrecisionIntRange(DType dtype);

// ONNX TensorProto.DataType numbers (FLOAT = 1, ..., INT2 = 26) <-> DType: the one mapping
// the frontend, the shape relations and the kernels share. kInvalidArgument for UNDEFINED and
// unknown numbers, kUnimplemented for ONNX types Nimble has no DType for (COMPLEX64,
// COMPLEX128, FLOAT6 ...), both naming the type.
absl::StatusOr<DType> DTypeFromOnnx(int64_t onnx_type);
// 0 (UNDEFINED) for kInvalid.
int DTypeToOnnx(DType dtype);
// "FLOAT", "FLOAT8E4M3FN", ...; "<N>" for numbers ONNX does not define.
std::string OnnxTypeName(int64_t onnx_type);

// C++ type <-> DType for kernels.
template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kF32;
};
template <>
struct DTypeOf<double> {
  static constexpr DType value = DType::kF64;
};
template <>
struct DTypeOf<int8_t> {
  static constexpr DType value = DType::kI8;
};
template <>
struct DTypeOf<int16_t> {
  static constexpr DType value = DType::kI16;
};
template <>
struct DTypeOf<int32_t> {
  static constexpr DType value = DType::kI32;
};
template <>
struct DTypeOf<int64_t> {
  static constexpr DType value = DType::kI64;
};
template <>
struct DTypeOf<uint8_t> {
  static constexpr DType value = DType::kU8;
};
template <>
struct DTypeOf<uint16_t> {
  static constexpr DType value = DType::kU16;
};
template <>
struct DTypeOf<uint32_t> {
  static constexpr DType value = DType::kU32;
};
template <>
struct DTypeOf<uint64_t> {
  static constexpr DType value = DType::kU64;
};
template <>
struct DTypeOf<bool> {
  static constexpr DType value = DType::kBool;
};

}  // namespace nimble::vm
