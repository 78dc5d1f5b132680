#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "vm/cuda/cuda_status.h"
#include "vm/cuda/kernels.h"

namespace nimble::vm::cuda {
namespace {

__device__ __forceinline__ float Load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float Load(const __half* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ void Store(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void Store(__half* p, int64_t i, float v) { p[i] = __float2half_rn(v); }

__device__ __forceinline__ float WarpSum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
__device__ __forceinline__ float WarpMax(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// Every thread of the block gets the total. blockDim.x must be a multiple of 32.
template <bool kMax>
__device__ float BlockReduce(float v) {
  __shared__ float partial[32];
  v = kMax ? WarpMax(v) : WarpSum(v);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  __syncthreads();  // the previous call's readers are done with `partial`
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  const float identity = kMax ? -INFINITY : 0.0f;
  v = lane < warps ? partial[lane] : identity;
  return kMax ? WarpMax(v) : WarpSum(v);
}

template <typename T>
__global__ void LayerNormKernel(const T* x, const T* residual, const T* gamma, const T* beta,
                                T* out, T* sum_out, int64_t cols, float epsilon) {
  const int64_t base = static_cast<int64_t>(blockIdx.x) * cols;
  // Pass 1: s = x + residual (stored when asked; later passes then read it back, so sum_out may
  // alias an input), and the mean.
  float local = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    float s = Load(x, base + c);
    if (residual != nullptr) s += Load(residual, base + c);
    if (sum_out != nullptr) {
      Store(sum_out, base + c, s);
      s = Load(sum_out, base + c);
    }
    local += s;
  }
  const float mean = BlockReduce<false>(local) / static_cast<float>(cols);
  auto value = [&](int64_t c) {
    if (sum_out != nullptr) return Load(sum_out, base + c);
    float s = Load(x, base + c);
    if (residual != nullptr) s += Load(residual, base + c);
    return s;
  };
  // Pass 2: variance around the mean (two-pass: no cancellation for large means).
  local = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float d = value(c) - mean;
    local += d * d;
  }
  const float rstd = rsqrtf(BlockReduce<false>(local) / static_cast<float>(cols) + epsilon);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    Store(out, base + c, (value(c) - mean) * rstd * Load(gamma, c) + Load(beta, c));
  }
}

template <typename T>
__global__ void SoftmaxKernel(const T* x, const float* mask, T* out, int64_t cols, float scale,
                              int64_t mask_row_divisor) {
  const int64_t row = blockIdx.x;
  const int64_t base = row * cols;
  const float* mask_row = mask != nullptr ? mask + (row / mask_row_divisor) * cols : nullptr;
  auto logit = [&](int64_t c) {
    float v = Load(x, base + c) * scale;
    if (mask_row != nullptr) v += mask_row[c];
    return v;
  };
  float local = -INFINITY;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) local = fmaxf(local, logit(c));
  const float max = BlockReduce<true>(local);
  if (max == -INFINITY) {  // fully masked row
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) Store(out, base + c, 0.0f);
    return;
  }
  local = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) local += __expf(logit(c) - max);
  const float inv = 1.0f / BlockReduce<false>(local);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    Store(out, base + c, __expf(logit(c) - max) * inv);
  }
}

template <typename T>
__global__ void GeluKernel(const T* x, T* out, int64_t count, bool tanh_approximation) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    const float v = Load(x, i);
    const float y = tanh_approximation
                        ? 0.5f * v * (1.0f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v)))
                        : 0.5f * v * (1.0f + erff(v * 0.70710678118f));
    Store(out, i, y);
  }
}

constexpr int kAttentionWarps = 8;

// grid (batch * heads, ceil(seq_q / kAttentionWarps)); one warp per query row. The warp scores
// every key (lane j takes keys j, j+32, ...), softmaxes in shared memory, then accumulates
// p @ V with lanes across head_dim (coalesced V reads). K/V rows are re-read per query from
// L1/L2; fine for seq <= 512, and what a FlashAttention-style tiled kernel would replace.
template <typename T>
__global__ void AttentionKernel(const T* q, const T* k, const T* v, const float* mask, T* out,
                                AttentionShape shape, float scale) {
  __shared__ float q_row[kAttentionWarps][kAttentionMaxHeadDim];
  __shared__ float probs[kAttentionWarps][kAttentionMaxSeqK];
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int64_t bh = blockIdx.x;
  const int64_t b = bh / shape.heads;
  const int64_t h = bh % shape.heads;
  const int64_t i = static_cast<int64_t>(blockIdx.y) * kAttentionWarps + warp;
  if (i >= shape.seq_q) return;  // no block-wide barriers below
  const int64_t d_model = shape.head_dim;
  const T* q_base = q + (bh * shape.seq_q + i) * d_model;
  const T* k_base = k + bh * shape.seq_k * d_model;
  const T* v_base = v + bh * shape.seq_k * d_model;
  for (int64_t d = lane; d < d_model; d += 32) q_row[warp][d] = Load(q_base, d) * scale;
  __syncwarp();
  const float* mask_row = mask != nullptr
                              ? mask + b * shape.mask_batch_stride + h * shape.mask_head_stride +
                                    i * shape.mask_row_stride
                              : nullptr;
  float max = -INFINITY;
  for (int64_t j = lane; j < shape.seq_k; j += 32) {
    const T* k_row = k_base + j * d_model;
    float s = 0.0f;
    for (int64_t d = 0; d < d_model; ++d) s += q_row[warp][d] * Load(k_row, d);
    if (mask_row != nullptr) s += mask_row[j];
    probs[warp][j] = s;
    max = fmaxf(max, s);
  }
  max = WarpMax(max);
  T* out_row = out + (bh * shape.seq_q + i) * d_model;
  if (max == -INFINITY) {
    for (int64_t d = lane; d < d_model; d += 32) Store(out_row, d, 0.0f);
    return;
  }
  float sum = 0.0f;
  for (int64_t j = lane; j < shape.seq_k; j += 32) {
    const float p = __expf(probs[warp][j] - max);
    probs[warp][j] = p;
    sum += p;
  }
  const float inv = 1.0f / WarpSum(sum);
  __syncwarp();  // every lane's probabilities are visible to the whole warp
  for (int64_t d = lane; d < d_model; d += 32) {
    float acc = 0.0f;
    for (int64_t j = 0; j < shape.seq_k; ++j) acc += probs[warp][j] * Load(v_base + j * d_model, d);
    Store(out_row, d, acc * inv);
  }
}

int RowThreads(int64_t cols) {
  if (cols <= 128) return 64;
  if (cols <= 512) return 128;
  if (cols <= 2048) return 256;
  return 512;
}

absl::Status CheckRows(int64_t rows, int64_t cols, const char* op) {
  if (rows < 0 || cols <= 0 || rows > 2147483647) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": rows (", rows, ") must be in [0, 2^31) and cols (", cols, ") > 0"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LayerNorm(const void* x, const void* residual, const void* gamma, const void* beta,
                       void* out, void* sum_out, int64_t rows, int64_t cols, float epsilon,
                       DType dtype, cudaStream_t stream) {
  NIMBLE_RETURN_IF_ERROR(CheckRows(rows, cols, "LayerNorm"));
  if (x == nullptr || gamma == nullptr || beta == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("LayerNorm: x, gamma, beta and out are required");
  }
  if (rows == 0) return absl::OkStatus();
  const dim3 grid(static_cast<unsigned>(rows));
  const dim3 block(RowThreads(cols));
  if (dtype == DType::kF32) {
    LayerNormKernel<float><<<grid, block, 0, stream>>>(
        static_cast<const float*>(x), static_cast<const float*>(residual),
        static_cast<const float*>(gamma), static_cast<const float*>(beta), static_cast<float*>(out),
        static_cast<float*>(sum_out), cols, epsilon);
  } else {
    LayerNormKernel<__half><<<grid, block, 0, stream>>>(
        static_cast<const __half*>(x), static_cast<const __half*>(residual),
        static_cast<const __half*>(gamma), static_cast<const __half*>(beta),
        static_cast<__half*>(out), static_cast<__half*>(sum_out), cols, epsilon);
  }
  return CudaStatus(cudaGetLastError(), "LayerNormKernel launch");
}

absl::Status Softmax(const void* x, const float* mask, void* out, int64_t rows, int64_t cols,
                     float scale, int64_t mask_row_divisor, DType dtype, cudaStream_t stream) {
  NIMBLE_RETURN_IF_ERROR(CheckRows(rows, cols, "Softmax"));
  if (x == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("Softmax: x and out are required");
  }
  if (mask != nullptr && mask_row_divisor <= 0) {
    return absl::InvalidArgumentError("Softmax: mask_row_divisor must be > 0");
  }
  if (rows == 0) return absl::OkStatus();
  const dim3 grid(static_cast<unsigned>(rows));
  const dim3 block(RowThreads(cols));
  const int64_t divisor = mask_row_divisor > 0 ? mask_row_divisor : 1;
  if (dtype == DType::kF32) {
    SoftmaxKernel<float><<<grid, block, 0, stream>>>(
        static_cast<const float*>(x), mask, static_cast<float*>(out), cols, scale, divisor);
  } else {
    SoftmaxKernel<__half><<<grid, block, 0, stream>>>(
        static_cast<const __half*>(x), mask, static_cast<__half*>(out), cols, scale, divisor);
  }
  return CudaStatus(cudaGetLastError(), "SoftmaxKernel launch");
}

absl::Status Gelu(const void* x, void* out, int64_t count, bool tanh_approximation, DType dtype,
                  cudaStream_t stream) {
  if (count < 0) return absl::InvalidArgumentError(absl::StrCat("Gelu: count ", count));
  if (count == 0) return absl::OkStatus();
  if (x == nullptr || out == nullptr) return absl::InvalidArgumentError("Gelu: null pointer");
  constexpr int kThreads = 256;
  const int64_t wanted = (count + kThreads - 1) / kThreads;
  const unsigned blocks = static_cast<unsigned>(wanted < 65535 ? wanted : 65535);
  if (dtype == DType::kF32) {
    GeluKernel<float><<<blocks, kThreads, 0, stream>>>(
        static_cast<const float*>(x), static_cast<float*>(out), count, tanh_approximation);
  } else {
    GeluKernel<__half><<<blocks, kThreads, 0, stream>>>(
        static_cast<const __half*>(x), static_cast<__half*>(out), count, tanh_approximation);
  }
  return CudaStatus(cudaGetLastError(), "GeluKernel launch");
}

absl::Status Attention(const void* q, const void* k, const void* v, const float* mask, void* out,
                       const AttentionShape& s, float scale, DType dtype, cudaStream_t stream) {
  if (s.batch <= 0 || s.heads <= 0 || s.seq_q <= 0 || s.seq_k <= 0 || s.head_dim <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Attention: batch, heads, seq_q, seq_k, head_dim must be > 0; got ", s.batch,
                     ", ", s.heads, ", ", s.seq_q, ", ", s.seq_k, ", ", s.head_dim));
  }
  if (s.seq_k > kAttentionMaxSeqK || s.head_dim > kAttentionMaxHeadDim) {
    return absl::UnimplementedError(
        absl::StrCat("Attention kernel supports seq_k <= ", kAttentionMaxSeqK, " and head_dim <= ",
                     kAttentionMaxHeadDim, "; got seq_k ", s.seq_k, ", head_dim ", s.head_dim));
  }
  if (s.batch * s.heads > 2147483647 || (s.seq_q + kAttentionWarps - 1) / kAttentionWarps > 65535) {
    return absl::UnimplementedError("Attention: grid too large");
  }
  if (q == nullptr || k == nullptr || v == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("Attention: q, k, v and out are required");
  }
  const dim3 grid(static_cast<unsigned>(s.batch * s.heads),
                  static_cast<unsigned>((s.seq_q + kAttentionWarps - 1) / kAttentionWarps));
  const dim3 block(kAttentionWarps * 32);
  if (dtype == DType::kF32) {
    AttentionKernel<float><<<grid, block, 0, stream>>>(
        static_cast<const float*>(q), static_cast<const float*>(k), static_cast<const float*>(v),
        mask, static_cast<float*>(out), s, scale);
  } else {
    AttentionKernel<__half><<<grid, block, 0, stream>>>(
        static_cast<const __half*>(q), static_cast<const __half*>(k), static_cast<const __half*>(v),
        mask, static_cast<__half*>(out), s, scale);
  }
  return CudaStatus(cudaGetLastError(), "AttentionKernel launch");
}

}  // namespace nimble::vm::cuda
