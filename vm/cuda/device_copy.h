// Stream-ordered copies between host and device memory.
//
// The async copies return once the copy is queued; host memory must stay valid (and, for a
// device-to-host copy, unread) until the stream passes the copy. From pageable host memory the
// CUDA runtime stages internally and the "async" copy is largely synchronous; CopyFromPageable /
// CopyToPageable stage through a pooled pinned buffer in chunks instead and return when done.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "vm/cuda/pinned_host_pool.h"

namespace nimble::vm::cuda {

absl::Status CopyHostToDeviceAsync(void* device_dst, const void* host_src, int64_t bytes,
                                   cudaStream_t stream);
absl::Status CopyDeviceToHostAsync(void* host_dst, const void* device_src, int64_t bytes,
                                   cudaStream_t stream);
absl::Status CopyDeviceToDeviceAsync(void* device_dst, const void* device_src, int64_t bytes,
                                     cudaStream_t stream);

// Synchronous with respect to the host buffer (it may be reused on return); chunks of at most
// `chunk_bytes` go through two pinned staging buffers so that the host memcpy of one chunk
// overlaps the DMA of the other.
absl::Status CopyFromPageable(void* device_dst, const void* host_src, int64_t bytes,
                              PinnedHostPool& staging, cudaStream_t stream,
                              int64_t chunk_bytes = int64_t{4} << 20);
absl::Status CopyToPageable(void* host_dst, const void* device_src, int64_t bytes,
                            PinnedHostPool& staging, cudaStream_t stream,
                            int64_t chunk_bytes = int64_t{4} << 20);

}  // namespace nimble::vm::cuda
