// Folds an additive attention mask that is computed elementwise from an integer mask into the
// Attention nodes that read it. BERT-class exports build the mask as (1 - Cast(mask, f32)) * c
// (c = -10000 or the dtype's minimum); after fuse-elementwise that is a Cast and a
// FusedElementwise, two kernels on every call (on the GPU: an i64 -> f32 cast and an NVRTC
// kernel). Attention instead takes the integer mask with mask_scale = a and mask_offset = b,
// the affine form a x + b of the program, and forms each key's term as it stages the mask.
//
//   before:  %f = Cast(%m) {to=f32}  %a = FusedElementwise(%f) {program affine in %f}
//            %y_i = Attention(%q_i, %k_i, %v_i, %a)        for every reader of %a
//   after:   %y_i = Attention(%q_i, %k_i, %v_i, %m) {mask_scale=a, mask_offset=b}
//
// Matched: %m an i64 or i32 tensor; a FusedElementwise with that one input and one output
// whose program uses only loads, constants, Add, Sub, Neg, and Mul / Div where one side is a
// constant; every reader of %a an Attention taking it as its mask, with no mask_fill,
// mask_scale or mask_offset of its own. (The term is computed as fma(a, x, b): for the 0 / 1
// entries of a padding mask exactly what the program gives; other integers may differ in the
// last bit.)
#pragma once

#include "absl/status/statusor.h"
#include "compiler/ir/graph.h"

namespace nimble::compiler {

// Returns how many masks were folded (each into all of its Attention readers).
absl::StatusOr<int> FuseAttentionMasks(Module& module);

}  // namespace nimble::compiler
