#include "server/logging.h"

#include "base/testing/status_matchers.h"
#include "gtest/gtest.h"
#include "spdlog/details/log_msg.h"

namespace nimble::server {
namespace {

using ::nimble::testing::StatusIs;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

TEST(LoggingTest, ParsesEveryLevelAndRejectsOthers) {
  EXPECT_EQ(*ParseLogLevel("trace"), spdlog::level::trace);
  EXPECT_EQ(*ParseLogLevel("info"), spdlog::level::info);
  EXPECT_EQ(*ParseLogLevel("warn"), spdlog::level::warn);
  EXPECT_EQ(*ParseLogLevel("error"), spdlog::level::err);
  EXPECT_EQ(*ParseLogLevel("off"), spdlog::level::off);
  EXPECT_THAT(ParseLogLevel("verbose"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unknown log level 'verbose' (expected one of trace, debug")));
  EXPECT_THAT(ParseLogLevel("INFO"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("INFO")));
}

TEST(LoggingTest, ParsesFormats) {
  EXPECT_EQ(*ParseLogFormat("text"), LogFormat::kText);
  EXPECT_EQ(*ParseLogFormat("json"), LogFormat::kJson);
  EXPECT_THAT(ParseLogFormat("xml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'xml'")));
}

TEST(LoggingTest, JsonFormatterEscapesTheMessage) {
  auto formatter = MakeJsonFormatter();
  spdlog::details::log_msg msg("nimble", spdlog::level::warn, "model \"bert\"\nfailed\\\t\x01");
  spdlog::memory_buf_t out;
  formatter->format(msg, out);
  const std::string line(out.data(), out.size());
  EXPECT_THAT(line, MatchesRegex(R"(\{"ts":"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}\.[0-9]{6}Z",.*)"));
  EXPECT_THAT(line, HasSubstr(R"("level":"warning","thread":)"));
  EXPECT_THAT(line, EndsWith(R"("msg":"model \"bert\"\nfailed\\\t\u0001"})"
                             "\n"));
}

}  // namespace
}  // namespace nimble::server
