// fuse-attention-out-norm (GPU targets, after lower-precision): BERT's post-LN attention block
//   %a = Attention(q, k, v[, mask])                     (3-D, non-causal, no past)
//   %p = FusedMatMul(%a, W, bias, residual)             (W a constant [hidden, hidden], no
//                                                        activation, alpha 1, no transposes)
//   %y = LayerNormalization(%p, gamma, beta)            (last axis, constant gamma / beta)
// becomes %y = AttentionOutNorm(q, k, v, mask, W, bias, residual, gamma, beta) with the
// Attention's attributes and the LayerNorm's epsilon, where %a and %p have no other readers,
// they are f16 or bf16 with hidden = q_num_heads * 64 <= 768, and the target's kernel registry
// has the op. The CUDA kernel runs all three in one launch (thread-block clusters, one block a
// head). Off unless NIMBLE_FUSE_ATTENTION_OUT_NORM=1 at compile time (until measured on a GPU).
#pragma once

#include "absl/status/statusor.h"
#include "compiler/ir/graph.h"
#include "vm/runtime/device.h"

namespace nimble::compiler {

// Returns how many blocks were fused.
absl::StatusOr<int> FuseAttentionOutNorm(Module& module, vm::DeviceType target);

}  // namespace nimble::compiler
