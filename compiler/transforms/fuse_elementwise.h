// Elementwise fusion: a tree of float32 elementwise ops whose intermediate results have one
// use each becomes one FusedElementwise kernel (vm/kernels/fused_elementwise_program.h) that
// reads each input once and writes the result once, block by block in cache.
//
//   before:  %1 = Sub(%x, %m)  %2 = Mul(%1, 0.125)  %3 = Add(%2, %mask)
//   after:   %3 = FusedElementwise(%x, %m, %mask) {program=[load 0, load 1, sub, const 0.125,
//                                                  mul, load 2, add, store], constants=[0.125]}
#pragma once

#include "absl/status/statusor.h"
#include "compiler/ir/graph.h"

namespace nimble::compiler {

// Returns how many fused kernels were formed.
absl::StatusOr<int> FuseElementwise(Module& module);

}  // namespace nimble::compiler
