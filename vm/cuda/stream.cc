#include "vm/cuda/stream.h"

#include "base/status_macros.h"
#include "vm/cuda/cuda_status.h"

namespace nimble::vm::cuda {

absl::StatusOr<std::unique_ptr<Stream>> Stream::Create(int device, int priority) {
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  cudaStream_t stream = nullptr;
  NIMBLE_CUDA_RETURN_IF_ERROR(
      cudaStreamCreateWithPriority(&stream, cudaStreamNonBlocking, priority));
  return std::unique_ptr<Stream>(new Stream(stream, device));
}

Stream::~Stream() {
  // Errors here are from earlier asynchronous work and were (or will be) reported elsewhere; a
  // destructor has nobody to return them to.
  cudaStreamSynchronize(stream_);
  cudaStreamDestroy(stream_);
}

absl::Status Stream::Synchronize() const {
  return CudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
}

absl::Status Stream::WaitFor(const Event& event) const {
  return CudaStatus(cudaStreamWaitEvent(stream_, event.get(), 0), "cudaStreamWaitEvent");
}

absl::StatusOr<std::unique_ptr<Event>> Event::Create(bool timing) {
  cudaEvent_t event = nullptr;
  NIMBLE_CUDA_RETURN_IF_ERROR(
      cudaEventCreateWithFlags(&event, timing ? cudaEventDefault : cudaEventDisableTiming));
  return std::unique_ptr<Event>(new Event(event));
}

Event::~Event() { cudaEventDestroy(event_); }

absl::Status Event::Record(cudaStream_t stream) {
  return CudaStatus(cudaEventRecord(event_, stream), "cudaEventRecord");
}

absl::Status Event::Synchronize() const {
  return CudaStatus(cudaEventSynchronize(event_), "cudaEventSynchronize");
}

absl::StatusOr<bool> Event::Query() const {
  cudaError_t error = cudaEventQuery(event_);
  if (error == cudaErrorNotReady) return false;
  NIMBLE_RETURN_IF_ERROR(CudaStatus(error, "cudaEventQuery"));
  return true;
}

absl::StatusOr<float> Event::ElapsedMs(const Event& start, const Event& end) {
  float ms = 0;
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start.event_, end.event_));
  return ms;
}

}  // namespace nimble::vm::cuda
