// Run-time compilation of CUDA C++ (NVRTC) to machine code for the local GPU, with an on-disk
// cache, and loading through the runtime's library API (cudaLibraryLoadData /
// cudaLibraryGetKernel / cudaLaunchKernel), so nothing links libcuda.
//
// The cache key is the SHA-256 of (format version, source, options, target arch, NVRTC
// version): a changed toolkit or GPU never reuses stale code. Entries are written to a temporary
// file and renamed into place, so concurrent processes and crashes leave either no entry or a
// whole one; an unreadable or non-ELF entry is recompiled and replaced.
//
// Kernels are looked up by name: declare them `extern "C" __global__` so the name is unmangled.
//
// Thread-safety: RtcCompiler methods may be called concurrently (counters are atomic, the disk
// protocol is rename-based). An RtcModule may be launched from several threads.
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace nimble::vm::cuda {

// A loaded CUBIN; unloaded on destruction (no launch of it may be in flight then).
class RtcModule {
 public:
  ~RtcModule();
  RtcModule(const RtcModule&) = delete;
  RtcModule& operator=(const RtcModule&) = delete;

  absl::StatusOr<cudaKernel_t> GetKernel(const std::string& name) const;
  // `args` holds one pointer per kernel parameter, as for cudaLaunchKernel.
  absl::Status Launch(cudaKernel_t kernel, dim3 grid, dim3 block, void** args, size_t shared_bytes,
                      cudaStream_t stream) const;

 private:
  friend class RtcCompiler;
  explicit RtcModule(cudaLibrary_t library) : library_(library) {}
  cudaLibrary_t library_;
};

struct RtcCompilerOptions {
  int device = 0;
  // Target as compute capability (90 = sm_90); 0 asks the device. Set, no GPU is needed to
  // compile (only to Load).
  int arch = 0;
  // Directory of the on-disk cache (created if missing); empty disables it.
  std::string cache_dir = "";
};

struct RtcStats {
  int64_t compilations = 0;  // NVRTC runs
  int64_t disk_hits = 0;     // CUBINs read from the cache
  int64_t disk_writes = 0;   // CUBINs added to the cache
};

class RtcCompiler {
 public:
  static absl::StatusOr<std::unique_ptr<RtcCompiler>> Create(const RtcCompilerOptions& options);

  // CUBIN for the local GPU. `name` only labels errors ("fused_add_gelu.cu"). A compilation
  // error is kInvalidArgument carrying NVRTC's log.
  absl::StatusOr<std::string> CompileToCubin(const std::string& source, const std::string& name,
                                             const std::vector<std::string>& options = {});
  absl::StatusOr<std::unique_ptr<RtcModule>> Load(const std::string& source,
                                                  const std::string& name,
                                                  const std::vector<std::string>& options = {});

  // "sm_90" for an H100.
  const std::string& arch() const { return arch_; }
  // Hex SHA-256 naming the cache entry for this source and options on this GPU and NVRTC.
  std::string CacheKey(const std::string& source, const std::vector<std::string>& options) const;
  RtcStats Stats() const;

 private:
  RtcCompiler(RtcCompilerOptions options, std::string arch, int nvrtc_major, int nvrtc_minor)
      : options_(std::move(options)),
        arch_(std::move(arch)),
        nvrtc_major_(nvrtc_major),
        nvrtc_minor_(nvrtc_minor) {}
  absl::StatusOr<std::string> Compile(const std::string& source, const std::string& name,
                                      const std::vector<std::string>& options);

  const RtcCompilerOptions options_;
  const std::string arch_;
  const int nvrtc_major_;
  const int nvrtc_minor_;
  std::atomic<int64_t> compilations_{0};
  std::atomic<int64_t> disk_hits_{0};
  std::atomic<int64_t> disk_writes_{0};
};

}  // namespace nimble::vm::cuda
