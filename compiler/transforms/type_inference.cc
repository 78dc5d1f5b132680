#include "compiler/transforms/type_inference.h"

#include <algorithm>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "compiler/shape/dim_util.h"
#include "compiler/shape/shape_check.h"

namespace nimble::compiler {
namespace {

constexpr int kDefaultOpset = 17;

using SymbolSet = std::set<int32_t>;

absl::Status InferGraph(Module& module, Graph& graph, const RelationRegistry& relations,
                        const SymbolSet& outer);

// Adds the run-time symbols `type` mentions to `seen`.
void NoteSymbols(const DimContext& dims, const Type& type, SymbolSet& seen) {
  if (!type.tensor.has_rank()) return;
  SymbolSet symbols;
  for (const Dim& d : *type.tensor.dims) {
    if (d) CollectSymbols(dims, *d, symbols);
  }
  for (int32_t s : symbols) {
    if (IsRuntimeSymbol(dims, s)) seen.insert(s);
  }
}

int NodeOpset(const Module& module, const Node& node) {
  if (node.opset() > 0) return node.opset();
  const std::string domain = node.domain() == "ai.onnx" ? "" : node.domain();
  auto it = module.opsets.find(domain);
  return it != module.opsets.end() ? it->second : kDefaultOpset;
}

std::string NodeName(const Node& node) { return node.name().empty() ? "<unnamed>" : node.name(); }

std::string Where(const Node& node, int opset) {
  return absl::StrCat("node '", NodeName(node), "' (", node.op_type(),
                      node.domain().empty() ? "" : absl::StrCat(", domain ", node.domain()),
                      ", opset ", opset, ")");
}

// Symbolic values of small integer initializers; types of constants that lack one.
void PrepareConstants(Graph& graph) {
  for (const auto& v : graph.values()) {
    if (!v->is_constant()) continue;
    const vm::Tensor& t = *v->constant();
    if (!t.defined()) continue;
    if (v->type().is_tensor() && v->type().tensor.dtype == vm::DType::kInvalid) {
      std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
      v->set_type(Type::Tensor(TensorType::Static(t.dtype(), shape)));
    }
    if (v->symbolic_value() || t.rank() > 1 || t.num_elements() > kMaxSymbolicValueElements ||
        t.device() != vm::kCpu) {
      continue;
    }
    std::vector<DimExpr> value;
    for (int64_t i = 0; i < t.num_elements(); ++i) {
      if (t.dtype() == vm::DType::kI64) {
        value.push_back(DimExpr::Const(t.data<int64_t>()[i]));
      } else if (t.dtype() == vm::DType::kI32) {
        value.push_back(DimExpr::Const(t.data<int32_t>()[i]));
      } else {
        break;
      }
    }
    if (static_cast<int64_t>(value.size()) == t.num_elements()) {
      v->set_symbolic_value(std::move(value));
    }
  }
}

// Names unknown dims of the main graph's inputs; rejects absurd constant dims and caps symbol
// bounds at kMaxStaticDim (no tensor has 2^40 elements along an axis), so that shape arithmetic
// and the bounds DimContext derives stay far from int64 overflow.
absl::Status PrepareInputs(Module& module) {
  for (int32_t atom = 0; atom < module.dims.num_atoms(); ++atom) {
    const DimContext::AtomInfo& info = module.dims.atom(atom);
    if (info.kind != DimContext::AtomKind::kSymbol || info.bounds.hi <= kMaxStaticDim) continue;
    module.dims.SetBounds(atom, DimBounds{std::min(info.bounds.lo, kMaxStaticDim), kMaxStaticDim});
  }
  for (Value* in : module.main->inputs()) {
    TensorType& t = in->type().tensor;
    if (!t.has_rank()) continue;
    for (Dim& d : *t.dims) {
      if (!d) d = module.dims.FreshSymbol("_in", DimBounds{0, kMaxStaticDim});
      if (d->IsConst() && (d->ConstValue() < 0 || d->ConstValue() > kMaxStaticDim)) {
        return absl::InvalidArgumentError(absl::StrCat("input '", in->name(), "' has dim ",
                                                       d->ConstValue(), ", which is not valid"));
      }
    }
  }
  return absl::OkStatus();
}

// `visible`: run-time symbols of the values typed before `node` (see InferenceContext).
absl::Status InferNode(Module& module, Node& node, const RelationRegistry& relations,
                       const SymbolSet& visible) {
  const int opset = NodeOpset(module, node);
  const TypeRelation* relation = relations.Find(node.domain(), node.op_type());
  if (relation == nullptr) {
    return absl::UnimplementedError(absl::StrCat("unsupported operator '", node.op_type(),
                                                 "' (domain '", node.domain(), "', opset ", opset,
                                                 ") at node '", NodeName(node), "'"));
  }
  for (int i = 0; i < node.num_inputs(); ++i) {
    const Value* in = node.input(i);
    if (in && in->type().is_tensor() && in->type().tensor.dtype == vm::DType::kInvalid) {
      return absl::FailedPreconditionError(
          absl::StrCat(Where(node, opset), ": input ", i, " ('", in->name(),
                       "') has no type yet; is the graph in topological order?"));
    }
  }
  std::vector<Type> previous;
  for (Value* out : node.outputs()) {
    previous.push_back(out ? out->type() : Type());
    if (out) out->set_symbolic_value(std::nullopt);
  }
  ClearTypeInferenceAttrs(node);
  InferenceContext ctx(module.dims, node, opset, std::move(previous), &visible,
                       [&](Graph& g) { return InferGraph(module, g, relations, visible); });
  absl::Status status = (*relation)(ctx);
  if (status.ok()) status = ctx.attr_status();
  if (!status.ok()) return Annotate(status, Where(node, opset));
  for (int i = 0; i < node.num_outputs(); ++i) {
    if (node.output(i) == nullptr) continue;
    if (!ctx.output_set(i)) {
      return absl::InvalidArgumentError(absl::StrCat(Where(node, opset), ": has ",
                                                     node.num_outputs(), " outputs; output ", i,
                                                     " is not one the operator defines"));
    }
    // Dims nothing could derive are run-time facts: name them so later equalities hold.
    Type& t = node.output(i)->type();
    if (!t.is_tensor()) continue;
    if (!t.tensor.has_rank()) {
      ctx.MarkRuntimeShape();
      continue;
    }
    for (int a = 0; a < t.tensor.rank(); ++a) {
      if (!(*t.tensor.dims)[a]) (*t.tensor.dims)[a] = ctx.FreshDim(i, a);
    }
    // Later passes multiply dims freely (sizes in bytes): the element count must fit.
    if (!ProductOf(*t.tensor.dims, 0, t.tensor.dims->size())) {
      return absl::InvalidArgumentError(absl::StrCat(Where(node, opset), ": output ", i,
                                                     " of type ", TypeToString(t, module.dims),
                                                     " has too many elements"));
    }
  }
  EncodeShapeChecks(node, ctx.checks(), module.dims);
  if (ctx.runtime_shape()) node.attrs().Set(kShapeModeAttr, std::string(kShapeModeRuntime));
  return absl::OkStatus();
}

absl::Status InferGraph(Module& module, Graph& graph, const RelationRegistry& relations,
                        const SymbolSet& outer) {
  PrepareConstants(graph);
  SymbolSet seen = outer;
  for (const auto& v : graph.values()) {
    if (v->producer() == nullptr) NoteSymbols(module.dims, v->type(), seen);  // inputs, constants
  }
  for (const auto& node : graph.nodes()) {
    NIMBLE_RETURN_IF_ERROR(InferNode(module, *node, relations, seen));
    for (const Value* out : node->outputs()) {
      if (out) NoteSymbols(module.dims, out->type(), seen);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status InferTypes(Module& module, const RelationRegistry& relations) {
  NIMBLE_RETURN_IF_ERROR(PrepareInputs(module));
  return InferGraph(module, *module.main, relations, {});
}

absl::Status InferTypes(Module& module) { return InferTypes(module, RelationRegistry::Global()); }

absl::Status InferNodeTypes(Module& module, Node& node, const RelationRegistry& relations) {
  // Visible: whatever the node's graph and the enclosing ones mention, except its own outputs.
  SymbolSet visible;
  for (const Graph* g = node.graph(); g != nullptr; g = g->parent()) {
    for (const auto& v : g->values()) {
      if (v->producer() != &node) NoteSymbols(module.dims, v->type(), visible);
    }
  }
  return InferNode(module, node, relations, visible);
}

absl::Status InferNodeTypes(Module& module, Node& node) {
  return InferNodeTypes(module, node, RelationRegistry::Global());
}

}  // namespace nimble::compiler
