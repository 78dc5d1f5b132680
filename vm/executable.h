// An Executable: everything needed to run a compiled model, produced by the compiler and
// loaded by the VM. Immutable after Load(); shared (via shared_ptr<const Executable>) by any
// number of concurrently running VM instances, each call with its own frames.
//
// File format ("NBX"): a header (magic, format version, compiler version string, payload size,
// checksum of the payload) and the payload with functions, constants, kernels, strings,
// devices, the signature and the specialization variants. Load verifies everything once
// (checksum, version, jump targets, register bounds, kernel/constant/function/string indices,
// operand kinds per opcodes.def) so the interpreter's hot loop does no validation.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "vm/isa/instruction.h"
#include "vm/kernels/kernel.h"
#include "vm/runtime/attributes.h"
#include "vm/runtime/device.h"
#include "vm/runtime/tensor.h"

namespace nimble::vm {

// 2: value kinds in signatures (sequences, optionals); InvokePacked output dtypes in 5-bit
// fields (low-precision dtypes 15..24 added).
inline constexpr uint32_t kExecutableFormatVersion = 3;

struct Function {
  std::string name;
  int32_t num_params = 0;  // parameters arrive in registers 0..num_params-1
  int32_t num_registers = 0;
  std::vector<Instruction> code;
  std::vector<int64_t> operand_pool;  // lists of instructions
};

// A kernel the executable calls: resolved against the KernelRegistry at load.
struct KernelEntry {
  std::string name;
  Device device;
  Attributes attrs;
};

// One input or output of the model as clients see it. dims: -1 where dynamic; dim_names the
// symbol ("batch", "seq") or "" for static dims.
// What kind of value a model input or output is: a tensor, or an ONNX sequence of tensors, an
// optional tensor or an optional sequence (ADTs with the tags of vm/runtime/value.h).
enum class ValueKind : uint8_t { kTensor = 0, kSequence = 1, kOptional = 2, kOptionalSequence = 3 };
absl::string_view ValueKindName(ValueKind kind);

// For kinds other than kTensor, dtype and dims describe the elements; the VM checks only the
// elements' dtype (ONNX sequences hold tensors of any shape).
struct TensorSignature {
  std::string name;
  ValueKind kind = ValueKind::kTensor;
  DType dtype = DType::kInvalid;
  std::vector<int64_t> dims;
  std::vector<std::string> dim_names;
};

// A specialization of the entry function for a range of symbol values (a shape bucket).
// The dispatcher picks the first variant whose bounds hold for a call; the last variant is
// the generic one with no bounds.
struct Variant {
  std::string name;                   // "generic", "seq<=64", ...
  int32_t function = 0;               // index into functions
  std::vector<std::string> symbols;   // bounded symbols
  std::vector<int64_t> lower_bounds;  // inclusive, per symbol
  std::vector<int64_t> upper_bounds;  // inclusive, per symbol
  int64_t planned_bytes_hint = 0;     // static memory plan size when fully known (0 = dynamic)
};

class Executable {
 public:
  std::string compiler_version;
  std::vector<Function> functions;
  std::vector<Tensor> constants;
  std::vector<KernelEntry> kernels;
  std::vector<std::string> strings;
  std::vector<Device> devices;
  std::vector<TensorSignature> inputs;
  std::vector<TensorSignature> outputs;
  std::vector<Variant> variants;  // at least one; entry functions
  // Which input dims bind which symbol: for each symbol, (input index, axis).
  struct SymbolBinding {
    std::string symbol;
    int32_t input = 0;
    int32_t axis = 0;
  };
  std::vector<SymbolBinding> symbol_bindings;

  // Resolved at Load/Finalize, one per kernels[i]; not serialised.
  std::vector<std::unique_ptr<Kernel>> kernel_instances;

  // Constants uploaded to non-CPU devices by LoadConstOn, once per (constant, device), shared
  // by every VM instance and call; not serialised. The device allocator that made them must
  // outlive the executable (the default device allocators live as long as the process).
  struct DeviceConstantCache {
    using Key = std::pair<int32_t, std::pair<int, int32_t>>;  // constant, (device type, ordinal)
    static Key KeyOf(int32_t constant, Device device) {
      return {constant, {static_cast<int>(device.type), device.ordinal}};
    }
    std::mutex mutex;
    std::map<Key, Tensor> tensors;  // guarded by mutex
  };
  std::unique_ptr<DeviceConstantCache> device_constants = std::make_unique<DeviceConstantCache>();

  // Bytes of the NBX file.
  absl::StatusOr<std::string> Serialize() const;
  // Parses and fully verifies; resolves kernels through `registry`.
  static absl::StatusOr<std::shared_ptr<const Executable>> Load(
      std::string_view bytes, const KernelRegistry& registry = KernelRegistry::Global());
  static absl::StatusOr<std::shared_ptr<const Executable>> LoadFile(
      const std::string& path, const KernelRegistry& registry = KernelRegistry::Global());
  absl::Status SaveFile(const std::string& path) const;

  // For an executable built in memory by the compiler: verify and resolve kernels (what Load
  // does after parsing). Consumes *this.
  static absl::StatusOr<std::shared_ptr<const Executable>> Finalize(
      Executable executable, const KernelRegistry& registry = KernelRegistry::Global());

  // Verification alone (Load and Finalize call it).
  absl::Status Verify() const;

  // Human-readable listing of every function (nimblec inspect, golden tests).
  std::string Disassemble() const;
};

}  // namespace nimble::vm
