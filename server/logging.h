// Process-wide logging setup: spdlog to stderr, as text or as one JSON object per line.
#pragma once

#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "spdlog/common.h"
#include "spdlog/formatter.h"

namespace nimble::server {

enum class LogFormat { kText, kJson };

// "text" | "json".
absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name);

// "trace" | "debug" | "info" | "warn" | "error" | "critical" | "off".
absl::StatusOr<spdlog::level::level_enum> ParseLogLevel(absl::string_view name);

// The JSON-lines formatter ConfigureLogging installs for LogFormat::kJson.
std::unique_ptr<spdlog::formatter> MakeJsonFormatter();

// Replaces the default logger. Not thread-safe: call once at start-up, before other threads log.
void ConfigureLogging(LogFormat format, spdlog::level::level_enum level);

}  // namespace nimble::server
