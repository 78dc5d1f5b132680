#include "loadtest/distributions.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace nimble::load {
namespace {

absl::Status BadSpec(absl::string_view spec, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("--seq-len '", spec, "': ", why,
                   " (fixed:N | uniform:A,B | lognormal:mean=M,max=X[,sigma=S] | zipf:s=S,max=X)"));
}

// "k=v,k=v" -> map; every key must be in `allowed`.
absl::StatusOr<std::map<std::string, double>> KeyValues(absl::string_view spec,
                                                        absl::string_view body,
                                                        const std::vector<std::string>& allowed) {
  std::map<std::string, double> out;
  for (absl::string_view item : absl::StrSplit(body, ',')) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(item, '=');
    double value = 0;
    if (std::find(allowed.begin(), allowed.end(), std::string(kv.first)) == allowed.end()) {
      return BadSpec(spec, absl::StrCat("unknown parameter '", kv.first, "'"));
    }
    if (!absl::SimpleAtod(kv.second, &value) || !std::isfinite(value)) {
      return BadSpec(spec, absl::StrCat("'", item, "' is not KEY=NUMBER"));
    }
    out[std::string(kv.first)] = value;
  }
  return out;
}

bool PositiveInt(double v) { return v >= 1 && v == std::floor(v) && v < 1e9; }

}  // namespace

absl::StatusOr<SeqLenDistribution> SeqLenDistribution::Parse(absl::string_view spec) {
  SeqLenDistribution d;
  d.spec_ = std::string(spec);
  absl::string_view body = spec;
  if (absl::ConsumePrefix(&body, "fixed:")) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(body, &n) || n < 1) return BadSpec(spec, "N must be an integer >= 1");
    d.kind_ = Kind::kFixed;
    d.min_ = d.max_ = n;
    return d;
  }
  if (absl::ConsumePrefix(&body, "uniform:")) {
    std::vector<absl::string_view> parts = absl::StrSplit(body, ',');
    int64_t a = 0, b = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &a) || !absl::SimpleAtoi(parts[1], &b) ||
        a < 1 || b < a) {
      return BadSpec(spec, "needs integers 1 <= A <= B");
    }
    d.kind_ = Kind::kUniform;
    d.min_ = a;
    d.max_ = b;
    return d;
  }
  if (absl::ConsumePrefix(&body, "lognormal:")) {
    auto kv = KeyValues(spec, body, {"mean", "max", "sigma"});
    if (!kv.ok()) return kv.status();
    if (!kv->count("mean") || !kv->count("max")) return BadSpec(spec, "needs mean= and max=");
    const double mean = kv->at("mean");
    const double max = kv->at("max");
    const double sigma = kv->count("sigma") ? kv->at("sigma") : 0.5;
    if (mean < 1 || !PositiveInt(max) || mean > max || sigma <= 0 || sigma > 5) {
      return BadSpec(spec, "needs 1 <= mean <= max (max an integer) and 0 < sigma <= 5");
    }
    d.kind_ = Kind::kLognormal;
    d.max_ = static_cast<int64_t>(max);
    d.sigma_ = sigma;
    // E[X] = exp(mu + sigma^2 / 2) for the unclamped distribution.
    d.mu_ = std::log(mean) - sigma * sigma / 2;
    return d;
  }
  if (absl::ConsumePrefix(&body, "zipf:")) {
    auto kv = KeyValues(spec, body, {"s", "max"});
    if (!kv.ok()) return kv.status();
    if (!kv->count("s") || !kv->count("max")) return BadSpec(spec, "needs s= and max=");
    const double s = kv->at("s");
    const double max = kv->at("max");
    if (s <= 0 || s > 10 || !PositiveInt(max) || max > 1e7) {
      return BadSpec(spec, "needs 0 < s <= 10 and an integer 1 <= max <= 10000000");
    }
    d.kind_ = Kind::kZipf;
    d.max_ = static_cast<int64_t>(max);
    d.zipf_cdf_.resize(d.max_);
    double total = 0;
    for (int64_t k = 1; k <= d.max_; ++k) {
      total += std::pow(static_cast<double>(k), -s);
      d.zipf_cdf_[k - 1] = total;
    }
    for (double& c : d.zipf_cdf_) c /= total;
    return d;
  }
  return BadSpec(spec, "unknown distribution");
}

int64_t SeqLenDistribution::Sample(Rng& rng) const {
  switch (kind_) {
    case Kind::kFixed:
      return min_;
    case Kind::kUniform:
      return std::uniform_int_distribution<int64_t>(min_, max_)(rng);
    case Kind::kLognormal: {
      const double x = std::lognormal_distribution<double>(mu_, sigma_)(rng);
      return std::clamp<int64_t>(std::llround(x), 1, max_);
    }
    case Kind::kZipf: {
      const double u = std::uniform_real_distribution<double>(0, 1)(rng);
      const auto it = std::lower_bound(zipf_cdf_.begin(), zipf_cdf_.end(), u);
      return std::min<int64_t>(it - zipf_cdf_.begin() + 1, max_);
    }
  }
  return min_;
}

absl::StatusOr<Arrivals::Kind> Arrivals::ParseKind(absl::string_view name) {
  if (name == "constant") return Kind::kConstant;
  if (name == "poisson") return Kind::kPoisson;
  return absl::InvalidArgumentError(
      absl::StrCat("--arrivals '", name, "' is not 'constant' or 'poisson'"));
}

double Arrivals::NextGap(Rng& rng) const {
  if (kind_ == Kind::kConstant) return 1.0 / rate_;
  return std::exponential_distribution<double>(rate_)(rng);
}

}  // namespace nimble::load
