#include "vm/kernels/cpu/onednn_util.h"

#include <dlfcn.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <memory>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vm/kernels/cpu/fp16.h"
#include "vm/kernels/cpu/lowp.h"

namespace nimble::vm::cpu {

namespace onednn {

const dnnl::engine& Engine() {
  // Constructing the CPU engine cannot fail on a CPU build; a throw would terminate, as it
  // should for a broken installation.
  static const dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

absl::Status StatusFromC(dnnl_status_t status, absl::string_view what) {
  switch (status) {
    case dnnl_success:
      return absl::OkStatus();
    case dnnl_out_of_memory:
      return absl::ResourceExhaustedError(absl::StrCat(what, ": oneDNN is out of memory"));
    case dnnl_unimplemented:
      return absl::UnimplementedError(
          absl::StrCat(what, ": oneDNN has no implementation for this configuration"));
    case dnnl_invalid_arguments:
      return absl::InvalidArgumentError(absl::StrCat(what, ": oneDNN rejected the arguments"));
    default:
      return absl::InternalError(absl::StrCat(what, ": oneDNN error ", static_cast<int>(status)));
  }
}

absl::Status ErrorStatus(const dnnl::error& e, absl::string_view what) {
  absl::Status status = StatusFromC(e.status, what);
  if (status.ok()) return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  return absl::Status(status.code(), absl::StrCat(status.message(), " (", e.what(), ")"));
}

namespace {

struct OmpApi {
  void (*set_num_threads)(int) = nullptr;
  int (*get_max_threads)() = nullptr;
  int (*in_parallel)() = nullptr;
  // libgomp's entry for `#pragma omp parallel` (stable ABI since GCC 4.9).
  void (*parallel)(void (*fn)(void*), void* data, unsigned num_threads, unsigned flags) = nullptr;
};

// libgomp comes in with libdnnl; looked up at run time so that our targets need no OpenMP
// flags of their own.
const OmpApi& Omp() {
  static const OmpApi api = [] {
    OmpApi a;
    a.set_num_threads = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
    a.get_max_threads = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "omp_get_max_threads"));
    a.in_parallel = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "omp_in_parallel"));
    a.parallel = reinterpret_cast<void (*)(void (*)(void*), void*, unsigned, unsigned)>(
        dlsym(RTLD_DEFAULT, "GOMP_parallel"));
    if (a.set_num_threads == nullptr || a.get_max_threads == nullptr) a = OmpApi();
    return a;
  }();
  return api;
}

}  // namespace

ScopedThreads::ScopedThreads(int num_threads) {
  const OmpApi& omp = Omp();
  if (omp.set_num_threads == nullptr) return;
  previous_ = omp.get_max_threads();
  const int n = std::max(1, num_threads);
  if (n != previous_) {
    omp.set_num_threads(n);
  } else {
    previous_ = 0;
  }
}

ScopedThreads::~ScopedThreads() {
  if (previous_ > 0) Omp().set_num_threads(previous_);
}

#if !defined(__SANITIZE_THREAD__)
namespace {

struct OmpFor {
  absl::FunctionRef<void(int64_t, int64_t)>* fn;
  int64_t n, chunk, chunks;
  std::atomic<int64_t> next{0};
};

// Each team member takes chunks until none are left (a late or descheduled thread just takes
// fewer).
void OmpForBody(void* data) {
  OmpFor& f = *static_cast<OmpFor*>(data);
  for (int64_t c = f.next.fetch_add(1, std::memory_order_relaxed); c < f.chunks;
       c = f.next.fetch_add(1, std::memory_order_relaxed)) {
    const int64_t begin = c * f.chunk;
    (*f.fn)(begin, std::min(f.n, begin + f.chunk));
  }
}

}  // namespace
#endif

bool OmpParallelFor(int num_threads, int64_t n, int64_t chunks,
                    absl::FunctionRef<void(int64_t, int64_t)> fn) {
#if defined(__SANITIZE_THREAD__)
  // libgomp is not instrumented: ThreadSanitizer cannot see its barriers, so TSan builds keep
  // the TBB path.
  (void)num_threads, (void)n, (void)chunks, (void)fn;
  return false;
#else
  const OmpApi& omp = Omp();
  if (omp.parallel == nullptr || omp.in_parallel == nullptr) return false;
  if (omp.in_parallel()) {  // nested: this thread's share runs inline
    fn(0, n);
    return true;
  }
  OmpFor f{&fn, n, (n + chunks - 1) / chunks, 0};
  f.chunks = (n + f.chunk - 1) / f.chunk;
  omp.parallel(&OmpForBody, &f, static_cast<unsigned>(std::max(1, num_threads)), 0);
  return true;
#endif
}

int ThreadsFor(int budget, double flops) {
  const double useful = flops / 1.0e6;
  if (useful < 2.0) return 1;
  return static_cast<int>(std::min<double>(std::max(budget, 1), useful));
}

absl::Status Sgemm(int num_threads, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                   float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
                   float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return absl::OkStatus();
  ScopedThreads threads(ThreadsFor(num_threads, 2.0 * static_cast<double>(m) * n * k));
  return StatusFromC(dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b,
                                ldb, beta, c, ldc),
                     "sgemm");
}

absl::StatusOr<std::shared_ptr<const CachedPrimitive>> PrimitiveCache::GetOrCreate(
    const Key& key, absl::FunctionRef<absl::StatusOr<CachedPrimitive>()> create) const {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = index_.find(key);
    if (it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      return it->second->second;
    }
  }
  NIMBLE_ASSIGN_OR_RETURN(CachedPrimitive created, create());
  auto entry = std::make_shared<const CachedPrimitive>(std::move(created));
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = index_.find(key);
  if (it != index_.end()) return it->second->second;  // another caller won the race
  lru_.emplace_front(key, entry);
  index_[key] = lru_.begin();
  while (lru_.size() > capacity_) {
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
  return entry;
}

bool PrimitiveCache::Contains(const Key& key) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return index_.count(key) != 0;
}

size_t PrimitiveCache::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return lru_.size();
}

dnnl::primitive_attr UserScratchpadAttr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

dnnl::memory Memory(const dnnl::memory::desc& md, const void* data) {
  return dnnl::memory(md, Engine(), const_cast<void*>(data));
}

absl::Status Execute(const CachedPrimitive& primitive, std::unordered_map<int, dnnl::memory>& args,
                     Allocator* allocator, int num_threads, absl::string_view what) {
  std::shared_ptr<Storage> scratch;
  if (primitive.scratchpad_bytes > 0) {
    NIMBLE_ASSIGN_OR_RETURN(scratch, Storage::Allocate(allocator, primitive.scratchpad_bytes));
  }
  ScopedThreads threads(num_threads);
  try {
    if (scratch != nullptr)
      args[DNNL_ARG_SCRATCHPAD] = Memory(primitive.scratchpad_md, scratch->data());
    dnnl::stream stream(Engine());
    primitive.primitive.execute(stream, args);
    stream.wait();
  } catch (const dnnl::error& e) {
    return ErrorStatus(e, what);
  }
  return absl::OkStatus();
}

}  // namespace onednn

namespace kernel_util {

void ParallelFor(int num_threads, int64_t n, int64_t grain,
                 absl::FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  if (num_threads <= 1 || n <= grain) {
    fn(0, n);
    return;
  }
  const int64_t chunks = std::min<int64_t>((n + grain - 1) / grain, int64_t{num_threads} * 4);
  // On oneDNN's OpenMP team when there is one: one set of threads for GEMMs and everything
  // else, so no TBB worker competes with OpenMP threads still spinning after a GEMM.
  if (onednn::OmpParallelFor(num_threads, n, chunks, fn)) return;
  const int64_t chunk = (n + chunks - 1) / chunks;
  // One arena per calling thread and budget: the worker's budget bounds our parallelism even
  // when the process-wide TBB pool is larger.
  thread_local std::unique_ptr<tbb::task_arena> arena;
  thread_local int arena_threads = 0;
  if (arena == nullptr || arena_threads != num_threads) {
    arena = std::make_unique<tbb::task_arena>(num_threads);
    arena_threads = num_threads;
  }
  arena->execute([&] {
    // simple_partitioner: one task per chunk, so idle threads can steal any of them.
    tbb::parallel_for(
        tbb::blocked_range<int64_t>(0, chunks, 1),
        [&](const tbb::blocked_range<int64_t>& r) {
          for (int64_t c = r.begin(); c < r.end(); ++c) {
            const int64_t begin = c * chunk;
            const int64_t end = std::min(n, begin + chunk);
            if (begin < end) fn(begin, end);
          }
        },
        tbb::simple_partitioner());
  });
}

void CopyElements(DType dtype, void* dst, const void* src, int64_t n) {
  if (n <= 0) return;
  if (dtype == DType::kString) {
    const auto* s = static_cast<const std::string*>(src);
    std::copy(s, s + n, static_cast<std::string*>(dst));
    return;
  }
  std::memmove(dst, src, static_cast<size_t>(n) * DTypeSize(dtype));
}

namespace {

template <typename T>
void AppendAll(const Tensor& t, std::vector<int64_t>& out) {
  const T* p = t.data<T>();
  for (int64_t i = 0; i < t.num_elements(); ++i) out.push_back(static_cast<int64_t>(p[i]));
}

}  // namespace

absl::StatusOr<std::vector<int64_t>> ReadInts(const Tensor& t, absl::string_view op,
                                              absl::string_view what) {
  std::vector<int64_t> out;
  if (!t.defined()) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", what, " is missing"));
  }
  out.reserve(t.num_elements());
  switch (t.dtype()) {
    case DType::kI64:
      AppendAll<int64_t>(t, out);
      break;
    case DType::kI32:
      AppendAll<int32_t>(t, out);
      break;
    case DType::kI16:
      AppendAll<int16_t>(t, out);
      break;
    case DType::kI8:
      AppendAll<int8_t>(t, out);
      break;
    case DType::kU8:
      AppendAll<uint8_t>(t, out);
      break;
    case DType::kU16:
      AppendAll<uint16_t>(t, out);
      break;
    case DType::kU32:
      AppendAll<uint32_t>(t, out);
      break;
    case DType::kU64: {
      const uint64_t* p = t.data<uint64_t>();
      for (int64_t i = 0; i < t.num_elements(); ++i) {
        if (p[i] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          return absl::InvalidArgumentError(
              absl::StrCat(op, ": ", what, " value ", p[i], " is out of range"));
        }
        out.push_back(static_cast<int64_t>(p[i]));
      }
      break;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": ", what, " must be an integer tensor, got ", t.TypeString()));
  }
  return out;
}

absl::StatusOr<int64_t> ReadScalarInt(const Tensor& t, absl::string_view op,
                                      absl::string_view what) {
  if (t.defined() && t.num_elements() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", what, " must have one element, got ", t.TypeString()));
  }
  auto values = ReadInts(t, op, what);
  if (!values.ok()) return values.status();
  return (*values)[0];
}

double ElementAsDouble(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kF32:
      return t.data<float>()[i];
    case DType::kF64:
      return t.data<double>()[i];
    case DType::kF16:
      return HalfToFloat(t.data<uint16_t>()[i]);
    case DType::kBF16:
      return BFloat16ToFloat(t.data<uint16_t>()[i]);
    case DType::kI8:
      return t.data<int8_t>()[i];
    case DType::kI16:
      return t.data<int16_t>()[i];
    case DType::kI32:
      return t.data<int32_t>()[i];
    case DType::kI64:
      return static_cast<double>(t.data<int64_t>()[i]);
    case DType::kU8:
      return t.data<uint8_t>()[i];
    case DType::kU16:
      return t.data<uint16_t>()[i];
    case DType::kU32:
      return t.data<uint32_t>()[i];
    case DType::kU64:
      return static_cast<double>(t.data<uint64_t>()[i]);
    case DType::kBool:
      return t.data<bool>()[i] ? 1.0 : 0.0;
    case DType::kI4:
    case DType::kI2:
      return t.data<int8_t>()[i];
    case DType::kU4:
    case DType::kU2:
      return t.data<uint8_t>()[i];
    case DType::kF8E4M3FN:
    case DType::kF8E4M3FNUZ:
    case DType::kF8E5M2:
    case DType::kF8E5M2FNUZ:
    case DType::kF4E2M1:
    case DType::kF8E8M0:
      return LowPrecisionFloatToFloat(t.dtype(), t.data<uint8_t>()[i]);
    default:
      return 0.0;
  }
}

absl::StatusOr<double> ReadScalarDouble(const Tensor& t, absl::string_view op,
                                        absl::string_view what) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(op, ": ", what, " is missing"));
  if (t.num_elements() != 1 || t.dtype() == DType::kString) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", what, " must be one number, got ", t.TypeString()));
  }
  return ElementAsDouble(t, 0);
}

absl::StatusOr<int> NormalizeAxis(int64_t axis, int rank, absl::string_view op) {
  if (axis < -rank || axis >= rank) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": axis ", axis, " is out of range for rank ", rank));
  }
  return static_cast<int>(axis < 0 ? axis + rank : axis);
}

absl::Status CheckArity(absl::string_view op, size_t num_inputs, size_t min_inputs,
                        size_t max_inputs) {
  if (num_inputs < min_inputs || num_inputs > max_inputs) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": expected ", min_inputs,
                     min_inputs == max_inputs ? "" : absl::StrCat("..", max_inputs),
                     " inputs, got ", num_inputs));
  }
  return absl::OkStatus();
}

absl::Status CheckOutputs(absl::string_view op, absl::Span<Tensor> outputs, size_t min_outputs,
                          size_t max_outputs) {
  if (outputs.size() < min_outputs || outputs.size() > max_outputs) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": expected ", min_outputs,
                     min_outputs == max_outputs ? "" : absl::StrCat("..", max_outputs),
                     " outputs, got ", outputs.size()));
  }
  return absl::OkStatus();
}

absl::Status CheckDefined(absl::string_view op, absl::Span<const Tensor> inputs, size_t index,
                          absl::string_view what) {
  if (index >= inputs.size() || !inputs[index].defined()) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": input ", what, " is missing"));
  }
  if (inputs[index].device().type != DeviceType::kCPU) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": input ", what, " is not on the host"));
  }
  return absl::OkStatus();
}

absl::Status CheckOutputShapes(absl::string_view op, absl::Span<Tensor> outputs,
                               absl::Span<const Shape> shapes) {
  for (size_t i = 0; i < outputs.size() && i < shapes.size(); ++i) {
    if (!outputs[i].defined()) continue;
    if (outputs[i].shape() != shapes[i]) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": output ", i, " was allocated as ", outputs[i].TypeString(),
                       " but the op produces shape ", ShapeToString(shapes[i])));
    }
    if (outputs[i].device().type != DeviceType::kCPU) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": output ", i, " is not on the host"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckOutputDType(absl::string_view op, const Tensor& output, DType dtype) {
  if (dtype != DType::kInvalid && output.defined() && output.dtype() != dtype) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": output is ", output.TypeString(),
                                                   ", expected element type ", DTypeName(dtype)));
  }
  return absl::OkStatus();
}

absl::Status WriteScalar(DType dtype, double value, void* dst) {
  switch (dtype) {
    case DType::kF32:
      *static_cast<float*>(dst) = static_cast<float>(value);
      break;
    case DType::kF64:
      *static_cast<double*>(dst) = value;
      break;
    case DType::kF16:
      *static_cast<uint16_t*>(dst) = FloatToHalf(static_cast<float>(value));
      break;
    case DType::kBF16:
      *static_cast<uint16_t*>(dst) = FloatToBFloat16(static_cast<float>(value));
      break;
    case DType::kI8:
      *static_cast<int8_t*>(dst) = static_cast<int8_t>(value);
      break;
    case DType::kI16:
      *static_cast<int16_t*>(dst) = static_cast<int16_t>(value);
      break;
    case DType::kI32:
      *static_cast<int32_t*>(dst) = static_cast<int32_t>(value);
      break;
    case DType::kI64:
      *static_cast<int64_t*>(dst) = static_cast<int64_t>(value);
      break;
    case DType::kU8:
      *static_cast<uint8_t*>(dst) = static_cast<uint8_t>(value);
      break;
    case DType::kU16:
      *static_cast<uint16_t*>(dst) = static_cast<uint16_t>(value);
      break;
    case DType::kU32:
      *static_cast<uint32_t*>(dst) = static_cast<uint32_t>(value);
      break;
    case DType::kU64:
      *static_cast<uint64_t*>(dst) = static_cast<uint64_t>(value);
      break;
    case DType::kBool:
      *static_cast<bool*>(dst) = value != 0;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("cannot write a number as ", DTypeName(dtype)));
  }
  return absl::OkStatus();
}

Shape Strides(absl::Span<const int64_t> shape) {
  Shape strides(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * shape[i];
  return strides;
}

absl::Status SingleOutputKernel::OutputShapes(absl::Span<const Tensor> inputs,
                                              absl::Span<Shape> output_shapes) const {
  if (output_shapes.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(op_, ": expected 1 output, got ", output_shapes.size()));
  }
  NIMBLE_ASSIGN_OR_RETURN(output_shapes[0], InferShape(inputs));
  return absl::OkStatus();
}

absl::Status SingleOutputKernel::Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                                     absl::Span<Tensor> outputs) const {
  NIMBLE_RETURN_IF_ERROR(CheckOutputs(op_, outputs, 1, 1));
  if (!outputs[0].defined()) {
    return absl::InvalidArgumentError(absl::StrCat(op_, ": output is not allocated"));
  }
  NIMBLE_ASSIGN_OR_RETURN(Shape shape, InferShape(inputs));
  NIMBLE_RETURN_IF_ERROR(CheckOutputShapes(op_, outputs, absl::MakeConstSpan(&shape, 1)));
  NIMBLE_ASSIGN_OR_RETURN(DType dtype, OutputDType(inputs));
  NIMBLE_RETURN_IF_ERROR(CheckOutputDType(op_, outputs[0], dtype));
  return Compute(ctx, inputs, outputs[0]);
}

}  // namespace kernel_util

}  // namespace nimble::vm::cpu
