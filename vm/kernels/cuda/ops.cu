// CUDA kernels of the VM's CUDA device (see ops_cuda.h). Correct first: generic index math,
// one thread per element for elementwise work, one block per row for reductions. fp32 compute.
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

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
          x = args.inputs[a][offsets[a]];
          break;
        case 1:
          x = program.constants[a];
          break;
        case 2:
          args.outputs[dst][i] = slots[a];
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

__global__ void BiasActResidualKernel(float* x, const float* bias, const float* residual,
                                      int64_t count, int64_t n, Act act) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = x[i];
    if (bias != nullptr) v += bias[i % n];
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
    if (residual != nullptr) v += residual[i];
    x[i] = v;
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

template <typename S, typename D>
__global__ void CastKernel(const S* in, D* out, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if constexpr (std::is_same_v<D, bool>) {
      out[i] = ToFloat(in[i]) != 0.0f || (!std::is_same_v<S, __half> && in[i] != S{});
    } else if constexpr (std::is_same_v<D, __half>) {
      out[i] = __float2half(ToFloat(in[i]));
    } else if constexpr (std::is_same_v<S, __half>) {
      out[i] = static_cast<D>(__half2float(in[i]));
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

__global__ void LayerNormKernel(const float* x, const float* gamma, const float* beta, float* y,
                                int64_t cols, float epsilon) {
  const float* row = x + blockIdx.x * cols;
  float* out = y + blockIdx.x * cols;
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += row[c];
  const float mean = BlockReduce<false>(sum) / static_cast<float>(cols);
  float sq = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float d = row[c] - mean;
    sq += d * d;
  }
  const float rstd = rsqrtf(BlockReduce<false>(sq) / static_cast<float>(cols) + epsilon);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    float v = (row[c] - mean) * rstd;
    if (gamma != nullptr) v *= gamma[c];
    if (beta != nullptr) v += beta[c];
    out[c] = v;
  }
}

__global__ void SoftmaxKernel(const float* x, float* y, int64_t r, int64_t inner, bool log) {
  const int64_t o = blockIdx.x / inner, in = blockIdx.x % inner;
  const float* row = x + o * r * inner + in;
  float* out = y + o * r * inner + in;
  float m = -INFINITY;
  for (int64_t c = threadIdx.x; c < r; c += blockDim.x) m = fmaxf(m, row[c * inner]);
  m = BlockReduce<true>(m);
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < r; c += blockDim.x) sum += expf(row[c * inner] - m);
  sum = BlockReduce<false>(sum);
  const float lse = m + logf(sum);
  for (int64_t c = threadIdx.x; c < r; c += blockDim.x) {
    out[c * inner] = log ? row[c * inner] - lse : expf(row[c * inner] - m) / sum;
  }
}

// One block per (query, head, batch): scores in shared memory, then P·V with a thread per dim.
__global__ void AttentionKernel(AttentionArgs a) {
  extern __shared__ float shared[];
  float* q = shared;                // head
  float* scores = shared + a.head;  // kv_seq
  const int64_t i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t kvh = h / (a.q_heads / a.kv_heads);
  const float* qrow = a.q + b * a.q_strides[0] + h * a.q_strides[1] + i * a.q_strides[2];
  for (int64_t d = threadIdx.x; d < a.head; d += blockDim.x) q[d] = qrow[d] * a.scale;
  __syncthreads();
  // Scores: a warp per key, lanes across the head dim (coalesced K reads).
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int64_t j = warp; j < a.kv_seq; j += warps) {
    const float* krow = a.k + b * a.k_strides[0] + kvh * a.k_strides[1] + j * a.k_strides[2];
    float s = 0.0f;
    for (int64_t d = lane; d < a.head; d += 32) s += q[d] * krow[d];
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
          s += static_cast<const float*>(a.mask)[off];
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
  float* yrow = a.y + b * a.y_strides[0] + h * a.y_strides[1] + i * a.y_strides[2];
  const float* vbase = a.v + b * a.v_strides[0] + kvh * a.v_strides[1];
  for (int64_t d = threadIdx.x; d < a.v_head; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j < a.kv_seq; ++j) acc += scores[j] * vbase[j * a.v_strides[2] + d];
    yrow[d] = acc * inv;
  }
}

__global__ void WhereKernel(const bool* cond, const uint32_t* x, const uint32_t* y, uint32_t* out,
                            BroadcastShape shape, int64_t count) {
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
                       int64_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  ProgramKernel<<<Blocks(count), kThreads, 0, stream>>>(program, args, shape, count);
  return cudaGetLastError();
}

cudaError_t BiasActResidual(float* x, const float* bias, const float* residual, int64_t count,
                            int64_t n, Act act, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  BiasActResidualKernel<<<Blocks(count), kThreads, 0, stream>>>(x, bias, residual, count, n, act);
  return cudaGetLastError();
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
  return dtype == 1 || dtype == 2 || dtype == 4 || dtype == 5 || dtype == 6 || dtype == 7 ||
         dtype == 8 || dtype == 9 || dtype == 13;
}

cudaError_t Cast(const void* in, int in_dtype, void* out, int out_dtype, int64_t count,
                 cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  switch (in_dtype) {
    case 1:
      return CastFrom(static_cast<const float*>(in), out, out_dtype, count, stream);
    case 2:
      return CastFrom(static_cast<const __half*>(in), out, out_dtype, count, stream);
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

cudaError_t LayerNorm(const float* x, const float* gamma, const float* beta, float* y, int64_t rows,
                      int64_t cols, float epsilon, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return cudaSuccess;
  if (rows > 2147483647LL) return cudaErrorInvalidValue;
  const int threads = cols <= 128 ? 64 : cols <= 512 ? 128 : 256;
  LayerNormKernel<<<static_cast<unsigned>(rows), threads, 0, stream>>>(x, gamma, beta, y, cols,
                                                                       epsilon);
  return cudaGetLastError();
}

cudaError_t Softmax(const float* x, float* y, int64_t outer, int64_t r, int64_t inner, bool log,
                    cudaStream_t stream) {
  const int64_t rows = outer * inner;
  if (rows == 0 || r == 0) return cudaSuccess;
  if (rows > 2147483647LL) return cudaErrorInvalidValue;
  const int threads = r <= 64 ? 32 : r <= 256 ? 64 : r <= 1024 ? 128 : 256;
  SoftmaxKernel<<<static_cast<unsigned>(rows), threads, 0, stream>>>(x, y, r, inner, log);
  return cudaGetLastError();
}

cudaError_t Attention(const AttentionArgs& args, cudaStream_t stream) {
  if (args.batch == 0 || args.q_heads == 0 || args.q_seq == 0 || args.v_head == 0) {
    return cudaSuccess;
  }
  if (args.q_seq > 2147483647LL || args.q_heads > 65535 || args.batch > 65535) {
    return cudaErrorInvalidValue;
  }
  const size_t shared = static_cast<size_t>(args.head + args.kv_seq) * sizeof(float);
  if (shared > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(
        AttentionKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared));
    if (e != cudaSuccess) return e;
  }
  const dim3 grid(static_cast<unsigned>(args.q_seq), static_cast<unsigned>(args.q_heads),
                  static_cast<unsigned>(args.batch));
  AttentionKernel<<<grid, 128, shared, stream>>>(args);
  return cudaGetLastError();
}

cudaError_t Where(const bool* cond, const void* x, const void* y, void* out,
                  const BroadcastShape& shape, int64_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  WhereKernel<<<Blocks(count), kThreads, 0, stream>>>(cond, static_cast<const uint32_t*>(x),
                                                      static_cast<const uint32_t*>(y),
                                                      static_cast<uint32_t*>(out), shape, count);
  return cudaGetLastError();
}

cudaError_t RangeI64(int64_t* out, int64_t start, int64_t delta, int64_t count,
                     cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  RangeKernel<<<Blocks(count), kThreads, 0, stream>>>(out, start, delta, count);
  return cudaGetLastError();
}

}  // namespace nimble::vm::cuda_ops
