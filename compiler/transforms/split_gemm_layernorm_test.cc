// Golden IR tests of SplitGemmLayerNorms (label `unit`; no GPU needed: the pass runs on the IR
// after lower-precision, which needs the CUDA kernels' traits registered, so the tests skip in
// builds without the CUDA backend).
#include "compiler/transforms/split_gemm_layernorm.h"

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/testing/status_matchers.h"
#include "compiler/transforms/lower_precision.h"
#include "gtest/gtest.h"
#include "vm/kernels/kernel.h"

namespace nimble::compiler {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class SplitGemmLayerNormTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!vm::KernelRegistry::Global().Has("FusedMatMul", vm::DeviceType::kCUDA)) {
      GTEST_SKIP() << "built without the CUDA backend";
    }
  }
  void TearDown() override { unsetenv("NIMBLE_SPLIT_GEMM_LN_HALF_PARTIALS"); }
  Value* Input(const std::string& name, std::vector<int64_t> dims) {
    return m_.main->AddInput(name, Type::Tensor(TensorType::Static(vm::DType::kF32, dims)));
  }
  Value* Weight(const std::string& name, std::vector<int64_t> dims) {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    return m_.main->AddConstant(name,
                                vm::Tensor::FromVector<float>(std::vector<float>(n, 0.5f), dims),
                                Type::Tensor(TensorType::Static(vm::DType::kF32, dims)));
  }
  // x [rows, k] -> FusedMatMul(W, b, r) -> LayerNorm -> output, lowered to f16.
  void Build(int64_t rows, int64_t k, int64_t n) {
    m_ = Module();
    Value* x = Input("x", {rows, k});
    Value* r = Input("r", {rows, n});
    Node* mm =
        m_.main->AddNode("FusedMatMul", {x, Weight("w", {k, n}), Weight("b", {n}), r}, 1, "mm");
    mm->set_opset(17);
    mm->output(0)->set_type(Type::Tensor(TensorType::Static(vm::DType::kF32, {rows, n})));
    Node* ln = m_.main->AddNode("LayerNormalization",
                                {mm->output(0), Weight("g", {n}), Weight("be", {n})}, 1, "ln");
    ln->set_opset(17);
    ln->attrs().Set("axis", int64_t{-1});
    ln->output(0)->set_type(Type::Tensor(TensorType::Static(vm::DType::kF32, {rows, n})));
    m_.main->AddOutput(ln->output(0));
    ASSERT_TRUE(LowerPrecision(m_, Precision::kF16, vm::DeviceType::kCUDA).ok());
  }

  Module m_;
};

// K >= 1536 splits by M (2 at M >= 256, 3 at M >= 96, 4 below; half partials 3 at M >= 96, 4
// below); K < 1536 takes S = 1. The partial products are f16 by default, f32 with
// NIMBLE_SPLIT_GEMM_LN_HALF_PARTIALS=0; the LayerNorm at the model's output still writes f32.
TEST_F(SplitGemmLayerNormTest, SplitsByShapeIntoF32OrHalfPartials) {
  struct Case {
    int64_t rows, k, splits;
    bool half_partials;
  };
  for (const Case& c :
       {Case{384, 3072, 2, false}, Case{128, 3072, 3, false}, Case{16, 2048, 4, false},
        Case{384, 768, 1, false}, Case{384, 3072, 3, true}, Case{16, 2048, 4, true},
        Case{16, 768, 1, true}}) {
    SCOPED_TRACE(::testing::Message()
                 << "rows " << c.rows << " K " << c.k << " half partials " << c.half_partials);
    if (c.half_partials) {
      unsetenv("NIMBLE_SPLIT_GEMM_LN_HALF_PARTIALS");  // the default
    } else {
      setenv("NIMBLE_SPLIT_GEMM_LN_HALF_PARTIALS", "0", 1);
    }
    Build(c.rows, c.k, 64);
    NIMBLE_ASSERT_OK_AND_ASSIGN(int split, SplitGemmLayerNorms(m_));
    EXPECT_EQ(split, 1);
    const std::string ir = m_.ToString();
    const std::string parts = absl::StrCat(c.half_partials ? "f16" : "f32", "[", c.splits, ", ",
                                           c.rows, ", 64] = MatMulSplitK(");
    EXPECT_THAT(ir, HasSubstr(parts)) << ir;
    EXPECT_THAT(ir, HasSubstr(absl::StrCat("{splits=", c.splits, "}"))) << ir;
    EXPECT_THAT(ir, HasSubstr(absl::StrCat("f32[", c.rows, ", 64] = SplitSumLayerNorm("))) << ir;
    EXPECT_THAT(ir, Not(HasSubstr("FusedMatMul"))) << ir;
    EXPECT_THAT(ir, Not(HasSubstr("LayerNormalization"))) << ir;
  }
}

// Left alone: a GEMM output read by more than the LayerNorm, and N beyond 1024.
TEST_F(SplitGemmLayerNormTest, LeavesOtherShapesAlone) {
  Build(32, 2048, 2048);
  NIMBLE_ASSERT_OK_AND_ASSIGN(int split, SplitGemmLayerNorms(m_));
  EXPECT_EQ(split, 0);

  Build(32, 2048, 64);
  for (const auto& n : m_.main->nodes()) {
    if (n->op_type() == "FusedMatMul") m_.main->AddOutput(n->output(0));
  }
  NIMBLE_ASSERT_OK_AND_ASSIGN(split, SplitGemmLayerNorms(m_));
  EXPECT_EQ(split, 0);
}

}  // namespace
}  // namespace nimble::compiler
