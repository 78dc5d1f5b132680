#include "vm/virtual_machine.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vm/vm_test_util.h"

namespace nimble::vm {
namespace {

using ::nimble::testing::IsOk;
using ::nimble::testing::StatusIs;
using ::nimble::vm::testing::BoundedVariant;
using ::nimble::vm::testing::F32;
using ::nimble::vm::testing::FunctionBuilder;
using ::nimble::vm::testing::GenericVariant;
using ::nimble::vm::testing::Sig;
using ::nimble::vm::testing::SymbolicAddFunction;
using ::nimble::vm::testing::TestRegistry;
using ::nimble::vm::testing::ToVector;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int kF32 = static_cast<int>(DType::kF32);

MATCHER_P(IsOkAndHolds, expected, "is OK and holds the value") {
  if (!arg.ok()) {
    *result_listener << "status is " << arg.status();
    return false;
  }
  *result_listener << "value is " << *arg;
  return *arg == expected;
}
const TensorSignature kScalarSig = Sig("s", DType::kI64, {});

// An executable whose entry (function 0) takes `inputs`; the remaining functions are helpers.
absl::StatusOr<std::shared_ptr<const Executable>> Build(std::vector<Function> functions,
                                                        std::vector<TensorSignature> inputs,
                                                        std::vector<KernelEntry> kernels = {}) {
  Executable exe;
  exe.functions = std::move(functions);
  exe.inputs = std::move(inputs);
  exe.kernels = std::move(kernels);
  exe.devices = {kCpu, Device{DeviceType::kCUDA, 0}};
  exe.variants = {GenericVariant()};
  return Executable::Finalize(std::move(exe), TestRegistry());
}

int64_t AsScalar(const Value& v) {
  const int64_t* s = std::get_if<int64_t>(&v);
  EXPECT_NE(s, nullptr) << "value is not a scalar";
  return s ? *s : INT64_MIN;
}

// sum(n) = 0 + 1 + ... + (n-1), with a loop of If/Goto and scalar arithmetic.
Function SumFunction() {
  FunctionBuilder b("sum", 1, 4);
  b.LoadConsti(1, 0);                    // 0: i = 0
  b.LoadConsti(2, 0);                    // 1: acc = 0
  b.Scalar(3, 1, ScalarOp::kLt, 0);      // 2: c = i < n
  b.Emit(Opcode::kIf, -1, 3, 1, 4);      // 3: if c then 4 else 7
  b.Scalar(2, 2, ScalarOp::kAdd, 1);     // 4: acc += i
  b.ScalarImm(1, 1, ScalarOp::kAdd, 1);  // 5: i += 1
  b.Emit(Opcode::kGoto, -1, -4);         // 6: goto 2
  b.Ret(2);                              // 7
  return std::move(b).Build();
}

TEST(VirtualMachineTest, SumLoop) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, Build({SumFunction()}, {kScalarSig}));
  VirtualMachine vm(exe);
  NIMBLE_ASSERT_OK_AND_ASSIGN(Value result, vm.Invoke(0, {int64_t{10}}));
  EXPECT_EQ(AsScalar(result), 45);
  NIMBLE_ASSERT_OK_AND_ASSIGN(result, vm.Invoke(0, {int64_t{0}}));
  EXPECT_EQ(AsScalar(result), 0);
  NIMBLE_ASSERT_OK_AND_ASSIGN(result, vm.Invoke(0, {int64_t{1000}}));
  EXPECT_EQ(AsScalar(result), 499500);
}

TEST(VirtualMachineTest, TensorSelectViewsOneLeadingSlice) {
  FunctionBuilder b("select", 2, 3);
  b.Emit(Opcode::kTensorSelect, 2, 0, 1);
  b.Ret(2);
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto exe, Build({std::move(b).Build()}, {Sig("t", DType::kF32, {3, 2}), kScalarSig}));
  VirtualMachine vm(exe);
  const Tensor t = F32({1, 2, 3, 4, 5, 6}, {3, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(Value row, vm.Invoke(0, {t, int64_t{2}}));
  const Tensor* view = std::get_if<Tensor>(&row);
  ASSERT_NE(view, nullptr);
  EXPECT_EQ(view->shape(), Shape({2}));
  EXPECT_EQ(view->data<float>()[0], 5);
  EXPECT_EQ(view->storage(), t.storage()) << "a view, not a copy";
  EXPECT_THAT(vm.Invoke(0, {t, int64_t{3}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("index 3 is outside")));
  EXPECT_THAT(vm.Invoke(0, {t, int64_t{-1}}), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(VirtualMachineTest, InvokeChecksItsArguments) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, Build({SumFunction()}, {kScalarSig}));
  VirtualMachine vm(exe);
  EXPECT_THAT(vm.Invoke(0, {}), StatusIs(absl::StatusCode::kInvalidArgument,
                                         HasSubstr("'sum' takes 1 arguments, got 0")));
  EXPECT_THAT(vm.Invoke(3, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no function 3")));
  // A tensor where a scalar is expected is the executable's bug, reported with its location.
  EXPECT_THAT(vm.Invoke(0, {F32({1})}),
              StatusIs(absl::StatusCode::kInternal,
                       HasSubstr("function 'sum' pc 2 (scalar): register r0 holds a tensor, "
                                 "expected a scalar")));
}

absl::StatusOr<std::shared_ptr<const Executable>> SymbolicAddExecutable() {
  Executable exe;
  exe.functions = {SymbolicAddFunction()};
  exe.kernels = {KernelEntry{"AddF32", kCpu, {}}};
  exe.devices = {kCpu};
  exe.inputs = {Sig("x", DType::kF32, {-1}, {"n"}), Sig("y", DType::kF32, {-1}, {"n"})};
  exe.outputs = {Sig("z", DType::kF32, {-1}, {"n"})};
  exe.variants = {GenericVariant()};
  exe.symbol_bindings = {{"n", 0, 0}, {"n", 1, 0}};
  return Executable::Finalize(std::move(exe), TestRegistry());
}

TEST(VirtualMachineTest, SymbolicAllocationAndInvokePacked) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, SymbolicAddExecutable());
  CpuAllocator allocator;
  VirtualMachineOptions options;
  options.allocators = {{kCpu, &allocator}};
  VirtualMachine vm(exe, options);
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::vector<Tensor> out, vm.Run({F32({1, 2, 3}), F32({10, 20, 30})}));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].TypeString(), "f32[3]");
  EXPECT_THAT(ToVector(out[0]), ElementsAre(11, 22, 33));
  // The output storage came from the allocator in the options (12 bytes -> one 64 B class).
  EXPECT_EQ(allocator.stats().in_use_bytes, 64);
  out.clear();
  EXPECT_EQ(allocator.stats().in_use_bytes, 0);
  // Same instance, another length.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, vm.Run({F32({1, 2, 3, 4, 5}), F32({1, 1, 1, 1, 1})}));
  EXPECT_THAT(ToVector(out[0]), ElementsAre(2, 3, 4, 5, 6));
}

TEST(VirtualMachineTest, InvokePackedWithShapeFunction) {
  FunctionBuilder b("main", 2, 3);
  b.Emit(Opcode::kInvokePacked, -1, 0, 2, kInvokePackedShapeFunction,
         EncodeOutputDTypes({DType::kF32}), {0, 1, 2});
  b.Ret(2);
  // x and y have independent symbols, so mismatched shapes reach the shape function.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto exe, Build({std::move(b).Build()},
                      {Sig("x", DType::kF32, {-1, 2}), Sig("y", DType::kF32, {-1, 2})},
                      {KernelEntry{"AddF32", kCpu, {}}}));
  VirtualMachine vm(exe);
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::vector<Tensor> out, vm.Run({F32({1, 2, 3, 4}, {2, 2}),
                                                               F32({0.5, 0.5, 0.5, 0.5}, {2, 2})}));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].TypeString(), "f32[2, 2]");
  EXPECT_THAT(ToVector(out[0]), ElementsAre(1.5, 2.5, 3.5, 4.5));
  EXPECT_THAT(vm.Run({F32({1, 2, 3, 4}, {2, 2}), F32({1, 2}, {1, 2})}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("pc 0 (invoke_packed): shape function of 'AddF32': AddF32: "
                                 "input 1 f32[1, 2] differs from f32[2, 2]")));
}

TEST(VirtualMachineTest, KernelAllocatesItsOutputs) {
  FunctionBuilder b("main", 1, 2);
  b.Emit(Opcode::kInvokePacked, -1, 0, 1, kInvokePackedAllocatesOutputs, 0, {0, 1});
  b.Ret(1);
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, Build({std::move(b).Build()}, {Sig("x", DType::kF32, {-1})},
                                              {KernelEntry{"NonZero", kCpu, {}}}));
  VirtualMachine vm(exe);
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::vector<Tensor> out, vm.Run({F32({0, 3, 0, 5, 1})}));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].TypeString(), "i64[3]");
  EXPECT_THAT(std::vector<int64_t>(out[0].data<int64_t>(), out[0].data<int64_t>() + 3),
              ElementsAre(1, 3, 4));
}

TEST(VirtualMachineTest, KernelErrorsNameTheKernel) {
  FunctionBuilder b("main", 2, 3);
  b.Emit(Opcode::kLoadConst, 2, 0);
  b.Emit(Opcode::kInvokePacked, -1, 0, 2, 0, 0, {0, 1, 2});
  b.Ret(2);
  Executable exe;
  exe.functions = {std::move(b).Build()};
  exe.constants = {F32({0, 0, 0})};  // wrong output shape for inputs of 2 elements
  exe.kernels = {KernelEntry{"AddF32", kCpu, {}}};
  exe.inputs = {Sig("x", DType::kF32, {2}), Sig("y", DType::kF32, {2})};
  exe.variants = {GenericVariant()};
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto loaded, Executable::Finalize(std::move(exe), TestRegistry()));
  VirtualMachine vm(loaded);
  EXPECT_THAT(vm.Run({F32({1, 2}), F32({3, 4})}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("function 'main' pc 1 (invoke_packed): kernel 'AddF32': AddF32: "
                                 "f32[2] + f32[2] -> f32[3]")));
}

// pair(a, b) = ADT tag 3 (a, b); main(x, y) calls it through a closure capturing x.
TEST(VirtualMachineTest, ClosuresAndADTs) {
  FunctionBuilder m("main", 2, 9);
  m.Emit(Opcode::kAllocClosure, 2, 1, -1, -1, 0, {0});   // r2 = closure pair(x, .)
  m.Emit(Opcode::kInvokeClosure, 3, 2, -1, -1, 0, {1});  // r3 = r2(y)
  m.Emit(Opcode::kGetTag, 4, 3);
  m.Emit(Opcode::kGetField, 5, 3, 0);
  m.Emit(Opcode::kGetField, 6, 3, 1);
  m.ScalarImm(7, 5, ScalarOp::kMul, 100);
  m.Scalar(7, 7, ScalarOp::kAdd, 6);
  m.ScalarImm(8, 4, ScalarOp::kMul, 10000);
  m.Scalar(7, 7, ScalarOp::kAdd, 8);
  m.Ret(7);
  FunctionBuilder p("pair", 2, 3);
  p.Emit(Opcode::kAllocADT, 2, 3, -1, -1, 0, {0, 1});
  p.Ret(2);
  FunctionBuilder g("get", 2, 3);  // get(adt, _) = field 2 of adt: out of range
  g.Emit(Opcode::kGetField, 2, 0, 2);
  g.Ret(2);
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto exe, Build({std::move(m).Build(), std::move(p).Build(), std::move(g).Build()},
                      {kScalarSig, kScalarSig}));
  VirtualMachine vm(exe);
  NIMBLE_ASSERT_OK_AND_ASSIGN(Value result, vm.Invoke(0, {int64_t{7}, int64_t{9}}));
  EXPECT_EQ(AsScalar(result), 3 * 10000 + 7 * 100 + 9);

  NIMBLE_ASSERT_OK_AND_ASSIGN(Value adt, vm.Invoke(1, {int64_t{1}, F32({2})}));
  const ADTRef* ref = std::get_if<ADTRef>(&adt);
  ASSERT_NE(ref, nullptr);
  EXPECT_EQ((*ref)->tag, 3);
  ASSERT_EQ((*ref)->fields.size(), 2u);
  EXPECT_EQ(AsScalar((*ref)->fields[0]), 1);
  EXPECT_THAT(vm.Invoke(2, {adt, int64_t{0}}),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("field 2 of an ADT with 2 fields")));
}

Value Seq(std::vector<Tensor> tensors) {
  auto adt = std::make_shared<ADT>();
  adt->tag = kSequenceTag;
  for (Tensor& t : tensors) adt->fields.push_back(std::move(t));
  return ADTRef(std::move(adt));
}

// main(seq, pos) = (insert(seq, seq[pos], at 0) minus its last element, size as a tensor,
// whether an optional of it has a value).
TEST(VirtualMachineTest, SequenceInstructions) {
  FunctionBuilder b("main", 2, 12);
  b.Emit(Opcode::kGetFieldReg, 2, 0, 1, 0);        // r2 = seq[pos]
  b.LoadConsti(3, 0);                              // r3 = 0
  b.Emit(Opcode::kAdtInsert, 4, 0, 2, 0, 0, {3});  // r4 = insert r2 at 0
  b.Emit(Opcode::kAdtErase, 5, 4, -1, 0, 0, {});   // r5 = r4 without the last
  b.Emit(Opcode::kAdtSize, 6, 5);                  // r6 = size
  b.Emit(Opcode::kMakeScalarTensor, 7, 6, -1, static_cast<int>(DType::kI64));
  b.Emit(Opcode::kAllocADT, 8, kOptionalTag, -1, -1, 0, {5});
  b.Emit(Opcode::kOptionalHas, 9, 8);
  b.Emit(Opcode::kMakeScalarTensor, 10, 9, -1, static_cast<int>(DType::kBool));
  b.Emit(Opcode::kAllocADT, 11, kTupleTag, -1, -1, 0, {5, 7, 10});
  b.Ret(11);
  Executable exe;
  exe.functions = {std::move(b).Build()};
  exe.strings = {"node 'at'"};
  TensorSignature seq_sig = Sig("seq", DType::kF32, {});
  seq_sig.kind = ValueKind::kSequence;
  exe.inputs = {seq_sig, kScalarSig};
  exe.inputs[1].dtype = DType::kI64;
  TensorSignature out_seq = seq_sig;
  out_seq.name = "out";
  exe.outputs = {out_seq, Sig("n", DType::kI64, {}), Sig("has", DType::kBool, {})};
  exe.variants = {GenericVariant()};
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto loaded, Executable::Finalize(std::move(exe), TestRegistry()));
  VirtualMachine vm(loaded);

  auto scalar = [](int64_t v) {
    Tensor t = *Tensor::Empty(DType::kI64, {});
    *t.data<int64_t>() = v;
    return t;
  };
  // A pos register must be a scalar: go through Invoke with an int64 for the position.
  const Value seq = Seq({F32({1}), F32({2, 3}), F32({4, 5, 6})});
  NIMBLE_ASSERT_OK_AND_ASSIGN(Value result, vm.Invoke(0, {seq, int64_t{-1}}));
  const ADTRef& tuple = std::get<ADTRef>(result);
  ASSERT_EQ(tuple->fields.size(), 3u);
  const ADTRef& out = std::get<ADTRef>(tuple->fields[0]);
  EXPECT_EQ(out->tag, kSequenceTag);
  ASSERT_EQ(out->fields.size(), 3u);
  EXPECT_THAT(ToVector(std::get<Tensor>(out->fields[0])), ElementsAre(4, 5, 6));
  EXPECT_THAT(ToVector(std::get<Tensor>(out->fields[1])), ElementsAre(1));
  EXPECT_THAT(ToVector(std::get<Tensor>(out->fields[2])), ElementsAre(2, 3));
  EXPECT_EQ(*std::get<Tensor>(tuple->fields[1]).data<int64_t>(), 3);
  EXPECT_TRUE(*std::get<Tensor>(tuple->fields[2]).data<bool>());

  // Out of range positions are the caller's error, named by the instruction's string.
  EXPECT_THAT(vm.Invoke(0, {seq, int64_t{3}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("node 'at': position 3 is out of range for a sequence of 3")));
  EXPECT_THAT(vm.Invoke(0, {Seq({}), int64_t{0}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("sequence of 0 tensors")));

  // RunValues checks kinds and element dtypes.
  EXPECT_THAT(vm.RunValues({F32({1}), Value(scalar(0))}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'seq' must be a sequence of tensors")));
  Tensor i64 = scalar(5);
  EXPECT_THAT(vm.RunValues({Seq({F32({1}), i64}), Value(scalar(0))}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'seq' element 1: dtype is i64")));
  // Run() refuses models with sequence inputs through the kind check as well.
  EXPECT_THAT(vm.Run({F32({1}), scalar(0)}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must be a sequence")));
}

TEST(VirtualMachineTest, TupleOutputs) {
  FunctionBuilder b("main", 2, 3);
  b.Emit(Opcode::kAllocADT, 2, 0, -1, -1, 0, {1, 0});
  b.Ret(2);
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto exe,
      Build({std::move(b).Build()}, {Sig("x", DType::kF32, {1}), Sig("y", DType::kF32, {2})}));
  VirtualMachine vm(exe);
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::vector<Tensor> out, vm.Run({F32({1}), F32({2, 3})}));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_THAT(ToVector(out[0]), ElementsAre(2, 3));
  EXPECT_THAT(ToVector(out[1]), ElementsAre(1));
}

TEST(VirtualMachineTest, AssertFormatsItsMessage) {
  FunctionBuilder b("main", 1, 3);
  b.LoadConsti(1, 128);
  b.Scalar(2, 0, ScalarOp::kEq, 1);
  b.Emit(Opcode::kAssert, -1, 2, 0, -1, 0, {0, 1});
  b.Ret(0);
  Executable exe;
  exe.functions = {std::move(b).Build()};
  exe.strings = {"sequence length {} must be {} {}"};
  exe.inputs = {kScalarSig};
  exe.variants = {GenericVariant()};
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto loaded, Executable::Finalize(std::move(exe), TestRegistry()));
  VirtualMachine vm(loaded);
  absl::StatusOr<Value> result = vm.Invoke(0, {int64_t{7}});
  EXPECT_EQ(result.status(), absl::InvalidArgumentError("sequence length 7 must be 128 {}"));
  NIMBLE_ASSERT_OK_AND_ASSIGN(Value ok, vm.Invoke(0, {int64_t{128}}));
  EXPECT_EQ(AsScalar(ok), 128);
}

TEST(VirtualMachineTest, FatalFailsWithItsString) {
  FunctionBuilder b("main", 0, 1);
  b.Emit(Opcode::kFatal, -1, 0);
  Executable exe;
  exe.functions = {std::move(b).Build()};
  exe.strings = {"Reshape: cannot reshape f32[6] to [4]"};
  exe.variants = {GenericVariant()};
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto loaded, Executable::Finalize(std::move(exe), TestRegistry()));
  VirtualMachine vm(loaded);
  EXPECT_EQ(vm.Run({}).status(),
            absl::InvalidArgumentError("Reshape: cannot reshape f32[6] to [4]"));
}

absl::StatusOr<std::shared_ptr<const Executable>> BertLikeExecutable() {
  FunctionBuilder b("main", 2, 2);
  b.Ret(0);
  Executable exe;
  exe.functions = {std::move(b).Build()};
  exe.inputs = {Sig("input_ids", DType::kI64, {-1, 128}, {"batch", ""}),
                Sig("mask", DType::kI64, {-1, 128}, {"batch", ""})};
  exe.variants = {GenericVariant()};
  exe.symbol_bindings = {{"batch", 0, 0}, {"batch", 1, 0}};
  return Executable::Finalize(std::move(exe), TestRegistry());
}

Tensor I64(std::vector<int64_t> shape) { return *Tensor::Empty(DType::kI64, shape); }

TEST(VirtualMachineTest, InputValidation) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, BertLikeExecutable());
  VirtualMachine vm(exe);
  EXPECT_THAT(vm.Run({I64({2, 128})}), StatusIs(absl::StatusCode::kInvalidArgument,
                                                HasSubstr("the model takes 2 inputs, got 1")));
  EXPECT_THAT(vm.Run({*Tensor::Empty(DType::kF32, {2, 128}), I64({2, 128})}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'input_ids': dtype is f32 but the model requires i64")));
  EXPECT_THAT(vm.Run({I64({2, 128}), I64({256})}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'mask': rank is 1 but the model requires 2")));
  EXPECT_THAT(vm.Run({I64({2, 7}), I64({2, 128})}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'input_ids': dim 1 is 7 but the model requires 128")));
  EXPECT_THAT(vm.Run({I64({2, 128}), I64({3, 128})}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input 'mask': dim 0 is 3 but symbol 'batch' is 2 (dim 0 of "
                                 "input 'input_ids')")));
  EXPECT_THAT(vm.Run({Tensor(), I64({2, 128})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'input_ids' is null")));
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::vector<Tensor> out, vm.Run({I64({3, 128}), I64({3, 128})}));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].TypeString(), "i64[3, 128]");
}

// Variant 0 (1 <= seq <= 8) returns c0 = [1]; the generic variant returns c1 = [2].
TEST(VirtualMachineTest, VariantDispatch) {
  FunctionBuilder small("small", 1, 2);
  small.Emit(Opcode::kLoadConst, 1, 0);
  small.Ret(1);
  FunctionBuilder generic("generic", 1, 2);
  generic.Emit(Opcode::kLoadConst, 1, 1);
  generic.Ret(1);
  Executable exe;
  exe.functions = {std::move(small).Build(), std::move(generic).Build()};
  exe.constants = {F32({1}), F32({2})};
  exe.inputs = {Sig("x", DType::kF32, {-1}, {"seq"})};
  exe.variants = {BoundedVariant(0, "seq", 1, 8), GenericVariant(1)};
  exe.symbol_bindings = {{"seq", 0, 0}};
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto loaded, Executable::Finalize(std::move(exe), TestRegistry()));
  VirtualMachine vm(loaded);
  auto marker = [&](int64_t seq) -> float {
    Tensor x = *Tensor::Empty(DType::kF32, {seq});
    absl::StatusOr<std::vector<Tensor>> out = vm.Run({x});
    EXPECT_THAT(out, IsOk());
    return out.ok() ? (*out)[0].data<float>()[0] : -1;
  };
  EXPECT_EQ(marker(1), 1);
  EXPECT_EQ(marker(4), 1);
  EXPECT_EQ(marker(8), 1);
  EXPECT_EQ(marker(9), 2);
  EXPECT_EQ(marker(0), 2);
  EXPECT_EQ(marker(1000), 2);
  EXPECT_THAT(vm.SelectVariant({*Tensor::Empty(DType::kF32, {5})}), IsOkAndHolds(0));
}

// A VM marks its executable's constants as never written (Storage::constant), which kernels
// rely on to cache what they derive from them (the LSTM's repacked R); nothing else is marked.
TEST(VirtualMachineTest, MarksTheExecutablesConstants) {
  FunctionBuilder f("f", 1, 2);
  f.Emit(Opcode::kLoadConst, 1, 0);
  f.Ret(1);
  Executable exe;
  exe.functions = {std::move(f).Build()};
  exe.constants = {F32({3})};
  exe.inputs = {Sig("x", DType::kF32, {-1}, {"seq"})};
  exe.variants = {GenericVariant(0)};
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto loaded, Executable::Finalize(std::move(exe), TestRegistry()));
  EXPECT_FALSE(loaded->constants[0].storage()->constant());
  VirtualMachine vm(loaded);
  EXPECT_TRUE(loaded->constants[0].storage()->constant());
  Tensor x = *Tensor::Empty(DType::kF32, {2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::vector<Tensor> out, vm.Run({x}));
  EXPECT_EQ(out[0].data<float>()[0], 3.0f);
  EXPECT_FALSE(x.storage()->constant());
}

TEST(VirtualMachineTest, NoVariantAccepts) {
  FunctionBuilder f("f", 1, 1);
  f.Ret(0);
  Executable exe;
  exe.functions = {std::move(f).Build()};
  exe.inputs = {Sig("x", DType::kF32, {-1}, {"seq"})};
  exe.variants = {BoundedVariant(0, "seq", 1, 8)};
  exe.symbol_bindings = {{"seq", 0, 0}};
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto loaded, Executable::Finalize(std::move(exe), TestRegistry()));
  VirtualMachine vm(loaded);
  EXPECT_THAT(vm.Run({*Tensor::Empty(DType::kF32, {9})}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("no variant of the model accepts these shapes (seq=9)")));
}

// One function per ScalarOp: f<op>(x, y) = x <op> y.
class ScalarOpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<Function> functions;
    for (int op = 0; op < kNumScalarOps; ++op) {
      FunctionBuilder b(absl::StrCat("op", op), 2, 3);
      b.Scalar(2, 0, static_cast<ScalarOp>(op), 1);
      b.Ret(2);
      functions.push_back(std::move(b).Build());
    }
    FunctionBuilder imm("imm", 2, 3);
    imm.ScalarImm(2, 0, ScalarOp::kSub, 5);
    imm.Ret(2);
    functions.push_back(std::move(imm).Build());
    auto exe = Build(std::move(functions), {kScalarSig, kScalarSig});
    ASSERT_THAT(exe, IsOk());
    vm_ = std::make_unique<VirtualMachine>(*exe);
  }

  absl::StatusOr<int64_t> Apply(ScalarOp op, int64_t x, int64_t y) {
    NIMBLE_ASSIGN_OR_RETURN(Value v, vm_->Invoke(static_cast<int>(op), {x, y}));
    return AsScalar(v);
  }

  std::unique_ptr<VirtualMachine> vm_;
};

TEST_F(ScalarOpTest, Values) {
  struct Case {
    ScalarOp op;
    int64_t x, y, expected;
  };
  const Case cases[] = {
      {ScalarOp::kAdd, 2, 3, 5},
      {ScalarOp::kSub, 2, 3, -1},
      {ScalarOp::kMul, -4, 3, -12},
      {ScalarOp::kFloorDiv, 7, 2, 3},
      {ScalarOp::kFloorDiv, -7, 2, -4},
      {ScalarOp::kFloorDiv, 7, -2, -4},
      {ScalarOp::kFloorDiv, -7, -2, 3},
      {ScalarOp::kFloorDiv, -8, 2, -4},
      {ScalarOp::kMod, 7, 2, 1},
      {ScalarOp::kMod, -7, 2, 1},
      {ScalarOp::kMod, 7, -2, -1},
      {ScalarOp::kMod, -7, -2, -1},
      {ScalarOp::kMod, -8, 2, 0},
      {ScalarOp::kMod, INT64_MIN, -1, 0},
      {ScalarOp::kMin, 3, -1, -1},
      {ScalarOp::kMax, 3, -1, 3},
      {ScalarOp::kEq, 2, 2, 1},
      {ScalarOp::kEq, 2, 3, 0},
      {ScalarOp::kNe, 2, 2, 0},
      {ScalarOp::kLt, 1, 2, 1},
      {ScalarOp::kLt, 2, 2, 0},
      {ScalarOp::kLe, 2, 2, 1},
      {ScalarOp::kLe, 3, 2, 0},
      {ScalarOp::kAnd, 2, 0, 0},
      {ScalarOp::kAnd, 2, 3, 1},
      {ScalarOp::kOr, 0, 0, 0},
      {ScalarOp::kOr, 0, -5, 1},
      {ScalarOp::kCeilDiv, 7, 2, 4},
      {ScalarOp::kCeilDiv, -7, 2, -3},
      {ScalarOp::kCeilDiv, 8, 2, 4},
      {ScalarOp::kCeilDiv, 7, -2, -3},
      {ScalarOp::kCeilDiv, -7, -2, 4},
      {ScalarOp::kAdd, INT64_MAX, INT64_MIN, -1},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(Apply(c.op, c.x, c.y), IsOkAndHolds(c.expected))
        << "op " << static_cast<int>(c.op) << " (" << c.x << ", " << c.y << ")";
  }
  NIMBLE_ASSERT_OK_AND_ASSIGN(Value v, vm_->Invoke(kNumScalarOps, {int64_t{3}, int64_t{0}}));
  EXPECT_EQ(AsScalar(v), -2);
}

TEST_F(ScalarOpTest, OverflowAndDivisionByZero) {
  const auto overflow =
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("shape arithmetic overflows"));
  EXPECT_THAT(Apply(ScalarOp::kAdd, INT64_MAX, 1), overflow);
  EXPECT_THAT(Apply(ScalarOp::kSub, INT64_MIN, 1), overflow);
  EXPECT_THAT(Apply(ScalarOp::kMul, int64_t{1} << 40, int64_t{1} << 40), overflow);
  EXPECT_THAT(Apply(ScalarOp::kFloorDiv, INT64_MIN, -1), overflow);
  EXPECT_THAT(Apply(ScalarOp::kCeilDiv, INT64_MIN, -1), overflow);
  const auto by_zero = StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("division by zero"));
  EXPECT_THAT(Apply(ScalarOp::kFloorDiv, 1, 0), by_zero);
  EXPECT_THAT(Apply(ScalarOp::kMod, 1, 0), by_zero);
  EXPECT_THAT(Apply(ScalarOp::kCeilDiv, 1, 0), by_zero);
  EXPECT_THAT(Apply(ScalarOp::kMul, INT64_MAX, 2),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("function 'op2' pc 0 (scalar): shape arithmetic overflows "
                                 "(9223372036854775807 mul 2)")));
}

// fact(n) = n <= 1 ? 1 : n * fact(n - 1), through Invoke frames.
Function FactorialFunction() {
  FunctionBuilder b("fact", 1, 6);
  b.LoadConsti(1, 1);                             // 0
  b.Scalar(2, 0, ScalarOp::kLe, 1);               // 1
  b.Emit(Opcode::kIf, -1, 2, 1, 2);               // 2: if n <= 1 then 3 else 4
  b.Ret(1);                                       // 3
  b.ScalarImm(3, 0, ScalarOp::kSub, 1);           // 4
  b.Emit(Opcode::kInvoke, 4, 0, -1, -1, 0, {3});  // 5: r4 = fact(n - 1)
  b.Scalar(5, 0, ScalarOp::kMul, 4);              // 6
  b.Ret(5);                                       // 7
  return std::move(b).Build();
}

TEST(VirtualMachineTest, RecursionAndCallDepth) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, Build({FactorialFunction()}, {kScalarSig}));
  VirtualMachine vm(exe);
  NIMBLE_ASSERT_OK_AND_ASSIGN(Value v, vm.Invoke(0, {int64_t{20}}));
  EXPECT_EQ(AsScalar(v), 2432902008176640000);
  // 21! overflows 20 frames deep; the error unwinds every frame.
  EXPECT_THAT(vm.Invoke(0, {int64_t{21}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("pc 6 (scalar)")));
  NIMBLE_ASSERT_OK_AND_ASSIGN(v, vm.Invoke(0, {int64_t{5}}));
  EXPECT_EQ(AsScalar(v), 120);
  // Deep recursion is bounded, not a stack overflow.
  EXPECT_THAT(vm.Invoke(0, {int64_t{100000}}),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("call depth exceeds 1024")));
  VirtualMachineOptions deep;
  deep.max_call_depth = 50000;
  VirtualMachine deep_vm(exe, deep);
  NIMBLE_ASSERT_OK_AND_ASSIGN(v, deep_vm.Invoke(0, {int64_t{2}}));
  EXPECT_EQ(AsScalar(v), 2);
  // 20000 frames deep without C++ recursion: ends in the overflow of the product.
  EXPECT_THAT(deep_vm.Invoke(0, {int64_t{20000}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("overflows")));
}

TEST(VirtualMachineTest, ShapeInstructions) {
  FunctionBuilder b("main", 1, 10);
  b.Emit(Opcode::kShapeOf, 1, 0);                              // r1 = [a, b]
  b.Emit(Opcode::kTensorElement, 2, 1, 1);                     // r2 = b
  b.Emit(Opcode::kTensorElement, 3, 1, 0);                     // r3 = a
  b.Scalar(4, 2, ScalarOp::kMul, 3);                           // r4 = a*b
  b.Emit(Opcode::kReshapeTensor, 5, 0, -1, -1, 0, {4});        // r5 = x as [a*b]
  b.Emit(Opcode::kMakeShapeTensor, 6, -1, -1, -1, 0, {2, 3});  // r6 = [b, a]
  b.Emit(Opcode::kDeviceCopy, 7, 5, 0, 0);                     // r7 = copy of r5
  b.Emit(Opcode::kTensorDim, 8, 7, 0);                         // r8 = a*b
  b.Emit(Opcode::kKillRegister, -1, 5);
  b.Emit(Opcode::kMakeShapeTensor, 9, -1, -1, -1, 0, {8});  // r9 = [a*b]
  b.Emit(Opcode::kAllocADT, 9, 0, -1, -1, 0, {7, 6, 1, 9});
  b.Ret(9);
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe,
                              Build({std::move(b).Build()}, {Sig("x", DType::kF32, {-1, -1})}));
  VirtualMachine vm(exe);
  const Tensor x = F32({1, 2, 3, 4, 5, 6}, {2, 3});
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::vector<Tensor> out, vm.Run({x}));
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0].TypeString(), "f32[6]");
  EXPECT_THAT(ToVector(out[0]), ElementsAre(1, 2, 3, 4, 5, 6));
  EXPECT_NE(out[0].raw_data(), x.raw_data());  // a copy, not a view
  auto ints = [](const Tensor& t) {
    return std::vector<int64_t>(t.data<int64_t>(), t.data<int64_t>() + t.num_elements());
  };
  EXPECT_THAT(ints(out[1]), ElementsAre(3, 2));
  EXPECT_THAT(ints(out[2]), ElementsAre(2, 3));
  EXPECT_THAT(ints(out[3]), ElementsAre(6));
}

TEST(VirtualMachineTest, ShapeInstructionErrors) {
  FunctionBuilder elem("elem", 1, 2);
  elem.Emit(Opcode::kTensorElement, 1, 0, 5);
  elem.Ret(1);
  FunctionBuilder copy("copy", 1, 2);
  copy.Emit(Opcode::kDeviceCopy, 1, 0, 0, 1);
  copy.Ret(1);
  FunctionBuilder fit("fit", 1, 4);
  fit.LoadConsti(1, 16);
  fit.Emit(Opcode::kAllocStorage, 2, 1, 0, 64);
  fit.LoadConsti(1, 0);
  fit.Emit(Opcode::kAllocTensor, 3, 2, 1, kF32, 0, {2, 3});
  fit.Ret(3);
  FunctionBuilder negative("negative", 1, 3);
  negative.LoadConsti(1, -1);
  negative.Emit(Opcode::kAllocStorage, 2, 1, 0, 0);
  negative.Ret(2);
  FunctionBuilder reshape("reshape", 1, 3);
  reshape.LoadConsti(1, 4);
  reshape.Emit(Opcode::kReshapeTensor, 2, 0, -1, -1, 0, {1});
  reshape.Ret(2);
  FunctionBuilder dim("dim", 1, 2);
  dim.Emit(Opcode::kTensorDim, 1, 0, 1);
  dim.Ret(1);
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, Build({std::move(elem).Build(), std::move(copy).Build(),
                                               std::move(fit).Build(), std::move(negative).Build(),
                                               std::move(reshape).Build(), std::move(dim).Build()},
                                              {Sig("x", DType::kI64, {-1})}));
  VirtualMachine vm(exe);
  const Tensor x = Tensor::FromVector<int64_t>({1, 2, 3}, {3});
  EXPECT_THAT(vm.Invoke(0, {x}), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("pc 0 (tensor_element): element 5 of i64[3] "
                                                    "is out of range")));
  EXPECT_THAT(vm.Invoke(0, {F32({1, 2, 3, 4, 5, 6})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs an i32 or i64")));
  if (KernelRegistry::Global().GetDeviceApi(DeviceType::kCUDA) == nullptr) {
    // Without the CUDA device compiled in there is no allocator for it (with it, the copy is
    // tested on a GPU by compiler_cuda_bert_test).
    EXPECT_THAT(vm.Invoke(1, {x}), StatusIs(absl::StatusCode::kFailedPrecondition,
                                            HasSubstr("device_copy): no allocator for cuda:0")));
  }
  EXPECT_THAT(vm.Invoke(2, {x}), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("does not fit in storage of 16 bytes")));
  EXPECT_THAT(vm.Invoke(3, {x}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("storage size -1")));
  EXPECT_THAT(vm.Invoke(4, {x}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cannot reshape i64[3]")));
  EXPECT_THAT(vm.Invoke(5, {x}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dim 1 of i64[3]")));
}

// A stand-in GPU whose memory is host memory; it logs the copies it is asked for.
class LoggingDevice final : public DeviceApi {
 public:
  absl::Status Copy(void* dst, Device to, const void* src, Device from, size_t bytes,
                    void* stream) override {
    std::memcpy(dst, src, bytes);
    log.push_back(absl::StrCat(from.ToString(), " -> ", to.ToString()));
    destinations.push_back(dst);
    return absl::OkStatus();
  }
  absl::Status Synchronize(void* stream) override { return absl::OkStatus(); }
  absl::StatusOr<Allocator*> DefaultAllocator(int ordinal) override { return &memory; }

  class Memory final : public Allocator {
   public:
    absl::StatusOr<void*> Allocate(size_t bytes) override {
      return std::aligned_alloc(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
    }
    void Free(void* ptr, size_t bytes) override { std::free(ptr); }
    Device device() const override { return Device{DeviceType::kCUDA, 0}; }
    AllocatorStats stats() const override { return {}; }
    void Trim() override {}
  } memory;
  std::vector<std::string> log;
  std::vector<const void*> destinations;
};

// device_copy with kDeviceCopyResult: a result the host reads only after the function returns
// is copied when it returns (after everything queued behind it), and not at all when the call
// fails before that.
TEST(VirtualMachineTest, ResultCopiesWaitForTheReturn) {
  // In place of the real CUDA device, where one is compiled in (restored below).
  DeviceApi* const real = KernelRegistry::Global().GetDeviceApi(DeviceType::kCUDA);
  LoggingDevice device;
  KernelRegistry::Global().SetDeviceApi(DeviceType::kCUDA, &device);
  // Restored however the test ends (an ASSERT returns early).
  absl::Cleanup restore = [real] {
    KernelRegistry::Global().SetDeviceApi(DeviceType::kCUDA, real);
  };
  FunctionBuilder ok("ok", 1, 4);
  ok.Emit(Opcode::kDeviceCopy, 1, 0, 0, 1);                     // r1 = x on cuda:0
  ok.Emit(Opcode::kDeviceCopy, 2, 1, 1, 0, kDeviceCopyResult);  // r2 = r1 back, at ret
  ok.Emit(Opcode::kDeviceCopy, 3, 1, 1, 0);                     // r3 = r1 back, now
  ok.Emit(Opcode::kAllocADT, 3, 0, -1, -1, 0, {2, 3});
  ok.Ret(3);
  FunctionBuilder fails("fails", 1, 4);
  fails.Emit(Opcode::kDeviceCopy, 1, 0, 0, 1);
  fails.Emit(Opcode::kDeviceCopy, 2, 1, 1, 0, kDeviceCopyResult);
  fails.Emit(Opcode::kTensorElement, 3, 0, 5);  // out of range
  fails.Ret(2);
  absl::StatusOr<std::shared_ptr<const Executable>> exe =
      Build({std::move(ok).Build(), std::move(fails).Build()}, {Sig("x", DType::kI64, {3})});
  if (exe.ok()) {
    VirtualMachine vm(*exe);
    const Tensor x = Tensor::FromVector<int64_t>({4, 5, 6}, {3});
    EXPECT_THAT(vm.Invoke(1, {x}),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("element 5 of i64[3]")));
    EXPECT_THAT(device.log, ElementsAre("cpu -> cuda:0"));  // the result copy was dropped
    device.log.clear();
    device.destinations.clear();
    absl::StatusOr<Value> v = vm.Invoke(0, {x});
    ASSERT_THAT(v.status(), IsOk());
    EXPECT_THAT(device.log, ElementsAre("cpu -> cuda:0", "cuda:0 -> cpu", "cuda:0 -> cpu"));
    const ADTRef* adt = std::get_if<ADTRef>(&*v);
    ASSERT_NE(adt, nullptr);
    ASSERT_EQ((*adt)->fields.size(), 2u);
    // The ordinary copy (field 1) went first, the result copy (field 0) at the return.
    ASSERT_EQ(device.destinations.size(), 3u);
    EXPECT_EQ(device.destinations[1], std::get<Tensor>((*adt)->fields[1]).raw_data());
    EXPECT_EQ(device.destinations[2], std::get<Tensor>((*adt)->fields[0]).raw_data());
    for (const Value& f : (*adt)->fields) {
      const Tensor& t = std::get<Tensor>(f);
      EXPECT_EQ(t.device().type, DeviceType::kCPU);
      EXPECT_NE(t.raw_data(), x.raw_data());
      EXPECT_THAT(std::vector<int64_t>(t.data<int64_t>(), t.data<int64_t>() + 3),
                  ElementsAre(4, 5, 6));
    }
  }
  ASSERT_THAT(exe.status(), IsOk());
}

// A stand-in GPU with streams and stream allocators but no graph capture: it logs the warm-up
// marks around the copies.
class WarmupLoggingDevice final : public DeviceApi {
 public:
  absl::Status Copy(void* dst, Device to, const void* src, Device from, size_t bytes,
                    void* stream) override {
    std::memcpy(dst, src, bytes);
    log.push_back(stream == &stream_token ? "copy on own stream" : "copy");
    return absl::OkStatus();
  }
  absl::Status Synchronize(void* stream) override { return absl::OkStatus(); }
  absl::StatusOr<Allocator*> DefaultAllocator(int ordinal) override { return &device.memory; }
  absl::StatusOr<void*> CreateStream(int ordinal) override { return &stream_token; }
  absl::StatusOr<std::unique_ptr<Allocator>> StreamAllocator(int ordinal, void* stream) override {
    return std::unique_ptr<Allocator>(std::make_unique<LoggingDevice::Memory>());
  }
  // NewHostArena stays unimplemented: every capture fails and the VM runs eagerly.
  void MarkWarmup(int ordinal, void* stream, bool on) override {
    log.push_back(absl::StrCat("warmup ", on ? "on" : "off", " cuda:", ordinal,
                               stream == &stream_token ? " own stream" : " other stream"));
  }
  LoggingDevice device;
  int stream_token = 0;
  std::vector<std::string> log;
};

// With device graphs, the first call of a bucketed variant (the warm-up before its capture) is
// marked as such on the VM's own stream, and no later call is: not the failed capture's eager
// run, not the calls after it, not the generic variant's.
TEST(VirtualMachineTest, GraphWarmupCallsAreMarked) {
  DeviceApi* const real = KernelRegistry::Global().GetDeviceApi(DeviceType::kCUDA);
  WarmupLoggingDevice device;
  KernelRegistry::Global().SetDeviceApi(DeviceType::kCUDA, &device);
  // Restored however the test ends (an ASSERT returns early).
  absl::Cleanup restore = [real] {
    KernelRegistry::Global().SetDeviceApi(DeviceType::kCUDA, real);
  };
  auto round_trip = [](const char* name) {
    FunctionBuilder f(name, 1, 3);
    f.Emit(Opcode::kDeviceCopy, 1, 0, 0, 1);  // r1 = x on cuda:0
    f.Emit(Opcode::kDeviceCopy, 2, 1, 1, 0);  // r2 = r1 back
    f.Ret(2);
    return std::move(f).Build();
  };
  Executable exe;
  exe.functions = {round_trip("bucket"), round_trip("generic")};
  exe.inputs = {Sig("x", DType::kF32, {-1}, {"seq"})};
  exe.devices = {kCpu, Device{DeviceType::kCUDA, 0}};
  exe.variants = {BoundedVariant(0, "seq", 1, 8), GenericVariant(1)};
  exe.symbol_bindings = {{"seq", 0, 0}};
  absl::StatusOr<std::shared_ptr<const Executable>> loaded =
      Executable::Finalize(std::move(exe), TestRegistry());
  if (loaded.ok()) {
    VirtualMachineOptions options;
    options.device_graphs = true;
    VirtualMachine vm(*loaded, options);
    for (int64_t seq : {4, 4, 4, 100}) {
      absl::StatusOr<std::vector<Tensor>> out = vm.Run({F32(std::vector<float>(seq, 1.5f))});
      ASSERT_THAT(out, IsOk());
      EXPECT_EQ((*out)[0].data<float>()[seq - 1], 1.5f);
    }
    EXPECT_THAT(device.log,
                ElementsAre("warmup on cuda:0 own stream", "copy on own stream",
                            "copy on own stream", "warmup off cuda:0 own stream",
                            "copy on own stream", "copy on own stream", "copy on own stream",
                            "copy on own stream", "copy on own stream", "copy on own stream"));
  }
  ASSERT_THAT(loaded.status(), IsOk());
}

TEST(VirtualMachineTest, IfOnOneElementTensor) {
  FunctionBuilder b("main", 1, 2);
  b.Emit(Opcode::kIf, -1, 0, 1, 3);  // 0
  b.LoadConsti(1, 10);               // 1
  b.Ret(1);                          // 2
  b.LoadConsti(1, 20);               // 3
  b.Ret(1);                          // 4
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe,
                              Build({std::move(b).Build()}, {Sig("c", DType::kBool, {1})}));
  VirtualMachine vm(exe);
  Tensor cond = *Tensor::Empty(DType::kBool, {1});
  NIMBLE_ASSERT_OK_AND_ASSIGN(Value v, vm.Invoke(0, {cond}));
  EXPECT_EQ(AsScalar(v), 20);
  cond.data<bool>()[0] = true;
  NIMBLE_ASSERT_OK_AND_ASSIGN(v, vm.Invoke(0, {cond}));
  EXPECT_EQ(AsScalar(v), 10);
  NIMBLE_ASSERT_OK_AND_ASSIGN(v, vm.Invoke(0, {Tensor::FromVector<int32_t>({7}, {})}));
  EXPECT_EQ(AsScalar(v), 10);
  EXPECT_THAT(vm.Invoke(0, {*Tensor::Empty(DType::kBool, {2})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("one-element tensor")));
}

TEST(VirtualMachineTest, ConcurrentRunsOfOneExecutable) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, SymbolicAddExecutable());
  constexpr int kThreads = 16;
  constexpr int kIterations = 40;
  auto inputs_for = [](int thread, int iteration) {
    const int n = 1 + (thread * 7 + iteration * 3) % 53;
    std::vector<float> x(n), y(n);
    for (int i = 0; i < n; ++i) {
      x[i] = static_cast<float>(thread * 1000 + iteration) + 0.25f * i;
      y[i] = static_cast<float>(i) - 0.5f * thread;
    }
    return std::vector<Tensor>{F32(x), F32(y)};
  };
  // Serial reference results.
  std::vector<std::vector<std::vector<float>>> expected(kThreads);
  {
    VirtualMachine vm(exe);
    for (int t = 0; t < kThreads; ++t) {
      for (int i = 0; i < kIterations; ++i) {
        auto out = vm.Run(inputs_for(t, i));
        ASSERT_THAT(out, IsOk());
        expected[t].push_back(ToVector((*out)[0]));
      }
    }
  }
  std::vector<std::vector<std::vector<float>>> actual(kThreads);
  std::vector<absl::Status> statuses(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      VirtualMachine vm(exe);
      for (int i = 0; i < kIterations; ++i) {
        auto out = vm.Run(inputs_for(t, i));
        if (!out.ok()) {
          statuses[t] = out.status();
          return;
        }
        actual[t].push_back(ToVector((*out)[0]));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_THAT(statuses[t], IsOk()) << "thread " << t;
    EXPECT_EQ(actual[t], expected[t]) << "thread " << t;
  }
}

TEST(VirtualMachineTest, MissingDeviceAllocator) {
  FunctionBuilder b("main", 0, 3);
  b.LoadConsti(1, 64);
  b.Emit(Opcode::kAllocStorage, 2, 1, 1, 0);  // on cuda:0
  b.Ret(2);
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto exe, Build({std::move(b).Build()}, {}));
  VirtualMachine vm(exe);
  EXPECT_THAT(vm.Invoke(0, {}), StatusIs(absl::StatusCode::kFailedPrecondition,
                                         HasSubstr("no allocator for device cuda:0")));
}

}  // namespace
}  // namespace nimble::vm
