// GEMM epilogue fusion: a MatMul by a constant weight, followed by a bias add, an activation
// and a residual add, becomes one FusedMatMul (oneDNN matmul with bias and post-ops on CPU,
// cuBLASLt epilogues on GPU), so the output is written once instead of four times.
//
//   before:  %1 = MatMul(%x, W)  %2 = Add(%1, b)  %3 = Gelu(%2)  %4 = Add(%3, %r)
//   after:   %4 = FusedMatMul(%x, W, b, %r) {activation="gelu"}
#pragma once

#include "absl/status/statusor.h"
#include "compiler/ir/graph.h"

namespace nimble::compiler {

// Returns how many MatMuls were fused.
absl::StatusOr<int> FuseMatMulEpilogues(Module& module);

}  // namespace nimble::compiler
