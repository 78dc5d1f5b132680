// FlexAttention expansion: an ai.onnx.preview FlexAttention node with score_mod / prob_mod
// graphs becomes two stages of the FlexAttention kernel around the graphs' nodes, inlined, and a
// Softmax. A node without graphs is left to the kernel whole.
//
//   before:  %y = FlexAttention(%q, %k, %v) {scale, score_mod = g(%scores) -> %s',
//                                            prob_mod = h(%probs) -> %p'}
//   after:   %s = FlexAttention(%q, %k) {scale, flex_stage = 1}    # scale * Q K^T
//            ... g's nodes with %scores = %s ...                     # -> %s'
//            %p = Softmax(%s') {axis = -1}
//            ... h's nodes with %probs = %p ...                      # -> %p'
//            %y = FlexAttention(%p', %v) {flex_stage = 2}          # P V
//
// The graphs' constants are copied into the enclosing graph and values they capture are used
// directly. Runs before type inference (the inlined nodes are typed with the rest). Graphs with
// other names, several inputs or outputs, or nested graphs of their own are refused.
#pragma once

#include "absl/status/statusor.h"
#include "compiler/ir/graph.h"

namespace nimble::compiler {

// Returns how many FlexAttention nodes were expanded.
absl::StatusOr<int> ExpandFlexAttention(Module& module);

}  // namespace nimble::compiler
