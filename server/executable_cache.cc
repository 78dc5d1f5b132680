#include "server/executable_cache.h"

#include <openssl/evp.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "server/repository.h"
#include "spdlog/spdlog.h"

namespace nimble::server {
namespace {

// SHA-256 with OpenSSL's EVP interface, fed piece by piece.
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
  void Field(std::string_view bytes) {
    const uint64_t size = bytes.size();
    EVP_DigestUpdate(ctx_, &size, sizeof(size));
    EVP_DigestUpdate(ctx_, bytes.data(), bytes.size());
  }
  void Raw(std::string_view bytes) { EVP_DigestUpdate(ctx_, bytes.data(), bytes.size()); }
  std::string Hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    EVP_DigestFinal_ex(ctx_, digest, &size);
    return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), size));
  }

 private:
  EVP_MD_CTX* ctx_;
};

const std::vector<double>& CompileBuckets() {
  static const std::vector<double> buckets = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
  return buckets;
}

}  // namespace

std::string Sha256Hex(std::string_view bytes) {
  Sha256 sha;
  sha.Raw(bytes);
  return sha.Hex();
}

absl::StatusOr<std::string> Sha256FileHex(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read '", path, "'"));
  Sha256 sha;
  std::vector<char> chunk(1 << 20);
  while (in) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    sha.Raw(std::string_view(chunk.data(), static_cast<size_t>(in.gcount())));
  }
  if (in.bad()) return absl::InternalError(absl::StrCat("error reading '", path, "'"));
  return sha.Hex();
}

std::string ExecutableCacheKey(const CacheKeyInputs& inputs) {
  Sha256 sha;
  sha.Field("nimble-executable-cache-v1");
  sha.Field(inputs.compiler_version);
  sha.Field(inputs.device);
  sha.Field(inputs.canonical_config);
  for (const auto& [symbol, sizes] : inputs.buckets) {
    sha.Field(symbol);
    sha.Field(std::string_view(reinterpret_cast<const char*>(sizes.data()),
                               sizes.size() * sizeof(int64_t)));
  }
  if (inputs.model_files != nullptr) {
    for (const auto& [path, bytes] : *inputs.model_files) {
      sha.Field(path);
      sha.Field(bytes);
    }
  }
  return sha.Hex();
}

ExecutableCache::ExecutableCache(Options options, prometheus::Registry& registry)
    : options_(std::move(options)),
      compilations_family_(
          prometheus::BuildCounter()
              .Name("nimble_compilations_total")
              .Help("Model compilations (executable-cache misses that compiled), by "
                    "model and version.")
              .Register(registry)),
      compile_failures_family_(prometheus::BuildCounter()
                                   .Name("nimble_compile_failures_total")
                                   .Help("Compilations that failed, by model and version.")
                                   .Register(registry)),
      compile_seconds_family_(
          prometheus::BuildHistogram()
              .Name("nimble_compile_duration_seconds")
              .Help("Time to compile a model's executable, by model, version and "
                    "bucket (generic or specialized).")
              .Register(registry)),
      hits_family_(prometheus::BuildCounter()
                       .Name("nimble_executable_cache_hits_total")
                       .Help("Executables found in the cache, by model, version and tier "
                             "(memory or disk).")
                       .Register(registry)),
      misses_family_(prometheus::BuildCounter()
                         .Name("nimble_executable_cache_misses_total")
                         .Help("Executables in neither tier of the cache (compiled), by model "
                               "and version.")
                         .Register(registry)),
      memory_gauge_(prometheus::BuildGauge()
                        .Name("nimble_executable_cache_memory_bytes")
                        .Help("Serialized bytes of the executables the in-memory cache holds.")
                        .Register(registry)
                        .Add({})) {
  if (!options_.dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(options_.dir, ec);
    // Temp files of writes a crash interrupted.
    for (const auto& entry : std::filesystem::directory_iterator(options_.dir, ec)) {
      if (entry.path().filename().string().find(".tmp-") != std::string::npos) {
        std::filesystem::remove(entry.path(), ec);
      }
    }
  }
}

std::string ExecutableCache::DiskPath(const std::string& key) const {
  return (std::filesystem::path(options_.dir) / absl::StrCat(key, ".nbx")).string();
}

std::shared_ptr<const vm::Executable> ExecutableCache::LookupMemory(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->executable;
}

void ExecutableCache::InsertMemory(const std::string& key,
                                   std::shared_ptr<const vm::Executable> executable,
                                   int64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = index_.find(key); it != index_.end()) {
    memory_bytes_ -= it->second->bytes;
    lru_.erase(it->second);
    index_.erase(it);
  }
  lru_.push_front(Entry{key, std::move(executable), bytes});
  index_[key] = lru_.begin();
  memory_bytes_ += bytes;
  // Evict least recently used entries, but always keep the newest one.
  while (memory_bytes_ > options_.memory_bytes && lru_.size() > 1) {
    memory_bytes_ -= lru_.back().bytes;
    index_.erase(lru_.back().key);
    lru_.pop_back();
  }
  memory_gauge_.Set(static_cast<double>(memory_bytes_));
}

absl::StatusOr<ExecutableCache::Result> ExecutableCache::GetOrCompile(const std::string& key,
                                                                      const Labels& labels,
                                                                      const CompileFn& compile) {
  auto hit = [&](const char* tier) {
    hits_family_.Add({{"model", labels.model}, {"version", labels.version}, {"tier", tier}})
        .Increment();
  };
  if (auto exe = LookupMemory(key)) {
    hit("memory");
    return Result{std::move(exe), Source::kMemory};
  }
  if (!options_.dir.empty()) {
    const std::string path = DiskPath(key);
    std::error_code ec;
    if (std::filesystem::exists(path, ec)) {
      // LoadFile: one read into an aligned buffer whose weights the executable then views.
      std::error_code size_ec;
      const auto size = std::filesystem::file_size(path, size_ec);
      absl::StatusOr<std::shared_ptr<const vm::Executable>> exe = vm::Executable::LoadFile(path);
      if (exe.ok()) {
        hit("disk");
        // The mtime orders the disk tier's LRU.
        std::filesystem::last_write_time(path, std::filesystem::file_time_type::clock::now(), ec);
        InsertMemory(key, *exe, size_ec ? 0 : static_cast<int64_t>(size));
        return Result{*std::move(exe), Source::kDisk};
      }
      // A corrupt or stale file is not fatal: compile again and overwrite it.
      spdlog::warn("executable cache: ignoring '{}': {}", path,
                   std::string(exe.status().message()));
    }
  }
  // One compilation per key at a time: later callers wait for the first one's result.
  std::shared_ptr<InFlight> flight;
  bool leader = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto [it, inserted] = in_flight_.try_emplace(key);
    if (inserted) it->second = std::make_shared<InFlight>();
    flight = it->second;
    leader = inserted;
  }
  if (!leader) {
    absl::StatusOr<std::shared_ptr<const vm::Executable>> shared = flight->result.get();
    if (!shared.ok()) return shared.status();
    hit("memory");
    return Result{*std::move(shared), Source::kMemory};
  }
  absl::StatusOr<std::shared_ptr<const vm::Executable>> exe = CompileAndStore(key, labels, compile);
  flight->done.set_value(exe);
  {
    std::lock_guard<std::mutex> lock(mu_);
    in_flight_.erase(key);
  }
  if (!exe.ok()) return exe.status();
  return Result{*std::move(exe), Source::kCompiled};
}

absl::StatusOr<std::shared_ptr<const vm::Executable>> ExecutableCache::CompileAndStore(
    const std::string& key, const Labels& labels, const CompileFn& compile) {
  const prometheus::Labels model = {{"model", labels.model}, {"version", labels.version}};
  misses_family_.Add(model).Increment();
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::shared_ptr<const vm::Executable>> exe = compile();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!exe.ok()) {
    compile_failures_family_.Add(model).Increment();
    return exe.status();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++compilations_;
  }
  compilations_family_.Add(model).Increment();
  prometheus::Labels with_bucket = model;
  with_bucket["bucket"] = labels.bucket;
  compile_seconds_family_.Add(with_bucket, CompileBuckets()).Observe(seconds);
  absl::StatusOr<std::string> bytes = (*exe)->Serialize();
  int64_t size = bytes.ok() ? static_cast<int64_t>(bytes->size()) : 0;
  if (!options_.dir.empty() && bytes.ok()) {
    absl::Status saved = WriteFileAtomically(DiskPath(key), *bytes);
    if (!saved.ok()) {
      spdlog::warn("executable cache: cannot save: {}", std::string(saved.message()));
    } else if (options_.disk_bytes > 0) {
      TrimDisk(DiskPath(key));
    }
  }
  InsertMemory(key, *exe, size);
  return exe;
}

void ExecutableCache::TrimDisk(const std::string& keep) {
  namespace fs = std::filesystem;
  struct File {
    fs::file_time_type used;
    uintmax_t size;
    fs::path path;
  };
  std::vector<File> files;
  uintmax_t total = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(options_.dir, ec)) {
    if (entry.path().extension() != ".nbx") continue;
    const uintmax_t size = entry.file_size(ec);
    if (ec) continue;
    files.push_back({entry.last_write_time(ec), size, entry.path()});
    total += size;
  }
  std::sort(files.begin(), files.end(),
            [](const File& a, const File& b) { return a.used < b.used; });
  for (const File& f : files) {
    if (total <= static_cast<uintmax_t>(options_.disk_bytes)) break;
    if (f.path == keep) continue;
    if (fs::remove(f.path, ec)) {
      total -= f.size;
      spdlog::info("executable cache: evicted '{}' from disk", f.path.filename().string());
    }
  }
}

bool ExecutableCache::Contains(const std::string& key) const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (index_.contains(key)) return true;
  }
  std::error_code ec;
  return !options_.dir.empty() && std::filesystem::exists(DiskPath(key), ec);
}

int64_t ExecutableCache::compilations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return compilations_;
}

int64_t ExecutableCache::memory_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return memory_bytes_;
}

}  // namespace nimble::server
