// Reductions: Reduce* (keepdims, noop_with_empty_axes; axes an attribute before opset 13 for
// ReduceSum and 18 for the rest, an input after) and ArgMax/ArgMin.
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "compiler/shape/relations_internal.h"

namespace nimble::compiler {
namespace {

absl::Status ReduceRelation(InferenceContext& ctx, int axes_input_since) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  const bool keepdims = ctx.AttrInt("keepdims", 1) != 0;
  bool axes_present = false;
  std::optional<std::vector<int64_t>> axes;
  std::optional<int64_t> axes_count;
  bool noop = false;
  if (ctx.opset() >= axes_input_since) {
    noop = ctx.AttrInt("noop_with_empty_axes", 0) != 0;
    if (ctx.has_input(1)) {
      axes_present = true;
      axes = ctx.InputInts(1);
      if (axes) {
        axes_count = static_cast<int64_t>(axes->size());
      } else if (const TensorType& t = ctx.input_type(1)->tensor;
                 t.has_rank() && t.rank() == 1 && (*t.dims)[0] && (*t.dims)[0]->IsConst()) {
        axes_count = (*t.dims)[0]->ConstValue();
      }
    }
  } else if ((axes = ctx.AttrInts("axes"))) {
    axes_present = true;
    axes_count = static_cast<int64_t>(axes->size());
  }
  if (axes_present && axes_count && *axes_count == 0) axes_present = false;  // empty = absent
  if (!x->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, std::nullopt));
    return absl::OkStatus();
  }
  const int r = x->rank();
  if (axes_present && !axes) {
    // Which axes go is known only at run time.
    std::optional<int> rank = keepdims ? std::optional<int>(r) : std::nullopt;
    if (!keepdims && axes_count) rank = r - static_cast<int>(*axes_count);
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, rank));
    return absl::OkStatus();
  }
  if (!axes_present && noop) {
    ctx.SetOutput(0, *x);
    return absl::OkStatus();
  }
  std::set<int> reduced;
  if (axes_present) {
    for (int64_t a : *axes) {
      NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(a, r));
      reduced.insert(axis);
    }
  } else {
    for (int a = 0; a < r; ++a) reduced.insert(a);
  }
  std::vector<Dim> out;
  for (int a = 0; a < r; ++a) {
    if (!reduced.count(a)) {
      out.push_back((*x->dims)[a]);
    } else if (keepdims) {
      out.push_back(DimExpr::Const(1));
    }
  }
  ctx.SetOutput(0, TensorType::Of(x->dtype, std::move(out)));
  return absl::OkStatus();
}

absl::Status ArgRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  const bool keepdims = ctx.AttrInt("keepdims", 1) != 0;
  if (!x->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, vm::DType::kI64, std::nullopt));
    return absl::OkStatus();
  }
  NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(ctx.AttrInt("axis", 0), x->rank()));
  std::vector<Dim> out = *x->dims;
  if (keepdims) {
    out[axis] = DimExpr::Const(1);
  } else {
    out.erase(out.begin() + axis);
  }
  ctx.SetOutput(0, TensorType::Of(vm::DType::kI64, std::move(out)));
  return absl::OkStatus();
}

}  // namespace

void RegisterReduceRelations(RelationRegistry& r) {
  r.Register("", "ReduceSum", [](InferenceContext& ctx) { return ReduceRelation(ctx, 13); });
  for (const char* op : {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                         "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}) {
    r.Register("", op, [](InferenceContext& ctx) { return ReduceRelation(ctx, 18); });
  }
  r.Register("", "ArgMax", ArgRelation);
  r.Register("", "ArgMin", ArgRelation);
}

}  // namespace nimble::compiler
