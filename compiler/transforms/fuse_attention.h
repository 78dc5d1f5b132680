// Scaled dot-product attention fusion: the head split, the two batched MatMuls, the scale, the
// additive mask and the Softmax that exporters emit for multi-head attention become one ONNX
// Attention node (3-D form), which the CPU kernel runs head by head without materialising the
// [batch, heads, seq, seq] scores or transposing Q/K/V and the output.
//
//   before:  %q4 = Reshape(%q, [b, s, H, D])  %qt = Transpose(%q4, perm=[0,2,1,3])
//            %k4 = Reshape(%k, [b, s, H, D])  %kt = Transpose(%k4, perm=[0,2,3,1])
//            %v4 = Reshape(%v, [b, s, H, D])  %vt = Transpose(%v4, perm=[0,2,1,3])
//            %s = MatMul(%qt, %kt)  %d = Div(%s, c)  %a = Add(%d, %mask)  %p = Softmax(%a, -1)
//            %y = MatMul(%p, %vt)  %yt = Transpose(%y, perm=[0,2,1,3])  %o = Reshape(%yt, [b, s,
//            H*D])
//   after:   %o = Attention(%q, %k, %v, %mask) {q_num_heads=H, kv_num_heads=H, scale=1/c}
//
// Also, on 4-D heads (GPT-2, keys and values already concatenated with the cache):
//   before:  %s = MatMul(%q4, Transpose(%k4, perm=[0,1,3,2]))  %d = Div(%s, c)
//            %w = Where(%masked, fill, %d)  %p = Softmax(%w, -1)  %y = MatMul(%p, %v4)
//   after:   %y = Attention(%q4, %k4, %v4, Not(%masked)) {scale=1/c, mask_fill=fill}
// (mask_fill is Nimble's: masked scores become exactly `fill`, as with the Where.)
//
// The scale may be a Div or Mul by a scalar constant or absent; the mask may be absent, and
// must be a float tensor of Q's dtype whose last dim is the key sequence (Attention pads a
// shorter mask instead of broadcasting it). Intermediate values must have no other users.
#pragma once

#include "absl/status/statusor.h"
#include "compiler/ir/graph.h"

namespace nimble::compiler {

// Returns how many attention blocks were fused.
absl::StatusOr<int> FuseAttention(Module& module);

}  // namespace nimble::compiler
