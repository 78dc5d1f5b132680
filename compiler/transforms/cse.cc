#include "compiler/transforms/cse.h"

#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"

namespace nimble::compiler {
namespace {

// A key that is equal exactly when two nodes compute the same thing. Tensor attributes are
// compared by identity of their storage (equal contents in different storages are rare).
std::string AttrKey(const vm::Attributes& attrs) {
  std::string key;
  for (const auto& [name, value] : attrs.values()) {
    absl::StrAppend(&key, name, "=");
    std::visit(
        [&](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, int64_t> || std::is_same_v<T, double>) {
            absl::StrAppend(&key, v);
          } else if constexpr (std::is_same_v<T, std::string>) {
            absl::StrAppend(&key, v.size(), ":", v);
          } else if constexpr (std::is_same_v<T, vm::Tensor>) {
            absl::StrAppend(&key, "t@", reinterpret_cast<uintptr_t>(v.raw_data()), v.TypeString());
          } else {
            for (const auto& e : v) absl::StrAppend(&key, e, ",");
          }
        },
        value);
    absl::StrAppend(&key, ";");
  }
  return key;
}

bool Mergeable(const Node& node) {
  if (!node.subgraphs().empty() || node.num_outputs() == 0) return false;
  const std::string& op = node.op_type();
  return op.find("Random") == std::string::npos && op != "Multinomial" && op != "Bernoulli" &&
         op != "Dropout";
}

}  // namespace

absl::StatusOr<int> EliminateCommonSubexpressions(Module& module) {
  Graph& g = *module.main;
  using Key = std::tuple<std::string, std::string, std::vector<const Value*>, std::string>;
  std::map<Key, Node*> seen;
  int merged = 0;
  for (const auto& node : g.nodes()) {
    if (!Mergeable(*node)) continue;
    Key key{node->domain(), node->op_type(),
            std::vector<const Value*>(node->inputs().begin(), node->inputs().end()),
            AttrKey(node->attrs())};
    auto [it, inserted] = seen.emplace(key, node.get());
    if (inserted) continue;
    Node* first = it->second;
    if (first->num_outputs() != node->num_outputs()) continue;
    for (int i = 0; i < node->num_outputs(); ++i) {
      g.ReplaceAllUsesWith(node->output(i), first->output(i));
    }
    ++merged;
  }
  g.RemoveDeadNodes();
  return merged;
}

}  // namespace nimble::compiler
