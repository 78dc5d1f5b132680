// Lowering of a typed Module to a VM Executable: Nimble's manifest allocation (every buffer an
// explicit AllocStorage/AllocTensor), memory planning and the emission of shape arithmetic as
// VM scalar instructions.
//
// Shape computations never become kernel calls when their values are known symbolically:
// input dims are read with TensorDim once, every derived dim (seq + 1, batch*seq, ...) is one
// memoised chain of ScalarBinary instructions, and an integer tensor whose value is a shape
// (Shape -> Gather -> Concat -> Reshape in a PyTorch export) is built by MakeShapeTensor only
// if some kernel actually reads it. Reshape/Flatten/Squeeze/Unsqueeze/Identity become
// ReshapeTensor views, never copies. Ops whose output shapes depend on data run in the VM's
// shape-function mode, and the fresh symbols in their types are bound from the results.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "compiler/ir/graph.h"
#include "vm/executable.h"

namespace nimble::compiler {

struct CodegenReport {
  int num_kernel_calls = 0;
  int num_views = 0;
  int num_shape_nodes_elided = 0;
  int num_runtime_shape_calls = 0;
  int num_planned_buffers = 0;
  int num_device_kernel_calls = 0;  // kernel calls placed on EmitOptions::device (not the host)
  int num_device_copies = 0;        // device_copy instructions emitted
  DimExpr arena_bytes;        // planned peak of intermediates (one arena per call)
  DimExpr intermediate_bytes;  // sum of the planned buffers' sizes (no reuse)
};

struct EmitOptions {
  std::string function_name = "main";
  // Whether this function defines the executable's input/output signatures and symbol
  // bindings (the generic variant does; shape-specialized variants share them).
  bool define_signature = true;
  // Where compute runs. kCpu: everything on the host. A CUDA device: every compute node whose
  // op has a kernel for it that accepts the node (KernelTraits::supports) runs there; shape
  // arithmetic, shape-function (data-dependent) calls, control flow, sequences and ops without
  // a device kernel stay on the host, and device_copy instructions move values between the two
  // where a consumer needs them elsewhere (once per value and device: later readers share the
  // copy). Model inputs arrive and outputs leave on the host; weights are loaded straight onto
  // the device (load_const_on: uploaded once per executable).
  vm::Device device = vm::kCpu;
};

// Emits an entry function into `executable` (which may already hold other functions) and
// returns its index. The module's main graph must be fully type-inferred. Constants equal in
// content to ones already in the executable are shared (variants of one model share weights).
absl::StatusOr<int> EmitMainFunction(Module& module, vm::Executable& executable,
                                     CodegenReport* report, const EmitOptions& options = {});

}  // namespace nimble::compiler
