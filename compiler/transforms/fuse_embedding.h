// Recognises the embedding layer of BERT-class models — lookups in constant tables, summed and
// layer-normalised — and replaces it with one EmbedLayerNorm node: one pass over the rows
// instead of a kernel per lookup, one for the sum and one for the norm (on the GPU: one launch
// instead of five, and no round trip of the sum through memory).
//
//   before:  %w = Gather(W, %ids)  %p = Gather(P, %pos)  %t = Gather(T, %types)
//            %s = Add(Add(%w, %p), %t)  %y = LayerNormalization(%s, gamma, beta) {epsilon}
//   after:   %y = EmbedLayerNorm(W, %ids, P, _, T, %types, gamma, beta)
//                 {embeddings=3, epsilon}
//
// EmbedLayerNorm's inputs are (table_k, ids_k) pairs, then gamma and beta (optional); the ids
// broadcast to the output's leading dims as the Adds broadcast the lookups. Absent ids are the
// positions along the last leading dim: ids that were Range(0, n, 1) (or it Unsqueezed on axis
// 0) with n that dim, so the host computes and uploads nothing for them. Matched: 1 to 4
// Gathers on axis 0 of constant f32 [vocab, D] tables, each read only by the sum, an Add tree
// whose inner nodes are read only by their parent, and a LayerNormalization over the last
// axis with constant [D] gamma / beta and one output.
#pragma once

#include "absl/status/statusor.h"
#include "compiler/ir/graph.h"

namespace nimble::compiler {

inline constexpr int kMaxFusedEmbeddings = 4;

// Returns how many embedding layers were replaced.
absl::StatusOr<int> FuseEmbeddings(Module& module);

}  // namespace nimble::compiler
