// CUDA kernel adapters of the VM (issue 7): destination-passing Kernel classes over ops.cu's
// launchers and vm/cuda's GemmRunner, registered for DeviceType::kCUDA with the traits the
// compiler's placement reads (which dtypes each handles). Kernels run on KernelContext::stream
// and never synchronise; factories touch no device (the compiler creates them without a GPU).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/status_macros.h"
#include "vm/cuda/cuda_status.h"
#include "vm/cuda/gemm.h"
#include "vm/cuda/rtc_compiler.h"
#include "vm/kernels/cuda/cuda_device.h"
#include "vm/kernels/cuda/ops_cuda.h"
#include "vm/kernels/cuda/rtc_elementwise.h"
#include "vm/kernels/fused_elementwise_program.h"
#include "vm/kernels/kernel.h"
#include "vm/kernels/split_gemm_rule.h"

namespace nimble::vm {
namespace {

namespace ops = cuda_ops;
using KernelPtr = std::unique_ptr<Kernel>;

cudaStream_t StreamOf(const KernelContext& ctx) { return static_cast<cudaStream_t>(ctx.stream); }

static_assert(sizeof(ops::ErrorRecord) == sizeof(DeviceErrorRecord) &&
                  offsetof(ops::ErrorRecord, code) == offsetof(DeviceErrorRecord, code) &&
                  offsetof(ops::ErrorRecord, value) == offsetof(DeviceErrorRecord, value) &&
                  offsetof(ops::ErrorRecord, bound) == offsetof(DeviceErrorRecord, bound),
              "ops::ErrorRecord mirrors vm::DeviceErrorRecord");
static_assert(ops::kErrorGatherIndex == kDeviceErrorGatherIndex &&
                  ops::kErrorEmbeddingIndex == kDeviceErrorEmbeddingIndex &&
                  ops::kErrorSequenceLength == kDeviceErrorSequenceLength,
              "error codes agree");

ops::ErrorRecord* ErrorsOf(const KernelContext& ctx) {
  return reinterpret_cast<ops::ErrorRecord*>(ctx.device_errors);
}

// NIMBLE_CUDA_RTC=0 keeps FusedElementwise on the interpreter kernel (for A/B measurements).
bool RtcEnabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("NIMBLE_CUDA_RTC");
    return v == nullptr || v[0] != '0';
  }();
  return enabled;
}

absl::Status Launch(cudaError_t error, const std::string& op) {
  if (error == cudaSuccess) return absl::OkStatus();
  return cuda::CudaStatus(error, op.c_str());
}

bool Present(absl::Span<const Tensor> t, size_t i) { return i < t.size() && t[i].defined(); }

bool IsGpuFloat(DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; }

ops::FloatType FloatTypeOf(DType d) {
  return d == DType::kF16 ? ops::FloatType::kF16
                          : (d == DType::kBF16 ? ops::FloatType::kBF16 : ops::FloatType::kF32);
}

// Inputs in `host_inputs` (KernelTraits::host_inputs) may be anywhere.
absl::Status CheckDevice(const std::string& op, absl::Span<const Tensor> inputs,
                         absl::Span<Tensor> outputs, absl::Span<const int> host_inputs) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (absl::c_linear_search(host_inputs, static_cast<int>(i))) continue;
    if (inputs[i].defined() && inputs[i].device().type != DeviceType::kCUDA) {
      return absl::InternalError(
          absl::StrCat(op, " on cuda: input ", i, " is on ", inputs[i].device().ToString()));
    }
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (outputs[i].defined() && outputs[i].device().type != DeviceType::kCUDA) {
      return absl::InternalError(
          absl::StrCat(op, " on cuda: output ", i, " is on ", outputs[i].device().ToString()));
    }
  }
  return absl::OkStatus();
}

class CudaKernel : public Kernel {
 public:
  explicit CudaKernel(std::string op, std::vector<int> host_inputs = {})
      : op_(std::move(op)), host_inputs_(std::move(host_inputs)) {}
  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const final {
    NIMBLE_RETURN_IF_ERROR(CheckDevice(op_, inputs, outputs, host_inputs_));
    if (outputs.empty() || !outputs[0].defined()) {
      return absl::InternalError(absl::StrCat(op_, " on cuda: output 0 is not allocated"));
    }
    return RunCuda(ctx, inputs, outputs);
  }
  // Runs only where output shapes are known at compile time (the compiler's placement keeps
  // shape-function calls on the host).
  absl::Status OutputShapes(absl::Span<const Tensor>, absl::Span<Shape>) const override {
    return absl::UnimplementedError(absl::StrCat(op_, " on cuda has no shape function"));
  }

 protected:
  virtual absl::Status RunCuda(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                               absl::Span<Tensor> outputs) const = 0;
  const std::string op_;
  const std::vector<int> host_inputs_;
};

// Element strides of `in` broadcast (numpy rules) over `out` of rank `rank`.
absl::Status BroadcastStrides(const std::string& op, const Shape& in, const Shape& out,
                              int64_t* strides) {
  const int rank = static_cast<int>(out.size());
  const int offset = rank - static_cast<int>(in.size());
  if (offset < 0) return absl::InvalidArgumentError(absl::StrCat(op, ": input rank too high"));
  int64_t stride = 1;
  for (int d = rank - 1; d >= 0; --d) {
    strides[d] = 0;
    if (d < offset) continue;
    const int64_t dim = in[d - offset];
    if (dim == out[d]) {
      strides[d] = dim == 1 ? 0 : stride;
    } else if (dim != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          op, ": input ", ShapeToString(in), " does not broadcast to ", ShapeToString(out)));
    }
    stride *= dim;
  }
  return absl::OkStatus();
}

// ---- FusedElementwise and the plain elementwise ops (as one-instruction programs)

class ProgramKernel final : public CudaKernel {
 public:
  ProgramKernel(std::string op, ops::Program program)
      : CudaKernel(std::move(op)), program_(program) {}

  absl::Status RunCuda(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                       absl::Span<Tensor> outputs) const override {
    if (static_cast<int>(inputs.size()) < program_.num_inputs ||
        static_cast<int>(outputs.size()) < program_.num_outputs) {
      return absl::InvalidArgumentError(absl::StrCat(op_, ": expected ", program_.num_inputs,
                                                     " inputs and ", program_.num_outputs,
                                                     " outputs"));
    }
    const Shape& out_shape = outputs[0].shape();
    if (out_shape.size() > static_cast<size_t>(ops::kMaxRank)) {
      return absl::UnimplementedError(absl::StrCat(op_, " on cuda: rank > ", ops::kMaxRank));
    }
    ops::BroadcastShape shape;
    shape.rank = static_cast<int>(out_shape.size());
    for (int d = 0; d < shape.rank; ++d) shape.dims[d] = out_shape[d];
    ops::ProgramArgs args;
    const DType dtype = outputs[0].dtype();
    if (!IsGpuFloat(dtype)) {
      return absl::InvalidArgumentError(absl::StrCat(op_, " on cuda: f32, f16 or bf16 only"));
    }
    for (int k = 0; k < program_.num_inputs; ++k) {
      if (!inputs[k].defined() || inputs[k].dtype() != dtype) {
        return absl::InvalidArgumentError(
            absl::StrCat(op_, " on cuda: input ", k, " must be ", DTypeName(dtype)));
      }
      NIMBLE_RETURN_IF_ERROR(BroadcastStrides(op_, inputs[k].shape(), out_shape, shape.strides[k]));
      args.inputs[k] = inputs[k].raw_data();
    }
    for (int k = 0; k < program_.num_outputs; ++k) {
      if (outputs[k].dtype() != dtype || outputs[k].shape() != out_shape) {
        return absl::InvalidArgumentError(
            absl::StrCat(op_, " on cuda: output ", k, " is ", outputs[k].TypeString()));
      }
      args.outputs[k] = outputs[k].raw_data();
    }
    if (RtcEnabled()) {
      ops::RtcElementwiseVariant variant;
      variant.type = FloatTypeOf(dtype);
      variant.rank = shape.rank;
      for (int k = 0; k < program_.num_inputs; ++k) {
        if (inputs[k].shape() == out_shape) variant.dense |= 1u << k;
        else if (inputs[k].num_elements() == 1) variant.scalar |= 1u << k;
      }
      NIMBLE_ASSIGN_OR_RETURN(const RtcEntry* entry, RtcFor(ctx, variant));
      if (entry != nullptr) {
        ops::RtcElementwiseArgs rtc_args = {};
        for (int k = 0; k < ops::kMaxProgramInputs; ++k) {
          rtc_args.inputs[k] = args.inputs[k];
          rtc_args.outputs[k] = args.outputs[k];
          for (int d = 0; d < ops::kMaxRank; ++d) rtc_args.strides[k][d] = shape.strides[k][d];
        }
        for (int d = 0; d < ops::kMaxRank; ++d) rtc_args.dims[d] = shape.dims[d];
        rtc_args.count = outputs[0].num_elements();
        if (rtc_args.count == 0) return absl::OkStatus();
        const int64_t blocks = std::min<int64_t>((rtc_args.count + 255) / 256, int64_t{65535} * 16);
        void* params[] = {&rtc_args};
        return entry->module->Launch(entry->kernel, dim3(static_cast<unsigned>(blocks)), dim3(256),
                                     params, 0, StreamOf(ctx));
      }
    }
    return Launch(ops::RunProgram(program_, args, shape, outputs[0].num_elements(),
                                  FloatTypeOf(dtype), StreamOf(ctx)),
                  op_);
  }

 private:
  // A compiled variant; a null module means NVRTC failed and the interpreter runs it.
  struct RtcEntry {
    ops::RtcElementwiseVariant variant;
    std::unique_ptr<cuda::RtcModule> module;
    cudaKernel_t kernel = nullptr;
  };

  // The compiled kernel of `variant`, compiling it on first use; null to use the interpreter
  // (NVRTC unavailable or failing, or the stream is capturing a graph, where loading a module
  // is not allowed).
  absl::StatusOr<const RtcEntry*> RtcFor(const KernelContext& ctx,
                                         const ops::RtcElementwiseVariant& variant) const {
    absl::MutexLock lock(&rtc_mu_);
    for (const auto& e : rtc_) {
      if (e->variant == variant) return e->module ? e.get() : nullptr;
    }
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(StreamOf(ctx), &capture));
    if (capture != cudaStreamCaptureStatusNone) return nullptr;
    auto entry = std::make_unique<RtcEntry>();
    entry->variant = variant;
    absl::Status status = [&]() -> absl::Status {
      NIMBLE_ASSIGN_OR_RETURN(cuda::RtcCompiler * rtc, cuda_device::Rtc(ctx.device.ordinal));
      NIMBLE_ASSIGN_OR_RETURN(entry->module, rtc->Load(ops::RtcElementwiseSource(program_, variant),
                                                       "fused_elementwise.cu"));
      NIMBLE_ASSIGN_OR_RETURN(entry->kernel, entry->module->GetKernel(ops::kRtcElementwiseKernel));
      return absl::OkStatus();
    }();
    if (!status.ok()) entry->module.reset();  // the interpreter runs this variant from now on
    rtc_.push_back(std::move(entry));
    return rtc_.back()->module ? rtc_.back().get() : nullptr;
  }

  const ops::Program program_;
  mutable absl::Mutex rtc_mu_;
  mutable std::vector<std::unique_ptr<RtcEntry>> rtc_ ABSL_GUARDED_BY(rtc_mu_);
};

absl::StatusOr<ops::Program> ParseProgram(const Attributes& a) {
  NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> code, a.Get<std::vector<int64_t>>("program"));
  const std::vector<double> constants = a.GetOr<std::vector<double>>("constants", {});
  ops::Program p;
  if (code.size() % 4 != 0 || code.size() / 4 > static_cast<size_t>(ops::kMaxProgramInstructions) ||
      constants.size() > static_cast<size_t>(ops::kMaxProgramConstants)) {
    return absl::InvalidArgumentError("FusedElementwise: program too long for the cuda kernel");
  }
  p.num_instructions = static_cast<int>(code.size() / 4);
  for (int i = 0; i < p.num_instructions; ++i) {
    const int64_t op = code[4 * i];
    for (int j = 0; j < 4; ++j) {
      const int64_t w = code[4 * i + j];
      if (w < -1 || w > 127) return absl::InvalidArgumentError("FusedElementwise: bad operand");
      p.code[i][j] = static_cast<int8_t>(w);
    }
    const int64_t dst = code[4 * i + 1], a0 = code[4 * i + 2], b0 = code[4 * i + 3];
    auto slot = [](int64_t x) { return x >= 0 && x < ops::kMaxProgramSlots; };
    bool slots_ok = true;
    if (op == static_cast<int64_t>(FusedOp::kLoad)) {
      if (a0 < 0 || a0 >= ops::kMaxProgramInputs) {
        return absl::InvalidArgumentError("FusedElementwise: too many inputs for cuda");
      }
      p.num_inputs = std::max<int>(p.num_inputs, static_cast<int>(a0) + 1);
      slots_ok = slot(dst);
    } else if (op == static_cast<int64_t>(FusedOp::kStore)) {
      if (dst < 0 || dst >= ops::kMaxProgramInputs) {
        return absl::InvalidArgumentError("FusedElementwise: too many outputs for cuda");
      }
      p.num_outputs = std::max<int>(p.num_outputs, static_cast<int>(dst) + 1);
      slots_ok = slot(a0);
    } else if (op == static_cast<int64_t>(FusedOp::kConst)) {
      if (a0 < 0 || a0 >= static_cast<int64_t>(constants.size())) {
        return absl::InvalidArgumentError("FusedElementwise: constant index out of range");
      }
      slots_ok = slot(dst);
    } else {
      const bool binary = op >= static_cast<int64_t>(FusedOp::kAdd) &&
                          op <= static_cast<int64_t>(FusedOp::kPow);
      slots_ok = slot(dst) && slot(a0) && (!binary || slot(b0));
    }
    if (!slots_ok) return absl::InvalidArgumentError("FusedElementwise: slot out of range");
  }
  for (size_t i = 0; i < constants.size(); ++i) p.constants[i] = static_cast<float>(constants[i]);
  return p;
}

ops::Program Unary(FusedOp op) {
  ops::Program p;
  p.num_instructions = 3, p.num_inputs = 1, p.num_outputs = 1;
  const int8_t code[3][4] = {{0, 0, 0, 0}, {static_cast<int8_t>(op), 1, 0, 0}, {2, 0, 1, 0}};
  std::memcpy(p.code, code, sizeof(code));
  return p;
}

ops::Program Binary(FusedOp op) {
  ops::Program p;
  p.num_instructions = 4, p.num_inputs = 2, p.num_outputs = 1;
  const int8_t code[4][4] = {
      {0, 0, 0, 0}, {0, 1, 1, 0}, {static_cast<int8_t>(op), 2, 0, 1}, {2, 0, 2, 0}};
  std::memcpy(p.code, code, sizeof(code));
  return p;
}

// ---- GEMMs

struct GemmSpec {
  bool trans_a = false, trans_b = false;
  float alpha = 1.0f;
  ops::Act act = ops::Act::kNone;
  bool tf32 = false;  // f32 operands multiplied in TF32 (CompileOptions::precision = tf32)
};

// The GemmRunner precision of operands stored as `d`.
cuda::GemmPrecision GemmPrecisionOf(DType d, bool tf32) {
  if (d == DType::kF16) return cuda::GemmPrecision::kF16;
  if (d == DType::kBF16) return cuda::GemmPrecision::kBF16;
  return tf32 ? cuda::GemmPrecision::kTF32 : cuda::GemmPrecision::kF32;
}

absl::StatusOr<ops::Act> ParseAct(const std::string& name) {
  if (name.empty()) return ops::Act::kNone;
  if (name == "relu") return ops::Act::kRelu;
  if (name == "gelu") return ops::Act::kGelu;
  if (name == "gelu_tanh") return ops::Act::kGeluTanh;
  if (name == "tanh") return ops::Act::kTanh;
  if (name == "sigmoid") return ops::Act::kSigmoid;
  return absl::InvalidArgumentError(absl::StrCat("unknown activation '", name, "'"));
}

// out[batch] = alpha op(a) op(b) with numpy batch broadcasting; 1-D operands as in MatMul.
// bias (N) and residual (out's shape) are added by the epilogue.
absl::Status RunMatMul(const std::string& op, const KernelContext& ctx, const Tensor& a,
                       const Tensor& b, const void* bias, const void* residual, Tensor& out,
                       const GemmSpec& spec) {
  const DType dtype = out.dtype();
  if (!IsGpuFloat(dtype) || a.dtype() != dtype || b.dtype() != dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, " on cuda: A, B and Y must share one of f32, f16, bf16"));
  }
  const cuda::GemmPrecision precision = GemmPrecisionOf(dtype, spec.tf32);
  const size_t elem = DTypeSize(dtype);
  Shape as = a.shape(), bs = b.shape();
  if (as.empty() || bs.empty()) return absl::InvalidArgumentError(op + ": scalar operand");
  if (as.size() == 1) as.insert(as.begin(), 1);
  if (bs.size() == 1) bs.push_back(1);
  const int64_t m = spec.trans_a ? as[as.size() - 1] : as[as.size() - 2];
  const int64_t k = spec.trans_a ? as[as.size() - 2] : as[as.size() - 1];
  const int64_t kb = spec.trans_b ? bs[bs.size() - 1] : bs[bs.size() - 2];
  const int64_t n = spec.trans_b ? bs[bs.size() - 2] : bs[bs.size() - 1];
  if (k != kb) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", a.TypeString(), " x ", b.TypeString(), " inner dims differ"));
  }
  Shape a_batch(as.begin(), as.end() - 2), b_batch(bs.begin(), bs.end() - 2);
  const size_t rank = std::max(a_batch.size(), b_batch.size());
  while (a_batch.size() < rank) a_batch.insert(a_batch.begin(), 1);
  while (b_batch.size() < rank) b_batch.insert(b_batch.begin(), 1);
  Shape batch(rank);
  int64_t batches = 1;
  for (size_t i = 0; i < rank; ++i) {
    if (a_batch[i] != b_batch[i] && a_batch[i] != 1 && b_batch[i] != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": batch dims of ", a.TypeString(), " and ", b.TypeString(), " differ"));
    }
    batch[i] = std::max(a_batch[i], b_batch[i]);
    batches *= batch[i];
  }
  if (out.num_elements() != batches * m * n) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": output ", out.TypeString(),
                                                   " does not hold ", batches, "x", m, "x", n));
  }
  if (out.num_elements() == 0) return absl::OkStatus();
  NIMBLE_ASSIGN_OR_RETURN(cuda::GemmRunner * gemm, cuda_device::Gemm(ctx.device.ordinal));
  int64_t b_elems = 1, a_elems = 1;
  for (int64_t d : b_batch) b_elems *= d;
  for (int64_t d : a_batch) a_elems *= d;
  const bool fused_epilogue = spec.act == ops::Act::kNone || residual == nullptr;
  cuda::GemmShape shape;
  shape.m = m, shape.n = n, shape.k = k, shape.trans_a = spec.trans_a, shape.trans_b = spec.trans_b;
  cuda::GemmOperands operands;
  operands.alpha = spec.alpha;
  // The epilogue cuBLASLt can do: bias; residual only without activation. GELU (erf) never.
  const bool lt_bias = bias != nullptr && spec.act == ops::Act::kNone;
  const bool lt_residual = residual != nullptr && spec.act == ops::Act::kNone;
  cuda::GemmEpilogue epilogue = lt_bias ? cuda::GemmEpilogue::kBias : cuda::GemmEpilogue::kNone;
  // ReLU and tanh-form GELU (cuBLASLt's GELU epilogue is the tanh approximation) run in the
  // epilogue too when there is no residual.
  const bool lt_act =
      (spec.act == ops::Act::kRelu || spec.act == ops::Act::kGeluTanh) && residual == nullptr;
  if (lt_act) {
    epilogue = spec.act == ops::Act::kRelu
                   ? (bias ? cuda::GemmEpilogue::kBiasRelu : cuda::GemmEpilogue::kRelu)
                   : (bias ? cuda::GemmEpilogue::kBiasGelu : cuda::GemmEpilogue::kGelu);
  }
  (void)fused_epilogue;
  const auto s = StreamOf(ctx);
  if (b_elems == 1 && !spec.trans_a) {
    // One GEMM: A's batches folded into M (B shared).
    shape.m = m * a_elems;
    operands.a = a.raw_data(), operands.b = b.raw_data(), operands.d = out.raw_data();
    operands.bias = (lt_bias || lt_act) ? bias : nullptr;
    operands.residual = lt_residual ? residual : nullptr;
    NIMBLE_RETURN_IF_ERROR(gemm->Run(shape, precision, epilogue, operands, s));
  } else if (a_batch == b_batch || a_elems == 1 || b_elems == 1) {
    shape.batch = batches;
    operands.a = a.raw_data(), operands.b = b.raw_data(), operands.d = out.raw_data();
    operands.stride_a = a_elems == 1 ? 0 : m * k;
    operands.stride_b = b_elems == 1 ? 0 : k * n;
    operands.bias = (lt_bias || lt_act) ? bias : nullptr;
    operands.residual = lt_residual ? residual : nullptr;
    NIMBLE_RETURN_IF_ERROR(gemm->Run(shape, precision, epilogue, operands, s));
  } else {
    // General broadcasting: one GEMM per output batch.
    for (int64_t i = 0; i < batches; ++i) {
      int64_t rest = i, ai = 0, bi = 0, a_stride = 1, b_stride = 1;
      for (int d = static_cast<int>(rank) - 1; d >= 0; --d) {
        const int64_t idx = rest % batch[d];
        rest /= batch[d];
        if (a_batch[d] != 1) ai += idx * a_stride;
        if (b_batch[d] != 1) bi += idx * b_stride;
        a_stride *= a_batch[d];
        b_stride *= b_batch[d];
      }
      operands.a = static_cast<const char*>(a.raw_data()) + ai * m * k * elem;
      operands.b = static_cast<const char*>(b.raw_data()) + bi * k * n * elem;
      operands.d = static_cast<char*>(out.raw_data()) + i * m * n * elem;
      operands.bias = (lt_bias || lt_act) ? bias : nullptr;
      operands.residual =
          lt_residual ? static_cast<const char*>(residual) + i * m * n * elem : nullptr;
      NIMBLE_RETURN_IF_ERROR(gemm->Run(shape, precision, epilogue, operands, s));
    }
  }
  if (!lt_act && spec.act != ops::Act::kNone) {
    return Launch(ops::BiasActResidual(out.raw_data(), bias, residual, out.num_elements(), n,
                                       spec.act, FloatTypeOf(dtype), s),
                  op);
  }
  return absl::OkStatus();
}

class MatMulKernel final : public CudaKernel {
 public:
  MatMulKernel(std::string op, GemmSpec spec) : CudaKernel(std::move(op)), spec_(spec) {}
  absl::Status RunCuda(const KernelContext& ctx, absl::Span<const Tensor> in,
                       absl::Span<Tensor> out) const override {
    if (!Present(in, 0) || !Present(in, 1)) return absl::InvalidArgumentError(op_ + ": A and B");
    const void* bias = nullptr;
    const void* residual = nullptr;
    const DType dtype = out[0].dtype();
    if (Present(in, 2)) {
      if (in[2].dtype() != dtype || in[2].num_elements() != out[0].shape().back()) {
        return absl::InvalidArgumentError(absl::StrCat(op_, ": bias ", in[2].TypeString()));
      }
      bias = in[2].raw_data();
    }
    if (Present(in, 3)) {
      if (in[3].dtype() != dtype || in[3].shape() != out[0].shape()) {
        return absl::InvalidArgumentError(absl::StrCat(op_, ": residual ", in[3].TypeString()));
      }
      residual = in[3].raw_data();
    }
    return RunMatMul(op_, ctx, in[0], in[1], bias, residual, out[0], spec_);
  }

 private:
  const GemmSpec spec_;
};

// Gemm: Y = alpha op(A) op(B) + beta C (C broadcast to [M, N]).
class GemmKernel final : public CudaKernel {
 public:
  GemmKernel(GemmSpec spec, float beta) : CudaKernel("Gemm"), spec_(spec), beta_(beta) {}
  absl::Status RunCuda(const KernelContext& ctx, absl::Span<const Tensor> in,
                       absl::Span<Tensor> out) const override {
    if (!Present(in, 0) || !Present(in, 1) || in[0].rank() != 2 || in[1].rank() != 2) {
      return absl::InvalidArgumentError("Gemm: A and B must be 2-D");
    }
    Tensor& y = out[0];
    const bool has_c = Present(in, 2) && beta_ != 0.0f;
    const int64_t n = y.rank() == 2 ? y.dim(1) : 0;
    const bool c_is_bias = has_c && beta_ == 1.0f && in[2].dtype() == y.dtype() &&
                           in[2].num_elements() == n &&
                           (in[2].rank() == 1 || (in[2].rank() == 2 && in[2].dim(0) == 1));
    NIMBLE_RETURN_IF_ERROR(RunMatMul(op_, ctx, in[0], in[1], c_is_bias ? in[2].raw_data() : nullptr,
                                     nullptr, y, spec_));
    if (!has_c || c_is_bias) return absl::OkStatus();
    if (in[2].dtype() != y.dtype()) return absl::InvalidArgumentError("Gemm: C must match Y");
    // y = y + beta * C
    ops::Program p;
    p.num_instructions = 6, p.num_inputs = 2, p.num_outputs = 1;
    const int8_t code[6][4] = {{0, 0, 0, 0},  {0, 1, 1, 0},  {1, 2, 0, 0},
                               {12, 3, 1, 2}, {10, 4, 0, 3}, {2, 0, 4, 0}};
    std::memcpy(p.code, code, sizeof(code));
    p.constants[0] = beta_;
    ops::BroadcastShape shape;
    shape.rank = 2;
    shape.dims[0] = y.dim(0), shape.dims[1] = y.dim(1);
    shape.strides[0][0] = y.dim(1), shape.strides[0][1] = 1;
    NIMBLE_RETURN_IF_ERROR(BroadcastStrides(op_, in[2].shape(), y.shape(), shape.strides[1]));
    ops::ProgramArgs args;
    args.inputs[0] = y.raw_data(), args.inputs[1] = in[2].raw_data();
    args.outputs[0] = y.raw_data();
    return Launch(
        ops::RunProgram(p, args, shape, y.num_elements(), FloatTypeOf(y.dtype()), StreamOf(ctx)),
        op_);
  }

 private:
  const GemmSpec spec_;
  const float beta_;
};

// MatMulSplitK: parts[s] = x[..., slice s of K] * W[slice s of K, :] in f32 or x's type, one
// batched GEMM (the front half of the split-gemm-layernorm pass's pair;
// vm/kernels/cpu/split_gemm.cc).
class MatMulSplitKKernel final : public CudaKernel {
 public:
  explicit MatMulSplitKKernel(int64_t splits) : CudaKernel("MatMulSplitK"), splits_(splits) {}
  absl::Status RunCuda(const KernelContext& ctx, absl::Span<const Tensor> in,
                       absl::Span<Tensor> out) const override {
    if (!Present(in, 0) || !Present(in, 1)) return absl::InvalidArgumentError(op_ + ": x and W");
    const Tensor& x = in[0];
    const Tensor& w = in[1];
    if (!IsGpuFloat(x.dtype()) || w.dtype() != x.dtype() || x.rank() < 1 || w.rank() != 2 ||
        (out[0].dtype() != DType::kF32 && out[0].dtype() != x.dtype())) {
      return absl::InvalidArgumentError(absl::StrCat(op_, " on cuda: x ", x.TypeString(), ", W ",
                                                     w.TypeString(), " -> ", out[0].TypeString(),
                                                     " (f32 or x's type)"));
    }
    const int64_t k = w.dim(0), n = w.dim(1);
    int64_t rows = 1;
    for (int i = 0; i + 1 < x.rank(); ++i) rows *= x.dim(i);
    if (x.dim(x.rank() - 1) != k || k % splits_ != 0 ||
        out[0].num_elements() != splits_ * rows * n) {
      return absl::InvalidArgumentError(absl::StrCat(op_, ": x ", x.TypeString(), " by W ",
                                                     w.TypeString(), " in ", splits_,
                                                     " slices into ", out[0].TypeString()));
    }
    if (out[0].num_elements() == 0) return absl::OkStatus();
    if (k == 0) {  // empty products
      return Launch(cudaMemsetAsync(out[0].raw_data(), 0, out[0].nbytes(), StreamOf(ctx)), op_);
    }
    NIMBLE_ASSIGN_OR_RETURN(cuda::GemmRunner * gemm, cuda_device::Gemm(ctx.device.ordinal));
    // Above kMaxSplitRows rows one slice (vm/kernels/split_gemm_rule.h); the rest stay unwritten.
    const int64_t used = EffectiveSplits(rows, splits_);
    const int64_t ks = k / used;
    cuda::GemmShape shape;
    shape.m = rows, shape.n = n, shape.k = ks, shape.batch = used;
    shape.lda = k, shape.d_f32 = out[0].dtype() == DType::kF32;
    cuda::GemmOperands operands;
    operands.a = x.raw_data(), operands.b = w.raw_data(), operands.d = out[0].raw_data();
    operands.stride_a = ks, operands.stride_b = ks * n, operands.stride_d = rows * n;
    return gemm->Run(shape, GemmPrecisionOf(x.dtype(), false), cuda::GemmEpilogue::kNone, operands,
                     StreamOf(ctx));
  }

 private:
  const int64_t splits_;
};

// ---- Normalisation, attention

int64_t NormAxis(int64_t axis, int rank) { return axis < 0 ? axis + rank : axis; }

class LayerNormKernel final : public CudaKernel {
 public:
  LayerNormKernel(int64_t axis, float epsilon)
      : CudaKernel("LayerNormalization"), axis_(axis), epsilon_(epsilon) {}
  absl::Status RunCuda(const KernelContext& ctx, absl::Span<const Tensor> in,
                       absl::Span<Tensor> out) const override {
    if (!Present(in, 0) || !IsGpuFloat(in[0].dtype()) || in[0].rank() == 0) {
      return absl::InvalidArgumentError(
          "LayerNormalization on cuda: X must be f32, f16 or bf16, rank >= 1");
    }
    const Tensor& x = in[0];
    const int64_t axis = NormAxis(axis_, x.rank());
    if (axis < 0 || axis >= x.rank()) return absl::InvalidArgumentError("LayerNorm: bad axis");
    int64_t rows = 1, cols = 1;
    for (int i = 0; i < x.rank(); ++i) (i < axis ? rows : cols) *= x.dim(i);
    const void* param[2] = {nullptr, nullptr};
    for (int k = 1; k <= 2; ++k) {
      if (!Present(in, k)) continue;
      if (in[k].dtype() != x.dtype() || in[k].num_elements() != cols) {
        return absl::UnimplementedError(
            absl::StrCat("LayerNormalization on cuda: input ", k, " ", in[k].TypeString(),
                         " must hold the normalised shape's ", cols, " elements"));
      }
      param[k - 1] = in[k].raw_data();
    }
    // Y of X's type, or f32 from half X (lower_precision lets a LayerNorm at a model output
    // write f32 instead of going through a Cast).
    if (out[0].shape() != x.shape() ||
        (out[0].dtype() != x.dtype() && out[0].dtype() != DType::kF32)) {
      return absl::InvalidArgumentError(absl::StrCat("LayerNormalization on cuda: output ",
                                                     out[0].TypeString(), " for input ",
                                                     x.TypeString()));
    }
    return Launch(
        ops::LayerNorm(x.raw_data(), param[0], param[1], out[0].raw_data(), rows, cols, epsilon_,
                       FloatTypeOf(x.dtype()), FloatTypeOf(out[0].dtype()), StreamOf(ctx)),
        op_);
  }

 private:
  const int64_t axis_;
  const float epsilon_;
};

// SplitSumLayerNorm(parts [S, ..., N] (f32 or gamma's type), bias?, residual?, gamma, beta?):
// the back half.
class SplitSumLayerNormKernel final : public CudaKernel {
 public:
  explicit SplitSumLayerNormKernel(float epsilon)
      : CudaKernel("SplitSumLayerNorm"), epsilon_(epsilon) {}
  absl::Status RunCuda(const KernelContext& ctx, absl::Span<const Tensor> in,
                       absl::Span<Tensor> out) const override {
    if (!Present(in, 0) || in[0].rank() < 2 || !Present(in, 3) ||
        (in[0].dtype() != DType::kF32 && in[0].dtype() != in[3].dtype())) {
      return absl::InvalidArgumentError(
          op_ + ": partial products [S, ..., N] (f32 or gamma's type) and gamma");
    }
    const Tensor& parts = in[0];
    const DType type = in[3].dtype();
    const Shape y_shape(parts.shape().begin() + 1, parts.shape().end());
    const int64_t n = y_shape.back();
    int64_t rows = 1;
    for (size_t i = 0; i + 1 < y_shape.size(); ++i) rows *= y_shape[i];
    Tensor& y = out[0];
    if (parts.dim(0) < 1) return absl::InvalidArgumentError(op_ + ": no partial products");
    const int64_t splits = EffectiveSplits(rows, parts.dim(0));  // as MatMulSplitK wrote them
    if (type == DType::kF32 || !IsGpuFloat(type) || y.shape() != y_shape ||
        (y.dtype() != type && y.dtype() != DType::kF32)) {
      return absl::InvalidArgumentError(absl::StrCat(op_, " on cuda: gamma ", in[3].TypeString(),
                                                     " (f16 or bf16), output ", y.TypeString(),
                                                     " for ", parts.TypeString()));
    }
    const void* param[5] = {};
    for (int i = 1; i < 5; ++i) {
      if (!Present(in, i)) continue;
      if (in[i].dtype() != type ||
          (i == 2 ? in[i].shape() != y_shape : in[i].num_elements() != n)) {
        return absl::InvalidArgumentError(absl::StrCat(op_, ": input ", i, " ", in[i].TypeString(),
                                                       " for output ", y.TypeString()));
      }
      param[i] = in[i].raw_data();
    }
    return Launch(ops::SplitSumLayerNorm(parts.raw_data(), FloatTypeOf(parts.dtype()),
                                         static_cast<int>(splits), rows * n, param[1], param[2],
                                         param[3], param[4], y.raw_data(), rows, n, epsilon_,
                                         FloatTypeOf(type), FloatTypeOf(y.dtype()), StreamOf(ctx)),
                  op_);
  }

 private:
  const float epsilon_;
};

class SoftmaxKernel final : public CudaKernel {
 public:
  SoftmaxKernel(std::string op, int64_t axis, bool log)
      : CudaKernel(std::move(op)), axis_(axis), log_(log) {}
  absl::Status RunCuda(const KernelContext& ctx, absl::Span<const Tensor> in,
                       absl::Span<Tensor> out) const override {
    if (!Present(in, 0) || !IsGpuFloat(in[0].dtype()) || in[0].rank() == 0 ||
        out[0].dtype() != in[0].dtype()) {
      return absl::InvalidArgumentError(op_ + " on cuda: f32, f16 or bf16 input of rank >= 1");
    }
    const Tensor& x = in[0];
    const int64_t axis = NormAxis(axis_, x.rank());
    if (axis < 0 || axis >= x.rank()) return absl::InvalidArgumentError(op_ + ": bad axis");
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < axis; ++i) outer *= x.dim(i);
    for (int i = static_cast<int>(axis) + 1; i < x.rank(); ++i) inner *= x.dim(i);
    return Launch(ops::Softmax(x.raw_data(), out[0].raw_data(), outer, x.dim(axis), inner, log_,
                               FloatTypeOf(x.dtype()), StreamOf(ctx)),
                  op_);
  }

 private:
  const int64_t axis_;
  const bool log_;
};

class AttentionKernel final : public CudaKernel {
 public:
  AttentionKernel(int64_t q_heads, int64_t kv_heads, bool causal, double scale, double mask_fill,
                  double mask_scale, double mask_offset, bool qkv_packed)
      : CudaKernel("Attention"),
        qkv_packed_(qkv_packed),
        q_heads_(q_heads),
        kv_heads_(kv_heads),
        causal_(causal),
        scale_(scale),
        mask_fill_(mask_fill),
        mask_scale_(mask_scale),
        mask_offset_(mask_offset) {}

  absl::Status RunCuda(const KernelContext& ctx, absl::Span<const Tensor> in,
                       absl::Span<Tensor> out) const override {
    if (in.size() < 3 || in.size() > 4 || out.size() != 1) {
      return absl::UnimplementedError("Attention on cuda: Q, K, V and an optional mask only");
    }
    const Tensor &q = in[0], &k = in[1], &v = in[2];
    if (!q.defined() || !k.defined() || !v.defined() || !IsGpuFloat(q.dtype()) ||
        k.dtype() != q.dtype() || v.dtype() != q.dtype() || out[0].dtype() != q.dtype()) {
      return absl::InvalidArgumentError(
          "Attention on cuda: Q, K, V and Y must share one of f32, f16, bf16");
    }
    if (q.rank() != k.rank() || q.rank() != v.rank() || (q.rank() != 3 && q.rank() != 4)) {
      return absl::InvalidArgumentError("Attention: Q, K, V must all be 3-D or all 4-D");
    }
    ops::AttentionArgs a;
    int64_t k_seq = 0, v_seq = 0, k_dim = 0;
    auto strides3 = [](const Tensor& t, int64_t heads, int64_t* seq, int64_t* dim,
                       int64_t* s) -> absl::Status {
      if (heads <= 0 || t.dim(2) % heads != 0) {
        return absl::InvalidArgumentError("Attention: hidden size does not split into heads");
      }
      *seq = t.dim(1), *dim = t.dim(2) / heads;
      s[0] = t.dim(1) * t.dim(2), s[1] = *dim, s[2] = t.dim(2);
      return absl::OkStatus();
    };
    auto strides4 = [](const Tensor& t, int64_t* heads, int64_t* seq, int64_t* dim, int64_t* s) {
      *heads = t.dim(1), *seq = t.dim(2), *dim = t.dim(3);
      s[2] = t.dim(3), s[1] = t.dim(2) * t.dim(3), s[0] = t.dim(1) * s[1];
    };
    a.batch = q.dim(0);
    int64_t k_offset = 0, v_offset = 0;  // elements: packed QKV's K and V column ranges
    if (q.rank() == 3 && qkv_packed_) {
      a.q_heads = q_heads_, a.kv_heads = kv_heads_;
      const int64_t parts = q_heads_ + 2 * kv_heads_;
      if (parts <= 0 || k.shape() != q.shape() || v.shape() != q.shape() ||
          q.dim(2) % parts != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "Attention: packed QKV ", q.TypeString(), " does not split into ", q_heads_,
            " query and 2 x ", kv_heads_, " key/value heads"));
      }
      a.q_seq = k_seq = v_seq = q.dim(1);
      a.head = a.v_head = k_dim = q.dim(2) / parts;
      for (int64_t* st : {a.q_strides, a.k_strides, a.v_strides}) {
        st[0] = q.dim(1) * q.dim(2), st[1] = a.head, st[2] = q.dim(2);
      }
      k_offset = q_heads_ * a.head, v_offset = (q_heads_ + kv_heads_) * a.head;
      a.y_strides[0] = a.q_seq * a.q_heads * a.v_head, a.y_strides[1] = a.v_head;
      a.y_strides[2] = a.q_heads * a.v_head;
    } else if (q.rank() == 3) {
      a.q_heads = q_heads_, a.kv_heads = kv_heads_;
      NIMBLE_RETURN_IF_ERROR(strides3(q, a.q_heads, &a.q_seq, &a.head, a.q_strides));
      NIMBLE_RETURN_IF_ERROR(strides3(k, a.kv_heads, &k_seq, &k_dim, a.k_strides));
      NIMBLE_RETURN_IF_ERROR(strides3(v, a.kv_heads, &v_seq, &a.v_head, a.v_strides));
      a.y_strides[0] = a.q_seq * a.q_heads * a.v_head, a.y_strides[1] = a.v_head;
      a.y_strides[2] = a.q_heads * a.v_head;
    } else {
      int64_t kh = 0, vh = 0;
      strides4(q, &a.q_heads, &a.q_seq, &a.head, a.q_strides);
      strides4(k, &kh, &k_seq, &k_dim, a.k_strides);
      strides4(v, &vh, &v_seq, &a.v_head, a.v_strides);
      if (kh != vh) return absl::InvalidArgumentError("Attention: K and V heads differ");
      a.kv_heads = kh;
      a.y_strides[2] = a.v_head, a.y_strides[1] = a.q_seq * a.v_head;
      a.y_strides[0] = a.q_heads * a.y_strides[1];
    }
    if (k_dim != a.head || k_seq != v_seq || k.dim(0) != a.batch || v.dim(0) != a.batch ||
        a.kv_heads <= 0 || a.q_heads % a.kv_heads != 0) {
      return absl::InvalidArgumentError(absl::StrCat("Attention: K ", k.TypeString(), " and V ",
                                                     v.TypeString(), " do not match Q ",
                                                     q.TypeString()));
    }
    a.kv_seq = k_seq;
    if (out[0].num_elements() != a.batch * a.q_heads * a.q_seq * a.v_head) {
      return absl::InvalidArgumentError("Attention: output size");
    }
    const size_t elem = DTypeSize(q.dtype());
    a.q = q.raw_data();
    a.k = static_cast<const char*>(k.raw_data()) + k_offset * elem;
    a.v = static_cast<const char*>(v.raw_data()) + v_offset * elem;
    a.y = out[0].raw_data();
    a.type = FloatTypeOf(q.dtype());
    a.scale =
        static_cast<float>(scale_ != 0 ? scale_ : 1.0 / std::sqrt(static_cast<double>(a.head)));
    a.causal = causal_;
    if (causal_ && a.q_seq != a.kv_seq) {
      return absl::UnimplementedError("Attention on cuda: causal with q_seq != kv_seq");
    }
    if (Present(in, 3)) {
      const Tensor& m = in[3];
      const bool integer = m.dtype() == DType::kI64 || m.dtype() == DType::kI32;
      if (m.rank() < 2 || m.rank() > 4 ||
          (m.dtype() != DType::kBool && !IsGpuFloat(m.dtype()) && !integer)) {
        return absl::InvalidArgumentError(absl::StrCat("Attention: attn_mask ", m.TypeString()));
      }
      if (m.dtype() == DType::kBool && (mask_scale_ != 1.0 || mask_offset_ != 0.0)) {
        return absl::InvalidArgumentError(
            "Attention: mask_scale / mask_offset apply to numeric masks, not bool");
      }
      const int64_t want[4] = {a.batch, a.q_heads, a.q_seq, a.kv_seq};
      int64_t stride = 1;
      for (int i = m.rank() - 1; i >= 0; --i) {
        const int axis = 4 - m.rank() + i;
        const int64_t d = m.dim(i);
        if (axis == 3 ? d > want[3] : (d != 1 && d != want[axis])) {
          return absl::InvalidArgumentError(
              absl::StrCat("Attention: attn_mask ", m.TypeString(), " does not broadcast"));
        }
        a.mask_strides[axis] = (d == 1 && axis != 3) ? 0 : stride;
        stride *= d;
      }
      a.mask_keys = m.dim(m.rank() - 1);
      a.mask = m.raw_data();
      a.mask_bool = m.dtype() == DType::kBool;
      a.mask_int_bytes = integer ? static_cast<int>(DTypeSize(m.dtype())) : 0;
      a.mask_type = integer ? ops::FloatType::kF32 : FloatTypeOf(m.dtype());
      a.mask_fill = static_cast<float>(mask_fill_);
      a.mask_scale = static_cast<float>(mask_scale_);
      a.mask_offset = static_cast<float>(mask_offset_);
    }
    return Launch(ops::Attention(a, StreamOf(ctx)), op_);
  }

 private:
  const bool qkv_packed_;
  const int64_t q_heads_, kv_heads_;
  const bool causal_;
  const double scale_, mask_fill_, mask_scale_, mask_offset_;
};

// ---- Data movement

class GatherKernel final : public CudaKernel {
 public:
  explicit GatherKernel(int64_t axis) : CudaKernel("Gather"), axis_(axis) {}
  absl::Status RunCuda(const KernelContext& ctx, absl::Span<const Tensor> in,
                       absl::Span<Tensor> out) const override {
    if (!Present(in, 0) || !Present(in, 1)) return absl::InvalidArgumentError("Gather: inputs");
    const Tensor &data = in[0], &idx = in[1];
    if (idx.dtype() != DType::kI64 && idx.dtype() != DType::kI32) {
      return absl::InvalidArgumentError("Gather on cuda: indices must be i32 or i64");
    }
    const int64_t axis = NormAxis(axis_, data.rank());
    if (axis < 0 || axis >= data.rank()) return absl::InvalidArgumentError("Gather: bad axis");
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < axis; ++i) outer *= data.dim(i);
    for (int i = static_cast<int>(axis) + 1; i < data.rank(); ++i) inner *= data.dim(i);
    if (out[0].num_elements() != outer * idx.num_elements() * inner ||
        out[0].dtype() != data.dtype()) {
      return absl::InvalidArgumentError("Gather: output shape");
    }
    return Launch(
        ops::Gather(data.raw_data(), idx.raw_data(), idx.dtype() == DType::kI64, out[0].raw_data(),
                    outer, data.dim(static_cast<int>(axis)), idx.num_elements(), inner,
                    static_cast<int>(DTypeSize(data.dtype())), ErrorsOf(ctx), StreamOf(ctx)),
        op_);
  }

 private:
  const int64_t axis_;
};

// EmbedLayerNorm (compiler/transforms/fuse_embedding.h): inputs (table_k, ids_k) for k < n,
// then gamma and beta; n = the `embeddings` attribute.
class EmbedLayerNormKernel final : public CudaKernel {
 public:
  EmbedLayerNormKernel(int n, float epsilon)
      : CudaKernel("EmbedLayerNorm"), n_(n), epsilon_(epsilon) {}
  absl::Status RunCuda(const KernelContext& ctx, absl::Span<const Tensor> in,
                       absl::Span<Tensor> out) const override {
    Tensor& y = out[0];
    if (!IsGpuFloat(y.dtype()) || y.rank() < 1) {
      return absl::InvalidArgumentError("EmbedLayerNorm on cuda: f32, f16 or bf16 output");
    }
    const int64_t cols = y.dim(y.rank() - 1);
    const int lead = y.rank() - 1;
    if (lead > ops::kMaxRank) return absl::UnimplementedError("EmbedLayerNorm: rank > 9");
    ops::EmbedArgs a;
    a.count = n_;
    a.rank = lead;
    for (int d = 0; d < lead; ++d) a.dims[d] = y.dim(d);
    const Shape lead_shape(y.shape().begin(), y.shape().end() - 1);  // the ids broadcast to it
    for (int k = 0; k < n_; ++k) {
      const Tensor& table = in[2 * k];
      if (!Present(in, 2 * k) || table.rank() != 2 || table.dim(1) != cols ||
          table.dtype() != y.dtype()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "EmbedLayerNorm: table ", k, " is ", table.TypeString(), ", output ", y.TypeString()));
      }
      a.tables[k] = table.raw_data();
      a.vocab[k] = table.dim(0);
      if (!Present(in, 2 * k + 1)) {  // positions along the last leading dim
        if (lead == 0) return absl::InvalidArgumentError("EmbedLayerNorm: positions of a scalar");
        continue;
      }
      const Tensor& ids = in[2 * k + 1];
      if (ids.dtype() != DType::kI64 && ids.dtype() != DType::kI32) {
        return absl::InvalidArgumentError("EmbedLayerNorm on cuda: ids must be i32 or i64");
      }
      NIMBLE_RETURN_IF_ERROR(BroadcastStrides(op_, ids.shape(), lead_shape, a.id_strides[k]));
      a.ids[k] = ids.raw_data();
      a.ids_i64[k] = ids.dtype() == DType::kI64;
    }
    const void* param[2] = {nullptr, nullptr};
    for (int k = 0; k < 2; ++k) {
      if (!Present(in, 2 * n_ + k)) continue;
      const Tensor& p = in[2 * n_ + k];
      if (p.dtype() != y.dtype() || p.num_elements() != cols) {
        return absl::InvalidArgumentError(
            absl::StrCat("EmbedLayerNorm: ", k == 0 ? "gamma" : "beta", " ", p.TypeString(),
                         " for ", cols, " columns"));
      }
      param[k] = p.raw_data();
    }
    return Launch(ops::EmbedLayerNorm(a, param[0], param[1], y.raw_data(),
                                      y.num_elements() / std::max<int64_t>(cols, 1), cols, epsilon_,
                                      FloatTypeOf(y.dtype()), ErrorsOf(ctx), StreamOf(ctx)),
                  op_);
  }

 private:
  const int n_;
  const float epsilon_;
};

class CastKernel final : public CudaKernel {
 public:
  CastKernel() : CudaKernel("Cast") {}
  absl::Status RunCuda(const KernelContext& ctx, absl::Span<const Tensor> in,
                       absl::Span<Tensor> out) const override {
    if (!Present(in, 0) || out[0].num_elements() != in[0].num_elements()) {
      return absl::InvalidArgumentError("Cast: shapes");
    }
    const int from = static_cast<int>(in[0].dtype()), to = static_cast<int>(out[0].dtype());
    if (!ops::CastSupported(from) || !ops::CastSupported(to)) {
      return absl::UnimplementedError(
          absl::StrCat("Cast on cuda: ", in[0].TypeString(), " to ", out[0].TypeString()));
    }
    if (from == to) {
      NIMBLE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out[0].raw_data(), in[0].raw_data(),
                                                  in[0].nbytes(), cudaMemcpyDeviceToDevice,
                                                  StreamOf(ctx)));
      return absl::OkStatus();
    }
    return Launch(ops::Cast(in[0].raw_data(), from, out[0].raw_data(), to, in[0].num_elements(),
                            StreamOf(ctx)),
                  op_);
  }
};

class TransposeKernel final : public CudaKernel {
 public:
  explicit TransposeKernel(std::vector<int64_t> perm)
      : CudaKernel("Transpose"), perm_(std::move(perm)) {}
  absl::Status RunCuda(const KernelContext& ctx, absl::Span<const Tensor> in,
                       absl::Span<Tensor> out) const override {
    if (!Present(in, 0)) return absl::InvalidArgumentError("Transpose: input");
    const Tensor& x = in[0];
    const int rank = x.rank();
    if (rank > ops::kMaxRank) return absl::UnimplementedError("Transpose on cuda: rank > 8");
    std::vector<int64_t> perm = perm_;
    if (perm.empty()) {
      for (int i = rank - 1; i >= 0; --i) perm.push_back(i);
    }
    if (static_cast<int>(perm.size()) != rank) {
      return absl::InvalidArgumentError("Transpose: perm length");
    }
    int64_t in_strides[ops::kMaxRank], strides[ops::kMaxRank], dims[ops::kMaxRank];
    int64_t s = 1;
    for (int d = rank - 1; d >= 0; --d) {
      in_strides[d] = s;
      s *= x.dim(d);
    }
    for (int d = 0; d < rank; ++d) {
      const int64_t p = perm[d] < 0 ? perm[d] + rank : perm[d];
      if (p < 0 || p >= rank) return absl::InvalidArgumentError("Transpose: perm out of range");
      dims[d] = x.dim(static_cast<int>(p));
      strides[d] = in_strides[p];
    }
    return Launch(
        ops::Transpose(x.raw_data(), out[0].raw_data(), rank, dims, strides, x.num_elements(),
                       static_cast<int>(DTypeSize(x.dtype())), StreamOf(ctx)),
        op_);
  }

 private:
  const std::vector<int64_t> perm_;
};

// Concat and Split copy blocks of `outer` rows with cudaMemcpy2DAsync: along `axis` a tensor of
// shape [outer, len, inner] is `outer` rows of len * inner elements, at a pitch of the whole
// tensor's axis length times inner. Output shapes come from the compiler's plan; the kernels
// check them against the inputs.
struct AxisBlocks {
  int64_t outer = 1, inner = 1;
};

absl::StatusOr<AxisBlocks> BlocksAround(const std::string& op, const Tensor& whole, int64_t axis,
                                        const Tensor& part) {
  if (part.rank() != whole.rank() || part.dtype() != whole.dtype()) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", part.TypeString(), " ", ShapeToString(part.shape()), " against ",
                     whole.TypeString(), " ", ShapeToString(whole.shape())));
  }
  AxisBlocks b;
  for (int d = 0; d < whole.rank(); ++d) {
    if (d != axis && part.dim(d) != whole.dim(d)) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": dim ", d, " of ",
                                                     ShapeToString(part.shape()), " differs from ",
                                                     ShapeToString(whole.shape())));
    }
    if (d < axis) b.outer *= whole.dim(d);
    if (d > axis) b.inner *= whole.dim(d);
  }
  return b;
}

// Copies `outer` rows of `width` bytes between pitched buffers on the stream.
absl::Status CopyRows(void* dst, int64_t dpitch, const void* src, int64_t spitch, int64_t width,
                      int64_t outer, cudaStream_t stream, const std::string& op) {
  if (width == 0 || outer == 0) return absl::OkStatus();
  if (outer == 1 || (dpitch == width && spitch == width)) {
    return Launch(cudaMemcpyAsync(dst, src, static_cast<size_t>(width * outer),
                                  cudaMemcpyDeviceToDevice, stream),
                  op);
  }
  return Launch(cudaMemcpy2DAsync(dst, static_cast<size_t>(dpitch), src,
                                  static_cast<size_t>(spitch), static_cast<size_t>(width),
                                  static_cast<size_t>(outer), cudaMemcpyDeviceToDevice, stream),
                op);
}

class ConcatKernel final : public CudaKernel {
 public:
  explicit ConcatKernel(int64_t axis) : CudaKernel("Concat"), axis_(axis) {}
  absl::Status RunCuda(const KernelContext& ctx, absl::Span<const Tensor> in,
                       absl::Span<Tensor> out) const override {
    Tensor& y = out[0];
    const int64_t axis = NormAxis(axis_, y.rank());
    if (axis < 0 || axis >= y.rank()) return absl::InvalidArgumentError("Concat: bad axis");
    const int64_t bytes = DTypeSize(y.dtype());
    int64_t offset = 0;
    for (size_t i = 0; i < in.size(); ++i) {
      if (!Present(in, i)) continue;
      NIMBLE_ASSIGN_OR_RETURN(AxisBlocks b, BlocksAround(op_, y, axis, in[i]));
      const int64_t len = in[i].dim(static_cast<int>(axis));
      if (offset + len > y.dim(static_cast<int>(axis))) {
        return absl::InvalidArgumentError("Concat: inputs longer than the output along axis");
      }
      NIMBLE_RETURN_IF_ERROR(CopyRows(static_cast<char*>(y.raw_data()) + offset * b.inner * bytes,
                                      y.dim(static_cast<int>(axis)) * b.inner * bytes,
                                      in[i].raw_data(), len * b.inner * bytes,
                                      len * b.inner * bytes, b.outer, StreamOf(ctx), op_));
      offset += len;
    }
    if (offset != y.dim(static_cast<int>(axis))) {
      return absl::InvalidArgumentError("Concat: inputs shorter than the output along axis");
    }
    return absl::OkStatus();
  }

 private:
  const int64_t axis_;
};

// The split sizes (input 1, or the num_outputs attribute) are already in the outputs' shapes.
class SplitKernel final : public CudaKernel {
 public:
  explicit SplitKernel(int64_t axis) : CudaKernel("Split", {1}), axis_(axis) {}
  absl::Status RunCuda(const KernelContext& ctx, absl::Span<const Tensor> in,
                       absl::Span<Tensor> out) const override {
    if (!Present(in, 0)) return absl::InvalidArgumentError("Split: input");
    const Tensor& x = in[0];
    const int64_t axis = NormAxis(axis_, x.rank());
    if (axis < 0 || axis >= x.rank()) return absl::InvalidArgumentError("Split: bad axis");
    const int64_t bytes = DTypeSize(x.dtype());
    int64_t offset = 0;
    for (Tensor& y : out) {
      if (!y.defined()) return absl::InternalError("Split on cuda: an output is not allocated");
      NIMBLE_ASSIGN_OR_RETURN(AxisBlocks b, BlocksAround(op_, x, axis, y));
      const int64_t len = y.dim(static_cast<int>(axis));
      if (offset + len > x.dim(static_cast<int>(axis))) {
        return absl::InvalidArgumentError("Split: outputs longer than the input along axis");
      }
      NIMBLE_RETURN_IF_ERROR(
          CopyRows(y.raw_data(), len * b.inner * bytes,
                   static_cast<const char*>(x.raw_data()) + offset * b.inner * bytes,
                   x.dim(static_cast<int>(axis)) * b.inner * bytes, len * b.inner * bytes, b.outer,
                   StreamOf(ctx), op_));
      offset += len;
    }
    if (offset != x.dim(static_cast<int>(axis))) {
      return absl::InvalidArgumentError("Split: outputs shorter than the input along axis");
    }
    return absl::OkStatus();
  }

 private:
  const int64_t axis_;
};

class NotKernel final : public CudaKernel {
 public:
  NotKernel() : CudaKernel("Not") {}
  absl::Status RunCuda(const KernelContext& ctx, absl::Span<const Tensor> in,
                       absl::Span<Tensor> out) const override {
    if (!Present(in, 0) || in[0].dtype() != DType::kBool || out[0].dtype() != DType::kBool ||
        out[0].num_elements() != in[0].num_elements()) {
      return absl::InvalidArgumentError("Not on cuda: a bool input and output of one shape");
    }
    return Launch(ops::LogicalNot(in[0].data<bool>(), out[0].data<bool>(), in[0].num_elements(),
                                  StreamOf(ctx)),
                  op_);
  }
};

class WhereKernel final : public CudaKernel {
 public:
  WhereKernel() : CudaKernel("Where") {}
  absl::Status RunCuda(const KernelContext& ctx, absl::Span<const Tensor> in,
                       absl::Span<Tensor> out) const override {
    if (in.size() != 3 || !Present(in, 0) || !Present(in, 1) || !Present(in, 2) ||
        in[0].dtype() != DType::kBool ||
        (DTypeSize(in[1].dtype()) != 4 && DTypeSize(in[1].dtype()) != 2) ||
        in[1].dtype() != in[2].dtype() || out[0].dtype() != in[1].dtype()) {
      return absl::InvalidArgumentError("Where on cuda: bool condition, 2- or 4-byte x and y");
    }
    const Shape& o = out[0].shape();
    if (o.size() > static_cast<size_t>(ops::kMaxRank)) {
      return absl::UnimplementedError("Where on cuda: rank > 8");
    }
    ops::BroadcastShape shape;
    shape.rank = static_cast<int>(o.size());
    for (int d = 0; d < shape.rank; ++d) shape.dims[d] = o[d];
    for (int k = 0; k < 3; ++k) {
      NIMBLE_RETURN_IF_ERROR(BroadcastStrides(op_, in[k].shape(), o, shape.strides[k]));
    }
    return Launch(ops::Where(in[0].data<bool>(), in[1].raw_data(), in[2].raw_data(),
                             out[0].raw_data(), shape, out[0].num_elements(),
                             static_cast<int>(DTypeSize(in[1].dtype())), StreamOf(ctx)),
                  op_);
  }
};

// ---- Registration

// Every present input and every output is the same one of f32 / f16 / bf16.
bool AllSameFloat(absl::Span<const DType> ins, absl::Span<const DType> outs) {
  if (outs.empty() || !IsGpuFloat(outs[0])) return false;
  for (DType d : ins) {
    if (d != outs[0] && d != DType::kInvalid) return false;
  }
  for (DType d : outs) {
    if (d != outs[0]) return false;
  }
  return true;
}

template <typename K, typename... Args>
absl::StatusOr<KernelPtr> Make(Args&&... args) {
  return KernelPtr(std::make_unique<K>(std::forward<Args>(args)...));
}

}  // namespace

void RegisterCudaLstm(KernelRegistry& r);  // lstm.cc

void RegisterCudaKernels(KernelRegistry& r) {
  r.SetDeviceApi(DeviceType::kCUDA, cuda_device::Api());
  auto reg = [&r](const std::string& name, KernelFactory factory, KernelTraits traits) {
    r.Register(name, DeviceType::kCUDA, std::move(factory));
    r.SetTraits(name, DeviceType::kCUDA, std::move(traits));
  };
  KernelTraits f32;  // f32, f16 or bf16, all alike
  f32.supports = [](absl::Span<const DType> in, absl::Span<const DType> out, const Attributes&) {
    return AllSameFloat(in, out);
  };

  reg(
      "FusedElementwise",
      [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
        NIMBLE_ASSIGN_OR_RETURN(ops::Program p, ParseProgram(a));
        return Make<ProgramKernel>("FusedElementwise", p);
      },
      KernelTraits{
          {}, [](absl::Span<const DType> in, absl::Span<const DType> out, const Attributes& a) {
            return AllSameFloat(in, out) && in.size() <= ops::kMaxProgramInputs &&
                   out.size() <= ops::kMaxProgramInputs && ParseProgram(a).ok();
          }});
  const std::pair<const char*, FusedOp> binary[] = {{"Add", FusedOp::kAdd},
                                                    {"Sub", FusedOp::kSub},
                                                    {"Mul", FusedOp::kMul},
                                                    {"Div", FusedOp::kDiv},
                                                    {"Pow", FusedOp::kPow}};
  for (const auto& [name, op] : binary) {
    const FusedOp fop = op;
    const std::string n = name;
    reg(
        n, [n, fop](const Attributes&) { return Make<ProgramKernel>(n, Binary(fop)); }, f32);
  }
  const std::pair<const char*, FusedOp> unary[] = {
      {"Neg", FusedOp::kNeg},         {"Exp", FusedOp::kExp},
      {"Log", FusedOp::kLog},         {"Sqrt", FusedOp::kSqrt},
      {"Tanh", FusedOp::kTanh},       {"Erf", FusedOp::kErf},
      {"Sigmoid", FusedOp::kSigmoid}, {"Relu", FusedOp::kRelu},
      {"Abs", FusedOp::kAbs},         {"Reciprocal", FusedOp::kReciprocal}};
  for (const auto& [name, op] : unary) {
    const FusedOp fop = op;
    const std::string n = name;
    reg(
        n, [n, fop](const Attributes&) { return Make<ProgramKernel>(n, Unary(fop)); }, f32);
  }
  reg(
      "Gelu",
      [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
        const std::string approx = a.GetOr<std::string>("approximate", "none");
        if (approx != "none" && approx != "tanh") {
          return absl::InvalidArgumentError("Gelu: approximate must be none or tanh");
        }
        return Make<ProgramKernel>("Gelu",
                                   Unary(approx == "tanh" ? FusedOp::kGeluTanh : FusedOp::kGelu));
      },
      f32);

  auto matmul_traits = KernelTraits{
      {}, [](absl::Span<const DType> in, absl::Span<const DType> out, const Attributes&) {
        return AllSameFloat(in, out);
      }};
  reg(
      "MatMul",
      [](const Attributes& a) {
        GemmSpec spec;
        spec.tf32 = a.GetOr<std::string>("precision", "") == "tf32";
        return Make<MatMulKernel>("MatMul", spec);
      },
      matmul_traits);
  reg(
      "FusedMatMul",
      [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
        GemmSpec spec;
        spec.trans_b = a.GetOr<int64_t>("transB", 0) != 0;
        spec.alpha = static_cast<float>(a.GetOr<double>("alpha", 1.0));
        spec.tf32 = a.GetOr<std::string>("precision", "") == "tf32";
        NIMBLE_ASSIGN_OR_RETURN(spec.act, ParseAct(a.GetOr<std::string>("activation", "")));
        return Make<MatMulKernel>("FusedMatMul", spec);
      },
      matmul_traits);
  reg(
      "Gemm",
      [](const Attributes& a) {
        GemmSpec spec;
        spec.trans_a = a.GetOr<int64_t>("transA", 0) != 0;
        spec.trans_b = a.GetOr<int64_t>("transB", 0) != 0;
        spec.alpha = static_cast<float>(a.GetOr<double>("alpha", 1.0));
        spec.tf32 = a.GetOr<std::string>("precision", "") == "tf32";
        return Make<GemmKernel>(spec, static_cast<float>(a.GetOr<double>("beta", 1.0)));
      },
      matmul_traits);
  reg(
      "MatMulSplitK",
      [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
        const int64_t splits = a.GetOr<int64_t>("splits", 1);
        if (splits < 1 || splits > ops::kMaxSplitSumParts) {
          return absl::InvalidArgumentError(absl::StrCat("MatMulSplitK on cuda: splits ", splits,
                                                         " is not 1..", ops::kMaxSplitSumParts));
        }
        return Make<MatMulSplitKKernel>(splits);
      },
      KernelTraits{{},
                   [](absl::Span<const DType> in, absl::Span<const DType> out, const Attributes&) {
                     return in.size() == 2 && out.size() == 1 && IsGpuFloat(in[0]) &&
                            in[1] == in[0] && (out[0] == DType::kF32 || out[0] == in[0]);
                   }});
  reg(
      "SplitSumLayerNorm",
      [](const Attributes& a) {
        return Make<SplitSumLayerNormKernel>(static_cast<float>(a.GetOr<double>("epsilon", 1e-5)));
      },
      KernelTraits{{},
                   [](absl::Span<const DType> in, absl::Span<const DType> out, const Attributes&) {
                     if (in.size() < 4 || out.size() != 1 ||
                         (in[3] != DType::kF16 && in[3] != DType::kBF16) ||
                         (in[0] != DType::kF32 && in[0] != in[3]) ||
                         (out[0] != in[3] && out[0] != DType::kF32)) {
                       return false;
                     }
                     for (size_t i = 1; i < in.size(); ++i) {
                       if (in[i] != DType::kInvalid && in[i] != in[3]) return false;
                     }
                     return true;
                   }});
  reg(
      "LayerNormalization",
      [](const Attributes& a) {
        return Make<LayerNormKernel>(a.GetOr<int64_t>("axis", -1),
                                     static_cast<float>(a.GetOr<double>("epsilon", 1e-5)));
      },
      KernelTraits{{},
                   [](absl::Span<const DType> in, absl::Span<const DType> out, const Attributes&) {
                     if (out.size() != 1) return false;
                     if (AllSameFloat(in, out)) return true;
                     // half in, f32 out
                     if (in.empty() || in[0] == DType::kF32 || out[0] != DType::kF32) return false;
                     const DType x[] = {in[0]};
                     return AllSameFloat(in, x);
                   }});
  reg(
      "EmbedLayerNorm",
      [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
        const int64_t n = a.GetOr<int64_t>("embeddings", 0);
        if (n < 1 || n > ops::kMaxEmbeddings) {
          return absl::InvalidArgumentError(absl::StrCat(
              "EmbedLayerNorm on cuda: 1 to ", ops::kMaxEmbeddings, " embeddings, got ", n));
        }
        return Make<EmbedLayerNormKernel>(static_cast<int>(n),
                                          static_cast<float>(a.GetOr<double>("epsilon", 1e-5)));
      },
      KernelTraits{
          {}, [](absl::Span<const DType> in, absl::Span<const DType> out, const Attributes& a) {
            const int64_t n = a.GetOr<int64_t>("embeddings", 0);
            if (n < 1 || n > ops::kMaxEmbeddings || out.size() != 1 || !IsGpuFloat(out[0]) ||
                static_cast<int64_t>(in.size()) < 2 * n - 1) {
              return false;
            }
            for (int64_t k = 0; k < n; ++k) {
              if (in[2 * k] != out[0]) return false;
              // kInvalid (or dropped at the end): positions
              const DType ids =
                  2 * k + 1 < static_cast<int64_t>(in.size()) ? in[2 * k + 1] : DType::kInvalid;
              if (ids != DType::kI64 && ids != DType::kI32 && ids != DType::kInvalid) return false;
            }
            for (size_t k = 2 * n; k < in.size(); ++k) {
              if (in[k] != DType::kInvalid && in[k] != out[0]) return false;
            }
            return true;
          }});
  // Softmax's meaning of axis changed in opset 13; both agree on the last axis.
  KernelTraits last_axis{
      {}, [](absl::Span<const DType> in, absl::Span<const DType> out, const Attributes& a) {
        return AllSameFloat(in, out) && a.GetOr<int64_t>("axis", 0) == -1;
      }};
  reg(
      "Softmax",
      [](const Attributes& a) {
        return Make<SoftmaxKernel>("Softmax", a.GetOr<int64_t>("axis", -1), false);
      },
      last_axis);
  reg(
      "LogSoftmax",
      [](const Attributes& a) {
        return Make<SoftmaxKernel>("LogSoftmax", a.GetOr<int64_t>("axis", -1), true);
      },
      last_axis);
  reg(
      "Attention",
      [](const Attributes& a) {
        return Make<AttentionKernel>(
            a.GetOr<int64_t>("q_num_heads", 0), a.GetOr<int64_t>("kv_num_heads", 0),
            a.GetOr<int64_t>("is_causal", 0) != 0, a.GetOr<double>("scale", 0.0),
            a.GetOr<double>("mask_fill", -std::numeric_limits<double>::infinity()),
            a.GetOr<double>("mask_scale", 1.0), a.GetOr<double>("mask_offset", 0.0),
            a.GetOr<int64_t>("qkv_packed", 0) != 0);
      },
      KernelTraits{
          {}, [](absl::Span<const DType> in, absl::Span<const DType> out, const Attributes& a) {
            if (in.size() < 3 || in.size() > 4 || out.size() != 1) return false;
            if (a.GetOr<double>("softcap", 0.0) != 0.0) return false;
            if (a.GetOr<int64_t>("qk_matmul_output_mode", 0) != 0) return false;
            if (a.GetOr<int64_t>("is_causal", 0) != 0) return false;
            if (!IsGpuFloat(in[0])) return false;
            for (int i = 1; i < 3; ++i) {
              if (in[i] != in[0]) return false;
            }
            return out[0] == in[0] && (in.size() == 3 || in[3] == DType::kF32 || in[3] == in[0] ||
                                       in[3] == DType::kBool || in[3] == DType::kI64 ||
                                       in[3] == DType::kI32 || in[3] == DType::kInvalid);
          }});
  reg(
      "Gather", [](const Attributes& a) { return Make<GatherKernel>(a.GetOr<int64_t>("axis", 0)); },
      KernelTraits{{}, [](absl::Span<const DType> in, absl::Span<const DType>, const Attributes&) {
                     return in.size() == 2 && (in[1] == DType::kI64 || in[1] == DType::kI32) &&
                            in[0] != DType::kString && DTypeSize(in[0]) >= 1 &&
                            DTypeSize(in[0]) <= 8;
                   }});
  reg(
      "Cast", [](const Attributes&) { return Make<CastKernel>(); },
      KernelTraits{{},
                   [](absl::Span<const DType> in, absl::Span<const DType> out, const Attributes&) {
                     return in.size() == 1 && out.size() == 1 &&
                            ops::CastSupported(static_cast<int>(in[0])) &&
                            ops::CastSupported(static_cast<int>(out[0]));
                   }});
  reg(
      "Transpose",
      [](const Attributes& a) {
        return Make<TransposeKernel>(a.GetOr<std::vector<int64_t>>("perm", {}));
      },
      KernelTraits{{}, [](absl::Span<const DType> in, absl::Span<const DType>, const Attributes&) {
                     return in.size() == 1 && in[0] != DType::kString;
                   }});
  reg(
      "Where", [](const Attributes&) { return Make<WhereKernel>(); },
      KernelTraits{{}, [](absl::Span<const DType> in, absl::Span<const DType>, const Attributes&) {
                     return in.size() == 3 && in[0] == DType::kBool && in[1] == in[2] &&
                            in[1] != DType::kString &&
                            (DTypeSize(in[1]) == 4 || DTypeSize(in[1]) == 2);
                   }});
  auto not_string = [](absl::Span<const DType> in, absl::Span<const DType> out, const Attributes&) {
    if (in.empty() || in[0] == DType::kString) return false;
    for (DType d : out) {
      if (d != in[0]) return false;
    }
    return true;
  };
  reg(
      "Concat", [](const Attributes& a) { return Make<ConcatKernel>(a.GetOr<int64_t>("axis", 0)); },
      KernelTraits{{},
                   [not_string](absl::Span<const DType> in, absl::Span<const DType> out,
                                const Attributes& a) {
                     for (DType d : in) {
                       if (d != in[0] && d != DType::kInvalid) return false;
                     }
                     return not_string(in, out, a);
                   }});
  reg(
      "Split", [](const Attributes& a) { return Make<SplitKernel>(a.GetOr<int64_t>("axis", 0)); },
      KernelTraits{{1}, not_string});
  reg(
      "Not", [](const Attributes&) { return Make<NotKernel>(); },
      KernelTraits{{},
                   [](absl::Span<const DType> in, absl::Span<const DType> out, const Attributes&) {
                     return in.size() == 1 && in[0] == DType::kBool && out.size() == 1 &&
                            out[0] == DType::kBool;
                   }});
  RegisterCudaLstm(r);
}

}  // namespace nimble::vm
