#include "compiler/transforms/type_inference.h"

#include <algorithm>
#include <string>
#include <vector>

#include "base/testing/status_matchers.h"
#include "compiler/shape/shape_check.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nimble::compiler {
namespace {

using ::nimble::testing::IsOk;
using ::nimble::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class TypeInferenceTest : public ::testing::Test {
 protected:
  TypeInferenceTest() { m_.opsets[""] = 17; }

  // A dim_param-like symbol; `positive` gives it bounds [1, inf).
  DimExpr Sym(const std::string& name, bool positive = false) {
    return m_.dims.Symbol(name, DimBounds{positive ? 1 : 0, INT64_MAX});
  }
  Value* Input(const std::string& name, vm::DType dtype, std::vector<Dim> dims) {
    return g_.AddInput(name, Type::Tensor(TensorType::Of(dtype, std::move(dims))));
  }
  Value* F32(const std::string& name, std::vector<Dim> dims) {
    return Input(name, vm::DType::kF32, std::move(dims));
  }
  Value* I64(const std::vector<int64_t>& values, const std::string& name = "") {
    const std::vector<int64_t> shape{static_cast<int64_t>(values.size())};
    return g_.AddConstant(name, vm::Tensor::FromVector<int64_t>(values, shape),
                          Type::Tensor(TensorType::Static(vm::DType::kI64, shape)));
  }
  Value* Scalar(int64_t v) {
    return g_.AddConstant("", vm::Tensor::Scalar(v),
                          Type::Tensor(TensorType::Static(vm::DType::kI64, {})));
  }
  Node* Op(const std::string& op, std::vector<Value*> inputs, const std::string& name = "",
           int outputs = 1) {
    return g_.AddNode(op, std::move(inputs), outputs, name);
  }
  Value* Out(const std::string& op, std::vector<Value*> inputs) {
    return Op(op, std::move(inputs))->output(0);
  }
  std::string T(const Value* v) const { return TypeToString(v->type(), m_.dims); }
  std::string D(const DimExpr& e) const { return m_.dims.ToString(e); }
  std::vector<std::string> SymValue(const Value* v) const {
    std::vector<std::string> out;
    if (v->symbolic_value()) {
      for (const DimExpr& e : *v->symbolic_value()) out.push_back(D(e));
    }
    return out;
  }
  static std::string Mode(const Node* n) {
    return n->attrs().GetOr<std::string>(kShapeModeAttr, "");
  }
  static std::vector<std::string> Checks(const Node* n) {
    return n->attrs().GetOr<std::vector<std::string>>(kChecksAttr, {});
  }

  Module m_;
  Graph& g_ = *m_.main;
};

// ---- The cases of the brief ---------------------------------------------------------------------

TEST_F(TypeInferenceTest, BroadcastsBiasOverBatchAndSequence) {
  Value* x = F32("x", {Sym("batch"), Sym("seq"), DimExpr::Const(768)});
  Value* b = F32("b", {DimExpr::Const(768)});
  Node* add = Op("Add", {x, b}, "add");
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(add->output(0)), "f32[batch, seq, 768]");
  EXPECT_TRUE(Checks(add).empty());
  EXPECT_EQ(Mode(add), "");
}

TEST_F(TypeInferenceTest, MatMulWithBatchDims) {
  Value* x = F32("x", {Sym("b"), Sym("s"), DimExpr::Const(768)});
  Value* w = F32("w", {DimExpr::Const(768), DimExpr::Const(3072)});
  Node* mm = Op("MatMul", {x, w}, "mm");
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(mm->output(0)), "f32[b, s, 3072]");
  EXPECT_TRUE(Checks(mm).empty());
}

TEST_F(TypeInferenceTest, MatMulNumpyVectorRules) {
  Value* v = F32("v", {DimExpr::Const(4)});
  Value* a = F32("a", {Sym("b"), DimExpr::Const(3), DimExpr::Const(4)});
  Value* w = F32("w", {DimExpr::Const(4), DimExpr::Const(5)});
  Value* av = Out("MatMul", {a, v});  // [b, 3, 4] x [4] -> [b, 3]
  Value* vw = Out("MatMul", {v, w});  // [4] x [4, 5] -> [5]
  Value* vv = Out("MatMul", {v, v});  // [4] x [4] -> []
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(av), "f32[b, 3]");
  EXPECT_EQ(T(vw), "f32[5]");
  EXPECT_EQ(T(vv), "f32[]");
}

TEST_F(TypeInferenceTest, BertReshapeFromShapeGatherUnsqueezeConcat) {
  Value* x = F32("x", {Sym("batch"), Sym("seq"), DimExpr::Const(768)});
  Value* shape = Out("Shape", {x});
  Value* d0 = Out("Gather", {shape, Scalar(0)});
  Value* d1 = Out("Gather", {shape, Scalar(1)});
  Value* u0 = Out("Unsqueeze", {d0, I64({0}, "axes")});
  Value* u1 = Out("Unsqueeze", {d1, I64({0}, "axes")});
  Node* concat = Op("Concat", {u0, u1, I64({12, 64}, "heads")});
  concat->attrs().Set("axis", int64_t{0});
  Node* reshape = Op("Reshape", {x, concat->output(0)}, "reshape");
  g_.AddOutput(reshape->output(0));
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(reshape->output(0)), "f32[batch, seq, 12, 64]");
  EXPECT_THAT(SymValue(concat->output(0)), ElementsAre("batch", "seq", "12", "64"));
  EXPECT_EQ(m_.ToString(),
            "graph main(%0:x: f32[batch, seq, 768]) {\n"
            "  %2: i64[] = constant\n"
            "  %4: i64[] = constant\n"
            "  %6:axes: i64[1] = constant\n"
            "  %8:axes: i64[1] = constant\n"
            "  %10:heads: i64[2] = constant\n"
            "  %1: i64[3] = Shape(%0:x)\n"
            "  %3: i64[] = Gather(%1, %2)\n"
            "  %5: i64[] = Gather(%1, %4)\n"
            "  %7: i64[1] = Unsqueeze(%3, %6:axes)\n"
            "  %9: i64[1] = Unsqueeze(%5, %8:axes)\n"
            "  %11: i64[4] = Concat(%7, %9, %10:heads) {axis=0}\n"
            "  %12: f32[batch, seq, 12, 64] = Reshape(%0:x, %11)\n"
            "  return %12\n"
            "}\n");
}

TEST_F(TypeInferenceTest, ReshapeResolvesMinusOneSymbolically) {
  Value* x = F32("x", {Sym("b"), Sym("s"), DimExpr::Const(768)});
  Node* flat = Op("Reshape", {x, I64({-1, 768})});
  // 0 copies the input dim; -1 is (b*s*768) / (b*12*64) = s by exact polynomial division.
  Node* heads = Op("Reshape", {x, I64({0, -1, 12, 64})});
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(flat->output(0)), "f32[b*s, 768]");
  EXPECT_EQ(T(heads->output(0)), "f32[b, s, 12, 64]");
  EXPECT_TRUE(Checks(flat).empty());
  EXPECT_EQ(Mode(flat), "");
}

TEST_F(TypeInferenceTest, ReshapeWithIndivisibleMinusOneRecordsCheck) {
  Value* x = F32("x", {Sym("n"), DimExpr::Const(6)});
  Node* r = Op("Reshape", {x, I64({-1, 4})}, "r");
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(r->output(0)), "f32[floordiv(6*n, 4), 4]");
  EXPECT_THAT(Checks(r), ElementsAre(HasSubstr("mod(6*n, 4) == 0")));
}

TEST_F(TypeInferenceTest, ReshapeCountMismatchIsAnError) {
  Value* x = F32("x", {DimExpr::Const(2), DimExpr::Const(3)});
  Op("Reshape", {x, I64({4, 2})}, "r");
  EXPECT_THAT(InferTypes(m_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("node 'r' (Reshape"), HasSubstr("8 and 6 must be equal"))));
}

TEST_F(TypeInferenceTest, SliceWithSymbolicEnd) {
  Value* x = F32("x", {Sym("batch"), Sym("seq", /*positive=*/true), DimExpr::Const(768)});
  Value* seq = Out("Gather", {Out("Shape", {x}), I64({1})});
  Value* end = Out("Sub", {seq, I64({1})});
  // x[:, 0:seq-1]: 0 <= seq - 1 <= seq, so the end stays symbolic.
  Node* slice = Op("Slice", {x, I64({0}), end, I64({1})}, "slice");
  // x[:, 2:len] with len of another tensor: clamped with min.
  Value* y = F32("y", {Sym("len", true)});
  Value* len = Out("Shape", {y});
  Node* clamp = Op("Slice", {x, I64({2}), len, I64({1})}, "clamp");
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_THAT(SymValue(end), ElementsAre("seq - 1"));
  EXPECT_EQ(T(slice->output(0)), "f32[batch, seq - 1, 768]");
  EXPECT_EQ(Mode(slice), "");
  EXPECT_EQ(T(clamp->output(0)), "f32[batch, max(0, -min(2, seq) + min(seq, len)), 768]");
}

TEST_F(TypeInferenceTest, SliceToTheEndAndReversed) {
  Value* x = F32("x", {Sym("n", true), DimExpr::Const(10)});
  // x[:, 2:INT64_MAX:3] -> ceil(8 / 3) = 3; x[::-1] -> n.
  Node* strided = Op("Slice", {x, I64({2}), I64({INT64_MAX}), I64({1}), I64({3})});
  Node* reversed = Op("Slice", {x, I64({-1}), I64({INT64_MIN}), I64({0}), I64({-1})});
  // Opset 9: attributes.
  Node* old = Op("Slice", {x});
  old->set_opset(9);
  old->attrs().Set("starts", std::vector<int64_t>{1});
  old->attrs().Set("ends", std::vector<int64_t>{-1});
  old->attrs().Set("axes", std::vector<int64_t>{1});
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(strided->output(0)), "f32[n, 3]");
  EXPECT_EQ(T(reversed->output(0)), "f32[n, 10]");
  EXPECT_EQ(T(old->output(0)), "f32[n, 8]");
}

// ONNX Slice semantics, the reference for the symbolic formulas.
int64_t ReferenceSliceSize(int64_t dim, int64_t start, int64_t end, int64_t step) {
  __int128 s = start, e = end;
  if (s < 0) s += dim;
  if (e < 0) e += dim;
  if (step > 0) {
    s = std::clamp<__int128>(s, 0, dim);
    e = std::clamp<__int128>(e, 0, dim);
    return static_cast<int64_t>(std::max<__int128>(0, (e - s + step - 1) / step));
  }
  if (dim == 0) return 0;
  s = std::clamp<__int128>(s, 0, dim - 1);
  e = std::clamp<__int128>(e, -1, dim - 1);
  return static_cast<int64_t>(std::max<__int128>(0, (s - e + (-step) - 1) / (-step)));
}

TEST(SliceSemanticsTest, SymbolicSizeMatchesOnnxForEveryDim) {
  const int64_t indices[] = {INT64_MIN, -9, -5, -3, -2, -1, 0, 1, 2, 3, 5, 9, INT64_MAX};
  const int64_t steps[] = {-3, -2, -1, 1, 2, 3};
  int checked = 0;
  for (int64_t start : indices) {
    for (int64_t end : indices) {
      for (int64_t step : steps) {
        Module m;
        m.opsets[""] = 17;
        DimExpr n = m.dims.Symbol("n");
        Value* x = m.main->AddInput("x", Type::Tensor(TensorType::Of(vm::DType::kF32, {n})));
        auto vec = [&](int64_t v) {
          return m.main->AddConstant(
              "", vm::Tensor::FromVector<int64_t>(std::vector<int64_t>{v}, std::vector<int64_t>{1}),
              Type::Tensor(TensorType::Static(vm::DType::kI64, {1})));
        };
        Node* s = m.main->AddNode("Slice", {x, vec(start), vec(end), vec(0), vec(step)}, 1);
        ASSERT_THAT(InferTypes(m), IsOk());
        const Dim& d = (*s->output(0)->tensor_type().dims)[0];
        ASSERT_TRUE(d.has_value());
        for (int64_t dim = 0; dim <= 6; ++dim) {
          absl::StatusOr<int64_t> got = m.dims.Evaluate(*d, {{*n.AsAtom(), dim}});
          ASSERT_TRUE(got.ok()) << got.status();
          // A recorded check may reject the input instead (an index of unprovable sign).
          EXPECT_EQ(*got, ReferenceSliceSize(dim, start, end, step))
              << "dim " << dim << " [" << start << ":" << end << ":" << step << "] gave "
              << m.dims.ToString(*d) << "\n"
              << m.ToString();
          ++checked;
        }
      }
    }
  }
  EXPECT_EQ(checked, 13 * 13 * 6 * 7);
}

// ONNX (and PyTorch) pooling output size, the reference for the symbolic formula.
int64_t ReferencePoolSize(int64_t in, int64_t k, int64_t s, int64_t d, int64_t pb, int64_t pe,
                          bool ceil_mode) {
  const int64_t span = in + pb + pe - ((k - 1) * d + 1);
  int64_t out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
  if (ceil_mode && (out - 1) * s >= in + pb) --out;
  return out;
}

TEST(PoolSemanticsTest, SymbolicSizeMatchesReference) {
  int checked = 0;
  for (int64_t k = 1; k <= 3; ++k) {
    for (int64_t s = 1; s <= 3; ++s) {
      for (int64_t d = 1; d <= 2; ++d) {
        for (int64_t pb = 0; pb < k; ++pb) {
          for (int64_t pe = 0; pe < k; ++pe) {
            for (int ceil_mode = 0; ceil_mode <= 1; ++ceil_mode) {
              Module m;
              m.opsets[""] = 17;
              DimExpr h = m.dims.Symbol("h");
              Value* x = m.main->AddInput(
                  "x", Type::Tensor(TensorType::Of(vm::DType::kF32,
                                                   {DimExpr::Const(1), DimExpr::Const(1), h})));
              Node* pool = m.main->AddNode("MaxPool", {x}, 1);
              pool->attrs().Set("kernel_shape", std::vector<int64_t>{k});
              pool->attrs().Set("strides", std::vector<int64_t>{s});
              pool->attrs().Set("dilations", std::vector<int64_t>{d});
              pool->attrs().Set("pads", std::vector<int64_t>{pb, pe});
              pool->attrs().Set("ceil_mode", int64_t{ceil_mode});
              ASSERT_THAT(InferTypes(m), IsOk());
              EXPECT_FALSE(pool->attrs().Has(kChecksAttr));
              const DimExpr& out = *(*pool->output(0)->tensor_type().dims)[2];
              for (int64_t in = (k - 1) * d + 1; in <= 12; ++in) {
                absl::StatusOr<int64_t> got = m.dims.Evaluate(out, {{*h.AsAtom(), in}});
                ASSERT_TRUE(got.ok()) << got.status();
                EXPECT_EQ(*got, ReferencePoolSize(in, k, s, d, pb, pe, ceil_mode))
                    << "in " << in << " k " << k << " s " << s << " d " << d << " pads " << pb
                    << "," << pe << " ceil " << ceil_mode << ": " << m.dims.ToString(out);
                ++checked;
              }
            }
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 1000);
}

TEST_F(TypeInferenceTest, SliceWithRuntimeStartsGetsFreshSymbol) {
  Value* x = F32("x", {Sym("n"), DimExpr::Const(10)});
  Value* starts = Input("starts", vm::DType::kI64, {DimExpr::Const(1)});
  Node* s = Op("Slice", {x, starts, I64({8}), I64({1})}, "s");
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(s->output(0)), "f32[n, _rt0]");
  EXPECT_EQ(Mode(s), "runtime");
}

TEST_F(TypeInferenceTest, NonZeroGetsFreshSymbolAndRuntimeMode) {
  Value* x = F32("x", {Sym("batch"), Sym("seq")});
  Node* nz = Op("NonZero", {x}, "nz");
  Node* t = Op("Transpose", {nz->output(0)});
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(nz->output(0)), "i64[2, _rt0]");
  EXPECT_EQ(Mode(nz), "runtime");
  // Downstream the count is an ordinary symbol: Transpose is data-independent.
  EXPECT_EQ(T(t->output(0)), "i64[_rt0, 2]");
  EXPECT_EQ(Mode(t), "");
  // Re-running inference (as the pipeline does after folding) keeps the same symbol.
  const int atoms = m_.dims.num_atoms();
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(nz->output(0)), "i64[2, _rt0]");
  EXPECT_EQ(m_.dims.num_atoms(), atoms);
}

TEST_F(TypeInferenceTest, UnprovableBroadcastRecordsCheck) {
  Value* a = F32("a", {Sym("seq")});
  Value* b = F32("b", {Sym("len")});
  Node* add = Op("Add", {a, b}, "add");
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(add->output(0)), "f32[seq]");
  EXPECT_THAT(Checks(add),
              ElementsAre("len == seq || len == 1 : broadcasting output axis 0, input 1"));
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::vector<ShapeCheck> checks, DecodeShapeChecks(*add, m_.dims));
  ASSERT_EQ(checks.size(), 1u);
  EXPECT_EQ(checks[0].kind, ShapeCheck::Kind::kBroadcastable);
  EXPECT_EQ(checks[0].lhs, Sym("len"));
  EXPECT_EQ(checks[0].rhs, Sym("seq"));
  EXPECT_EQ(checks[0].message, "broadcasting output axis 0, input 1");
}

TEST_F(TypeInferenceTest, BroadcastKeepsTheSideThatCannotBeOne) {
  Value* a = F32("a", {Sym("n")});
  Value* b = F32("b", {DimExpr::Const(768)});
  Node* add = Op("Mul", {a, b}, "mul");
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(add->output(0)), "f32[768]");
  EXPECT_THAT(Checks(add), ElementsAre("n == 768 || n == 1 : broadcasting output axis 0, input 1"));
}

TEST_F(TypeInferenceTest, ProvablyBadBroadcastIsAnError) {
  Value* a = F32("a", {Sym("b"), DimExpr::Const(3)});
  Value* c = F32("c", {DimExpr::Const(4)});
  Op("Add", {a, c}, "bad_add");
  EXPECT_THAT(InferTypes(m_), StatusIs(absl::StatusCode::kInvalidArgument,
                                       AllOf(HasSubstr("node 'bad_add' (Add, opset 17)"),
                                             HasSubstr("cannot broadcast dim 3 with dim 4"))));
}

TEST_F(TypeInferenceTest, ConcatAlongSymbolicAxisSumsDims) {
  Value* x = F32("x", {Sym("b"), Sym("seq"), DimExpr::Const(8)});
  Value* cls = F32("cls", {Sym("b"), DimExpr::Const(1), DimExpr::Const(8)});
  Node* c = Op("Concat", {x, cls});
  c->attrs().Set("axis", int64_t{-2});
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(c->output(0)), "f32[b, seq + 1, 8]");
}

TEST_F(TypeInferenceTest, Gpt2PastConcat) {
  Value* past = F32("past", {Sym("b"), DimExpr::Const(12), Sym("p"), DimExpr::Const(64)});
  Value* cur = F32("cur", {Sym("b"), DimExpr::Const(12), Sym("s"), DimExpr::Const(64)});
  Node* c = Op("Concat", {past, cur}, "present");
  c->attrs().Set("axis", int64_t{2});
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(c->output(0)), "f32[b, 12, p + s, 64]");
  EXPECT_TRUE(Checks(c).empty());
}

TEST_F(TypeInferenceTest, UnsupportedOperatorNamesOpNodeAndOpset) {
  Value* x = F32("x", {DimExpr::Const(2)});
  Op("FooBar", {x}, "bar");
  EXPECT_THAT(InferTypes(m_),
              StatusIs(absl::StatusCode::kUnimplemented,
                       "unsupported operator 'FooBar' (domain '', opset 17) at node 'bar'"));
  Module other;
  Node* n = other.main->AddNode("Gelu", {}, 1, "g");
  n->set_domain("com.microsoft");
  n->set_opset(1);
  EXPECT_THAT(
      InferTypes(other),
      StatusIs(absl::StatusCode::kUnimplemented,
               "unsupported operator 'Gelu' (domain 'com.microsoft', opset 1) at node 'g'"));
}

TEST_F(TypeInferenceTest, IfUnifiesBranches) {
  Value* cond = Input("cond", vm::DType::kBool, {});
  Value* x = F32("x", {Sym("b"), DimExpr::Const(4)});
  Node* node = Op("If", {cond}, "if", 2);
  auto then_g = std::make_unique<Graph>("then", &g_);
  auto else_g = std::make_unique<Graph>("else", &g_);
  then_g->AddCapture(x);
  else_g->AddCapture(x);
  Node* t0 = then_g->AddNode("Relu", {x}, 1);
  Node* t1 = then_g->AddNode("Neg", {x}, 1);
  then_g->set_outputs({t0->output(0), t1->output(0)});
  Node* e0 = else_g->AddNode("Concat", {x, x}, 1);
  e0->attrs().Set("axis", int64_t{1});
  Node* e1 = else_g->AddNode("Abs", {x}, 1);
  else_g->set_outputs({e0->output(0), e1->output(0)});
  node->subgraphs()["then_branch"] = std::move(then_g);
  node->subgraphs()["else_branch"] = std::move(else_g);
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(e0->output(0)), "f32[b, 8]");
  EXPECT_EQ(T(node->output(0)), "f32[b, _rt0]");  // 4 vs 8: a run-time dim
  EXPECT_EQ(T(node->output(1)), "f32[b, 4]");     // equal in both branches
  EXPECT_EQ(Mode(node), "runtime");
}

TEST_F(TypeInferenceTest, IfWithConstantConditionTakesItsBranch) {
  Value* cond = g_.AddConstant(
      "c",
      [] {
        vm::Tensor t = *vm::Tensor::Empty(vm::DType::kBool, {});
        *t.data<bool>() = false;
        return t;
      }(),
      Type::Tensor(TensorType::Static(vm::DType::kBool, {})));
  Value* x = F32("x", {Sym("b"), DimExpr::Const(4)});
  Node* node = Op("If", {cond}, "if");
  auto then_g = std::make_unique<Graph>("then", &g_);
  auto else_g = std::make_unique<Graph>("else", &g_);
  then_g->set_outputs({then_g->AddNode("Relu", {x}, 1)->output(0)});
  Node* e = else_g->AddNode("Concat", {x, x}, 1);
  e->attrs().Set("axis", int64_t{1});
  else_g->set_outputs({e->output(0)});
  node->subgraphs()["then_branch"] = std::move(then_g);
  node->subgraphs()["else_branch"] = std::move(else_g);
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(node->output(0)), "f32[b, 8]");
  EXPECT_EQ(Mode(node), "");
}

TEST_F(TypeInferenceTest, IfBranchLocalSymbolsDoNotEscape) {
  Value* cond = Input("cond", vm::DType::kBool, {});
  Value* x = F32("x", {Sym("n")});
  Node* node = Op("If", {cond}, "if");
  auto then_g = std::make_unique<Graph>("then", &g_);
  auto else_g = std::make_unique<Graph>("else", &g_);
  Node* nz = then_g->AddNode("NonZero", {x}, 1);
  then_g->set_outputs({nz->output(0)});
  Node* nz2 = else_g->AddNode("NonZero", {x}, 1);
  else_g->set_outputs({nz2->output(0)});
  node->subgraphs()["then_branch"] = std::move(then_g);
  node->subgraphs()["else_branch"] = std::move(else_g);
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(nz->output(0)), "i64[1, _rt0]");
  EXPECT_EQ(T(nz2->output(0)), "i64[1, _rt1]");
  EXPECT_EQ(T(node->output(0)), "i64[1, _rt2]");
}

TEST_F(TypeInferenceTest, IfWithConstantConditionNeedNotTypeCheckTheDeadBranch) {
  // ONNX function bodies branch on the input rank: the branch for the other rank is ill-typed.
  Value* x = F32("x", {Sym("b"), DimExpr::Const(4)});
  Value* is_2d = Out("Equal", {Out("Size", {Out("Shape", {x})}), Scalar(2)});
  Node* node = Op("If", {is_2d}, "if");
  auto then_g = std::make_unique<Graph>("then", &g_);
  auto else_g = std::make_unique<Graph>("else", &g_);
  then_g->set_outputs({then_g->AddNode("Relu", {x}, 1)->output(0)});
  Node* bad = else_g->AddNode("MatMul", {x, x}, 1);  // [b, 4] x [b, 4]: 4 vs b, b vs ...
  Node* worse = else_g->AddNode("Transpose", {bad->output(0)}, 1);
  worse->attrs().Set("perm", std::vector<int64_t>{0, 1, 2});
  else_g->set_outputs({worse->output(0)});
  node->subgraphs()["then_branch"] = std::move(then_g);
  node->subgraphs()["else_branch"] = std::move(else_g);
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(node->output(0)), "f32[b, 4]");
  EXPECT_EQ(node->attrs().GetOr<std::string>(kTakenBranchAttr, ""), "then_branch");
}

TEST_F(TypeInferenceTest, FreshSymbolsAreReusedOnlyByTheirInventor) {
  Value* x = F32("x", {Sym("n")});
  Node* nz = Op("NonZero", {x}, "nz");
  Value* shape = Input("shape", vm::DType::kI64, {DimExpr::Const(2)});
  Node* r = Op("Reshape", {F32("y", {DimExpr::Const(6)}), shape}, "r");
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(nz->output(0)), "i64[1, _rt0]");
  EXPECT_EQ(T(r->output(0)), "f32[_rt1, _rt2]");
  // A stale type that mentions the NonZero's symbol (say, copied by a rewrite) must not make
  // the Reshape claim the same run-time dim.
  r->output(0)->set_type(nz->output(0)->type());
  ASSERT_THAT(InferNodeTypes(m_, *r), IsOk());
  EXPECT_EQ(T(r->output(0)), "f32[_rt3, _rt4]");
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(nz->output(0)), "i64[1, _rt0]");
  EXPECT_EQ(T(r->output(0)), "f32[_rt3, _rt4]");
}

TEST_F(TypeInferenceTest, InferNodeTypesAfterARewrite) {
  Value* x = F32("x", {Sym("b"), DimExpr::Const(8)});
  Node* relu = Op("Relu", {x}, "relu");
  ASSERT_THAT(InferTypes(m_), IsOk());
  // A pass swaps the input for a wider tensor and re-infers just this node.
  relu->set_input(0, F32("wide", {Sym("b"), DimExpr::Const(16)}));
  ASSERT_THAT(InferNodeTypes(m_, *relu), IsOk());
  EXPECT_EQ(T(relu->output(0)), "f32[b, 16]");
}

TEST_F(TypeInferenceTest, AttentionWithPastKeyValues) {
  Value* q = F32("q", {Sym("b"), DimExpr::Const(8), Sym("s"), DimExpr::Const(64)});
  Value* k = F32("k", {Sym("b"), DimExpr::Const(2), Sym("s"), DimExpr::Const(64)});
  Value* v = F32("v", {Sym("b"), DimExpr::Const(2), Sym("s"), DimExpr::Const(32)});
  Value* pk = F32("pk", {Sym("b"), DimExpr::Const(2), Sym("p"), DimExpr::Const(64)});
  Value* pv = F32("pv", {Sym("b"), DimExpr::Const(2), Sym("p"), DimExpr::Const(32)});
  Node* att = Op("Attention", {q, k, v, nullptr, pk, pv}, "att", 4);
  att->set_opset(23);
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(att->output(0)), "f32[b, 8, s, 32]");
  EXPECT_EQ(T(att->output(1)), "f32[b, 2, s + p, 64]");
  EXPECT_EQ(T(att->output(2)), "f32[b, 2, s + p, 32]");
  EXPECT_EQ(T(att->output(3)), "f32[b, 8, s, s + p]");
}

// ---- Gradual typing and errors ------------------------------------------------------------------

TEST_F(TypeInferenceTest, MatMulInnerDimsUnprovableRecordsCheck) {
  Value* a = F32("a", {Sym("m"), Sym("k1")});
  Value* b = F32("b", {Sym("k2"), Sym("n")});
  Node* mm = Op("MatMul", {a, b}, "mm");
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(mm->output(0)), "f32[m, n]");
  EXPECT_THAT(Checks(mm), ElementsAre("k1 == k2 : MatMul inner dims (columns of A, rows of B)"));
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::vector<ShapeCheck> checks, DecodeShapeChecks(*mm, m_.dims));
  ASSERT_EQ(checks.size(), 1u);
  EXPECT_EQ(checks[0].kind, ShapeCheck::Kind::kEqual);
  EXPECT_EQ(checks[0].lhs, Sym("k1"));
}

TEST_F(TypeInferenceTest, MatMulOfMixedTypesIsAnError) {
  Value* a = F32("a", {DimExpr::Const(2), DimExpr::Const(3)});
  Value* b = Input("b", vm::DType::kI64, {DimExpr::Const(3), DimExpr::Const(4)});
  Op("MatMul", {a, b}, "mixed");
  EXPECT_THAT(InferTypes(m_), StatusIs(absl::StatusCode::kInvalidArgument,
                                       AllOf(HasSubstr("node 'mixed' (MatMul"),
                                             HasSubstr("MatMul of f32 and i64"))));
}

TEST_F(TypeInferenceTest, MatMulInnerDimConstantsMismatchIsAnError) {
  Value* a = F32("a", {DimExpr::Const(2), DimExpr::Const(3)});
  Value* b = F32("b", {DimExpr::Const(4), DimExpr::Const(5)});
  Op("MatMul", {a, b}, "mm");
  EXPECT_THAT(InferTypes(m_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("3 and 4 must be equal")));
}

TEST_F(TypeInferenceTest, UntypedInputIsReported) {
  Node* late = Op("Relu", {nullptr}, "late");
  Node* early = Op("Relu", {F32("x", {DimExpr::Const(1)})}, "early");
  late->set_input(0, early->output(0));  // consumer before producer
  EXPECT_THAT(InferTypes(m_),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("topological order")));
}

TEST_F(TypeInferenceTest, UnknownInputDimsAreNamed) {
  Value* x = F32("x", {std::nullopt, DimExpr::Const(3)});
  Node* r = Op("Relu", {x});
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(x), "f32[_in0, 3]");
  EXPECT_EQ(T(r->output(0)), "f32[_in0, 3]");
}

// ---- Symbolic values and data-dependent shapes --------------------------------------------------

TEST_F(TypeInferenceTest, RangeFromSymbolicLimit) {
  Value* x = F32("x", {Sym("b"), Sym("seq")});
  Value* seq = Out("Gather", {Out("Shape", {x}), Scalar(1)});
  Node* pos = Op("Range", {Scalar(0), seq, Scalar(1)});
  Node* evens = Op("Range", {Scalar(0), seq, Scalar(2)});
  Node* rt = Op("Range", {Scalar(0), Input("limit", vm::DType::kI64, {}), Scalar(1)}, "rt");
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(pos->output(0)), "i64[seq]");
  EXPECT_EQ(T(evens->output(0)), "i64[ceildiv(seq, 2)]");
  EXPECT_EQ(T(rt->output(0)), "i64[_rt0]");
  EXPECT_EQ(Mode(rt), "runtime");
}

TEST_F(TypeInferenceTest, ReshapeByRuntimeShapeTensor) {
  Value* x = F32("x", {Sym("n")});
  Value* shape = Input("shape", vm::DType::kI64, {DimExpr::Const(3)});
  Node* r = Op("Reshape", {x, shape}, "r");
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(r->output(0)), "f32[_rt0, _rt1, _rt2]");
  EXPECT_EQ(Mode(r), "runtime");
}

TEST_F(TypeInferenceTest, ExpandWithTorchWherePattern) {
  // torch.expand(x, (b, -1, 8)) exports Where(Equal(shape, -1), ones, shape).
  Value* x = F32("x", {DimExpr::Const(1), Sym("s"), DimExpr::Const(1)});
  Value* y = F32("y", {Sym("b")});
  Value* b = Out("Shape", {y});
  Node* cat = Op("Concat", {b, I64({-1, 8})});
  cat->attrs().Set("axis", int64_t{0});
  Value* eq = Out("Equal", {cat->output(0), I64({-1})});
  Value* shape = Out("Where", {eq, I64({1, 1, 1}), cat->output(0)});
  Node* expand = Op("Expand", {x, shape});
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_THAT(SymValue(shape), ElementsAre("b", "1", "8"));
  EXPECT_EQ(T(expand->output(0)), "f32[b, s, 8]");
}

TEST_F(TypeInferenceTest, ConstantOfShapeTileAndPad) {
  Value* x = F32("x", {Sym("b"), Sym("s")});
  Value* shape = Out("Shape", {x});
  Node* zeros = Op("ConstantOfShape", {shape});
  zeros->attrs().Set(
      "value", vm::Tensor::FromVector<int64_t>(std::vector<int64_t>{0}, std::vector<int64_t>{1}));
  Node* tile = Op("Tile", {x, I64({2, 3})});
  Node* pad = Op("Pad", {x, I64({0, 1, 0, 2})});
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(zeros->output(0)), "i64[b, s]");
  EXPECT_EQ(T(tile->output(0)), "f32[2*b, 3*s]");
  EXPECT_EQ(T(pad->output(0)), "f32[b, s + 3]");
}

TEST_F(TypeInferenceTest, TopKWithRuntimeAndConstantK) {
  Value* x = F32("x", {Sym("b"), DimExpr::Const(100)});
  Node* k5 = Op("TopK", {x, I64({5})}, "k5", 2);
  Node* krt = Op("TopK", {x, Input("k", vm::DType::kI64, {DimExpr::Const(1)})}, "krt", 2);
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(k5->output(0)), "f32[b, 5]");
  EXPECT_EQ(T(k5->output(1)), "i64[b, 5]");
  EXPECT_EQ(T(krt->output(0)), "f32[b, _rt0]");
  EXPECT_EQ(T(krt->output(1)), "i64[b, _rt0]");
  EXPECT_EQ(Mode(krt), "runtime");
}

TEST_F(TypeInferenceTest, SqueezeAndUnsqueezeAcrossOpsets) {
  Value* x = F32("x", {Sym("b"), DimExpr::Const(1), DimExpr::Const(4)});
  Node* sq11 = Op("Squeeze", {x});
  sq11->set_opset(11);
  sq11->attrs().Set("axes", std::vector<int64_t>{1});
  Node* sq13 = Op("Squeeze", {x, I64({-2})});
  Node* unsq = Op("Unsqueeze", {x, I64({0, -1})});
  Node* all = Op("Squeeze", {x}, "all");
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(sq11->output(0)), "f32[b, 4]");
  EXPECT_EQ(T(sq13->output(0)), "f32[b, 4]");
  EXPECT_EQ(T(unsq->output(0)), "f32[1, b, 1, 4, 1]");
  // Without axes, whether the symbolic dim goes is a run-time fact: so is the rank.
  EXPECT_EQ(T(all->output(0)), "f32[*]");
  EXPECT_EQ(Mode(all), "runtime");
  // Unless the bounds say the dim cannot be 1.
  Node* bounded =
      Op("Squeeze", {F32("y", {Sym("n", true) + DimExpr::Const(1), DimExpr::Const(1)})});
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(bounded->output(0)), "f32[n + 1]");
  EXPECT_EQ(Mode(bounded), "");
}

TEST_F(TypeInferenceTest, SplitEvenAndUnevenAndBySizes) {
  Value* x = F32("x", {Sym("b"), DimExpr::Const(10), Sym("h")});
  Node* even = Op("Split", {x}, "even", 2);
  even->attrs().Set("axis", int64_t{1});
  Node* uneven = Op("Split", {x}, "uneven", 3);
  uneven->set_opset(18);
  uneven->attrs().Set("axis", int64_t{1});
  uneven->attrs().Set("num_outputs", int64_t{3});
  Node* sizes = Op("Split", {x, I64({3, 7})}, "sizes", 2);
  sizes->attrs().Set("axis", int64_t{1});
  Node* sym = Op("Split", {x}, "sym", 2);
  sym->attrs().Set("axis", int64_t{2});
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(even->output(1)), "f32[b, 5, h]");
  EXPECT_EQ(T(uneven->output(0)), "f32[b, 4, h]");
  EXPECT_EQ(T(uneven->output(2)), "f32[b, 2, h]");
  EXPECT_EQ(T(sizes->output(1)), "f32[b, 7, h]");
  EXPECT_EQ(T(sym->output(0)), "f32[b, 10, floordiv(h, 2)]");
  EXPECT_THAT(Checks(sym), ElementsAre(HasSubstr("mod(h, 2) == 0")));
}

TEST_F(TypeInferenceTest, ReductionsAcrossOpsets) {
  Value* x = F32("x", {Sym("b"), Sym("s"), DimExpr::Const(8)});
  Node* mean17 = Op("ReduceMean", {x});
  mean17->attrs().Set("axes", std::vector<int64_t>{-1});
  Node* mean18 = Op("ReduceMean", {x, I64({1})});
  mean18->set_opset(18);
  mean18->attrs().Set("keepdims", int64_t{0});
  Node* sum_all = Op("ReduceSum", {x});
  Node* noop = Op("ReduceSum", {x});
  noop->attrs().Set("noop_with_empty_axes", int64_t{1});
  Node* argmax = Op("ArgMax", {x});
  argmax->attrs().Set("axis", int64_t{1});
  argmax->attrs().Set("keepdims", int64_t{0});
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(mean17->output(0)), "f32[b, s, 1]");
  EXPECT_EQ(T(mean18->output(0)), "f32[b, 8]");
  EXPECT_EQ(T(sum_all->output(0)), "f32[1, 1, 1]");
  EXPECT_EQ(T(noop->output(0)), "f32[b, s, 8]");
  EXPECT_EQ(T(argmax->output(0)), "i64[b, 8]");
}

// ---- Neural-network operators -------------------------------------------------------------------

TEST_F(TypeInferenceTest, ConvAndPoolingWithSymbolicImageSize) {
  Value* x = F32("x", {Sym("n"), DimExpr::Const(3), Sym("H"), DimExpr::Const(224)});
  Value* w =
      F32("w", {DimExpr::Const(64), DimExpr::Const(3), DimExpr::Const(7), DimExpr::Const(7)});
  Node* conv = Op("Conv", {x, w});
  conv->attrs().Set("strides", std::vector<int64_t>{2, 2});
  conv->attrs().Set("pads", std::vector<int64_t>{3, 3, 3, 3});
  Node* pool = Op("MaxPool", {conv->output(0)}, "pool", 2);
  pool->attrs().Set("kernel_shape", std::vector<int64_t>{3, 3});
  pool->attrs().Set("strides", std::vector<int64_t>{2, 2});
  pool->attrs().Set("pads", std::vector<int64_t>{1, 1, 1, 1});
  Node* gap = Op("GlobalAveragePool", {pool->output(0)});
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(conv->output(0)), "f32[n, 64, floordiv(H - 1, 2) + 1, 112]");
  EXPECT_EQ(T(pool->output(0)), "f32[n, 64, floordiv(floordiv(H - 1, 2), 2) + 1, 56]");
  EXPECT_EQ(T(pool->output(1)), "i64[n, 64, floordiv(floordiv(H - 1, 2), 2) + 1, 56]");
  EXPECT_EQ(T(gap->output(0)), "f32[n, 64, 1, 1]");
}

TEST_F(TypeInferenceTest, ConvChannelMismatchIsAnError) {
  Value* x = F32("x", {Sym("n"), DimExpr::Const(4), DimExpr::Const(8), DimExpr::Const(8)});
  Value* w =
      F32("w", {DimExpr::Const(16), DimExpr::Const(3), DimExpr::Const(3), DimExpr::Const(3)});
  Op("Conv", {x, w}, "conv");
  EXPECT_THAT(InferTypes(m_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("Conv input channels")));
}

TEST_F(TypeInferenceTest, GemmLayerNormSoftmaxAndLstm) {
  Value* a = F32("a", {Sym("m"), DimExpr::Const(16)});
  Value* b = F32("b", {DimExpr::Const(32), DimExpr::Const(16)});
  Value* c = F32("c", {DimExpr::Const(32)});
  Node* gemm = Op("Gemm", {a, b, c});
  gemm->attrs().Set("transB", int64_t{1});
  Value* x = F32("x", {Sym("batch"), Sym("seq"), DimExpr::Const(32)});
  Node* ln = Op("LayerNormalization", {x, c, c}, "ln", 3);
  Node* sm = Op("Softmax", {x});
  Value* w = F32("W", {DimExpr::Const(2), DimExpr::Const(4 * 20), DimExpr::Const(32)});
  Value* r = F32("R", {DimExpr::Const(2), DimExpr::Const(4 * 20), DimExpr::Const(20)});
  Node* lstm = Op("LSTM", {x, w, r}, "lstm", 3);
  lstm->attrs().Set("hidden_size", int64_t{20});
  lstm->attrs().Set("direction", std::string("bidirectional"));
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(gemm->output(0)), "f32[m, 32]");
  EXPECT_EQ(T(ln->output(0)), "f32[batch, seq, 32]");
  EXPECT_EQ(T(ln->output(1)), "f32[batch, seq, 1]");
  EXPECT_EQ(T(sm->output(0)), "f32[batch, seq, 32]");
  EXPECT_EQ(T(lstm->output(0)), "f32[batch, 2, seq, 20]");
  EXPECT_EQ(T(lstm->output(1)), "f32[2, seq, 20]");
  EXPECT_EQ(T(lstm->output(2)), "f32[2, seq, 20]");
}

TEST_F(TypeInferenceTest, ResizeByScalesAndSizes) {
  Value* x = F32("x", {Sym("n"), DimExpr::Const(3), Sym("h"), DimExpr::Const(10)});
  const std::vector<int64_t> four{4};
  Value* scales = g_.AddConstant(
      "scales", vm::Tensor::FromVector<float>(std::vector<float>{1, 1, 2, 0.5f}, four),
      Type::Tensor(TensorType::Static(vm::DType::kF32, four)));
  Node* up = Op("Resize", {x, nullptr, scales});
  Value* shape = Out("Shape", {x});
  Node* to_input =
      Op("Resize", {F32("y", {Sym("n"), DimExpr::Const(3), DimExpr::Const(5), DimExpr::Const(5)}),
                    nullptr, nullptr, shape});
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(up->output(0)), "f32[n, 3, 2*h, 5]");
  EXPECT_EQ(T(to_input->output(0)), "f32[n, 3, h, 10]");
}

TEST_F(TypeInferenceTest, DropoutCastAndGatherOnShapes) {
  Value* x = F32("x", {Sym("b"), Sym("s")});
  Node* drop = Op("Dropout", {x}, "drop", 2);
  Value* shape = Out("Shape", {x});
  Node* cast = Op("Cast", {shape});
  cast->attrs().Set("to", int64_t{6});  // INT32
  Value* last = Out("Gather", {shape, I64({-1})});
  Value* size = Out("Size", {x});
  Value* half = Out("Div", {size, I64({2})});
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(drop->output(1)), "bool[b, s]");
  EXPECT_EQ(T(cast->output(0)), "i32[2]");
  EXPECT_THAT(SymValue(cast->output(0)), ElementsAre("b", "s"));
  EXPECT_THAT(SymValue(last), ElementsAre("s"));
  EXPECT_THAT(SymValue(size), ElementsAre("b*s"));
  EXPECT_THAT(SymValue(half), ElementsAre("floordiv(b*s, 2)"));
}

TEST_F(TypeInferenceTest, ConstantNodeFormsFeedShapes) {
  Value* x = F32("x", {Sym("b"), DimExpr::Const(6)});
  Node* k = Op("Constant", {});
  k->attrs().Set("value_ints", std::vector<int64_t>{0, 2, 3});
  Node* kt = Op("Constant", {});
  kt->attrs().Set("value", vm::Tensor::FromVector<int64_t>(std::vector<int64_t>{-1, 3},
                                                           std::vector<int64_t>{2}));
  Node* kf = Op("Constant", {});
  kf->attrs().Set("value_float", 0.5);
  Node* r = Op("Reshape", {x, k->output(0)});
  Node* r2 = Op("Reshape", {x, kt->output(0)});
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(k->output(0)), "i64[3]");
  EXPECT_EQ(T(kf->output(0)), "f32[]");
  EXPECT_EQ(T(r->output(0)), "f32[b, 2, 3]");
  EXPECT_EQ(T(r2->output(0)), "f32[2*b, 3]");
}

TEST_F(TypeInferenceTest, EinsumAndGatherND) {
  Value* q = F32("q", {Sym("b"), DimExpr::Const(12), Sym("s"), DimExpr::Const(64)});
  Value* k = F32("k", {Sym("b"), DimExpr::Const(12), Sym("t"), DimExpr::Const(64)});
  Node* scores = Op("Einsum", {q, k});
  scores->attrs().Set("equation", std::string("bhsd,bhtd->bhst"));
  Node* implicit = Op("Einsum", {q, k});
  implicit->attrs().Set("equation", std::string("...sd,...td"));
  Value* idx = Input("idx", vm::DType::kI64, {Sym("n"), DimExpr::Const(2)});
  Node* gnd = Op("GatherND", {q, idx});
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(scores->output(0)), "f32[b, 12, s, t]");
  EXPECT_EQ(T(implicit->output(0)), "f32[b, 12, s, t]");
  EXPECT_EQ(T(gnd->output(0)), "f32[n, s, 64]");
}

// ---- Loops, sequences, optionals ----------------------------------------------------------------

TEST_F(TypeInferenceTest, LoopGeneralisesGrowingCarriedValue) {
  Value* trip = Scalar(5);
  Value* init = F32("init", {DimExpr::Const(1), DimExpr::Const(4)});
  Value* row = F32("row", {DimExpr::Const(1), DimExpr::Const(4)});
  Node* loop = Op("Loop", {trip, nullptr, init}, "loop", 2);
  auto body = std::make_unique<Graph>("body", &g_);
  Value* i = body->AddInput("i", Type());
  Value* c = body->AddInput("cond", Type());
  Value* acc = body->AddInput("acc", Type());
  body->AddCapture(row);
  Node* cat = body->AddNode("Concat", {acc, row}, 1);
  cat->attrs().Set("axis", int64_t{0});
  Node* scan = body->AddNode("Relu", {row}, 1);
  body->set_outputs({c, cat->output(0), scan->output(0)});
  Graph* b = body.get();
  loop->subgraphs()["body"] = std::move(body);
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(i), "i64[]");
  // The carried dim changes across iterations: a symbol bound per iteration.
  const std::string carried = T(b->inputs()[2]);
  EXPECT_THAT(carried, ::testing::MatchesRegex("f32\\[_rt[0-9]+, 4\\]"));
  EXPECT_THAT(T(loop->output(0)), ::testing::MatchesRegex("f32\\[_rt[0-9]+, 4\\]"));
  EXPECT_NE(T(loop->output(0)), carried);  // the body's symbol does not escape
  // Scan outputs stack per iteration: the trip count leads.
  EXPECT_EQ(T(loop->output(1)), "f32[5, 1, 4]");
  EXPECT_EQ(Mode(loop), "runtime");
}

TEST_F(TypeInferenceTest, ScanOverSequence) {
  Value* state = F32("h0", {Sym("b"), DimExpr::Const(8)});
  Value* xs = F32("xs", {Sym("b"), Sym("T"), DimExpr::Const(8)});
  Node* scan = Op("Scan", {state, xs}, "scan", 2);
  scan->attrs().Set("num_scan_inputs", int64_t{1});
  scan->attrs().Set("scan_input_axes", std::vector<int64_t>{1});
  scan->attrs().Set("scan_output_axes", std::vector<int64_t>{1});
  auto body = std::make_unique<Graph>("body", &g_);
  Value* h = body->AddInput("h", Type());
  Value* x = body->AddInput("x", Type());
  Node* add = body->AddNode("Add", {h, x}, 1);
  body->set_outputs({add->output(0), add->output(0)});
  scan->subgraphs()["body"] = std::move(body);
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(x), "f32[b, 8]");
  EXPECT_EQ(T(scan->output(0)), "f32[b, 8]");
  EXPECT_EQ(T(scan->output(1)), "f32[b, T, 8]");
}

TEST_F(TypeInferenceTest, SequencesAndOptionals) {
  Value* a = F32("a", {Sym("b"), DimExpr::Const(4)});
  Value* c = F32("c", {Sym("b"), DimExpr::Const(6)});
  Node* seq = Op("SequenceConstruct", {a, c});
  Node* at = Op("SequenceAt", {seq->output(0), Scalar(0)}, "at");
  Node* len = Op("SequenceLength", {seq->output(0)});
  Node* cat = Op("ConcatFromSequence", {seq->output(0)}, "cat");
  cat->attrs().Set("axis", int64_t{0});
  Node* split = Op("SplitToSequence", {c});
  split->attrs().Set("axis", int64_t{1});
  Node* opt = Op("Optional", {a});
  Node* get = Op("OptionalGetElement", {opt->output(0)});
  Node* has = Op("OptionalHasElement", {opt->output(0)});
  ASSERT_THAT(InferTypes(m_), IsOk());
  EXPECT_EQ(T(seq->output(0)), "seq<f32[b, ?]>");
  EXPECT_EQ(T(at->output(0)), "f32[b, _rt0]");
  EXPECT_EQ(Mode(at), "runtime");
  EXPECT_EQ(T(len->output(0)), "i64[]");
  EXPECT_THAT(T(cat->output(0)), ::testing::MatchesRegex("f32\\[_rt[0-9]+, _rt[0-9]+\\]"));
  EXPECT_EQ(T(split->output(0)), "seq<f32[b, 1]>");
  EXPECT_EQ(T(opt->output(0)), "opt<f32[b, 4]>");
  EXPECT_EQ(T(get->output(0)), "f32[b, 4]");
  EXPECT_EQ(T(has->output(0)), "bool[]");
}

// ---- Checks encoding
// ------------------------------------------------------------------------------

TEST(ShapeCheckTest, EncodingRoundTripsThroughAttributes) {
  Module m;
  DimExpr s = m.dims.Symbol("s");
  DimExpr t = m.dims.Symbol("t");
  DimExpr q = m.dims.FloorDiv(s, t);
  Node* n = m.main->AddNode("Add", {}, 1, "n");
  std::vector<ShapeCheck> checks{
      {ShapeCheck::Kind::kEqual, s + DimExpr::Const(1), DimExpr::Const(3) * t, "first"},
      {ShapeCheck::Kind::kLessEqual, q, s * t - DimExpr::Const(2), "second : with colon"},
      {ShapeCheck::Kind::kNotEqual, s, DimExpr(), "third"}};
  EncodeShapeChecks(*n, checks, m.dims);
  EXPECT_THAT(n->attrs().GetOr<std::vector<std::string>>(kChecksAttr, {}),
              ElementsAre("s + 1 == 3*t : first", "floordiv(s, t) <= s*t - 2 : second : with colon",
                          "s != 0 : third"));
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::vector<ShapeCheck> back, DecodeShapeChecks(*n, m.dims));
  ASSERT_EQ(back.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(back[i], checks[i]);
    EXPECT_EQ(back[i].message, checks[i].message);
  }
  EncodeShapeChecks(*n, {}, m.dims);
  EXPECT_FALSE(n->attrs().Has(kChecksAttr));
  EXPECT_FALSE(n->attrs().Has(kCheckExprsAttr));
}

TEST(ShapeCheckTest, MergeCarriesChecksToAReplacementNode) {
  Module m;
  DimExpr s = m.dims.Symbol("s"), t = m.dims.Symbol("t");
  Node* a = m.main->AddNode("Add", {}, 1, "a");
  Node* b = m.main->AddNode("Mul", {}, 1, "b");
  Node* fused = m.main->AddNode("FusedElementwise", {}, 1, "fused");
  EncodeShapeChecks(*a, {{ShapeCheck::Kind::kEqual, s, t, "from a"}}, m.dims);
  EncodeShapeChecks(*b,
                    {{ShapeCheck::Kind::kEqual, s, t, "from b"},
                     {ShapeCheck::Kind::kBroadcastable, t, s, "also b"}},
                    m.dims);
  ASSERT_THAT(MergeShapeChecks(*fused, *a, m.dims), IsOk());
  ASSERT_THAT(MergeShapeChecks(*fused, *b, m.dims), IsOk());
  EXPECT_THAT(fused->attrs().GetOr<std::vector<std::string>>(kChecksAttr, {}),
              ElementsAre("s == t : from a", "t == s || t == 1 : also b"));
}

TEST(ShapeCheckTest, MalformedEncodingIsAnError) {
  Module m;
  Node* n = m.main->AddNode("Add", {}, 1, "n");
  n->attrs().Set(kChecksAttr, std::vector<std::string>{"x == y : m"});
  n->attrs().Set(kCheckExprsAttr,
                 vm::Tensor::FromVector<int64_t>(std::vector<int64_t>{0, 1, 1, 1, 99},
                                                 std::vector<int64_t>{5}));
  EXPECT_THAT(DecodeShapeChecks(*n, m.dims),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown atom 99")));
}

}  // namespace
}  // namespace nimble::compiler
