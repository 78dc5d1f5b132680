#include "vm/executable.h"

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vm/serialization_internal.h"
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
using ::testing::HasSubstr;

constexpr int kF32 = static_cast<int>(DType::kF32);

// Uses every opcode once (not meant to run; serialisation and disassembly coverage).
Function EveryOpFunction() {
  FunctionBuilder b("every_op", 1, 12);
  b.Emit(Opcode::kLoadConst, 1, 0);
  b.Emit(Opcode::kMove, 2, 1);
  b.Emit(Opcode::kAllocClosure, 3, 2, -1, -1, 0, {1});
  b.Emit(Opcode::kInvokeClosure, 4, 3, -1, -1, 0, {2});
  b.Emit(Opcode::kInvoke, 5, 2, -1, -1, 0, {1, 2});
  b.Emit(Opcode::kAllocADT, 6, 1, -1, -1, 0, {4, 5});
  b.Emit(Opcode::kGetField, 7, 6, 0);
  b.Emit(Opcode::kGetTag, 8, 6);
  b.Emit(Opcode::kIf, -1, 8, 1, 2);
  b.Emit(Opcode::kGoto, -1, 1);
  b.Emit(Opcode::kShapeOf, 9, 7);
  b.Emit(Opcode::kTensorElement, 10, 9, 0);
  b.Emit(Opcode::kMakeShapeTensor, 11, -1, -1, -1, 0, {10});
  b.Emit(Opcode::kReshapeTensor, 7, 7, -1, -1, 0, {10});
  b.Emit(Opcode::kDeviceCopy, 7, 7, 0, 1);
  b.Emit(Opcode::kLoadConstOn, 7, 0, 1);
  b.Emit(Opcode::kAllocStorage, 9, 10, 0, 64);
  b.LoadConsti(10, -42);
  b.Emit(Opcode::kAllocTensor, 11, 9, 10, kF32, 0, {2, 3});
  b.Emit(Opcode::kKillRegister, -1, 11);
  b.Scalar(10, 10, ScalarOp::kFloorDiv, 10);
  b.Emit(Opcode::kAssert, -1, 10, 1, -1, 0, {10, 2});
  b.Emit(Opcode::kInvokePacked, -1, 1, 1, 1, 0, {7, 8});
  b.Emit(Opcode::kInvokePacked, -1, 0, 2, 2, EncodeOutputDTypes({DType::kF32}), {7, 7, 8});
  b.Emit(Opcode::kIf, -1, 10, 1, 2);
  b.Emit(Opcode::kFatal, -1, 0);
  b.Emit(Opcode::kTensorSelect, 11, 7, 10);
  b.Emit(Opcode::kAdtSize, 10, 6);
  b.Emit(Opcode::kGetFieldReg, 7, 6, 10, 0);
  b.Emit(Opcode::kAdtInsert, 6, 6, 7, 0, 0, {10});
  b.Emit(Opcode::kAdtErase, 6, 6, -1, 0, 0, {});
  b.Emit(Opcode::kOptionalHas, 10, 6);
  b.Emit(Opcode::kOptionalGet, 7, 6, -1, 0);
  b.Emit(Opcode::kMakeScalarTensor, 7, 10, -1, static_cast<int>(DType::kBool));
  b.Ret(7);
  return std::move(b).Build();
}

Function PairFunction() {
  FunctionBuilder b("pair", 2, 3);
  b.Emit(Opcode::kAllocADT, 2, 0, -1, -1, 0, {0, 1});
  b.Ret(2);
  return std::move(b).Build();
}

// An executable with every field and every kind of value filled in.
Executable RichExecutable() {
  Executable exe;
  exe.compiler_version = "nimblec 0.1.0-test";
  exe.functions.push_back(SymbolicAddFunction());
  exe.functions.push_back(EveryOpFunction());
  exe.functions.push_back(PairFunction());

  exe.constants.push_back(F32({1, 2, 3, 4, 5, 6}, {2, 3}));
  exe.constants.push_back(Tensor::FromVector<int64_t>({-1, 0, INT64_MAX, INT64_MIN}, {4}));
  Tensor strings = *Tensor::Empty(DType::kString, {3});
  strings.data<std::string>()[0] = "hello";
  strings.data<std::string>()[2] = std::string("w\0rld\xff", 6);
  exe.constants.push_back(strings);
  exe.constants.push_back(*Tensor::Empty(DType::kF32, {0, 5}));
  exe.constants.push_back(Tensor::Scalar(7));

  KernelEntry add{"AddF32", kCpu, {}};
  add.attrs.Set("i", int64_t{-7});
  add.attrs.Set("f", 0.1);
  add.attrs.Set("s", std::string("gelu"));
  add.attrs.Set("ints", std::vector<int64_t>{1, -2, 3});
  add.attrs.Set("floats", std::vector<double>{1.5, -0.25, 1e300});
  add.attrs.Set("strs", std::vector<std::string>{"a", "", "c\n"});
  add.attrs.Set("t", F32({0.5, -0.5}));
  add.attrs.Set("null_t", Tensor());
  exe.kernels.push_back(add);
  exe.kernels.push_back(KernelEntry{"NonZero", kCpu, {}});

  exe.strings = {"boom", "value {} is bad for {}"};
  exe.devices = {kCpu, Device{DeviceType::kCUDA, 0}};
  exe.inputs = {Sig("x", DType::kF32, {-1}, {"n"}), Sig("y", DType::kF32, {-1}, {"n"})};
  exe.outputs = {Sig("z", DType::kF32, {-1}, {"n"})};
  Variant small = BoundedVariant(0, "n", 1, 16);
  small.planned_bytes_hint = 1024;
  exe.variants = {small, GenericVariant(0)};
  exe.symbol_bindings = {{"n", 0, 0}, {"n", 1, 0}};
  return exe;
}

// A file made of a well-formed header around `payload` (to reach the payload parser).
std::string WithHeader(std::string_view payload, std::string_view compiler_version = "v") {
  internal::ByteWriter w;
  w.Raw(internal::kExecutableMagic, 4);
  w.U32(kExecutableFormatVersion);
  w.String(compiler_version);
  w.U64(payload.size());
  w.U64(internal::PayloadChecksum(compiler_version, payload));
  w.Raw(payload.data(), payload.size());
  return std::move(w.bytes());
}

size_t HeaderSize(std::string_view compiler_version) {
  return 4 + 4 + 4 + compiler_version.size() + 8 + 8;
}

TEST(Hash64Test, MatchesReferenceXxh64) {
  // Reference values from libxxhash 0.8.1.
  EXPECT_EQ(internal::Hash64(""), 0xef46db3751d8e999ULL);
  EXPECT_EQ(internal::Hash64("a"), 0xd24ec4f1a98c6e5bULL);
  EXPECT_EQ(internal::Hash64("abc"), 0x44bc2cf5ad770999ULL);
  EXPECT_EQ(internal::Hash64("Nobody inspects the spammish repetition"), 0xfbcea83c8a378bf1ULL);
  std::string bytes;
  for (int i = 0; i < 100; ++i) bytes.push_back(static_cast<char>(i));
  EXPECT_EQ(internal::Hash64(bytes, 12345), 0x28ba1ae2de4de27ULL);
  bytes.clear();
  for (int r = 0; r < 3; ++r) {
    for (int i = 0; i < 256; ++i) bytes.push_back(static_cast<char>(i));
  }
  EXPECT_EQ(internal::Hash64(bytes), 0x8e03c838c596036fULL);
}

TEST(ExecutableTest, RichExecutableVerifies) { EXPECT_THAT(RichExecutable().Verify(), IsOk()); }

TEST(ExecutableTest, RoundTripPreservesEverything) {
  const Executable original = RichExecutable();
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::string bytes, original.Serialize());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto loaded, Executable::Load(bytes, TestRegistry()));
  EXPECT_EQ(loaded->Disassemble(), original.Disassemble());
  EXPECT_EQ(loaded->compiler_version, "nimblec 0.1.0-test");
  ASSERT_EQ(loaded->kernel_instances.size(), 2u);
  EXPECT_TRUE(loaded->kernel_instances[1]->allocates_outputs());
  // Content survives bit for bit: serialising the loaded executable gives the same file.
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::string again, loaded->Serialize());
  EXPECT_EQ(again, bytes);
  // Spot checks of values the listing only summarises.
  EXPECT_EQ(loaded->constants[1].data<int64_t>()[3], INT64_MIN);
  EXPECT_EQ(loaded->constants[2].data<std::string>()[2], std::string("w\0rld\xff", 6));
  EXPECT_EQ(loaded->constants[3].TypeString(), "f32[0, 5]");
  EXPECT_EQ(loaded->kernels[0].attrs.Get<double>("f").value(), 0.1);
  EXPECT_EQ(loaded->kernels[0].attrs.Get<std::vector<std::string>>("strs").value()[2], "c\n");
  EXPECT_EQ(loaded->kernels[0].attrs.Get<Tensor>("t").value().data<float>()[1], -0.5f);
  EXPECT_FALSE(loaded->kernels[0].attrs.Get<Tensor>("null_t").value().defined());
  EXPECT_EQ(loaded->variants[0].planned_bytes_hint, 1024);
  EXPECT_EQ(loaded->symbol_bindings[1].input, 1);
  EXPECT_EQ(loaded->devices[1], (Device{DeviceType::kCUDA, 0}));
}

TEST(ExecutableTest, ListingShowsContentDigests) {
  Executable a = RichExecutable();
  Executable b = RichExecutable();
  b.constants[0].data<float>()[5] = 7;
  EXPECT_NE(a.Disassemble(), b.Disassemble());
}

TEST(ExecutableTest, EveryTruncationIsAnError) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::string bytes, RichExecutable().Serialize());
  for (size_t n = 0; n < bytes.size(); ++n) {
    auto loaded = Executable::Load(std::string_view(bytes).substr(0, n), TestRegistry());
    ASSERT_THAT(loaded, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("truncated")))
        << "prefix of " << n << " bytes";
  }
}

TEST(ExecutableTest, EveryTruncatedPayloadWithValidHeaderIsAnError) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::string bytes, RichExecutable().Serialize());
  const std::string payload = bytes.substr(HeaderSize("nimblec 0.1.0-test"));
  ASSERT_THAT(Executable::Load(WithHeader(payload), TestRegistry()), IsOk());
  for (size_t n = 0; n < payload.size(); ++n) {
    auto loaded =
        Executable::Load(WithHeader(std::string_view(payload).substr(0, n)), TestRegistry());
    ASSERT_THAT(loaded,
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("invalid executable")))
        << "payload prefix of " << n << " bytes";
  }
  EXPECT_THAT(Executable::Load(WithHeader(payload + "x"), TestRegistry()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1 unread bytes")));
}

TEST(ExecutableTest, FlippedPayloadByteFailsTheChecksum) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::string bytes, RichExecutable().Serialize());
  std::string corrupt = bytes;
  corrupt[bytes.size() - 10] ^= 0x01;
  EXPECT_THAT(Executable::Load(corrupt, TestRegistry()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("checksum mismatch")));
}

TEST(ExecutableTest, EveryFlippedByteIsDetected) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::string bytes, RichExecutable().Serialize());
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string corrupt = bytes;
    corrupt[i] ^= 0x20;
    ASSERT_FALSE(Executable::Load(corrupt, TestRegistry()).ok()) << "flipped byte " << i;
  }
}

TEST(ExecutableTest, WrongVersionSaysWhichVersions) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::string bytes, RichExecutable().Serialize());
  bytes[4] = 9;  // format version 9
  EXPECT_THAT(Executable::Load(bytes, TestRegistry()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("format version 9 is not supported: this build reads version 3")));
}

TEST(ExecutableTest, BadMagic) {
  EXPECT_THAT(Executable::Load("ELF\x7f and more bytes", TestRegistry()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad magic")));
}

TEST(ExecutableTest, HugeLengthFieldsDoNotAllocate) {
  internal::ByteWriter w;
  w.U32(0xFFFFFFFFu);  // function count
  EXPECT_THAT(Executable::Load(WithHeader(w.bytes()), TestRegistry()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("function count")));

  // No functions, one constant f32[2^40]: must be refused before allocating 4 TiB.
  internal::ByteWriter c;
  c.U32(0);  // functions
  c.U32(1);  // constants
  c.U8(static_cast<uint8_t>(DType::kF32));
  c.U32(1);
  c.I64(int64_t{1} << 40);
  c.U64(uint64_t{4} << 40);
  EXPECT_THAT(Executable::Load(WithHeader(c.bytes()), TestRegistry()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("constant 0")));

  // A dims product that overflows int64.
  internal::ByteWriter o;
  o.U32(0);
  o.U32(1);
  o.U8(static_cast<uint8_t>(DType::kString));
  o.U32(2);
  o.I64(int64_t{1} << 40);
  o.I64(int64_t{1} << 40);
  EXPECT_THAT(Executable::Load(WithHeader(o.bytes()), TestRegistry()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2^63")));
}

TEST(ExecutableTest, LowPrecisionConstantsRoundTripAndAreRangeChecked) {
  Executable exe = RichExecutable();
  Tensor i4 = *Tensor::Empty(DType::kI4, {3});
  const int8_t v[] = {-8, 7, 0};
  std::memcpy(i4.raw_data(), v, 3);
  exe.constants.push_back(i4);
  Tensor f8 = *Tensor::Empty(DType::kF8E5M2, {2});
  f8.data<uint8_t>()[0] = 0x7C;
  f8.data<uint8_t>()[1] = 0xFF;
  exe.constants.push_back(f8);
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::string bytes, exe.Serialize());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto loaded, Executable::Load(bytes, TestRegistry()));
  EXPECT_EQ(loaded->constants[5].TypeString(), "i4[3]");
  EXPECT_EQ(loaded->constants[5].data<int8_t>()[0], -8);
  EXPECT_EQ(loaded->constants[6].data<uint8_t>()[1], 0xFF);

  // An unpacked i4 constant holding 127 is refused.
  internal::ByteWriter c;
  c.U32(0);  // functions
  c.U32(1);  // constants
  c.U8(static_cast<uint8_t>(DType::kI4));
  c.U32(1);
  c.I64(2);
  c.U64(2);
  c.U8(0);  // no padding (data alignment is not checked)
  c.Raw("\x07\x7f", 2);
  EXPECT_THAT(Executable::Load(WithHeader(c.bytes()), TestRegistry()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("i4 element 1 is 127, outside [-8, 7]")));
}

TEST(ExecutableTest, UnknownOpcodeInFile) {
  internal::ByteWriter w;
  w.U32(1);
  w.String("f");
  w.I32(0);
  w.I32(1);
  w.U32(1);
  w.U8(200);  // opcode
  for (int i = 0; i < 4; ++i) w.I32(0);
  w.I64(0);
  w.U32(0);
  w.U32(0);
  EXPECT_THAT(Executable::Load(WithHeader(w.bytes()), TestRegistry()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown opcode 200")));
}

TEST(ExecutableTest, SaveAndLoadFile) {
  const std::string path = ::testing::TempDir() + "/vm_executable_test.nbx";
  ASSERT_THAT(RichExecutable().SaveFile(path), IsOk());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto loaded, Executable::LoadFile(path, TestRegistry()));
  EXPECT_EQ(loaded->Disassemble(), RichExecutable().Disassemble());
  std::remove(path.c_str());
  EXPECT_THAT(Executable::LoadFile(path, TestRegistry()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(path)));
}

// LoadFile hands numeric constants out as views of the file's one buffer (their data aligned
// by the format); Load from a caller's bytes copies them. Both equal the originals.
TEST(ExecutableTest, LoadFileViewsAlignedConstantsInPlace) {
  const Executable original = RichExecutable();
  const std::string path = ::testing::TempDir() + "/vm_executable_views_test.nbx";
  ASSERT_THAT(original.SaveFile(path), IsOk());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto loaded, Executable::LoadFile(path, TestRegistry()));
  std::remove(path.c_str());
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::string bytes, original.Serialize());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto copied, Executable::Load(bytes, TestRegistry()));
  ASSERT_EQ(loaded->constants.size(), original.constants.size());
  const void* buffer = nullptr;
  int views = 0;
  for (size_t i = 0; i < original.constants.size(); ++i) {
    const Tensor& want = original.constants[i];
    const Tensor& got = loaded->constants[i];
    ASSERT_EQ(got.defined(), want.defined()) << i;
    if (!want.defined() || want.dtype() == DType::kString) continue;
    ASSERT_EQ(got.TypeString(), want.TypeString()) << i;
    EXPECT_EQ(std::memcmp(got.raw_data(), want.raw_data(), want.nbytes()), 0) << i;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(got.raw_data()) % internal::kTensorDataAlignment, 0u)
        << i;
    if (want.nbytes() == 0 || PackedBits(want.dtype()) != 0) continue;
    // A view: its storage is the whole file, shared by every such constant.
    EXPECT_GT(got.storage()->size(), want.nbytes()) << i;
    if (buffer == nullptr) buffer = got.storage()->data();
    EXPECT_EQ(got.storage()->data(), buffer) << i;
    EXPECT_EQ(copied->constants[i].storage()->size(), want.nbytes()) << i;  // a copy
    ++views;
  }
  EXPECT_GE(views, 2);
}

TEST(ExecutableTest, FinalizeNamesAMissingKernel) {
  Executable exe = RichExecutable();
  exe.kernels[1].name = "NoSuchKernel";
  EXPECT_THAT(Executable::Finalize(std::move(exe), TestRegistry()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("k1 'NoSuchKernel'")));
}

TEST(ExecutableTest, FinalizeChecksTheAllocatesOutputsFlag) {
  Executable exe = RichExecutable();
  exe.functions[1].code[22].a = 0;  // AddF32 with "kernel allocates outputs"
  EXPECT_THAT(Executable::Finalize(std::move(exe), TestRegistry()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("pc 22 (invoke_packed): kernel k0 'AddF32' does not allocate")));
}

TEST(ExecutableTest, SerializeRejectsAHugeCompilerVersion) {
  Executable exe = RichExecutable();
  exe.compiler_version = std::string(5000, 'v');
  EXPECT_THAT(exe.Serialize(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too long")));
}

// --- Verify -------------------------------------------------------------------------------

// A valid one-function executable to break in the tests below: main(x: f32[n]) = x + x.
Executable Small() {
  Executable exe;
  FunctionBuilder b("main", 1, 3);
  b.Emit(Opcode::kLoadConst, 1, 0);                          // 0
  b.Emit(Opcode::kInvokePacked, -1, 0, 2, 0, 0, {0, 0, 1});  // 1
  b.Emit(Opcode::kGoto, -1, 1);                              // 2
  b.Ret(1);                                                  // 3
  exe.functions.push_back(std::move(b).Build());
  exe.constants.push_back(F32({0, 0}));
  exe.kernels.push_back(KernelEntry{"AddF32", kCpu, {}});
  exe.inputs = {Sig("x", DType::kF32, {2})};
  exe.variants = {GenericVariant()};
  return exe;
}

TEST(VerifyTest, SmallIsValid) { EXPECT_THAT(Small().Verify(), IsOk()); }

TEST(VerifyTest, RegisterOutOfRange) {
  Executable exe = Small();
  exe.functions[0].code[0].dst = 3;
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("function 'main' pc 0 (load_const): dst: register 3 "
                                               "out of range (3)")));
  exe = Small();
  exe.functions[0].code[0].dst = -1;
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("register -1")));
}

TEST(VerifyTest, ListRegisterOutOfRange) {
  Executable exe = Small();
  exe.functions[0].operand_pool[2] = 7;
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("pc 1 (invoke_packed): list[2]: register 7")));
}

TEST(VerifyTest, ListOutsideThePool) {
  Executable exe = Small();
  exe.functions[0].code[1].list_begin = 1;
  EXPECT_THAT(exe.Verify(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside the operand pool")));
  exe.functions[0].code[1].list_begin = 0xFFFFFFFFu;  // no wrap-around
  EXPECT_THAT(exe.Verify(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside the operand pool")));
}

TEST(VerifyTest, BadJumpTarget) {
  Executable exe = Small();
  exe.functions[0].code[2].a = 2;  // 2 + 2 = 4 = code.size()
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("pc 2 (goto): a: jump target 4 outside the "
                                               "function (4 instructions)")));
  exe.functions[0].code[2].a = -3;
  EXPECT_THAT(exe.Verify(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("jump target -1")));
}

TEST(VerifyTest, BadKernelIndex) {
  Executable exe = Small();
  exe.functions[0].code[1].a = 1;
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("pc 1 (invoke_packed): a: kernel index 1 out of "
                                               "range (1)")));
}

TEST(VerifyTest, BadConstantIndex) {
  Executable exe = Small();
  exe.functions[0].code[0].a = 1;
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("(load_const): a: constant 1 out of range")));
}

TEST(VerifyTest, FallingOffTheEnd) {
  Executable exe = Small();
  exe.functions[0].code[3] = exe.functions[0].code[0];  // load_const instead of ret
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("pc 3 (load_const): falls off the end")));
  exe.functions[0].code.clear();
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no code")));
}

TEST(VerifyTest, InvokePackedInputCountAndFlags) {
  Executable exe = Small();
  exe.functions[0].code[1].b = 4;
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("4 inputs but a list of 3 registers")));
  exe = Small();
  exe.functions[0].code[1].c = 3;
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("flags 3")));
  exe = Small();
  exe.functions[0].code[1].c = kInvokePackedShapeFunction;
  exe.functions[0].code[1].imm = 0;  // output 0: dtype invalid
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("output 0 has invalid dtype 0")));
  exe = Small();
  exe.functions[0].code[1].c = kInvokePackedShapeFunction;
  exe.functions[0].code[1].imm = kNumDTypes;  // one past the last dtype
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("output 0 has invalid dtype 25")));
  exe = Small();
  exe.functions[0].code[1].c = kInvokePackedShapeFunction;
  exe.functions[0].code[1].imm = EncodeOutputDTypes({DType::kI2});
  EXPECT_THAT(exe.Verify(), IsOk());
}

TEST(InstructionTest, OutputDTypesRoundTripForEveryDTypeAndSlot) {
  for (int d = 1; d < kNumDTypes; ++d) {
    std::vector<DType> dtypes(kMaxShapeFunctionOutputs, DType::kF32);
    for (int slot = 0; slot < kMaxShapeFunctionOutputs; ++slot) {
      dtypes[slot] = static_cast<DType>(d);
      const int64_t imm = EncodeOutputDTypes(dtypes);
      for (int i = 0; i < kMaxShapeFunctionOutputs; ++i) {
        EXPECT_EQ(DecodeOutputDType(imm, i), dtypes[i]) << "dtype " << d << " slot " << slot;
      }
      dtypes[slot] = DType::kF32;
    }
  }
  EXPECT_EQ(kMaxShapeFunctionOutputs, 12);
  // Past the fields (the disassembler once asked for up to 16: a shift of 65 bits).
  for (int i : {-1, 12, 13, 15}) EXPECT_EQ(DecodeOutputDType(-1, i), DType::kInvalid) << i;
}

// An opcode without an operand list may carry any list_begin, even with an empty pool (found
// by executable_fuzzer under UBSan: a pointer was formed from it; `make sanitize` halts on that
// here).
TEST(VerifyTest, ListBeginOfAnInstructionWithoutAList) {
  Executable exe = Small();
  exe.functions[0].code[2].list_begin = 50176;
  EXPECT_THAT(exe.Verify(), IsOk());
  exe.functions[0].operand_pool.clear();
  exe.functions[0].code[1] = Instruction{Opcode::kGoto, -1, 2};
  EXPECT_THAT(exe.Verify(), IsOk());
}

TEST(VerifyTest, InvokeArgumentCount) {
  Executable exe = Small();
  exe.functions[0].code[0] = Instruction{Opcode::kInvoke, 1, 0, -1, -1, 0, 0, 2};
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("passes 2 arguments to 'main' which takes 1")));
  exe.functions[0].code[0].a = 5;
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("a: function 5 out of range (1)")));
}

TEST(VerifyTest, OperandKinds) {
  Executable exe = Small();
  exe.functions[0].code[0] = Instruction{Opcode::kFatal, -1, 3};
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("(fatal): a: string 3 out of range (0)")));
  exe.functions[0].code[0] = Instruction{Opcode::kAllocStorage, 1, 0, 1, 64};
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("b: device 1 out of range (0)")));
  exe.devices = {kCpu};
  exe.functions[0].code[0].b = 0;
  exe.functions[0].code[0].c = 48;
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("alignment 48 is not a power of two")));
  exe.functions[0].code[0] = Instruction{Opcode::kAllocTensor, 1, 0, 0, 99};
  EXPECT_THAT(exe.Verify(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("c: invalid dtype 99")));
  exe.functions[0].code[0].c = static_cast<int>(DType::kString);
  EXPECT_THAT(exe.Verify(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("string tensors")));
  exe.functions[0].code[0] = Instruction{Opcode::kScalarBinary, 1, 0, 0, 14};
  EXPECT_THAT(exe.Verify(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown scalar op 14")));
}

TEST(VerifyTest, RegistersAndParams) {
  Executable exe = Small();
  exe.functions[0].num_registers = 0;
  EXPECT_THAT(exe.Verify(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("function 'main' has 1 parameters but 0 registers")));
  exe.functions[0].num_registers = int32_t{1} << 30;
  EXPECT_THAT(exe.Verify(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("registers (at most")));
}

TEST(VerifyTest, Variants) {
  Executable exe = Small();
  exe.variants.clear();
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no entry")));
  exe = Small();
  exe.variants[0].function = 1;
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("variant 'generic': function 1 out of range")));
  exe = Small();
  exe.inputs.push_back(Sig("y", DType::kF32, {2}));
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("takes 1 parameters but the model has 2 inputs")));
  exe = Small();
  exe.variants[0].symbols = {"n"};
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("1 symbols but 0 lower and 0 upper bounds")));
  exe.variants[0].lower_bounds = {1};
  exe.variants[0].upper_bounds = {8};
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("bounds symbol 'n' that no input binds")));
  exe.symbol_bindings = {{"n", 0, 1}};
  EXPECT_THAT(exe.Verify(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("bound to input 0 axis 1 which does not exist")));
  exe.symbol_bindings = {{"n", 0, 0}};
  EXPECT_THAT(exe.Verify(), IsOk());
}

TEST(DisassembleTest, Golden) {
  Executable exe = Small();
  exe.compiler_version = "golden";
  exe.strings = {"n is {}"};
  exe.functions[0].code.insert(exe.functions[0].code.begin() + 3,
                               Instruction{Opcode::kScalarBinary, 2, 1, 1, 2});
  exe.functions[0].code[2].a = 2;  // goto still lands on ret
  const std::string expected = R"(executable (format 3, compiler "golden")
inputs (1):
  x: f32[2]
outputs (0):
symbol bindings (0):
variants (1):
  "generic" -> f0 (main)
devices (0):
constants (1):
  c0: f32[2] cpu hash=)";
  const std::string listing = exe.Disassemble();
  EXPECT_EQ(listing.substr(0, expected.size()), expected);
  const std::string expected_tail = R"(
kernels (1):
  k0: AddF32 on cpu
strings (1):
  s0: "n is {}"

function f0 'main' (params 1, registers 3):
   0: load_const r1 = c0 (f32[2])
   1: invoke_packed k0 (AddF32) in=[r0, r0] out=[r1]
   2: goto 4
   3: scalar r2 = r1 mul r1
   4: ret r1
)";
  ASSERT_GE(listing.size(), expected_tail.size());
  EXPECT_EQ(listing.substr(listing.size() - expected_tail.size()), expected_tail);
  EXPECT_EQ(listing, exe.Disassemble());  // deterministic
}

TEST(DisassembleTest, EveryOpcodeHasAListing) {
  const std::string listing = RichExecutable().Disassemble();
  for (int op = 0; op < kNumOpcodes; ++op) {
    EXPECT_THAT(listing, HasSubstr(absl::StrCat(": ", kOpcodeInfo[op].mnemonic, " ")))
        << kOpcodeInfo[op].mnemonic;
  }
  EXPECT_THAT(listing, HasSubstr("invoke_packed k0 (AddF32) in=[r7, r7] out=[r8] shape_fn "
                                 "dtypes=[f32]"));
  EXPECT_THAT(listing, HasSubstr("invoke_packed k1 (NonZero) in=[r7] out=[r8] kernel_allocates"));
  EXPECT_THAT(listing, HasSubstr("alloc_tensor r11 = r9 offset r10 f32[2, 3]"));
  EXPECT_THAT(listing, HasSubstr("if r8 then 9 else 10"));
  EXPECT_THAT(listing, HasSubstr("assert r10 else s1 \"value {} is bad for {}\" [r10, r2]"));
  EXPECT_THAT(listing, HasSubstr("\"n<=16\" -> f0 (main) where 1 <= n <= 16 planned 1024 bytes"));
  EXPECT_THAT(listing, HasSubstr("ints=[1, -2, 3]"));
  EXPECT_THAT(listing, HasSubstr("strs=[\"a\", \"\", \"c\\n\"]"));
}

}  // namespace
}  // namespace nimble::vm
