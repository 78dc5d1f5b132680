#include "vm/cuda/device_copy.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vm/cuda/cuda_status.h"
#include "vm/cuda/stream.h"

namespace nimble::vm::cuda {
namespace {

absl::Status CheckArgs(const void* dst, const void* src, int64_t bytes) {
  if (bytes < 0) return absl::InvalidArgumentError(absl::StrCat("copy of ", bytes, " bytes"));
  if (bytes > 0 && (dst == nullptr || src == nullptr)) {
    return absl::InvalidArgumentError("copy with a null pointer");
  }
  return absl::OkStatus();
}

absl::Status CopyAsync(void* dst, const void* src, int64_t bytes, cudaMemcpyKind kind,
                       cudaStream_t stream) {
  NIMBLE_RETURN_IF_ERROR(CheckArgs(dst, src, bytes));
  if (bytes == 0) return absl::OkStatus();
  return CudaStatus(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), kind, stream),
                    "cudaMemcpyAsync");
}

// Two staging buffers and an event marking when each is free again.
struct Staging {
  PinnedBuffer buffer[2];
  std::unique_ptr<Event> done[2];
};

absl::StatusOr<Staging> MakeStaging(PinnedHostPool& pool, int64_t chunk) {
  Staging staging;
  for (int i = 0; i < 2; ++i) {
    NIMBLE_ASSIGN_OR_RETURN(staging.buffer[i], pool.Acquire(chunk));
    NIMBLE_ASSIGN_OR_RETURN(staging.done[i], Event::Create(/*timing=*/false));
  }
  return staging;
}

}  // namespace

absl::Status CopyHostToDeviceAsync(void* device_dst, const void* host_src, int64_t bytes,
                                   cudaStream_t stream) {
  return CopyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice, stream);
}

absl::Status CopyDeviceToHostAsync(void* host_dst, const void* device_src, int64_t bytes,
                                   cudaStream_t stream) {
  return CopyAsync(host_dst, device_src, bytes, cudaMemcpyDeviceToHost, stream);
}

absl::Status CopyDeviceToDeviceAsync(void* device_dst, const void* device_src, int64_t bytes,
                                     cudaStream_t stream) {
  return CopyAsync(device_dst, device_src, bytes, cudaMemcpyDeviceToDevice, stream);
}

absl::Status CopyFromPageable(void* device_dst, const void* host_src, int64_t bytes,
                              PinnedHostPool& pool, cudaStream_t stream, int64_t chunk_bytes) {
  NIMBLE_RETURN_IF_ERROR(CheckArgs(device_dst, host_src, bytes));
  if (bytes == 0) return absl::OkStatus();
  if (chunk_bytes <= 0) return absl::InvalidArgumentError("chunk_bytes must be > 0");
  const int64_t chunk = std::min(chunk_bytes, bytes);
  NIMBLE_ASSIGN_OR_RETURN(Staging staging, MakeStaging(pool, chunk));
  auto* dst = static_cast<char*>(device_dst);
  const auto* src = static_cast<const char*>(host_src);
  for (int64_t offset = 0, i = 0; offset < bytes; offset += chunk, ++i) {
    const int b = static_cast<int>(i % 2);
    const int64_t n = std::min(chunk, bytes - offset);
    if (i >= 2) NIMBLE_RETURN_IF_ERROR(staging.done[b]->Synchronize());  // buffer b drained
    std::memcpy(staging.buffer[b].data(), src + offset, static_cast<size_t>(n));
    NIMBLE_RETURN_IF_ERROR(
        CopyHostToDeviceAsync(dst + offset, staging.buffer[b].data(), n, stream));
    NIMBLE_RETURN_IF_ERROR(staging.done[b]->Record(stream));
  }
  // The staging buffers go back to the pool on return: the copies out of them must be done.
  return CudaStatus(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
}

absl::Status CopyToPageable(void* host_dst, const void* device_src, int64_t bytes,
                            PinnedHostPool& pool, cudaStream_t stream, int64_t chunk_bytes) {
  NIMBLE_RETURN_IF_ERROR(CheckArgs(host_dst, device_src, bytes));
  if (bytes == 0) return absl::OkStatus();
  if (chunk_bytes <= 0) return absl::InvalidArgumentError("chunk_bytes must be > 0");
  const int64_t chunk = std::min(chunk_bytes, bytes);
  NIMBLE_ASSIGN_OR_RETURN(Staging staging, MakeStaging(pool, chunk));
  auto* dst = static_cast<char*>(host_dst);
  const auto* src = static_cast<const char*>(device_src);
  const int64_t chunks = (bytes + chunk - 1) / chunk;
  auto issue = [&](int64_t i) -> absl::Status {
    const int b = static_cast<int>(i % 2);
    const int64_t offset = i * chunk;
    const int64_t n = std::min(chunk, bytes - offset);
    NIMBLE_RETURN_IF_ERROR(
        CopyDeviceToHostAsync(staging.buffer[b].data(), src + offset, n, stream));
    return staging.done[b]->Record(stream);
  };
  NIMBLE_RETURN_IF_ERROR(issue(0));
  for (int64_t i = 0; i < chunks; ++i) {
    // Chunk i+1 lands in the other buffer, whose previous chunk was consumed last iteration.
    if (i + 1 < chunks) NIMBLE_RETURN_IF_ERROR(issue(i + 1));
    const int b = static_cast<int>(i % 2);
    NIMBLE_RETURN_IF_ERROR(staging.done[b]->Synchronize());
    const int64_t offset = i * chunk;
    std::memcpy(dst + offset, staging.buffer[b].data(),
                static_cast<size_t>(std::min(chunk, bytes - offset)));
  }
  return absl::OkStatus();
}

}  // namespace nimble::vm::cuda
