// nimble-load's command line: parsed into LoadOptions with one clear error per bad flag.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loadtest/distributions.h"

namespace nimble::load {

struct LoadOptions {
  std::string url;  // HOST:PORT of the gRPC endpoint
  std::string model;
  std::string model_version;  // "" = the server's choice

  // Exactly one of the two sweeps is non-empty: closed-loop concurrency levels or open-loop
  // request rates (per second).
  std::vector<int> concurrency;
  std::vector<double> rates;
  Arrivals::Kind arrivals = Arrivals::Kind::kConstant;

  std::string seq_len = "fixed:16";
  std::optional<int> seq_axis;   // axis index; none = every dynamic non-batch dim
  std::optional<int64_t> batch;  // --batch: dim 0 is the batch dim, this value
  std::string shapes_file;
  int64_t int_max = 100;                             // INT inputs drawn in [0, int_max)
  std::map<std::string, int64_t> int_max_per_input;  // --int-max NAME=N

  absl::Duration warmup = absl::Seconds(2);
  absl::Duration window = absl::Seconds(5);
  int max_windows = 10;
  absl::Duration duration = absl::ZeroDuration();  // per level; 0 = unbounded
  int64_t requests = 0;                            // per level; 0 = unbounded
  absl::Duration connect_timeout = absl::Seconds(5);
  absl::Duration request_timeout = absl::Seconds(30);
  int max_outstanding = 4096;  // open loop: sends wait beyond this many in flight

  std::string csv_file;
  std::string json_file;
  std::string metrics_url;
  uint64_t seed = 1;
  bool quiet = false;  // no live progress on stderr
};

// `args` without the program name. Errors are kInvalidArgument naming the flag.
absl::StatusOr<LoadOptions> ParseCommandLine(const std::vector<std::string>& args);

// "N", "A:B" (doubling), "A:B:xF" (times F) or "A:B:S" (plus S); A..B inclusive.
absl::StatusOr<std::vector<double>> ParseSweep(absl::string_view flag, absl::string_view spec);

std::string UsageText();

}  // namespace nimble::load
