// Golden IR tests of LowerPrecision (label `unit`; no GPU needed: the CUDA kernels' traits are
// registered whenever the CUDA backend is built, and the tests skip when it is not).
#include "compiler/transforms/lower_precision.h"

#include "base/testing/status_matchers.h"
#include "gtest/gtest.h"
#include "vm/kernels/kernel.h"

namespace nimble::compiler {
namespace {

using ::nimble::testing::StatusIs;
using ::testing::HasSubstr;

class LowerPrecisionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!vm::KernelRegistry::Global().Has("FusedMatMul", vm::DeviceType::kCUDA)) {
      GTEST_SKIP() << "built without the CUDA backend";
    }
  }
  Value* Input(const std::string& name, std::vector<int64_t> dims,
               vm::DType dtype = vm::DType::kF32) {
    return m_.main->AddInput(name, Type::Tensor(TensorType::Static(dtype, dims)));
  }
  Value* Weight(const std::string& name, std::vector<int64_t> dims, float v) {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    return m_.main->AddConstant(name, vm::Tensor::FromVector<float>(std::vector<float>(n, v), dims),
                                Type::Tensor(TensorType::Static(vm::DType::kF32, dims)));
  }
  Node* Op(const std::string& op, std::vector<Value*> inputs, std::vector<int64_t> dims,
           vm::DType dtype = vm::DType::kF32) {
    Node* n = m_.main->AddNode(op, std::move(inputs), 1, op);
    n->set_opset(17);
    n->output(0)->set_type(Type::Tensor(TensorType::Static(dtype, dims)));
    return n;
  }

  // x -> MatMul(W) -> Tanh -> LayerNorm -> out, plus a Shape of the Tanh, a Softmax of an f32
  // input and the Tanh itself as outputs.
  void BuildEdges() {
    Value* x = Input("x", {2, 4});
    Value* m = Input("m", {2, 8});
    Value* y = Op("MatMul", {x, Weight("w", {4, 8}, 0.25f)}, {2, 8})->output(0);
    Value* t = Op("Tanh", {y}, {2, 8})->output(0);
    Node* ln =
        Op("LayerNormalization", {t, Weight("g", {8}, 1.0f), Weight("b", {8}, 0.0f)}, {2, 8});
    ln->attrs().Set("axis", int64_t{-1});
    Value* shape = Op("Shape", {t}, {2}, vm::DType::kI64)->output(0);
    Node* sm = Op("Softmax", {m}, {2, 8});
    sm->attrs().Set("axis", int64_t{-1});
    m_.main->AddOutput(ln->output(0));
    m_.main->AddOutput(shape);
    m_.main->AddOutput(sm->output(0));
    m_.main->AddOutput(t);
  }

  Module m_;
};

// The fused embedding layer starts a half region: its tables and gamma / beta are converted at
// compile time, the ids stay integers, and the GEMM after it reads its half output directly.
TEST_F(LowerPrecisionTest, EmbedLayerNormStartsAHalfRegion) {
  Value* ids = Input("ids", {2, 3}, vm::DType::kI64);
  Value* types = Input("types", {2, 3}, vm::DType::kI32);
  Node* embed = Op("EmbedLayerNorm",
                   {Weight("word", {10, 8}, 0.5f), ids, Weight("type", {2, 8}, 0.25f), types,
                    Weight("g", {8}, 1.0f), Weight("b", {8}, 0.0f)},
                   {2, 3, 8});
  embed->attrs().Set("embeddings", int64_t{2});
  Value* y = Op("MatMul", {embed->output(0), Weight("w", {8, 4}, 0.25f)}, {2, 3, 4})->output(0);
  m_.main->AddOutput(y);
  NIMBLE_ASSERT_OK_AND_ASSIGN(int lowered,
                              LowerPrecision(m_, Precision::kF16, vm::DeviceType::kCUDA));
  EXPECT_EQ(lowered, 2);
  const std::string ir = m_.ToString();
  EXPECT_THAT(ir, HasSubstr("f16[2, 3, 8] = EmbedLayerNorm(%9:word/f16, %0:ids, %10:type/f16, "
                            "%1:types, %11:g/f16, %12:b/f16) {embeddings=2}"))
      << ir;
  EXPECT_THAT(ir, HasSubstr("= MatMul(%6, %13:w/f16)")) << ir;
}

// x -> MatMul(W) -> Tanh -> LayerNorm -> out; a Shape of the half value needs no Cast; the mask
// chain of an Attention-like consumer (here: Softmax of an f32 input) stays f32. The LayerNorm
// at the output writes f32 itself; the Tanh, also an output, gets its Cast right after it (not at
// the end), so that its copy to the host can start there.
TEST_F(LowerPrecisionTest, Fp16LowersTheComputeAndCastsAtTheEdges) {
  BuildEdges();

  NIMBLE_ASSERT_OK_AND_ASSIGN(int lowered,
                              LowerPrecision(m_, Precision::kF16, vm::DeviceType::kCUDA));
  EXPECT_EQ(lowered, 3);  // MatMul, Tanh, LayerNormalization; Softmax of an f32 input is not
  EXPECT_EQ(m_.ToString(),
            "graph main(%0:x: f32[2, 4], %1:m: f32[2, 8]) {\n"
            "  %11:w/f16: f16[4, 8] = constant\n"
            "  %12:g/f16: f16[8] = constant\n"
            "  %13:b/f16: f16[8] = constant\n"
            "  %9: f32[2, 8] = Softmax(%1:m) {axis=-1}\n"
            "  %10:x/f16: f16[2, 4] = Cast(%0:x) {to=10}\n"
            "  %3: f16[2, 8] = MatMul(%10:x/f16, %11:w/f16)\n"
            "  %4: f16[2, 8] = Tanh(%3)\n"
            "  %14: f32[2, 8] = Cast(%4) {to=1}\n"
            "  %7: f32[2, 8] = LayerNormalization(%4, %12:g/f16, %13:b/f16) {axis=-1}\n"
            "  %8: i64[2] = Shape(%4)\n"
            "  return %7, %8, %9, %14\n"
            "}\n");
}

// With half outputs, the outputs computed in half stay half (no Cast, the LayerNorm writes f16);
// those computed in f32 (the Softmax) or integers (the Shape) keep their dtype.
TEST_F(LowerPrecisionTest, HalfOutputsStayHalf) {
  BuildEdges();

  NIMBLE_ASSERT_OK_AND_ASSIGN(
      int lowered, LowerPrecision(m_, Precision::kF16, vm::DeviceType::kCUDA, /*tanh_gelu=*/true,
                                  /*half_outputs=*/true));
  EXPECT_EQ(lowered, 3);
  EXPECT_EQ(m_.ToString(),
            "graph main(%0:x: f32[2, 4], %1:m: f32[2, 8]) {\n"
            "  %11:w/f16: f16[4, 8] = constant\n"
            "  %12:g/f16: f16[8] = constant\n"
            "  %13:b/f16: f16[8] = constant\n"
            "  %9: f32[2, 8] = Softmax(%1:m) {axis=-1}\n"
            "  %10:x/f16: f16[2, 4] = Cast(%0:x) {to=10}\n"
            "  %3: f16[2, 8] = MatMul(%10:x/f16, %11:w/f16)\n"
            "  %4: f16[2, 8] = Tanh(%3)\n"
            "  %7: f16[2, 8] = LayerNormalization(%4, %12:g/f16, %13:b/f16) {axis=-1}\n"
            "  %8: i64[2] = Shape(%4)\n"
            "  return %7, %8, %9, %4\n"
            "}\n");
}

// A half GEMM's erf GELU epilogue becomes cuBLASLt's tanh form unless exact GELU is asked for.
TEST_F(LowerPrecisionTest, HalfGemmGeluEpilogueTakesTheTanhFormUnlessExact) {
  for (bool tanh_gelu : {true, false}) {
    m_ = Module();
    Value* x = Input("x", {2, 4});
    Node* mm = Op("FusedMatMul", {x, Weight("w", {4, 8}, 0.25f), Weight("b", {8}, 0.5f)}, {2, 8});
    mm->attrs().Set("activation", std::string("gelu"));
    m_.main->AddOutput(mm->output(0));
    ASSERT_TRUE(LowerPrecision(m_, Precision::kBF16, vm::DeviceType::kCUDA, tanh_gelu).ok());
    EXPECT_EQ(mm->attrs().GetOr<std::string>("activation", ""), tanh_gelu ? "gelu_tanh" : "gelu");
    EXPECT_EQ(mm->output(0)->tensor_type().dtype, vm::DType::kBF16);
  }
}

TEST_F(LowerPrecisionTest, Tf32MarksTheGemmsOnly) {
  Value* x = Input("x", {2, 4});
  Value* y = Op("MatMul", {x, Weight("w", {4, 8}, 0.25f)}, {2, 8})->output(0);
  Value* t = Op("Tanh", {y}, {2, 8})->output(0);
  m_.main->AddOutput(t);
  NIMBLE_ASSERT_OK_AND_ASSIGN(int marked,
                              LowerPrecision(m_, Precision::kTF32, vm::DeviceType::kCUDA));
  EXPECT_EQ(marked, 1);
  EXPECT_THAT(m_.ToString(), HasSubstr("MatMul(%0:x, %1:w) {precision=\"tf32\"}"));
}

// Runs in CPU-only builds too.
TEST(LowerPrecisionErrorsTest, HalfPrecisionNeedsAGpu) {
  Module m;
  EXPECT_THAT(LowerPrecision(m, Precision::kF16, vm::DeviceType::kCPU),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--device=cuda")));
  EXPECT_THAT(ParsePrecision("fp8"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fp32, tf32, fp16 or bf16")));
}

}  // namespace
}  // namespace nimble::compiler
