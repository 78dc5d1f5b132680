#include "compiler/transforms/fuse_stacked_lstm.h"

#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "base/status_macros.h"
#include "compiler/shape/shape_check.h"
#include "compiler/transforms/pattern_util.h"

namespace nimble::compiler {
namespace {

bool IsF32Constant(const Value* v) { return IsF32(v) && v->is_constant(); }

// An LSTM layer the fused kernel runs: one forward direction, the default cell, f32 constant
// weights, and nothing that varies the step count per batch row.
bool IsPlainForwardLstm(const Node* n) {
  if (n == nullptr || n->op_type() != "LSTM" || !n->domain().empty()) return false;
  if (n->num_outputs() != 3 || n->num_inputs() < 3) return false;
  const vm::Attributes& a = n->attrs();
  if (a.GetOr<std::string>("direction", "forward") != "forward") return false;
  if (a.GetOr<int64_t>("layout", 0) != 0 || a.GetOr<int64_t>("input_forget", 0) != 0) return false;
  if (a.Has("activations") || a.Has("activation_alpha") || a.Has("activation_beta") ||
      a.Has("clip")) {
    return false;
  }
  if (n->input(4) != nullptr || n->input(7) != nullptr) return false;  // sequence_lens, P
  if (!IsF32(n->input(0)) || !IsF32Constant(n->input(1)) || !IsF32Constant(n->input(2))) {
    return false;
  }
  if (n->input(3) != nullptr && !IsF32Constant(n->input(3))) return false;
  for (int i : {5, 6}) {
    if (n->input(i) != nullptr && !IsF32(n->input(i))) return false;
  }
  // W [1, 4h, input], R [1, 4h, h]: one direction of a known hidden size.
  const vm::Tensor& w = *n->input(1)->constant();
  const vm::Tensor& r = *n->input(2)->constant();
  return w.rank() == 3 && r.rank() == 3 && w.dim(0) == 1 && r.dim(0) == 1 &&
         r.dim(1) == 4 * r.dim(2) && w.dim(1) == r.dim(1) &&
         a.GetOr<int64_t>("hidden_size", r.dim(2)) == r.dim(2);
}

struct Match {
  Node* first = nullptr;
  Node* squeeze = nullptr;
  Node* second = nullptr;
};

// Readers of each value (node inputs and subgraph captures; graph outputs are not nodes).
std::vector<std::vector<const Node*>> Readers(const Graph& g) {
  std::vector<std::vector<const Node*>> readers(g.NextValueId());
  for (const auto& n : g.nodes()) {
    for (const Value* in : n->inputs()) {
      if (in != nullptr && in->graph() == &g) readers[in->id()].push_back(n.get());
    }
    for (const auto& [name, sub] : n->subgraphs()) {
      for (const Value* c : sub->captures()) {
        if (c->graph() == &g) readers[c->id()].push_back(n.get());
      }
    }
  }
  return readers;
}

// `second` is the upper layer; its input must be Squeeze(first's Y, axes = [1]). The fused node
// takes `second`'s place, so what it reads must come before `first` (layer 2's initial states),
// and what reads layer 1's Y_h and Y_c after `second`.
std::optional<Match> MatchPair(Node* second, const UseCounts& uses,
                               const absl::flat_hash_map<const Node*, int>& position,
                               const std::vector<std::vector<const Node*>>& readers) {
  if (!IsPlainForwardLstm(second)) return std::nullopt;
  Value* x = second->input(0);
  Node* squeeze = ProducerOf(x, "Squeeze");
  if (squeeze == nullptr || uses(x) != 1 || squeeze->num_inputs() < 1) return std::nullopt;
  auto axes = IntsFromAttrOrInput(*squeeze, "axes", 1);
  if (!axes || axes->size() != 1 || ((*axes)[0] != 1 && (*axes)[0] != -3)) return std::nullopt;
  Value* y1 = squeeze->input(0);
  Node* first = ProducerOf(y1, "LSTM");
  if (first == nullptr || y1 != first->output(0) || uses(y1) != 1) return std::nullopt;
  if (!IsPlainForwardLstm(first)) return std::nullopt;
  // Layer 2's input width is layer 1's hidden size.
  const int64_t h1 = first->input(2)->constant()->dim(2);
  if (second->input(1)->constant()->dim(2) != h1) return std::nullopt;
  auto at = [&](const Node* n) {
    auto it = position.find(n);
    return it == position.end() ? -1 : it->second;
  };
  for (int i : {5, 6}) {
    const Value* v = second->input(i);
    if (v != nullptr && v->producer() != nullptr && at(v->producer()) >= at(first)) {
      return std::nullopt;
    }
  }
  for (int i : {1, 2}) {
    for (const Node* reader : readers[first->output(i)->id()]) {
      if (at(reader) <= at(second)) return std::nullopt;
    }
  }
  return Match{first, squeeze, second};
}

}  // namespace

absl::StatusOr<int> FuseStackedLstms(Module& module) {
  Graph& g = *module.main;
  UseCounts uses(g);
  int fused = 0;
  std::vector<Node*> nodes;
  for (const auto& n : g.nodes()) nodes.push_back(n.get());
  absl::flat_hash_map<const Node*, int> position;
  std::vector<std::vector<const Node*>> readers;
  auto refresh = [&] {
    position.clear();
    for (const auto& n : g.nodes()) position[n.get()] = static_cast<int>(position.size());
    readers = Readers(g);
  };
  refresh();
  for (Node* node : nodes) {
    std::optional<Match> m = MatchPair(node, uses, position, readers);
    if (!m) continue;
    Node* l1 = m->first;
    Node* l2 = m->second;
    std::vector<Value*> inputs = {l1->input(0), l1->input(1), l1->input(2), l1->input(3),
                                  l1->input(5), l1->input(6), l2->input(1), l2->input(2),
                                  l2->input(3), l2->input(5), l2->input(6)};
    Node* f = g.AddNode("StackedLSTM", std::move(inputs), 5, l2->name() + "/stacked");
    g.MoveLastNodeAfter(l2);
    Value* olds[5] = {l2->output(0), l1->output(1), l1->output(2), l2->output(1), l2->output(2)};
    for (int i = 0; i < 5; ++i) {
      f->output(i)->set_type(olds[i]->type());
      f->output(i)->set_name(olds[i]->name());
      g.ReplaceAllUsesWith(olds[i], f->output(i));
    }
    f->set_opset(l2->opset());
    f->attrs().Set("hidden_size", l1->input(2)->constant()->dim(2));
    f->attrs().Set("hidden_size2", l2->input(2)->constant()->dim(2));
    // The run-time shape checks of the replaced ops guard the fused one.
    for (const Node* n : {l1, m->squeeze, l2}) {
      NIMBLE_RETURN_IF_ERROR(MergeShapeChecks(*f, *n, module.dims));
    }
    ++fused;
    uses.Refresh(g);
    refresh();
  }
  if (fused > 0) g.RemoveDeadNodes();
  return fused;
}

}  // namespace nimble::compiler
