// Experiment kept as a benchmark (not used by the VM): Hopper wgmma GEMMs of our own against
// cuBLASLt at BERT-base's N = 768 shapes (attention output K = 768, FFN2 K = 3072; M = 16..384):
// D[M, N] = A[M, K] * Bt[N, K]^T + bias[N] + R[M, N], fp16 in and out, fp32 accumulation, 64 x BN
// tiles, K in 64-column (128-byte) tiles in 128-byte-swizzled shared memory, `wgmma.mma_async`
// m64nBNk16 straight from shared memory, bias and residual in the epilogue. Two forms:
//   cp.async  one warpgroup loads (addresses computed once per thread) and multiplies
//   TMA       a producer warp issues TMA loads into an mbarrier ring (full / empty barriers);
//             1 or 2 consumer warpgroups (two split each tile's k16 steps and add through shared
//             memory); optionally CN blocks along N as a cluster that multicasts the A tile
//             (each block loads 64 / CN rows for all; consumers release a stage in every block)
// Prints µs a launch (24 launches over 12 weight sets in one graph, median of 25 replays) and
// each kernel's max error against an fp32 reference, relative to max |reference|; then the
// probes of the TMA form's halves (kMmaOnly, kLoadsOnly) at BN 48 to 256.
//
// What it established on the H100 (2026-12-07, bench/RESULTS.md, thirteenth session):
// - Verified building blocks: shared-memory descriptors for K-major operands with the 128-byte
//   swizzle (LBO 16 B, SBO 1024 B, +32 B a k16 step); the cp.async swizzle (16-byte chunk c of
//   row r at chunk c ^ (r % 8)), which TMA's SWIZZLE_128B writes identically; the accumulator
//   fragment (warp w: rows 16w + lane/4 and + 8; per 8-column block j, columns 8j + 2 (lane % 4)
//   + {0, 1}); tensor maps through cudaGetDriverEntryPointByVersion (no libcuda link); mbarrier
//   rings with expect_tx; cluster multicast with remote arrives. Every form's errors equal
//   cuBLASLt's (3.0e-4 - 4.3e-4) at every shape, partial M tiles included.
// - Speed: all forms plateau at 11.6-13 µs against cuBLASLt's 8.5 at M = 384, K = 3072, and
//   5.3-6.3 against 4.4 at K = 768, nearly independent of M, stage count (8-16), accumulator
//   sets, TMA or cp.async, one or two consumer warpgroups and multicast (which is slower here).
//   Remote arrives with `.release.cluster` made the ring 3-10x slower (each one a cluster-scope
//   fence); plain `mbarrier.arrive.shared::cluster` does not. Under Nsight Compute a block's
//   64-column tile took ~1.7x as long as in cuBLASLt's nvjet kernel (64x64 tiles, 4x2 clusters,
//   384 threads), whose L2 traffic is half ours (32 against 59 MB).
// - The probes split the TMA form's time: its multiplies alone take as long as the whole kernel
//   (11.6 µs at BN 48, K = 3072), and so do its loads alone (10.7 µs), at any M. A wgmma
//   m64nNk16 in this loop (one accumulator chain, 4 a tile, fence / commit / wait(1) a tile)
//   costs about 116 / 129 / 160 / 274 cycles at N = 48 / 64 / 128 / 256: a fixed ~90 cycles
//   plus the work, so narrow tiles run at 20-25% of the tensor cores' rate; and one block's TMA
//   ring takes in about 63 GB/s whatever the number of blocks (16 to 96), with the weights in
//   L2 too (loads alone 10.0 against 10.6 µs from HBM). Both halves need
//   fixing (independent accumulators or wider N for the first; more bytes in flight per
//   request or multicast for the second) before our own GEMM can beat cuBLASLt here.
#include <cublasLt.h>
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "vm/cuda/graph_timing.h"

#define CK(x)                                                                        \
  do {                                                                               \
    cudaError_t e_ = (x);                                                            \
    if (e_ != cudaSuccess) {                                                         \
      std::printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)
#define CB(x)                                                                \
  do {                                                                       \
    cublasStatus_t s_ = (x);                                                 \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                       \
      std::printf("%s:%d %s: cublas %d\n", __FILE__, __LINE__, #x, (int)s_); \
      std::exit(1);                                                          \
    }                                                                        \
  } while (0)

namespace {

// wgmma.mma_async m64nNk16, f32 += f16 * f16, both operands from shared-memory descriptors;
// scale_d = 0 overwrites the accumulators.
__device__ __forceinline__ void Wgmma32(float (&d)[16], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, "
      "%10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15])
      : "l"(da), "l"(db), "r"(scale_d));
}

__device__ __forceinline__ void Wgmma48(float (&d)[24], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %26, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n48k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, "
      "%10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23}, %24, %25, p, 1, 1, "
      "0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23])
      : "l"(da), "l"(db), "r"(scale_d));
}

__device__ __forceinline__ void Wgmma64(float (&d)[32], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, "
      "%10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, "
      "%28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "r"(scale_d));
}

__device__ __forceinline__ void Wgmma128(float (&d)[64], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, "
      "%9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, "
      "%27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, "
      "%45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, "
      "%63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
        "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
        "+f"(d[63])
      : "l"(da), "l"(db), "r"(scale_d));
}

__device__ __forceinline__ void Wgmma256(float (&d)[128], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, "
      "%9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, "
      "%27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, "
      "%45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, "
      "%63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, "
      "%81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, "
      "%99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, "
      "%114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, "
      "%129, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
        "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
        "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]),
        "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]),
        "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]),
        "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]),
        "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]),
        "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
        "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]),
        "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]),
        "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]),
        "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(da), "l"(db), "r"(scale_d));
}

constexpr int kBK = 64;  // 128 bytes of fp16: one swizzle row

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void CpCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void CpWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
// K-major operand, 128-byte swizzle: 8-row groups 1024 bytes apart.
__device__ __forceinline__ uint64_t Desc(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (uint64_t{1} << 16) |
         (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}
__device__ __forceinline__ void WgFence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void WgCommit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void WgWait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void ProxyFence() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

template <int BN>
__device__ __forceinline__ void Mma(float (&d)[BN / 2], uint64_t da, uint64_t db, int scale) {
  if constexpr (BN == 32) Wgmma32(d, da, db, scale);
  if constexpr (BN == 48) Wgmma48(d, da, db, scale);
  if constexpr (BN == 64) Wgmma64(d, da, db, scale);
  if constexpr (BN == 128) Wgmma128(d, da, db, scale);
  if constexpr (BN == 256) Wgmma256(d, da, db, scale);
}

// A thread's share of loading `ROWS` rows x 64 columns of a K-major [*, K] matrix into a
// 128-byte-swizzled tile: column chunk tid % 8 of rows tid / 8 + 16 i. Addresses are computed
// once; a tile kt is 128 kt bytes further along each row. Rows past `limit` load zeros. K must
// be a multiple of 64.
template <int ROWS>
struct TileLoader {
  static constexpr int kPer = ROWS / 16;
  const char* src[kPer];
  uint32_t dst[kPer];
  int bytes[kPer];
  __device__ __forceinline__ TileLoader(const __half* g, int row0, int limit, int K, int tid) {
    const int c = tid & 7, r = tid >> 3;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int row = row0 + r + 16 * i;
      const bool ok = row < limit;
      src[i] = reinterpret_cast<const char*>(g + static_cast<int64_t>(ok ? row : row0) * K + c * 8);
      bytes[i] = ok ? 16 : 0;
      dst[i] = (r + 16 * i) * 128 + ((c ^ (r & 7)) << 4);
    }
  }
  __device__ __forceinline__ void Load(uint32_t tile, int kt) const {
#pragma unroll
    for (int i = 0; i < kPer; ++i) CpAsync16(tile + dst[i], src[i] + kt * 128, bytes[i]);
  }
};

template <int BN, int STAGES>
__global__ void __launch_bounds__(128)
    WgmmaGemm(const __half* __restrict__ a, const __half* __restrict__ bt,
              const __half* __restrict__ bias, const __half* __restrict__ res, __half* d, int M,
              int N, int K) {
  extern __shared__ uint8_t smem_raw[];
  // 1024-byte aligned stages: A [64][128 B], B [BN][128 B].
  const uint32_t base = (SmemAddr(smem_raw) + 1023) & ~1023u;
  constexpr uint32_t kA = 64 * 128, kB = BN * 128, kStage = kA + kB;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int m0 = blockIdx.y * 64, n0 = blockIdx.x * BN;
  const int kt_count = K / kBK;
  const TileLoader<64> la(a, m0, M, K, tid);
  const TileLoader<BN> lb(bt, n0, N, K, tid);
  auto load = [&](int stage, int kt) {
    const uint32_t s = base + stage * kStage;
    la.Load(s, kt);
    lb.Load(s + kA, kt);
  };
#pragma unroll
  for (int s = 0; s < STAGES - 2; ++s) {
    if (s < kt_count) load(s, s);
    CpCommit();
  }
  float acc[BN / 2];
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) acc[i] = 0.0f;
  // Loads run STAGES - 2 tiles ahead; one barrier a tile. At tile kt: the MMAs of tile kt - 2
  // are done (at most one group in flight), so its stage is refilled with tile kt + STAGES - 2.
  int stage = 0, fill = STAGES - 2;
  for (int kt = 0; kt < kt_count; ++kt) {
    WgWait<1>();
    CpWait<STAGES - 3>();
    ProxyFence();
    __syncthreads();
    if (kt + STAGES - 2 < kt_count) load(fill, kt + STAGES - 2);
    CpCommit();
    fill = fill + 1 == STAGES ? 0 : fill + 1;
    const uint32_t s = base + stage * kStage;
    stage = stage + 1 == STAGES ? 0 : stage + 1;
    const uint64_t da = Desc(s), db = Desc(s + kA);
    WgFence();
#pragma unroll
    for (int k = 0; k < kBK / 16; ++k) {
      // +32 bytes a k16 step: +2 in the descriptor's address field.
      Mma<BN>(acc, da + 2 * k, db + 2 * k, (kt > 0 || k > 0) ? 1 : 0);
    }
    WgCommit();
  }
  WgWait<0>();
  // Accumulator fragment: warp w holds rows 16w .. 16w + 15; per 8-column block j, lanes hold
  // (lane / 4, 2 (lane % 4) + {0, 1}) and the same 8 rows down.
  const int r0 = m0 + warp * 16 + (lane >> 2);
#pragma unroll
  for (int j = 0; j < BN / 8; ++j) {
    const int col = n0 + j * 8 + (lane & 3) * 2;
    if (col >= N) continue;
    const float2 b = bias != nullptr ? __half22float2(*reinterpret_cast<const __half2*>(bias + col))
                                     : make_float2(0.f, 0.f);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = r0 + h * 8;
      if (row >= M) continue;
      float2 v = make_float2(acc[j * 4 + h * 2] + b.x, acc[j * 4 + h * 2 + 1] + b.y);
      if (res != nullptr) {
        const float2 r = __half22float2(
            *reinterpret_cast<const __half2*>(res + static_cast<int64_t>(row) * N + col));
        v.x += r.x, v.y += r.y;
      }
      *reinterpret_cast<__half2*>(d + static_cast<int64_t>(row) * N + col) = __float22half2_rn(v);
    }
  }
}

// ---- TMA + cluster multicast form ------------------------------------------------------------
__device__ __forceinline__ void MbarInit(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}
__device__ __forceinline__ void MbarExpectTx(uint32_t bar, int bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void MbarWait(uint32_t bar, int parity) {
  asm volatile(
      "{\n.reg .pred P;\nWAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 P, [%0], %1;\n"
      "@!P bra WAIT_%=;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
// Arrives on the barrier at the same shared offset in cluster CTA `rank`.
__device__ __forceinline__ void MbarArriveCluster(uint32_t bar, int rank) {
  asm volatile(
      "{\n.reg .b32 r;\nmapa.shared::cluster.u32 r, %0, %1;\n"
      "mbarrier.arrive.shared::cluster.b64 _, [r];\n}\n" ::"r"(bar),
      "r"(rank)
      : "memory");
}
__device__ __forceinline__ void ClusterSync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::
                   : "memory");
}
__device__ __forceinline__ int ClusterRank() {
  int r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
}
__device__ __forceinline__ void TmaLoad(uint32_t dst, const CUtensorMap* map, int c0, int c1,
                                        uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void TmaLoadMulticast(uint32_t dst, const CUtensorMap* map, int c0,
                                                 int c1, uint32_t bar, uint16_t mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      ".multicast::cluster [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar), "h"(mask)
      : "memory");
}

// Probes of the TMA form's two halves (timings only; the result is wrong): kMmaOnly loads the
// first STAGES tiles and then multiplies the same stages over and over; kLoadsOnly waits for
// and releases every tile without multiplying.
constexpr int kFull = 0, kMmaOnly = 1, kLoadsOnly = 2;

// Blocks of WGS consumer warpgroups (64 x BN of D; with two, each takes half of every tile's k16
// steps and their partial sums meet in shared memory) and a producer warp whose lane 0 issues
// the TMA loads. CN blocks along N form a cluster: each loads 64 / CN rows of the
// shared A tile and multicasts them to all CN, so A crosses L2 once per cluster instead of once
// per block. full[s]: the stage's bytes have landed (expect_tx by the local producer); empty[s]:
// all CN blocks' consumer warps are done with the stage (4 WGS CN arrivals), since a multicast
// writes into every block's copy.
template <int BN, int STAGES, int CN, int WGS, int MODE = kFull>
__global__ void __launch_bounds__(128 * WGS + 32)
    WgmmaTmaGemm(const __grid_constant__ CUtensorMap map_a,
                 const __grid_constant__ CUtensorMap map_b, const __half* __restrict__ bias,
                 const __half* __restrict__ res, __half* d, int M, int N, int K) {
  extern __shared__ uint8_t smem_raw[];
  __shared__ __align__(8) uint64_t full[STAGES], empty[STAGES];
  const uint32_t base = (SmemAddr(smem_raw) + 1023) & ~1023u;
  constexpr uint32_t kA = 64 * 128, kB = BN * 128, kStage = kA + kB;
  constexpr int kRowsA = 64 / CN;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int m0 = blockIdx.y * 64, n0 = blockIdx.x * BN;
  const int kt_count = K / kBK;
  const int rank = CN > 1 ? ClusterRank() : 0;
  if (tid == 0) {
    for (int s = 0; s < STAGES; ++s) {
      MbarInit(SmemAddr(&full[s]), 1);
      MbarInit(SmemAddr(&empty[s]), 4 * WGS * CN);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  if constexpr (CN > 1) {
    ClusterSync();
  } else {
    __syncthreads();
  }
  if (warp == 4 * WGS) {
    if (lane == 0) {
      for (int kt = 0; kt < kt_count; ++kt) {
        const int s = kt % STAGES, use = kt / STAGES;
        if (MODE == kMmaOnly && use > 0) break;
        if (use > 0) MbarWait(SmemAddr(&empty[s]), (use - 1) & 1);
        const uint32_t stage = base + s * kStage, bar = SmemAddr(&full[s]);
        MbarExpectTx(bar, kStage);
        if constexpr (CN > 1) {
          TmaLoadMulticast(stage + rank * kRowsA * 128, &map_a, kt * kBK, m0 + rank * kRowsA, bar,
                           static_cast<uint16_t>((1 << CN) - 1));
        } else {
          TmaLoad(stage, &map_a, kt * kBK, m0, bar);
        }
        TmaLoad(stage + kA, &map_b, kt * kBK, n0, bar);
      }
    }
  } else {
    float acc[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) acc[i] = 0.0f;
    for (int kt = 0; kt < kt_count; ++kt) {
      const int s = kt % STAGES;
      if (MODE != kMmaOnly || kt < STAGES) MbarWait(SmemAddr(&full[s]), (kt / STAGES) & 1);
      const uint32_t stage = base + s * kStage;
      const uint64_t da = Desc(stage), db = Desc(stage + kA);
      WgFence();
      // With two warpgroups, warpgroup g takes k16 steps g * 4 / WGS ... of each tile.
      const int wg = warp >> 2;
#pragma unroll
      for (int kk = 0; kk < kBK / 16 / WGS; ++kk) {
        const int k = wg * (kBK / 16 / WGS) + kk;
        if (MODE != kLoadsOnly) Mma<BN>(acc, da + 2 * k, db + 2 * k, (kt > 0 || kk > 0) ? 1 : 0);
      }
      WgCommit();
      WgWait<1>();  // tile kt - 1's MMAs are done: release its stage in every cluster block
      if (kt > 0 && lane == 0) {
        const uint32_t e = SmemAddr(&empty[(kt - 1) % STAGES]);
        if constexpr (CN == 1) {
          asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(e) : "memory");
        } else {
          for (int r = 0; r < CN; ++r) MbarArriveCluster(e, r);
        }
      }
    }
    WgWait<0>();
    if constexpr (WGS == 2) {
      // Warpgroup 1's partial sums to warpgroup 0 through the (now idle) stages, in fragment
      // order: thread t + 128 writes where thread t reads.
      float* part = reinterpret_cast<float*>(smem_raw + (base - SmemAddr(smem_raw)));
      asm volatile("bar.sync 1, 256;\n" ::: "memory");
      if (warp >= 4) {
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) part[i * 128 + (tid - 128)] = acc[i];
      }
      asm volatile("bar.sync 1, 256;\n" ::: "memory");
      if (warp < 4) {
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) acc[i] += part[i * 128 + tid];
      }
    }
    const int r0 = m0 + (warp & 3) * 16 + (lane >> 2);
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
      const int col = n0 + j * 8 + (lane & 3) * 2;
      if (col >= N || warp >= 4) continue;
      const float2 b = __half22float2(*reinterpret_cast<const __half2*>(bias + col));
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = r0 + h * 8;
        if (row >= M) continue;
        float2 v = make_float2(acc[j * 4 + h * 2] + b.x, acc[j * 4 + h * 2 + 1] + b.y);
        const float2 r = __half22float2(
            *reinterpret_cast<const __half2*>(res + static_cast<int64_t>(row) * N + col));
        v.x += r.x, v.y += r.y;
        *reinterpret_cast<__half2*>(d + static_cast<int64_t>(row) * N + col) = __float22half2_rn(v);
      }
    }
  }
  // No block leaves while a peer may still multicast into it or arrive on its barriers.
  __syncwarp();
  if constexpr (CN > 1) ClusterSync();
}

__global__ void RefGemm(const __half* a, const __half* bt, const __half* bias, const __half* res,
                        float* d, int M, int N, int K) {
  const int row = blockIdx.y, col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= N) return;
  float s = 0;
  for (int k = 0; k < K; ++k) {
    s += __half2float(a[static_cast<int64_t>(row) * K + k]) *
         __half2float(bt[static_cast<int64_t>(col) * K + k]);
  }
  d[static_cast<int64_t>(row) * N + col] =
      s + __half2float(bias[col]) + __half2float(res[static_cast<int64_t>(row) * N + col]);
}

__half* Random(int64_t n, std::mt19937& rng, float scale) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<__half> h(n);
  for (auto& v : h) v = __float2half(u(rng));
  __half* p = nullptr;
  CK(cudaMalloc(&p, n * 2));
  CK(cudaMemcpy(p, h.data(), n * 2, cudaMemcpyHostToDevice));
  return p;
}

template <int BN, int STAGES>
void LaunchW(const __half* a, const __half* bt, const __half* bias, const __half* res, __half* d,
             int M, int N, int K, cudaStream_t s) {
  constexpr int kSmem = STAGES * (64 + BN) * 128 + 1024;
  static bool configured = [] {
    CK(cudaFuncSetAttribute(WgmmaGemm<BN, STAGES>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            kSmem));
    return true;
  }();
  (void)configured;
  dim3 grid((N + BN - 1) / BN, (M + 63) / 64);
  WgmmaGemm<BN, STAGES><<<grid, 128, kSmem, s>>>(a, bt, bias, res, d, M, N, K);
}

PFN_cuTensorMapEncodeTiled_v12000 Encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q;
    CK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault,
                                        &q));
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

// A K-major [rows, K] fp16 matrix as 64-column x box_rows boxes, 128-byte swizzle; rows past
// the end read as zeros.
CUtensorMap TensorMap(const __half* p, int rows, int K, int box_rows) {
  CUtensorMap m;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(K), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(K) * 2};
  const cuuint32_t box[2] = {64, static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t estr[2] = {1, 1};
  const CUresult r =
      Encoder()(&m, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2, const_cast<__half*>(p), dims, strides, box,
                estr, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    std::printf("cuTensorMapEncodeTiled: %d\n", static_cast<int>(r));
    std::exit(1);
  }
  return m;
}

template <int BN, int STAGES, int CN, int WGS, int MODE = kFull>
void LaunchT(const CUtensorMap& ma, const CUtensorMap& mb, const __half* bias, const __half* res,
             __half* d, int M, int N, int K, cudaStream_t s) {
  constexpr int kSmem = STAGES * (64 + BN) * 128 + 1024;
  static bool configured = [] {
    CK(cudaFuncSetAttribute(WgmmaTmaGemm<BN, STAGES, CN, WGS, MODE>,
                            cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    return true;
  }();
  (void)configured;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((N + BN - 1) / BN, (M + 63) / 64);
  cfg.blockDim = dim3(128 * WGS + 32);
  cfg.dynamicSmemBytes = kSmem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = CN;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  CK(cudaLaunchKernelEx(&cfg, WgmmaTmaGemm<BN, STAGES, CN, WGS, MODE>, ma, mb, bias, res, d, M, N,
                        K));
}

struct Lt {
  cublasLtHandle_t h;
  void* ws;
  size_t ws_bytes = 32 << 20;
};

struct LtPlan {
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t la, lb, lc;
  cublasLtMatmulAlgo_t algo;
};

LtPlan MakeLt(Lt& lt, int M, int N, int K, const __half* bias) {
  LtPlan p;
  CB(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
  CB(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t)));
  CB(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof(n)));
  cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
  CB(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  cudaDataType_t bt = CUDA_R_16F;
  CB(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
  CB(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                    sizeof(bias)));
  // Column-major view: D^T (N x M) = Bt^T... : "A" = Bt (K x N, op T), "B" = A (K x M, op N).
  CB(cublasLtMatrixLayoutCreate(&p.la, CUDA_R_16F, K, N, K));
  CB(cublasLtMatrixLayoutCreate(&p.lb, CUDA_R_16F, K, M, K));
  CB(cublasLtMatrixLayoutCreate(&p.lc, CUDA_R_16F, N, M, N));
  cublasLtMatmulPreference_t pref;
  CB(cublasLtMatmulPreferenceCreate(&pref));
  CB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                          &lt.ws_bytes, sizeof(lt.ws_bytes)));
  cublasLtMatmulHeuristicResult_t r;
  int found = 0;
  CB(cublasLtMatmulAlgoGetHeuristic(lt.h, p.desc, p.la, p.lb, p.lc, p.lc, pref, 1, &r, &found));
  if (found == 0) {
    std::printf("no cuBLASLt algorithm\n");
    std::exit(1);
  }
  p.algo = r.algo;
  cublasLtMatmulPreferenceDestroy(pref);
  return p;
}

void RunLt(Lt& lt, LtPlan& p, const __half* a, const __half* bt, const __half* bias,
           const __half* res, __half* d, cudaStream_t s) {
  const float alpha = 1.0f, beta = 1.0f;
  CB(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                    sizeof(bias)));
  CB(cublasLtMatmul(lt.h, p.desc, &alpha, bt, p.la, a, p.lb, &beta, res, p.lc, d, p.lc, &p.algo,
                    lt.ws, lt.ws_bytes, s));
}

// Median microseconds a launch: `count` launches (weights rotating through the layers'
// buffers) in one graph, 25 replays.
template <typename F>
double Time(cudaStream_t s, int count, F launch) {
  const absl::StatusOr<float> ms = nimble::vm::cuda::MedianGraphReplayMs(
      s, 25,
      [&] {
        for (int i = 0; i < count; ++i) launch(i);
        return nimble::vm::cuda::CudaStatus(cudaGetLastError(), "launch");
      },
      [] { return absl::OkStatus(); });
  if (!ms.ok()) {
    std::printf("%s\n", ms.status().ToString().c_str());
    std::exit(1);
  }
  return *ms * 1e3 / count;
}

}  // namespace

int main(int argc, char** argv) {
  const int only_k = argc > 2 ? std::atoi(argv[1]) : 0, only_m = argc > 2 ? std::atoi(argv[2]) : 0;
  int dev_count = 0;
  if (cudaGetDeviceCount(&dev_count) != cudaSuccess || dev_count == 0) {
    std::printf("no GPU\n");
    return 77;
  }
  std::mt19937 rng(3);
  constexpr int kLayers = 12;
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  Lt lt;
  CB(cublasLtCreate(&lt.h));
  struct Probe {
    int m, k;
    double mma48, mma64, mma128, mma256, load48, load48c2, warm_lt, warm48, warm_load48;
  };
  std::vector<Probe> probes;
  CK(cudaMalloc(&lt.ws, lt.ws_bytes));
  std::printf("%5s %5s %5s | %9s | %9s %9s %9s %9s %9s | max rel err (same order)\n", "M", "N", "K",
              "cublasLt", "cp32", "t48", "t48wg2", "t64wg2", "t48wg2c2");
  for (int K : {768, 3072}) {
    if (only_k != 0 && K != only_k) continue;
    const int N = 768;
    std::vector<__half*> w, bias;
    for (int l = 0; l < kLayers; ++l) {
      w.push_back(Random(static_cast<int64_t>(N) * K, rng, 0.05f));
      bias.push_back(Random(N, rng, 0.5f));
    }
    for (int M : {384, 128, 16, 200}) {
      if (only_m != 0 && M != only_m) continue;
      __half* a = Random(static_cast<int64_t>(M) * K, rng, 1.0f);
      __half* res = Random(static_cast<int64_t>(M) * N, rng, 1.0f);
      __half* d = nullptr;
      float* ref = nullptr;
      CK(cudaMalloc(&d, static_cast<int64_t>(M) * N * 2));
      CK(cudaMalloc(&ref, static_cast<int64_t>(M) * N * 4));
      RefGemm<<<dim3((N + 127) / 128, M), 128, 0, s>>>(a, w[0], bias[0], res, ref, M, N, K);
      std::vector<float> href(static_cast<size_t>(M) * N);
      CK(cudaMemcpyAsync(href.data(), ref, href.size() * 4, cudaMemcpyDeviceToHost, s));
      CK(cudaStreamSynchronize(s));
      auto check = [&](auto launch) {
        CK(cudaMemsetAsync(d, 0xFF, static_cast<int64_t>(M) * N * 2, s));
        launch();
        std::vector<__half> hd(static_cast<size_t>(M) * N);
        CK(cudaMemcpyAsync(hd.data(), d, hd.size() * 2, cudaMemcpyDeviceToHost, s));
        CK(cudaStreamSynchronize(s));
        double err = 0, mx = 0;
        for (size_t i = 0; i < hd.size(); ++i) {
          const double v = __half2float(hd[i]);
          err = std::max(err, std::isfinite(v) ? std::abs(v - href[i]) : 1e30);
          mx = std::max(mx, static_cast<double>(std::abs(href[i])));
        }
        return err / mx;
      };
      LtPlan plan = MakeLt(lt, M, N, K, bias[0]);
      // A as 64-row boxes, and as 32-row boxes for the 2-block clusters' multicast halves.
      const CUtensorMap ma64 = TensorMap(a, M, K, 64), ma32 = TensorMap(a, M, K, 32);
      std::vector<CUtensorMap> mb48, mb64, mb128, mb256;
      for (int l = 0; l < kLayers; ++l) {
        mb48.push_back(TensorMap(w[l], N, K, 48));
        mb64.push_back(TensorMap(w[l], N, K, 64));
        mb128.push_back(TensorMap(w[l], N, K, 128));
        mb256.push_back(TensorMap(w[l], N, K, 256));
      }
      const double e_lt = check([&] { RunLt(lt, plan, a, w[0], bias[0], res, d, s); });
      const double e32 = check([&] { LaunchW<32, 8>(a, w[0], bias[0], res, d, M, N, K, s); });
      const double e1 =
          check([&] { LaunchT<48, 8, 1, 1>(ma64, mb48[0], bias[0], res, d, M, N, K, s); });
      const double e2 =
          check([&] { LaunchT<48, 8, 1, 2>(ma64, mb48[0], bias[0], res, d, M, N, K, s); });
      const double e4 =
          check([&] { LaunchT<64, 8, 1, 2>(ma64, mb64[0], bias[0], res, d, M, N, K, s); });
      const double e64 =
          check([&] { LaunchT<48, 8, 2, 2>(ma32, mb48[0], bias[0], res, d, M, N, K, s); });
      CK(cudaGetLastError());
      const int count = 24;
      auto t_lt = Time(s, count, [&](int i) {
        RunLt(lt, plan, a, w[i % kLayers], bias[i % kLayers], res, d, s);
      });
      auto t_bn32 = Time(s, count, [&](int i) {
        LaunchW<32, 8>(a, w[i % kLayers], bias[i % kLayers], res, d, M, N, K, s);
      });
      auto t1 = Time(s, count, [&](int i) {
        LaunchT<48, 8, 1, 1>(ma64, mb48[i % kLayers], bias[i % kLayers], res, d, M, N, K, s);
      });
      auto t2 = Time(s, count, [&](int i) {
        LaunchT<48, 8, 1, 2>(ma64, mb48[i % kLayers], bias[i % kLayers], res, d, M, N, K, s);
      });
      auto t4 = Time(s, count, [&](int i) {
        LaunchT<64, 8, 1, 2>(ma64, mb64[i % kLayers], bias[i % kLayers], res, d, M, N, K, s);
      });
      auto t64 = Time(s, count, [&](int i) {
        LaunchT<48, 8, 2, 2>(ma32, mb48[i % kLayers], bias[i % kLayers], res, d, M, N, K, s);
      });
      std::printf(
          "%5d %5d %5d | %9.2f | %9.2f %9.2f %9.2f %9.2f %9.2f | %.2e %.2e; %.2e %.2e %.2e %.2e\n",
          M, N, K, t_lt, t_bn32, t1, t2, t4, t64, e_lt, e32, e1, e2, e4, e64);
      // The probes: multiplies alone at BN 48 .. 256 (one accumulator chain, 4 wgmma a tile),
      // loads alone (one block a 64 x 48 tile; 2-block clusters multicasting A).
      auto p48 = Time(s, count, [&](int i) {
        LaunchT<48, 8, 1, 1, kMmaOnly>(ma64, mb48[i % kLayers], bias[i % kLayers], res, d, M, N, K,
                                       s);
      });
      auto p64 = Time(s, count, [&](int i) {
        LaunchT<64, 8, 1, 1, kMmaOnly>(ma64, mb64[i % kLayers], bias[i % kLayers], res, d, M, N, K,
                                       s);
      });
      auto p128 = Time(s, count, [&](int i) {
        LaunchT<128, 4, 1, 1, kMmaOnly>(ma64, mb128[i % kLayers], bias[i % kLayers], res, d, M, N,
                                        K, s);
      });
      auto p256 = Time(s, count, [&](int i) {
        LaunchT<256, 4, 1, 1, kMmaOnly>(ma64, mb256[i % kLayers], bias[i % kLayers], res, d, M, N,
                                        K, s);
      });
      auto l48 = Time(s, count, [&](int i) {
        LaunchT<48, 8, 1, 1, kLoadsOnly>(ma64, mb48[i % kLayers], bias[i % kLayers], res, d, M, N,
                                         K, s);
      });
      auto l48c2 = Time(s, count, [&](int i) {
        LaunchT<48, 8, 2, 1, kLoadsOnly>(ma32, mb48[i % kLayers], bias[i % kLayers], res, d, M, N,
                                         K, s);
      });
      // The same with one weight set (L2-resident, as the VM's weight prefetch makes them).
      auto warm_lt = Time(s, count, [&](int) { RunLt(lt, plan, a, w[0], bias[0], res, d, s); });
      auto warm48 = Time(
          s, count, [&](int) { LaunchT<48, 8, 1, 1>(ma64, mb48[0], bias[0], res, d, M, N, K, s); });
      auto warm_l48 = Time(s, count, [&](int) {
        LaunchT<48, 8, 1, 1, kLoadsOnly>(ma64, mb48[0], bias[0], res, d, M, N, K, s);
      });
      probes.push_back({M, K, p48, p64, p128, p256, l48, l48c2, warm_lt, warm48, warm_l48});
      std::fflush(stdout);
      cudaFree(a);
      cudaFree(res);
      cudaFree(d);
      cudaFree(ref);
    }
  }
  std::printf(
      "\nprobes (µs a launch; results not checked; warm: one weight set, in L2)\n%5s %5s | %9s "
      "%9s %9s %9s | %9s %9s | %9s %9s %9s\n",
      "M", "K", "mma48", "mma64", "mma128", "mma256", "load48", "load48c2", "warm_lt", "warm48",
      "warm_ld48");
  for (const Probe& p : probes) {
    std::printf("%5d %5d | %9.2f %9.2f %9.2f %9.2f | %9.2f %9.2f | %9.2f %9.2f %9.2f\n", p.m, p.k,
                p.mma48, p.mma64, p.mma128, p.mma256, p.load48, p.load48c2, p.warm_lt, p.warm48,
                p.warm_load48);
  }
  return 0;
}
