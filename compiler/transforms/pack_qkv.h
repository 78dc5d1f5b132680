// QKV packing: the three projections of a self-attention block, GEMMs of one input by constant
// weights, become one GEMM by the concatenated weights, and the Attention node reads Q, K and
// V as column ranges of its [batch, seq, (Hq + 2 Hkv) * D] output (attribute qkv_packed = 1;
// the CPU and CUDA kernels take the strided views, nothing is copied). One wide GEMM instead of
// three narrow ones: two kernel launches fewer per layer and better tensor-core occupancy at
// batch 1 (a 128 x 768 x 768 GEMM fills a sixth of an H100). The pipeline runs it for GPU
// targets only (compiler.cc); the CPU Attention kernel reads the packed form too.
//
//   before:  %q = FusedMatMul(%x, %wq, %bq)  %k = FusedMatMul(%x, %wk, %bk)
//            %v = FusedMatMul(%x, %wv, %bv)  %y = Attention(%q, %k, %v, %mask) {Hq, Hkv}
//   after:   %qkv = FusedMatMul(%x, concat(%wq, %wk, %wv), concat(%bq, %bk, %bv))
//            %y = Attention(%qkv, %qkv, %qkv, %mask) {Hq, Hkv, qkv_packed = 1}
//
// Applies to 3-D Attention without past key/values whose Q, K, V come from MatMul or
// FusedMatMul nodes with the same input, f32 constant [K, N] weights (no transposes, alpha 1,
// no activation or residual), biases on all three or none, widths Hq * D, Hkv * D, Hkv * D,
// and no other users.
#pragma once

#include "absl/status/statusor.h"
#include "compiler/ir/graph.h"

namespace nimble::compiler {

// Returns how many attention blocks had their projections packed.
absl::StatusOr<int> PackQkv(Module& module);

}  // namespace nimble::compiler
