#include "server/executable_cache.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <thread>

#include "base/testing/status_matchers.h"
#include "compiler/driver/compiler.h"
#include "compiler/frontend/onnx/onnx_importer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/test_models.h"

namespace nimble::server {
namespace {

using ::nimble::testing::StatusIs;

absl::StatusOr<std::shared_ptr<const vm::Executable>> CompileBytes(const std::string& onnx) {
  NIMBLE_ASSIGN_OR_RETURN(auto module, compiler::ImportOnnxModelFromBytes(onnx, ""));
  return compiler::CompileModule(*module);
}

TEST(ExecutableCacheKeyTest, DependsOnEveryPartButNotOnPaths) {
  const std::map<std::string, std::string> files = {{"model.onnx", "abc"}};
  const std::map<std::string, std::string> other = {{"model.onnx", "abd"}};
  CacheKeyInputs base;
  base.model_files = &files;
  base.canonical_config = "c";
  base.compiler_version = "v1";
  const std::string key = ExecutableCacheKey(base);
  EXPECT_EQ(key.size(), 64u);
  EXPECT_EQ(ExecutableCacheKey(base), key);
  auto changed = [&](auto mutate) {
    CacheKeyInputs k = base;
    mutate(k);
    return ExecutableCacheKey(k);
  };
  EXPECT_NE(changed([&](CacheKeyInputs& k) { k.model_files = &other; }), key);
  EXPECT_NE(changed([](CacheKeyInputs& k) { k.canonical_config = "d"; }), key);
  EXPECT_NE(changed([](CacheKeyInputs& k) { k.compiler_version = "v2"; }), key);
  EXPECT_NE(changed([](CacheKeyInputs& k) { k.device = "cuda:0"; }), key);
  EXPECT_NE(changed([](CacheKeyInputs& k) { k.buckets["seq"] = {16}; }), key);
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string path = ::testing::TempDir() + "/nimble_sha256_file";
  std::string big(3 << 20, 'x');  // over one read chunk
  big += "abc";
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    std::fwrite(big.data(), 1, big.size(), f);
    std::fclose(f);
  }
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::string digest, Sha256FileHex(path));
  EXPECT_EQ(digest, Sha256Hex(big));
  EXPECT_THAT(Sha256FileHex(path + ".missing"), StatusIs(absl::StatusCode::kNotFound));
}

TEST(ExecutableCacheTest, MemoryThenDiskThenCompile) {
  const std::string dir = ::testing::TempDir() + "/nimble_executable_cache_test";
  std::filesystem::remove_all(dir);
  const std::string onnx = testing::ElementwiseModel("Add");
  int compiles = 0;
  auto compile = [&] {
    ++compiles;
    return CompileBytes(onnx);
  };
  {
    prometheus::Registry registry;
    ExecutableCache cache({dir, 1 << 30, 0}, registry);
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto first, cache.GetOrCompile("k1", {"m", "1"}, compile));
    EXPECT_EQ(first.source, ExecutableCache::Source::kCompiled);
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto second, cache.GetOrCompile("k1", {"m", "1"}, compile));
    EXPECT_EQ(second.source, ExecutableCache::Source::kMemory);
    EXPECT_EQ(second.executable, first.executable);
    EXPECT_EQ(cache.compilations(), 1);
    EXPECT_TRUE(std::filesystem::exists(dir + "/k1.nbx"));
  }
  {
    prometheus::Registry registry;  // a restart: empty memory, same directory
    ExecutableCache cache({dir, 1 << 30, 0}, registry);
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto loaded, cache.GetOrCompile("k1", {"m", "1"}, compile));
    EXPECT_EQ(loaded.source, ExecutableCache::Source::kDisk);
    EXPECT_EQ(loaded.executable->inputs.size(), 1u);
    EXPECT_EQ(cache.compilations(), 0);
  }
  EXPECT_EQ(compiles, 1);
  // A corrupt file is recompiled, not fatal.
  {
    std::FILE* f = std::fopen((dir + "/k1.nbx").c_str(), "wb");
    std::fputs("garbage", f);
    std::fclose(f);
    prometheus::Registry registry;
    ExecutableCache cache({dir, 1 << 30, 0}, registry);
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto again, cache.GetOrCompile("k1", {"m", "1"}, compile));
    EXPECT_EQ(again.source, ExecutableCache::Source::kCompiled);
  }
  EXPECT_EQ(compiles, 2);
}

TEST(ExecutableCacheTest, DiskTierIsBoundedLeastRecentlyUsedFirst) {
  const std::string dir = ::testing::TempDir() + "/nimble_executable_cache_disk_test";
  std::filesystem::remove_all(dir);
  prometheus::Registry registry;
  const std::string onnx = testing::ElementwiseModel("Add");
  auto compile = [&] { return CompileBytes(onnx); };
  // Each file is the same size; the bound holds two of them.
  ExecutableCache probe({dir, 1 << 30, 0}, registry);
  ASSERT_TRUE(probe.GetOrCompile("size", {"m", "1"}, compile).ok());
  const auto size = std::filesystem::file_size(dir + "/size.nbx");
  std::filesystem::remove(dir + "/size.nbx");
  ExecutableCache cache({dir, 1 << 30, static_cast<int64_t>(2 * size + size / 2)}, registry);
  auto age = [&](const std::string& key, int seconds_ago) {
    std::filesystem::last_write_time(
        dir + "/" + key + ".nbx",
        std::filesystem::file_time_type::clock::now() - std::chrono::seconds(seconds_ago));
  };
  ASSERT_TRUE(cache.GetOrCompile("a", {"m", "1"}, compile).ok());
  age("a", 30);
  ASSERT_TRUE(cache.GetOrCompile("b", {"m", "1"}, compile).ok());
  age("b", 20);
  ASSERT_TRUE(cache.GetOrCompile("c", {"m", "1"}, compile).ok());  // evicts a, the oldest
  EXPECT_FALSE(std::filesystem::exists(dir + "/a.nbx"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/b.nbx"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/c.nbx"));
}

TEST(ExecutableCacheTest, ConcurrentRequestsForOneKeyCompileOnce) {
  prometheus::Registry registry;
  ExecutableCache cache({"", 1 << 30, 0}, registry);
  const std::string onnx = testing::ElementwiseModel("Add");
  std::atomic<int> compiles{0};
  std::promise<void> started, release;
  std::shared_future<void> released = release.get_future().share();
  std::thread first([&] {
    auto r = cache.GetOrCompile("k", {"m", "1"}, [&] {
      ++compiles;
      started.set_value();
      released.wait();
      return CompileBytes(onnx);
    });
    EXPECT_TRUE(r.ok() && r->source == ExecutableCache::Source::kCompiled);
  });
  started.get_future().wait();
  std::thread second([&] {
    auto r = cache.GetOrCompile("k", {"m", "1"}, [&] {
      ++compiles;
      return CompileBytes(onnx);
    });
    EXPECT_TRUE(r.ok() && r->source == ExecutableCache::Source::kMemory);
  });
  release.set_value();
  first.join();
  second.join();
  EXPECT_EQ(compiles.load(), 1);
  EXPECT_EQ(cache.compilations(), 1);
}

TEST(ExecutableCacheTest, LruIsBoundedAndFailuresAreNotCached) {
  prometheus::Registry registry;
  ExecutableCache cache({"", 1, 0}, registry);  // 1 byte: keeps only the newest entry
  const std::string onnx = testing::ElementwiseModel("Add");
  int compiles = 0;
  auto compile = [&] {
    ++compiles;
    return CompileBytes(onnx);
  };
  ASSERT_TRUE(cache.GetOrCompile("a", {"m", "1"}, compile).ok());
  ASSERT_TRUE(cache.GetOrCompile("b", {"m", "1"}, compile).ok());
  ASSERT_TRUE(cache.GetOrCompile("a", {"m", "1"}, compile).ok());  // evicted by b
  EXPECT_EQ(compiles, 3);
  auto failing = [] {
    return absl::StatusOr<std::shared_ptr<const vm::Executable>>(
        absl::InvalidArgumentError("bad model"));
  };
  EXPECT_THAT(cache.GetOrCompile("c", {"m", "1"}, failing),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(cache.GetOrCompile("c", {"m", "1"}, failing),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace nimble::server
