// Memory planning for symbolic sizes.
//
// Every planned buffer has a byte size that is a DimExpr over symbols bound when the function
// starts (the input dims) and a live range [def, last_use] in node order. Buffers whose live
// ranges do not overlap share a slot; a slot's size is the symbolic max of its buffers' sizes
// (folded to one expression when the bounds prove which is larger, otherwise evaluated at run
// time by VM scalar instructions), and slot offsets are prefix sums, so the whole plan is one
// arena of `total_bytes` allocated per call. Which slot a buffer takes is decided by best fit
// at representative symbol values (the symbols' upper bounds, or 128 where unbounded);
// correctness never depends on that guess because slot sizes are maxima.
//
// TVM's planner gave up on symbolic sizes; this one needs no comparison that cannot be made.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "compiler/ir/dim_expr.h"

namespace nimble::compiler {

struct BufferRequest {
  DimExpr bytes;
  int def = 0;       // index of the defining node
  int last_use = 0;  // index of the last reading node (>= def)
};

struct MemoryPlan {
  static constexpr int64_t kAlignment = 64;
  std::vector<int> slot_of;          // per request
  std::vector<DimExpr> slot_bytes;   // aligned size per slot
  std::vector<DimExpr> slot_offset;  // byte offset per slot within the arena
  DimExpr total_bytes;               // arena size
};

// Representative symbol values used for best-fit decisions: the symbol's finite upper bound,
// else 128.
absl::flat_hash_map<int32_t, int64_t> RepresentativeBindings(const DimContext& dims);

MemoryPlan PlanMemory(const std::vector<BufferRequest>& requests, DimContext& dims);

}  // namespace nimble::compiler
