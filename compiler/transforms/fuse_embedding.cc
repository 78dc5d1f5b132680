#include "compiler/transforms/fuse_embedding.h"

#include <vector>

#include "base/status_macros.h"
#include "compiler/shape/shape_check.h"
#include "compiler/transforms/pattern_util.h"

namespace nimble::compiler {
namespace {

// A lookup: Gather(table, ids) on axis 0 of a constant f32 [vocab, D] table with integer ids.
bool IsLookup(const Node* n) {
  if (n == nullptr || n->num_inputs() != 2 || n->num_outputs() != 1) return false;
  if (n->attrs().GetOr<int64_t>("axis", 0) != 0) return false;
  const Value* table = n->input(0);
  const Value* ids = n->input(1);
  if (!table->is_constant() || !IsF32(table) || table->constant()->rank() != 2) return false;
  if (ids == nullptr || !ids->type().is_tensor()) return false;
  const vm::DType d = ids->tensor_type().dtype;
  return d == vm::DType::kI64 || d == vm::DType::kI32;
}

// Collects the lookups of a sum tree rooted at `v` (Adds read only by their parent, lookups
// read only by the sum), and the Adds into `adds`; false when any leaf is something else.
bool CollectLookups(const Value* v, const UseCounts& uses, std::vector<const Node*>& lookups,
                    std::vector<const Node*>& adds) {
  if (uses(v) != 1) return false;
  if (const Node* gather = ProducerOf(v, "Gather"); IsLookup(gather)) {
    lookups.push_back(gather);
    return static_cast<int>(lookups.size()) <= kMaxFusedEmbeddings;
  }
  const Node* add = ProducerOf(v, "Add");
  if (add == nullptr || add->num_inputs() != 2) return false;
  adds.push_back(add);
  return CollectLookups(add->input(0), uses, lookups, adds) &&
         CollectLookups(add->input(1), uses, lookups, adds);
}

// Whether `ids` are the positions 0 .. n-1 along the last of `rank` leading dims whose last is
// `n`: Range(0, n, 1), or that Unsqueezed on axis 0 (BERT's position_ids).
bool IsPositions(const Value* ids, const TensorType& out) {
  const Value* r = ids;
  if (const Node* unsqueeze = ProducerOf(ids, "Unsqueeze")) {
    auto axes = IntsFromAttrOrInput(*unsqueeze, "axes", 1);
    if (!axes || *axes != std::vector<int64_t>{0}) return false;
    r = unsqueeze->input(0);
  }
  const Node* range = ProducerOf(r, "Range");
  if (range == nullptr || range->num_inputs() != 3) return false;
  const std::optional<double> start = ScalarConstant(range->input(0));
  const std::optional<double> delta = ScalarConstant(range->input(2));
  if (!start || *start != 0 || !delta || *delta != 1) return false;
  if (!r->type().is_tensor() || !r->tensor_type().has_rank() || r->tensor_type().rank() != 1) {
    return false;
  }
  const Dim& n = (*r->tensor_type().dims)[0];
  const int rank = out.rank();
  return n.has_value() && rank >= 2 && (*out.dims)[rank - 2] == n;
}

struct Match {
  std::vector<const Node*> lookups;
  std::vector<bool> positions;  // per lookup: its ids are IsPositions (not passed)
  std::vector<const Node*> adds;
  Value* gamma = nullptr;
  Value* beta = nullptr;
  double epsilon = 1e-5;
};

std::optional<Match> MatchEmbedding(const Node& ln, const UseCounts& uses) {
  if (ln.op_type() != "LayerNormalization" || !ln.domain().empty() || ln.num_inputs() < 1) {
    return std::nullopt;
  }
  for (int i = 1; i < ln.num_outputs(); ++i) {
    if (uses(ln.output(i)) != 0) return std::nullopt;  // Mean / InvStdDev are read
  }
  const Value* x = ln.input(0);
  if (!IsF32(x) || !IsF32(ln.output(0)) || !x->tensor_type().has_rank()) return std::nullopt;
  const int rank = x->tensor_type().rank();
  const int64_t axis = ln.attrs().GetOr<int64_t>("axis", -1);
  if (rank < 1 || (axis != -1 && axis != rank - 1)) return std::nullopt;
  Match m;
  // A lone lookup is read by the norm alone; a sum's leaves by the sum.
  if (!CollectLookups(x, uses, m.lookups, m.adds)) return std::nullopt;
  const Value* first = m.lookups[0]->input(0);
  const int64_t cols = first->constant()->dim(1);
  for (const Node* g : m.lookups) {
    if (g->input(0)->constant()->dim(1) != cols) return std::nullopt;
  }
  for (int k = 1; k <= 2; ++k) {
    Value* p = ln.input(k);
    if (p == nullptr) continue;
    if (!IsF32(p) || !IsConstantVector(p, cols)) return std::nullopt;
    (k == 1 ? m.gamma : m.beta) = p;
  }
  m.epsilon = ln.attrs().GetOr<double>("epsilon", 1e-5);
  bool any_ids = false;
  for (const Node* g : m.lookups) {
    m.positions.push_back(IsPositions(g->input(1), x->tensor_type()));
    any_ids = any_ids || !m.positions.back();
  }
  if (!any_ids) m.positions.assign(m.lookups.size(), false);  // the output's shape needs ids
  return m;
}

}  // namespace

absl::StatusOr<int> FuseEmbeddings(Module& module) {
  Graph& g = *module.main;
  UseCounts uses(g);
  int fused = 0;
  std::vector<Node*> nodes;
  for (const auto& n : g.nodes()) nodes.push_back(n.get());
  for (Node* node : nodes) {
    std::optional<Match> m = MatchEmbedding(*node, uses);
    if (!m) continue;
    std::vector<Value*> inputs;
    for (size_t k = 0; k < m->lookups.size(); ++k) {
      inputs.push_back(m->lookups[k]->input(0));
      inputs.push_back(m->positions[k] ? nullptr : m->lookups[k]->input(1));
    }
    inputs.push_back(m->gamma);
    inputs.push_back(m->beta);
    Node* fused_node =
        ReplaceValue(g, node->output(0), "EmbedLayerNorm", inputs, node->name() + "/embed", node);
    fused_node->attrs().Set("embeddings", static_cast<int64_t>(m->lookups.size()));
    fused_node->attrs().Set("epsilon", m->epsilon);
    // The run-time shape checks of the replaced ops guard the fused one.
    NIMBLE_RETURN_IF_ERROR(MergeShapeChecks(*fused_node, *node, module.dims));
    for (const Node* n : m->adds)
      NIMBLE_RETURN_IF_ERROR(MergeShapeChecks(*fused_node, *n, module.dims));
    for (const Node* n : m->lookups) {
      NIMBLE_RETURN_IF_ERROR(MergeShapeChecks(*fused_node, *n, module.dims));
    }
    ++fused;
    uses.Refresh(g);
  }
  if (fused > 0) g.RemoveDeadNodes();
  return fused;
}

}  // namespace nimble::compiler
