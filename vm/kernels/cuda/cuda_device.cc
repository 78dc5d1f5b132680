#include "vm/kernels/cuda/cuda_device.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/status_macros.h"
#include "vm/cuda/cuda_status.h"
#include "vm/cuda/l2_prefetch.h"
#include "vm/cuda/pinned_host_pool.h"

namespace nimble::vm::cuda_device {

absl::StatusOr<void*> CudaAllocator::Allocate(size_t bytes) {
  return allocator_->Allocate(static_cast<int64_t>(bytes), stream_);
}

void CudaAllocator::Free(void* ptr, size_t bytes) {
  (void)bytes;
  if (ptr != nullptr) (void)allocator_->Free(ptr, stream_);
}

AllocatorStats CudaAllocator::stats() const {
  AllocatorStats s;
  absl::StatusOr<cuda::DeviceMemoryStats> d = allocator_->Stats();
  if (!d.ok()) return s;
  s.in_use_bytes = d->in_use_bytes;
  s.cached_bytes = d->reserved_bytes > d->in_use_bytes ? d->reserved_bytes - d->in_use_bytes : 0;
  s.peak_in_use_bytes = d->peak_in_use_bytes;
  s.peak_reserved_bytes = d->peak_reserved_bytes;
  s.system_allocations = d->allocations;
  return s;
}

void CudaAllocator::Trim() { (void)allocator_->Trim(); }

namespace {

constexpr int kMaxDevices = 16;

struct PerDevice {
  std::once_flag once;
  absl::Status status;
  std::unique_ptr<cuda::DeviceAllocator> pool;
  std::unique_ptr<CudaAllocator> allocator;
  std::unique_ptr<cuda::GemmRunner> gemm;
  std::once_flag rtc_once;
  absl::Status rtc_status;
  std::unique_ptr<cuda::RtcCompiler> rtc;
};

// `env` when set, else <XDG_CACHE_HOME or ~/.cache>/nimble/<sub>; "" without either.
std::string CacheDir(const char* env, const char* sub) {
  if (const char* dir = std::getenv(env)) return dir;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && xdg[0] != '\0') {
    return absl::StrCat(xdg, "/nimble/", sub);
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && home[0] != '\0') {
    return absl::StrCat(home, "/.cache/nimble/", sub);
  }
  return "";
}

std::string RtcCacheDir() { return CacheDir("NIMBLE_RTC_CACHE_DIR", "rtc"); }

PerDevice* Devices() {
  static PerDevice* devices = new PerDevice[kMaxDevices];
  return devices;
}

absl::StatusOr<PerDevice*> Init(int ordinal) {
  if (ordinal < 0 || ordinal >= kMaxDevices) {
    return absl::InvalidArgumentError(absl::StrCat("cuda:", ordinal, " is out of range"));
  }
  PerDevice* d = &Devices()[ordinal];
  std::call_once(d->once, [d, ordinal] {
    d->status = [&]() -> absl::Status {
      NIMBLE_CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal));
      size_t free_bytes = 0, total_bytes = 0;
      NIMBLE_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
      cuda::DeviceAllocatorOptions options;
      options.device = ordinal;
      options.byte_limit = static_cast<int64_t>(static_cast<double>(total_bytes) * 0.8);
      options.release_threshold = int64_t{256} << 20;
      NIMBLE_ASSIGN_OR_RETURN(d->pool, cuda::DeviceAllocator::Create(options));
      d->allocator = std::make_unique<CudaAllocator>(d->pool.get(), ordinal, nullptr);
      NIMBLE_ASSIGN_OR_RETURN(d->gemm, cuda::GemmRunner::Create(ordinal));
      // Tuned GEMM algorithms (graphs' warm-up calls, or NIMBLE_GEMM_AUTOTUNE=1) kept across
      // processes.
      d->gemm->SetTuneCacheDir(CacheDir("NIMBLE_GEMM_TUNE_CACHE_DIR", "gemm"));
      return absl::OkStatus();
    }();
  });
  NIMBLE_RETURN_IF_ERROR(d->status);
  return d;
}

// Page-locked host buffers released only with the arena (the host side of a CUDA graph's
// copies). Not thread-safe: one VM instance uses it.
class PinnedArena final : public Allocator {
 public:
  ~PinnedArena() override {
    for (void* p : buffers_) cudaFreeHost(p);
  }
  absl::StatusOr<void*> Allocate(size_t bytes) override {
    void* p = nullptr;
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaHostAlloc(&p, bytes == 0 ? 1 : bytes, cudaHostAllocDefault));
    buffers_.push_back(p);
    bytes_ += static_cast<int64_t>(bytes);
    return p;
  }
  void Free(void*, size_t) override {}  // with the arena
  Device device() const override { return kCpu; }
  AllocatorStats stats() const override {
    AllocatorStats s;
    s.in_use_bytes = bytes_;
    s.peak_in_use_bytes = bytes_;
    s.system_allocations = static_cast<int64_t>(buffers_.size());
    return s;
  }
  void Trim() override {}

 private:
  std::vector<void*> buffers_;
  int64_t bytes_ = 0;
};

// A copy from device memory to the host recorded while capturing (its graph node).
struct CapturedCopy {
  cudaGraphNode_t node;
  const void* src;
  const void* dst;  // as captured
  size_t bytes;
};

// What a capture recorded: its copies to the host, and the host bytes its copies to the device
// read (a copy to the host whose buffer a later copy uploads again cannot be redirected).
struct CaptureRecord {
  std::vector<CapturedCopy> to_host;
  std::vector<std::pair<const char*, size_t>> uploaded;
  int branch_copies = 0;  // CopyToHostOnBranch's so far
};

class CudaGraph final : public DeviceGraph {
 public:
  // Takes both; the graph stays alive because its nodes name the copies to redirect.
  CudaGraph(cudaGraph_t graph, cudaGraphExec_t exec, CaptureRecord record)
      : graph_(graph),
        exec_(exec),
        copies_(std::move(record.to_host)),
        uploaded_(std::move(record.uploaded)) {}
  ~CudaGraph() override {
    cudaGraphExecDestroy(exec_);
    cudaGraphDestroy(graph_);
  }
  absl::Status Launch(void* stream) override {
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec_, static_cast<cudaStream_t>(stream)));
    return absl::OkStatus();
  }

  // -1 also when another copy writes into those bytes (redirecting one would leave the other
  // writing the old buffer) or a copy to the device reads them (it would upload the old bytes).
  int FindHostCopy(const void* dst, size_t bytes) const override {
    const auto* begin = static_cast<const char*>(dst);
    for (const auto& [from, n] : uploaded_) {
      if (from < begin + bytes && begin < from + n) return -1;
    }
    int found = -1;
    for (size_t i = 0; i < copies_.size(); ++i) {
      const auto* b = static_cast<const char*>(copies_[i].dst);
      if (b == begin && copies_[i].bytes == bytes && bytes > 0 && found < 0) {
        found = static_cast<int>(i);
      } else if (b < begin + bytes && begin < b + copies_[i].bytes) {
        return -1;
      }
    }
    return found;
  }
  absl::Status SetHostCopyDestination(int index, void* dst) override {
    if (index < 0 || static_cast<size_t>(index) >= copies_.size()) {
      return absl::InvalidArgumentError(absl::StrCat("no host copy ", index));
    }
    const CapturedCopy& c = copies_[index];
    NIMBLE_CUDA_RETURN_IF_ERROR(
        cudaGraphExecMemcpyNodeSetParams1D(exec_, c.node, dst, c.src, c.bytes, cudaMemcpyDefault));
    return absl::OkStatus();
  }

 private:
  const cudaGraph_t graph_;
  const cudaGraphExec_t exec_;
  const std::vector<CapturedCopy> copies_;
  const std::vector<std::pair<const char*, size_t>> uploaded_;
};

// Page-locked host buffers for graph results, shared by the process (never destroyed: the
// storages handed out may outlive every VM).
absl::StatusOr<cuda::PinnedHostPool*> ResultPool() {
  static absl::StatusOr<cuda::PinnedHostPool*> pool =
      []() -> absl::StatusOr<cuda::PinnedHostPool*> {
    NIMBLE_ASSIGN_OR_RETURN(std::unique_ptr<cuda::PinnedHostPool> p,
                            cuda::PinnedHostPool::Create(int64_t{256} << 20));
    return p.release();
  }();
  return pool;
}

bool Capturing(cudaStream_t s) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  return cudaStreamIsCapturing(s, &status) == cudaSuccess &&
         status == cudaStreamCaptureStatusActive;
}

class CudaApi final : public DeviceApi {
 private:
  // A stream's side stream for cache prefetches: each request forks from the stream (fork),
  // and the capture's end joins the last one back (join, while `pending`).
  struct SideBranch {
    cudaStream_t side = nullptr;
    cudaEvent_t fork = nullptr, join = nullptr;
    bool pending = false;
  };

  absl::Mutex mu_;
  // Per capturing stream: its copies to the host so far.
  std::map<cudaStream_t, CaptureRecord> captured_ ABSL_GUARDED_BY(mu_);
  // Per stream: its prefetch branch and its two result-copy branches (a capture's result copies
  // alternate between them, so a small copy does not queue behind a large one).
  std::map<cudaStream_t, SideBranch> branches_ ABSL_GUARDED_BY(mu_);
  std::map<cudaStream_t, SideBranch> copy_branches_[2] ABSL_GUARDED_BY(mu_);

  // Every map of branches, for joining and destroying a stream's.
  std::array<std::map<cudaStream_t, SideBranch>*, 3> AllBranches()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return {&branches_, &copy_branches_[0], &copy_branches_[1]};
  }

  static void DestroyBranch(SideBranch& b) {
    if (b.side != nullptr) {
      cudaStreamSynchronize(b.side);
      cudaStreamDestroy(b.side);
    }
    if (b.fork != nullptr) cudaEventDestroy(b.fork);
    if (b.join != nullptr) cudaEventDestroy(b.join);
    b = SideBranch();
  }

  // Joins `s`'s branches back into `s` (before its capture ends).
  absl::Status JoinBranch(cudaStream_t s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (auto* branches : AllBranches()) {
      auto it = branches->find(s);
      if (it == branches->end() || !it->second.pending) continue;
      it->second.pending = false;
      NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(s, it->second.join, 0));
    }
    return absl::OkStatus();
  }

  // `s`'s branch in `branches`, forked from `s` at this point of its capture: what is queued
  // on the returned stream runs after what `s` has so far, beside what `s` gets next, until
  // the capture's end (or JoinBranches) joins it.
  absl::StatusOr<cudaStream_t> Fork(std::map<cudaStream_t, SideBranch>& branches, cudaStream_t s)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    SideBranch& b = branches[s];
    if (b.side == nullptr) {
      cudaError_t e = cudaStreamCreateWithFlags(&b.side, cudaStreamNonBlocking);
      if (e == cudaSuccess) e = cudaEventCreateWithFlags(&b.fork, cudaEventDisableTiming);
      if (e == cudaSuccess) e = cudaEventCreateWithFlags(&b.join, cudaEventDisableTiming);
      if (e != cudaSuccess) {
        DestroyBranch(b);
        branches.erase(s);
        return cuda::CudaStatus(e, "graph branch");
      }
    }
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaEventRecord(b.fork, s));
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(b.side, b.fork, 0));
    b.pending = true;  // the side stream is in the capture now: it must rejoin
    return b.side;
  }

  // How many result-copy branches a capture's copies alternate between: 1, or 2 with
  // NIMBLE_RESULT_COPY_BRANCHES=2 (an A/B switch: on the H100 two branches changed BERT-base's
  // p50 by no more than the rounds' spread, bench/RESULTS.md).
  static int CopyBranchCount() {
    static const int count = [] {
      const char* v = std::getenv("NIMBLE_RESULT_COPY_BRANCHES");
      return v != nullptr && v[0] == '2' ? 2 : 1;
    }();
    return count;
  }

  // Whether result copies take a branch of the graph (NIMBLE_RESULT_COPY_BRANCH=0: they stay
  // on the captured stream, for A/B measurements).
  static bool CopyBranchesEnabled() {
    static const bool enabled = [] {
      const char* v = std::getenv("NIMBLE_RESULT_COPY_BRANCH");
      return v == nullptr || v[0] != '0';
    }();
    return enabled;
  }

 public:
  absl::Status Copy(void* dst, Device to, const void* src, Device from, size_t bytes,
                    void* stream) override {
    if (bytes == 0) return absl::OkStatus();
    auto s = static_cast<cudaStream_t>(stream);
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s));
    // A host destination is read as soon as we return (pinned memory would not wait); inside a
    // capture the graph's launcher synchronises instead, and the copy's node is kept so that
    // replays can write it elsewhere (CudaGraph::SetHostCopyDestination).
    if (to.type == DeviceType::kCPU) {
      if (!Capturing(s)) {
        NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s));
      } else if (from.type != DeviceType::kCPU) {
        cudaStreamCaptureStatus status;
        const cudaGraphNode_t* last = nullptr;
        size_t n = 0;
        NIMBLE_CUDA_RETURN_IF_ERROR(
            cudaStreamGetCaptureInfo(s, &status, nullptr, nullptr, &last, nullptr, &n));
        if (n == 1) {
          absl::MutexLock lock(&mu_);
          captured_[s].to_host.push_back({last[0], src, dst, bytes});
        }
      }
    } else if (from.type == DeviceType::kCPU && Capturing(s)) {
      absl::MutexLock lock(&mu_);
      captured_[s].uploaded.emplace_back(static_cast<const char*>(src), bytes);
    }
    return absl::OkStatus();
  }
  absl::StatusOr<void*> CreateStream(int ordinal) override {
    NIMBLE_RETURN_IF_ERROR(Init(ordinal).status());
    cudaStream_t s = nullptr;
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return static_cast<void*>(s);
  }
  void DestroyStream(void* stream) override {
    auto s = static_cast<cudaStream_t>(stream);
    {
      absl::MutexLock lock(&mu_);
      for (auto* branches : AllBranches()) {
        auto it = branches->find(s);
        if (it != branches->end()) {
          DestroyBranch(it->second);
          branches->erase(it);
        }
      }
    }
    cudaStreamSynchronize(s);
    cudaStreamDestroy(s);
  }
  // Only inside a capture: eagerly, the fork, the launch and the event would cost the host
  // more per GEMM than the prefetch saves; in a graph they cost nothing per replay.
  absl::Status PrefetchToCache(int ordinal, const void* ptr, size_t bytes, void* stream) override {
    auto s = static_cast<cudaStream_t>(stream);
    if (bytes == 0 || s == nullptr || !Capturing(s)) return absl::OkStatus();
    NIMBLE_RETURN_IF_ERROR(Init(ordinal).status());
    absl::MutexLock lock(&mu_);
    NIMBLE_ASSIGN_OR_RETURN(cudaStream_t side, Fork(branches_, s));
    NIMBLE_RETURN_IF_ERROR(cuda::PrefetchL2(ptr, static_cast<int64_t>(bytes), side));
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaEventRecord(branches_[s].join, side));
    return absl::OkStatus();
  }
  // In a capture the copy is a node of a result-copy branch, recorded like Copy's so that
  // replays can redirect it; with NIMBLE_RESULT_COPY_BRANCHES=2 a capture's copies alternate
  // between two copy branches (on the H100, BERT's 3 KB pooler output waited 23 µs behind the
  // 1.2 MB last_hidden_state on one).
  absl::Status CopyToHostOnBranch(void* dst, const void* src, Device from, size_t bytes,
                                  void* stream) override {
    auto s = static_cast<cudaStream_t>(stream);
    if (bytes == 0 || s == nullptr || !Capturing(s) || !CopyBranchesEnabled()) {
      return Copy(dst, kCpu, src, from, bytes, stream);
    }
    absl::MutexLock lock(&mu_);
    auto record = captured_.find(s);  // none for a capture that BeginCapture did not start
    const int index = record == captured_.end() ? 0 : record->second.branch_copies++;
    auto& branches = copy_branches_[index % CopyBranchCount()];
    NIMBLE_ASSIGN_OR_RETURN(cudaStream_t side, Fork(branches, s));
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, side));
    cudaStreamCaptureStatus status;
    const cudaGraphNode_t* last = nullptr;
    size_t n = 0;
    NIMBLE_CUDA_RETURN_IF_ERROR(
        cudaStreamGetCaptureInfo(side, &status, nullptr, nullptr, &last, nullptr, &n));
    if (n == 1) captured_[s].to_host.push_back({last[0], src, dst, bytes});
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaEventRecord(branches[s].join, side));
    return absl::OkStatus();
  }
  absl::Status JoinBranches(void* stream) override {
    auto s = static_cast<cudaStream_t>(stream);
    if (s == nullptr || !Capturing(s)) return absl::OkStatus();
    absl::MutexLock lock(&mu_);
    return JoinBranch(s);
  }
  absl::StatusOr<std::unique_ptr<Allocator>> StreamAllocator(int ordinal, void* stream) override {
    NIMBLE_ASSIGN_OR_RETURN(PerDevice * d, Init(ordinal));
    return std::unique_ptr<Allocator>(
        std::make_unique<CudaAllocator>(d->pool.get(), ordinal, static_cast<cudaStream_t>(stream)));
  }
  absl::StatusOr<std::unique_ptr<Allocator>> NewHostArena() override {
    return std::unique_ptr<Allocator>(std::make_unique<PinnedArena>());
  }
  void MarkWarmup(int ordinal, void* stream, bool on) override {
    absl::StatusOr<PerDevice*> d = Init(ordinal);
    if (d.ok()) (*d)->gemm->SetWarmupStream(static_cast<cudaStream_t>(stream), on);
  }
  absl::Status BeginCapture(int ordinal, void* stream) override {
    NIMBLE_ASSIGN_OR_RETURN(PerDevice * d, Init(ordinal));
    auto s = static_cast<cudaStream_t>(stream);
    NIMBLE_RETURN_IF_ERROR(d->gemm->ReserveWorkspace(s));
    // Relaxed: host allocations (cudaHostAlloc) may happen while the stream captures.
    {
      absl::MutexLock lock(&mu_);
      captured_[s] = CaptureRecord();
    }
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<DeviceGraph>> EndCapture(void* stream) override {
    auto s = static_cast<cudaStream_t>(stream);
    CaptureRecord record;
    absl::Status joined;
    {
      absl::MutexLock lock(&mu_);
      record = std::move(captured_[s]);
      captured_.erase(s);
      joined = JoinBranch(s);
    }
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(s, &graph);
    if (!joined.ok()) {
      if (graph != nullptr) cudaGraphDestroy(graph);
      return joined;
    }
    NIMBLE_CUDA_RETURN_IF_ERROR(ended);
    // Only plain copy nodes can be redirected.
    std::erase_if(record.to_host, [](const CapturedCopy& c) {
      cudaGraphNodeType type;
      return cudaGraphNodeGetType(c.node, &type) != cudaSuccess || type != cudaGraphNodeTypeMemcpy;
    });
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    if (e != cudaSuccess) cudaGraphDestroy(graph);
    NIMBLE_CUDA_RETURN_IF_ERROR(e);
    return std::unique_ptr<DeviceGraph>(
        std::make_unique<CudaGraph>(graph, exec, std::move(record)));
  }
  absl::StatusOr<std::shared_ptr<Storage>> PinnedHostStorage(size_t bytes) override {
    NIMBLE_ASSIGN_OR_RETURN(cuda::PinnedHostPool * pool, ResultPool());
    NIMBLE_ASSIGN_OR_RETURN(cuda::PinnedBuffer buffer,
                            pool->Acquire(std::max<int64_t>(static_cast<int64_t>(bytes), 1)));
    auto owner = std::make_shared<cuda::PinnedBuffer>(std::move(buffer));
    void* data = owner->data();
    return Storage::Wrap(data, bytes, kCpu, std::move(owner));
  }
  // Page-locked, mapped host memory: kernels write it only when they find bad input, so a
  // call that finds none costs nothing.
  absl::StatusOr<DeviceErrorRecord*> NewErrorRecord(int ordinal) override {
    NIMBLE_RETURN_IF_ERROR(Init(ordinal).status());
    void* host = nullptr;
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaHostAlloc(&host, sizeof(DeviceErrorRecord),
                                              cudaHostAllocMapped | cudaHostAllocPortable));
    void* device = nullptr;
    const cudaError_t e = cudaHostGetDevicePointer(&device, host, 0);
    if (e != cudaSuccess || device != host) {
      cudaFreeHost(host);
      // Kernels and the host share the pointer, which needs unified addressing.
      if (e != cudaSuccess) return cuda::CudaStatus(e, "error record");
      return absl::UnimplementedError("error record: no unified addressing");
    }
    return new (host) DeviceErrorRecord();
  }
  void FreeErrorRecord(DeviceErrorRecord* record) override {
    if (record != nullptr) cudaFreeHost(record);
  }
  absl::Status Synchronize(void* stream) override {
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
    return absl::OkStatus();
  }
  absl::StatusOr<Allocator*> DefaultAllocator(int ordinal) override {
    NIMBLE_ASSIGN_OR_RETURN(CudaAllocator * a, cuda_device::DefaultAllocator(ordinal));
    return a;
  }
};

}  // namespace

absl::StatusOr<CudaAllocator*> DefaultAllocator(int ordinal) {
  NIMBLE_ASSIGN_OR_RETURN(PerDevice * d, Init(ordinal));
  return d->allocator.get();
}

absl::StatusOr<cuda::DeviceAllocator*> DevicePool(int ordinal) {
  NIMBLE_ASSIGN_OR_RETURN(PerDevice * d, Init(ordinal));
  return d->pool.get();
}

absl::StatusOr<cuda::GemmRunner*> Gemm(int ordinal) {
  NIMBLE_ASSIGN_OR_RETURN(PerDevice * d, Init(ordinal));
  return d->gemm.get();
}

absl::StatusOr<cuda::RtcCompiler*> Rtc(int ordinal) {
  NIMBLE_ASSIGN_OR_RETURN(PerDevice * d, Init(ordinal));
  std::call_once(d->rtc_once, [d, ordinal] {
    auto rtc = cuda::RtcCompiler::Create({.device = ordinal, .arch = 0, .cache_dir = RtcCacheDir()});
    if (rtc.ok()) {
      d->rtc = *std::move(rtc);
    } else {
      d->rtc_status = rtc.status();
    }
  });
  NIMBLE_RETURN_IF_ERROR(d->rtc_status);
  return d->rtc.get();
}

DeviceApi* Api() {
  static CudaApi* api = new CudaApi();
  return api;
}

}  // namespace nimble::vm::cuda_device
