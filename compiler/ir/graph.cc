#include "compiler/ir/graph.h"

#include <algorithm>
#include <functional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace nimble::compiler {

std::string Node::Describe() const {
  return absl::StrCat("node '", name_.empty() ? "<unnamed>" : name_, "' (", op_type_,
                      domain_.empty() ? "" : absl::StrCat(", domain ", domain_), ")");
}

Value* Graph::NewValue(std::string name) {
  auto v = std::make_unique<Value>();
  v->id_ = static_cast<int>(values_.size());
  v->name_ = std::move(name);
  v->graph_ = this;
  values_.push_back(std::move(v));
  return values_.back().get();
}

Value* Graph::AddInput(std::string name, Type type) {
  Value* v = NewValue(std::move(name));
  v->type_ = std::move(type);
  inputs_.push_back(v);
  return v;
}

Value* Graph::AddConstant(std::string name, vm::Tensor tensor, Type type) {
  Value* v = NewValue(std::move(name));
  v->type_ = std::move(type);
  v->constant_ = std::move(tensor);
  return v;
}

Node* Graph::AddNode(std::string op_type, std::vector<Value*> inputs, int num_outputs,
                     std::string name) {
  auto node = std::make_unique<Node>();
  node->op_type_ = std::move(op_type);
  node->name_ = std::move(name);
  node->inputs_ = std::move(inputs);
  node->graph_ = this;
  for (int i = 0; i < num_outputs; ++i) {
    Value* out = NewValue("");
    out->producer_ = node.get();
    out->output_index_ = i;
    node->outputs_.push_back(out);
  }
  nodes_.push_back(std::move(node));
  return nodes_.back().get();
}

void Graph::MoveLastNodeAfter(const Node* anchor) {
  auto it = std::find_if(nodes_.begin(), nodes_.end(),
                         [&](const std::unique_ptr<Node>& n) { return n.get() == anchor; });
  if (it == nodes_.end() || it + 1 == nodes_.end()) return;
  std::unique_ptr<Node> last = std::move(nodes_.back());
  nodes_.pop_back();
  nodes_.insert(it + 1, std::move(last));
}

void Graph::AddCapture(Value* v) {
  if (std::find(captures_.begin(), captures_.end(), v) == captures_.end()) captures_.push_back(v);
}

namespace {

void ReplaceInGraph(Graph* g, Value* from, Value* to) {
  for (const auto& node : g->nodes()) {
    for (int i = 0; i < node->num_inputs(); ++i) {
      if (node->input(i) == from) node->set_input(i, to);
    }
    for (auto& [name, sub] : node->subgraphs()) ReplaceInGraph(sub.get(), from, to);
  }
  for (Value*& out : g->mutable_outputs()) {
    if (out == from) out = to;
  }
}

void MarkUses(const Graph& g, std::set<const Value*>& used) {
  for (const auto& node : g.nodes()) {
    for (Value* in : node->inputs()) {
      if (in) used.insert(in);
    }
    for (const auto& [name, sub] : node->subgraphs()) {
      MarkUses(*sub, used);
      for (Value* c : sub->captures()) used.insert(c);
    }
  }
  for (Value* out : g.outputs()) used.insert(out);
}

}  // namespace

void Graph::ReplaceAllUsesWith(Value* from, Value* to) {
  ReplaceInGraph(this, from, to);
  for (const auto& node : nodes_) {
    for (auto& [name, sub] : node->subgraphs_) {
      for (Value*& c : sub->captures_) {
        if (c == from) c = to;
      }
    }
  }
}

int Graph::RemoveDeadNodes() {
  int removed = 0;
  bool changed = true;
  while (changed) {
    changed = false;
    std::set<const Value*> used;
    MarkUses(*this, used);
    std::vector<std::unique_ptr<Node>> kept;
    for (auto& node : nodes_) {
      bool live = false;
      for (Value* out : node->outputs()) live = live || used.count(out);
      if (live) {
        kept.push_back(std::move(node));
      } else {
        ++removed;
        changed = true;
      }
    }
    nodes_ = std::move(kept);
  }
  return removed;
}

absl::Status Graph::TopologicalSort() {
  // Kahn's algorithm over producer->consumer edges inside this graph (captured outer values
  // and inputs/constants are always available). Stable: ties keep the current order.
  std::map<const Node*, size_t> index;
  for (size_t i = 0; i < nodes_.size(); ++i) index[nodes_[i].get()] = i;
  std::vector<int> pending(nodes_.size(), 0);
  std::vector<std::vector<size_t>> consumers(nodes_.size());
  auto for_each_dependency = [&](const Node& node, const std::function<void(size_t)>& f) {
    std::set<size_t> seen;
    std::function<void(const Graph&)> visit_sub = [&](const Graph& sub) {
      for (Value* c : sub.captures()) {
        if (c->producer() && index.count(c->producer()) && seen.insert(index[c->producer()]).second)
          f(index[c->producer()]);
      }
    };
    for (Value* in : node.inputs()) {
      if (in && in->producer() && index.count(in->producer()) &&
          seen.insert(index[in->producer()]).second) {
        f(index[in->producer()]);
      }
    }
    for (const auto& [name, sub] : node.subgraphs()) visit_sub(*sub);
  };
  for (size_t i = 0; i < nodes_.size(); ++i) {
    for_each_dependency(*nodes_[i], [&](size_t dep) {
      ++pending[i];
      consumers[dep].push_back(i);
    });
  }
  std::set<size_t> ready;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (pending[i] == 0) ready.insert(i);
  }
  std::vector<std::unique_ptr<Node>> sorted;
  while (!ready.empty()) {
    size_t i = *ready.begin();
    ready.erase(ready.begin());
    for (size_t c : consumers[i]) {
      if (--pending[c] == 0) ready.insert(c);
    }
    sorted.push_back(std::move(nodes_[i]));
  }
  if (sorted.size() != nodes_.size()) {
    for (auto& n : nodes_) {
      if (n) sorted.push_back(std::move(n));
    }
    nodes_ = std::move(sorted);
    return absl::InternalError(absl::StrCat("graph '", name_, "' has a cycle"));
  }
  nodes_ = std::move(sorted);
  return absl::OkStatus();
}

std::vector<int> Graph::CountUses() const {
  std::vector<int> uses(values_.size(), 0);
  auto count = [&](const Value* v) {
    if (v && v->graph() == this) ++uses[v->id()];
  };
  std::function<void(const Graph&)> visit = [&](const Graph& g) {
    for (const auto& node : g.nodes()) {
      for (Value* in : node->inputs()) count(in);
      for (const auto& [name, sub] : node->subgraphs()) {
        for (Value* c : sub->captures()) count(c);
        visit(*sub);
      }
    }
  };
  visit(*this);
  for (Value* out : outputs_) count(out);
  return uses;
}

namespace {

std::string ValueRef(const Value* v) {
  if (v == nullptr) return "_";
  return v->name().empty() ? absl::StrCat("%", v->id())
                           : absl::StrCat("%", v->id(), ":", v->name());
}

std::string AttrToString(const vm::AttrValue& value) {
  struct Printer {
    std::string operator()(int64_t v) const { return absl::StrCat(v); }
    std::string operator()(double v) const { return absl::StrCat(v); }
    std::string operator()(const std::string& v) const { return absl::StrCat("\"", v, "\""); }
    std::string operator()(const std::vector<int64_t>& v) const {
      return absl::StrCat("[", absl::StrJoin(v, ", "), "]");
    }
    std::string operator()(const std::vector<double>& v) const {
      return absl::StrCat("[", absl::StrJoin(v, ", "), "]");
    }
    std::string operator()(const std::vector<std::string>& v) const {
      return absl::StrCat("[\"", absl::StrJoin(v, "\", \""), "\"]");
    }
    std::string operator()(const vm::Tensor& t) const {
      return absl::StrCat("tensor<", t.TypeString(), ">");
    }
  };
  return std::visit(Printer{}, value);
}

}  // namespace

std::string Graph::ToString(const DimContext& dims, int indent) const {
  const std::string pad(indent, ' ');
  std::string out;
  std::vector<std::string> params;
  for (Value* in : inputs_) {
    params.push_back(absl::StrCat(ValueRef(in), ": ", TypeToString(in->type(), dims)));
  }
  absl::StrAppend(&out, pad, "graph ", name_, "(", absl::StrJoin(params, ", "), ")");
  if (!captures_.empty()) {
    std::vector<std::string> caps;
    for (Value* c : captures_) caps.push_back(ValueRef(c));
    absl::StrAppend(&out, " captures(", absl::StrJoin(caps, ", "), ")");
  }
  absl::StrAppend(&out, " {\n");
  // Constants used by nodes, once each, in first-use order.
  std::set<const Value*> printed;
  for (const auto& node : nodes_) {
    for (Value* in : node->inputs()) {
      if (in && in->is_constant() && in->graph() == this && printed.insert(in).second) {
        absl::StrAppend(&out, pad, "  ", ValueRef(in), ": ", TypeToString(in->type(), dims),
                        " = constant\n");
      }
    }
  }
  for (const auto& node : nodes_) {
    std::vector<std::string> outs, ins, attrs;
    for (Value* o : node->outputs()) {
      outs.push_back(absl::StrCat(ValueRef(o), ": ", TypeToString(o->type(), dims)));
    }
    for (Value* i : node->inputs()) ins.push_back(ValueRef(i));
    for (const auto& [name, value] : node->attrs().values()) {
      attrs.push_back(absl::StrCat(name, "=", AttrToString(value)));
    }
    absl::StrAppend(&out, pad, "  ", absl::StrJoin(outs, ", "), " = ", node->op_type(), "(",
                    absl::StrJoin(ins, ", "), ")");
    if (!attrs.empty()) absl::StrAppend(&out, " {", absl::StrJoin(attrs, ", "), "}");
    absl::StrAppend(&out, "\n");
    for (const auto& [name, sub] : node->subgraphs()) {
      absl::StrAppend(&out, pad, "    ", name, ":\n", sub->ToString(dims, indent + 6));
    }
  }
  std::vector<std::string> rets;
  for (Value* o : outputs_) rets.push_back(ValueRef(o));
  absl::StrAppend(&out, pad, "  return ", absl::StrJoin(rets, ", "), "\n", pad, "}\n");
  return out;
}

}  // namespace nimble::compiler
