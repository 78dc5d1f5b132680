// Golden IR tests of the rewriting passes: each builds the pattern an exporter emits, runs the
// pass and compares the printed IR.
#include "base/testing/status_matchers.h"
#include "compiler/transforms/cse.h"
#include "compiler/transforms/fuse_elementwise.h"
#include "compiler/transforms/fuse_gelu_layernorm.h"
#include "compiler/transforms/fuse_matmul_epilogue.h"
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

}  // namespace
}  // namespace nimble::compiler
