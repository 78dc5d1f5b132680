// Attention (ONNX opset 23/24): scaled dot-product attention in one kernel. The compiler's
// fuse-attention pass also rewrites the MatMul/Scale/Add/Softmax/MatMul chains that exporters
// emit into this op, so BERT- and GPT-style models run here too.
//
// Work is split into (batch, head, block of query rows) tasks over TBB; each task computes its
// block of scores with one single-threaded sgemm against the whole key sequence, applies
// softcap, the additive/boolean mask, the causal frontier and the key padding row by row with
// the softmax, and multiplies by V with a second sgemm straight into the output. Scores never
// exist for more than one block per task, and 3-D [batch, seq, heads * head_size] inputs and
// outputs are read and written in place through strides (no transposes).
//
// LinearAttention (opset 27) is the recurrent form: one [dk, dv] state per (batch, kv head),
// updated token by token (linear / gated / delta / gated_delta rules) and read by the query
// heads that share it. Tasks are (batch, kv head) pairs; the state lives in f32 throughout.
//
// FlexAttention (ai.onnx.preview) without its modifier graphs is plain softmax(scale Q K^T) V on
// 4-D inputs: a direct loop per (batch, query head), in double for f64 inputs.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vm/kernels/cpu/cpu_kernels.h"
#include "vm/kernels/cpu/elementwise_internal.h"
#include "vm/kernels/cpu/fp16.h"
#include "vm/kernels/cpu/onednn_util.h"
#include "vm/kernels/kernel.h"

namespace nimble::vm::cpu {
namespace {

using kernel_util::CheckArity;
using kernel_util::CheckDefined;
using kernel_util::Present;

// A [batch, heads, seq, dim] view of a 4-D tensor or of a 3-D [batch, seq, heads * dim] one.
struct HeadView {
  const float* data = nullptr;
  int64_t batch = 0, heads = 0, seq = 0, dim = 0;
  int64_t sb = 0, sh = 0, ss = 0;  // strides in elements; dim is contiguous
  const float* Row(int64_t b, int64_t h, int64_t s) const {
    return data + b * sb + h * sh + s * ss;
  }
};

absl::StatusOr<HeadView> ViewHeads(const Tensor& t, const float* data, int64_t heads,
                                   const char* what) {
  HeadView v;
  v.data = data;
  if (t.rank() == 4) {
    v.batch = t.dim(0), v.heads = t.dim(1), v.seq = t.dim(2), v.dim = t.dim(3);
    v.ss = v.dim, v.sh = v.seq * v.dim, v.sb = v.heads * v.sh;
    return v;
  }
  if (t.rank() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("Attention: ", what, " must be 3-D or 4-D, got ", t.TypeString()));
  }
  if (heads <= 0 || t.dim(2) % heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("Attention: ", what, " ", t.TypeString(),
                                                   " does not split into ", heads, " heads"));
  }
  v.batch = t.dim(0), v.heads = heads, v.seq = t.dim(1), v.dim = t.dim(2) / heads;
  v.sh = v.dim, v.ss = heads * v.dim, v.sb = v.seq * v.ss;
  return v;
}

// Heads [col_offset, col_offset + heads * dim) of a 3-D [batch, seq, width] tensor (packed QKV).
HeadView PackedHeads(const Tensor& t, const float* data, int64_t heads, int64_t dim,
                     int64_t col_offset) {
  HeadView v;
  v.data = data + col_offset;
  v.batch = t.dim(0), v.heads = heads, v.seq = t.dim(1), v.dim = dim;
  v.sh = dim, v.ss = t.dim(2), v.sb = v.seq * v.ss;
  return v;
}

struct Config {
  // Not ONNX: Q, K and V are column ranges [Q | K | V] of one 3-D tensor (compiler pass
  // pack-qkv), passed as all three inputs.
  bool qkv_packed = false;
  int64_t q_num_heads = 0, kv_num_heads = 0;
  bool is_causal = false;
  double scale = 0;  // 0: 1/sqrt(head_size)
  double softcap = 0;
  // Not ONNX: what a false entry of a bool mask puts in the scores (ONNX: -inf). The
  // fuse-attention pass sets it for Where(cond, c, scores) masks, where masked scores become c.
  double mask_fill = -std::numeric_limits<double>::infinity();
  // Not ONNX: a numeric mask adds mask_offset + mask_scale * mask, and may then also be i64 or
  // i32 (the fuse-attention-mask pass folds BERT's (1 - Cast(mask)) * c into these).
  double mask_scale = 1.0, mask_offset = 0.0;
  int64_t qk_mode = -1;

  bool MaskIsAffine() const { return mask_scale != 1.0 || mask_offset != 0.0; }
};

bool IsIntegerMask(DType d) { return d == DType::kI64 || d == DType::kI32; }

// Everything a call needs, derived from the input shapes (shared by OutputShapes and Run).
struct Plan {
  int64_t batch = 0, q_heads = 0, kv_heads = 0, q_seq = 0, kv_seq = 0, past = 0, total = 0;
  int64_t head = 0, v_head = 0;
  bool three_d = false;
  Shape y, present_k, present_v, qk;
};

absl::StatusOr<Plan> MakePlan(const Config& c, absl::Span<const Tensor> in) {
  NIMBLE_RETURN_IF_ERROR(CheckArity("Attention", in.size(), 3, 7));
  for (size_t i = 0; i < 3; ++i) {
    NIMBLE_RETURN_IF_ERROR(CheckDefined("Attention", in, i, i == 0 ? "Q" : i == 1 ? "K" : "V"));
  }
  const Tensor &q = in[0], &k = in[1], &v = in[2];
  if (q.rank() != k.rank() || q.rank() != v.rank() || (q.rank() != 3 && q.rank() != 4)) {
    return absl::InvalidArgumentError(absl::StrCat("Attention: Q ", q.TypeString(), ", K ",
                                                   k.TypeString(), ", V ", v.TypeString(),
                                                   " must all be 3-D or all 4-D"));
  }
  if (k.dtype() != q.dtype() || v.dtype() != q.dtype()) {
    return absl::InvalidArgumentError("Attention: Q, K and V must have one dtype");
  }
  Plan p;
  p.three_d = q.rank() == 3;
  p.batch = q.dim(0);
  if (p.three_d) {
    if (c.q_num_heads <= 0 || c.kv_num_heads <= 0) {
      return absl::InvalidArgumentError("Attention: 3-D inputs need q_num_heads and kv_num_heads");
    }
    p.q_heads = c.q_num_heads, p.kv_heads = c.kv_num_heads;
    p.q_seq = q.dim(1), p.kv_seq = k.dim(1);
    if (c.qkv_packed) {
      const int64_t parts = p.q_heads + 2 * p.kv_heads;
      if (k.shape() != q.shape() || v.shape() != q.shape() || q.dim(2) % parts != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "Attention: packed QKV ", q.TypeString(), " does not split into ", p.q_heads,
            " query and 2 x ", p.kv_heads, " key/value heads"));
      }
      if (Present(in, 4) || Present(in, 5)) {
        return absl::InvalidArgumentError("Attention: packed QKV takes no past key/values");
      }
      p.head = p.v_head = q.dim(2) / parts;
    } else {
      if (q.dim(2) % p.q_heads || k.dim(2) % p.kv_heads || v.dim(2) % p.kv_heads) {
        return absl::InvalidArgumentError("Attention: hidden sizes do not split into the heads");
      }
      p.head = q.dim(2) / p.q_heads, p.v_head = v.dim(2) / p.kv_heads;
      if (k.dim(2) / p.kv_heads != p.head || v.dim(1) != p.kv_seq) {
        return absl::InvalidArgumentError(absl::StrCat("Attention: K ", k.TypeString(), " and V ",
                                                       v.TypeString(), " do not match Q ",
                                                       q.TypeString()));
      }
    }
  } else {
    p.q_heads = q.dim(1), p.kv_heads = k.dim(1), p.q_seq = q.dim(2), p.kv_seq = k.dim(2);
    p.head = q.dim(3), p.v_head = v.dim(3);
    if (k.dim(3) != p.head || v.dim(1) != p.kv_heads || v.dim(2) != p.kv_seq) {
      return absl::InvalidArgumentError(absl::StrCat("Attention: K ", k.TypeString(), " and V ",
                                                     v.TypeString(), " do not match Q ",
                                                     q.TypeString()));
    }
  }
  if (k.dim(0) != p.batch || v.dim(0) != p.batch) {
    return absl::InvalidArgumentError("Attention: Q, K and V batch sizes differ");
  }
  if (p.kv_heads <= 0 || p.q_heads % p.kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("Attention: ", p.q_heads,
                                                   " query heads are not a multiple of ",
                                                   p.kv_heads, " key/value heads"));
  }
  if (Present(in, 4) != Present(in, 5)) {
    return absl::InvalidArgumentError("Attention: past_key and past_value come together");
  }
  if (Present(in, 4)) {
    const Tensor &pk = in[4], &pv = in[5];
    if (pk.rank() != 4 || pv.rank() != 4 || pk.dim(0) != p.batch || pk.dim(1) != p.kv_heads ||
        pk.dim(3) != p.head || pv.dim(0) != p.batch || pv.dim(1) != p.kv_heads ||
        pv.dim(2) != pk.dim(2) || pv.dim(3) != p.v_head || pk.dtype() != q.dtype() ||
        pv.dtype() != q.dtype()) {
      return absl::InvalidArgumentError(absl::StrCat("Attention: past_key ", pk.TypeString(),
                                                     " / past_value ", pv.TypeString(),
                                                     " do not match K and V"));
    }
    p.past = pk.dim(2);
  }
  p.total = p.past + p.kv_seq;
  if (Present(in, 3)) {
    const Tensor& m = in[3];
    if (m.rank() < 2 || m.rank() > 4 ||
        (m.dtype() != DType::kBool && m.dtype() != q.dtype() && !IsIntegerMask(m.dtype()))) {
      return absl::InvalidArgumentError(absl::StrCat("Attention: attn_mask ", m.TypeString(),
                                                     " must be bool, i64, i32 or ",
                                                     DTypeName(q.dtype()), " of rank 2 to 4"));
    }
    if (m.dtype() == DType::kBool && c.MaskIsAffine()) {
      return absl::InvalidArgumentError(
          "Attention: mask_scale / mask_offset apply to numeric masks, not bool");
    }
    const int64_t want[4] = {p.batch, p.q_heads, p.q_seq, p.total};
    for (int i = 0; i < m.rank(); ++i) {
      const int axis = 4 - m.rank() + i;
      const int64_t d = m.dim(i);
      const bool ok = axis == 3 ? d <= p.total : (d == 1 || d == want[axis]);
      if (!ok) {
        return absl::InvalidArgumentError(
            absl::StrCat("Attention: attn_mask ", m.TypeString(), " does not broadcast to [",
                         p.batch, ", ", p.q_heads, ", ", p.q_seq, ", ", p.total, "]"));
      }
    }
  }
  if (Present(in, 6)) {
    const Tensor& n = in[6];
    if (n.dtype() != DType::kI64 || n.num_elements() != p.batch) {
      return absl::InvalidArgumentError(absl::StrCat("Attention: nonpad_kv_seqlen ", n.TypeString(),
                                                     " must be i64[", p.batch, "]"));
    }
  }
  if (p.three_d) {
    p.y = {p.batch, p.q_seq, p.q_heads * p.v_head};
  } else {
    p.y = {p.batch, p.q_heads, p.q_seq, p.v_head};
  }
  p.present_k = {p.batch, p.kv_heads, p.total, p.head};
  p.present_v = {p.batch, p.kv_heads, p.total, p.v_head};
  p.qk = {p.batch, p.q_heads, p.q_seq, p.total};
  return p;
}

// An f32 copy of a f16/bf16 tensor (or the tensor itself when already f32).
absl::StatusOr<Tensor> ToF32(const Tensor& t, Allocator* allocator) {
  if (!t.defined() || t.dtype() == DType::kF32 || t.dtype() == DType::kBool ||
      t.dtype() == DType::kI64) {
    return t;
  }
  NIMBLE_ASSIGN_OR_RETURN(Tensor out, Tensor::Empty(DType::kF32, t.shape(), allocator));
  if (t.dtype() == DType::kF16) {
    HalfToFloat(t.data<uint16_t>(), out.data<float>(), t.num_elements());
  } else if (t.dtype() == DType::kBF16) {
    BFloat16ToFloat(t.data<uint16_t>(), out.data<float>(), t.num_elements());
  } else {
    return absl::UnimplementedError(
        absl::StrCat("Attention: dtype ", DTypeName(t.dtype()), " is not supported"));
  }
  return out;
}

// offset + scale * mask as an f32 additive mask (the f16 / bf16 path computes in f32 too).
absl::StatusOr<Tensor> AffineMask(const Tensor& m, double scale, double offset,
                                  Allocator* allocator) {
  NIMBLE_ASSIGN_OR_RETURN(Tensor out, Tensor::Empty(DType::kF32, m.shape(), allocator));
  float* o = out.data<float>();
  const int64_t n = m.num_elements();
  const float a = static_cast<float>(scale), b = static_cast<float>(offset);
  if (m.dtype() == DType::kI64) {
    const int64_t* x = m.data<int64_t>();
    for (int64_t i = 0; i < n; ++i) o[i] = std::fma(a, static_cast<float>(x[i]), b);
  } else if (m.dtype() == DType::kI32) {
    const int32_t* x = m.data<int32_t>();
    for (int64_t i = 0; i < n; ++i) o[i] = std::fma(a, static_cast<float>(x[i]), b);
  } else {
    NIMBLE_ASSIGN_OR_RETURN(Tensor f, ToF32(m, allocator));
    const float* x = f.data<float>();
    for (int64_t i = 0; i < n; ++i) o[i] = std::fma(a, x[i], b);
  }
  return out;
}

void FromF32(const Tensor& f, const Tensor& out) {
  if (out.dtype() == DType::kF16) {
    FloatToHalf(f.data<float>(), out.data<uint16_t>(), f.num_elements());
  } else if (out.dtype() == DType::kBF16) {
    FloatToBFloat16(f.data<float>(), out.data<uint16_t>(), f.num_elements());
  }
}

// Concatenates past [B, H, P, D] and the new keys/values (a head view) into `dst` [B, H, T, D].
void Concat(const float* past, int64_t p, const HeadView& cur, float* dst) {
  const int64_t t = p + cur.seq;
  for (int64_t b = 0; b < cur.batch; ++b) {
    for (int64_t h = 0; h < cur.heads; ++h) {
      float* out = dst + (b * cur.heads + h) * t * cur.dim;
      if (p > 0) {
        std::memcpy(out, past + (b * cur.heads + h) * p * cur.dim,
                    static_cast<size_t>(p * cur.dim) * sizeof(float));
      }
      for (int64_t s = 0; s < cur.seq; ++s) {
        std::memcpy(out + (p + s) * cur.dim, cur.Row(b, h, s),
                    static_cast<size_t>(cur.dim) * sizeof(float));
      }
    }
  }
}

// One row of scores, in place: optional softcap, plus an optional contiguous float mask, then
// softmax over the first n entries (the caller zeroes the rest: keys past the causal frontier
// or the padding). SIMD per ISA (see elementwise_internal.h).
struct ScoreRowBody {
  template <int W>
  static NIMBLE_SIMD_INLINE void Run(float* row, const float* mask, int64_t n, float softcap) {
    using V = typename Simd<W>::F;
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    int64_t i = 0;
    if (softcap > 0) {
      const V c = SplatV<V>(softcap), inv = SplatV<V>(1.0f / softcap);
      for (; i + W <= n; i += W) StoreV(row + i, c * TanhV(LoadV<V>(row + i) * inv));
      for (; i < n; ++i) row[i] = softcap * std::tanh(row[i] / softcap);
    }
    V m0 = SplatV<V>(kNegInf);
    i = 0;
    if (mask != nullptr) {
      for (; i + W <= n; i += W) {
        const V x = LoadV<V>(row + i) + LoadV<V>(mask + i);
        StoreV(row + i, x);
        m0 = MaxV(m0, x);
      }
    } else {
      for (; i + W <= n; i += W) m0 = MaxV(m0, LoadV<V>(row + i));
    }
    float m = HorizontalMax(m0);
    for (; i < n; ++i) {
      if (mask != nullptr) row[i] += mask[i];
      m = std::max(m, row[i]);
    }
    const V vm = SplatV<V>(m);
    V s0 = SplatV<V>(0.f);
    i = 0;
    for (; i + W <= n; i += W) {
      const V e = ExpFastV(LoadV<V>(row + i) - vm);
      StoreV(row + i, e);
      s0 += e;
    }
    float sum = HorizontalSum(s0);
    for (; i < n; ++i) {
      row[i] = std::exp(row[i] - m);
      sum += row[i];
    }
    const float inv_sum = 1.0f / sum;
    const V inv = SplatV<V>(inv_sum);
    i = 0;
    for (; i + W <= n; i += W) StoreV(row + i, LoadV<V>(row + i) * inv);
    for (; i < n; ++i) row[i] *= inv_sum;
  }
};

class AttentionKernel final : public Kernel {
 public:
  explicit AttentionKernel(Config config) : c_(config) {}

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    NIMBLE_ASSIGN_OR_RETURN(Plan p, MakePlan(c_, inputs));
    const Shape* shapes[4] = {&p.y, &p.present_k, &p.present_v, &p.qk};
    for (size_t i = 0; i < output_shapes.size() && i < 4; ++i) output_shapes[i] = *shapes[i];
    return absl::OkStatus();
  }

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(Plan p, MakePlan(c_, inputs));
    if (outputs.empty() || outputs.size() > 4) {
      return absl::InvalidArgumentError("Attention: 1 to 4 outputs");
    }
    const Shape* shapes[4] = {&p.y, &p.present_k, &p.present_v, &p.qk};
    const DType dtype = inputs[0].dtype();
    // An integer or scaled mask becomes the additive f32 mask it stands for.
    std::vector<Tensor> with_mask;
    if (Present(inputs, 3) && (IsIntegerMask(inputs[3].dtype()) ||
                               (inputs[3].dtype() != DType::kBool && c_.MaskIsAffine()))) {
      with_mask.assign(inputs.begin(), inputs.end());
      NIMBLE_ASSIGN_OR_RETURN(with_mask[3],
                              AffineMask(inputs[3], c_.mask_scale, c_.mask_offset, ctx.allocator));
      inputs = with_mask;
    }
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (!outputs[i].defined()) continue;
      if (outputs[i].shape() != *shapes[i] || outputs[i].dtype() != dtype) {
        return absl::InvalidArgumentError(
            absl::StrCat("Attention: output ", i, " is ", outputs[i].TypeString(), ", expected ",
                         DTypeName(dtype), ShapeToString(*shapes[i])));
      }
    }
    if (dtype == DType::kF32) return RunF32(ctx, p, inputs, outputs);
    // f16 / bf16: compute in f32.
    std::vector<Tensor> in32, out32;
    for (const Tensor& t : inputs) {
      NIMBLE_ASSIGN_OR_RETURN(Tensor f, ToF32(t, ctx.allocator));
      in32.push_back(std::move(f));
    }
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (!outputs[i].defined()) {
        out32.emplace_back();
        continue;
      }
      NIMBLE_ASSIGN_OR_RETURN(Tensor f, Tensor::Empty(DType::kF32, *shapes[i], ctx.allocator));
      out32.push_back(std::move(f));
    }
    NIMBLE_RETURN_IF_ERROR(RunF32(ctx, p, in32, absl::MakeSpan(out32)));
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (outputs[i].defined()) FromF32(out32[i], outputs[i]);
    }
    return absl::OkStatus();
  }

 private:
  absl::Status RunF32(const KernelContext& ctx, const Plan& p, absl::Span<const Tensor> in,
                      absl::Span<Tensor> out) const {
    const Tensor* present_k = out.size() > 1 && out[1].defined() ? &out[1] : nullptr;
    const Tensor* present_v = out.size() > 2 && out[2].defined() ? &out[2] : nullptr;
    const Tensor* qk_out =
        out.size() > 3 && out[3].defined() && c_.qk_mode >= 0 ? &out[3] : nullptr;
    if (out.size() > 3 && out[3].defined() && c_.qk_mode < 0) {
      std::fill_n(out[3].data<float>(), out[3].num_elements(), 0.0f);
    }
    HeadView q, k, v;
    if (c_.qkv_packed) {
      q = PackedHeads(in[0], in[0].data<float>(), p.q_heads, p.head, 0);
      k = PackedHeads(in[1], in[1].data<float>(), p.kv_heads, p.head, p.q_heads * p.head);
      v = PackedHeads(in[2], in[2].data<float>(), p.kv_heads, p.head,
                      (p.q_heads + p.kv_heads) * p.head);
    } else {
      NIMBLE_ASSIGN_OR_RETURN(q, ViewHeads(in[0], in[0].data<float>(), p.q_heads, "Q"));
      NIMBLE_ASSIGN_OR_RETURN(k, ViewHeads(in[1], in[1].data<float>(), p.kv_heads, "K"));
      NIMBLE_ASSIGN_OR_RETURN(v, ViewHeads(in[2], in[2].data<float>(), p.kv_heads, "V"));
    }
    // Keys and values with the past: concatenated into present (the outputs, or scratch).
    Tensor k_cat, v_cat;
    const bool has_past = Present(in, 4);
    if (has_past || present_k != nullptr) {
      if (present_k != nullptr) {
        k_cat = *present_k;
      } else {
        NIMBLE_ASSIGN_OR_RETURN(k_cat, Tensor::Empty(DType::kF32, p.present_k, ctx.allocator));
      }
      Concat(has_past ? in[4].data<float>() : nullptr, p.past, k, k_cat.data<float>());
      NIMBLE_ASSIGN_OR_RETURN(k, ViewHeads(k_cat, k_cat.data<float>(), p.kv_heads, "K"));
    }
    if (has_past || present_v != nullptr) {
      if (present_v != nullptr) {
        v_cat = *present_v;
      } else {
        NIMBLE_ASSIGN_OR_RETURN(v_cat, Tensor::Empty(DType::kF32, p.present_v, ctx.allocator));
      }
      Concat(has_past ? in[5].data<float>() : nullptr, p.past, v, v_cat.data<float>());
      NIMBLE_ASSIGN_OR_RETURN(v, ViewHeads(v_cat, v_cat.data<float>(), p.kv_heads, "V"));
    }
    HeadView y;
    { NIMBLE_ASSIGN_OR_RETURN(y, ViewHeads(out[0], out[0].data<float>(), p.q_heads, "Y")); }
    float* y_data = out[0].data<float>();

    // Mask strides over [batch, heads, q, k] (0 where broadcast) and its last dim.
    const Tensor* mask = Present(in, 3) ? &in[3] : nullptr;
    int64_t ms[4] = {0, 0, 0, 0};
    int64_t mask_cols = 0;
    if (mask != nullptr) {
      int64_t stride = 1;
      for (int i = mask->rank() - 1; i >= 0; --i) {
        const int axis = 4 - mask->rank() + i;
        ms[axis] = mask->dim(i) == 1 && axis != 3 ? 0 : stride;
        stride *= mask->dim(i);
      }
      mask_cols = mask->dim(mask->rank() - 1);  // shorter than total: padded with -inf (ONNX)
    }
    const int64_t* nonpad = Present(in, 6) ? in[6].data<int64_t>() : nullptr;
    const float scale =
        c_.scale != 0 ? static_cast<float>(c_.scale) : 1.0f / std::sqrt(static_cast<float>(p.head));
    const float softcap = static_cast<float>(c_.softcap);
    const float neg_inf = -std::numeric_limits<float>::infinity();
    const float fill = static_cast<float>(c_.mask_fill);
    const int64_t group = p.q_heads / p.kv_heads;

    // Tasks: (batch, head, row block); blocks small enough to keep every thread busy.
    const int threads = std::max(1, ctx.num_threads);
    const int64_t heads_total = p.batch * p.q_heads;
    int64_t blocks = 1;
    if (heads_total < 2 * threads) blocks = (2 * threads + heads_total - 1) / heads_total;
    int64_t rows = std::max<int64_t>(16, (p.q_seq + blocks - 1) / blocks);
    rows = std::min<int64_t>(std::max<int64_t>(rows, 1), std::max<int64_t>(p.q_seq, 1));
    blocks = (p.q_seq + rows - 1) / rows;
    const int64_t tasks = heads_total * blocks;
    absl::Status status;
    std::mutex status_mutex;
    kernel_util::ParallelFor(threads, tasks, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> scores(static_cast<size_t>(rows * p.total));
      for (int64_t t = begin; t < end; ++t) {
        const int64_t bh = t / blocks, blk = t % blocks;
        const int64_t b = bh / p.q_heads, h = bh % p.q_heads, hk = h / group;
        const int64_t i0 = blk * rows, n = std::min(rows, p.q_seq - i0);
        float* s = scores.data();
        absl::Status st = onednn::Sgemm(1, false, true, n, p.total, p.head, scale, q.Row(b, h, i0),
                                        q.ss, k.Row(b, hk, 0), k.ss, 0.0f, s, p.total);
        if (st.ok()) {
          const int64_t offset = has_past ? p.past : nonpad != nullptr ? nonpad[b] - p.q_seq : 0;
          const int64_t valid = nonpad != nullptr ? nonpad[b] : p.total;
          // Fast rows: no scores requested as an output, a float mask contiguous over keys
          // (or none). Keys past the causal frontier, the padding or a short mask get
          // probability 0 without being computed.
          const bool bool_mask = mask != nullptr && mask->dtype() == DType::kBool;
          const bool fast =
              qk_out == nullptr && (mask == nullptr || ms[3] == 1) && (!bool_mask || softcap == 0);
          for (int64_t r = 0; fast && r < n; ++r) {
            const int64_t i = i0 + r;
            float* row = s + r * p.total;
            int64_t limit = std::min(p.total, valid);
            if (c_.is_causal) limit = std::min(limit, i + offset + 1);
            const float* m = nullptr;
            if (mask != nullptr) {
              limit = std::min(limit, mask_cols);
              const int64_t base = b * ms[0] + h * ms[1] + i * ms[2];
              if (bool_mask) {
                const bool* bm = mask->data<bool>() + base;
                for (int64_t j = 0; j < limit; ++j) {
                  if (!bm[j]) row[j] = fill;
                }
              } else {
                m = mask->data<float>() + base;
              }
            }
            if (limit <= 0) {  // every key masked: 0/0 as in the reference
              std::fill(row, row + p.total, std::numeric_limits<float>::quiet_NaN());
              continue;
            }
            RunSimd<ScoreRowBody>(row, m, limit, softcap);
            std::fill(row + limit, row + p.total, 0.0f);
          }
          for (int64_t r = 0; !fast && r < n; ++r) {
            const int64_t i = i0 + r;
            float* row = s + r * p.total;
            float* qk_row =
                qk_out ? qk_out->data<float>() + ((b * p.q_heads + h) * p.q_seq + i) * p.total
                       : nullptr;
            if (softcap > 0) {
              for (int64_t j = 0; j < p.total; ++j) row[j] = softcap * std::tanh(row[j] / softcap);
            }
            if (qk_row && c_.qk_mode <= 1) std::copy(row, row + p.total, qk_row);
            if (mask != nullptr) {
              const int64_t base = b * ms[0] + h * ms[1] + i * ms[2];
              if (mask->dtype() == DType::kBool) {
                const bool* m = mask->data<bool>() + base;
                for (int64_t j = 0; j < p.total; ++j) {
                  if (j >= mask_cols) {
                    row[j] = neg_inf;
                  } else if (!m[j * ms[3]]) {
                    row[j] = fill;
                  }
                }
              } else {
                const float* m = mask->data<float>() + base;
                for (int64_t j = 0; j < p.total; ++j) {
                  row[j] += j < mask_cols ? m[j * ms[3]] : neg_inf;
                }
              }
            }
            if (c_.is_causal) {
              for (int64_t j = std::max<int64_t>(0, i + offset + 1); j < p.total; ++j) {
                row[j] = neg_inf;
              }
            }
            for (int64_t j = std::max<int64_t>(0, valid); j < p.total; ++j) row[j] = neg_inf;
            if (qk_row && c_.qk_mode == 2) std::copy(row, row + p.total, qk_row);
            float mx = neg_inf;
            for (int64_t j = 0; j < p.total; ++j) mx = std::max(mx, row[j]);
            float sum = 0;
            for (int64_t j = 0; j < p.total; ++j) {
              row[j] = std::exp(row[j] - mx);
              sum += row[j];
            }
            const float inv = 1.0f / sum;
            for (int64_t j = 0; j < p.total; ++j) row[j] *= inv;
            if (qk_row && c_.qk_mode == 3) std::copy(row, row + p.total, qk_row);
          }
          st = onednn::Sgemm(1, false, false, n, p.v_head, p.total, 1.0f, s, p.total,
                             v.Row(b, hk, 0), v.ss, 0.0f, y_data + b * y.sb + h * y.sh + i0 * y.ss,
                             y.ss);
        }
        if (!st.ok()) {
          std::lock_guard<std::mutex> lock(status_mutex);
          status.Update(st);
          return;
        }
      }
    });
    return status;
  }

  const Config c_;
};

// LinearAttention (opset 27). Per (batch, kv head) state S [dk, dv] (past_state or zeros) and per
// token t: S *= exp(g_t) (gated rules; g per head or per key dim), then for the delta rules
// v_t = beta_t * (v_t - S^T k_t), then S += k_t v_t^T, and every query head h of the kv head's
// group reads o = scale * q_t^T S. Inputs in f16/bf16 are widened to f32; the state stays f32 and
// is rounded once into present_state (past_state's type, else the query's).
struct LinearConfig {
  int64_t q_heads = 0, kv_heads = 0;
  double scale = 0;  // 0: 1/sqrt(dk)
  bool gated = true, delta = true;
};

struct LinearPlan {
  int64_t batch = 0, seq = 0, dk = 0, dv = 0;
  int64_t decay_width = 0, beta_width = 0;  // last dims of decay and beta (0: absent)
  DType state_dtype = DType::kInvalid;
  Shape y, state;
};

bool IsFloatType(DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; }

absl::StatusOr<LinearPlan> MakeLinearPlan(const LinearConfig& c, absl::Span<const Tensor> in) {
  constexpr const char* kOp = "LinearAttention";
  NIMBLE_RETURN_IF_ERROR(CheckArity(kOp, in.size(), 3, 6));
  for (size_t i = 0; i < 3; ++i) {
    NIMBLE_RETURN_IF_ERROR(CheckDefined(kOp, in, i, i == 0 ? "query" : i == 1 ? "key" : "value"));
  }
  const Tensor &q = in[0], &k = in[1], &v = in[2];
  const DType dtype = q.dtype();
  if (!IsFloatType(dtype) || k.dtype() != dtype || v.dtype() != dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat("LinearAttention: query, key and value must share one of f32, f16, bf16, got ",
                     q.TypeString(), ", ", k.TypeString(), ", ", v.TypeString()));
  }
  if (q.rank() != 3 || k.rank() != 3 || v.rank() != 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LinearAttention: query, key and value must have rank 3 [batch, seq, heads * dim], got ",
        q.TypeString(), ", ", k.TypeString(), ", ", v.TypeString()));
  }
  LinearPlan p;
  p.batch = q.dim(0), p.seq = q.dim(1);
  if (q.dim(2) % c.q_heads != 0 || v.dim(2) % c.kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("LinearAttention: query ", q.TypeString(), " / value ", v.TypeString(),
                     " do not split into ", c.q_heads, " / ", c.kv_heads, " heads"));
  }
  p.dk = q.dim(2) / c.q_heads, p.dv = v.dim(2) / c.kv_heads;
  const Shape kv_want = {p.batch, p.seq, c.kv_heads * p.dk};
  if (k.shape() != kv_want || v.dim(0) != p.batch || v.dim(1) != p.seq) {
    return absl::InvalidArgumentError(absl::StrCat("LinearAttention: key ", k.TypeString(),
                                                   " and value ", v.TypeString(),
                                                   " do not match query ", q.TypeString()));
  }
  p.state = {p.batch, c.kv_heads, p.dk, p.dv};
  p.y = {p.batch, p.seq, c.q_heads * p.dv};
  p.state_dtype = dtype;
  if (Present(in, 3)) {
    const Tensor& past = in[3];
    if (!IsFloatType(past.dtype()) || past.shape() != p.state) {
      return absl::InvalidArgumentError(absl::StrCat("LinearAttention: past_state ",
                                                     past.TypeString(), " must be float",
                                                     ShapeToString(p.state)));
    }
    p.state_dtype = past.dtype();
  }
  // decay: [B, T, Hkv] or [B, T, Hkv * dk]; beta: [B, T, Hkv] or [B, T, 1].
  auto gate = [&](size_t i, const char* what, bool wanted, int64_t alt,
                  int64_t* width) -> absl::Status {
    if (!Present(in, i)) {
      if (!wanted) return absl::OkStatus();
      return absl::InvalidArgumentError(
          absl::StrCat("LinearAttention: this update_rule requires ", what));
    }
    if (!wanted) {
      return absl::InvalidArgumentError(
          absl::StrCat("LinearAttention: this update_rule takes no ", what));
    }
    const Tensor& t = in[i];
    if (t.dtype() != dtype || t.rank() != 3 || t.dim(0) != p.batch || t.dim(1) != p.seq ||
        (t.dim(2) != c.kv_heads && t.dim(2) != alt)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "LinearAttention: ", what, " ", t.TypeString(), " must be ", DTypeName(dtype), "[",
          p.batch, ", ", p.seq, ", ", c.kv_heads, " or ", alt, "]"));
    }
    *width = t.dim(2);
    return absl::OkStatus();
  };
  NIMBLE_RETURN_IF_ERROR(gate(4, "decay", c.gated, c.kv_heads * p.dk, &p.decay_width));
  NIMBLE_RETURN_IF_ERROR(gate(5, "beta", c.delta, 1, &p.beta_width));
  return p;
}

// Thread-safe: immutable after construction.
class LinearAttentionKernel final : public Kernel {
 public:
  explicit LinearAttentionKernel(LinearConfig config) : c_(config) {}

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    NIMBLE_ASSIGN_OR_RETURN(LinearPlan p, MakeLinearPlan(c_, inputs));
    if (!output_shapes.empty()) output_shapes[0] = p.y;
    if (output_shapes.size() > 1) output_shapes[1] = p.state;
    return absl::OkStatus();
  }

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(LinearPlan p, MakeLinearPlan(c_, inputs));
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputs("LinearAttention", outputs, 1, 2));
    const Shape shapes[2] = {p.y, p.state};
    const DType dtypes[2] = {inputs[0].dtype(), p.state_dtype};
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputShapes("LinearAttention", outputs, shapes));
    if (!outputs[0].defined()) {
      return absl::InvalidArgumentError("LinearAttention: output 0 is missing");
    }
    for (size_t i = 0; i < outputs.size(); ++i) {
      NIMBLE_RETURN_IF_ERROR(
          kernel_util::CheckOutputDType("LinearAttention", outputs[i], dtypes[i]));
    }
    std::vector<Tensor> in32;
    for (const Tensor& t : inputs) {
      NIMBLE_ASSIGN_OR_RETURN(Tensor f, ToF32(t, ctx.allocator));
      in32.push_back(std::move(f));
    }
    Tensor out32[2];
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (!outputs[i].defined() || outputs[i].dtype() == DType::kF32) {
        out32[i] = outputs[i];
        continue;
      }
      NIMBLE_ASSIGN_OR_RETURN(out32[i], Tensor::Empty(DType::kF32, shapes[i], ctx.allocator));
    }
    Compute(ctx, p, in32, out32[0], out32[1]);
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (outputs[i].defined() && outputs[i].dtype() != DType::kF32) FromF32(out32[i], outputs[i]);
    }
    return absl::OkStatus();
  }

 private:
  void Compute(const KernelContext& ctx, const LinearPlan& p, absl::Span<const Tensor> in,
               const Tensor& y, const Tensor& present) const {
    const int64_t hq = c_.q_heads, hkv = c_.kv_heads, group = hq / hkv, dk = p.dk, dv = p.dv;
    const float* q = in[0].data<float>();
    const float* k = in[1].data<float>();
    const float* v = in[2].data<float>();
    const float* past = Present(in, 3) ? in[3].data<float>() : nullptr;
    const float* decay = p.decay_width > 0 ? in[4].data<float>() : nullptr;
    const float* beta = p.beta_width > 0 ? in[5].data<float>() : nullptr;
    float* out = y.data<float>();
    float* state_out = present.defined() ? present.data<float>() : nullptr;
    const float scale =
        c_.scale != 0 ? static_cast<float>(c_.scale) : 1.0f / std::sqrt(static_cast<float>(dk));
    kernel_util::ParallelFor(ctx.num_threads, p.batch * hkv, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> s(static_cast<size_t>(dk * dv)), u(static_cast<size_t>(dv));
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / hkv, h = task % hkv;
        if (past != nullptr) {
          std::copy_n(past + task * dk * dv, dk * dv, s.begin());
        } else {
          std::fill(s.begin(), s.end(), 0.0f);
        }
        for (int64_t t = 0; t < p.seq; ++t) {
          const int64_t token = b * p.seq + t;
          const float* kt = k + (token * hkv + h) * dk;
          const float* vt = v + (token * hkv + h) * dv;
          if (decay != nullptr) {
            const float* g = decay + token * p.decay_width;
            const bool per_dim = p.decay_width != hkv;
            for (int64_t i = 0; i < dk; ++i) {
              const float f = std::exp(per_dim ? g[h * dk + i] : g[h]);
              for (int64_t m = 0; m < dv; ++m) s[i * dv + m] *= f;
            }
          }
          if (beta != nullptr) {
            const float bt = beta[token * p.beta_width + (p.beta_width == 1 ? 0 : h)];
            std::fill(u.begin(), u.end(), 0.0f);
            for (int64_t i = 0; i < dk; ++i) {
              for (int64_t m = 0; m < dv; ++m) u[m] += s[i * dv + m] * kt[i];
            }
            for (int64_t m = 0; m < dv; ++m) u[m] = bt * (vt[m] - u[m]);
          } else {
            std::copy_n(vt, dv, u.begin());
          }
          for (int64_t i = 0; i < dk; ++i) {
            for (int64_t m = 0; m < dv; ++m) s[i * dv + m] += kt[i] * u[m];
          }
          for (int64_t j = 0; j < group; ++j) {
            const int64_t hq_index = h * group + j;
            const float* qt = q + (token * hq + hq_index) * dk;
            float* o = out + (token * hq + hq_index) * dv;
            std::fill_n(o, dv, 0.0f);
            for (int64_t i = 0; i < dk; ++i) {
              for (int64_t m = 0; m < dv; ++m) o[m] += qt[i] * s[i * dv + m];
            }
            for (int64_t m = 0; m < dv; ++m) o[m] *= scale;
          }
        }
        if (state_out != nullptr) std::copy(s.begin(), s.end(), state_out + task * dk * dv);
      }
    });
  }

  const LinearConfig c_;
};

// FlexAttention (ai.onnx.preview, opset 1): Q [B, Hq, L, E], K [B, Hkv, S, E], V [B, Hkv, S, Ev]
// -> Y [B, Hq, L, Ev] = softmax(scale * Q K^T) V, query head h reading key/value head
// h / (Hq / Hkv). A node with score_mod / prob_mod graphs is split by the compiler
// (expand_flex_attention.h) around the inlined graphs and a Softmax into two stages of this
// kernel (attribute flex_stage, not ONNX): 1 = scores, (Q, K) -> scale * Q K^T [B, Hq, L, S];
// 2 = apply, (P [B, Hq, L, S], V) -> P V. Thread-safe: immutable after construction.
class FlexAttentionKernel final : public Kernel {
 public:
  enum Stage { kFull = 0, kScores = 1, kApply = 2 };

  FlexAttentionKernel(double scale, Stage stage) : scale_(scale), stage_(stage) {}

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    NIMBLE_ASSIGN_OR_RETURN(Dims d, Check(inputs));
    if (!output_shapes.empty()) output_shapes[0] = d.y;
    return absl::OkStatus();
  }

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(Dims d, Check(inputs));
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputs("FlexAttention", outputs, 1, 1));
    const DType dtype = inputs[0].dtype();
    const Tensor& y = outputs[0];
    if (!y.defined() || y.shape() != d.y || y.dtype() != dtype) {
      return absl::InvalidArgumentError(
          absl::StrCat("FlexAttention: output is ", y.defined() ? y.TypeString() : "missing",
                       ", expected ", DTypeName(dtype), ShapeToString(d.y)));
    }
    const size_t n = inputs.size();
    if (dtype == DType::kF64) {
      const double* in[3] = {nullptr, nullptr, nullptr};
      for (size_t i = 0; i < n; ++i) in[i] = inputs[i].data<double>();
      Compute<double>(ctx, d, in, y.data<double>());
      return absl::OkStatus();
    }
    Tensor in32[3];
    const float* in[3] = {nullptr, nullptr, nullptr};
    for (size_t i = 0; i < n; ++i) {
      NIMBLE_ASSIGN_OR_RETURN(in32[i], ToF32(inputs[i], ctx.allocator));
      in[i] = in32[i].data<float>();
    }
    Tensor y32 = y;
    if (dtype != DType::kF32) {
      NIMBLE_ASSIGN_OR_RETURN(y32, Tensor::Empty(DType::kF32, d.y, ctx.allocator));
    }
    Compute<float>(ctx, d, in, y32.data<float>());
    if (dtype != DType::kF32) FromF32(y32, y);
    return absl::OkStatus();
  }

 private:
  struct Dims {
    int64_t batch = 0, hq = 0, hkv = 0, len = 0, s_len = 0, e = 0, ev = 0;
    Shape y;
  };

  absl::StatusOr<Dims> Check(absl::Span<const Tensor> in) const {
    constexpr const char* kOp = "FlexAttention";
    const size_t arity = stage_ == kFull ? 3 : 2;
    NIMBLE_RETURN_IF_ERROR(CheckArity(kOp, in.size(), arity, arity));
    const char* names[3] = {stage_ == kApply ? "P" : "Q", stage_ == kApply ? "V" : "K", "V"};
    for (size_t i = 0; i < arity; ++i) NIMBLE_RETURN_IF_ERROR(CheckDefined(kOp, in, i, names[i]));
    const DType dtype = in[0].dtype();
    bool ok = IsFloatType(dtype) || dtype == DType::kF64;
    for (size_t i = 0; i < arity; ++i) ok = ok && in[i].dtype() == dtype && in[i].rank() == 4;
    Dims d;
    if (ok) {
      const Tensor& a = in[0];   // Q, or P for kApply
      const Tensor& kv = in[1];  // K, or V for kApply
      d.batch = a.dim(0), d.hq = a.dim(1), d.len = a.dim(2);
      d.hkv = kv.dim(1), d.s_len = kv.dim(2);
      ok = kv.dim(0) == d.batch && d.hkv > 0 && d.hq % d.hkv == 0;
      if (stage_ == kApply) {
        d.ev = kv.dim(3);
        ok = ok && a.dim(3) == d.s_len;
      } else {
        d.e = a.dim(3);
        ok = ok && kv.dim(3) == d.e;
      }
      if (stage_ == kFull) {
        const Tensor& v = in[2];
        d.ev = v.dim(3);
        ok = ok && v.dim(0) == d.batch && v.dim(1) == d.hkv && v.dim(2) == d.s_len;
      }
    }
    if (!ok) {
      std::string got;
      for (size_t i = 0; i < arity; ++i) absl::StrAppend(&got, i ? ", " : "", in[i].TypeString());
      return absl::InvalidArgumentError(absl::StrCat(
          "FlexAttention: inputs ", got, " must be one of f32, f16, bf16, f64 and shaped ",
          stage_ == kApply    ? "[B, Hq, L, S], [B, Hkv, S, Ev]"
          : stage_ == kScores ? "[B, Hq, L, E], [B, Hkv, S, E]"
                              : "[B, Hq, L, E], [B, Hkv, S, E], [B, Hkv, S, Ev]",
          " with Hq a multiple of Hkv"));
    }
    d.y = {d.batch, d.hq, d.len, stage_ == kScores ? d.s_len : d.ev};
    return d;
  }

  // in: Q, K, V (kFull), Q, K (kScores) or P, V (kApply).
  template <typename T>
  void Compute(const KernelContext& ctx, const Dims& d, const T* const in[3], T* y) const {
    const int64_t group = d.hq / d.hkv, e = d.e, ev = d.ev, s_len = d.s_len;
    const T* v_data = stage_ == kApply ? in[1] : in[2];
    const T scale = scale_ != 0 ? static_cast<T>(scale_) : T(1) / std::sqrt(static_cast<T>(e));
    kernel_util::ParallelFor(ctx.num_threads, d.batch * d.hq, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> scores(static_cast<size_t>(s_len));
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t kvh = (bh / d.hq) * d.hkv + (bh % d.hq) / group;
        for (int64_t i = 0; i < d.len; ++i) {
          const int64_t row = bh * d.len + i;
          const T* probs = nullptr;
          if (stage_ == kApply) {
            probs = in[0] + row * s_len;
          } else {
            T* p = scores.data();
            const T* qi = in[0] + row * e;
            const T* kb = in[1] + kvh * s_len * e;
            for (int64_t j = 0; j < s_len; ++j) {
              T dot = 0;
              for (int64_t c = 0; c < e; ++c) dot += qi[c] * kb[j * e + c];
              p[j] = dot * scale;
            }
            if (stage_ == kScores) {
              std::copy_n(p, s_len, y + row * s_len);
              continue;
            }
            T mx = -std::numeric_limits<T>::infinity();
            for (int64_t j = 0; j < s_len; ++j) mx = std::max(mx, p[j]);
            T sum = 0;
            for (int64_t j = 0; j < s_len; ++j) {
              p[j] = std::exp(p[j] - mx);
              sum += p[j];
            }
            for (int64_t j = 0; j < s_len; ++j) p[j] /= sum;
            probs = p;
          }
          const T* vb = v_data + kvh * s_len * ev;
          T* yi = y + row * ev;
          std::fill_n(yi, ev, T(0));
          for (int64_t j = 0; j < s_len; ++j) {
            for (int64_t c = 0; c < ev; ++c) yi[c] += probs[j] * vb[j * ev + c];
          }
        }
      }
    });
  }

  const double scale_;
  const Stage stage_;
};

}  // namespace

void RegisterAttentionKernels(KernelRegistry& registry) {
  registry.Register("Attention", DeviceType::kCPU,
                    [](const Attributes& a) -> absl::StatusOr<std::unique_ptr<Kernel>> {
                      Config c;
                      c.qkv_packed = a.GetOr<int64_t>("qkv_packed", 0) != 0;
                      c.q_num_heads = a.GetOr<int64_t>("q_num_heads", 0);
                      c.kv_num_heads = a.GetOr<int64_t>("kv_num_heads", 0);
                      c.is_causal = a.GetOr<int64_t>("is_causal", 0) != 0;
                      c.scale = a.GetOr<double>("scale", 0.0);
                      c.softcap = a.GetOr<double>("softcap", 0.0);
                      c.mask_fill = a.GetOr<double>("mask_fill", c.mask_fill);
                      c.mask_scale = a.GetOr<double>("mask_scale", c.mask_scale);
                      c.mask_offset = a.GetOr<double>("mask_offset", c.mask_offset);
                      c.qk_mode = a.GetOr<int64_t>("qk_matmul_output_mode", 0);
                      if (c.qk_mode < 0 || c.qk_mode > 3) {
                        return absl::InvalidArgumentError(absl::StrCat(
                            "Attention: qk_matmul_output_mode ", c.qk_mode, " is not 0..3"));
                      }
                      if (c.softcap < 0) {
                        return absl::InvalidArgumentError("Attention: softcap must be >= 0");
                      }
                      return std::unique_ptr<Kernel>(std::make_unique<AttentionKernel>(c));
                    });
  registry.Register(
      "LinearAttention", DeviceType::kCPU,
      [](const Attributes& a) -> absl::StatusOr<std::unique_ptr<Kernel>> {
        LinearConfig c;
        c.q_heads = a.GetOr<int64_t>("q_num_heads", 0);
        c.kv_heads = a.GetOr<int64_t>("kv_num_heads", 0);
        if (c.q_heads <= 0 || c.kv_heads <= 0 || c.q_heads % c.kv_heads != 0) {
          return absl::InvalidArgumentError(
              absl::StrCat("LinearAttention: q_num_heads (", c.q_heads,
                           ") must be a positive multiple of kv_num_heads (", c.kv_heads, ")"));
        }
        c.scale = a.GetOr<double>("scale", 0.0);
        const std::string rule = a.GetOr<std::string>("update_rule", "gated_delta");
        if (rule != "linear" && rule != "gated" && rule != "delta" && rule != "gated_delta") {
          return absl::InvalidArgumentError(
              absl::StrCat("LinearAttention: update_rule '", rule,
                           "' is not one of linear, gated, delta, gated_delta"));
        }
        c.gated = rule == "gated" || rule == "gated_delta";
        c.delta = rule == "delta" || rule == "gated_delta";
        return std::unique_ptr<Kernel>(std::make_unique<LinearAttentionKernel>(c));
      });
  registry.Register(
      "ai.onnx.preview.FlexAttention", DeviceType::kCPU,
      [](const Attributes& a) -> absl::StatusOr<std::unique_ptr<Kernel>> {
        const int64_t stage = a.GetOr<int64_t>("flex_stage", 0);
        if (stage < 0 || stage > 2) {
          return absl::InvalidArgumentError(
              absl::StrCat("FlexAttention: flex_stage ", stage, " is not 0..2"));
        }
        return std::unique_ptr<Kernel>(std::make_unique<FlexAttentionKernel>(
            a.GetOr<double>("scale", 0.0), static_cast<FlexAttentionKernel::Stage>(stage)));
      });
}

}  // namespace nimble::vm::cpu
