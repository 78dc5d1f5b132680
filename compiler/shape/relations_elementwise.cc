// Elementwise operators: unary (same type, or bool for predicates), binary and variadic with
// multidirectional broadcasting, Where, Cast/CastLike, Clip, Dropout, Identity. Integer
// arithmetic on shape tensors also propagates symbolic values (Add/Sub/Mul/Div/Mod/Neg/Max/Min,
// comparisons and Where on known values), so shape computations stay symbolic.
#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "compiler/shape/broadcast.h"
#include "compiler/shape/dim_util.h"
#include "compiler/shape/relations_internal.h"

namespace nimble::compiler {
namespace {

using SymbolicFn = std::function<std::optional<DimExpr>(DimContext&, const std::vector<DimExpr>&)>;

// Applies `fn` elementwise over the symbolic values of `inputs` (rank <= 1, broadcast by
// length); nullopt when a value is unknown or `fn` cannot tell.
std::optional<std::vector<DimExpr>> ZipSymbolic(InferenceContext& ctx,
                                                const std::vector<int>& inputs,
                                                const SymbolicFn& fn) {
  std::vector<std::vector<DimExpr>> values;
  size_t n = 1;
  for (int i : inputs) {
    const Type* t = ctx.input_type(i);
    if (t == nullptr || !t->is_tensor() || !t->tensor.has_rank() || t->tensor.rank() > 1) {
      return std::nullopt;
    }
    std::optional<std::vector<DimExpr>> v = ctx.InputSymbolicValue(i);
    if (!v || v->empty()) return std::nullopt;
    if (v->size() != 1) {
      if (n != 1 && n != v->size()) return std::nullopt;
      n = v->size();
    }
    values.push_back(std::move(*v));
  }
  std::vector<DimExpr> out;
  for (size_t k = 0; k < n; ++k) {
    std::vector<DimExpr> args;
    for (const std::vector<DimExpr>& v : values) {
      args.push_back(v.size() == 1 ? v[0] : v[k]);
      if (!IsSafe(args.back())) return std::nullopt;  // extreme constants: not shape values
    }
    std::optional<DimExpr> r = fn(ctx.dims(), args);
    if (!r) return std::nullopt;
    out.push_back(std::move(*r));
  }
  return out;
}

bool ShapeIntegral(vm::DType d) { return d == vm::DType::kI64 || d == vm::DType::kI32; }

// Symbolic arithmetic ------------------------------------------------------------------------

std::optional<DimExpr> SymAdd(DimContext&, const std::vector<DimExpr>& a) {
  return CheckedAdd(a[0], a[1]);
}
std::optional<DimExpr> SymSub(DimContext&, const std::vector<DimExpr>& a) {
  return CheckedSub(a[0], a[1]);
}
std::optional<DimExpr> SymMul(DimContext&, const std::vector<DimExpr>& a) {
  return CheckedMul(a[0], a[1]);
}
std::optional<DimExpr> SymDiv(DimContext& dims, const std::vector<DimExpr>& a) {
  if (a[0].IsConst() && a[1].IsConst()) {
    const int64_t x = a[0].ConstValue(), y = a[1].ConstValue();
    if (y == 0 || (x == INT64_MIN && y == -1)) return std::nullopt;
    return DimExpr::Const(x / y);  // C semantics (truncation), as the kernels do
  }
  // Truncation equals floor division for a non-negative dividend and a positive divisor.
  if (!dims.ProvablyNonNegative(a[0]) || !ProvablyPositive(dims, a[1])) return std::nullopt;
  if (std::optional<DimExpr> q = ExactDiv(a[0], a[1])) return q;
  return dims.FloorDiv(a[0], a[1]);
}
std::optional<DimExpr> SymMod(DimContext& dims, const std::vector<DimExpr>& a) {
  // Integer Mod with fmod=0 takes the sign of the divisor: floor modulo, as DimContext::Mod.
  if (a[1].IsConst() && a[1].ConstValue() == 0) return std::nullopt;
  if (!a[1].IsConst() && !ProvablyPositive(dims, a[1])) return std::nullopt;
  return dims.Mod(a[0], a[1]);
}
std::optional<DimExpr> SymMax(DimContext& dims, const std::vector<DimExpr>& a) {
  DimExpr r = a[0];
  for (size_t i = 1; i < a.size(); ++i) r = dims.Max(r, a[i]);
  return r;
}
std::optional<DimExpr> SymMin(DimContext& dims, const std::vector<DimExpr>& a) {
  DimExpr r = a[0];
  for (size_t i = 1; i < a.size(); ++i) r = dims.Min(r, a[i]);
  return r;
}
std::optional<DimExpr> SymSum(DimContext&, const std::vector<DimExpr>& a) {
  DimExpr r;
  for (const DimExpr& x : a) {
    std::optional<DimExpr> next = CheckedAdd(r, x);
    if (!next) return std::nullopt;
    r = *next;
  }
  return r;
}
std::optional<DimExpr> Bool(bool b) { return DimExpr::Const(b ? 1 : 0); }
std::optional<DimExpr> SymEqual(DimContext& dims, const std::vector<DimExpr>& a) {
  if (a[0] == a[1]) return Bool(true);
  if (ProvablyNotEqual(dims, a[0], a[1])) return Bool(false);
  return std::nullopt;
}
// a < b
std::optional<DimExpr> SymLess(DimContext& dims, const DimExpr& a, const DimExpr& b) {
  if (dims.ProvablyLessEqual(a + DimExpr::Const(1), b)) return Bool(true);
  if (dims.ProvablyLessEqual(b, a)) return Bool(false);
  return std::nullopt;
}
std::optional<DimExpr> SymWhere(DimContext&, const std::vector<DimExpr>& a) {
  if (!a[0].IsConst()) return std::nullopt;
  return a[0].ConstValue() != 0 ? a[1] : a[2];
}

// Relations ----------------------------------------------------------------------------------

// Output i has input 0's type (any type for Identity).
absl::Status SameAsInput(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  ctx.SetOutput(0, *x);
  return absl::OkStatus();
}

absl::Status IdentityRelation(InferenceContext& ctx) {
  const Type* t = ctx.input_type(0);
  if (t == nullptr) return absl::InvalidArgumentError("input 0 is missing");
  ctx.SetOutputType(0, *t);
  if (std::optional<std::vector<DimExpr>> v = ctx.InputSymbolicValue(0)) {
    ctx.SetOutputSymbolicValue(0, *v);
  }
  return absl::OkStatus();
}

absl::Status NegRelation(InferenceContext& ctx) {
  NIMBLE_RETURN_IF_ERROR(SameAsInput(ctx));
  const TensorType* x = *ctx.InputTensor(0);
  if (ShapeIntegral(x->dtype)) {
    if (auto v = ZipSymbolic(ctx, {0}, [](DimContext&, const std::vector<DimExpr>& a) {
          return std::optional<DimExpr>(-a[0]);
        })) {
      ctx.SetOutputSymbolicValue(0, *v);
    }
  }
  return absl::OkStatus();
}

absl::Status AbsRelation(InferenceContext& ctx) {
  NIMBLE_RETURN_IF_ERROR(SameAsInput(ctx));
  const TensorType* x = *ctx.InputTensor(0);
  if (ShapeIntegral(x->dtype)) {
    if (auto v = ZipSymbolic(ctx, {0}, [](DimContext& dims, const std::vector<DimExpr>& a) {
          if (dims.ProvablyNonNegative(a[0])) return std::optional<DimExpr>(a[0]);
          if (dims.ProvablyLessEqual(a[0], DimExpr())) return std::optional<DimExpr>(-a[0]);
          return std::optional<DimExpr>();
        })) {
      ctx.SetOutputSymbolicValue(0, *v);
    }
  }
  return absl::OkStatus();
}

absl::Status PredicateRelation(InferenceContext& ctx) {  // IsNaN, IsInf
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  ctx.SetOutput(0, TensorType{vm::DType::kBool, x->dims});
  return absl::OkStatus();
}

absl::Status NotRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  if (x->dtype != vm::DType::kBool) {
    return absl::InvalidArgumentError(
        absl::StrCat("Not needs a bool input, got ", vm::DTypeName(x->dtype)));
  }
  ctx.SetOutput(0, *x);
  if (auto v = ZipSymbolic(ctx, {0}, [](DimContext&, const std::vector<DimExpr>& a) {
        if (!a[0].IsConst()) return std::optional<DimExpr>();
        return Bool(a[0].ConstValue() == 0);
      })) {
    ctx.SetOutputSymbolicValue(0, *v);
  }
  return absl::OkStatus();
}

enum class BinaryKind {
  kArith,    // same dtype in and out
  kPow,      // base and exponent may differ; output has the base's dtype
  kLogical,  // bool in, bool out
  kCompare,  // same dtype in, bool out
  kBitwise,  // same integer dtype in and out
};

// Broadcast of all present inputs; output dtype by kind.
// Inputs 0..required-1 must be present (2 for binary operators, 1 for variadic ones).
absl::Status Broadcasting(InferenceContext& ctx, BinaryKind kind, const SymbolicFn& symbolic,
                          int required = 2) {
  for (int i = 0; i < required; ++i) NIMBLE_RETURN_IF_ERROR(ctx.InputTensor(i).status());
  if (required == 2 && ctx.num_inputs() > 2) {
    return absl::InvalidArgumentError(absl::StrCat("takes 2 inputs, got ", ctx.num_inputs()));
  }
  NIMBLE_ASSIGN_OR_RETURN(std::vector<const TensorType*> ins, AllInputTensors(ctx));
  if (ins.empty()) return absl::InvalidArgumentError("needs at least one input");
  if (kind != BinaryKind::kPow) {
    for (size_t i = 1; i < ins.size(); ++i) {
      if (ins[i]->dtype != ins[0]->dtype) {
        return absl::InvalidArgumentError(
            absl::StrCat("input ", i, " has element type ", vm::DTypeName(ins[i]->dtype),
                         " but input 0 has ", vm::DTypeName(ins[0]->dtype)));
      }
    }
  }
  if (kind == BinaryKind::kLogical && ins[0]->dtype != vm::DType::kBool) {
    return absl::InvalidArgumentError(
        absl::StrCat("needs bool inputs, got ", vm::DTypeName(ins[0]->dtype)));
  }
  if (kind == BinaryKind::kBitwise && !IsIntegral(ins[0]->dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("needs integer inputs, got ", vm::DTypeName(ins[0]->dtype)));
  }
  NIMBLE_ASSIGN_OR_RETURN(std::optional<std::vector<Dim>> dims, BroadcastShapes(ctx, ins));
  const vm::DType out_dtype = (kind == BinaryKind::kCompare || kind == BinaryKind::kLogical)
                                  ? vm::DType::kBool
                                  : ins[0]->dtype;
  ctx.SetOutput(0, TensorType{out_dtype, std::move(dims)});
  if (symbolic && (ShapeIntegral(ins[0]->dtype) || ins[0]->dtype == vm::DType::kBool)) {
    std::vector<int> idx;
    for (int i = 0; i < ctx.num_inputs(); ++i) {
      if (ctx.has_input(i)) idx.push_back(i);
    }
    if (auto v = ZipSymbolic(ctx, idx, symbolic)) ctx.SetOutputSymbolicValue(0, *v);
  }
  return absl::OkStatus();
}

TypeRelation BroadcastRelation(BinaryKind kind, SymbolicFn symbolic = nullptr, int required = 2) {
  return [kind, symbolic, required](InferenceContext& ctx) {
    return Broadcasting(ctx, kind, symbolic, required);
  };
}

absl::Status ModRelation(InferenceContext& ctx) {
  const bool fmod = ctx.AttrInt("fmod", 0) != 0;
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* a, ctx.InputTensor(0));
  if (!fmod && vm::IsFloat(a->dtype)) {
    return absl::InvalidArgumentError("Mod of floating-point inputs needs fmod=1");
  }
  return Broadcasting(ctx, BinaryKind::kArith, fmod ? SymbolicFn() : SymbolicFn(SymMod));
}

absl::Status WhereRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* c, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(1));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* y, ctx.InputTensor(2));
  if (c->dtype != vm::DType::kBool) {
    return absl::InvalidArgumentError(
        absl::StrCat("condition must be bool, got ", vm::DTypeName(c->dtype)));
  }
  NIMBLE_RETURN_IF_ERROR(RequireSameDType(ctx, {1, 2}));
  NIMBLE_ASSIGN_OR_RETURN(std::optional<std::vector<Dim>> dims, BroadcastShapes(ctx, {c, x, y}));
  ctx.SetOutput(0, TensorType{x->dtype, std::move(dims)});
  if (ShapeIntegral(x->dtype)) {
    if (auto v = ZipSymbolic(ctx, {0, 1, 2}, SymWhere)) ctx.SetOutputSymbolicValue(0, *v);
  }
  return absl::OkStatus();
}

absl::Status PReluRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* slope, ctx.InputTensor(1));
  NIMBLE_RETURN_IF_ERROR(RequireSameDType(ctx, {0, 1}));
  if (x->has_rank()) {
    NIMBLE_RETURN_IF_ERROR(RequireUnidirectionalBroadcast(ctx, *slope, *x->dims, "slope"));
  }
  ctx.SetOutput(0, *x);
  return absl::OkStatus();
}

absl::Status ClipRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  for (int i = 1; i <= 2; ++i) {
    if (!ctx.has_input(i)) continue;
    NIMBLE_ASSIGN_OR_RETURN(const TensorType* bound, ctx.InputTensor(i));
    if (bound->dtype != x->dtype) {
      return absl::InvalidArgumentError(absl::StrCat("bound ", i, " has element type ",
                                                     vm::DTypeName(bound->dtype), ", input has ",
                                                     vm::DTypeName(x->dtype)));
    }
  }
  ctx.SetOutput(0, *x);
  return absl::OkStatus();
}

// StringConcat (opset 20): the broadcast of two string tensors.
absl::Status StringConcatRelation(InferenceContext& ctx) {
  for (int i = 0; i < 2; ++i) {
    NIMBLE_ASSIGN_OR_RETURN(const TensorType* t, ctx.InputTensor(i));
    if (t->dtype != vm::DType::kString) {
      return absl::InvalidArgumentError(
          absl::StrCat("input ", i, " must be string, got ", vm::DTypeName(t->dtype)));
    }
  }
  return Broadcasting(ctx, BinaryKind::kArith, nullptr);
}

// StringSplit (opset 20): Y = X's dims + [the most substrings of any element] (data-dependent),
// Z = the count per element (int64, X's dims).
absl::Status StringSplitRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  if (x->dtype != vm::DType::kString) {
    return absl::InvalidArgumentError(
        absl::StrCat("input must be string, got ", vm::DTypeName(x->dtype)));
  }
  if (!x->has_rank()) {
    ctx.SetOutput(0, TensorType{vm::DType::kString, std::nullopt});
    ctx.SetOutput(1, TensorType{vm::DType::kI64, std::nullopt});
    return absl::OkStatus();
  }
  std::vector<Dim> y = *x->dims;
  y.push_back(ctx.FreshDim(0, x->rank()));
  ctx.SetOutput(0, TensorType{vm::DType::kString, std::move(y)});
  ctx.SetOutput(1, TensorType{vm::DType::kI64, x->dims});
  return absl::OkStatus();
}

// StringNormalizer (opset 10): [C] -> [C'] or [1, C] -> [1, C'], C' (data-dependent) the
// elements left after the stopwords are dropped.
absl::Status StringNormalizerRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  if (x->dtype != vm::DType::kString) {
    return absl::InvalidArgumentError(
        absl::StrCat("input must be string, got ", vm::DTypeName(x->dtype)));
  }
  if (!x->has_rank()) {
    ctx.SetOutput(0, TensorType{vm::DType::kString, std::nullopt});
    return absl::OkStatus();
  }
  if (x->rank() != 1 && x->rank() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("input must be [C] or [1, C], got ", ctx.Str(*x)));
  }
  std::vector<Dim> y;
  if (x->rank() == 2) {
    NIMBLE_RETURN_IF_ERROR(
        ctx.RequireEqual((*x->dims)[0], DimExpr::Const(1), "StringNormalizer [1, C]"));
    y.push_back(DimExpr::Const(1));
  }
  y.push_back(ctx.FreshDim(0, x->rank() - 1));
  ctx.SetOutput(0, TensorType{vm::DType::kString, std::move(y)});
  return absl::OkStatus();
}

// TfIdfVectorizer (opset 9): f32 [output size] for [C] (or a scalar), [B, output size] for
// [B, C]; the output size is the largest of ngram_indexes plus one.
absl::Status TfIdfVectorizerRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  if (x->dtype != vm::DType::kString && x->dtype != vm::DType::kI32 &&
      x->dtype != vm::DType::kI64) {
    return absl::InvalidArgumentError(
        absl::StrCat("input must be string, int32 or int64, got ", vm::DTypeName(x->dtype)));
  }
  std::optional<std::vector<int64_t>> indexes = ctx.AttrInts("ngram_indexes");
  if (!indexes || indexes->empty()) {
    return absl::InvalidArgumentError("attribute 'ngram_indexes' is missing");
  }
  for (int64_t i : *indexes) {
    if (i < 0 || i >= (int64_t{1} << 31)) {
      return absl::InvalidArgumentError(
          absl::StrCat("ngram_indexes must be in [0, 2^31), got ", i));
    }
  }
  NIMBLE_ASSIGN_OR_RETURN(
      DimExpr size,
      DimFromValue(DimExpr::Const(*std::max_element(indexes->begin(), indexes->end()) + 1),
                   "TfIdfVectorizer output size"));
  if (!x->has_rank()) {
    ctx.SetOutput(0, TensorType{vm::DType::kF32, std::nullopt});
    return absl::OkStatus();
  }
  if (x->rank() > 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("input must be [C] or [B, C], got ", ctx.Str(*x)));
  }
  if (x->rank() == 2) {
    ctx.SetOutput(0, TensorType::Of(vm::DType::kF32, {(*x->dims)[0], size}));
  } else {
    ctx.SetOutput(0, TensorType::Of(vm::DType::kF32, {size}));
  }
  return absl::OkStatus();
}

// RegexFullMatch (opset 20): whether each string fully matches the pattern, bool of X's shape.
absl::Status RegexFullMatchRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  if (x->dtype != vm::DType::kString) {
    return absl::InvalidArgumentError(
        absl::StrCat("input must be string, got ", vm::DTypeName(x->dtype)));
  }
  ctx.SetOutput(0, TensorType{vm::DType::kBool, x->dims});
  return absl::OkStatus();
}

// ai.onnx.ml Binarizer: X > threshold as 1 / 0 in X's type and shape.
absl::Status SameTypeRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  ctx.SetOutput(0, *x);
  return absl::OkStatus();
}

// ai.onnx.ml ArrayFeatureExtractor: X's last axis indexed by Y: X's dims but the last, then
// Y's element count; a 1-D X gives [1, count].
absl::Status ArrayFeatureExtractorRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* y, ctx.InputTensor(1));
  if (!x->has_rank() || x->rank() < 1) {
    ctx.SetOutput(0, TensorType{x->dtype, std::nullopt});
    return absl::OkStatus();
  }
  std::vector<Dim> out;
  if (x->rank() == 1) {
    out.push_back(DimExpr::Const(1));
  } else {
    out.assign(x->dims->begin(), x->dims->end() - 1);
  }
  std::optional<DimExpr> count = y->NumElements();
  out.push_back(count ? Dim(*count) : Dim(ctx.FreshDim(0, static_cast<int>(out.size()))));
  ctx.SetOutput(0, TensorType{x->dtype, std::move(out)});
  return absl::OkStatus();
}

// ai.onnx.ml LabelEncoder: X's shape, the values' element type (values_strings, values_int64s,
// values_floats or values_tensor).
absl::Status LabelEncoderRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  const vm::Attributes& a = ctx.node().attrs();
  vm::DType out = vm::DType::kInvalid;
  if (a.Has("values_strings")) out = vm::DType::kString;
  if (a.Has("values_int64s")) out = vm::DType::kI64;
  if (a.Has("values_floats")) out = vm::DType::kF32;
  if (auto t = a.Get<vm::Tensor>("values_tensor"); t.ok()) out = t->dtype();
  if (out == vm::DType::kInvalid) return absl::InvalidArgumentError("LabelEncoder has no values");
  ctx.SetOutput(0, TensorType{out, x->dims});
  return absl::OkStatus();
}

// ai.onnx.ml TreeEnsemble: X [N, F] of a float type -> [N, n_targets] of that type.
absl::Status TreeEnsembleRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  if (!vm::IsFloat(x->dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("input must be float, got ", vm::DTypeName(x->dtype)));
  }
  if (x->has_rank() && x->rank() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("input must be [N, F], got ", ctx.Str(*x)));
  }
  NIMBLE_ASSIGN_OR_RETURN(DimExpr targets, DimFromValue(DimExpr::Const(ctx.AttrInt("n_targets", 0)),
                                                        "TreeEnsemble n_targets"));
  const Dim batch = x->has_rank() ? (*x->dims)[0] : Dim();
  ctx.SetOutput(0, TensorType::Of(x->dtype, {batch, targets}));
  return absl::OkStatus();
}

// BitCast (opset 26): the bits reinterpreted as `to`, which must have the input's bit width.
absl::Status BitCastRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  if (!ctx.HasAttr("to")) return absl::InvalidArgumentError("attribute 'to' is missing");
  NIMBLE_ASSIGN_OR_RETURN(vm::DType to, vm::DTypeFromOnnx(ctx.AttrInt("to", 0)));
  auto bits = [](vm::DType d) {
    return vm::PackedBits(d) != 0 ? vm::PackedBits(d) : static_cast<int>(8 * vm::DTypeSize(d));
  };
  if (x->dtype == vm::DType::kString || to == vm::DType::kString || bits(x->dtype) != bits(to)) {
    return absl::InvalidArgumentError(absl::StrCat("BitCast from ", vm::DTypeName(x->dtype), " to ",
                                                   vm::DTypeName(to),
                                                   ": the bit widths must be equal"));
  }
  ctx.SetOutput(0, TensorType{to, x->dims});
  return absl::OkStatus();
}

absl::Status CastRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  vm::DType to;
  if (ctx.node().op_type() == "CastLike") {
    NIMBLE_ASSIGN_OR_RETURN(const TensorType* like, ctx.InputTensor(1));
    to = like->dtype;
  } else {
    if (!ctx.HasAttr("to")) return absl::InvalidArgumentError("attribute 'to' is missing");
    NIMBLE_ASSIGN_OR_RETURN(to, vm::DTypeFromOnnx(ctx.AttrInt("to", 0)));
  }
  ctx.SetOutput(0, TensorType{to, x->dims});
  // Integer <-> integer casts of shape values keep them (dims fit both widths).
  if ((ShapeIntegral(x->dtype) || x->dtype == vm::DType::kBool) && ShapeIntegral(to)) {
    if (std::optional<std::vector<DimExpr>> v = ctx.InputSymbolicValue(0)) {
      ctx.SetOutputSymbolicValue(0, *v);
    }
  }
  return absl::OkStatus();
}

absl::Status DropoutRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  ctx.SetOutput(0, *x);
  ctx.SetOutput(1, TensorType{ctx.opset() >= 10 ? vm::DType::kBool : x->dtype, x->dims});
  return absl::OkStatus();
}

}  // namespace

void RegisterElementwiseRelations(RelationRegistry& r) {
  for (const char* op : {"Sqrt",     "Reciprocal", "Exp",         "Log",
                         "Ceil",     "Floor",      "Round",       "Sign",
                         "Sin",      "Cos",        "Tan",         "Asin",
                         "Acos",     "Atan",       "Sinh",        "Cosh",
                         "Asinh",    "Acosh",      "Atanh",       "Erf",
                         "Relu",     "LeakyRelu",  "Elu",         "Selu",
                         "Celu",     "Sigmoid",    "HardSigmoid", "HardSwish",
                         "Softplus", "Softsign",   "Tanh",        "ThresholdedRelu",
                         "Gelu",     "Mish",       "BitwiseNot",  "Shrink"}) {
    r.Register("", op, SameAsInput);
  }
  r.Register("", "Identity", IdentityRelation);
  r.Register("", "Neg", NegRelation);
  r.Register("", "Abs", AbsRelation);
  r.Register("", "IsNaN", PredicateRelation);
  r.Register("", "IsInf", PredicateRelation);
  r.Register("", "Not", NotRelation);

  r.Register("", "Add", BroadcastRelation(BinaryKind::kArith, SymAdd));
  r.Register("", "Sub", BroadcastRelation(BinaryKind::kArith, SymSub));
  r.Register("", "Mul", BroadcastRelation(BinaryKind::kArith, SymMul));
  r.Register("", "Div", BroadcastRelation(BinaryKind::kArith, SymDiv));
  r.Register("", "Mod", ModRelation);
  r.Register("", "Pow", BroadcastRelation(BinaryKind::kPow));
  r.Register("", "Max", BroadcastRelation(BinaryKind::kArith, SymMax, 1));
  r.Register("", "Min", BroadcastRelation(BinaryKind::kArith, SymMin, 1));
  r.Register("", "Sum", BroadcastRelation(BinaryKind::kArith, SymSum, 1));
  r.Register("", "Mean", BroadcastRelation(BinaryKind::kArith, nullptr, 1));
  r.Register("", "BitShift", BroadcastRelation(BinaryKind::kBitwise));
  r.Register("", "BitwiseAnd", BroadcastRelation(BinaryKind::kBitwise));
  r.Register("", "BitwiseOr", BroadcastRelation(BinaryKind::kBitwise));
  r.Register("", "BitwiseXor", BroadcastRelation(BinaryKind::kBitwise));
  auto logical = [](auto f) {
    return [f](DimContext&, const std::vector<DimExpr>& a) -> std::optional<DimExpr> {
      if (!a[0].IsConst() || !a[1].IsConst()) return std::nullopt;
      return Bool(f(a[0].ConstValue() != 0, a[1].ConstValue() != 0));
    };
  };
  r.Register(
      "", "And",
      BroadcastRelation(BinaryKind::kLogical, logical([](bool x, bool y) { return x && y; })));
  r.Register(
      "", "Or",
      BroadcastRelation(BinaryKind::kLogical, logical([](bool x, bool y) { return x || y; })));
  r.Register(
      "", "Xor",
      BroadcastRelation(BinaryKind::kLogical, logical([](bool x, bool y) { return x != y; })));
  r.Register("", "Equal", BroadcastRelation(BinaryKind::kCompare, SymEqual));
  r.Register(
      "", "Less",
      BroadcastRelation(BinaryKind::kCompare, [](DimContext& d, const std::vector<DimExpr>& a) {
        return SymLess(d, a[0], a[1]);
      }));
  r.Register(
      "", "Greater",
      BroadcastRelation(BinaryKind::kCompare, [](DimContext& d, const std::vector<DimExpr>& a) {
        return SymLess(d, a[1], a[0]);
      }));
  r.Register(
      "", "LessOrEqual",
      BroadcastRelation(BinaryKind::kCompare, [](DimContext& d, const std::vector<DimExpr>& a) {
        std::optional<DimExpr> gt = SymLess(d, a[1], a[0]);
        if (!gt) return gt;
        return Bool(gt->ConstValue() == 0);
      }));
  r.Register(
      "", "GreaterOrEqual",
      BroadcastRelation(BinaryKind::kCompare, [](DimContext& d, const std::vector<DimExpr>& a) {
        std::optional<DimExpr> lt = SymLess(d, a[0], a[1]);
        if (!lt) return lt;
        return Bool(lt->ConstValue() == 0);
      }));
  r.Register("", "Where", WhereRelation);
  r.Register("", "PRelu", PReluRelation);
  r.Register("", "Clip", ClipRelation);
  r.Register("", "Cast", CastRelation);
  r.Register("", "BitCast", BitCastRelation);
  r.Register("", "StringConcat", StringConcatRelation);
  r.Register("", "StringSplit", StringSplitRelation);
  r.Register("", "StringNormalizer", StringNormalizerRelation);
  r.Register("", "TfIdfVectorizer", TfIdfVectorizerRelation);
  r.Register("", "RegexFullMatch", RegexFullMatchRelation);
  r.Register("ai.onnx.ml", "Binarizer", SameTypeRelation);
  r.Register("ai.onnx.ml", "LabelEncoder", LabelEncoderRelation);
  r.Register("ai.onnx.ml", "TreeEnsemble", TreeEnsembleRelation);
  r.Register("ai.onnx.ml", "ArrayFeatureExtractor", ArrayFeatureExtractorRelation);
  r.Register("", "CastLike", CastRelation);
  r.Register("", "Dropout", DropoutRelation);
}

}  // namespace nimble::compiler
