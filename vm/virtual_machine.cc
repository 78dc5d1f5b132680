// The interpreter.
//
// Design: Executable::Verify has proved every register, function, kernel, constant, string,
// device and jump operand in range, every operand list inside its pool, that Invoke passes
// exactly the callee's parameter count and that no function falls off its end. The loop
// therefore indexes registers and tables directly. What verification cannot know statically
// -- which kind of value a register holds, tensor ranks and sizes, scalar values -- is checked
// by the handlers, failing the call with a status (never a crash).
//
// Calls push frames on frames_ (an explicit stack, bounded by max_call_depth); a frame's
// register vector keeps its capacity when popped so that steady-state calls do not allocate
// register files. The current frame's code, operand pool and registers are cached in members
// and reloaded on every push/pop.
#include "vm/virtual_machine.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <utility>

#include "absl/base/optimization.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace nimble::vm {
namespace {

absl::string_view KindOf(const Value& v) {
  static constexpr absl::string_view kNames[] = {"nothing",   "a scalar", "a tensor",
                                                 "a storage", "an ADT",   "a closure"};
  static_assert(std::variant_size_v<Value> == std::size(kNames));
  return kNames[v.index()];
}

absl::string_view ScalarOpName(ScalarOp op) {
  static constexpr absl::string_view kNames[] = {"add", "sub", "mul", "floordiv", "mod",
                                                 "min", "max", "eq",  "ne",       "lt",
                                                 "le",  "and", "or",  "ceildiv"};
  static_assert(std::size(kNames) == kNumScalarOps);
  return kNames[static_cast<int>(op)];
}

absl::Status Overflow(int64_t x, ScalarOp op, int64_t y) {
  return absl::InvalidArgumentError(
      absl::StrCat("shape arithmetic overflows (", x, " ", ScalarOpName(op), " ", y, ")"));
}

absl::Status DivisionByZero(int64_t x) {
  return absl::InvalidArgumentError(
      absl::StrCat("division by zero in shape arithmetic (", x, " / 0)"));
}

// FloorDiv/Mod round toward negative infinity, CeilDiv toward positive infinity.
ABSL_ATTRIBUTE_ALWAYS_INLINE inline absl::Status ApplyScalarOp(int32_t code, int64_t x, int64_t y,
                                                               int64_t* out) {
  const ScalarOp op = static_cast<ScalarOp>(code);
  switch (op) {
    case ScalarOp::kAdd:
      if (__builtin_add_overflow(x, y, out)) return Overflow(x, op, y);
      return absl::OkStatus();
    case ScalarOp::kSub:
      if (__builtin_sub_overflow(x, y, out)) return Overflow(x, op, y);
      return absl::OkStatus();
    case ScalarOp::kMul:
      if (__builtin_mul_overflow(x, y, out)) return Overflow(x, op, y);
      return absl::OkStatus();
    case ScalarOp::kFloorDiv:
    case ScalarOp::kCeilDiv: {
      if (y == 0) return DivisionByZero(x);
      if (x == INT64_MIN && y == -1) return Overflow(x, op, y);
      int64_t q = x / y;
      const bool inexact = x % y != 0;
      const bool negative = (x < 0) != (y < 0);
      if (inexact && op == ScalarOp::kFloorDiv && negative) --q;
      if (inexact && op == ScalarOp::kCeilDiv && !negative) ++q;
      *out = q;
      return absl::OkStatus();
    }
    case ScalarOp::kMod: {
      if (y == 0) return DivisionByZero(x);
      if (y == -1) {  // x % -1 overflows for INT64_MIN in C++; the answer is always 0
        *out = 0;
        return absl::OkStatus();
      }
      int64_t r = x % y;
      if (r != 0 && ((r < 0) != (y < 0))) r += y;
      *out = r;
      return absl::OkStatus();
    }
    case ScalarOp::kMin:
      *out = x < y ? x : y;
      return absl::OkStatus();
    case ScalarOp::kMax:
      *out = x > y ? x : y;
      return absl::OkStatus();
    case ScalarOp::kEq:
      *out = x == y;
      return absl::OkStatus();
    case ScalarOp::kNe:
      *out = x != y;
      return absl::OkStatus();
    case ScalarOp::kLt:
      *out = x < y;
      return absl::OkStatus();
    case ScalarOp::kLe:
      *out = x <= y;
      return absl::OkStatus();
    case ScalarOp::kAnd:
      *out = x != 0 && y != 0;
      return absl::OkStatus();
    case ScalarOp::kOr:
      *out = x != 0 || y != 0;
      return absl::OkStatus();
  }
  return absl::InternalError(absl::StrCat("unknown scalar op ", code));  // Verify excludes it
}

// Element `index` of a host integer or bool tensor as int64.
absl::StatusOr<int64_t> IntegerElement(const Tensor& t, int64_t index) {
  if (t.device().type != DeviceType::kCPU) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected a host tensor, got one on ", t.device().ToString()));
  }
  if (index < 0 || index >= t.num_elements()) {
    return absl::InvalidArgumentError(
        absl::StrCat("element ", index, " of ", t.TypeString(), " is out of range"));
  }
  switch (t.dtype()) {
    case DType::kI64:
      return t.data<int64_t>()[index];
    case DType::kI32:
      return t.data<int32_t>()[index];
    case DType::kI16:
      return t.data<int16_t>()[index];
    case DType::kI8:
      return t.data<int8_t>()[index];
    case DType::kU8:
      return t.data<uint8_t>()[index];
    case DType::kU16:
      return t.data<uint16_t>()[index];
    case DType::kU32:
      return t.data<uint32_t>()[index];
    case DType::kBool:
      return t.data<bool>()[index] ? 1 : 0;
    case DType::kU64: {
      const uint64_t v = t.data<uint64_t>()[index];
      if (v > static_cast<uint64_t>(INT64_MAX)) {
        return absl::InvalidArgumentError(absl::StrCat("u64 value ", v, " exceeds int64"));
      }
      return static_cast<int64_t>(v);
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("expected an integer tensor, got ", t.TypeString()));
  }
}

// The truth of an If/Assert condition: a scalar, or a one-element host integer/bool tensor.
absl::StatusOr<bool> Truth(const Value& v) {
  if (const int64_t* s = std::get_if<int64_t>(&v)) return *s != 0;
  if (const Tensor* t = std::get_if<Tensor>(&v)) {
    if (t->defined() && t->num_elements() == 1) {
      NIMBLE_ASSIGN_OR_RETURN(int64_t value, IntegerElement(*t, 0));
      return value != 0;
    }
    return absl::InvalidArgumentError(
        absl::StrCat("condition must be a scalar or a one-element tensor, got ",
                     t->defined() ? t->TypeString() : "a null tensor"));
  }
  return absl::InternalError(absl::StrCat("condition register holds ", KindOf(v)));
}

std::string ValueToString(const Value& v) {
  if (const int64_t* s = std::get_if<int64_t>(&v)) return absl::StrCat(*s);
  if (const Tensor* t = std::get_if<Tensor>(&v)) {
    if (t->defined() && t->num_elements() == 1 && IsInteger(t->dtype())) {
      absl::StatusOr<int64_t> value = IntegerElement(*t, 0);
      if (value.ok()) return absl::StrCat(*value);
    }
    return t->defined() ? t->TypeString() : "null";
  }
  return std::string(KindOf(v));
}

// Replaces each "{}" of `format` by the next of `values`; extra placeholders stay as they are.
std::string FormatMessage(absl::string_view format, absl::Span<const std::string> values) {
  std::string out;
  size_t next = 0;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] == '{' && i + 1 < format.size() && format[i + 1] == '}' && next < values.size()) {
      out += values[next++];
      ++i;
    } else {
      out += format[i];
    }
  }
  return out;
}

}  // namespace

// One captured graph: the (variant, input shapes) it serves, the page-locked host buffers it
// reads inputs from and writes outputs to, and the result structure of the captured call.
struct DeviceGraphEntry {
  std::string key;
  uint64_t last_use = 0;
  std::unique_ptr<Allocator> arena;  // host side, outlives the graph's copies
  std::vector<Tensor> inputs;
  Value result;
  std::unique_ptr<DeviceGraph> graph;
  // Result tensors the graph copies whole from the device: each replay points the copy at
  // fresh page-locked storage that becomes the caller's tensor (no host copy of the result).
  struct HostCopy {
    const void* captured;  // the result tensor's bytes in `arena`
    size_t bytes;
    int index;  // DeviceGraph::FindHostCopy
  };
  std::vector<HostCopy> host_copies;
};

VirtualMachine::VirtualMachine(std::shared_ptr<const Executable> executable,
                               VirtualMachineOptions options)
    : exe_(std::move(executable)), options_(std::move(options)) {
  // Nothing writes an executable's constants (kernels write only their own outputs).
  for (const Tensor& c : exe_->constants) {
    if (c.storage() != nullptr) c.storage()->MarkConstant();
  }
  for (const Device& d : exe_->devices) {
    if (d.type != DeviceType::kCPU && device_api_ == nullptr) {
      device_api_ = KernelRegistry::Global().GetDeviceApi(d.type);
      // Where the device's kernels report bad input (without a record they still produce
      // defined results, only no error: a device without one reports nothing).
      if (device_api_ != nullptr) {
        absl::StatusOr<DeviceErrorRecord*> record = device_api_->NewErrorRecord(d.ordinal);
        if (record.ok()) device_errors_ = *record, error_device_ = d;
      }
    }
  }
  // device_graphs: an own stream with an allocator ordered on it (capture cannot use the
  // legacy default stream), for the executable's one non-CPU device.
  if (options_.device_graphs && device_api_ != nullptr && options_.stream == nullptr) {
    int found = -1, count = 0;
    for (size_t i = 0; i < exe_->devices.size(); ++i) {
      if (exe_->devices[i].type != DeviceType::kCPU) found = static_cast<int>(i), ++count;
    }
    bool caller_allocator = false;
    for (const auto& a : options_.allocators) {
      caller_allocator = caller_allocator || (found >= 0 && a.device == exe_->devices[found]);
    }
    if (count == 1 && !caller_allocator) {
      const int ordinal = exe_->devices[found].ordinal;
      absl::StatusOr<void*> stream = device_api_->CreateStream(ordinal);
      if (stream.ok()) {
        absl::StatusOr<std::unique_ptr<Allocator>> a =
            device_api_->StreamAllocator(ordinal, *stream);
        if (a.ok()) {
          own_stream_ = *stream;
          stream_allocator_ = std::move(*a);
          graph_device_ = found;
          options_.stream = own_stream_;
          options_.allocators.push_back({exe_->devices[found], stream_allocator_.get()});
        } else {
          device_api_->DestroyStream(*stream);
        }
      }
    }
  }
  if (own_stream_ != nullptr) {
    int ahead = options_.weight_prefetch_ahead;
    if (ahead < 0) {
      const char* env = std::getenv("NIMBLE_WEIGHT_PREFETCH");
      ahead = env != nullptr ? std::atoi(env) : kDefaultWeightPrefetchAhead;
    }
    if (ahead > 0) BuildPrefetchPlan(ahead);
  }
  host_allocator_ = AllocatorFor(kCpu);
  for (const Device& d : exe_->devices) device_allocators_.push_back(AllocatorFor(d));
  for (const KernelEntry& k : exe_->kernels) {
    KernelContext ctx;
    ctx.device = k.device;
    ctx.allocator = AllocatorFor(k.device);
    ctx.num_threads = options_.num_threads;
    ctx.stream = options_.stream;
    if (k.device.type != DeviceType::kCPU) ctx.device_errors = device_errors_;
    kernel_contexts_.push_back(ctx);
  }
  auto symbol_index = [&](const std::string& name) {
    for (size_t i = 0; i < symbols_.size(); ++i) {
      if (symbols_[i] == name) return static_cast<int>(i);
    }
    symbols_.push_back(name);
    return static_cast<int>(symbols_.size() - 1);
  };
  for (const Executable::SymbolBinding& b : exe_->symbol_bindings) {
    binding_symbol_.push_back(symbol_index(b.symbol));
  }
  for (const Variant& v : exe_->variants) {
    std::vector<int>& indices = variant_symbols_.emplace_back();
    for (const std::string& s : v.symbols) indices.push_back(symbol_index(s));
  }
  frames_.reserve(16);
}

VirtualMachine::~VirtualMachine() {
  Unwind();
  graphs_.clear();
  if (own_stream_ != nullptr) {
    device_api_->DestroyStream(own_stream_);  // waits for the stream
    stream_allocator_.reset();
  } else if (device_errors_ != nullptr) {
    (void)device_api_->Synchronize(options_.stream);  // no kernel may still write the record
  }
  if (device_errors_ != nullptr) device_api_->FreeErrorRecord(device_errors_);
}

absl::Status VirtualMachine::TakeDeviceErrors(const absl::Status& call) {
  if (device_errors_ == nullptr) return call;
  if (!device_idle_) {
    absl::Status synced = device_api_->Synchronize(options_.stream);
    if (!synced.ok()) return call.ok() ? synced : call;
    device_idle_ = true;
  }
  // Bad input a kernel found is the cause of whatever else went wrong after it.
  absl::Status reported = TakeDeviceError(*device_errors_, error_device_);
  return reported.ok() ? call : reported;
}

Allocator* VirtualMachine::AllocatorFor(Device device) const {
  for (const VirtualMachineOptions::DeviceAllocator& a : options_.allocators) {
    if (a.device == device && a.allocator != nullptr) return a.allocator;
  }
  if (device == kCpu) return DefaultCpuAllocator();
  if (device_api_ != nullptr) {
    absl::StatusOr<Allocator*> a = device_api_->DefaultAllocator(device.ordinal);
    if (a.ok()) return *a;
  }
  return nullptr;
}

// ---------------------------------------------------------------------------------------------
// Run: validation, symbol binding, variant dispatch.

namespace {

// Checks one element tensor (or a plain tensor input) against `sig`'s dtype; with `dims` also
// its rank and static dims.
absl::Status CheckTensor(const Tensor& t, const TensorSignature& sig, bool dims,
                         absl::string_view what) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(what, " is null"));
  if (t.dtype() != sig.dtype) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": dtype is ", DTypeName(t.dtype()),
                                                   " but the model requires ",
                                                   DTypeName(sig.dtype)));
  }
  if (!dims) return absl::OkStatus();
  if (static_cast<size_t>(t.rank()) != sig.dims.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": rank is ", t.rank(), " but the model requires ", sig.dims.size()));
  }
  for (size_t axis = 0; axis < sig.dims.size(); ++axis) {
    if (sig.dims[axis] >= 0 && t.dim(static_cast<int>(axis)) != sig.dims[axis]) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": dim ", axis, " is ",
                                                     t.dim(static_cast<int>(axis)),
                                                     " but the model requires ", sig.dims[axis]));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSequence(const Value& v, const TensorSignature& sig, absl::string_view what) {
  const ADTRef* adt = std::get_if<ADTRef>(&v);
  if (adt == nullptr || *adt == nullptr || (*adt)->tag != kSequenceTag) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be a sequence of tensors, got ", KindOf(v)));
  }
  for (size_t i = 0; i < (*adt)->fields.size(); ++i) {
    const Tensor* t = std::get_if<Tensor>(&(*adt)->fields[i]);
    const std::string element = absl::StrCat(what, " element ", i);
    if (t == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(element, " is ", KindOf((*adt)->fields[i]), ", not a tensor"));
    }
    NIMBLE_RETURN_IF_ERROR(CheckTensor(*t, sig, false, element));
  }
  return absl::OkStatus();
}

// A run-time value against its signature (any kind).
absl::Status CheckValue(const Value& v, const TensorSignature& sig, absl::string_view what) {
  switch (sig.kind) {
    case ValueKind::kTensor: {
      const Tensor* t = std::get_if<Tensor>(&v);
      if (t == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(what, " must be a tensor, got ", KindOf(v)));
      }
      return CheckTensor(*t, sig, true, what);
    }
    case ValueKind::kSequence:
      return CheckSequence(v, sig, what);
    case ValueKind::kOptional:
    case ValueKind::kOptionalSequence: {
      const ADTRef* adt = std::get_if<ADTRef>(&v);
      if (adt == nullptr || *adt == nullptr || (*adt)->tag != kOptionalTag ||
          (*adt)->fields.size() > 1) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, " must be an optional (none or one value), got ", KindOf(v)));
      }
      if ((*adt)->fields.empty()) return absl::OkStatus();
      const Value& inner = (*adt)->fields[0];
      if (sig.kind == ValueKind::kOptionalSequence) return CheckSequence(inner, sig, what);
      const Tensor* t = std::get_if<Tensor>(&inner);
      if (t == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, " must hold a tensor, got ", KindOf(inner)));
      }
      return CheckTensor(*t, sig, false, what);
    }
  }
  return absl::InternalError("unknown value kind");
}

}  // namespace

absl::StatusOr<int> VirtualMachine::SelectVariant(absl::Span<const Tensor> inputs) const {
  std::vector<Value> values(inputs.begin(), inputs.end());
  return SelectVariantOf(values);
}

absl::StatusOr<int> VirtualMachine::SelectVariantOf(absl::Span<const Value> inputs) const {
  const Executable& exe = *exe_;
  if (inputs.size() != exe.inputs.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model takes ", exe.inputs.size(), " inputs, got ", inputs.size()));
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    const TensorSignature& sig = exe.inputs[i];
    NIMBLE_RETURN_IF_ERROR(CheckValue(inputs[i], sig, absl::StrCat("input '", sig.name, "'")));
  }
  // Bind symbols; a symbol bound by several input dims must agree. Bindings name tensor
  // inputs only (the verifier checks), so the get is safe.
  absl::InlinedVector<int64_t, 8> values(symbols_.size(), 0);
  absl::InlinedVector<int, 8> bound_by(symbols_.size(), -1);  // binding index
  for (size_t b = 0; b < exe.symbol_bindings.size(); ++b) {
    const Executable::SymbolBinding& binding = exe.symbol_bindings[b];
    const int s = binding_symbol_[b];
    const int64_t value = std::get<Tensor>(inputs[binding.input]).dim(binding.axis);
    if (bound_by[s] < 0) {
      bound_by[s] = static_cast<int>(b);
      values[s] = value;
      continue;
    }
    if (values[s] != value) {
      const Executable::SymbolBinding& first = exe.symbol_bindings[bound_by[s]];
      return absl::InvalidArgumentError(
          absl::StrCat("input '", exe.inputs[binding.input].name, "': dim ", binding.axis, " is ",
                       value, " but symbol '", binding.symbol, "' is ", values[s], " (dim ",
                       first.axis, " of input '", exe.inputs[first.input].name, "')"));
    }
  }
  for (size_t v = 0; v < exe.variants.size(); ++v) {
    const Variant& variant = exe.variants[v];
    bool holds = true;
    for (size_t i = 0; i < variant_symbols_[v].size() && holds; ++i) {
      const int64_t value = values[variant_symbols_[v][i]];
      holds = value >= variant.lower_bounds[i] && value <= variant.upper_bounds[i];
    }
    if (holds) return static_cast<int>(v);
  }
  std::string shapes;
  for (size_t s = 0; s < symbols_.size(); ++s) {
    if (bound_by[s] >= 0)
      absl::StrAppend(&shapes, shapes.empty() ? "" : ", ", symbols_[s], "=", values[s]);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("no variant of the model accepts these shapes (", shapes, ")"));
}

absl::StatusOr<std::vector<Tensor>> VirtualMachine::Run(absl::Span<const Tensor> inputs) {
  std::vector<Value> args(inputs.begin(), inputs.end());
  NIMBLE_ASSIGN_OR_RETURN(std::vector<Value> results, RunValues(args));
  std::vector<Tensor> outputs;
  outputs.reserve(results.size());
  for (size_t i = 0; i < results.size(); ++i) {
    Tensor* t = std::get_if<Tensor>(&results[i]);
    if (t == nullptr) {
      const std::string name = i < exe_->outputs.size() ? exe_->outputs[i].name : "";
      return absl::InvalidArgumentError(
          absl::StrCat("output ", i, " '", name, "' is ", KindOf(results[i]),
                       ", not a tensor: run this model with RunValues"));
    }
    outputs.push_back(std::move(*t));
  }
  return outputs;
}

absl::StatusOr<std::vector<Value>> VirtualMachine::RunValues(absl::Span<const Value> inputs) {
  const auto start =
      options_.profile ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
  std::vector<Value> args(inputs.begin(), inputs.end());
  if (options_.profile) {
    auto outputs = RunUnprofiled(std::move(args));
    profile_.total_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::steady_clock::now() - start)
                             .count();
    ++profile_.runs;
    return outputs;
  }
  return RunUnprofiled(std::move(args));
}

absl::StatusOr<std::vector<Value>> VirtualMachine::RunUnprofiled(std::vector<Value> args) {
  NIMBLE_ASSIGN_OR_RETURN(int variant, SelectVariantOf(args));
  device_idle_ = false;
  absl::StatusOr<Value> run = own_stream_ != nullptr && exe_->variants[variant].name != "generic"
                                  ? RunGraphed(variant, std::move(args))
                                  : Execute(exe_->variants[variant].function, std::move(args));
  NIMBLE_RETURN_IF_ERROR(TakeDeviceErrors(run.status()));
  Value result = *std::move(run);
  std::vector<Value> outputs;
  // The entry function returns a tuple ADT of the outputs (or one value by itself).
  const ADTRef* tuple = std::get_if<ADTRef>(&result);
  if (tuple != nullptr && *tuple && (*tuple)->tag == kTupleTag) {
    outputs = (*tuple)->fields;
  } else {
    outputs.push_back(std::move(result));
  }
  if (!exe_->outputs.empty() && outputs.size() != exe_->outputs.size()) {
    return absl::InternalError(absl::StrCat("the model returned ", outputs.size(),
                                            " outputs but declares ", exe_->outputs.size()));
  }
  for (size_t i = 0; i < outputs.size() && i < exe_->outputs.size(); ++i) {
    const TensorSignature& sig = exe_->outputs[i];
    const std::string what = absl::StrCat("output '", sig.name, "'");
    absl::Status status;
    if (sig.kind == ValueKind::kTensor) {
      const Tensor* t = std::get_if<Tensor>(&outputs[i]);
      status = t == nullptr
                   ? absl::InvalidArgumentError(absl::StrCat(what, " is ", KindOf(outputs[i])))
                   : CheckTensor(*t, sig, false, what);
    } else {
      status = CheckValue(outputs[i], sig, what);
    }
    if (!status.ok()) return absl::InternalError(status.message());
  }
  return outputs;
}

namespace {

// The caller's copy of a graph's result (a tensor, or a tuple of tensors), so that callers
// never alias the buffers the next replay overwrites: tensors the replay wrote straight into
// `fresh` storage (one per entry of `host_copies`) are views of it, the others host copies.
absl::StatusOr<Value> CopyResult(const Value& v, Allocator* host,
                                 absl::Span<const DeviceGraphEntry::HostCopy> host_copies,
                                 absl::Span<const std::shared_ptr<Storage>> fresh) {
  if (const Tensor* t = std::get_if<Tensor>(&v)) {
    for (size_t i = 0; i < host_copies.size(); ++i) {
      if (host_copies[i].captured == t->raw_data() && host_copies[i].bytes == t->nbytes()) {
        NIMBLE_ASSIGN_OR_RETURN(Tensor view, Tensor::View(fresh[i], 0, t->dtype(), t->shape()));
        return Value(std::move(view));
      }
    }
    NIMBLE_ASSIGN_OR_RETURN(Tensor copy, Tensor::Empty(t->dtype(), t->shape(), host));
    if (t->nbytes() > 0) std::memcpy(copy.raw_data(), t->raw_data(), t->nbytes());
    return Value(std::move(copy));
  }
  const ADTRef* adt = std::get_if<ADTRef>(&v);
  if (adt == nullptr || !*adt) return absl::InternalError("graph result is not a tensor or ADT");
  auto copy = std::make_shared<ADT>();
  copy->tag = (*adt)->tag;
  for (const Value& field : (*adt)->fields) {
    NIMBLE_ASSIGN_OR_RETURN(Value f, CopyResult(field, host, host_copies, fresh));
    copy->fields.push_back(std::move(f));
  }
  return Value(ADTRef(std::move(copy)));
}

// The result tensors a graph copies whole from the device, each once (a tensor that appears
// twice in the result is copied, not redirected, so the two stay distinct buffers).
void FindHostCopies(const Value& v, const DeviceGraph& graph,
                    std::vector<DeviceGraphEntry::HostCopy>& out, std::vector<const void*>& seen) {
  if (const Tensor* t = std::get_if<Tensor>(&v)) {
    if (t->nbytes() == 0) return;
    const void* data = t->raw_data();
    if (std::find(seen.begin(), seen.end(), data) != seen.end()) {
      out.erase(
          std::remove_if(out.begin(), out.end(), [&](const auto& c) { return c.captured == data; }),
          out.end());
      return;
    }
    seen.push_back(data);
    // Only a tensor that is its whole storage (what the graph's copy wrote): the caller's
    // storage is made for the tensor's bytes alone.
    // Results past kMaxDirectResultBytes are copied: the page-locked pool would not keep
    // buffers that large for reuse.
    constexpr size_t kMaxDirectResultBytes = size_t{32} << 20;
    const bool whole = t->storage() != nullptr && t->storage()->data() == data &&
                       t->nbytes() <= kMaxDirectResultBytes;
    const int index = whole ? graph.FindHostCopy(data, t->nbytes()) : -1;
    if (index >= 0) out.push_back({data, t->nbytes(), index});
    return;
  }
  const ADTRef* adt = std::get_if<ADTRef>(&v);
  if (adt == nullptr || !*adt) return;
  for (const Value& f : (*adt)->fields) FindHostCopies(f, graph, out, seen);
}

// Whether every tensor of a result lives on the host (a graph's result must).
bool HostOnly(const Value& v) {
  if (const Tensor* t = std::get_if<Tensor>(&v)) {
    return t->device().type == DeviceType::kCPU && t->dtype() != DType::kString;
  }
  const ADTRef* adt = std::get_if<ADTRef>(&v);
  if (adt == nullptr || !*adt) return false;
  for (const Value& f : (*adt)->fields) {
    if (!HostOnly(f)) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<Value> VirtualMachine::RunGraphed(int variant, std::vector<Value> args) {
  const int function = exe_->variants[variant].function;
  std::string key = absl::StrCat(variant);
  for (const Value& a : args) {
    const Tensor* t = std::get_if<Tensor>(&a);
    if (t == nullptr || t->device().type != DeviceType::kCPU || t->dtype() == DType::kString) {
      ++graph_stats_.eager_calls;
      return Execute(function, std::move(args));
    }
    absl::StrAppend(&key, ";", DTypeName(t->dtype()), ShapeToString(t->shape()));
  }
  DeviceGraphEntry* entry = nullptr;
  for (const auto& e : graphs_) {
    if (e->key == key) entry = e.get();
  }
  if (entry == nullptr) {
    int* seen = nullptr;
    for (auto& [k, n] : graph_seen_) {
      if (k == key) seen = &n;
    }
    if (seen == nullptr) seen = &graph_seen_.emplace_back(key, 0).second;
    // The first call warms up (weights uploaded, GEMM plans and workspaces made on this
    // stream, which the device may tune: DeviceApi::MarkWarmup); a failed capture is not
    // retried.
    if (*seen < 0) {
      ++graph_stats_.eager_calls;
      return Execute(function, std::move(args));
    }
    if ((*seen)++ == 0) {
      ++graph_stats_.eager_calls;
      const int ordinal = exe_->devices[graph_device_].ordinal;
      device_api_->MarkWarmup(ordinal, own_stream_, true);
      absl::StatusOr<Value> result = Execute(function, std::move(args));
      device_api_->MarkWarmup(ordinal, own_stream_, false);
      return result;
    }
    auto e = std::make_unique<DeviceGraphEntry>();
    e->key = key;
    absl::StatusOr<Value> captured = Capture(function, args, *e);
    if (!captured.ok() || !HostOnly(*captured)) {
      *seen = -1;
      ++graph_stats_.failed_captures;
      ++graph_stats_.eager_calls;
      return Execute(function, std::move(args));
    }
    e->result = std::move(*captured);
    std::vector<const void*> result_buffers;
    FindHostCopies(e->result, *e->graph, e->host_copies, result_buffers);
    ++graph_stats_.captures;
    if (static_cast<int>(graphs_.size()) >= std::max(1, options_.max_device_graphs)) {
      auto oldest =
          std::min_element(graphs_.begin(), graphs_.end(),
                           [](const auto& a, const auto& b) { return a->last_use < b->last_use; });
      graphs_.erase(oldest);
    }
    graphs_.push_back(std::move(e));
    entry = graphs_.back().get();
  }
  entry->last_use = ++graph_clock_;
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < args.size(); ++i) {
    const Tensor& in = std::get<Tensor>(args[i]);
    if (in.nbytes() > 0) std::memcpy(entry->inputs[i].raw_data(), in.raw_data(), in.nbytes());
  }
  std::vector<std::shared_ptr<Storage>> fresh;
  for (const DeviceGraphEntry::HostCopy& c : entry->host_copies) {
    absl::StatusOr<std::shared_ptr<Storage>> storage = device_api_->PinnedHostStorage(c.bytes);
    absl::Status set = storage.status();
    if (set.ok()) set = entry->graph->SetHostCopyDestination(c.index, (*storage)->data());
    if (!set.ok()) {
      // No page-locked memory, or the copy cannot move: this entry copies its results out of
      // the graph's own buffers from now on (the copies redirected so far are pointed back
      // first, as their new buffers go with `fresh`).
      for (const DeviceGraphEntry::HostCopy& back : entry->host_copies) {
        NIMBLE_RETURN_IF_ERROR(
            entry->graph->SetHostCopyDestination(back.index, const_cast<void*>(back.captured)));
      }
      entry->host_copies.clear();
      fresh.clear();
      break;
    }
    fresh.push_back(*std::move(storage));
  }
  const auto t1 = std::chrono::steady_clock::now();
  NIMBLE_RETURN_IF_ERROR(entry->graph->Launch(own_stream_));
  NIMBLE_RETURN_IF_ERROR(device_api_->Synchronize(own_stream_));
  device_idle_ = true;
  const auto t2 = std::chrono::steady_clock::now();
  ++graph_stats_.replays;
  absl::StatusOr<Value> result =
      CopyResult(entry->result, host_allocator_, entry->host_copies, fresh);
  const auto ns = [](auto a, auto b) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count();
  };
  graph_stats_.replay_inputs_ns += ns(t0, t1);
  graph_stats_.replay_device_ns += ns(t1, t2);
  graph_stats_.replay_result_ns += ns(t2, std::chrono::steady_clock::now());
  graph_stats_.direct_results += static_cast<int64_t>(fresh.size());
  return result;
}

// Runs `function` once with the device stream capturing: device work becomes the graph, host
// buffers come from the entry's page-locked arena (never freed while the graph lives), and
// host code that reads inputs or device results invalidates the capture.
absl::StatusOr<Value> VirtualMachine::Capture(int function, const std::vector<Value>& args,
                                              DeviceGraphEntry& e) {
  NIMBLE_ASSIGN_OR_RETURN(e.arena, device_api_->NewHostArena());
  std::vector<Value> pinned;
  for (const Value& a : args) {
    const Tensor& t = std::get<Tensor>(a);
    NIMBLE_ASSIGN_OR_RETURN(Tensor p, Tensor::Empty(t.dtype(), t.shape(), e.arena.get()));
    if (t.nbytes() > 0) std::memcpy(p.raw_data(), t.raw_data(), t.nbytes());
    e.inputs.push_back(p);
    pinned.push_back(std::move(p));
  }
  // Host allocations of the captured call (registers, device-to-host copies, host kernels'
  // outputs) come from the arena.
  Allocator* saved_host = host_allocator_;
  std::vector<Allocator*> saved_devices = device_allocators_;
  std::vector<Allocator*> saved_contexts;
  host_allocator_ = e.arena.get();
  for (size_t i = 0; i < device_allocators_.size(); ++i) {
    if (exe_->devices[i].type == DeviceType::kCPU) device_allocators_[i] = e.arena.get();
  }
  for (KernelContext& ctx : kernel_contexts_) {
    saved_contexts.push_back(ctx.allocator);
    if (ctx.device.type == DeviceType::kCPU) ctx.allocator = e.arena.get();
  }
  capture_unknown_.clear();
  for (const Tensor& t : e.inputs) capture_unknown_.push_back(t.raw_data());
  capture_invalid_ = false;
  const int ordinal = exe_->devices[graph_device_].ordinal;
  absl::Status begun = device_api_->BeginCapture(ordinal, own_stream_);
  absl::StatusOr<Value> result = absl::InternalError("capture did not start");
  if (!begun.ok()) {
    result = begun;
  } else {
    capturing_ = true;
    result = Execute(function, std::move(pinned));
    capturing_ = false;
    // The result copies' sources are freed (stream-ordered: inside the graph) after the
    // branches that read them have joined.
    absl::Status joined = device_api_->JoinBranches(own_stream_);
    capture_kept_.clear();
    absl::StatusOr<std::unique_ptr<DeviceGraph>> graph = device_api_->EndCapture(own_stream_);
    if (!joined.ok() && result.ok()) result = joined;
    if (graph.ok()) {
      e.graph = std::move(*graph);
    } else if (result.ok()) {
      result = graph.status();
    }
  }
  host_allocator_ = saved_host;
  device_allocators_ = std::move(saved_devices);
  for (size_t i = 0; i < kernel_contexts_.size(); ++i) {
    kernel_contexts_[i].allocator = saved_contexts[i];
  }
  capture_unknown_.clear();
  NIMBLE_RETURN_IF_ERROR(result.status());
  if (capture_invalid_) {
    return absl::FailedPreconditionError("host code reads data the capture cannot know");
  }
  return result;
}

namespace {

// Kernels that read every byte of their weight input each call, so that having it in the
// device's cache when they start pays. (A Gather reads a few rows of its table.)
bool ReadsWholeWeights(const std::string& kernel) {
  static const char* const kNames[] = {"MatMul", "FusedMatMul", "Gemm", "Conv",         "FusedConv",
                                       "LSTM",   "GRU",         "RNN",  "ConvTranspose"};
  for (const char* n : kNames) {
    if (kernel == n) return true;
  }
  return false;
}

// Weights worth a request: large enough that the first read's latency shows (a 768-element
// bias is not), small enough to leave the cache to the rest (H100: 50 MB of L2).
// (The lower bound is VirtualMachineOptions::weight_prefetch_min_bytes.)
constexpr int64_t kMaxPrefetchBytes = 16 << 20;

}  // namespace

// Straight-line reading of each function: control flow is ignored, since a request is only a
// hint (a wrong guess costs bandwidth, never correctness).
void VirtualMachine::BuildPrefetchPlan(int ahead) {
  prefetch_plan_.resize(exe_->functions.size());
  for (size_t f = 0; f < exe_->functions.size(); ++f) {
    const Function& fn = exe_->functions[f];
    std::vector<std::vector<PrefetchTarget>>& plan = prefetch_plan_[f];
    plan.resize(fn.code.size());
    // Register -> the constant load_const_on put there; the pcs of device kernels so far.
    std::map<int64_t, PrefetchTarget> constant_in;
    std::vector<size_t> kernels;
    for (size_t pc = 0; pc < fn.code.size(); ++pc) {
      const Instruction& in = fn.code[pc];
      if (in.op == Opcode::kLoadConstOn) {
        constant_in[in.dst] = {in.a, in.b};
        continue;
      }
      if (in.op != Opcode::kInvokePacked) {
        if (GetOpcodeInfo(in.op).operands[0] == 'r') constant_in.erase(in.dst);
        continue;
      }
      const KernelEntry& k = exe_->kernels[in.a];
      const int64_t* list = fn.operand_pool.data() + in.list_begin;
      if (k.device.type != DeviceType::kCPU) {
        std::vector<PrefetchTarget> targets;
        for (int64_t i = 0; ReadsWholeWeights(k.name) && i < in.b; ++i) {
          auto it = constant_in.find(list[i]);
          if (it == constant_in.end()) continue;
          const int64_t bytes = static_cast<int64_t>(exe_->constants[it->second.constant].nbytes());
          if (bytes >= options_.weight_prefetch_min_bytes && bytes <= kMaxPrefetchBytes) {
            targets.push_back(it->second);
          }
        }
        kernels.push_back(pc);
        const size_t n = kernels.size() - 1;  // this kernel's position
        if (!targets.empty() && n > 0) {
          const size_t at = kernels[n >= static_cast<size_t>(ahead) ? n - ahead : 0];
          plan[at].insert(plan[at].end(), targets.begin(), targets.end());
        }
      }
      for (uint32_t i = static_cast<uint32_t>(in.b); i < in.list_size; ++i) {
        constant_in.erase(list[i]);
      }
    }
  }
}

absl::Status VirtualMachine::IssuePrefetches(const std::vector<PrefetchTarget>& targets) {
  Executable::DeviceConstantCache& cache = *exe_->device_constants;
  for (const PrefetchTarget& t : targets) {
    const Device device = exe_->devices[t.device];
    const void* data = nullptr;
    size_t bytes = 0;
    {
      std::lock_guard<std::mutex> lock(cache.mutex);
      auto it = cache.tensors.find(Executable::DeviceConstantCache::KeyOf(t.constant, device));
      if (it == cache.tensors.end()) continue;  // not uploaded yet
      data = it->second.raw_data();
      bytes = it->second.nbytes();
    }
    NIMBLE_RETURN_IF_ERROR(
        device_api_->PrefetchToCache(device.ordinal, data, bytes, options_.stream));
    ++graph_stats_.prefetch_requests;
  }
  return absl::OkStatus();
}

void VirtualMachine::CheckCaptureRead(const Tensor& t) {
  if (!t.defined() || t.device().type != DeviceType::kCPU) return;
  const char* begin = static_cast<const char*>(t.storage()->data());
  for (const void* p : capture_unknown_) {
    const char* q = static_cast<const char*>(p);
    if (q >= begin && q < begin + std::max<size_t>(t.storage()->size(), 1)) {
      capture_invalid_ = true;
    }
  }
}

absl::StatusOr<Value> VirtualMachine::Invoke(int function, std::vector<Value> args) {
  if (function < 0 || static_cast<size_t>(function) >= exe_->functions.size()) {
    return absl::InvalidArgumentError(absl::StrCat("no function ", function));
  }
  const Function& f = exe_->functions[function];
  if (args.size() != static_cast<size_t>(f.num_params)) {
    return absl::InvalidArgumentError(absl::StrCat("function '", f.name, "' takes ", f.num_params,
                                                   " arguments, got ", args.size()));
  }
  device_idle_ = false;
  absl::StatusOr<Value> result = Execute(function, std::move(args));
  NIMBLE_RETURN_IF_ERROR(TakeDeviceErrors(result.status()));
  return result;
}

// ---------------------------------------------------------------------------------------------
// The interpreter loop.

absl::Status VirtualMachine::PushFrame(int32_t function, size_t return_pc, int32_t return_dst) {
  if (depth_ >= static_cast<size_t>(options_.max_call_depth)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("call depth exceeds ", options_.max_call_depth, " (unbounded recursion?)"));
  }
  if (depth_ == frames_.size()) frames_.emplace_back();
  Frame& frame = frames_[depth_++];
  frame.function = function;
  frame.return_pc = return_pc;
  frame.return_dst = return_dst;
  // Popped frames were cleared, so this default-constructs every register.
  frame.registers.resize(exe_->functions[function].num_registers);
  return absl::OkStatus();
}

void VirtualMachine::LoadFrame() {
  Frame& frame = frames_[depth_ - 1];
  function_ = &exe_->functions[frame.function];
  code_ = function_->code.data();
  pool_ = function_->operand_pool.data();
  regs_ = frame.registers.data();
}

void VirtualMachine::Unwind() {
  for (size_t i = 0; i < depth_; ++i) frames_[i].registers.clear();
  depth_ = 0;
  kernel_inputs_.clear();
  kernel_outputs_.clear();
  pending_results_.clear();
  result_ = Value();
  returned_ = false;
}

absl::StatusOr<Value> VirtualMachine::Execute(int32_t function, std::vector<Value> args) {
  if (depth_ != 0) return absl::FailedPreconditionError("VirtualMachine is already running");
  NIMBLE_RETURN_IF_ERROR(PushFrame(function, 0, -1));
  LoadFrame();
  for (size_t i = 0; i < args.size(); ++i) regs_[i] = std::move(args[i]);
  pc_ = 0;
  returned_ = false;
  while (!returned_) {
    const size_t pc = pc_;
    const Instruction& in = code_[pc];
    absl::Status status;
    switch (in.op) {
#define NIMBLE_OPCODE(Name, mnemonic, operands, list) \
  case Opcode::k##Name:                               \
    status = Exec##Name(in);                          \
    break;
#include "vm/isa/opcodes.def"
#undef NIMBLE_OPCODE
    }
    if (ABSL_PREDICT_FALSE(!status.ok())) {
      // Fatal and Assert carry the compiler's message for the user; everything else gets
      // the location.
      if (in.op != Opcode::kFatal && in.op != Opcode::kAssert) {
        status = Annotate(status, absl::StrCat("function '", function_->name, "' pc ", pc, " (",
                                               GetOpcodeInfo(in.op).mnemonic, ")"));
      }
      Unwind();
      return status;
    }
  }
  returned_ = false;
  Value result = std::move(result_);
  result_ = Value();
  return result;
}

// ---------------------------------------------------------------------------------------------
// Handlers. Register and table indices were verified; value kinds are checked here.

#define NIMBLE_VM_GET(type, var, reg, expected)                                                  \
  type* var = std::get_if<type>(&regs_[reg]);                                                    \
  if (ABSL_PREDICT_FALSE(var == nullptr)) {                                                      \
    return absl::InternalError(                                                                  \
        absl::StrCat("register r", reg, " holds ", KindOf(regs_[reg]), ", expected " expected)); \
  }

absl::Status VirtualMachine::ExecMove(const Instruction& in) {
  regs_[in.dst] = regs_[in.a];
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecRet(const Instruction& in) {
  NIMBLE_RETURN_IF_ERROR(CopyPendingResults());
  Value value = std::move(regs_[in.a]);
  Frame& frame = frames_[depth_ - 1];
  const size_t return_pc = frame.return_pc;
  const int32_t return_dst = frame.return_dst;
  frame.registers.clear();
  --depth_;
  if (depth_ == 0) {
    result_ = std::move(value);
    returned_ = true;
    return absl::OkStatus();
  }
  LoadFrame();
  pc_ = return_pc;
  regs_[return_dst] = std::move(value);
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecInvoke(const Instruction& in) {
  Value* caller = regs_;  // stays valid: frames_ growth moves vectors, not their buffers
  NIMBLE_RETURN_IF_ERROR(PushFrame(in.a, pc_ + 1, in.dst));
  Value* callee = frames_[depth_ - 1].registers.data();
  const int64_t* list = pool_ + in.list_begin;
  for (uint32_t i = 0; i < in.list_size; ++i) callee[i] = caller[list[i]];
  LoadFrame();
  pc_ = 0;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecInvokeClosure(const Instruction& in) {
  NIMBLE_VM_GET(ClosureRef, closure_ref, in.a, "a closure");
  const ClosureRef closure = *closure_ref;  // the call may overwrite the register
  const Function& target = exe_->functions[closure->function];
  const size_t num_args = closure->captured.size() + in.list_size;
  if (num_args != static_cast<size_t>(target.num_params)) {
    return absl::InternalError(absl::StrCat("closure of '", target.name, "' gets ", num_args,
                                            " arguments but takes ", target.num_params));
  }
  Value* caller = regs_;
  NIMBLE_RETURN_IF_ERROR(PushFrame(closure->function, pc_ + 1, in.dst));
  Value* callee = frames_[depth_ - 1].registers.data();
  size_t next = 0;
  for (const Value& v : closure->captured) callee[next++] = v;
  const int64_t* list = pool_ + in.list_begin;
  for (uint32_t i = 0; i < in.list_size; ++i) callee[next++] = caller[list[i]];
  LoadFrame();
  pc_ = 0;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecInvokePacked(const Instruction& in) {
  const Kernel& kernel = *exe_->kernel_instances[in.a];
  const KernelContext& ctx = kernel_contexts_[in.a];
  const int64_t* list = pool_ + in.list_begin;
  const uint32_t num_inputs = static_cast<uint32_t>(in.b);
  const uint32_t num_outputs = in.list_size - num_inputs;
  kernel_inputs_.clear();
  for (uint32_t i = 0; i < num_inputs; ++i) {
    // An empty register is an absent optional input: the kernel sees a null tensor.
    if (std::holds_alternative<std::monostate>(regs_[list[i]])) {
      kernel_inputs_.emplace_back();
      continue;
    }
    if ((in.c & kInvokePackedSequenceInputs) && std::holds_alternative<ADTRef>(regs_[list[i]])) {
      for (const Value& field : std::get<ADTRef>(regs_[list[i]])->fields) {
        const Tensor* t = std::get_if<Tensor>(&field);
        if (ABSL_PREDICT_FALSE(t == nullptr)) {
          kernel_inputs_.clear();
          return absl::InternalError(absl::StrCat("sequence in r", list[i], " holds ",
                                                  KindOf(field), ", expected tensors"));
        }
        kernel_inputs_.push_back(*t);
      }
      continue;
    }
    NIMBLE_VM_GET(Tensor, t, list[i], "a tensor");
    kernel_inputs_.push_back(*t);
  }
  if (ABSL_PREDICT_FALSE(capturing_)) {
    if (ctx.device.type == DeviceType::kCPU) {
      for (const Tensor& t : kernel_inputs_) CheckCaptureRead(t);
    } else if (!prefetch_plan_.empty()) {
      const auto& targets = prefetch_plan_[frames_[depth_ - 1].function][pc_];
      if (!targets.empty()) NIMBLE_RETURN_IF_ERROR(IssuePrefetches(targets));
    }
  }
  if (in.c & kInvokePackedSequenceOutput) {
    absl::StatusOr<std::vector<Tensor>> results = kernel.RunVariadic(ctx, kernel_inputs_);
    kernel_inputs_.clear();
    if (!results.ok()) {
      return Annotate(results.status(), absl::StrCat("kernel '", exe_->kernels[in.a].name, "'"));
    }
    auto seq = std::make_shared<ADT>();
    seq->tag = kSequenceTag;
    seq->fields.reserve(results->size());
    for (Tensor& t : *results) seq->fields.push_back(std::move(t));
    regs_[list[num_inputs]] = ADTRef(std::move(seq));
    ++pc_;
    return absl::OkStatus();
  }
  kernel_outputs_.clear();
  kernel_outputs_.resize(num_outputs);
  if (ABSL_PREDICT_FALSE(ctx.allocator == nullptr) && (in.c & 3) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("no allocator for device ", ctx.device.ToString()));
  }
  if (in.c & kInvokePackedShapeFunction) {
    kernel_shapes_.clear();
    kernel_shapes_.resize(num_outputs);
    absl::Status status = kernel.OutputShapes(kernel_inputs_, absl::MakeSpan(kernel_shapes_));
    if (!status.ok()) {
      return Annotate(status, absl::StrCat("shape function of '", exe_->kernels[in.a].name, "'"));
    }
    for (uint32_t i = 0; i < num_outputs; ++i) {
      NIMBLE_ASSIGN_OR_RETURN(kernel_outputs_[i],
                              Tensor::Empty(DecodeOutputDType(in.imm, static_cast<int>(i)),
                                            kernel_shapes_[i], ctx.allocator));
    }
  } else if (!(in.c & kInvokePackedAllocatesOutputs)) {
    for (uint32_t i = 0; i < num_outputs; ++i) {
      NIMBLE_VM_GET(Tensor, t, list[num_inputs + i], "an output tensor");
      kernel_outputs_[i] = *t;
    }
  }
  absl::Status status;
  if (ABSL_PREDICT_FALSE(options_.profile)) {
    const auto start = std::chrono::steady_clock::now();
    status = kernel.Run(ctx, kernel_inputs_, absl::MakeSpan(kernel_outputs_));
    const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::steady_clock::now() - start)
                           .count();
    profile_.kernel_ns += ns;
    ++profile_.kernel_calls;
    if (profile_.per_kernel_ns.size() < exe_->kernels.size()) {
      profile_.per_kernel_ns.resize(exe_->kernels.size());
      profile_.per_kernel_calls.resize(exe_->kernels.size());
    }
    profile_.per_kernel_ns[in.a] += ns;
    ++profile_.per_kernel_calls[in.a];
  } else {
    status = kernel.Run(ctx, kernel_inputs_, absl::MakeSpan(kernel_outputs_));
  }
  if (!status.ok()) {
    kernel_inputs_.clear();
    kernel_outputs_.clear();
    return Annotate(status, absl::StrCat("kernel '", exe_->kernels[in.a].name, "'"));
  }
  if (in.c & (kInvokePackedAllocatesOutputs | kInvokePackedShapeFunction)) {
    for (uint32_t i = 0; i < num_outputs; ++i) {
      if (ABSL_PREDICT_FALSE(!kernel_outputs_[i].defined())) {
        kernel_inputs_.clear();
        kernel_outputs_.clear();
        return absl::InternalError(
            absl::StrCat("kernel '", exe_->kernels[in.a].name, "' did not produce output ", i));
      }
      regs_[list[num_inputs + i]] = std::move(kernel_outputs_[i]);
    }
  }
  kernel_inputs_.clear();  // drop references so that KillRegister frees memory
  kernel_outputs_.clear();
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecAllocStorage(const Instruction& in) {
  NIMBLE_VM_GET(int64_t, size, in.a, "a scalar size");
  if (ABSL_PREDICT_FALSE(*size < 0)) {
    return absl::InvalidArgumentError(absl::StrCat("storage size ", *size, " is negative"));
  }
  Allocator* allocator = device_allocators_[in.b];
  if (ABSL_PREDICT_FALSE(allocator == nullptr)) {
    return absl::FailedPreconditionError(
        absl::StrCat("no allocator for device ", exe_->devices[in.b].ToString()));
  }
  NIMBLE_ASSIGN_OR_RETURN(StorageRef storage,
                          Storage::Allocate(allocator, static_cast<size_t>(*size)));
  if (in.c > static_cast<int32_t>(Allocator::kAlignment) &&
      reinterpret_cast<uintptr_t>(storage->data()) % static_cast<uintptr_t>(in.c) != 0) {
    return absl::UnimplementedError(
        absl::StrCat("alignment ", in.c, " exceeds the allocator's ", Allocator::kAlignment));
  }
  regs_[in.dst] = std::move(storage);
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecAllocTensor(const Instruction& in) {
  NIMBLE_VM_GET(StorageRef, storage, in.a, "a storage");
  NIMBLE_VM_GET(int64_t, offset, in.b, "a scalar offset");
  if (ABSL_PREDICT_FALSE(*offset < 0)) {
    return absl::InvalidArgumentError(absl::StrCat("negative byte offset ", *offset));
  }
  NIMBLE_ASSIGN_OR_RETURN(
      Tensor t, Tensor::View(*storage, static_cast<size_t>(*offset), static_cast<DType>(in.c),
                             absl::MakeConstSpan(pool_ + in.list_begin, in.list_size)));
  regs_[in.dst] = std::move(t);
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecAllocTensorReg(const Instruction& in) {
  NIMBLE_VM_GET(StorageRef, storage, in.a, "a storage");
  NIMBLE_VM_GET(int64_t, offset, in.b, "a scalar offset");
  if (ABSL_PREDICT_FALSE(*offset < 0)) {
    return absl::InvalidArgumentError(absl::StrCat("negative byte offset ", *offset));
  }
  Shape shape;
  const int64_t* list = pool_ + in.list_begin;
  for (uint32_t i = 0; i < in.list_size; ++i) {
    NIMBLE_VM_GET(int64_t, dim, list[i], "a scalar dim");
    shape.push_back(*dim);
  }
  NIMBLE_ASSIGN_OR_RETURN(Tensor t, Tensor::View(*storage, static_cast<size_t>(*offset),
                                                 static_cast<DType>(in.c), shape));
  regs_[in.dst] = std::move(t);
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecAllocADT(const Instruction& in) {
  auto adt = std::make_shared<ADT>();
  adt->tag = in.a;
  adt->fields.reserve(in.list_size);
  const int64_t* list = pool_ + in.list_begin;
  for (uint32_t i = 0; i < in.list_size; ++i) adt->fields.push_back(regs_[list[i]]);
  regs_[in.dst] = ADTRef(std::move(adt));
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecAllocClosure(const Instruction& in) {
  auto closure = std::make_shared<Closure>();
  closure->function = in.a;
  closure->captured.reserve(in.list_size);
  const int64_t* list = pool_ + in.list_begin;
  for (uint32_t i = 0; i < in.list_size; ++i) closure->captured.push_back(regs_[list[i]]);
  regs_[in.dst] = ClosureRef(std::move(closure));
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecGetField(const Instruction& in) {
  NIMBLE_VM_GET(ADTRef, adt, in.a, "an ADT");
  if (ABSL_PREDICT_FALSE(static_cast<size_t>(in.b) >= (*adt)->fields.size())) {
    return absl::InternalError(
        absl::StrCat("field ", in.b, " of an ADT with ", (*adt)->fields.size(), " fields"));
  }
  Value field = (*adt)->fields[in.b];  // copy first: dst may be a
  regs_[in.dst] = std::move(field);
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecGetTag(const Instruction& in) {
  NIMBLE_VM_GET(ADTRef, adt, in.a, "an ADT");
  regs_[in.dst] = static_cast<int64_t>((*adt)->tag);
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecIf(const Instruction& in) {
  NIMBLE_ASSIGN_OR_RETURN(bool cond, Truth(regs_[in.a]));
  pc_ += cond ? in.b : in.c;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecGoto(const Instruction& in) {
  pc_ += in.a;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecLoadConst(const Instruction& in) {
  regs_[in.dst] = exe_->constants[in.a];
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecLoadConsti(const Instruction& in) {
  regs_[in.dst] = in.imm;
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecFatal(const Instruction& in) {
  return absl::InvalidArgumentError(exe_->strings[in.a]);
}

absl::Status VirtualMachine::ExecReshapeTensor(const Instruction& in) {
  NIMBLE_VM_GET(Tensor, t, in.a, "a tensor");
  Shape shape;
  const int64_t* list = pool_ + in.list_begin;
  for (uint32_t i = 0; i < in.list_size; ++i) {
    NIMBLE_VM_GET(int64_t, dim, list[i], "a scalar dim");
    shape.push_back(*dim);
  }
  NIMBLE_ASSIGN_OR_RETURN(Tensor reshaped, t->Reshape(shape));
  regs_[in.dst] = std::move(reshaped);
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::CopyPendingResults() {
  for (size_t i = 0; i < pending_results_.size(); ++i) {
    const auto& [src, dst] = pending_results_[i];
    absl::Status copied = device_api_->Copy(dst.raw_data(), dst.device(), src.raw_data(),
                                            src.device(), src.nbytes(), options_.stream);
    if (!copied.ok()) {
      pending_results_.clear();
      return copied;
    }
  }
  pending_results_.clear();
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecDeviceCopy(const Instruction& in) {
  NIMBLE_VM_GET(Tensor, src, in.a, "a tensor");
  const Device from = exe_->devices[in.b];
  const Device to = exe_->devices[in.c];
  if (src->device() != from) {
    return absl::InternalError(
        absl::StrCat("tensor is on ", src->device().ToString(), ", expected ", from.ToString()));
  }
  Allocator* allocator = device_allocators_[in.c];
  if (allocator == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("no allocator for ", to.ToString()));
  }
  NIMBLE_ASSIGN_OR_RETURN(Tensor dst, Tensor::Empty(src->dtype(), src->shape(), allocator));
  if (ABSL_PREDICT_FALSE(capturing_)) {
    if (to.type == DeviceType::kCPU && from.type != DeviceType::kCPU) {
      capture_unknown_.push_back(dst.raw_data());  // arrives only when the graph runs
    } else if (to.type == DeviceType::kCPU) {
      CheckCaptureRead(*src);
    }
  }
  if (from.type != DeviceType::kCPU || to.type != DeviceType::kCPU) {
    if (src->dtype() == DType::kString) {
      return absl::UnimplementedError("string tensors live on the host only");
    }
    if (device_api_ == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat("device_copy from ", from.ToString(),
                                                        " to ", to.ToString(),
                                                        ": the device is not compiled in"));
    }
    const bool result_copy = (in.imm & kDeviceCopyResult) != 0 && to.type == DeviceType::kCPU &&
                             from.type != DeviceType::kCPU;
    if (src->nbytes() > 0 && result_copy) {
      // A result the host reads only after the function returns: in a capture, on a branch of
      // the graph (src kept alive until the capture ends, so nothing queued after reuses its
      // memory); eagerly, queued when the function returns, so that the host is not held up
      // here while kernels after it are still to be queued.
      if (capturing_) {
        NIMBLE_RETURN_IF_ERROR(device_api_->CopyToHostOnBranch(
            dst.raw_data(), src->raw_data(), from, src->nbytes(), options_.stream));
        capture_kept_.push_back(*src);
      } else {
        pending_results_.push_back({*src, dst});
      }
    } else if (src->nbytes() > 0) {
      NIMBLE_RETURN_IF_ERROR(device_api_->Copy(dst.raw_data(), to, src->raw_data(), from,
                                               src->nbytes(), options_.stream));
    }
  } else if (src->dtype() == DType::kString) {
    std::copy_n(src->data<std::string>(), src->num_elements(), dst.data<std::string>());
  } else if (src->nbytes() > 0) {
    std::memcpy(dst.raw_data(), src->raw_data(), src->nbytes());
  }
  regs_[in.dst] = std::move(dst);
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecLoadConstOn(const Instruction& in) {
  const Device device = exe_->devices[in.b];
  if (device.type == DeviceType::kCPU) {
    regs_[in.dst] = exe_->constants[in.a];
    ++pc_;
    return absl::OkStatus();
  }
  Executable::DeviceConstantCache& cache = *exe_->device_constants;
  std::lock_guard<std::mutex> lock(cache.mutex);
  const auto key = Executable::DeviceConstantCache::KeyOf(in.a, device);
  auto it = cache.tensors.find(key);
  if (it == cache.tensors.end()) {
    const Tensor& host = exe_->constants[in.a];
    if (device_allocators_[in.b] == nullptr || device_api_ == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("no allocator for device ", device.ToString()));
    }
    // The copy outlives this VM (it belongs to the executable, which caches and other
    // instances share): it comes from the device's process-wide allocator, not this VM's,
    // whose owner may go away first.
    NIMBLE_ASSIGN_OR_RETURN(Allocator * allocator, device_api_->DefaultAllocator(device.ordinal));
    if (host.dtype() == DType::kString) {
      return absl::UnimplementedError("string constants live on the host only");
    }
    NIMBLE_ASSIGN_OR_RETURN(Tensor t, Tensor::Empty(host.dtype(), host.shape(), allocator));
    // That allocator orders on the legacy default stream: the block is ours once it got there.
    NIMBLE_RETURN_IF_ERROR(device_api_->Synchronize(nullptr));
    if (host.nbytes() > 0) {
      NIMBLE_RETURN_IF_ERROR(device_api_->Copy(t.raw_data(), device, host.raw_data(), kCpu,
                                               host.nbytes(), options_.stream));
      // Other instances use it on other streams: complete the upload before sharing it.
      NIMBLE_RETURN_IF_ERROR(device_api_->Synchronize(options_.stream));
    }
    t.storage()->MarkConstant();
    it = cache.tensors.emplace(key, std::move(t)).first;
  }
  regs_[in.dst] = it->second;
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecShapeOf(const Instruction& in) {
  NIMBLE_VM_GET(Tensor, t, in.a, "a tensor");
  const int64_t rank = t->rank();
  NIMBLE_ASSIGN_OR_RETURN(Tensor shape, Tensor::Empty(DType::kI64, {rank}, host_allocator_));
  std::copy(t->shape().begin(), t->shape().end(), shape.data<int64_t>());
  regs_[in.dst] = std::move(shape);
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecKillRegister(const Instruction& in) {
  regs_[in.a] = Value();
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecScalarBinary(const Instruction& in) {
  NIMBLE_VM_GET(int64_t, x, in.a, "a scalar");
  NIMBLE_VM_GET(int64_t, y, in.b, "a scalar");
  int64_t result = 0;
  NIMBLE_RETURN_IF_ERROR(ApplyScalarOp(in.c, *x, *y, &result));
  regs_[in.dst] = result;
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecScalarBinaryImm(const Instruction& in) {
  NIMBLE_VM_GET(int64_t, x, in.a, "a scalar");
  int64_t result = 0;
  NIMBLE_RETURN_IF_ERROR(ApplyScalarOp(in.c, *x, in.imm, &result));
  regs_[in.dst] = result;
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecTensorDim(const Instruction& in) {
  NIMBLE_VM_GET(Tensor, t, in.a, "a tensor");
  if (ABSL_PREDICT_FALSE(in.b >= t->rank())) {
    return absl::InvalidArgumentError(
        absl::StrCat("dim ", in.b, " of ", t->TypeString(), " does not exist"));
  }
  regs_[in.dst] = t->dim(in.b);
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecTensorSelect(const Instruction& in) {
  NIMBLE_VM_GET(Tensor, t, in.a, "a tensor");
  if (ABSL_PREDICT_FALSE(capturing_)) CheckCaptureRead(*t);
  NIMBLE_VM_GET(int64_t, index, in.b, "a scalar");
  if (ABSL_PREDICT_FALSE(t->rank() == 0 || *index < 0 || *index >= t->dim(0))) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor_select: index ", *index, " is outside ", t->TypeString()));
  }
  const size_t slice_bytes = t->dim(0) == 0 ? 0 : t->nbytes() / static_cast<size_t>(t->dim(0));
  const Shape& shape = t->shape();
  NIMBLE_ASSIGN_OR_RETURN(
      Tensor view, Tensor::View(t->storage(), t->byte_offset() + slice_bytes * *index, t->dtype(),
                                absl::MakeConstSpan(shape).subspan(1)));
  regs_[in.dst] = std::move(view);
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecTensorElement(const Instruction& in) {
  NIMBLE_VM_GET(Tensor, t, in.a, "a tensor");
  if (ABSL_PREDICT_FALSE(capturing_)) CheckCaptureRead(*t);
  if (t->dtype() != DType::kI64 && t->dtype() != DType::kI32) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor_element needs an i32 or i64 tensor, got ", t->TypeString()));
  }
  NIMBLE_ASSIGN_OR_RETURN(int64_t value, IntegerElement(*t, in.b));
  regs_[in.dst] = value;
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecMakeShapeTensor(const Instruction& in) {
  const int64_t n = in.list_size;
  NIMBLE_ASSIGN_OR_RETURN(Tensor shape, Tensor::Empty(DType::kI64, {n}, host_allocator_));
  int64_t* data = shape.data<int64_t>();
  const int64_t* list = pool_ + in.list_begin;
  for (int64_t i = 0; i < n; ++i) {
    NIMBLE_VM_GET(int64_t, dim, list[i], "a scalar");
    data[i] = *dim;
  }
  regs_[in.dst] = std::move(shape);
  ++pc_;
  return absl::OkStatus();
}

// ---- Sequences and optionals ----------------------------------------------------------------

namespace {

// `position` of an ADT with `size` fields, negative counting from the end; `size` itself is
// allowed when inserting (append).
absl::StatusOr<size_t> AdtPosition(int64_t position, size_t size, bool inserting,
                                   const std::string& where) {
  const int64_t n = static_cast<int64_t>(size);
  const int64_t p = position < 0 ? position + n : position;
  if (p < 0 || p > n || (p == n && !inserting)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": position ", position,
                                                   " is out of range for a sequence of ", n,
                                                   n == 1 ? " tensor" : " tensors"));
  }
  return static_cast<size_t>(p);
}

}  // namespace

absl::Status VirtualMachine::ExecAdtSize(const Instruction& in) {
  NIMBLE_VM_GET(ADTRef, adt, in.a, "an ADT");
  regs_[in.dst] = static_cast<int64_t>((*adt)->fields.size());
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecGetFieldReg(const Instruction& in) {
  NIMBLE_VM_GET(ADTRef, adt, in.a, "an ADT");
  NIMBLE_VM_GET(int64_t, position, in.b, "a scalar position");
  NIMBLE_ASSIGN_OR_RETURN(
      size_t p, AdtPosition(*position, (*adt)->fields.size(), false, exe_->strings[in.c]));
  Value field = (*adt)->fields[p];  // copy first: dst may be a
  regs_[in.dst] = std::move(field);
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecAdtInsert(const Instruction& in) {
  NIMBLE_VM_GET(ADTRef, adt, in.a, "an ADT");
  size_t p = (*adt)->fields.size();
  if (in.list_size == 1) {
    NIMBLE_VM_GET(int64_t, position, pool_[in.list_begin], "a scalar position");
    NIMBLE_ASSIGN_OR_RETURN(p, AdtPosition(*position, p, true, exe_->strings[in.c]));
  }
  auto out = std::make_shared<ADT>();
  out->tag = (*adt)->tag;
  out->fields.reserve((*adt)->fields.size() + 1);
  out->fields.assign((*adt)->fields.begin(), (*adt)->fields.begin() + p);
  out->fields.push_back(regs_[in.b]);
  out->fields.insert(out->fields.end(), (*adt)->fields.begin() + p, (*adt)->fields.end());
  regs_[in.dst] = ADTRef(std::move(out));
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecAdtErase(const Instruction& in) {
  NIMBLE_VM_GET(ADTRef, adt, in.a, "an ADT");
  const size_t size = (*adt)->fields.size();
  int64_t position = -1;
  if (in.list_size == 1) {
    NIMBLE_VM_GET(int64_t, given, pool_[in.list_begin], "a scalar position");
    position = *given;
  }
  NIMBLE_ASSIGN_OR_RETURN(size_t p, AdtPosition(position, size, false, exe_->strings[in.c]));
  auto out = std::make_shared<ADT>();
  out->tag = (*adt)->tag;
  out->fields.reserve(size - 1);
  for (size_t i = 0; i < size; ++i) {
    if (i != p) out->fields.push_back((*adt)->fields[i]);
  }
  regs_[in.dst] = ADTRef(std::move(out));
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecOptionalHas(const Instruction& in) {
  const Value& v = regs_[in.a];
  int64_t has = 1;
  if (std::holds_alternative<std::monostate>(v)) {
    has = 0;
  } else if (const ADTRef* adt = std::get_if<ADTRef>(&v);
             adt && *adt && (*adt)->tag == kOptionalTag) {
    has = (*adt)->fields.empty() ? 0 : 1;
  }
  regs_[in.dst] = has;
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecOptionalGet(const Instruction& in) {
  Value v = regs_[in.a];
  if (const ADTRef* adt = std::get_if<ADTRef>(&v); adt && *adt && (*adt)->tag == kOptionalTag) {
    if ((*adt)->fields.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(exe_->strings[in.c], ": the optional is empty"));
    }
    Value inner = (*adt)->fields[0];
    v = std::move(inner);
  } else if (std::holds_alternative<std::monostate>(v)) {
    return absl::InvalidArgumentError(absl::StrCat(exe_->strings[in.c], ": the optional is empty"));
  }
  regs_[in.dst] = std::move(v);
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecMakeScalarTensor(const Instruction& in) {
  NIMBLE_VM_GET(int64_t, value, in.a, "a scalar");
  const DType dtype = static_cast<DType>(in.c);
  NIMBLE_ASSIGN_OR_RETURN(Tensor t, Tensor::Empty(dtype, {}, host_allocator_));
  switch (dtype) {
    case DType::kBool:
      *t.data<bool>() = *value != 0;
      break;
    case DType::kI64:
      *t.data<int64_t>() = *value;
      break;
    case DType::kI32:
      *t.data<int32_t>() = static_cast<int32_t>(*value);
      break;
    case DType::kF32:
      *t.data<float>() = static_cast<float>(*value);
      break;
    default:
      return absl::InternalError(
          absl::StrCat("make_scalar_tensor: unsupported dtype ", DTypeName(dtype)));
  }
  regs_[in.dst] = std::move(t);
  ++pc_;
  return absl::OkStatus();
}

absl::Status VirtualMachine::ExecAssert(const Instruction& in) {
  NIMBLE_ASSIGN_OR_RETURN(bool cond, Truth(regs_[in.a]));
  if (ABSL_PREDICT_TRUE(cond)) {
    ++pc_;
    return absl::OkStatus();
  }
  std::vector<std::string> values;
  const int64_t* list = pool_ + in.list_begin;
  for (uint32_t i = 0; i < in.list_size; ++i) values.push_back(ValueToString(regs_[list[i]]));
  return absl::InvalidArgumentError(FormatMessage(exe_->strings[in.b], values));
}

#undef NIMBLE_VM_GET

}  // namespace nimble::vm
