#include "compiler/transforms/pack_qkv.h"

#include <array>
#include <cstring>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "compiler/shape/shape_check.h"
#include "compiler/transforms/pattern_util.h"

namespace nimble::compiler {
namespace {

struct Projection {
  Node* node = nullptr;
  Value* x = nullptr;
  const vm::Tensor* w = nullptr;     // [K, N] f32
  const vm::Tensor* bias = nullptr;  // [N] f32, or null
};

// A GEMM of a non-constant input by a constant f32 [K, N] weight with at most a bias.
std::optional<Projection> MatchProjection(Value* v, const UseCounts& uses) {
  if (v == nullptr || uses(v) != 1 || v->producer() == nullptr) return std::nullopt;
  Node* n = v->producer();
  if (!n->domain().empty() || (n->op_type() != "MatMul" && n->op_type() != "FusedMatMul") ||
      n->num_outputs() != 1) {
    return std::nullopt;
  }
  Projection p;
  p.node = n;
  p.x = n->input(0);
  const Value* w = n->num_inputs() > 1 ? n->input(1) : nullptr;
  if (p.x == nullptr || p.x->is_constant() || w == nullptr || !w->is_constant() ||
      w->constant()->rank() != 2 || w->constant()->dtype() != vm::DType::kF32) {
    return std::nullopt;
  }
  p.w = &*w->constant();
  if (n->op_type() == "FusedMatMul") {
    if (n->attrs().GetOr<int64_t>("transB", 0) != 0 ||
        n->attrs().GetOr<double>("alpha", 1.0) != 1.0 ||
        !n->attrs().GetOr<std::string>("activation", "").empty() ||
        (n->num_inputs() > 3 && n->input(3) != nullptr)) {
      return std::nullopt;
    }
    if (n->num_inputs() > 2 && n->input(2) != nullptr) {
      const Value* b = n->input(2);
      if (!b->is_constant() || b->constant()->rank() != 1 ||
          b->constant()->dtype() != vm::DType::kF32 ||
          b->constant()->dim(0) != p.w->dim(1)) {
        return std::nullopt;
      }
      p.bias = &*b->constant();
    }
  } else if (n->num_inputs() != 2) {
    return std::nullopt;
  }
  if (!v->type().is_tensor() || !v->tensor_type().has_rank() || v->tensor_type().rank() != 3) {
    return std::nullopt;
  }
  return p;
}

}  // namespace

absl::StatusOr<int> PackQkv(Module& module) {
  Graph& g = *module.main;
  UseCounts uses(g);
  std::vector<Node*> attentions;
  for (const auto& n : g.nodes()) {
    if (n->op_type() == "Attention" && n->domain().empty()) attentions.push_back(n.get());
  }
  int packed = 0;
  for (Node* att : attentions) {
    if (att->num_inputs() < 3 || att->num_inputs() > 4 ||
        att->attrs().GetOr<int64_t>("qkv_packed", 0) != 0 ||
        att->attrs().GetOr<int64_t>("is_causal", 0) != 0 || att->num_outputs() != 1) {
      continue;
    }
    const int64_t qh = att->attrs().GetOr<int64_t>("q_num_heads", 0);
    const int64_t kvh = att->attrs().GetOr<int64_t>("kv_num_heads", 0);
    if (qh <= 0 || kvh <= 0) continue;  // 4-D form
    std::array<std::optional<Projection>, 3> p;
    bool ok = true;
    for (int i = 0; i < 3 && ok; ++i) {
      p[i] = MatchProjection(att->input(i), uses);
      ok = p[i].has_value();
    }
    if (!ok || p[0]->node == p[1]->node || p[1]->node == p[2]->node || p[0]->node == p[2]->node ||
        p[1]->x != p[0]->x || p[2]->x != p[0]->x) {
      continue;
    }
    const int64_t k = p[0]->w->dim(0);
    const int64_t nq = p[0]->w->dim(1), nk = p[1]->w->dim(1), nv = p[2]->w->dim(1);
    if (p[1]->w->dim(0) != k || p[2]->w->dim(0) != k || nq % qh != 0 ||
        nk != nv || nk * qh != nq * kvh ||
        (p[0]->bias == nullptr) != (p[1]->bias == nullptr) ||
        (p[0]->bias == nullptr) != (p[2]->bias == nullptr)) {
      continue;
    }
    const int64_t n = nq + nk + nv;
    NIMBLE_ASSIGN_OR_RETURN(vm::Tensor w, vm::Tensor::Empty(vm::DType::kF32, {k, n}));
    float* wd = w.data<float>();
    for (int64_t r = 0; r < k; ++r) {
      int64_t col = 0;
      for (int i = 0; i < 3; ++i) {
        const int64_t ni = p[i]->w->dim(1);
        std::memcpy(wd + r * n + col, p[i]->w->data<float>() + r * ni, ni * sizeof(float));
        col += ni;
      }
    }
    const std::string base = p[0]->node->name();
    Value* w_value = g.AddConstant(absl::StrCat(base, "/qkv_weight"), std::move(w),
                                   Type::Tensor(TensorType::Of(vm::DType::kF32,
                                                               {DimExpr::Const(k),
                                                                DimExpr::Const(n)})));
    Value* b_value = nullptr;
    if (p[0]->bias != nullptr) {
      NIMBLE_ASSIGN_OR_RETURN(vm::Tensor b, vm::Tensor::Empty(vm::DType::kF32, {n}));
      int64_t col = 0;
      for (int i = 0; i < 3; ++i) {
        const int64_t ni = p[i]->bias->dim(0);
        std::memcpy(b.data<float>() + col, p[i]->bias->data<float>(), ni * sizeof(float));
        col += ni;
      }
      b_value = g.AddConstant(absl::StrCat(base, "/qkv_bias"), std::move(b),
                              Type::Tensor(TensorType::Of(vm::DType::kF32, {DimExpr::Const(n)})));
    }
    const TensorType& qt = att->input(0)->tensor_type();
    Node* gemm = g.AddNode("FusedMatMul", {p[0]->x, w_value, b_value, nullptr}, 1,
                           absl::StrCat(base, "/qkv"));
    gemm->attrs().Set("transB", int64_t{0});
    gemm->attrs().Set("alpha", 1.0);
    gemm->attrs().Set("activation", std::string());
    gemm->output(0)->set_type(Type::Tensor(
        TensorType::Of(qt.dtype, {(*qt.dims)[0], (*qt.dims)[1], Dim(DimExpr::Const(n))})));
    gemm->output(0)->set_name(absl::StrCat(base, "/qkv_out"));
    for (int i = 0; i < 3; ++i) {
      NIMBLE_RETURN_IF_ERROR(MergeShapeChecks(*gemm, *p[i]->node, module.dims));
    }
    g.MoveLastNodeAfter(p[0]->node);
    for (int i = 0; i < 3; ++i) att->set_input(i, gemm->output(0));
    att->attrs().Set("qkv_packed", int64_t{1});
    ++packed;
    uses.Refresh(g);
  }
  if (packed > 0) g.RemoveDeadNodes();
  return packed;
}

}  // namespace nimble::compiler
