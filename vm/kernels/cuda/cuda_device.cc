#include "vm/kernels/cuda/cuda_device.h"

#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vm/cuda/cuda_status.h"

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

std::string RtcCacheDir() {
  if (const char* dir = std::getenv("NIMBLE_RTC_CACHE_DIR")) return dir;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && xdg[0] != '\0') {
    return absl::StrCat(xdg, "/nimble/rtc");
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && home[0] != '\0') {
    return absl::StrCat(home, "/.cache/nimble/rtc");
  }
  return "";
}

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

class CudaGraph final : public DeviceGraph {
 public:
  explicit CudaGraph(cudaGraphExec_t exec) : exec_(exec) {}
  ~CudaGraph() override { cudaGraphExecDestroy(exec_); }
  absl::Status Launch(void* stream) override {
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec_, static_cast<cudaStream_t>(stream)));
    return absl::OkStatus();
  }

 private:
  const cudaGraphExec_t exec_;
};

bool Capturing(cudaStream_t s) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  return cudaStreamIsCapturing(s, &status) == cudaSuccess &&
         status == cudaStreamCaptureStatusActive;
}

class CudaApi final : public DeviceApi {
 public:
  absl::Status Copy(void* dst, Device to, const void* src, Device from, size_t bytes,
                    void* stream) override {
    if (bytes == 0) return absl::OkStatus();
    auto s = static_cast<cudaStream_t>(stream);
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s));
    // A host destination is read as soon as we return (pinned memory would not wait); inside a
    // capture the graph's launcher synchronises instead.
    if (to.type == DeviceType::kCPU && !Capturing(s)) {
      NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s));
    }
    (void)from;
    return absl::OkStatus();
  }
  absl::StatusOr<void*> CreateStream(int ordinal) override {
    NIMBLE_RETURN_IF_ERROR(Init(ordinal).status());
    cudaStream_t s = nullptr;
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return static_cast<void*>(s);
  }
  void DestroyStream(void* stream) override {
    cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
    cudaStreamDestroy(static_cast<cudaStream_t>(stream));
  }
  absl::StatusOr<std::unique_ptr<Allocator>> StreamAllocator(int ordinal, void* stream) override {
    NIMBLE_ASSIGN_OR_RETURN(PerDevice * d, Init(ordinal));
    return std::unique_ptr<Allocator>(
        std::make_unique<CudaAllocator>(d->pool.get(), ordinal, static_cast<cudaStream_t>(stream)));
  }
  absl::StatusOr<std::unique_ptr<Allocator>> NewHostArena() override {
    return std::unique_ptr<Allocator>(std::make_unique<PinnedArena>());
  }
  absl::Status BeginCapture(int ordinal, void* stream) override {
    NIMBLE_ASSIGN_OR_RETURN(PerDevice * d, Init(ordinal));
    auto s = static_cast<cudaStream_t>(stream);
    NIMBLE_RETURN_IF_ERROR(d->gemm->ReserveWorkspace(s));
    // Relaxed: host allocations (cudaHostAlloc) may happen while the stream captures.
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<DeviceGraph>> EndCapture(void* stream) override {
    cudaGraph_t graph = nullptr;
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamEndCapture(static_cast<cudaStream_t>(stream), &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    NIMBLE_CUDA_RETURN_IF_ERROR(e);
    return std::unique_ptr<DeviceGraph>(std::make_unique<CudaGraph>(exec));
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
