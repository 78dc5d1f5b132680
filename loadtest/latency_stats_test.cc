#include "loadtest/latency_stats.h"

#include <numeric>

#include "gtest/gtest.h"

namespace nimble::load {
namespace {

TEST(PercentileTest, NearestRankOnOneToHundred) {
  std::vector<int64_t> v(100);
  std::iota(v.begin(), v.end(), 1);
  EXPECT_EQ(Percentile(v, 0), 1);
  EXPECT_EQ(Percentile(v, 50), 50);
  EXPECT_EQ(Percentile(v, 90), 90);
  EXPECT_EQ(Percentile(v, 99), 99);
  EXPECT_EQ(Percentile(v, 99.9), 100);
  EXPECT_EQ(Percentile(v, 100), 100);
}

TEST(PercentileTest, SmallAndEmptySets) {
  EXPECT_EQ(Percentile({}, 50), 0);
  EXPECT_EQ(Percentile({7}, 0), 7);
  EXPECT_EQ(Percentile({7}, 99.9), 7);
  EXPECT_EQ(Percentile({1, 2}, 50), 1);
  EXPECT_EQ(Percentile({1, 2}, 51), 2);
}

TEST(SummarizeTest, MicrosecondsFromUnsortedNanoseconds) {
  std::vector<int64_t> ns;
  for (int i = 1000; i >= 1; --i) ns.push_back(int64_t{i} * 1000);  // 1..1000 us, descending
  const LatencySummary s = Summarize(ns);
  EXPECT_EQ(s.count, 1000);
  EXPECT_DOUBLE_EQ(s.mean_us, 500.5);
  EXPECT_DOUBLE_EQ(s.min_us, 1);
  EXPECT_DOUBLE_EQ(s.max_us, 1000);
  EXPECT_DOUBLE_EQ(s.p50_us, 500);
  EXPECT_DOUBLE_EQ(s.p90_us, 900);
  EXPECT_DOUBLE_EQ(s.p95_us, 950);
  EXPECT_DOUBLE_EQ(s.p99_us, 990);
  EXPECT_DOUBLE_EQ(s.p999_us, 999);
}

TEST(SummarizeTest, EmptyIsAllZero) {
  std::vector<int64_t> none;
  const LatencySummary s = Summarize(none);
  EXPECT_EQ(s.count, 0);
  EXPECT_EQ(s.p99_us, 0);
  EXPECT_EQ(s.mean_us, 0);
}

}  // namespace
}  // namespace nimble::load
