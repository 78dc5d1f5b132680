#include "loadtest/prometheus.h"

#include <cmath>

#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nimble::load {
namespace {

using ::nimble::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ParsePrometheusTextTest, NamesLabelsValues) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto samples, ParsePrometheusText(R"(# HELP x y
# TYPE nimble_build_info gauge
nimble_build_info{version="0.1.0"} 1
process_threads 12 1700000000000
nimble_request_duration_seconds_bucket{model="m",stage="queue",le="+Inf"} 3
weird{msg="a \"quoted\" \\ value, with comma"} -2.5e-3
)"));
  ASSERT_EQ(samples.size(), 4u);
  EXPECT_EQ(samples[0].name, "nimble_build_info");
  EXPECT_EQ(samples[0].labels.at("version"), "0.1.0");
  EXPECT_EQ(samples[1].name, "process_threads");
  EXPECT_EQ(samples[1].value, 12);
  EXPECT_EQ(samples[2].labels.at("le"), "+Inf");
  EXPECT_EQ(samples[2].value, 3);
  EXPECT_EQ(samples[3].labels.at("msg"), "a \"quoted\" \\ value, with comma");
  EXPECT_DOUBLE_EQ(samples[3].value, -2.5e-3);
  EXPECT_EQ(SeriesKey(samples[0]), "nimble_build_info{version=\"0.1.0\"}");
}

TEST(ParsePrometheusTextTest, MalformedLinesAreErrors) {
  EXPECT_THAT(ParsePrometheusText("ok 1\nbroken{a=\"1\" 2\n").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("line 2")));
  EXPECT_THAT(ParsePrometheusText("novalue\n").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no value")));
  EXPECT_THAT(ParsePrometheusText("x abc\n").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad value")));
}

TEST(HistogramQuantileTest, InterpolatesInsideTheBucket) {
  const double inf = std::numeric_limits<double>::infinity();
  // 10 observations <= 1, 30 in (1, 2], none above.
  const std::vector<std::pair<double, double>> b = {{1, 10}, {2, 40}, {inf, 40}};
  EXPECT_DOUBLE_EQ(HistogramQuantile(b, 0.25), 1.0);           // rank 10: top of bucket 1
  EXPECT_DOUBLE_EQ(HistogramQuantile(b, 0.5), 1 + 10 / 30.0);  // rank 20 of (10, 40]
  EXPECT_DOUBLE_EQ(HistogramQuantile(b, 0.125), 0.5);          // rank 5 of [0, 10]
  EXPECT_DOUBLE_EQ(HistogramQuantile({{1, 0}, {inf, 0}}, 0.5), 0);
  EXPECT_DOUBLE_EQ(HistogramQuantile({{1, 1}, {inf, 5}}, 0.99), 1);  // in +Inf: last bound
}

TEST(DiffMetricsTest, DeltasOfTheModelsSeriesAndStageHistograms) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto before, ParsePrometheusText(R"(
nimble_request_duration_seconds_bucket{model="m",stage="queue",version="1",le="0.001"} 5
nimble_request_duration_seconds_bucket{model="m",stage="queue",version="1",le="0.002"} 5
nimble_request_duration_seconds_bucket{model="m",stage="queue",version="1",le="+Inf"} 5
nimble_request_duration_seconds_sum{model="m",stage="queue",version="1"} 0.001
nimble_request_duration_seconds_count{model="m",stage="queue",version="1"} 5
nimble_inference_count_total{model="other",version="1"} 7
nimble_executable_cache_misses_total 1
)"));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto after, ParsePrometheusText(R"(
nimble_request_duration_seconds_bucket{model="m",stage="queue",version="1",le="0.001"} 10
nimble_request_duration_seconds_bucket{model="m",stage="queue",version="1",le="0.002"} 15
nimble_request_duration_seconds_bucket{model="m",stage="queue",version="1",le="+Inf"} 15
nimble_request_duration_seconds_sum{model="m",stage="queue",version="1"} 0.016
nimble_request_duration_seconds_count{model="m",stage="queue",version="1"} 15
nimble_inference_count_total{model="other",version="1"} 9
nimble_executable_cache_misses_total 1
process_threads 30
)"));
  const MetricsDelta d = DiffMetrics(before, after, "m");
  ASSERT_EQ(d.stages.size(), 1u);
  EXPECT_EQ(d.stages[0].stage, "queue");
  EXPECT_DOUBLE_EQ(d.stages[0].count, 10);
  EXPECT_NEAR(d.stages[0].mean_us, 1500, 1e-6);  // 0.015 s over 10
  EXPECT_NEAR(d.stages[0].p50_us, 1000, 1e-6);   // rank 5 = top of the first bucket
  EXPECT_NEAR(d.stages[0].p99_us, 1980, 1e-6);   // rank 9.9: 4.9 of 5 into (1 ms, 2 ms]
  EXPECT_DOUBLE_EQ(
      d.series.at("nimble_request_duration_seconds_count{model=\"m\",stage=\"queue\",version="
                  "\"1\"}"),
      10);
  EXPECT_EQ(d.series.count("nimble_inference_count_total{model=\"other\",version=\"1\"}"), 0u);
  EXPECT_EQ(d.series.count("nimble_executable_cache_misses_total"), 0u);  // no change
  EXPECT_EQ(d.series.count("process_threads"), 0u);                       // not nimble_*
}

TEST(HttpGetTest, BadUrlsAndRefusedConnections) {
  EXPECT_THAT(HttpGet("https://127.0.0.1:1/metrics", absl::Seconds(1)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an http:// URL")));
  // Port 1 on loopback: nothing listens there in a test environment.
  EXPECT_THAT(HttpGet("http://127.0.0.1:1/metrics", absl::Seconds(1)).status(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("cannot connect")));
}

}  // namespace
}  // namespace nimble::load
