// The model manager: which versions of which models are loading, ready or unavailable, and the
// loaded ModelInstances that serve them.
//
// A load runs in the background on a compile pool: read config.json and every version's files,
// look the executable up in the ExecutableCache (compiling on a miss), check the config against
// it, start the instances, warm up, and only then publish the version as READY. Until then
// requests get kUnavailable "is loading". A reload of a model that is serving builds the new
// instances beside the old ones and swaps the shared_ptr under the table lock; the old ones stop
// taking jobs, finish what they queued and are joined on a retire thread — in-flight requests
// are never dropped. Unload does the same without a successor. A compile failure leaves that
// version UNAVAILABLE with the compiler's message as its reason; other models are untouched.
//
// With shape buckets in the config, a version first serves from the generic (symbolic) variant
// alone, which compiles fast, and the executable with the specialized variants compiles next on
// the pool and replaces it the same way a reload does; if the specialized executable is already
// in the cache (a restart), it is used at once.
//
// Each load of a model bumps its generation; a background load whose generation is no longer
// current (unloaded or reloaded meanwhile) discards its result.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "server/executable_cache.h"
#include "server/model_instance.h"
#include "server/repository.h"
#include "server/thread_pool.h"

namespace nimble::server {

enum class VersionState { kLoading, kReady, kUnavailable };
absl::string_view VersionStateName(VersionState state);  // "LOADING", "READY", "UNAVAILABLE"

struct ModelIndexEntry {
  std::string name;
  std::string version;  // "" for a model-level state (e.g. its config did not parse)
  VersionState state = VersionState::kUnavailable;
  std::string reason;
};

// What RepositoryModelLoad may bring: a new config.json and/or the files of a new model.
struct ModelUpload {
  std::optional<std::string> config_json;
  std::map<std::string, std::string> files;  // "file:<version>/<path>" -> bytes
};

// Thread-safe: one mutex guards the table; loads for one model are serialised.
class ModelManager {
 public:
  struct Options {
    int compile_threads = 1;
    std::string device = "cpu";
    // Called on the compile thread as each load of a model starts (tests hold loads here).
    std::function<void(const std::string& model)> on_load_start;
  };
  ModelManager(ModelRepository* repository, ExecutableCache* cache, Options options);
  ~ModelManager();

  using Done = std::function<void(absl::Status)>;

  // Writes `upload` (if any) to the repository, then (re)loads every version of `model` in the
  // background; `done` runs once with the outcome (OK when every version is READY).
  void Load(const std::string& model, ModelUpload upload, Done done);

  // Loads every model in the repository; `done` runs when all have finished (ok or not).
  void LoadAll(std::function<void()> done);

  // Unloads: new requests get kUnavailable, queued ones finish. kNotFound for unknown models.
  absl::Status Unload(const std::string& model);

  // The instance serving `model` at `version` ("" = the highest READY version).
  absl::StatusOr<std::shared_ptr<ModelInstance>> Get(const std::string& model,
                                                     const std::string& version) const;

  // Every known model version (and every model in the repository not loaded), sorted.
  std::vector<ModelIndexEntry> Index() const;

  // READY instances, filtered by name and version ("" = all).
  absl::StatusOr<std::vector<std::shared_ptr<ModelInstance>>> ReadyInstances(
      const std::string& model, const std::string& version) const;

  // Versions of `model` that are READY, ascending.
  std::vector<int64_t> ReadyVersions(const std::string& model) const;

  ExecutableCache& cache() { return *cache_; }

  // The per-version model metrics, read at scrape time: nimble_model_ready,
  // nimble_model_load_failures_total, nimble_model_memory_bytes (deploy/README.md's contract).
  std::vector<prometheus::MetricFamily> CollectMetrics() const;

 private:
  struct Slot {
    VersionState state = VersionState::kLoading;
    std::string reason;
    std::shared_ptr<ModelInstance> instance;  // the serving one (kept while a reload runs)
  };
  struct Entry {
    uint64_t generation = 0;
    bool unloaded = false;
    std::string reason;  // model-level failure (config, no versions)
    std::map<int64_t, Slot> versions;
    std::shared_ptr<std::mutex> load_mu = std::make_shared<std::mutex>();  // serialises loads
  };

  absl::Status LoadNow(const std::string& model, uint64_t generation, const ModelUpload& upload,
                       const std::shared_ptr<std::mutex>& load_mu);
  // Compiles (or finds in the cache) and starts a version. With `generic_first`, a config with
  // buckets whose specialized executable is not cached yet gets the generic one and
  // *needs_specialization is set.
  absl::StatusOr<std::shared_ptr<ModelInstance>> LoadVersion(const std::string& model,
                                                             int64_t version,
                                                             const ModelConfigFile& config,
                                                             bool generic_first,
                                                             bool* needs_specialization);
  // Background: replaces a READY generic version by its specialized executable.
  void Specialize(const std::string& model, int64_t version, uint64_t generation,
                  const ModelConfigFile& config, const std::shared_ptr<std::mutex>& load_mu);
  // Stops `instance` in the background (its queued jobs finish first).
  void Retire(std::shared_ptr<ModelInstance> instance, bool replaced);
  bool IsCurrent(const std::string& model, uint64_t generation) const;          // needs mu_
  void CountLoadFailure(const std::string& model, const std::string& version);  // needs mu_

  ModelRepository* repository_;
  ExecutableCache* cache_;
  const Options options_;
  std::atomic<bool> stopping_{false};  // destruction began: queued loads give up
  mutable std::mutex mu_;              // guards models_
  std::map<std::string, Entry> models_;
  // Failed loads by (model, version); version "" for a model-level failure.
  std::map<std::pair<std::string, std::string>, int64_t> load_failures_;  // guarded by mu_
  // Declared last: destroyed first, so their tasks finish while the table still exists.
  ThreadPool retire_pool_{1};
  ThreadPool compile_pool_;
};

}  // namespace nimble::server
