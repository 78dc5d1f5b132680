// The kernel interface: destination-passing calls on tensors, per device, created once per
// executable from compile-time attributes and shared by every concurrent call.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vm/runtime/allocator.h"
#include "vm/runtime/attributes.h"
#include "vm/runtime/device.h"
#include "vm/runtime/tensor.h"

namespace nimble::vm {

// Where device kernels report bad input that only the device sees (an index out of range in
// a Gather, a sequence length past the sequence): page-locked host memory the device writes
// with plain stores, read by the host once the work is done (VirtualMachine: after each call).
// A kernel that finds bad input also writes a defined result (zeros, clamped lengths), so
// nothing faults; the call then fails with the recorded error. The layout is shared with the
// device code (vm/kernels/cuda/ops_cuda.h: ops::ErrorRecord).
struct DeviceErrorRecord {
  int32_t code = 0;  // a DeviceErrorCode; 0 while nothing was reported
  int32_t unused = 0;
  int64_t value = 0;  // the offending value
  int64_t bound = 0;  // the limit it broke
};
enum DeviceErrorCode : int32_t {
  kDeviceErrorNone = 0,
  kDeviceErrorGatherIndex = 1,     // Gather: index `value` outside [-bound, bound)
  kDeviceErrorEmbeddingIndex = 2,  // EmbedLayerNorm: index `value` outside [-bound, bound)
  kDeviceErrorSequenceLength = 3,  // LSTM: sequence_lens value `value` outside [0, bound]
};
// The error `record` holds (Ok when none) on `device`, and clears it. Call only when no device
// work that may write it is in flight.
absl::Status TakeDeviceError(DeviceErrorRecord& record, Device device);

// Per-call context handed to kernels. Not shared between concurrent calls.
struct KernelContext {
  Device device = kCpu;
  Allocator* allocator = DefaultCpuAllocator();  // for outputs of allocating kernels and scratch
  int num_threads = 1;                           // the worker's thread budget
  void* stream = nullptr;                        // cudaStream_t on CUDA devices
  // Device kernels' error record (device-accessible); null: kernels report nothing and keep
  // their defined results.
  DeviceErrorRecord* device_errors = nullptr;
};

// Thread-safe: Run() is const and called concurrently by many VM instances.
class Kernel {
 public:
  virtual ~Kernel() = default;

  // Destination passing: `outputs` arrive allocated with the shapes the compiler's shape
  // functions computed; the kernel fills them. For kernels whose allocates_outputs() is true
  // (data-dependent and upper-bound shapes: NonZero, Unique, NonMaxSuppression, ...) the
  // outputs arrive null and the kernel allocates them from ctx.allocator at their real size.
  virtual absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                           absl::Span<Tensor> outputs) const = 0;

  virtual bool allocates_outputs() const { return false; }

  // Kernels with a data-dependent number of outputs (SplitToSequence) implement this instead
  // of Run; the VM packs the result into a sequence. Only called by InvokePacked with
  // kInvokePackedSequenceOutput.
  virtual absl::StatusOr<std::vector<Tensor>> RunVariadic(const KernelContext& ctx,
                                                          absl::Span<const Tensor> inputs) const {
    (void)ctx;
    (void)inputs;
    return absl::InternalError("kernel has no variadic form");
  }
  virtual bool variadic_outputs() const { return false; }

  // The kernel's shape function, data-dependent mode: output shapes from the inputs (their
  // values where the op needs them: Reshape's shape, Expand, Range, Tile, ...). The VM runs it
  // on the host when the compiler could not derive an output shape symbolically, then
  // allocates the outputs and calls Run. Every kernel whose outputs the caller allocates
  // implements it; errors are kInvalidArgument naming the offending input.
  virtual absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                                    absl::Span<Shape> output_shapes) const = 0;
};

// Builds a kernel instance from its attributes; errors say which attribute is wrong.
// Factories must not touch the device (the compiler creates kernels on machines without one).
using KernelFactory = std::function<absl::StatusOr<std::unique_ptr<Kernel>>(const Attributes&)>;

// What the compiler's device placement needs to know about a non-CPU kernel.
struct KernelTraits {
  // Inputs the kernel reads on the host although it runs on the device (shape-like operands:
  // Slice's starts, Expand's shape, ...). The compiler keeps them in host memory.
  std::vector<int> host_inputs;
  // Whether the kernel handles a node with these input / output dtypes and attributes (an
  // absent input has DType::kInvalid). Null: everything. A node it refuses runs on the CPU.
  std::function<bool(absl::Span<const DType> inputs, absl::Span<const DType> outputs,
                     const Attributes& attrs)>
      supports;
};

// Device work captured once and replayed (a CUDA graph): VirtualMachineOptions::device_graphs.
class DeviceGraph {
 public:
  virtual ~DeviceGraph() = default;
  // Queues the captured work on `stream`.
  virtual absl::Status Launch(void* stream) = 0;
  // A copy of the graph from device memory into exactly the host bytes [dst, dst + bytes) of
  // the captured run, as an index for SetHostCopyDestination; -1 when there is none.
  virtual int FindHostCopy(const void* dst, size_t bytes) const { return -1; }
  // Makes later launches write copy `index` to `dst` instead (page-locked memory of
  // DeviceApi::PinnedHostStorage, at least as large as the copy).
  virtual absl::Status SetHostCopyDestination(int index, void* dst) {
    return absl::UnimplementedError("this graph cannot redirect its copies");
  }
};

// Memory operations of a non-CPU device type, registered with its kernels.
// Thread-safe.
class DeviceApi {
 public:
  virtual ~DeviceApi() = default;
  // Copies `bytes` from `src` on `from` to `dst` on `to` (one of them, or both, on this device
  // type), ordered on `stream`. Returns when the host may reuse a host source; a copy to the
  // host returns when the data has arrived.
  virtual absl::Status Copy(void* dst, Device to, const void* src, Device from, size_t bytes,
                            void* stream) = 0;
  // A copy of `bytes` from `src` on device `from` to host memory `dst` that nothing queued on
  // `stream` after it reads or overwrites, and that the host reads only after the capture
  // ends: while `stream` captures a graph, it runs on a parallel branch that the capture's end
  // joins, so the work queued after it overlaps it (the caller keeps `src` alive until the
  // capture ends, or until JoinBranches). Outside a capture (and by default) it is Copy.
  virtual absl::Status CopyToHostOnBranch(void* dst, const void* src, Device from, size_t bytes,
                                          void* stream) {
    return Copy(dst, kCpu, src, from, bytes, stream);
  }
  // While `stream` captures: orders the work queued on `stream` after this call behind every
  // branch forked from it so far (CopyToHostOnBranch, PrefetchToCache), e.g. the frees of what
  // those branches read. Otherwise (and by default) nothing.
  virtual absl::Status JoinBranches(void* stream) { return absl::OkStatus(); }
  // Waits for everything queued on `stream`.
  virtual absl::Status Synchronize(void* stream) = 0;
  // The process-wide allocator of device `ordinal` (allocations ordered on the default stream).
  // kFailedPrecondition when the device is absent.
  virtual absl::StatusOr<Allocator*> DefaultAllocator(int ordinal) = 0;

  // Device graphs; the defaults report that the device has none.
  // A new stream of device `ordinal`, released with DestroyStream.
  virtual absl::StatusOr<void*> CreateStream(int ordinal) {
    return absl::UnimplementedError("this device has no streams of its own");
  }
  virtual void DestroyStream(void* stream) {}
  // An allocator over device `ordinal`'s pool whose allocations are ordered on `stream`.
  virtual absl::StatusOr<std::unique_ptr<Allocator>> StreamAllocator(int ordinal, void* stream) {
    return absl::UnimplementedError("this device has no stream allocators");
  }
  // Host memory the device can copy from and to inside a graph (page-locked); nothing is freed
  // before the allocator itself, so buffers a captured graph reads or writes stay valid.
  virtual absl::StatusOr<std::unique_ptr<Allocator>> NewHostArena() {
    return absl::UnimplementedError("this device has no host arenas");
  }
  // `bytes` of page-locked host memory from a process-wide bounded pool, returned to it when
  // the storage goes (which may outlive every VM): a graph's results are copied straight into
  // such storage and handed to the caller.
  virtual absl::StatusOr<std::shared_ptr<Storage>> PinnedHostStorage(size_t bytes) {
    return absl::UnimplementedError("this device has no page-locked host memory");
  }
  // Starts capturing the work queued on `stream` (after reserving what capture cannot
  // allocate); copies to the host do not synchronise while capturing.
  virtual absl::Status BeginCapture(int ordinal, void* stream) {
    return absl::UnimplementedError("this device has no graphs");
  }
  // Ends the capture on `stream` and instantiates the graph.
  virtual absl::StatusOr<std::unique_ptr<DeviceGraph>> EndCapture(void* stream) {
    return absl::UnimplementedError("this device has no graphs");
  }
  // Marks the work queued on `stream` of device `ordinal` from MarkWarmup(..., true) to
  // MarkWarmup(..., false) as the eager warm-up call that precedes a graph's capture at fixed
  // shapes: the device may spend one-off time there choosing what the graph will replay (the
  // CUDA device tunes its GEMMs). The default ignores it.
  virtual void MarkWarmup(int ordinal, void* stream, bool on) {}
  // A hint that a kernel queued on `stream` soon reads [ptr, ptr + bytes) of device `ordinal`'s
  // memory, which nothing queued before it writes: the device may start pulling it into its
  // cache without holding up `stream` (while `stream` captures, on a parallel branch of the
  // graph that the capture's end joins). Nothing is written; the default ignores it.
  virtual absl::Status PrefetchToCache(int ordinal, const void* ptr, size_t bytes, void* stream) {
    return absl::OkStatus();
  }
  // A zeroed error record that device `ordinal`'s kernels can write (KernelContext::
  // device_errors), freed with FreeErrorRecord. The default: none (kernels report nothing).
  virtual absl::StatusOr<DeviceErrorRecord*> NewErrorRecord(int ordinal) {
    return absl::UnimplementedError("this device reports no kernel errors");
  }
  virtual void FreeErrorRecord(DeviceErrorRecord* record) {}
};

// Name -> factory per device type. Thread-safe: registration and lookup take a mutex.
class KernelRegistry {
 public:
  // The registry with every built-in kernel of every compiled-in device.
  static KernelRegistry& Global();

  void Register(const std::string& name, DeviceType device, KernelFactory factory);
  bool Has(const std::string& name, DeviceType device) const;
  void SetTraits(const std::string& name, DeviceType device, KernelTraits traits);
  // Default traits when none were set.
  KernelTraits Traits(const std::string& name, DeviceType device) const;
  // The memory operations of `device` (null for kCPU and for device types not compiled in).
  void SetDeviceApi(DeviceType device, DeviceApi* api);
  DeviceApi* GetDeviceApi(DeviceType device) const;
  // kNotFound naming the kernel and device when absent.
  absl::StatusOr<std::unique_ptr<Kernel>> Create(const std::string& name, DeviceType device,
                                                 const Attributes& attrs) const;

 private:
  mutable std::mutex mutex_;  // guards factories_
  std::map<std::pair<std::string, DeviceType>, KernelFactory> factories_;
  std::map<std::pair<std::string, DeviceType>, KernelTraits> traits_;
  std::map<DeviceType, DeviceApi*> apis_;
};

// Adds the CPU kernels (vm/kernels/cpu) to `registry`. Called by KernelRegistry::Global().
void RegisterCpuKernels(KernelRegistry& registry);
// Adds the CUDA kernels and device API (vm/kernels/cuda), when built with NIMBLE_HAVE_CUDA.
void RegisterCudaKernels(KernelRegistry& registry);

}  // namespace nimble::vm
