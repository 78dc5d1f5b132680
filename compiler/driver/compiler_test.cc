// The whole pipeline on small graphs built with the IR API: one executable for every shape,
// specialized variants, shape arithmetic as scalar instructions, bad input at compile and run
// time, and one executable shared by 16 threads.
#include "compiler/driver/compiler.h"

#include <cstdlib>
#include <fstream>
#include <random>
#include <thread>

#include "base/testing/status_matchers.h"
#include "compiler/frontend/onnx/onnx.pb.h"
#include "compiler/shape/shape_check.h"
#include "gtest/gtest.h"
#include "vm/kernels/kernel.h"
#include "vm/virtual_machine.h"

namespace nimble::compiler {
namespace {

using ::nimble::testing::IsOk;
using ::nimble::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

vm::Tensor RandomF32(const vm::Shape& shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1, 1);
  vm::Tensor t = *vm::Tensor::Empty(vm::DType::kF32, shape);
  for (int64_t i = 0; i < t.num_elements(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

vm::Tensor F32Constant(const vm::Shape& shape, uint32_t seed) { return RandomF32(shape, seed); }

// Builders for hand-written ONNX graphs: an f32 input of `dims` (digits: fixed, else a symbol)
// and a node with one output named after it.
void AddF32Input(nimble::onnx::GraphProto* g, const char* name, std::vector<const char*> dims) {
  auto* in = g->add_input();
  in->set_name(name);
  auto* tt = in->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(1);
  for (const char* d : dims) {
    if (d[0] >= '0' && d[0] <= '9') {
      tt->mutable_shape()->add_dim()->set_dim_value(std::atoi(d));
    } else {
      tt->mutable_shape()->add_dim()->set_dim_param(d);
    }
  }
}
void AddOneOutputNode(nimble::onnx::GraphProto* g, const char* op, std::vector<const char*> in,
                      const char* out) {
  auto* n = g->add_node();
  n->set_op_type(op);
  n->set_name(out);
  for (const char* i : in) n->add_input(i);
  n->add_output(out);
}

// y = Softmax(Relu(x·W + b) * 0.5, axis=-1) reshaped through its own Shape to [batch*seq, 16]:
// a symbolic batch and seq, a GEMM epilogue, an elementwise chain, a shape computation.
std::unique_ptr<Module> MlpModule() {
  auto m = std::make_unique<Module>();
  Graph& g = *m->main;
  DimExpr batch = m->dims.Symbol("batch"), seq = m->dims.Symbol("seq");
  Value* x = g.AddInput(
      "x", Type::Tensor(TensorType::Of(vm::DType::kF32, {batch, seq, DimExpr::Const(8)})));
  Value* w = g.AddConstant("w", F32Constant({8, 16}, 1),
                           Type::Tensor(TensorType::Static(vm::DType::kF32, {8, 16})));
  Value* b = g.AddConstant("b", F32Constant({16}, 2),
                           Type::Tensor(TensorType::Static(vm::DType::kF32, {16})));
  vm::Tensor half = vm::Tensor::FromVector<float>(std::vector<float>{0.5f}, {});
  Value* h = g.AddConstant("half", half, Type::Tensor(TensorType::Static(vm::DType::kF32, {})));
  vm::Tensor minus_one = vm::Tensor::FromVector<int64_t>(std::vector<int64_t>{-1, 16}, {2});
  Value* shape =
      g.AddConstant("shape", minus_one, Type::Tensor(TensorType::Static(vm::DType::kI64, {2})));
  Node* mm = g.AddNode("MatMul", {x, w}, 1, "mm");
  Node* add = g.AddNode("Add", {mm->output(0), b}, 1, "bias");
  Node* relu = g.AddNode("Relu", {add->output(0)}, 1, "relu");
  Node* mul = g.AddNode("Mul", {relu->output(0), h}, 1, "scale");
  Node* sm = g.AddNode("Softmax", {mul->output(0)}, 1, "softmax");
  sm->attrs().Set("axis", int64_t{-1});
  Node* rs = g.AddNode("Reshape", {sm->output(0), shape}, 1, "flatten");
  rs->output(0)->set_name("y");
  for (Node* n : {mm, add, relu, mul, sm, rs}) n->set_opset(17);
  g.AddOutput(rs->output(0));
  return m;
}

// The same computation written out in plain C++ as the reference.
std::vector<float> MlpReference(const vm::Tensor& x) {
  const vm::Tensor w = F32Constant({8, 16}, 1), b = F32Constant({16}, 2);
  const int64_t rows = x.num_elements() / 8;
  std::vector<float> y(rows * 16);
  for (int64_t r = 0; r < rows; ++r) {
    float row[16], mx = -1e30f, sum = 0;
    for (int j = 0; j < 16; ++j) {
      float acc = b.data<float>()[j];
      for (int k = 0; k < 8; ++k) acc += x.data<float>()[r * 8 + k] * w.data<float>()[k * 16 + j];
      row[j] = std::max(acc, 0.0f) * 0.5f;
      mx = std::max(mx, row[j]);
    }
    for (int j = 0; j < 16; ++j) sum += (row[j] = std::exp(row[j] - mx));
    for (int j = 0; j < 16; ++j) y[r * 16 + j] = row[j] / sum;
  }
  return y;
}

void ExpectNear(const vm::Tensor& actual, const std::vector<float>& expected) {
  ASSERT_EQ(actual.num_elements(), static_cast<int64_t>(expected.size()));
  for (size_t i = 0; i < expected.size(); ++i) {
    ASSERT_NEAR(actual.data<float>()[i], expected[i], 1e-5) << "element " << i;
  }
}

TEST(CompilerTest, OneExecutableRunsEveryShape) {
  auto module = MlpModule();
  CompileReport report;
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, CompileModule(*module, {}, &report));
  EXPECT_EQ(report.fused_matmuls, 1) << "MatMul + bias + Relu is one FusedMatMul";
  EXPECT_EQ(report.codegen.num_views, 1) << "Reshape is a view";
  ASSERT_EQ(exe->inputs.size(), 1u);
  EXPECT_EQ(exe->inputs[0].dims, (std::vector<int64_t>{-1, -1, 8}));
  EXPECT_EQ(exe->outputs[0].dims, (std::vector<int64_t>{-1, 16}));
  vm::VirtualMachine machine(exe);
  for (auto [b, s] : {std::pair{1, 1}, {1, 7}, {4, 33}, {2, 128}, {3, 0}}) {
    SCOPED_TRACE(absl::StrCat("batch ", b, " seq ", s));
    vm::Tensor x = RandomF32({b, s, 8}, 10 * b + s);
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, machine.Run({x}));
    EXPECT_EQ(out[0].shape(), (vm::Shape{b * s, 16}));
    ExpectNear(out[0], MlpReference(x));
  }
}

// Scan(s0 [3], x [3, n]) scanning x along axis 1 in `in_dir`, with body s' = s + x_t and scan
// output s' stacked along axis 1 in `out_dir`: the layout attributes of ONNX Scan.
std::unique_ptr<Module> CumsumScanModule(int64_t in_dir, int64_t out_dir) {
  auto m = std::make_unique<Module>();
  Graph& g = *m->main;
  const DimExpr n = m->dims.Symbol("n"), three = DimExpr::Const(3);
  Value* s0 = g.AddInput("s0", Type::Tensor(TensorType::Of(vm::DType::kF32, {three})));
  Value* x = g.AddInput("x", Type::Tensor(TensorType::Of(vm::DType::kF32, {three, n})));
  Node* scan = g.AddNode("Scan", {s0, x}, 2, "scan");
  scan->set_opset(16);
  scan->attrs().Set("num_scan_inputs", int64_t{1});
  scan->attrs().Set("scan_input_axes", std::vector<int64_t>{1});
  scan->attrs().Set("scan_input_directions", std::vector<int64_t>{in_dir});
  scan->attrs().Set("scan_output_axes", std::vector<int64_t>{-1});
  scan->attrs().Set("scan_output_directions", std::vector<int64_t>{out_dir});
  auto body = std::make_unique<Graph>("body", &g);
  Value* s = body->AddInput("s", Type::Tensor(TensorType::Of(vm::DType::kF32, {three})));
  Value* xt = body->AddInput("xt", Type::Tensor(TensorType::Of(vm::DType::kF32, {three})));
  Node* add = body->AddNode("Add", {s, xt}, 1, "add");
  add->set_opset(16);
  Node* copy = body->AddNode("Identity", {add->output(0)}, 1, "copy");
  copy->set_opset(16);
  body->AddOutput(add->output(0));
  body->AddOutput(copy->output(0));
  scan->subgraphs()["body"] = std::move(body);
  scan->output(0)->set_name("s");
  scan->output(1)->set_name("ys");
  g.AddOutput(scan->output(0));
  g.AddOutput(scan->output(1));
  return m;
}

TEST(CompilerTest, ScanAxesAndDirections) {
  for (int64_t in_dir : {0, 1}) {
    for (int64_t out_dir : {0, 1}) {
      SCOPED_TRACE(absl::StrCat("input direction ", in_dir, ", output direction ", out_dir));
      auto module = CumsumScanModule(in_dir, out_dir);
      NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, CompileModule(*module));
      vm::VirtualMachine machine(exe);
      for (int64_t n : {1, 4, 9}) {
        vm::Tensor s0 = RandomF32({3}, 1), x = RandomF32({3, n}, 2 + static_cast<uint32_t>(n));
        NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, machine.Run({s0, x}));
        ASSERT_EQ(out.size(), 2u);
        ASSERT_EQ(out[1].shape(), (vm::Shape{3, n}));
        std::vector<float> state(s0.data<float>(), s0.data<float>() + 3);
        std::vector<float> ys(static_cast<size_t>(3 * n));
        for (int64_t t = 0; t < n; ++t) {
          const int64_t col = in_dir ? n - 1 - t : t;
          const int64_t slot = out_dir ? n - 1 - t : t;
          for (int r = 0; r < 3; ++r) {
            state[r] += x.data<float>()[r * n + col];
            ys[r * n + slot] = state[r];
          }
        }
        ExpectNear(out[0], state);
        ExpectNear(out[1], ys);
      }
    }
  }
}

// ONNX function bodies branch on the input's rank (AffineGrid: 2-D or 3-D); the branch for the
// other rank is ill-typed and stays untyped. The IR verifier after fold-constants, which wants
// every value typed, must not count the branch that never runs.
TEST(CompilerTest, IfWithKnownConditionCompilesDespiteAnIllTypedDeadBranch) {
  auto m = std::make_unique<Module>();
  Graph& g = *m->main;
  Value* x = g.AddInput(
      "x", Type::Tensor(TensorType::Of(vm::DType::kF32, {m->dims.Symbol("b"), DimExpr::Const(4)})));
  Value* two = g.AddConstant("two", vm::Tensor::FromVector<int64_t>(std::vector<int64_t>{2}, {}),
                             Type::Tensor(TensorType::Static(vm::DType::kI64, {})));
  Node* shape = g.AddNode("Shape", {x}, 1, "shape");
  Node* size = g.AddNode("Size", {shape->output(0)}, 1, "size");
  Node* is_2d = g.AddNode("Equal", {size->output(0), two}, 1, "is_2d");
  Node* branch = g.AddNode("If", {is_2d->output(0)}, 1, "if");
  auto then_g = std::make_unique<Graph>("then", &g);
  Node* relu = then_g->AddNode("Relu", {x}, 1, "relu");
  then_g->AddCapture(x);
  then_g->AddOutput(relu->output(0));
  auto else_g = std::make_unique<Graph>("else", &g);
  Node* bad = else_g->AddNode("Transpose", {x}, 1, "transpose_3d");  // x has rank 2
  bad->attrs().Set("perm", std::vector<int64_t>{0, 2, 1});
  Node* neg = else_g->AddNode("Neg", {bad->output(0)}, 1, "neg");
  else_g->AddCapture(x);
  else_g->AddOutput(neg->output(0));
  branch->subgraphs()["then_branch"] = std::move(then_g);
  branch->subgraphs()["else_branch"] = std::move(else_g);
  for (Node* n : {shape, size, is_2d, branch, relu, bad, neg}) n->set_opset(17);
  branch->output(0)->set_name("y");
  g.AddOutput(branch->output(0));

  CompileOptions options;
  options.verify_ir = true;
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, CompileModule(*m, options));
  EXPECT_EQ(bad->output(0)->tensor_type().dtype, vm::DType::kInvalid) << "the dead branch";
  vm::VirtualMachine machine(exe);
  vm::Tensor in = RandomF32({3, 4}, 7);
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, machine.Run({in}));
  std::vector<float> expected(in.data<float>(), in.data<float>() + 12);
  for (float& v : expected) v = std::max(v, 0.0f);
  ExpectNear(out[0], expected);

  // A live branch must still be typed: were the else branch taken, its untyped values count.
  EXPECT_THAT(VerifyModule(*m, /*require_types=*/true), IsOk());
  branch->attrs().Set(kTakenBranchAttr, std::string("else_branch"));
  EXPECT_THAT(VerifyModule(*m, /*require_types=*/true),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("has no dtype")));
}

TEST(CompilerTest, ShapeArithmeticIsScalarInstructionsNotKernels) {
  auto module = MlpModule();
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, CompileModule(*module));
  const std::string code = exe->Disassemble();
  // batch*seq for the reshape is computed by scalar instructions; the only kernels are the
  // fused GEMM, the fused elementwise scale and the softmax.
  EXPECT_THAT(code, HasSubstr("scalar"));
  int kernel_calls = 0;
  for (size_t pos = code.find("invoke_packed"); pos != std::string::npos;
       pos = code.find("invoke_packed", pos + 1)) {
    ++kernel_calls;
  }
  EXPECT_EQ(kernel_calls, 3) << code;
}

TEST(CompilerTest, WrongInputsAtRunTimeAreClearErrors) {
  auto module = MlpModule();
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, CompileModule(*module));
  vm::VirtualMachine machine(exe);
  EXPECT_THAT(
      machine.Run({RandomF32({2, 3, 9}, 1)}),
      StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr("'x'"), HasSubstr("9"))));
  EXPECT_THAT(machine.Run({RandomF32({2, 8}, 1)}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank")));
  EXPECT_THAT(machine.Run({*vm::Tensor::Empty(vm::DType::kI64, {2, 3, 8})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("i64")));
  EXPECT_THAT(machine.Run({}), StatusIs(absl::StatusCode::kInvalidArgument));
  // Still usable after errors.
  EXPECT_THAT(machine.Run({RandomF32({1, 2, 8}, 3)}), IsOk());
}

TEST(CompilerTest, UnsupportedOperatorNamesOpNodeAndOpset) {
  auto m = std::make_unique<Module>();
  Value* x = m->main->AddInput("x", Type::Tensor(TensorType::Static(vm::DType::kF32, {2})));
  Node* n = m->main->AddNode("FrobnicateTensor", {x}, 1, "frob_1");
  n->set_opset(17);
  m->main->AddOutput(n->output(0));
  EXPECT_THAT(CompileModule(*m), StatusIs(absl::StatusCode::kUnimplemented,
                                          AllOf(HasSubstr("'FrobnicateTensor'"),
                                                HasSubstr("frob_1"), HasSubstr("17"))));
}

TEST(CompilerTest, DimsWhoseProductOverflowsAreRejected) {
  // Reshape to [2^40, 2^40]: the element count overflows int64.
  auto m = std::make_unique<Module>();
  Value* x = m->main->AddInput("x", Type::Tensor(TensorType::Static(vm::DType::kF32, {4})));
  vm::Tensor huge = vm::Tensor::FromVector<int64_t>(
      std::vector<int64_t>{int64_t{1} << 40, int64_t{1} << 40}, {2});
  Value* shape =
      m->main->AddConstant("shape", huge, Type::Tensor(TensorType::Static(vm::DType::kI64, {2})));
  Node* n = m->main->AddNode("Reshape", {x, shape}, 1, "reshape_huge");
  n->set_opset(17);
  m->main->AddOutput(n->output(0));
  EXPECT_THAT(CompileModule(*m), StatusIs(absl::StatusCode::kInvalidArgument));

  // ConstantOfShape from a run-time shape: the VM reports it, nothing crashes.
  auto m2 = std::make_unique<Module>();
  Value* s = m2->main->AddInput("s", Type::Tensor(TensorType::Static(vm::DType::kI64, {2})));
  Node* c = m2->main->AddNode("ConstantOfShape", {s}, 1, "fill");
  c->set_opset(17);
  m2->main->AddOutput(c->output(0));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, CompileModule(*m2));
  vm::VirtualMachine machine(exe);
  EXPECT_THAT(machine.Run({vm::Tensor::FromVector<int64_t>(
                  std::vector<int64_t>{int64_t{1} << 40, int64_t{1} << 40}, {2})}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(machine.Run({vm::Tensor::FromVector<int64_t>(std::vector<int64_t>{1, -3}, {2})}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto ok, machine.Run({vm::Tensor::FromVector<int64_t>(std::vector<int64_t>{2, 3}, {2})}));
  EXPECT_EQ(ok[0].shape(), (vm::Shape{2, 3}));
}

TEST(CompilerTest, TruncatedOrGarbageModelFilesAreErrors) {
  const std::string path = ::testing::TempDir() + "/garbage.onnx";
  std::ofstream(path) << "this is not an onnx model at all";
  EXPECT_THAT(CompileOnnxFile(path), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(CompileOnnxFile(::testing::TempDir() + "/missing.onnx"),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(CompilerTest, SixteenThreadsShareOneExecutable) {
  auto module = MlpModule();
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::shared_ptr<const vm::Executable> exe, CompileModule(*module));
  constexpr int kThreads = 16, kIterations = 20;
  std::vector<vm::Tensor> inputs;
  std::vector<std::vector<float>> expected;
  for (int t = 0; t < kThreads; ++t) {
    inputs.push_back(RandomF32({1 + t % 3, 1 + 7 * t, 8}, 100 + t));
    expected.push_back(MlpReference(inputs.back()));
  }
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      vm::VirtualMachine machine(exe);
      for (int i = 0; i < kIterations; ++i) {
        auto out = machine.Run({inputs[t]});
        if (!out.ok()) {
          errors[t] = out.status().ToString();
          return;
        }
        for (size_t k = 0; k < expected[t].size(); ++k) {
          if (std::abs((*out)[0].data<float>()[k] - expected[t][k]) > 1e-5) {
            errors[t] = absl::StrCat("thread ", t, " iteration ", i, " element ", k, " differs");
            return;
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(errors[t], "") << "thread " << t;
}

TEST(CompilerTest, MemoryPlanReusesBuffers) {
  auto module = MlpModule();
  CompileReport report;
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, CompileModule(*module, {}, &report));
  // Intermediates: fused GEMM output and the scaled copy; softmax writes the graph output.
  EXPECT_GE(report.codegen.num_planned_buffers, 1);
  absl::flat_hash_map<int32_t, int64_t> env = {{*module->dims.FindSymbol("batch"), 4},
                                               {*module->dims.FindSymbol("seq"), 128}};
  const int64_t arena = *module->dims.Evaluate(report.codegen.arena_bytes, env);
  const int64_t sum = *module->dims.Evaluate(report.codegen.intermediate_bytes, env);
  EXPECT_LE(arena, sum + 64 * report.codegen.num_planned_buffers);
  EXPECT_GT(arena, 0);
}

// y = softmax(x + x * 2) over f32[batch, seq] written as an ONNX file.
std::string WriteAddModel() {
  nimble::onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(17);
  auto* g = model.mutable_graph();
  g->set_name("add");
  auto* in = g->add_input();
  in->set_name("x");
  auto* tt = in->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(1);
  tt->mutable_shape()->add_dim()->set_dim_param("batch");
  tt->mutable_shape()->add_dim()->set_dim_param("seq");
  auto* two = g->add_initializer();
  two->set_name("two");
  two->set_data_type(1);
  two->add_float_data(2.0f);
  auto* mul = g->add_node();
  mul->set_op_type("Mul");
  mul->set_name("mul");
  mul->add_input("x");
  mul->add_input("two");
  mul->add_output("t");
  auto* add = g->add_node();
  add->set_op_type("Add");
  add->set_name("add");
  add->add_input("x");
  add->add_input("t");
  add->add_output("sum");
  auto* softmax = g->add_node();
  softmax->set_op_type("Softmax");
  softmax->set_name("softmax");
  softmax->add_input("sum");
  softmax->add_output("y");
  auto* out = g->add_output();
  out->set_name("y");
  out->mutable_type()->mutable_tensor_type()->set_elem_type(1);
  const std::string path = ::testing::TempDir() + "/add.onnx";
  std::ofstream(path, std::ios::binary) << model.SerializeAsString();
  return path;
}

void ExpectSoftmaxOfTripled(const vm::Tensor& x, const vm::Tensor& y) {
  const int64_t rows = x.dim(0), cols = x.dim(1);
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0;
    for (int64_t c = 0; c < cols; ++c) sum += std::exp(3.0 * x.data<float>()[r * cols + c]);
    for (int64_t c = 0; c < cols; ++c) {
      ASSERT_NEAR(y.data<float>()[r * cols + c],
                  std::exp(3.0 * x.data<float>()[r * cols + c]) / sum, 1e-6);
    }
  }
}

// Scan opset 8 (batched): s0 f32[batch, 3], x f32[batch, n, 3]; per batch element the body
// s' = s + x_t runs over the n steps of x's axis 1 in `direction`, giving the final s [batch, 3]
// and every s' [batch, n, 3]. `sequence_lens` names the first input ("" = absent).
std::string WriteBatchedScanModel(int64_t direction, const std::string& sequence_lens) {
  nimble::onnx::ModelProto model;
  model.set_ir_version(3);
  model.add_opset_import()->set_version(8);
  auto* g = model.mutable_graph();
  g->set_name("batched_scan");
  auto add_value = [](nimble::onnx::ValueInfoProto* vi, const std::string& name, int elem_type,
                      std::vector<std::string> dims) {
    vi->set_name(name);
    auto* tt = vi->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(elem_type);
    for (const std::string& d : dims) {
      if (d == "3") {
        tt->mutable_shape()->add_dim()->set_dim_value(3);
      } else {
        tt->mutable_shape()->add_dim()->set_dim_param(d);
      }
    }
  };
  if (!sequence_lens.empty()) add_value(g->add_input(), sequence_lens, 6, {"batch"});
  add_value(g->add_input(), "s0", 1, {"batch", "3"});
  add_value(g->add_input(), "x", 1, {"batch", "n", "3"});
  auto* scan = g->add_node();
  scan->set_op_type("Scan");
  scan->set_name("scan");
  for (const std::string& in : {sequence_lens, std::string("s0"), std::string("x")}) {
    scan->add_input(in);
  }
  scan->add_output("s");
  scan->add_output("ys");
  auto* m = scan->add_attribute();
  m->set_name("num_scan_inputs");
  m->set_type(nimble::onnx::AttributeProto::INT);
  m->set_i(1);
  auto* dirs = scan->add_attribute();
  dirs->set_name("directions");
  dirs->set_type(nimble::onnx::AttributeProto::INTS);
  dirs->add_ints(direction);
  auto* body_attr = scan->add_attribute();
  body_attr->set_name("body");
  body_attr->set_type(nimble::onnx::AttributeProto::GRAPH);
  auto* body = body_attr->mutable_g();
  body->set_name("body");
  add_value(body->add_input(), "s_in", 1, {"3"});
  add_value(body->add_input(), "x_t", 1, {"3"});
  auto* add = body->add_node();
  add->set_op_type("Add");
  add->add_input("s_in");
  add->add_input("x_t");
  add->add_output("s_out");
  auto* copy = body->add_node();
  copy->set_op_type("Identity");
  copy->add_input("s_out");
  copy->add_output("y_t");
  add_value(body->add_output(), "s_out", 1, {"3"});
  add_value(body->add_output(), "y_t", 1, {"3"});
  add_value(g->add_output(), "s", 1, {});
  add_value(g->add_output(), "ys", 1, {});
  const std::string path =
      absl::StrCat(::testing::TempDir(), "/batched_scan_", direction, sequence_lens, ".onnx");
  std::ofstream(path, std::ios::binary) << model.SerializeAsString();
  return path;
}

TEST(CompilerTest, BatchedScanOfOpset8RunsEachBatchElementOnItsOwn) {
  for (int64_t direction : {0, 1}) {
    SCOPED_TRACE(absl::StrCat("direction ", direction));
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, CompileOnnxFile(WriteBatchedScanModel(direction, "")));
    vm::VirtualMachine machine(exe);
    for (auto [batch, n] : {std::pair<int64_t, int64_t>{2, 4}, {3, 1}, {1, 5}}) {
      vm::Tensor s0 = RandomF32({batch, 3}, 1), x = RandomF32({batch, n, 3}, 2);
      NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, machine.Run({s0, x}));
      ASSERT_EQ(out.size(), 2u);
      ASSERT_EQ(out[0].shape(), (vm::Shape{batch, 3}));
      ASSERT_EQ(out[1].shape(), (vm::Shape{batch, n, 3}));
      std::vector<float> final_states, ys(static_cast<size_t>(batch * n * 3));
      for (int64_t b = 0; b < batch; ++b) {
        std::vector<float> state(s0.data<float>() + b * 3, s0.data<float>() + b * 3 + 3);
        for (int64_t t = 0; t < n; ++t) {
          const int64_t step = direction ? n - 1 - t : t;
          for (int r = 0; r < 3; ++r) {
            state[r] += x.data<float>()[(b * n + step) * 3 + r];
            ys[(b * n + t) * 3 + r] = state[r];
          }
        }
        final_states.insert(final_states.end(), state.begin(), state.end());
      }
      ExpectNear(out[0], final_states);
      ExpectNear(out[1], ys);
    }
  }
  EXPECT_THAT(CompileOnnxFile(WriteBatchedScanModel(0, "lens")),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("sequence_lens")));
}

TEST(CompilerTest, BucketsAddExactShapeVariantsThatTheDispatcherPicks) {
  const std::string path = WriteAddModel();
  CompileOptions options;
  options.buckets["seq"] = {16, 32};
  options.buckets["batch"] = {2};
  CompileReport report;
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, CompileOnnxFile(path, options, &report));
  EXPECT_EQ(report.num_variants, 3);
  ASSERT_EQ(exe->variants.size(), 3u);
  EXPECT_EQ(exe->variants.back().name, "generic");
  vm::VirtualMachine machine(exe);
  for (int64_t seq : {16, 32, 20}) {
    vm::Tensor x = RandomF32({2, seq}, static_cast<uint32_t>(seq));
    NIMBLE_ASSERT_OK_AND_ASSIGN(int variant, machine.SelectVariant({x}));
    EXPECT_EQ(exe->variants[variant].name,
              seq == 20 ? "generic" : absl::StrCat("batch=2,seq=", seq));
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, machine.Run({x}));
    ExpectSoftmaxOfTripled(x, out[0]);
  }
  // The specialized variants have static memory plans (every dim is folded).
  for (size_t i = 0; i + 1 < exe->variants.size(); ++i) {
    EXPECT_GT(exe->variants[i].planned_bytes_hint, 0) << exe->variants[i].name;
  }
  options.buckets = {{"length", {8}}};
  EXPECT_THAT(CompileOnnxFile(path, options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'length'")));
}

// For a GPU target with NIMBLE_CODEGEN_HOIST_INPUT_COPIES=1, the model inputs that device
// kernels read (or reshape views of them, such as BERT's attention mask) are copied to the device
// before the first kernel, so that in a CUDA graph no copy node sits between two kernels.
// Compiles only: no GPU needed.
TEST(CompilerTest, DeviceInputsAreCopiedBeforeTheFirstKernel) {
  if (!vm::KernelRegistry::Global().Has("MatMul", vm::DeviceType::kCUDA)) {
    GTEST_SKIP() << "built without the CUDA kernels";
  }
  const char* saved = std::getenv("NIMBLE_CODEGEN_HOIST_INPUT_COPIES");
  if (saved != nullptr && saved[0] != '1') GTEST_SKIP() << "turned off in the environment";
  setenv("NIMBLE_CODEGEN_HOIST_INPUT_COPIES", "1", 1);
  nimble::onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(17);
  auto* g = model.mutable_graph();
  g->set_name("late_input");
  AddF32Input(g, "x", {"batch", "4"});
  AddF32Input(g, "m", {"4"});
  auto* w = g->add_initializer();
  w->set_name("w");
  w->set_data_type(1);
  w->add_dims(4);
  w->add_dims(4);
  for (int i = 0; i < 16; ++i) w->add_float_data(0.25f * static_cast<float>(i % 5));
  auto* axes = g->add_initializer();
  axes->set_name("axes");
  axes->set_data_type(7);
  axes->add_dims(1);
  axes->add_int64_data(0);
  AddOneOutputNode(g, "MatMul", {"x", "w"}, "t");
  AddOneOutputNode(g, "MatMul", {"t", "w"}, "s");
  AddOneOutputNode(g, "Unsqueeze", {"m", "axes"}, "u");  // a view of m, read by the second kernel
  AddOneOutputNode(g, "Add", {"s", "u"}, "y");
  auto* out = g->add_output();
  out->set_name("y");
  out->mutable_type()->mutable_tensor_type()->set_elem_type(1);
  const std::string path = ::testing::TempDir() + "/late_input.onnx";
  std::ofstream(path, std::ios::binary) << model.SerializeAsString();

  CompileOptions options;
  options.device = vm::Device{vm::DeviceType::kCUDA, 0};
  absl::StatusOr<std::shared_ptr<const vm::Executable>> compiled = CompileOnnxFile(path, options);
  if (saved == nullptr) unsetenv("NIMBLE_CODEGEN_HOIST_INPUT_COPIES");
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, std::move(compiled));
  const vm::Function& f = exe->functions[exe->variants.back().function];
  int first_kernel = -1, copies_to_device = 0, last_copy_to_device = -1, device_kernels = 0;
  for (int i = 0; i < static_cast<int>(f.code.size()); ++i) {
    const vm::Instruction& in = f.code[i];
    if (in.op == vm::Opcode::kInvokePacked) {
      // a: the kernel
      ASSERT_EQ(exe->kernels[in.a].device.type, vm::DeviceType::kCUDA) << exe->kernels[in.a].name;
      ++device_kernels;
      if (first_kernel < 0) first_kernel = i;
    }
    if (in.op == vm::Opcode::kDeviceCopy && in.c != 0) {  // c: the destination device
      ++copies_to_device;
      last_copy_to_device = i;
      EXPECT_LT(in.a, f.num_params) << "only the inputs go to the device";
    }
  }
  EXPECT_GE(device_kernels, 2);
  EXPECT_EQ(copies_to_device, 2);  // x and m, once each: the view reshapes m's device copy
  EXPECT_LT(last_copy_to_device, first_kernel);
}

// split-gemm-layernorm (GPU targets, NIMBLE_SPLIT_GEMM_LN=1 while off by default): a half
// GEMM with bias and residual feeding a LayerNorm becomes MatMulSplitK + SplitSumLayerNorm,
// with S = 1 for a short K and S = 4 for K >= 1536 at M = 8 (the symbolic batch counts as 1).
TEST(CompilerTest, GemmLayerNormPairsSplitOverK) {
  if (!vm::KernelRegistry::Global().Has("MatMul", vm::DeviceType::kCUDA)) {
    GTEST_SKIP() << "built without the CUDA kernels";
  }
  const char* saved = std::getenv("NIMBLE_SPLIT_GEMM_LN");
  nimble::onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(17);
  auto* g = model.mutable_graph();
  g->set_name("gemm_layernorm");
  AddF32Input(g, "x", {"batch", "8", "64"});
  AddF32Input(g, "h", {"batch", "8", "2048"});
  AddF32Input(g, "r", {"batch", "8", "32"});
  auto constant = [&](const char* name, std::vector<int64_t> dims) {
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(1);
    int64_t n = 1;
    for (int64_t d : dims) t->add_dims(d), n *= d;
    for (int64_t i = 0; i < n; ++i) t->add_float_data(0.01f * static_cast<float>(i % 7));
  };
  constant("w1", {64, 32});
  constant("w2", {2048, 32});
  constant("b", {32});
  constant("gamma", {32});
  constant("beta", {32});
  AddOneOutputNode(g, "MatMul", {"x", "w1"}, "t1");
  AddOneOutputNode(g, "Add", {"t1", "b"}, "a1");
  AddOneOutputNode(g, "Add", {"a1", "r"}, "s1");
  AddOneOutputNode(g, "LayerNormalization", {"s1", "gamma", "beta"}, "y1");
  AddOneOutputNode(g, "MatMul", {"h", "w2"}, "t2");
  AddOneOutputNode(g, "Add", {"t2", "b"}, "a2");
  AddOneOutputNode(g, "Add", {"a2", "y1"}, "s2");
  AddOneOutputNode(g, "LayerNormalization", {"s2", "gamma", "beta"}, "y2");
  auto* out = g->add_output();
  out->set_name("y2");
  out->mutable_type()->mutable_tensor_type()->set_elem_type(1);
  const std::string path = ::testing::TempDir() + "/gemm_layernorm.onnx";
  std::ofstream(path, std::ios::binary) << model.SerializeAsString();

  CompileOptions options;
  options.device = vm::Device{vm::DeviceType::kCUDA, 0};
  options.precision = Precision::kF16;
  // Off, on with f32 partial products, and on (half partials, the default): every op of the
  // pair placed on the GPU.
  for (int mode : {0, 1, 2}) {
    const bool on = mode > 0;
    SCOPED_TRACE(mode == 0 ? "off" : mode == 1 ? "on, f32 partials" : "on");
    if (on) {
      unsetenv("NIMBLE_SPLIT_GEMM_LN");  // on by default
    } else {
      setenv("NIMBLE_SPLIT_GEMM_LN", "0", 1);
    }
    if (mode == 1) {
      setenv("NIMBLE_SPLIT_GEMM_LN_HALF_PARTIALS", "0", 1);
    } else {
      unsetenv("NIMBLE_SPLIT_GEMM_LN_HALF_PARTIALS");
    }
    CompileReport report;
    absl::StatusOr<std::shared_ptr<const vm::Executable>> compiled =
        CompileOnnxFile(path, options, &report);
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, std::move(compiled));
    EXPECT_EQ(report.split_gemm_layernorms, on ? 2 : 0);
    std::vector<int64_t> splits;
    int sums = 0;
    for (const vm::KernelEntry& k : exe->kernels) {
      if (k.name == "MatMulSplitK") {
        EXPECT_EQ(k.device.type, vm::DeviceType::kCUDA);
        splits.push_back(k.attrs.GetOr<int64_t>("splits", 0));
      }
      if (k.name == "SplitSumLayerNorm") {
        EXPECT_EQ(k.device.type, vm::DeviceType::kCUDA);
        ++sums;
      }
      // Nothing of the pair's neighbourhood falls back to the CPU.
      EXPECT_TRUE(k.device.type == vm::DeviceType::kCUDA || k.name == "Cast" ||
                  k.name == "DeviceCopy")
          << k.name << " on the CPU";
    }
    const std::vector<int64_t> want = on ? std::vector<int64_t>{1, 4} : std::vector<int64_t>();
    EXPECT_EQ(splits, want);
    EXPECT_EQ(sums, on ? 2 : 0);
  }
  unsetenv("NIMBLE_SPLIT_GEMM_LN_HALF_PARTIALS");
  if (saved != nullptr) {
    setenv("NIMBLE_SPLIT_GEMM_LN", saved, 1);
  } else {
    unsetenv("NIMBLE_SPLIT_GEMM_LN");
  }
}

TEST(CompilerTest, ExecutableSurvivesSaveAndLoad) {
  const std::string path = WriteAddModel();
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, CompileOnnxFile(path));
  const std::string nbx = ::testing::TempDir() + "/add.nbx";
  ASSERT_THAT(exe->SaveFile(nbx), IsOk());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto loaded, vm::Executable::LoadFile(nbx));
  EXPECT_EQ(loaded->Disassemble(), exe->Disassemble());
  vm::VirtualMachine machine(loaded);
  vm::Tensor x = RandomF32({3, 5}, 9);
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, machine.Run({x}));
  ExpectSoftmaxOfTripled(x, out[0]);
}

}  // namespace
}  // namespace nimble::compiler
