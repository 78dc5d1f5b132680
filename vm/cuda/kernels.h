// Hand-written CUDA kernels for the transformer ops cuBLASLt does not cover. All are
// stream-ordered and asynchronous: argument errors and launch errors are returned here, errors
// of the execution surface at the next synchronisation. fp16 data is computed in fp32.
//
//   LayerNorm  out = (s - mean(s)) / sqrt(var(s) + eps) * gamma + beta, s = x [+ residual],
//              per row of `cols`; optionally also stores s (the new residual stream). `sum_out`
//              may alias x or residual (each element is read before it is overwritten).
//   Softmax    out = softmax(x * scale + mask) per row; a row whose every entry is -inf
//              gives zeros, not NaN. mask (fp32, optional) is [rows / mask_row_divisor, cols]:
//              row r uses mask row r / mask_row_divisor (a [batch, keys] padding mask over
//              [batch * heads * queries] score rows has divisor heads * queries).
//   Gelu       erf form (ONNX Gelu) or the tanh approximation.
//   Attention  out = softmax(q k^T * scale + mask) v per (batch, head), q/k/v/out
//              [batch, heads, seq, head_dim] contiguous; mask (fp32, optional) indexed
//              mask[b * mask_batch_stride + h * mask_head_stride + i * mask_row_stride + j],
//              strides of 0 broadcast. Each block works on one head (a group of 8 queries, one
//              warp each): seq_k <= 512 and head_dim <= 128. A simple kernel, not FlashAttention.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace nimble::vm::cuda {

enum class DType { kF32, kF16 };

absl::Status LayerNorm(const void* x, const void* residual, const void* gamma, const void* beta,
                       void* out, void* sum_out, int64_t rows, int64_t cols, float epsilon,
                       DType dtype, cudaStream_t stream);

absl::Status Softmax(const void* x, const float* mask, void* out, int64_t rows, int64_t cols,
                     float scale, int64_t mask_row_divisor, DType dtype, cudaStream_t stream);

absl::Status Gelu(const void* x, void* out, int64_t count, bool tanh_approximation, DType dtype,
                  cudaStream_t stream);

struct AttentionShape {
  int64_t batch = 1;
  int64_t heads = 1;
  int64_t seq_q = 1;
  int64_t seq_k = 1;
  int64_t head_dim = 64;
  int64_t mask_batch_stride = 0;
  int64_t mask_head_stride = 0;
  int64_t mask_row_stride = 0;
};

inline constexpr int64_t kAttentionMaxSeqK = 512;
inline constexpr int64_t kAttentionMaxHeadDim = 128;

absl::Status Attention(const void* q, const void* k, const void* v, const float* mask, void* out,
                       const AttentionShape& shape, float scale, DType dtype, cudaStream_t stream);

}  // namespace nimble::vm::cuda
