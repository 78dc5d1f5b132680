// What a run measured, and its three renderings: the terminal table, perf_analyzer's CSV
// columns, and a JSON document with everything (windows included).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "loadtest/latency_stats.h"
#include "loadtest/prometheus.h"

namespace nimble::load {

struct ErrorCount {
  std::string code;  // gRPC status code name, e.g. "INVALID_ARGUMENT"
  int64_t count = 0;
  std::string first_message;
};

// ModelStatistics deltas over the measurement, per successful request.
struct ServerBreakdown {
  bool available = false;
  int64_t requests = 0;   // success count delta
  double request_us = 0;  // server-side end to end (arrival to response ready)
  double queue_us = 0;
  double compute_input_us = 0;
  double compute_infer_us = 0;
  double compute_output_us = 0;
  int64_t inference_count = 0;
  int64_t execution_count = 0;
  double avg_batch = 0;  // inference_count / execution_count
};

struct WindowReport {
  double seconds = 0;
  int64_t completed = 0;  // successful requests
  int64_t failed = 0;
  double throughput = 0;  // inferences per second
  LatencySummary latency;
};

struct LevelReport {
  double level = 0;  // concurrency or requests per second
  bool stable = false;
  std::string stop_reason;  // "stable", "unstable" (max windows), "requests", "duration"
  double seconds = 0;       // measured time of the reported windows
  int64_t completed = 0;
  int64_t failed = 0;
  double throughput = 0;    // inferences per second (requests x batch)
  double request_rate = 0;  // successful requests per second
  LatencySummary latency;   // successful requests only
  std::vector<ErrorCount> errors;
  int64_t sent = 0;             // open loop: measured requests sent
  int64_t late_sends = 0;       // open loop: sent more than 1 ms after the scheduled time
  double max_send_lag_us = 0;   // open loop: the worst of those delays
  double mean_send_lag_us = 0;  // open loop: actual minus scheduled send time, mean
  ServerBreakdown server;
  bool has_metrics = false;
  MetricsDelta metrics;
  std::vector<WindowReport> windows;  // every measurement window, reported or not
  int reported_windows = 0;           // the last this-many windows make up the numbers above
};

struct RunReport {
  std::string url;
  std::string model;
  std::string model_version;
  bool open_loop = false;
  std::string arrivals;  // open loop: "constant" or "poisson"
  std::string seq_len;
  int64_t batch = 1;
  std::map<std::string, std::string> input_shapes;  // name -> "INT64[1,seq]" etc.
  std::vector<LevelReport> levels;
};

// perf_analyzer's CSV (its --verbose-csv column set); latencies in microseconds.
std::string CsvReport(const RunReport& report);
extern const char kCsvHeaderTail[];

std::string JsonReport(const RunReport& report);

// Human-readable table plus per-level error and server lines.
std::string TableReport(const RunReport& report);

// JSON string literal with escapes.
std::string JsonQuote(absl::string_view text);

}  // namespace nimble::load
