// Type relations: one function per operator that computes the types of a node's outputs from
// the types (and, where known, the values) of its inputs. The type inference pass
// (compiler/transforms/type_inference.h) runs them node by node.
//
// A relation sees the node through an InferenceContext:
//   inputs      input_type(i), InputTensor(i), InputConstant(i) (initializer or Constant node),
//               InputSymbolicValue(i) (values of small integer shape tensors as DimExprs),
//               InputInts(i) / InputFloats(i) (values when all are compile-time constants);
//   attributes  AttrInt/AttrFloat/AttrString/AttrInts/AttrFloats/AttrTensor with defaults (a
//               wrongly typed attribute fails the node after the relation returns);
//   dims        dims(): the module's DimContext, opset(): the node's opset;
//   outputs     SetOutput(i, TensorType) / SetOutputType(i, Type), SetOutputSymbolicValue;
//   run time    FreshDim(output, axis): a new symbol for a dim only the run time knows (its
//               bounds are [0, 2^40]); it marks the node "_shape_mode" = "runtime", so the
//               lowering calls the kernel's shape function and binds the symbol from the
//               produced tensor. Outputs left with an unknown dim or rank mark it too.
//   checks      RequireEqual/RequireBroadcastable/RequireLessEqual/RequireNotEqual: OK when
//               provable, kInvalidArgument when provably false, otherwise a ShapeCheck is
//               recorded (see shape_check.h for the "_checks"/"_check_exprs" encoding).
//   subgraphs   InferSubgraph(graph) runs inference on an If/Loop/Scan body.
//
// Relations return kInvalidArgument for malformed nodes (the pass prefixes the node's name)
// and never crash on model data.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "compiler/ir/dim_expr.h"
#include "compiler/ir/graph.h"
#include "compiler/ir/type.h"
#include "compiler/shape/shape_check.h"
#include "vm/runtime/attributes.h"
#include "vm/runtime/dtype.h"
#include "vm/runtime/tensor.h"

namespace nimble::compiler {

// Symbolic values longer than this are not tracked (shape tensors are short).
inline constexpr int kMaxSymbolicValueElements = 64;

// Not thread-safe: one per node inference.
class InferenceContext {
 public:
  using SubgraphInferer = std::function<absl::Status(Graph&)>;

  // `previous_outputs`: the output types before this inference (FreshDim reuses the symbols it
  // invented last time, so re-running inference is stable). `visible`: the run-time symbols
  // in the types of values already typed where the node is (its graph and the enclosing ones);
  // null means none.
  InferenceContext(DimContext& dims, Node& node, int opset, std::vector<Type> previous_outputs,
                   const std::set<int32_t>* visible, SubgraphInferer infer_subgraph);

  Node& node() { return node_; }
  const Node& node() const { return node_; }
  int opset() const { return opset_; }  // the node's, or its module's for the domain
  DimContext& dims() { return dims_; }

  // ---- Inputs. `i` past the end or an omitted optional input counts as absent.
  int num_inputs() const { return node_.num_inputs(); }
  bool has_input(int i) const { return node_.input(i) != nullptr; }
  Value* input(int i) const { return i >= 0 ? node_.input(i) : nullptr; }
  const Type* input_type(int i) const;
  // The tensor type of a required tensor input; kInvalidArgument when absent or not a tensor.
  absl::StatusOr<const TensorType*> InputTensor(int i) const;
  // The value of an initializer input or of a Constant node's output; nullptr otherwise.
  const vm::Tensor* InputConstant(int i) const;
  // Element values of a rank-0/1 integer (or bool) input as DimExprs: the value's
  // symbolic_value, or its constant's elements.
  std::optional<std::vector<DimExpr>> InputSymbolicValue(int i) const;
  // Element values when all are compile-time constants (integers; bools as 0/1).
  std::optional<std::vector<int64_t>> InputInts(int i) const;
  // Element values of a constant numeric input as doubles.
  std::optional<std::vector<double>> InputFloats(int i) const;

  // ---- Attributes. A present attribute of the wrong type yields the default and fails the node.
  bool HasAttr(const std::string& name) const { return node_.attrs().Has(name); }
  int64_t AttrInt(const std::string& name, int64_t fallback);
  double AttrFloat(const std::string& name, double fallback);
  std::string AttrString(const std::string& name, const std::string& fallback);
  std::optional<std::vector<int64_t>> AttrInts(const std::string& name);
  std::optional<std::vector<double>> AttrFloats(const std::string& name);
  const vm::Tensor* AttrTensor(const std::string& name);
  const absl::Status& attr_status() const { return attr_status_; }

  // ---- Outputs. Setting an output the node does not have is a no-op (omitted optional output).
  int num_outputs() const { return node_.num_outputs(); }
  void SetOutputType(int i, Type type);
  void SetOutput(int i, TensorType type) { SetOutputType(i, Type::Tensor(std::move(type))); }
  void SetOutputSymbolicValue(int i, std::vector<DimExpr> value);
  bool output_set(int i) const { return i < static_cast<int>(set_.size()) && set_[i]; }

  // A fresh run-time symbol for dim `axis` of output `output`; marks the node runtime.
  DimExpr FreshDim(int output, int axis);
  // A fresh run-time symbol not tied to an output dim (loop-carried generalisation).
  DimExpr FreshSymbol();
  void MarkRuntimeShape() { runtime_shape_ = true; }
  bool runtime_shape() const { return runtime_shape_; }
  // Symbols FreshDim created or reused in this inference (the node's own output dims).
  const std::set<int32_t>& fresh_symbols() const { return fresh_symbols_; }
  // Whether `e` may appear in the node's output types: each run-time symbol it mentions is
  // visible where the node is, or is one of the node's own fresh dims. (Symbols invented inside
  // a subgraph are bound only there.)
  bool Visible(const DimExpr& e) const;

  // ---- Gradual typing. `what` says which fact it is, for the check's message and errors.
  absl::Status RequireEqual(const Dim& a, const Dim& b, absl::string_view what);
  // a broadcasts onto b: a == b or a == 1.
  absl::Status RequireBroadcastable(const Dim& a, const Dim& b, absl::string_view what);
  absl::Status RequireLessEqual(const Dim& a, const Dim& b, absl::string_view what);
  absl::Status RequireNotEqual(const Dim& a, const Dim& b, absl::string_view what);
  void AddCheck(ShapeCheck check);
  const std::vector<ShapeCheck>& checks() const { return checks_; }

  // Runs type inference on a subgraph of this node (If branches, Loop/Scan bodies).
  absl::Status InferSubgraph(Graph& graph);

  // "f32[batch, seq]" for error messages.
  std::string Str(const TensorType& t) const { return TensorTypeToString(t, dims_); }
  std::string Str(const Dim& d) const { return d ? dims_.ToString(*d) : "?"; }

 private:
  void AttrTypeError(const std::string& name);

  DimContext& dims_;
  Node& node_;
  int opset_;
  std::vector<Type> previous_outputs_;
  const std::set<int32_t>* visible_;
  SubgraphInferer infer_subgraph_;
  std::vector<bool> set_;
  std::vector<ShapeCheck> checks_;
  std::set<int32_t> fresh_symbols_;
  bool runtime_shape_ = false;
  absl::Status attr_status_;
};

using TypeRelation = std::function<absl::Status(InferenceContext&)>;

// Relations by (domain, op type). "" and "ai.onnx" are the same domain. Relations branch on
// ctx.opset() where an operator changed across opsets. A pass that introduces its own operators
// and wants them re-inferable registers them before compiling, e.g.
//   RelationRegistry::Global().Register("nimble", "FusedMatMul", [](InferenceContext& ctx) {
//     NIMBLE_ASSIGN_OR_RETURN(const TensorType* a, ctx.InputTensor(0));
//     ...
//     ctx.SetOutput(0, TensorType::Of(a->dtype, dims));
//     return absl::OkStatus();
//   });
// Thread-safety: register everything before compiling; lookups are then read-only.
class RelationRegistry {
 public:
  // The registry with every built-in relation (elementwise, tensor, nn, reduce, control).
  static RelationRegistry& Global();

  void Register(const std::string& domain, const std::string& op_type, TypeRelation relation);
  // nullptr when the operator is unknown.
  const TypeRelation* Find(absl::string_view domain, absl::string_view op_type) const;
  size_t size() const { return relations_.size(); }

 private:
  std::map<std::pair<std::string, std::string>, TypeRelation, std::less<>> relations_;
};

// Whether `atom` is a symbol type inference invented for a run-time dim (FreshDim); such symbols
// are named "_rt<n>".
bool IsRuntimeSymbol(const DimContext& dims, int32_t atom);

}  // namespace nimble::compiler
