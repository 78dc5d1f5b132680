// The LSTM recurrence as one persistent cooperative kernel (see lstm_cuda.h).
//
// The input projection X · W^T of every step is one GEMM before this kernel (lstm.cc); what is
// left is inherently sequential: step t needs all of h_{t-1}. A kernel launch per step would
// cost a launch (~3-5 µs) per step, more than the step's work (4H x H multiply-adds), so the
// whole recurrence runs in one grid that stays resident and meets at a grid-wide barrier
// (cooperative_groups::this_grid().sync()) between steps.
//
// Work split: the dirs * H (direction, unit) pairs are cut into blocks of `units` consecutive
// pairs, one block per SM at most (the grid never exceeds what the occupancy query says can be
// co-resident, which a cooperative launch requires). A block owns all four gate rows of its
// units, so the gate math and the cell state need nothing from other blocks. Its rows of R are
// copied into shared memory once (fp32, rows padded to a multiple of 4 for float4 reads: ~52 KB
// for H = 650 and 5 units); when they do not fit, they are read from global memory (L2) every
// step instead. Each (unit, batch row) item is one warp's: lanes split the four dot products
// over H, a shuffle reduction, and lane 0 does the gate math, keeps c and writes h_t and Y.
//
// h_{t-1} lives in a double buffer in global memory ([2][dirs][batch][Hp], padding zero) and
// is read with __ldcg: other SMs wrote it during this launch, so it must come from L2, never
// from a stale L1 line. The cell state is only ever touched by its owner thread.
//
// sequence_lens: rows whose sequence has ended keep h and c (copied forward) and get zeros in
// Y; a reverse direction starts each row at its own last valid step. The step count is the
// longest length, computed on the device, so nothing is read back to the host.
//
// A step is latency-bound (H100, H = 650, batch 1: ~3.9 µs): the grid barrier (~1.1 µs), one
// L2 round trip for h_{t-1} (each lane issues all its loads before the first multiply; one load
// per loop iteration made it 5.5 µs), the dot products, the reduction and the gate math.
// A barrier of our own (release add + acquire spin on a counter) was no faster than
// cooperative_groups'. Cooperative launches are captured into CUDA graphs as cooperative kernel
// nodes (checked on CUDA 13 / driver 580: replays equal eager runs bitwise).
#include <cooperative_groups.h>

#include <climits>
#include <cstdint>
#include <mutex>

#include "vm/kernels/cuda/lstm_cuda.h"
#include "vm/kernels/cuda/ops_cuda.h"

namespace nimble::vm::cuda_ops {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = 8;  // loads in flight per lane in the dot products

struct Params {
  LstmArgs a;
  int64_t hp;     // hidden rounded up to a multiple of 4 (row stride of h and of R in smem)
  int64_t units;  // (direction, unit) pairs per block
};

__device__ __forceinline__ float Sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ int64_t Max(int64_t x, int64_t y) { return x > y ? x : y; }

__device__ __forceinline__ int64_t SeqLen(const LstmArgs& a, int64_t b) {
  if (a.seq_lens == nullptr) return a.seq;
  const int64_t len =
      a.seq_lens_i64 ? static_cast<int64_t>(__ldg(static_cast<const long long*>(a.seq_lens) + b))
                     : static_cast<int64_t>(__ldg(static_cast<const int*>(a.seq_lens) + b));
  return len < 0 ? 0 : (len > a.seq ? a.seq : len);
}

// Element offset of state row (d, b) in initial_h / Y_h-like tensors.
__device__ __forceinline__ int64_t StateOffset(const LstmArgs& a, int d, int64_t b) {
  return (a.layout == 0 ? (d * a.batch + b) : (b * a.dirs + d)) * a.hidden;
}

// Element offset of Y row (t, d, b).
__device__ __forceinline__ int64_t YOffset(const LstmArgs& a, int64_t t, int d, int64_t b) {
  return (a.layout == 0 ? ((t * a.dirs + d) * a.batch + b) : ((b * a.seq + t) * a.dirs + d)) *
         a.hidden;
}

// Row of X (and of the gate projection) for (t, b).
__device__ __forceinline__ int64_t XRow(const LstmArgs& a, int64_t t, int64_t b) {
  return a.layout == 0 ? t * a.batch + b : b * a.seq + t;
}

// Item `it` of the block whose first (direction, unit) pair is u0: unit-major (lu, b). 32-bit
// divisions (the launcher checks that the counts fit): 64-bit ones are emulated and would sit on
// every step's critical path.
struct Item {
  int64_t lu, b, j, row;  // row: d * batch + b
  int d;
};
__device__ __forceinline__ Item Decode(int64_t it, int64_t u0, int64_t batch, int64_t h) {
  Item x;
  x.lu = static_cast<unsigned>(it) / static_cast<unsigned>(batch);
  x.b = it - x.lu * batch;
  const int64_t gu = u0 + x.lu;
  x.d = static_cast<int>(static_cast<unsigned>(gu) / static_cast<unsigned>(h));
  x.j = gu - x.d * h;
  x.row = x.d * batch + x.b;
  return x;
}

template <bool kSharedR>
__global__ void __launch_bounds__(kThreads) LstmKernel(Params p) {
  extern __shared__ float4 smem_r[];  // kSharedR: the block's R rows, [units][4][hp / 4]
  const LstmArgs& a = p.a;
  cg::grid_group grid = cg::this_grid();
  const int64_t h = a.hidden, hp = p.hp, batch = a.batch;
  const int hp4 = static_cast<int>(hp / 4);
  const int64_t pairs = a.dirs * h;
  const int64_t u0 = static_cast<int64_t>(blockIdx.x) * p.units;
  const int64_t items = p.units * batch;  // (unit, batch row), unit-major
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t state = a.dirs * batch * hp;    // floats of one h buffer
  float* const hbuf = a.workspace;              // [2][dirs][batch][hp]
  float* const cbuf = a.workspace + 2 * state;  // [dirs][batch][h]
  const int64_t gate_stride = a.dirs * 4 * h;   // row stride of a.gates

  // Every warp finds the longest sequence itself (the step count; uniform over the grid).
  int64_t max_len = 0;
  for (int64_t b = lane; b < batch; b += 32) max_len = Max(max_len, SeqLen(a, b));
  if (blockIdx.x == 0 && warp == 0 && a.seq_lens != nullptr && a.errors != nullptr) {
    // Lengths outside [0, seq] run clamped; the host learns of them (plain stores into its
    // error record, the code last).
    for (int64_t b = lane; b < batch; b += 32) {
      const int64_t len = a.seq_lens_i64
                              ? static_cast<int64_t>(static_cast<const long long*>(a.seq_lens)[b])
                              : static_cast<int64_t>(static_cast<const int*>(a.seq_lens)[b]);
      if (len >= 0 && len <= a.seq) continue;
      volatile ErrorRecord* r = a.errors;
      r->value = len;
      r->bound = a.seq;
      __threadfence_system();
      r->code = kErrorSequenceLength;
      __threadfence_system();
    }
  }
  for (int o = 16; o > 0; o >>= 1) max_len = Max(max_len, __shfl_xor_sync(~0u, max_len, o));

  if constexpr (kSharedR) {
    float* rs = reinterpret_cast<float*>(smem_r);
    const int64_t n = p.units * 4 * hp;
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
      const int64_t lu = i / (4 * hp), rem = i - lu * 4 * hp, q = rem / hp, k = rem - q * hp;
      const int64_t gu = u0 + lu;
      float v = 0.0f;
      if (gu < pairs && k < h) {
        const int64_t d = gu / h, j = gu - d * h;
        v = __ldg(a.r + ((d * 4 + q) * h + j) * h + k);
      }
      rs[i] = v;
    }
  }

  // Initial states. Each item stays with the same warp (lane 0) for the whole launch, so the
  // cell state and the item's own h entries are only ever read by the thread that wrote them.
  for (int64_t it = warp; it < items; it += kWarps) {
    const Item x = Decode(it, u0, batch, h);
    if (u0 + x.lu >= pairs) break;  // unit-major: every later item is past the end too
    const int d = x.d;
    const int64_t b = x.b, j = x.j, row = x.row;
    if (lane == 0) {
      hbuf[row * hp + j] = a.initial_h != nullptr ? a.initial_h[StateOffset(a, d, b) + j] : 0.0f;
      cbuf[row * h + j] = a.initial_c != nullptr ? a.initial_c[StateOffset(a, d, b) + j] : 0.0f;
    }
    if (j == h - 1 && lane < hp - h) {  // the padding of both buffers, read by the dot products
      hbuf[row * hp + h + lane] = 0.0f;
      hbuf[state + row * hp + h + lane] = 0.0f;
    }
  }
  grid.sync();  // also a block barrier: R is in shared memory

  for (int64_t s = 0; s < max_len; ++s) {
    const float* prev = hbuf + (s & 1) * state;
    float* next = hbuf + ((s + 1) & 1) * state;
    for (int64_t it = warp; it < items; it += kWarps) {
      const Item x = Decode(it, u0, batch, h);
      if (u0 + x.lu >= pairs) break;
      const int d = x.d;
      const int64_t lu = x.lu, b = x.b, j = x.j, row = x.row;
      const int64_t len = SeqLen(a, b);
      if (s >= len) {  // the sequence has ended: keep the state, zeros in Y
        if (lane == 0) {
          next[row * hp + j] = __ldcg(prev + row * hp + j);
          if (a.y != nullptr) a.y[YOffset(a, s, d, b) + j] = 0.0f;
        }
        continue;
      }
      const int64_t t = (a.reverse || d == 1) ? len - 1 - s : s;
      // The gate math's operands, loaded before the dot products so their latency overlaps.
      float xw[4] = {0.0f, 0.0f, 0.0f, 0.0f}, wb[4] = {0.0f, 0.0f, 0.0f, 0.0f},
            rb[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      float c_prev = 0.0f;
      if (lane == 0) {
        const float* g = a.gates + XRow(a, t, b) * gate_stride + d * 4 * h + j;
#pragma unroll
        for (int q = 0; q < 4; ++q) xw[q] = __ldg(g + q * h);
        if (a.bias != nullptr) {
          const float* bias = a.bias + d * 8 * h + j;
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            wb[q] = __ldg(bias + q * h);
            rb[q] = __ldg(bias + (4 + q) * h);
          }
        }
        c_prev = cbuf[row * h + j];
      }
      // Each lane first loads all the h_{t-1} values it needs (kChunk per lane per round, so one
      // L2 round trip covers H <= 32 * 4 * kChunk), then multiplies: the step's latency is one
      // L2 round trip, not one per loop iteration.
      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      if constexpr (kSharedR) {
        const float4* rs = smem_r + lu * 4 * hp4;
        const float4* hv = reinterpret_cast<const float4*>(prev + row * hp);
        for (int k0 = lane; k0 < hp4; k0 += 32 * kChunk) {
          float4 x[kChunk];
#pragma unroll
          for (int c = 0; c < kChunk; ++c) {
            const int k = k0 + 32 * c;
            x[c] = k < hp4 ? __ldcg(hv + k) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
          }
#pragma unroll
          for (int c = 0; c < kChunk; ++c) {
            const int k = k0 + 32 * c;
            if (k >= hp4) break;
#pragma unroll
            for (int q = 0; q < 4; ++q) {
              const float4 w = rs[q * hp4 + k];
              acc[q] += w.x * x[c].x + w.y * x[c].y + w.z * x[c].z + w.w * x[c].w;
            }
          }
        }
      } else {
        const float* rr = a.r + (d * 4 * h + j) * h;
        const float* hv = prev + row * hp;
        for (int64_t k0 = lane; k0 < h; k0 += 32 * kChunk) {
          float x[kChunk], w[4][kChunk];
#pragma unroll
          for (int c = 0; c < kChunk; ++c) {
            const int64_t k = k0 + 32 * c;
            const bool in = k < h;
            x[c] = in ? __ldcg(hv + k) : 0.0f;
#pragma unroll
            for (int q = 0; q < 4; ++q) w[q][c] = in ? __ldg(rr + q * h * h + k) : 0.0f;
          }
#pragma unroll
          for (int c = 0; c < kChunk; ++c) {
#pragma unroll
            for (int q = 0; q < 4; ++q) acc[q] += w[q][c] * x[c];
          }
        }
      }
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        for (int o = 16; o > 0; o >>= 1) acc[q] += __shfl_down_sync(~0u, acc[q], o);
      }
      if (lane == 0) {
        float pre[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) pre[q] = acc[q] + xw[q] + (wb[q] + rb[q]);
        const float* peep = a.peepholes != nullptr ? a.peepholes + d * 3 * h + j : nullptr;
        if (peep != nullptr) {
          pre[0] += __ldg(peep) * c_prev;
          pre[2] += __ldg(peep + 2 * h) * c_prev;
        }
        // Gate blocks i, o, f, c.
        const float i = Sigmoid(pre[0]), f = Sigmoid(pre[2]), g = tanhf(pre[3]);
        const float c = f * c_prev + i * g;
        if (peep != nullptr) pre[1] += __ldg(peep + h) * c;
        const float hn = Sigmoid(pre[1]) * tanhf(c);
        cbuf[row * h + j] = c;
        next[row * hp + j] = hn;
        if (a.y != nullptr) a.y[YOffset(a, t, d, b) + j] = hn;
      }
    }
    if (s + 1 < max_len) grid.sync();
  }

  // Final states (each item's own entries: no barrier needed) and zeros in Y past every length.
  const float* last = hbuf + (max_len & 1) * state;
  for (int64_t it = warp; it < items; it += kWarps) {
    const Item x = Decode(it, u0, batch, h);
    if (u0 + x.lu >= pairs) break;
    const int d = x.d;
    const int64_t b = x.b, j = x.j, row = x.row;
    if (lane == 0) {
      if (a.y_h != nullptr) a.y_h[StateOffset(a, d, b) + j] = __ldcg(last + row * hp + j);
      if (a.y_c != nullptr) a.y_c[StateOffset(a, d, b) + j] = cbuf[row * h + j];
    }
    if (a.y != nullptr) {
      for (int64_t t = max_len + lane; t < a.seq; t += 32) a.y[YOffset(a, t, d, b) + j] = 0.0f;
    }
  }
}

// Per-device launch limits, read once.
struct DeviceLimits {
  std::once_flag once;
  cudaError_t error = cudaSuccess;
  int sms = 0;
  int64_t max_dynamic_smem = 0;  // per block, opted in for LstmKernel<true>
  bool cooperative = false;
};

constexpr int kMaxDevices = 64;

DeviceLimits* LimitsOf(int device) {
  static DeviceLimits limits[kMaxDevices];
  DeviceLimits* l = &limits[device];
  std::call_once(l->once, [l, device] {
    l->error = [&]() -> cudaError_t {
      int sms = 0, optin = 0, coop = 0;
      cudaError_t e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
      if (e == cudaSuccess) {
        e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
      }
      if (e == cudaSuccess) e = cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device);
      cudaFuncAttributes attrs{};
      if (e == cudaSuccess) e = cudaFuncGetAttributes(&attrs, LstmKernel<true>);
      const int dynamic = optin - static_cast<int>(attrs.sharedSizeBytes);
      if (e == cudaSuccess) {
        e = cudaFuncSetAttribute(LstmKernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 dynamic);
      }
      if (e != cudaSuccess) return e;
      l->sms = sms;
      l->max_dynamic_smem = dynamic;
      l->cooperative = coop != 0;
      return cudaSuccess;
    }();
  });
  return l;
}

}  // namespace

int64_t LstmWorkspaceFloats(int64_t batch, int64_t hidden, int dirs) {
  const int64_t hp = (hidden + 3) / 4 * 4;
  return 2 * dirs * batch * hp + dirs * batch * hidden;
}

cudaError_t LstmRecurrence(const LstmArgs& args, cudaStream_t stream) {
  if (args.batch <= 0 || args.hidden <= 0) return cudaSuccess;  // nothing to compute
  if (args.dirs < 1 || args.dirs > 2 || args.r == nullptr || args.workspace == nullptr ||
      (args.seq > 0 && args.gates == nullptr) || args.layout < 0 || args.layout > 1) {
    return cudaErrorInvalidValue;
  }
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return e;
  if (device < 0 || device >= kMaxDevices) return cudaErrorInvalidDevice;
  const DeviceLimits* limits = LimitsOf(device);
  if (limits->error != cudaSuccess) return limits->error;
  if (!limits->cooperative || limits->sms <= 0) return cudaErrorNotSupported;

  Params p;
  p.a = args;
  p.hp = (args.hidden + 3) / 4 * 4;
  const int64_t pairs = args.dirs * args.hidden;
  p.units = (pairs + limits->sms - 1) / limits->sms;
  const int64_t blocks = (pairs + p.units - 1) / p.units;  // <= sms: one block per SM at most
  if (pairs > INT32_MAX || p.units * args.batch > INT32_MAX) return cudaErrorInvalidValue;
  int64_t smem = p.units * 4 * p.hp * static_cast<int64_t>(sizeof(float));
  bool shared_r = smem <= limits->max_dynamic_smem;
  int resident = 0;
  if (shared_r) {
    e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, LstmKernel<true>, kThreads,
                                                      static_cast<size_t>(smem));
    if (e != cudaSuccess) return e;
    shared_r = resident >= 1;
  }
  if (!shared_r) {
    smem = 0;
    e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, LstmKernel<false>, kThreads, 0);
    if (e != cudaSuccess) return e;
    if (resident < 1) return cudaErrorInvalidConfiguration;
  }
  // Co-residency (what a cooperative launch needs): blocks <= sms <= resident * sms.
  void* params[] = {&p};
  const void* kernel = shared_r ? reinterpret_cast<const void*>(LstmKernel<true>)
                                : reinterpret_cast<const void*>(LstmKernel<false>);
  return cudaLaunchCooperativeKernel(kernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads),
                                     params, static_cast<size_t>(smem), stream);
}

}  // namespace nimble::vm::cuda_ops
