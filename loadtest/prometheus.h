// The server's Prometheus text page: fetched with a plain HTTP/1.0 GET over a socket, parsed
// into samples, and reduced to the deltas of a model's nimble_* series over a measurement.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace nimble::load {

struct PromSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Text exposition format 0.0.4: comments and blank lines skipped; a malformed line is an error.
absl::StatusOr<std::vector<PromSample>> ParsePrometheusText(absl::string_view text);

// GET `url` (http://HOST:PORT/PATH) within `timeout`; the body of a 200 response.
absl::StatusOr<std::string> HttpGet(absl::string_view url, absl::Duration timeout);

// histogram_quantile(): `buckets` are (upper bound, cumulative count) ascending, +Inf last;
// linear interpolation inside the bucket holding the q-th observation (the first bucket starts
// at 0). 0 when empty; the last finite bound when q falls in +Inf.
double HistogramQuantile(const std::vector<std::pair<double, double>>& buckets, double q);

// One stage of nimble_request_duration_seconds over a measurement.
struct StageDelta {
  std::string stage;
  double count = 0;
  double mean_us = 0;
  double p50_us = 0;  // bucket-interpolated
  double p99_us = 0;
};

struct MetricsDelta {
  // Every nimble_* sample whose `model` label is the model (or that has none), after minus
  // before, keyed by its full text name{labels}; zero deltas left out.
  std::map<std::string, double> series;
  std::vector<StageDelta> stages;
};

MetricsDelta DiffMetrics(const std::vector<PromSample>& before,
                         const std::vector<PromSample>& after, const std::string& model);

// name{k="v",...} with labels in key order.
std::string SeriesKey(const PromSample& sample);

}  // namespace nimble::load
