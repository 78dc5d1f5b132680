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

// The value as stored in T and read back (what a later kernel reading the stored tensor sees).
__device__ __forceinline__ float RoundTrip(float v, const float*) { return v; }
__device__ __forceinline__ float RoundTrip(float v, const __half*) {
  return __half2float(__float2half_rn(v));
}

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

// Rows of up to kPerThread * blockDim.x columns: the row lives in registers, so x and residual
// are read once (the generic kernel above re-reads them in each of its three passes).
template <typename T, int kPerThread>
__global__ void LayerNormRegistersKernel(const T* x, const T* residual, const T* gamma,
                                         const T* beta, T* out, T* sum_out, int64_t cols,
                                         float epsilon) {
  const int64_t base = static_cast<int64_t>(blockIdx.x) * cols;
  float v[kPerThread];
  float local = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t c = threadIdx.x + static_cast<int64_t>(i) * blockDim.x;
    v[i] = 0.0f;
    if (c < cols) {
      float s = Load(x, base + c);
      if (residual != nullptr) s += Load(residual, base + c);
      if (sum_out != nullptr) {
        Store(sum_out, base + c, s);
        s = RoundTrip(s, sum_out);
      }
      v[i] = s;
      local += s;
    }
  }
  const float mean = BlockReduce<false>(local) / static_cast<float>(cols);
  local = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t c = threadIdx.x + static_cast<int64_t>(i) * blockDim.x;
    if (c < cols) local += (v[i] - mean) * (v[i] - mean);
  }
  const float rstd = rsqrtf(BlockReduce<false>(local) / static_cast<float>(cols) + epsilon);
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t c = threadIdx.x + static_cast<int64_t>(i) * blockDim.x;
    if (c < cols) Store(out, base + c, (v[i] - mean) * rstd * Load(gamma, c) + Load(beta, c));
  }
}

// Rows of up to 32 * kPerLane columns, one warp per row, the row in registers: one read and one
// write per element (the block kernel below reads each element three times).
template <typename T, int kPerLane>
__global__ void SoftmaxWarpKernel(const T* x, const float* mask, T* out, int64_t rows, int64_t cols,
                                  float scale, int64_t mask_row_divisor) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= rows) return;  // whole warps only: no block barriers below
  const int lane = threadIdx.x & 31;
  const int64_t base = row * cols;
  const float* mask_row = mask != nullptr ? mask + (row / mask_row_divisor) * cols : nullptr;
  float v[kPerLane];
  float max = -INFINITY;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int64_t c = lane + i * 32;
    v[i] = -INFINITY;
    if (c < cols) {
      v[i] = Load(x, base + c) * scale;
      if (mask_row != nullptr) v[i] += mask_row[c];
    }
    max = fmaxf(max, v[i]);
  }
  max = WarpMax(max);
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    v[i] = max == -INFINITY ? 0.0f : __expf(v[i] - max);  // exp(-inf) = 0 pads the tail
    sum += v[i];
  }
  sum = WarpSum(sum);
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;  // fully masked row -> zeros
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int64_t c = lane + i * 32;
    if (c < cols) Store(out, base + c, v[i] * inv);
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
constexpr int kKeyTile = 32;

// grid (batch * heads, ceil(seq_q / kAttentionWarps)), one warp per query row, all warps of a
// block on the same head. K and then V are staged through shared memory in tiles of 32 rows
// (coalesced loads, shared by the 8 warps; rows padded by one float so lane j reading row j is
// conflict-free). Scores: lane j scores key t0 + j of each tile into the warp's `probs` row;
// softmax in place; then p @ V with each lane owning head_dim / 32 output columns in registers.
// A simple CUDA-core kernel (no tensor cores, no online softmax): what a FlashAttention-style
// kernel would replace.
template <typename T>
__global__ void __launch_bounds__(kAttentionWarps * 32)
    AttentionKernel(const T* q, const T* k, const T* v, const float* mask, T* out,
                    AttentionShape shape, float scale) {
  __shared__ float q_row[kAttentionWarps][kAttentionMaxHeadDim];
  __shared__ float probs[kAttentionWarps][kAttentionMaxSeqK];
  __shared__ float tile[kKeyTile][kAttentionMaxHeadDim + 1];
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int64_t bh = blockIdx.x;
  const int64_t b = bh / shape.heads;
  const int64_t h = bh % shape.heads;
  const int64_t i = static_cast<int64_t>(blockIdx.y) * kAttentionWarps + warp;
  const bool valid = i < shape.seq_q;  // whole warps; every thread still joins the barriers
  const int64_t dim = shape.head_dim;
  const int64_t seq_k = shape.seq_k;
  const T* k_base = k + bh * seq_k * dim;
  const T* v_base = v + bh * seq_k * dim;
  if (valid) {
    const T* q_base = q + (bh * shape.seq_q + i) * dim;
    for (int64_t d = lane; d < dim; d += 32) q_row[warp][d] = Load(q_base, d) * scale;
  }
  const float* mask_row = mask != nullptr && valid
                              ? mask + b * shape.mask_batch_stride + h * shape.mask_head_stride +
                                    i * shape.mask_row_stride
                              : nullptr;
  auto load_tile = [&](const T* base, int64_t t0) {
    __syncthreads();  // everyone is done with the previous tile
    for (int64_t idx = threadIdx.x; idx < kKeyTile * dim; idx += blockDim.x) {
      const int64_t r = idx / dim;
      const int64_t c = idx - r * dim;
      tile[r][c] = t0 + r < seq_k ? Load(base, (t0 + r) * dim + c) : 0.0f;
    }
    __syncthreads();
  };
  for (int64_t t0 = 0; t0 < seq_k; t0 += kKeyTile) {
    load_tile(k_base, t0);
    const int64_t key = t0 + lane;
    if (valid && key < seq_k) {
      float s = 0.0f;
      for (int64_t d = 0; d < dim; ++d) s += q_row[warp][d] * tile[lane][d];
      if (mask_row != nullptr) s += mask_row[key];
      probs[warp][key] = s;
    }
  }
  __syncwarp();
  float max = -INFINITY;
  if (valid) {
    for (int64_t j = lane; j < seq_k; j += 32) max = fmaxf(max, probs[warp][j]);
  }
  max = WarpMax(max);
  const bool dead = max == -INFINITY;  // invalid warp or fully masked row
  float sum = 0.0f;
  if (!dead) {
    for (int64_t j = lane; j < seq_k; j += 32) {
      const float p = __expf(probs[warp][j] - max);
      probs[warp][j] = p;
      sum += p;
    }
  }
  sum = WarpSum(sum);
  __syncwarp();  // every lane's probabilities are visible to the whole warp
  constexpr int kColumns = kAttentionMaxHeadDim / 32;
  float acc[kColumns] = {};
  for (int64_t t0 = 0; t0 < seq_k; t0 += kKeyTile) {
    load_tile(v_base, t0);
    if (!dead) {
      const int64_t n = seq_k - t0 < kKeyTile ? seq_k - t0 : kKeyTile;
      for (int64_t j = 0; j < n; ++j) {
        const float p = probs[warp][t0 + j];
#pragma unroll
        for (int c = 0; c < kColumns; ++c) {
          const int64_t d = lane + c * 32;
          if (d < dim) acc[c] += p * tile[j][d];
        }
      }
    }
  }
  if (!valid) return;
  T* out_row = out + (bh * shape.seq_q + i) * dim;
  const float inv = dead ? 0.0f : 1.0f / sum;
#pragma unroll
  for (int c = 0; c < kColumns; ++c) {
    const int64_t d = lane + c * 32;
    if (d < dim) Store(out_row, d, acc[c] * inv);
  }
}

// Picks the smallest per-thread register row that holds `cols` (<= 16 * 256).
template <typename T>
void LaunchLayerNormRegisters(dim3 grid, dim3 block, int64_t cols, cudaStream_t stream, const T* x,
                              const T* residual, const T* gamma, const T* beta, T* out, T* sum_out,
                              float epsilon) {
  if (cols <= 1024) {
    LayerNormRegistersKernel<T, 4>
        <<<grid, block, 0, stream>>>(x, residual, gamma, beta, out, sum_out, cols, epsilon);
  } else if (cols <= 2048) {
    LayerNormRegistersKernel<T, 8>
        <<<grid, block, 0, stream>>>(x, residual, gamma, beta, out, sum_out, cols, epsilon);
  } else {
    LayerNormRegistersKernel<T, 16>
        <<<grid, block, 0, stream>>>(x, residual, gamma, beta, out, sum_out, cols, epsilon);
  }
}

// Picks the smallest per-lane register row that holds `cols` (<= 32 * 32).
template <typename T>
void LaunchSoftmaxWarp(dim3 grid, dim3 block, int64_t cols, cudaStream_t stream, const T* x,
                       const float* mask, T* out, int64_t rows, float scale, int64_t divisor) {
  if (cols <= 128) {
    SoftmaxWarpKernel<T, 4><<<grid, block, 0, stream>>>(x, mask, out, rows, cols, scale, divisor);
  } else if (cols <= 256) {
    SoftmaxWarpKernel<T, 8><<<grid, block, 0, stream>>>(x, mask, out, rows, cols, scale, divisor);
  } else if (cols <= 512) {
    SoftmaxWarpKernel<T, 16><<<grid, block, 0, stream>>>(x, mask, out, rows, cols, scale, divisor);
  } else {
    SoftmaxWarpKernel<T, 32><<<grid, block, 0, stream>>>(x, mask, out, rows, cols, scale, divisor);
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
  if (cols <= 4096) {
    const dim3 block(256);
    if (dtype == DType::kF32) {
      LaunchLayerNormRegisters<float>(grid, block, cols, stream, static_cast<const float*>(x),
                                      static_cast<const float*>(residual),
                                      static_cast<const float*>(gamma),
                                      static_cast<const float*>(beta), static_cast<float*>(out),
                                      static_cast<float*>(sum_out), epsilon);
    } else {
      LaunchLayerNormRegisters<__half>(grid, block, cols, stream, static_cast<const __half*>(x),
                                       static_cast<const __half*>(residual),
                                       static_cast<const __half*>(gamma),
                                       static_cast<const __half*>(beta), static_cast<__half*>(out),
                                       static_cast<__half*>(sum_out), epsilon);
    }
    return CudaStatus(cudaGetLastError(), "LayerNormRegistersKernel launch");
  }
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
  const int64_t divisor = mask_row_divisor > 0 ? mask_row_divisor : 1;
  if (cols <= 1024) {
    constexpr int kRowsPerBlock = 4;
    const dim3 warp_grid(static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock));
    const dim3 warp_block(kRowsPerBlock * 32);
    if (dtype == DType::kF32) {
      LaunchSoftmaxWarp<float>(warp_grid, warp_block, cols, stream, static_cast<const float*>(x),
                               mask, static_cast<float*>(out), rows, scale, divisor);
    } else {
      LaunchSoftmaxWarp<__half>(warp_grid, warp_block, cols, stream, static_cast<const __half*>(x),
                                mask, static_cast<__half*>(out), rows, scale, divisor);
    }
    return CudaStatus(cudaGetLastError(), "SoftmaxWarpKernel launch");
  }
  const dim3 grid(static_cast<unsigned>(rows));
  const dim3 block(RowThreads(cols));
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
