// CUDA kernels of the VM's CUDA device (see ops_cuda.h). Correct first: generic index math,
// one thread per element for elementwise work, one block per row for reductions. fp32 compute
// on every storage type (f32, f16, bf16).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "vm/kernels/cuda/ops_cuda.h"

namespace nimble::vm::cuda_ops {
namespace {

constexpr int kThreads = 256;

unsigned Blocks(int64_t count, int threads = kThreads) {
  int64_t blocks = (count + threads - 1) / threads;
  if (blocks > 65535LL * 64) blocks = 65535LL * 64;  // grid-stride loops cover the rest
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

__device__ __forceinline__ float GeluErf(float x) {
  return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}
__device__ __forceinline__ float GeluTanh(float x) {
  return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float Sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// fp32 arithmetic on every storage type: Ld converts on load, St rounds once on store.
__device__ __forceinline__ float Ld(const float* p) { return *p; }
__device__ __forceinline__ float Ld(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float Ld(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void St(float* p, float v) { *p = v; }
__device__ __forceinline__ void St(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void St(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// Calls f(T{}) with T the storage type of `type` (a tag value: only its type matters).
template <typename F>
cudaError_t Dispatch(FloatType type, F&& f) {
  switch (type) {
    case FloatType::kF32:
      return f(float{});
    case FloatType::kF16:
      return f(__half{});
    case FloatType::kBF16:
      return f(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

// Block-wide sum / max for blockDim.x <= 1024 (a multiple of 32).
template <bool kMax>
__device__ float BlockReduce(float v) {
  __shared__ float partial[32];
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float o = __shfl_xor_sync(0xffffffffu, v, offset);
    v = kMax ? fmaxf(v, o) : v + o;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // partial may still be read by a previous reduction
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  v = lane < warps ? partial[lane] : (kMax ? -INFINITY : 0.0f);
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float o = __shfl_xor_sync(0xffffffffu, v, offset);
    v = kMax ? fmaxf(v, o) : v + o;
  }
  return v;
}

// ---- FusedElementwise interpreter

template <typename T>
__global__ void ProgramKernel(Program program, ProgramArgs args, BroadcastShape shape,
                              int64_t count) {
  float slots[kMaxProgramSlots];
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t offsets[kMaxProgramInputs];
    for (int k = 0; k < program.num_inputs; ++k) offsets[k] = 0;
    int64_t rest = i;
    for (int d = shape.rank - 1; d >= 0; --d) {
      const int64_t idx = rest % shape.dims[d];
      rest /= shape.dims[d];
      for (int k = 0; k < program.num_inputs; ++k) offsets[k] += idx * shape.strides[k][d];
    }
    for (int p = 0; p < program.num_instructions; ++p) {
      const int op = program.code[p][0], dst = program.code[p][1];
      const int a = program.code[p][2], b = program.code[p][3];
      float x = 0.0f;
      switch (op) {
        case 0:
          x = Ld(static_cast<const T*>(args.inputs[a]) + offsets[a]);
          break;
        case 1:
          x = program.constants[a];
          break;
        case 2:
          St(static_cast<T*>(args.outputs[dst]) + i, slots[a]);
          continue;
        case 10:
          x = slots[a] + slots[b];
          break;
        case 11:
          x = slots[a] - slots[b];
          break;
        case 12:
          x = slots[a] * slots[b];
          break;
        case 13:
          x = slots[a] / slots[b];
          break;
        case 14:
          x = fmaxf(slots[a], slots[b]);
          break;
        case 15:
          x = fminf(slots[a], slots[b]);
          break;
        case 16:
          x = powf(slots[a], slots[b]);
          break;
        case 30:
          x = -slots[a];
          break;
        case 31:
          x = expf(slots[a]);
          break;
        case 32:
          x = logf(slots[a]);
          break;
        case 33:
          x = sqrtf(slots[a]);
          break;
        case 34:
          x = rsqrtf(slots[a]);
          break;
        case 35:
          x = tanhf(slots[a]);
          break;
        case 36:
          x = erff(slots[a]);
          break;
        case 37:
          x = Sigmoid(slots[a]);
          break;
        case 38:
          x = fmaxf(slots[a], 0.0f);
          break;
        case 39:
          x = GeluErf(slots[a]);
          break;
        case 40:
          x = GeluTanh(slots[a]);
          break;
        case 41:
          x = fabsf(slots[a]);
          break;
        case 42:
          x = 1.0f / slots[a];
          break;
        default:
          x = NAN;
          break;
      }
      slots[dst] = x;
    }
  }
}

template <typename T>
__global__ void BiasActResidualKernel(T* x, const T* bias, const T* residual, int64_t count,
                                      int64_t n, Act act) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = Ld(x + i);
    if (bias != nullptr) v += Ld(bias + i % n);
    switch (act) {
      case Act::kNone:
        break;
      case Act::kRelu:
        v = fmaxf(v, 0.0f);
        break;
      case Act::kGelu:
        v = GeluErf(v);
        break;
      case Act::kGeluTanh:
        v = GeluTanh(v);
        break;
      case Act::kTanh:
        v = tanhf(v);
        break;
      case Act::kSigmoid:
        v = Sigmoid(v);
        break;
    }
    if (residual != nullptr) v += Ld(residual + i);
    St(x + i, v);
  }
}

template <typename T, typename I>
__global__ void GatherKernel(const T* data, const I* indices, T* out, int64_t axis_dim,
                             int64_t num_indices, int64_t inner, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t in = i % inner;
    const int64_t j = (i / inner) % num_indices;
    const int64_t o = i / (inner * num_indices);
    int64_t index = static_cast<int64_t>(indices[j]);
    if (index < 0) index += axis_dim;
    out[i] = (index < 0 || index >= axis_dim) ? T{} : data[(o * axis_dim + index) * inner + in];
  }
}

template <typename T>
__device__ __forceinline__ float ToFloat(T v) {
  return static_cast<float>(v);
}
template <>
__device__ __forceinline__ float ToFloat<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float ToFloat<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <typename T>
inline constexpr bool kIsHalf = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

template <typename S, typename D>
__global__ void CastKernel(const S* in, D* out, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if constexpr (std::is_same_v<D, bool>) {
      if constexpr (kIsHalf<S>) {
        out[i] = ToFloat(in[i]) != 0.0f;
      } else {
        out[i] = in[i] != S{};
      }
    } else if constexpr (std::is_same_v<D, __half>) {
      out[i] = __float2half_rn(ToFloat(in[i]));
    } else if constexpr (std::is_same_v<D, __nv_bfloat16>) {
      out[i] = __float2bfloat16_rn(ToFloat(in[i]));
    } else if constexpr (kIsHalf<S>) {
      out[i] = static_cast<D>(ToFloat(in[i]));
    } else {
      out[i] = static_cast<D>(in[i]);
    }
  }
}

template <typename T>
__global__ void TransposeKernel(const T* in, T* out, int rank, BroadcastShape shape,
                                int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rest = i, offset = 0;
    for (int d = rank - 1; d >= 0; --d) {
      offset += (rest % shape.dims[d]) * shape.strides[0][d];
      rest /= shape.dims[d];
    }
    out[i] = in[offset];
  }
}

template <typename T>
__global__ void LayerNormKernel(const T* x, const T* gamma, const T* beta, T* y, int64_t cols,
                                float epsilon) {
  const T* row = x + blockIdx.x * cols;
  T* out = y + blockIdx.x * cols;
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += Ld(row + c);
  const float mean = BlockReduce<false>(sum) / static_cast<float>(cols);
  float sq = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float d = Ld(row + c) - mean;
    sq += d * d;
  }
  const float rstd = rsqrtf(BlockReduce<false>(sq) / static_cast<float>(cols) + epsilon);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    float v = (Ld(row + c) - mean) * rstd;
    if (gamma != nullptr) v *= Ld(gamma + c);
    if (beta != nullptr) v += Ld(beta + c);
    St(out + c, v);
  }
}

template <typename T>
__global__ void SoftmaxKernel(const T* x, T* y, int64_t r, int64_t inner, bool log) {
  const int64_t o = blockIdx.x / inner, in = blockIdx.x % inner;
  const T* row = x + o * r * inner + in;
  T* out = y + o * r * inner + in;
  float m = -INFINITY;
  for (int64_t c = threadIdx.x; c < r; c += blockDim.x) m = fmaxf(m, Ld(row + c * inner));
  m = BlockReduce<true>(m);
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < r; c += blockDim.x) sum += expf(Ld(row + c * inner) - m);
  sum = BlockReduce<false>(sum);
  const float lse = m + logf(sum);
  for (int64_t c = threadIdx.x; c < r; c += blockDim.x) {
    const float v = Ld(row + c * inner);
    St(out + c * inner, log ? v - lse : expf(v - m) / sum);
  }
}

// One block per (query, head, batch): scores in shared memory, then P·V with a thread per dim.
template <typename T, typename M>
__global__ void AttentionKernel(AttentionArgs a) {
  extern __shared__ float shared[];
  float* q = shared;                // head
  float* scores = shared + a.head;  // kv_seq
  const int64_t i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t kvh = h / (a.q_heads / a.kv_heads);
  const T* qrow =
      static_cast<const T*>(a.q) + b * a.q_strides[0] + h * a.q_strides[1] + i * a.q_strides[2];
  for (int64_t d = threadIdx.x; d < a.head; d += blockDim.x) q[d] = Ld(qrow + d) * a.scale;
  __syncthreads();
  // Scores: a warp per key, lanes across the head dim (coalesced K reads).
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int64_t j = warp; j < a.kv_seq; j += warps) {
    const T* krow =
        static_cast<const T*>(a.k) + b * a.k_strides[0] + kvh * a.k_strides[1] + j * a.k_strides[2];
    float s = 0.0f;
    for (int64_t d = lane; d < a.head; d += 32) s += q[d] * Ld(krow + d);
    for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_xor_sync(0xffffffffu, s, offset);
    if (lane == 0) scores[j] = s;
  }
  __syncthreads();
  float local_max = -INFINITY;
  for (int64_t j = threadIdx.x; j < a.kv_seq; j += blockDim.x) {
    float s = scores[j];
    if (a.mask != nullptr) {
      if (j >= a.mask_keys) {
        s = -INFINITY;
      } else {
        const int64_t off = b * a.mask_strides[0] + h * a.mask_strides[1] + i * a.mask_strides[2] +
                            j * a.mask_strides[3];
        if (a.mask_bool) {
          if (!static_cast<const bool*>(a.mask)[off]) s = a.mask_fill;
        } else {
          s += Ld(static_cast<const M*>(a.mask) + off);
        }
      }
    }
    if (a.causal && j > i) s = -INFINITY;
    scores[j] = s;
    local_max = fmaxf(local_max, s);
  }
  const float m = BlockReduce<true>(local_max);
  float local_sum = 0.0f;
  for (int64_t j = threadIdx.x; j < a.kv_seq; j += blockDim.x) {
    const float p = m == -INFINITY ? 0.0f : expf(scores[j] - m);
    scores[j] = p;
    local_sum += p;
  }
  const float sum = BlockReduce<false>(local_sum);  // its __syncthreads publishes scores
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  T* yrow = static_cast<T*>(a.y) + b * a.y_strides[0] + h * a.y_strides[1] + i * a.y_strides[2];
  const T* vbase = static_cast<const T*>(a.v) + b * a.v_strides[0] + kvh * a.v_strides[1];
  for (int64_t d = threadIdx.x; d < a.v_head; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j < a.kv_seq; ++j) acc += scores[j] * Ld(vbase + j * a.v_strides[2] + d);
    St(yrow + d, acc * inv);
  }
}

// Tensor-core attention for f16 / bf16 with head dim 64 (FlashAttention's online softmax): a
// block of kFlashWarps warps takes 16 queries per warp; per 64-key tile it stages K and V in
// shared memory, computes S = Q K^T with WMMA 16x16x16 (fp32 accumulators), applies scale and
// mask in fp32, updates each row's running max / sum (a lane pair per row, 32 columns each)
// and accumulates O += P V with WMMA, O kept in fp32 registers. Fully masked rows give zeros,
// as the reference kernel does.
namespace wmma = nvcuda::wmma;
constexpr int kFlashD = 64;
constexpr int kFlashKeys = 64;
constexpr int kFlashWarps = 2;
constexpr int kFlashQueries = 16 * kFlashWarps;
constexpr size_t kFlashShared =
    (kFlashQueries + 2 * kFlashKeys) * kFlashD * 2 + kFlashWarps * 16 * kFlashKeys * (4 + 2);

template <typename T, typename M>
__global__ void __launch_bounds__(32 * kFlashWarps) FlashAttentionKernel(AttentionArgs a) {
  extern __shared__ __align__(128) unsigned char flash_shared[];
  T* qs = reinterpret_cast<T*>(flash_shared);                        // kFlashQueries x 64
  T* ks = qs + kFlashQueries * kFlashD;                              // 64 keys x 64
  T* vs = ks + kFlashKeys * kFlashD;                                 // 64 keys x 64
  float* ss = reinterpret_cast<float*>(vs + kFlashKeys * kFlashD);   // per warp 16 x 64
  T* ps = reinterpret_cast<T*>(ss + kFlashWarps * 16 * kFlashKeys);  // per warp 16 x 64
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kFlashQueries;
  const int64_t h = blockIdx.y, b = blockIdx.z;
  const int64_t kvh = h / (a.q_heads / a.kv_heads);
  const T* qbase = static_cast<const T*>(a.q) + b * a.q_strides[0] + h * a.q_strides[1];
  const T* kbase = static_cast<const T*>(a.k) + b * a.k_strides[0] + kvh * a.k_strides[1];
  const T* vbase = static_cast<const T*>(a.v) + b * a.v_strides[0] + kvh * a.v_strides[1];
  for (int idx = threadIdx.x; idx < kFlashQueries * 8; idx += blockDim.x) {
    const int r = idx >> 3, c = (idx & 7) * 8;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (q0 + r < a.q_seq)
      v = *reinterpret_cast<const uint4*>(qbase + (q0 + r) * a.q_strides[2] + c);
    *reinterpret_cast<uint4*>(qs + r * kFlashD + c) = v;
  }
  const int row = lane >> 1, col0 = (lane & 1) * 32;
  const int64_t qi = q0 + warp * 16 + row;
  float* s_w = ss + warp * 16 * kFlashKeys;
  T* p_w = ps + warp * 16 * kFlashKeys;
  float m_run = -INFINITY, l_run = 0.0f;
  float o[32];
#pragma unroll
  for (int c = 0; c < 32; ++c) o[c] = 0.0f;
  for (int64_t k0 = 0; k0 < a.kv_seq; k0 += kFlashKeys) {
    __syncthreads();  // the previous tile's K / V are no longer read
    for (int idx = threadIdx.x; idx < kFlashKeys * 8; idx += blockDim.x) {
      const int r = idx >> 3, c = (idx & 7) * 8;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
      if (k0 + r < a.kv_seq) {
        kv = *reinterpret_cast<const uint4*>(kbase + (k0 + r) * a.k_strides[2] + c);
        vv = *reinterpret_cast<const uint4*>(vbase + (k0 + r) * a.v_strides[2] + c);
      }
      *reinterpret_cast<uint4*>(ks + r * kFlashD + c) = kv;
      *reinterpret_cast<uint4*>(vs + r * kFlashD + c) = vv;
    }
    __syncthreads();
#pragma unroll
    for (int n = 0; n < kFlashKeys / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int kk = 0; kk < kFlashD / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
        wmma::load_matrix_sync(fa, qs + warp * 16 * kFlashD + kk * 16, kFlashD);
        wmma::load_matrix_sync(fb, ks + n * 16 * kFlashD + kk * 16, kFlashD);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(s_w + n * 16, acc, kFlashKeys, wmma::mem_row_major);
    }
    __syncwarp();
    float sv[32];
    float mx = -INFINITY;
#pragma unroll
    for (int c = 0; c < 32; ++c) {
      const int64_t j = k0 + col0 + c;
      float v = s_w[row * kFlashKeys + col0 + c] * a.scale;
      if (j >= a.kv_seq || (a.causal && j > qi)) {
        v = -INFINITY;
      } else if (a.mask != nullptr && qi < a.q_seq) {
        if (j >= a.mask_keys) {
          v = -INFINITY;
        } else {
          const int64_t off = b * a.mask_strides[0] + h * a.mask_strides[1] +
                              qi * a.mask_strides[2] + j * a.mask_strides[3];
          if (a.mask_bool) {
            if (!static_cast<const bool*>(a.mask)[off]) v = a.mask_fill;
          } else {
            v += Ld(static_cast<const M*>(a.mask) + off);
          }
        }
      }
      sv[c] = v;
      mx = fmaxf(mx, v);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_new = fmaxf(m_run, mx);
    const float alpha = m_new == -INFINITY ? 1.0f : expf(m_run - m_new);
    float sum = 0.0f;
#pragma unroll
    for (int c = 0; c < 32; ++c) {
      const float p = m_new == -INFINITY ? 0.0f : expf(sv[c] - m_new);
      sum += p;
      St(p_w + row * kFlashKeys + col0 + c, p);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l_run = l_run * alpha + sum;
    m_run = m_new;
    __syncwarp();
#pragma unroll
    for (int n = 0; n < kFlashD / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int kk = 0; kk < kFlashKeys / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
        wmma::load_matrix_sync(fa, p_w + kk * 16, kFlashKeys);
        wmma::load_matrix_sync(fb, vs + kk * 16 * kFlashD + n * 16, kFlashD);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(s_w + n * 16, acc, kFlashKeys, wmma::mem_row_major);
    }
    __syncwarp();
#pragma unroll
    for (int c = 0; c < 32; ++c) o[c] = o[c] * alpha + s_w[row * kFlashKeys + col0 + c];
    __syncwarp();  // s_w is rewritten by the next tile's S
  }
  if (qi >= a.q_seq) return;
  const float inv = l_run > 0.0f ? 1.0f / l_run : 0.0f;
  T* y = static_cast<T*>(a.y) + b * a.y_strides[0] + h * a.y_strides[1] + qi * a.y_strides[2];
#pragma unroll
  for (int c = 0; c < 32; ++c) St(y + col0 + c, o[c] * inv);
}

// NIMBLE_CUDA_FLASH_ATTENTION=0 selects the reference kernel (for A/B measurements).
bool FlashAttentionDisabled() {
  static const bool disabled = [] {
    const char* v = std::getenv("NIMBLE_CUDA_FLASH_ATTENTION");
    return v != nullptr && v[0] == '0';
  }();
  return disabled;
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Whether FlashAttentionKernel takes these arguments: half storage, head dim 64, 16-byte rows.
bool FlashEligible(const AttentionArgs& a) {
  if (a.type == FloatType::kF32 || a.head != kFlashD || a.v_head != kFlashD) return false;
  if (!Aligned16(a.q) || !Aligned16(a.k) || !Aligned16(a.v)) return false;
  for (int i = 0; i < 3; ++i) {
    if (a.q_strides[i] % 8 != 0 || a.k_strides[i] % 8 != 0 || a.v_strides[i] % 8 != 0) {
      return false;
    }
  }
  return a.q_seq <= 65535LL * kFlashQueries;
}

template <typename T>
__global__ void WhereKernel(const bool* cond, const T* x, const T* y, T* out, BroadcastShape shape,
                            int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rest = i, oc = 0, ox = 0, oy = 0;
    for (int d = shape.rank - 1; d >= 0; --d) {
      const int64_t idx = rest % shape.dims[d];
      rest /= shape.dims[d];
      oc += idx * shape.strides[0][d];
      ox += idx * shape.strides[1][d];
      oy += idx * shape.strides[2][d];
    }
    out[i] = cond[oc] ? x[ox] : y[oy];
  }
}

__global__ void RangeKernel(int64_t* out, int64_t start, int64_t delta, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = start + i * delta;
  }
}

template <typename S>
cudaError_t CastFrom(const S* in, void* out, int out_dtype, int64_t count, cudaStream_t s) {
  const unsigned g = Blocks(count);
  switch (out_dtype) {
    case 1:
      CastKernel<S, float><<<g, kThreads, 0, s>>>(in, static_cast<float*>(out), count);
      break;
    case 2:
      CastKernel<S, __half><<<g, kThreads, 0, s>>>(in, static_cast<__half*>(out), count);
      break;
    case 3:
      CastKernel<S, __nv_bfloat16>
          <<<g, kThreads, 0, s>>>(in, static_cast<__nv_bfloat16*>(out), count);
      break;
    case 4:
      CastKernel<S, double><<<g, kThreads, 0, s>>>(in, static_cast<double*>(out), count);
      break;
    case 5:
      CastKernel<S, int8_t><<<g, kThreads, 0, s>>>(in, static_cast<int8_t*>(out), count);
      break;
    case 6:
      CastKernel<S, int16_t><<<g, kThreads, 0, s>>>(in, static_cast<int16_t*>(out), count);
      break;
    case 7:
      CastKernel<S, int32_t><<<g, kThreads, 0, s>>>(in, static_cast<int32_t*>(out), count);
      break;
    case 8:
      CastKernel<S, int64_t><<<g, kThreads, 0, s>>>(in, static_cast<int64_t*>(out), count);
      break;
    case 9:
      CastKernel<S, uint8_t><<<g, kThreads, 0, s>>>(in, static_cast<uint8_t*>(out), count);
      break;
    case 13:
      CastKernel<S, bool><<<g, kThreads, 0, s>>>(in, static_cast<bool*>(out), count);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t RunProgram(const Program& program, const ProgramArgs& args, const BroadcastShape& shape,
                       int64_t count, FloatType type, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  return Dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    ProgramKernel<T><<<Blocks(count), kThreads, 0, stream>>>(program, args, shape, count);
    return cudaGetLastError();
  });
}

cudaError_t BiasActResidual(void* x, const void* bias, const void* residual, int64_t count,
                            int64_t n, Act act, FloatType type, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  return Dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    BiasActResidualKernel<T>
        <<<Blocks(count), kThreads, 0, stream>>>(static_cast<T*>(x), static_cast<const T*>(bias),
                                                 static_cast<const T*>(residual), count, n, act);
    return cudaGetLastError();
  });
}

cudaError_t Gather(const void* data, const void* indices, bool indices_i64, void* out,
                   int64_t outer, int64_t axis_dim, int64_t num_indices, int64_t inner,
                   int element_bytes, cudaStream_t stream) {
  const int64_t count = outer * num_indices * inner;
  if (count == 0) return cudaSuccess;
  const unsigned g = Blocks(count);
#define NIMBLE_GATHER(T)                                                                         \
  if (indices_i64) {                                                                             \
    GatherKernel<T, int64_t><<<g, kThreads, 0, stream>>>(                                        \
        static_cast<const T*>(data), static_cast<const int64_t*>(indices), static_cast<T*>(out), \
        axis_dim, num_indices, inner, count);                                                    \
  } else {                                                                                       \
    GatherKernel<T, int32_t><<<g, kThreads, 0, stream>>>(                                        \
        static_cast<const T*>(data), static_cast<const int32_t*>(indices), static_cast<T*>(out), \
        axis_dim, num_indices, inner, count);                                                    \
  }
  switch (element_bytes) {
    case 1:
      NIMBLE_GATHER(uint8_t) break;
    case 2:
      NIMBLE_GATHER(uint16_t) break;
    case 4:
      NIMBLE_GATHER(uint32_t) break;
    case 8:
      NIMBLE_GATHER(uint64_t) break;
    default:
      return cudaErrorInvalidValue;
  }
#undef NIMBLE_GATHER
  return cudaGetLastError();
}

bool CastSupported(int dtype) {
  return dtype == 1 || dtype == 2 || dtype == 3 || dtype == 4 || dtype == 5 || dtype == 6 ||
         dtype == 7 || dtype == 8 || dtype == 9 || dtype == 13;
}

cudaError_t Cast(const void* in, int in_dtype, void* out, int out_dtype, int64_t count,
                 cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  switch (in_dtype) {
    case 1:
      return CastFrom(static_cast<const float*>(in), out, out_dtype, count, stream);
    case 2:
      return CastFrom(static_cast<const __half*>(in), out, out_dtype, count, stream);
    case 3:
      return CastFrom(static_cast<const __nv_bfloat16*>(in), out, out_dtype, count, stream);
    case 4:
      return CastFrom(static_cast<const double*>(in), out, out_dtype, count, stream);
    case 5:
      return CastFrom(static_cast<const int8_t*>(in), out, out_dtype, count, stream);
    case 6:
      return CastFrom(static_cast<const int16_t*>(in), out, out_dtype, count, stream);
    case 7:
      return CastFrom(static_cast<const int32_t*>(in), out, out_dtype, count, stream);
    case 8:
      return CastFrom(static_cast<const int64_t*>(in), out, out_dtype, count, stream);
    case 9:
      return CastFrom(static_cast<const uint8_t*>(in), out, out_dtype, count, stream);
    case 13:
      return CastFrom(static_cast<const bool*>(in), out, out_dtype, count, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

cudaError_t Transpose(const void* in, void* out, int rank, const int64_t* dims,
                      const int64_t* in_strides, int64_t count, int element_bytes,
                      cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  if (rank > kMaxRank) return cudaErrorInvalidValue;
  BroadcastShape shape;
  shape.rank = rank;
  for (int d = 0; d < rank; ++d) {
    shape.dims[d] = dims[d];
    shape.strides[0][d] = in_strides[d];
  }
  const unsigned g = Blocks(count);
  switch (element_bytes) {
    case 1:
      TransposeKernel<<<g, kThreads, 0, stream>>>(static_cast<const uint8_t*>(in),
                                                  static_cast<uint8_t*>(out), rank, shape, count);
      break;
    case 2:
      TransposeKernel<<<g, kThreads, 0, stream>>>(static_cast<const uint16_t*>(in),
                                                  static_cast<uint16_t*>(out), rank, shape, count);
      break;
    case 4:
      TransposeKernel<<<g, kThreads, 0, stream>>>(static_cast<const uint32_t*>(in),
                                                  static_cast<uint32_t*>(out), rank, shape, count);
      break;
    case 8:
      TransposeKernel<<<g, kThreads, 0, stream>>>(static_cast<const uint64_t*>(in),
                                                  static_cast<uint64_t*>(out), rank, shape, count);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t LayerNorm(const void* x, const void* gamma, const void* beta, void* y, int64_t rows,
                      int64_t cols, float epsilon, FloatType type, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return cudaSuccess;
  if (rows > 2147483647LL) return cudaErrorInvalidValue;
  const int threads = cols <= 128 ? 64 : cols <= 512 ? 128 : 256;
  return Dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    LayerNormKernel<T><<<static_cast<unsigned>(rows), threads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(gamma), static_cast<const T*>(beta),
        static_cast<T*>(y), cols, epsilon);
    return cudaGetLastError();
  });
}

cudaError_t Softmax(const void* x, void* y, int64_t outer, int64_t r, int64_t inner, bool log,
                    FloatType type, cudaStream_t stream) {
  const int64_t rows = outer * inner;
  if (rows == 0 || r == 0) return cudaSuccess;
  if (rows > 2147483647LL) return cudaErrorInvalidValue;
  const int threads = r <= 64 ? 32 : r <= 256 ? 64 : r <= 1024 ? 128 : 256;
  return Dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    SoftmaxKernel<T><<<static_cast<unsigned>(rows), threads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<T*>(y), r, inner, log);
    return cudaGetLastError();
  });
}

cudaError_t Attention(const AttentionArgs& args, cudaStream_t stream) {
  if (args.batch == 0 || args.q_heads == 0 || args.q_seq == 0 || args.v_head == 0) {
    return cudaSuccess;
  }
  if (args.q_seq > 2147483647LL || args.q_heads > 65535 || args.batch > 65535) {
    return cudaErrorInvalidValue;
  }
  const size_t shared = static_cast<size_t>(args.head + args.kv_seq) * sizeof(float);
  const dim3 grid(static_cast<unsigned>(args.q_seq), static_cast<unsigned>(args.q_heads),
                  static_cast<unsigned>(args.batch));
  const FloatType mask_type = args.mask_bool ? FloatType::kF32 : args.mask_type;
  if (FlashEligible(args) && !FlashAttentionDisabled()) {
    const dim3 flash_grid(static_cast<unsigned>((args.q_seq + kFlashQueries - 1) / kFlashQueries),
                          static_cast<unsigned>(args.q_heads), static_cast<unsigned>(args.batch));
    return Dispatch(args.type, [&](auto tag) {
      using T = decltype(tag);
      if constexpr (std::is_same_v<T, float>) {
        return cudaErrorInvalidValue;  // not eligible
      } else {
        return Dispatch(mask_type, [&](auto mask_tag) {
          using M = decltype(mask_tag);
          FlashAttentionKernel<T, M><<<flash_grid, 32 * kFlashWarps, kFlashShared, stream>>>(args);
          return cudaGetLastError();
        });
      }
    });
  }
  return Dispatch(args.type, [&](auto tag) {
    using T = decltype(tag);
    return Dispatch(mask_type, [&](auto mask_tag) {
      using M = decltype(mask_tag);
      if (shared > 48 * 1024) {
        cudaError_t e =
            cudaFuncSetAttribute(AttentionKernel<T, M>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(shared));
        if (e != cudaSuccess) return e;
      }
      AttentionKernel<T, M><<<grid, 128, shared, stream>>>(args);
      return cudaGetLastError();
    });
  });
}

cudaError_t Where(const bool* cond, const void* x, const void* y, void* out,
                  const BroadcastShape& shape, int64_t count, int element_bytes,
                  cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  if (element_bytes == 2) {
    WhereKernel<<<Blocks(count), kThreads, 0, stream>>>(cond, static_cast<const uint16_t*>(x),
                                                        static_cast<const uint16_t*>(y),
                                                        static_cast<uint16_t*>(out), shape, count);
  } else if (element_bytes == 4) {
    WhereKernel<<<Blocks(count), kThreads, 0, stream>>>(cond, static_cast<const uint32_t*>(x),
                                                        static_cast<const uint32_t*>(y),
                                                        static_cast<uint32_t*>(out), shape, count);
  } else {
    return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t RangeI64(int64_t* out, int64_t start, int64_t delta, int64_t count,
                     cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  RangeKernel<<<Blocks(count), kThreads, 0, stream>>>(out, start, delta, count);
  return cudaGetLastError();
}

}  // namespace nimble::vm::cuda_ops
