// RAII owners of a CUDA stream and a CUDA event. Both are created on the current device through
// static Create(); destruction releases the handle (a stream is synchronised first, so memory
// freed stream-ordered on it is really returned before the handle goes away).
//
// Thread-safety: a Stream or Event may be used from several threads as CUDA allows (launches on
// one stream from several threads are ordered by arrival); the objects hold no other state.
#pragma once

#include <cuda_runtime_api.h>

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace nimble::vm::cuda {

class Event;

class Stream {
 public:
  // A non-blocking stream (no implicit sync with the legacy default stream) on `device`.
  // Lower `priority` numbers run first; 0 is the default priority.
  static absl::StatusOr<std::unique_ptr<Stream>> Create(int device = 0, int priority = 0);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  cudaStream_t get() const { return stream_; }
  int device() const { return device_; }

  absl::Status Synchronize() const;
  // Work queued on this stream after the call waits for `event`'s last recorded point.
  absl::Status WaitFor(const Event& event) const;

 private:
  Stream(cudaStream_t stream, int device) : stream_(stream), device_(device) {}
  cudaStream_t stream_;
  int device_;
};

class Event {
 public:
  // `timing` = false makes a cheaper event that cannot be used with ElapsedMs.
  static absl::StatusOr<std::unique_ptr<Event>> Create(bool timing = true);
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  cudaEvent_t get() const { return event_; }

  absl::Status Record(cudaStream_t stream);
  absl::Status Synchronize() const;
  // True when all work before the last Record has completed.
  absl::StatusOr<bool> Query() const;
  // Milliseconds between two recorded, completed timing events.
  static absl::StatusOr<float> ElapsedMs(const Event& start, const Event& end);

 private:
  explicit Event(cudaEvent_t event) : event_(event) {}
  cudaEvent_t event_;
};

}  // namespace nimble::vm::cuda
