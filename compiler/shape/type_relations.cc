#include "compiler/shape/type_relations.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "compiler/shape/dim_util.h"
#include "compiler/shape/relations_internal.h"

namespace nimble::compiler {
namespace {

constexpr char kFreshPrefix[] = "_rt";
constexpr int64_t kMaxConstantElements = int64_t{1} << 16;

bool Readable(const vm::Tensor& t) { return t.defined() && t.device() == vm::kCpu; }

template <typename T>
std::vector<int64_t> CastInts(const vm::Tensor& t) {
  const T* p = t.data<T>();
  std::vector<int64_t> out(static_cast<size_t>(t.num_elements()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<int64_t>(p[i]);
  return out;
}

std::optional<std::vector<int64_t>> ReadInts(const vm::Tensor& t) {
  if (!Readable(t) || t.num_elements() > kMaxConstantElements) return std::nullopt;
  switch (t.dtype()) {
    case vm::DType::kI8:
      return CastInts<int8_t>(t);
    case vm::DType::kI16:
      return CastInts<int16_t>(t);
    case vm::DType::kI32:
      return CastInts<int32_t>(t);
    case vm::DType::kI64:
      return CastInts<int64_t>(t);
    case vm::DType::kU8:
      return CastInts<uint8_t>(t);
    case vm::DType::kU16:
      return CastInts<uint16_t>(t);
    case vm::DType::kU32:
      return CastInts<uint32_t>(t);
    case vm::DType::kU64: {
      std::vector<int64_t> out = CastInts<uint64_t>(t);
      for (int64_t& v : out) v = v < 0 ? INT64_MAX : v;  // saturate values past INT64_MAX
      return out;
    }
    case vm::DType::kBool:
      return CastInts<bool>(t);
    default:
      return std::nullopt;
  }
}

template <typename T>
std::vector<double> CastDoubles(const vm::Tensor& t) {
  const T* p = t.data<T>();
  std::vector<double> out(static_cast<size_t>(t.num_elements()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<double>(p[i]);
  return out;
}

bool IsOnnxDomain(absl::string_view domain) { return domain.empty() || domain == "ai.onnx"; }

bool IsFreshName(const std::string& name) { return absl::StartsWith(name, kFreshPrefix); }

}  // namespace

InferenceContext::InferenceContext(DimContext& dims, Node& node, int opset,
                                   std::vector<Type> previous_outputs,
                                   const std::set<int32_t>* visible, SubgraphInferer infer_subgraph)
    : dims_(dims),
      node_(node),
      opset_(opset),
      previous_outputs_(std::move(previous_outputs)),
      visible_(visible),
      infer_subgraph_(std::move(infer_subgraph)),
      set_(static_cast<size_t>(node.num_outputs()), false) {}

const Type* InferenceContext::input_type(int i) const {
  const Value* v = input(i);
  return v ? &v->type() : nullptr;
}

absl::StatusOr<const TensorType*> InferenceContext::InputTensor(int i) const {
  const Value* v = input(i);
  if (v == nullptr) return absl::InvalidArgumentError(absl::StrCat("input ", i, " is missing"));
  if (!v->type().is_tensor()) {
    return absl::InvalidArgumentError(
        absl::StrCat("input ", i, " must be a tensor, not ", TypeToString(v->type(), dims_)));
  }
  return &v->type().tensor;
}

const vm::Tensor* InferenceContext::InputConstant(int i) const {
  const Value* v = input(i);
  if (v == nullptr) return nullptr;
  if (v->is_constant()) return Readable(*v->constant()) ? &*v->constant() : nullptr;
  const Node* p = v->producer();
  if (p == nullptr || p->op_type() != "Constant" || !IsOnnxDomain(p->domain())) return nullptr;
  auto it = p->attrs().values().find("value");
  if (it == p->attrs().values().end()) return nullptr;
  const vm::Tensor* t = std::get_if<vm::Tensor>(&it->second);
  return t && Readable(*t) ? t : nullptr;
}

std::optional<std::vector<DimExpr>> InferenceContext::InputSymbolicValue(int i) const {
  const Value* v = input(i);
  if (v == nullptr) return std::nullopt;
  if (v->symbolic_value()) return v->symbolic_value();
  const vm::Tensor* t = InputConstant(i);
  if (t == nullptr || t->rank() > 1 || t->num_elements() > kMaxSymbolicValueElements) {
    return std::nullopt;
  }
  std::optional<std::vector<int64_t>> ints = ReadInts(*t);
  if (!ints) return std::nullopt;
  std::vector<DimExpr> out;
  for (int64_t x : *ints) out.push_back(DimExpr::Const(x));
  return out;
}

std::optional<std::vector<int64_t>> InferenceContext::InputInts(int i) const {
  if (const vm::Tensor* t = InputConstant(i)) return ReadInts(*t);
  std::optional<std::vector<DimExpr>> sym = InputSymbolicValue(i);
  if (!sym) return std::nullopt;
  std::vector<int64_t> out;
  for (const DimExpr& e : *sym) {
    if (!e.IsConst()) return std::nullopt;
    out.push_back(e.ConstValue());
  }
  return out;
}

std::optional<std::vector<double>> InferenceContext::InputFloats(int i) const {
  const vm::Tensor* t = InputConstant(i);
  if (t == nullptr) {
    // A Constant node with value_float(s).
    const Value* v = input(i);
    const Node* p = v ? v->producer() : nullptr;
    if (p && p->op_type() == "Constant") {
      if (auto f = p->attrs().Get<double>("value_float"); f.ok()) return std::vector<double>{*f};
      if (auto fs = p->attrs().Get<std::vector<double>>("value_floats"); fs.ok()) return *fs;
    }
    std::optional<std::vector<int64_t>> ints = InputInts(i);
    if (!ints) return std::nullopt;
    return std::vector<double>(ints->begin(), ints->end());
  }
  if (t->num_elements() > kMaxConstantElements) return std::nullopt;
  switch (t->dtype()) {
    case vm::DType::kF32:
      return CastDoubles<float>(*t);
    case vm::DType::kF64:
      return CastDoubles<double>(*t);
    default: {
      std::optional<std::vector<int64_t>> ints = ReadInts(*t);
      if (!ints) return std::nullopt;
      return std::vector<double>(ints->begin(), ints->end());
    }
  }
}

void InferenceContext::AttrTypeError(const std::string& name) {
  if (attr_status_.ok()) {
    attr_status_ =
        absl::InvalidArgumentError(absl::StrCat("attribute '", name, "' has the wrong type"));
  }
}

int64_t InferenceContext::AttrInt(const std::string& name, int64_t fallback) {
  if (!HasAttr(name)) return fallback;
  absl::StatusOr<int64_t> v = node_.attrs().Get<int64_t>(name);
  if (!v.ok()) {
    AttrTypeError(name);
    return fallback;
  }
  return *v;
}

double InferenceContext::AttrFloat(const std::string& name, double fallback) {
  if (!HasAttr(name)) return fallback;
  absl::StatusOr<double> v = node_.attrs().Get<double>(name);
  if (v.ok()) return *v;
  if (absl::StatusOr<int64_t> i = node_.attrs().Get<int64_t>(name); i.ok()) {
    return static_cast<double>(*i);
  }
  AttrTypeError(name);
  return fallback;
}

std::string InferenceContext::AttrString(const std::string& name, const std::string& fallback) {
  if (!HasAttr(name)) return fallback;
  absl::StatusOr<std::string> v = node_.attrs().Get<std::string>(name);
  if (!v.ok()) {
    AttrTypeError(name);
    return fallback;
  }
  return *v;
}

std::optional<std::vector<int64_t>> InferenceContext::AttrInts(const std::string& name) {
  if (!HasAttr(name)) return std::nullopt;
  if (auto v = node_.attrs().Get<std::vector<int64_t>>(name); v.ok()) return *v;
  if (auto v = node_.attrs().Get<int64_t>(name); v.ok()) return std::vector<int64_t>{*v};
  AttrTypeError(name);
  return std::nullopt;
}

std::optional<std::vector<double>> InferenceContext::AttrFloats(const std::string& name) {
  if (!HasAttr(name)) return std::nullopt;
  if (auto v = node_.attrs().Get<std::vector<double>>(name); v.ok()) return *v;
  if (auto v = node_.attrs().Get<double>(name); v.ok()) return std::vector<double>{*v};
  if (auto v = node_.attrs().Get<std::vector<int64_t>>(name); v.ok()) {
    return std::vector<double>(v->begin(), v->end());
  }
  AttrTypeError(name);
  return std::nullopt;
}

const vm::Tensor* InferenceContext::AttrTensor(const std::string& name) {
  auto it = node_.attrs().values().find(name);
  if (it == node_.attrs().values().end()) return nullptr;
  const vm::Tensor* t = std::get_if<vm::Tensor>(&it->second);
  if (t == nullptr) AttrTypeError(name);
  return t;
}

void InferenceContext::SetOutputType(int i, Type type) {
  if (i < 0 || i >= num_outputs() || node_.output(i) == nullptr) return;
  node_.output(i)->set_type(std::move(type));
  set_[i] = true;
}

void InferenceContext::SetOutputSymbolicValue(int i, std::vector<DimExpr> value) {
  if (i < 0 || i >= num_outputs() || node_.output(i) == nullptr) return;
  if (value.size() > static_cast<size_t>(kMaxSymbolicValueElements)) return;
  node_.output(i)->set_symbolic_value(std::move(value));
}

DimExpr InferenceContext::FreshDim(int output, int axis) {
  runtime_shape_ = true;
  if (output >= 0 && output < static_cast<int>(previous_outputs_.size())) {
    const TensorType& prev = previous_outputs_[output].tensor;
    if (prev.has_rank() && axis >= 0 && axis < prev.rank() && (*prev.dims)[axis]) {
      std::optional<int32_t> atom = (*prev.dims)[axis]->AsAtom();
      // Only a symbol this node invented: one that no value before the node mentions.
      if (atom && IsRuntimeSymbol(dims_, *atom) && !(visible_ && visible_->count(*atom)) &&
          fresh_symbols_.insert(*atom).second) {
        return DimExpr::Atom(*atom);
      }
    }
  }
  DimExpr e = FreshSymbol();
  fresh_symbols_.insert(*e.AsAtom());
  return e;
}

DimExpr InferenceContext::FreshSymbol() {
  runtime_shape_ = true;
  return dims_.FreshSymbol(kFreshPrefix, DimBounds{0, kMaxStaticDim});
}

bool InferenceContext::Visible(const DimExpr& e) const {
  std::set<int32_t> symbols;
  CollectSymbols(dims_, e, symbols);
  for (int32_t s : symbols) {
    if (IsRuntimeSymbol(dims_, s) && !(visible_ && visible_->count(s)) &&
        !fresh_symbols_.count(s)) {
      return false;
    }
  }
  return true;
}

void InferenceContext::AddCheck(ShapeCheck check) {
  for (const ShapeCheck& c : checks_) {
    if (c == check) return;
  }
  checks_.push_back(std::move(check));
}

absl::Status InferenceContext::RequireEqual(const Dim& a, const Dim& b, absl::string_view what) {
  if (!a || !b || *a == *b) return absl::OkStatus();
  if (ProvablyNotEqual(dims_, *a, *b)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", Str(a), " and ", Str(b), " must be equal"));
  }
  AddCheck({ShapeCheck::Kind::kEqual, *a, *b, std::string(what)});
  return absl::OkStatus();
}

absl::Status InferenceContext::RequireBroadcastable(const Dim& a, const Dim& b,
                                                    absl::string_view what) {
  if (!a || !b || *a == *b || *a == DimExpr::Const(1)) return absl::OkStatus();
  if (ProvablyNotOne(dims_, *a)) {
    if (ProvablyNotEqual(dims_, *a, *b)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": cannot broadcast dim ", Str(a), " to ", Str(b)));
    }
    AddCheck({ShapeCheck::Kind::kEqual, *a, *b, std::string(what)});
    return absl::OkStatus();
  }
  AddCheck({ShapeCheck::Kind::kBroadcastable, *a, *b, std::string(what)});
  return absl::OkStatus();
}

absl::Status InferenceContext::RequireLessEqual(const Dim& a, const Dim& b,
                                                absl::string_view what) {
  if (!a || !b || dims_.ProvablyLessEqual(*a, *b)) return absl::OkStatus();
  if (dims_.ProvablyLessEqual(*b + DimExpr::Const(1), *a)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", Str(a), " must be at most ", Str(b)));
  }
  AddCheck({ShapeCheck::Kind::kLessEqual, *a, *b, std::string(what)});
  return absl::OkStatus();
}

absl::Status InferenceContext::RequireNotEqual(const Dim& a, const Dim& b, absl::string_view what) {
  if (!a || !b || ProvablyNotEqual(dims_, *a, *b)) return absl::OkStatus();
  if (*a == *b) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", Str(a), " must differ from ", Str(b)));
  }
  AddCheck({ShapeCheck::Kind::kNotEqual, *a, *b, std::string(what)});
  return absl::OkStatus();
}

absl::Status InferenceContext::InferSubgraph(Graph& graph) {
  if (!infer_subgraph_) return absl::InternalError("no subgraph inference available");
  return infer_subgraph_(graph);
}

// ---- Registry -------------------------------------------------------------------------------

RelationRegistry& RelationRegistry::Global() {
  static RelationRegistry* registry = [] {
    auto* r = new RelationRegistry;
    RegisterElementwiseRelations(*r);
    RegisterTensorRelations(*r);
    RegisterNnRelations(*r);
    RegisterReduceRelations(*r);
    RegisterControlRelations(*r);
    RegisterSignalRelations(*r);
    return r;
  }();
  return *registry;
}

void RelationRegistry::Register(const std::string& domain, const std::string& op_type,
                                TypeRelation relation) {
  relations_[{IsOnnxDomain(domain) ? std::string() : domain, op_type}] = std::move(relation);
}

const TypeRelation* RelationRegistry::Find(absl::string_view domain,
                                           absl::string_view op_type) const {
  auto it = relations_.find(std::make_pair(
      IsOnnxDomain(domain) ? std::string() : std::string(domain), std::string(op_type)));
  return it == relations_.end() ? nullptr : &it->second;
}

bool IsRuntimeSymbol(const DimContext& dims, int32_t atom) {
  const DimContext::AtomInfo& info = dims.atom(atom);
  return info.kind == DimContext::AtomKind::kSymbol && IsFreshName(info.name);
}

// ---- Shared helpers (relations_internal.h) --------------------------------------------------

absl::StatusOr<int> NormalizeAxis(int64_t axis, int rank, absl::string_view what) {
  if (axis < -rank || axis >= rank) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", axis, " is out of range for rank ", rank));
  }
  return static_cast<int>(axis < 0 ? axis + rank : axis);
}

absl::Status RequireSameDType(InferenceContext& ctx, std::initializer_list<int> inputs) {
  const Type* first = nullptr;
  int first_index = 0;
  for (int i : inputs) {
    const Type* t = ctx.input_type(i);
    if (t == nullptr) continue;
    if (first == nullptr) {
      first = t;
      first_index = i;
      continue;
    }
    if (t->tensor.dtype != first->tensor.dtype) {
      return absl::InvalidArgumentError(
          absl::StrCat("input ", i, " has element type ", vm::DTypeName(t->tensor.dtype),
                       " but input ", first_index, " has ", vm::DTypeName(first->tensor.dtype)));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<DimExpr> DimFromValue(const DimExpr& value, absl::string_view what) {
  if (value.IsConst() && (value.ConstValue() < 0 || value.ConstValue() > kMaxStaticDim)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", value.ConstValue(), " is not a valid dim"));
  }
  return value;
}

absl::StatusOr<std::vector<const TensorType*>> AllInputTensors(InferenceContext& ctx) {
  std::vector<const TensorType*> out;
  for (int i = 0; i < ctx.num_inputs(); ++i) {
    if (!ctx.has_input(i)) continue;
    NIMBLE_ASSIGN_OR_RETURN(const TensorType* t, ctx.InputTensor(i));
    out.push_back(t);
  }
  return out;
}

TensorType FreshenUnknownDims(InferenceContext& ctx, int output, TensorType type) {
  if (!type.has_rank()) {
    ctx.MarkRuntimeShape();
    return type;
  }
  for (int a = 0; a < type.rank(); ++a) {
    if (!(*type.dims)[a]) (*type.dims)[a] = ctx.FreshDim(output, a);
  }
  return type;
}

TensorType FreshTensor(InferenceContext& ctx, int output, vm::DType dtype,
                       std::optional<int> rank) {
  ctx.MarkRuntimeShape();
  if (!rank) return TensorType::UnknownRank(dtype);
  std::vector<Dim> dims;
  for (int a = 0; a < *rank; ++a) dims.push_back(ctx.FreshDim(output, a));
  return TensorType::Of(dtype, std::move(dims));
}

std::string DimsToString(InferenceContext& ctx, const std::vector<Dim>& dims) {
  std::vector<std::string> parts;
  for (const Dim& d : dims) parts.push_back(ctx.Str(d));
  return absl::StrCat("[", absl::StrJoin(parts, ", "), "]");
}

bool IsNumeric(vm::DType dtype) {
  return dtype != vm::DType::kBool && dtype != vm::DType::kString && dtype != vm::DType::kInvalid;
}

bool IsIntegral(vm::DType dtype) { return vm::IsInteger(dtype); }

}  // namespace nimble::compiler
