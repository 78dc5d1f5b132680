// Golden IR tests of the rewriting passes: each builds the pattern an exporter emits, runs the
// pass and compares the printed IR.
#include "absl/strings/str_cat.h"
#include "base/testing/status_matchers.h"
#include "compiler/transforms/cse.h"
#include "compiler/transforms/expand_flex_attention.h"
#include "compiler/transforms/fuse_attention.h"
#include "compiler/transforms/fuse_attention_mask.h"
#include "compiler/transforms/fuse_elementwise.h"
#include "compiler/transforms/fuse_embedding.h"
#include "compiler/transforms/fuse_gelu_layernorm.h"
#include "compiler/transforms/fuse_matmul_epilogue.h"
#include "compiler/transforms/fuse_stacked_lstm.h"
#include "compiler/transforms/pack_qkv.h"
#include "gtest/gtest.h"

namespace nimble::compiler {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class FusionTest : public ::testing::Test {
 protected:
  Value* Input(const std::string& name, std::vector<Dim> dims) {
    return m_.main->AddInput(name, Type::Tensor(TensorType::Of(vm::DType::kF32, std::move(dims))));
  }
  Value* Scalar(const std::string& name, float v) {
    return m_.main->AddConstant(name, vm::Tensor::FromVector<float>(std::vector<float>{v}, {}),
                                Type::Tensor(TensorType::Static(vm::DType::kF32, {})));
  }
  Value* Vector(const std::string& name, int64_t n) {
    return m_.main->AddConstant(name,
                                vm::Tensor::FromVector<float>(std::vector<float>(n, 0.5f), {n}),
                                Type::Tensor(TensorType::Static(vm::DType::kF32, {n})));
  }
  // A node whose single output has `like`'s type.
  Value* Op(const std::string& op, std::vector<Value*> inputs, const Value* like) {
    Node* n = m_.main->AddNode(op, std::move(inputs), 1, op + std::to_string(counter_++));
    n->set_opset(17);
    n->output(0)->set_type(like->type());
    return n->output(0);
  }
  // A node with one output of `dims` (f32), and attributes set by the caller.
  Node* Typed(const std::string& op, std::vector<Value*> inputs, std::vector<Dim> dims) {
    Node* n = m_.main->AddNode(op, std::move(inputs), 1, op + std::to_string(counter_++));
    n->set_opset(17);
    n->output(0)->set_type(Type::Tensor(TensorType::Of(vm::DType::kF32, std::move(dims))));
    return n;
  }
  // An i64 [b, 1, 1, s] mask input and its Cast to f32, as BERT's exports extend the mask.
  std::pair<Value*, Value*> IntegerMaskAndCast(const DimExpr& b, const DimExpr& s) {
    const DimExpr one = DimExpr::Const(1);
    Value* mask =
        m_.main->AddInput("mask", Type::Tensor(TensorType::Of(vm::DType::kI64, {b, one, one, s})));
    return {mask, Typed("Cast", {mask}, {b, one, one, s})->output(0)};
  }
  std::string Ops() const {
    std::string ops;
    for (const auto& n : m_.main->nodes()) ops += n->op_type() + " ";
    return ops;
  }

  Module m_;
  int counter_ = 0;
};

TEST_F(FusionTest, ElementwiseChainBecomesOneProgram) {
  DimExpr seq = m_.dims.Symbol("seq");
  Value* x = Input("x", {seq, DimExpr::Const(4)});
  Value* y = Input("y", {seq, DimExpr::Const(4)});
  Value* d = Op("Sub", {x, y}, x);
  Value* s = Op("Mul", {d, Scalar("scale", 0.125f)}, x);
  Value* t = Op("Tanh", {s}, x);
  m_.main->AddOutput(t);
  NIMBLE_ASSERT_OK_AND_ASSIGN(int fused, FuseElementwise(m_));
  EXPECT_EQ(fused, 1);
  EXPECT_EQ(m_.ToString(),
            "graph main(%0:x: f32[seq, 4], %1:y: f32[seq, 4]) {\n"
            "  %6: f32[seq, 4] = FusedElementwise(%0:x, %1:y) {constants=[0.125], "
            "program=[0, 0, 0, 0, 0, 1, 1, 0, 11, 2, 0, 1, 1, 3, 0, 0, 12, 4, 2, 3, 35, 5, 4, 0, "
            "2, 0, 5, 0]}\n"
            "  return %6\n"
            "}\n");
}

// BERT's self-attention as torch.onnx.export writes it, with the Shape of the merged heads that
// feeds the final Reshape's target.
TEST_F(FusionTest, MultiHeadAttentionBecomesOneAttentionNode) {
  const DimExpr b = m_.dims.Symbol("b"), s = m_.dims.Symbol("s");
  const DimExpr h = DimExpr::Const(2), d = DimExpr::Const(4), e = DimExpr::Const(8);
  Value* q = Input("q", {b, s, e});
  Value* k = Input("k", {b, s, e});
  Value* v = Input("v", {b, s, e});
  Value* mask = Input("mask", {b, DimExpr::Const(1), DimExpr::Const(1), s});
  Value* shape4 = m_.main->AddConstant(
      "shape4", vm::Tensor::FromVector<int64_t>(std::vector<int64_t>{0, 0, 2, 4}, {4}),
      Type::Tensor(TensorType::Static(vm::DType::kI64, {4})));
  Value* shape3 = m_.main->AddConstant(
      "shape3", vm::Tensor::FromVector<int64_t>(std::vector<int64_t>{0, 0, 8}, {3}),
      Type::Tensor(TensorType::Static(vm::DType::kI64, {3})));
  auto split = [&](Value* x, std::vector<int64_t> perm, std::vector<Dim> dims) {
    Value* x4 = Typed("Reshape", {x, shape4}, {b, s, h, d})->output(0);
    Node* t = Typed("Transpose", {x4}, std::move(dims));
    t->attrs().Set("perm", std::move(perm));
    return t->output(0);
  };
  Value* qt = split(q, {0, 2, 1, 3}, {b, h, s, d});
  Value* kt = split(k, {0, 2, 3, 1}, {b, h, d, s});
  Value* vt = split(v, {0, 2, 1, 3}, {b, h, s, d});
  Value* scores = Typed("MatMul", {qt, kt}, {b, h, s, s})->output(0);
  Value* scaled = Typed("Div", {scores, Scalar("c", 2.0f)}, {b, h, s, s})->output(0);
  Value* masked = Typed("Add", {scaled, mask}, {b, h, s, s})->output(0);
  Node* softmax = Typed("Softmax", {masked}, {b, h, s, s});
  softmax->attrs().Set("axis", int64_t{-1});
  Value* y = Typed("MatMul", {softmax->output(0), vt}, {b, h, s, d})->output(0);
  Node* yt = Typed("Transpose", {y}, {b, s, h, d});
  yt->attrs().Set("perm", std::vector<int64_t>{0, 2, 1, 3});
  Node* shape = m_.main->AddNode("Shape", {yt->output(0)}, 1, "shape");
  shape->output(0)->set_type(Type::Tensor(TensorType::Static(vm::DType::kI64, {4})));
  Value* out = Typed("Reshape", {yt->output(0), shape3}, {b, s, e})->output(0);
  m_.main->AddOutput(out);
  m_.main->AddOutput(shape->output(0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(int fused, FuseAttention(m_));
  EXPECT_EQ(fused, 1);
  EXPECT_EQ(Ops(), "Reshape Shape Attention ");
  const Node* att = m_.main->outputs()[0]->producer();
  ASSERT_NE(att, nullptr);
  EXPECT_EQ(att->op_type(), "Attention");
  EXPECT_EQ(att->input(0), q);
  EXPECT_EQ(att->input(1), k);
  EXPECT_EQ(att->input(2), v);
  EXPECT_EQ(att->input(3), mask);
  EXPECT_EQ(att->attrs().GetOr<int64_t>("q_num_heads", 0), 2);
  EXPECT_DOUBLE_EQ(att->attrs().GetOr<double>("scale", 0.0), 0.5);
  // The Shape now reads V's head split (same dims), so the unfused chain is dead.
  EXPECT_EQ(shape->input(0)->producer()->op_type(), "Reshape");
}

TEST_F(FusionTest, AttentionWithAMaskThatBroadcastsOverKeysIsLeftAlone) {
  const DimExpr b = m_.dims.Symbol("b"), s = m_.dims.Symbol("s");
  const DimExpr h = DimExpr::Const(2), d = DimExpr::Const(4), e = DimExpr::Const(8);
  Value* q = Input("q", {b, s, e});
  Value* mask = Input("mask", {b, DimExpr::Const(1), s, DimExpr::Const(1)});
  Value* shape4 = m_.main->AddConstant(
      "shape4", vm::Tensor::FromVector<int64_t>(std::vector<int64_t>{0, 0, 2, 4}, {4}),
      Type::Tensor(TensorType::Static(vm::DType::kI64, {4})));
  auto split = [&](std::vector<int64_t> perm, std::vector<Dim> dims) {
    Value* x4 = Typed("Reshape", {q, shape4}, {b, s, h, d})->output(0);
    Node* t = Typed("Transpose", {x4}, std::move(dims));
    t->attrs().Set("perm", std::move(perm));
    return t->output(0);
  };
  Value* scores =
      Typed("MatMul", {split({0, 2, 1, 3}, {b, h, s, d}), split({0, 2, 3, 1}, {b, h, d, s})},
            {b, h, s, s})
          ->output(0);
  Value* masked = Typed("Add", {scores, mask}, {b, h, s, s})->output(0);
  Node* softmax = Typed("Softmax", {masked}, {b, h, s, s});
  softmax->attrs().Set("axis", int64_t{-1});
  Value* y = Typed("MatMul", {softmax->output(0), split({0, 2, 1, 3}, {b, h, s, d})}, {b, h, s, d})
                 ->output(0);
  Node* yt = Typed("Transpose", {y}, {b, s, h, d});
  yt->attrs().Set("perm", std::vector<int64_t>{0, 2, 1, 3});
  m_.main->AddOutput(Typed("Reshape", {yt->output(0), shape4}, {b, s, e})->output(0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(int fused, FuseAttention(m_));
  EXPECT_EQ(fused, 0) << "Attention pads a short mask with -inf; Add broadcasts it";
}

// GPT-2's causal attention on 4-D heads: Where(masked, -1e4, scores / c) becomes an Attention
// with the negated mask and mask_fill = -1e4 (masked scores exactly -1e4, as with the Where).
TEST_F(FusionTest, WhereMaskedAttentionBecomesAttentionWithMaskFill) {
  const DimExpr b = m_.dims.Symbol("b"), s = m_.dims.Symbol("s"), t = m_.dims.Symbol("t");
  const DimExpr h = DimExpr::Const(2), d = DimExpr::Const(4);
  Value* q = Input("q", {b, h, s, d});
  Value* k = Input("k", {b, h, t, d});
  Value* v = Input("v", {b, h, t, d});
  Value* masked =
      m_.main->AddInput("masked", Type::Tensor(TensorType::Of(vm::DType::kBool, {s, t})));
  Node* kt = Typed("Transpose", {k}, {b, h, d, t});
  kt->attrs().Set("perm", std::vector<int64_t>{0, 1, 3, 2});
  Value* scores = Typed("MatMul", {q, kt->output(0)}, {b, h, s, t})->output(0);
  Value* scaled = Typed("Div", {scores, Scalar("c", 2.0f)}, {b, h, s, t})->output(0);
  Value* w = Typed("Where", {masked, Scalar("fill", -1e4f), scaled}, {b, h, s, t})->output(0);
  Node* softmax = Typed("Softmax", {w}, {b, h, s, t});
  softmax->attrs().Set("axis", int64_t{-1});
  Value* y = Typed("MatMul", {softmax->output(0), v}, {b, h, s, d})->output(0);
  m_.main->AddOutput(y);
  NIMBLE_ASSERT_OK_AND_ASSIGN(int fused, FuseAttention(m_));
  EXPECT_EQ(fused, 1);
  EXPECT_EQ(Ops(), "Not Attention ");
  const Node* att = m_.main->outputs()[0]->producer();
  ASSERT_NE(att, nullptr);
  EXPECT_EQ(att->input(0), q);
  EXPECT_EQ(att->input(1), k);
  EXPECT_EQ(att->input(2), v);
  EXPECT_EQ(att->input(3)->producer()->op_type(), "Not");
  EXPECT_DOUBLE_EQ(att->attrs().GetOr<double>("mask_fill", 0.0), -1e4);
  EXPECT_DOUBLE_EQ(att->attrs().GetOr<double>("scale", 0.0), 0.5);
}

// BERT's extended mask, (1 - Cast(mask)) * -10000 once fuse-elementwise made it one program,
// read by two Attention nodes: both take the i64 mask with the program's affine form.
TEST_F(FusionTest, ElementwiseMaskOfAnIntegerMaskFoldsIntoAttention) {
  const DimExpr b = m_.dims.Symbol("b"), s = m_.dims.Symbol("s"), e = DimExpr::Const(8);
  auto [ids_mask, f] = IntegerMaskAndCast(b, s);
  Value* inverted = Op("Sub", {Scalar("one", 1.0f), f}, f);
  Value* additive = Op("Mul", {inverted, Scalar("big", -10000.0f)}, f);
  for (int layer = 0; layer < 2; ++layer) {
    Value* x = Input(absl::StrCat("x", layer), {b, s, e});
    Node* att = Typed("Attention", {x, x, x, additive}, {b, s, e});
    att->attrs().Set("q_num_heads", int64_t{2});
    m_.main->AddOutput(att->output(0));
  }
  NIMBLE_ASSERT_OK_AND_ASSIGN(int programs, FuseElementwise(m_));
  EXPECT_EQ(programs, 1);
  NIMBLE_ASSERT_OK_AND_ASSIGN(int fused, FuseAttentionMasks(m_));
  EXPECT_EQ(fused, 1);
  EXPECT_EQ(Ops(), "Attention Attention ");
  for (const Value* out : m_.main->outputs()) {
    const Node* att = out->producer();
    EXPECT_EQ(att->input(3), ids_mask);
    EXPECT_DOUBLE_EQ(att->attrs().GetOr<double>("mask_scale", 0.0), 10000.0);
    EXPECT_DOUBLE_EQ(att->attrs().GetOr<double>("mask_offset", 0.0), -10000.0);
  }
}

TEST_F(FusionTest, MasksThatAreNotAffineOrReadElsewhereStayElementwise) {
  const DimExpr b = m_.dims.Symbol("b"), s = m_.dims.Symbol("s"), e = DimExpr::Const(8);
  auto [ids_mask, f] = IntegerMaskAndCast(b, s);
  // x * x is not affine; (1 - x) * c is, but is also a graph output.
  Value* squared = Op("Mul", {f, f}, f);
  Value* squared_exp = Op("Exp", {squared}, f);
  Value* affine = Op("Mul", {Op("Sub", {Scalar("one", 1.0f), f}, f), Scalar("c", -5.0f)}, f);
  Value* x = Input("x", {b, s, e});
  for (Value* mask : {squared_exp, affine}) {
    Node* att = Typed("Attention", {x, x, x, mask}, {b, s, e});
    att->attrs().Set("q_num_heads", int64_t{2});
    m_.main->AddOutput(att->output(0));
  }
  m_.main->AddOutput(affine);
  NIMBLE_ASSERT_OK_AND_ASSIGN(int programs, FuseElementwise(m_));
  EXPECT_EQ(programs, 2);
  NIMBLE_ASSERT_OK_AND_ASSIGN(int fused, FuseAttentionMasks(m_));
  EXPECT_EQ(fused, 0);
  EXPECT_EQ(Ops(), "Cast FusedElementwise FusedElementwise Attention Attention ");
}

TEST_F(FusionTest, DecomposedGeluBecomesGelu) {
  Value* x = Input("x", {DimExpr::Const(2), DimExpr::Const(8)});
  Value* a = Op("Div", {x, Scalar("sqrt2", 1.4142135f)}, x);
  Value* b = Op("Erf", {a}, x);
  Value* c = Op("Add", {b, Scalar("one", 1.0f)}, x);
  Value* d = Op("Mul", {x, c}, x);
  Value* e = Op("Mul", {d, Scalar("half", 0.5f)}, x);
  m_.main->AddOutput(e);
  NIMBLE_ASSERT_OK_AND_ASSIGN(int fused, FuseGeluAndLayerNorm(m_));
  EXPECT_EQ(fused, 1);
  EXPECT_EQ(Ops(), "Gelu ");
}

TEST_F(FusionTest, DecomposedLayerNormBecomesLayerNormalization) {
  DimExpr seq = m_.dims.Symbol("seq");
  Value* x = Input("x", {seq, DimExpr::Const(8)});
  auto reduce = [&](Value* in) {
    Node* n = m_.main->AddNode("ReduceMean", {in}, 1, "mean" + std::to_string(counter_++));
    n->set_opset(17);
    n->attrs().Set("axes", std::vector<int64_t>{-1});
    n->output(0)->set_type(Type::Tensor(TensorType::Of(vm::DType::kF32, {seq, DimExpr::Const(1)})));
    return n->output(0);
  };
  Value* mean = reduce(x);
  Value* d = Op("Sub", {x, mean}, x);
  Value* p = Op("Pow", {d, Scalar("two", 2.0f)}, x);
  Value* var = reduce(p);
  Value* v = Op("Add", {var, Scalar("eps", 1e-5f)}, var);
  Value* s = Op("Sqrt", {v}, var);
  Value* n = Op("Div", {d, s}, x);
  Value* g = Op("Mul", {n, Vector("gamma", 8)}, x);
  Value* y = Op("Add", {g, Vector("beta", 8)}, x);
  m_.main->AddOutput(y);
  NIMBLE_ASSERT_OK_AND_ASSIGN(int fused, FuseGeluAndLayerNorm(m_));
  EXPECT_EQ(fused, 1);
  EXPECT_EQ(Ops(), "LayerNormalization ");
  EXPECT_THAT(m_.ToString(), HasSubstr("{axis=-1, epsilon=1e-05}"));
}

// BERT's embedding layer: word, position and token-type lookups, summed, layer-normalised.
TEST_F(FusionTest, EmbeddingLookupsSumAndLayerNormBecomeEmbedLayerNorm) {
  const DimExpr b = m_.dims.Symbol("b"), s = m_.dims.Symbol("s"), d = DimExpr::Const(8);
  auto ids = [&](const std::string& name, std::vector<Dim> dims) {
    return m_.main->AddInput(name, Type::Tensor(TensorType::Of(vm::DType::kI64, std::move(dims))));
  };
  auto table = [&](const std::string& name, int64_t vocab) {
    return m_.main->AddConstant(
        name, vm::Tensor::FromVector<float>(std::vector<float>(vocab * 8, 0.25f), {vocab, 8}),
        Type::Tensor(TensorType::Static(vm::DType::kF32, {vocab, 8})));
  };
  Value* word_ids = ids("input_ids", {b, s});
  Value* positions = ids("position_ids", {DimExpr::Const(1), s});
  Value* types = ids("token_type_ids", {b, s});
  Value* w = Typed("Gather", {table("word", 30), word_ids}, {b, s, d})->output(0);
  Value* p = Typed("Gather", {table("pos", 16), positions}, {DimExpr::Const(1), s, d})->output(0);
  Value* t = Typed("Gather", {table("type", 2), types}, {b, s, d})->output(0);
  Value* sum = Op("Add", {Op("Add", {w, p}, w), t}, w);
  Node* ln = Typed("LayerNormalization", {sum, Vector("gamma", 8), Vector("beta", 8)}, {b, s, d});
  ln->attrs().Set("epsilon", 1e-12);
  m_.main->AddOutput(ln->output(0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(int fused, FuseEmbeddings(m_));
  EXPECT_EQ(fused, 1);
  EXPECT_EQ(Ops(), "EmbedLayerNorm ");
  const std::string ir = m_.ToString();
  EXPECT_THAT(ir, HasSubstr("f32[b, s, 8] = EmbedLayerNorm(%3:word, %0:input_ids, %5:pos, "
                            "%1:position_ids, %7:type, %2:token_type_ids, %11:gamma, %12:beta) "
                            "{embeddings=3, epsilon=1e-12}"))
      << ir;
}

// Position ids that are Range(0, s, 1) Unsqueezed on axis 0 are not passed: the kernel counts
// the positions itself, and the Range (host work, an upload) goes.
TEST_F(FusionTest, PositionIdsFromRangeAreLeftToTheEmbedLayerNorm) {
  const DimExpr b = m_.dims.Symbol("b"), s = m_.dims.Symbol("s"), d = DimExpr::Const(8);
  auto i64 = [&](const std::string& name, int64_t v) {
    return m_.main->AddConstant(name, vm::Tensor::FromVector<int64_t>(std::vector<int64_t>{v}, {}),
                                Type::Tensor(TensorType::Static(vm::DType::kI64, {})));
  };
  auto table = [&](const std::string& name, int64_t vocab) {
    return m_.main->AddConstant(
        name, vm::Tensor::FromVector<float>(std::vector<float>(vocab * 8, 0.25f), {vocab, 8}),
        Type::Tensor(TensorType::Static(vm::DType::kF32, {vocab, 8})));
  };
  Value* ids =
      m_.main->AddInput("input_ids", Type::Tensor(TensorType::Of(vm::DType::kI64, {b, s})));
  Value* len = m_.main->AddInput("len", Type::Tensor(TensorType::Of(vm::DType::kI64, {})));
  Node* range = m_.main->AddNode("Range", {i64("zero", 0), len, i64("one", 1)}, 1, "range");
  range->output(0)->set_type(Type::Tensor(TensorType::Of(vm::DType::kI64, {s})));
  Node* unsqueeze = m_.main->AddNode("Unsqueeze", {range->output(0)}, 1, "unsqueeze");
  unsqueeze->set_opset(11);
  unsqueeze->attrs().Set("axes", std::vector<int64_t>{0});
  unsqueeze->output(0)->set_type(
      Type::Tensor(TensorType::Of(vm::DType::kI64, {DimExpr::Const(1), s})));
  Value* w = Typed("Gather", {table("word", 30), ids}, {b, s, d})->output(0);
  Value* p = Typed("Gather", {table("pos", 16), unsqueeze->output(0)}, {DimExpr::Const(1), s, d})
                 ->output(0);
  Node* ln = Typed("LayerNormalization", {Op("Add", {w, p}, w)}, {b, s, d});
  m_.main->AddOutput(ln->output(0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(int fused, FuseEmbeddings(m_));
  EXPECT_EQ(fused, 1);
  EXPECT_EQ(Ops(), "EmbedLayerNorm ");
  EXPECT_THAT(m_.ToString(), HasSubstr("EmbedLayerNorm(%6:word, %0:input_ids, %8:pos, _, _, _) "
                                       "{embeddings=2, epsilon=1e-05}"))
      << m_.ToString();
}

TEST_F(FusionTest, EmbeddingSumsReadElsewhereOrOfRuntimeTablesAreLeftAlone) {
  const DimExpr s = m_.dims.Symbol("s"), d = DimExpr::Const(8);
  Value* ids = m_.main->AddInput("ids", Type::Tensor(TensorType::Of(vm::DType::kI64, {s})));
  Value* runtime_table = Input("table", {DimExpr::Const(30), d});
  Value* constant_table = m_.main->AddConstant(
      "word", vm::Tensor::FromVector<float>(std::vector<float>(240, 0.25f), {30, 8}),
      Type::Tensor(TensorType::Static(vm::DType::kF32, {30, 8})));
  // A runtime table.
  Value* a = Typed("Gather", {runtime_table, ids}, {s, d})->output(0);
  m_.main->AddOutput(Typed("LayerNormalization", {a, Vector("g1", 8)}, {s, d})->output(0));
  // A sum that is also a model output.
  Value* x = Typed("Gather", {constant_table, ids}, {s, d})->output(0);
  Value* y = Typed("Gather", {constant_table, ids}, {s, d})->output(0);
  Value* sum = Op("Add", {x, y}, x);
  m_.main->AddOutput(Typed("LayerNormalization", {sum, Vector("g2", 8)}, {s, d})->output(0));
  m_.main->AddOutput(sum);
  NIMBLE_ASSERT_OK_AND_ASSIGN(int fused, FuseEmbeddings(m_));
  EXPECT_EQ(fused, 0);
  EXPECT_THAT(Ops(), Not(HasSubstr("EmbedLayerNorm")));
}

// PyTorch's nn.LSTM(num_layers=2): LSTM, Squeeze of the direction axis, LSTM.
class StackedLstmFusionTest : public FusionTest {
 protected:
  Value* Weight(const std::string& name, int64_t rows, int64_t cols) {
    return m_.main->AddConstant(
        name, vm::Tensor::FromVector<float>(std::vector<float>(rows * cols, 0.1f), {1, rows, cols}),
        Type::Tensor(TensorType::Static(vm::DType::kF32, {1, rows, cols})));
  }
  // An LSTM layer of hidden size 4 over `x` [s, b, in]; returns the node (Y, Y_h, Y_c typed).
  Node* Layer(Value* x, int64_t in, const std::string& tag) {
    const DimExpr s = m_.dims.Symbol("s"), b = m_.dims.Symbol("b"), one = DimExpr::Const(1),
                  h = DimExpr::Const(4);
    Node* n = m_.main->AddNode("LSTM",
                               {x, Weight("W" + tag, 16, in), Weight("R" + tag, 16, 4), nullptr,
                                nullptr, nullptr, nullptr},
                               3, "lstm" + tag);
    n->set_opset(14);
    n->attrs().Set("hidden_size", int64_t{4});
    n->output(0)->set_type(Type::Tensor(TensorType::Of(vm::DType::kF32, {s, one, b, h})));
    for (int i : {1, 2}) {
      n->output(i)->set_type(Type::Tensor(TensorType::Of(vm::DType::kF32, {one, b, h})));
    }
    return n;
  }
  Value* Squeeze(Value* y) {
    const DimExpr s = m_.dims.Symbol("s"), b = m_.dims.Symbol("b");
    Node* sq = Typed("Squeeze", {y}, {s, b, DimExpr::Const(4)});
    sq->set_opset(11);
    sq->attrs().Set("axes", std::vector<int64_t>{1});
    return sq->output(0);
  }
};

TEST_F(StackedLstmFusionTest, TwoLayersBecomeStackedLstm) {
  const DimExpr s = m_.dims.Symbol("s"), b = m_.dims.Symbol("b");
  Value* x = Input("x", {s, b, DimExpr::Const(3)});
  Node* l1 = Layer(x, 3, "1");
  Node* l2 = Layer(Squeeze(l1->output(0)), 4, "2");
  m_.main->AddOutput(Squeeze(l2->output(0)));
  for (Node* l : {l1, l2}) {
    m_.main->AddOutput(l->output(1));
    m_.main->AddOutput(l->output(2));
  }
  NIMBLE_ASSERT_OK_AND_ASSIGN(int fused, FuseStackedLstms(m_));
  EXPECT_EQ(fused, 1);
  EXPECT_EQ(Ops(), "StackedLSTM Squeeze ");
  const std::string ir = m_.ToString();
  EXPECT_THAT(ir, HasSubstr("= StackedLSTM(%0:x, %1:W1, %2:R1, _, _, _, %7:W2, %8:R2, _, _, _) "
                            "{hidden_size=4, hidden_size2=4}"))
      << ir;
}

TEST_F(StackedLstmFusionTest, LayersWhoseOutputIsReadElsewhereOrNotPlainAreLeftAlone) {
  const DimExpr s = m_.dims.Symbol("s"), b = m_.dims.Symbol("b");
  Value* x = Input("x", {s, b, DimExpr::Const(3)});
  // Layer 1's Y is also a model output.
  Node* l1 = Layer(x, 3, "1");
  Node* l2 = Layer(Squeeze(l1->output(0)), 4, "2");
  m_.main->AddOutput(l1->output(0));
  m_.main->AddOutput(l2->output(0));
  // A reverse upper layer.
  Node* l3 = Layer(x, 3, "3");
  Node* l4 = Layer(Squeeze(l3->output(0)), 4, "4");
  l4->attrs().Set("direction", std::string("reverse"));
  m_.main->AddOutput(l4->output(0));
  // Layer 2 starting from layer 1's final state: the fused node would read its own output.
  Node* l5 = Layer(x, 3, "5");
  Node* l6 = Layer(Squeeze(l5->output(0)), 4, "6");
  l6->set_input(5, l5->output(1));
  m_.main->AddOutput(l6->output(0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(int fused, FuseStackedLstms(m_));
  EXPECT_EQ(fused, 0);
  EXPECT_THAT(Ops(), Not(HasSubstr("StackedLSTM")));
}

TEST_F(FusionTest, MatMulBiasActivationResidualBecomeFusedMatMul) {
  DimExpr seq = m_.dims.Symbol("seq");
  Value* x = Input("x", {seq, DimExpr::Const(8)});
  Value* w =
      m_.main->AddConstant("w", vm::Tensor::FromVector<float>(std::vector<float>(64, 0.1f), {8, 8}),
                           Type::Tensor(TensorType::Static(vm::DType::kF32, {8, 8})));
  Value* mm = Op("MatMul", {x, w}, x);
  Value* biased = Op("Add", {mm, Vector("b", 8)}, x);
  Value* act = Op("Relu", {biased}, x);
  Value* res = Op("Add", {act, x}, x);
  m_.main->AddOutput(res);
  NIMBLE_ASSERT_OK_AND_ASSIGN(int fused, FuseMatMulEpilogues(m_));
  EXPECT_EQ(fused, 1);
  EXPECT_EQ(Ops(), "FusedMatMul ");
  EXPECT_THAT(m_.ToString(), HasSubstr("activation=\"relu\""));
}

// Q, K, V projections of one input (grouped KV: 2 query heads, 1 key/value head of 4).
class PackQkvTest : public FusionTest {
 protected:
  Value* Weight(const std::string& name, int64_t n, float base) {
    std::vector<float> w(8 * n);
    for (size_t i = 0; i < w.size(); ++i) w[i] = base + static_cast<float>(i);
    return m_.main->AddConstant(name, vm::Tensor::FromVector<float>(w, {8, n}),
                                Type::Tensor(TensorType::Static(vm::DType::kF32, {8, n})));
  }
  Value* Bias(const std::string& name, int64_t n, float base) {
    std::vector<float> b(n);
    for (int64_t i = 0; i < n; ++i) b[i] = base + static_cast<float>(i);
    return m_.main->AddConstant(name, vm::Tensor::FromVector<float>(b, {n}),
                                Type::Tensor(TensorType::Static(vm::DType::kF32, {n})));
  }
  Node* Projection(Value* x, int64_t n, float base, const std::string& activation = "") {
    const std::string id = absl::StrCat(counter_);
    Node* p = Typed("FusedMatMul",
                    {x, Weight(absl::StrCat("w", id), n, base), Bias(absl::StrCat("b", id), n, base),
                     nullptr},
                    {b_, s_, DimExpr::Const(n)});
    p->attrs().Set("transB", int64_t{0});
    p->attrs().Set("alpha", 1.0);
    p->attrs().Set("activation", activation);
    return p;
  }
  Node* Attend(Value* q, Value* k, Value* v) {
    Node* att = Typed("Attention", {q, k, v}, {b_, s_, DimExpr::Const(8)});
    att->set_opset(23);
    att->attrs().Set("q_num_heads", int64_t{2});
    att->attrs().Set("kv_num_heads", int64_t{1});
    m_.main->AddOutput(att->output(0));
    return att;
  }
  DimExpr b_ = m_.dims.Symbol("b"), s_ = m_.dims.Symbol("s");
};

TEST_F(PackQkvTest, ProjectionsOfOneInputBecomeOneGemmOverConcatenatedWeights) {
  Value* x = Input("x", {b_, s_, DimExpr::Const(8)});
  Node* att = Attend(Projection(x, 8, 0)->output(0), Projection(x, 4, 1000)->output(0),
                     Projection(x, 4, 2000)->output(0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(int packed, PackQkv(m_));
  EXPECT_EQ(packed, 1);
  EXPECT_EQ(Ops(), "FusedMatMul Attention ");
  EXPECT_EQ(att->attrs().GetOr<int64_t>("qkv_packed", 0), 1);
  const Value* qkv = att->input(0);
  EXPECT_EQ(att->input(1), qkv);
  EXPECT_EQ(att->input(2), qkv);
  EXPECT_EQ(TensorTypeToString(qkv->tensor_type(), m_.dims), "f32[b, s, 16]");
  const Node* gemm = qkv->producer();
  ASSERT_EQ(gemm->input(0), x);
  const vm::Tensor& w = *gemm->input(1)->constant();
  ASSERT_EQ(w.shape(), (vm::Shape{8, 16}));
  // Row r: Q's 8 columns, then K's 4, then V's 4.
  EXPECT_EQ(w.data<float>()[1 * 16 + 0], 8.0f);
  EXPECT_EQ(w.data<float>()[1 * 16 + 8], 1004.0f);
  EXPECT_EQ(w.data<float>()[1 * 16 + 15], 2007.0f);
  const vm::Tensor& bias = *gemm->input(2)->constant();
  ASSERT_EQ(bias.shape(), (vm::Shape{16}));
  EXPECT_EQ(bias.data<float>()[7], 7.0f);
  EXPECT_EQ(bias.data<float>()[8], 1000.0f);
  EXPECT_EQ(bias.data<float>()[12], 2000.0f);
}

TEST_F(PackQkvTest, ProjectionsWithAnActivationOrOfDifferentInputsAreLeftAlone) {
  Value* x = Input("x", {b_, s_, DimExpr::Const(8)});
  Value* y = Input("y", {b_, s_, DimExpr::Const(8)});
  Attend(Projection(x, 8, 0)->output(0), Projection(x, 4, 0, "relu")->output(0),
         Projection(x, 4, 0)->output(0));
  Attend(Projection(x, 8, 0)->output(0), Projection(y, 4, 0)->output(0),
         Projection(y, 4, 0)->output(0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(int packed, PackQkv(m_));
  EXPECT_EQ(packed, 0);
}

TEST_F(FusionTest, MatMulWithRuntimeWeightIsLeftAlone) {
  Value* x = Input("x", {DimExpr::Const(2), DimExpr::Const(8)});
  Value* w = Input("w", {DimExpr::Const(8), DimExpr::Const(8)});
  Value* mm = Op("MatMul", {x, w}, x);
  m_.main->AddOutput(Op("Add", {mm, Vector("b", 8)}, x));
  NIMBLE_ASSERT_OK_AND_ASSIGN(int fused, FuseMatMulEpilogues(m_));
  EXPECT_EQ(fused, 0);
  EXPECT_THAT(Ops(), Not(HasSubstr("Fused")));
}

TEST_F(FusionTest, CseMergesRepeatedShapeComputations) {
  Value* x = Input("x", {DimExpr::Const(2), DimExpr::Const(8)});
  Value* a = Op("Relu", {x}, x);
  Value* b = Op("Relu", {x}, x);
  m_.main->AddOutput(Op("Add", {a, b}, x));
  NIMBLE_ASSERT_OK_AND_ASSIGN(int merged, EliminateCommonSubexpressions(m_));
  EXPECT_EQ(merged, 1);
  EXPECT_EQ(Ops(), "Relu Add ");
}

// FlexAttention's score_mod / prob_mod graphs are inlined between the kernel's two stages and a
// Softmax; the graphs' constants move along, captured values are read directly.
TEST_F(FusionTest, FlexAttentionGraphsAreInlined) {
  const std::vector<Dim> dims = {DimExpr::Const(1), DimExpr::Const(2), DimExpr::Const(3),
                                 DimExpr::Const(4)};
  Value* q = Input("q", dims);
  Value* k = Input("k", dims);
  Value* v = Input("v", dims);
  Value* outer = Scalar("outer", 2.0f);
  Node* flex = m_.main->AddNode("FlexAttention", {q, k, v}, 1, "flex");
  flex->set_domain("ai.onnx.preview");
  flex->set_opset(1);
  flex->attrs().Set("scale", 0.5);
  flex->output(0)->set_name("y");
  auto sub = [&](const std::string& name, const std::string& op, Value* operand) {
    auto g = std::make_unique<Graph>(name, m_.main.get());
    Value* in = g->AddInput("x", Type());
    if (operand == nullptr) {
      operand = g->AddConstant("c", vm::Tensor::FromVector<float>(std::vector<float>{1.0f}, {}),
                               Type::Tensor(TensorType::Static(vm::DType::kF32, {})));
    } else {
      g->AddCapture(operand);
    }
    Node* n = g->AddNode(op, {in, operand}, 1, op);
    n->set_opset(17);
    g->AddOutput(n->output(0));
    flex->subgraphs()[name] = std::move(g);
  };
  sub("score_mod", "Add", nullptr);
  sub("prob_mod", "Mul", outer);
  m_.main->AddOutput(flex->output(0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(int expanded, ExpandFlexAttention(m_));
  EXPECT_EQ(expanded, 1);
  EXPECT_EQ(Ops(), "FlexAttention Add Softmax Mul FlexAttention ");
  const auto& nodes = m_.main->nodes();
  EXPECT_EQ(nodes[0]->attrs().GetOr<int64_t>("flex_stage", 0), 1);
  EXPECT_EQ(nodes[0]->attrs().GetOr<double>("scale", 0.0), 0.5);
  EXPECT_TRUE(nodes[1]->input(1)->is_constant());
  EXPECT_EQ(nodes[3]->input(1), outer);
  EXPECT_EQ(nodes[4]->attrs().GetOr<int64_t>("flex_stage", 0), 2);
  EXPECT_EQ(nodes[4]->input(1), v);
  EXPECT_EQ(m_.main->outputs()[0], nodes[4]->output(0));
  EXPECT_EQ(m_.main->outputs()[0]->name(), "y");
}

TEST_F(FusionTest, FlexAttentionRefusesUnknownGraphs) {
  const std::vector<Dim> dims = {DimExpr::Const(1), DimExpr::Const(1), DimExpr::Const(1),
                                 DimExpr::Const(1)};
  Value* q = Input("q", dims);
  Node* flex = m_.main->AddNode("FlexAttention", {q, q, q}, 1, "flex");
  flex->set_domain("ai.onnx.preview");
  flex->subgraphs()["mask_mod"] = std::make_unique<Graph>("mask_mod", m_.main.get());
  m_.main->AddOutput(flex->output(0));
  EXPECT_THAT(ExpandFlexAttention(m_),
              ::nimble::testing::StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("mask_mod")));
}

}  // namespace
}  // namespace nimble::compiler
