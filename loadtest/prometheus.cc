#include "loadtest/prometheus.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace nimble::load {
namespace {

bool ParseValue(absl::string_view text, double* value) {
  if (text == "+Inf") {
    *value = std::numeric_limits<double>::infinity();
    return true;
  }
  if (text == "-Inf") {
    *value = -std::numeric_limits<double>::infinity();
    return true;
  }
  if (text == "NaN") {
    *value = std::nan("");
    return true;
  }
  return absl::SimpleAtod(text, value);
}

// Labels between the braces: k="v",k="v" with \" \\ \n escapes in values.
bool ParseLabels(absl::string_view text, std::map<std::string, std::string>* labels) {
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ',' || text[i] == ' ')) ++i;
    if (i >= text.size()) break;
    const size_t eq = text.find('=', i);
    if (eq == absl::string_view::npos || eq + 1 >= text.size() || text[eq + 1] != '"') {
      return false;
    }
    std::string key(absl::StripAsciiWhitespace(text.substr(i, eq - i)));
    std::string value;
    size_t j = eq + 2;
    for (; j < text.size() && text[j] != '"'; ++j) {
      if (text[j] == '\\' && j + 1 < text.size()) {
        ++j;
        value.push_back(text[j] == 'n' ? '\n' : text[j]);
      } else {
        value.push_back(text[j]);
      }
    }
    if (j >= text.size()) return false;
    (*labels)[key] = value;
    i = j + 1;
  }
  return true;
}

double Find(const std::map<std::string, double>& values, const std::string& key) {
  auto it = values.find(key);
  return it == values.end() ? 0 : it->second;
}

}  // namespace

absl::StatusOr<std::vector<PromSample>> ParsePrometheusText(absl::string_view text) {
  std::vector<PromSample> samples;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    PromSample s;
    absl::string_view rest;
    const size_t brace = line.find('{');
    const size_t space = line.find(' ');
    if (brace != absl::string_view::npos && (space == absl::string_view::npos || brace < space)) {
      const size_t close = line.rfind('}');
      if (close == absl::string_view::npos || close < brace ||
          !ParseLabels(line.substr(brace + 1, close - brace - 1), &s.labels)) {
        return absl::InvalidArgumentError(
            absl::StrCat("metrics line ", line_number, ": bad labels: ", line));
      }
      s.name = std::string(line.substr(0, brace));
      rest = line.substr(close + 1);
    } else {
      if (space == absl::string_view::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("metrics line ", line_number, ": no value: ", line));
      }
      s.name = std::string(line.substr(0, space));
      rest = line.substr(space);
    }
    // The value, then an optional timestamp.
    std::vector<absl::string_view> fields =
        absl::StrSplit(absl::StripAsciiWhitespace(rest), ' ', absl::SkipEmpty());
    if (fields.empty() || !ParseValue(fields[0], &s.value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics line ", line_number, ": bad value: ", line));
    }
    samples.push_back(std::move(s));
  }
  return samples;
}

absl::StatusOr<std::string> HttpGet(absl::string_view url, absl::Duration timeout) {
  absl::string_view rest = url;
  if (!absl::ConsumePrefix(&rest, "http://")) {
    return absl::InvalidArgumentError(absl::StrCat("'", url, "' is not an http:// URL"));
  }
  const size_t slash = rest.find('/');
  const absl::string_view host_port = rest.substr(0, slash);
  const std::string path = slash == absl::string_view::npos ? "/" : std::string(rest.substr(slash));
  const size_t colon = host_port.rfind(':');
  std::string host(host_port.substr(0, colon));
  const std::string port = colon == absl::string_view::npos
                               ? std::string("80")
                               : std::string(host_port.substr(colon + 1));
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* resolved = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &resolved); rc != 0) {
    return absl::UnavailableError(absl::StrCat(url, ": cannot resolve: ", gai_strerror(rc)));
  }
  const int timeout_ms = static_cast<int>(absl::ToInt64Milliseconds(timeout));
  int fd = -1;
  std::string error = "no address";
  for (addrinfo* ai = resolved; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) continue;
    // SO_SNDTIMEO bounds connect() too on Linux.
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      error = std::strerror(errno);
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(resolved);
  if (fd < 0) return absl::UnavailableError(absl::StrCat(url, ": cannot connect: ", error));
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", host, "\r\nConnection: close\r\n\r\n");
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    close(fd);
    return absl::UnavailableError(absl::StrCat(url, ": send failed"));
  }
  std::string response;
  char buffer[8192];
  ssize_t n;
  while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0) response.append(buffer, n);
  const bool timed_out = n < 0;
  close(fd);
  if (timed_out) return absl::DeadlineExceededError(absl::StrCat(url, ": read timed out"));
  const size_t body = response.find("\r\n\r\n");
  const absl::string_view status_line =
      absl::string_view(response).substr(0, response.find("\r\n"));
  if (!absl::StartsWith(status_line, "HTTP/1.") || body == std::string::npos) {
    return absl::UnavailableError(absl::StrCat(url, ": not an HTTP response"));
  }
  if (!absl::StrContains(status_line, " 200")) {
    return absl::UnavailableError(absl::StrCat(url, ": ", status_line));
  }
  return response.substr(body + 4);
}

double HistogramQuantile(const std::vector<std::pair<double, double>>& buckets, double q) {
  if (buckets.empty() || buckets.back().second <= 0) return 0;
  const double rank = q * buckets.back().second;
  double lower = 0, below = 0;
  for (const auto& [bound, cumulative] : buckets) {
    if (cumulative >= rank) {
      if (std::isinf(bound)) return lower;
      const double in_bucket = cumulative - below;
      if (in_bucket <= 0) return bound;
      return lower + (bound - lower) * (rank - below) / in_bucket;
    }
    lower = bound;
    below = cumulative;
  }
  return lower;
}

std::string SeriesKey(const PromSample& sample) {
  if (sample.labels.empty()) return sample.name;
  std::vector<std::string> parts;
  for (const auto& [k, v] : sample.labels) parts.push_back(absl::StrCat(k, "=\"", v, "\""));
  return absl::StrCat(sample.name, "{", absl::StrJoin(parts, ","), "}");
}

MetricsDelta DiffMetrics(const std::vector<PromSample>& before,
                         const std::vector<PromSample>& after, const std::string& model) {
  auto relevant = [&](const PromSample& s) {
    if (!absl::StartsWith(s.name, "nimble_")) return false;
    auto it = s.labels.find("model");
    return it == s.labels.end() || it->second == model;
  };
  std::map<std::string, double> old_values;
  for (const PromSample& s : before) {
    if (relevant(s)) old_values[SeriesKey(s)] = s.value;
  }
  MetricsDelta out;
  // stage -> (le -> cumulative count delta), sum and count deltas.
  std::map<std::string, std::map<double, double>> buckets;
  std::map<std::string, std::pair<double, double>> sum_count;
  for (const PromSample& s : after) {
    if (!relevant(s)) continue;
    const std::string key = SeriesKey(s);
    const double delta = s.value - Find(old_values, key);
    if (delta != 0) out.series[key] = delta;
    auto stage = s.labels.find("stage");
    if (stage == s.labels.end()) continue;
    if (s.name == "nimble_request_duration_seconds_bucket") {
      double le = 0;
      auto it = s.labels.find("le");
      if (it != s.labels.end() && ParseValue(it->second, &le)) buckets[stage->second][le] += delta;
    } else if (s.name == "nimble_request_duration_seconds_sum") {
      sum_count[stage->second].first += delta;
    } else if (s.name == "nimble_request_duration_seconds_count") {
      sum_count[stage->second].second += delta;
    }
  }
  for (const auto& [stage, sc] : sum_count) {
    StageDelta d;
    d.stage = stage;
    d.count = sc.second;
    d.mean_us = sc.second > 0 ? sc.first / sc.second * 1e6 : 0;
    std::vector<std::pair<double, double>> b(buckets[stage].begin(), buckets[stage].end());
    d.p50_us = HistogramQuantile(b, 0.50) * 1e6;
    d.p99_us = HistogramQuantile(b, 0.99) * 1e6;
    out.stages.push_back(d);
  }
  return out;
}

}  // namespace nimble::load
