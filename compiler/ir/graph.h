// The compiler's IR: a Module holds the main Graph and the DimContext of its symbolic shapes.
// A Graph is a list of Nodes in topological order over SSA Values; a Node is an operator (ONNX
// op type + domain, or one of the compiler's own ops such as "FusedElementwise") with
// attributes and, for control flow (If/Loop/Scan), nested subgraphs that may read values of
// enclosing graphs.
//
// Ownership: a Graph owns its Nodes and Values. Values are never shared between graphs; a
// subgraph refers to an outer value by pointer (captured), which the frontend records in
// Graph::captures.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "compiler/ir/type.h"
#include "vm/runtime/attributes.h"
#include "vm/runtime/tensor.h"

namespace nimble::compiler {

class Graph;
class Node;

class Value {
 public:
  int id() const { return id_; }
  const std::string& name() const { return name_; }
  void set_name(std::string name) { name_ = std::move(name); }
  Type& type() { return type_; }
  const Type& type() const { return type_; }
  const TensorType& tensor_type() const { return type_.tensor; }
  void set_type(Type type) { type_ = std::move(type); }

  Node* producer() const { return producer_; }  // null for graph inputs and constants
  int output_index() const { return output_index_; }
  Graph* graph() const { return graph_; }

  // Set for initializers and folded values: the value is this tensor.
  const std::optional<vm::Tensor>& constant() const { return constant_; }
  void set_constant(vm::Tensor t) { constant_ = std::move(t); }
  bool is_constant() const { return constant_.has_value(); }

  // For small integer tensors (rank 0 or 1) that carry shapes — Shape(x), Gather of it,
  // Concat of dims — the element values as symbolic dims, when type inference can tell.
  // This is how Reshape(x, Concat(Shape(x)[0], seq, 12, 64)) gets a symbolic output type.
  const std::optional<std::vector<DimExpr>>& symbolic_value() const { return symbolic_value_; }
  void set_symbolic_value(std::optional<std::vector<DimExpr>> v) { symbolic_value_ = std::move(v); }

 private:
  friend class Graph;
  int id_ = 0;
  std::string name_;
  Type type_;
  Node* producer_ = nullptr;
  int output_index_ = 0;
  Graph* graph_ = nullptr;
  std::optional<vm::Tensor> constant_;
  std::optional<std::vector<DimExpr>> symbolic_value_;
};

class Node {
 public:
  const std::string& op_type() const { return op_type_; }
  void set_op_type(std::string op) { op_type_ = std::move(op); }
  const std::string& domain() const { return domain_; }  // "" = ai.onnx
  void set_domain(std::string domain) { domain_ = std::move(domain); }
  const std::string& name() const { return name_; }
  void set_name(std::string name) { name_ = std::move(name); }
  int opset() const { return opset_; }  // of the node's domain in the model
  void set_opset(int opset) { opset_ = opset; }

  // Inputs; nullptr marks an absent optional input.
  const std::vector<Value*>& inputs() const { return inputs_; }
  Value* input(int i) const { return i < static_cast<int>(inputs_.size()) ? inputs_[i] : nullptr; }
  int num_inputs() const { return static_cast<int>(inputs_.size()); }
  void set_input(int i, Value* v) { inputs_[i] = v; }
  void set_inputs(std::vector<Value*> inputs) { inputs_ = std::move(inputs); }

  const std::vector<Value*>& outputs() const { return outputs_; }
  Value* output(int i) const { return outputs_[i]; }
  int num_outputs() const { return static_cast<int>(outputs_.size()); }

  vm::Attributes& attrs() { return attrs_; }
  const vm::Attributes& attrs() const { return attrs_; }

  // Subgraphs by attribute name ("then_branch", "else_branch", "body").
  std::map<std::string, std::unique_ptr<Graph>>& subgraphs() { return subgraphs_; }
  const std::map<std::string, std::unique_ptr<Graph>>& subgraphs() const { return subgraphs_; }

  Graph* graph() const { return graph_; }

  // "node 'Attention_3' (MatMul)" for error messages.
  std::string Describe() const;

 private:
  friend class Graph;
  std::string op_type_;
  std::string domain_;
  std::string name_;
  int opset_ = 0;
  std::vector<Value*> inputs_;
  std::vector<Value*> outputs_;
  vm::Attributes attrs_;
  std::map<std::string, std::unique_ptr<Graph>> subgraphs_;
  Graph* graph_ = nullptr;
};

class Graph {
 public:
  explicit Graph(std::string name, Graph* parent = nullptr)
      : name_(std::move(name)), parent_(parent) {}
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  const std::string& name() const { return name_; }
  Graph* parent() const { return parent_; }

  // New values.
  Value* AddInput(std::string name, Type type);
  Value* AddConstant(std::string name, vm::Tensor tensor, Type type);
  // A node with fresh output values (types left empty for type inference to fill).
  Node* AddNode(std::string op_type, std::vector<Value*> inputs, int num_outputs,
                std::string name = "");
  void AddOutput(Value* v) { outputs_.push_back(v); }
  void set_outputs(std::vector<Value*> outputs) { outputs_ = std::move(outputs); }

  const std::vector<Value*>& inputs() const { return inputs_; }
  const std::vector<Value*>& outputs() const { return outputs_; }
  std::vector<Value*>& mutable_outputs() { return outputs_; }
  // Values of enclosing graphs that this graph (or its subgraphs) reads.
  const std::vector<Value*>& captures() const { return captures_; }
  void AddCapture(Value* v);

  // Nodes in topological order. Pointers stay valid until RemoveDeadNodes/Erase.
  const std::vector<std::unique_ptr<Node>>& nodes() const { return nodes_; }
  const std::vector<std::unique_ptr<Value>>& values() const { return values_; }

  // Moves the most recently added node to just after `anchor` (a node of this graph), so a
  // fused replacement sits where the pattern it replaces ended.
  void MoveLastNodeAfter(const Node* anchor);

  // Every use of `from` (node inputs, graph outputs, captures in subgraphs) becomes `to`.
  void ReplaceAllUsesWith(Value* from, Value* to);
  // Removes nodes whose outputs are all unused (transitively); keeps graph outputs.
  int RemoveDeadNodes();
  // Re-establishes topological order after nodes were appended out of order. kInternal on a
  // cycle.
  absl::Status TopologicalSort();
  // Number of uses of each value id in this graph (node inputs + outputs + subgraph captures).
  std::vector<int> CountUses() const;

  // Deterministic text form, used by --dump-ir-after and golden tests.
  std::string ToString(const DimContext& dims, int indent = 0) const;

  int NextValueId() const { return static_cast<int>(values_.size()); }

 private:
  Value* NewValue(std::string name);

  std::string name_;
  Graph* parent_;
  std::vector<Value*> inputs_;
  std::vector<Value*> outputs_;
  std::vector<Value*> captures_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<std::unique_ptr<Value>> values_;
};

// A compilation unit. Not thread-safe: one compilation owns it.
struct Module {
  std::unique_ptr<Graph> main = std::make_unique<Graph>("main");
  DimContext dims;
  std::map<std::string, int> opsets;  // domain -> version ("" = ai.onnx)
  std::string producer;               // e.g. "pytorch 1.13"

  std::string ToString() const { return main->ToString(dims); }
};

}  // namespace nimble::compiler
