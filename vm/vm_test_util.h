// Helpers for the VM tests: a hand assembler for functions and a few test kernels registered
// in a local KernelRegistry (the tests do not depend on the real CPU kernels).
#pragma once

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vm/executable.h"
#include "vm/isa/instruction.h"
#include "vm/kernels/kernel.h"

namespace nimble::vm::testing {

// Appends instructions to a Function; list operands go to its operand pool.
class FunctionBuilder {
 public:
  FunctionBuilder(std::string name, int num_params, int num_registers) {
    f_.name = std::move(name);
    f_.num_params = num_params;
    f_.num_registers = num_registers;
  }

  // Returns the pc of the new instruction.
  int Emit(Opcode op, int dst = -1, int a = -1, int b = -1, int c = -1, int64_t imm = 0,
           std::vector<int64_t> list = {}) {
    Instruction in;
    in.op = op;
    in.dst = dst;
    in.a = a;
    in.b = b;
    in.c = c;
    in.imm = imm;
    in.list_begin = static_cast<uint32_t>(f_.operand_pool.size());
    in.list_size = static_cast<uint32_t>(list.size());
    f_.operand_pool.insert(f_.operand_pool.end(), list.begin(), list.end());
    f_.code.push_back(in);
    return static_cast<int>(f_.code.size()) - 1;
  }
  int pc() const { return static_cast<int>(f_.code.size()); }
  Instruction& at(int pc) { return f_.code[pc]; }

  // Shorthands.
  int LoadConsti(int dst, int64_t value) {
    return Emit(Opcode::kLoadConsti, dst, -1, -1, -1, value);
  }
  int Scalar(int dst, int a, ScalarOp op, int b) {
    return Emit(Opcode::kScalarBinary, dst, a, b, static_cast<int>(op));
  }
  int ScalarImm(int dst, int a, ScalarOp op, int64_t imm) {
    return Emit(Opcode::kScalarBinaryImm, dst, a, -1, static_cast<int>(op), imm);
  }
  int Ret(int reg) { return Emit(Opcode::kRet, -1, reg); }

  Function Build() && { return std::move(f_); }

 private:
  Function f_;
};

// main(x: f32[n], y: f32[n]) = AddF32(x, y) (kernel 0), the output allocated from the
// symbolic size 4n on device 0.
inline Function SymbolicAddFunction() {
  constexpr int kF32 = static_cast<int>(DType::kF32);
  FunctionBuilder b("main", 2, 7);
  b.Emit(Opcode::kTensorDim, 2, 0, 0);                       // r2 = n
  b.ScalarImm(3, 2, ScalarOp::kMul, 4);                      // r3 = 4n bytes
  b.Emit(Opcode::kAllocStorage, 4, 3, 0, 64);                // r4 = storage
  b.LoadConsti(5, 0);                                        // r5 = offset 0
  b.Emit(Opcode::kAllocTensorReg, 6, 4, 5, kF32, 0, {2});    // r6 = f32[n]
  b.Emit(Opcode::kInvokePacked, -1, 0, 2, 0, 0, {0, 1, 6});  // AddF32(r0, r1) -> r6
  b.Ret(6);
  return std::move(b).Build();
}

inline TensorSignature Sig(std::string name, DType dtype, std::vector<int64_t> dims,
                           std::vector<std::string> dim_names = {}) {
  TensorSignature s;
  s.name = std::move(name);
  s.dtype = dtype;
  s.dims = std::move(dims);
  s.dim_names = std::move(dim_names);
  return s;
}

inline Variant GenericVariant(int function = 0) {
  Variant v;
  v.name = "generic";
  v.function = function;
  return v;
}

// A variant of `function` for lower <= symbol <= upper, named "symbol<=upper".
inline Variant BoundedVariant(int function, const std::string& symbol, int64_t lower,
                              int64_t upper) {
  Variant v;
  v.name = symbol + "<=" + std::to_string(upper);
  v.function = function;
  v.symbols = {symbol};
  v.lower_bounds = {lower};
  v.upper_bounds = {upper};
  return v;
}

inline Tensor F32(std::vector<float> values, std::vector<int64_t> shape) {
  return Tensor::FromVector<float>(values, shape);
}
inline Tensor F32(std::vector<float> values) {
  const int64_t n = static_cast<int64_t>(values.size());
  return Tensor::FromVector<float>(values, {n});
}

inline std::vector<float> ToVector(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.num_elements());
}

// out = a + b, f32, equal shapes (no broadcasting).
class AddF32Kernel : public Kernel {
 public:
  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    if (inputs.size() != 2 || outputs.size() != 1) {
      return absl::InvalidArgumentError("AddF32 takes 2 inputs and 1 output");
    }
    const Tensor& a = inputs[0];
    const Tensor& b = inputs[1];
    Tensor& out = outputs[0];
    if (a.shape() != b.shape() || out.shape() != a.shape() || a.dtype() != DType::kF32 ||
        b.dtype() != DType::kF32 || out.dtype() != DType::kF32) {
      return absl::InvalidArgumentError(absl::StrCat("AddF32: ", a.TypeString(), " + ",
                                                     b.TypeString(), " -> ", out.TypeString()));
    }
    for (int64_t i = 0; i < a.num_elements(); ++i) {
      out.data<float>()[i] = a.data<float>()[i] + b.data<float>()[i];
    }
    return absl::OkStatus();
  }
  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.size() != 2 || output_shapes.size() != 1) {
      return absl::InvalidArgumentError("AddF32 takes 2 inputs and 1 output");
    }
    if (inputs[0].shape() != inputs[1].shape()) {
      return absl::InvalidArgumentError(absl::StrCat("AddF32: input 1 ", inputs[1].TypeString(),
                                                     " differs from ", inputs[0].TypeString()));
    }
    output_shapes[0] = inputs[0].shape();
    return absl::OkStatus();
  }
};

// Indices (i64[k]) of the non-zero elements of a 1-D f32 tensor; allocates its output.
class NonZeroKernel : public Kernel {
 public:
  bool allocates_outputs() const override { return true; }
  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    if (outputs[0].defined()) return absl::InternalError("NonZero got an allocated output");
    std::vector<int64_t> indices;
    for (int64_t i = 0; i < inputs[0].num_elements(); ++i) {
      if (inputs[0].data<float>()[i] != 0) indices.push_back(i);
    }
    const int64_t n = static_cast<int64_t>(indices.size());
    NIMBLE_ASSIGN_OR_RETURN(outputs[0], Tensor::Empty(DType::kI64, {n}, ctx.allocator));
    std::copy(indices.begin(), indices.end(), outputs[0].data<int64_t>());
    return absl::OkStatus();
  }
  absl::Status OutputShapes(absl::Span<const Tensor>, absl::Span<Shape>) const override {
    return absl::UnimplementedError("NonZero's output shape depends on its values");
  }
};

// A registry with "AddF32" and "NonZero" on the CPU.
inline const KernelRegistry& TestRegistry() {
  static KernelRegistry* registry = [] {
    auto* r = new KernelRegistry();
    r->Register("AddF32", DeviceType::kCPU,
                [](const Attributes&) -> absl::StatusOr<std::unique_ptr<Kernel>> {
                  return std::make_unique<AddF32Kernel>();
                });
    r->Register("NonZero", DeviceType::kCPU,
                [](const Attributes&) -> absl::StatusOr<std::unique_ptr<Kernel>> {
                  return std::make_unique<NonZeroKernel>();
                });
    return r;
  }();
  return *registry;
}

}  // namespace nimble::vm::testing
