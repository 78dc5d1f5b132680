// A GEMM whose K is cut into slices with its LayerNorm (compiler/transforms/split_gemm_layernorm.h,
// a GPU pass; these CPU kernels are its reference and fallback):
//
//   MatMulSplitK(x [..., K], W [K, N]) {splits = S}  ->  parts [S, ..., N] (f32 or x's type)
//       parts[s] = x[..., s*K/S : (s+1)*K/S] * W[s*K/S : (s+1)*K/S, :]
//   SplitSumLayerNorm(parts, bias?, residual?, gamma, beta?) {epsilon}  ->  y [..., N]
//       y = LayerNorm(sum_s parts[s] + bias + residual) * gamma + beta   (last axis)
//
// Above vm::kMaxSplitRows rows both use one slice (vm/kernels/split_gemm_rule.h): slice 0
// holds the whole-K product; here the other slices are zeros.
//
// x, W, bias, residual, gamma and beta share a float type; parts and y are of that type or f32
// (sums in f32 either way).
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vm/kernels/cpu/cpu_kernels.h"
#include "vm/kernels/cpu/elementwise_internal.h"
#include "vm/kernels/cpu/onednn_util.h"
#include "vm/kernels/kernel.h"
#include "vm/kernels/split_gemm_rule.h"

namespace nimble::vm::cpu {
namespace {

bool IsGemmFloat(DType d) { return d == DType::kF32 || IsHalf(d); }

absl::StatusOr<Tensor> AsF32(const Tensor& t, absl::string_view op) {
  if (t.dtype() == DType::kF32) return t;
  return CastTo(t, DType::kF32, op);
}

class MatMulSplitKKernel final : public Kernel {
 public:
  explicit MatMulSplitKKernel(int64_t splits) : splits_(splits) {}
  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    constexpr absl::string_view kOp = "MatMulSplitK";
    NIMBLE_RETURN_IF_ERROR(CheckArity(kOp, inputs, 2, 2, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(kOp, inputs, 2));
    const Tensor& x = inputs[0];
    const Tensor& w = inputs[1];
    if (!IsGemmFloat(x.dtype()) || w.dtype() != x.dtype() || x.rank() < 1 || w.rank() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(kOp, ": x ", x.TypeString(), " and W ",
                                                     w.TypeString(), " (2-D, same float type)"));
    }
    const int64_t k = w.dim(0), n = w.dim(1);
    if (x.dim(x.rank() - 1) != k || k % splits_ != 0) {
      return absl::InvalidArgumentError(absl::StrCat(kOp, ": x ", x.TypeString(), " by W ",
                                                     w.TypeString(), " in ", splits_, " slices"));
    }
    int64_t rows = 1;
    for (int i = 0; i + 1 < x.rank(); ++i) rows *= x.dim(i);
    Shape out_shape = {splits_};
    out_shape.insert(out_shape.end(), x.shape().begin(), x.shape().end() - 1);
    out_shape.push_back(n);
    const DType parts_type = outputs[0].dtype() == x.dtype() ? x.dtype() : DType::kF32;
    NIMBLE_RETURN_IF_ERROR(CheckOutput(kOp, outputs[0], parts_type, out_shape));
    if (outputs[0].num_elements() == 0) return absl::OkStatus();
    NIMBLE_ASSIGN_OR_RETURN(Tensor xf, AsF32(x, kOp));
    NIMBLE_ASSIGN_OR_RETURN(Tensor wf, AsF32(w, kOp));
    const int64_t used = EffectiveSplits(rows, splits_);
    const int64_t ks = k / used;
    const float* xp = xf.data<float>();
    const float* wp = wf.data<float>();
    Tensor f32_parts = outputs[0];
    if (parts_type != DType::kF32) {
      NIMBLE_ASSIGN_OR_RETURN(f32_parts, Tensor::Empty(DType::kF32, out_shape));
    }
    float* out = f32_parts.data<float>();
    for (int64_t s = 0; s < splits_; ++s) {
      float* part = out + s * rows * n;
      if (ks == 0 || s >= used) {
        std::fill(part, part + rows * n, 0.0f);
        continue;
      }
      NIMBLE_RETURN_IF_ERROR(onednn::Sgemm(ctx.num_threads, false, false, rows, n, ks, 1.0f,
                                           xp + s * ks, k, wp + s * ks * n, n, 0.0f, part, n));
    }
    if (parts_type == DType::kF32) return absl::OkStatus();
    Tensor parts = outputs[0];
    return CastInto(f32_parts, parts, kOp);
  }
  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.size() != 2 || !inputs[0].defined() || !inputs[1].defined() ||
        inputs[0].rank() < 1 || inputs[1].rank() != 2 || output_shapes.size() != 1) {
      return absl::InvalidArgumentError("MatMulSplitK: x [..., K] and W [K, N]");
    }
    Shape out = {splits_};
    out.insert(out.end(), inputs[0].shape().begin(), inputs[0].shape().end() - 1);
    out.push_back(inputs[1].dim(1));
    output_shapes[0] = std::move(out);
    return absl::OkStatus();
  }

 private:
  const int64_t splits_;
};

class SplitSumLayerNormKernel final : public Kernel {
 public:
  explicit SplitSumLayerNormKernel(std::unique_ptr<Kernel> layer_norm)
      : layer_norm_(std::move(layer_norm)) {}
  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    constexpr absl::string_view kOp = "SplitSumLayerNorm";
    NIMBLE_RETURN_IF_ERROR(CheckArity(kOp, inputs, 4, 5, outputs, 1));
    const Tensor& parts = inputs[0];
    if (!parts.defined() || parts.rank() < 2 || inputs.size() < 4 || !inputs[3].defined() ||
        (parts.dtype() != DType::kF32 && parts.dtype() != inputs[3].dtype())) {
      return absl::InvalidArgumentError(absl::StrCat(
          kOp, ": partial products [S, ..., N] (f32 or gamma's type) and gamma are required"));
    }
    NIMBLE_RETURN_IF_ERROR(CheckRequired(kOp, inputs, 1));
    const DType type = inputs[3].dtype();
    const Shape y_shape(parts.shape().begin() + 1, parts.shape().end());
    const int64_t n = y_shape.back();
    int64_t rows = 1;
    for (size_t i = 0; i + 1 < y_shape.size(); ++i) rows *= y_shape[i];
    if (parts.dim(0) < 1) {
      return absl::InvalidArgumentError(absl::StrCat(kOp, ": no partial products"));
    }
    const int64_t splits = EffectiveSplits(rows, parts.dim(0));
    if (!IsGemmFloat(type)) {
      return absl::InvalidArgumentError(absl::StrCat(kOp, ": gamma ", inputs[3].TypeString()));
    }
    const Tensor& y = outputs[0];
    if (y.dtype() != type && y.dtype() != DType::kF32) {
      return absl::InvalidArgumentError(
          absl::StrCat(kOp, ": output ", y.TypeString(), " for ", DTypeName(type), " inputs"));
    }
    NIMBLE_RETURN_IF_ERROR(CheckOutput(kOp, y, y.dtype(), y_shape));
    // bias (1), gamma (3), beta (4): N elements; residual (2): the output's shape.
    Tensor param[5];
    for (int i = 1; i < static_cast<int>(inputs.size()); ++i) {
      if (!inputs[i].defined()) continue;
      const Tensor& t = inputs[i];
      const bool full = i == 2;
      if (t.dtype() != type || (full ? t.shape() != y_shape : t.num_elements() != n)) {
        return absl::InvalidArgumentError(
            absl::StrCat(kOp, ": input ", i, " ", t.TypeString(), " for output ", y.TypeString()));
      }
      NIMBLE_ASSIGN_OR_RETURN(param[i], AsF32(t, kOp));
    }
    // The sum in f32, then the LayerNormalization kernel over it.
    NIMBLE_ASSIGN_OR_RETURN(Tensor sum, Tensor::Empty(DType::kF32, y_shape));
    NIMBLE_ASSIGN_OR_RETURN(Tensor parts_f32, AsF32(parts, kOp));
    const float* p = parts_f32.data<float>();
    const float* bias = param[1].defined() ? param[1].data<float>() : nullptr;
    const float* residual = param[2].defined() ? param[2].data<float>() : nullptr;
    float* v = sum.data<float>();
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < n; ++c) {
        float acc = 0;
        for (int64_t s = 0; s < splits; ++s) acc += p[(s * rows + r) * n + c];
        if (bias != nullptr) acc += bias[c];
        if (residual != nullptr) acc += residual[r * n + c];
        v[r * n + c] = acc;
      }
    }
    const Tensor ln_inputs[3] = {sum, param[3], param[4]};
    Tensor out = y;
    if (y.dtype() == DType::kF32) return layer_norm_->Run(ctx, ln_inputs, absl::MakeSpan(&out, 1));
    NIMBLE_ASSIGN_OR_RETURN(Tensor normed, Tensor::Empty(DType::kF32, y_shape));
    NIMBLE_RETURN_IF_ERROR(layer_norm_->Run(ctx, ln_inputs, absl::MakeSpan(&normed, 1)));
    return CastInto(normed, out, kOp);
  }
  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.empty() || !inputs[0].defined() || inputs[0].rank() < 2 ||
        output_shapes.size() != 1) {
      return absl::InvalidArgumentError("SplitSumLayerNorm: partial products [S, ..., N]");
    }
    output_shapes[0] = Shape(inputs[0].shape().begin() + 1, inputs[0].shape().end());
    return absl::OkStatus();
  }

 private:
  const std::unique_ptr<Kernel> layer_norm_;  // LayerNormalization over the last axis
};

}  // namespace

void RegisterSplitGemmKernels(KernelRegistry& registry) {
  registry.Register("MatMulSplitK", DeviceType::kCPU,
                    [](const Attributes& a) -> absl::StatusOr<std::unique_ptr<Kernel>> {
                      const int64_t splits = a.GetOr<int64_t>("splits", 1);
                      if (splits < 1 || splits > 64) {
                        return absl::InvalidArgumentError(
                            absl::StrCat("MatMulSplitK: splits ", splits, " is not 1..64"));
                      }
                      return std::unique_ptr<Kernel>(std::make_unique<MatMulSplitKKernel>(splits));
                    });
  registry.Register(
      "SplitSumLayerNorm", DeviceType::kCPU,
      [](const Attributes& a) -> absl::StatusOr<std::unique_ptr<Kernel>> {
        const double epsilon = a.GetOr<double>("epsilon", 1e-5);
        if (!(epsilon >= 0)) {
          return absl::InvalidArgumentError("SplitSumLayerNorm: epsilon < 0");
        }
        Attributes ln;
        ln.Set("axis", int64_t{-1});
        ln.Set("epsilon", epsilon);
        NIMBLE_ASSIGN_OR_RETURN(
            std::unique_ptr<Kernel> layer_norm,
            KernelRegistry::Global().Create("LayerNormalization", DeviceType::kCPU, ln));
        return std::unique_ptr<Kernel>(
            std::make_unique<SplitSumLayerNormKernel>(std::move(layer_norm)));
      });
}

}  // namespace nimble::vm::cpu
