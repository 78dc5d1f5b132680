// KServe v2 datatype strings ("FP32", "INT64", "BYTES", ...) <-> vm::DType, and Triton's
// model_config DataType enum.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model_config.pb.h"
#include "vm/runtime/dtype.h"

namespace nimble::server {

// kInvalidArgument naming the string for anything KServe does not define.
absl::StatusOr<vm::DType> DTypeFromKServe(absl::string_view datatype);

// "FP32", "BYTES", ...; for the ONNX low-precision types, which KServe has no name for, the
// upper-cased ONNX name ("FLOAT8E4M3FN").
std::string KServeDatatype(vm::DType dtype);

// TYPE_FP32, TYPE_STRING, ...; TYPE_INVALID for types Triton's enum lacks.
inference::DataType TritonDataType(vm::DType dtype);

}  // namespace nimble::server
