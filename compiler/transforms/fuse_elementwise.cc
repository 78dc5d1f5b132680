#include "compiler/transforms/fuse_elementwise.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "base/status_macros.h"
#include "compiler/shape/shape_check.h"
#include "compiler/transforms/pattern_util.h"
#include "vm/kernels/fused_elementwise_program.h"

namespace nimble::compiler {
namespace {

using vm::FusedOp;

std::optional<FusedOp> FusedOpOf(const Node& n) {
  if (!n.domain().empty() || n.num_outputs() != 1) return std::nullopt;
  static const std::map<std::string, FusedOp> kBinary = {
      {"Add", FusedOp::kAdd}, {"Sub", FusedOp::kSub}, {"Mul", FusedOp::kMul},
      {"Div", FusedOp::kDiv}, {"Max", FusedOp::kMax}, {"Min", FusedOp::kMin},
      {"Pow", FusedOp::kPow}};
  static const std::map<std::string, FusedOp> kUnary = {
      {"Neg", FusedOp::kNeg},         {"Exp", FusedOp::kExp},
      {"Log", FusedOp::kLog},         {"Sqrt", FusedOp::kSqrt},
      {"Tanh", FusedOp::kTanh},       {"Erf", FusedOp::kErf},
      {"Sigmoid", FusedOp::kSigmoid}, {"Relu", FusedOp::kRelu},
      {"Abs", FusedOp::kAbs},         {"Reciprocal", FusedOp::kReciprocal}};
  if (auto it = kBinary.find(n.op_type()); it != kBinary.end() && n.num_inputs() == 2) {
    return it->second;
  }
  if (auto it = kUnary.find(n.op_type()); it != kUnary.end() && n.num_inputs() == 1) {
    return it->second;
  }
  if (n.op_type() == "Gelu" && n.num_inputs() == 1) {
    return n.attrs().GetOr<std::string>("approximate", "none") == "tanh" ? FusedOp::kGeluTanh
                                                                         : FusedOp::kGelu;
  }
  return std::nullopt;
}

bool IsF32Known(const Value* v) {
  return v && v->type().is_tensor() && v->tensor_type().dtype == vm::DType::kF32 &&
         v->tensor_type().fully_known();
}

bool Candidate(const Node& n) {
  if (!FusedOpOf(n) || !IsF32Known(n.output(0))) return false;
  for (const Value* in : n.inputs()) {
    if (!in || !in->type().is_tensor() || in->tensor_type().dtype != vm::DType::kF32) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<int> FuseElementwise(Module& module) {
  Graph& g = *module.main;
  UseCounts uses(g);
  std::set<const Node*> grouped;
  std::vector<std::vector<Node*>> groups;
  std::vector<Node*> order;
  for (const auto& n : g.nodes()) order.push_back(n.get());
  std::map<const Node*, int> position;
  for (size_t i = 0; i < order.size(); ++i) position[order[i]] = static_cast<int>(i);

  // Roots in reverse order; each absorbs single-use candidate producers transitively.
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* root = *it;
    if (grouped.count(root) || !Candidate(*root)) continue;
    std::vector<Node*> group = {root};
    std::vector<Node*> frontier = {root};
    while (!frontier.empty()) {
      Node* n = frontier.back();
      frontier.pop_back();
      for (const Value* in : n->inputs()) {
        Node* p = in->producer();
        if (!p || grouped.count(p) || !Candidate(*p) || uses(in) != 1 ||
            std::find(group.begin(), group.end(), p) != group.end()) {
          continue;
        }
        group.push_back(p);
        frontier.push_back(p);
      }
    }
    for (Node* n : group) grouped.insert(n);
    if (group.size() >= 2) groups.push_back(std::move(group));
  }

  int formed = 0;
  for (std::vector<Node*>& group : groups) {
    std::sort(group.begin(), group.end(),
              [&](const Node* a, const Node* b) { return position[a] < position[b]; });
    Node* root = group.back();
    std::vector<int64_t> program;
    std::vector<double> constants;
    std::vector<Value*> inputs;
    std::map<const Value*, int64_t> slot_of;
    int next_slot = 0;
    bool too_big = false;
    auto operand = [&](Value* v) -> int64_t {
      if (auto it = slot_of.find(v); it != slot_of.end()) return it->second;
      const int64_t slot = next_slot++;
      if (auto c = ScalarConstant(v); c && v->tensor_type().dtype == vm::DType::kF32) {
        program.insert(program.end(), {static_cast<int64_t>(FusedOp::kConst), slot,
                                       static_cast<int64_t>(constants.size()), 0});
        constants.push_back(*c);
      } else {
        program.insert(program.end(), {static_cast<int64_t>(FusedOp::kLoad), slot,
                                       static_cast<int64_t>(inputs.size()), 0});
        inputs.push_back(v);
      }
      slot_of[v] = slot;
      return slot;
    };
    for (Node* n : group) {
      const FusedOp op = *FusedOpOf(*n);
      const int64_t a = operand(n->input(0));
      const int64_t b = n->num_inputs() == 2 ? operand(n->input(1)) : 0;
      const int64_t dst = next_slot++;
      program.insert(program.end(), {static_cast<int64_t>(op), dst, a, b});
      slot_of[n->output(0)] = dst;
    }
    program.insert(program.end(),
                   {static_cast<int64_t>(FusedOp::kStore), 0, slot_of[root->output(0)], 0});
    too_big = next_slot > vm::kFusedProgramMaxSlots;
    if (too_big) continue;  // rare; the ops then run one by one
    Node* fused = g.AddNode("FusedElementwise", inputs, 1, root->name() + "/fused");
    fused->attrs().Set("program", program);
    fused->attrs().Set("constants", constants);
    fused->output(0)->set_type(root->output(0)->type());
    fused->output(0)->set_name(root->output(0)->name());
    // The run-time shape checks of the replaced ops guard the fused one.
    for (const Node* n : group) NIMBLE_RETURN_IF_ERROR(MergeShapeChecks(*fused, *n, module.dims));
    g.MoveLastNodeAfter(root);
    g.ReplaceAllUsesWith(root->output(0), fused->output(0));
    ++formed;
  }
  if (formed > 0) g.RemoveDeadNodes();
  return formed;
}

}  // namespace nimble::compiler
