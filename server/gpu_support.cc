#include "server/gpu_support.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"

#ifdef NIMBLE_HAVE_CUDA
#include "vm/cuda/cuda_status.h"
#include "vm/cuda/device_info.h"
#include "vm/cuda/stream.h"
#include "vm/kernels/cuda/cuda_device.h"
#endif

namespace nimble::server {

#ifndef NIMBLE_HAVE_CUDA

absl::StatusOr<std::vector<GpuInfo>> VisibleGpus() {
  return absl::FailedPreconditionError(
      "this build has no CUDA backend (it was built without the CUDA Toolkit)");
}

absl::StatusOr<std::unique_ptr<GpuContext>> GpuContext::Create(int ordinal) {
  return VisibleGpus().status();
}

#else

absl::StatusOr<std::vector<GpuInfo>> VisibleGpus() {
  absl::StatusOr<std::vector<vm::cuda::DeviceInfo>> devices = vm::cuda::ListDevices();
  if (!devices.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no GPU is visible: ", devices.status().message()));
  }
  if (devices->empty()) return absl::FailedPreconditionError("no GPU is visible");
  std::vector<GpuInfo> gpus;
  for (const vm::cuda::DeviceInfo& d : *devices) {
    gpus.push_back({d.ordinal, vm::cuda::Describe(d)});
  }
  return gpus;
}

namespace {

// Counts the bytes live through it; everything else goes to the wrapped allocator.
class CountingAllocator final : public vm::Allocator {
 public:
  explicit CountingAllocator(std::unique_ptr<vm::Allocator> inner) : inner_(std::move(inner)) {}
  absl::StatusOr<void*> Allocate(size_t bytes) override {
    absl::StatusOr<void*> p = inner_->Allocate(bytes);
    if (p.ok()) in_use_.fetch_add(static_cast<int64_t>(bytes), std::memory_order_relaxed);
    return p;
  }
  void Free(void* ptr, size_t bytes) override {
    if (ptr != nullptr) in_use_.fetch_sub(static_cast<int64_t>(bytes), std::memory_order_relaxed);
    inner_->Free(ptr, bytes);
  }
  vm::Device device() const override { return inner_->device(); }
  vm::AllocatorStats stats() const override { return inner_->stats(); }
  void Trim() override { inner_->Trim(); }
  int64_t in_use() const { return in_use_.load(std::memory_order_relaxed); }

 private:
  std::unique_ptr<vm::Allocator> inner_;
  std::atomic<int64_t> in_use_{0};
};

class CudaContext final : public GpuContext {
 public:
  CudaContext(int ordinal, std::unique_ptr<vm::cuda::Stream> stream,
              std::unique_ptr<CountingAllocator> allocator)
      : ordinal_(ordinal), stream_(std::move(stream)), allocator_(std::move(allocator)) {}
  ~CudaContext() override {
    // Frees are stream-ordered: let them complete before the stream goes.
    (void)stream_->Synchronize();
  }
  int ordinal() const override { return ordinal_; }
  void* stream() const override { return stream_->get(); }
  vm::Allocator* allocator() override { return allocator_.get(); }
  int64_t bytes_in_use() const override { return allocator_->in_use(); }
  absl::Status Activate() const override {
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal_));
    return absl::OkStatus();
  }

 private:
  const int ordinal_;
  std::unique_ptr<vm::cuda::Stream> stream_;
  std::unique_ptr<CountingAllocator> allocator_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<GpuContext>> GpuContext::Create(int ordinal) {
  NIMBLE_RETURN_IF_ERROR(CheckGpus({ordinal}));
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal));
  NIMBLE_ASSIGN_OR_RETURN(std::unique_ptr<vm::cuda::Stream> stream,
                          vm::cuda::Stream::Create(ordinal));
  NIMBLE_ASSIGN_OR_RETURN(vm::cuda::DeviceAllocator * pool, vm::cuda_device::DevicePool(ordinal));
  auto allocator = std::make_unique<CountingAllocator>(
      std::make_unique<vm::cuda_device::CudaAllocator>(pool, ordinal, stream->get()));
  return std::unique_ptr<GpuContext>(
      new CudaContext(ordinal, std::move(stream), std::move(allocator)));
}

#endif  // NIMBLE_HAVE_CUDA

absl::Status CheckGpus(const std::vector<int>& devices) {
  NIMBLE_ASSIGN_OR_RETURN(std::vector<GpuInfo> gpus, VisibleGpus());
  for (int d : devices) {
    const bool exists =
        std::any_of(gpus.begin(), gpus.end(), [&](const GpuInfo& g) { return g.ordinal == d; });
    if (!exists) {
      std::vector<std::string> visible;
      for (const GpuInfo& g : gpus)
        visible.push_back(absl::StrCat("cuda:", g.ordinal, " ", g.description));
      return absl::FailedPreconditionError(absl::StrCat(
          "GPU cuda:", d, " does not exist (visible: ", absl::StrJoin(visible, "; "), ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace nimble::server
