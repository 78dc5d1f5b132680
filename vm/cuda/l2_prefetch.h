// L2 prefetch of device memory, stream-ordered and fire-and-forget: the kernel issues Hopper's
// bulk L2 prefetch (cp.async.bulk.prefetch.L2, sm_90+; per-line prefetch.global.L2 before) for
// the range and exits without waiting for the data. Used to pull a GEMM's weights into L2 while
// the kernels before it run: at small batch a transformer's GEMMs stream their weights from HBM
// once per call and are latency-bound on those reads.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace nimble::vm::cuda {

// How the prefetch is requested: Hopper's bulk form (one request per 4 KB; per-line requests
// before sm_90) or one prefetch.global.L2 per 128-byte line.
enum class L2PrefetchForm { kBulk, kLines };

// Prefetches [ptr, ptr + bytes) into L2 on `stream`, spread over a block per 64 KB so that many
// multiprocessors issue the requests. ptr need not be aligned; nothing is written. A no-op for
// bytes <= 0.
absl::Status PrefetchL2(const void* ptr, int64_t bytes, cudaStream_t stream,
                        L2PrefetchForm form = L2PrefetchForm::kBulk);

// Evicts L2 by writing `scratch_bytes` of `scratch` (benchmarks: cold-cache timing).
absl::Status FlushL2(void* scratch, int64_t scratch_bytes, cudaStream_t stream);

}  // namespace nimble::vm::cuda
