#include "loadtest/report.h"

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"

namespace nimble::load {
namespace {

using ::testing::HasSubstr;

RunReport SampleReport(bool open_loop) {
  RunReport r;
  r.url = "127.0.0.1:8001";
  r.model = "bert";
  r.open_loop = open_loop;
  r.arrivals = "poisson";
  r.seq_len = "lognormal:mean=64,max=256";
  r.input_shapes["input_ids"] = "INT64[batch=1,seq]";
  LevelReport l;
  l.level = open_loop ? 250 : 4;
  l.stable = true;
  l.stop_reason = "stable";
  l.seconds = 15;
  l.completed = 3000;
  l.failed = 2;
  l.throughput = 200;
  l.request_rate = 200;
  l.latency = {3000, 1000.4, 500, 9000, 900.6, 1500, 1700, 2500, 4000};
  l.errors.push_back({"INVALID_ARGUMENT", 2, "model 'bert': input \"x\"\nbad"});
  l.sent = 3002;
  l.late_sends = 3;
  l.max_send_lag_us = 1800;
  l.mean_send_lag_us = 40;
  l.server = {true, 3000, 860, 300, 20, 500, 30, 3000, 1500, 2};
  l.has_metrics = true;
  l.metrics.stages.push_back({"queue", 3000, 300, 250, 900});
  l.metrics.series["nimble_inference_count_total{model=\"bert\"}"] = 3000;
  l.windows.push_back({5, 1000, 1, 200, l.latency});
  l.reported_windows = 1;
  r.levels.push_back(l);
  return r;
}

TEST(CsvReportTest, PerfAnalyzerColumns) {
  const std::string csv = CsvReport(SampleReport(false));
  std::vector<std::string> lines = absl::StrSplit(csv, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0],
            "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
            "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,"
            "p50 latency,p90 latency,p95 latency,p99 latency,Avg latency,request/response,"
            "response wait");
  // Network+Server = mean 1000.4 - (300 + 20 + 500 + 30) = 150 (rounded); latencies in us.
  EXPECT_EQ(lines[1], "4,200.0,0,150,300,20,500,30,0,901,1500,1700,2500,1000,1000,1000");
}

TEST(CsvReportTest, OpenLoopRowsAreRequestRates) {
  const std::string csv = CsvReport(SampleReport(true));
  EXPECT_THAT(csv, ::testing::StartsWith("Request Rate,Inferences/Second,"));
  EXPECT_THAT(csv, HasSubstr("\n250,200.0,"));
}

TEST(JsonReportTest, IsWellFormedAndComplete) {
  const std::string json = JsonReport(SampleReport(true));
  google::protobuf::Struct root;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json, &root).ok()) << json;
  EXPECT_EQ(root.fields().at("mode").string_value(), "open");
  EXPECT_EQ(root.fields().at("arrivals").string_value(), "poisson");
  const auto& level = root.fields().at("levels").list_value().values(0).struct_value().fields();
  EXPECT_EQ(level.at("rate").number_value(), 250);
  EXPECT_EQ(level.at("completed").number_value(), 3000);
  EXPECT_EQ(level.at("late_sends").number_value(), 3);
  EXPECT_EQ(level.at("mean_send_lag_us").number_value(), 40);
  EXPECT_EQ(level.at("latency").struct_value().fields().at("p99_us").number_value(), 2500);
  EXPECT_EQ(level.at("latency").struct_value().fields().at("p99.9_us").number_value(), 4000);
  const auto& error = level.at("errors").list_value().values(0).struct_value().fields();
  EXPECT_EQ(error.at("code").string_value(), "INVALID_ARGUMENT");
  EXPECT_EQ(error.at("first_message").string_value(), "model 'bert': input \"x\"\nbad");
  EXPECT_EQ(level.at("server").struct_value().fields().at("avg_batch").number_value(), 2);
  const auto& metrics = level.at("metrics").struct_value().fields();
  EXPECT_EQ(metrics.at("deltas")
                .struct_value()
                .fields()
                .at("nimble_inference_count_total{model=\"bert\"}")
                .number_value(),
            3000);
  EXPECT_EQ(level.at("windows").list_value().values_size(), 1);
}

TEST(JsonQuoteTest, EscapesControlCharacters) {
  EXPECT_EQ(JsonQuote("a\"b\\c\n\t\x01"), "\"a\\\"b\\\\c\\n\\t\\u0001\"");
}

TEST(TableReportTest, ShowsLevelsErrorsAndServerBreakdown) {
  const std::string table = TableReport(SampleReport(true));
  EXPECT_THAT(table, HasSubstr("rate/s"));
  EXPECT_THAT(table, HasSubstr("2 x INVALID_ARGUMENT"));
  EXPECT_THAT(
      table,
      HasSubstr("3 of 3002 sends more than 1 ms behind schedule (mean lag 40 us, worst 1800 us)"));
  EXPECT_THAT(table, HasSubstr("860 us in the server (queue 300 us"));
  EXPECT_THAT(table, HasSubstr("avg batch 2.00"));
  EXPECT_THAT(table, HasSubstr("stage=\"queue\""));
}

}  // namespace
}  // namespace nimble::load
