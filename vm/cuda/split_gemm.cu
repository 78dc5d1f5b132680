// The split-K half-precision GEMM; split_gemm.h says what and why.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "vm/cuda/split_gemm.h"

namespace nimble::vm::cuda {
namespace {

constexpr int kBK = 64;     // K per pipeline stage
constexpr int kStages = 4;  // cp.async ring depth

template <int BM, int BN, int WM, int WN>
struct Tile {
  static constexpr int kBM = BM, kBN = BN;
  static constexpr int kWM = WM, kWN = WN;
  static constexpr int kThreads = kWM * kWN * 32;
  static constexpr int kWarpM = BM / WM, kWarpN = BN / WN;   // a warp's sub-tile
  static constexpr int kMT = kWarpM / 16, kNT = kWarpN / 8;  // its m16 / n8 fragments
  static constexpr int kAcc = kMT * kNT * 4;                 // fp32 accumulators a thread
  static constexpr int kABytes = BM * kBK * 2, kBBytes = kBK * BN * 2;
  static constexpr int kStageBytes = kABytes + kBBytes;
  static constexpr int kSmem = kStages * kStageBytes;
  static_assert(kWarpM % 16 == 0 && kWarpN % 16 == 0 && BN % 64 == 0, "tile shape");
};

using Tile16 = Tile<16, 64, 1, 4>;
using Tile32 = Tile<32, 64, 1, 4>;
using Tile64 = Tile<64, 64, 2, 2>;
using Tile128 = Tile<128, 64, 2, 2>;

struct Params {
  const void* a;
  const void* b;
  void* d;
  const void* bias;
  const void* residual;
  float* partials;
  unsigned* counters;
  float alpha;
  int m, n, k, splits, act;
  bool b_constant;
};

template <typename T>
struct Half;
template <>
struct Half<__half> {
  __device__ static void Mma(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  __device__ static float2 Load2(const void* p) {
    return __half22float2(*reinterpret_cast<const __half2*>(p));
  }
  __device__ static void Store2(void* p, float x, float y) {
    *reinterpret_cast<__half2*>(p) = __floats2half2_rn(x, y);
  }
};
template <>
struct Half<__nv_bfloat16> {
  __device__ static void Mma(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  __device__ static float2 Load2(const void* p) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
  }
  __device__ static void Store2(void* p, float x, float y) {
    *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(x, y);
  }
};

__device__ __forceinline__ uint32_t Smem(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void Commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void WaitGroups() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
__device__ __forceinline__ void LdMatrix4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void LdMatrix4T(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                                           uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}
__device__ __forceinline__ void WaitForPrimary() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void LetDependentsLaunch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Byte offset of 16-byte chunk `chunk` of row `row` in a tile with `row_chunks` chunks a row:
// the chunk index is XORed with the row within each group of 8, so the 8 rows an ldmatrix
// reads at one logical chunk hit 8 different bank groups.
__device__ __forceinline__ int Swizzle(int row, int chunk, int row_chunks) {
  return (row * row_chunks + ((chunk & ~7) | ((chunk ^ row) & 7))) * 16;
}

__device__ __forceinline__ float Activate(float v, int act) {
  if (act == static_cast<int>(SplitGemmAct::kGeluTanh)) {
    return 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
  }
  if (act == static_cast<int>(SplitGemmAct::kRelu)) return v > 0.0f ? v : 0.0f;
  return v;
}

template <typename T, typename C>
__global__ void __launch_bounds__(C::kThreads) SplitGemmKernel(Params p) {
  extern __shared__ __align__(128) unsigned char smem[];
  const int tile_n = blockIdx.x, tile_m = blockIdx.y, split = blockIdx.z;
  const int k_tiles = p.k / kBK;
  const int kt_begin = static_cast<int>(static_cast<int64_t>(split) * k_tiles / p.splits);
  const int kt_end = static_cast<int>(static_cast<int64_t>(split + 1) * k_tiles / p.splits);
  const int count = kt_end - kt_begin;
  const int m0 = tile_m * C::kBM, n0 = tile_n * C::kBN;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / C::kWN, wn = warp % C::kWN;
  const T* a = static_cast<const T*>(p.a);
  const T* b = static_cast<const T*>(p.b);
  const uint32_t base = Smem(smem);

  auto load_b = [&](int slot, int kt) {
    constexpr int kRowChunks = C::kBN / 8;
    const T* src = b + static_cast<int64_t>(kt) * kBK * p.n + n0;
    const uint32_t dst = base + slot * C::kStageBytes + C::kABytes;
#pragma unroll
    for (int c = tid; c < kBK * kRowChunks; c += C::kThreads) {
      const int row = c / kRowChunks, chunk = c % kRowChunks;
      CpAsync16(dst + Swizzle(row, chunk, kRowChunks),
                src + static_cast<int64_t>(row) * p.n + chunk * 8, 16);
    }
  };
  auto load_a = [&](int slot, int kt) {
    const uint32_t dst = base + slot * C::kStageBytes;
#pragma unroll
    for (int c = tid; c < C::kBM * 8; c += C::kThreads) {
      const int row = c / 8, chunk = c % 8;
      const bool in = m0 + row < p.m;  // rows past M load zeros
      const T* src = a + static_cast<int64_t>(in ? m0 + row : 0) * p.k + kt * kBK + chunk * 8;
      CpAsync16(dst + Swizzle(row, chunk, 8), src, in ? 16 : 0);
    }
  };

  // Constant weights are nobody's output: fetch the first stages' before waiting for the
  // kernel ahead of this one, then A (which that kernel may have written).
  const int ahead = min(kStages - 1, count);
  if (p.b_constant) {
    for (int s = 0; s < ahead; ++s) load_b(s, kt_begin + s);
  }
  WaitForPrimary();
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < ahead) {
      if (!p.b_constant) load_b(s, kt_begin + s);
      load_a(s, kt_begin + s);
    }
    Commit();  // group s: A_s and B_s (for s == 0 also every early B)
  }
  LetDependentsLaunch();

  float acc[C::kMT][C::kNT][4];
#pragma unroll
  for (int i = 0; i < C::kMT; ++i)
#pragma unroll
    for (int j = 0; j < C::kNT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

  for (int i = 0; i < count; ++i) {
    WaitGroups<kStages - 2>();  // stage i has landed
    __syncthreads();            // ... for every thread, and slot (i - 1) is free again
    const int next = i + kStages - 1;
    if (next < count) {
      load_b(next % kStages, kt_begin + next);
      load_a(next % kStages, kt_begin + next);
    }
    Commit();
    const uint32_t sa = base + (i % kStages) * C::kStageBytes;
    const uint32_t sb = sa + C::kABytes;
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
      uint32_t af[C::kMT][4];
#pragma unroll
      for (int mt = 0; mt < C::kMT; ++mt) {
        const int row = wm * C::kWarpM + mt * 16 + (lane & 15);
        LdMatrix4(af[mt], sa + Swizzle(row, kk * 2 + (lane >> 4), 8));
      }
      uint32_t bf[C::kNT][2];
#pragma unroll
      for (int np = 0; np < C::kNT / 2; ++np) {
        const int row = kk * 16 + (lane & 15);
        const int chunk = (wn * C::kWarpN) / 8 + np * 2 + (lane >> 4);
        LdMatrix4T(bf[2 * np][0], bf[2 * np][1], bf[2 * np + 1][0], bf[2 * np + 1][1],
                   sb + Swizzle(row, chunk, C::kBN / 8));
      }
#pragma unroll
      for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < C::kNT; ++nt) Half<T>::Mma(acc[mt][nt], af[mt], bf[nt][0], bf[nt][1]);
    }
  }
  WaitGroups<0>();

  if (p.splits > 1) {
    // Partials in a thread-interleaved layout (float4 i of thread t at [i][t]): coalesced both
    // ways, and the reducing block reads exactly what each of its threads needs.
    constexpr int kV = C::kAcc / 4;                 // float4s a thread a split
    constexpr int kGroup = kV >= 16 ? 1 : 16 / kV;  // splits summed per round of loads
    const int tile = tile_m * gridDim.x + tile_n;
    float4* part = reinterpret_cast<float4*>(p.partials) +
                   (static_cast<int64_t>(tile) * p.splits + split) * kV * C::kThreads;
#pragma unroll
    for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < C::kNT; ++nt) {
        const int i = mt * C::kNT + nt;
        __stcg(part + i * C::kThreads + tid,
               make_float4(acc[mt][nt][0], acc[mt][nt][1], acc[mt][nt][2], acc[mt][nt][3]));
      }
    __threadfence();
    __syncthreads();
    __shared__ unsigned last;
    if (tid == 0) last = atomicAdd(p.counters + tile, 1u) == static_cast<unsigned>(p.splits - 1);
    __syncthreads();
    if (!last) return;
    __threadfence();
    // Sum the splits in order. The loads of a group of splits are issued together (about 16
    // float4 a thread in flight): a load per round trip would make the tail of a 7-way split
    // of a 16x64 tile cost 14 L2 latencies.
    const float4* all = reinterpret_cast<const float4*>(p.partials) +
                        static_cast<int64_t>(tile) * p.splits * kV * C::kThreads;
    float4 sum[kV];
#pragma unroll
    for (int i = 0; i < kV; ++i) sum[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int s0 = 0; s0 < p.splits; s0 += kGroup) {
      float4 v[kGroup][kV];
#pragma unroll
      for (int g = 0; g < kGroup; ++g)
#pragma unroll
        for (int i = 0; i < kV; ++i) {
          v[g][i] = s0 + g < p.splits
                        ? __ldcg(all + (static_cast<int64_t>(s0 + g) * kV + i) * C::kThreads + tid)
                        : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
#pragma unroll
      for (int g = 0; g < kGroup; ++g)
#pragma unroll
        for (int i = 0; i < kV; ++i) {
          sum[i].x += v[g][i].x, sum[i].y += v[g][i].y, sum[i].z += v[g][i].z,
              sum[i].w += v[g][i].w;
        }
    }
#pragma unroll
    for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < C::kNT; ++nt) {
        const float4 t = sum[mt * C::kNT + nt];
        acc[mt][nt][0] = t.x, acc[mt][nt][1] = t.y, acc[mt][nt][2] = t.z, acc[mt][nt][3] = t.w;
      }
    if (tid == 0) p.counters[tile] = 0;  // ready for the next GEMM or graph replay
  }

  T* d = static_cast<T*>(p.d);
  const T* bias = static_cast<const T*>(p.bias);
  const T* residual = static_cast<const T*>(p.residual);
#pragma unroll
  for (int nt = 0; nt < C::kNT; ++nt) {
    const int col = n0 + wn * C::kWarpN + nt * 8 + (lane & 3) * 2;
    const float2 bv = bias != nullptr ? Half<T>::Load2(bias + col) : make_float2(0.0f, 0.0f);
#pragma unroll
    for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = m0 + wm * C::kWarpM + mt * 16 + (lane >> 2) + h * 8;
        if (row >= p.m) continue;
        const int64_t at = static_cast<int64_t>(row) * p.n + col;
        float x = p.alpha * acc[mt][nt][2 * h] + bv.x;
        float y = p.alpha * acc[mt][nt][2 * h + 1] + bv.y;
        if (residual != nullptr) {
          const float2 r = Half<T>::Load2(residual + at);
          x += r.x, y += r.y;
        }
        Half<T>::Store2(d + at, Activate(x, p.act), Activate(y, p.act));
      }
  }
}

template <typename T, typename C>
cudaError_t Launch(const Params& params, const SplitGemmPlan& plan, bool pdl, cudaStream_t stream) {
  static const cudaError_t configured = cudaFuncSetAttribute(
      SplitGemmKernel<T, C>, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem);
  if (configured != cudaSuccess) return configured;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(plan.tiles_n, plan.tiles_m, plan.splits);
  config.blockDim = dim3(C::kThreads);
  config.dynamicSmemBytes = C::kSmem;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = pdl ? 1 : 0;
  return cudaLaunchKernelEx(&config, SplitGemmKernel<T, C>, params);
}

template <typename T>
cudaError_t LaunchTyped(const Params& params, const SplitGemmPlan& plan, bool pdl,
                        cudaStream_t stream) {
  switch (plan.config) {
    case 0:
      return Launch<T, Tile16>(params, plan, pdl, stream);
    case 1:
      return Launch<T, Tile32>(params, plan, pdl, stream);
    case 2:
      return Launch<T, Tile64>(params, plan, pdl, stream);
    case 3:
      return Launch<T, Tile128>(params, plan, pdl, stream);
  }
  return cudaErrorInvalidValue;
}

bool Aligned(const void* p, uintptr_t bytes) {
  return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0;
}

}  // namespace

bool SplitGemmSupports(const SplitGemmArgs& g) {
  if (g.m < 1 || g.n < 64 || g.k < 64 || g.n % 64 != 0 || g.k % 64 != 0) return false;
  if (g.a == nullptr || g.b == nullptr || g.d == nullptr) return false;
  if (!Aligned(g.a, 16) || !Aligned(g.b, 16) || !Aligned(g.d, 16)) return false;
  if (g.residual != nullptr && (!Aligned(g.residual, 16) || g.act != SplitGemmAct::kNone)) {
    return false;
  }
  if (g.bias != nullptr && !Aligned(g.bias, 4)) return false;
  // Offsets are computed in 32 bits per operand row; the grid's y extent is 65535.
  return static_cast<int64_t>(g.m) * g.n < (int64_t{1} << 31) &&
         static_cast<int64_t>(g.m) * g.k < (int64_t{1} << 31) &&
         static_cast<int64_t>(g.k) * g.n < (int64_t{1} << 31) && g.m <= 65535 * 128;
}

SplitGemmPlan PlanSplitGemm(int m, int n, int k, int sms, int blocks_per_sm,
                            int64_t max_partial_bytes, int64_t max_counters) {
  SplitGemmPlan plan;
  int bm = 128;
  if (m <= 16) {
    plan.config = 0, bm = 16;
  } else if (m <= 32) {
    plan.config = 1, bm = 32;
  } else if (m <= 64) {
    plan.config = 2, bm = 64;
  } else {
    plan.config = 3, bm = 128;
  }
  plan.tiles_m = (m + bm - 1) / bm;
  plan.tiles_n = n / 64;
  const int64_t tiles = static_cast<int64_t>(plan.tiles_m) * plan.tiles_n;
  const int64_t target = static_cast<int64_t>(std::max(sms, 1)) * std::max(blocks_per_sm, 1);
  int64_t splits = (target + tiles / 2) / tiles;  // nearest whole number of splits
  const int64_t tile_bytes = int64_t{bm} * 64 * 4;
  // The last block of a tile reads every split's partial tile: at most 128 KB of them, a few
  // microseconds of one multiprocessor's L2 bandwidth.
  const int64_t max_splits = std::max<int64_t>((int64_t{128} << 10) / tile_bytes, 1);
  splits = std::clamp<int64_t>(splits, 1, std::min<int64_t>(k / kBK, max_splits));
  while (splits > 1 && (tiles * splits * tile_bytes > max_partial_bytes || tiles > max_counters)) {
    --splits;
  }
  plan.splits = static_cast<int>(splits);
  plan.partial_bytes = splits > 1 ? tiles * splits * tile_bytes : 0;
  plan.counters = splits > 1 ? tiles : 0;
  return plan;
}

cudaError_t LaunchSplitGemm(SplitGemmType type, const SplitGemmArgs& g, const SplitGemmPlan& plan,
                            void* partials, unsigned* counters, bool pdl, cudaStream_t stream) {
  if (plan.tiles_m < 1 || plan.tiles_n < 1 || plan.splits < 1 || plan.tiles_m > 65535 ||
      plan.splits > 65535 || (plan.splits > 1 && (partials == nullptr || counters == nullptr))) {
    return cudaErrorInvalidValue;
  }
  const Params params{
      g.a,     g.b, g.d, g.bias, g.residual,  static_cast<float*>(partials), counters,
      g.alpha, g.m, g.n, g.k,    plan.splits, static_cast<int>(g.act),       g.b_constant};
  return type == SplitGemmType::kF16 ? LaunchTyped<__half>(params, plan, pdl, stream)
                                     : LaunchTyped<__nv_bfloat16>(params, plan, pdl, stream);
}

}  // namespace nimble::vm::cuda
