#include "server/process_metrics.h"

#include <dirent.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

namespace nimble::server {
namespace {

prometheus::MetricFamily Family(const char* name, const char* help, prometheus::MetricType type,
                                double value) {
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  return prometheus::MetricFamily{name, help, type, {metric}};
}

int CountOpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int count = 0;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  return count - 1;  // the descriptor opendir itself holds
}

double BootTimeSeconds() {
  std::ifstream stat("/proc/stat");
  std::string key;
  while (stat >> key) {
    if (key == "btime") {
      double btime = 0;
      stat >> btime;
      return btime;
    }
    stat.ignore(1 << 20, '\n');
  }
  return 0;
}

}  // namespace

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  std::ifstream stat_file("/proc/self/stat");
  std::string line;
  if (!std::getline(stat_file, line)) return {};
  // The command name (field 2) may contain spaces; fields after it start past the last ')'.
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return {};
  std::istringstream fields(line.substr(close + 2));
  // Fields 3.. of proc(5): state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
  // utime stime cutime cstime priority nice num_threads itrealvalue starttime vsize rss.
  std::string skip;
  for (int i = 3; i <= 13; ++i) fields >> skip;
  double utime = 0, stime = 0, threads = 0, start_ticks = 0, vsize = 0, rss_pages = 0;
  fields >> utime >> stime;
  for (int i = 16; i <= 19; ++i) fields >> skip;
  fields >> threads >> skip >> start_ticks >> vsize >> rss_pages;
  if (!fields) return {};

  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> families = {
      Family("process_cpu_seconds_total", "User and system CPU time spent in seconds.",
             MetricType::Counter, (utime + stime) / ticks),
      Family("process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::Gauge,
             rss_pages * page),
      Family("process_virtual_memory_bytes", "Virtual memory size in bytes.", MetricType::Gauge,
             vsize),
      Family("process_threads", "Number of OS threads in the process.", MetricType::Gauge, threads),
      Family("process_start_time_seconds", "Start time of the process since the Unix epoch.",
             MetricType::Gauge, BootTimeSeconds() + start_ticks / ticks),
  };
  const int fds = CountOpenFds();
  if (fds >= 0) {
    families.push_back(
        Family("process_open_fds", "Number of open file descriptors.", MetricType::Gauge, fds));
  }
  return families;
}

}  // namespace nimble::server
