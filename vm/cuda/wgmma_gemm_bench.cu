// Experiment kept as a benchmark (not used by the VM): a Hopper wgmma GEMM of our own against
// cuBLASLt at BERT-base's N = 768 shapes (attention output K = 768, FFN2 K = 3072; M = 16..384):
// D[M, N] = A[M, K] * Bt[N, K]^T + bias[N] + R[M, N], fp16 in and out, fp32 accumulation. One
// warpgroup a block, 64 x BN tiles (BN = 32 / 48 / 64: 144 / 96 / 72 blocks at M = 384), K in
// 64-column (128-byte) tiles loaded with cp.async into 128-byte-swizzled shared memory, STAGES
// deep, `wgmma.mma_async` m64nBNk16 straight from shared memory, bias and residual in the
// epilogue. Prints µs a launch (24 launches over 12 weight sets in one graph, median of 25
// replays) and each kernel's max error against an fp32 reference, relative to max |reference|
// (cuBLASLt's own for comparison).
//
// What it established on the H100 (2026-12-07, bench/RESULTS.md, thirteenth session):
// - The building blocks are right: shared-memory descriptors for K-major operands with the
//   128-byte swizzle (LBO 16 B, SBO 1024 B, +32 B a k16 step), the cp.async swizzle (16-byte
//   chunk c of row r at chunk c ^ (r % 8)), the accumulator fragment (warp w: rows 16w + lane/4
//   and + 8; per 8-column block j, columns 8j + 2 (lane % 4) + {0, 1}). Errors equal
//   cuBLASLt's (3.0e-4 - 4.3e-4) at every shape, partial M tiles included.
// - Speed: 12 µs against cuBLASLt's 8.5 at M = 384, K = 3072; 5.3 against 4.4 at K = 768.
//   Deeper pipelines (up to 16 stages) and several accumulator sets changed nothing; computing
//   the loads' addresses once per thread instead of per tile took 15 to 12 µs (the loop had been
//   issue-bound at one warp a scheduler). cuBLASLt's nvjet kernels for these shapes run 64x64
//   tiles in 4x2 clusters with TMA multicast and a producer warp feeding two consumer
//   warpgroups: that, not the MMA, is what a faster GEMM of our own needs.
#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

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

template <int BN, int STAGES, int ACC>
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
  // ACC independent accumulator sets (k16 step k feeds set k % ACC).
  float accs[ACC][BN / 2];
#pragma unroll
  for (int c = 0; c < ACC; ++c) {
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) accs[c][i] = 0.0f;
  }
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
      Mma<BN>(accs[k % ACC], da + 2 * k, db + 2 * k, (kt > 0 || k >= ACC) ? 1 : 0);
    }
    WgCommit();
  }
  WgWait<0>();
  float acc[BN / 2];
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) {
    acc[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < ACC; ++c) acc[i] += accs[c][i];
  }
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

template <int BN, int STAGES, int ACC = 1>
void LaunchW(const __half* a, const __half* bt, const __half* bias, const __half* res, __half* d,
             int M, int N, int K, cudaStream_t s) {
  constexpr int kSmem = STAGES * (64 + BN) * 128 + 1024;
  static bool configured = [] {
    CK(cudaFuncSetAttribute(WgmmaGemm<BN, STAGES, ACC>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            kSmem));
    return true;
  }();
  (void)configured;
  dim3 grid((N + BN - 1) / BN, (M + 63) / 64);
  WgmmaGemm<BN, STAGES, ACC><<<grid, 128, kSmem, s>>>(a, bt, bias, res, d, M, N, K);
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

// Median microseconds a launch: `count` launches (weights rotating through `layers` buffers)
// in one graph, 25 replays.
template <typename F>
double Time(cudaStream_t s, int count, F launch) {
  cudaGraph_t g;
  cudaGraphExec_t e;
  CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < count; ++i) launch(i);
  CK(cudaStreamEndCapture(s, &g));
  CK(cudaGraphInstantiate(&e, g, 0));
  cudaEvent_t t0, t1;
  CK(cudaEventCreate(&t0));
  CK(cudaEventCreate(&t1));
  std::vector<float> ms;
  for (int r = 0; r < 28; ++r) {
    CK(cudaEventRecord(t0, s));
    CK(cudaGraphLaunch(e, s));
    CK(cudaEventRecord(t1, s));
    CK(cudaEventSynchronize(t1));
    float m = 0;
    CK(cudaEventElapsedTime(&m, t0, t1));
    if (r >= 3) ms.push_back(m);
  }
  std::sort(ms.begin(), ms.end());
  cudaGraphExecDestroy(e);
  cudaGraphDestroy(g);
  return ms[ms.size() / 2] * 1e3 / count;
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
  CK(cudaMalloc(&lt.ws, lt.ws_bytes));
  std::printf(
      "%5s %5s %5s | %9s | %9s %9s %9s %9s %9s | max rel err (cuBLASLt; bn48, bn64, bn32)\n", "M",
      "N", "K", "cublasLt", "bn32", "bn48", "bn64", "bn48acc2", "bn48s12");
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
      const double e_lt = check([&] { RunLt(lt, plan, a, w[0], bias[0], res, d, s); });
      const double e48 = check([&] { LaunchW<48, 8>(a, w[0], bias[0], res, d, M, N, K, s); });
      const double e64 = check([&] { LaunchW<64, 8>(a, w[0], bias[0], res, d, M, N, K, s); });
      const double e32 = check([&] { LaunchW<32, 8>(a, w[0], bias[0], res, d, M, N, K, s); });
      CK(cudaGetLastError());
      const int count = 24;
      auto t_lt = Time(s, count, [&](int i) {
        RunLt(lt, plan, a, w[i % kLayers], bias[i % kLayers], res, d, s);
      });
      auto t_bn32 = Time(s, count, [&](int i) {
        LaunchW<32, 8>(a, w[i % kLayers], bias[i % kLayers], res, d, M, N, K, s);
      });
      auto t_bn48 = Time(s, count, [&](int i) {
        LaunchW<48, 8>(a, w[i % kLayers], bias[i % kLayers], res, d, M, N, K, s);
      });
      auto t_bn64 = Time(s, count, [&](int i) {
        LaunchW<64, 8>(a, w[i % kLayers], bias[i % kLayers], res, d, M, N, K, s);
      });
      auto t_acc2 = Time(s, count, [&](int i) {
        LaunchW<48, 8, 2>(a, w[i % kLayers], bias[i % kLayers], res, d, M, N, K, s);
      });
      auto t_s12 = Time(s, count, [&](int i) {
        LaunchW<48, 12>(a, w[i % kLayers], bias[i % kLayers], res, d, M, N, K, s);
      });
      std::printf("%5d %5d %5d | %9.2f | %9.2f %9.2f %9.2f %9.2f %9.2f | lt %.2e, %.2e %.2e %.2e\n",
                  M, N, K, t_lt, t_bn32, t_bn48, t_bn64, t_acc2, t_s12, e_lt, e48, e64, e32);
      std::fflush(stdout);
      cudaFree(a);
      cudaFree(res);
      cudaFree(d);
      cudaFree(ref);
    }
  }
  return 0;
}
