#include "compiler/ir/dim_expr.h"

#include "base/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace nimble::compiler {
namespace {

using ::nimble::testing::StatusIs;
using ::testing::HasSubstr;

TEST(DimExprTest, NormalFormMakesEqualExpressionsEqual) {
  DimContext ctx;
  DimExpr b = ctx.Symbol("batch"), s = ctx.Symbol("seq");
  EXPECT_EQ(s + DimExpr::Const(1), DimExpr::Const(1) + s);
  EXPECT_EQ(DimExpr::Const(2) * (b + s), b * DimExpr::Const(2) + s + s);
  EXPECT_EQ(b * s - s * b, DimExpr::Const(0));
  EXPECT_NE(b, s);
  EXPECT_EQ(ctx.Symbol("seq"), s) << "same name, same symbol";
  EXPECT_EQ(ctx.ToString(DimExpr::Const(2) * b * s + s - DimExpr::Const(3)),
            "2*batch*seq + seq - 3");
}

TEST(DimExprTest, DivisionFoldsWhenExact) {
  DimContext ctx;
  DimExpr s = ctx.Symbol("seq", {1, 512});
  EXPECT_EQ(ctx.FloorDiv(DimExpr::Const(4) * s + DimExpr::Const(8), DimExpr::Const(4)),
            s + DimExpr::Const(2));
  EXPECT_EQ(ctx.Mod(DimExpr::Const(6) * s, DimExpr::Const(3)), DimExpr::Const(0));
  EXPECT_EQ(ctx.FloorDiv(DimExpr::Const(-7), DimExpr::Const(2)), DimExpr::Const(-4));
  EXPECT_EQ(ctx.Mod(DimExpr::Const(-7), DimExpr::Const(2)), DimExpr::Const(1));
  DimExpr half = ctx.FloorDiv(s, DimExpr::Const(2));
  EXPECT_FALSE(half.IsConst());
  EXPECT_EQ(half, ctx.FloorDiv(s, DimExpr::Const(2))) << "opaque terms are interned";
  EXPECT_EQ(ctx.ToString(half), "floordiv(seq, 2)");
  EXPECT_EQ(ctx.Bounds(half).hi, 256);
}

TEST(DimExprTest, MinMaxFoldByBounds) {
  DimContext ctx;
  DimExpr s = ctx.Symbol("seq", {1, 512});
  EXPECT_EQ(ctx.Min(s, DimExpr::Const(1024)), s);
  EXPECT_EQ(ctx.Max(s, DimExpr::Const(0)), s);
  EXPECT_EQ(ctx.Max(s + DimExpr::Const(1), s), s + DimExpr::Const(1));
  DimExpr m = ctx.Min(s, DimExpr::Const(100));
  EXPECT_FALSE(m.IsConst());
  EXPECT_EQ(ctx.Bounds(m).hi, 100);
}

TEST(DimExprTest, EvaluatesUnderBindings) {
  DimContext ctx;
  DimExpr b = ctx.Symbol("batch"), s = ctx.Symbol("seq");
  DimExpr e = ctx.CeilDiv(b * s + DimExpr::Const(3), DimExpr::Const(4));
  absl::flat_hash_map<int32_t, int64_t> env = {{*b.AsAtom(), 2}, {*s.AsAtom(), 7}};
  EXPECT_EQ(*ctx.Evaluate(e, env), 5);  // ceil(17 / 4)
  EXPECT_THAT(ctx.Evaluate(e, {{*b.AsAtom(), 2}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'seq' is unbound")));
  EXPECT_THAT(
      ctx.Evaluate(b * s, {{*b.AsAtom(), int64_t{1} << 40}, {*s.AsAtom(), int64_t{1} << 40}}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("overflow")));
}

}  // namespace
}  // namespace nimble::compiler
