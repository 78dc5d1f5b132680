#include "loadtest/options.h"

#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nimble::load {
namespace {

using ::nimble::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

absl::StatusOr<LoadOptions> Parse(std::vector<std::string> extra) {
  std::vector<std::string> args = {"--url", "127.0.0.1:8001", "--model", "bert"};
  args.insert(args.end(), extra.begin(), extra.end());
  return ParseCommandLine(args);
}

TEST(OptionsTest, DefaultsToOneClosedLoopLevel) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(LoadOptions o, Parse({}));
  EXPECT_EQ(o.url, "127.0.0.1:8001");
  EXPECT_EQ(o.model, "bert");
  EXPECT_THAT(o.concurrency, ElementsAre(1));
  EXPECT_TRUE(o.rates.empty());
  EXPECT_EQ(o.warmup, absl::Seconds(2));
  EXPECT_EQ(o.window, absl::Seconds(5));
  EXPECT_EQ(o.max_windows, 10);
  EXPECT_EQ(o.int_max, 100);
}

TEST(OptionsTest, EveryFlagBothSpellings) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(LoadOptions o, Parse({"--model-version=2",
                                                    "--rate",
                                                    "500",
                                                    "--arrivals=poisson",
                                                    "--seq-len",
                                                    "lognormal:mean=64,max=512",
                                                    "--seq-axis",
                                                    "1",
                                                    "--batch",
                                                    "4",
                                                    "--shapes_file",
                                                    "s.json",
                                                    "--int-max",
                                                    "30522",
                                                    "--int-max",
                                                    "token_type_ids=2",
                                                    "--warmup",
                                                    "500ms",
                                                    "--window=3s",
                                                    "--max-windows",
                                                    "7",
                                                    "--duration",
                                                    "1m",
                                                    "--requests",
                                                    "1000",
                                                    "--csv",
                                                    "a.csv",
                                                    "--json",
                                                    "a.json",
                                                    "--metrics-url",
                                                    "http://127.0.0.1:8002/metrics",
                                                    "--timeout",
                                                    "2s",
                                                    "--quiet",
                                                    "--seed",
                                                    "9"}));
  EXPECT_EQ(o.model_version, "2");
  EXPECT_THAT(o.rates, ElementsAre(500));
  EXPECT_TRUE(o.concurrency.empty());
  EXPECT_EQ(o.arrivals, Arrivals::Kind::kPoisson);
  EXPECT_EQ(o.seq_len, "lognormal:mean=64,max=512");
  EXPECT_EQ(o.seq_axis, 1);
  EXPECT_EQ(o.batch, 4);
  EXPECT_EQ(o.shapes_file, "s.json");
  EXPECT_EQ(o.int_max, 30522);
  EXPECT_EQ(o.int_max_per_input.at("token_type_ids"), 2);
  EXPECT_EQ(o.warmup, absl::Milliseconds(500));
  EXPECT_EQ(o.window, absl::Seconds(3));
  EXPECT_EQ(o.max_windows, 7);
  EXPECT_EQ(o.duration, absl::Minutes(1));
  EXPECT_EQ(o.requests, 1000);
  EXPECT_EQ(o.csv_file, "a.csv");
  EXPECT_EQ(o.json_file, "a.json");
  EXPECT_EQ(o.metrics_url, "http://127.0.0.1:8002/metrics");
  EXPECT_EQ(o.request_timeout, absl::Seconds(2));
  EXPECT_TRUE(o.quiet);
  EXPECT_EQ(o.seed, 9u);
}

TEST(OptionsTest, ConcurrencySweeps) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(LoadOptions o, Parse({"--concurrency", "1:64:x2"}));
  EXPECT_THAT(o.concurrency, ElementsAre(1, 2, 4, 8, 16, 32, 64));
  NIMBLE_ASSERT_OK_AND_ASSIGN(o, Parse({"--concurrency", "2:10:4"}));
  EXPECT_THAT(o.concurrency, ElementsAre(2, 6, 10));
  NIMBLE_ASSERT_OK_AND_ASSIGN(o, Parse({"--concurrency", "1:9:x3"}));
  EXPECT_THAT(o.concurrency, ElementsAre(1, 3, 9));
  NIMBLE_ASSERT_OK_AND_ASSIGN(o, Parse({"--concurrency", "3:5"}));
  EXPECT_THAT(o.concurrency, ElementsAre(3));  // doubling: 6 is past the end
  NIMBLE_ASSERT_OK_AND_ASSIGN(o, Parse({"--rate", "100:300:100"}));
  EXPECT_THAT(o.rates, ElementsAre(100, 200, 300));
}

TEST(OptionsTest, ErrorsNameTheFlag) {
  EXPECT_THAT(ParseCommandLine({"--model", "m"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--url HOST:PORT")));
  EXPECT_THAT(ParseCommandLine({"--url", "h:1"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--model NAME")));
  EXPECT_THAT(Parse({"--concurrency", "2", "--rate", "5"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exclude each other")));
  EXPECT_THAT(Parse({"--frobnicate", "1"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown flag --frobnicate")));
  EXPECT_THAT(Parse({"--window"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--window needs a value")));
  EXPECT_THAT(Parse({"--warmup", "soon"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--warmup 'soon'")));
  EXPECT_THAT(Parse({"--window", "0s"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must be positive")));
  EXPECT_THAT(Parse({"--seq-len", "gauss:3"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--seq-len 'gauss:3'")));
  EXPECT_THAT(Parse({"--seq-axis", "seq"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("axis index")));
  EXPECT_THAT(Parse({"--concurrency", "1.5"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("integers")));
  EXPECT_THAT(Parse({"--concurrency", "8:2"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(">= the start")));
  EXPECT_THAT(Parse({"--concurrency", "1:8:x1"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("F > 1")));
  EXPECT_THAT(Parse({"--rate", "-3"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("positive")));
  EXPECT_THAT(Parse({"--max-windows", "0"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("integer >= 1")));
  EXPECT_THAT(Parse({"--arrivals", "bursty"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bursty")));
  EXPECT_THAT(Parse({"--metrics-url", "127.0.0.1:8002"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("http://")));
  EXPECT_THAT(Parse({"--int-max", "ids=0"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--int-max '0'")));
  EXPECT_THAT(Parse({"stray"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unexpected argument")));
}

TEST(OptionsTest, UsageMentionsEveryMainFlag) {
  const std::string usage = UsageText();
  for (const char* flag : {"--url", "--model", "--concurrency", "--rate", "--arrivals", "--seq-len",
                           "--seq-axis", "--shapes-file", "--warmup", "--window", "--max-windows",
                           "--duration", "--requests", "--csv", "--json", "--metrics-url"}) {
    EXPECT_THAT(usage, HasSubstr(flag));
  }
}

}  // namespace
}  // namespace nimble::load
