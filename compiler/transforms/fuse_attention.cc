#include "compiler/transforms/fuse_attention.h"

#include <optional>
#include <vector>

#include "compiler/transforms/pattern_util.h"

namespace nimble::compiler {
namespace {

std::optional<int64_t> ConstDim(const Dim& d) {
  if (d && d->IsConst()) return d->ConstValue();
  return std::nullopt;
}

bool HasPerm(const Node& transpose, const std::vector<int64_t>& perm) {
  auto p = transpose.attrs().Get<std::vector<int64_t>>("perm");
  return p.ok() && *p == perm;
}

// The dims of a tensor value of known rank `rank`, else null.
const std::vector<Dim>* DimsOf(const Value* v, int rank) {
  if (v == nullptr || !v->type().is_tensor()) return nullptr;
  const TensorType& t = v->tensor_type();
  if (!t.dims || t.rank() != rank) return nullptr;
  return &*t.dims;
}

struct Heads {
  Value* x = nullptr;  // [b, s, H * D]
  int64_t heads = 0;
  int64_t dim = 0;
};

// v = Transpose(Reshape(x [b, s, H*D] -> [b, s, H, D]), perm).
std::optional<Heads> MatchSplitHeads(const Value* v, const std::vector<int64_t>& perm) {
  const Node* t = ProducerOf(v, "Transpose");
  if (t == nullptr || !HasPerm(*t, perm)) return std::nullopt;
  const Node* r = ProducerOf(t->input(0), "Reshape");
  if (r == nullptr) return std::nullopt;
  const std::vector<Dim>* in = DimsOf(r->input(0), 3);
  const std::vector<Dim>* out = DimsOf(r->output(0), 4);
  if (in == nullptr || out == nullptr) return std::nullopt;
  const auto h = ConstDim((*out)[2]), d = ConstDim((*out)[3]), e = ConstDim((*in)[2]);
  if (!h || !d || !e || *h * *d != *e || (*in)[0] != (*out)[0] || (*in)[1] != (*out)[1] ||
      !(*in)[0] || !(*in)[1]) {
    return std::nullopt;
  }
  return Heads{r->input(0), *h, *d};
}

struct Match {
  Heads q, k, v;
  Value* mask = nullptr;
  double scale = 1.0;
  // Shape nodes reading the head-merged output before its Reshape (exporters take its shape
  // for the Reshape target): they read v4 instead, which has the same dims.
  std::vector<Node*> shape_users;
  Value* v4 = nullptr;
};

// Shape nodes reading `v`.
std::vector<Node*> ShapeUsers(const Graph& g, const Value* v) {
  std::vector<Node*> out;
  for (const auto& n : g.nodes()) {
    if (n->op_type() == "Shape" && n->domain().empty() && n->input(0) == v) out.push_back(n.get());
  }
  return out;
}

// `root` = Reshape(Transpose(MatMul(Softmax(Add(Scale(MatMul(qt, kt)), mask)), vt))).
std::optional<Match> MatchAttention(const Graph& g, const Node& root, const UseCounts& uses) {
  if (root.op_type() != "Reshape" || !root.domain().empty()) return std::nullopt;
  const std::vector<Dim>* out = DimsOf(root.output(0), 3);
  const Value* yt = root.input(0);
  const Node* t = ProducerOf(yt, "Transpose");
  if (out == nullptr || t == nullptr || !HasPerm(*t, {0, 2, 1, 3})) return std::nullopt;
  std::vector<Node*> shape_users;
  if (uses(yt) != 1) {
    shape_users = ShapeUsers(g, yt);
    if (uses(yt) != 1 + static_cast<int>(shape_users.size())) return std::nullopt;
  }
  const Value* y = t->input(0);
  const Node* pv = ProducerOf(y, "MatMul");
  if (pv == nullptr || uses(y) != 1) return std::nullopt;
  const Value* p = pv->input(0);
  const Node* softmax = ProducerOf(p, "Softmax");
  if (softmax == nullptr || uses(p) != 1) return std::nullopt;
  const int64_t axis = softmax->attrs().GetOr<int64_t>("axis", softmax->opset() < 13 ? 1 : -1);
  if (axis != -1 && axis != 3) return std::nullopt;
  Match m;
  const Value* a = softmax->input(0);
  if (uses(a) != 1) return std::nullopt;
  const Value* scaled = a;
  if (const Node* add = ProducerOf(a, "Add")) {
    // The operand produced by the scale/MatMul chain is the scores; the other is the mask.
    for (int i = 0; i < 2; ++i) {
      const Value* s = add->input(i);
      if (ProducerOf(s, "Div") || ProducerOf(s, "Mul") || ProducerOf(s, "MatMul")) {
        scaled = s;
        m.mask = add->input(1 - i);
        break;
      }
    }
    if (m.mask == nullptr || uses(scaled) != 1) return std::nullopt;
  }
  const Value* scores = scaled;
  if (const Node* div = ProducerOf(scaled, "Div")) {
    const std::optional<double> c = ScalarConstant(div->input(1));
    if (!c || *c == 0) return std::nullopt;
    m.scale = 1.0 / *c;
    scores = div->input(0);
  } else if (const Node* mul = ProducerOf(scaled, "Mul")) {
    for (int i = 0; i < 2 && scores == scaled; ++i) {
      if (std::optional<double> c = ScalarConstant(mul->input(i))) {
        m.scale = *c;
        scores = mul->input(1 - i);
      }
    }
    if (scores == scaled) return std::nullopt;
  }
  const Node* qk = ProducerOf(scores, "MatMul");
  if (qk == nullptr || (scores != scaled && uses(scores) != 1)) return std::nullopt;
  auto q = MatchSplitHeads(qk->input(0), {0, 2, 1, 3});
  auto k = MatchSplitHeads(qk->input(1), {0, 2, 3, 1});
  auto v = MatchSplitHeads(pv->input(1), {0, 2, 1, 3});
  if (!q || !k || !v || q->heads != k->heads || k->heads != v->heads || q->dim != k->dim) {
    return std::nullopt;
  }
  m.q = *q, m.k = *k, m.v = *v;
  m.shape_users = std::move(shape_users);
  m.v4 = ProducerOf(pv->input(1), "Transpose")->input(0);
  if (!m.shape_users.empty() && !SameTensorType(m.v4, yt)) return std::nullopt;
  // Shapes: batch and sequences line up, the output is [b, s, H * Dv], dtypes agree.
  const std::vector<Dim>* qd = DimsOf(q->x, 3);
  const std::vector<Dim>* kd = DimsOf(k->x, 3);
  const std::vector<Dim>* vd = DimsOf(v->x, 3);
  const vm::DType dtype = q->x->tensor_type().dtype;
  if ((dtype != vm::DType::kF32 && dtype != vm::DType::kF16) ||
      k->x->tensor_type().dtype != dtype || v->x->tensor_type().dtype != dtype ||
      (*kd)[0] != (*qd)[0] || (*vd)[0] != (*qd)[0] || (*vd)[1] != (*kd)[1] ||
      (*out)[0] != (*qd)[0] || (*out)[1] != (*qd)[1] ||
      ConstDim((*out)[2]) != std::optional<int64_t>(v->heads * v->dim) ||
      root.output(0)->tensor_type().dtype != dtype) {
    return std::nullopt;
  }
  if (m.mask != nullptr) {
    if (!m.mask->type().is_tensor() || m.mask->tensor_type().dtype != dtype) return std::nullopt;
    const TensorType& mt = m.mask->tensor_type();
    if (!mt.dims || mt.rank() < 2 || mt.rank() > 4 || (*mt.dims)[mt.rank() - 1] != (*kd)[1]) {
      return std::nullopt;
    }
  }
  return m;
}

// Decoder attention on 4-D heads with a masking Where (GPT-2 as exported, keys and values
// already concatenated with the cache):
//   %s = MatMul(%q4, Transpose(%k4, perm=[0,1,3,2]))  %d = Div(%s, c)
//   %w = Where(%masked, fill, %d)  %p = Softmax(%w, -1)  %y = MatMul(%p, %v4)
// becomes %y = Attention(%q4, %k4, %v4, Not(%masked)) {mask_fill=fill}: masked scores become
// exactly `fill`, as with the Where.
struct WhereMatch {
  Value* q = nullptr;
  Value* k = nullptr;
  Value* v = nullptr;
  Value* masked = nullptr;  // bool, true = masked
  double fill = 0;
  double scale = 1.0;
};

std::optional<WhereMatch> MatchWhereAttention(const Node& pv, const UseCounts& uses) {
  if (pv.op_type() != "MatMul" || !pv.domain().empty()) return std::nullopt;
  const Value* p = pv.input(0);
  const Node* softmax = ProducerOf(p, "Softmax");
  if (softmax == nullptr || uses(p) != 1) return std::nullopt;
  const int64_t axis = softmax->attrs().GetOr<int64_t>("axis", softmax->opset() < 13 ? 1 : -1);
  if (axis != -1 && axis != 3) return std::nullopt;
  const Value* w = softmax->input(0);
  const Node* where = ProducerOf(w, "Where");
  if (where == nullptr || uses(w) != 1) return std::nullopt;
  WhereMatch m;
  const std::optional<double> fill = ScalarConstant(where->input(1));
  if (!fill || !where->input(0)->type().is_tensor() ||
      where->input(0)->tensor_type().dtype != vm::DType::kBool) {
    return std::nullopt;
  }
  m.fill = *fill;
  m.masked = where->input(0);
  const Value* scaled = where->input(2);
  if (uses(scaled) != 1) return std::nullopt;
  const Value* scores = scaled;
  if (const Node* div = ProducerOf(scaled, "Div")) {
    const std::optional<double> c = ScalarConstant(div->input(1));
    if (!c || *c == 0) return std::nullopt;
    m.scale = 1.0 / *c;
    scores = div->input(0);
  }
  const Node* qk = ProducerOf(scores, "MatMul");
  if (qk == nullptr || (scores != scaled && uses(scores) != 1)) return std::nullopt;
  const Node* kt = ProducerOf(qk->input(1), "Transpose");
  if (kt == nullptr || !HasPerm(*kt, {0, 1, 3, 2}) || uses(qk->input(1)) != 1) return std::nullopt;
  m.q = qk->input(0), m.k = kt->input(0), m.v = pv.input(1);
  const std::vector<Dim>* qd = DimsOf(m.q, 4);
  const std::vector<Dim>* kd = DimsOf(m.k, 4);
  const std::vector<Dim>* vd = DimsOf(m.v, 4);
  const std::vector<Dim>* md = DimsOf(m.masked, 2);
  if (qd == nullptr || kd == nullptr || vd == nullptr || md == nullptr) return std::nullopt;
  const vm::DType dtype = m.q->tensor_type().dtype;
  if (dtype != vm::DType::kF32 || m.k->tensor_type().dtype != dtype ||
      m.v->tensor_type().dtype != dtype || !(*qd)[0] || (*kd)[0] != (*qd)[0] ||
      (*vd)[0] != (*qd)[0] || !(*qd)[1] || (*kd)[1] != (*qd)[1] || (*vd)[1] != (*qd)[1] ||
      (*kd)[3] != (*qd)[3] || (*vd)[2] != (*kd)[2] || !(*kd)[2] || (*md)[0] != (*qd)[2] ||
      (*md)[1] != (*kd)[2]) {
    return std::nullopt;
  }
  return m;
}

}  // namespace

absl::StatusOr<int> FuseAttention(Module& module) {
  Graph& g = *module.main;
  UseCounts uses(g);
  int fused = 0;
  std::vector<Node*> nodes;
  for (const auto& n : g.nodes()) nodes.push_back(n.get());
  for (Node* node : nodes) {
    if (std::optional<WhereMatch> c = MatchWhereAttention(*node, uses)) {
      Node* attend = g.AddNode("Not", {c->masked}, 1, node->name() + "/attend");
      attend->set_opset(1);
      attend->output(0)->set_type(c->masked->type());
      g.MoveLastNodeAfter(node);
      Node* att = g.AddNode("Attention", {c->q, c->k, c->v, attend->output(0)}, 1,
                            node->name() + "/attention");
      att->set_opset(23);
      att->attrs().Set("scale", c->scale);
      att->attrs().Set("mask_fill", c->fill);
      att->output(0)->set_type(node->output(0)->type());
      att->output(0)->set_name(node->output(0)->name());
      g.MoveLastNodeAfter(attend);
      g.ReplaceAllUsesWith(node->output(0), att->output(0));
      ++fused;
      uses.Refresh(g);
      continue;
    }
    std::optional<Match> m = MatchAttention(g, *node, uses);
    if (!m) continue;
    std::vector<Value*> inputs = {m->q.x, m->k.x, m->v.x};
    if (m->mask != nullptr) inputs.push_back(m->mask);
    Node* att = g.AddNode("Attention", inputs, 1, node->name() + "/attention");
    att->set_opset(23);
    att->attrs().Set("q_num_heads", m->q.heads);
    att->attrs().Set("kv_num_heads", m->k.heads);
    att->attrs().Set("scale", m->scale);
    att->output(0)->set_type(node->output(0)->type());
    att->output(0)->set_name(node->output(0)->name());
    g.MoveLastNodeAfter(node);
    g.ReplaceAllUsesWith(node->output(0), att->output(0));
    for (Node* shape : m->shape_users) shape->set_input(0, m->v4);
    ++fused;
    uses.Refresh(g);
  }
  if (fused > 0) g.RemoveDeadNodes();
  return fused;
}

}  // namespace nimble::compiler
