// Signal processing and random generators: window functions, DFT, STFT, MelWeightMatrix,
// Random*, Bernoulli, Multinomial.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "compiler/shape/dim_util.h"
#include "compiler/shape/relations_internal.h"

namespace nimble::compiler {
namespace {

// A scalar (or one-element) input as a dim; a fresh run-time dim of `output` when unknown.
absl::StatusOr<DimExpr> ScalarDim(InferenceContext& ctx, int input, int output, int axis,
                                  absl::string_view what) {
  std::optional<std::vector<DimExpr>> v = ctx.InputSymbolicValue(input);
  if (!v || v->size() != 1) return ctx.FreshDim(output, axis);
  return DimFromValue((*v)[0], what);
}

absl::Status WindowRelation(InferenceContext& ctx) {
  NIMBLE_RETURN_IF_ERROR(ctx.InputTensor(0).status());
  NIMBLE_ASSIGN_OR_RETURN(vm::DType dtype, vm::DTypeFromOnnx(ctx.AttrInt("output_datatype", 1)));
  NIMBLE_ASSIGN_OR_RETURN(DimExpr size, ScalarDim(ctx, 0, 0, 0, "window size"));
  ctx.SetOutput(0, TensorType::Of(dtype, {size}));
  return absl::OkStatus();
}

absl::Status DftRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  if (!x->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, std::nullopt));
    return absl::OkStatus();
  }
  const int r = x->rank();
  if (r < 2) return absl::InvalidArgumentError("DFT needs rank >= 2 ([..., 1 or 2])");
  int64_t axis_value = 1;
  if (ctx.opset() >= 20) {
    axis_value = -2;
    if (ctx.has_input(2)) {
      std::optional<std::vector<int64_t>> a = ctx.InputInts(2);
      if (!a || a->size() != 1) {
        ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, r));
        return absl::OkStatus();
      }
      axis_value = (*a)[0];
    }
  } else {
    axis_value = ctx.AttrInt("axis", 1);
  }
  // The signal axes exclude the trailing real/imaginary axis; negative axes count from the end.
  if (axis_value < 0) axis_value += r;
  if (axis_value < 0 || axis_value >= r - 1) {
    return absl::InvalidArgumentError(absl::StrCat("DFT axis is out of range for rank ", r));
  }
  const int axis = static_cast<int>(axis_value);
  std::vector<Dim> out = *x->dims;
  Dim length = out[axis];
  if (ctx.has_input(1)) {
    NIMBLE_ASSIGN_OR_RETURN(DimExpr l, ScalarDim(ctx, 1, 0, axis, "dft_length"));
    length = l;
  }
  const bool onesided = ctx.AttrInt("onesided", 0) != 0;
  const bool inverse = ctx.AttrInt("inverse", 0) != 0;
  if (onesided && inverse) {
    // irfft: a real signal of dft_length (default 2 * (n - 1)) from the half spectrum.
    if (!ctx.has_input(1) && length) length = (*length - DimExpr::Const(1)) * DimExpr::Const(2);
    out[axis] = length;
    out.back() = DimExpr::Const(1);
  } else {
    if (onesided && length) {
      length = ctx.dims().FloorDiv(*length, DimExpr::Const(2)) + DimExpr::Const(1);
    }
    out[axis] = length;
    out.back() = DimExpr::Const(2);
  }
  ctx.SetOutput(0, TensorType::Of(x->dtype, std::move(out)));
  return absl::OkStatus();
}

absl::Status StftRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(DimExpr step, ScalarDim(ctx, 1, 0, 1, "frame_step"));
  Dim frame_length;
  if (ctx.has_input(3)) {
    NIMBLE_ASSIGN_OR_RETURN(frame_length, ScalarDim(ctx, 3, 0, 2, "frame_length"));
  } else if (ctx.has_input(2)) {
    NIMBLE_ASSIGN_OR_RETURN(const TensorType* window, ctx.InputTensor(2));
    if (window->has_rank() && window->rank() == 1) frame_length = (*window->dims)[0];
  }
  const bool onesided = ctx.AttrInt("onesided", 1) != 0;
  Dim batch, frames, bins;
  if (x->has_rank() && x->rank() == 3) {
    batch = (*x->dims)[0];
    const Dim& signal = (*x->dims)[1];
    if (signal && frame_length && step.IsConst() && step.ConstValue() > 0) {
      frames = ctx.dims().FloorDiv(*signal - *frame_length, step) + DimExpr::Const(1);
    }
  }
  if (frame_length) {
    bins = onesided ? ctx.dims().FloorDiv(*frame_length, DimExpr::Const(2)) + DimExpr::Const(1)
                    : *frame_length;
  }
  ctx.SetOutput(0, TensorType::Of(x->dtype, {batch, frames, bins, DimExpr::Const(2)}));
  return absl::OkStatus();
}

absl::Status MelWeightMatrixRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(vm::DType dtype, vm::DTypeFromOnnx(ctx.AttrInt("output_datatype", 1)));
  NIMBLE_ASSIGN_OR_RETURN(DimExpr mel, ScalarDim(ctx, 0, 0, 1, "num_mel_bins"));
  NIMBLE_ASSIGN_OR_RETURN(DimExpr dft, ScalarDim(ctx, 1, 0, 0, "dft_length"));
  const DimExpr bins = ctx.dims().FloorDiv(dft, DimExpr::Const(2)) + DimExpr::Const(1);
  ctx.SetOutput(0, TensorType::Of(dtype, {bins, mel}));
  return absl::OkStatus();
}

// The dtype attribute (ONNX enum) or `fallback`.
absl::StatusOr<vm::DType> DTypeAttr(InferenceContext& ctx, vm::DType fallback) {
  if (!ctx.HasAttr("dtype")) return fallback;
  return vm::DTypeFromOnnx(ctx.AttrInt("dtype", 1));
}

absl::Status RandomRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(vm::DType dtype, DTypeAttr(ctx, vm::DType::kF32));
  std::optional<std::vector<int64_t>> shape = ctx.AttrInts("shape");
  if (!shape) return absl::InvalidArgumentError("attribute 'shape' is missing");
  std::vector<Dim> dims;
  for (int64_t d : *shape) {
    NIMBLE_ASSIGN_OR_RETURN(DimExpr e, DimFromValue(DimExpr::Const(d), "shape entry"));
    dims.push_back(e);
  }
  ctx.SetOutput(0, TensorType::Of(dtype, std::move(dims)));
  return absl::OkStatus();
}

absl::Status RandomLikeRelation(InferenceContext& ctx) {  // also Bernoulli
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(vm::DType dtype, DTypeAttr(ctx, x->dtype));
  ctx.SetOutput(0, TensorType{dtype, x->dims});
  return absl::OkStatus();
}

absl::Status MultinomialRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(vm::DType dtype, DTypeAttr(ctx, vm::DType::kI32));
  const int64_t samples = ctx.AttrInt("sample_size", 1);
  NIMBLE_ASSIGN_OR_RETURN(DimExpr s, DimFromValue(DimExpr::Const(samples), "sample_size"));
  const Dim batch = x->has_rank() && x->rank() == 2 ? (*x->dims)[0] : Dim();
  ctx.SetOutput(0, TensorType::Of(dtype, {batch, s}));
  return absl::OkStatus();
}

}  // namespace

void RegisterSignalRelations(RelationRegistry& r) {
  for (const char* op : {"HannWindow", "HammingWindow", "BlackmanWindow"}) {
    r.Register("", op, WindowRelation);
  }
  r.Register("", "DFT", DftRelation);
  r.Register("", "STFT", StftRelation);
  r.Register("", "MelWeightMatrix", MelWeightMatrixRelation);
  r.Register("", "RandomNormal", RandomRelation);
  r.Register("", "RandomUniform", RandomRelation);
  r.Register("", "RandomNormalLike", RandomLikeRelation);
  r.Register("", "RandomUniformLike", RandomLikeRelation);
  r.Register("", "Bernoulli", RandomLikeRelation);
  r.Register("", "Multinomial", MultinomialRelation);
}

}  // namespace nimble::compiler
