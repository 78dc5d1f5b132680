#include "loadtest/latency_stats.h"

#include <algorithm>
#include <cmath>

namespace nimble::load {

int64_t Percentile(const std::vector<int64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  // The epsilon keeps 99.9% of 1000 samples at rank 999 despite 99.9 / 100 * 1000 rounding up.
  const double rank = std::ceil(p / 100.0 * static_cast<double>(sorted.size()) - 1e-9);
  const size_t index = rank <= 1 ? 0 : static_cast<size_t>(rank) - 1;
  return sorted[std::min(index, sorted.size() - 1)];
}

LatencySummary Summarize(std::vector<int64_t>& samples_ns) {
  LatencySummary s;
  if (samples_ns.empty()) return s;
  std::sort(samples_ns.begin(), samples_ns.end());
  double sum = 0;
  for (int64_t v : samples_ns) sum += static_cast<double>(v);
  auto us = [](int64_t ns) { return static_cast<double>(ns) / 1000.0; };
  s.count = static_cast<int64_t>(samples_ns.size());
  s.mean_us = sum / static_cast<double>(samples_ns.size()) / 1000.0;
  s.min_us = us(samples_ns.front());
  s.max_us = us(samples_ns.back());
  s.p50_us = us(Percentile(samples_ns, 50));
  s.p90_us = us(Percentile(samples_ns, 90));
  s.p95_us = us(Percentile(samples_ns, 95));
  s.p99_us = us(Percentile(samples_ns, 99));
  s.p999_us = us(Percentile(samples_ns, 99.9));
  return s;
}

}  // namespace nimble::load
