// Shared by the relation files; not part of the public interface.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "compiler/shape/type_relations.h"

namespace nimble::compiler {

void RegisterElementwiseRelations(RelationRegistry& registry);
void RegisterTensorRelations(RelationRegistry& registry);
void RegisterNnRelations(RelationRegistry& registry);
void RegisterReduceRelations(RelationRegistry& registry);
void RegisterControlRelations(RelationRegistry& registry);
void RegisterSignalRelations(RelationRegistry& registry);

// `axis` in [-rank, rank) -> [0, rank); kInvalidArgument otherwise.
absl::StatusOr<int> NormalizeAxis(int64_t axis, int rank, absl::string_view what = "axis");

// Inputs listed must all have the dtype of the first; kInvalidArgument otherwise.
absl::Status RequireSameDType(InferenceContext& ctx, std::initializer_list<int> inputs);

// A dim from a value in model data (Reshape target, ConstantOfShape shape, Range count, ...):
// kInvalidArgument for a negative or absurdly large constant.
absl::StatusOr<DimExpr> DimFromValue(const DimExpr& value, absl::string_view what);

// Every present input's tensor type, or the error for the first that is not a tensor.
absl::StatusOr<std::vector<const TensorType*>> AllInputTensors(InferenceContext& ctx);

// Copies the dims of `type` replacing unknown dims by FreshDim(output, axis).
TensorType FreshenUnknownDims(InferenceContext& ctx, int output, TensorType type);

// An output of `rank` fresh run-time dims (nullopt rank: unknown rank).
TensorType FreshTensor(InferenceContext& ctx, int output, vm::DType dtype, std::optional<int> rank);

// Dims as printed: "[batch, seq, 768]".
std::string DimsToString(InferenceContext& ctx, const std::vector<Dim>& dims);

bool IsNumeric(vm::DType dtype);
bool IsIntegral(vm::DType dtype);  // signed/unsigned integers (not bool)

}  // namespace nimble::compiler
