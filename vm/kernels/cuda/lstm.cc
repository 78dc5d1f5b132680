// The VM's CUDA LSTM (ONNX LSTM on DeviceType::kCUDA): the input projection of every step and
// direction as one GEMM on vm/cuda's GemmRunner (gates = X · W^T, W of both directions read as
// one [dirs * 4H, I] matrix), then lstm.cu's persistent cooperative recurrence kernel, which adds
// the biases and runs every direction at once. Scratch (the projection, the state buffers) comes
// from ctx.allocator, stream-ordered, so the kernel also runs inside a CUDA-graph capture.
//
// Handled: f32, the default activations (sigmoid, tanh, tanh), forward / reverse /
// bidirectional, layouts 0 and 1, optional B, sequence_lens (i32 or i64, read on the device;
// lengths outside [0, seq] are clamped, where the CPU kernel reports an error), initial_h,
// initial_c, peepholes, any subset of Y, Y_h, Y_c. The traits refuse clip, input_forget, other
// activations and other dtypes: the compiler leaves such nodes to the CPU kernel.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vm/cuda/cuda_status.h"
#include "vm/cuda/gemm.h"
#include "vm/kernels/cuda/cuda_device.h"
#include "vm/kernels/cuda/lstm_cuda.h"
#include "vm/kernels/cuda/ops_cuda.h"
#include "vm/kernels/kernel.h"

namespace nimble::vm {
namespace {

using KernelPtr = std::unique_ptr<Kernel>;

bool Present(absl::Span<const Tensor> t, size_t i) { return i < t.size() && t[i].defined(); }

struct LstmConfig {
  int dirs = 1;
  bool reverse = false;     // direction = "reverse"
  int64_t hidden_size = 0;  // 0: from R
  int layout = 0;
};

// The attributes the CUDA kernel runs; kUnimplemented for what only the CPU kernel does.
absl::StatusOr<LstmConfig> ParseConfig(const Attributes& a) {
  LstmConfig c;
  const std::string direction = a.GetOr<std::string>("direction", "forward");
  if (direction == "bidirectional") {
    c.dirs = 2;
  } else if (direction == "reverse") {
    c.reverse = true;
  } else if (direction != "forward") {
    return absl::InvalidArgumentError(absl::StrCat("LSTM: unknown direction '", direction, "'"));
  }
  if (a.Has("clip")) return absl::UnimplementedError("LSTM on cuda: clip");
  if (a.GetOr<int64_t>("input_forget", 0) != 0) {
    return absl::UnimplementedError("LSTM on cuda: input_forget");
  }
  const int64_t layout = a.GetOr<int64_t>("layout", 0);
  if (layout != 0 && layout != 1) return absl::InvalidArgumentError("LSTM: layout must be 0 or 1");
  c.layout = static_cast<int>(layout);
  c.hidden_size = a.GetOr<int64_t>("hidden_size", 0);
  // Sigmoid / Tanh take no alpha or beta, so activation_alpha / activation_beta do not matter.
  const std::vector<std::string> names =
      a.GetOr<std::vector<std::string>>("activations", std::vector<std::string>{});
  if (!names.empty()) {
    if (names.size() != 3 && names.size() != static_cast<size_t>(3 * c.dirs)) {
      return absl::InvalidArgumentError(
          absl::StrCat("LSTM: expected ", 3 * c.dirs, " activations, got ", names.size()));
    }
    for (size_t i = 0; i < names.size(); ++i) {
      const std::string want = i % 3 == 0 ? "sigmoid" : "tanh";
      if (absl::AsciiStrToLower(names[i]) != want) {
        return absl::UnimplementedError(
            absl::StrCat("LSTM on cuda: activation '", names[i], "' (only Sigmoid, Tanh, Tanh)"));
      }
    }
  }
  return c;
}

class CudaLstmKernel final : public Kernel {
 public:
  explicit CudaLstmKernel(LstmConfig config) : c_(config) {}

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    NIMBLE_ASSIGN_OR_RETURN(Dims d, Plan(inputs));
    for (size_t i = 0; i < output_shapes.size(); ++i) output_shapes[i] = OutShape(d, i);
    return absl::OkStatus();
  }

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(Dims d, Plan(inputs));
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (inputs[i].defined() && inputs[i].device().type != DeviceType::kCUDA) {
        return absl::InternalError(
            absl::StrCat("LSTM on cuda: input ", i, " is on ", inputs[i].device().ToString()));
      }
    }
    if (outputs.size() > 3) {
      return absl::InvalidArgumentError(
          absl::StrCat("LSTM: expected at most 3 outputs, got ", outputs.size()));
    }
    for (size_t i = 0; i < outputs.size(); ++i) {
      const Tensor& o = outputs[i];
      if (!o.defined()) continue;
      if (o.device().type != DeviceType::kCUDA) {
        return absl::InternalError(
            absl::StrCat("LSTM on cuda: output ", i, " is on ", o.device().ToString()));
      }
      if (o.dtype() != DType::kF32 || o.shape() != OutShape(d, i)) {
        return absl::InvalidArgumentError(absl::StrCat("LSTM: output ", i, " is ", o.TypeString(),
                                                       ", expected f32",
                                                       ShapeToString(OutShape(d, i))));
      }
    }
    if (d.batch == 0 || d.hidden == 0) return absl::OkStatus();  // every output is empty
    if (ctx.allocator == nullptr || ctx.allocator->device().type != DeviceType::kCUDA) {
      return absl::InternalError("LSTM on cuda: no device allocator for scratch");
    }
    const cudaStream_t stream = static_cast<cudaStream_t>(ctx.stream);
    const int64_t h = d.hidden, rows = d.seq * d.batch, gate_cols = c_.dirs * 4 * h;

    // gates[rows, dirs * 4H] = X[rows, I] · W[dirs * 4H, I]^T, rows in X's order (either layout).
    Tensor gates;
    if (rows > 0) {
      NIMBLE_ASSIGN_OR_RETURN(gates, Tensor::Empty(DType::kF32, {rows, gate_cols}, ctx.allocator));
      if (d.input == 0) {
        NIMBLE_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(gates.raw_data(), 0, gates.nbytes(), stream));
      } else {
        NIMBLE_ASSIGN_OR_RETURN(cuda::GemmRunner * gemm, cuda_device::Gemm(ctx.device.ordinal));
        cuda::GemmShape shape;
        shape.m = rows, shape.n = gate_cols, shape.k = d.input, shape.trans_b = true;
        cuda::GemmOperands operands;
        operands.a = inputs[0].raw_data();
        operands.b = inputs[1].raw_data();
        operands.d = gates.raw_data();
        NIMBLE_RETURN_IF_ERROR(gemm->Run(shape, cuda::GemmPrecision::kF32,
                                         cuda::GemmEpilogue::kNone, operands, stream));
      }
    }
    NIMBLE_ASSIGN_OR_RETURN(
        Tensor workspace,
        Tensor::Empty(DType::kF32, {cuda_ops::LstmWorkspaceFloats(d.batch, h, c_.dirs)},
                      ctx.allocator));

    cuda_ops::LstmArgs a;
    a.seq = d.seq, a.batch = d.batch, a.hidden = h;
    a.dirs = c_.dirs, a.reverse = c_.reverse, a.layout = c_.layout;
    a.gates = rows > 0 ? gates.data<float>() : nullptr;
    a.r = inputs[2].data<float>();
    auto in = [&](size_t i) { return Present(inputs, i) ? inputs[i].data<float>() : nullptr; };
    auto out = [&](size_t i) {
      return i < outputs.size() && outputs[i].defined() ? outputs[i].data<float>() : nullptr;
    };
    a.bias = in(3);
    if (Present(inputs, 4)) {
      a.seq_lens = inputs[4].raw_data();
      a.seq_lens_i64 = inputs[4].dtype() == DType::kI64;
      a.errors = reinterpret_cast<cuda_ops::ErrorRecord*>(ctx.device_errors);
    }
    a.initial_h = in(5), a.initial_c = in(6), a.peepholes = in(7);
    a.y = out(0), a.y_h = out(1), a.y_c = out(2);
    a.workspace = workspace.data<float>();
    // The scratch tensors are freed (stream-ordered, after the kernel) when they go out of scope.
    return cuda::CudaStatus(cuda_ops::LstmRecurrence(a, stream), "LSTM on cuda");
  }

 private:
  struct Dims {
    int64_t seq = 0, batch = 0, input = 0, hidden = 0;
  };

  Shape StateShape(const Dims& d) const {
    return c_.layout == 0 ? Shape{c_.dirs, d.batch, d.hidden} : Shape{d.batch, c_.dirs, d.hidden};
  }
  // Y, Y_h, Y_c.
  Shape OutShape(const Dims& d, size_t i) const {
    if (i > 0) return StateShape(d);
    return c_.layout == 0 ? Shape{d.seq, c_.dirs, d.batch, d.hidden}
                          : Shape{d.batch, d.seq, c_.dirs, d.hidden};
  }

  // The CPU kernel's checks (vm/kernels/cpu/rnn.cc), plus the sequence_lens dtype.
  absl::StatusOr<Dims> Plan(absl::Span<const Tensor> inputs) const {
    if (inputs.size() < 3 || inputs.size() > 8) {
      return absl::InvalidArgumentError(
          absl::StrCat("LSTM: expected 3 to 8 inputs, got ", inputs.size()));
    }
    const char* names[3] = {"X", "W", "R"};
    for (size_t i = 0; i < 3; ++i) {
      if (!inputs[i].defined()) {
        return absl::InvalidArgumentError(absl::StrCat("LSTM: input ", names[i], " is missing"));
      }
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (i != 4 && inputs[i].defined() && inputs[i].dtype() != DType::kF32) {
        return absl::InvalidArgumentError(
            absl::StrCat("LSTM on cuda: input ", i, " must be f32, got ", inputs[i].TypeString()));
      }
    }
    const Tensor &x = inputs[0], &w = inputs[1], &r = inputs[2];
    if (x.rank() != 3 || w.rank() != 3 || r.rank() != 3) {
      return absl::InvalidArgumentError(absl::StrCat("LSTM: X, W and R must be 3-D, got ",
                                                     x.TypeString(), ", ", w.TypeString(), ", ",
                                                     r.TypeString()));
    }
    Dims d;
    d.seq = c_.layout == 0 ? x.dim(0) : x.dim(1);
    d.batch = c_.layout == 0 ? x.dim(1) : x.dim(0);
    d.input = x.dim(2);
    d.hidden = r.dim(2);
    const int64_t h = d.hidden;
    if ((c_.hidden_size > 0 && c_.hidden_size != h) || w.dim(0) != c_.dirs || w.dim(1) != 4 * h ||
        w.dim(2) != d.input || r.dim(0) != c_.dirs || r.dim(1) != 4 * h) {
      return absl::InvalidArgumentError(
          absl::StrCat("LSTM: W ", w.TypeString(), " and R ", r.TypeString(), " do not fit X ",
                       x.TypeString(), " with ", c_.dirs, " direction(s)"));
    }
    auto expect = [&](size_t i, const Shape& shape, const char* name) -> absl::Status {
      if (Present(inputs, i) && inputs[i].shape() != shape) {
        return absl::InvalidArgumentError(absl::StrCat(
            "LSTM: ", name, " is ", inputs[i].TypeString(), ", expected ", ShapeToString(shape)));
      }
      return absl::OkStatus();
    };
    NIMBLE_RETURN_IF_ERROR(expect(3, {c_.dirs, 8 * h}, "B"));
    if (Present(inputs, 4)) {
      const Tensor& lens = inputs[4];
      if (lens.num_elements() != d.batch ||
          (lens.dtype() != DType::kI32 && lens.dtype() != DType::kI64)) {
        return absl::InvalidArgumentError(absl::StrCat("LSTM: sequence_lens ", lens.TypeString(),
                                                       " must be i32 or i64 of batch ", d.batch));
      }
    }
    NIMBLE_RETURN_IF_ERROR(expect(5, StateShape(d), "initial_h"));
    NIMBLE_RETURN_IF_ERROR(expect(6, StateShape(d), "initial_c"));
    NIMBLE_RETURN_IF_ERROR(expect(7, {c_.dirs, 3 * h}, "P"));
    return d;
  }

  const LstmConfig c_;
};

// Whether the CUDA kernel takes a node with these dtypes and attributes (absent: kInvalid).
bool Supports(absl::Span<const DType> in, absl::Span<const DType> out, const Attributes& attrs) {
  if (in.size() < 3 || in.size() > 8 || out.empty() || out.size() > 3) return false;
  for (size_t i = 0; i < in.size(); ++i) {
    const bool absent_ok = i >= 3;
    if (i == 4) {
      if (in[i] != DType::kI32 && in[i] != DType::kI64 && in[i] != DType::kInvalid) return false;
    } else if (in[i] != DType::kF32 && !(absent_ok && in[i] == DType::kInvalid)) {
      return false;
    }
  }
  for (DType d : out) {
    if (d != DType::kF32 && d != DType::kInvalid) return false;
  }
  return ParseConfig(attrs).ok();
}

}  // namespace

void RegisterCudaLstm(KernelRegistry& r) {
  r.Register("LSTM", DeviceType::kCUDA, [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
    NIMBLE_ASSIGN_OR_RETURN(LstmConfig c, ParseConfig(a));
    return KernelPtr(std::make_unique<CudaLstmKernel>(c));
  });
  r.SetTraits("LSTM", DeviceType::kCUDA, KernelTraits{{}, Supports});
}

}  // namespace nimble::vm
