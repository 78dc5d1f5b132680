// Nimble's own half-precision GEMM for the small-M, weight-streaming shapes of transformer
// inference (M = tokens, K x N = a layer's weight):
//
//   D = act(alpha * A * B [+ residual] [+ bias])     A: M x K, B: K x N, D: M x N, row-major
//
// fp16 or bf16 storage, fp32 accumulation (mma.sync m16n8k16). Why not cuBLASLt for these: at
// M <= 384 a layer's GEMM is a few microseconds and the fixed costs dominate, the grid of
// output tiles covers a fraction of the multiprocessors (N = 768: 12 to 36 tiles), and nothing
// overlaps the weights' first HBM round trip. This kernel
//   - splits K so that tiles x splits fills every multiprocessor (about two blocks each), so the
//     whole weight is requested at once; partial tiles go to an fp32 scratch and the last block
//     of a tile (an atomic count) adds them in split order — deterministic, and it resets the
//     count so CUDA graph replays start from zero;
//   - is launched with programmatic dependent launch: a block starts while the kernel before it
//     finishes, loads its first weight tiles (which no earlier kernel writes), and waits for the
//     earlier kernel only before it reads A, the bias or the residual;
//   - pipelines K in 64-wide tiles through a 4-stage cp.async ring (XOR-swizzled shared memory,
//     ldmatrix fragments).
// The epilogue matches GemmRunner's: the residual is added with the bias before the activation
// (so a residual comes only without activation); GELU is the tanh form, as cuBLASLt's.
//
// Shapes: N and K multiples of 64, any M >= 1; A, B, D, residual 16-byte aligned, bias 4-byte.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace nimble::vm::cuda {

enum class SplitGemmType { kF16, kBF16 };
enum class SplitGemmAct { kNone, kGeluTanh, kRelu };

struct SplitGemmArgs {
  const void* a = nullptr;
  const void* b = nullptr;
  void* d = nullptr;
  const void* bias = nullptr;      // N elements or null
  const void* residual = nullptr;  // M x N or null (may equal d)
  float alpha = 1.0f;
  int m = 0, n = 0, k = 0;
  SplitGemmAct act = SplitGemmAct::kNone;
  // B is constant (no kernel writes it): its first tiles load before the wait for the previous
  // kernel. Otherwise every load waits.
  bool b_constant = false;
};

// How a shape is cut: the block tile (by M), the output tiles, and the K splits.
struct SplitGemmPlan {
  int config = 0;  // block tile: 0 = 16x64, 1 = 32x64, 2 = 64x64, 3 = 128x64
  int tiles_m = 0, tiles_n = 0, splits = 1;
  int64_t partial_bytes = 0;  // fp32 scratch the splits need (0 when splits == 1)
  int64_t counters = 0;       // tile counters the splits need (0 when splits == 1)
};

// Whether the kernel takes these operands (shape multiples, alignment, residual without act).
bool SplitGemmSupports(const SplitGemmArgs& args);

// Cuts M x N x K for a device with `sms` multiprocessors: splits K until the blocks cover
// about `blocks_per_sm` waves' worth of multiprocessors, keeping at least one 64-wide K tile a
// split and the partials within `max_partial_bytes`.
SplitGemmPlan PlanSplitGemm(int m, int n, int k, int sms, int blocks_per_sm,
                            int64_t max_partial_bytes, int64_t max_counters);

// Queues the GEMM. `partials` holds plan.partial_bytes; `counters` holds plan.counters zeros and
// is left zeroed. With `pdl` the launch may overlap the end of the previous kernel on `stream`.
cudaError_t LaunchSplitGemm(SplitGemmType type, const SplitGemmArgs& args,
                            const SplitGemmPlan& plan, void* partials, unsigned* counters, bool pdl,
                            cudaStream_t stream);

}  // namespace nimble::vm::cuda
