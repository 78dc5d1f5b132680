// Common subexpression elimination: two nodes with the same op, attributes and inputs compute
// the same values, so the later one is replaced by the earlier. PyTorch exports repeat the
// same Shape -> Gather -> Unsqueeze chain in every layer; after CSE each is computed once.
//
//   before:  %5 = Shape(%0)   %6 = Shape(%0)   %7 = Add(%5, %6)
//   after:   %5 = Shape(%0)                    %7 = Add(%5, %5)
#pragma once

#include "absl/status/statusor.h"
#include "compiler/ir/graph.h"

namespace nimble::compiler {

// Returns how many nodes were removed. Nodes with subgraphs and random ops are never merged.
absl::StatusOr<int> EliminateCommonSubexpressions(Module& module);

}  // namespace nimble::compiler
