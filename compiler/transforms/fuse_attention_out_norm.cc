#include "compiler/transforms/fuse_attention_out_norm.h"

#include <cstdlib>
#include <optional>
#include <vector>

#include "base/status_macros.h"
#include "compiler/shape/shape_check.h"
#include "compiler/transforms/pattern_util.h"
#include "vm/kernels/kernel.h"

namespace nimble::compiler {
namespace {

constexpr int64_t kHeadSize = 64;
constexpr int64_t kMaxHeads = 12;

bool Enabled() {
  const char* v = std::getenv("NIMBLE_FUSE_ATTENTION_OUT_NORM");
  return v != nullptr && v[0] == '1';
}

bool IsHalf(const Value* v) {
  if (v == nullptr || !v->type().is_tensor()) return false;
  const vm::DType d = v->tensor_type().dtype;
  return d == vm::DType::kF16 || d == vm::DType::kBF16;
}

vm::DType DTypeOf(const Value* v) { return v->tensor_type().dtype; }

// The static dims of a tensor value, when all are known.
std::optional<std::vector<int64_t>> StaticDims(const Value* v) {
  if (v == nullptr || !v->type().is_tensor() || !v->tensor_type().dims) return std::nullopt;
  std::vector<int64_t> out;
  for (const Dim& d : *v->tensor_type().dims) {
    if (!d) return std::nullopt;
    const std::optional<int64_t> c = d->AsConst();
    out.push_back(c ? *c : -1);  // -1: symbolic
  }
  return out;
}

struct Match {
  Node* attention;
  Node* matmul;
  Node* norm;
};

// `norm` as the end of the pattern (see the header), or nullopt.
std::optional<Match> MatchBlock(Node* norm, const UseCounts& uses) {
  if (norm->op_type() != "LayerNormalization" || !norm->domain().empty()) return std::nullopt;
  if (norm->num_inputs() < 2 || norm->num_inputs() > 3 || norm->num_outputs() < 1) {
    return std::nullopt;
  }
  for (int i = 1; i < norm->num_outputs(); ++i) {
    if (uses(norm->output(i)) != 0) return std::nullopt;  // Mean / InvStdDev read
  }
  Node* mm = ProducerOf(norm->input(0), "FusedMatMul");
  if (mm == nullptr || mm->num_outputs() != 1 || uses(mm->output(0)) != 1) return std::nullopt;
  if (!mm->attrs().GetOr<std::string>("activation", "").empty() ||
      mm->attrs().GetOr<double>("alpha", 1.0) != 1.0 ||
      mm->attrs().GetOr<int64_t>("transA", 0) != 0 ||
      mm->attrs().GetOr<int64_t>("transB", 0) != 0 || mm->num_inputs() < 2 ||
      mm->num_inputs() > 4) {
    return std::nullopt;
  }
  Node* att = ProducerOf(mm->input(0), "Attention");
  if (att == nullptr || att->num_outputs() < 1 || uses(att->output(0)) != 1) return std::nullopt;
  for (int i = 1; i < att->num_outputs(); ++i) {
    if (uses(att->output(i)) != 0) return std::nullopt;
  }
  if (att->num_inputs() < 3 || att->num_inputs() > 4 ||
      att->attrs().GetOr<int64_t>("is_causal", 0) != 0 ||
      att->attrs().GetOr<double>("softcap", 0.0) != 0.0 ||
      att->attrs().GetOr<int64_t>("qk_matmul_output_mode", 0) != 0) {
    return std::nullopt;
  }
  const int64_t heads = att->attrs().GetOr<int64_t>("q_num_heads", 0);
  if (heads < 1 || heads > kMaxHeads) return std::nullopt;
  // Types: half Q, K, V, attention output, weight, bias, residual and LayerNorm input and
  // parameters; a half or f32 result.
  const Value* a = att->output(0);
  const Value* p = mm->output(0);
  if (!IsHalf(a) || !IsHalf(p) || DTypeOf(p) != DTypeOf(a)) return std::nullopt;
  const vm::DType t = DTypeOf(a);
  for (int i = 0; i < 3; ++i) {
    if (!IsHalf(att->input(i)) || DTypeOf(att->input(i)) != t) return std::nullopt;
  }
  const Value* out = norm->output(0);
  if (!out->type().is_tensor() || (DTypeOf(out) != t && DTypeOf(out) != vm::DType::kF32)) {
    return std::nullopt;
  }
  // Shapes: [batch, seq, hidden] with hidden = heads x 64; W [hidden, hidden]; bias, gamma,
  // beta constant [hidden]; residual of the output's shape.
  const std::optional<std::vector<int64_t>> ad = StaticDims(a);
  if (!ad || ad->size() != 3 || (*ad)[2] != heads * kHeadSize) return std::nullopt;
  const int64_t hidden = (*ad)[2];
  for (int i = 0; i < 3; ++i) {
    const Value* v = att->input(i);
    if (!v->tensor_type().dims || v->tensor_type().dims->size() != 3) return std::nullopt;
  }
  const Value* w = mm->input(1);
  if (w == nullptr || !w->is_constant() || DTypeOf(w) != t) return std::nullopt;
  const std::optional<std::vector<int64_t>> wd = StaticDims(w);
  if (!wd || *wd != std::vector<int64_t>{hidden, hidden}) return std::nullopt;
  if (mm->input(2) != nullptr &&
      (!IsConstantVector(mm->input(2), hidden) || DTypeOf(mm->input(2)) != t)) {
    return std::nullopt;
  }
  if (mm->input(3) != nullptr && (!SameTensorType(mm->input(3), p) || DTypeOf(mm->input(3)) != t)) {
    return std::nullopt;
  }
  const int64_t axis = norm->attrs().GetOr<int64_t>("axis", -1);
  if (axis != -1 && axis != 2) return std::nullopt;
  for (int i = 1; i < norm->num_inputs(); ++i) {
    const Value* v = norm->input(i);
    if (v == nullptr) {
      if (i == 1) return std::nullopt;  // Scale is required
      continue;
    }
    if (!IsConstantVector(v, hidden) || DTypeOf(v) != t) return std::nullopt;
  }
  return Match{att, mm, norm};
}

}  // namespace

absl::StatusOr<int> FuseAttentionOutNorm(Module& module, vm::DeviceType target) {
  if (target == vm::DeviceType::kCPU || !Enabled() ||
      !vm::KernelRegistry::Global().Has("AttentionOutNorm", target)) {
    return 0;
  }
  Graph& g = *module.main;
  std::vector<Node*> nodes;
  for (const auto& n : g.nodes()) nodes.push_back(n.get());
  UseCounts uses(g);
  int fused = 0;
  for (Node* node : nodes) {
    const std::optional<Match> m = MatchBlock(node, uses);
    if (!m) continue;
    Node* att = m->attention;
    Node* mm = m->matmul;
    Node* ln = m->norm;
    std::vector<Value*> inputs = {att->input(0), att->input(1), att->input(2),
                                  att->input(3), mm->input(1),  mm->input(2),
                                  mm->input(3),  ln->input(1),  ln->input(2)};
    Node* f = ReplaceValue(g, ln->output(0), "AttentionOutNorm", std::move(inputs),
                           ln->name() + "/attention_out_norm", ln);
    for (const auto& [name, value] : att->attrs().values()) f->attrs().Set(name, value);
    f->attrs().Set("epsilon", ln->attrs().GetOr<double>("epsilon", 1e-5));
    f->set_opset(att->opset());
    // The run-time shape checks of the replaced ops guard the fused one.
    for (const Node* n : {att, mm, ln}) {
      NIMBLE_RETURN_IF_ERROR(MergeShapeChecks(*f, *n, module.dims));
    }
    ++fused;
    uses.Refresh(g);
  }
  if (fused > 0) g.RemoveDeadNodes();
  return fused;
}

}  // namespace nimble::compiler
