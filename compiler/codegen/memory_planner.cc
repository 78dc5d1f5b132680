#include "compiler/codegen/memory_planner.h"

#include <algorithm>
#include <limits>

namespace nimble::compiler {
namespace {

DimExpr AlignUp(const DimExpr& bytes, DimContext& dims) {
  const DimExpr a = DimExpr::Const(MemoryPlan::kAlignment);
  return dims.CeilDiv(bytes, a) * a;
}

}  // namespace

absl::flat_hash_map<int32_t, int64_t> RepresentativeBindings(const DimContext& dims) {
  absl::flat_hash_map<int32_t, int64_t> env;
  for (int32_t id = 0; id < dims.num_atoms(); ++id) {
    const auto& info = dims.atom(id);
    if (info.kind != DimContext::AtomKind::kSymbol) continue;
    const int64_t hi = info.bounds.hi;
    env[id] = (hi > 0 && hi <= (int64_t{1} << 20)) ? hi : std::max<int64_t>(info.bounds.lo, 128);
  }
  return env;
}

MemoryPlan PlanMemory(const std::vector<BufferRequest>& requests, DimContext& dims) {
  MemoryPlan plan;
  plan.slot_of.assign(requests.size(), -1);
  const auto env = RepresentativeBindings(dims);
  auto estimate = [&](const DimExpr& e) -> int64_t {
    auto v = dims.Evaluate(e, env);
    return v.ok() ? *v : std::numeric_limits<int32_t>::max();
  };

  // Requests in definition order; a slot is free once its current buffer's last use is
  // strictly before the new buffer's definition (a node never reads and writes one slot).
  std::vector<size_t> order(requests.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return requests[a].def < requests[b].def; });
  std::vector<int> slot_busy_until;  // last_use of the buffer occupying each slot
  std::vector<int64_t> slot_estimate;
  for (size_t i : order) {
    const BufferRequest& r = requests[i];
    const DimExpr aligned = AlignUp(r.bytes, dims);
    const int64_t want = estimate(aligned);
    int best = -1;
    int64_t best_waste = std::numeric_limits<int64_t>::max();
    for (size_t s = 0; s < slot_busy_until.size(); ++s) {
      if (slot_busy_until[s] >= r.def) continue;
      // Prefer a slot already big enough with the least slack; else the one needing the
      // least growth.
      const int64_t have = slot_estimate[s];
      const int64_t waste = have >= want ? have - want : (want - have) * 4;
      if (waste < best_waste) {
        best_waste = waste;
        best = static_cast<int>(s);
      }
    }
    if (best < 0) {
      best = static_cast<int>(plan.slot_bytes.size());
      plan.slot_bytes.push_back(aligned);
      slot_busy_until.push_back(r.last_use);
      slot_estimate.push_back(want);
    } else {
      plan.slot_bytes[best] = dims.Max(plan.slot_bytes[best], aligned);
      slot_busy_until[best] = r.last_use;
      slot_estimate[best] = std::max(slot_estimate[best], want);
    }
    plan.slot_of[i] = best;
  }
  DimExpr offset = DimExpr::Const(0);
  for (const DimExpr& bytes : plan.slot_bytes) {
    plan.slot_offset.push_back(offset);
    offset = offset + bytes;
  }
  plan.total_bytes = offset;
  return plan;
}

}  // namespace nimble::compiler
