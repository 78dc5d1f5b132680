// Linear-algebra kernels: MatMul, Gemm, FusedMatMul (the compiler's GEMM + epilogue fusion),
// MatMulInteger, Conv, ConvInteger, QLinearConv, ConvTranspose, MaxPool, AveragePool,
// GlobalAveragePool, GlobalMaxPool, CausalConvWithState.
//
// f32 MatMul/Gemm/FusedMatMul run on oneDNN's matmul primitive. Batch dims broadcast the numpy
// way; dims that every operand walks alike are merged, and a batched left operand times a 2-D
// weight (BERT's [b, s, k] x [k, n]) folds into one [b*s, k] x [k, n] GEMM. Epilogues are post-ops
// in this order: sum (Gemm's C, pre-written to the output), linear (alpha), bias (the primitive's
// bias argument when alpha is 1, else a binary add), eltwise activation, binary add (residual).
// Operands stay row-major (transposes are strides): oneDNN's blocked weight layouts would need a
// reorder cached per weight buffer, and a buffer's identity says nothing about its contents once
// the VM reuses memory. Primitives are cached per kernel instance (PrimitiveCache, LRU of 64).
// Other dtypes use reference loops (f16/bf16 through f32), as does any configuration oneDNN
// declines.
//
// Conv is oneDNN's convolution on plain NC(D)(H)W tensors (1-3 spatial dims; f16/bf16 widened to
// f32 and the result rounded back); ConvTranspose is a GEMM (oneDNN sgemm) into columns followed
// by col2im; pooling is a direct loop.
// CausalConvWithState (depthwise, a few taps per channel) is a direct loop per (batch, channel).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "vm/kernels/cpu/broadcast.h"
#include "vm/kernels/cpu/cpu_kernels.h"
#include "vm/kernels/cpu/fp16.h"
#include "vm/kernels/cpu/onednn_util.h"
#include "vm/kernels/cpu/small_gemm.h"

// GCC 12 reports absl::InlinedVector's copy of an inlined (small) Shape as "maybe uninitialized"
// (a known false positive of its inliner).
#if defined(__GNUC__) && !defined(__clang__)  // clang has no such warning
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace nimble::vm::cpu {
namespace {

using dnnl::memory;
using kernel_util::CheckArity;
using kernel_util::CheckDefined;
using kernel_util::Present;
using kernel_util::ParallelFor;
using kernel_util::SingleOutputKernel;
using onednn::CachedPrimitive;
using onednn::PrimitiveCache;

using KernelPtr = std::unique_ptr<Kernel>;
using Dims = memory::dims;

int64_t Product(absl::Span<const int64_t> dims) {
  int64_t p = 1;
  for (int64_t d : dims) p *= d;
  return p;
}

Dims RowMajorStrides(const Dims& dims) {
  Dims strides(dims.size(), 1);
  for (size_t i = dims.size(); i-- > 1;)
    strides[i - 1] = strides[i] * std::max<int64_t>(dims[i], 1);
  return strides;
}

// f16/bf16 tensors converted to f32 (and back) so they can take the f32 paths.
absl::StatusOr<Tensor> ToF32(const Tensor& t, Allocator* allocator) {
  NIMBLE_ASSIGN_OR_RETURN(Tensor out, Tensor::Empty(DType::kF32, t.shape(), allocator));
  const uint16_t* p = t.data<uint16_t>();
  float* o = out.data<float>();
  const bool half = t.dtype() == DType::kF16;
  for (int64_t i = 0; i < t.num_elements(); ++i) {
    o[i] = half ? HalfToFloat(p[i]) : BFloat16ToFloat(p[i]);
  }
  return out;
}

void FromF32(const Tensor& f32, const Tensor& out) {
  const float* p = f32.data<float>();
  uint16_t* o = out.data<uint16_t>();
  const bool half = out.dtype() == DType::kF16;
  for (int64_t i = 0; i < out.num_elements(); ++i) {
    o[i] = half ? FloatToHalf(p[i]) : FloatToBFloat16(p[i]);
  }
}

// ---------------------------------------------------------------------------------------------
// Matrix-multiply planning shared by MatMul, Gemm, FusedMatMul and MatMulInteger.

struct MatMulPlan {
  Shape out_shape;
  Shape batch;            // output batch dims
  Shape a_batch_strides;  // element strides of A per batch dim (0: broadcast)
  Shape b_batch_strides;
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  int64_t num_batches() const { return Product(batch); }
};

absl::StatusOr<MatMulPlan> PlanMatMul(absl::string_view op, const Shape& a_in, const Shape& b_in,
                                      bool trans_a, bool trans_b) {
  if (a_in.empty() || b_in.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": operands must have rank >= 1, got ",
                                                   ShapeToString(a_in), " and ",
                                                   ShapeToString(b_in)));
  }
  Shape a = a_in, b = b_in;
  const bool a_vec = a.size() == 1, b_vec = b.size() == 1;
  if (a_vec) {
    a = {1, a[0]};
    trans_a = false;
  }
  if (b_vec) {
    b = {b[0], 1};
    trans_b = false;
  }
  const size_t ra = a.size(), rb = b.size();
  MatMulPlan p;
  p.trans_a = trans_a;
  p.trans_b = trans_b;
  p.m = trans_a ? a[ra - 1] : a[ra - 2];
  const int64_t ka = trans_a ? a[ra - 2] : a[ra - 1];
  const int64_t kb = trans_b ? b[rb - 1] : b[rb - 2];
  p.n = trans_b ? b[rb - 2] : b[rb - 1];
  if (ka != kb) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": inner dims of ", ShapeToString(a_in),
                                                   " and ", ShapeToString(b_in), " differ"));
  }
  p.k = ka;
  const Shape a_batch(a.begin(), a.end() - 2), b_batch(b.begin(), b.end() - 2);
  auto batch = BroadcastShapes({a_batch, b_batch});
  if (!batch.ok()) return Annotate(batch.status(), op);
  p.batch = *batch;
  p.a_batch_strides = BroadcastStrides(a_batch, p.batch);
  p.b_batch_strides = BroadcastStrides(b_batch, p.batch);
  for (int64_t& s : p.a_batch_strides) s *= p.m * p.k;
  for (int64_t& s : p.b_batch_strides) s *= p.k * p.n;
  p.out_shape = p.batch;
  if (!a_vec) p.out_shape.push_back(p.m);
  if (!b_vec) p.out_shape.push_back(p.n);
  return p;
}

enum class Activation { kNone, kRelu, kGelu, kGeluTanh, kTanh, kSigmoid };
// SmallGemm's activations are these, in this order.
static_assert(static_cast<int>(Activation::kSigmoid) == static_cast<int>(SmallGemmAct::kSigmoid) &&
              static_cast<int>(Activation::kGelu) == static_cast<int>(SmallGemmAct::kGelu));

absl::StatusOr<Activation> ParseActivation(const std::string& name) {
  if (name.empty()) return Activation::kNone;
  if (name == "relu") return Activation::kRelu;
  if (name == "gelu") return Activation::kGelu;
  if (name == "gelu_tanh") return Activation::kGeluTanh;
  if (name == "tanh") return Activation::kTanh;
  if (name == "sigmoid") return Activation::kSigmoid;
  return absl::InvalidArgumentError(absl::StrCat("unknown activation '", name, "'"));
}

float Activate(Activation act, float x) {
  switch (act) {
    case Activation::kNone:
      return x;
    case Activation::kRelu:
      return x > 0 ? x : 0.0f;
    case Activation::kGelu:
      return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
    case Activation::kGeluTanh:
      return 0.5f * x * (1.0f + std::tanh(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case Activation::kTanh:
      return std::tanh(x);
    case Activation::kSigmoid:
      return 1.0f / (1.0f + std::exp(-x));
  }
  return x;
}

// What follows the product, in post-op order.
struct Epilogue {
  bool accumulate = false;      // add the output's prior contents (sum post-op)
  float alpha = 1.0f;           // then scale
  const float* bias = nullptr;  // then add bias[n]
  Activation activation = Activation::kNone;
  const float* residual = nullptr;  // then add residual (the output's shape)
};

// Reference f32 product with epilogue (oneDNN fallback and K == 0).
void ReferenceMatMulF32(int num_threads, const MatMulPlan& p, const float* a, const float* b,
                        float* c, const Epilogue& e) {
  const int64_t rows = p.num_batches() * p.m;
  const int nb = static_cast<int>(p.batch.size());
  ParallelFor(num_threads, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t bi = r / p.m, i = r % p.m;
      int64_t ao = 0, bo = 0, rem = bi;
      for (int d = nb - 1; d >= 0; --d) {
        const int64_t idx = rem % p.batch[d];
        rem /= p.batch[d];
        ao += idx * p.a_batch_strides[d];
        bo += idx * p.b_batch_strides[d];
      }
      for (int64_t j = 0; j < p.n; ++j) {
        double s = 0;
        for (int64_t q = 0; q < p.k; ++q) {
          const float av = p.trans_a ? a[ao + q * p.m + i] : a[ao + i * p.k + q];
          const float bv = p.trans_b ? b[bo + j * p.k + q] : b[bo + q * p.n + j];
          s += static_cast<double>(av) * bv;
        }
        const int64_t o = r * p.n + j;
        float v = static_cast<float>(s);
        if (e.accumulate) v += c[o];
        v *= e.alpha;
        if (e.bias != nullptr) v += e.bias[j];
        v = Activate(e.activation, v);
        if (e.residual != nullptr) v += e.residual[o];
        c[o] = v;
      }
    }
  });
}

// Reference product for other dtypes, accumulating in Acc.
template <typename T, typename Acc>
void ReferenceMatMul(int num_threads, const MatMulPlan& p, const T* a, const T* b, T* c) {
  const int64_t rows = p.num_batches() * p.m;
  const int nb = static_cast<int>(p.batch.size());
  ParallelFor(num_threads, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t bi = r / p.m, i = r % p.m;
      int64_t ao = 0, bo = 0, rem = bi;
      for (int d = nb - 1; d >= 0; --d) {
        const int64_t idx = rem % p.batch[d];
        rem /= p.batch[d];
        ao += idx * p.a_batch_strides[d];
        bo += idx * p.b_batch_strides[d];
      }
      for (int64_t j = 0; j < p.n; ++j) {
        Acc s = 0;
        for (int64_t q = 0; q < p.k; ++q) {
          const T av = p.trans_a ? a[ao + q * p.m + i] : a[ao + i * p.k + q];
          const T bv = p.trans_b ? b[bo + j * p.k + q] : b[bo + q * p.n + j];
          s += static_cast<Acc>(av) * static_cast<Acc>(bv);
        }
        c[r * p.n + j] = static_cast<T>(s);
      }
    }
  });
}

// oneDNN dims/strides of a plan: batch dims merged where A and B broadcast alike.
struct MatMulDims {
  Dims a, a_strides, b, b_strides, c;
};

MatMulDims DnnlDims(const MatMulPlan& p) {
  Dims out_batch, a_batch, b_batch;
  int last = -1;  // (a present, b present) pattern of the last group
  for (size_t i = 0; i < p.batch.size(); ++i) {
    if (p.batch[i] == 1) continue;
    const bool fa = p.a_batch_strides[i] != 0, fb = p.b_batch_strides[i] != 0;
    const int pattern = (fa ? 1 : 0) | (fb ? 2 : 0);
    if (pattern == last) {
      out_batch.back() *= p.batch[i];
      if (fa) a_batch.back() *= p.batch[i];
      if (fb) b_batch.back() *= p.batch[i];
    } else {
      out_batch.push_back(p.batch[i]);
      a_batch.push_back(fa ? p.batch[i] : 1);
      b_batch.push_back(fb ? p.batch[i] : 1);
      last = pattern;
    }
  }
  MatMulDims d;
  int64_t m = p.m;
  // A batched A times an unbatched B: one tall GEMM.
  const bool fold =
      !p.trans_a && out_batch.size() == 1 && a_batch[0] == out_batch[0] && b_batch[0] == 1;
  if (fold) {
    m *= out_batch[0];
    out_batch.clear();
    a_batch.clear();
    b_batch.clear();
  }
  d.a = a_batch;
  d.a.push_back(m);
  d.a.push_back(p.k);
  d.a_strides = RowMajorStrides(d.a);
  if (p.trans_a) {
    const size_t r = d.a.size();
    d.a_strides[r - 1] = m;
    d.a_strides[r - 2] = 1;
  }
  d.b = b_batch;
  d.b.push_back(p.k);
  d.b.push_back(p.n);
  d.b_strides = RowMajorStrides(d.b);
  if (p.trans_b) {
    const size_t r = d.b.size();
    d.b_strides[r - 1] = p.k;
    d.b_strides[r - 2] = 1;
  }
  d.c = out_batch;
  d.c.push_back(m);
  d.c.push_back(p.n);
  return d;
}

absl::StatusOr<CachedPrimitive> CreateMatMul(const MatMulDims& d, const Epilogue& e,
                                             bool packed_b) {
  try {
    const auto f32 = memory::data_type::f32;
    const memory::desc a_md(d.a, f32, d.a_strides);
    const memory::desc b_md = packed_b ? memory::desc(d.b, f32, memory::format_tag::any)
                                       : memory::desc(d.b, f32, d.b_strides);
    const memory::desc c_md(d.c, f32, RowMajorStrides(d.c));
    Dims bias_dims(d.c.size(), 1);
    bias_dims.back() = d.c.back();
    const memory::desc bias_md(bias_dims, f32, RowMajorStrides(bias_dims));
    const bool bias_arg = e.bias != nullptr && e.alpha == 1.0f && !e.accumulate;
    dnnl::post_ops ops;
    if (e.accumulate) ops.append_sum(1.0f);
    if (e.alpha != 1.0f) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_linear, e.alpha, 0.0f);
    if (e.bias != nullptr && !bias_arg) ops.append_binary(dnnl::algorithm::binary_add, bias_md);
    switch (e.activation) {
      case Activation::kNone:
        break;
      case Activation::kRelu:
        ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
        break;
      case Activation::kGelu:
        ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_erf, 0.0f, 0.0f);
        break;
      case Activation::kGeluTanh:
        ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_tanh, 0.0f, 0.0f);
        break;
      case Activation::kTanh:
        ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_tanh, 0.0f, 0.0f);
        break;
      case Activation::kSigmoid:
        ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_logistic, 0.0f, 0.0f);
        break;
    }
    if (e.residual != nullptr) ops.append_binary(dnnl::algorithm::binary_add, c_md);
    dnnl::primitive_attr attr = onednn::UserScratchpadAttr();
    attr.set_post_ops(ops);
    const dnnl::matmul::desc desc = bias_arg ? dnnl::matmul::desc(a_md, b_md, bias_md, c_md)
                                             : dnnl::matmul::desc(a_md, b_md, c_md);
    const dnnl::matmul::primitive_desc pd(desc, attr, onednn::Engine());
    return onednn::MakeCachedWithLayouts<dnnl::matmul>(pd);
  } catch (const dnnl::error& err) {
    return onednn::ErrorStatus(err, "matmul primitive");
  }
}

// Copies of constant weights in the layout oneDNN's matmul or convolution prefers (blocked for
// AVX-512; matmul 1.05-2x faster than row-major B on BERT-base shapes, most at small M), made
// once per data pointer and layout. Only for operands the compiler marks constant (attributes
// constant_b, constant_w):
// a constant's bytes never change while its executable, and so this kernel, lives, whereas a
// buffer's address says nothing about its contents once the VM reuses memory.
// Thread-safe: one mutex guards the entries; reorders run outside it.
class PackedWeights {
 public:
  absl::StatusOr<std::shared_ptr<Storage>> Get(const void* data, const memory::desc& plain,
                                               const memory::desc& packed, int threads) const {
    return GetOrPack(reordered_, std::make_pair(data, packed), packed.get_size(),
                     [&](void* out) -> absl::Status {
                       onednn::ScopedThreads scoped(threads);
                       try {
                         memory src = onednn::Memory(plain, data);
                         memory dst = onednn::Memory(packed, out);
                         dnnl::stream stream(onednn::Engine());
                         dnnl::reorder(src, dst).execute(stream, src, dst);
                         stream.wait();
                       } catch (const dnnl::error& err) {
                         return onednn::ErrorStatus(err, "weight reorder");
                       }
                       return absl::OkStatus();
                     });
  }

  // The same weight (K x N, element (k, n) at b[k * stride_k + n * stride_n]) as SmallGemm's
  // column panels.
  absl::StatusOr<std::shared_ptr<Storage>> GetPanels(const float* b, int64_t k, int64_t n,
                                                     int64_t stride_k, int64_t stride_n) const {
    const std::array<int64_t, 4> dims = {k, n, stride_k, stride_n};
    return GetOrPack(panels_, std::make_pair(b, dims),
                     static_cast<size_t>(SmallGemmPanelFloats(k, n)) * sizeof(float),
                     [&](void* out) {
                       SmallGemmPack(b, k, n, stride_k, stride_n, static_cast<float*>(out));
                       return absl::OkStatus();
                     });
  }

 private:
  static constexpr size_t kMaxEntries = 4;
  template <typename Key>
  using Entries = std::list<std::pair<Key, std::shared_ptr<Storage>>>;

  // The copy under `key`, else `bytes` filled by `fill` (outside the lock) and kept, the
  // oldest of more than kMaxEntries dropped.
  template <typename Key, typename Fill>
  absl::StatusOr<std::shared_ptr<Storage>> GetOrPack(Entries<Key>& entries, const Key& key,
                                                     size_t bytes, Fill&& fill) const {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (const auto& [k, storage] : entries) {
        if (k == key) return storage;
      }
    }
    NIMBLE_ASSIGN_OR_RETURN(std::shared_ptr<Storage> storage,
                            Storage::Allocate(DefaultCpuAllocator(), bytes));
    NIMBLE_RETURN_IF_ERROR(fill(storage->data()));
    std::lock_guard<std::mutex> lock(mutex_);
    entries.emplace_front(key, storage);
    if (entries.size() > kMaxEntries) entries.pop_back();
    return storage;
  }

  mutable std::mutex mutex_;  // guards both lists
  mutable Entries<std::pair<const void*, memory::desc>> reordered_;
  mutable Entries<std::pair<const float*, std::array<int64_t, 4>>> panels_;
};

// Primitives specialised to exact dims per kernel before new row counts share a run-time-dim one.
constexpr size_t kSpecializedPrimitives = 8;

// The f32 product with epilogue on oneDNN (reference loops where oneDNN declines). With
// `packed` (B is a constant), a 2-D B is read from a copy in oneDNN's preferred layout.
absl::Status MatMulF32(const KernelContext& ctx, const PrimitiveCache& cache, const MatMulPlan& p,
                       const float* a, const float* b, float* c, const Epilogue& e,
                       absl::string_view op, const PackedWeights* packed = nullptr) {
  if (p.num_batches() * p.m * p.n == 0) return absl::OkStatus();
  if (p.k == 0) {
    ReferenceMatMulF32(ctx.num_threads, p, a, b, c, e);
    return absl::OkStatus();
  }
  const MatMulDims d = DnnlDims(p);
  if (d.a.size() > DNNL_MAX_NDIMS) {
    ReferenceMatMulF32(ctx.num_threads, p, a, b, c, e);
    return absl::OkStatus();
  }
  PrimitiveCache::Key key;
  key.reserve(64);
  auto add = [&key](const Dims& v) {
    key.push_back(static_cast<int64_t>(v.size()));
    key.insert(key.end(), v.begin(), v.end());
  };
  add(d.a);
  add(d.a_strides);
  add(d.b);
  add(d.b_strides);
  add(d.c);
  key.push_back(e.accumulate);
  key.push_back(FloatBits(e.alpha));
  key.push_back(e.bias != nullptr);
  key.push_back(static_cast<int64_t>(e.activation));
  key.push_back(e.residual != nullptr);
  // oneDNN sizes a primitive's work split for the thread count at creation, so the count is
  // part of the key and creation runs under it.
  const int threads = onednn::ThreadsFor(ctx.num_threads, 2.0 * p.num_batches() * p.m * p.n * p.k);
  key.push_back(threads);
  const bool pack_b = packed != nullptr && d.b.size() == 2;
  // A few rows against a constant weight: SmallGemm streams its panels (small_gemm.h).
  if (pack_b && d.a.size() == 2 && d.a[0] >= kSmallGemmMinM &&
      d.a[0] <= SmallGemmMaxRows(threads) && d.a_strides[1] == 1 && !e.accumulate &&
      SmallGemmAvailable()) {
    NIMBLE_ASSIGN_OR_RETURN(std::shared_ptr<Storage> panels,
                            packed->GetPanels(b, p.k, p.n, d.b_strides[0], d.b_strides[1]));
    SmallGemmEpilogue se;
    se.alpha = e.alpha, se.bias = e.bias, se.residual = e.residual;
    se.act = static_cast<SmallGemmAct>(static_cast<int>(e.activation));
    SmallGemm(threads, a, d.a_strides[0], static_cast<const float*>(panels->data()), c, d.a[0], p.n,
              p.k, se);
    return absl::OkStatus();
  }
  key.push_back(pack_b);
  // A kernel that has seen many row counts (a dynamic sequence length outside shape buckets)
  // runs new ones on one primitive with a run-time row count instead of JIT-compiling a
  // primitive per length: bounded memory and no creation on the request path. oneDNN takes no
  // run-time dims in a binary post-op, so a residual becomes the sum post-op over the output
  // pre-filled with it (same result when nothing follows the add: no activation, alpha 1).
  absl::StatusOr<std::shared_ptr<const CachedPrimitive>> prim =
      std::shared_ptr<const CachedPrimitive>();
  Epilogue generic_e = e;
  bool use_generic = false;
  const bool residual_ok = e.residual == nullptr ||
                           (e.activation == Activation::kNone && e.alpha == 1.0f && !e.accumulate);
  // Row-major A only: a transposed A's strides depend on the row count.
  if (d.a.size() == 2 && d.a_strides[1] == 1 && d.a_strides[0] == d.a[1] && residual_ok &&
      cache.size() >= kSpecializedPrimitives && !cache.Contains(key)) {
    if (e.residual != nullptr) {
      generic_e.residual = nullptr;
      generic_e.accumulate = true;
    }
    PrimitiveCache::Key generic = key;
    generic.push_back(-1);  // distinct from every specialized key
    // The row counts in the key: a is key[0..2] (rank, M, K), then a's strides, b, b's strides
    // (3 each), and c is key[12..14] (rank, M, N).
    generic[1] = -1;
    generic[13] = -1;
    MatMulDims rd = d;
    rd.a[0] = DNNL_RUNTIME_DIM_VAL;
    rd.c[0] = DNNL_RUNTIME_DIM_VAL;
    prim = cache.GetOrCreate(generic, [&] {
      onednn::ScopedThreads scoped(threads);
      return CreateMatMul(rd, generic_e, pack_b);
    });
    use_generic = prim.ok();
    if (!prim.ok()) prim = std::shared_ptr<const CachedPrimitive>();  // specialize instead
  }
  if (prim.ok() && *prim == nullptr) {
    prim = cache.GetOrCreate(key, [&] {
      onednn::ScopedThreads scoped(threads);
      return CreateMatMul(d, e, pack_b);
    });
  }
  if (use_generic && e.residual != nullptr && e.residual != c) {
    std::memcpy(c, e.residual, static_cast<size_t>(p.num_batches() * p.m * p.n) * sizeof(float));
  }
  const Epilogue& used = use_generic ? generic_e : e;
  if (!prim.ok()) {
    if (prim.status().code() != absl::StatusCode::kUnimplemented) {
      return Annotate(prim.status(), op);
    }
    ReferenceMatMulF32(ctx.num_threads, p, a, b, c, e);
    return absl::OkStatus();
  }
  std::unordered_map<int, memory> args;
  std::shared_ptr<Storage> packed_b;  // keeps the packed copy alive through the call
  try {
    const auto f32 = memory::data_type::f32;
    args[DNNL_ARG_SRC] = onednn::Memory(memory::desc(d.a, f32, d.a_strides), a);
    const memory::desc b_md(d.b, f32, d.b_strides);
    if (pack_b && (*prim)->weights_md != b_md) {
      NIMBLE_ASSIGN_OR_RETURN(packed_b, packed->Get(b, b_md, (*prim)->weights_md, threads));
      args[DNNL_ARG_WEIGHTS] = onednn::Memory((*prim)->weights_md, packed_b->data());
    } else {
      args[DNNL_ARG_WEIGHTS] = onednn::Memory(b_md, b);
    }
    const memory::desc c_md(d.c, f32, RowMajorStrides(d.c));
    args[DNNL_ARG_DST] = onednn::Memory(c_md, c);
    Dims bias_dims(d.c.size(), 1);
    bias_dims.back() = d.c.back();
    const memory::desc bias_md(bias_dims, f32, RowMajorStrides(bias_dims));
    int post_op = (used.accumulate ? 1 : 0) + (used.alpha != 1.0f ? 1 : 0);
    if (used.bias != nullptr) {
      if (used.alpha == 1.0f && !used.accumulate) {
        args[DNNL_ARG_BIAS] = onednn::Memory(bias_md, used.bias);
      } else {
        args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(post_op) | DNNL_ARG_SRC_1] =
            onednn::Memory(bias_md, used.bias);
        ++post_op;
      }
    }
    if (used.activation != Activation::kNone) ++post_op;
    if (used.residual != nullptr) {
      args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(post_op) | DNNL_ARG_SRC_1] =
          onednn::Memory(c_md, used.residual);
    }
  } catch (const dnnl::error& err) {
    return onednn::ErrorStatus(err, op);
  }
  return onednn::Execute(**prim, args, ctx.allocator, threads, op);
}

// Any-dtype product without epilogue: f32 on oneDNN, f16/bf16 through f32, others by reference.
absl::Status MatMulAnyType(const KernelContext& ctx, const PrimitiveCache& cache,
                           const MatMulPlan& p, const Tensor& a, const Tensor& b, const Tensor& out,
                           absl::string_view op, const PackedWeights* packed = nullptr) {
  switch (a.dtype()) {
    case DType::kF32:
      return MatMulF32(ctx, cache, p, a.data<float>(), b.data<float>(), out.data<float>(),
                       Epilogue(), op, packed);
    case DType::kF16:
    case DType::kBF16: {
      NIMBLE_ASSIGN_OR_RETURN(Tensor a32, ToF32(a, ctx.allocator));
      NIMBLE_ASSIGN_OR_RETURN(Tensor b32, ToF32(b, ctx.allocator));
      NIMBLE_ASSIGN_OR_RETURN(Tensor c32, Tensor::Empty(DType::kF32, out.shape(), ctx.allocator));
      NIMBLE_RETURN_IF_ERROR(MatMulF32(ctx, cache, p, a32.data<float>(), b32.data<float>(),
                                       c32.data<float>(), Epilogue(), op));
      FromF32(c32, out);
      return absl::OkStatus();
    }
    case DType::kF64:
      ReferenceMatMul<double, double>(ctx.num_threads, p, a.data<double>(), b.data<double>(),
                                      out.data<double>());
      return absl::OkStatus();
#define NIMBLE_INT_MATMUL(DT, T, ACC)                                                     \
  case DT:                                                                                \
    ReferenceMatMul<T, ACC>(ctx.num_threads, p, a.data<T>(), b.data<T>(), out.data<T>()); \
    return absl::OkStatus();
      NIMBLE_INT_MATMUL(DType::kI8, int8_t, int64_t)
      NIMBLE_INT_MATMUL(DType::kI16, int16_t, int64_t)
      NIMBLE_INT_MATMUL(DType::kI32, int32_t, int64_t)
      NIMBLE_INT_MATMUL(DType::kI64, int64_t, uint64_t)
      NIMBLE_INT_MATMUL(DType::kU8, uint8_t, uint64_t)
      NIMBLE_INT_MATMUL(DType::kU16, uint16_t, uint64_t)
      NIMBLE_INT_MATMUL(DType::kU32, uint32_t, uint64_t)
      NIMBLE_INT_MATMUL(DType::kU64, uint64_t, uint64_t)
#undef NIMBLE_INT_MATMUL
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": element type ", DTypeName(a.dtype()), " is not supported"));
  }
}

absl::Status CheckSameDType(absl::string_view op, const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype()) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": operands ", a.TypeString(), " and ",
                                                   b.TypeString(), " differ in type"));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// MatMul, FusedMatMul, Gemm, MatMulInteger

class MatMulKernel final : public SingleOutputKernel {
 public:
  explicit MatMulKernel(bool constant_b) : SingleOutputKernel("MatMul"), constant_b_(constant_b) {}

 private:
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 2, 2));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, 0, "A"));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, 1, "B"));
    NIMBLE_RETURN_IF_ERROR(CheckSameDType(op(), inputs[0], inputs[1]));
    NIMBLE_ASSIGN_OR_RETURN(MatMulPlan p,
                            PlanMatMul(op(), inputs[0].shape(), inputs[1].shape(), false, false));
    return p.out_shape;
  }
  absl::Status Compute(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    NIMBLE_ASSIGN_OR_RETURN(MatMulPlan p,
                            PlanMatMul(op(), inputs[0].shape(), inputs[1].shape(), false, false));
    return MatMulAnyType(ctx, cache_, p, inputs[0], inputs[1], out, op(),
                         constant_b_ ? &packed_ : nullptr);
  }

  const bool constant_b_;
  PrimitiveCache cache_;
  PackedWeights packed_;
};

class FusedMatMulKernel final : public SingleOutputKernel {
 public:
  FusedMatMulKernel(bool trans_b, float alpha, Activation activation, bool constant_b)
      : SingleOutputKernel("FusedMatMul"),
        trans_b_(trans_b),
        alpha_(alpha),
        activation_(activation),
        constant_b_(constant_b) {}

 private:
  absl::StatusOr<MatMulPlan> Plan(absl::Span<const Tensor> inputs) const {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 2, 4));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, 0, "A"));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, 1, "B"));
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (inputs[i].defined() && inputs[i].dtype() != DType::kF32) {
        return absl::InvalidArgumentError(
            absl::StrCat("FusedMatMul: inputs must be f32, got ", inputs[i].TypeString()));
      }
    }
    NIMBLE_ASSIGN_OR_RETURN(
        MatMulPlan p, PlanMatMul(op(), inputs[0].shape(), inputs[1].shape(), false, trans_b_));
    if (Present(inputs, 2) && inputs[2].num_elements() != p.n) {
      return absl::InvalidArgumentError(
          absl::StrCat("FusedMatMul: bias ", inputs[2].TypeString(), " does not match N = ", p.n));
    }
    if (Present(inputs, 3) && inputs[3].shape() != p.out_shape) {
      return absl::InvalidArgumentError(
          absl::StrCat("FusedMatMul: residual ", inputs[3].TypeString(),
                       " does not match the output ", ShapeToString(p.out_shape)));
    }
    return p;
  }
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(MatMulPlan p, Plan(inputs));
    return p.out_shape;
  }
  absl::Status Compute(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    NIMBLE_ASSIGN_OR_RETURN(MatMulPlan p, Plan(inputs));
    Epilogue e;
    e.alpha = alpha_;
    e.bias = Present(inputs, 2) ? inputs[2].data<float>() : nullptr;
    e.activation = activation_;
    e.residual = Present(inputs, 3) ? inputs[3].data<float>() : nullptr;
    return MatMulF32(ctx, cache_, p, inputs[0].data<float>(), inputs[1].data<float>(),
                     out.data<float>(), e, op(), constant_b_ ? &packed_ : nullptr);
  }

  const bool trans_b_;
  const float alpha_;
  const Activation activation_;
  const bool constant_b_;
  PrimitiveCache cache_;
  PackedWeights packed_;
};

class GemmKernel final : public SingleOutputKernel {
 public:
  GemmKernel(double alpha, double beta, bool trans_a, bool trans_b, bool constant_b)
      : SingleOutputKernel("Gemm"),
        alpha_(alpha),
        beta_(beta),
        trans_a_(trans_a),
        trans_b_(trans_b),
        constant_b_(constant_b) {}

 private:
  absl::StatusOr<MatMulPlan> Plan(absl::Span<const Tensor> inputs) const {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 2, 3));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, 0, "A"));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, 1, "B"));
    NIMBLE_RETURN_IF_ERROR(CheckSameDType(op(), inputs[0], inputs[1]));
    if (inputs[0].rank() != 2 || inputs[1].rank() != 2) {
      return absl::InvalidArgumentError(absl::StrCat("Gemm: A and B must be 2-D, got ",
                                                     inputs[0].TypeString(), " and ",
                                                     inputs[1].TypeString()));
    }
    NIMBLE_ASSIGN_OR_RETURN(
        MatMulPlan p, PlanMatMul(op(), inputs[0].shape(), inputs[1].shape(), trans_a_, trans_b_));
    if (Present(inputs, 2)) {
      NIMBLE_RETURN_IF_ERROR(CheckSameDType(op(), inputs[0], inputs[2]));
      const Shape& c = inputs[2].shape();
      bool ok = c.size() <= 2;
      for (size_t i = 0; ok && i < c.size(); ++i) {
        const int64_t want = p.out_shape[2 - c.size() + i];
        ok = c[i] == 1 || c[i] == want;
      }
      if (!ok) {
        return absl::InvalidArgumentError(absl::StrCat("Gemm: C ", inputs[2].TypeString(),
                                                       " does not broadcast to ",
                                                       ShapeToString(p.out_shape)));
      }
    }
    return p;
  }
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(MatMulPlan p, Plan(inputs));
    return p.out_shape;
  }

  // out = broadcast(C) * scale, for every dtype through double.
  static absl::Status WriteC(const Tensor& c, const Tensor& out, double scale) {
    const Shape strides = BroadcastStrides(c.shape(), out.shape());
    const int64_t rows = out.dim(0), cols = out.dim(1);
    const size_t es = DTypeSize(out.dtype());
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < cols; ++j) {
        const double v = kernel_util::ElementAsDouble(c, i * strides[0] + j * strides[1]) * scale;
        NIMBLE_RETURN_IF_ERROR(kernel_util::WriteScalar(
            out.dtype(), v, static_cast<char*>(out.raw_data()) + (i * cols + j) * es));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Compute(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    NIMBLE_ASSIGN_OR_RETURN(MatMulPlan p, Plan(inputs));
    const bool has_c = Present(inputs, 2) && beta_ != 0.0;
    const DType dtype = inputs[0].dtype();
    if (dtype == DType::kF32) {
      Epilogue e;
      e.alpha = static_cast<float>(alpha_);
      if (alpha_ == 0.0) {
        if (!has_c) {
          std::memset(out.raw_data(), 0, out.nbytes());
          return absl::OkStatus();
        }
        return WriteC(inputs[2], out, beta_);
      }
      if (has_c) {
        const Tensor& c = inputs[2];
        const bool row = (c.rank() == 1 && c.dim(0) == p.n) ||
                         (c.rank() == 2 && c.dim(0) == 1 && c.dim(1) == p.n);
        if (beta_ == 1.0 && row) {
          e.bias = c.data<float>();
        } else {
          // out = alpha * (A·B + (beta / alpha) * C): C goes in first, the sum post-op adds it.
          NIMBLE_RETURN_IF_ERROR(WriteC(c, out, beta_ / alpha_));
          e.accumulate = true;
        }
      }
      return MatMulF32(ctx, cache_, p, inputs[0].data<float>(), inputs[1].data<float>(),
                       out.data<float>(), e, op(), constant_b_ ? &packed_ : nullptr);
    }
    // Other dtypes: product, then alpha and beta * C through double.
    NIMBLE_RETURN_IF_ERROR(MatMulAnyType(ctx, cache_, p, inputs[0], inputs[1], out, op()));
    if (alpha_ == 1.0 && !has_c) return absl::OkStatus();
    Shape c_strides;
    if (has_c) c_strides = BroadcastStrides(inputs[2].shape(), out.shape());
    const size_t es = DTypeSize(dtype);
    for (int64_t i = 0; i < p.m; ++i) {
      for (int64_t j = 0; j < p.n; ++j) {
        const int64_t o = i * p.n + j;
        double v = alpha_ * kernel_util::ElementAsDouble(out, o);
        if (has_c) {
          v += beta_ * kernel_util::ElementAsDouble(inputs[2], i * c_strides[0] + j * c_strides[1]);
        }
        NIMBLE_RETURN_IF_ERROR(
            kernel_util::WriteScalar(dtype, v, static_cast<char*>(out.raw_data()) + o * es));
      }
    }
    return absl::OkStatus();
  }

  const double alpha_, beta_;
  const bool trans_a_, trans_b_;
  const bool constant_b_;
  PrimitiveCache cache_;
  PackedWeights packed_;
};

class MatMulIntegerKernel final : public SingleOutputKernel {
 public:
  MatMulIntegerKernel() : SingleOutputKernel("MatMulInteger") {}

 private:
  absl::StatusOr<MatMulPlan> Plan(absl::Span<const Tensor> inputs) const {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 2, 4));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, 0, "A"));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, 1, "B"));
    for (int i = 0; i < 4 && i < static_cast<int>(inputs.size()); ++i) {
      if (inputs[i].defined() && inputs[i].dtype() != DType::kU8 &&
          inputs[i].dtype() != DType::kI8) {
        return absl::InvalidArgumentError(
            absl::StrCat("MatMulInteger: inputs must be u8 or i8, got ", inputs[i].TypeString()));
      }
    }
    NIMBLE_ASSIGN_OR_RETURN(MatMulPlan p,
                            PlanMatMul(op(), inputs[0].shape(), inputs[1].shape(), false, false));
    if (Present(inputs, 2) && inputs[2].num_elements() != 1 && inputs[2].num_elements() != p.m) {
      return absl::InvalidArgumentError("MatMulInteger: a_zero_point must be a scalar or [M]");
    }
    if (Present(inputs, 3) && inputs[3].num_elements() != 1 && inputs[3].num_elements() != p.n) {
      return absl::InvalidArgumentError("MatMulInteger: b_zero_point must be a scalar or [N]");
    }
    return p;
  }
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(MatMulPlan p, Plan(inputs));
    return p.out_shape;
  }
  absl::StatusOr<DType> OutputDType(absl::Span<const Tensor>) const override { return DType::kI32; }
  static int32_t At(const Tensor& t, int64_t i) {
    return t.dtype() == DType::kU8 ? t.data<uint8_t>()[i] : t.data<int8_t>()[i];
  }
  absl::Status Compute(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    NIMBLE_ASSIGN_OR_RETURN(MatMulPlan p, Plan(inputs));
    const Tensor& a = inputs[0];
    const Tensor& b = inputs[1];
    const Tensor* az = Present(inputs, 2) ? &inputs[2] : nullptr;
    const Tensor* bz = Present(inputs, 3) ? &inputs[3] : nullptr;
    int32_t* c = out.data<int32_t>();
    const int64_t rows = p.num_batches() * p.m;
    const int nb = static_cast<int>(p.batch.size());
    ParallelFor(ctx.num_threads, rows, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t bi = r / p.m, i = r % p.m;
        int64_t ao = 0, bo = 0, rem = bi;
        for (int d = nb - 1; d >= 0; --d) {
          const int64_t idx = rem % p.batch[d];
          rem /= p.batch[d];
          ao += idx * p.a_batch_strides[d];
          bo += idx * p.b_batch_strides[d];
        }
        const int32_t za = az == nullptr ? 0 : At(*az, az->num_elements() == 1 ? 0 : i);
        for (int64_t j = 0; j < p.n; ++j) {
          const int32_t zb = bz == nullptr ? 0 : At(*bz, bz->num_elements() == 1 ? 0 : j);
          int32_t s = 0;
          for (int64_t q = 0; q < p.k; ++q) {
            s += (At(a, ao + i * p.k + q) - za) * (At(b, bo + q * p.n + j) - zb);
          }
          c[r * p.n + j] = s;
        }
      }
    });
    return absl::OkStatus();
  }
};

// ---------------------------------------------------------------------------------------------
// Sliding-window geometry shared by Conv, ConvTranspose and pooling.

enum class AutoPad { kNotSet, kSameUpper, kSameLower, kValid };

absl::StatusOr<AutoPad> ParseAutoPad(const Attributes& a) {
  const std::string s = a.GetOr<std::string>("auto_pad", "NOTSET");
  if (s == "NOTSET" || s.empty()) return AutoPad::kNotSet;
  if (s == "SAME_UPPER") return AutoPad::kSameUpper;
  if (s == "SAME_LOWER") return AutoPad::kSameLower;
  if (s == "VALID") return AutoPad::kValid;
  return absl::InvalidArgumentError(absl::StrCat("unknown auto_pad '", s, "'"));
}

struct WindowAttrs {
  AutoPad auto_pad = AutoPad::kNotSet;
  std::vector<int64_t> kernel_shape, strides, dilations, pads;
  bool ceil_mode = false;

  static absl::StatusOr<WindowAttrs> Parse(const Attributes& a) {
    WindowAttrs w;
    NIMBLE_ASSIGN_OR_RETURN(w.auto_pad, ParseAutoPad(a));
    w.kernel_shape = a.GetOr<std::vector<int64_t>>("kernel_shape", {});
    w.strides = a.GetOr<std::vector<int64_t>>("strides", {});
    w.dilations = a.GetOr<std::vector<int64_t>>("dilations", {});
    w.pads = a.GetOr<std::vector<int64_t>>("pads", {});
    w.ceil_mode = a.GetOr<int64_t>("ceil_mode", 0) != 0;
    for (int64_t v : w.strides) {
      if (v <= 0) return absl::InvalidArgumentError("strides must be positive");
    }
    for (int64_t v : w.dilations) {
      if (v <= 0) return absl::InvalidArgumentError("dilations must be positive");
    }
    for (int64_t v : w.pads) {
      if (v < 0) return absl::InvalidArgumentError("pads must be non-negative");
    }
    return w;
  }
};

struct Window {
  Shape in, kernel, strides, dilations, pad_begin, pad_end, out;
  int spatial() const { return static_cast<int>(in.size()); }
};

// Output geometry of a convolution or pooling window over `in` with `kernel`.
absl::StatusOr<Window> MakeWindow(absl::string_view op, const WindowAttrs& a,
                                  absl::Span<const int64_t> in, absl::Span<const int64_t> kernel) {
  const size_t s = in.size();
  auto check = [&](const std::vector<int64_t>& v, size_t n, const char* name) -> absl::Status {
    if (!v.empty() && v.size() != n) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": ", name, " has ", v.size(), " entries, expected ", n));
    }
    return absl::OkStatus();
  };
  NIMBLE_RETURN_IF_ERROR(check(a.strides, s, "strides"));
  NIMBLE_RETURN_IF_ERROR(check(a.dilations, s, "dilations"));
  NIMBLE_RETURN_IF_ERROR(check(a.pads, 2 * s, "pads"));
  Window w;
  w.in.assign(in.begin(), in.end());
  w.kernel.assign(kernel.begin(), kernel.end());
  for (size_t i = 0; i < s; ++i) {
    const int64_t k = kernel[i];
    const int64_t st = a.strides.empty() ? 1 : a.strides[i];
    const int64_t d = a.dilations.empty() ? 1 : a.dilations[i];
    if (k <= 0) return absl::InvalidArgumentError(absl::StrCat(op, ": kernel dim ", k));
    const int64_t ext = (k - 1) * d + 1;
    int64_t pb = a.pads.empty() ? 0 : a.pads[i];
    int64_t pe = a.pads.empty() ? 0 : a.pads[i + s];
    int64_t out = 0;
    if (a.auto_pad == AutoPad::kSameUpper || a.auto_pad == AutoPad::kSameLower) {
      out = (in[i] + st - 1) / st;
      const int64_t total = std::max<int64_t>(0, (out - 1) * st + ext - in[i]);
      pb = a.auto_pad == AutoPad::kSameUpper ? total / 2 : total - total / 2;
      pe = total - pb;
    } else {
      if (a.auto_pad == AutoPad::kValid) pb = pe = 0;
      const int64_t span = in[i] + pb + pe - ext;
      if (span < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            op, ": window ", ext, " is larger than the padded input ", in[i] + pb + pe));
      }
      out = (a.ceil_mode ? (span + st - 1) / st : span / st) + 1;
      if (a.ceil_mode) {
        // Windows that would start past the input and the begin padding are dropped (PyTorch,
        // newer ONNX): starts (j - 1) * st < in + pb, so j <= floor((in + pb - 1) / st) + 1.
        const int64_t last = in[i] + pb - 1;
        out = std::min(out, (last >= 0 ? last / st : -((-last + st - 1) / st)) + 1);
      }
    }
    w.strides.push_back(st);
    w.dilations.push_back(d);
    w.pad_begin.push_back(pb);
    w.pad_end.push_back(pe);
    w.out.push_back(out);
  }
  return w;
}

// ---------------------------------------------------------------------------------------------
// Conv (oneDNN)

class ConvKernel final : public SingleOutputKernel {
 public:
  ConvKernel(WindowAttrs attrs, int64_t group, bool constant_w)
      : SingleOutputKernel("Conv"),
        attrs_(std::move(attrs)),
        group_(group),
        constant_w_(constant_w) {}

 private:
  absl::StatusOr<Window> Plan(absl::Span<const Tensor> inputs) const {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 2, 3));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, 0, "X"));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, 1, "W"));
    const Tensor& x = inputs[0];
    const Tensor& w = inputs[1];
    const bool floating =
        x.dtype() == DType::kF32 || x.dtype() == DType::kF16 || x.dtype() == DType::kBF16;
    if (x.rank() < 3 || x.rank() > 5 || w.rank() != x.rank() || !floating ||
        w.dtype() != x.dtype()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Conv: X and W must be f32, f16 or bf16 of one type and equal rank 3..5, "
                       "got ",
                       x.TypeString(), " and ", w.TypeString()));
    }
    const int64_t c = x.dim(1), m = w.dim(0);
    if (group_ <= 0 || c % group_ != 0 || m % group_ != 0 || w.dim(1) * group_ != c) {
      return absl::InvalidArgumentError(absl::StrCat("Conv: X ", x.TypeString(), " and W ",
                                                     w.TypeString(), " do not fit group ", group_));
    }
    const auto kernel = absl::MakeConstSpan(w.shape()).subspan(2);
    if (!attrs_.kernel_shape.empty() &&
        !std::equal(kernel.begin(), kernel.end(), attrs_.kernel_shape.begin(),
                    attrs_.kernel_shape.end())) {
      return absl::InvalidArgumentError(absl::StrCat("Conv: kernel_shape [",
                                                     absl::StrJoin(attrs_.kernel_shape, ","),
                                                     "] does not match W ", w.TypeString()));
    }
    if (Present(inputs, 2) && (inputs[2].num_elements() != m || inputs[2].dtype() != x.dtype())) {
      return absl::InvalidArgumentError(
          absl::StrCat("Conv: bias ", inputs[2].TypeString(), " does not match M = ", m));
    }
    return MakeWindow(op(), attrs_, absl::MakeConstSpan(x.shape()).subspan(2), kernel);
  }
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(Window w, Plan(inputs));
    Shape out = {inputs[0].dim(0), inputs[1].dim(0)};
    out.insert(out.end(), w.out.begin(), w.out.end());
    return out;
  }
  absl::Status Compute(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    NIMBLE_ASSIGN_OR_RETURN(Window w, Plan(inputs));
    if (out.num_elements() == 0) return absl::OkStatus();
    if (out.dtype() == DType::kF32) return ComputeF32(ctx, w, inputs, out, constant_w_);
    // f16 / bf16: the f32 convolution of the widened inputs, rounded once at the end. The
    // widened weights are a fresh buffer per call, so they are not packed once as constants.
    std::vector<Tensor> widened;
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (!Present(inputs, i)) {
        widened.emplace_back();
        continue;
      }
      NIMBLE_ASSIGN_OR_RETURN(Tensor t, ToF32(inputs[i], ctx.allocator));
      widened.push_back(std::move(t));
    }
    NIMBLE_ASSIGN_OR_RETURN(Tensor out32, Tensor::Empty(DType::kF32, out.shape(), ctx.allocator));
    NIMBLE_RETURN_IF_ERROR(ComputeF32(ctx, w, widened, out32, /*constant_w=*/false));
    FromF32(out32, out);
    return absl::OkStatus();
  }

  absl::Status ComputeF32(const KernelContext& ctx, const Window& w,
                          absl::Span<const Tensor> inputs, const Tensor& out,
                          bool constant_w) const {
    const Tensor& x = inputs[0];
    const Tensor& wt = inputs[1];
    const bool has_bias = Present(inputs, 2);
    const auto f32 = memory::data_type::f32;
    Dims src(x.shape().begin(), x.shape().end());
    Dims dst(out.shape().begin(), out.shape().end());
    Dims wei;
    if (group_ > 1) wei.push_back(group_);
    wei.push_back(wt.dim(0) / group_);
    wei.push_back(wt.dim(1));
    wei.insert(wei.end(), wt.shape().begin() + 2, wt.shape().end());
    Dims strides(w.strides.begin(), w.strides.end());
    Dims dilates, pad_l(w.pad_begin.begin(), w.pad_begin.end()),
        pad_r(w.pad_end.begin(), w.pad_end.end());
    for (int64_t d : w.dilations) dilates.push_back(d - 1);
    const int threads = onednn::ThreadsFor(
        ctx.num_threads, 2.0 * static_cast<double>(out.num_elements()) * wt.dim(1) *
                             Product(absl::MakeConstSpan(wt.shape()).subspan(2)));
    PrimitiveCache::Key key = {has_bias, threads};
    for (const Dims* v : {&src, &wei, &dst, &strides, &dilates, &pad_l, &pad_r}) {
      key.push_back(static_cast<int64_t>(v->size()));
      key.insert(key.end(), v->begin(), v->end());
    }
    // Kernels larger than 1x1 run on oneDNN's blocked layouts (brgconv; 1.2-1.65x faster than
    // the plain-layout GEMM convolution on ResNet shapes, activation reorders included); 1x1 is
    // a plain GEMM already.
    const bool blocked = Product(absl::MakeConstSpan(wt.shape()).subspan(2)) > 1;
    key.push_back(blocked);
    const memory::desc src_plain(src, f32, RowMajorStrides(src));
    const memory::desc wei_plain(wei, f32, RowMajorStrides(wei));
    const memory::desc dst_plain(dst, f32, RowMajorStrides(dst));
    const memory::desc bias_md({dst[1]}, f32, memory::format_tag::x);
    auto prim = cache_.GetOrCreate(key, [&]() -> absl::StatusOr<CachedPrimitive> {
      onednn::ScopedThreads scoped(threads);
      try {
        auto layout = [&](const Dims& dims, const memory::desc& plain) {
          return blocked ? memory::desc(dims, f32, memory::format_tag::any) : plain;
        };
        const memory::desc src_md = layout(src, src_plain);
        const memory::desc wei_md = layout(wei, wei_plain);
        const memory::desc dst_md = layout(dst, dst_plain);
        const auto desc =
            has_bias ? dnnl::convolution_forward::desc(
                           dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                           src_md, wei_md, bias_md, dst_md, strides, dilates, pad_l, pad_r)
                     : dnnl::convolution_forward::desc(
                           dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                           src_md, wei_md, dst_md, strides, dilates, pad_l, pad_r);
        const dnnl::convolution_forward::primitive_desc pd(desc, onednn::UserScratchpadAttr(),
                                                           onednn::Engine());
        return onednn::MakeCachedWithLayouts<dnnl::convolution_forward>(pd);
      } catch (const dnnl::error& err) {
        return onednn::ErrorStatus(err, "Conv primitive");
      }
    });
    if (!prim.ok()) return Annotate(prim.status(), op());
    const CachedPrimitive& conv = **prim;
    // Activations (and weights not marked constant) are reordered per call into scratch.
    std::shared_ptr<Storage> src_buf, wei_buf, dst_buf;
    auto scratch_for = [&](const memory::desc& md) -> absl::StatusOr<std::shared_ptr<Storage>> {
      return Storage::Allocate(ctx.allocator, md.get_size());
    };
    std::unordered_map<int, memory> args;
    try {
      const void* src_data = x.raw_data();
      if (conv.src_md != src_plain) {
        NIMBLE_ASSIGN_OR_RETURN(src_buf, scratch_for(conv.src_md));
        NIMBLE_RETURN_IF_ERROR(Reorder(ctx, threads, key, Operand::kSrc, src_plain, x.raw_data(),
                                       conv.src_md, src_buf->data()));
        src_data = src_buf->data();
      }
      const void* wei_data = wt.raw_data();
      if (conv.weights_md != wei_plain) {
        if (constant_w) {
          NIMBLE_ASSIGN_OR_RETURN(wei_buf,
                                  packed_.Get(wt.raw_data(), wei_plain, conv.weights_md, threads));
        } else {
          NIMBLE_ASSIGN_OR_RETURN(wei_buf, scratch_for(conv.weights_md));
          NIMBLE_RETURN_IF_ERROR(Reorder(ctx, threads, key, Operand::kWeights, wei_plain,
                                         wt.raw_data(), conv.weights_md, wei_buf->data()));
        }
        wei_data = wei_buf->data();
      }
      void* dst_data = out.raw_data();
      if (conv.dst_md != dst_plain) {
        NIMBLE_ASSIGN_OR_RETURN(dst_buf, scratch_for(conv.dst_md));
        dst_data = dst_buf->data();
      }
      args[DNNL_ARG_SRC] = onednn::Memory(conv.src_md, src_data);
      args[DNNL_ARG_WEIGHTS] = onednn::Memory(conv.weights_md, wei_data);
      args[DNNL_ARG_DST] = onednn::Memory(conv.dst_md, dst_data);
      if (has_bias) args[DNNL_ARG_BIAS] = onednn::Memory(bias_md, inputs[2].raw_data());
    } catch (const dnnl::error& err) {
      return onednn::ErrorStatus(err, op());
    }
    NIMBLE_RETURN_IF_ERROR(onednn::Execute(conv, args, ctx.allocator, threads, op()));
    if (dst_buf != nullptr) {
      return Reorder(ctx, threads, key, Operand::kDst, conv.dst_md, dst_buf->data(), dst_plain,
                     out.raw_data());
    }
    return absl::OkStatus();
  }

  enum class Operand { kSrc, kWeights, kDst };

  // Copies `from` (layout `from_md`) into `to` (layout `to_md`) with a reorder primitive cached
  // under the convolution's key: its layouts follow from that key and the operand.
  absl::Status Reorder(const KernelContext& ctx, int threads, const PrimitiveCache::Key& conv_key,
                       Operand operand, const memory::desc& from_md, const void* from,
                       const memory::desc& to_md, void* to) const {
    PrimitiveCache::Key key = conv_key;
    key.push_back(-1 - static_cast<int64_t>(operand));
    auto prim = cache_.GetOrCreate(key, [&]() -> absl::StatusOr<CachedPrimitive> {
      onednn::ScopedThreads scoped(threads);
      try {
        const dnnl::reorder::primitive_desc pd(onednn::Engine(), from_md, onednn::Engine(), to_md,
                                               onednn::UserScratchpadAttr());
        return onednn::MakeCached<dnnl::reorder>(pd);
      } catch (const dnnl::error& err) {
        return onednn::ErrorStatus(err, "Conv reorder");
      }
    });
    if (!prim.ok()) return Annotate(prim.status(), op());
    std::unordered_map<int, memory> args;
    try {
      args[DNNL_ARG_FROM] = onednn::Memory(from_md, from);
      args[DNNL_ARG_TO] = onednn::Memory(to_md, to);
    } catch (const dnnl::error& err) {
      return onednn::ErrorStatus(err, op());
    }
    return onednn::Execute(**prim, args, ctx.allocator, threads, op());
  }

  const WindowAttrs attrs_;
  const int64_t group_;
  const bool constant_w_;
  PrimitiveCache cache_;
  PackedWeights packed_;
};

// ---------------------------------------------------------------------------------------------
// ConvTranspose: columns = W^T · X per group (sgemm), then col2im adds them into Y.

// ---------------------------------------------------------------------------------------------
// ConvInteger (opset 10): the integer convolution sum (x - x_zero_point)(w - w_zero_point) in
// int32; x and w uint8 or int8, x_zero_point a scalar, w_zero_point a scalar or one per output
// channel; the Conv window attributes and groups. Direct loops (quantized models run this op
// rarely and at small sizes in the suite; oneDNN's int8 convolution wants other layouts).
// QLinearConv (opset 10) requantizes those sums (plus the int32 bias B) to y's type:
// saturate(round_half_even((sum + B) * scale + y_zero_point)), scale = x_scale * w_scale /
// y_scale in float as ONNX's reference computes it, w_scale per tensor or per output channel.

bool IsInt8(DType d) { return d == DType::kU8 || d == DType::kI8; }

int32_t Int8Value(const Tensor& t, int64_t i) {
  return t.dtype() == DType::kI8 ? t.data<int8_t>()[i] : t.data<uint8_t>()[i];
}

// The window of an integer convolution of x by w: int8 / uint8 tensors of equal rank 3..5 whose
// channels fit `group`, x_zp (when given) a scalar, w_zp (when given) a scalar or one per output
// channel.
absl::StatusOr<Window> IntegerConvWindow(absl::string_view op, const WindowAttrs& attrs,
                                         int64_t group, const Tensor& x, const Tensor& w,
                                         const Tensor* x_zp, const Tensor* w_zp) {
  if (!IsInt8(x.dtype()) || !IsInt8(w.dtype())) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": x and w must be uint8 or int8, got ",
                                                   x.TypeString(), " and ", w.TypeString()));
  }
  if (x.rank() < 3 || x.rank() > 5 || w.rank() != x.rank()) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": x and w of equal rank 3..5, got ",
                                                   x.TypeString(), " and ", w.TypeString()));
  }
  const int64_t c = x.dim(1), m = w.dim(0);
  if (group <= 0 || c % group != 0 || m % group != 0 || w.dim(1) * group != c) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": x ", x.TypeString(), " and w ",
                                                   w.TypeString(), " do not fit group ", group));
  }
  if (x_zp != nullptr && (!IsInt8(x_zp->dtype()) || x_zp->num_elements() != 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": x_zero_point must be a uint8 or int8 scalar, got ", x_zp->TypeString()));
  }
  if (w_zp != nullptr &&
      (!IsInt8(w_zp->dtype()) || (w_zp->num_elements() != 1 && w_zp->num_elements() != m))) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": w_zero_point must be uint8 or int8, a scalar or one per output channel, got ",
        w_zp->TypeString()));
  }
  return MakeWindow(op, attrs, absl::MakeConstSpan(x.shape()).subspan(2),
                    absl::MakeConstSpan(w.shape()).subspan(2));
}

// y[n, oc, out...] = the sum over the window of (x - x_zp)(w - w_zp[oc]), padding being x_zp.
void IntegerConvSums(const Window& win, int64_t group, const Tensor& x, const Tensor& w,
                     const Tensor* x_zp, const Tensor* w_zp, int32_t* y) {
  const int32_t xzp = x_zp != nullptr ? Int8Value(*x_zp, 0) : 0;
  const int s = win.spatial();
  const int64_t n = x.dim(0), c = x.dim(1), m = w.dim(0), cg = c / group, mg = m / group;
  int64_t in_size = 1, out_size = 1, k_size = 1;
  for (int d = 0; d < s; ++d) in_size *= win.in[d], out_size *= win.out[d], k_size *= win.kernel[d];
  Shape o(s), k(s);
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t oc = 0; oc < m; ++oc) {
      const int64_t g = oc / mg;
      const int32_t wzp =
          w_zp != nullptr ? Int8Value(*w_zp, w_zp->num_elements() == 1 ? 0 : oc) : 0;
      std::fill(o.begin(), o.end(), 0);
      for (int64_t op = 0; op < out_size; ++op) {
        int32_t acc = 0;
        for (int64_t ic = 0; ic < cg; ++ic) {
          const int64_t x_base = (b * c + g * cg + ic) * in_size;
          const int64_t w_base = (oc * cg + ic) * k_size;
          std::fill(k.begin(), k.end(), 0);
          for (int64_t kp = 0; kp < k_size; ++kp) {
            int64_t at = 0;
            bool inside = true;
            for (int d = 0; d < s && inside; ++d) {
              const int64_t pos =
                  o[d] * win.strides[d] - win.pad_begin[d] + k[d] * win.dilations[d];
              inside = pos >= 0 && pos < win.in[d];
              at = at * win.in[d] + pos;
            }
            // Padding is the zero point (the padded value of the quantized input).
            const int32_t xv = inside ? Int8Value(x, x_base + at) : xzp;
            acc += (xv - xzp) * (Int8Value(w, w_base + kp) - wzp);
            for (int d = s - 1; d >= 0 && ++k[d] == win.kernel[d]; --d) k[d] = 0;
          }
        }
        y[(b * m + oc) * out_size + op] = acc;
        for (int d = s - 1; d >= 0 && ++o[d] == win.out[d]; --d) o[d] = 0;
      }
    }
  }
}

Shape ConvOutShape(const Tensor& x, const Tensor& w, const Window& win) {
  Shape out = {x.dim(0), w.dim(0)};
  out.insert(out.end(), win.out.begin(), win.out.end());
  return out;
}

const Tensor* Optional(absl::Span<const Tensor> inputs, size_t i) {
  return i < inputs.size() && inputs[i].defined() ? &inputs[i] : nullptr;
}

class ConvIntegerKernel final : public SingleOutputKernel {
 public:
  ConvIntegerKernel(WindowAttrs attrs, int64_t group)
      : SingleOutputKernel("ConvInteger"), attrs_(std::move(attrs)), group_(group) {}

 private:
  absl::StatusOr<Window> Plan(absl::Span<const Tensor> inputs) const {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 2, 4));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, 0, "x"));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, 1, "w"));
    return IntegerConvWindow(op(), attrs_, group_, inputs[0], inputs[1], Optional(inputs, 2),
                             Optional(inputs, 3));
  }

  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(Window win, Plan(inputs));
    return ConvOutShape(inputs[0], inputs[1], win);
  }
  absl::StatusOr<DType> OutputDType(absl::Span<const Tensor>) const override { return DType::kI32; }

  absl::Status Compute(const KernelContext&, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    NIMBLE_ASSIGN_OR_RETURN(Window win, Plan(inputs));
    IntegerConvSums(win, group_, inputs[0], inputs[1], Optional(inputs, 2), Optional(inputs, 3),
                    out.data<int32_t>());
    return absl::OkStatus();
  }

  const WindowAttrs attrs_;
  const int64_t group_;
};

// Inputs: x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B?.
class QLinearConvKernel final : public SingleOutputKernel {
 public:
  QLinearConvKernel(WindowAttrs attrs, int64_t group)
      : SingleOutputKernel("QLinearConv"), attrs_(std::move(attrs)), group_(group) {}

 private:
  absl::StatusOr<Window> Plan(absl::Span<const Tensor> inputs) const {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 8, 9));
    static constexpr const char* kNames[] = {
        "x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point", "y_scale", "y_zero_point"};
    for (size_t i = 0; i < 8; ++i) NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, i, kNames[i]));
    const Tensor &x = inputs[0], &w = inputs[3], &y_zp = inputs[7];
    const int64_t m = w.rank() > 0 ? w.dim(0) : 0;
    for (size_t i : {1, 4, 6}) {
      const int64_t count = inputs[i].num_elements();
      if (inputs[i].dtype() != DType::kF32 || (count != 1 && !(i == 4 && count == m))) {
        return absl::InvalidArgumentError(absl::StrCat(
            "QLinearConv: ", kNames[i], " must be a float scalar",
            i == 4 ? " or one per output channel" : "", ", got ", inputs[i].TypeString()));
      }
    }
    if (!IsInt8(y_zp.dtype()) || y_zp.num_elements() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "QLinearConv: y_zero_point must be a uint8 or int8 scalar, got ", y_zp.TypeString()));
    }
    const Tensor* b = Optional(inputs, 8);
    if (b != nullptr && (b->dtype() != DType::kI32 || b->rank() != 1 || b->dim(0) != m)) {
      return absl::InvalidArgumentError(
          absl::StrCat("QLinearConv: B must be int32 [", m, "], got ", b->TypeString()));
    }
    return IntegerConvWindow(op(), attrs_, group_, x, w, &inputs[2], &inputs[5]);
  }

  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(Window win, Plan(inputs));
    return ConvOutShape(inputs[0], inputs[3], win);
  }
  absl::StatusOr<DType> OutputDType(absl::Span<const Tensor> inputs) const override {
    if (inputs.size() < 8 || !inputs[7].defined()) return DType::kInvalid;
    return inputs[7].dtype();
  }

  absl::Status Compute(const KernelContext&, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    NIMBLE_ASSIGN_OR_RETURN(Window win, Plan(inputs));
    const Tensor &x = inputs[0], &w = inputs[3], &w_scale = inputs[4], &y_zp = inputs[7];
    std::vector<int32_t> sums(static_cast<size_t>(out.num_elements()));
    IntegerConvSums(win, group_, x, w, &inputs[2], &inputs[5], sums.data());
    const float xs = *inputs[1].data<float>(), ys = *inputs[6].data<float>();
    bool scales_ok = std::isfinite(xs) && xs > 0 && std::isfinite(ys) && ys > 0;
    for (int64_t i = 0; i < w_scale.num_elements(); ++i) {
      const float s = w_scale.data<float>()[i];
      scales_ok = scales_ok && std::isfinite(s) && s > 0;
    }
    if (!scales_ok) {
      return absl::InvalidArgumentError("QLinearConv: scales must be finite and positive");
    }
    const double zy = Int8Value(y_zp, 0);
    const bool signed_out = y_zp.dtype() == DType::kI8;
    const double lo = signed_out ? -128.0 : 0.0, hi = signed_out ? 127.0 : 255.0;
    const Tensor* b = Optional(inputs, 8);
    const int64_t m = w.dim(0);
    int64_t plane = 1;
    for (int64_t d : win.out) plane *= d;
    for (int64_t i = 0; i < out.num_elements(); ++i) {
      const int64_t oc = (i / plane) % m;
      const float scale = xs * w_scale.data<float>()[w_scale.num_elements() == 1 ? 0 : oc] / ys;
      const int64_t acc = int64_t{sums[i]} + (b != nullptr ? b->data<int32_t>()[oc] : 0);
      const double v = std::nearbyint(
          std::clamp(static_cast<double>(acc) * static_cast<double>(scale) + zy, lo, hi));
      if (signed_out) {
        out.data<int8_t>()[i] = static_cast<int8_t>(v);
      } else {
        out.data<uint8_t>()[i] = static_cast<uint8_t>(v);
      }
    }
    return absl::OkStatus();
  }

  const WindowAttrs attrs_;
  const int64_t group_;
};

class ConvTransposeKernel final : public SingleOutputKernel {
 public:
  ConvTransposeKernel(WindowAttrs attrs, int64_t group, std::vector<int64_t> output_padding,
                      std::vector<int64_t> output_shape)
      : SingleOutputKernel("ConvTranspose"),
        attrs_(std::move(attrs)),
        group_(group),
        output_padding_(std::move(output_padding)),
        output_shape_(std::move(output_shape)) {}

 private:
  absl::StatusOr<Window> Plan(absl::Span<const Tensor> inputs) const {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 2, 3));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, 0, "X"));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, 1, "W"));
    const Tensor& x = inputs[0];
    const Tensor& w = inputs[1];
    if (x.rank() < 3 || w.rank() != x.rank() || x.dtype() != DType::kF32 ||
        w.dtype() != DType::kF32) {
      return absl::InvalidArgumentError(
          absl::StrCat("ConvTranspose: X and W must be f32 of equal rank >= 3, got ",
                       x.TypeString(), " and ", w.TypeString()));
    }
    if (group_ <= 0 || x.dim(1) != w.dim(0) || x.dim(1) % group_ != 0) {
      return absl::InvalidArgumentError(absl::StrCat("ConvTranspose: X ", x.TypeString(), " and W ",
                                                     w.TypeString(), " do not fit group ", group_));
    }
    const int s = x.rank() - 2;
    const int64_t m = w.dim(1) * group_;
    if (Present(inputs, 2) && inputs[2].num_elements() != m) {
      return absl::InvalidArgumentError(
          absl::StrCat("ConvTranspose: bias ", inputs[2].TypeString(), " does not match M = ", m));
    }
    auto sized = [&](const std::vector<int64_t>& v, size_t n) {
      return v.empty() || v.size() == n;
    };
    // output_shape may list N and C too: its last `s` entries are the spatial dims.
    std::vector<int64_t> out_spatial = output_shape_;
    if (out_spatial.size() > static_cast<size_t>(s)) {
      out_spatial.erase(out_spatial.begin(), out_spatial.end() - s);
    }
    if (!sized(attrs_.strides, s) || !sized(attrs_.dilations, s) || !sized(attrs_.pads, 2 * s) ||
        !sized(output_padding_, s) || !sized(out_spatial, s)) {
      return absl::InvalidArgumentError("ConvTranspose: attribute lengths do not match the rank");
    }
    Window win;
    for (int i = 0; i < s; ++i) {
      const int64_t in = x.dim(i + 2), k = w.dim(i + 2);
      const int64_t st = attrs_.strides.empty() ? 1 : attrs_.strides[i];
      const int64_t d = attrs_.dilations.empty() ? 1 : attrs_.dilations[i];
      const int64_t op_pad = output_padding_.empty() ? 0 : output_padding_[i];
      const int64_t ext = (k - 1) * d + 1;
      int64_t pb = attrs_.pads.empty() ? 0 : attrs_.pads[i];
      int64_t pe = attrs_.pads.empty() ? 0 : attrs_.pads[i + s];
      int64_t out;
      const bool same =
          attrs_.auto_pad == AutoPad::kSameUpper || attrs_.auto_pad == AutoPad::kSameLower;
      if (!out_spatial.empty() || same) {
        out = !out_spatial.empty() ? out_spatial[i] : in * st;
        const int64_t total = st * (in - 1) + op_pad + ext - out;
        if (total < 0 && out_spatial.empty()) {
          return absl::InvalidArgumentError("ConvTranspose: negative padding");
        }
        // The spec's total/2 floors (an output_shape one larger than the natural size gives
        // total -1: the extra row goes at the end).
        const int64_t half = total >= 0 ? total / 2 : -((-total + 1) / 2);
        if (attrs_.auto_pad == AutoPad::kSameUpper) {
          pb = half;
          pe = total - half;
        } else {
          pb = total - half;
          pe = half;
        }
      } else {
        if (attrs_.auto_pad == AutoPad::kValid) pb = pe = 0;
        out = st * (in - 1) + op_pad + ext - pb - pe;
      }
      if (out < 0 || k <= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("ConvTranspose: output dim ", out, " for input dim ", in));
      }
      win.in.push_back(in);
      win.kernel.push_back(k);
      win.strides.push_back(st);
      win.dilations.push_back(d);
      win.pad_begin.push_back(pb);
      win.pad_end.push_back(pe);
      win.out.push_back(out);
    }
    return win;
  }
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(Window w, Plan(inputs));
    Shape out = {inputs[0].dim(0), inputs[1].dim(1) * group_};
    out.insert(out.end(), w.out.begin(), w.out.end());
    return out;
  }
  absl::Status Compute(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    NIMBLE_ASSIGN_OR_RETURN(Window w, Plan(inputs));
    const Tensor& x = inputs[0];
    const Tensor& wt = inputs[1];
    const int s = w.spatial();
    const int64_t batch = x.dim(0), c = x.dim(1), cg = c / group_, mg = wt.dim(1);
    const int64_t in_size = Product(w.in), out_size = Product(w.out), k_size = Product(w.kernel);
    const int64_t rows = mg * k_size;  // column rows per group
    NIMBLE_ASSIGN_OR_RETURN(Tensor cols,
                            Tensor::Empty(DType::kF32, {rows, in_size}, ctx.allocator));
    float* y = out.data<float>();
    std::memset(y, 0, out.nbytes());
    const Shape in_strides = kernel_util::Strides(w.in);
    const Shape out_strides = kernel_util::Strides(w.out);
    const Shape k_strides = kernel_util::Strides(w.kernel);
    for (int64_t n = 0; n < batch; ++n) {
      for (int64_t g = 0; g < group_; ++g) {
        const float* xg = x.data<float>() + (n * c + g * cg) * in_size;
        const float* wg = wt.data<float>() + g * cg * rows;
        // cols[rows, in_size] = wg^T [rows, cg] · xg [cg, in_size]
        NIMBLE_RETURN_IF_ERROR(onednn::Sgemm(ctx.num_threads, true, false, rows, in_size, cg, 1.0f,
                                             wg, rows, xg, in_size, 0.0f, cols.data<float>(),
                                             in_size));
        float* yg = y + (n * group_ * mg + g * mg) * out_size;
        const float* col = cols.data<float>();
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t oc = r / k_size, kidx = r % k_size;
          Shape kpos(s);
          for (int i = 0; i < s; ++i) kpos[i] = (kidx / k_strides[i]) % w.kernel[i];
          for (int64_t p = 0; p < in_size; ++p) {
            int64_t o = 0;
            bool inside = true;
            for (int i = 0; i < s && inside; ++i) {
              const int64_t ip = (p / in_strides[i]) % w.in[i];
              const int64_t at = ip * w.strides[i] - w.pad_begin[i] + kpos[i] * w.dilations[i];
              inside = at >= 0 && at < w.out[i];
              o += at * out_strides[i];
            }
            if (inside) yg[oc * out_size + o] += col[r * in_size + p];
          }
        }
      }
    }
    if (Present(inputs, 2)) {
      const int64_t m = group_ * mg;
      for (int64_t n = 0; n < batch; ++n) {
        for (int64_t oc = 0; oc < m; ++oc) {
          const float b = static_cast<float>(kernel_util::ElementAsDouble(inputs[2], oc));
          float* p = y + (n * m + oc) * out_size;
          for (int64_t i = 0; i < out_size; ++i) p[i] += b;
        }
      }
    }
    return absl::OkStatus();
  }

  const WindowAttrs attrs_;
  const int64_t group_;
  const std::vector<int64_t> output_padding_, output_shape_;
};

// ---------------------------------------------------------------------------------------------
// Pooling

enum class PoolKind { kMax, kAverage };

class PoolKernel final : public Kernel {
 public:
  PoolKernel(PoolKind kind, bool global, WindowAttrs attrs, bool count_include_pad,
             int64_t storage_order)
      : kind_(kind),
        global_(global),
        attrs_(std::move(attrs)),
        count_include_pad_(count_include_pad),
        storage_order_(storage_order) {}

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    NIMBLE_ASSIGN_OR_RETURN(Window w, Plan(inputs));
    for (Shape& s : output_shapes) s = OutShape(inputs[0], w);
    return absl::OkStatus();
  }

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(Window w, Plan(inputs));
    const size_t max_outputs = kind_ == PoolKind::kMax && !global_ ? 2 : 1;
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputs(Name(), outputs, 1, max_outputs));
    if (!outputs[0].defined()) {
      return absl::InvalidArgumentError(absl::StrCat(Name(), ": output Y is not allocated"));
    }
    const Tensor& x = inputs[0];
    const Shape out_shape = OutShape(x, w);
    std::vector<Shape> shapes(outputs.size(), out_shape);
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputShapes(Name(), outputs, shapes));
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputDType(Name(), outputs[0], x.dtype()));
    if (outputs.size() > 1) {
      NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputDType(Name(), outputs[1], DType::kI64));
    }
    int64_t* indices =
        outputs.size() > 1 && outputs[1].defined() ? outputs[1].data<int64_t>() : nullptr;
    switch (x.dtype()) {
      case DType::kF32:
        Pool<float>(ctx, x, w, outputs[0], indices);
        break;
      case DType::kF64:
        Pool<double>(ctx, x, w, outputs[0], indices);
        break;
      case DType::kI8:
        Pool<int8_t>(ctx, x, w, outputs[0], indices);
        break;
      case DType::kU8:
        Pool<uint8_t>(ctx, x, w, outputs[0], indices);
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrCat(Name(), ": element type ", DTypeName(x.dtype()), " is not supported"));
    }
    return absl::OkStatus();
  }

 private:
  std::string Name() const {
    return absl::StrCat(global_ ? "Global" : "",
                        kind_ == PoolKind::kMax ? "MaxPool" : "AveragePool");
  }
  absl::StatusOr<Window> Plan(absl::Span<const Tensor> inputs) const {
    NIMBLE_RETURN_IF_ERROR(CheckArity(Name(), inputs.size(), 1, 1));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(Name(), inputs, 0, "X"));
    const Tensor& x = inputs[0];
    if (x.rank() < 3) {
      return absl::InvalidArgumentError(
          absl::StrCat(Name(), ": X must have rank >= 3, got ", x.TypeString()));
    }
    const auto in = absl::MakeConstSpan(x.shape()).subspan(2);
    if (global_) return MakeWindow(Name(), WindowAttrs(), in, in);
    if (attrs_.kernel_shape.size() != in.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          Name(), ": kernel_shape has ", attrs_.kernel_shape.size(), " dims for ", x.TypeString()));
    }
    return MakeWindow(Name(), attrs_, in, attrs_.kernel_shape);
  }
  static Shape OutShape(const Tensor& x, const Window& w) {
    Shape out = {x.dim(0), x.dim(1)};
    out.insert(out.end(), w.out.begin(), w.out.end());
    return out;
  }

  template <typename T>
  void Pool(const KernelContext& ctx, const Tensor& x, const Window& w, const Tensor& y,
            int64_t* indices) const {
    const int s = w.spatial();
    const int64_t planes = x.dim(0) * x.dim(1);
    const int64_t in_size = Product(w.in), out_size = Product(w.out), k_size = Product(w.kernel);
    const Shape in_strides = kernel_util::Strides(w.in);
    const Shape out_strides = kernel_util::Strides(w.out);
    const Shape k_strides = kernel_util::Strides(w.kernel);
    const T* src = x.data<T>();
    T* dst = y.data<T>();
    ParallelFor(ctx.num_threads, planes * out_size, 256, [&](int64_t begin, int64_t end) {
      Shape start(s), kpos(s);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t plane = t / out_size, o = t % out_size;
        for (int i = 0; i < s; ++i) {
          start[i] = ((o / out_strides[i]) % w.out[i]) * w.strides[i] - w.pad_begin[i];
        }
        const T* p = src + plane * in_size;
        double sum = 0;
        int64_t valid = 0, padded = 0;
        T best = std::numeric_limits<T>::lowest();
        int64_t best_at = -1;
        for (int64_t kk = 0; kk < k_size; ++kk) {
          int64_t off = 0;
          bool inside = true, in_padded = true;
          for (int i = 0; i < s; ++i) {
            const int64_t pos = start[i] + ((kk / k_strides[i]) % w.kernel[i]) * w.dilations[i];
            inside = inside && pos >= 0 && pos < w.in[i];
            in_padded = in_padded && pos >= -w.pad_begin[i] && pos < w.in[i] + w.pad_end[i];
            off += pos * in_strides[i];
          }
          if (in_padded) ++padded;
          if (!inside) continue;
          ++valid;
          const T v = p[off];
          if (kind_ == PoolKind::kMax) {
            if (best_at < 0 || v > best || (v != v && best == best)) {
              best = v;
              best_at = off;
            }
          } else {
            sum += static_cast<double>(v);
          }
        }
        if (kind_ == PoolKind::kMax) {
          dst[t] = best;
          if (indices != nullptr) {
            int64_t flat = best_at < 0 ? 0 : best_at;
            if (storage_order_ == 1 && s == 2 && best_at >= 0) {
              const int64_t h = best_at / w.in[1], ww = best_at % w.in[1];
              flat = ww * w.in[0] + h;
            }
            indices[t] = plane * in_size + flat;
          }
        } else {
          const int64_t count = count_include_pad_ ? padded : valid;
          dst[t] = static_cast<T>(count > 0 ? sum / static_cast<double>(count) : 0.0);
        }
      }
    });
  }

  const PoolKind kind_;
  const bool global_;
  const WindowAttrs attrs_;
  const bool count_include_pad_;
  const int64_t storage_order_;
};

// ---------------------------------------------------------------------------------------------
// Einsum: a general loop over every label (diagonals, traces, broadcasting ellipsis dims), and
// for two f32 operands that form a batched product (each summed label in both operands) a
// MatMul on packed [batch, m, k] x [batch, k, n] operands.

struct EinsumSpec {
  std::vector<std::vector<int>> terms;  // per input: label per dim, after ellipsis expansion
  std::vector<int> output;              // output labels
  std::vector<int64_t> dims;            // per label
};

class EinsumKernel final : public SingleOutputKernel {
 public:
  explicit EinsumKernel(std::string equation)
      : SingleOutputKernel("Einsum"), equation_(std::move(equation)) {}

 private:
  absl::StatusOr<EinsumSpec> Parse(absl::Span<const Tensor> inputs) const {
    std::string eq;
    for (char ch : equation_) {
      if (ch != ' ') eq.push_back(ch);
    }
    const size_t arrow = eq.find("->");
    const std::string lhs = eq.substr(0, arrow);
    std::vector<std::string> terms;
    for (size_t start = 0;;) {
      const size_t comma = lhs.find(',', start);
      terms.push_back(
          lhs.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat("Einsum: equation '", equation_, "': ", why));
    };
    if (terms.size() != inputs.size()) return bad("the number of terms and inputs differ");
    for (size_t i = 0; i < inputs.size(); ++i) {
      NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, i, absl::StrCat(i)));
      if (inputs[i].dtype() != inputs[0].dtype()) return bad("inputs differ in type");
    }
    // Letters are labels 0..51; ellipsis dims come after, right-aligned.
    auto letter = [](char ch) -> int {
      if (ch >= 'a' && ch <= 'z') return ch - 'a';
      if (ch >= 'A' && ch <= 'Z') return 26 + (ch - 'A');
      return -1;
    };
    constexpr int kEllipsis0 = 52;
    EinsumSpec spec;
    int ellipsis_rank = 0;
    std::vector<int> ell_rank(terms.size(), 0);
    for (size_t i = 0; i < terms.size(); ++i) {
      const std::string& t = terms[i];
      const size_t dots = t.find("...");
      const int letters = static_cast<int>(t.size()) - (dots == std::string::npos ? 0 : 3);
      if (dots == std::string::npos ? letters != inputs[i].rank() : letters > inputs[i].rank()) {
        return bad(absl::StrCat("term '", t, "' does not match ", inputs[i].TypeString()));
      }
      ell_rank[i] = inputs[i].rank() - letters;
      ellipsis_rank = std::max(ellipsis_rank, ell_rank[i]);
    }
    spec.dims.assign(kEllipsis0 + ellipsis_rank, -1);
    std::vector<int> count(kEllipsis0, 0);
    bool any_ellipsis = false;
    for (size_t i = 0; i < terms.size(); ++i) {
      const std::string& t = terms[i];
      std::vector<int>& labels = spec.terms.emplace_back();
      for (size_t p = 0; p < t.size(); ++p) {
        if (t.compare(p, 3, "...") == 0) {
          any_ellipsis = true;
          for (int e = 0; e < ell_rank[i]; ++e) {
            labels.push_back(kEllipsis0 + ellipsis_rank - ell_rank[i] + e);
          }
          p += 2;
          continue;
        }
        const int l = letter(t[p]);
        if (l < 0) return bad(absl::StrCat("invalid character '", std::string(1, t[p]), "'"));
        labels.push_back(l);
        ++count[l];
      }
      for (int d = 0; d < inputs[i].rank(); ++d) {
        const int l = labels[d];
        const int64_t size = inputs[i].dim(d);
        int64_t& have = spec.dims[l];
        if (have == -1 || (l >= kEllipsis0 && have == 1)) {
          have = size;
        } else if (have != size && !(l >= kEllipsis0 && size == 1)) {
          return bad(absl::StrCat("dim ", d, " of input ", i, " is ", size, ", expected ", have));
        }
      }
    }
    if (arrow == std::string::npos) {
      if (any_ellipsis) {
        for (int e = 0; e < ellipsis_rank; ++e) spec.output.push_back(kEllipsis0 + e);
      }
      std::vector<std::pair<char, int>> once;
      for (int l = 0; l < kEllipsis0; ++l) {
        if (count[l] == 1) once.push_back({l < 26 ? 'a' + l : 'A' + (l - 26), l});
      }
      std::sort(once.begin(), once.end());
      for (const auto& [ch, l] : once) spec.output.push_back(l);
    } else {
      const std::string rhs = eq.substr(arrow + 2);
      std::vector<bool> seen(spec.dims.size(), false);
      for (size_t p = 0; p < rhs.size(); ++p) {
        if (rhs.compare(p, 3, "...") == 0) {
          for (int e = 0; e < ellipsis_rank; ++e) spec.output.push_back(kEllipsis0 + e);
          p += 2;
          continue;
        }
        const int l = letter(rhs[p]);
        if (l < 0 || count[l] == 0 || seen[l]) {
          return bad(absl::StrCat("bad output label '", std::string(1, rhs[p]), "'"));
        }
        seen[l] = true;
        spec.output.push_back(l);
      }
    }
    for (int64_t& d : spec.dims) d = std::max<int64_t>(d, 1);
    return spec;
  }
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(EinsumSpec spec, Parse(inputs));
    Shape out;
    for (int l : spec.output) out.push_back(spec.dims[l]);
    return out;
  }

  // Per operand, the element stride of each label (0 where absent or broadcast; summed over
  // repeated labels, which walks the diagonal).
  static std::vector<Shape> LabelStrides(const EinsumSpec& spec, absl::Span<const Tensor> inputs) {
    std::vector<Shape> out;
    for (size_t i = 0; i < inputs.size(); ++i) {
      Shape st(spec.dims.size(), 0);
      const Shape strides = kernel_util::Strides(inputs[i].shape());
      for (int d = 0; d < inputs[i].rank(); ++d) {
        if (inputs[i].dim(d) != 1) st[spec.terms[i][d]] += strides[d];
      }
      out.push_back(st);
    }
    return out;
  }

  template <typename T, typename Acc>
  static void Reference(const EinsumSpec& spec, absl::Span<const Tensor> inputs,
                        const Tensor& out) {
    std::vector<bool> in_out(spec.dims.size(), false);
    for (int l : spec.output) in_out[l] = true;
    std::vector<int> summed;
    for (size_t l = 0; l < spec.dims.size(); ++l) {
      bool used = false;
      for (const auto& t : spec.terms) used = used || std::count(t.begin(), t.end(), l) > 0;
      if (used && !in_out[l]) summed.push_back(static_cast<int>(l));
    }
    const std::vector<Shape> strides = LabelStrides(spec, inputs);
    int64_t sum_count = 1;
    for (int l : summed) sum_count *= spec.dims[l];
    const size_t n = inputs.size();
    // Advances an odometer over `labels`, moving the operand offsets along.
    auto step = [&](const std::vector<int>& labels, Shape& idx, std::vector<int64_t>& off) {
      for (size_t q = labels.size(); q-- > 0;) {
        const int l = labels[q];
        for (size_t i = 0; i < n; ++i) off[i] += strides[i][l];
        if (++idx[q] < spec.dims[l]) return;
        for (size_t i = 0; i < n; ++i) off[i] -= spec.dims[l] * strides[i][l];
        idx[q] = 0;
      }
    };
    T* o = out.data<T>();
    Shape out_idx(spec.output.size(), 0);
    std::vector<int64_t> base(n, 0);
    for (int64_t e = 0; e < out.num_elements(); ++e) {
      Acc acc = 0;
      Shape sum_idx(summed.size(), 0);
      std::vector<int64_t> off = base;
      for (int64_t s = 0; s < sum_count; ++s) {
        Acc prod = 1;
        for (size_t i = 0; i < n; ++i) prod *= static_cast<Acc>(inputs[i].data<T>()[off[i]]);
        acc += prod;
        step(summed, sum_idx, off);
      }
      o[e] = static_cast<T>(acc);
      step(spec.output, out_idx, base);
    }
  }

  // Two f32 operands whose summed labels each appear in both: packed batched MatMul.
  absl::StatusOr<bool> TryMatMul(const KernelContext& ctx, const EinsumSpec& spec,
                                 absl::Span<const Tensor> inputs, const Tensor& out) const {
    if (inputs.size() != 2 || inputs[0].dtype() != DType::kF32) return false;
    const size_t nl = spec.dims.size();
    std::vector<int> in_a(nl, 0), in_b(nl, 0), in_o(nl, 0);
    for (int l : spec.terms[0]) ++in_a[l];
    for (int l : spec.terms[1]) ++in_b[l];
    for (int l : spec.output) ++in_o[l];
    for (size_t d = 0; d < spec.terms[0].size(); ++d) {
      if (inputs[0].dim(static_cast<int>(d)) != spec.dims[spec.terms[0][d]]) return false;
    }
    for (size_t d = 0; d < spec.terms[1].size(); ++d) {
      if (inputs[1].dim(static_cast<int>(d)) != spec.dims[spec.terms[1][d]]) return false;
    }
    std::vector<int> batch, m, n, k;
    for (size_t l = 0; l < nl; ++l) {
      if (in_a[l] > 1 || in_b[l] > 1) return false;  // diagonals
      const int li = static_cast<int>(l);
      if (in_a[l] && in_b[l]) {
        (in_o[l] ? batch : k).push_back(li);
      } else if (in_a[l]) {
        if (!in_o[l]) return false;  // summed in one operand only
        m.push_back(li);
      } else if (in_b[l]) {
        if (!in_o[l]) return false;
        n.push_back(li);
      }
    }
    auto size = [&](const std::vector<int>& ls) {
      int64_t p = 1;
      for (int l : ls) p *= spec.dims[l];
      return p;
    };
    const int64_t bt = size(batch), mm = size(m), nn = size(n), kk = size(k);
    const std::vector<Shape> strides = LabelStrides(spec, inputs);
    // Packs operand `i` in label order `labels` into dense memory.
    auto pack = [&](int i, std::vector<int> labels, float* dst) {
      Shape dims, st;
      for (int l : labels) {
        dims.push_back(spec.dims[l]);
        st.push_back(strides[i][l]);
      }
      const float* src = inputs[i].data<float>();
      const int64_t total = Product(dims);
      Shape idx(dims.size(), 0);
      int64_t off = 0;
      for (int64_t e = 0; e < total; ++e) {
        dst[e] = src[off];
        for (size_t q = dims.size(); q-- > 0;) {
          off += st[q];
          if (++idx[q] < dims[q]) break;
          off -= dims[q] * st[q];
          idx[q] = 0;
        }
      }
    };
    auto concat = [](std::vector<int> a, const std::vector<int>& b, const std::vector<int>& c) {
      a.insert(a.end(), b.begin(), b.end());
      a.insert(a.end(), c.begin(), c.end());
      return a;
    };
    NIMBLE_ASSIGN_OR_RETURN(Tensor a, Tensor::Empty(DType::kF32, {bt, mm, kk}, ctx.allocator));
    NIMBLE_ASSIGN_OR_RETURN(Tensor b, Tensor::Empty(DType::kF32, {bt, kk, nn}, ctx.allocator));
    NIMBLE_ASSIGN_OR_RETURN(Tensor c, Tensor::Empty(DType::kF32, {bt, mm, nn}, ctx.allocator));
    pack(0, concat(batch, m, k), a.data<float>());
    pack(1, concat(batch, k, n), b.data<float>());
    NIMBLE_ASSIGN_OR_RETURN(MatMulPlan plan, PlanMatMul(op(), a.shape(), b.shape(), false, false));
    NIMBLE_RETURN_IF_ERROR(MatMulF32(ctx, cache_, plan, a.data<float>(), b.data<float>(),
                                     c.data<float>(), Epilogue(), op()));
    // c is in (batch, m, n) label order; scatter it to the output's order.
    const std::vector<int> c_labels = concat(batch, m, n);
    Shape c_stride_of(nl, 0);
    {
      int64_t stride = 1;
      for (size_t q = c_labels.size(); q-- > 0;) {
        c_stride_of[c_labels[q]] = stride;
        stride *= spec.dims[c_labels[q]];
      }
    }
    Shape dims, st;
    for (int l : spec.output) {
      dims.push_back(spec.dims[l]);
      st.push_back(c_stride_of[l]);
    }
    const float* src = c.data<float>();
    float* dst = out.data<float>();
    Shape idx(dims.size(), 0);
    int64_t off = 0;
    for (int64_t e = 0; e < out.num_elements(); ++e) {
      dst[e] = src[off];
      for (size_t q = dims.size(); q-- > 0;) {
        off += st[q];
        if (++idx[q] < dims[q]) break;
        off -= dims[q] * st[q];
        idx[q] = 0;
      }
    }
    return true;
  }

  absl::Status Compute(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    NIMBLE_ASSIGN_OR_RETURN(EinsumSpec spec, Parse(inputs));
    if (out.num_elements() == 0) return absl::OkStatus();
    NIMBLE_ASSIGN_OR_RETURN(bool done, TryMatMul(ctx, spec, inputs, out));
    if (done) return absl::OkStatus();
    switch (out.dtype()) {
      case DType::kF32:
        Reference<float, double>(spec, inputs, out);
        break;
      case DType::kF64:
        Reference<double, double>(spec, inputs, out);
        break;
      case DType::kI32:
        Reference<int32_t, int64_t>(spec, inputs, out);
        break;
      case DType::kI64:
        Reference<int64_t, int64_t>(spec, inputs, out);
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("Einsum: element type ", DTypeName(out.dtype()), " is not supported"));
    }
    return absl::OkStatus();
  }

  const std::string equation_;
  PrimitiveCache cache_;
};

// The f32 values of an f32 / f16 / bf16 tensor: its own data, or a copy in `scratch`.
const float* FloatValues(const Tensor& t, std::vector<float>& scratch) {
  if (t.dtype() == DType::kF32) return t.data<float>();
  scratch.resize(static_cast<size_t>(t.num_elements()));
  if (t.dtype() == DType::kF16) {
    HalfToFloat(t.data<uint16_t>(), scratch.data(), t.num_elements());
  } else {
    BFloat16ToFloat(t.data<uint16_t>(), scratch.data(), t.num_elements());
  }
  return scratch.data();
}

// Stores `v` as element `i` of an f32 / f16 / bf16 tensor.
void StoreFloat(const Tensor& t, int64_t i, float v) {
  if (t.dtype() == DType::kF32) {
    t.data<float>()[i] = v;
  } else if (t.dtype() == DType::kF16) {
    t.data<uint16_t>()[i] = FloatToHalf(v);
  } else {
    t.data<uint16_t>()[i] = FloatToBFloat16(v);
  }
}

// v rounded to `dtype` (f32 / f16 / bf16) and back.
float RoundTo(DType dtype, float v) {
  if (dtype == DType::kF16) return HalfToFloat(FloatToHalf(v));
  if (dtype == DType::kBF16) return BFloat16ToFloat(FloatToBFloat16(v));
  return v;
}

// CausalConvWithState (opset 27): a depthwise causal 1-D convolution that carries the last k - 1
// input positions from one call to the next (the short convolution of Mamba and Gated DeltaNet).
// Per (batch, channel) row, seq = past_state (zeros when absent) ++ input, then
// output[t] = act(bias + sum_j weight[j] * seq[t + j]) and present_state = the last k - 1 entries
// of seq. f16/bf16 are computed in f32; the convolution is rounded to the input type before the
// SiLU, as in the reference. Thread-safe: immutable after construction.
class CausalConvWithStateKernel final : public Kernel {
 public:
  explicit CausalConvWithStateKernel(bool silu) : silu_(silu) {}

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    NIMBLE_ASSIGN_OR_RETURN(Dims d, Check(inputs));
    if (!output_shapes.empty()) output_shapes[0] = inputs[0].shape();
    if (output_shapes.size() > 1) output_shapes[1] = {d.batch, d.channels, d.k - 1};
    return absl::OkStatus();
  }

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(Dims d, Check(inputs));
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputs("CausalConvWithState", outputs, 1, 2));
    const Shape shapes[2] = {inputs[0].shape(), {d.batch, d.channels, d.k - 1}};
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputShapes("CausalConvWithState", outputs, shapes));
    const DType dtype = inputs[0].dtype();
    if (!outputs[0].defined()) {
      return absl::InvalidArgumentError("CausalConvWithState: output 0 is missing");
    }
    for (const Tensor& out : outputs) {
      NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputDType("CausalConvWithState", out, dtype));
    }
    std::vector<float> x_buf, w_buf, b_buf, p_buf;
    const float* x = FloatValues(inputs[0], x_buf);
    const float* w = FloatValues(inputs[1], w_buf);
    const float* bias = Present(inputs, 2) ? FloatValues(inputs[2], b_buf) : nullptr;
    const float* past = Present(inputs, 3) ? FloatValues(inputs[3], p_buf) : nullptr;
    const Tensor& y = outputs[0];
    const Tensor* state = outputs.size() > 1 && outputs[1].defined() ? &outputs[1] : nullptr;
    const int64_t len = d.length, k = d.k, padded = len + k - 1;
    ParallelFor(ctx.num_threads, d.batch * d.channels, 16, [&](int64_t begin, int64_t end) {
      std::vector<float> seq(static_cast<size_t>(padded));
      for (int64_t row = begin; row < end; ++row) {
        const int64_t c = row % d.channels;
        if (past != nullptr) {
          std::copy_n(past + row * (k - 1), k - 1, seq.begin());
        } else {
          std::fill_n(seq.begin(), k - 1, 0.0f);
        }
        std::copy_n(x + row * len, len, seq.begin() + (k - 1));
        const float* wc = w + c * k;
        for (int64_t t = 0; t < len; ++t) {
          float acc = bias != nullptr ? bias[c] : 0.0f;
          for (int64_t j = 0; j < k; ++j) acc += wc[j] * seq[t + j];
          if (silu_) {
            acc = RoundTo(dtype, acc);
            acc = acc / (1.0f + std::exp(-acc));
          }
          StoreFloat(y, row * len + t, acc);
        }
        if (state != nullptr) {
          for (int64_t j = 0; j < k - 1; ++j) {
            StoreFloat(*state, row * (k - 1) + j, seq[len + j]);
          }
        }
      }
    });
    return absl::OkStatus();
  }

 private:
  struct Dims {
    int64_t batch = 0, channels = 0, length = 0, k = 0;
  };

  static absl::StatusOr<Dims> Check(absl::Span<const Tensor> in) {
    constexpr const char* kOp = "CausalConvWithState";
    NIMBLE_RETURN_IF_ERROR(CheckArity(kOp, in.size(), 2, 4));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(kOp, in, 0, "input"));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(kOp, in, 1, "weight"));
    const Tensor &x = in[0], &w = in[1];
    const DType dtype = x.dtype();
    if (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kBF16) {
      return absl::InvalidArgumentError(absl::StrCat(
          "CausalConvWithState: input must be f32, f16 or bf16, got ", x.TypeString()));
    }
    if (x.rank() != 3) {
      return absl::InvalidArgumentError(absl::StrCat(
          "CausalConvWithState: input must have rank 3 [batch, channels, length], got ",
          x.TypeString()));
    }
    Dims d{x.dim(0), x.dim(1), x.dim(2), 0};
    if (w.dtype() != dtype || w.rank() != 3 || w.dim(0) != d.channels || w.dim(1) != 1 ||
        w.dim(2) < 1) {
      return absl::InvalidArgumentError(absl::StrCat("CausalConvWithState: weight ", w.TypeString(),
                                                     " must be ", DTypeName(dtype), "[", d.channels,
                                                     ", 1, k] with k >= 1"));
    }
    d.k = w.dim(2);
    if (Present(in, 2)) {
      const Tensor& b = in[2];
      if (b.dtype() != dtype || b.rank() != 1 || b.dim(0) != d.channels) {
        return absl::InvalidArgumentError(absl::StrCat("CausalConvWithState: bias ", b.TypeString(),
                                                       " must be ", DTypeName(dtype), "[",
                                                       d.channels, "]"));
      }
    }
    if (Present(in, 3)) {
      const Tensor& p = in[3];
      const Shape want = {d.batch, d.channels, d.k - 1};
      if (p.dtype() != dtype || p.shape() != want) {
        return absl::InvalidArgumentError(absl::StrCat("CausalConvWithState: past_state ",
                                                       p.TypeString(), " must be ",
                                                       DTypeName(dtype), ShapeToString(want)));
      }
    }
    return d;
  }

  const bool silu_;
};

template <typename K, typename... Args>
absl::StatusOr<KernelPtr> Make(Args&&... args) {
  return KernelPtr(new K(std::forward<Args>(args)...));
}

}  // namespace

void RegisterLinalgKernels(KernelRegistry& registry) {
  auto reg = [&registry](const std::string& name, KernelFactory factory) {
    registry.Register(name, DeviceType::kCPU, std::move(factory));
  };
  // constant_b (not ONNX; set by the compiler when B is an initializer): B may be read from a
  // packed copy (PackedWeights).
  reg("MatMul", [](const Attributes& a) {
    return Make<MatMulKernel>(a.GetOr<int64_t>("constant_b", 0) != 0);
  });
  reg("FusedMatMul", [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
    NIMBLE_ASSIGN_OR_RETURN(Activation act,
                            ParseActivation(a.GetOr<std::string>("activation", "")));
    return Make<FusedMatMulKernel>(a.GetOr<int64_t>("transB", 0) != 0,
                                   static_cast<float>(a.GetOr<double>("alpha", 1.0)), act,
                                   a.GetOr<int64_t>("constant_b", 0) != 0);
  });
  reg("Gemm", [](const Attributes& a) {
    return Make<GemmKernel>(a.GetOr<double>("alpha", 1.0), a.GetOr<double>("beta", 1.0),
                            a.GetOr<int64_t>("transA", 0) != 0, a.GetOr<int64_t>("transB", 0) != 0,
                            a.GetOr<int64_t>("constant_b", 0) != 0);
  });
  reg("MatMulInteger", [](const Attributes&) { return Make<MatMulIntegerKernel>(); });
  reg("Einsum", [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
    NIMBLE_ASSIGN_OR_RETURN(std::string equation, a.Get<std::string>("equation"));
    return Make<EinsumKernel>(std::move(equation));
  });
  reg("Conv", [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
    NIMBLE_ASSIGN_OR_RETURN(WindowAttrs w, WindowAttrs::Parse(a));
    // constant_w (not ONNX; set by the compiler when W is an initializer): W may be read from
    // a packed copy.
    return Make<ConvKernel>(std::move(w), a.GetOr<int64_t>("group", 1),
                            a.GetOr<int64_t>("constant_w", 0) != 0);
  });
  reg("ConvInteger", [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
    NIMBLE_ASSIGN_OR_RETURN(WindowAttrs w, WindowAttrs::Parse(a));
    return Make<ConvIntegerKernel>(std::move(w), a.GetOr<int64_t>("group", 1));
  });
  reg("QLinearConv", [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
    NIMBLE_ASSIGN_OR_RETURN(WindowAttrs w, WindowAttrs::Parse(a));
    return Make<QLinearConvKernel>(std::move(w), a.GetOr<int64_t>("group", 1));
  });
  reg("ConvTranspose", [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
    NIMBLE_ASSIGN_OR_RETURN(WindowAttrs w, WindowAttrs::Parse(a));
    return Make<ConvTransposeKernel>(std::move(w), a.GetOr<int64_t>("group", 1),
                                     a.GetOr<std::vector<int64_t>>("output_padding", {}),
                                     a.GetOr<std::vector<int64_t>>("output_shape", {}));
  });
  reg("MaxPool", [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
    NIMBLE_ASSIGN_OR_RETURN(WindowAttrs w, WindowAttrs::Parse(a));
    if (w.kernel_shape.empty()) return absl::InvalidArgumentError("kernel_shape is missing");
    return Make<PoolKernel>(PoolKind::kMax, false, std::move(w), false,
                            a.GetOr<int64_t>("storage_order", 0));
  });
  reg("AveragePool", [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
    NIMBLE_ASSIGN_OR_RETURN(WindowAttrs w, WindowAttrs::Parse(a));
    if (w.kernel_shape.empty()) return absl::InvalidArgumentError("kernel_shape is missing");
    return Make<PoolKernel>(PoolKind::kAverage, false, std::move(w),
                            a.GetOr<int64_t>("count_include_pad", 0) != 0, 0);
  });
  reg("GlobalMaxPool", [](const Attributes&) {
    return Make<PoolKernel>(PoolKind::kMax, true, WindowAttrs(), false, 0);
  });
  reg("GlobalAveragePool", [](const Attributes&) {
    return Make<PoolKernel>(PoolKind::kAverage, true, WindowAttrs(), false, 0);
  });
  reg("CausalConvWithState", [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
    const std::string act = a.GetOr<std::string>("activation", "none");
    if (act != "none" && act != "silu" && act != "swish") {
      return absl::InvalidArgumentError(absl::StrCat("CausalConvWithState: activation '", act,
                                                     "' is not one of none, silu, swish"));
    }
    return Make<CausalConvWithStateKernel>(act != "none");
  });
}

}  // namespace nimble::vm::cpu
