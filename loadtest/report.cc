#include "loadtest/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace nimble::load {
namespace {

// Numbers as JSON allows them: non-finite values become null.
std::string Num(double v) {
  if (!std::isfinite(v)) return "null";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return absl::StrCat(static_cast<int64_t>(v));
  return absl::StrFormat("%.3f", v);
}

// A small streaming writer: the caller opens and closes objects/arrays in order; commas are
// inserted here.
class JsonWriter {
 public:
  void BeginObject(absl::string_view key = "") { Open(key, '{'); }
  void BeginArray(absl::string_view key = "") { Open(key, '['); }
  void End() {
    out_ += stack_.back() == '{' ? '}' : ']';
    stack_.pop_back();
    first_ = false;
  }
  void Field(absl::string_view key, double v) { Raw(key, Num(v)); }
  void Field(absl::string_view key, int64_t v) { Raw(key, absl::StrCat(v)); }
  void Field(absl::string_view key, int v) { Raw(key, absl::StrCat(v)); }
  void Field(absl::string_view key, bool v) { Raw(key, v ? "true" : "false"); }
  void Field(absl::string_view key, absl::string_view v) { Raw(key, JsonQuote(v)); }
  void Field(absl::string_view key, const char* v) { Raw(key, JsonQuote(v)); }
  void Field(absl::string_view key, const std::string& v) { Raw(key, JsonQuote(v)); }
  std::string Take() { return std::move(out_) + "\n"; }

 private:
  void Prefix(absl::string_view key) {
    if (!first_) out_ += ',';
    first_ = false;
    if (!stack_.empty() && stack_.back() == '{') absl::StrAppend(&out_, JsonQuote(key), ":");
  }
  void Open(absl::string_view key, char c) {
    Prefix(key);
    out_ += c;
    stack_.push_back(c);
    first_ = true;
  }
  void Raw(absl::string_view key, absl::string_view value) {
    Prefix(key);
    absl::StrAppend(&out_, value);
  }
  std::string out_;
  std::string stack_;
  bool first_ = true;
};

void WriteLatency(JsonWriter& w, absl::string_view key, const LatencySummary& s) {
  w.BeginObject(key);
  w.Field("count", s.count);
  w.Field("mean_us", s.mean_us);
  w.Field("min_us", s.min_us);
  w.Field("p50_us", s.p50_us);
  w.Field("p90_us", s.p90_us);
  w.Field("p95_us", s.p95_us);
  w.Field("p99_us", s.p99_us);
  w.Field("p99.9_us", s.p999_us);
  w.Field("max_us", s.max_us);
  w.End();
}

int64_t Us(double v) { return std::llround(std::max(0.0, v)); }

std::string LevelLabel(const RunReport& r, double level) {
  return r.open_loop ? Num(level) : absl::StrCat(static_cast<int64_t>(level));
}

}  // namespace

const char kCsvHeaderTail[] =
    "Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute "
    "Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 "
    "latency,p99 latency,Avg latency,request/response,response wait";

std::string JsonQuote(absl::string_view text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string CsvReport(const RunReport& report) {
  std::string out =
      absl::StrCat(report.open_loop ? "Request Rate," : "Concurrency,", kCsvHeaderTail, "\n");
  for (const LevelReport& l : report.levels) {
    const ServerBreakdown& s = l.server;
    const double server_us =
        s.queue_us + s.compute_input_us + s.compute_infer_us + s.compute_output_us;
    // The client's send and receive are inside the gRPC library and not separated out: 0, so
    // everything outside the server's stages is "Network+Server Send/Recv".
    const double network_us = s.available ? l.latency.mean_us - server_us : 0;
    absl::StrAppend(&out, LevelLabel(report, l.level), ",", absl::StrFormat("%.1f", l.throughput),
                    ",0,", Us(network_us), ",", Us(s.queue_us), ",", Us(s.compute_input_us), ",",
                    Us(s.compute_infer_us), ",", Us(s.compute_output_us), ",0,",
                    Us(l.latency.p50_us), ",", Us(l.latency.p90_us), ",", Us(l.latency.p95_us), ",",
                    Us(l.latency.p99_us), ",", Us(l.latency.mean_us), ",", Us(l.latency.mean_us),
                    ",", Us(l.latency.mean_us), "\n");
  }
  return out;
}

std::string JsonReport(const RunReport& report) {
  JsonWriter w;
  w.BeginObject();
  w.Field("url", report.url);
  w.Field("model", report.model);
  w.Field("model_version", report.model_version);
  w.Field("mode", report.open_loop ? "open" : "closed");
  if (report.open_loop) w.Field("arrivals", report.arrivals);
  w.Field("seq_len", report.seq_len);
  w.Field("batch", report.batch);
  w.BeginObject("inputs");
  for (const auto& [name, shape] : report.input_shapes) w.Field(name, shape);
  w.End();
  w.BeginArray("levels");
  for (const LevelReport& l : report.levels) {
    w.BeginObject();
    w.Field(report.open_loop ? "rate" : "concurrency", l.level);
    w.Field("stable", l.stable);
    w.Field("stop_reason", l.stop_reason);
    w.Field("seconds", l.seconds);
    w.Field("completed", l.completed);
    w.Field("failed", l.failed);
    w.Field("throughput_infer_per_s", l.throughput);
    w.Field("request_rate_per_s", l.request_rate);
    WriteLatency(w, "latency", l.latency);
    if (report.open_loop) {
      w.Field("sent", l.sent);
      w.Field("late_sends", l.late_sends);
      w.Field("max_send_lag_us", l.max_send_lag_us);
      w.Field("mean_send_lag_us", l.mean_send_lag_us);
    }
    w.BeginArray("errors");
    for (const ErrorCount& e : l.errors) {
      w.BeginObject();
      w.Field("code", e.code);
      w.Field("count", e.count);
      w.Field("first_message", e.first_message);
      w.End();
    }
    w.End();
    w.BeginObject("server");
    w.Field("available", l.server.available);
    w.Field("requests", l.server.requests);
    w.Field("request_us", l.server.request_us);
    w.Field("queue_us", l.server.queue_us);
    w.Field("compute_input_us", l.server.compute_input_us);
    w.Field("compute_infer_us", l.server.compute_infer_us);
    w.Field("compute_output_us", l.server.compute_output_us);
    w.Field("inference_count", l.server.inference_count);
    w.Field("execution_count", l.server.execution_count);
    w.Field("avg_batch", l.server.avg_batch);
    w.End();
    if (l.has_metrics) {
      w.BeginObject("metrics");
      w.BeginArray("stages");
      for (const StageDelta& d : l.metrics.stages) {
        w.BeginObject();
        w.Field("stage", d.stage);
        w.Field("count", d.count);
        w.Field("mean_us", d.mean_us);
        w.Field("p50_us", d.p50_us);
        w.Field("p99_us", d.p99_us);
        w.End();
      }
      w.End();
      w.BeginObject("deltas");
      for (const auto& [key, delta] : l.metrics.series) w.Field(key, delta);
      w.End();
      w.End();
    }
    w.Field("reported_windows", l.reported_windows);
    w.BeginArray("windows");
    for (const WindowReport& win : l.windows) {
      w.BeginObject();
      w.Field("seconds", win.seconds);
      w.Field("completed", win.completed);
      w.Field("failed", win.failed);
      w.Field("throughput_infer_per_s", win.throughput);
      WriteLatency(w, "latency", win.latency);
      w.End();
    }
    w.End();
    w.End();
  }
  w.End();
  w.End();
  return w.Take();
}

std::string TableReport(const RunReport& report) {
  std::string out =
      absl::StrFormat("%12s %10s %9s %9s %9s %9s %9s %9s %9s %7s %s\n",
                      report.open_loop ? "rate/s" : "concurrency", "infer/s", "p50 us", "p90 us",
                      "p95 us", "p99 us", "p99.9 us", "mean us", "ok", "errors", "stability");
  for (const LevelReport& l : report.levels) {
    absl::StrAppend(&out, absl::StrFormat("%12s %10.1f %9.0f %9.0f %9.0f %9.0f %9.0f %9.0f %9d "
                                          "%7d %s\n",
                                          LevelLabel(report, l.level), l.throughput,
                                          l.latency.p50_us, l.latency.p90_us, l.latency.p95_us,
                                          l.latency.p99_us, l.latency.p999_us, l.latency.mean_us,
                                          l.completed, l.failed, l.stop_reason));
  }
  for (const LevelReport& l : report.levels) {
    const std::string label =
        absl::StrCat(report.open_loop ? "rate " : "concurrency ", LevelLabel(report, l.level));
    for (const ErrorCount& e : l.errors) {
      absl::StrAppend(&out, "  ", label, ": ", e.count, " x ", e.code, ": ", e.first_message, "\n");
    }
    if (report.open_loop) {
      absl::StrAppend(&out, "  ", label, ": ", l.late_sends, " of ", l.sent,
                      " sends more than 1 ms behind schedule (mean lag ",
                      absl::StrFormat("%.0f us, worst %.0f", l.mean_send_lag_us, l.max_send_lag_us),
                      " us)\n");
    }
    if (l.server.available) {
      absl::StrAppend(
          &out, "  ", label,
          absl::StrFormat(": server per request: %.0f us in the server (queue %.0f us, "
                          "compute input %.0f us, infer %.0f us, output %.0f us); avg batch "
                          "%.2f (%d inferences / %d executions)\n",
                          l.server.request_us, l.server.queue_us, l.server.compute_input_us,
                          l.server.compute_infer_us, l.server.compute_output_us, l.server.avg_batch,
                          l.server.inference_count, l.server.execution_count));
    }
    if (l.has_metrics) {
      for (const StageDelta& d : l.metrics.stages) {
        absl::StrAppend(&out, "  ", label,
                        absl::StrFormat(": nimble_request_duration_seconds{stage=\"%s\"}: %.0f "
                                        "observations, mean %.0f us, ~p50 %.0f us, ~p99 %.0f us\n",
                                        d.stage, d.count, d.mean_us, d.p50_us, d.p99_us));
      }
    }
  }
  return out;
}

}  // namespace nimble::load
