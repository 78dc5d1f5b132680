// Helpers shared by the tensor, indexing, linear-algebra and recurrent CPU kernels.
//
// oneDNN: one CPU engine for the process; its C++ API throws dnnl::error, which kernels catch
// at the call site and turn into a status with onednn::ErrorStatus. Debian's oneDNN threads
// with OpenMP, whose thread count is a per-calling-thread setting: onednn::ScopedThreads pins it
// to the worker's budget (KernelContext::num_threads) around each oneDNN call so concurrent
// workers do not oversubscribe the machine. OpenMP teams wait at barriers for every member, so
// a core taken by another process stalls each parallel region (measured on the 2-core dev VM
// under load: a 2-thread GEMV per LSTM step went from 45 us to milliseconds); small products
// therefore run on one thread (ThreadsFor), and the recurrent kernels split their GEMMs into
// single-threaded sgemm calls inside TBB tasks, which fall back to the calling thread instead.
//
// kernel_util: a TBB parallel loop bounded by the same budget, element-type dispatch by size for
// data movement (std::string for kString), and reading integer inputs (shapes, axes, indices).
#pragma once

#include <cstdint>
#include <cstring>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "vm/kernels/kernel.h"
#include "vm/runtime/dtype.h"
#include "vm/runtime/tensor.h"

namespace nimble::vm::cpu {

namespace onednn {

// The process-wide CPU engine. Thread-safe (oneDNN engines are).
const dnnl::engine& Engine();

// A status for a oneDNN error: kUnimplemented for configurations oneDNN lacks,
// kResourceExhausted for out-of-memory, kInternal otherwise; `what` says which call failed.
absl::Status ErrorStatus(const dnnl::error& e, absl::string_view what);
// The same for the C API's status codes (dnnl_sgemm); OK for dnnl_success.
absl::Status StatusFromC(dnnl_status_t status, absl::string_view what);

// Sets OpenMP's thread count for oneDNN calls made by this thread until destruction, then
// restores it. A no-op when OpenMP is not loaded.
class ScopedThreads {
 public:
  explicit ScopedThreads(int num_threads);
  ~ScopedThreads();
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  int previous_ = 0;
};

// Runs fn over [0, n) split into `chunks` pieces on an OpenMP team of `num_threads` (libgomp,
// looked up at run time: the threads oneDNN's GEMMs use). Inside a parallel region it runs
// fn(0, n) inline. False (nothing run) when OpenMP is not loaded.
bool OmpParallelFor(int num_threads, int64_t n, int64_t chunks,
                    absl::FunctionRef<void(int64_t, int64_t)> fn);

// Threads worth using for `flops` of work on a budget of `budget`: about one per MFLOP, so
// small products skip the fork/join of a parallel region.
int ThreadsFor(int budget, double flops);

// Row-major C = alpha * op(A) * op(B) + beta * C with oneDNN's JIT sgemm, on up to
// `num_threads` threads (ThreadsFor).
absl::Status Sgemm(int num_threads, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                   float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
                   float beta, float* c, int64_t ldc);

// A created primitive and the scratchpad it needs (primitives are built with
// scratchpad_mode::user: the library's shared scratchpad would tie a primitive to the thread
// that created it, and ours run on whichever worker calls).
struct CachedPrimitive {
  dnnl::primitive primitive;
  dnnl::memory::desc scratchpad_md;
  size_t scratchpad_bytes = 0;
  // The layouts the primitive reads and writes (set for matmul and convolution).
  dnnl::memory::desc src_md, weights_md, dst_md;
};

// The CachedPrimitive of a primitive descriptor built with UserScratchpadAttr().
template <typename Primitive, typename PrimitiveDesc>
CachedPrimitive MakeCached(const PrimitiveDesc& pd) {
  CachedPrimitive c{Primitive(pd), pd.scratchpad_desc(), 0, {}, {}, {}};
  c.scratchpad_bytes = c.scratchpad_md.get_size();
  return c;
}
// The same with the src/weights/dst layouts of a matmul or convolution.
template <typename Primitive, typename PrimitiveDesc>
CachedPrimitive MakeCachedWithLayouts(const PrimitiveDesc& pd) {
  CachedPrimitive c = MakeCached<Primitive>(pd);
  c.src_md = pd.src_desc();
  c.weights_md = pd.weights_desc();
  c.dst_md = pd.dst_desc();
  return c;
}

// Primitive creation costs tens to hundreds of microseconds, so kernels keep theirs in a bounded
// LRU keyed by everything that shapes the primitive (dims, strides, post-ops).
// Thread-safe: one mutex guards the list and the index; creation runs outside it.
class PrimitiveCache {
 public:
  using Key = std::vector<int64_t>;
  explicit PrimitiveCache(size_t capacity = 64) : capacity_(capacity) {}

  // The entry for `key`, created by `create` on a miss.
  absl::StatusOr<std::shared_ptr<const CachedPrimitive>> GetOrCreate(
      const Key& key, absl::FunctionRef<absl::StatusOr<CachedPrimitive>()> create) const;

  size_t size() const;
  bool Contains(const Key& key) const;

 private:
  using Entry = std::pair<Key, std::shared_ptr<const CachedPrimitive>>;
  const size_t capacity_;
  mutable std::mutex mutex_;      // guards lru_ and index_
  mutable std::list<Entry> lru_;  // most recently used first
  mutable std::map<Key, std::list<Entry>::iterator> index_;
};

// Runs `primitive` with `args` on a new stream with `num_threads` OpenMP threads, giving it a
// scratchpad from `allocator`. Catches oneDNN errors; `what` names the op in them.
absl::Status Execute(const CachedPrimitive& primitive, std::unordered_map<int, dnnl::memory>& args,
                     Allocator* allocator, int num_threads, absl::string_view what);

// An attribute set with scratchpad_mode::user.
dnnl::primitive_attr UserScratchpadAttr();

// A plain memory object over `data` (not owned).
dnnl::memory Memory(const dnnl::memory::desc& md, const void* data);

}  // namespace onednn

namespace kernel_util {

// Runs fn(begin, end) over [0, n) split into chunks of at least `grain` items, on up to
// `num_threads` threads (TBB); serially when one thread or one chunk suffices.
void ParallelFor(int num_threads, int64_t n, int64_t grain,
                 absl::FunctionRef<void(int64_t, int64_t)> fn);

// Calls fn(T{}) with T the unsigned integer type of `dtype`'s element size (uint8_t ..
// uint64_t), or std::string for kString: for kernels that only move elements.
template <typename Fn>
absl::Status DispatchByElementSize(DType dtype, Fn&& fn) {
  if (dtype == DType::kString) return fn(std::string());
  switch (DTypeSize(dtype)) {
    case 1:
      return fn(uint8_t{});
    case 2:
      return fn(uint16_t{});
    case 4:
      return fn(uint32_t{});
    case 8:
      return fn(uint64_t{});
    default:
      return absl::InvalidArgumentError("invalid element type");
  }
}

// Copies `n` elements of `dtype` (std::string objects for kString).
void CopyElements(DType dtype, void* dst, const void* src, int64_t n);

// The values of an integer tensor (i8..u64) as int64 (u64 above INT64_MAX is an error).
// `op` and `what` name the operand in errors ("Reshape: shape must be ...").
absl::StatusOr<std::vector<int64_t>> ReadInts(const Tensor& t, absl::string_view op,
                                              absl::string_view what);
// The single value of an integer tensor of one element.
absl::StatusOr<int64_t> ReadScalarInt(const Tensor& t, absl::string_view op,
                                      absl::string_view what);
// The single value of a numeric tensor of one element, as double.
absl::StatusOr<double> ReadScalarDouble(const Tensor& t, absl::string_view op,
                                        absl::string_view what);
// Element `i` of a numeric tensor as double (any dtype but kString; bool as 0/1).
double ElementAsDouble(const Tensor& t, int64_t i);

// `axis` in [-rank, rank) made non-negative; kInvalidArgument naming `op` otherwise.
absl::StatusOr<int> NormalizeAxis(int64_t axis, int rank, absl::string_view op);

// Input/output count checks: kInvalidArgument naming `op`.
absl::Status CheckArity(absl::string_view op, size_t num_inputs, size_t min_inputs,
                        size_t max_inputs);
absl::Status CheckOutputs(absl::string_view op, absl::Span<Tensor> outputs, size_t min_outputs,
                          size_t max_outputs);
// Whether optional input `i` was given (present and not an empty slot).
inline bool Present(absl::Span<const Tensor> inputs, size_t i) {
  return i < inputs.size() && inputs[i].defined();
}
// Checks that `input` is present (defined).
absl::Status CheckDefined(absl::string_view op, absl::Span<const Tensor> inputs, size_t index,
                          absl::string_view what);
// Checks that each defined output i has shape shapes[i] and, when dtypes is given, dtype
// dtypes[i] (the compiler allocated them; a mismatch would write out of bounds).
absl::Status CheckOutputShapes(absl::string_view op, absl::Span<Tensor> outputs,
                               absl::Span<const Shape> shapes);
// kInvalid accepts any dtype.
absl::Status CheckOutputDType(absl::string_view op, const Tensor& output, DType dtype);

// Writes `value` converted to `dtype` (any numeric type or bool) at `dst`.
absl::Status WriteScalar(DType dtype, double value, void* dst);

// Row-major element strides of `shape`.
Shape Strides(absl::Span<const int64_t> shape);

// Base of kernels with one output whose shape follows from the inputs: OutputShapes and Run
// share InferShape, and Run checks the allocated output against it before Compute writes it.
// Thread-safe: subclasses keep only immutable attributes.
class SingleOutputKernel : public Kernel {
 public:
  explicit SingleOutputKernel(std::string op) : op_(std::move(op)) {}

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const final;
  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const final;

 protected:
  const std::string& op() const { return op_; }
  // Validates the inputs and returns the output shape.
  virtual absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const = 0;
  // The output's element type (kInvalid: any); the first input's by default.
  virtual absl::StatusOr<DType> OutputDType(absl::Span<const Tensor> inputs) const {
    return inputs[0].dtype();
  }
  // Fills `output` (allocated with the inferred shape and dtype).
  virtual absl::Status Compute(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                               const Tensor& output) const = 0;

 private:
  const std::string op_;
};

}  // namespace kernel_util

}  // namespace nimble::vm::cpu
