// Neural-network operators: MatMul (numpy 1-D rules, batch broadcasting), Gemm, Conv,
// ConvTranspose, pooling, normalisations, Softmax family, recurrent layers (LSTM/GRU/RNN),
// Resize/Upsample and (de)quantisation.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "compiler/shape/broadcast.h"
#include "compiler/shape/dim_util.h"
#include "compiler/shape/relations_internal.h"

namespace nimble::compiler {
namespace {

// ---- MatMul, Gemm -------------------------------------------------------------------------------

// MatMul of inputs `a` and `b` producing `dtype`.
absl::Status MatMulShape(InferenceContext& ctx, int a_index, int b_index, vm::DType dtype) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* a, ctx.InputTensor(a_index));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* b, ctx.InputTensor(b_index));
  if (!a->has_rank() || !b->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, dtype, std::nullopt));
    return absl::OkStatus();
  }
  if (a->rank() == 0 || b->rank() == 0) {
    return absl::InvalidArgumentError("MatMul inputs must have rank >= 1");
  }
  std::vector<Dim> ad = *a->dims, bd = *b->dims;
  if (a->rank() == 1) ad.insert(ad.begin(), DimExpr::Const(1));
  if (b->rank() == 1) bd.push_back(DimExpr::Const(1));
  TensorType a_batch{dtype, std::vector<Dim>(ad.begin(), ad.end() - 2)};
  TensorType b_batch{dtype, std::vector<Dim>(bd.begin(), bd.end() - 2)};
  NIMBLE_ASSIGN_OR_RETURN(std::optional<std::vector<Dim>> batch,
                          BroadcastShapes(ctx, {&a_batch, &b_batch}));
  NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual(ad.back(), bd[bd.size() - 2],
                                          "MatMul inner dims (columns of A, rows of B)"));
  std::vector<Dim> out = *batch;
  if (a->rank() > 1) out.push_back(ad[ad.size() - 2]);
  if (b->rank() > 1) out.push_back(bd.back());
  ctx.SetOutput(0, TensorType::Of(dtype, std::move(out)));
  return absl::OkStatus();
}

absl::Status MatMulRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* a, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* b, ctx.InputTensor(1));
  if (a->dtype != b->dtype || !IsNumeric(a->dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("MatMul of ", vm::DTypeName(a->dtype), " and ",
                                                   vm::DTypeName(b->dtype),
                                                   ": both must have the same numeric type"));
  }
  return MatMulShape(ctx, 0, 1, a->dtype);
}

absl::Status MatMulIntegerRelation(InferenceContext& ctx) {
  return MatMulShape(ctx, 0, 1, vm::DType::kI32);
}

absl::Status QLinearMatMulRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* zp, ctx.InputTensor(7));
  return MatMulShape(ctx, 0, 3, zp->dtype);
}

absl::Status GemmRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* a, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* b, ctx.InputTensor(1));
  NIMBLE_RETURN_IF_ERROR(RequireSameDType(ctx, {0, 1, 2}));
  if (!IsNumeric(a->dtype)) return absl::InvalidArgumentError("Gemm needs numeric inputs");
  for (const TensorType* t : {a, b}) {
    if (t->has_rank() && t->rank() != 2) {
      return absl::InvalidArgumentError(absl::StrCat("Gemm inputs must be 2-D, got ", ctx.Str(*t)));
    }
  }
  auto dim = [](const TensorType* t, int i) { return t->has_rank() ? (*t->dims)[i] : Dim(); };
  const bool ta = ctx.AttrInt("transA", 0) != 0, tb = ctx.AttrInt("transB", 0) != 0;
  const Dim m = dim(a, ta ? 1 : 0), ka = dim(a, ta ? 0 : 1);
  const Dim kb = dim(b, tb ? 1 : 0), n = dim(b, tb ? 0 : 1);
  NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual(ka, kb, "Gemm inner dims"));
  const std::vector<Dim> out{m, n};
  if (ctx.has_input(2)) {
    NIMBLE_ASSIGN_OR_RETURN(const TensorType* c, ctx.InputTensor(2));
    NIMBLE_RETURN_IF_ERROR(RequireUnidirectionalBroadcast(ctx, *c, out, "Gemm C"));
  }
  ctx.SetOutput(0, TensorType::Of(a->dtype, out));
  return absl::OkStatus();
}

// ---- Convolution and pooling -------------------------------------------------------------------

// Kernel sizes, strides and dilations beyond this are rejected (so products with dims of up to
// kMaxStaticDim stay far from overflow).
constexpr int64_t kMaxWindowParam = int64_t{1} << 20;

struct WindowAttrs {
  std::vector<Dim> kernel;
  std::vector<int64_t> strides, dilations, pads;  // pads: begins then ends
  std::string auto_pad;
  bool ceil_mode = false;
};

absl::StatusOr<WindowAttrs> GetWindowAttrs(InferenceContext& ctx, int spatial,
                                           const std::vector<Dim>* kernel_from_weights) {
  WindowAttrs w;
  if (std::optional<std::vector<int64_t>> k = ctx.AttrInts("kernel_shape")) {
    for (int64_t v : *k) w.kernel.push_back(DimExpr::Const(v));
  } else if (kernel_from_weights) {
    w.kernel = *kernel_from_weights;
  } else {
    return absl::InvalidArgumentError("attribute 'kernel_shape' is missing");
  }
  w.strides = ctx.AttrInts("strides").value_or(std::vector<int64_t>(spatial, 1));
  w.dilations = ctx.AttrInts("dilations").value_or(std::vector<int64_t>(spatial, 1));
  w.pads = ctx.AttrInts("pads").value_or(std::vector<int64_t>(2 * spatial, 0));
  w.auto_pad = ctx.AttrString("auto_pad", "NOTSET");
  w.ceil_mode = ctx.AttrInt("ceil_mode", 0) != 0;
  if (static_cast<int>(w.kernel.size()) != spatial ||
      static_cast<int>(w.strides.size()) != spatial ||
      static_cast<int>(w.dilations.size()) != spatial ||
      static_cast<int>(w.pads.size()) != 2 * spatial) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kernel_shape/strides/dilations/pads do not match ", spatial, " spatial dims"));
  }
  for (int i = 0; i < spatial; ++i) {
    if (w.strides[i] <= 0 || w.dilations[i] <= 0 || w.strides[i] > kMaxWindowParam ||
        w.dilations[i] > kMaxWindowParam) {
      return absl::InvalidArgumentError("strides and dilations must be positive and sane");
    }
    if (w.kernel[i] && w.kernel[i]->IsConst() &&
        (w.kernel[i]->ConstValue() <= 0 || w.kernel[i]->ConstValue() > kMaxWindowParam)) {
      return absl::InvalidArgumentError("kernel_shape entries must be positive");
    }
  }
  for (int64_t p : w.pads) {
    if (p < -kMaxStaticDim || p > kMaxStaticDim) {
      return absl::InvalidArgumentError("pads are out of range");
    }
  }
  if (w.auto_pad != "NOTSET" && w.auto_pad != "SAME_UPPER" && w.auto_pad != "SAME_LOWER" &&
      w.auto_pad != "VALID") {
    return absl::InvalidArgumentError(absl::StrCat("unknown auto_pad '", w.auto_pad, "'"));
  }
  return w;
}

// Output size of a sliding window over `in`.
absl::StatusOr<Dim> WindowOutDim(InferenceContext& ctx, const Dim& in, const WindowAttrs& w, int i,
                                 int spatial) {
  if (!in || !w.kernel[i]) return Dim();
  DimContext& dims = ctx.dims();
  const DimExpr s = DimExpr::Const(w.strides[i]);
  if (w.auto_pad == "SAME_UPPER" || w.auto_pad == "SAME_LOWER") return Dim(dims.CeilDiv(*in, s));
  const DimExpr eff =
      (*w.kernel[i] - DimExpr::Const(1)) * DimExpr::Const(w.dilations[i]) + DimExpr::Const(1);
  const DimExpr pad_begin = DimExpr::Const(w.auto_pad == "VALID" ? 0 : w.pads[i]);
  const DimExpr pads =
      w.auto_pad == "VALID" ? DimExpr() : DimExpr::Const(w.pads[i] + w.pads[i + spatial]);
  const DimExpr span = *in + pads - eff;
  if (span.IsConst() && span.ConstValue() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("window of size ", dims.ToString(eff),
                                                   " does not fit spatial dim ", dims.ToString(*in),
                                                   " (with padding)"));
  }
  if (!w.ceil_mode) return Dim(dims.FloorDiv(span, s) + DimExpr::Const(1));
  // A last window that would start past the input and the left padding is dropped: windows
  // start at (i - 1) * s < in + pad_begin, i.e. i <= floordiv(in + pad_begin - 1, s) + 1.
  const DimExpr out = dims.CeilDiv(span, s) + DimExpr::Const(1);
  const DimExpr starts = dims.FloorDiv(*in + pad_begin - DimExpr::Const(1), s) + DimExpr::Const(1);
  return Dim(dims.Min(out, starts));
}

// Conv of input `xi` with weights `wi` producing `dtype` (Conv, ConvInteger, QLinearConv,
// DeformConv).
absl::Status ConvShape(InferenceContext& ctx, int xi, int wi, vm::DType dtype) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(xi));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* w, ctx.InputTensor(wi));
  const std::optional<int> rank = x->has_rank()   ? std::optional<int>(x->rank())
                                  : w->has_rank() ? std::optional<int>(w->rank())
                                                  : std::nullopt;
  if (!x->has_rank() || !w->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, dtype, rank));
    return absl::OkStatus();
  }
  if (x->rank() < 3 || w->rank() != x->rank()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Conv of ", ctx.Str(*x), " with weights ", ctx.Str(*w)));
  }
  const int spatial = x->rank() - 2;
  const std::vector<Dim> wk(w->dims->begin() + 2, w->dims->end());
  NIMBLE_ASSIGN_OR_RETURN(WindowAttrs win, GetWindowAttrs(ctx, spatial, &wk));
  const int64_t group = ctx.AttrInt("group", 1);
  if (group <= 0 || group > kMaxStaticDim) return absl::InvalidArgumentError("bad group");
  const Dim& c = (*x->dims)[1];
  const Dim& wc = (*w->dims)[1];
  NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual(c, wc ? CheckedMul(*wc, DimExpr::Const(group)) : Dim(),
                                          "Conv input channels vs weights x group"));
  for (int i = 0; i < spatial; ++i) {
    NIMBLE_RETURN_IF_ERROR(
        ctx.RequireEqual(win.kernel[i], wk[i], "Conv kernel_shape vs weight dims"));
  }
  std::vector<Dim> out{(*x->dims)[0], (*w->dims)[0]};
  for (int i = 0; i < spatial; ++i) {
    NIMBLE_ASSIGN_OR_RETURN(Dim d, WindowOutDim(ctx, (*x->dims)[i + 2], win, i, spatial));
    out.push_back(d);
  }
  ctx.SetOutput(0, TensorType::Of(dtype, std::move(out)));
  return absl::OkStatus();
}

absl::Status ConvRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  NIMBLE_RETURN_IF_ERROR(RequireSameDType(ctx, {0, 1}));
  return ConvShape(ctx, 0, 1, x->dtype);
}

absl::Status ConvTransposeRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* w, ctx.InputTensor(1));
  NIMBLE_RETURN_IF_ERROR(RequireSameDType(ctx, {0, 1}));
  if (!x->has_rank() || !w->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype,
                                 x->has_rank() ? std::optional<int>(x->rank()) : std::nullopt));
    return absl::OkStatus();
  }
  if (x->rank() < 3 || w->rank() != x->rank()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ConvTranspose of ", ctx.Str(*x), " with weights ", ctx.Str(*w)));
  }
  const int spatial = x->rank() - 2;
  const std::vector<Dim> wk(w->dims->begin() + 2, w->dims->end());
  NIMBLE_ASSIGN_OR_RETURN(WindowAttrs win, GetWindowAttrs(ctx, spatial, &wk));
  const int64_t group = ctx.AttrInt("group", 1);
  if (group <= 0 || group > kMaxStaticDim) return absl::InvalidArgumentError("bad group");
  NIMBLE_RETURN_IF_ERROR(
      ctx.RequireEqual((*x->dims)[1], (*w->dims)[0], "ConvTranspose input channels vs weights"));
  const Dim& wm = (*w->dims)[1];
  std::vector<Dim> out{(*x->dims)[0], wm ? CheckedMul(*wm, DimExpr::Const(group)) : Dim()};
  const std::vector<int64_t> out_pad =
      ctx.AttrInts("output_padding").value_or(std::vector<int64_t>(spatial, 0));
  const std::optional<std::vector<int64_t>> out_shape = ctx.AttrInts("output_shape");
  if (static_cast<int>(out_pad.size()) != spatial) {
    return absl::InvalidArgumentError("output_padding does not match the spatial dims");
  }
  for (int64_t p : out_pad) {
    if (p < 0 || p > kMaxStaticDim) return absl::InvalidArgumentError("bad output_padding");
  }
  if (out_shape) {
    for (int64_t d : *out_shape) {
      if (d < 0 || d > kMaxStaticDim) return absl::InvalidArgumentError("bad output_shape");
    }
  }
  for (int i = 0; i < spatial; ++i) {
    const Dim& in = (*x->dims)[i + 2];
    if (out_shape && static_cast<int>(out_shape->size()) >= spatial) {
      out.push_back(DimExpr::Const((*out_shape)[out_shape->size() - spatial + i]));
      continue;
    }
    if (!in || !win.kernel[i]) {
      out.push_back(Dim());
      continue;
    }
    const DimExpr s = DimExpr::Const(win.strides[i]);
    if (win.auto_pad == "SAME_UPPER" || win.auto_pad == "SAME_LOWER") {
      out.push_back(*in * s);
      continue;
    }
    const DimExpr eff =
        (*win.kernel[i] - DimExpr::Const(1)) * DimExpr::Const(win.dilations[i]) + DimExpr::Const(1);
    const int64_t pads = win.auto_pad == "VALID" ? 0 : win.pads[i] + win.pads[i + spatial];
    out.push_back(s * (*in - DimExpr::Const(1)) + DimExpr::Const(out_pad[i]) + eff -
                  DimExpr::Const(pads));
  }
  ctx.SetOutput(0, TensorType::Of(x->dtype, std::move(out)));
  return absl::OkStatus();
}

absl::Status PoolRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  if (!x->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, std::nullopt));
    ctx.SetOutput(1, FreshTensor(ctx, 1, vm::DType::kI64, std::nullopt));
    return absl::OkStatus();
  }
  if (x->rank() < 3) return absl::InvalidArgumentError("pooling needs rank >= 3");
  const int spatial = x->rank() - 2;
  NIMBLE_ASSIGN_OR_RETURN(WindowAttrs win, GetWindowAttrs(ctx, spatial, nullptr));
  std::vector<Dim> out{(*x->dims)[0], (*x->dims)[1]};
  for (int i = 0; i < spatial; ++i) {
    NIMBLE_ASSIGN_OR_RETURN(Dim d, WindowOutDim(ctx, (*x->dims)[i + 2], win, i, spatial));
    out.push_back(d);
  }
  ctx.SetOutput(0, TensorType::Of(x->dtype, out));
  ctx.SetOutput(1, TensorType::Of(vm::DType::kI64, out));  // MaxPool's Indices
  return absl::OkStatus();
}

absl::Status GlobalPoolRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  if (!x->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, std::nullopt));
    return absl::OkStatus();
  }
  if (x->rank() < 2) return absl::InvalidArgumentError("global pooling needs rank >= 2");
  std::vector<Dim> out{(*x->dims)[0], (*x->dims)[1]};
  out.resize(x->rank(), DimExpr::Const(1));
  ctx.SetOutput(0, TensorType::Of(x->dtype, std::move(out)));
  return absl::OkStatus();
}

// ---- Normalisation, Softmax ---------------------------------------------------------------------

absl::Status BatchNormRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  ctx.SetOutput(0, *x);
  const Dim c = x->has_rank() && x->rank() >= 2 ? (*x->dims)[1] : Dim();
  for (int i = 1; i <= 4 && i < ctx.num_inputs(); ++i) {
    if (!ctx.has_input(i)) continue;
    NIMBLE_ASSIGN_OR_RETURN(const TensorType* p, ctx.InputTensor(i));
    if (p->has_rank() && p->rank() == 1) {
      NIMBLE_RETURN_IF_ERROR(
          ctx.RequireEqual((*p->dims)[0], c, absl::StrCat("BatchNormalization input ", i)));
    }
  }
  // Training-mode outputs: running mean/var (and saved mean/var before opset 14), one per C.
  const vm::DType stat = ctx.has_input(3) ? ctx.input_type(3)->tensor.dtype : x->dtype;
  for (int i = 1; i < ctx.num_outputs(); ++i) ctx.SetOutput(i, TensorType::Of(stat, {c}));
  return absl::OkStatus();
}

absl::Status LayerNormRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  ctx.SetOutput(0, *x);
  NIMBLE_ASSIGN_OR_RETURN(vm::DType stash, vm::DTypeFromOnnx(ctx.AttrInt("stash_type", 1)));
  if (!x->has_rank()) {
    ctx.SetOutput(1, FreshTensor(ctx, 1, stash, std::nullopt));
    ctx.SetOutput(2, FreshTensor(ctx, 2, stash, std::nullopt));
    return absl::OkStatus();
  }
  NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(ctx.AttrInt("axis", -1), x->rank()));
  if (ctx.has_input(1)) {
    NIMBLE_ASSIGN_OR_RETURN(const TensorType* scale, ctx.InputTensor(1));
    std::vector<Dim> normalized(x->dims->begin() + axis, x->dims->end());
    NIMBLE_RETURN_IF_ERROR(
        RequireUnidirectionalBroadcast(ctx, *scale, normalized, "LayerNormalization scale"));
  }
  std::vector<Dim> stats = *x->dims;
  for (int a = axis; a < x->rank(); ++a) stats[a] = DimExpr::Const(1);
  ctx.SetOutput(1, TensorType::Of(stash, stats));
  ctx.SetOutput(2, TensorType::Of(stash, stats));
  return absl::OkStatus();
}

absl::Status SameShapeRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  ctx.SetOutput(0, *x);
  return absl::OkStatus();
}

absl::Status SoftmaxRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  if (x->has_rank()) {
    NIMBLE_RETURN_IF_ERROR(
        NormalizeAxis(ctx.AttrInt("axis", ctx.opset() >= 13 ? -1 : 1), x->rank()).status());
  }
  ctx.SetOutput(0, *x);
  return absl::OkStatus();
}

// ---- Recurrent layers ---------------------------------------------------------------------------

absl::Status RecurrentRelation(InferenceContext& ctx, int gates) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* w, ctx.InputTensor(1));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* r, ctx.InputTensor(2));
  NIMBLE_RETURN_IF_ERROR(RequireSameDType(ctx, {0, 1, 2}));
  const std::string direction = ctx.AttrString("direction", "forward");
  if (direction != "forward" && direction != "reverse" && direction != "bidirectional") {
    return absl::InvalidArgumentError(absl::StrCat("unknown direction '", direction, "'"));
  }
  const DimExpr num_dir = DimExpr::Const(direction == "bidirectional" ? 2 : 1);
  const int64_t layout = ctx.opset() >= 14 ? ctx.AttrInt("layout", 0) : 0;
  Dim hidden;
  if (ctx.HasAttr("hidden_size")) {
    const int64_t h = ctx.AttrInt("hidden_size", 0);
    if (h <= 0 || h > kMaxStaticDim) return absl::InvalidArgumentError("bad hidden_size");
    hidden = DimExpr::Const(h);
  } else if (r->has_rank() && r->rank() == 3) {
    hidden = (*r->dims)[2];
  }
  if (w->has_rank()) {
    if (w->rank() != 3) return absl::InvalidArgumentError("W must be 3-D");
    NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual((*w->dims)[0], num_dir, "W num_directions"));
    if (hidden) {
      NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual((*w->dims)[1], *hidden * DimExpr::Const(gates),
                                              "W rows = gates x hidden_size"));
    }
  }
  Dim seq, batch;
  if (x->has_rank()) {
    if (x->rank() != 3) return absl::InvalidArgumentError("X must be 3-D");
    seq = (*x->dims)[layout == 0 ? 0 : 1];
    batch = (*x->dims)[layout == 0 ? 1 : 0];
    if (w->has_rank()) {
      NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual((*x->dims)[2], (*w->dims)[2], "X input size vs W"));
    }
  }
  const vm::DType dtype = x->dtype;
  if (layout == 0) {
    ctx.SetOutput(0, TensorType::Of(dtype, {seq, num_dir, batch, hidden}));
    ctx.SetOutput(1, TensorType::Of(dtype, {num_dir, batch, hidden}));
    ctx.SetOutput(2, TensorType::Of(dtype, {num_dir, batch, hidden}));
  } else {
    ctx.SetOutput(0, TensorType::Of(dtype, {batch, seq, num_dir, hidden}));
    ctx.SetOutput(1, TensorType::Of(dtype, {batch, num_dir, hidden}));
    ctx.SetOutput(2, TensorType::Of(dtype, {batch, num_dir, hidden}));
  }
  return absl::OkStatus();
}

// ---- Resize, Upsample ---------------------------------------------------------------------------

// Whether optional input `i` is given (models pass empty tensors for unused roi/scales/sizes).
bool GivenNonEmpty(InferenceContext& ctx, int i) {
  if (!ctx.has_input(i)) return false;
  const TensorType& t = ctx.input_type(i)->tensor;
  if (t.has_rank() && t.rank() == 1 && (*t.dims)[0] && *(*t.dims)[0] == DimExpr()) return false;
  return true;
}

// floor(in * scale) symbolically, when exact.
std::optional<DimExpr> ScaleDim(DimContext& dims, const DimExpr& in, double scale) {
  if (in.IsConst()) {
    const double v = std::floor(static_cast<double>(in.ConstValue()) * static_cast<float>(scale));
    if (!(v >= 0 && v <= static_cast<double>(kMaxStaticDim))) return std::nullopt;
    return DimExpr::Const(static_cast<int64_t>(v));
  }
  if (scale >= 1 && scale == std::floor(scale) && scale <= 1 << 20) {
    return CheckedMul(in, DimExpr::Const(static_cast<int64_t>(scale)));
  }
  if (scale > 0 && scale < 1) {
    const double inv = 1.0 / scale;
    if (inv == std::floor(inv) && inv <= 1 << 20) {
      return dims.FloorDiv(in, DimExpr::Const(static_cast<int64_t>(inv)));
    }
  }
  return std::nullopt;
}

absl::Status ResizeRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  if (!x->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, std::nullopt));
    return absl::OkStatus();
  }
  const int r = x->rank();
  const bool upsample = ctx.node().op_type() == "Upsample";
  int scales_index = 2, sizes_index = 3;
  if (upsample || ctx.opset() < 11) scales_index = 1, sizes_index = -1;
  std::vector<int> axes;
  if (!upsample && ctx.opset() >= 18 && ctx.HasAttr("axes")) {
    const std::vector<int64_t> attr_axes = ctx.AttrInts("axes").value_or(std::vector<int64_t>());
    for (int64_t a : attr_axes) {
      NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(a, r));
      axes.push_back(axis);
    }
  } else {
    for (int a = 0; a < r; ++a) axes.push_back(a);
  }
  std::vector<Dim> out = *x->dims;
  auto all_fresh = [&] {
    for (int a : axes) out[a] = ctx.FreshDim(0, a);
  };
  if (sizes_index >= 0 && GivenNonEmpty(ctx, sizes_index)) {
    std::optional<std::vector<DimExpr>> sizes = ctx.InputSymbolicValue(sizes_index);
    if (sizes && sizes->size() != axes.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sizes has ", sizes->size(), " entries for ", axes.size(), " axes"));
    }
    const std::string policy = ctx.AttrString("keep_aspect_ratio_policy", "stretch");
    if (!sizes) {
      all_fresh();
    } else if (policy == "stretch" || ctx.opset() < 18) {
      for (size_t j = 0; j < axes.size(); ++j) {
        NIMBLE_ASSIGN_OR_RETURN(out[axes[j]], DimFromValue((*sizes)[j], "Resize size"));
      }
    } else {
      // not_larger / not_smaller: one scale for all axes, from constant dims only.
      std::optional<double> scale;
      for (size_t j = 0; j < axes.size() && (scale || j == 0); ++j) {
        const Dim& in = (*x->dims)[axes[j]];
        if (!in || !in->IsConst() || !(*sizes)[j].IsConst() || in->ConstValue() == 0) {
          scale.reset();
          break;
        }
        const double s = static_cast<double>((*sizes)[j].ConstValue()) / in->ConstValue();
        scale = !scale ? s : (policy == "not_larger" ? std::min(*scale, s) : std::max(*scale, s));
      }
      if (!scale) {
        all_fresh();
      } else {
        for (int a : axes) {
          const double v = std::floor(static_cast<double>(out[a]->ConstValue()) * *scale + 0.5);
          if (!(v >= 0 && v <= static_cast<double>(kMaxStaticDim))) {
            return absl::InvalidArgumentError("Resize output is too large");
          }
          out[a] = DimExpr::Const(static_cast<int64_t>(v));
        }
      }
    }
  } else {
    std::optional<std::vector<double>> scales;
    if (upsample && ctx.opset() < 9) {
      scales = ctx.AttrFloats("scales");
    } else if (GivenNonEmpty(ctx, scales_index)) {
      scales = ctx.InputFloats(scales_index);
    } else {
      return absl::InvalidArgumentError("one of scales and sizes is required");
    }
    if (scales && scales->size() != axes.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("scales has ", scales->size(), " entries for ", axes.size(), " axes"));
    }
    for (size_t j = 0; j < axes.size(); ++j) {
      const int a = axes[j];
      std::optional<DimExpr> d;
      if (scales && out[a]) {
        if (!((*scales)[j] > 0)) return absl::InvalidArgumentError("scales must be positive");
        d = ScaleDim(ctx.dims(), *out[a], (*scales)[j]);
      }
      out[a] = d ? *d : ctx.FreshDim(0, a);
    }
  }
  ctx.SetOutput(0, TensorType::Of(x->dtype, std::move(out)));
  return absl::OkStatus();
}

// ---- Quantisation -------------------------------------------------------------------------------

absl::Status QuantizeRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  vm::DType dtype = vm::DType::kU8;
  if (ctx.has_input(2)) {
    dtype = ctx.input_type(2)->tensor.dtype;
  } else if (ctx.opset() >= 21 && ctx.AttrInt("output_dtype", 0) != 0) {
    NIMBLE_ASSIGN_OR_RETURN(dtype, vm::DTypeFromOnnx(ctx.AttrInt("output_dtype", 0)));
  }
  ctx.SetOutput(0, TensorType{dtype, x->dims});
  return absl::OkStatus();
}

absl::Status DequantizeRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* scale, ctx.InputTensor(1));
  ctx.SetOutput(0, TensorType{scale->dtype, x->dims});
  return absl::OkStatus();
}

absl::Status DynamicQuantizeRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  ctx.SetOutput(0, TensorType{vm::DType::kU8, x->dims});
  ctx.SetOutput(1, TensorType::Static(vm::DType::kF32, {}));
  ctx.SetOutput(2, TensorType::Static(vm::DType::kU8, {}));
  return absl::OkStatus();
}

// ---- Less common operators ----------------------------------------------------------------------

// The optimizers of ai.onnx.preview.training (Adagrad, Momentum, Adam): inputs R, T, then
// `groups` lists of n tensors (X, G, and the op's state lists); outputs the new X and state
// lists, each tensor typed like its input.
TypeRelation OptimizerRelation(int groups) {
  return [groups](InferenceContext& ctx) -> absl::Status {
    const int lists = ctx.num_inputs() - 2;
    if (lists <= 0 || lists % groups != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "needs R, T and ", groups, " lists of equal length, got ", ctx.num_inputs(), " inputs"));
    }
    const int n = lists / groups;
    if (ctx.num_outputs() != (groups - 1) * n) {
      return absl::InvalidArgumentError(absl::StrCat("needs ", (groups - 1) * n, " outputs, got ",
                                                     ctx.num_outputs()));
    }
    int out = 0;
    for (int g = 0; g < groups; ++g) {
      if (g == 1) continue;  // the gradients
      for (int j = 0; j < n; ++j) {
        NIMBLE_ASSIGN_OR_RETURN(const TensorType* t, ctx.InputTensor(2 + g * n + j));
        ctx.SetOutput(out++, *t);
      }
    }
    return absl::OkStatus();
  };
}

absl::Status DetRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  if (!x->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, std::nullopt));
    return absl::OkStatus();
  }
  if (x->rank() < 2) return absl::InvalidArgumentError("Det needs rank >= 2");
  const std::vector<Dim>& d = *x->dims;
  NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual(d[d.size() - 2], d.back(), "Det of a square matrix"));
  ctx.SetOutput(0, TensorType::Of(x->dtype, std::vector<Dim>(d.begin(), d.end() - 2)));
  return absl::OkStatus();
}

absl::Status MaxUnpoolRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  if (ctx.has_input(2)) {
    std::optional<std::vector<DimExpr>> shape = ctx.InputSymbolicValue(2);
    if (!shape) {
      ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype,
                                   x->has_rank() ? std::optional<int>(x->rank()) : std::nullopt));
      return absl::OkStatus();
    }
    std::vector<Dim> dims;
    for (const DimExpr& v : *shape) {
      NIMBLE_ASSIGN_OR_RETURN(DimExpr d, DimFromValue(v, "MaxUnpool output_shape"));
      dims.push_back(d);
    }
    ctx.SetOutput(0, TensorType::Of(x->dtype, std::move(dims)));
    return absl::OkStatus();
  }
  if (!x->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, std::nullopt));
    return absl::OkStatus();
  }
  if (x->rank() < 3) return absl::InvalidArgumentError("MaxUnpool needs rank >= 3");
  const int spatial = x->rank() - 2;
  NIMBLE_ASSIGN_OR_RETURN(WindowAttrs win, GetWindowAttrs(ctx, spatial, nullptr));
  std::vector<Dim> out{(*x->dims)[0], (*x->dims)[1]};
  for (int i = 0; i < spatial; ++i) {
    const Dim& in = (*x->dims)[i + 2];
    out.push_back(in ? Dim((*in - DimExpr::Const(1)) * DimExpr::Const(win.strides[i]) +
                           *win.kernel[i] - DimExpr::Const(win.pads[i] + win.pads[i + spatial]))
                     : Dim());
  }
  ctx.SetOutput(0, TensorType::Of(x->dtype, std::move(out)));
  return absl::OkStatus();
}

absl::Status GridSampleRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* grid, ctx.InputTensor(1));
  if (!x->has_rank() || !grid->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, std::nullopt));
    return absl::OkStatus();
  }
  if (x->rank() < 3 || grid->rank() != x->rank()) {
    return absl::InvalidArgumentError("GridSample needs X [N, C, ...] and grid [N, ..., r]");
  }
  NIMBLE_RETURN_IF_ERROR(
      ctx.RequireEqual((*grid->dims)[0], (*x->dims)[0], "GridSample batch of grid vs X"));
  std::vector<Dim> out{(*x->dims)[0], (*x->dims)[1]};
  out.insert(out.end(), grid->dims->begin() + 1, grid->dims->end() - 1);
  ctx.SetOutput(0, TensorType::Of(x->dtype, std::move(out)));
  return absl::OkStatus();
}

absl::Status RoiAlignRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* rois, ctx.InputTensor(1));
  const Dim c = x->has_rank() && x->rank() == 4 ? (*x->dims)[1] : Dim();
  const Dim n = rois->has_rank() && rois->rank() == 2 ? (*rois->dims)[0] : Dim();
  const int64_t h = ctx.AttrInt("output_height", 1), w = ctx.AttrInt("output_width", 1);
  if (h <= 0 || w <= 0 || h > kMaxStaticDim || w > kMaxStaticDim) {
    return absl::InvalidArgumentError("output_height and output_width must be positive");
  }
  ctx.SetOutput(0, TensorType::Of(x->dtype, {n, c, DimExpr::Const(h), DimExpr::Const(w)}));
  return absl::OkStatus();
}

// NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss: per-element losses shaped like the
// target, or a scalar when reduced; SoftmaxCrossEntropyLoss also returns log_prob.
absl::Status LossRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* scores, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* target, ctx.InputTensor(1));
  const std::string reduction = ctx.AttrString("reduction", "mean");
  if (reduction != "none" && reduction != "sum" && reduction != "mean") {
    return absl::InvalidArgumentError(absl::StrCat("unknown reduction '", reduction, "'"));
  }
  ctx.SetOutput(0, reduction == "none" ? TensorType{scores->dtype, target->dims}
                                       : TensorType::Static(scores->dtype, {}));
  ctx.SetOutput(1, *scores);
  return absl::OkStatus();
}

// Attention (opset 23): Q, K, V as [batch, heads, seq, head_size] or [batch, seq, hidden] with
// q_num_heads / kv_num_heads; optional past key/value are concatenated along the sequence.
absl::Status AttentionRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* q, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* k, ctx.InputTensor(1));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* v, ctx.InputTensor(2));
  NIMBLE_RETURN_IF_ERROR(RequireSameDType(ctx, {0, 1, 2}));
  const vm::DType dtype = q->dtype;
  if (!q->has_rank() || !k->has_rank() || !v->has_rank()) {
    for (int i = 0; i < 4; ++i) ctx.SetOutput(i, FreshTensor(ctx, i, dtype, std::nullopt));
    return absl::OkStatus();
  }
  if (q->rank() != k->rank() || q->rank() != v->rank() || (q->rank() != 3 && q->rank() != 4)) {
    return absl::InvalidArgumentError("Q, K and V must all be 3-D or all 4-D");
  }
  const std::vector<Dim>&qd = *q->dims, &kd = *k->dims, &vd = *v->dims;
  Dim batch = qd[0], q_heads, kv_heads, q_seq, kv_seq, head, v_head;
  if (q->rank() == 4) {
    q_heads = qd[1], q_seq = qd[2], head = qd[3];
    kv_heads = kd[1], kv_seq = kd[2], v_head = vd[3];
    NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual(kd[3], head, "Attention head size of K vs Q"));
    NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual(vd[1], kv_heads, "Attention heads of V vs K"));
    NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual(vd[2], kv_seq, "Attention sequence of V vs K"));
  } else {
    const int64_t qn = ctx.AttrInt("q_num_heads", 0), kvn = ctx.AttrInt("kv_num_heads", 0);
    if (qn <= 0 || kvn <= 0 || qn > kMaxStaticDim || kvn > kMaxStaticDim) {
      return absl::InvalidArgumentError("3-D Attention needs q_num_heads and kv_num_heads");
    }
    q_heads = DimExpr::Const(qn), kv_heads = DimExpr::Const(kvn);
    q_seq = qd[1], kv_seq = kd[1];
    auto per_head = [&](const Dim& hidden, int64_t heads, const char* what) -> absl::StatusOr<Dim> {
      if (!hidden) return Dim();
      if (std::optional<DimExpr> e = ExactDiv(*hidden, DimExpr::Const(heads))) return Dim(*e);
      NIMBLE_RETURN_IF_ERROR(
          ctx.RequireEqual(ctx.dims().Mod(*hidden, DimExpr::Const(heads)), DimExpr(), what));
      return Dim(ctx.dims().FloorDiv(*hidden, DimExpr::Const(heads)));
    };
    if (ctx.AttrInt("qkv_packed", 0) != 0) {
      // Q, K and V are column ranges of one [batch, seq, (qn + 2 kvn) * head] tensor.
      if (ctx.has_input(4) || ctx.has_input(5)) {
        return absl::InvalidArgumentError("packed QKV Attention takes no past key/values");
      }
      NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual(kd[2], qd[2], "packed Attention K vs Q width"));
      NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual(vd[2], qd[2], "packed Attention V vs Q width"));
      NIMBLE_ASSIGN_OR_RETURN(head, per_head(qd[2], qn + 2 * kvn,
                                             "packed Attention width / (q + 2 kv heads)"));
      v_head = head;
    } else {
      NIMBLE_ASSIGN_OR_RETURN(head, per_head(qd[2], qn, "Attention Q hidden size / q_num_heads"));
      NIMBLE_ASSIGN_OR_RETURN(Dim k_head,
                              per_head(kd[2], kvn, "Attention K hidden / kv_num_heads"));
      NIMBLE_ASSIGN_OR_RETURN(v_head, per_head(vd[2], kvn, "Attention V hidden / kv_num_heads"));
      NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual(k_head, head, "Attention head size of K vs Q"));
    }
    NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual(vd[1], kv_seq, "Attention sequence of V vs K"));
  }
  NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual(kd[0], batch, "Attention batch of K vs Q"));
  Dim total = kv_seq;
  if (ctx.has_input(4)) {
    NIMBLE_ASSIGN_OR_RETURN(const TensorType* past, ctx.InputTensor(4));
    const Dim past_seq = past->has_rank() && past->rank() == 4 ? (*past->dims)[2] : Dim();
    total = past_seq && kv_seq ? CheckedAdd(*past_seq, *kv_seq) : std::nullopt;
  }
  auto times = [](const Dim& a, const Dim& b) { return a && b ? CheckedMul(*a, *b) : Dim(); };
  if (q->rank() == 4) {
    ctx.SetOutput(0, TensorType::Of(dtype, {batch, q_heads, q_seq, v_head}));
  } else {
    ctx.SetOutput(0, TensorType::Of(dtype, {batch, q_seq, times(q_heads, v_head)}));
  }
  ctx.SetOutput(1, TensorType::Of(dtype, {batch, kv_heads, total, head}));
  ctx.SetOutput(2, TensorType::Of(dtype, {batch, kv_heads, total, v_head}));
  ctx.SetOutput(3, TensorType::Of(dtype, {batch, q_heads, q_seq, total}));
  return absl::OkStatus();
}

// CausalConvWithState (opset 27): input [B, C, L], weight [C, 1, k]; output like input and
// present_state [B, C, k - 1].
absl::Status CausalConvWithStateRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* w, ctx.InputTensor(1));
  NIMBLE_RETURN_IF_ERROR(RequireSameDType(ctx, {0, 1, 2, 3}));
  const std::string act = ctx.AttrString("activation", "none");
  if (act != "none" && act != "silu" && act != "swish") {
    return absl::InvalidArgumentError(
        absl::StrCat("activation '", act, "' is not one of none, silu, swish"));
  }
  if (x->has_rank() && x->rank() != 3) {
    return absl::InvalidArgumentError(
        "CausalConvWithState input must be [batch, channels, length]");
  }
  if (w->has_rank() && w->rank() != 3) {
    return absl::InvalidArgumentError("CausalConvWithState weight must be [channels, 1, k]");
  }
  Dim batch, channels, state;
  if (x->has_rank()) batch = (*x->dims)[0], channels = (*x->dims)[1];
  if (w->has_rank()) {
    NIMBLE_RETURN_IF_ERROR(
        ctx.RequireEqual((*w->dims)[1], DimExpr::Const(1), "CausalConvWithState weight dim 1"));
    if (const Dim& k = (*w->dims)[2]) state = *k - DimExpr::Const(1);
    if (x->has_rank()) {
      NIMBLE_RETURN_IF_ERROR(
          ctx.RequireEqual((*w->dims)[0], channels, "CausalConvWithState weight vs channels"));
    }
  }
  ctx.SetOutput(0, TensorType{x->dtype, x->dims});
  ctx.SetOutput(1, TensorType::Of(x->dtype, {batch, channels, state}));
  return absl::OkStatus();
}

// LinearAttention (opset 27): query [B, T, Hq * dk], key [B, T, Hkv * dk], value [B, T, Hkv * dv]
// give output [B, T, Hq * dv] and present_state [B, Hkv, dk, dv] (typed like past_state when
// given, else like the query).
absl::Status LinearAttentionRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* q, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* k, ctx.InputTensor(1));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* v, ctx.InputTensor(2));
  NIMBLE_RETURN_IF_ERROR(RequireSameDType(ctx, {0, 1, 2, 4, 5}));
  const int64_t qn = ctx.AttrInt("q_num_heads", 0), kvn = ctx.AttrInt("kv_num_heads", 0);
  if (qn <= 0 || kvn <= 0 || qn > kMaxStaticDim || qn % kvn != 0) {
    return absl::InvalidArgumentError(
        "LinearAttention needs q_num_heads a positive multiple of kv_num_heads");
  }
  const std::string rule = ctx.AttrString("update_rule", "gated_delta");
  if (rule != "linear" && rule != "gated" && rule != "delta" && rule != "gated_delta") {
    return absl::InvalidArgumentError(absl::StrCat("unknown update_rule '", rule, "'"));
  }
  vm::DType state_dtype = q->dtype;
  if (ctx.has_input(3)) {
    NIMBLE_ASSIGN_OR_RETURN(const TensorType* past, ctx.InputTensor(3));
    state_dtype = past->dtype;
  }
  for (const TensorType* t : {q, k, v}) {
    if (t->has_rank() && t->rank() != 3) {
      return absl::InvalidArgumentError("LinearAttention query, key and value must be 3-D");
    }
  }
  auto per_head = [&](const TensorType* t, int64_t heads, const char* what) -> absl::StatusOr<Dim> {
    if (!t->has_rank() || !(*t->dims)[2]) return Dim();
    const DimExpr& hidden = *(*t->dims)[2];
    if (std::optional<DimExpr> e = ExactDiv(hidden, DimExpr::Const(heads))) return Dim(*e);
    NIMBLE_RETURN_IF_ERROR(
        ctx.RequireEqual(ctx.dims().Mod(hidden, DimExpr::Const(heads)), DimExpr(), what));
    return Dim(ctx.dims().FloorDiv(hidden, DimExpr::Const(heads)));
  };
  NIMBLE_ASSIGN_OR_RETURN(Dim dk, per_head(q, qn, "LinearAttention query width / q_num_heads"));
  NIMBLE_ASSIGN_OR_RETURN(Dim kdk, per_head(k, kvn, "LinearAttention key width / kv_num_heads"));
  NIMBLE_ASSIGN_OR_RETURN(Dim dv, per_head(v, kvn, "LinearAttention value width / kv_num_heads"));
  NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual(kdk, dk, "LinearAttention head size of key vs query"));
  Dim batch, seq;
  if (q->has_rank()) batch = (*q->dims)[0], seq = (*q->dims)[1];
  Dim width = dv ? CheckedMul(*dv, DimExpr::Const(qn)) : Dim();
  ctx.SetOutput(0, TensorType::Of(q->dtype, {batch, seq, width}));
  ctx.SetOutput(1, TensorType::Of(state_dtype, {batch, DimExpr::Const(kvn), dk, dv}));
  return absl::OkStatus();
}

// FlexAttention (ai.onnx.preview, opset 1): Q [B, Hq, L, E], K [B, Hkv, S, E], V [B, Hkv, S, Ev]
// -> Y [B, Hq, L, Ev]. The expand-flex-attention pass splits a node with score_mod / prob_mod
// graphs into flex_stage 1 (Q, K -> scores [B, Hq, L, S]) and 2 (P [B, Hq, L, S], V -> Y).
absl::Status FlexAttentionRelation(InferenceContext& ctx) {
  if (!ctx.node().subgraphs().empty()) {
    return absl::UnimplementedError(absl::StrCat(
        "FlexAttention graph attribute '", ctx.node().subgraphs().begin()->first,
        "' was not expanded (only score_mod and prob_mod, inlined by expand-flex-attention)"));
  }
  const int64_t stage = ctx.AttrInt("flex_stage", 0);
  if (stage < 0 || stage > 2) {
    return absl::InvalidArgumentError(absl::StrCat("flex_stage ", stage, " is not 0..2"));
  }
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* a, ctx.InputTensor(0));
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* b, ctx.InputTensor(1));
  NIMBLE_RETURN_IF_ERROR(RequireSameDType(ctx, {0, 1, 2}));
  for (int i = 0; i < (stage == 0 ? 3 : 2); ++i) {
    NIMBLE_ASSIGN_OR_RETURN(const TensorType* t, ctx.InputTensor(i));
    if (t->has_rank() && t->rank() != 4) {
      return absl::InvalidArgumentError("FlexAttention inputs must be 4-D");
    }
  }
  Dim batch, heads, len, last;
  if (a->has_rank()) batch = (*a->dims)[0], heads = (*a->dims)[1], len = (*a->dims)[2];
  if (stage == 0) {
    NIMBLE_ASSIGN_OR_RETURN(const TensorType* v, ctx.InputTensor(2));
    if (v->has_rank()) last = (*v->dims)[3];
  } else if (b->has_rank()) {
    last = (*b->dims)[stage == 1 ? 2 : 3];
  }
  if (stage != 2 && a->has_rank() && b->has_rank()) {
    NIMBLE_RETURN_IF_ERROR(
        ctx.RequireEqual((*b->dims)[3], (*a->dims)[3], "FlexAttention head size of K vs Q"));
  }
  ctx.SetOutput(0, TensorType::Of(a->dtype, {batch, heads, len, last}));
  return absl::OkStatus();
}

absl::Status AffineGridRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* theta, ctx.InputTensor(0));
  NIMBLE_RETURN_IF_ERROR(ctx.InputTensor(1).status());
  std::optional<std::vector<DimExpr>> size = ctx.InputSymbolicValue(1);
  if (!size || (size->size() != 4 && size->size() != 5)) {
    std::optional<int> rank;
    if (theta->has_rank() && theta->rank() == 3 && (*theta->dims)[1] &&
        (*theta->dims)[1]->IsConst()) {
      rank = static_cast<int>((*theta->dims)[1]->ConstValue()) + 2;  // [N, spatial..., nd]
    }
    ctx.SetOutput(0, FreshTensor(ctx, 0, theta->dtype, rank));
    return absl::OkStatus();
  }
  std::vector<Dim> out;
  for (size_t i = 0; i < size->size(); ++i) {
    if (i == 1) continue;  // C
    NIMBLE_ASSIGN_OR_RETURN(DimExpr d, DimFromValue((*size)[i], "AffineGrid size"));
    out.push_back(d);
  }
  out.push_back(DimExpr::Const(static_cast<int64_t>(size->size()) - 2));
  ctx.SetOutput(0, TensorType::Of(theta->dtype, std::move(out)));
  return absl::OkStatus();
}

absl::Status Col2ImRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  std::optional<std::vector<DimExpr>> image = ctx.InputSymbolicValue(1);
  std::optional<std::vector<DimExpr>> block = ctx.InputSymbolicValue(2);
  if (!image || !block || !x->has_rank() || x->rank() != 3 || image->size() != block->size()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype,
                                 image ? std::optional<int>(static_cast<int>(image->size()) + 2)
                                       : std::nullopt));
    return absl::OkStatus();
  }
  DimExpr prod = DimExpr::Const(1);
  for (const DimExpr& b : *block) {
    std::optional<DimExpr> next = CheckedMul(prod, b);
    if (!next) return absl::InvalidArgumentError("block_shape overflows");
    prod = *next;
  }
  Dim c;
  if (const Dim& cb = (*x->dims)[1]) {
    if (std::optional<DimExpr> q = ExactDiv(*cb, prod)) {
      c = *q;
    } else {
      NIMBLE_RETURN_IF_ERROR(ctx.RequireEqual(ctx.dims().Mod(*cb, prod), DimExpr(),
                                              "Col2Im channels divide by the block size"));
      c = ctx.dims().FloorDiv(*cb, prod);
    }
  }
  std::vector<Dim> out{(*x->dims)[0], c};
  for (const DimExpr& d : *image) {
    NIMBLE_ASSIGN_OR_RETURN(DimExpr v, DimFromValue(d, "Col2Im image_shape"));
    out.push_back(v);
  }
  ctx.SetOutput(0, TensorType::Of(x->dtype, std::move(out)));
  return absl::OkStatus();
}

absl::Status CenterCropPadRelation(InferenceContext& ctx) {
  NIMBLE_ASSIGN_OR_RETURN(const TensorType* x, ctx.InputTensor(0));
  std::optional<std::vector<DimExpr>> shape = ctx.InputSymbolicValue(1);
  if (!x->has_rank()) {
    ctx.SetOutput(0, FreshTensor(ctx, 0, x->dtype, std::nullopt));
    return absl::OkStatus();
  }
  std::vector<int> axes;
  if (std::optional<std::vector<int64_t>> a = ctx.AttrInts("axes")) {
    for (int64_t v : *a) {
      NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(v, x->rank()));
      axes.push_back(axis);
    }
  } else {
    for (int a = 0; a < x->rank(); ++a) axes.push_back(a);
  }
  std::vector<Dim> out = *x->dims;
  if (shape && shape->size() != axes.size()) {
    return absl::InvalidArgumentError("CenterCropPad shape does not match the axes");
  }
  for (size_t j = 0; j < axes.size(); ++j) {
    if (!shape) {
      out[axes[j]] = ctx.FreshDim(0, axes[j]);
      continue;
    }
    NIMBLE_ASSIGN_OR_RETURN(DimExpr d, DimFromValue((*shape)[j], "CenterCropPad shape"));
    out[axes[j]] = d;
  }
  ctx.SetOutput(0, TensorType::Of(x->dtype, std::move(out)));
  return absl::OkStatus();
}

}  // namespace

void RegisterNnRelations(RelationRegistry& r) {
  r.Register("", "MatMul", MatMulRelation);
  r.Register("", "MatMulInteger", MatMulIntegerRelation);
  r.Register("", "QLinearMatMul", QLinearMatMulRelation);
  r.Register("", "Gemm", GemmRelation);
  r.Register("", "Conv", ConvRelation);
  r.Register("", "ConvInteger",
             [](InferenceContext& ctx) { return ConvShape(ctx, 0, 1, vm::DType::kI32); });
  r.Register("", "DeformConv", ConvRelation);
  r.Register("", "QLinearConv", [](InferenceContext& ctx) -> absl::Status {
    NIMBLE_ASSIGN_OR_RETURN(const TensorType* zp, ctx.InputTensor(7));
    return ConvShape(ctx, 0, 3, zp->dtype);
  });
  r.Register("", "ConvTranspose", ConvTransposeRelation);
  for (const char* op : {"MaxPool", "AveragePool", "LpPool"}) r.Register("", op, PoolRelation);
  for (const char* op : {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}) {
    r.Register("", op, GlobalPoolRelation);
  }
  r.Register("", "BatchNormalization", BatchNormRelation);
  r.Register("", "LayerNormalization", LayerNormRelation);
  for (const char* op : {"InstanceNormalization", "GroupNormalization", "RMSNormalization", "LRN",
                         "MeanVarianceNormalization"}) {
    r.Register("", op, SameShapeRelation);
  }
  for (const char* op : {"Softmax", "LogSoftmax", "Hardmax"}) r.Register("", op, SoftmaxRelation);
  r.Register("", "LSTM", [](InferenceContext& ctx) { return RecurrentRelation(ctx, 4); });
  r.Register("", "GRU", [](InferenceContext& ctx) { return RecurrentRelation(ctx, 3); });
  r.Register("", "RNN", [](InferenceContext& ctx) { return RecurrentRelation(ctx, 1); });
  r.Register("", "Resize", ResizeRelation);
  r.Register("", "Upsample", ResizeRelation);
  r.Register("", "QuantizeLinear", QuantizeRelation);
  r.Register("", "DequantizeLinear", DequantizeRelation);
  r.Register("", "DynamicQuantizeLinear", DynamicQuantizeRelation);
  r.Register("", "Det", DetRelation);
  r.Register("ai.onnx.preview.training", "Adagrad", OptimizerRelation(3));
  r.Register("ai.onnx.preview.training", "Momentum", OptimizerRelation(3));
  r.Register("ai.onnx.preview.training", "Adam", OptimizerRelation(4));
  for (const char* op : {"LpNormalization", "RotaryEmbedding", "Swish"}) {
    r.Register("", op, SameShapeRelation);
  }
  r.Register("", "MaxUnpool", MaxUnpoolRelation);
  r.Register("", "GridSample", GridSampleRelation);
  r.Register("", "RoiAlign", RoiAlignRelation);
  r.Register("", "NegativeLogLikelihoodLoss", LossRelation);
  r.Register("", "SoftmaxCrossEntropyLoss", LossRelation);
  r.Register("", "Attention", AttentionRelation);
  r.Register("", "CausalConvWithState", CausalConvWithStateRelation);
  r.Register("", "LinearAttention", LinearAttentionRelation);
  r.Register("ai.onnx.preview", "FlexAttention", FlexAttentionRelation);
  r.Register("", "AffineGrid", AffineGridRelation);
  r.Register("", "Col2Im", Col2ImRelation);
  r.Register("", "CenterCropPad", CenterCropPadRelation);
}

}  // namespace nimble::compiler
