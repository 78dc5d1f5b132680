// Exact latency percentiles over recorded samples. Every sample is kept (8 bytes each: a
// 5-second window at 100k infer/s is 4 MB), so the reported percentiles are not bucketed.
#pragma once

#include <cstdint>
#include <vector>

namespace nimble::load {

struct LatencySummary {
  int64_t count = 0;
  double mean_us = 0;
  double min_us = 0;
  double max_us = 0;
  double p50_us = 0;
  double p90_us = 0;
  double p95_us = 0;
  double p99_us = 0;
  double p999_us = 0;
};

// The nearest-rank percentile (`p` in [0, 100]) of ascending `sorted`: the smallest sample with
// at least p% of the samples at or below it. 0 for no samples.
int64_t Percentile(const std::vector<int64_t>& sorted, double p);

// Sorts `samples_ns` in place and summarises them in microseconds.
LatencySummary Summarize(std::vector<int64_t>& samples_ns);

}  // namespace nimble::load
