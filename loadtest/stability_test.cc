#include "loadtest/stability.h"

#include "gtest/gtest.h"

namespace nimble::load {
namespace {

TEST(StabilityTest, NeedsThreeWindows) {
  EXPECT_FALSE(IsStable({}));
  EXPECT_FALSE(IsStable({{100, 1000}, {100, 1000}}));
  EXPECT_TRUE(IsStable({{100, 1000}, {100, 1000}, {100, 1000}}));
}

TEST(StabilityTest, WithinTenPercentOfTheMean) {
  // Throughput mean 100: 91 and 109 are inside the 10% band, p99 flat.
  EXPECT_TRUE(IsStable({{91, 1000}, {100, 1000}, {109, 1000}}));
  // Mean 103.3: 115 is 11.3% above it.
  EXPECT_FALSE(IsStable({{95, 1000}, {100, 1000}, {115, 1000}}));
}

TEST(StabilityTest, P99MustAgreeToo) {
  EXPECT_FALSE(IsStable({{100, 1000}, {100, 1000}, {100, 1400}}));
  EXPECT_TRUE(IsStable({{100, 1000}, {100, 1050}, {100, 950}}));
}

TEST(StabilityTest, OnlyTheLastWindowsCount) {
  EXPECT_TRUE(IsStable({{10, 9000}, {500, 10}, {100, 1000}, {101, 1010}, {99, 990}}));
  EXPECT_FALSE(IsStable({{100, 1000}, {101, 1010}, {99, 990}, {300, 1000}}));
}

TEST(StabilityTest, EmptyWindowsAreNeverStable) {
  EXPECT_FALSE(IsStable({{0, 0}, {0, 0}, {0, 0}}));
}

TEST(StabilityTest, RuleParameters) {
  const StabilityRule two_within_half{2, 0.5};
  EXPECT_TRUE(IsStable({{100, 1000}, {180, 1000}}, two_within_half));
  EXPECT_FALSE(IsStable({{100, 1000}, {400, 1000}}, two_within_half));
}

}  // namespace
}  // namespace nimble::load
