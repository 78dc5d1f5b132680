#include "compiler/transforms/expand_flex_attention.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace nimble::compiler {
namespace {

constexpr char kDomain[] = "ai.onnx.preview";

// Copies the nodes of `sub` (one input, one output) into `g`, with `input` for its input;
// returns the value of its output in `g`.
absl::StatusOr<Value*> Inline(Graph& g, const Graph& sub, Value* input, const std::string& where) {
  if (sub.inputs().size() != 1 || sub.outputs().size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, " must have one input and one output, has ", sub.inputs().size(),
                     " and ", sub.outputs().size()));
  }
  std::map<const Value*, Value*> map = {{sub.inputs()[0], input}};
  auto lookup = [&](Value* v) -> Value* {
    if (v == nullptr) return nullptr;
    if (auto it = map.find(v); it != map.end()) return it->second;
    if (v->graph() == &sub && v->is_constant()) {  // an initializer of the graph
      Value* c = g.AddConstant(absl::StrCat(where, "/", v->name()), *v->constant(), v->type());
      map[v] = c;
      return c;
    }
    // A value of an enclosing graph, captured by `sub`.
    if (v->graph() != &g) g.AddCapture(v);
    return v;
  };
  for (const auto& node : sub.nodes()) {
    if (!node->subgraphs().empty()) {
      return absl::UnimplementedError(
          absl::StrCat(where, ": ", node->Describe(), " has graphs of its own"));
    }
    std::vector<Value*> inputs;
    for (Value* in : node->inputs()) inputs.push_back(lookup(in));
    Node* copy = g.AddNode(node->op_type(), std::move(inputs), node->num_outputs(),
                           absl::StrCat(where, "/", node->name()));
    copy->set_domain(node->domain());
    copy->set_opset(node->opset());
    copy->attrs() = node->attrs();
    for (int i = 0; i < node->num_outputs(); ++i) {
      copy->output(i)->set_name(absl::StrCat(where, "/", node->output(i)->name()));
      map[node->output(i)] = copy->output(i);
    }
  }
  return lookup(sub.outputs()[0]);
}

absl::Status Expand(Module& module, Graph& g, Node& node) {
  const std::string name = node.name().empty() ? "FlexAttention" : node.name();
  for (const auto& [attr, sub] : node.subgraphs()) {
    if (attr != "score_mod" && attr != "prob_mod") {
      return absl::UnimplementedError(
          absl::StrCat(node.Describe(), ": graph attribute '", attr, "' is not supported"));
    }
  }
  if (node.num_inputs() != 3 || node.num_outputs() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(node.Describe(), ": FlexAttention takes Q, K, V and gives Y"));
  }
  auto stage = [&](Value* a, Value* b, int64_t flex_stage, const char* suffix) {
    Node* n = g.AddNode("FlexAttention", {a, b}, 1, absl::StrCat(name, "/", suffix));
    n->set_domain(kDomain);
    n->set_opset(node.opset());
    if (flex_stage == 1 && node.attrs().Has("scale")) {
      n->attrs().Set("scale", node.attrs().GetOr<double>("scale", 0.0));
    }
    n->attrs().Set("flex_stage", flex_stage);
    n->output(0)->set_name(absl::StrCat(name, "/", suffix));
    return n->output(0);
  };
  Value* scores = stage(node.input(0), node.input(1), 1, "scores");
  if (auto it = node.subgraphs().find("score_mod"); it != node.subgraphs().end()) {
    NIMBLE_ASSIGN_OR_RETURN(scores, Inline(g, *it->second, scores, name + "/score_mod"));
  }
  Node* softmax = g.AddNode("Softmax", {scores}, 1, name + "/softmax");
  auto opset = module.opsets.find("");
  softmax->set_opset(opset != module.opsets.end() && opset->second >= 13 ? opset->second : 13);
  softmax->attrs().Set("axis", int64_t{-1});
  softmax->output(0)->set_name(name + "/probs");
  Value* probs = softmax->output(0);
  if (auto it = node.subgraphs().find("prob_mod"); it != node.subgraphs().end()) {
    NIMBLE_ASSIGN_OR_RETURN(probs, Inline(g, *it->second, probs, name + "/prob_mod"));
  }
  Value* y = stage(probs, node.input(2), 2, "apply");
  Value* old = node.output(0);
  const std::string y_name = old->name();
  g.ReplaceAllUsesWith(old, y);
  old->set_name(y_name + "/expanded");
  y->set_name(y_name);
  return absl::OkStatus();
}

absl::StatusOr<int> ExpandGraph(Module& module, Graph& g) {
  int count = 0;
  std::vector<Node*> targets;
  for (const auto& node : g.nodes()) {
    if (node->op_type() == "FlexAttention" && node->domain() == kDomain &&
        !node->subgraphs().empty()) {
      targets.push_back(node.get());
      continue;
    }
    for (auto& [attr, sub] : node->subgraphs()) {
      NIMBLE_ASSIGN_OR_RETURN(int n, ExpandGraph(module, *sub));
      count += n;
    }
  }
  if (targets.empty()) return count;
  for (Node* node : targets) NIMBLE_RETURN_IF_ERROR(Expand(module, g, *node));
  g.RemoveDeadNodes();
  NIMBLE_RETURN_IF_ERROR(g.TopologicalSort());
  return count + static_cast<int>(targets.size());
}

}  // namespace

absl::StatusOr<int> ExpandFlexAttention(Module& module) {
  return ExpandGraph(module, *module.main);
}

}  // namespace nimble::compiler
