// Small helpers for peephole pattern matching over the IR, shared by the fusion passes.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "compiler/ir/graph.h"

namespace nimble::compiler {

// Use counts of a graph's values, kept current by the fusion passes that consult it.
class UseCounts {
 public:
  explicit UseCounts(const Graph& g) : counts_(g.CountUses()) {}
  int operator()(const Value* v) const {
    return v && v->id() < static_cast<int>(counts_.size()) ? counts_[v->id()] : 0;
  }
  void Refresh(const Graph& g) { counts_ = g.CountUses(); }

 private:
  std::vector<int> counts_;
};

// The node producing `v` when it is an ONNX op of type `op` (default domain), else null.
inline Node* ProducerOf(const Value* v, const char* op) {
  if (v == nullptr || v->producer() == nullptr) return nullptr;
  Node* n = v->producer();
  return (n->op_type() == op && n->domain().empty()) ? n : nullptr;
}

// True when `v` is a tensor of dtype f32.
inline bool IsF32(const Value* v) {
  return v != nullptr && v->type().is_tensor() && v->tensor_type().dtype == vm::DType::kF32;
}

// The value of a constant holding a single float (any rank, one element), else nullopt.
std::optional<double> ScalarConstant(const Value* v);

// True when `v` is a constant 1-D tensor (or a constant with leading 1s) of `n` elements.
bool IsConstantVector(const Value* v, int64_t n);

// True when both are tensors of known, structurally equal dims (and equal dtype).
bool SameTensorType(const Value* a, const Value* b);

// A new node `op` (one output) that takes over `old`'s value: the output gets its type and name,
// the node is placed right after `after`'s position in the order, and every use of `old` reads
// the new output instead. The caller sets attributes and opset; `old`'s producer stays for
// RemoveDeadNodes.
Node* ReplaceValue(Graph& g, Value* old, const std::string& op, std::vector<Value*> inputs,
                   const std::string& name, const Node* after);

// The int64 list of an attribute or of a constant integer input, when known.
std::optional<std::vector<int64_t>> IntsFromAttrOrInput(const Node& node, const char* attr,
                                                        int input);

}  // namespace nimble::compiler
