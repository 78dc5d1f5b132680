// ONNX TensorProto <-> vm::Tensor, and readers for the serialized test data of the ONNX backend
// suite (test_data_set_*/input_*.pb: a TensorProto, SequenceProto or OptionalProto each).
//
// Model data is untrusted: every size is checked against the bytes actually present before
// anything is allocated, so a proto that claims a [1e12] tensor with no data is an error, not an
// allocation. External data files must lie inside the model's directory.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "compiler/frontend/onnx/onnx.pb.h"
#include "vm/runtime/dtype.h"
#include "vm/runtime/tensor.h"

namespace nimble::compiler {

// The ONNX data type <-> DType mapping is vm::DTypeFromOnnx / vm::DTypeToOnnx (vm/runtime/dtype.h).

// The tensor a TensorProto holds, on the host. Reads whichever storage field the data type
// uses (float_data, int32_data, int64_data, uint64_data, double_data, string_data), raw_data
// (little-endian) or external data. The 4-bit (INT4, UINT4, FLOAT4E2M1) and 2-bit (INT2, UINT2)
// types are packed there, low bits first (two or four elements per byte of raw_data or per
// int32_data entry), and are unpacked to one element per byte (sign-extended for INT4/INT2).
// `model_dir` is the directory external data paths are relative to; external data is an error when
// it is empty.
absl::StatusOr<vm::Tensor> TensorFromProto(const nimble::onnx::TensorProto& proto,
                                           const std::string& model_dir);

// Writes a host tensor as dims + data_type + raw_data (string_data for strings; the 4- and 2-bit
// types packed, low bits first). Does not touch
// proto->name().
absl::Status TensorToProto(const vm::Tensor& tensor, nimble::onnx::TensorProto* proto);

// Elements of a SequenceProto of tensors.
absl::StatusOr<std::vector<vm::Tensor>> SequenceFromProto(const nimble::onnx::SequenceProto& proto,
                                                          const std::string& model_dir);

// The value of an OptionalProto of a tensor or a sequence of tensors.
struct OptionalData {
  enum class Kind { kNone, kTensor, kSequence };
  Kind kind = Kind::kNone;
  vm::Tensor tensor;                 // kTensor
  std::vector<vm::Tensor> sequence;  // kSequence
};
absl::StatusOr<OptionalData> OptionalFromProto(const nimble::onnx::OptionalProto& proto,
                                               const std::string& model_dir);

// A file holding one serialized TensorProto / SequenceProto / OptionalProto. External data is
// resolved relative to the file's directory.
absl::StatusOr<vm::Tensor> ReadTensorProtoFile(const std::string& path);
absl::StatusOr<std::vector<vm::Tensor>> ReadSequenceProtoFile(const std::string& path);
absl::StatusOr<OptionalData> ReadOptionalProtoFile(const std::string& path);

// The whole file; kNotFound when it cannot be opened, kResourceExhausted when it is larger
// than `max_bytes`.
absl::StatusOr<std::string> ReadFileToString(const std::string& path, int64_t max_bytes);

}  // namespace nimble::compiler
