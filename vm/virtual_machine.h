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
  int num_threads = 1;  // KernelContext::num_threads
  // KernelContext::stream for CUDA kernels; device copies and constant uploads are ordered on
  // it too. Null: the legacy default stream, which the default device allocators use. A
  // caller passing its own stream passes allocators ordered on that stream as well.
  void* stream = nullptr;
  int max_call_depth = 1024;  // deeper Invoke chains fail with kResourceExhausted
  // Time each kernel call (two clock reads per InvokePacked) into profile().
  bool profile = false;
  // Device graphs (CUDA graphs) for shape-specialized variants: the first call of a variant at
  // given input shapes runs eagerly as a warm-up (uploads weights, plans GEMMs; the CUDA device
  // tunes them, about 0.3 s a GEMM shape the first time on a machine, then from its tune cache
  // in ~/.cache/nimble/gemm: DeviceApi::MarkWarmup), the second is captured
  // into a graph on the instance's own stream and every later one replays it, with the inputs
  // copied into page-locked buffers the graph owns. The generic variant always runs eagerly,
  // and so does a variant whose capture fails or whose host code reads device results or
  // input contents (data-dependent host work would go stale in a replay). Needs a device
  // with graphs, no caller `stream` and no caller allocator for that device; otherwise off.
  bool device_graphs = false;
  int max_device_graphs = 8;  // per instance, least recently used evicted
  // In a captured graph, request a large constant weight (a GEMM's, a convolution's, a
  // recurrence's) into the device's cache this many device kernels before the kernel that
  // reads it, on a parallel branch of the graph (DeviceApi::PrefetchToCache). 0: never. -1:
  // NIMBLE_WEIGHT_PREFETCH from the environment if set, else kDefaultWeightPrefetchAhead.
  // BERT-base fp16 on the H100 (bench/RESULTS.md, eighth session): 3 ahead takes seq 16 from
  // 0.382 to 0.363-0.366 ms and seq 128 from 0.448 to 0.436; seq 384 does not move.
  int weight_prefetch_ahead = -1;
  // Smaller weights are not requested (their first read's latency hardly shows).
  int64_t weight_prefetch_min_bytes = 256 << 10;
};

inline constexpr int kDefaultWeightPrefetchAhead = 3;

struct DeviceGraphEntry;  // virtual_machine.cc

// What device_graphs did (since construction).
struct DeviceGraphStats {
  int64_t captures = 0;
  int64_t replays = 0;          // calls served by a graph (the capturing call included)
  int64_t eager_calls = 0;      // calls of specialized variants run without a graph
  int64_t failed_captures = 0;  // their key then always runs eagerly
  int64_t prefetch_requests = 0;  // weight prefetches captured into graphs (weight_prefetch_ahead)
  // Where replays' time went (replays after the capture): copying the inputs into the graph's
  // page-locked buffers, launching the graph and waiting for it, copying the result out.
  int64_t replay_inputs_ns = 0;
  int64_t replay_device_ns = 0;
  int64_t replay_result_ns = 0;
  // Result tensors replays wrote straight into the caller's page-locked storage (the rest
  // were copied out of the graph's buffers).
  int64_t direct_results = 0;
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
  ~VirtualMachine();
  VirtualMachine(const VirtualMachine&) = delete;
  VirtualMachine& operator=(const VirtualMachine&) = delete;

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
  const DeviceGraphStats& device_graph_stats() const { return graph_stats_; }
  // Whether device_graphs took effect (a device with graphs, an own stream).
  bool device_graphs_enabled() const { return own_stream_ != nullptr; }
  void ResetProfile() { profile_ = {}; }

 private:
  struct Frame {
    int32_t function = 0;
    std::vector<Value> registers;
    size_t return_pc = 0;     // caller's next instruction
    int32_t return_dst = -1;  // caller's register receiving the result
  };

  absl::StatusOr<std::vector<Value>> RunUnprofiled(std::vector<Value> inputs);
  // After a call's device work: the error a device kernel reported (it explains `call`'s own
  // error too), else `call`. Waits for the stream unless device_idle_.
  absl::Status TakeDeviceErrors(const absl::Status& call);
  // A specialized variant's call through a device graph (capturing or replaying it).
  absl::StatusOr<Value> RunGraphed(int variant, std::vector<Value> args);
  absl::StatusOr<Value> Capture(int function, const std::vector<Value>& args, DeviceGraphEntry& e);
  // Marks the current capture unusable when host code reads a tensor whose contents are not
  // known at capture time.
  void CheckCaptureRead(const Tensor& t);
  absl::StatusOr<int> SelectVariantOf(absl::Span<const Value> inputs) const;
  absl::Status PushFrame(int32_t function, size_t return_pc, int32_t return_dst);
  void LoadFrame();  // caches the top frame's code/registers in the members below
  absl::StatusOr<Value> Execute(int32_t function, std::vector<Value> args);
  void Unwind();

  Allocator* AllocatorFor(Device device) const;

  // A constant to request into a device's cache (DeviceApi::PrefetchToCache).
  struct PrefetchTarget {
    int32_t constant;
    int32_t device;  // index into exe_->devices
  };
  // Fills prefetch_plan_: each device kernel's large weights, requested `ahead` device kernels
  // earlier in the same function's code.
  void BuildPrefetchPlan(int ahead);
  // Requests `targets` that are already on their device (weights upload on first use).
  absl::Status IssuePrefetches(const std::vector<PrefetchTarget>& targets);

  // Makes the eager call's pending result copies (pending_results_), at ret.
  absl::Status CopyPendingResults();

  // One handler per opcode (virtual_machine.cc), dispatched by a switch generated from
  // opcodes.def. Each sets pc_ to the next instruction.
#define NIMBLE_OPCODE(Name, mnemonic, operands, list) \
  absl::Status Exec##Name(const Instruction& in);
#include "vm/isa/opcodes.def"
#undef NIMBLE_OPCODE

  std::shared_ptr<const Executable> exe_;
  VirtualMachineOptions options_;
  // device_graphs: the instance's stream and the allocator ordered on it, the graphs and how
  // often each (variant, input shapes) key was seen (-1: capture failed, always eager).
  void* own_stream_ = nullptr;
  int graph_device_ = -1;  // index into exe_->devices
  std::unique_ptr<Allocator> stream_allocator_;
  std::vector<std::unique_ptr<DeviceGraphEntry>> graphs_;
  std::vector<std::pair<std::string, int>> graph_seen_;
  uint64_t graph_clock_ = 0;
  bool capturing_ = false;
  // Per function, per pc: what to request before the kernel at that pc is queued while
  // capturing. Empty when weight prefetching is off.
  std::vector<std::vector<std::vector<PrefetchTarget>>> prefetch_plan_;
  bool capture_invalid_ = false;
  std::vector<const void*> capture_unknown_;  // host buffers whose contents capture cannot know
  // Sources of result copies on a capture's branch, alive until the capture ends.
  std::vector<Tensor> capture_kept_;
  // Result copies (kDeviceCopyResult) of an eager call, made when the function returns.
  std::vector<std::pair<Tensor, Tensor>> pending_results_;  // (device source, host destination)
  DeviceGraphStats graph_stats_;
  VmProfile profile_;
  Allocator* host_allocator_ = nullptr;
  DeviceApi* device_api_ = nullptr;             // of the executable's non-CPU device type, if any
  // Where that device's kernels report bad input (null: they report nothing), and whether the
  // current call's device work is known finished.
  DeviceErrorRecord* device_errors_ = nullptr;
  Device error_device_ = kCpu;
  bool device_idle_ = false;
  std::vector<Allocator*> device_allocators_;   // per exe_->devices index (null: none)
  std::vector<KernelContext> kernel_contexts_;  // per exe_->kernels index
  // Symbols of the executable, and per variant the symbol index of each bound.
  std::vector<std::string> symbols_;
  std::vector<int> binding_symbol_;  // per symbol_bindings entry
  std::vector<std::vector<int>> variant_symbols_;

  // Interpreter state of the current call.
  std::vector<Frame> frames_;  // frames_[0, depth_) are live; the rest keep their buffers
  size_t depth_ = 0;
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
