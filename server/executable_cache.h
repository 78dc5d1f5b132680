// The executable cache: compiled models by content digest, in memory (LRU bounded by bytes) and
// on disk (<cache-dir>/<digest>.nbx, written atomically), so restarts and re-uploads of the same
// bytes load instead of compiling.
//
// The key is a SHA-256 of everything that decides the compiled code — the model's files, the
// canonical config, the compiler version, the device and the bucket set — never a path, so a
// renamed model hits and a changed byte misses.
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "vm/executable.h"

namespace nimble::server {

struct CacheKeyInputs {
  // Relative path -> the file's bytes, or (for large files) their Sha256FileHex digest.
  const std::map<std::string, std::string>* model_files = nullptr;
  std::string canonical_config;
  std::string compiler_version;
  std::string device = "cpu";
  std::map<std::string, std::vector<int64_t>> buckets;
};

// Lower-case hex SHA-256 over a length-prefixed encoding of every part.
std::string ExecutableCacheKey(const CacheKeyInputs& inputs);

// Lower-case hex SHA-256 of `bytes`.
std::string Sha256Hex(std::string_view bytes);

// Lower-case hex SHA-256 of a file, read in chunks (model weights need not fit in memory twice).
absl::StatusOr<std::string> Sha256FileHex(const std::string& path);

// Thread-safe: one mutex guards the LRU and the table of compilations in flight; compilations
// run outside it, one per key (concurrent loads of identical bytes wait for the first).
class ExecutableCache {
 public:
  struct Options {
    std::string dir;                          // "" = memory only
    int64_t memory_bytes = int64_t{1} << 30;  // LRU bound (serialized sizes)
    int64_t disk_bytes = 0;  // bound of the directory's .nbx files (0 = none); least recently
                             // used (by mtime, refreshed on each hit) go first
  };
  enum class Source { kMemory, kDisk, kCompiled };
  struct Result {
    std::shared_ptr<const vm::Executable> executable;
    Source source = Source::kCompiled;
  };
  using CompileFn = std::function<absl::StatusOr<std::shared_ptr<const vm::Executable>>()>;
  // Who asked, for the metrics' labels.
  struct Labels {
    std::string model;
    std::string version;
    // "generic" for an executable with only the generic variant, "specialized" for one with a
    // variant per shape bucket (compiled in one go).
    std::string bucket = "generic";
  };

  ExecutableCache(Options options, prometheus::Registry& registry);

  // The executable for `key`: from memory, else from disk, else compile() (timed, counted
  // against `labels` in the metrics) and stored in both.
  absl::StatusOr<Result> GetOrCompile(const std::string& key, const Labels& labels,
                                      const CompileFn& compile);

  // Whether `key` is in memory or on disk (no load, no metrics).
  bool Contains(const std::string& key) const;

  int64_t compilations() const;
  int64_t memory_bytes() const;

 private:
  struct Entry {
    std::string key;
    std::shared_ptr<const vm::Executable> executable;
    int64_t bytes = 0;
  };
  std::shared_ptr<const vm::Executable> LookupMemory(const std::string& key);
  void InsertMemory(const std::string& key, std::shared_ptr<const vm::Executable> executable,
                    int64_t bytes);
  std::string DiskPath(const std::string& key) const;
  absl::StatusOr<std::shared_ptr<const vm::Executable>> CompileAndStore(const std::string& key,
                                                                        const Labels& labels,
                                                                        const CompileFn& compile);
  // Deletes the least recently used .nbx files until the directory fits disk_bytes; `keep`
  // (just written) stays.
  void TrimDisk(const std::string& keep);

  const Options options_;
  struct InFlight {
    std::promise<absl::StatusOr<std::shared_ptr<const vm::Executable>>> done;
    std::shared_future<absl::StatusOr<std::shared_ptr<const vm::Executable>>> result =
        done.get_future().share();
  };

  mutable std::mutex mu_;  // guards lru_, index_, memory_bytes_, compilations_, in_flight_
  std::list<Entry> lru_;   // most recent first
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
  int64_t memory_bytes_ = 0;
  int64_t compilations_ = 0;
  std::unordered_map<std::string, std::shared_ptr<InFlight>> in_flight_;

  prometheus::Family<prometheus::Counter>& compilations_family_;
  prometheus::Family<prometheus::Counter>& compile_failures_family_;
  prometheus::Family<prometheus::Histogram>& compile_seconds_family_;
  prometheus::Family<prometheus::Counter>& hits_family_;
  prometheus::Family<prometheus::Counter>& misses_family_;
  prometheus::Gauge& memory_gauge_;
};

}  // namespace nimble::server
