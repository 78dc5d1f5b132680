#include "server/logging.h"

#include <chrono>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "spdlog/formatter.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace nimble::server {
namespace {

constexpr absl::string_view kLevelNames[] = {"trace", "debug",    "info", "warn",
                                             "error", "critical", "off"};

void AppendJsonString(absl::string_view text, spdlog::memory_buf_t& out) {
  out.push_back('"');
  for (char c : text) {
    switch (c) {
      case '"':
        out.append(absl::string_view("\\\""));
        break;
      case '\\':
        out.append(absl::string_view("\\\\"));
        break;
      case '\n':
        out.append(absl::string_view("\\n"));
        break;
      case '\r':
        out.append(absl::string_view("\\r"));
        break;
      case '\t':
        out.append(absl::string_view("\\t"));
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          fmt::format_to(std::back_inserter(out), "\\u{:04x}", static_cast<int>(c));
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
}

// One JSON object per line: {"ts":"2026-11-25T01:02:03.456789Z","level":"info","msg":"..."}.
// Log shippers (Fluent Bit, Vector, Loki) parse this without a custom regex.
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const auto since_epoch = msg.time.time_since_epoch();
    const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
    const auto micros =
        std::chrono::duration_cast<std::chrono::microseconds>(since_epoch - seconds).count();
    std::time_t t = static_cast<std::time_t>(seconds.count());
    std::tm utc;
    gmtime_r(&t, &utc);
    char stamp[32];
    std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &utc);
    fmt::format_to(std::back_inserter(dest), "{{\"ts\":\"{}.{:06d}Z\",\"level\":\"{}\",", stamp,
                   micros, spdlog::level::to_string_view(msg.level));
    fmt::format_to(std::back_inserter(dest), "\"thread\":{},\"msg\":", msg.thread_id);
    AppendJsonString(absl::string_view(msg.payload.data(), msg.payload.size()), dest);
    dest.append(absl::string_view("}\n"));
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

}  // namespace

std::unique_ptr<spdlog::formatter> MakeJsonFormatter() { return std::make_unique<JsonFormatter>(); }

absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown log format '", name, "' (expected text or json)"));
}

absl::StatusOr<spdlog::level::level_enum> ParseLogLevel(absl::string_view name) {
  for (size_t i = 0; i < std::size(kLevelNames); ++i) {
    if (name == kLevelNames[i]) return static_cast<spdlog::level::level_enum>(i);
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown log level '", name, "' (expected one of ",
                                                 absl::StrJoin(kLevelNames, ", "), ")"));
}

void ConfigureLogging(LogFormat format, spdlog::level::level_enum level) {
  auto logger =
      std::make_shared<spdlog::logger>("nimble", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  if (format == LogFormat::kJson) {
    logger->set_formatter(MakeJsonFormatter());
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %^%-5l%$ %v", spdlog::pattern_time_type::utc);
  }
  logger->set_level(level);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace nimble::server
