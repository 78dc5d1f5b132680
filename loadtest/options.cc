#include "loadtest/options.h"

#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/status_macros.h"

namespace nimble::load {
namespace {

absl::Status Bad(absl::string_view flag, absl::string_view value, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, " '", value, "': ", why));
}

absl::StatusOr<absl::Duration> ParseDurationFlag(absl::string_view flag, absl::string_view v) {
  absl::Duration d;
  if (!absl::ParseDuration(v, &d) || d < absl::ZeroDuration() || d == absl::InfiniteDuration()) {
    return Bad(flag, v, "not a duration (e.g. 500ms, 2s, 1m)");
  }
  return d;
}

absl::StatusOr<int64_t> ParseInt(absl::string_view flag, absl::string_view v, int64_t min) {
  int64_t n = 0;
  if (!absl::SimpleAtoi(v, &n) || n < min) {
    return Bad(flag, v, absl::StrCat("not an integer >= ", min));
  }
  return n;
}

}  // namespace

absl::StatusOr<std::vector<double>> ParseSweep(absl::string_view flag, absl::string_view spec) {
  std::vector<absl::string_view> parts = absl::StrSplit(spec, ':');
  if (parts.size() > 3) return Bad(flag, spec, "not N, A:B, A:B:xF or A:B:S");
  double a = 0, b = 0;
  if (!absl::SimpleAtod(parts[0], &a) || !(a > 0) || !std::isfinite(a)) {
    return Bad(flag, spec, "the start must be a positive number");
  }
  if (parts.size() == 1) return std::vector<double>{a};
  if (!absl::SimpleAtod(parts[1], &b) || b < a || !std::isfinite(b)) {
    return Bad(flag, spec, "the end must be a number >= the start");
  }
  bool multiply = true;
  double step = 2;
  if (parts.size() == 3) {
    absl::string_view s = parts[2];
    multiply = absl::ConsumePrefix(&s, "x");
    if (!absl::SimpleAtod(s, &step) || !std::isfinite(step) || (multiply && step <= 1) ||
        (!multiply && step <= 0)) {
      return Bad(flag, spec, "the step must be xF with F > 1 or a positive increment");
    }
  }
  std::vector<double> levels;
  for (double v = a; v <= b * (1 + 1e-9); v = multiply ? v * step : v + step) {
    levels.push_back(v);
    if (levels.size() > 1000) return Bad(flag, spec, "more than 1000 levels");
  }
  return levels;
}

absl::StatusOr<LoadOptions> ParseCommandLine(const std::vector<std::string>& args) {
  LoadOptions o;
  std::string concurrency, rate;
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (!absl::ConsumePrefix(&arg, "--")) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    std::string flag, value;
    bool has_value = false;
    if (const size_t eq = arg.find('='); eq != absl::string_view::npos) {
      flag = std::string(arg.substr(0, eq));
      value = std::string(arg.substr(eq + 1));
      has_value = true;
    } else {
      flag = std::string(arg);
    }
    absl::StrReplaceAll({{"_", "-"}}, &flag);
    if (flag == "quiet") {
      o.quiet = true;
      continue;
    }
    if (!has_value) {
      if (i + 1 >= args.size()) return absl::InvalidArgumentError("--" + flag + " needs a value");
      value = args[++i];
    }
    const absl::string_view v = value;
    if (flag == "url") {
      o.url = value;
    } else if (flag == "model") {
      o.model = value;
    } else if (flag == "model-version") {
      o.model_version = value;
    } else if (flag == "concurrency") {
      concurrency = value;
    } else if (flag == "rate") {
      rate = value;
    } else if (flag == "arrivals") {
      NIMBLE_ASSIGN_OR_RETURN(o.arrivals, Arrivals::ParseKind(v));
    } else if (flag == "seq-len") {
      NIMBLE_RETURN_IF_ERROR(SeqLenDistribution::Parse(v).status());
      o.seq_len = value;
    } else if (flag == "seq-axis") {
      int axis = 0;
      if (!absl::SimpleAtoi(v, &axis) || axis < 0) {
        return Bad(flag, v,
                   "must be an axis index >= 0 (KServe ModelMetadata does not name dynamic "
                   "dims, so a symbol cannot be resolved over the protocol)");
      }
      o.seq_axis = axis;
    } else if (flag == "batch") {
      NIMBLE_ASSIGN_OR_RETURN(o.batch, ParseInt(flag, v, 1));
    } else if (flag == "shapes-file") {
      o.shapes_file = value;
    } else if (flag == "int-max") {
      std::pair<std::string, std::string> kv = absl::StrSplit(value, absl::MaxSplits('=', 1));
      if (absl::StrContains(value, '=')) {
        NIMBLE_ASSIGN_OR_RETURN(o.int_max_per_input[kv.first], ParseInt(flag, kv.second, 1));
      } else {
        NIMBLE_ASSIGN_OR_RETURN(o.int_max, ParseInt(flag, v, 1));
      }
    } else if (flag == "warmup") {
      NIMBLE_ASSIGN_OR_RETURN(o.warmup, ParseDurationFlag(flag, v));
    } else if (flag == "window") {
      NIMBLE_ASSIGN_OR_RETURN(o.window, ParseDurationFlag(flag, v));
      if (o.window <= absl::ZeroDuration()) return Bad(flag, v, "must be positive");
    } else if (flag == "max-windows") {
      NIMBLE_ASSIGN_OR_RETURN(int64_t n, ParseInt(flag, v, 1));
      o.max_windows = static_cast<int>(std::min<int64_t>(n, 1000000));
    } else if (flag == "duration") {
      NIMBLE_ASSIGN_OR_RETURN(o.duration, ParseDurationFlag(flag, v));
    } else if (flag == "requests") {
      NIMBLE_ASSIGN_OR_RETURN(o.requests, ParseInt(flag, v, 1));
    } else if (flag == "connect-timeout") {
      NIMBLE_ASSIGN_OR_RETURN(o.connect_timeout, ParseDurationFlag(flag, v));
    } else if (flag == "timeout") {
      NIMBLE_ASSIGN_OR_RETURN(o.request_timeout, ParseDurationFlag(flag, v));
    } else if (flag == "max-outstanding") {
      NIMBLE_ASSIGN_OR_RETURN(int64_t n, ParseInt(flag, v, 1));
      o.max_outstanding = static_cast<int>(std::min<int64_t>(n, 1 << 20));
    } else if (flag == "csv") {
      o.csv_file = value;
    } else if (flag == "json") {
      o.json_file = value;
    } else if (flag == "metrics-url") {
      if (!absl::StartsWith(v, "http://")) return Bad(flag, v, "must start with http://");
      o.metrics_url = value;
    } else if (flag == "seed") {
      NIMBLE_ASSIGN_OR_RETURN(int64_t s, ParseInt(flag, v, 0));
      o.seed = static_cast<uint64_t>(s);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", flag, " (see --help)"));
    }
  }
  if (o.url.empty()) return absl::InvalidArgumentError("--url HOST:PORT is required");
  if (o.model.empty()) return absl::InvalidArgumentError("--model NAME is required");
  if (!concurrency.empty() && !rate.empty()) {
    return absl::InvalidArgumentError(
        "--concurrency (closed loop) and --rate (open loop) exclude each other");
  }
  if (!rate.empty()) {
    NIMBLE_ASSIGN_OR_RETURN(o.rates, ParseSweep("rate", rate));
  } else {
    NIMBLE_ASSIGN_OR_RETURN(std::vector<double> levels,
                            ParseSweep("concurrency", concurrency.empty() ? "1" : concurrency));
    for (double level : levels) {
      if (level != std::floor(level) || level > 100000) {
        return Bad("concurrency", concurrency, "levels must be integers <= 100000");
      }
      o.concurrency.push_back(static_cast<int>(level));
    }
  }
  return o;
}

std::string UsageText() {
  return R"(nimble-load: load generator for any KServe v2 gRPC inference server

  nimble-load --url HOST:PORT --model NAME [flags]

  --model-version V        version to call (default: the server's choice)
  --concurrency N|A:B[:xF|:S]  closed loop: N requests in flight; a sweep gives one row per level
  --rate R|A:B[:xF|:S]     open loop: R requests/s, latency from the scheduled send time
  --arrivals constant|poisson   open-loop inter-arrival times (default constant)
  --seq-len SPEC           fixed:N | uniform:A,B | lognormal:mean=M,max=X[,sigma=S] | zipf:s=S,max=X
  --seq-axis INDEX         the dynamic axis that takes the sequence length (default: every
                           dynamic non-batch axis; others get 1)
  --batch N                dim 0 is the batch dim with this value (default: 1 when the model's
                           ModelConfig says max_batch_size > 0)
  --shapes-file FILE.json  {"data": [{"INPUT": {"shape": [..], "content": [..]}}, ...]}
  --int-max N | NAME=N     INT inputs drawn in [0, N) (default 100); repeatable per input
  --warmup 2s  --window 5s  --max-windows 10  --duration 0s  --requests 0
  --connect-timeout 5s  --timeout 30s  --max-outstanding 4096  --seed 1  --quiet
  --csv FILE               perf_analyzer's CSV columns, latencies in microseconds
  --json FILE              everything, windows included
  --metrics-url http://HOST:PORT/metrics   deltas of the server's nimble_* series
)";
}

}  // namespace nimble::load
