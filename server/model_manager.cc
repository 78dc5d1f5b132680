#include "server/model_manager.h"

#include <algorithm>
#include <atomic>
#include <set>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "compiler/driver/compiler.h"
#include "server/gpu_support.h"
#include "spdlog/spdlog.h"

namespace nimble::server {

absl::string_view VersionStateName(VersionState state) {
  switch (state) {
    case VersionState::kLoading:
      return "LOADING";
    case VersionState::kReady:
      return "READY";
    case VersionState::kUnavailable:
      return "UNAVAILABLE";
  }
  return "UNAVAILABLE";
}

ModelManager::ModelManager(ModelRepository* repository, ExecutableCache* cache, Options options)
    : repository_(repository),
      cache_(cache),
      options_(std::move(options)),
      compile_pool_(options_.compile_threads) {}

ModelManager::~ModelManager() { stopping_.store(true, std::memory_order_release); }

bool ModelManager::IsCurrent(const std::string& model, uint64_t generation) const {
  auto it = models_.find(model);
  return it != models_.end() && it->second.generation == generation && !it->second.unloaded;
}

void ModelManager::Load(const std::string& model, ModelUpload upload, Done done) {
  if (absl::Status name = ValidateModelName(model); !name.ok()) {
    done(name);
    return;
  }
  uint64_t generation = 0;
  std::shared_ptr<std::mutex> load_mu;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Entry& entry = models_[model];
    generation = ++entry.generation;
    entry.unloaded = false;
    entry.reason.clear();
    load_mu = entry.load_mu;
    for (auto& [version, slot] : entry.versions) {
      if (slot.instance == nullptr) slot.state = VersionState::kLoading;
    }
  }
  compile_pool_.Submit(
      [this, model, generation, load_mu, upload = std::move(upload), done = std::move(done)] {
        std::lock_guard<std::mutex> serial(*load_mu);
        if (stopping_.load(std::memory_order_acquire)) {
          done(absl::UnavailableError("the server is shutting down"));
          return;
        }
        if (options_.on_load_start) options_.on_load_start(model);
        absl::Status status = LoadNow(model, generation, upload, load_mu);
        if (!status.ok())
          spdlog::error("loading model '{}': {}", model, std::string(status.message()));
        done(status);
      });
}

absl::Status ModelManager::LoadNow(const std::string& model, uint64_t generation,
                                   const ModelUpload& upload,
                                   const std::shared_ptr<std::mutex>& load_mu) {
  auto fail_model = [&](absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!IsCurrent(model, generation)) return status;
    CountLoadFailure(model, "");
    Entry& entry = models_[model];
    entry.reason = std::string(status.message());
    for (auto& [version, slot] : entry.versions) {
      if (slot.instance == nullptr) {
        slot.state = VersionState::kUnavailable;
        slot.reason = entry.reason;
      }
    }
    return status;
  };
  // A rejected upload changes nothing on disk: a model that did not exist is forgotten again,
  // versions of one that did keep what they serve.
  auto abandon = [&](absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!IsCurrent(model, generation)) return status;
    Entry& entry = models_[model];
    if (entry.versions.empty()) {
      models_.erase(model);
      return status;
    }
    for (auto& [version, slot] : entry.versions) {
      if (slot.instance == nullptr && slot.state == VersionState::kLoading) {
        slot.state = VersionState::kUnavailable;
        slot.reason = std::string(status.message());
      }
    }
    return status;
  };
  if (!upload.files.empty() || upload.config_json.has_value()) {
    // Check the config before the upload replaces a working model.
    if (upload.config_json.has_value()) {
      if (absl::Status parsed = ParseModelConfig(*upload.config_json).status(); !parsed.ok()) {
        return abandon(parsed);
      }
    }
    absl::Status written = upload.files.empty()
                               ? repository_->WriteConfig(model, *upload.config_json)
                               : repository_->WriteModel(model, upload.config_json, upload.files);
    if (!written.ok()) return abandon(written);
  }
  if (!repository_->HasModel(model)) {
    return abandon(absl::NotFoundError(
        absl::StrCat("model '", model,
                     "' is not in the repository (upload it with file:<version>/"
                     "model.onnx parameters)")));
  }
  auto config_text = repository_->ReadConfig(model);
  if (!config_text.ok()) return fail_model(config_text.status());
  auto config = ParseModelConfig(*config_text);
  if (!config.ok())
    return fail_model(Annotate(config.status(), absl::StrCat("model '", model, "'")));
  auto versions = repository_->ListVersions(model);
  if (!versions.ok()) return fail_model(versions.status());

  {
    // Versions no longer on disk go away; new ones appear as loading.
    std::lock_guard<std::mutex> lock(mu_);
    if (!IsCurrent(model, generation)) {
      return absl::AbortedError(
          absl::StrCat("model '", model, "' was unloaded or reloaded while it loaded"));
    }
    Entry& entry = models_[model];
    for (auto it = entry.versions.begin(); it != entry.versions.end();) {
      if (std::find(versions->begin(), versions->end(), it->first) == versions->end()) {
        if (it->second.instance) Retire(std::move(it->second.instance), /*replaced=*/false);
        it = entry.versions.erase(it);
      } else {
        ++it;
      }
    }
    for (int64_t v : *versions) entry.versions.try_emplace(v);
  }

  absl::Status first_error;
  for (int64_t version : *versions) {
    bool needs_specialization = false;
    auto instance =
        LoadVersion(model, version, *config, /*generic_first=*/true, &needs_specialization);
    std::lock_guard<std::mutex> lock(mu_);
    if (!IsCurrent(model, generation)) {
      if (instance.ok()) Retire(*std::move(instance), /*replaced=*/false);
      return absl::AbortedError(
          absl::StrCat("model '", model, "' was unloaded or reloaded while it loaded"));
    }
    Slot& slot = models_[model].versions[version];
    if (!instance.ok()) {
      CountLoadFailure(model, std::to_string(version));
      spdlog::error("model '{}' version {} is unavailable: {}", model, version,
                    std::string(instance.status().message()));
      if (first_error.ok()) first_error = instance.status();
      // A failed reload keeps the old version serving.
      if (slot.instance == nullptr) {
        slot.state = VersionState::kUnavailable;
        slot.reason = std::string(instance.status().message());
      }
      continue;
    }
    if (slot.instance) Retire(std::move(slot.instance), /*replaced=*/true);
    slot.instance = *std::move(instance);
    slot.state = VersionState::kReady;
    slot.reason.clear();
    spdlog::info("model '{}' version {} is READY{}", model, version,
                 needs_specialization ? " (generic variant; specializing buckets)" : "");
    if (needs_specialization) {
      compile_pool_.Submit([this, model, version, generation, config = *config, load_mu] {
        Specialize(model, version, generation, config, load_mu);
      });
    }
  }
  return first_error;
}

void ModelManager::Specialize(const std::string& model, int64_t version, uint64_t generation,
                              const ModelConfigFile& config,
                              const std::shared_ptr<std::mutex>& load_mu) {
  std::lock_guard<std::mutex> serial(*load_mu);
  if (stopping_.load(std::memory_order_acquire)) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!IsCurrent(model, generation)) return;
  }
  auto instance = LoadVersion(model, version, config, /*generic_first=*/false, nullptr);
  std::lock_guard<std::mutex> lock(mu_);
  if (!instance.ok()) {
    spdlog::error(
        "model '{}' version {}: specialized variants failed, the generic one keeps "
        "serving: {}",
        model, version, std::string(instance.status().message()));
    return;
  }
  auto slot = IsCurrent(model, generation) ? models_[model].versions.find(version)
                                           : models_[model].versions.end();
  if (slot == models_[model].versions.end() || slot->second.instance == nullptr) {
    Retire(*std::move(instance), /*replaced=*/false);
    return;
  }
  Retire(std::move(slot->second.instance), /*replaced=*/true);
  slot->second.instance = *std::move(instance);
  spdlog::info("model '{}' version {} serves its specialized variants", model, version);
}

absl::StatusOr<std::shared_ptr<ModelInstance>> ModelManager::LoadVersion(
    const std::string& model, int64_t version, const ModelConfigFile& file_config,
    bool generic_first, bool* needs_specialization) {
  const std::string where = absl::StrCat("model '", model, "' version ", version);
  NIMBLE_ASSIGN_OR_RETURN(auto files, repository_->ListVersionFiles(model, version));
  std::map<std::string, std::string> digests;
  for (const auto& [relative, full] : files) {
    NIMBLE_ASSIGN_OR_RETURN(digests[relative], Sha256FileHex(full));
  }
  // Where the version runs: GPU instances per instance_groups.gpu (and CPU ones only when
  // instance_groups.cpu.count says so), else CPU instances.
  std::vector<ExecutionTarget> targets;
  if (HasGpuGroup(file_config)) {
    const config::GpuGroup& gpu = file_config.instance_groups().gpu();
    std::vector<int> ordinals(gpu.devices().begin(), gpu.devices().end());
    if (ordinals.empty()) {
      auto visible = VisibleGpus();
      if (!visible.ok()) {
        return Annotate(visible.status(), absl::StrCat(where, ": instance_groups.gpu"));
      }
      for (const GpuInfo& g : *visible) ordinals.push_back(g.ordinal);
    } else {
      NIMBLE_RETURN_IF_ERROR(
          Annotate(CheckGpus(ordinals), absl::StrCat(where, ": instance_groups.gpu")));
    }
    for (int ordinal : ordinals) {
      ExecutionTarget t;
      t.device = vm::Device{vm::DeviceType::kCUDA, ordinal};
      t.instances = std::max(1, gpu.count()) * std::max(1, gpu.streams());
      t.threads = 1;  // host-side kernels (shape arithmetic) of a GPU call
      t.device_graphs = gpu.graphs();
      targets.push_back(std::move(t));
    }
  }
  if (targets.empty() || file_config.instance_groups().cpu().count() > 0) {
    ExecutionTarget t;
    t.instances = CpuInstanceCount(file_config);
    t.threads = CpuThreadsPerInstance(file_config);
    targets.push_back(std::move(t));
  }

  CacheKeyInputs key_inputs;
  key_inputs.model_files = &digests;
  key_inputs.canonical_config = CanonicalConfigBytes(file_config);
  key_inputs.compiler_version = compiler::kCompilerVersion;
  key_inputs.buckets = CompileBuckets(file_config);
  auto device_key = [&](const vm::Device& device) {
    return device.type == vm::DeviceType::kCPU ? options_.device : device.ToString();
  };
  if (generic_first && !key_inputs.buckets.empty()) {
    // The generic variant first unless every target's specialized executable is cached.
    for (const ExecutionTarget& t : targets) {
      key_inputs.device = device_key(t.device);
      if (!cache_->Contains(ExecutableCacheKey(key_inputs))) {
        key_inputs.buckets.clear();
        *needs_specialization = true;
        break;
      }
    }
  }
  const std::string path = repository_->ModelPath(model, version);
  ExecutableCache::Labels labels{model, std::to_string(version),
                                 key_inputs.buckets.empty() ? "generic" : "specialized"};
  for (ExecutionTarget& t : targets) {
    key_inputs.device = device_key(t.device);
    const std::string key = ExecutableCacheKey(key_inputs);
    auto cached = cache_->GetOrCompile(
        key, labels, [&]() -> absl::StatusOr<std::shared_ptr<const vm::Executable>> {
          spdlog::info("{}: compiling for {} (cache key {})", where, t.device.ToString(),
                       key.substr(0, 16));
          compiler::CompileOptions options;
          options.buckets = key_inputs.buckets;
          options.device = t.device;
          if (t.device.type != vm::DeviceType::kCPU &&
              !file_config.instance_groups().gpu().precision().empty()) {
            NIMBLE_ASSIGN_OR_RETURN(
                options.precision,
                compiler::ParsePrecision(file_config.instance_groups().gpu().precision()));
          }
          return compiler::CompileOnnxFile(path, options);
        });
    if (!cached.ok()) return Annotate(cached.status(), absl::StrCat(where, ": compiling"));
    if (cached->source != ExecutableCache::Source::kCompiled) {
      spdlog::info("{}: {} executable from the {} cache", where, t.device.ToString(),
                   cached->source == ExecutableCache::Source::kMemory ? "memory" : "disk");
    }
    t.executable = cached->executable;
  }
  ModelConfigFile config = file_config;
  NIMBLE_RETURN_IF_ERROR(Annotate(ResolveAgainstModel(*targets.front().executable, config), where));
  NIMBLE_ASSIGN_OR_RETURN(auto instance,
                          ModelInstance::Create(model, version, std::move(targets), config));
  absl::Status warm = instance->WarmUp();
  if (!warm.ok()) {
    instance->Stop();
    return Annotate(warm, where);
  }
  return instance;
}

void ModelManager::LoadAll(std::function<void()> done) {
  auto models = repository_->ListModels();
  if (!models.ok() || models->empty()) {
    if (!models.ok()) spdlog::error("{}", std::string(models.status().message()));
    done();
    return;
  }
  auto remaining = std::make_shared<std::atomic<size_t>>(models->size());
  auto shared_done = std::make_shared<std::function<void()>>(std::move(done));
  for (const std::string& model : *models) {
    Load(model, {}, [remaining, shared_done](absl::Status) {
      if (remaining->fetch_sub(1) == 1) (*shared_done)();
    });
  }
}

absl::Status ModelManager::Unload(const std::string& model) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = models_.find(model);
  if (it == models_.end()) {
    if (repository_->HasModel(model)) return absl::OkStatus();  // not loaded: nothing to do
    return absl::NotFoundError(absl::StrCat("unknown model '", model, "'"));
  }
  Entry& entry = it->second;
  ++entry.generation;
  entry.unloaded = true;
  for (auto& [version, slot] : entry.versions) {
    if (slot.instance) Retire(std::move(slot.instance), /*replaced=*/false);
    slot.state = VersionState::kUnavailable;
    slot.reason = "unloaded";
  }
  spdlog::info("model '{}' unloaded", model);
  return absl::OkStatus();
}

void ModelManager::CountLoadFailure(const std::string& model, const std::string& version) {
  ++load_failures_[{model, version}];
}

std::vector<prometheus::MetricFamily> ModelManager::CollectMetrics() const {
  using prometheus::ClientMetric;
  using prometheus::MetricType;
  prometheus::MetricFamily ready{"nimble_model_ready",
                                 "1 while the model version is READY, 0 otherwise.",
                                 MetricType::Gauge,
                                 {}};
  prometheus::MetricFamily failures{
      "nimble_model_load_failures_total",
      "Loads of a model version that failed (import, compile or warm-up).",
      MetricType::Counter,
      {}};
  prometheus::MetricFamily memory{
      "nimble_model_memory_bytes",
      "Memory held by a loaded model version (constants and its instances' allocator).",
      MetricType::Gauge,
      {}};
  auto labels = [](const std::string& model, const std::string& version) {
    return std::vector<ClientMetric::Label>{{"model", model}, {"version", version}};
  };
  std::vector<std::pair<std::vector<ClientMetric::Label>, std::shared_ptr<ModelInstance>>> live;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, entry] : models_) {
      if (entry.unloaded) continue;
      for (const auto& [version, slot] : entry.versions) {
        ClientMetric m;
        m.label = labels(name, std::to_string(version));
        m.gauge.value = slot.state == VersionState::kReady ? 1 : 0;
        ready.metric.push_back(m);
        if (slot.instance) live.emplace_back(m.label, slot.instance);
      }
    }
    for (const auto& [key, count] : load_failures_) {
      ClientMetric m;
      m.label = labels(key.first, key.second);
      m.counter.value = static_cast<double>(count);
      failures.metric.push_back(std::move(m));
    }
  }
  prometheus::MetricFamily busy{"nimble_device_busy_seconds_total",
                                "Time a model version's instances spent running calls, by device.",
                                MetricType::Counter,
                                {}};
  // Outside the lock: the allocators have their own.
  for (auto& [l, instance] : live) {
    for (const auto& [device, bytes] : instance->memory_bytes()) {
      ClientMetric m;
      m.label = l;
      m.label.push_back({"device", device});
      m.gauge.value = static_cast<double>(bytes);
      memory.metric.push_back(std::move(m));
    }
    for (const auto& [device, seconds] : instance->busy_seconds()) {
      ClientMetric m;
      m.label = l;
      m.label.push_back({"device", device});
      m.counter.value = seconds;
      busy.metric.push_back(std::move(m));
    }
  }
  return {std::move(ready), std::move(failures), std::move(memory), std::move(busy)};
}

void ModelManager::Retire(std::shared_ptr<ModelInstance> instance, bool replaced) {
  instance->StopAccepting(replaced);
  retire_pool_.Submit([instance = std::move(instance)] { instance->Stop(); });
}

absl::StatusOr<std::shared_ptr<ModelInstance>> ModelManager::Get(const std::string& model,
                                                                 const std::string& version) const {
  int64_t wanted = 0;
  if (!version.empty() && (!absl::SimpleAtoi(version, &wanted) || wanted <= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model version '", version, "' is not a positive integer"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = models_.find(model);
  if (it == models_.end()) {
    if (repository_->HasModel(model)) {
      return absl::UnavailableError(absl::StrCat("model '", model, "' is not loaded"));
    }
    return absl::NotFoundError(absl::StrCat("unknown model '", model, "'"));
  }
  const Entry& entry = it->second;
  if (entry.unloaded) {
    return absl::UnavailableError(absl::StrCat("model '", model, "' is unloaded"));
  }
  if (!version.empty()) {
    auto v = entry.versions.find(wanted);
    if (v == entry.versions.end()) {
      return absl::NotFoundError(absl::StrCat("model '", model, "' has no version ", wanted));
    }
    if (v->second.instance) return v->second.instance;
    if (v->second.state == VersionState::kLoading) {
      return absl::UnavailableError(
          absl::StrCat("model '", model, "' version ", wanted, " is loading"));
    }
    return absl::UnavailableError(absl::StrCat("model '", model, "' version ", wanted,
                                               " is unavailable: ", v->second.reason));
  }
  bool loading = entry.versions.empty() && entry.reason.empty();
  std::string reason = entry.reason;
  for (auto v = entry.versions.rbegin(); v != entry.versions.rend(); ++v) {
    if (v->second.instance) return v->second.instance;
    if (v->second.state == VersionState::kLoading) loading = true;
    if (reason.empty()) reason = v->second.reason;
  }
  if (loading) return absl::UnavailableError(absl::StrCat("model '", model, "' is loading"));
  return absl::UnavailableError(absl::StrCat("model '", model, "' is unavailable: ", reason));
}

std::vector<ModelIndexEntry> ModelManager::Index() const {
  std::vector<ModelIndexEntry> index;
  std::set<std::string> listed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, entry] : models_) {
      listed.insert(name);
      if (entry.versions.empty()) {
        index.push_back({name, "",
                         entry.reason.empty() ? VersionState::kLoading : VersionState::kUnavailable,
                         entry.reason});
        continue;
      }
      for (const auto& [version, slot] : entry.versions) {
        index.push_back({name, std::to_string(version),
                         slot.instance ? VersionState::kReady : slot.state, slot.reason});
      }
    }
  }
  if (auto models = repository_->ListModels(); models.ok()) {
    for (const std::string& name : *models) {
      if (!listed.contains(name))
        index.push_back({name, "", VersionState::kUnavailable, "not loaded"});
    }
  }
  std::sort(index.begin(), index.end(), [](const ModelIndexEntry& a, const ModelIndexEntry& b) {
    return std::tie(a.name, a.version) < std::tie(b.name, b.version);
  });
  return index;
}

absl::StatusOr<std::vector<std::shared_ptr<ModelInstance>>> ModelManager::ReadyInstances(
    const std::string& model, const std::string& version) const {
  if (!model.empty()) {
    if (version.empty()) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!models_.contains(model) && !repository_->HasModel(model)) {
        return absl::NotFoundError(absl::StrCat("unknown model '", model, "'"));
      }
    } else {
      NIMBLE_ASSIGN_OR_RETURN(auto instance, Get(model, version));
      return std::vector<std::shared_ptr<ModelInstance>>{instance};
    }
  }
  std::vector<std::shared_ptr<ModelInstance>> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, entry] : models_) {
    if (!model.empty() && name != model) continue;
    for (const auto& [v, slot] : entry.versions) {
      if (slot.instance) out.push_back(slot.instance);
    }
  }
  return out;
}

std::vector<int64_t> ModelManager::ReadyVersions(const std::string& model) const {
  std::vector<int64_t> versions;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = models_.find(model);
  if (it == models_.end()) return versions;
  for (const auto& [v, slot] : it->second.versions) {
    if (slot.instance) versions.push_back(v);
  }
  return versions;
}

}  // namespace nimble::server
