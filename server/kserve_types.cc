#include "server/kserve_types.h"

#include <array>
#include <utility>

#include "absl/strings/str_cat.h"

namespace nimble::server {
namespace {

struct Entry {
  const char* name;
  vm::DType dtype;
  inference::DataType triton;
};

constexpr std::array<Entry, 14> kTypes = {{
    {"BOOL", vm::DType::kBool, inference::TYPE_BOOL},
    {"UINT8", vm::DType::kU8, inference::TYPE_UINT8},
    {"UINT16", vm::DType::kU16, inference::TYPE_UINT16},
    {"UINT32", vm::DType::kU32, inference::TYPE_UINT32},
    {"UINT64", vm::DType::kU64, inference::TYPE_UINT64},
    {"INT8", vm::DType::kI8, inference::TYPE_INT8},
    {"INT16", vm::DType::kI16, inference::TYPE_INT16},
    {"INT32", vm::DType::kI32, inference::TYPE_INT32},
    {"INT64", vm::DType::kI64, inference::TYPE_INT64},
    {"FP16", vm::DType::kF16, inference::TYPE_FP16},
    {"FP32", vm::DType::kF32, inference::TYPE_FP32},
    {"FP64", vm::DType::kF64, inference::TYPE_FP64},
    {"BYTES", vm::DType::kString, inference::TYPE_STRING},
    {"BF16", vm::DType::kBF16, inference::TYPE_BF16},
}};

}  // namespace

absl::StatusOr<vm::DType> DTypeFromKServe(absl::string_view datatype) {
  for (const Entry& e : kTypes) {
    if (datatype == e.name) return e.dtype;
  }
  for (int i = 1; i < vm::kNumDTypes; ++i) {
    const auto dtype = static_cast<vm::DType>(i);
    if (vm::IsLowPrecision(dtype) && datatype == KServeDatatype(dtype)) return dtype;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown datatype '", datatype,
                   "' (KServe v2 datatypes: BOOL, UINT8..UINT64, INT8..INT64, FP16, BF16, FP32, "
                   "FP64, BYTES)"));
}

std::string KServeDatatype(vm::DType dtype) {
  for (const Entry& e : kTypes) {
    if (e.dtype == dtype) return e.name;
  }
  return vm::OnnxTypeName(vm::DTypeToOnnx(dtype));
}

inference::DataType TritonDataType(vm::DType dtype) {
  for (const Entry& e : kTypes) {
    if (e.dtype == dtype) return e.triton;
  }
  return inference::TYPE_INVALID;
}

}  // namespace nimble::server
