// Shape-manipulating and indexing operators: Shape, Size, Reshape, Flatten, Squeeze,
// Unsqueeze, Transpose, Concat, Split, Slice, Expand, Tile, Pad, ConstantOfShape, Constant,
// Range, Trilu, Gather*, Scatter*, NonZero, TopK, OneHot, Compress, Unique,
// NonMaxSuppression, EyeLike, DepthToSpace, SpaceToDepth, CumSum, Einsum.
//
// Shape tensors carry symbolic values (Value::symbolic_value) through Shape, Gather, Concat,
// Slice, Squeeze/Unsqueeze/Reshape, Constant and ConstantOfShape, so a Reshape whose target
// was computed from Shape(x) gets symbolic dims. Dims that depend on values unknown at compile
// time get fresh run-time symbols (ctx.FreshDim), which also marks the node runtime.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "compiler/shape/broadcast.h"
#include "compiler/shape/dim_util.h"
#include "compiler/shape/relations_internal.h"

namespace nimble::compiler {
namespace {

// A list operand that is an attribute before opset `since` and an input from it on.
struct ListOperand {
  bool present = false;                        // given at all
  std::optional<std::vector<DimExpr>> values;  // values, when known
  std::optional<int64_t> length;               // element count, when known
};

ListOperand GetList(InferenceContext& ctx, int input, const std::string& attr, int since) {
  ListOperand out;
  if (ctx.opset() < since) {
    std::optional<std::vector<int64_t>> ints = ctx.AttrInts(attr);
    if (!ints) return out;
    out.present = true;
    out.values.emplace();
    for (int64_t v : *ints) out.values->push_back(DimExpr::Const(v));
    out.length = static_cast<int64_t>(ints->size());
    return out;
  }
  if (!ctx.has_input(input)) return out;
  out.present = true;
  out.values = ctx.InputSymbolicValue(input);
  if (!out.values) {
    if (std::optional<std::vector<int64_t>> ints = ctx.InputInts(input)) {
      out.values.emplace();
      for (int64_t v : *ints) out.values->push_back(DimExpr::Const(v));
    }
  }
  if (out.values) {
    out.length = static_cast<int64_t>(out.values->size());
  } else if (const Type* t = ctx.input_type(input); t && t->tensor.has_rank()) {
    if (t->tensor.rank() == 0) out.length = 1;
    if (t->tensor.rank() == 1 && (*t->tensor.dims)[0] && (*t->tensor.dims)[0]->IsConst()) {
      out.length = (*t->tensor.dims)[0]->ConstValue();
    }
  }
  return out;
}

std::optional<std::vector<int64_t>> ConstInts(const std::optional<std::vector<DimExpr>>& v) {
  if (!v) return std::nullopt;
  std::vector<int64_t> out;
  for (const DimExpr& e : *v) {
    if (!e.IsConst()) return std::nullopt;
    out.push_back(e.ConstValue());
  }
  return out;
}

// Normalised, duplicate-free axes.
absl::StatusOr<std::vector<int>> NormalizeAxes(const std::vector<int64_t>& axes, int rank) {
  std::vector<int> out;
  std::set<int> seen;
  for (int64_t a : axes) {
    NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(a, rank));
    if (!seen.insert(axis).second) {
      return absl::InvalidArgumentError(absl::StrCat("axis ", a, " is repeated"));
    }
    out.push_back(axis);
  }
  return out;
}

absl::Status RequireIndexType(InferenceContext& ctx, int input) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* t, ctx.InputTensor(input));
  if (t->dtype != vm::DType::kI64 && t->dtype != vm::DType::kI32) {
    return absl::InvalidArgumentError(
        absl::StrCat("input ", input, " must be int32 or int64, got ", vm::DTypeName(t->dtype)));
  }
  return absl::OkStatus();
}

// A dim that must divide: d / k exactly, or floordiv with a run-time check.
absl::StatusOr<Dim> DivideDim(InferenceContext& ctx, const Dim& d, const DimExpr& k,
                              absl::string_view what) {
  if (!d) return Dim();
  if (std::optional<DimExpr> q = ExactDiv(*d, k)) return Dim(*q);
  NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual(
      ctx.dims().Mod(*d, k), DimExpr(),
      absl::StrCat(what, ": ", ctx.Str(d), " must be divisible by ", ctx.dims().ToString(k))));
  return Dim(ctx.dims().FloorDiv(*d, k));
}

std::optional<DimExpr> SumOf(const std::vector<Dim>& dims) {
  DimExpr s;
  for (const Dim& d : dims) {
    if (!d) return std::nullopt;
    std::optional<DimExpr> next = CheckedAdd(s, *d);
    if (!next) return std::nullopt;
    s = *next;
  }
  return s;
}

// ---- Shape, Size -----------------------------------------------------------------------------

absl::Status ShapeRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  if (!x->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, vm::DType::kI64, 1));
    return absl::OkStatus();
  }
  const int64_t r = x->rank();
  auto clamp = [r](int64_t v) {
    if (v < 0) v += r;
    return std::clamp<int64_t>(v, 0, r);
  };
  int64_t start = 0, end = r;
  if (ctx.opset() >= 15) {
    start = clamp(ctx.AttrInt("start", 0));
    end = clamp(ctx.AttrInt("end", r));
  }
  const int64_t n = std::max<int64_t>(end - start, 0);
  ctx.SetOutput(0, TensorType::Static(vm::DType::kI64, {n}));
  std::vector<DimExpr> value;
  for (int64_t a = start; a < start + n; ++a) {
    if (!(*x->dims)[a]) return absl::OkStatus();
    value.push_back(*(*x->dims)[a]);
  }
  ctx.SetOutputSymbolicValue(0, std::move(value));
  return absl::OkStatus();
}

absl::Status SizeRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  ctx.SetOutput(0, TensorType::Static(vm::DType::kI64, {}));
  if (x->has_rank()) {
    if (std::optional<DimExpr> n = ProductOf(*x->dims, 0, x->dims->size())) {
      ctx.SetOutputSymbolicValue(0, {*n});
    }
  }
  return absl::OkStatus();
}

// ---- Reshape, Flatten, Squeeze, Unsqueeze, Transpose -----------------------------------------

// Output rank of a list-valued operand whose values are unknown (fresh dims) or unknown rank.
TensorType UnknownValueShape(InferenceContext& ctx, vm::DType dtype, const ListOperand& list) {
  if (list.length) return FreshTensor(ctx, 0, dtype, static_cast<int>(*list.length));
  return FreshTensor(ctx, 0, dtype, std::nullopt);
}

absl::Status ReshapeRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  if (ctx.opset() >= 5) NIMBLE_RETURN_IF_ERROR(ctx.InputTensor(1).status());
  const ListOperand target = GetList(ctx, 1, "shape", 5);
  if (!target.present) return absl::InvalidArgumentError("the target shape is missing");
  const bool allowzero = ctx.opset() >= 14 && ctx.AttrInt("allowzero", 0) != 0;
  if (!target.values) {
    ctx.SetOutput(0, UnknownValueShape(ctx, x->dtype, target));
    return absl::OkStatus();
  }
  std::vector<Dim> out;
  int infer = -1;
  for (size_t i = 0; i < target.values->size(); ++i) {
    const DimExpr& t = (*target.values)[i];
    const bool in_range = x->has_rank() && static_cast<int>(i) < x->rank();
    const Dim in_dim = in_range ? (*x->dims)[i] : Dim();
    if (t.IsConst()) {
      const int64_t v = t.ConstValue();
      if (v == -1) {
        if (infer >= 0) return absl::InvalidArgumentError("the target shape has two -1 entries");
        infer = static_cast<int>(i);
        out.push_back(Dim());
      } else if (v == 0 && !allowzero) {
        if (x->has_rank() && !in_range) {
          return absl::InvalidArgumentError(
              absl::StrCat("target entry ", i, " is 0 (copy) but the input has rank ", x->rank()));
        }
        out.push_back(in_dim);
      } else {
        NIMBLE_ASSIGN_OR_RETURN(DimExpr d, DimFromValue(t, "target shape entry"));
        out.push_back(d);
      }
      continue;
    }
    // A symbolic entry: with allowzero=0 a run-time 0 would mean "copy the input dim". That is
    // harmless when the input dim divides the entry (then it is 0 too); otherwise check.
    if (!allowzero && !ProvablyPositive(ctx.dims(), t) && !(in_dim && ExactDiv(t, *in_dim))) {
      NIMBLE_RETURN_IF_ERROR(ctx.RequireNotEqual(
          t, DimExpr(), absl::StrCat("Reshape target entry ", i, " must not be 0 (copy)")));
    }
    out.push_back(t);
  }
  const std::optional<DimExpr> numel =
      x->has_rank() ? ProductOf(*x->dims, 0, x->dims->size()) : std::nullopt;
  if (infer >= 0) {
    std::vector<Dim> others = out;
    others[infer] = DimExpr::Const(1);
    const std::optional<DimExpr> rest = ProductOf(others, 0, others.size());
    if (numel && rest) {
      if (rest->IsConst() && rest->ConstValue() == 0) {
        return absl::InvalidArgumentError("cannot infer -1 with a zero-sized target dim");
      }
      if (std::optional<DimExpr> q = ExactDiv(*numel, *rest)) {
        out[infer] = *q;
      } else {
        out[infer] = ctx.dims().FloorDiv(*numel, *rest);
        NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual(
            ctx.dims().Mod(*numel, *rest), DimExpr(),
            absl::StrCat("Reshape: ", ctx.dims().ToString(*numel), " elements must divide by ",
                         ctx.dims().ToString(*rest))));
      }
    }
  } else if (numel) {
    if (std::optional<DimExpr> out_numel = ProductOf(out, 0, out.size())) {
      NIMBLE_RETURN_IF_ERROR(
          ctx.RequireEqual(*out_numel, *numel, "Reshape keeps the element count"));
    }
  }
  const bool small = out.size() <= 1 && x->has_rank() && x->rank() <= 1;
  ctx.SetOutput(0, TensorType::Of(x->dtype, std::move(out)));
  if (small) {
    if (std::optional<std::vector<DimExpr>> v = ctx.InputSymbolicValue(0)) {
      ctx.SetOutputSymbolicValue(0, *v);
    }
  }
  return absl::OkStatus();
}

absl::Status FlattenRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  if (!x->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, 2));
    return absl::OkStatus();
  }
  int64_t axis = ctx.AttrInt("axis", 1);
  if (axis < 0) axis += x->rank();
  if (axis < 0 || axis > x->rank()) {
    return absl::InvalidArgumentError(
        absl::StrCat("axis ", ctx.AttrInt("axis", 1), " is out of range for rank ", x->rank()));
  }
  const std::optional<DimExpr> outer = ProductOf(*x->dims, 0, axis);
  const std::optional<DimExpr> inner = ProductOf(*x->dims, axis, x->dims->size());
  ctx.SetOutput(0, TensorType::Of(x->dtype, {outer, inner}));
  return absl::OkStatus();
}

absl::Status SqueezeRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  const ListOperand axes_op = GetList(ctx, 1, "axes", 13);
  const std::optional<std::vector<int64_t>> axes = ConstInts(axes_op.values);
  if (!x->has_rank() || (axes_op.present && !axes)) {
    std::optional<int> rank;
    if (x->has_rank() && axes_op.length) rank = x->rank() - static_cast<int>(*axes_op.length);
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, rank));
    return absl::OkStatus();
  }
  std::vector<Dim> out;
  if (axes) {
    NIMBLE_ASSIGN_OR_RETURN(std::vector<int> norm, NormalizeAxes(*axes, x->rank()));
    const std::set<int> drop(norm.begin(), norm.end());
    for (int a = 0; a < x->rank(); ++a) {
      const Dim& d = (*x->dims)[a];
      if (!drop.count(a)) {
        out.push_back(d);
        continue;
      }
      NIMBLE_RETURN_IF_ERROR(
          ctx.RequireEqual(d, DimExpr::Const(1), absl::StrCat("squeezed axis ", a, " must be 1")));
    }
  } else {
    // No axes: every dim that is 1 goes. When a dim may or may not be 1, even the rank is a
    // run-time fact.
    for (int a = 0; a < x->rank(); ++a) {
      const Dim& d = (*x->dims)[a];
      if (d && *d == DimExpr::Const(1)) continue;
      if (!d || !ProvablyNotOne(ctx.dims(), *d)) {
        ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, std::nullopt));
        return absl::OkStatus();
      }
      out.push_back(d);
    }
  }
  ctx.SetOutput(0, TensorType::Of(x->dtype, std::move(out)));
  if (x->rank() <= 1) {
    if (std::optional<std::vector<DimExpr>> v = ctx.InputSymbolicValue(0)) {
      ctx.SetOutputSymbolicValue(0, *v);
    }
  }
  return absl::OkStatus();
}

absl::Status UnsqueezeRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  const ListOperand axes_op = GetList(ctx, 1, "axes", 13);
  if (!axes_op.present) return absl::InvalidArgumentError("axes are missing");
  const std::optional<std::vector<int64_t>> axes = ConstInts(axes_op.values);
  if (!x->has_rank() || !axes) {
    std::optional<int> rank;
    if (x->has_rank() && axes_op.length) rank = x->rank() + static_cast<int>(*axes_op.length);
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, rank));
    return absl::OkStatus();
  }
  const int out_rank = x->rank() + static_cast<int>(axes->size());
  NIMBLE_ASSIGN_OR_RETURN(std::vector<int> norm, NormalizeAxes(*axes, out_rank));
  const std::set<int> inserted(norm.begin(), norm.end());
  std::vector<Dim> out;
  int k = 0;
  for (int a = 0; a < out_rank; ++a) {
    out.push_back(inserted.count(a) ? Dim(DimExpr::Const(1)) : (*x->dims)[k++]);
  }
  ctx.SetOutput(0, TensorType::Of(x->dtype, std::move(out)));
  if (out_rank <= 1) {
    if (std::optional<std::vector<DimExpr>> v = ctx.InputSymbolicValue(0)) {
      ctx.SetOutputSymbolicValue(0, *v);
    }
  }
  return absl::OkStatus();
}

absl::Status TransposeRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  std::optional<std::vector<int64_t>> perm = ctx.AttrInts("perm");
  if (!x->has_rank()) {
    ctx.SetOutput(
        0, FreshTensor(ctx, 0, x->dtype,
                       perm ? std::optional<int>(static_cast<int>(perm->size())) : std::nullopt));
    return absl::OkStatus();
  }
  const int r = x->rank();
  if (!perm) {
    perm.emplace();
    for (int a = r - 1; a >= 0; --a) perm->push_back(a);
  }
  if (static_cast<int>(perm->size()) != r) {
    return absl::InvalidArgumentError(
        absl::StrCat("perm has ", perm->size(), " entries for rank ", r));
  }
  NIMBLE_ASSIGN_OR_RETURN(std::vector<int> norm, NormalizeAxes(*perm, r));
  std::vector<Dim> out;
  for (int a : norm) out.push_back((*x->dims)[a]);
  ctx.SetOutput(0, TensorType::Of(x->dtype, std::move(out)));
  return absl::OkStatus();
}

// ---- Concat, Split ----------------------------------------------------------------------------

absl::Status ConcatRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(std::vector<const TensorType*> ins, AllInputTensors(ctx));
  if (ins.empty()) return absl::InvalidArgumentError("needs at least one input");
  if (!ctx.HasAttr("axis")) return absl::InvalidArgumentError("attribute 'axis' is missing");
  for (size_t i = 1; i < ins.size(); ++i) {
    if (ins[i]->dtype != ins[0]->dtype) {
      return absl::InvalidArgumentError(
          absl::StrCat("input ", i, " has element type ", vm::DTypeName(ins[i]->dtype),
                       " but input 0 has ", vm::DTypeName(ins[0]->dtype)));
    }
  }
  const TensorType* ranked = nullptr;
  bool all_ranked = true;
  for (const TensorType* t : ins) {
    if (!t->has_rank()) {
      all_ranked = false;
      continue;
    }
    if (ranked && t->rank() != ranked->rank()) {
      return absl::InvalidArgumentError(
          absl::StrCat("inputs have ranks ", ranked->rank(), " and ", t->rank()));
    }
    if (!ranked) ranked = t;
  }
  if (!ranked) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, ins[0]->dtype, std::nullopt));
    return absl::OkStatus();
  }
  const int r = ranked->rank();
  NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(ctx.AttrInt("axis", 0), r));
  std::vector<Dim> out(r);
  std::vector<Dim> along;
  for (int a = 0; a < r; ++a) {
    if (a == axis) continue;
    for (const TensorType* t : ins) {
      if (t->has_rank() && (*t->dims)[a]) {
        out[a] = (*t->dims)[a];
        break;
      }
    }
  }
  for (size_t i = 0; i < ins.size(); ++i) {
    if (!ins[i]->has_rank()) {
      along.push_back(Dim());
      continue;
    }
    along.push_back((*ins[i]->dims)[axis]);
    for (int a = 0; a < r; ++a) {
      if (a == axis) continue;
      NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual((*ins[i]->dims)[a], out[a],
                                              absl::StrCat("Concat input ", i, " axis ", a)));
    }
  }
  out[axis] = all_ranked ? SumOf(along) : std::nullopt;
  ctx.SetOutput(0, TensorType::Of(ins[0]->dtype, std::move(out)));
  if (r == 1) {
    std::vector<DimExpr> value;
    for (int i = 0; i < ctx.num_inputs(); ++i) {
      if (!ctx.has_input(i)) continue;
      std::optional<std::vector<DimExpr>> v = ctx.InputSymbolicValue(i);
      if (!v) return absl::OkStatus();
      value.insert(value.end(), v->begin(), v->end());
    }
    ctx.SetOutputSymbolicValue(0, std::move(value));
  }
  return absl::OkStatus();
}

absl::Status SplitRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  const int n = ctx.num_outputs();
  if (!x->has_rank()) {
    for (int i = 0; i < n; ++i) ctx.SetOutput(i, FreshTensor(ctx, i, x->dtype, std::nullopt));
    return absl::OkStatus();
  }
  NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(ctx.AttrInt("axis", 0), x->rank()));
  const Dim d = (*x->dims)[axis];
  const ListOperand split = GetList(ctx, 1, "split", 13);
  std::vector<Dim> sizes(n);
  if (split.present) {
    if (split.length && *split.length != n) {
      return absl::InvalidArgumentError(
          absl::StrCat("split has ", *split.length, " sizes for ", n, " outputs"));
    }
    if (split.values) {
      for (int i = 0; i < n; ++i) {
        NIMBLE_ASSIGN_OR_RETURN(sizes[i], DimFromValue((*split.values)[i], "split size"));
      }
      if (std::optional<DimExpr> total = SumOf(sizes)) {
        NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual(*total, d, "Split sizes add up to the dim"));
      }
    } else {
      for (int i = 0; i < n; ++i) sizes[i] = ctx.FreshDim(i, axis);
    }
  } else if (d) {
    const int64_t parts = ctx.opset() >= 18 ? ctx.AttrInt("num_outputs", n) : n;
    if (parts != n || parts <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("num_outputs ", parts, " but the node has ", n, " outputs"));
    }
    const DimExpr k = DimExpr::Const(parts);
    if (std::optional<DimExpr> q = ExactDiv(*d, k)) {
      std::fill(sizes.begin(), sizes.end(), Dim(*q));
    } else if (ctx.opset() >= 18) {
      // Uneven: ceil(d / n) each, the last one smaller.
      const DimExpr chunk = ctx.dims().CeilDiv(*d, k);
      std::fill(sizes.begin(), sizes.end(), Dim(chunk));
      sizes[n - 1] = *d - DimExpr::Const(parts - 1) * chunk;
      NIMBLE_RETURN_IF_ERROR(ctx.RequireLessEqual(DimExpr::Const(parts - 1) * chunk, *d,
                                                  "Split: every output gets elements"));
    } else {
      NIMBLE_ASSIGN_OR_RETURN(Dim q, DivideDim(ctx, d, k, "Split"));
      std::fill(sizes.begin(), sizes.end(), q);
    }
  }
  std::optional<std::vector<DimExpr>> value;
  if (x->rank() == 1) value = ctx.InputSymbolicValue(0);
  int64_t offset = 0;
  for (int i = 0; i < n; ++i) {
    std::vector<Dim> dims = *x->dims;
    dims[axis] = sizes[i];
    ctx.SetOutput(i, TensorType::Of(x->dtype, std::move(dims)));
    if (value && sizes[i] && sizes[i]->IsConst() && offset >= 0) {
      const int64_t len = sizes[i]->ConstValue();
      if (offset + len <= static_cast<int64_t>(value->size())) {
        ctx.SetOutputSymbolicValue(
            i, std::vector<DimExpr>(value->begin() + offset, value->begin() + offset + len));
      }
      offset += len;
    } else {
      offset = -1;
    }
  }
  return absl::OkStatus();
}

// ---- Slice -------------------------------------------------------------------------------------

// Index `x` of a slice over a dim `d` with a positive step, clamped to [0, d] as ONNX does.
absl::StatusOr<std::optional<DimExpr>> ClampForward(InferenceContext& ctx, const DimExpr& x,
                                                    const DimExpr& d) {
  DimContext& dims = ctx.dims();
  if (x.IsConst()) {
    const int64_t v = x.ConstValue();
    if (v >= kHugeIndex) return std::optional<DimExpr>(d);
    if (v <= -kHugeIndex) return std::optional<DimExpr>(DimExpr());
    if (v < 0) return std::optional<DimExpr>(dims.Max(d + x, DimExpr()));
    return std::optional<DimExpr>(dims.Min(x, d));
  }
  if (dims.ProvablyLessEqual(x, DimExpr::Const(-1))) {
    return std::optional<DimExpr>(dims.Max(d + x, DimExpr()));
  }
  if (!dims.ProvablyNonNegative(x)) {
    // Negative indices count from the end: not expressible without knowing the sign.
    NIMBLE_RETURN_IF_ERROR(ctx.RequireLessEqual(
        DimExpr(), x, absl::StrCat("Slice index ", dims.ToString(x), " must be non-negative")));
  }
  return std::optional<DimExpr>(dims.ProvablyLessEqual(x, d) ? x : dims.Min(x, d));
}

// The same for a negative step: starts clamp to [0, d-1], ends to [-1, d-1].
std::optional<DimExpr> ClampBackward(DimContext& dims, const DimExpr& x, const DimExpr& d,
                                     bool is_end) {
  const DimExpr last = d - DimExpr::Const(1);
  const DimExpr low = is_end ? DimExpr::Const(-1) : DimExpr();
  if (x.IsConst()) {
    const int64_t v = x.ConstValue();
    if (v >= kHugeIndex) return last;
    if (v <= -kHugeIndex) return low;
    if (v < 0) return dims.Max(d + x, low);
    return dims.Min(x, last);
  }
  if (dims.ProvablyNonNegative(x)) return dims.Min(x, last);
  return std::nullopt;
}

absl::StatusOr<std::optional<DimExpr>> SliceDim(InferenceContext& ctx, const DimExpr& d,
                                                const DimExpr& start, const DimExpr& end,
                                                int64_t step) {
  DimContext& dims = ctx.dims();
  if (step > 0) {
    NIMBLE_ASSIGN_OR_RETURN(std::optional<DimExpr> s, ClampForward(ctx, start, d));
    NIMBLE_ASSIGN_OR_RETURN(std::optional<DimExpr> e, ClampForward(ctx, end, d));
    if (!s || !e) return std::optional<DimExpr>();
    return std::optional<DimExpr>(dims.Max(dims.CeilDiv(*e - *s, DimExpr::Const(step)), DimExpr()));
  }
  std::optional<DimExpr> s = ClampBackward(dims, start, d, false);
  std::optional<DimExpr> e = ClampBackward(dims, end, d, true);
  if (!s || !e) return std::optional<DimExpr>();
  // min(..., d): an empty dim gives an empty slice (the clamps above assume d >= 1).
  return std::optional<DimExpr>(
      dims.Min(dims.Max(dims.CeilDiv(*s - *e, DimExpr::Const(-step)), DimExpr()), d));
}

// Python-style slice of a known vector (symbolic values of 1-D shape tensors).
std::vector<DimExpr> SliceVector(const std::vector<DimExpr>& v, int64_t start, int64_t end,
                                 int64_t step) {
  const int64_t n = static_cast<int64_t>(v.size());
  auto norm = [n](int64_t i, int64_t lo, int64_t hi) {
    if (i < 0) i += n;
    return std::clamp(i, lo, hi);
  };
  std::vector<DimExpr> out;
  if (step > 0) {
    for (int64_t i = norm(start, 0, n), e = norm(end, 0, n); i < e; i += step) out.push_back(v[i]);
  } else {
    for (int64_t i = norm(start, 0, n - 1), e = norm(end, -1, n - 1); i > e; i += step) {
      out.push_back(v[i]);
    }
  }
  return out;
}

absl::Status SliceRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  if (!x->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, std::nullopt));
    return absl::OkStatus();
  }
  const int r = x->rank();
  const ListOperand starts = GetList(ctx, 1, "starts", 10);
  const ListOperand ends = GetList(ctx, 2, "ends", 10);
  const ListOperand axes_op = GetList(ctx, 3, "axes", 10);
  std::optional<std::vector<int64_t>> steps;
  if (ctx.opset() >= 10 && ctx.has_input(4)) steps = ctx.InputInts(4);
  if (!starts.present || !ends.present) {
    return absl::InvalidArgumentError("starts and ends are required");
  }
  std::optional<int64_t> n = starts.length ? starts.length : ends.length;
  std::optional<std::vector<int64_t>> axes = ConstInts(axes_op.values);
  if (axes_op.present && !axes) {
    // Which axes are sliced is only known at run time.
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, r));
    return absl::OkStatus();
  }
  if (!axes && n) {
    axes.emplace();
    for (int64_t a = 0; a < *n; ++a) axes->push_back(a);
  }
  if (!axes) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, r));
    return absl::OkStatus();
  }
  const size_t count = axes->size();
  auto bad_length = [&](const ListOperand& l) {
    return l.length && *l.length != static_cast<int64_t>(count);
  };
  if (bad_length(starts) || bad_length(ends) || (steps && steps->size() != count)) {
    return absl::InvalidArgumentError("starts, ends, axes and steps must have equal lengths");
  }
  NIMBLE_ASSIGN_OR_RETURN(std::vector<int> norm, NormalizeAxes(*axes, r));
  const bool steps_unknown = ctx.opset() >= 10 && ctx.has_input(4) && !steps;
  std::vector<Dim> out = *x->dims;
  bool all_const = true;
  std::vector<int64_t> cs(count), ce(count), cstep(count, 1);
  for (size_t j = 0; j < count; ++j) {
    const int a = norm[j];
    // Steps beyond any dim behave alike; clamping keeps the arithmetic in range.
    const int64_t step = std::clamp<int64_t>(steps ? (*steps)[j] : 1, -kHugeIndex, kHugeIndex);
    if (step == 0) return absl::InvalidArgumentError("Slice step must not be 0");
    const Dim& d = (*x->dims)[a];
    if (steps_unknown || !starts.values || !ends.values || !d) {
      out[a] = ctx.FreshDim(0, a);
      all_const = false;
      continue;
    }
    const DimExpr& s = (*starts.values)[j];
    const DimExpr& e = (*ends.values)[j];
    NIMBLE_ASSIGN_OR_RETURN(std::optional<DimExpr> size, SliceDim(ctx, *d, s, e, step));
    out[a] = size ? *size : ctx.FreshDim(0, a);
    if (s.IsConst() && e.IsConst()) {
      cs[j] = s.ConstValue();
      ce[j] = e.ConstValue();
      cstep[j] = step;
    } else {
      all_const = false;
    }
  }
  ctx.SetOutput(0, TensorType::Of(x->dtype, std::move(out)));
  if (r == 1 && all_const && count == 1) {
    if (std::optional<std::vector<DimExpr>> v = ctx.InputSymbolicValue(0)) {
      ctx.SetOutputSymbolicValue(0, SliceVector(*v, cs[0], ce[0], cstep[0]));
    }
  }
  return absl::OkStatus();
}

// ---- Expand, Tile, Pad, ConstantOfShape, Constant, Range ---------------------------------------

absl::Status ExpandRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  NIMBLE_RETURN_IF_ERROR(ctx.InputTensor(1).status());
  const ListOperand shape = GetList(ctx, 1, "", 0);
  if (!shape.values) {
    std::optional<int> rank;
    if (x->has_rank() && shape.length) rank = std::max<int>(x->rank(), *shape.length);
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, rank));
    return absl::OkStatus();
  }
  TensorType target{x->dtype, std::vector<Dim>()};
  for (const DimExpr& v : *shape.values) {
    NIMBLE_ASSIGN_OR_RETURN(DimExpr d, DimFromValue(v, "Expand shape entry"));
    target.dims->push_back(d);
  }
  NIMBLE_ASSIGN_OR_RETURN(std::optional<std::vector<Dim>> dims, BroadcastShapes(ctx, {x, &target}));
  ctx.SetOutput(0, TensorType{x->dtype, std::move(dims)});
  return absl::OkStatus();
}

absl::Status TileRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  NIMBLE_RETURN_IF_ERROR(ctx.InputTensor(1).status());
  const ListOperand repeats = GetList(ctx, 1, "", 0);
  if (!x->has_rank()) {
    ctx.SetOutput(0,
                  FreshTensor(ctx, 0, x->dtype,
                              repeats.length ? std::optional<int>(*repeats.length) : std::nullopt));
    return absl::OkStatus();
  }
  if (repeats.length && *repeats.length != x->rank()) {
    return absl::InvalidArgumentError(
        absl::StrCat("repeats has ", *repeats.length, " entries for rank ", x->rank()));
  }
  if (!repeats.values) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, x->rank()));
    return absl::OkStatus();
  }
  std::vector<Dim> out;
  for (int a = 0; a < x->rank(); ++a) {
    NIMBLE_ASSIGN_OR_RETURN(DimExpr rep, DimFromValue((*repeats.values)[a], "Tile repeat"));
    const Dim& d = (*x->dims)[a];
    out.push_back(d ? CheckedMul(*d, rep) : std::nullopt);
  }
  ctx.SetOutput(0, TensorType::Of(x->dtype, std::move(out)));
  return absl::OkStatus();
}

absl::Status PadRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  const ListOperand pads = GetList(ctx, 1, "pads", 11);
  if (!pads.present) return absl::InvalidArgumentError("pads are missing");
  if (!x->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, std::nullopt));
    return absl::OkStatus();
  }
  const int r = x->rank();
  std::optional<std::vector<int>> axes;
  if (ctx.opset() >= 18 && ctx.has_input(3)) {
    std::optional<std::vector<int64_t>> a = ctx.InputInts(3);
    if (!a) {
      ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, r));
      return absl::OkStatus();
    }
    NIMBLE_ASSIGN_OR_RETURN(axes, NormalizeAxes(*a, r));
  } else {
    axes.emplace();
    for (int a = 0; a < r; ++a) axes->push_back(a);
  }
  const size_t n = axes->size();
  if (pads.length && *pads.length != static_cast<int64_t>(2 * n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("pads has ", *pads.length, " entries, expected ", 2 * n));
  }
  std::vector<Dim> out = *x->dims;
  for (size_t j = 0; j < n; ++j) {
    const int a = (*axes)[j];
    if (!pads.values || !out[a]) {
      out[a] = ctx.FreshDim(0, a);
      continue;
    }
    std::optional<DimExpr> sum = CheckedAdd((*pads.values)[j], (*pads.values)[j + n]);
    if (sum) sum = CheckedAdd(*out[a], *sum);
    if (!sum) return absl::InvalidArgumentError("pads overflow");
    if (sum->IsConst() && sum->ConstValue() < 0) {
      return absl::InvalidArgumentError(absl::StrCat("padding makes axis ", a, " negative"));
    }
    out[a] = *sum;
  }
  ctx.SetOutput(0, TensorType::Of(x->dtype, std::move(out)));
  return absl::OkStatus();
}

absl::Status ConstantOfShapeRelation(InferenceContext& ctx) {
  NIMBLE_RETURN_IF_ERROR(ctx.InputTensor(0).status());
  vm::DType dtype = vm::DType::kF32;
  bool int_fill = false;  // an integer fill value, tracked as the symbolic value
  int64_t fill = 0;
  if (const vm::Tensor* value = ctx.AttrTensor("value")) {
    if (value->num_elements() != 1) {
      return absl::InvalidArgumentError("attribute 'value' must have one element");
    }
    dtype = value->dtype();
    if (value->device() == vm::kCpu) {
      int_fill = true;
      switch (dtype) {
        case vm::DType::kI64:
          fill = value->data<int64_t>()[0];
          break;
        case vm::DType::kI32:
          fill = value->data<int32_t>()[0];
          break;
        case vm::DType::kBool:
          fill = value->data<bool>()[0] ? 1 : 0;
          break;
        default:
          int_fill = false;
          break;
      }
    }
  }
  const ListOperand shape = GetList(ctx, 0, "", 0);
  if (!shape.values) {
    ctx.SetOutput(0, UnknownValueShape(ctx, dtype, shape));
    return absl::OkStatus();
  }
  std::vector<Dim> dims;
  for (const DimExpr& v : *shape.values) {
    NIMBLE_ASSIGN_OR_RETURN(DimExpr d, DimFromValue(v, "ConstantOfShape dim"));
    dims.push_back(d);
  }
  const bool small = dims.size() <= 1 && (dims.empty() || dims[0]->IsConst());
  const int64_t count = dims.empty() ? 1 : (small ? dims[0]->ConstValue() : 0);
  ctx.SetOutput(0, TensorType::Of(dtype, std::move(dims)));
  if (small && int_fill && count <= kMaxSymbolicValueElements) {
    ctx.SetOutputSymbolicValue(0, std::vector<DimExpr>(count, DimExpr::Const(fill)));
  }
  return absl::OkStatus();
}

absl::Status ConstantRelation(InferenceContext& ctx) {
  if (ctx.HasAttr("sparse_value")) {
    return absl::UnimplementedError("Constant with sparse_value is not supported");
  }
  if (const vm::Tensor* t = ctx.AttrTensor("value")) {
    std::vector<int64_t> shape(t->shape().begin(), t->shape().end());
    ctx.SetOutput(0, TensorType::Static(t->dtype(), shape));
    if (t->rank() <= 1 && t->num_elements() <= kMaxSymbolicValueElements &&
        t->device() == vm::kCpu &&
        (t->dtype() == vm::DType::kI64 || t->dtype() == vm::DType::kI32)) {
      std::vector<DimExpr> value;
      for (int64_t i = 0; i < t->num_elements(); ++i) {
        value.push_back(DimExpr::Const(t->dtype() == vm::DType::kI64 ? t->data<int64_t>()[i]
                                                                     : t->data<int32_t>()[i]));
      }
      ctx.SetOutputSymbolicValue(0, std::move(value));
    }
    return absl::OkStatus();
  }
  if (ctx.HasAttr("value_int")) {
    ctx.SetOutput(0, TensorType::Static(vm::DType::kI64, {}));
    ctx.SetOutputSymbolicValue(0, {DimExpr::Const(ctx.AttrInt("value_int", 0))});
    return absl::OkStatus();
  }
  if (ctx.HasAttr("value_ints")) {
    std::vector<int64_t> v = ctx.AttrInts("value_ints").value_or(std::vector<int64_t>());
    ctx.SetOutput(0, TensorType::Static(vm::DType::kI64, {static_cast<int64_t>(v.size())}));
    std::vector<DimExpr> value;
    for (int64_t x : v) value.push_back(DimExpr::Const(x));
    ctx.SetOutputSymbolicValue(0, std::move(value));
    return absl::OkStatus();
  }
  if (ctx.HasAttr("value_float")) {
    ctx.SetOutput(0, TensorType::Static(vm::DType::kF32, {}));
    return absl::OkStatus();
  }
  if (ctx.HasAttr("value_floats")) {
    const size_t n = ctx.AttrFloats("value_floats").value_or(std::vector<double>()).size();
    ctx.SetOutput(0, TensorType::Static(vm::DType::kF32, {static_cast<int64_t>(n)}));
    return absl::OkStatus();
  }
  if (ctx.HasAttr("value_string")) {
    ctx.SetOutput(0, TensorType::Static(vm::DType::kString, {}));
    return absl::OkStatus();
  }
  if (ctx.HasAttr("value_strings")) {
    auto v = ctx.node().attrs().Get<std::vector<std::string>>("value_strings");
    ctx.SetOutput(
        0, TensorType::Static(vm::DType::kString, {static_cast<int64_t>(v.ok() ? v->size() : 0)}));
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError("Constant has no value attribute");
}

absl::Status RangeRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* start_t, ctx.InputTensor(0));
  NIMBLE_RETURN_IF_ERROR(ctx.InputTensor(1).status());
  NIMBLE_RETURN_IF_ERROR(ctx.InputTensor(2).status());
  NIMBLE_RETURN_IF_ERROR(RequireSameDType(ctx, {0, 1, 2}));
  const vm::DType dtype = start_t->dtype;
  std::optional<DimExpr> n;
  std::optional<std::vector<DimExpr>> s, l, d;
  if (IsIntegral(dtype)) {
    s = ctx.InputSymbolicValue(0);
    l = ctx.InputSymbolicValue(1);
    d = ctx.InputSymbolicValue(2);
    if (s && l && d && s->size() == 1 && l->size() == 1 && d->size() == 1 && (*d)[0].IsConst()) {
      const int64_t delta = (*d)[0].ConstValue();
      if (delta == 0) return absl::InvalidArgumentError("Range delta must not be 0");
      std::optional<DimExpr> span =
          delta > 0 ? CheckedSub((*l)[0], (*s)[0]) : CheckedSub((*s)[0], (*l)[0]);
      if ((*s)[0].IsConst() && (*l)[0].IsConst()) {
        // Exact, for any int64 operands.
        const __int128 start = (*s)[0].ConstValue(), limit = (*l)[0].ConstValue();
        const __int128 num = delta > 0 ? limit - start : start - limit;
        const __int128 den = delta > 0 ? delta : -__int128{delta};
        const __int128 count = num <= 0 ? 0 : (num + den - 1) / den;
        if (count > kMaxStaticDim) return absl::InvalidArgumentError("Range has too many elements");
        n = DimExpr::Const(static_cast<int64_t>(count));
      } else if (span && IsSafe(*span) && delta > -kHugeIndex && delta < kHugeIndex) {
        n = ctx.dims().Max(ctx.dims().CeilDiv(*span, DimExpr::Const(delta > 0 ? delta : -delta)),
                           DimExpr());
      }
    }
  } else {
    std::optional<std::vector<double>> fs = ctx.InputFloats(0), fl = ctx.InputFloats(1),
                                       fd = ctx.InputFloats(2);
    if (fs && fl && fd && fs->size() == 1 && fl->size() == 1 && fd->size() == 1) {
      if ((*fd)[0] == 0) return absl::InvalidArgumentError("Range delta must not be 0");
      const double count = std::ceil(((*fl)[0] - (*fs)[0]) / (*fd)[0]);
      if (!(count <= static_cast<double>(kMaxStaticDim))) {
        return absl::InvalidArgumentError("Range has too many elements");
      }
      n = DimExpr::Const(count <= 0 ? 0 : static_cast<int64_t>(count));
    }
  }
  if (n && n->IsConst() && n->ConstValue() > kMaxStaticDim) {
    return absl::InvalidArgumentError("Range has too many elements");
  }
  ctx.SetOutput(0, TensorType::Of(dtype, {n ? Dim(*n) : Dim(ctx.FreshDim(0, 0))}));
  if (n && n->IsConst() && n->ConstValue() <= kMaxSymbolicValueElements && s && d) {
    std::vector<DimExpr> value;
    for (int64_t i = 0; i < n->ConstValue(); ++i) {
      std::optional<DimExpr> step = CheckedMul(DimExpr::Const(i), (*d)[0]);
      std::optional<DimExpr> v = step ? CheckedAdd((*s)[0], *step) : std::nullopt;
      if (!v) return absl::OkStatus();
      value.push_back(*v);
    }
    ctx.SetOutputSymbolicValue(0, std::move(value));
  }
  return absl::OkStatus();
}

// ---- Indexing -----------------------------------------------------------------------------------

absl::Status SameAsInput0(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  ctx.SetOutput(0, *x);
  return absl::OkStatus();
}

absl::Status GatherRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* data, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* indices, ctx.InputTensor(1));
  NIMBLE_RETURN_IF_ERROR(RequireIndexType(ctx, 1));
  if (!data->has_rank() || !indices->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, data->dtype, std::nullopt));
    return absl::OkStatus();
  }
  if (data->rank() == 0) return absl::InvalidArgumentError("Gather needs data of rank >= 1");
  NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(ctx.AttrInt("axis", 0), data->rank()));
  const Dim& d = (*data->dims)[axis];
  std::optional<std::vector<DimExpr>> idx = ctx.InputSymbolicValue(1);
  if (idx && d && d->IsConst()) {
    for (const DimExpr& i : *idx) {
      if (i.IsConst() && (i.ConstValue() < -d->ConstValue() || i.ConstValue() >= d->ConstValue())) {
        return absl::InvalidArgumentError(absl::StrCat("index ", i.ConstValue(),
                                                       " is out of range for axis ", axis,
                                                       " of size ", d->ConstValue()));
      }
    }
  }
  std::vector<Dim> out(data->dims->begin(), data->dims->begin() + axis);
  out.insert(out.end(), indices->dims->begin(), indices->dims->end());
  out.insert(out.end(), data->dims->begin() + axis + 1, data->dims->end());
  ctx.SetOutput(0, TensorType::Of(data->dtype, std::move(out)));
  // Gather from a 1-D shape value.
  if (data->rank() == 1 && indices->rank() <= 1 && idx) {
    std::optional<std::vector<DimExpr>> v = ctx.InputSymbolicValue(0);
    if (!v) return absl::OkStatus();
    const int64_t n = static_cast<int64_t>(v->size());
    std::vector<DimExpr> value;
    for (const DimExpr& i : *idx) {
      if (!i.IsConst()) return absl::OkStatus();
      int64_t k = i.ConstValue();
      if (k < 0) k += n;
      if (k < 0 || k >= n) return absl::InvalidArgumentError("Gather index out of range");
      value.push_back((*v)[k]);
    }
    ctx.SetOutputSymbolicValue(0, std::move(value));
  }
  return absl::OkStatus();
}

absl::Status GatherElementsRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* data, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* indices, ctx.InputTensor(1));
  NIMBLE_RETURN_IF_ERROR(RequireIndexType(ctx, 1));
  if (data->has_rank() && indices->has_rank()) {
    if (data->rank() != indices->rank()) {
      return absl::InvalidArgumentError(
          absl::StrCat("data has rank ", data->rank(), " but indices rank ", indices->rank()));
    }
    NIMBLE_RETURN_IF_ERROR(NormalizeAxis(ctx.AttrInt("axis", 0), data->rank()).status());
  }
  ctx.SetOutput(0, TensorType{data->dtype, indices->dims});
  return absl::OkStatus();
}

absl::Status GatherNDRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* data, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* indices, ctx.InputTensor(1));
  const int64_t b = ctx.AttrInt("batch_dims", 0);
  if (!data->has_rank() || !indices->has_rank() || indices->rank() == 0 || !indices->dims->back() ||
      !indices->dims->back()->IsConst()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, data->dtype, std::nullopt));
    return absl::OkStatus();
  }
  const int64_t q = indices->dims->back()->ConstValue();
  if (q < 0 || b < 0 || b >= indices->rank() || b + q > data->rank()) {
    return absl::InvalidArgumentError(absl::StrCat("indices last dim ", q, " with batch_dims ", b,
                                                   " does not fit data rank ", data->rank()));
  }
  for (int64_t a = 0; a < b; ++a) {
    NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual((*indices->dims)[a], (*data->dims)[a],
                                            absl::StrCat("GatherND batch axis ", a)));
  }
  std::vector<Dim> out(indices->dims->begin(), indices->dims->end() - 1);
  out.insert(out.end(), data->dims->begin() + b + q, data->dims->end());
  ctx.SetOutput(0, TensorType::Of(data->dtype, std::move(out)));
  return absl::OkStatus();
}

absl::Status NonZeroRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  const Dim rank = x->has_rank() ? Dim(DimExpr::Const(x->rank())) : Dim(ctx.FreshDim(0, 0));
  ctx.SetOutput(0, TensorType::Of(vm::DType::kI64, {rank, ctx.FreshDim(0, 1)}));
  return absl::OkStatus();
}

absl::Status TopKRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  std::optional<DimExpr> k;
  if (ctx.opset() < 10) {
    if (!ctx.HasAttr("k")) return absl::InvalidArgumentError("attribute 'k' is missing");
    k = DimExpr::Const(ctx.AttrInt("k", 0));
  } else {
    NIMBLE_RETURN_IF_ERROR(ctx.InputTensor(1).status());
    std::optional<std::vector<DimExpr>> v = ctx.InputSymbolicValue(1);
    if (v && v->size() == 1) k = (*v)[0];
  }
  if (!x->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, std::nullopt));
    ctx.SetOutput(1, FreshTensor(ctx, 1, vm::DType::kI64, std::nullopt));
    return absl::OkStatus();
  }
  NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(ctx.AttrInt("axis", -1), x->rank()));
  std::vector<Dim> dims = *x->dims;
  if (k) {
    NIMBLE_ASSIGN_OR_RETURN(DimExpr kd, DimFromValue(*k, "TopK k"));
    NIMBLE_RETURN_IF_ERROR(ctx.RequireLessEqual(kd, dims[axis], "TopK k must not exceed the axis"));
    dims[axis] = kd;
  } else {
    dims[axis] = ctx.FreshDim(0, axis);
  }
  ctx.SetOutput(0, TensorType::Of(x->dtype, dims));
  ctx.SetOutput(1, TensorType::Of(vm::DType::kI64, dims));
  return absl::OkStatus();
}

absl::Status OneHotRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* indices, ctx.InputTensor(0));
  NIMBLE_RETURN_IF_ERROR(ctx.InputTensor(1).status());
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* values, ctx.InputTensor(2));
  if (!indices->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, values->dtype, std::nullopt));
    return absl::OkStatus();
  }
  const int out_rank = indices->rank() + 1;
  NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(ctx.AttrInt("axis", -1), out_rank));
  Dim depth;
  if (std::optional<std::vector<DimExpr>> v = ctx.InputSymbolicValue(1); v && v->size() == 1) {
    NIMBLE_ASSIGN_OR_RETURN(depth, DimFromValue((*v)[0], "OneHot depth"));
  } else if (std::optional<std::vector<double>> f = ctx.InputFloats(1); f && f->size() == 1) {
    if (!((*f)[0] >= 0 && (*f)[0] <= static_cast<double>(kMaxStaticDim))) {
      return absl::InvalidArgumentError(absl::StrCat("OneHot depth ", (*f)[0], " is not valid"));
    }
    depth = DimExpr::Const(static_cast<int64_t>((*f)[0]));
  } else {
    depth = ctx.FreshDim(0, axis);
  }
  std::vector<Dim> out = *indices->dims;
  out.insert(out.begin() + axis, depth);
  ctx.SetOutput(0, TensorType::Of(values->dtype, std::move(out)));
  return absl::OkStatus();
}

absl::Status CompressRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* cond, ctx.InputTensor(1));
  if (cond->dtype != vm::DType::kBool) {
    return absl::InvalidArgumentError("Compress condition must be bool");
  }
  if (!ctx.HasAttr("axis")) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, 1));
    return absl::OkStatus();
  }
  if (!x->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, std::nullopt));
    return absl::OkStatus();
  }
  NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(ctx.AttrInt("axis", 0), x->rank()));
  std::vector<Dim> dims = *x->dims;
  dims[axis] = ctx.FreshDim(0, axis);
  ctx.SetOutput(0, TensorType::Of(x->dtype, std::move(dims)));
  return absl::OkStatus();
}

absl::Status UniqueRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  // Y, indices and counts share the run-time count of unique elements (or slices).
  DimExpr u;
  Dim inverse;
  if (!ctx.HasAttr("axis")) {
    u = ctx.FreshDim(0, 0);
    ctx.SetOutput(0, TensorType::Of(x->dtype, {u}));
    if (x->has_rank()) inverse = ProductOf(*x->dims, 0, x->dims->size());
  } else if (!x->has_rank()) {
    u = ctx.FreshDim(1, 0);
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, std::nullopt));
  } else {
    NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(ctx.AttrInt("axis", 0), x->rank()));
    u = ctx.FreshDim(0, axis);
    std::vector<Dim> dims = *x->dims;
    dims[axis] = u;
    inverse = (*x->dims)[axis];
    ctx.SetOutput(0, TensorType::Of(x->dtype, std::move(dims)));
  }
  ctx.SetOutput(1, TensorType::Of(vm::DType::kI64, {u}));
  ctx.SetOutput(2, TensorType::Of(vm::DType::kI64, {inverse}));
  ctx.SetOutput(3, TensorType::Of(vm::DType::kI64, {u}));
  return absl::OkStatus();
}

absl::Status NonMaxSuppressionRelation(InferenceContext& ctx) {
  NIMBLE_RETURN_IF_ERROR(ctx.InputTensor(0).status());
  NIMBLE_RETURN_IF_ERROR(ctx.InputTensor(1).status());
  ctx.SetOutput(0, TensorType::Of(vm::DType::kI64, {ctx.FreshDim(0, 0), DimExpr::Const(3)}));
  return absl::OkStatus();
}

absl::Status EyeLikeRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  if (x->has_rank() && x->rank() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("EyeLike needs rank 2, got ", x->rank()));
  }
  vm::DType dtype = x->dtype;
  if (ctx.HasAttr("dtype")) {
    NIMBLE_ASSIGN_OR_RETURN(dtype, vm::DTypeFromOnnx(ctx.AttrInt("dtype", 1)));
  }
  ctx.SetOutput(0, TensorType{dtype, x->dims});
  return absl::OkStatus();
}

absl::Status DepthToSpaceRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  const int64_t b = ctx.AttrInt("blocksize", 0);
  if (b <= 0 || b > (1 << 20)) return absl::InvalidArgumentError("blocksize is out of range");
  if (!x->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, 4));
    return absl::OkStatus();
  }
  if (x->rank() != 4) return absl::InvalidArgumentError("needs a rank-4 input");
  const std::vector<Dim>& d = *x->dims;
  const DimExpr bb = DimExpr::Const(b * b), bk = DimExpr::Const(b);
  auto times = [&](const Dim& v) { return v ? CheckedMul(*v, bk) : std::nullopt; };
  std::vector<Dim> out = d;
  if (ctx.node().op_type() == "DepthToSpace") {
    NIMBLE_ASSIGN_OR_RETURN(out[1], DivideDim(ctx, d[1], bb, "DepthToSpace channels"));
    out[2] = times(d[2]);
    out[3] = times(d[3]);
  } else {
    out[1] = d[1] ? CheckedMul(*d[1], bb) : std::nullopt;
    NIMBLE_ASSIGN_OR_RETURN(out[2], DivideDim(ctx, d[2], bk, "SpaceToDepth height"));
    NIMBLE_ASSIGN_OR_RETURN(out[3], DivideDim(ctx, d[3], bk, "SpaceToDepth width"));
  }
  ctx.SetOutput(0, TensorType::Of(x->dtype, std::move(out)));
  return absl::OkStatus();
}

// ---- Einsum ------------------------------------------------------------------------------------

struct EinsumTerm {
  std::string labels;  // letters; '.' marks where the ellipsis goes
  bool ellipsis = false;
};

absl::StatusOr<EinsumTerm> ParseEinsumTerm(absl::string_view s) {
  EinsumTerm t;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '.') {
      if (t.ellipsis || s.substr(i, 3) != "...") {
        return absl::InvalidArgumentError(absl::StrCat("bad Einsum term '", s, "'"));
      }
      t.ellipsis = true;
      t.labels.push_back('.');
      i += 2;
    } else if (std::isalpha(static_cast<unsigned char>(s[i]))) {
      t.labels.push_back(s[i]);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("bad Einsum term '", s, "'"));
    }
  }
  return t;
}

absl::Status EinsumRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(std::vector<const TensorType*> ins, AllInputTensors(ctx));
  if (ins.empty()) return absl::InvalidArgumentError("needs at least one input");
  std::string eq = absl::StrReplaceAll(ctx.AttrString("equation", ""), {{" ", ""}});
  std::vector<std::string> sides = absl::StrSplit(eq, "->");
  if (sides.size() > 2) return absl::InvalidArgumentError("bad Einsum equation");
  std::vector<std::string> terms = absl::StrSplit(sides[0], ',');
  if (terms.size() != ins.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("equation has ", terms.size(), " terms for ", ins.size(), " inputs"));
  }
  for (const TensorType* t : ins) {
    if (!t->has_rank()) {
      ctx.SetOutput(0, FreshTensor(ctx, 0, ins[0]->dtype, std::nullopt));
      return absl::OkStatus();
    }
  }
  std::map<char, Dim> label_dims;
  std::map<char, int> label_count;
  std::vector<Dim> ellipsis_dims;
  for (size_t i = 0; i < terms.size(); ++i) {
    NIMBLE_ASSIGN_OR_RETURN(EinsumTerm term, ParseEinsumTerm(terms[i]));
    const int letters = static_cast<int>(term.labels.size()) - (term.ellipsis ? 1 : 0);
    const int rank = ins[i]->rank();
    if (term.ellipsis ? letters > rank : letters != rank) {
      return absl::InvalidArgumentError(
          absl::StrCat("term '", terms[i], "' does not fit input ", i, " of rank ", rank));
    }
    const int ell = rank - letters;
    int axis = 0;
    for (char c : term.labels) {
      if (c == '.') {
        std::vector<Dim> dims(ins[i]->dims->begin() + axis, ins[i]->dims->begin() + axis + ell);
        TensorType a{ins[0]->dtype, ellipsis_dims}, b{ins[0]->dtype, dims};
        NIMBLE_ASSIGN_OR_RETURN(std::optional<std::vector<Dim>> bd, BroadcastShapes(ctx, {&a, &b}));
        ellipsis_dims = *bd;
        axis += ell;
        continue;
      }
      const Dim& d = (*ins[i]->dims)[axis++];
      ++label_count[c];
      auto it = label_dims.find(c);
      if (it == label_dims.end()) {
        label_dims[c] = d;
      } else {
        NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual(
            d, it->second, absl::StrCat("Einsum label '", std::string(1, c), "'")));
        if (!it->second) it->second = d;
      }
    }
  }
  std::vector<Dim> out;
  if (sides.size() == 2) {
    NIMBLE_ASSIGN_OR_RETURN(EinsumTerm term, ParseEinsumTerm(sides[1]));
    for (char c : term.labels) {
      if (c == '.') {
        out.insert(out.end(), ellipsis_dims.begin(), ellipsis_dims.end());
        continue;
      }
      if (!label_dims.count(c)) {
        return absl::InvalidArgumentError(
            absl::StrCat("output label '", std::string(1, c), "' is not an input label"));
      }
      out.push_back(label_dims[c]);
    }
  } else {
    out = ellipsis_dims;
    for (const auto& [c, n] : label_count) {  // alphabetical
      if (n == 1) out.push_back(label_dims[c]);
    }
  }
  ctx.SetOutput(0, TensorType::Of(ins[0]->dtype, std::move(out)));
  return absl::OkStatus();
}

}  // namespace

void RegisterTensorRelations(RelationRegistry& r) {
  r.Register("", "Shape", ShapeRelation);
  r.Register("", "Size", SizeRelation);
  r.Register("", "Reshape", ReshapeRelation);
  r.Register("", "Flatten", FlattenRelation);
  r.Register("", "Squeeze", SqueezeRelation);
  r.Register("", "Unsqueeze", UnsqueezeRelation);
  r.Register("", "Transpose", TransposeRelation);
  r.Register("", "Concat", ConcatRelation);
  r.Register("", "Split", SplitRelation);
  r.Register("", "Slice", SliceRelation);
  r.Register("", "Expand", ExpandRelation);
  r.Register("", "Tile", TileRelation);
  r.Register("", "Pad", PadRelation);
  r.Register("", "ConstantOfShape", ConstantOfShapeRelation);
  r.Register("", "Constant", ConstantRelation);
  r.Register("", "Range", RangeRelation);
  for (const char* op : {"Trilu", "CumSum", "CumProd", "ScatterND", "ScatterElements", "Scatter",
                         "ReverseSequence", "TensorScatter"}) {
    r.Register("", op, SameAsInput0);
  }
  r.Register("", "Gather", GatherRelation);
  r.Register("", "GatherElements", GatherElementsRelation);
  r.Register("", "GatherND", GatherNDRelation);
  r.Register("", "NonZero", NonZeroRelation);
  r.Register("", "TopK", TopKRelation);
  r.Register("", "OneHot", OneHotRelation);
  r.Register("", "Compress", CompressRelation);
  r.Register("", "Unique", UniqueRelation);
  r.Register("", "NonMaxSuppression", NonMaxSuppressionRelation);
  r.Register("", "EyeLike", EyeLikeRelation);
  r.Register("", "DepthToSpace", DepthToSpaceRelation);
  r.Register("", "SpaceToDepth", DepthToSpaceRelation);
  r.Register("", "Einsum", EinsumRelation);
}

}  // namespace nimble::compiler
