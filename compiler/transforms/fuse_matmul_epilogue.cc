#include "compiler/transforms/fuse_matmul_epilogue.h"

#include <string>

#include "base/status_macros.h"
#include "compiler/shape/shape_check.h"
#include "compiler/transforms/pattern_util.h"

namespace nimble::compiler {
namespace {

// The single consumer of `v`, if it has exactly one use and it is a node of this graph.
Node* SoleConsumer(Graph& g, const Value* v, const UseCounts& uses) {
  if (uses(v) != 1) return nullptr;
  for (const auto& n : g.nodes()) {
    for (const Value* in : n->inputs()) {
      if (in == v) return n.get();
    }
  }
  return nullptr;
}

const char* ActivationOf(const Node& n) {
  if (!n.domain().empty() || n.num_inputs() != 1) return nullptr;
  if (n.op_type() == "Relu") return "relu";
  if (n.op_type() == "Tanh") return "tanh";
  if (n.op_type() == "Sigmoid") return "sigmoid";
  if (n.op_type() == "Gelu") {
    return n.attrs().GetOr<std::string>("approximate", "none") == "tanh" ? "gelu_tanh" : "gelu";
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<int> FuseMatMulEpilogues(Module& module) {
  Graph& g = *module.main;
  UseCounts uses(g);
  int fused = 0;
  std::vector<Node*> matmuls;
  for (const auto& n : g.nodes()) {
    if (n->op_type() == "MatMul" && n->domain().empty()) matmuls.push_back(n.get());
  }
  for (Node* mm : matmuls) {
    const Value* a = mm->input(0);
    const Value* w = mm->input(1);
    if (!w || !w->is_constant() || w->constant()->rank() != 2 ||
        w->constant()->dtype() != vm::DType::kF32 || !a || !a->type().is_tensor() ||
        a->tensor_type().dtype != vm::DType::kF32 || !a->tensor_type().has_rank() ||
        a->tensor_type().rank() < 2) {
      continue;
    }
    const int64_t n_out = w->constant()->dim(1);
    Value* out = mm->output(0);
    std::vector<const Node*> chain = {mm};  // the nodes the fused one replaces
    Value* bias = nullptr;
    Value* residual = nullptr;
    std::string activation;
    // Bias.
    if (Node* add = SoleConsumer(g, out, uses);
        add && add->op_type() == "Add" && add->domain().empty()) {
      Value* other = add->input(0) == out ? add->input(1) : add->input(0);
      if (IsConstantVector(other, n_out) && other->constant()->rank() == 1 &&
          other->constant()->dtype() == vm::DType::kF32) {
        bias = other;
        out = add->output(0);
        chain.push_back(add);
      }
    }
    // Activation.
    if (Node* act = SoleConsumer(g, out, uses); act && ActivationOf(*act)) {
      activation = ActivationOf(*act);
      out = act->output(0);
      chain.push_back(act);
    }
    // Residual: an Add of a tensor of exactly the output's type.
    if (Node* add = SoleConsumer(g, out, uses);
        add && add->op_type() == "Add" && add->domain().empty()) {
      Value* other = add->input(0) == out ? add->input(1) : add->input(0);
      if (other != out && SameTensorType(other, out)) {
        residual = other;
        out = add->output(0);
        chain.push_back(add);
      }
    }
    if (out == mm->output(0)) continue;  // nothing to fuse
    Node* fused_node = ReplaceValue(g, out, "FusedMatMul",
                                    {const_cast<Value*>(a), const_cast<Value*>(w), bias, residual},
                                    mm->name() + "/fused", out->producer());
    fused_node->attrs().Set("transB", int64_t{0});
    fused_node->attrs().Set("alpha", 1.0);
    fused_node->attrs().Set("activation", activation);
    // The run-time shape checks of the replaced ops guard the fused one.
    for (const Node* n : chain)
      NIMBLE_RETURN_IF_ERROR(MergeShapeChecks(*fused_node, *n, module.dims));
    uses.Refresh(g);
    ++fused;
  }
  if (fused > 0) g.RemoveDeadNodes();
  return fused;
}

}  // namespace nimble::compiler
