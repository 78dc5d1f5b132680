// When a load level has been measured long enough: the last `count` windows agree within
// `tolerance` on throughput and on p99 latency (perf_analyzer's rule, with p99 as the latency).
#pragma once

#include <vector>

namespace nimble::load {

struct WindowPoint {
  double throughput = 0;  // inferences per second in the window
  double p99_us = 0;
};

struct StabilityRule {
  int count = 3;
  double tolerance = 0.10;
};

// True when there are at least rule.count windows and, over the last rule.count of them, each
// throughput and each p99 lies within tolerance of that quantity's mean (|x - mean| <= tol *
// mean). A window with no completed request is never stable.
bool IsStable(const std::vector<WindowPoint>& windows, const StabilityRule& rule = {});

}  // namespace nimble::load
