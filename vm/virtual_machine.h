// The register VM: runs the functions of a verified Executable.
//
//   NIMBLE_ASSIGN_OR_RETURN(auto exe, Executable::LoadFile(path));
//   VirtualMachine vm(exe);
//   NIMBLE_ASSIGN_OR_RETURN(std::vector<Tensor> outputs, vm.Run(inputs));
//
// Run validates the inputs against the model's signature, binds the shape symbols, picks the
// first specialization variant whose bounds hold and interprets its entry function. Calls are
// frames on an explicit stack (no C++ recursion), each with its own register file.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vm/executable.h"
#include "vm/kernels/kernel.h"
#include "vm/runtime/allocator.h"
#include "vm/runtime/tensor.h"
#include "vm/runtime/value.h"

namespace nimble::vm {

struct VirtualMachineOptions {
  // Allocators by device. The host (cpu:0) defaults to DefaultCpuAllocator(); a device the
  // executable uses that has none here fails the call that allocates on it.
  struct DeviceAllocator {
    Device device;
    Allocator* allocator = nullptr;
  };
  std::vector<DeviceAllocator> allocators;
  int num_threads = 1;        // KernelContext::num_threads
  // KernelContext::stream for CUDA kernels; device copies and constant uploads are ordered on
  // it too. Null: the legacy default stream, which the default device allocators use. A
  // caller passing its own stream passes allocators ordered on that stream as well.
  void* stream = nullptr;
  int max_call_depth = 1024;  // deeper Invoke chains fail with kResourceExhausted
  // Time each kernel call (two clock reads per InvokePacked) into profile().
  bool profile = false;
};

// Where the time of Run() calls went, accumulated while VirtualMachineOptions::profile is on.
struct VmProfile {
  int64_t runs = 0;
  int64_t total_ns = 0;   // inside Run()
  int64_t kernel_ns = 0;  // inside Kernel::Run and shape functions
  int64_t kernel_calls = 0;
  // Per entry of Executable::kernels (Kernel::Run only; shape functions count in kernel_ns).
  std::vector<int64_t> per_kernel_ns;
  std::vector<int64_t> per_kernel_calls;
  // Everything else: dispatch, allocation, shape arithmetic, validation.
  int64_t outside_kernels_ns() const { return total_ns - kernel_ns; }
};

// Not thread-safe: one instance runs one call at a time. The Executable it holds is shared
// read-only, so any number of instances may run it concurrently on different threads.
class VirtualMachine {
 public:
  explicit VirtualMachine(std::shared_ptr<const Executable> executable,
                          VirtualMachineOptions options = {});

  // Runs the model: validates `inputs` against the executable's input signatures (count,
  // dtype, rank, static dims, agreement of dims that share a symbol), dispatches to the first
  // variant whose symbol bounds hold, and returns the outputs (the entry function returns a
  // tensor, or an ADT whose fields are the output tensors).
  // Every input and output must be a tensor (ValueKind::kTensor); RunValues takes the rest.
  absl::StatusOr<std::vector<Tensor>> Run(absl::Span<const Tensor> inputs);

  // Run for models whose inputs or outputs include ONNX sequences and optionals: a sequence is
  // an ADT of kSequenceTag holding tensors, an optional an ADT of kOptionalTag with no field
  // (none) or one (vm/runtime/value.h).
  absl::StatusOr<std::vector<Value>> RunValues(absl::Span<const Value> inputs);

  // Calls functions[function] with `args` (tests and tools).
  absl::StatusOr<Value> Invoke(int function, std::vector<Value> args);

  // The variant Run would pick for inputs of these shapes (after validation).
  absl::StatusOr<int> SelectVariant(absl::Span<const Tensor> inputs) const;

  const Executable& executable() const { return *exe_; }
  const VmProfile& profile() const { return profile_; }
  void ResetProfile() { profile_ = {}; }

 private:
  struct Frame {
    int32_t function = 0;
    std::vector<Value> registers;
    size_t return_pc = 0;     // caller's next instruction
    int32_t return_dst = -1;  // caller's register receiving the result
  };

  absl::StatusOr<std::vector<Value>> RunUnprofiled(std::vector<Value> inputs);
  absl::StatusOr<int> SelectVariantOf(absl::Span<const Value> inputs) const;
  absl::Status PushFrame(int32_t function, size_t return_pc, int32_t return_dst);
  void LoadFrame();  // caches the top frame's code/registers in the members below
  absl::StatusOr<Value> Execute(int32_t function, std::vector<Value> args);
  void Unwind();

  Allocator* AllocatorFor(Device device) const;

  // One handler per opcode (virtual_machine.cc), dispatched by a switch generated from
  // opcodes.def. Each sets pc_ to the next instruction.
#define NIMBLE_OPCODE(Name, mnemonic, operands, list) \
  absl::Status Exec##Name(const Instruction& in);
#include "vm/isa/opcodes.def"
#undef NIMBLE_OPCODE

  std::shared_ptr<const Executable> exe_;
  VirtualMachineOptions options_;
  VmProfile profile_;
  Allocator* host_allocator_ = nullptr;
  DeviceApi* device_api_ = nullptr;  // of the executable's non-CPU device type, if any
  std::vector<Allocator*> device_allocators_;   // per exe_->devices index (null: none)
  std::vector<KernelContext> kernel_contexts_;  // per exe_->kernels index
  // Symbols of the executable, and per variant the symbol index of each bound.
  std::vector<std::string> symbols_;
  std::vector<int> binding_symbol_;  // per symbol_bindings entry
  std::vector<std::vector<int>> variant_symbols_;

  // Interpreter state of the current call.
  std::vector<Frame> frames_;  // frames_[0, depth_) are live; the rest keep their buffers
  size_t depth_ = 0;
  size_t base_depth_ = 0;  // depth at which the current Execute returns
  bool returned_ = false;
  Value result_;
  size_t pc_ = 0;
  const Function* function_ = nullptr;
  const Instruction* code_ = nullptr;
  const int64_t* pool_ = nullptr;
  Value* regs_ = nullptr;
  // Reused by InvokePacked so steady-state calls do not allocate argument vectors.
  std::vector<Tensor> kernel_inputs_;
  std::vector<Tensor> kernel_outputs_;
  std::vector<Shape> kernel_shapes_;
};

}  // namespace nimble::vm
