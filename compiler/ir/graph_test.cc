#include "compiler/ir/graph.h"

#include "gtest/gtest.h"

namespace nimble::compiler {
namespace {

TEST(GraphTest, PrintsDeadCodeFreeSortedGraph) {
  Module m;
  Graph& g = *m.main;
  DimExpr seq = m.dims.Symbol("seq");
  Value* x =
      g.AddInput("x", Type::Tensor(TensorType::Of(vm::DType::kF32, {DimExpr::Const(2), seq})));
  Node* relu = g.AddNode("Relu", {x}, 1, "r");
  relu->output(0)->set_type(x->type());
  Node* dead = g.AddNode("Exp", {x}, 1, "dead");
  dead->output(0)->set_type(x->type());
  // Appended before its producer: TopologicalSort must fix the order.
  Node* neg = g.AddNode("Neg", {nullptr}, 1, "n");
  Node* tanh = g.AddNode("Tanh", {relu->output(0)}, 1, "t");
  tanh->output(0)->set_type(x->type());
  neg->set_input(0, tanh->output(0));
  neg->output(0)->set_type(x->type());
  neg->attrs().Set("alpha", 0.5);
  g.AddOutput(neg->output(0));

  ASSERT_TRUE(g.TopologicalSort().ok());
  EXPECT_EQ(g.RemoveDeadNodes(), 1);
  EXPECT_EQ(g.ToString(m.dims),
            "graph main(%0:x: f32[2, seq]) {\n"
            "  %1: f32[2, seq] = Relu(%0:x)\n"
            "  %4: f32[2, seq] = Tanh(%1)\n"
            "  %3: f32[2, seq] = Neg(%4) {alpha=0.5}\n"
            "  return %3\n"
            "}\n");
  g.ReplaceAllUsesWith(tanh->output(0), relu->output(0));
  EXPECT_EQ(g.RemoveDeadNodes(), 1);
  EXPECT_EQ(g.CountUses()[relu->output(0)->id()], 1);
}

}  // namespace
}  // namespace nimble::compiler
