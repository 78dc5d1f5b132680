// Constant folding: nodes whose inputs are all constants run at compile time on the CPU
// kernels (the same kernels the VM calls, so folding can never disagree with execution), and
// ONNX Constant nodes become constants.
//
//   before:  %2 = Constant() {value=tensor<i64[2]>}
//            %3 = Cast(%2) {to=1}
//            %4 = Add(%x, %3)
//   after:   %5: f32[2] = constant
//            %4 = Add(%x, %5)
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "compiler/ir/graph.h"

namespace nimble::compiler {

struct ConstantFoldingOptions {
  // Results larger than this stay computed at run time (a ConstantOfShape of 1 GiB must not
  // end up in the executable file).
  int64_t max_folded_bytes = int64_t{16} << 20;
};

// Folds the main graph and every subgraph. Returns how many nodes were folded.
absl::StatusOr<int> FoldConstants(Module& module, const ConstantFoldingOptions& options = {});

}  // namespace nimble::compiler
