// Random draws for the load generator: sequence lengths (fixed, uniform, lognormal, zipf) and
// inter-arrival gaps (constant, Poisson). Parsed from the command line's spelling, sampled with
// a caller-owned engine so that a fixed seed reproduces a run.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace nimble::load {

using Rng = std::mt19937_64;

// Immutable after Parse(); Sample() is const and thread-compatible (each thread its own Rng).
class SeqLenDistribution {
 public:
  enum class Kind { kFixed, kUniform, kLognormal, kZipf };

  // "fixed:N", "uniform:A,B" (inclusive), "lognormal:mean=M,max=X[,sigma=S]" (sigma of the
  // underlying normal, default 0.5; draws rounded, clamped to [1, X]), "zipf:s=S,max=X"
  // (P(k) proportional to k^-s on 1..X).
  static absl::StatusOr<SeqLenDistribution> Parse(absl::string_view spec);

  int64_t Sample(Rng& rng) const;
  // The largest value Sample() can return.
  int64_t Max() const { return max_; }
  Kind kind() const { return kind_; }
  const std::string& spec() const { return spec_; }

 private:
  SeqLenDistribution() = default;

  Kind kind_ = Kind::kFixed;
  std::string spec_;
  int64_t min_ = 1;
  int64_t max_ = 1;
  double mu_ = 0;                 // lognormal: mean of log(x)
  double sigma_ = 0;              // lognormal: stddev of log(x)
  std::vector<double> zipf_cdf_;  // zipf: CDF over 1..max_
};

// Gaps between scheduled sends of an open-loop run at `rate` per second.
class Arrivals {
 public:
  enum class Kind { kConstant, kPoisson };
  static absl::StatusOr<Kind> ParseKind(absl::string_view name);

  Arrivals(Kind kind, double rate) : kind_(kind), rate_(rate) {}
  // Seconds until the next send: 1/rate, or exponential with mean 1/rate.
  double NextGap(Rng& rng) const;

 private:
  Kind kind_;
  double rate_;
};

}  // namespace nimble::load
