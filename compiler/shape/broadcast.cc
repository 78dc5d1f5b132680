#include "compiler/shape/broadcast.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "compiler/shape/dim_util.h"

namespace nimble::compiler {
namespace {

bool IsOne(const Dim& d) { return d && *d == DimExpr::Const(1); }

void AddUnique(std::vector<ShapeCheck>& checks, ShapeCheck check) {
  for (const ShapeCheck& c : checks) {
    if (c == check) return;
  }
  checks.push_back(std::move(check));
}

}  // namespace

absl::StatusOr<Dim> BroadcastDim(DimContext& dims, const Dim& a, const Dim& b,
                                 absl::string_view what, std::vector<ShapeCheck>& checks) {
  if (!a || !b) {
    if (IsOne(a)) return b;
    if (IsOne(b)) return a;
    if (a && ProvablyNotOne(dims, *a)) return a;
    if (b && ProvablyNotOne(dims, *b)) return b;
    return Dim();
  }
  if (*a == *b || IsOne(b)) return a;
  if (IsOne(a)) return b;
  const bool a_not_one = ProvablyNotOne(dims, *a);
  const bool b_not_one = ProvablyNotOne(dims, *b);
  if (a_not_one && b_not_one && ProvablyNotEqual(dims, *a, *b)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot broadcast dim ", dims.ToString(*a),
                                                   " with dim ", dims.ToString(*b), " (", what,
                                                   ")"));
  }
  // Keep the side that is surely not 1 (or the constant): the other must equal it or be 1.
  bool keep_a = true;
  if (b_not_one && !a_not_one) {
    keep_a = false;
  } else if (a_not_one == b_not_one && b->IsConst() && !a->IsConst()) {
    keep_a = false;
  }
  const DimExpr& kept = keep_a ? *a : *b;
  const DimExpr& other = keep_a ? *b : *a;
  AddUnique(checks, ShapeCheck{ProvablyNotOne(dims, other) ? ShapeCheck::Kind::kEqual
                                                           : ShapeCheck::Kind::kBroadcastable,
                               other, kept, std::string(what)});
  return Dim(kept);
}

absl::StatusOr<std::optional<std::vector<Dim>>> BroadcastShapes(
    DimContext& dims, const std::vector<const TensorType*>& shapes,
    std::vector<ShapeCheck>& checks) {
  size_t rank = 0;
  for (const TensorType* t : shapes) {
    if (!t->has_rank()) return std::optional<std::vector<Dim>>();
    rank = std::max(rank, static_cast<size_t>(t->rank()));
  }
  std::vector<Dim> out(rank, Dim(DimExpr::Const(1)));
  for (size_t i = 0; i < shapes.size(); ++i) {
    const std::vector<Dim>& d = *shapes[i]->dims;
    const size_t offset = rank - d.size();
    for (size_t k = 0; k < d.size(); ++k) {
      const size_t axis = offset + k;
      NIMBLE_ASSIGN_OR_RETURN(
          out[axis],
          BroadcastDim(dims, out[axis], d[k],
                       absl::StrCat("broadcasting output axis ", axis, ", input ", i), checks));
    }
  }
  return std::optional<std::vector<Dim>>(std::move(out));
}

absl::StatusOr<std::optional<std::vector<Dim>>> BroadcastShapes(
    InferenceContext& ctx, const std::vector<const TensorType*>& shapes) {
  std::vector<ShapeCheck> checks;
  NIMBLE_ASSIGN_OR_RETURN(std::optional<std::vector<Dim>> out,
                          BroadcastShapes(ctx.dims(), shapes, checks));
  for (ShapeCheck& c : checks) ctx.AddCheck(std::move(c));
  return out;
}

absl::Status RequireUnidirectionalBroadcast(InferenceContext& ctx, const TensorType& from,
                                            const std::vector<Dim>& to, absl::string_view what) {
  if (!from.has_rank()) return absl::OkStatus();
  if (from.rank() > static_cast<int>(to.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": rank ", from.rank(), " cannot broadcast to rank ", to.size()));
  }
  const size_t offset = to.size() - from.dims->size();
  for (size_t k = 0; k < from.dims->size(); ++k) {
    NIMBLE_RETURN_IF_ERROR(ctx.RequireBroadcastable((*from.dims)[k], to[offset + k],
                                                    absl::StrCat(what, ", axis ", offset + k)));
  }
  return absl::OkStatus();
}

}  // namespace nimble::compiler
