#include "loadtest/stability.h"

#include <cmath>

namespace nimble::load {
namespace {

bool WithinTolerance(const std::vector<double>& values, double tolerance) {
  double mean = 0;
  for (double v : values) mean += v;
  mean /= static_cast<double>(values.size());
  for (double v : values) {
    if (std::fabs(v - mean) > tolerance * mean) return false;
  }
  return true;
}

}  // namespace

bool IsStable(const std::vector<WindowPoint>& windows, const StabilityRule& rule) {
  if (rule.count < 1 || static_cast<int>(windows.size()) < rule.count) return false;
  std::vector<double> throughput, p99;
  for (size_t i = windows.size() - rule.count; i < windows.size(); ++i) {
    if (windows[i].throughput <= 0) return false;
    throughput.push_back(windows[i].throughput);
    p99.push_back(windows[i].p99_us);
  }
  return WithinTolerance(throughput, rule.tolerance) && WithinTolerance(p99, rule.tolerance);
}

}  // namespace nimble::load
