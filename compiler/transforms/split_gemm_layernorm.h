// A GEMM ending in a residual and a LayerNorm, with K split for the GPU. At BERT-base's shapes
// the FusedMatMul that feeds a LayerNorm (the attention output, K = 768, and the second FFN
// GEMM, K = 3072, both N = 768) runs on a fraction of an H100's multiprocessors, each streaming
// a long K; cuBLASLt's own split-K adds a reduction kernel that costs more than it saves. Here
// the K slices are one batched GEMM writing partial products in the half type, and the
// LayerNorm kernel sums them (in f32) with the bias and residual as it reads its row
// (vm/kernels/cuda/gemm_ln_bench.cu saved 1.4 µs a layer at M = 384, K = 3072 on an H100 with
// f32 partials, 2.0 with half partials; BERT-base fp16 at seq 384 0.500 / 0.502 ms with half
// partials against 0.514 / 0.519 with f32 partials and 0.533 / 0.537 without the pass:
// bench/RESULTS.md).
//
//   before:  %y = FusedMatMul(%x, W, b, %r) {activation=""}   %o = LayerNormalization(%y, g, be)
//   after:   %p = MatMulSplitK(%x, W) {splits=S}     (f16 / bf16 [S, ..., N])
//            %o = SplitSumLayerNorm(%p, b, %r, g, be) {epsilon}
//
// Runs after lower-precision, for CUDA targets, on half GEMMs whose output only the LayerNorm
// reads, normalising the last axis (N a multiple of 8, at most 1024), with every dim of x known
// (constant, or a symbol such as a bucketed variant's batch). M is the product of x's constant
// leading dims (a symbol counts as 1: the split suits batch 1, what bucketed variants serve
// most; a generic variant's symbolic sequence length gives M = 1). S is 1 for K < 1536 (the summing
// LayerNorm takes over the GEMM's bias and residual epilogue), else 3 for M >= 96 and 4 below
// (f32 partials: 2 for M >= 256, 3 for M >= 96, 4 below), and only where K / S is a multiple
// of 8. NIMBLE_SPLIT_GEMM_LN_SPLITS=<S>
// (compile time) forces S for K >= 1536, NIMBLE_SPLIT_GEMM_LN_SMALL_K=0 leaves K < 1536 alone
// and NIMBLE_SPLIT_GEMM_LN_HALF_PARTIALS=0 writes the partial products in f32 (A/B
// measurements).
//
// The driver runs the pass for GPU targets unless NIMBLE_SPLIT_GEMM_LN=0 at compile time.
#pragma once

#include "absl/status/statusor.h"
#include "compiler/ir/graph.h"

namespace nimble::compiler {

// Returns how many GEMM + LayerNorm pairs were split.
absl::StatusOr<int> SplitGemmLayerNorms(Module& module);

}  // namespace nimble::compiler
