#include "vm/runtime/dtype.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace nimble::vm {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
    case DType::kU32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
    case DType::kI16:
    case DType::kU16:
      return 2;
    case DType::kF64:
    case DType::kI64:
    case DType::kU64:
      return 8;
    case DType::kI8:
    case DType::kU8:
    case DType::kBool:
    case DType::kF8E4M3FN:
    case DType::kF8E4M3FNUZ:
    case DType::kF8E5M2:
    case DType::kF8E5M2FNUZ:
    case DType::kU4:
    case DType::kI4:
    case DType::kF4E2M1:
    case DType::kF8E8M0:
    case DType::kU2:
    case DType::kI2:
      return 1;  // one (unpacked) element per byte
    case DType::kString:
      return sizeof(std::string);
    case DType::kInvalid:
      return 0;
  }
  return 0;
}

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
    case DType::kF64:
      return "f64";
    case DType::kI8:
      return "i8";
    case DType::kI16:
      return "i16";
    case DType::kI32:
      return "i32";
    case DType::kI64:
      return "i64";
    case DType::kU8:
      return "u8";
    case DType::kU16:
      return "u16";
    case DType::kU32:
      return "u32";
    case DType::kU64:
      return "u64";
    case DType::kBool:
      return "bool";
    case DType::kString:
      return "string";
    case DType::kF8E4M3FN:
      return "f8e4m3fn";
    case DType::kF8E4M3FNUZ:
      return "f8e4m3fnuz";
    case DType::kF8E5M2:
      return "f8e5m2";
    case DType::kF8E5M2FNUZ:
      return "f8e5m2fnuz";
    case DType::kU4:
      return "u4";
    case DType::kI4:
      return "i4";
    case DType::kF4E2M1:
      return "f4e2m1";
    case DType::kF8E8M0:
      return "f8e8m0";
    case DType::kU2:
      return "u2";
    case DType::kI2:
      return "i2";
    case DType::kInvalid:
      return "invalid";
  }
  return "invalid";
}

bool IsFloat(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16 ||
         dtype == DType::kF64;
}

bool IsInteger(DType dtype) {
  switch (dtype) {
    case DType::kI8:
    case DType::kI16:
    case DType::kI32:
    case DType::kI64:
    case DType::kU8:
    case DType::kU16:
    case DType::kU32:
    case DType::kU64:
      return true;
    default:
      return false;
  }
}

bool IsSigned(DType dtype) {
  switch (dtype) {
    case DType::kI8:
    case DType::kI16:
    case DType::kI32:
    case DType::kI64:
    case DType::kI4:
    case DType::kI2:
      return true;
    case DType::kF8E8M0:
      return false;
    default:
      return IsFloat(dtype) || IsLowPrecisionFloat(dtype);
  }
}

bool IsLowPrecision(DType dtype) {
  return static_cast<int>(dtype) >= static_cast<int>(DType::kF8E4M3FN) &&
         static_cast<int>(dtype) <= static_cast<int>(DType::kI2);
}

bool IsLowPrecisionInteger(DType dtype) {
  return dtype == DType::kU4 || dtype == DType::kI4 || dtype == DType::kU2 || dtype == DType::kI2;
}

bool IsLowPrecisionFloat(DType dtype) {
  return IsLowPrecision(dtype) && !IsLowPrecisionInteger(dtype);
}

int PackedBits(DType dtype) {
  switch (dtype) {
    case DType::kU4:
    case DType::kI4:
    case DType::kF4E2M1:
      return 4;
    case DType::kU2:
    case DType::kI2:
      return 2;
    default:
      return 0;
  }
}

IntRange LowPrecisionIntRange(DType dtype) {
  switch (dtype) {
    case DType::kU4:
      return {0, 15};
    case DType::kI4:
      return {-8, 7};
    case DType::kU2:
      return {0, 3};
    case DType::kI2:
      return {-2, 1};
    default:
      return {};
  }
}

namespace {

struct OnnxTypeInfo {
  int onnx;
  const char* name;
  DType dtype;  // kInvalid: no Nimble equivalent
};

// TensorProto.DataType, in ONNX's numbering.
constexpr OnnxTypeInfo kOnnxTypes[] = {
    {0, "UNDEFINED", DType::kInvalid},
    {1, "FLOAT", DType::kF32},
    {2, "UINT8", DType::kU8},
    {3, "INT8", DType::kI8},
    {4, "UINT16", DType::kU16},
    {5, "INT16", DType::kI16},
    {6, "INT32", DType::kI32},
    {7, "INT64", DType::kI64},
    {8, "STRING", DType::kString},
    {9, "BOOL", DType::kBool},
    {10, "FLOAT16", DType::kF16},
    {11, "DOUBLE", DType::kF64},
    {12, "UINT32", DType::kU32},
    {13, "UINT64", DType::kU64},
    {14, "COMPLEX64", DType::kInvalid},
    {15, "COMPLEX128", DType::kInvalid},
    {16, "BFLOAT16", DType::kBF16},
    {17, "FLOAT8E4M3FN", DType::kF8E4M3FN},
    {18, "FLOAT8E4M3FNUZ", DType::kF8E4M3FNUZ},
    {19, "FLOAT8E5M2", DType::kF8E5M2},
    {20, "FLOAT8E5M2FNUZ", DType::kF8E5M2FNUZ},
    {21, "UINT4", DType::kU4},
    {22, "INT4", DType::kI4},
    {23, "FLOAT4E2M1", DType::kF4E2M1},
    {24, "FLOAT8E8M0", DType::kF8E8M0},
    {25, "UINT2", DType::kU2},
    {26, "INT2", DType::kI2},
};

const OnnxTypeInfo* FindOnnxType(int64_t onnx_type) {
  for (const OnnxTypeInfo& info : kOnnxTypes) {
    if (info.onnx == onnx_type) return &info;
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<DType> DTypeFromOnnx(int64_t onnx_type) {
  const OnnxTypeInfo* info = FindOnnxType(onnx_type);
  if (info == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unknown ONNX data type ", onnx_type));
  }
  if (onnx_type == 0) return absl::InvalidArgumentError("ONNX data type is UNDEFINED");
  if (info->dtype == DType::kInvalid) {
    return absl::UnimplementedError(absl::StrCat("ONNX data type ", info->name, " (", onnx_type,
                                                 ") is not supported by Nimble"));
  }
  return info->dtype;
}

int DTypeToOnnx(DType dtype) {
  if (dtype == DType::kInvalid) return 0;
  for (const OnnxTypeInfo& info : kOnnxTypes) {
    if (info.dtype == dtype) return info.onnx;
  }
  return 0;
}

std::string OnnxTypeName(int64_t onnx_type) {
  const OnnxTypeInfo* info = FindOnnxType(onnx_type);
  return info ? std::string(info->name) : absl::StrCat("<", onnx_type, ">");
}

}  // namespace nimble::vm
