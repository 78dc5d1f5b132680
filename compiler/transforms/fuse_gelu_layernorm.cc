#include "compiler/transforms/fuse_gelu_layernorm.h"

#include <cmath>

#include "compiler/transforms/pattern_util.h"

namespace nimble::compiler {
namespace {

bool Near(std::optional<double> v, double want, double tol = 1e-4) {
  return v && std::abs(*v - want) <= tol * std::max(1.0, std::abs(want));
}

// The other operand of a commutative binary node, given one of them.
const Value* Other(const Node* n, const Value* one) {
  if (n->input(0) == one) return n->input(1);
  if (n->input(1) == one) return n->input(0);
  return nullptr;
}

// Matches Mul(Mul(x, Add(Erf(Div(x, sqrt2)), 1)), 0.5) in any operand order; returns x.
const Value* MatchGelu(const Node& root, const UseCounts& uses) {
  if (root.op_type() != "Mul" || root.num_inputs() != 2) return nullptr;
  for (int half = 0; half < 2; ++half) {
    if (!Near(ScalarConstant(root.input(half)), 0.5)) continue;
    const Value* d = root.input(1 - half);
    const Node* mul = ProducerOf(d, "Mul");
    if (!mul || uses(d) != 1) continue;
    for (int xi = 0; xi < 2; ++xi) {
      const Value* x = mul->input(xi);
      const Value* c = mul->input(1 - xi);
      const Node* add = ProducerOf(c, "Add");
      if (!add || uses(c) != 1) continue;
      const Value* b = nullptr;
      if (Near(ScalarConstant(add->input(1)), 1.0)) b = add->input(0);
      if (Near(ScalarConstant(add->input(0)), 1.0)) b = add->input(1);
      const Node* erf = ProducerOf(b, "Erf");
      if (!erf || uses(b) != 1) continue;
      const Value* a = erf->input(0);
      const Node* div = ProducerOf(a, "Div");
      const Node* scale = ProducerOf(a, "Mul");
      if (uses(a) != 1) continue;
      if (div && div->input(0) == x && Near(ScalarConstant(div->input(1)), std::sqrt(2.0)))
        return x;
      if (scale && Other(scale, x) && Near(ScalarConstant(Other(scale, x)), 1.0 / std::sqrt(2.0))) {
        return x;
      }
    }
  }
  return nullptr;
}

bool ReducesLastAxisOnly(const Node& reduce, int rank) {
  auto axes = IntsFromAttrOrInput(reduce, "axes", 1);
  if (!axes || axes->size() != 1) return false;
  const int64_t axis = (*axes)[0] < 0 ? (*axes)[0] + rank : (*axes)[0];
  return axis == rank - 1 && reduce.attrs().GetOr<int64_t>("keepdims", 1) == 1;
}

struct LayerNormMatch {
  const Value* x = nullptr;
  const Value* gamma = nullptr;
  const Value* beta = nullptr;
  double epsilon = 0;
};

// Matches Add(Mul(Div(Sub(x, mean), Sqrt(Add(ReduceMean(Pow(Sub, 2)), eps))), gamma), beta).
std::optional<LayerNormMatch> MatchLayerNorm(const Node& root, const UseCounts& uses) {
  if (root.op_type() != "Add" || root.num_inputs() != 2) return std::nullopt;
  for (int bi = 0; bi < 2; ++bi) {
    const Value* beta = root.input(bi);
    const Value* g = root.input(1 - bi);
    const Node* mul = ProducerOf(g, "Mul");
    if (!mul || uses(g) != 1 || !beta->is_constant()) continue;
    for (int gi = 0; gi < 2; ++gi) {
      const Value* gamma = mul->input(gi);
      const Value* n = mul->input(1 - gi);
      const Node* div = ProducerOf(n, "Div");
      if (!div || uses(n) != 1 || !gamma->is_constant()) continue;
      const Value* d = div->input(0);
      const Node* sub = ProducerOf(d, "Sub");
      const Node* sqrt = ProducerOf(div->input(1), "Sqrt");
      if (!sub || !sqrt || uses(div->input(1)) != 1) continue;
      const Value* x = sub->input(0);
      if (!x->type().is_tensor() || !x->tensor_type().has_rank()) continue;
      const int rank = x->tensor_type().rank();
      const Node* mean = ProducerOf(sub->input(1), "ReduceMean");
      if (!mean || mean->input(0) != x || !ReducesLastAxisOnly(*mean, rank)) continue;
      const Node* add_eps = ProducerOf(sqrt->input(0), "Add");
      if (!add_eps) continue;
      std::optional<double> eps;
      const Value* var = nullptr;
      for (int ei = 0; ei < 2; ++ei) {
        if ((eps = ScalarConstant(add_eps->input(ei)))) {
          var = add_eps->input(1 - ei);
          break;
        }
      }
      const Node* var_mean = ProducerOf(var, "ReduceMean");
      if (!eps || !var_mean || !ReducesLastAxisOnly(*var_mean, rank)) continue;
      const Node* pow = ProducerOf(var_mean->input(0), "Pow");
      const Node* square = ProducerOf(var_mean->input(0), "Mul");
      const bool squares_d =
          (pow && pow->input(0) == d && Near(ScalarConstant(pow->input(1)), 2.0)) ||
          (square && square->input(0) == d && square->input(1) == d);
      // d is read by the squaring and by the division only.
      if (!squares_d || uses(d) != 2) continue;
      const int64_t last = x->tensor_type().dims->back() && x->tensor_type().dims->back()->IsConst()
                               ? x->tensor_type().dims->back()->ConstValue()
                               : -1;
      if (last < 0 || !IsConstantVector(gamma, last) || !IsConstantVector(beta, last)) continue;
      return LayerNormMatch{x, gamma, beta, *eps};
    }
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<int> FuseGeluAndLayerNorm(Module& module) {
  Graph& g = *module.main;
  UseCounts uses(g);
  int fused = 0;
  std::vector<Node*> nodes;
  for (const auto& n : g.nodes()) nodes.push_back(n.get());
  for (Node* node : nodes) {
    if (const Value* x = MatchGelu(*node, uses)) {
      Node* gelu = ReplaceValue(g, node->output(0), "Gelu", {const_cast<Value*>(x)},
                                node->name() + "/gelu", node);
      gelu->set_opset(20);
      gelu->attrs().Set("approximate", std::string("none"));
      ++fused;
      uses.Refresh(g);
      continue;
    }
    if (auto m = MatchLayerNorm(*node, uses)) {
      Node* ln = ReplaceValue(
          g, node->output(0), "LayerNormalization",
          {const_cast<Value*>(m->x), const_cast<Value*>(m->gamma), const_cast<Value*>(m->beta)},
          node->name() + "/layernorm", node);
      ln->set_opset(17);
      ln->attrs().Set("axis", int64_t{-1});
      ln->attrs().Set("epsilon", m->epsilon);
      ++fused;
      uses.Refresh(g);
    }
  }
  if (fused > 0) g.RemoveDeadNodes();
  return fused;
}

}  // namespace nimble::compiler
