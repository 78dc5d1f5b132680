// Symbolic multidirectional (numpy) broadcasting for type relations.
//
// Per output axis, dims a and b (right-aligned) give:
//   equal expressions           -> that expression
//   one side provably 1         -> the other side
//   both constants, unequal     -> kInvalidArgument (so is any provably incompatible pair:
//                                  provably unequal and neither can be 1)
//   otherwise (unprovable)      -> one side (the one provably not 1, else the constant, else the
//                                  left), plus a run-time check that the other side equals it or
//                                  is 1 (gradual typing; see shape_check.h)
// An unknown dim (nullopt) broadcast against a dim that is provably not 1 gives that dim (the
// kernel rejects anything else at run time); otherwise the result is unknown.
#pragma once

#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "compiler/ir/type.h"
#include "compiler/shape/shape_check.h"
#include "compiler/shape/type_relations.h"

namespace nimble::compiler {

// One axis. Checks go to `checks` (deduplicated); `what` names the axis in messages.
absl::StatusOr<Dim> BroadcastDim(DimContext& dims, const Dim& a, const Dim& b,
                                 absl::string_view what, std::vector<ShapeCheck>& checks);

// Broadcast of whole shapes (any number, right-aligned). nullopt when a rank is unknown.
absl::StatusOr<std::optional<std::vector<Dim>>> BroadcastShapes(
    DimContext& dims, const std::vector<const TensorType*>& shapes,
    std::vector<ShapeCheck>& checks);

// The same, recording checks on the node being inferred.
absl::StatusOr<std::optional<std::vector<Dim>>> BroadcastShapes(
    InferenceContext& ctx, const std::vector<const TensorType*>& shapes);

// Unidirectional broadcast: `from` must broadcast onto `to` (PRelu's slope, Gemm's C).
absl::Status RequireUnidirectionalBroadcast(InferenceContext& ctx, const TensorType& from,
                                            const std::vector<Dim>& to, absl::string_view what);

}  // namespace nimble::compiler
