#include "server/process_metrics.h"

#include <ctime>
#include <map>
#include <string>

#include "gtest/gtest.h"

namespace nimble::server {
namespace {

TEST(ProcessCollectorTest, ReportsPlausibleValues) {
  std::map<std::string, double> values;
  for (const auto& family : ProcessCollector().Collect()) {
    ASSERT_EQ(family.metric.size(), 1u) << family.name;
    values[family.name] = family.type == prometheus::MetricType::Counter
                              ? family.metric[0].counter.value
                              : family.metric[0].gauge.value;
  }
  ASSERT_EQ(values.size(), 6u);
  EXPECT_GT(values["process_resident_memory_bytes"], 1 << 20);
  EXPECT_GE(values["process_virtual_memory_bytes"], values["process_resident_memory_bytes"]);
  EXPECT_GE(values["process_threads"], 1);
  EXPECT_GE(values["process_open_fds"], 3);  // stdin, stdout, stderr
  EXPECT_GE(values["process_cpu_seconds_total"], 0);
  const double now = static_cast<double>(std::time(nullptr));
  EXPECT_LE(values["process_start_time_seconds"], now + 2);
  EXPECT_GT(values["process_start_time_seconds"], now - 3600);
}

}  // namespace
}  // namespace nimble::server
