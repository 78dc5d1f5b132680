// Helpers of the CUDA benchmarks. Timing of captured work (MedianGraphReplayMs): `enqueue` runs
// once eagerly (so plans and tuning happen outside the capture), then is captured on `stream`
// into a graph that is replayed `replays + 3` times, each replay optionally preceded by
// `before_each` (an L2 flush, say) and timed with events around the launch; the first three are
// dropped. Returns the median in milliseconds.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/status_macros.h"
#include "vm/cuda/cuda_status.h"

namespace nimble::vm::cuda {

// Events without timing for forking and joining streams during a capture; destroyed with the
// list. status() says whether all were created.
class EventList {
 public:
  explicit EventList(size_t n) : events_(n, nullptr) {
    for (cudaEvent_t& e : events_) {
      if (status_.ok()) {
        status_.Update(CudaStatus(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "event"));
      }
    }
  }
  ~EventList() {
    for (cudaEvent_t e : events_) {
      if (e != nullptr) (void)cudaEventDestroy(e);
    }
  }
  EventList(const EventList&) = delete;
  EventList& operator=(const EventList&) = delete;
  const absl::Status& status() const { return status_; }
  std::vector<cudaEvent_t>& events() { return events_; }

 private:
  std::vector<cudaEvent_t> events_;
  absl::Status status_;
};

// A device buffer of `elements` random fp16 values in about [-0.03, 0.03] (activations stay
// bounded through a dozen layers of such weights); null if allocation or upload fails.
inline void* DeviceRandom(int64_t elements, std::mt19937& rng) {
  std::vector<uint16_t> host(static_cast<size_t>(elements));
  for (auto& v : host) v = static_cast<uint16_t>(0x2000 | (rng() & 0x03FF) | ((rng() & 1) << 15));
  void* p = nullptr;
  if (cudaMalloc(&p, elements * 2) != cudaSuccess ||
      cudaMemcpy(p, host.data(), elements * 2, cudaMemcpyHostToDevice) != cudaSuccess) {
    return nullptr;
  }
  return p;
}

inline absl::StatusOr<float> MedianGraphReplayMs(cudaStream_t stream, int replays,
                                                 absl::FunctionRef<absl::Status()> enqueue,
                                                 absl::FunctionRef<absl::Status()> before_each) {
  NIMBLE_RETURN_IF_ERROR(enqueue());
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  const absl::Status enqueued = enqueue();
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  if (!enqueued.ok() || ended != cudaSuccess) {
    if (graph != nullptr) (void)cudaGraphDestroy(graph);
    NIMBLE_RETURN_IF_ERROR(enqueued);
    NIMBLE_CUDA_RETURN_IF_ERROR(ended);
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
  (void)cudaGraphDestroy(graph);
  NIMBLE_CUDA_RETURN_IF_ERROR(instantiated);
  cudaEvent_t start = nullptr, stop = nullptr;
  absl::Status status;  // the first error (Update keeps it)
  status.Update(CudaStatus(cudaEventCreate(&start), "cudaEventCreate"));
  status.Update(CudaStatus(cudaEventCreate(&stop), "cudaEventCreate"));
  std::vector<float> ms;
  for (int r = 0; r < replays + 3 && status.ok(); ++r) {
    status.Update(before_each());
    if (!status.ok()) break;
    status.Update(CudaStatus(cudaEventRecord(start, stream), "cudaEventRecord"));
    status.Update(CudaStatus(cudaGraphLaunch(exec, stream), "cudaGraphLaunch"));
    status.Update(CudaStatus(cudaEventRecord(stop, stream), "cudaEventRecord"));
    status.Update(CudaStatus(cudaEventSynchronize(stop), "cudaEventSynchronize"));
    float t = 0;
    if (status.ok()) status.Update(CudaStatus(cudaEventElapsedTime(&t, start, stop), "elapsed"));
    if (r >= 3) ms.push_back(t);
  }
  (void)cudaGraphExecDestroy(exec);
  if (start != nullptr) (void)cudaEventDestroy(start);
  if (stop != nullptr) (void)cudaEventDestroy(stop);
  NIMBLE_RETURN_IF_ERROR(status);
  if (ms.empty()) return absl::InvalidArgumentError("MedianGraphReplayMs: no replays");
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace nimble::vm::cuda
