#include "loadtest/distributions.h"

#include <cmath>
#include <vector>

#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nimble::load {
namespace {

using ::nimble::testing::StatusIs;
using ::testing::HasSubstr;

constexpr int kDraws = 200000;

struct Moments {
  double mean = 0;
  double stddev = 0;
  int64_t min = INT64_MAX;
  int64_t max = INT64_MIN;
};

Moments Draw(const SeqLenDistribution& d, uint64_t seed = 42) {
  Rng rng(seed);
  std::vector<int64_t> v(kDraws);
  for (auto& x : v) x = d.Sample(rng);
  Moments m;
  for (int64_t x : v) {
    m.mean += static_cast<double>(x);
    m.min = std::min(m.min, x);
    m.max = std::max(m.max, x);
  }
  m.mean /= kDraws;
  for (int64_t x : v) m.stddev += (x - m.mean) * (x - m.mean);
  m.stddev = std::sqrt(m.stddev / kDraws);
  return m;
}

TEST(SeqLenDistributionTest, FixedAlwaysDrawsN) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto d, SeqLenDistribution::Parse("fixed:37"));
  const Moments m = Draw(d);
  EXPECT_EQ(m.min, 37);
  EXPECT_EQ(m.max, 37);
  EXPECT_EQ(d.Max(), 37);
}

TEST(SeqLenDistributionTest, UniformMomentsAndRange) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto d, SeqLenDistribution::Parse("uniform:1,100"));
  const Moments m = Draw(d);
  // Discrete uniform on 1..100: mean 50.5, stddev sqrt((100^2 - 1) / 12) = 28.866.
  EXPECT_NEAR(m.mean, 50.5, 0.3);
  EXPECT_NEAR(m.stddev, 28.866, 0.2);
  EXPECT_EQ(m.min, 1);
  EXPECT_EQ(m.max, 100);
  EXPECT_EQ(d.Max(), 100);
}

TEST(SeqLenDistributionTest, LognormalHasTheRequestedMean) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto d, SeqLenDistribution::Parse("lognormal:mean=64,max=100000"));
  const Moments m = Draw(d);
  // sigma 0.5: stddev = mean * sqrt(exp(sigma^2) - 1) = 64 * 0.5329 = 34.1; the standard error
  // of the mean over 200k draws is 0.08, rounding to integers adds < 0.5.
  EXPECT_NEAR(m.mean, 64, 0.6);
  EXPECT_NEAR(m.stddev, 34.1, 1.0);
  EXPECT_GE(m.min, 1);
}

TEST(SeqLenDistributionTest, LognormalIsClampedToMax) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto d,
                              SeqLenDistribution::Parse("lognormal:mean=100,max=128,sigma=1"));
  const Moments m = Draw(d);
  EXPECT_EQ(m.max, 128);  // about 30% of the unclamped mass lies above 128
  EXPECT_GE(m.min, 1);
  EXPECT_LT(m.mean, 100);
}

TEST(SeqLenDistributionTest, ZipfMatchesItsProbabilities) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto d, SeqLenDistribution::Parse("zipf:s=1.2,max=100"));
  double h = 0, weighted = 0;
  for (int k = 1; k <= 100; ++k) {
    h += std::pow(k, -1.2);
    weighted += k * std::pow(k, -1.2);
  }
  Rng rng(7);
  int ones = 0, twos = 0;
  double sum = 0;
  for (int i = 0; i < kDraws; ++i) {
    const int64_t x = d.Sample(rng);
    ASSERT_GE(x, 1);
    ASSERT_LE(x, 100);
    ones += x == 1;
    twos += x == 2;
    sum += static_cast<double>(x);
  }
  EXPECT_NEAR(ones / double{kDraws}, 1 / h, 0.005);
  EXPECT_NEAR(twos / double{kDraws}, std::pow(2, -1.2) / h, 0.005);
  EXPECT_NEAR(sum / kDraws, weighted / h, 0.3);
}

TEST(SeqLenDistributionTest, SameSeedSameDraws) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto d, SeqLenDistribution::Parse("lognormal:mean=20,max=64"));
  Rng a(5), b(5);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(d.Sample(a), d.Sample(b));
}

TEST(SeqLenDistributionTest, BadSpecsAreRejected) {
  EXPECT_THAT(SeqLenDistribution::Parse("normal:3").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown distribution")));
  EXPECT_THAT(SeqLenDistribution::Parse("fixed:0").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(">= 1")));
  EXPECT_THAT(SeqLenDistribution::Parse("uniform:5,2").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("A <= B")));
  EXPECT_THAT(SeqLenDistribution::Parse("lognormal:mean=5").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs mean= and max=")));
  EXPECT_THAT(SeqLenDistribution::Parse("lognormal:mean=5,max=10,foo=1").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown parameter 'foo'")));
  EXPECT_THAT(SeqLenDistribution::Parse("lognormal:mean=50,max=10").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("mean <= max")));
  EXPECT_THAT(SeqLenDistribution::Parse("zipf:s=-1,max=10").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("0 < s")));
  EXPECT_THAT(SeqLenDistribution::Parse("zipf:s=1,max=x").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("KEY=NUMBER")));
}

TEST(ArrivalsTest, ConstantGapIsTheInverseRate) {
  Rng rng(1);
  const Arrivals a(Arrivals::Kind::kConstant, 250);
  EXPECT_DOUBLE_EQ(a.NextGap(rng), 0.004);
  EXPECT_DOUBLE_EQ(a.NextGap(rng), 0.004);
}

TEST(ArrivalsTest, PoissonGapsAreExponential) {
  Rng rng(3);
  const Arrivals a(Arrivals::Kind::kPoisson, 1000);
  double sum = 0, sum2 = 0;
  for (int i = 0; i < kDraws; ++i) {
    const double g = a.NextGap(rng);
    sum += g;
    sum2 += g * g;
  }
  const double mean = sum / kDraws;
  const double stddev = std::sqrt(sum2 / kDraws - mean * mean);
  // Exponential: mean = stddev = 1/rate; 1% tolerance is > 4 standard errors at 200k draws.
  EXPECT_NEAR(mean, 1e-3, 1e-5);
  EXPECT_NEAR(stddev, 1e-3, 2e-5);
}

TEST(ArrivalsTest, ParseKind) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(Arrivals::Kind kind, Arrivals::ParseKind("poisson"));
  EXPECT_EQ(kind, Arrivals::Kind::kPoisson);
  EXPECT_THAT(Arrivals::ParseKind("bursty").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'constant' or 'poisson'")));
}

}  // namespace
}  // namespace nimble::load
