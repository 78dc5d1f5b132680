// The slice count a MatMulSplitK / SplitSumLayerNorm pair really uses at run time (both
// kernels, CPU and CUDA, apply the same rule, so a pair agrees wherever each half runs).
//
// The split-gemm-layernorm pass picks S from the M it sees at compile time, counting a
// symbolic batch as 1. Splitting K pays while the unsplit grid leaves multiprocessors idle: at
// N = 768 a 64x64-tile GEMM runs 12 blocks per 64 rows, so from about 700 rows it fills an
// H100's 132 multiprocessors and S slices only add (S - 1) x rows x N f32 partial products to
// write and read back (batch 8 at seq 128 would move 9 MB more a GEMM, batch 32 38 MB). Above
// kMaxSplitRows the pair runs as one slice: MatMulSplitK writes the whole-K product into slice
// 0 and SplitSumLayerNorm reads only slice 0; slices 1..S-1 are neither written nor read.
#pragma once

#include <cstdint>

namespace nimble::vm {

inline constexpr int64_t kMaxSplitRows = 640;

inline int64_t EffectiveSplits(int64_t rows, int64_t splits) {
  return rows <= kMaxSplitRows ? splits : 1;
}

}  // namespace nimble::vm
