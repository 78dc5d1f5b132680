// Prometheus' standard process_* metrics (CPU time, memory, threads, fds, start time), read
// from /proc at scrape time. prometheus-cpp has no process collector of its own.
#pragma once

#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace nimble::server {

// Thread-safe: Collect() reads /proc and keeps no state.
class ProcessCollector final : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

}  // namespace nimble::server
