// Types of IR values: tensors with a dtype and (when known) a rank whose dims are symbolic
// expressions or unknown, plus ONNX sequences and optionals of tensors.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "compiler/ir/dim_expr.h"
#include "vm/runtime/dtype.h"

namespace nimble::compiler {

// A dim: a DimExpr (constant or symbolic), or unknown (nullopt: Nimble's Any).
using Dim = std::optional<DimExpr>;

struct TensorType {
  vm::DType dtype = vm::DType::kInvalid;
  std::optional<std::vector<Dim>> dims;  // nullopt: rank unknown

  bool has_rank() const { return dims.has_value(); }
  int rank() const { return static_cast<int>(dims->size()); }
  // All dims known (constant or symbolic).
  bool fully_known() const;
  // All dims constant.
  bool is_static() const;
  // Constant dims as ints, when is_static().
  std::vector<int64_t> StaticDims() const;
  // Number of elements as an expression, when fully_known().
  std::optional<DimExpr> NumElements() const;

  static TensorType Of(vm::DType dtype, std::vector<Dim> dims) { return {dtype, std::move(dims)}; }
  static TensorType Static(vm::DType dtype, const std::vector<int64_t>& dims);
  static TensorType UnknownRank(vm::DType dtype) { return {dtype, std::nullopt}; }
};

struct Type {
  enum class Kind { kTensor, kSequence, kOptional };
  Kind kind = Kind::kTensor;
  TensorType tensor;  // the tensor, or the element type of a sequence/optional
  // Optional of a sequence (ONNX optional(seq(tensor))).
  bool optional_of_sequence = false;

  static Type Tensor(TensorType t) { return {Kind::kTensor, std::move(t), false}; }
  static Type Sequence(TensorType t) { return {Kind::kSequence, std::move(t), false}; }
  static Type Optional(TensorType t, bool of_sequence = false) {
    return {Kind::kOptional, std::move(t), of_sequence};
  }
  bool is_tensor() const { return kind == Kind::kTensor; }
};

// "f32[batch, seq + 1, 768]", "f32[?, 3]", "f32[*]", "seq<i64[?]>".
std::string TypeToString(const Type& type, const DimContext& dims);
std::string TensorTypeToString(const TensorType& type, const DimContext& dims);

}  // namespace nimble::compiler
