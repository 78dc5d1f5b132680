// Control flow (If, Loop, Scan), sequences and optionals.
//
// Subgraphs are inferred first (ctx.InferSubgraph). Where alternatives meet — the two branches
// of an If, the iterations of a loop-carried value — types are joined: equal dims stay, differing
// dims become fresh run-time symbols (for sequence elements: unknown, since elements differ),
// differing ranks give an unknown rank, differing element types are an error.
//
// Symbols that a subgraph's own nodes invented (a NonZero inside a branch, a generalised
// loop-carried dim) are bound only inside that subgraph at run time, so a node output never
// mentions them: such dims are replaced by fresh symbols of the node's own outputs.
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "compiler/shape/dim_util.h"
#include "compiler/shape/relations_internal.h"

namespace nimble::compiler {
namespace {

using DifferFn = std::function<Dim(int axis)>;

absl::StatusOr<TensorType> JoinTensor(const TensorType& a, const TensorType& b,
                                      const DifferFn& differ) {
  if (a.dtype != b.dtype) {
    return absl::InvalidArgumentError(absl::StrCat("element types ", vm::DTypeName(a.dtype),
                                                   " and ", vm::DTypeName(b.dtype), " differ"));
  }
  if (!a.has_rank() || !b.has_rank() || a.rank() != b.rank()) {
    return TensorType::UnknownRank(a.dtype);
  }
  std::vector<Dim> dims;
  for (int i = 0; i < a.rank(); ++i) {
    const Dim& x = (*a.dims)[i];
    const Dim& y = (*b.dims)[i];
    dims.push_back(x && y && *x == *y ? x : differ(i));
  }
  return TensorType::Of(a.dtype, std::move(dims));
}

Dim Unknown(int) { return Dim(); }

// Joins two types of one value; for tensors, differing dims come from `differ`.
// A value of type T may flow where optional(T) is expected (a loop-carried optional that the
// body returns unwrapped): the join is then the optional.
absl::StatusOr<Type> JoinType(const Type& a, const Type& b, const DifferFn& differ) {
  auto wraps = [](const Type& opt, const Type& t) {
    return opt.kind == Type::Kind::kOptional && t.kind != Type::Kind::kOptional &&
           opt.optional_of_sequence == (t.kind == Type::Kind::kSequence);
  };
  if ((a.kind != b.kind || a.optional_of_sequence != b.optional_of_sequence) && !wraps(a, b) &&
      !wraps(b, a)) {
    return absl::InvalidArgumentError("a tensor, a sequence and an optional cannot be joined");
  }
  Type out = wraps(b, a) ? b : a;
  NIMBLE_ASSIGN_OR_RETURN(
      out.tensor, JoinTensor(a.tensor, b.tensor, out.is_tensor() ? differ : DifferFn(Unknown)));
  return out;
}

bool SameTensorType(const TensorType& a, const TensorType& b) {
  return a.dtype == b.dtype && a.dims == b.dims;
}
bool SameType(const Type& a, const Type& b) {
  return a.kind == b.kind && a.optional_of_sequence == b.optional_of_sequence &&
         SameTensorType(a.tensor, b.tensor);
}

// `type` as the type of output `output`: dims mentioning symbols local to a subgraph become
// fresh symbols of the output (element dims of sequences become unknown).
Type Localize(InferenceContext& ctx, int output, Type type, int axis_offset = 0) {
  if (!type.tensor.has_rank()) return type;
  for (int a = 0; a < type.tensor.rank(); ++a) {
    Dim& d = (*type.tensor.dims)[a];
    if (d && !ctx.Visible(*d)) {
      d = type.is_tensor() ? Dim(ctx.FreshDim(output, a + axis_offset)) : Dim();
    }
  }
  return type;
}

Graph* Subgraph(InferenceContext& ctx, const std::string& name) {
  auto it = ctx.node().subgraphs().find(name);
  return it == ctx.node().subgraphs().end() ? nullptr : it->second.get();
}

std::optional<bool> ConstantBool(const Value* v) {
  if (v == nullptr) return std::nullopt;
  const vm::Tensor* t = nullptr;
  if (v->is_constant()) {
    t = &*v->constant();
  } else if (v->producer() && v->producer()->op_type() == "Constant") {
    auto it = v->producer()->attrs().values().find("value");
    if (it != v->producer()->attrs().values().end()) t = std::get_if<vm::Tensor>(&it->second);
  }
  if (t == nullptr || !t->defined() || t->device() != vm::kCpu || t->num_elements() != 1 ||
      t->dtype() != vm::DType::kBool) {
    return std::nullopt;
  }
  return t->data<bool>()[0];
}

// ---- If
// -------------------------------------------------------------------------------------------

absl::Status IfRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* cond, ctx.InputTensor(0));
  if (cond->dtype != vm::DType::kBool) return absl::InvalidArgumentError("If needs a bool cond");
  Graph* then_g = Subgraph(ctx, "then_branch");
  Graph* else_g = Subgraph(ctx, "else_branch");
  if (!then_g || !else_g) return absl::InvalidArgumentError("If needs both branches");
  std::optional<bool> known = ConstantBool(ctx.input(0));
  if (!known) {
    if (std::optional<std::vector<int64_t>> c = ctx.InputInts(0); c && c->size() == 1) {
      known = (*c)[0] != 0;
    }
  }
  // With a compile-time condition only the taken branch must type-check: the other is often
  // written for inputs of another rank (ONNX function bodies branch on the rank). It is still
  // inferred, best effort, and the node says which branch runs.
  for (Graph* g : {then_g, else_g}) {
    const absl::Status s = ctx.InferSubgraph(*g);
    const bool dead = known && *known != (g == then_g);
    if (!s.ok() && !dead) return Annotate(s, g == then_g ? "then_branch" : "else_branch");
  }
  if (known) {
    ctx.node().attrs().Set(kTakenBranchAttr, std::string(*known ? "then_branch" : "else_branch"));
  }
  const size_t n = static_cast<size_t>(ctx.num_outputs());
  if (then_g->outputs().size() != n || else_g->outputs().size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("branches return ", then_g->outputs().size(),
                                                   " and ", else_g->outputs().size(),
                                                   " values for ", n, " outputs"));
  }
  for (size_t i = 0; i < n; ++i) {
    const Value* t = then_g->outputs()[i];
    const Value* e = else_g->outputs()[i];
    const int out = static_cast<int>(i);
    if (known) {
      const Value* taken = *known ? t : e;
      ctx.SetOutputType(out, Localize(ctx, out, taken->type()));
      if (taken->symbolic_value()) ctx.SetOutputSymbolicValue(out, *taken->symbolic_value());
      continue;
    }
    absl::StatusOr<Type> joined =
        JoinType(t->type(), e->type(), [&](int axis) { return Dim(ctx.FreshDim(out, axis)); });
    if (!joined.ok()) return Annotate(joined.status(), absl::StrCat("output ", i));
    if (!joined->tensor.has_rank()) ctx.MarkRuntimeShape();
    ctx.SetOutputType(out, Localize(ctx, out, *joined));
    if (t->symbolic_value() && e->symbolic_value() &&
        *t->symbolic_value() == *e->symbolic_value()) {
      bool visible = true;
      for (const DimExpr& x : *t->symbolic_value()) visible = visible && ctx.Visible(x);
      if (visible) ctx.SetOutputSymbolicValue(out, *t->symbolic_value());
    }
  }
  return absl::OkStatus();
}

// ---- Loop-carried values (Loop, Scan)
// -------------------------------------------------------------

// Infers `body` with `carried` types on body inputs [first, first + carried.size()) until the
// body's outputs [out_first, ...) agree with them; dims that change across iterations become
// fresh symbols (kept from one round to the next). Returns the final carried types.
absl::StatusOr<std::vector<Type>> InferCarried(InferenceContext& ctx, Graph& body,
                                               std::vector<Type> carried, size_t first,
                                               size_t out_first,
                                               const std::function<void()>& set_other_inputs) {
  std::set<int32_t> generalized;
  for (int round = 0; round < 8; ++round) {
    set_other_inputs();
    for (size_t j = 0; j < carried.size(); ++j) {
      body.inputs()[first + j]->set_type(carried[j]);
      body.inputs()[first + j]->set_symbolic_value(std::nullopt);
    }
    NIMBLE_RETURN_IF_ERROR(Annotate(ctx.InferSubgraph(body), "body"));
    bool changed = false;
    for (size_t j = 0; j < carried.size(); ++j) {
      const Type& next = body.outputs()[out_first + j]->type();
      const Type& cur = carried[j];
      absl::StatusOr<Type> joined = JoinType(cur, next, [&](int axis) -> Dim {
        const Dim& d = (*cur.tensor.dims)[axis];
        if (d && d->AsAtom() && generalized.count(*d->AsAtom())) return d;
        DimExpr s = ctx.FreshSymbol();
        generalized.insert(*s.AsAtom());
        return s;
      });
      if (!joined.ok()) return Annotate(joined.status(), absl::StrCat("loop-carried value ", j));
      if (!SameType(*joined, cur)) {
        carried[j] = *joined;
        changed = true;
      }
    }
    if (!changed) return carried;
  }
  return absl::InternalError("loop-carried types do not converge");
}

// Whether the body's condition output is the condition input passed through (or true), so the
// loop runs exactly the trip count.
bool RunsFullTripCount(const Graph& body) {
  const Value* cond_out = body.outputs()[0];
  const Value* cond_in = body.inputs()[1];
  if (cond_out == cond_in) return true;
  if (cond_out->producer() && cond_out->producer()->op_type() == "Identity" &&
      cond_out->producer()->input(0) == cond_in) {
    return true;
  }
  std::optional<bool> c = ConstantBool(cond_out);
  return c && *c;
}

absl::Status LoopRelation(InferenceContext& ctx) {
  Graph* body = Subgraph(ctx, "body");
  if (!body) return absl::InvalidArgumentError("Loop needs a body");
  const int n_carried = ctx.num_inputs() - 2;
  const int n_scan = ctx.num_outputs() - n_carried;
  if (n_carried < 0 || n_scan < 0 || body->inputs().size() != static_cast<size_t>(2 + n_carried) ||
      body->outputs().size() != static_cast<size_t>(1 + n_carried + n_scan)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Loop with ", ctx.num_inputs(), " inputs and ", ctx.num_outputs(), " outputs has a body ",
        "with ", body->inputs().size(), " inputs and ", body->outputs().size(), " outputs"));
  }
  std::vector<Type> initial;
  for (int j = 0; j < n_carried; ++j) {
    const Type* t = ctx.input_type(2 + j);
    if (!t) return absl::InvalidArgumentError(absl::StrCat("loop-carried input ", j, " missing"));
    initial.push_back(*t);
  }
  auto set_counters = [&] {
    body->inputs()[0]->set_type(Type::Tensor(TensorType::Static(vm::DType::kI64, {})));
    body->inputs()[1]->set_type(Type::Tensor(TensorType::Static(vm::DType::kBool, {})));
    body->inputs()[0]->set_symbolic_value(std::nullopt);
    body->inputs()[1]->set_symbolic_value(std::nullopt);
  };
  NIMBLE_ASSIGN_OR_RETURN(std::vector<Type> carried,
                          InferCarried(ctx, *body, initial, 2, 1, set_counters));
  for (int j = 0; j < n_carried; ++j) {
    Type out = carried[j];
    const Type& body_out = body->outputs()[1 + j]->type();
    if (out.kind == Type::Kind::kOptional && body_out.kind != Type::Kind::kOptional) {
      out = body_out.kind == Type::Kind::kSequence ? Type::Sequence(out.tensor)
                                                   : Type::Tensor(out.tensor);
    }
    if (!out.tensor.has_rank() && out.is_tensor()) ctx.MarkRuntimeShape();
    ctx.SetOutputType(j, Localize(ctx, j, out));
  }
  // Trip count: M when the loop cannot stop early.
  std::optional<DimExpr> trip;
  const std::optional<bool> cond0 = ctx.has_input(1) ? ConstantBool(ctx.input(1)) : true;
  if (ctx.has_input(0) && cond0 && *cond0 && RunsFullTripCount(*body)) {
    std::optional<std::vector<DimExpr>> m = ctx.InputSymbolicValue(0);
    if (m && m->size() == 1 && IsSafe((*m)[0])) {
      trip = ctx.dims().Max((*m)[0], DimExpr());
      if (trip->IsConst() && trip->ConstValue() > kMaxStaticDim) trip.reset();
    }
  }
  for (int k = 0; k < n_scan; ++k) {
    const int out = n_carried + k;
    const Type& t = body->outputs()[1 + n_carried + k]->type();
    if (!t.is_tensor()) return absl::InvalidArgumentError("Loop scan outputs must be tensors");
    Type local = Localize(ctx, out, t, 1);
    std::optional<std::vector<Dim>> dims;
    if (local.tensor.has_rank()) {
      dims.emplace();
      dims->push_back(trip ? Dim(*trip) : Dim(ctx.FreshDim(out, 0)));
      dims->insert(dims->end(), local.tensor.dims->begin(), local.tensor.dims->end());
    } else {
      ctx.MarkRuntimeShape();
    }
    ctx.SetOutput(out, TensorType{t.tensor.dtype, std::move(dims)});
  }
  return absl::OkStatus();
}

absl::Status ScanRelation(InferenceContext& ctx) {
  if (ctx.opset() < 9) {
    return absl::UnimplementedError(
        "Scan before opset 9 (batched) is only supported as the ONNX importer rewrites it (a "
        "Loop over the batch of opset-9 Scans)");
  }
  Graph* body = Subgraph(ctx, "body");
  if (!body) return absl::InvalidArgumentError("Scan needs a body");
  const int m = static_cast<int>(ctx.AttrInt("num_scan_inputs", -1));
  const int n = ctx.num_inputs() - m;
  const int k_out = ctx.num_outputs() - n;
  if (m <= 0 || n < 0 || k_out < 0 || body->inputs().size() != static_cast<size_t>(n + m) ||
      body->outputs().size() != static_cast<size_t>(n + k_out)) {
    return absl::InvalidArgumentError("Scan's inputs, outputs and body do not match");
  }
  const std::vector<int64_t> in_axes =
      ctx.AttrInts("scan_input_axes").value_or(std::vector<int64_t>(m, 0));
  const std::vector<int64_t> out_axes =
      ctx.AttrInts("scan_output_axes").value_or(std::vector<int64_t>(k_out, 0));
  if (static_cast<int>(in_axes.size()) != m || static_cast<int>(out_axes.size()) != k_out) {
    return absl::InvalidArgumentError("scan_input_axes/scan_output_axes have the wrong length");
  }
  // Slices of the scan inputs, and the sequence length.
  std::vector<Type> slices;
  Dim seq_len;
  bool seq_known = false;
  for (int j = 0; j < m; ++j) {
    NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(n + j));
    if (!x->has_rank()) {
      slices.push_back(Type::Tensor(TensorType::UnknownRank(x->dtype)));
      continue;
    }
    NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(in_axes[j], x->rank(), "scan_input_axes"));
    std::vector<Dim> dims = *x->dims;
    const Dim len = dims[axis];
    dims.erase(dims.begin() + axis);
    slices.push_back(Type::Tensor(TensorType::Of(x->dtype, std::move(dims))));
    if (!seq_known) {
      seq_len = len;
      seq_known = true;
    } else {
      NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual(len, seq_len, "Scan input sequence lengths"));
    }
  }
  std::vector<Type> initial;
  for (int j = 0; j < n; ++j) {
    const Type* t = ctx.input_type(j);
    if (t == nullptr) return absl::InvalidArgumentError(absl::StrCat("Scan state ", j, " missing"));
    initial.push_back(*t);
  }
  auto set_slices = [&] {
    for (int j = 0; j < m; ++j) {
      body->inputs()[n + j]->set_type(slices[j]);
      body->inputs()[n + j]->set_symbolic_value(std::nullopt);
    }
  };
  NIMBLE_ASSIGN_OR_RETURN(std::vector<Type> carried,
                          InferCarried(ctx, *body, initial, 0, 0, set_slices));
  for (int j = 0; j < n; ++j) {
    if (!carried[j].tensor.has_rank()) ctx.MarkRuntimeShape();
    ctx.SetOutputType(j, Localize(ctx, j, carried[j]));
  }
  for (int k = 0; k < k_out; ++k) {
    const int out = n + k;
    const Type& t = body->outputs()[n + k]->type();
    if (!t.is_tensor()) return absl::InvalidArgumentError("Scan outputs must be tensors");
    if (!t.tensor.has_rank()) {
      ctx.SetOutput(out, FreshTensor(ctx, out, t.tensor.dtype, std::nullopt));
      continue;
    }
    NIMBLE_ASSIGN_OR_RETURN(int axis,
                            NormalizeAxis(out_axes[k], t.tensor.rank() + 1, "scan_output_axes"));
    std::vector<Dim> dims;
    int src = 0;
    for (int a = 0; a < t.tensor.rank() + 1; ++a) {
      if (a == axis) {
        dims.push_back(seq_len ? seq_len : Dim(ctx.FreshDim(out, a)));
        continue;
      }
      const Dim& d = (*t.tensor.dims)[src++];
      dims.push_back(d && !ctx.Visible(*d) ? Dim(ctx.FreshDim(out, a)) : d);
    }
    ctx.SetOutput(out, TensorType::Of(t.tensor.dtype, std::move(dims)));
  }
  return absl::OkStatus();
}

// ---- Sequences
// ------------------------------------------------------------------------------------

absl::StatusOr<const TensorType*> SequenceElement(InferenceContext& ctx, int i) {
  const Type* t = ctx.input_type(i);
  if (t == nullptr || t->kind != Type::Kind::kSequence) {
    return absl::InvalidArgumentError(absl::StrCat("input ", i, " must be a sequence"));
  }
  return &t->tensor;
}

absl::Status SequenceConstructRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(std::vector<const TensorType*> ins, AllInputTensors(ctx));
  if (ins.empty()) return absl::InvalidArgumentError("needs at least one input");
  TensorType elem = *ins[0];
  for (size_t i = 1; i < ins.size(); ++i) {
    NIMBLE_ASSIGN_OR_RETURN(elem, JoinTensor(elem, *ins[i], Unknown));
  }
  ctx.SetOutputType(0, Type::Sequence(std::move(elem)));
  return absl::OkStatus();
}

absl::Status SequenceEmptyRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(vm::DType dtype, vm::DTypeFromOnnx(ctx.AttrInt("dtype", 1)));
  ctx.SetOutputType(0, Type::Sequence(TensorType::UnknownRank(dtype)));
  return absl::OkStatus();
}

absl::Status SequenceAtRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* elem, SequenceElement(ctx, 0));
  NIMBLE_RETURN_IF_ERROR(ctx.InputTensor(1).status());
  ctx.SetOutput(0, *elem);  // unknown dims become fresh run-time symbols
  return absl::OkStatus();
}

absl::Status SequenceInsertRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* elem, SequenceElement(ctx, 0));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(1));
  NIMBLE_ASSIGN_OR_RETURN(TensorType joined, JoinTensor(*elem, *x, Unknown));
  ctx.SetOutputType(0, Type::Sequence(std::move(joined)));
  return absl::OkStatus();
}

absl::Status SequenceEraseRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* elem, SequenceElement(ctx, 0));
  ctx.SetOutputType(0, Type::Sequence(*elem));
  return absl::OkStatus();
}

absl::Status SequenceLengthRelation(InferenceContext& ctx) {
  NIMBLE_RETURN_IF_ERROR(SequenceElement(ctx, 0).status());
  ctx.SetOutput(0, TensorType::Static(vm::DType::kI64, {}));
  return absl::OkStatus();
}

absl::Status SplitToSequenceRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  if (!x->has_rank()) {
    ctx.SetOutputType(0, Type::Sequence(*x));
    return absl::OkStatus();
  }
  NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(ctx.AttrInt("axis", 0), x->rank()));
  std::vector<Dim> dims = *x->dims;
  if (!ctx.has_input(1)) {
    if (ctx.AttrInt("keepdims", 1) != 0) {
      dims[axis] = DimExpr::Const(1);
    } else {
      dims.erase(dims.begin() + axis);
    }
  } else {
    // Equal chunks only when the split is one size dividing the dim, or all sizes are equal.
    std::optional<std::vector<DimExpr>> split = ctx.InputSymbolicValue(1);
    Dim chunk;
    if (split && !split->empty()) {
      chunk = (*split)[0];
      for (const DimExpr& s : *split) chunk = chunk && s == *chunk ? chunk : Dim();
      if (chunk) {
        NIMBLE_ASSIGN_OR_RETURN(chunk, DimFromValue(*chunk, "SplitToSequence split"));
      }
      const TensorType& st = ctx.input_type(1)->tensor;
      if (chunk && st.has_rank() && st.rank() == 0 &&
          !(dims[axis] && ExactDiv(*dims[axis], *chunk))) {
        chunk.reset();  // the last chunk is smaller
      }
    }
    dims[axis] = chunk;
  }
  ctx.SetOutputType(0, Type::Sequence(TensorType::Of(x->dtype, std::move(dims))));
  return absl::OkStatus();
}

absl::Status ConcatFromSequenceRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* elem, SequenceElement(ctx, 0));
  if (!ctx.HasAttr("axis")) return absl::InvalidArgumentError("attribute 'axis' is missing");
  if (!elem->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, elem->dtype, std::nullopt));
    return absl::OkStatus();
  }
  const bool new_axis = ctx.AttrInt("new_axis", 0) != 0;
  std::vector<Dim> dims = *elem->dims;
  NIMBLE_ASSIGN_OR_RETURN(int axis,
                          NormalizeAxis(ctx.AttrInt("axis", 0), elem->rank() + (new_axis ? 1 : 0)));
  // The number of elements is a run-time fact.
  if (new_axis) {
    dims.insert(dims.begin() + axis, ctx.FreshDim(0, axis));
  } else {
    dims[axis] = ctx.FreshDim(0, axis);
  }
  ctx.SetOutput(0, TensorType::Of(elem->dtype, std::move(dims)));
  return absl::OkStatus();
}

// SequenceMap(seq, extra...): the body runs once per element of `seq`, getting element i of
// every sequence input and each tensor input whole; each body output becomes a sequence.
absl::Status SequenceMapRelation(InferenceContext& ctx) {
  Graph* body = Subgraph(ctx, "body");
  if (!body) return absl::InvalidArgumentError("SequenceMap needs a body");
  if (body->inputs().size() != static_cast<size_t>(ctx.num_inputs()) ||
      body->outputs().size() != static_cast<size_t>(ctx.num_outputs())) {
    return absl::InvalidArgumentError(
        absl::StrCat("SequenceMap with ", ctx.num_inputs(), " inputs and ", ctx.num_outputs(),
                     " outputs has a body with ", body->inputs().size(), " inputs and ",
                     body->outputs().size(), " outputs"));
  }
  for (int j = 0; j < ctx.num_inputs(); ++j) {
    const Type* t = ctx.input_type(j);
    if (t == nullptr) return absl::InvalidArgumentError(absl::StrCat("input ", j, " is missing"));
    if (j == 0 && t->kind != Type::Kind::kSequence) {
      return absl::InvalidArgumentError("input 0 must be a sequence");
    }
    if (t->kind == Type::Kind::kOptional) {
      return absl::InvalidArgumentError(absl::StrCat("input ", j, " is an optional"));
    }
    body->inputs()[j]->set_type(Type::Tensor(t->tensor));
    body->inputs()[j]->set_symbolic_value(std::nullopt);
  }
  NIMBLE_RETURN_IF_ERROR(ctx.InferSubgraph(*body));
  for (int k = 0; k < ctx.num_outputs(); ++k) {
    const Type& t = body->outputs()[k]->type();
    if (!t.is_tensor()) {
      return absl::InvalidArgumentError(absl::StrCat("body output ", k, " must be a tensor"));
    }
    ctx.SetOutputType(k, Localize(ctx, k, Type::Sequence(t.tensor)));
  }
  return absl::OkStatus();
}

// ---- Optionals
// ------------------------------------------------------------------------------------

absl::Status OptionalRelation(InferenceContext& ctx) {
  if (const Type* t = ctx.input_type(0)) {
    if (t->kind == Type::Kind::kOptional) {
      return absl::InvalidArgumentError("Optional of an optional");
    }
    ctx.SetOutputType(0, Type::Optional(t->tensor, t->kind == Type::Kind::kSequence));
    return absl::OkStatus();
  }
  // An empty optional: its element type comes from the frontend as "elem_type" (ONNX enum) and
  // "elem_is_sequence".
  if (!ctx.HasAttr("elem_type")) {
    return absl::UnimplementedError("an empty Optional needs the 'elem_type' attribute");
  }
  NIMBLE_ASSIGN_OR_RETURN(vm::DType dtype, vm::DTypeFromOnnx(ctx.AttrInt("elem_type", 1)));
  ctx.SetOutputType(
      0, Type::Optional(TensorType::UnknownRank(dtype), ctx.AttrInt("elem_is_sequence", 0) != 0));
  return absl::OkStatus();
}

absl::Status OptionalHasElementRelation(InferenceContext& ctx) {
  ctx.SetOutput(0, TensorType::Static(vm::DType::kBool, {}));
  return absl::OkStatus();
}

absl::Status OptionalGetElementRelation(InferenceContext& ctx) {
  const Type* t = ctx.input_type(0);
  if (t == nullptr) return absl::InvalidArgumentError("input 0 is missing");
  if (t->kind != Type::Kind::kOptional) {
    ctx.SetOutputType(0, *t);  // opset 18: plain tensors and sequences pass through
    return absl::OkStatus();
  }
  ctx.SetOutputType(0,
                    t->optional_of_sequence ? Type::Sequence(t->tensor) : Type::Tensor(t->tensor));
  return absl::OkStatus();
}

}  // namespace

void RegisterControlRelations(RelationRegistry& r) {
  r.Register("", "If", IfRelation);
  r.Register("", "Loop", LoopRelation);
  r.Register("", "Scan", ScanRelation);
  r.Register("", "SequenceConstruct", SequenceConstructRelation);
  r.Register("", "SequenceEmpty", SequenceEmptyRelation);
  r.Register("", "SequenceAt", SequenceAtRelation);
  r.Register("", "SequenceInsert", SequenceInsertRelation);
  r.Register("", "SequenceErase", SequenceEraseRelation);
  r.Register("", "SequenceLength", SequenceLengthRelation);
  r.Register("", "SplitToSequence", SplitToSequenceRelation);
  r.Register("", "ConcatFromSequence", ConcatFromSequenceRelation);
  r.Register("", "SequenceMap", SequenceMapRelation);
  r.Register("", "Optional", OptionalRelation);
  r.Register("", "OptionalHasElement", OptionalHasElementRelation);
  r.Register("", "OptionalGetElement", OptionalGetElementRelation);
}

}  // namespace nimble::compiler
