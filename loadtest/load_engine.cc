#include "loadtest/load_engine.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "loadtest/latency_stats.h"
#include "loadtest/prometheus.h"
#include "loadtest/stability.h"

namespace nimble::load {
namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kLateSend = std::chrono::milliseconds(1);

std::string CodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

absl::Status FromGrpc(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

std::chrono::system_clock::time_point Deadline(absl::Duration d) {
  return std::chrono::system_clock::now() + absl::ToChronoNanoseconds(d);
}

// ModelStatistics of the model, summed over the versions the server returns.
struct StatsSnapshot {
  int64_t success = 0;
  uint64_t success_ns = 0, queue_ns = 0, input_ns = 0, infer_ns = 0, output_ns = 0;
  int64_t inference_count = 0, execution_count = 0;
};

std::optional<StatsSnapshot> ReadStats(inference::GRPCInferenceService::Stub& stub,
                                       const std::string& model, const std::string& version) {
  grpc::ClientContext context;
  context.set_deadline(Deadline(absl::Seconds(5)));
  inference::ModelStatisticsRequest request;
  request.set_name(model);
  request.set_version(version);
  inference::ModelStatisticsResponse response;
  if (!stub.ModelStatistics(&context, request, &response).ok()) return std::nullopt;
  StatsSnapshot s;
  for (const auto& m : response.model_stats()) {
    if (m.name() != model) continue;
    const auto& i = m.inference_stats();
    s.success += static_cast<int64_t>(i.success().count());
    s.success_ns += i.success().ns();
    s.queue_ns += i.queue().ns();
    s.input_ns += i.compute_input().ns();
    s.infer_ns += i.compute_infer().ns();
    s.output_ns += i.compute_output().ns();
    s.inference_count += static_cast<int64_t>(m.inference_count());
    s.execution_count += static_cast<int64_t>(m.execution_count());
  }
  return s;
}

ServerBreakdown Breakdown(const StatsSnapshot& a, const StatsSnapshot& b) {
  ServerBreakdown out;
  out.available = true;
  out.requests = b.success - a.success;
  out.inference_count = b.inference_count - a.inference_count;
  out.execution_count = b.execution_count - a.execution_count;
  if (out.requests > 0) {
    const double n = static_cast<double>(out.requests) * 1000.0;
    out.request_us = static_cast<double>(b.success_ns - a.success_ns) / n;
    out.queue_us = static_cast<double>(b.queue_ns - a.queue_ns) / n;
    out.compute_input_us = static_cast<double>(b.input_ns - a.input_ns) / n;
    out.compute_infer_us = static_cast<double>(b.infer_ns - a.infer_ns) / n;
    out.compute_output_us = static_cast<double>(b.output_ns - a.output_ns) / n;
  }
  if (out.execution_count > 0) {
    out.avg_batch =
        static_cast<double>(out.inference_count) / static_cast<double>(out.execution_count);
  }
  return out;
}

std::optional<std::vector<PromSample>> Scrape(const std::string& url) {
  if (url.empty()) return std::nullopt;
  auto page = HttpGet(url, absl::Seconds(5));
  if (!page.ok()) return std::nullopt;
  auto samples = ParsePrometheusText(*page);
  if (!samples.ok()) return std::nullopt;
  return *std::move(samples);
}

struct WindowData {
  double seconds = 0;
  std::vector<int64_t> latencies_ns;
  int64_t failed = 0;
  std::map<std::string, ErrorCount> errors;
};

}  // namespace

// One level's shared state between the driving thread, the open-loop scheduler and the gRPC
// completion threads. Thread-safe: mu_ guards every member below it.
class LoadEngine::Level {
 public:
  Level(LoadEngine* engine, double level) : engine_(engine), level_(level) {}

  LevelReport Run();

 private:
  struct Call {
    grpc::ClientContext context;
    inference::ModelInferRequest request;
    inference::ModelInferResponse response;
    Clock::time_point start;  // scheduled (open loop) or actual (closed loop) send time
    bool measured = false;
  };

  bool open_loop() const { return !engine_->options_.rates.empty(); }
  bool RequestsDone() const {  // requires mu_
    const int64_t n = engine_->options_.requests;
    return n > 0 && measured_sent_ >= n && measured_done_ >= n;
  }
  // Closed loop: issue the next call of a slot, or retire the slot when stopping.
  void IssueClosed();
  void Send(std::unique_ptr<Call> call, int64_t seq_len, uint64_t index);
  void OnDone(Call* call, const grpc::Status& status);
  void Schedule();  // open-loop scheduler thread
  WindowData CloseWindow(Clock::time_point now);

  LoadEngine* const engine_;
  const double level_;
  std::thread scheduler_;

  std::mutex mu_;
  std::condition_variable cv_;
  Rng rng_{0};
  uint64_t counter_ = 0;
  bool measuring_ = false;   // calls issued now are measured
  bool collecting_ = false;  // completions of measured calls are recorded
  bool stopping_ = false;
  int64_t outstanding_ = 0;
  int64_t measured_sent_ = 0;
  int64_t measured_done_ = 0;
  int64_t late_sends_ = 0;
  double max_lag_us_ = 0;
  double sum_lag_us_ = 0;
  Clock::time_point window_start_;
  WindowData window_;
};

void LoadEngine::Level::Send(std::unique_ptr<Call> call, int64_t seq_len, uint64_t index) {
  engine_->builder_->Build(seq_len, index, &call->request);
  call->context.set_deadline(Deadline(engine_->options_.request_timeout));
  Call* raw = call.release();
  engine_->stub_->async()->ModelInfer(&raw->context, &raw->request, &raw->response,
                                      [this, raw](grpc::Status status) { OnDone(raw, status); });
}

void LoadEngine::Level::IssueClosed() {
  auto call = std::make_unique<Call>();
  int64_t seq_len = 0;
  uint64_t index = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t n = engine_->options_.requests;
    if (stopping_ || (measuring_ && n > 0 && measured_sent_ >= n)) {
      --outstanding_;
      cv_.notify_all();
      return;
    }
    call->measured = measuring_;
    if (measuring_) ++measured_sent_;
    seq_len = engine_->seq_len_->Sample(rng_);
    index = counter_++;
  }
  call->start = Clock::now();
  Send(std::move(call), seq_len, index);
}

void LoadEngine::Level::OnDone(Call* call, const grpc::Status& status) {
  const Clock::time_point now = Clock::now();
  const int64_t ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(now - call->start).count();
  const bool measured = call->measured;
  const bool closed = !open_loop();
  delete call;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (measured) {
      ++measured_done_;
      if (collecting_) {
        if (status.ok()) {
          window_.latencies_ns.push_back(ns);
        } else {
          ++window_.failed;
          ErrorCount& e = window_.errors[CodeName(status.error_code())];
          if (e.count++ == 0) {
            e.code = CodeName(status.error_code());
            e.first_message = status.error_message();
          }
        }
      }
    }
    // Open loop: once this is zero after stopping, Run() may return and destroy *this, so
    // nothing below the lock touches a member.
    if (!closed) --outstanding_;
    cv_.notify_all();
  }
  // Closed loop: this slot still counts in outstanding_ until IssueClosed() retires it.
  if (closed) IssueClosed();
}

void LoadEngine::Level::Schedule() {
  const Arrivals arrivals(engine_->options_.arrivals, level_);
  Rng gaps(engine_->options_.seed + 7919);
  Clock::time_point next = Clock::now();
  for (;;) {
    auto call = std::make_unique<Call>();
    int64_t seq_len = 0;
    uint64_t index = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      const int64_t n = engine_->options_.requests;
      // Waiting on the schedule (or for the in-flight bound) wakes early when the level stops.
      cv_.wait_until(lock, next, [&] { return stopping_; });
      cv_.wait(lock, [&] { return stopping_ || outstanding_ < engine_->options_.max_outstanding; });
      if (stopping_ || (measuring_ && n > 0 && measured_sent_ >= n)) return;
      const Clock::time_point now = Clock::now();
      call->measured = measuring_;
      if (measuring_) {
        ++measured_sent_;
        const double lag_us = std::chrono::duration<double, std::micro>(now - next).count();
        sum_lag_us_ += std::max(0.0, lag_us);
        if (now - next > kLateSend) {
          ++late_sends_;
          max_lag_us_ = std::max(max_lag_us_, lag_us);
        }
      }
      ++outstanding_;
      seq_len = engine_->seq_len_->Sample(rng_);
      index = counter_++;
    }
    call->start = next;
    Send(std::move(call), seq_len, index);
    next += std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(arrivals.NextGap(gaps)));
  }
}

WindowData LoadEngine::Level::CloseWindow(Clock::time_point now) {
  WindowData out = std::move(window_);
  window_ = WindowData();
  out.seconds = std::chrono::duration<double>(now - window_start_).count();
  window_start_ = now;
  return out;
}

LevelReport LoadEngine::Level::Run() {
  const LoadOptions& o = engine_->options_;
  rng_.seed(o.seed + static_cast<uint64_t>(level_ * 1000));
  const std::string label =
      open_loop() ? absl::StrFormat("rate %g/s", level_) : absl::StrCat("concurrency ", level_);
  std::ostream* progress = engine_->progress_;
  if (progress != nullptr) {
    *progress << "nimble-load: " << label << ": warm-up " << absl::FormatDuration(o.warmup)
              << std::endl;
  }

  const bool warm = o.warmup > absl::ZeroDuration();
  Clock::time_point measure_start;
  auto begin_measuring = [&] {
    std::lock_guard<std::mutex> lock(mu_);
    measuring_ = collecting_ = true;
    measure_start = window_start_ = Clock::now();
  };
  std::vector<std::optional<StatsSnapshot>> stats;
  std::vector<std::optional<std::vector<PromSample>>> scrapes;
  auto snapshot = [&] {
    stats.push_back(ReadStats(*engine_->stub_, o.model, o.model_version));
    scrapes.push_back(Scrape(o.metrics_url));
  };
  if (!warm) {
    snapshot();
    begin_measuring();
  }
  if (open_loop()) {
    scheduler_ = std::thread([this] { Schedule(); });
  } else {
    const int n = static_cast<int>(level_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      outstanding_ = n;
    }
    for (int i = 0; i < n; ++i) IssueClosed();
  }
  if (warm) {
    std::this_thread::sleep_for(absl::ToChronoNanoseconds(o.warmup));  // a timed phase
    snapshot();
    begin_measuring();
  }

  const auto window = absl::ToChronoNanoseconds(o.window);
  std::vector<WindowData> windows;
  std::vector<WindowPoint> points;
  LevelReport report;
  report.level = level_;
  for (;;) {
    Clock::time_point end = measure_start + window * (windows.size() + 1);
    if (o.duration > absl::ZeroDuration()) {
      end = std::min(end, measure_start + absl::ToChronoNanoseconds(o.duration));
    }
    bool requests_done = false;
    WindowData data;
    {
      std::unique_lock<std::mutex> lock(mu_);
      requests_done = cv_.wait_until(lock, end, [&] { return RequestsDone(); });
      data = CloseWindow(Clock::now());
      if (requests_done) collecting_ = false;
    }
    snapshot();
    std::vector<int64_t> sorted = data.latencies_ns;
    const LatencySummary s = Summarize(sorted);
    const double throughput =
        data.seconds > 0 ? static_cast<double>(s.count) *
                               static_cast<double>(engine_->builder_->batch()) / data.seconds
                         : 0;
    points.push_back({throughput, s.p99_us});
    windows.push_back(std::move(data));
    WindowReport w;
    w.seconds = windows.back().seconds;
    w.completed = s.count;
    w.failed = windows.back().failed;
    w.throughput = throughput;
    w.latency = s;
    report.windows.push_back(w);
    if (progress != nullptr) {
      *progress << absl::StrFormat(
                       "nimble-load: %s: window %d: %.1f infer/s, p50 %.0f us, p99 %.0f us, %d "
                       "errors",
                       label, windows.size(), throughput, s.p50_us, s.p99_us, w.failed)
                << std::endl;
    }
    const bool stable = IsStable(points);
    const bool out_of_time = o.duration > absl::ZeroDuration() &&
                             Clock::now() - measure_start >= absl::ToChronoNanoseconds(o.duration);
    if (requests_done) {
      report.stop_reason = "requests";
    } else if (stable) {
      report.stop_reason = "stable";
    } else if (out_of_time) {
      report.stop_reason = "duration";
    } else if (static_cast<int>(windows.size()) >= o.max_windows) {
      report.stop_reason = "unstable";
    } else {
      continue;
    }
    report.stable = stable;
    break;
  }

  // Stop issuing and wait for every call in flight (each has a deadline).
  {
    std::unique_lock<std::mutex> lock(mu_);
    stopping_ = true;
    collecting_ = false;
    cv_.notify_all();
    cv_.wait(lock, [&] { return outstanding_ == 0; });
  }
  // The scheduler checks stopping_ under the lock before every send, so nothing was sent
  // after the wait above.
  if (scheduler_.joinable()) scheduler_.join();

  // The reported numbers: the stable windows, else every window.
  const size_t first = report.stop_reason == "stable" ? windows.size() - StabilityRule().count : 0;
  report.reported_windows = static_cast<int>(windows.size() - first);
  std::vector<int64_t> merged;
  std::map<std::string, ErrorCount> errors;
  for (size_t i = first; i < windows.size(); ++i) {
    report.seconds += windows[i].seconds;
    report.failed += windows[i].failed;
    merged.insert(merged.end(), windows[i].latencies_ns.begin(), windows[i].latencies_ns.end());
    for (const auto& [code, e] : windows[i].errors) {
      ErrorCount& total = errors[code];
      if (total.count == 0)
        total = e;
      else
        total.count += e.count;
    }
  }
  for (auto& [code, e] : errors) report.errors.push_back(e);
  report.latency = Summarize(merged);
  report.completed = report.latency.count;
  if (report.seconds > 0) {
    report.request_rate = static_cast<double>(report.completed) / report.seconds;
    report.throughput = report.request_rate * static_cast<double>(engine_->builder_->batch());
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    report.sent = measured_sent_;
    report.late_sends = late_sends_;
    report.max_send_lag_us = max_lag_us_;
    if (measured_sent_ > 0) report.mean_send_lag_us = sum_lag_us_ / measured_sent_;
  }
  // stats[0] is the measurement start; stats[k] the end of window k.
  if (stats[first].has_value() && stats.back().has_value()) {
    report.server = Breakdown(*stats[first], *stats.back());
  }
  if (scrapes[first].has_value() && scrapes.back().has_value()) {
    report.has_metrics = true;
    report.metrics = DiffMetrics(*scrapes[first], *scrapes.back(), o.model);
  }
  return report;
}

LoadEngine::LoadEngine(const LoadOptions& options, std::ostream* progress)
    : options_(options), progress_(progress) {}

LoadEngine::~LoadEngine() = default;

absl::StatusOr<std::unique_ptr<LoadEngine>> LoadEngine::Create(const LoadOptions& options,
                                                               std::ostream* progress) {
  std::unique_ptr<LoadEngine> engine(new LoadEngine(options, progress));
  NIMBLE_ASSIGN_OR_RETURN(SeqLenDistribution seq_len, SeqLenDistribution::Parse(options.seq_len));
  engine->seq_len_ = std::make_unique<SeqLenDistribution>(std::move(seq_len));
  NIMBLE_RETURN_IF_ERROR(engine->Connect());
  NIMBLE_RETURN_IF_ERROR(engine->Discover());
  NIMBLE_RETURN_IF_ERROR(engine->Preflight());
  return engine;
}

absl::Status LoadEngine::Connect() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  channel_ = grpc::CreateCustomChannel(options_.url, grpc::InsecureChannelCredentials(), args);
  if (!channel_->WaitForConnected(Deadline(options_.connect_timeout))) {
    return absl::UnavailableError(absl::StrCat("cannot connect to ", options_.url, " within ",
                                               absl::FormatDuration(options_.connect_timeout)));
  }
  stub_ = inference::GRPCInferenceService::NewStub(channel_);
  return absl::OkStatus();
}

absl::Status LoadEngine::Discover() {
  const std::string what = absl::StrCat(
      "model '", options_.model, "'",
      options_.model_version.empty() ? "" : absl::StrCat(" version ", options_.model_version));
  inference::ModelMetadataRequest request;
  request.set_name(options_.model);
  request.set_version(options_.model_version);
  inference::ModelMetadataResponse metadata;
  grpc::ClientContext context;
  context.set_deadline(Deadline(options_.connect_timeout));
  grpc::Status status = stub_->ModelMetadata(&context, request, &metadata);
  if (!status.ok()) {
    return absl::Status(FromGrpc(status).code(),
                        absl::StrCat(what, ": ModelMetadata failed: ",
                                     CodeName(status.error_code()), ": ", status.error_message()));
  }
  // ModelConfig is optional in the protocol: without it, dim 0 is a batch dim only by --batch.
  inference::ModelConfigRequest config_request;
  config_request.set_name(options_.model);
  config_request.set_version(options_.model_version);
  inference::ModelConfigResponse config;
  grpc::ClientContext config_context;
  config_context.set_deadline(Deadline(options_.connect_timeout));
  const bool has_config = stub_->ModelConfig(&config_context, config_request, &config).ok();
  NIMBLE_ASSIGN_OR_RETURN(model_, ModelSpecFromProtos(metadata, has_config ? &config : nullptr));
  model_.name = options_.model;
  model_.version = options_.model_version;

  BuilderOptions b;
  b.batch = options_.batch;
  b.seq_axis = options_.seq_axis;
  b.max_seq_len = seq_len_->Max();
  b.int_max = options_.int_max;
  b.int_max_per_input = options_.int_max_per_input;
  b.seed = options_.seed;
  if (!options_.shapes_file.empty()) {
    std::ifstream in(options_.shapes_file);
    if (!in) {
      return absl::NotFoundError(absl::StrCat("cannot read --shapes-file ", options_.shapes_file));
    }
    std::stringstream text;
    text << in.rdbuf();
    b.shapes_json = text.str();
    if (b.shapes_json.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--shapes-file ", options_.shapes_file, " is empty"));
    }
  }
  NIMBLE_ASSIGN_OR_RETURN(RequestBuilder builder, RequestBuilder::Create(model_, b));
  builder_ = std::make_unique<RequestBuilder>(std::move(builder));
  return absl::OkStatus();
}

absl::Status LoadEngine::Preflight() {
  inference::ModelInferRequest request;
  builder_->Build(seq_len_->Max(), 0, &request);
  inference::ModelInferResponse response;
  grpc::ClientContext context;
  context.set_deadline(Deadline(options_.request_timeout));
  grpc::Status status = stub_->ModelInfer(&context, request, &response);
  if (status.ok()) return absl::OkStatus();
  std::vector<std::string> shapes;
  for (const auto& in : request.inputs()) {
    shapes.push_back(
        absl::StrCat(in.name(), " ", in.datatype(), "[", absl::StrJoin(in.shape(), ","), "]"));
  }
  return absl::Status(
      FromGrpc(status).code(),
      absl::StrCat("model '", options_.model, "' rejected a request (", absl::StrJoin(shapes, ", "),
                   "): ", CodeName(status.error_code()), ": ", status.error_message()));
}

absl::StatusOr<RunReport> LoadEngine::Run() {
  RunReport report;
  report.url = options_.url;
  report.model = options_.model;
  report.model_version = options_.model_version;
  report.open_loop = !options_.rates.empty();
  report.arrivals = options_.arrivals == Arrivals::Kind::kPoisson ? "poisson" : "constant";
  report.seq_len = options_.seq_len;
  report.batch = builder_->batch();
  for (const auto& [name, shape] : builder_->Describe()) report.input_shapes[name] = shape;
  std::vector<double> levels = options_.rates;
  for (int c : options_.concurrency) levels.push_back(c);
  for (double level : levels) {
    Level run(this, level);
    report.levels.push_back(run.Run());
  }
  return report;
}

}  // namespace nimble::load
