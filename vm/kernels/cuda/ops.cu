// CUDA kernels of the VM's CUDA device (see ops_cuda.h). Correct first: generic index math,
// one thread per element for elementwise work, one block per row for reductions. fp32 compute
// on every storage type (f32, f16, bf16).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <type_traits>

#include "vm/kernels/cuda/ops_cuda.h"

namespace nimble::vm::cuda_ops {
namespace {

constexpr int kThreads = 256;

unsigned Blocks(int64_t count, int threads = kThreads) {
  int64_t blocks = (count + threads - 1) / threads;
  if (blocks > 65535LL * 64) blocks = 65535LL * 64;  // grid-stride loops cover the rest
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

__device__ __forceinline__ float GeluErf(float x) {
  return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}
__device__ __forceinline__ float GeluTanh(float x) {
  return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float Sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// fp32 arithmetic on every storage type: Ld converts on load, St rounds once on store.
__device__ __forceinline__ float Ld(const float* p) { return *p; }
__device__ __forceinline__ float Ld(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float Ld(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void St(float* p, float v) { *p = v; }
__device__ __forceinline__ void St(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void St(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// Calls f(T{}) with T the storage type of `type` (a tag value: only its type matters).
template <typename F>
cudaError_t Dispatch(FloatType type, F&& f) {
  switch (type) {
    case FloatType::kF32:
      return f(float{});
    case FloatType::kF16:
      return f(__half{});
    case FloatType::kBF16:
      return f(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

// Programmatic dependent launch (Hopper): a kernel launched with LaunchPdl may start while the
// kernel before it on the stream finishes and waits in WaitForPrimary, before its first read or
// write of memory, for that kernel's completion and memory flush. It hides the launch gap
// between kernels, captured into CUDA graphs as programmatic edges. NIMBLE_CUDA_PDL=0 launches
// normally (A/B). A kernel's own dependents launch as its blocks exit (the implicit trigger;
// an early griddepcontrol.launch_dependents here has not been measured yet). Every dependent
// reached through a programmatic edge waits before touching memory. cuBLASLt's GEMMs do not
// (none of BERT-base's GEMM algorithms waited when probed on an H100), so they keep ordinary
// edges.
__device__ __forceinline__ void WaitForPrimary() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

bool PdlEnabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("NIMBLE_CUDA_PDL");
    if (v != nullptr && v[0] == '0') return false;
    int device = 0, major = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return major >= 9;
  }();
  return enabled;
}

template <typename... Params, typename... Args>
cudaError_t LaunchPdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                      cudaStream_t stream, Args... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = PdlEnabled() ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...);
}

// Block-wide sum / max for blockDim.x <= 1024 (a multiple of 32).
template <bool kMax>
__device__ float BlockReduce(float v) {
  __shared__ float partial[32];
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float o = __shfl_xor_sync(0xffffffffu, v, offset);
    v = kMax ? fmaxf(v, o) : v + o;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // partial may still be read by a previous reduction
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  v = lane < warps ? partial[lane] : (kMax ? -INFINITY : 0.0f);
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float o = __shfl_xor_sync(0xffffffffu, v, offset);
    v = kMax ? fmaxf(v, o) : v + o;
  }
  return v;
}

// ---- FusedElementwise interpreter

template <typename T>
__global__ void ProgramKernel(Program program, ProgramArgs args, BroadcastShape shape,
                              int64_t count) {
  float slots[kMaxProgramSlots];
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t offsets[kMaxProgramInputs];
    for (int k = 0; k < program.num_inputs; ++k) offsets[k] = 0;
    int64_t rest = i;
    for (int d = shape.rank - 1; d >= 0; --d) {
      const int64_t idx = rest % shape.dims[d];
      rest /= shape.dims[d];
      for (int k = 0; k < program.num_inputs; ++k) offsets[k] += idx * shape.strides[k][d];
    }
    for (int p = 0; p < program.num_instructions; ++p) {
      const int op = program.code[p][0], dst = program.code[p][1];
      const int a = program.code[p][2], b = program.code[p][3];
      float x = 0.0f;
      switch (op) {
        case 0:
          x = Ld(static_cast<const T*>(args.inputs[a]) + offsets[a]);
          break;
        case 1:
          x = program.constants[a];
          break;
        case 2:
          St(static_cast<T*>(args.outputs[dst]) + i, slots[a]);
          continue;
        case 10:
          x = slots[a] + slots[b];
          break;
        case 11:
          x = slots[a] - slots[b];
          break;
        case 12:
          x = slots[a] * slots[b];
          break;
        case 13:
          x = slots[a] / slots[b];
          break;
        case 14:
          x = fmaxf(slots[a], slots[b]);
          break;
        case 15:
          x = fminf(slots[a], slots[b]);
          break;
        case 16:
          x = powf(slots[a], slots[b]);
          break;
        case 30:
          x = -slots[a];
          break;
        case 31:
          x = expf(slots[a]);
          break;
        case 32:
          x = logf(slots[a]);
          break;
        case 33:
          x = sqrtf(slots[a]);
          break;
        case 34:
          x = rsqrtf(slots[a]);
          break;
        case 35:
          x = tanhf(slots[a]);
          break;
        case 36:
          x = erff(slots[a]);
          break;
        case 37:
          x = Sigmoid(slots[a]);
          break;
        case 38:
          x = fmaxf(slots[a], 0.0f);
          break;
        case 39:
          x = GeluErf(slots[a]);
          break;
        case 40:
          x = GeluTanh(slots[a]);
          break;
        case 41:
          x = fabsf(slots[a]);
          break;
        case 42:
          x = 1.0f / slots[a];
          break;
        default:
          x = NAN;
          break;
      }
      slots[dst] = x;
    }
  }
}

template <typename T>
__global__ void BiasActResidualKernel(T* x, const T* bias, const T* residual, int64_t count,
                                      int64_t n, Act act) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = Ld(x + i);
    if (bias != nullptr) v += Ld(bias + i % n);
    switch (act) {
      case Act::kNone:
        break;
      case Act::kRelu:
        v = fmaxf(v, 0.0f);
        break;
      case Act::kGelu:
        v = GeluErf(v);
        break;
      case Act::kGeluTanh:
        v = GeluTanh(v);
        break;
      case Act::kTanh:
        v = tanhf(v);
        break;
      case Act::kSigmoid:
        v = Sigmoid(v);
        break;
    }
    if (residual != nullptr) v += Ld(residual + i);
    St(x + i, v);
  }
}

// Writes bad input into the host's error record (ErrorRecord): plain stores through the bus,
// the code last, so a record the host sees with a code carries that writer's value or another
// writer's (every writer reports a bad value). Only on the error path.
__device__ __noinline__ void ReportError(ErrorRecord* errors, int32_t code, int64_t value,
                                         int64_t bound) {
  if (errors == nullptr) return;
  volatile ErrorRecord* r = errors;
  r->value = value;
  r->bound = bound;
  __threadfence_system();
  r->code = code;
  __threadfence_system();
}

template <typename T, typename I>
__global__ void GatherKernel(const T* data, const I* indices, T* out, int64_t axis_dim,
                             int64_t num_indices, int64_t inner, int64_t count,
                             ErrorRecord* errors) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t in = i % inner;
    const int64_t j = (i / inner) % num_indices;
    const int64_t o = i / (inner * num_indices);
    const int64_t given = static_cast<int64_t>(indices[j]);
    const int64_t index = given < 0 ? given + axis_dim : given;
    if (index < 0 || index >= axis_dim) {
      out[i] = T{};
      if (in == 0 && o == 0) ReportError(errors, kErrorGatherIndex, given, axis_dim);
      continue;
    }
    out[i] = data[(o * axis_dim + index) * inner + in];
  }
}

// Embedding k's row for output row `row` (EmbedArgs), or -1 for an index out of range (reported
// when `report`).
__device__ __forceinline__ int64_t EmbedRow(const EmbedArgs& a, int k, int64_t row,
                                            ErrorRecord* errors, bool report) {
  int64_t given;
  if (a.ids[k] == nullptr) {
    given = row % a.dims[a.rank - 1];  // positions (the launcher checked rank >= 1)
  } else {
    int64_t rest = row, offset = 0;
    for (int d = a.rank - 1; d >= 0; --d) {
      offset += (rest % a.dims[d]) * a.id_strides[k][d];
      rest /= a.dims[d];
    }
    given = a.ids_i64[k] ? static_cast<const int64_t*>(a.ids[k])[offset]
                         : static_cast<const int32_t*>(a.ids[k])[offset];
  }
  const int64_t vocab = a.vocab[k];
  const int64_t id = given < 0 ? given + vocab : given;
  if (id >= 0 && id < vocab) return id;
  if (report) ReportError(errors, kErrorEmbeddingIndex, given, vocab);
  return -1;
}

template <typename T>
__device__ __forceinline__ float ToFloat(T v) {
  return static_cast<float>(v);
}
template <>
__device__ __forceinline__ float ToFloat<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float ToFloat<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <typename T>
inline constexpr bool kIsHalf = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

template <typename S, typename D>
__global__ void CastKernel(const S* in, D* out, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if constexpr (std::is_same_v<D, bool>) {
      if constexpr (kIsHalf<S>) {
        out[i] = ToFloat(in[i]) != 0.0f;
      } else {
        out[i] = in[i] != S{};
      }
    } else if constexpr (std::is_same_v<D, __half>) {
      out[i] = __float2half_rn(ToFloat(in[i]));
    } else if constexpr (std::is_same_v<D, __nv_bfloat16>) {
      out[i] = __float2bfloat16_rn(ToFloat(in[i]));
    } else if constexpr (kIsHalf<S>) {
      out[i] = static_cast<D>(ToFloat(in[i]));
    } else {
      out[i] = static_cast<D>(in[i]);
    }
  }
}

template <typename T>
__global__ void TransposeKernel(const T* in, T* out, int rank, BroadcastShape shape,
                                int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rest = i, offset = 0;
    for (int d = rank - 1; d >= 0; --d) {
      offset += (rest % shape.dims[d]) * shape.strides[0][d];
      rest /= shape.dims[d];
    }
    out[i] = in[offset];
  }
}

template <typename T, typename TO>
__global__ void LayerNormKernel(const T* x, const T* gamma, const T* beta, TO* y, int64_t cols,
                                float epsilon) {
  const T* row = x + blockIdx.x * cols;
  TO* out = y + blockIdx.x * cols;
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += Ld(row + c);
  const float mean = BlockReduce<false>(sum) / static_cast<float>(cols);
  float sq = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float d = Ld(row + c) - mean;
    sq += d * d;
  }
  const float rstd = rsqrtf(BlockReduce<false>(sq) / static_cast<float>(cols) + epsilon);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    float v = (Ld(row + c) - mean) * rstd;
    if (gamma != nullptr) v *= Ld(gamma + c);
    if (beta != nullptr) v += Ld(beta + c);
    St(out + c, v);
  }
}

// The end of the warp-per-row normalisations (LayerNormWarpKernel, EmbedLayerNormWarpKernel,
// SplitSumLayerNormKernel): from the lane's V chunks of E values `v` (zeros past cols) and their
// sum, the row's mean and variance by warp shuffles, then y = (v - mean) * rstd * gamma + beta
// in 16-byte stores. graw / braw: the lane's chunks of gamma and beta (used where not null).
template <typename T, typename TO, int V, int E>
__device__ __forceinline__ void WarpNormalizeRow(const float (&v)[V][E], float sum, int cols,
                                                 int lane, const uint4 (&graw)[V],
                                                 const uint4 (&braw)[V], const T* gamma,
                                                 const T* beta, TO* yr, float epsilon) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  const float mean = sum / static_cast<float>(cols);
  float sq = 0.0f;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    if ((i * 32 + lane) * E < cols) {
#pragma unroll
      for (int k = 0; k < E; ++k) {
        const float d = v[i][k] - mean;
        sq += d * d;
      }
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
  const float rstd = rsqrtf(sq / static_cast<float>(cols) + epsilon);
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int c = (i * 32 + lane) * E;
    if (c >= cols) continue;
    const T* ge = reinterpret_cast<const T*>(&graw[i]);
    const T* be = reinterpret_cast<const T*>(&braw[i]);
    constexpr int kStores = E * sizeof(TO) / 16;  // 16-byte stores of the E outputs
    uint4 out[kStores];
    TO* oe = reinterpret_cast<TO*>(out);
#pragma unroll
    for (int k = 0; k < E; ++k) {
      float r = (v[i][k] - mean) * rstd;
      if (gamma != nullptr) r *= Ld(ge + k);
      if (beta != nullptr) r += Ld(be + k);
      St(oe + k, r);
    }
#pragma unroll
    for (int q = 0; q < kStores; ++q) reinterpret_cast<uint4*>(yr + c)[q] = out[q];
  }
}

// LayerNorm with a warp per row for rows of at most 32 * V 16-byte vectors: the row stays in
// registers (one read of x, one write of y), statistics by warp shuffles, 16-byte accesses.
// y is of x's type, or f32 (a half LayerNorm whose result leaves the model as f32).
template <typename T, typename TO, int V>
__global__ void LayerNormWarpKernel(const T* x, const T* gamma, const T* beta, TO* y, int64_t rows,
                                    int cols, float epsilon) {
  WaitForPrimary();  // launched with LaunchPdl
  constexpr int E = 16 / sizeof(T);
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int lane = threadIdx.x & 31;
  const T* xr = x + row * cols;
  float v[V][E];
  float sum = 0.0f;
  // gamma and beta are loaded up front, so their latency overlaps the reductions.
  uint4 graw[V], braw[V];
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int c = (i * 32 + lane) * E;
    graw[i] = braw[i] = make_uint4(0, 0, 0, 0);
    if (c < cols && gamma != nullptr) graw[i] = *reinterpret_cast<const uint4*>(gamma + c);
    if (c < cols && beta != nullptr) braw[i] = *reinterpret_cast<const uint4*>(beta + c);
  }
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int c = (i * 32 + lane) * E;
    if (c < cols) {
      const uint4 raw = *reinterpret_cast<const uint4*>(xr + c);
      const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int k = 0; k < E; ++k) sum += (v[i][k] = Ld(e + k));
    } else {
#pragma unroll
      for (int k = 0; k < E; ++k) v[i][k] = 0.0f;
    }
  }
  WarpNormalizeRow<T, TO, V, E>(v, sum, cols, lane, graw, braw, gamma, beta, y + row * cols,
                                epsilon);
}

// SplitSumLayerNorm for any row length, splits and alignment: a block per row, the row's sums
// recomputed in each of the three passes (the warp-per-row kernel below is the fast path).
template <typename T, typename TO, typename P>
__global__ void SplitSumLayerNormBlockKernel(const P* parts, int splits, int64_t part_stride,
                                             const T* bias, const T* residual, const T* gamma,
                                             const T* beta, TO* y, int64_t cols, float epsilon) {
  WaitForPrimary();  // launched with LaunchPdl
  const int64_t row = blockIdx.x;
  auto value = [&](int64_t c) {
    float v = 0.0f;
    for (int s = 0; s < splits; ++s) v += Ld(parts + s * part_stride + row * cols + c);
    if (bias != nullptr) v += Ld(bias + c);
    if (residual != nullptr) v += Ld(residual + row * cols + c);
    return v;
  };
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += value(c);
  const float mean = BlockReduce<false>(sum) / static_cast<float>(cols);
  float sq = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float d = value(c) - mean;
    sq += d * d;
  }
  const float rstd = rsqrtf(BlockReduce<false>(sq) / static_cast<float>(cols) + epsilon);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    float v = (value(c) - mean) * rstd;
    if (gamma != nullptr) v *= Ld(gamma + c);
    if (beta != nullptr) v += Ld(beta + c);
    St(y + row * cols + c, v);
  }
}

// SplitSumLayerNorm with a warp per row of at most 32 * 8 * V columns: each lane owns V chunks
// of 8 columns, sums the S partial products (P: f32, or T), bias and residual of each, and
// normalises the row in registers (fp32 throughout).
template <typename T, typename TO, typename P, int S, int V>
__global__ void SplitSumLayerNormKernel(const P* parts, int64_t part_stride, const T* bias,
                                        const T* residual, const T* gamma, const T* beta, TO* y,
                                        int64_t rows, int cols, float epsilon) {
  WaitForPrimary();  // launched with LaunchPdl
  constexpr int E = 8;
  static_assert(sizeof(T) == 2, "8 columns a 16-byte load");
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int lane = threadIdx.x & 31;
  const uint4 zero = make_uint4(0, 0, 0, 0);
  uint4 graw[V], braw[V], biasraw[V], rraw[V];
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int c = (i * 32 + lane) * E;
    const bool in = c < cols;
    graw[i] = in && gamma != nullptr ? *reinterpret_cast<const uint4*>(gamma + c) : zero;
    braw[i] = in && beta != nullptr ? *reinterpret_cast<const uint4*>(beta + c) : zero;
    biasraw[i] = in && bias != nullptr ? *reinterpret_cast<const uint4*>(bias + c) : zero;
    rraw[i] = in && residual != nullptr ? *reinterpret_cast<const uint4*>(residual + row * cols + c)
                                        : zero;
  }
  float v[V][E];
#pragma unroll
  for (int i = 0; i < V; ++i) {
#pragma unroll
    for (int k = 0; k < E; ++k) v[i][k] = 0.0f;
  }
  // Partials added as they come (the loads of all slices are independent and issue together).
#pragma unroll
  for (int s = 0; s < S; ++s) {
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const int c = (i * 32 + lane) * E;
      if (c >= cols) continue;
      const P* src = parts + s * part_stride + row * cols + c;
      if constexpr (sizeof(P) == 4) {
        const float4 lo = *reinterpret_cast<const float4*>(src);
        const float4 hi = *reinterpret_cast<const float4*>(src + 4);
        v[i][0] += lo.x, v[i][1] += lo.y, v[i][2] += lo.z, v[i][3] += lo.w;
        v[i][4] += hi.x, v[i][5] += hi.y, v[i][6] += hi.z, v[i][7] += hi.w;
      } else {
        const uint4 raw = *reinterpret_cast<const uint4*>(src);
        const P* e = reinterpret_cast<const P*>(&raw);
#pragma unroll
        for (int k = 0; k < E; ++k) v[i][k] += Ld(e + k);
      }
    }
  }
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const T* b = reinterpret_cast<const T*>(&biasraw[i]);
    const T* r = reinterpret_cast<const T*>(&rraw[i]);
#pragma unroll
    for (int k = 0; k < E; ++k) {
      v[i][k] += Ld(b + k) + Ld(r + k);
      sum += v[i][k];  // columns past cols hold zeros
    }
  }
  WarpNormalizeRow<T, TO, V, E>(v, sum, cols, lane, graw, braw, gamma, beta, y + row * cols,
                                epsilon);
}

// EmbedLayerNorm with a warp per row (as LayerNormWarpKernel): each embedding's row is read
// with 16-byte loads and summed in registers in fp32, then normalised without a round trip.
template <typename T, int V>
__global__ void EmbedLayerNormWarpKernel(EmbedArgs a, const T* gamma, const T* beta, T* y,
                                         int64_t rows, int cols, float epsilon,
                                         ErrorRecord* errors) {
  WaitForPrimary();  // launched with LaunchPdl
  constexpr int E = 16 / sizeof(T);
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int lane = threadIdx.x & 31;
  uint4 graw[V], braw[V];
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int c = (i * 32 + lane) * E;
    graw[i] = braw[i] = make_uint4(0, 0, 0, 0);
    if (c < cols && gamma != nullptr) graw[i] = *reinterpret_cast<const uint4*>(gamma + c);
    if (c < cols && beta != nullptr) braw[i] = *reinterpret_cast<const uint4*>(beta + c);
  }
  float v[V][E];
#pragma unroll
  for (int i = 0; i < V; ++i) {
#pragma unroll
    for (int k = 0; k < E; ++k) v[i][k] = 0.0f;
  }
  // Every embedding's id first, then every row's loads at once: one id latency and one row
  // latency in all, not one of each per embedding in turn (a table past `count`, or a bad id,
  // adds zeros).
  int64_t ids[kMaxEmbeddings];
#pragma unroll
  for (int t = 0; t < kMaxEmbeddings; ++t) {
    ids[t] = t < a.count ? EmbedRow(a, t, row, errors, lane == 0) : -1;
  }
  uint4 raw[kMaxEmbeddings][V];
#pragma unroll
  for (int t = 0; t < kMaxEmbeddings; ++t) {
    const T* tr = static_cast<const T*>(a.tables[t]) + (ids[t] < 0 ? 0 : ids[t]) * cols;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const int c = (i * 32 + lane) * E;
      raw[t][i] = make_uint4(0, 0, 0, 0);
      if (ids[t] >= 0 && c < cols) raw[t][i] = *reinterpret_cast<const uint4*>(tr + c);
    }
  }
#pragma unroll
  for (int t = 0; t < kMaxEmbeddings; ++t) {
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const T* e = reinterpret_cast<const T*>(&raw[t][i]);
#pragma unroll
      for (int k = 0; k < E; ++k) v[i][k] += Ld(e + k);
    }
  }
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < V; ++i) {
#pragma unroll
    for (int k = 0; k < E; ++k) sum += v[i][k];
  }
  WarpNormalizeRow<T, T, V, E>(v, sum, cols, lane, graw, braw, gamma, beta, y + row * cols,
                               epsilon);
}

// EmbedLayerNorm for any row length and alignment: a block per row, the sum recomputed from
// the tables in each of the three passes.
template <typename T>
__global__ void EmbedLayerNormKernel(EmbedArgs a, const T* gamma, const T* beta, T* y, int64_t cols,
                                     float epsilon, ErrorRecord* errors) {
  __shared__ int64_t ids[kMaxEmbeddings];
  const int64_t row = blockIdx.x;
  if (threadIdx.x < a.count) ids[threadIdx.x] = EmbedRow(a, threadIdx.x, row, errors, true);
  __syncthreads();
  auto value = [&](int64_t c) {
    float s = 0.0f;
    for (int t = 0; t < a.count; ++t) {
      if (ids[t] >= 0) s += Ld(static_cast<const T*>(a.tables[t]) + ids[t] * cols + c);
    }
    return s;
  };
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += value(c);
  const float mean = BlockReduce<false>(sum) / static_cast<float>(cols);
  float sq = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float d = value(c) - mean;
    sq += d * d;
  }
  const float rstd = rsqrtf(BlockReduce<false>(sq) / static_cast<float>(cols) + epsilon);
  T* out = y + row * cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    float v = (value(c) - mean) * rstd;
    if (gamma != nullptr) v *= Ld(gamma + c);
    if (beta != nullptr) v += Ld(beta + c);
    St(out + c, v);
  }
}

template <typename T>
__global__ void SoftmaxKernel(const T* x, T* y, int64_t r, int64_t inner, bool log) {
  const int64_t o = blockIdx.x / inner, in = blockIdx.x % inner;
  const T* row = x + o * r * inner + in;
  T* out = y + o * r * inner + in;
  float m = -INFINITY;
  for (int64_t c = threadIdx.x; c < r; c += blockDim.x) m = fmaxf(m, Ld(row + c * inner));
  m = BlockReduce<true>(m);
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < r; c += blockDim.x) sum += expf(Ld(row + c * inner) - m);
  sum = BlockReduce<false>(sum);
  const float lse = m + logf(sum);
  for (int64_t c = threadIdx.x; c < r; c += blockDim.x) {
    const float v = Ld(row + c * inner);
    St(out + c * inner, log ? v - lse : expf(v - m) / sum);
  }
}

// The mask term of score (qi, j), j < kv_seq: +additive value, or `replace` set to use
// mask_fill instead of the score (a false bool mask entry).
template <typename M>
__device__ __forceinline__ float MaskTerm(const AttentionArgs& a, int64_t b, int64_t h, int64_t qi,
                                          int64_t j, bool* replace) {
  *replace = false;
  if (j >= a.mask_keys) return -INFINITY;
  const int64_t off = b * a.mask_strides[0] + h * a.mask_strides[1] + qi * a.mask_strides[2] +
                      j * a.mask_strides[3];
  if (a.mask_bool) {
    *replace = !static_cast<const bool*>(a.mask)[off];
    return 0.0f;
  }
  float m;
  if (a.mask_int_bytes == 8) {
    m = static_cast<float>(static_cast<const int64_t*>(a.mask)[off]);
  } else if (a.mask_int_bytes == 4) {
    m = static_cast<float>(static_cast<const int32_t*>(a.mask)[off]);
  } else {
    m = Ld(static_cast<const M*>(a.mask) + off);
  }
  return fmaf(a.mask_scale, m, a.mask_offset);
}

// One block per (query, head, batch): scores in shared memory, then P·V with a thread per dim.
template <typename T, typename M>
__global__ void AttentionKernel(AttentionArgs a) {
  extern __shared__ float shared[];
  float* q = shared;                // head
  float* scores = shared + a.head;  // kv_seq
  const int64_t i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t kvh = h / (a.q_heads / a.kv_heads);
  const T* qrow =
      static_cast<const T*>(a.q) + b * a.q_strides[0] + h * a.q_strides[1] + i * a.q_strides[2];
  for (int64_t d = threadIdx.x; d < a.head; d += blockDim.x) q[d] = Ld(qrow + d) * a.scale;
  __syncthreads();
  // Scores: a warp per key, lanes across the head dim (coalesced K reads).
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int64_t j = warp; j < a.kv_seq; j += warps) {
    const T* krow =
        static_cast<const T*>(a.k) + b * a.k_strides[0] + kvh * a.k_strides[1] + j * a.k_strides[2];
    float s = 0.0f;
    for (int64_t d = lane; d < a.head; d += 32) s += q[d] * Ld(krow + d);
    for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_xor_sync(0xffffffffu, s, offset);
    if (lane == 0) scores[j] = s;
  }
  __syncthreads();
  float local_max = -INFINITY;
  for (int64_t j = threadIdx.x; j < a.kv_seq; j += blockDim.x) {
    float s = scores[j];
    if (a.mask != nullptr) {
      bool replace = false;
      const float add = MaskTerm<M>(a, b, h, i, j, &replace);
      s = replace ? a.mask_fill : s + add;
    }
    if (a.causal && j > i) s = -INFINITY;
    scores[j] = s;
    local_max = fmaxf(local_max, s);
  }
  const float m = BlockReduce<true>(local_max);
  float local_sum = 0.0f;
  for (int64_t j = threadIdx.x; j < a.kv_seq; j += blockDim.x) {
    const float p = m == -INFINITY ? 0.0f : expf(scores[j] - m);
    scores[j] = p;
    local_sum += p;
  }
  const float sum = BlockReduce<false>(local_sum);  // its __syncthreads publishes scores
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  T* yrow = static_cast<T*>(a.y) + b * a.y_strides[0] + h * a.y_strides[1] + i * a.y_strides[2];
  const T* vbase = static_cast<const T*>(a.v) + b * a.v_strides[0] + kvh * a.v_strides[1];
  for (int64_t d = threadIdx.x; d < a.v_head; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j < a.kv_seq; ++j) acc += scores[j] * Ld(vbase + j * a.v_strides[2] + d);
    St(yrow + d, acc * inv);
  }
}

// Tensor-core attention for f16 / bf16 with head dim 64 (FlashAttention-2's scheme): a block
// of W warps takes 16 queries per warp; 64-key tiles of K and V are staged in shared memory
// by cp.async, two buffers deep, so the next tile loads while this one is computed. Per tile
// a warp computes S = Q K^T with mma.sync m16n8k16 (fp32 accumulators in registers), applies
// scale, bounds, causality and the mask in fp32, updates each row's running max and sum, and
// accumulates O += P V with P taken straight from the S registers (rounded to the storage
// type) and V through ldmatrix.trans. Nothing but K, V, Q and a query-independent mask goes
// through shared memory; rows are padded to 72 elements so every access is conflict-free.
// Fully masked rows give zeros, as the reference kernel does.
constexpr int kFlashD = 64;
constexpr int kFlashKeys = 64;
constexpr int kFlashLd = kFlashD + 8;  // padded row, in elements

template <typename T>
struct MmaOp;
template <>
struct MmaOp<__half> {
  __device__ static uint32_t Pack(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
  __device__ static void Mma(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm(  // not volatile: a pure register operation the compiler may schedule freely
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};
template <>
struct MmaOp<__nv_bfloat16> {
  __device__ static uint32_t Pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
  __device__ static void Mma(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm(  // not volatile: a pure register operation the compiler may schedule freely
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

__device__ __forceinline__ uint32_t SharedAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16 bytes global -> shared, asynchronously; bytes = 0 fills the 16 bytes with zeros.
__device__ __forceinline__ void CpAsync16(void* dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SharedAddress(dst)),
               "l"(src), "r"(bytes));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
__device__ __forceinline__ uint32_t Ld32(const void* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// The flash kernels keep scores in base-2 units (scaled by log2 e before the softmax), so each
// exponential is one ex2 instead of a multiply and an ex2.
constexpr float kLog2e = 1.4426950408889634f;
__device__ __forceinline__ float Exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// The staged (mul, add) pair of one key for FlashTileStaged: a key past kv_seq scores -inf, a
// false bool mask entry mask_fill, any other scale * s + add; all in base-2 units.
__device__ __forceinline__ float2 StagedKey(const AttentionArgs& a, float add, bool valid,
                                            bool replace) {
  if (!valid) return make_float2(0.0f, -INFINITY);
  if (replace) return make_float2(0.0f, a.mask_fill * kLog2e);
  return make_float2(a.scale * kLog2e, add * kLog2e);
}

// A fragments of 16 query rows x 64 dims at q: staged in shared memory (row stride kFlashLd,
// the default), or straight from global memory (the row stride of Q, an even number; rows from
// `rows` on read as zeros).
template <typename T>
__device__ __forceinline__ void LoadQFragments(const T* q, int lane,
                                               uint32_t (&qf)[kFlashD / 16][4],
                                               int64_t stride = kFlashLd, int64_t rows = 16) {
  const int g = lane >> 2, tg = lane & 3;
  const bool ok0 = g < rows, ok1 = g + 8 < rows;
  const T* p0 = q + g * stride + tg * 2;
  const T* p1 = q + (g + 8) * stride + tg * 2;
#pragma unroll
  for (int kc = 0; kc < kFlashD / 16; ++kc) {
    qf[kc][0] = ok0 ? Ld32(p0 + kc * 16) : 0u;
    qf[kc][1] = ok1 ? Ld32(p1 + kc * 16) : 0u;
    qf[kc][2] = ok0 ? Ld32(p0 + kc * 16 + 8) : 0u;
    qf[kc][3] = ok1 ? Ld32(p1 + kc * 16 + 8) : 0u;
  }
}

// S = Q K^T for one key tile and a warp's 16 query rows: KEYS / 8 tiles of 8 keys; the thread
// holds rows (g, g + 8), keys 2 tg and 2 tg + 1 of each (the mma accumulator layout). An
// 8-key tile's B fragments for 32 dims come from one ldmatrix.x4: lane 8 i + r addresses key r
// at dims 8 i of the 32, so matrix i holds what thread (g, tg) needs as keys g, dims 8 i + 2 tg.
template <typename T, int KEYS>
__device__ __forceinline__ void FlashScores(const uint32_t (&qf)[kFlashD / 16][4], const T* ks,
                                            int lane, float (&s)[KEYS / 8][4]) {
  const int mat = lane >> 3, r = lane & 7;
#pragma unroll
  for (int n = 0; n < KEYS / 8; ++n) {
    s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kc2 = 0; kc2 < kFlashD / 32; ++kc2) {
      const T* kr = ks + (n * 8 + r) * kFlashLd + kc2 * 32 + mat * 8;
      uint32_t b0, b1, b2, b3;
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                   : "=r"(b0), "=r"(b1), "=r"(b2), "=r"(b3)
                   : "r"(SharedAddress(kr)));
      MmaOp<T>::Mma(s[n], qf[2 * kc2], b0, b1);
      MmaOp<T>::Mma(s[n], qf[2 * kc2 + 1], b2, b3);
    }
  }
}

// The rest of a tile once its scores s are final (scaled, masked and in base-2 units: x log2 e)
// and mx holds the thread's maximum of each of its two rows: the online-softmax update of each
// row's running max and (per-thread partial) sum, and O += P V with P taken from the S
// registers and V staged in vs.
template <typename T, int KEYS>
__device__ __forceinline__ void FlashAccumulate(float (&s)[KEYS / 8][4], float (&mx)[2],
                                                const T* vs, int lane, float (&m_run)[2],
                                                float (&l_run)[2], float (&o)[kFlashD / 8][4]) {
  float alpha[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    const float m_new = fmaxf(m_run[r], mx[r]);
    alpha[r] = m_new == -INFINITY ? 1.0f : Exp2(m_run[r] - m_new);
    m_run[r] = m_new;
  }
  // 2^(s - m) with m = -inf (every key so far masked) is taken as 0 through m_safe = 0 and
  // s = -inf; a finite m gives 2^-inf = 0 for masked keys.
  const float m_safe[2] = {m_run[0] == -INFINITY ? 0.0f : m_run[0],
                           m_run[1] == -INFINITY ? 0.0f : m_run[1]};
  float sum[2] = {0.0f, 0.0f};
#pragma unroll
  for (int n = 0; n < KEYS / 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float p = Exp2(s[n][e] - m_safe[e >> 1]);
      s[n][e] = p;
      sum[e >> 1] += p;
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) l_run[r] = l_run[r] * alpha[r] + sum[r];
#pragma unroll
  for (int n = 0; n < kFlashD / 8; ++n) {
    o[n][0] *= alpha[0], o[n][1] *= alpha[0];
    o[n][2] *= alpha[1], o[n][3] *= alpha[1];
  }
  // O += P V: P's accumulator layout is the A operand's layout, 16 keys (two S tiles) a step.
#pragma unroll
  for (int kc = 0; kc < KEYS / 16; ++kc) {
    uint32_t pa[4];
    pa[0] = MmaOp<T>::Pack(s[2 * kc][0], s[2 * kc][1]);
    pa[1] = MmaOp<T>::Pack(s[2 * kc][2], s[2 * kc][3]);
    pa[2] = MmaOp<T>::Pack(s[2 * kc + 1][0], s[2 * kc + 1][1]);
    pa[3] = MmaOp<T>::Pack(s[2 * kc + 1][2], s[2 * kc + 1][3]);
#pragma unroll
    for (int n2 = 0; n2 < kFlashD / 16; ++n2) {
      // Four 8x8 matrices of V (keys kc*16 + {0, 8}, dims n2*16 + {0, 8}), transposed on
      // load: the B fragments of two 8-wide output tiles.
      const int mat = lane >> 3, r = lane & 7;
      const T* p = vs + (kc * 16 + (mat & 1) * 8 + r) * kFlashLd + n2 * 16 + (mat >> 1) * 8;
      uint32_t b0, b1, b2, b3;
      asm volatile(
          "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
          : "=r"(b0), "=r"(b1), "=r"(b2), "=r"(b3)
          : "r"(SharedAddress(p)));
      MmaOp<T>::Mma(o[2 * n2], pa, b0, b1);
      MmaOp<T>::Mma(o[2 * n2 + 1], pa, b2, b3);
    }
  }
}

// One key tile for a warp's 16 query rows (row0 = its first, fragment rows g and g + 8) with
// any mask: scale, bounds, causality and the mask (staged per key in mask_add / mask_replace,
// or read per score), then FlashAccumulate.
template <typename T, typename M, int KEYS>
__device__ __forceinline__ void FlashTile(const AttentionArgs& a,
                                          const uint32_t (&qf)[kFlashD / 16][4], const T* ks,
                                          const T* vs, const float* mask_add,
                                          const unsigned char* mask_replace, bool staged_mask,
                                          int64_t k0, int64_t row0, int64_t b, int64_t h, int lane,
                                          float (&m_run)[2], float (&l_run)[2],
                                          float (&o)[kFlashD / 8][4]) {
  const int tg = lane & 3;
  const int64_t row1 = row0 + 8;
  float s[KEYS / 8][4];
  FlashScores<T, KEYS>(qf, ks, lane, s);
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int n = 0; n < KEYS / 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int jj = n * 8 + tg * 2 + (e & 1);
      const int64_t j = k0 + jj, qi = e < 2 ? row0 : row1;
      float v = s[n][e] * a.scale;
      if (j >= a.kv_seq || (a.causal && j > qi)) {
        v = -INFINITY;
      } else if (staged_mask) {
        v = mask_replace[jj] ? a.mask_fill : v + mask_add[jj];
      } else if (a.mask != nullptr && qi < a.q_seq) {
        bool replace = false;
        const float add = MaskTerm<M>(a, b, h, qi, j, &replace);
        v = replace ? a.mask_fill : v + add;
      }
      v *= kLog2e;  // base-2 units (FlashAccumulate)
      s[n][e] = v;
      mx[e >> 1] = fmaxf(mx[e >> 1], v);
    }
  }
  FlashAccumulate<T, KEYS>(s, mx, vs, lane, m_run, l_run, o);
}

// FlashTile for a query-independent mask without causality (BERT's key padding mask, or no
// mask): the scale, the key bounds and the mask are staged per key as (mul, add) pairs, so a
// score costs one FFMA: s * mul + add (StagedKey: mul = scale, add = the mask term, both times
// log2 e; a key past kv_seq or a false bool entry has mul = 0 and add = -inf or mask_fill
// log2 e). `ma` holds KEYS float2, read as float4 pairs (keys 2 tg, 2 tg + 1 of each 8-key
// tile).
template <typename T, int KEYS>
__device__ __forceinline__ void FlashTileStaged(const uint32_t (&qf)[kFlashD / 16][4], const T* ks,
                                                const T* vs, const float2* ma, int lane,
                                                float (&m_run)[2], float (&l_run)[2],
                                                float (&o)[kFlashD / 8][4]) {
  const int tg = lane & 3;
  float s[KEYS / 8][4];
  FlashScores<T, KEYS>(qf, ks, lane, s);
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int n = 0; n < KEYS / 8; ++n) {
    const float4 m = reinterpret_cast<const float4*>(ma)[n * 4 + tg];
    s[n][0] = fmaf(s[n][0], m.x, m.y);
    s[n][1] = fmaf(s[n][1], m.z, m.w);
    s[n][2] = fmaf(s[n][2], m.x, m.y);
    s[n][3] = fmaf(s[n][3], m.z, m.w);
    mx[0] = fmaxf(mx[0], fmaxf(s[n][0], s[n][1]));
    mx[1] = fmaxf(mx[1], fmaxf(s[n][2], s[n][3]));
  }
  FlashAccumulate<T, KEYS>(s, mx, vs, lane, m_run, l_run, o);
}

template <typename T, typename M, int W>
__global__ void __launch_bounds__(32 * W) FlashAttentionKernel(AttentionArgs a) {
  __shared__ __align__(16) T qs[W * 16 * kFlashLd];
  __shared__ __align__(16) T ks[2][kFlashKeys * kFlashLd];
  __shared__ __align__(16) T vs[2][kFlashKeys * kFlashLd];
  __shared__ __align__(16) float2 mask_ma[2][kFlashKeys];  // fast path: (mul, add) per key
  __shared__ float mask_add[2][kFlashKeys];
  __shared__ unsigned char mask_replace[2][kFlashKeys];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, tg = lane & 3;  // mma fragment row group, thread in group
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * (16 * W);
  const int64_t h = blockIdx.y, b = blockIdx.z;
  const int64_t kvh = h / (a.q_heads / a.kv_heads);
  const T* qbase = static_cast<const T*>(a.q) + b * a.q_strides[0] + h * a.q_strides[1];
  const T* kbase = static_cast<const T*>(a.k) + b * a.k_strides[0] + kvh * a.k_strides[1];
  const T* vbase = static_cast<const T*>(a.v) + b * a.v_strides[0] + kvh * a.v_strides[1];
  // A mask that does not depend on the query is staged per key tile; without causality it
  // takes FlashTileStaged's one-FFMA scores (see FlashAttentionSplitKernel).
  const bool staged_mask = a.mask != nullptr && a.mask_strides[2] == 0;
  const bool fast = (a.mask == nullptr || a.mask_strides[2] == 0) && !a.causal;

  for (int idx = tid; idx < W * 16 * 8; idx += 32 * W) {
    const int r = idx >> 3, c = (idx & 7) * 8;
    const bool ok = q0 + r < a.q_seq;
    CpAsync16(qs + r * kFlashLd + c, ok ? qbase + (q0 + r) * a.q_strides[2] + c : qbase, ok ? 16 : 0);
  }
  auto load_tile = [&](int buf, int64_t k0) {
    for (int idx = tid; idx < kFlashKeys * 8; idx += 32 * W) {
      const int r = idx >> 3, c = (idx & 7) * 8;
      const bool ok = k0 + r < a.kv_seq;
      CpAsync16(ks[buf] + r * kFlashLd + c, ok ? kbase + (k0 + r) * a.k_strides[2] + c : kbase,
                ok ? 16 : 0);
      CpAsync16(vs[buf] + r * kFlashLd + c, ok ? vbase + (k0 + r) * a.v_strides[2] + c : vbase,
                ok ? 16 : 0);
    }
  };
  // Thread tid stages keys tid and tid + 32 W of a tile: loaded into registers with the tile,
  // stored to shared memory after the current tile's MMAs (the load overlaps them).
  constexpr int kPerThread = (kFlashKeys + 32 * W - 1) / (32 * W);
  float pend_add[kPerThread];
  bool pend_replace[kPerThread], pend_valid[kPerThread];
  auto load_mask = [&](int64_t k0) {
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int64_t j = k0 + tid + i * 32 * W;
      pend_add[i] = 0.0f, pend_replace[i] = false, pend_valid[i] = j < a.kv_seq;
      if (staged_mask && tid + i * 32 * W < kFlashKeys && pend_valid[i]) {
        pend_add[i] = MaskTerm<M>(a, b, h, 0, j, &pend_replace[i]);
      }
    }
  };
  auto store_mask = [&](int buf) {
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int j = tid + i * 32 * W;
      if (j >= kFlashKeys) continue;
      if (fast) {
        mask_ma[buf][j] = StagedKey(a, pend_add[i], pend_valid[i], pend_replace[i]);
      } else if (staged_mask) {
        mask_add[buf][j] = pend_add[i];
        mask_replace[buf][j] = pend_replace[i];
      }
    }
  };
  load_tile(0, 0);
  load_mask(0);
  CpAsyncCommit();
  store_mask(0);  // read after the loop's first barrier

  const int64_t row0 = q0 + warp * 16 + g, row1 = row0 + 8;
  uint32_t qf[kFlashD / 16][4];
  float o[kFlashD / 8][4];
#pragma unroll
  for (int n = 0; n < kFlashD / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
  const int tiles = static_cast<int>((a.kv_seq + kFlashKeys - 1) / kFlashKeys);
  for (int t = 0; t < tiles; ++t) {
    const int buf = t & 1;
    const int64_t k0 = static_cast<int64_t>(t) * kFlashKeys;
    const bool next = t + 1 < tiles;
    if (next) {
      load_tile(buf ^ 1, k0 + kFlashKeys);
      load_mask(k0 + kFlashKeys);
    }
    CpAsyncCommit();
    CpAsyncWait<1>();  // everything but the tile just issued has landed
    __syncthreads();
    if (t == 0) {
      LoadQFragments(qs + warp * 16 * kFlashLd, lane, qf);
    }
    if (fast) {
      FlashTileStaged<T, kFlashKeys>(qf, ks[buf], vs[buf], mask_ma[buf], lane, m_run, l_run, o);
    } else {
      FlashTile<T, M, kFlashKeys>(a, qf, ks[buf], vs[buf], mask_add[buf], mask_replace[buf],
                                  staged_mask, k0, row0, b, h, lane, m_run, l_run, o);
    }
    if (next) store_mask(buf ^ 1);  // that buffer's last readers passed this iteration's barrier
    __syncthreads();  // this buffer is refilled by the next iteration's load
  }
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv[r] = l > 0.0f ? 1.0f / l : 0.0f;
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t qi = r == 0 ? row0 : row1;
    if (qi >= a.q_seq) continue;
    T* y = static_cast<T*>(a.y) + b * a.y_strides[0] + h * a.y_strides[1] + qi * a.y_strides[2];
#pragma unroll
    for (int n = 0; n < kFlashD / 8; ++n) {
      *reinterpret_cast<uint32_t*>(y + n * 8 + tg * 2) =
          MmaOp<T>::Pack(o[n][2 * r] * inv[r], o[n][2 * r + 1] * inv[r]);
    }
  }
}

constexpr int kSplitOLd = kFlashD + 8;  // floats per row of a warp's partial O

// Split-key kernel for short sequences at small batch, where the row-parallel kernel leaves a
// multiprocessor one warp with every latency exposed (measured on the H100, BERT-base shapes:
// 12-34 us against 3-12 us for this one, vm/kernels/cuda/ops_bench.cu). A block takes 16
// queries of one head; its W warps take interleaved KEYS-key tiles (warp w: tiles w, w + W,
// ...), KEYS = 16 or 32. The block's Q and each warp's first K/V tile arrive in one cp.async
// group (one memory latency before the first MMA), each warp double-buffers its tiles (the
// next tile and its mask entries load while this one is computed), and the warps' partial
// (max, sum, O) are merged through shared memory at the end. Shared memory is dynamic: Q, then
// per warp two K and two V tiles, which the partial O overlays at the end.
template <int W, int KEYS>
struct Split2Shared {
  static constexpr size_t kQ = 16 * kFlashLd * 2;
  static constexpr size_t kTile = KEYS * kFlashLd * 2;  // one K or V tile
  static constexpr size_t kKv = 4 * W * kTile;
  static constexpr size_t kPartO = W * 16 * kSplitOLd * 4;
  static_assert(kPartO <= kKv, "partial O must fit over the K/V tiles");
  static constexpr size_t kBytes = kQ + kKv;
};

template <typename T, typename M, int W, int KEYS>
__global__ void __launch_bounds__(32 * W) FlashAttentionSplitKernel(AttentionArgs a) {
  static_assert(KEYS == 16 || KEYS == 32, "a lane stages one key's mask entry");
  using S = Split2Shared<W, KEYS>;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ __align__(16) float2 mask_ma[W][2][KEYS];  // staged: (mul, add) per key
  __shared__ float mask_add[W][2][KEYS];                // general: the FlashTile staging
  __shared__ unsigned char mask_replace[W][2][KEYS];
  __shared__ float part_m[W][16], part_l[W][16];
  WaitForPrimary();  // launched with LaunchPdl
  T* qs = reinterpret_cast<T*>(smem);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, tg = lane & 3;
  auto tile = [&](int buf, int which) {
    return reinterpret_cast<T*>(smem + S::kQ + ((warp * 2 + buf) * 2 + which) * S::kTile);
  };
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * 16;
  const int64_t h = blockIdx.y, b = blockIdx.z;
  const int64_t kvh = h / (a.q_heads / a.kv_heads);
  const T* qbase = static_cast<const T*>(a.q) + b * a.q_strides[0] + h * a.q_strides[1];
  const T* kbase = static_cast<const T*>(a.k) + b * a.k_strides[0] + kvh * a.k_strides[1];
  const T* vbase = static_cast<const T*>(a.v) + b * a.v_strides[0] + kvh * a.v_strides[1];
  // Query-independent scores adjustments (no mask, or a key padding mask) without causality
  // take FlashTileStaged; anything else FlashTile's per-score path.
  const bool fast = (a.mask == nullptr || a.mask_strides[2] == 0) && !a.causal;
  const bool staged_mask = a.mask != nullptr && a.mask_strides[2] == 0;
  const int64_t tiles = (a.kv_seq + KEYS - 1) / KEYS;
  // Lane l copies rows l / 8 + 4 i (i < KEYS / 4), 16 bytes at column (l % 8) * 8.
  const int lrow = lane >> 3, lcol = (lane & 7) * 8;
  const int64_t kstride = a.k_strides[2], vstride = a.v_strides[2];

  auto issue = [&](int buf, int64_t t) {
    const int64_t k0 = t * KEYS;
    T* ks = tile(buf, 0) + lrow * kFlashLd + lcol;
    T* vs = tile(buf, 1) + lrow * kFlashLd + lcol;
    const T* kp = kbase + (k0 + lrow) * kstride + lcol;
    const T* vp = vbase + (k0 + lrow) * vstride + lcol;
    if (k0 + KEYS <= a.kv_seq) {
#pragma unroll
      for (int i = 0; i < KEYS / 4; ++i) {
        CpAsync16(ks + 4 * i * kFlashLd, kp + 4 * i * kstride, 16);
        CpAsync16(vs + 4 * i * kFlashLd, vp + 4 * i * vstride, 16);
      }
    } else {
#pragma unroll
      for (int i = 0; i < KEYS / 4; ++i) {
        const bool ok = k0 + lrow + 4 * i < a.kv_seq;
        CpAsync16(ks + 4 * i * kFlashLd, ok ? kp + 4 * i * kstride : kbase, ok ? 16 : 0);
        CpAsync16(vs + 4 * i * kFlashLd, ok ? vp + 4 * i * vstride : vbase, ok ? 16 : 0);
      }
    }
  };
  // Lane j < KEYS loads key j of tile t's mask term into registers; stored to shared memory
  // once needed (after the tile before it is computed), so the load overlaps that compute.
  float pend_add = 0.0f;
  bool pend_replace = false;
  bool pend_valid = false;
  auto load_mask = [&](int64_t t) {
    pend_add = 0.0f, pend_replace = false;
    pend_valid = t * KEYS + lane < a.kv_seq;
    if (staged_mask && lane < KEYS && pend_valid) {
      pend_add = MaskTerm<M>(a, b, h, 0, t * KEYS + lane, &pend_replace);
    }
  };
  auto store_mask = [&](int buf) {
    if (lane >= KEYS) return;
    if (fast) {
      mask_ma[warp][buf][lane] = StagedKey(a, pend_add, pend_valid, pend_replace);
    } else if (staged_mask) {
      mask_add[warp][buf][lane] = pend_add;
      mask_replace[warp][buf][lane] = pend_replace;
    }
  };

  for (int idx = tid; idx < 16 * 8; idx += 32 * W) {
    const int r = idx >> 3, c = (idx & 7) * 8;
    const bool ok = q0 + r < a.q_seq;
    CpAsync16(qs + r * kFlashLd + c, ok ? qbase + (q0 + r) * a.q_strides[2] + c : qbase, ok ? 16 : 0);
  }
  int64_t t = warp;
  if (t < tiles) {
    issue(0, t);
    load_mask(t);
  }
  CpAsyncCommit();
  CpAsyncWait<0>();
  __syncthreads();
  uint32_t qf[kFlashD / 16][4];
  LoadQFragments(qs, lane, qf);
  store_mask(0);
  __syncwarp();
  const int64_t row0 = q0 + g;
  float o[kFlashD / 8][4];
#pragma unroll
  for (int n = 0; n < kFlashD / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
  for (int buf = 0; t < tiles; t += W, buf ^= 1) {
    const int64_t next = t + W;
    if (next < tiles) {
      issue(buf ^ 1, next);
      load_mask(next);
    }
    CpAsyncCommit();
    CpAsyncWait<1>();  // all but the group just issued: this tile has landed
    __syncwarp();
    if (fast) {
      FlashTileStaged<T, KEYS>(qf, tile(buf, 0), tile(buf, 1), mask_ma[warp][buf], lane, m_run,
                               l_run, o);
    } else {
      FlashTile<T, M, KEYS>(a, qf, tile(buf, 0), tile(buf, 1), mask_add[warp][buf],
                            mask_replace[warp][buf], staged_mask, t * KEYS, row0, b, h, lane, m_run,
                            l_run, o);
    }
    if (next < tiles) store_mask(buf ^ 1);
    __syncwarp();  // this buffer is refilled two tiles on
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
  }
  if constexpr (W == 1) {
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) inv[r] = l_run[r] > 0.0f ? 1.0f / l_run[r] : 0.0f;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t qi = row0 + 8 * r;
      if (qi >= a.q_seq) continue;
      T* y = static_cast<T*>(a.y) + b * a.y_strides[0] + h * a.y_strides[1] + qi * a.y_strides[2];
#pragma unroll
      for (int n = 0; n < kFlashD / 8; ++n) {
        *reinterpret_cast<uint32_t*>(y + n * 8 + tg * 2) =
            MmaOp<T>::Pack(o[n][2 * r] * inv[r], o[n][2 * r + 1] * inv[r]);
      }
    }
    return;
  }
  // Merge the warps' partial results.
  __syncthreads();  // every warp is done with the K/V tiles the partial O overlays
  float* part_o = reinterpret_cast<float*>(smem + S::kQ);
  if (tg == 0) {
    part_m[warp][g] = m_run[0], part_m[warp][g + 8] = m_run[1];
    part_l[warp][g] = l_run[0], part_l[warp][g + 8] = l_run[1];
  }
  float* ow = part_o + warp * 16 * kSplitOLd;
#pragma unroll
  for (int n = 0; n < kFlashD / 8; ++n) {
    *reinterpret_cast<float2*>(ow + g * kSplitOLd + n * 8 + tg * 2) = make_float2(o[n][0], o[n][1]);
    *reinterpret_cast<float2*>(ow + (g + 8) * kSplitOLd + n * 8 + tg * 2) =
        make_float2(o[n][2], o[n][3]);
  }
  __syncthreads();
  for (int idx = tid; idx < 16 * (kFlashD / 2); idx += 32 * W) {
    const int r = idx / (kFlashD / 2), c = (idx % (kFlashD / 2)) * 2;
    const int64_t qi = q0 + r;
    if (qi >= a.q_seq) continue;
    float m = -INFINITY;
#pragma unroll
    for (int w = 0; w < W; ++w) m = fmaxf(m, part_m[w][r]);
    float l = 0.0f, o0 = 0.0f, o1 = 0.0f;
#pragma unroll
    for (int w = 0; w < W; ++w) {
      const float pm = part_m[w][r];
      const float scale = pm == -INFINITY ? 0.0f : Exp2(pm - m);
      l += part_l[w][r] * scale;
      const float2 v = *reinterpret_cast<const float2*>(part_o + (w * 16 + r) * kSplitOLd + c);
      o0 += v.x * scale, o1 += v.y * scale;
    }
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    T* y = static_cast<T*>(a.y) + b * a.y_strides[0] + h * a.y_strides[1] + qi * a.y_strides[2];
    *reinterpret_cast<uint32_t*>(y + c) = MmaOp<T>::Pack(o0 * inv, o1 * inv);
  }
}

template <typename T, typename M, int W, int KEYS>
cudaError_t LaunchSplit(const AttentionArgs& args, dim3 grid, cudaStream_t stream) {
  constexpr size_t kBytes = Split2Shared<W, KEYS>::kBytes;
  static const cudaError_t configured =
      cudaFuncSetAttribute(FlashAttentionSplitKernel<T, M, W, KEYS>,
                           cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kBytes));
  if (configured != cudaSuccess) return configured;
  return LaunchPdl(FlashAttentionSplitKernel<T, M, W, KEYS>, grid, 32 * W, kBytes, stream, args);
}

// NIMBLE_CUDA_ATTENTION forces a kernel for A/B measurements (vm/kernels/cuda/ops_bench.cu):
// rowW (the row-parallel kernel with W = 1, 2, 4 warps), sWxK (the split-key kernel with
// W = 1, 2, 4, 8 warps and K = 16, 32 keys per tile; not every pair is built) or qWkG (the 2-D
// kernel, W query warps x G key groups: q4k2, q4k3, q4k4, q2k4, q3k3, q3k4, and the single-pass
// q2k5, q2k6, q3k5, q3k6 for at most G key tiles; staged masks only).
struct AttentionChoice {
  char kind = 0;  // 0: by shape
  int warps = 0, keys = 0;
};
AttentionChoice ForcedAttention() {
  static const AttentionChoice choice = [] {
    AttentionChoice c;
    const char* v = std::getenv("NIMBLE_CUDA_ATTENTION");
    if (v == nullptr) return c;
    const std::string_view s(v);
    if (s.size() == 4 && s.substr(0, 3) == "row") c.kind = 'r', c.warps = s[3] - '0';
    if (s.size() >= 4 && s[0] == 's' && s[2] == 'x') {
      c.kind = 's', c.warps = s[1] - '0', c.keys = std::atoi(v + 3);
    }
    if (s.size() == 4 && (s[0] == 'q' || s[0] == 'd') && s[2] == 'k') {
      c.kind = s[0], c.warps = s[1] - '0', c.keys = s[3] - '0';  // keys: the key groups
    }
    return c;
  }();
  return choice;
}

// Long sequences at small batch: a block of W query warps (16 W queries of one head) whose K/V
// tiles are shared, as in FlashAttentionKernel, times KS key groups: group k takes 64-key tiles
// k, k + KS, ... with its own double buffer, so each warp walks 1/KS of the keys while K and V
// are read once per 16 W queries (the split-key kernel rereads them per 16). Query-independent
// masks without causality only (FlashTileStaged). The groups' partial (max, sum, O) of each
// query are merged through shared memory at the end. Dynamic shared memory: Q, then per group
// two K and two V tiles, which the partial O overlays.
// MINB = 2 (an A/B form, NIMBLE_CUDA_ATTENTION=d2k5 / d2k6): two blocks a multiprocessor. Each
// warp reads its Q fragments straight from global memory (no Q tile) and registers are capped
// for two blocks, so that 32-query blocks of 6 one-tile key groups (115 KB of shared memory
// with the Q tile, 112.5 KB without) fit twice in an H100 multiprocessor's 228 KB: at seq 384
// all 144 blocks are resident at once instead of running in two waves.
template <int W, int KS, int NB, int MINB = 1>
struct Flash2DShared {
  static constexpr size_t kQ = MINB == 1 ? W * 16 * kFlashLd * 2 : 0;
  static constexpr size_t kTile = kFlashKeys * kFlashLd * 2;
  static constexpr size_t kKv = KS * NB * 2 * kTile;
  static constexpr size_t kPartO = KS * W * 16 * kSplitOLd * 4;
  static_assert(kPartO <= kKv, "partial O must fit over the K/V tiles");
  static constexpr size_t kBytes = kQ + kKv;
};

template <typename T, typename M, int W, int KS, int NB, int MINB = 1>
__global__ void __launch_bounds__(32 * W * KS, MINB) FlashAttention2DKernel(AttentionArgs a) {
  static_assert(NB == 1 || NB == 2, "one buffer (one tile a group) or a double buffer");
  static_assert(MINB == 1 || MINB == 2, "one or two blocks a multiprocessor");
  using S = Flash2DShared<W, KS, NB, MINB>;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ __align__(16) float2 mask_ma[KS][NB][kFlashKeys];
  __shared__ float part_m[KS][W * 16], part_l[KS][W * 16];
  WaitForPrimary();  // launched with LaunchPdl
  T* qs = reinterpret_cast<T*>(smem);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, tg = lane & 3;
  const int qw = warp % W, kg = warp / W;  // query sub-tile, key group
  const int gtid = tid - kg * 32 * W;      // thread index within the key group
  auto tile = [&](int buf, int which) {
    return reinterpret_cast<T*>(smem + S::kQ + ((kg * NB + buf) * 2 + which) * S::kTile);
  };
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * (16 * W);
  const int64_t h = blockIdx.y, b = blockIdx.z;
  const int64_t kvh = h / (a.q_heads / a.kv_heads);
  const T* qbase = static_cast<const T*>(a.q) + b * a.q_strides[0] + h * a.q_strides[1];
  const T* kbase = static_cast<const T*>(a.k) + b * a.k_strides[0] + kvh * a.k_strides[1];
  const T* vbase = static_cast<const T*>(a.v) + b * a.v_strides[0] + kvh * a.v_strides[1];
  const bool staged_mask = a.mask != nullptr;  // the dispatcher sends only staged masks here
  const int64_t tiles = (a.kv_seq + kFlashKeys - 1) / kFlashKeys;
  // One buffer: the dispatcher sends at most one tile a key group (Launch2D checks).
  const int64_t iters = NB == 1 ? 1 : (tiles + KS - 1) / KS;

  for (int idx = tid; MINB == 1 && idx < W * 16 * 8; idx += 32 * W * KS) {
    const int r = idx >> 3, c = (idx & 7) * 8;
    const bool ok = q0 + r < a.q_seq;
    CpAsync16(qs + r * kFlashLd + c, ok ? qbase + (q0 + r) * a.q_strides[2] + c : qbase,
              ok ? 16 : 0);
  }
  auto load_tile = [&](int buf, int64_t t) {
    const int64_t k0 = t * kFlashKeys;
    T* ks = tile(buf, 0);
    T* vs = tile(buf, 1);
    for (int idx = gtid; idx < kFlashKeys * 8; idx += 32 * W) {
      const int r = idx >> 3, c = (idx & 7) * 8;
      const bool ok = k0 + r < a.kv_seq;
      CpAsync16(ks + r * kFlashLd + c, ok ? kbase + (k0 + r) * a.k_strides[2] + c : kbase,
                ok ? 16 : 0);
      CpAsync16(vs + r * kFlashLd + c, ok ? vbase + (k0 + r) * a.v_strides[2] + c : vbase,
                ok ? 16 : 0);
    }
  };
  // Key j of a tile is staged by group thread j (and j + 32 W): loaded with the tile, stored
  // after the current tile's MMAs.
  constexpr int kPerThread = (kFlashKeys + 32 * W - 1) / (32 * W);
  float pend_add[kPerThread];
  bool pend_replace[kPerThread], pend_valid[kPerThread];
  auto load_mask = [&](int64_t t) {
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int64_t j = t * kFlashKeys + gtid + i * 32 * W;
      pend_add[i] = 0.0f, pend_replace[i] = false, pend_valid[i] = j < a.kv_seq;
      if (staged_mask && gtid + i * 32 * W < kFlashKeys && pend_valid[i]) {
        pend_add[i] = MaskTerm<M>(a, b, h, 0, j, &pend_replace[i]);
      }
    }
  };
  auto store_mask = [&](int buf) {
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int j = gtid + i * 32 * W;
      if (j >= kFlashKeys) continue;
      mask_ma[kg][buf][j] = StagedKey(a, pend_add[i], pend_valid[i], pend_replace[i]);
    }
  };
  if (kg < tiles) {
    load_tile(0, kg);
    load_mask(kg);
  }
  CpAsyncCommit();
  if (kg < tiles) store_mask(0);  // read after the loop's first barrier

  uint32_t qf[kFlashD / 16][4];
  if constexpr (MINB == 2) {  // while the first K/V tiles land
    const int64_t row0 = q0 + qw * 16;
    LoadQFragments(qbase + row0 * a.q_strides[2], lane, qf, a.q_strides[2], a.q_seq - row0);
  }
  float o[kFlashD / 8][4];
#pragma unroll
  for (int n = 0; n < kFlashD / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
  for (int64_t i = 0; i < iters; ++i) {
    const int buf = NB == 1 ? 0 : static_cast<int>(i & 1);
    const int64_t t = i * KS + kg, tn = NB == 1 ? tiles : t + KS;
    if (tn < tiles) {
      load_tile(buf ^ 1, tn);
      load_mask(tn);
    }
    CpAsyncCommit();
    CpAsyncWait<1>();  // everything but the group just issued has landed
    __syncthreads();
    if (MINB == 1 && i == 0) LoadQFragments(qs + qw * 16 * kFlashLd, lane, qf);
    if (t < tiles) {
      FlashTileStaged<T, kFlashKeys>(qf, tile(buf, 0), tile(buf, 1), mask_ma[kg][buf], lane, m_run,
                                     l_run, o);
    }
    if (tn < tiles) store_mask(buf ^ 1);
    __syncthreads();  // this buffer is refilled two iterations on
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
  }
  // Merge the key groups' partials (the loop's last barrier freed the K/V tiles).
  float* part_o = reinterpret_cast<float*>(smem + S::kQ);
  const int row = qw * 16 + g;
  if (tg == 0) {
    part_m[kg][row] = m_run[0], part_m[kg][row + 8] = m_run[1];
    part_l[kg][row] = l_run[0], part_l[kg][row + 8] = l_run[1];
  }
  float* ow = part_o + (kg * W * 16 + qw * 16) * kSplitOLd;
#pragma unroll
  for (int n = 0; n < kFlashD / 8; ++n) {
    *reinterpret_cast<float2*>(ow + g * kSplitOLd + n * 8 + tg * 2) = make_float2(o[n][0], o[n][1]);
    *reinterpret_cast<float2*>(ow + (g + 8) * kSplitOLd + n * 8 + tg * 2) =
        make_float2(o[n][2], o[n][3]);
  }
  __syncthreads();
  for (int idx = tid; idx < W * 16 * (kFlashD / 2); idx += 32 * W * KS) {
    const int r = idx / (kFlashD / 2), c = (idx % (kFlashD / 2)) * 2;
    const int64_t qi = q0 + r;
    if (qi >= a.q_seq) continue;
    float m = -INFINITY;
#pragma unroll
    for (int k = 0; k < KS; ++k) m = fmaxf(m, part_m[k][r]);
    float l = 0.0f, o0 = 0.0f, o1 = 0.0f;
#pragma unroll
    for (int k = 0; k < KS; ++k) {
      const float pm = part_m[k][r];
      const float scale = pm == -INFINITY ? 0.0f : Exp2(pm - m);
      l += part_l[k][r] * scale;
      const float2 v = *reinterpret_cast<const float2*>(part_o + (k * W * 16 + r) * kSplitOLd + c);
      o0 += v.x * scale, o1 += v.y * scale;
    }
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    T* y = static_cast<T*>(a.y) + b * a.y_strides[0] + h * a.y_strides[1] + qi * a.y_strides[2];
    *reinterpret_cast<uint32_t*>(y + c) = MmaOp<T>::Pack(o0 * inv, o1 * inv);
  }
}

// NB = 1: the single-pass form, every key tile in shared memory at once (one tile a key group),
// for kv_seq <= 64 KS only.
template <typename T, typename M, int W, int KS, int NB = 2, int MINB = 1>
cudaError_t Launch2D(const AttentionArgs& args, cudaStream_t stream) {
  if (NB == 1 && args.kv_seq > static_cast<int64_t>(kFlashKeys) * KS) return cudaErrorInvalidValue;
  // Q fragments read straight from global memory: 4-byte aligned rows.
  if (MINB == 2 && (args.q_strides[2] % 2 != 0 || reinterpret_cast<uintptr_t>(args.q) % 4 != 0)) {
    return cudaErrorInvalidValue;
  }
  constexpr size_t kBytes = Flash2DShared<W, KS, NB, MINB>::kBytes;
  static const cudaError_t configured = [] {
    auto* kernel = FlashAttention2DKernel<T, M, W, KS, NB, MINB>;
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(kBytes));
    if (e == cudaSuccess && MINB > 1) {  // all of the multiprocessor's memory as shared memory
      e = cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                               cudaSharedmemCarveoutMaxShared);
    }
    return e;
  }();
  if (configured != cudaSuccess) return configured;
  const dim3 grid(static_cast<unsigned>((args.q_seq + 16 * W - 1) / (16 * W)),
                  static_cast<unsigned>(args.q_heads), static_cast<unsigned>(args.batch));
  return LaunchPdl(FlashAttention2DKernel<T, M, W, KS, NB, MINB>, grid, 32 * W * KS, kBytes, stream,
                   args);
}

// The 2-D kernel's single-pass form for 5 or 6 key tiles; NIMBLE_CUDA_ATTENTION_ONE_PASS=0
// keeps the double-buffered 4-group form there (A/B measurements).
bool AttentionSinglePass() {
  static const bool on = [] {
    const char* v = std::getenv("NIMBLE_CUDA_ATTENTION_ONE_PASS");
    return v == nullptr || v[0] != '0';
  }();
  return on;
}

// NIMBLE_CUDA_FLASH_ATTENTION=0 selects the reference kernel (for A/B measurements).
bool FlashAttentionDisabled() {
  static const bool disabled = [] {
    const char* v = std::getenv("NIMBLE_CUDA_FLASH_ATTENTION");
    return v != nullptr && v[0] == '0';
  }();
  return disabled;
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Whether FlashAttentionKernel takes these arguments: half storage, head dim 64, 16-byte rows.
bool FlashEligible(const AttentionArgs& a) {
  if (a.type == FloatType::kF32 || a.head != kFlashD || a.v_head != kFlashD) return false;
  if (!Aligned16(a.q) || !Aligned16(a.k) || !Aligned16(a.v) ||
      reinterpret_cast<uintptr_t>(a.y) % 4 != 0) {
    return false;
  }
  for (int i = 0; i < 3; ++i) {
    if (a.q_strides[i] % 8 != 0 || a.k_strides[i] % 8 != 0 || a.v_strides[i] % 8 != 0 ||
        a.y_strides[i] % 2 != 0) {
      return false;
    }
  }
  return a.q_seq <= 65535LL * 16;
}

int MultiprocessorCount() {
  int device = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    cudaGetLastError();
    return 132;
  }
  return sms;
}

// Warps per block for FlashAttentionKernel: the largest block that still spreads the work over
// the multiprocessors (a short sequence at batch 1 wants many small blocks; K/V tiles are
// shared by a block's warps, so long sequences take larger blocks).
int FlashWarps(const AttentionArgs& a) {
  static const int sms = MultiprocessorCount();
  auto blocks = [&](int warps) {
    return (a.q_seq + 16 * warps - 1) / (16 * warps) * a.q_heads * a.batch;
  };
  if (blocks(4) >= 2 * sms) return 4;
  if (blocks(2) >= sms) return 2;
  return 1;
}

template <typename T>
__global__ void WhereKernel(const bool* cond, const T* x, const T* y, T* out, BroadcastShape shape,
                            int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rest = i, oc = 0, ox = 0, oy = 0;
    for (int d = shape.rank - 1; d >= 0; --d) {
      const int64_t idx = rest % shape.dims[d];
      rest /= shape.dims[d];
      oc += idx * shape.strides[0][d];
      ox += idx * shape.strides[1][d];
      oy += idx * shape.strides[2][d];
    }
    out[i] = cond[oc] ? x[ox] : y[oy];
  }
}

__global__ void LogicalNotKernel(const bool* in, bool* out, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = !in[i];
  }
}

__global__ void RangeKernel(int64_t* out, int64_t start, int64_t delta, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = start + i * delta;
  }
}

template <typename S>
cudaError_t CastFrom(const S* in, void* out, int out_dtype, int64_t count, cudaStream_t s) {
  const unsigned g = Blocks(count);
  switch (out_dtype) {
    case 1:
      CastKernel<S, float><<<g, kThreads, 0, s>>>(in, static_cast<float*>(out), count);
      break;
    case 2:
      CastKernel<S, __half><<<g, kThreads, 0, s>>>(in, static_cast<__half*>(out), count);
      break;
    case 3:
      CastKernel<S, __nv_bfloat16>
          <<<g, kThreads, 0, s>>>(in, static_cast<__nv_bfloat16*>(out), count);
      break;
    case 4:
      CastKernel<S, double><<<g, kThreads, 0, s>>>(in, static_cast<double*>(out), count);
      break;
    case 5:
      CastKernel<S, int8_t><<<g, kThreads, 0, s>>>(in, static_cast<int8_t*>(out), count);
      break;
    case 6:
      CastKernel<S, int16_t><<<g, kThreads, 0, s>>>(in, static_cast<int16_t*>(out), count);
      break;
    case 7:
      CastKernel<S, int32_t><<<g, kThreads, 0, s>>>(in, static_cast<int32_t*>(out), count);
      break;
    case 8:
      CastKernel<S, int64_t><<<g, kThreads, 0, s>>>(in, static_cast<int64_t*>(out), count);
      break;
    case 9:
      CastKernel<S, uint8_t><<<g, kThreads, 0, s>>>(in, static_cast<uint8_t*>(out), count);
      break;
    case 13:
      CastKernel<S, bool><<<g, kThreads, 0, s>>>(in, static_cast<bool*>(out), count);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t RunProgram(const Program& program, const ProgramArgs& args, const BroadcastShape& shape,
                       int64_t count, FloatType type, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  return Dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    ProgramKernel<T><<<Blocks(count), kThreads, 0, stream>>>(program, args, shape, count);
    return cudaGetLastError();
  });
}

cudaError_t BiasActResidual(void* x, const void* bias, const void* residual, int64_t count,
                            int64_t n, Act act, FloatType type, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  return Dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    BiasActResidualKernel<T>
        <<<Blocks(count), kThreads, 0, stream>>>(static_cast<T*>(x), static_cast<const T*>(bias),
                                                 static_cast<const T*>(residual), count, n, act);
    return cudaGetLastError();
  });
}

cudaError_t Gather(const void* data, const void* indices, bool indices_i64, void* out,
                   int64_t outer, int64_t axis_dim, int64_t num_indices, int64_t inner,
                   int element_bytes, ErrorRecord* errors, cudaStream_t stream) {
  const int64_t count = outer * num_indices * inner;
  if (count == 0) return cudaSuccess;
  const unsigned g = Blocks(count);
#define NIMBLE_GATHER(T)                                                                         \
  if (indices_i64) {                                                                             \
    GatherKernel<T, int64_t><<<g, kThreads, 0, stream>>>(                                        \
        static_cast<const T*>(data), static_cast<const int64_t*>(indices), static_cast<T*>(out), \
        axis_dim, num_indices, inner, count, errors);                                            \
  } else {                                                                                       \
    GatherKernel<T, int32_t><<<g, kThreads, 0, stream>>>(                                        \
        static_cast<const T*>(data), static_cast<const int32_t*>(indices), static_cast<T*>(out), \
        axis_dim, num_indices, inner, count, errors);                                            \
  }
  switch (element_bytes) {
    case 1:
      NIMBLE_GATHER(uint8_t) break;
    case 2:
      NIMBLE_GATHER(uint16_t) break;
    case 4:
      NIMBLE_GATHER(uint32_t) break;
    case 8:
      NIMBLE_GATHER(uint64_t) break;
    default:
      return cudaErrorInvalidValue;
  }
#undef NIMBLE_GATHER
  return cudaGetLastError();
}

bool CastSupported(int dtype) {
  return dtype == 1 || dtype == 2 || dtype == 3 || dtype == 4 || dtype == 5 || dtype == 6 ||
         dtype == 7 || dtype == 8 || dtype == 9 || dtype == 13;
}

cudaError_t Cast(const void* in, int in_dtype, void* out, int out_dtype, int64_t count,
                 cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  switch (in_dtype) {
    case 1:
      return CastFrom(static_cast<const float*>(in), out, out_dtype, count, stream);
    case 2:
      return CastFrom(static_cast<const __half*>(in), out, out_dtype, count, stream);
    case 3:
      return CastFrom(static_cast<const __nv_bfloat16*>(in), out, out_dtype, count, stream);
    case 4:
      return CastFrom(static_cast<const double*>(in), out, out_dtype, count, stream);
    case 5:
      return CastFrom(static_cast<const int8_t*>(in), out, out_dtype, count, stream);
    case 6:
      return CastFrom(static_cast<const int16_t*>(in), out, out_dtype, count, stream);
    case 7:
      return CastFrom(static_cast<const int32_t*>(in), out, out_dtype, count, stream);
    case 8:
      return CastFrom(static_cast<const int64_t*>(in), out, out_dtype, count, stream);
    case 9:
      return CastFrom(static_cast<const uint8_t*>(in), out, out_dtype, count, stream);
    case 13:
      return CastFrom(static_cast<const bool*>(in), out, out_dtype, count, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

cudaError_t Transpose(const void* in, void* out, int rank, const int64_t* dims,
                      const int64_t* in_strides, int64_t count, int element_bytes,
                      cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  if (rank > kMaxRank) return cudaErrorInvalidValue;
  BroadcastShape shape;
  shape.rank = rank;
  for (int d = 0; d < rank; ++d) {
    shape.dims[d] = dims[d];
    shape.strides[0][d] = in_strides[d];
  }
  const unsigned g = Blocks(count);
  switch (element_bytes) {
    case 1:
      TransposeKernel<<<g, kThreads, 0, stream>>>(static_cast<const uint8_t*>(in),
                                                  static_cast<uint8_t*>(out), rank, shape, count);
      break;
    case 2:
      TransposeKernel<<<g, kThreads, 0, stream>>>(static_cast<const uint16_t*>(in),
                                                  static_cast<uint16_t*>(out), rank, shape, count);
      break;
    case 4:
      TransposeKernel<<<g, kThreads, 0, stream>>>(static_cast<const uint32_t*>(in),
                                                  static_cast<uint32_t*>(out), rank, shape, count);
      break;
    case 8:
      TransposeKernel<<<g, kThreads, 0, stream>>>(static_cast<const uint64_t*>(in),
                                                  static_cast<uint64_t*>(out), rank, shape, count);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

namespace {

// The warp-per-row kernels (LayerNormWarpKernel, EmbedLayerNormWarpKernel): 4 rows a block,
// `launch` called with std::integral_constant<int, V> for rows of V <= 4 16-byte vectors a lane.
constexpr int kWarpRowsPerBlock = 4;
unsigned WarpRowBlocks(int64_t rows) {
  return static_cast<unsigned>((rows + kWarpRowsPerBlock - 1) / kWarpRowsPerBlock);
}
template <typename F>
cudaError_t ByVectors(int vectors, F launch) {
  switch (vectors) {
    case 1:
      return launch(std::integral_constant<int, 1>{});
    case 2:
      return launch(std::integral_constant<int, 2>{});
    case 3:
      return launch(std::integral_constant<int, 3>{});
    default:
      return launch(std::integral_constant<int, 4>{});
  }
}

}  // namespace

cudaError_t LayerNorm(const void* x, const void* gamma, const void* beta, void* y, int64_t rows,
                      int64_t cols, float epsilon, FloatType type, FloatType out_type,
                      cudaStream_t stream) {
  if (rows == 0 || cols == 0) return cudaSuccess;
  if (rows > 2147483647LL) return cudaErrorInvalidValue;
  if (out_type != type && out_type != FloatType::kF32) return cudaErrorInvalidValue;
  const int threads = cols <= 128 ? 64 : cols <= 512 ? 128 : 256;
  return Dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    auto launch = [&](auto out_tag) {
      using TO = decltype(out_tag);
      constexpr int E = 16 / sizeof(T);
      const int vectors = static_cast<int>((cols + 32 * E - 1) / (32 * E));
      const bool aligned = cols % E == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                           reinterpret_cast<uintptr_t>(y) % 16 == 0 &&
                           reinterpret_cast<uintptr_t>(gamma) % 16 == 0 &&
                           reinterpret_cast<uintptr_t>(beta) % 16 == 0;
      const auto* xt = static_cast<const T*>(x);
      const auto* gt = static_cast<const T*>(gamma);
      const auto* bt = static_cast<const T*>(beta);
      auto* yt = static_cast<TO*>(y);
      if (aligned && vectors <= 4) {
        const int c = static_cast<int>(cols);
        return ByVectors(vectors, [&](auto v) {
          return LaunchPdl(LayerNormWarpKernel<T, TO, decltype(v)::value>, WarpRowBlocks(rows),
                           32 * kWarpRowsPerBlock, 0, stream, xt, gt, bt, yt, rows, c, epsilon);
        });
      }
      LayerNormKernel<T, TO>
          <<<static_cast<unsigned>(rows), threads, 0, stream>>>(xt, gt, bt, yt, cols, epsilon);
      return cudaGetLastError();
    };
    return out_type == type ? launch(T{}) : launch(float{});
  });
}

// Rows (warps) a block of the warp-per-row SplitSumLayerNorm: NIMBLE_SPLIT_LN_ROWS=1, 2, 4 or 8
// (A/B measurements), default 2: on an H100, BERT-base fp16 at seq 128 ran 0.384 / 0.386 ms
// with 2 against 0.391 / 0.392 with 4, and the same at seq 384 (bench/RESULTS.md).
int SplitSumRowsPerBlock() {
  constexpr int kDefault = 2;
  static const int rows = [] {
    const char* v = std::getenv("NIMBLE_SPLIT_LN_ROWS");
    const int r = v != nullptr ? std::atoi(v) : kDefault;
    return r == 1 || r == 2 || r == 4 || r == 8 ? r : kDefault;
  }();
  return rows;
}

cudaError_t SplitSumLayerNorm(const void* parts, FloatType parts_type, int splits,
                              int64_t part_stride, const void* bias, const void* residual,
                              const void* gamma, const void* beta, void* y, int64_t rows,
                              int64_t cols, float epsilon, FloatType type, FloatType out_type,
                              cudaStream_t stream) {
  if (rows == 0 || cols == 0) return cudaSuccess;
  if (rows > 2147483647LL || type == FloatType::kF32 || splits < 1 ||
      (out_type != type && out_type != FloatType::kF32) ||
      (parts_type != type && parts_type != FloatType::kF32)) {
    return cudaErrorInvalidValue;
  }
  const bool f32_parts = parts_type == FloatType::kF32;
  const int vectors = static_cast<int>((cols + 255) / 256);
  const int64_t part_bytes = part_stride * (f32_parts ? 4 : 2);
  // Half partials take the fast path at 1-4 slices (fewer kernels to build).
  bool fast = cols % 8 == 0 && vectors <= 4 &&
              (splits <= 4 || (f32_parts && (splits == 6 || splits == 8))) &&
              (splits == 1 || part_bytes % 16 == 0);
  for (const void* p : {parts, bias, residual, gamma, beta, static_cast<const void*>(y)}) {
    fast = fast && reinterpret_cast<uintptr_t>(p) % 16 == 0;
  }
  return Dispatch(type, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    if constexpr (sizeof(T) != 2) {
      return cudaErrorInvalidValue;
    } else {
      auto launch = [&](auto out_tag, auto part_tag) {
        using TO = decltype(out_tag);
        using P = decltype(part_tag);
        const P* p = static_cast<const P*>(parts);
        if (!fast) {
          const int threads = cols <= 128 ? 64 : cols <= 512 ? 128 : 256;
          return LaunchPdl(SplitSumLayerNormBlockKernel<T, TO, P>, static_cast<unsigned>(rows),
                           threads, 0, stream, p, splits, part_stride, static_cast<const T*>(bias),
                           static_cast<const T*>(residual), static_cast<const T*>(gamma),
                           static_cast<const T*>(beta), static_cast<TO*>(y), cols, epsilon);
        }
        const int per_block = SplitSumRowsPerBlock();
        const auto blocks = static_cast<unsigned>((rows + per_block - 1) / per_block);
        auto by_splits = [&](auto v) {
          constexpr int V = decltype(v)::value;
          auto go = [&](auto kernel) {
            return LaunchPdl(kernel, blocks, 32 * per_block, 0, stream, p, part_stride,
                             static_cast<const T*>(bias), static_cast<const T*>(residual),
                             static_cast<const T*>(gamma), static_cast<const T*>(beta),
                             static_cast<TO*>(y), rows, static_cast<int>(cols), epsilon);
          };
          switch (splits) {
            case 1:
              return go(SplitSumLayerNormKernel<T, TO, P, 1, V>);
            case 2:
              return go(SplitSumLayerNormKernel<T, TO, P, 2, V>);
            case 3:
              return go(SplitSumLayerNormKernel<T, TO, P, 3, V>);
            case 4:
              return go(SplitSumLayerNormKernel<T, TO, P, 4, V>);
            default:
              if constexpr (sizeof(P) == 4) {
                if (splits == 6) return go(SplitSumLayerNormKernel<T, TO, P, 6, V>);
                if (splits == 8) return go(SplitSumLayerNormKernel<T, TO, P, 8, V>);
              }
              return cudaErrorInvalidValue;
          }
        };
        return ByVectors(vectors, by_splits);
      };
      auto by_out = [&](auto part_tag) {
        return out_type == type ? launch(T{}, part_tag) : launch(float{}, part_tag);
      };
      return f32_parts ? by_out(float{}) : by_out(T{});
    }
  });
}

cudaError_t EmbedLayerNorm(const EmbedArgs& args, const void* gamma, const void* beta, void* y,
                           int64_t rows, int64_t cols, float epsilon, FloatType type,
                           ErrorRecord* errors, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return cudaSuccess;
  if (rows > 2147483647LL || args.count < 1 || args.count > kMaxEmbeddings) {
    return cudaErrorInvalidValue;
  }
  return Dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    constexpr int E = 16 / sizeof(T);
    const int vectors = static_cast<int>((cols + 32 * E - 1) / (32 * E));
    bool aligned = cols % E == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(gamma) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(beta) % 16 == 0;
    for (int t = 0; t < args.count; ++t) {
      aligned = aligned && reinterpret_cast<uintptr_t>(args.tables[t]) % 16 == 0;
    }
    const auto* gt = static_cast<const T*>(gamma);
    const auto* bt = static_cast<const T*>(beta);
    auto* yt = static_cast<T*>(y);
    if (aligned && vectors <= 4) {
      const int c = static_cast<int>(cols);
      return ByVectors(vectors, [&](auto v) {
        return LaunchPdl(EmbedLayerNormWarpKernel<T, decltype(v)::value>, WarpRowBlocks(rows),
                         32 * kWarpRowsPerBlock, 0, stream, args, gt, bt, yt, rows, c, epsilon,
                         errors);
      });
    }
    const int threads = cols <= 128 ? 64 : cols <= 512 ? 128 : 256;
    EmbedLayerNormKernel<T><<<static_cast<unsigned>(rows), threads, 0, stream>>>(
        args, gt, bt, yt, cols, epsilon, errors);
    return cudaGetLastError();
  });
}

cudaError_t Softmax(const void* x, void* y, int64_t outer, int64_t r, int64_t inner, bool log,
                    FloatType type, cudaStream_t stream) {
  const int64_t rows = outer * inner;
  if (rows == 0 || r == 0) return cudaSuccess;
  if (rows > 2147483647LL) return cudaErrorInvalidValue;
  const int threads = r <= 64 ? 32 : r <= 256 ? 64 : r <= 1024 ? 128 : 256;
  return Dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    SoftmaxKernel<T><<<static_cast<unsigned>(rows), threads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<T*>(y), r, inner, log);
    return cudaGetLastError();
  });
}

cudaError_t Attention(const AttentionArgs& args, cudaStream_t stream) {
  if (args.batch == 0 || args.q_heads == 0 || args.q_seq == 0 || args.v_head == 0) {
    return cudaSuccess;
  }
  if (args.q_seq > 2147483647LL || args.q_heads > 65535 || args.batch > 65535) {
    return cudaErrorInvalidValue;
  }
  const size_t shared = static_cast<size_t>(args.head + args.kv_seq) * sizeof(float);
  const dim3 grid(static_cast<unsigned>(args.q_seq), static_cast<unsigned>(args.q_heads),
                  static_cast<unsigned>(args.batch));
  const FloatType mask_type = args.mask_bool ? FloatType::kF32 : args.mask_type;
  if (FlashEligible(args) && !FlashAttentionDisabled()) {
    // Short sequences at small batch: split the keys over a block's warps.
    static const int sms = MultiprocessorCount();
    const int64_t query_tiles = (args.q_seq + 15) / 16 * args.q_heads * args.batch;
    AttentionChoice forced = ForcedAttention();
    const bool fast = (args.mask == nullptr || args.mask_strides[2] == 0) && !args.causal;
    // 'd': two blocks a multiprocessor (Flash2DShared), where all key tiles fit one a group;
    // other shapes take the default choice.
    const bool two_blocks = forced.kind == 'd';
    if (two_blocks && (!fast || (args.kv_seq + kFlashKeys - 1) / kFlashKeys >
                                    static_cast<int64_t>(forced.keys))) {
      forced = AttentionChoice{};
    }
    if ((forced.kind == 'q' || forced.kind == 'd') && fast) {
      const int code = forced.warps * 10 + forced.keys;
      if (two_blocks && code != 25 && code != 26) return cudaErrorInvalidValue;  // d2k5, d2k6
      return Dispatch(args.type, [&](auto tag) {
        using T = decltype(tag);
        if constexpr (std::is_same_v<T, float>) {
          return cudaErrorInvalidValue;  // not eligible
        } else {
          return Dispatch(mask_type, [&](auto mask_tag) {
            using M = decltype(mask_tag);
            switch (code) {
              case 42:
                return Launch2D<T, M, 4, 2>(args, stream);
              case 43:
                return Launch2D<T, M, 4, 3>(args, stream);
              case 44:
                return Launch2D<T, M, 4, 4>(args, stream);
              case 24:
                return Launch2D<T, M, 2, 4>(args, stream);
              case 33:
                return Launch2D<T, M, 3, 3>(args, stream);
              case 34:
                return Launch2D<T, M, 3, 4>(args, stream);
              case 25:  // 5 and 6 key groups: single pass (at most 5 or 6 key tiles)
                return two_blocks ? Launch2D<T, M, 2, 5, 1, 2>(args, stream)
                                  : Launch2D<T, M, 2, 5, 1>(args, stream);
              case 26:
                return two_blocks ? Launch2D<T, M, 2, 6, 1, 2>(args, stream)
                                  : Launch2D<T, M, 2, 6, 1>(args, stream);
              case 35:
                return Launch2D<T, M, 3, 5, 1>(args, stream);
              case 36:
                return Launch2D<T, M, 3, 6, 1>(args, stream);
              default:
                return cudaErrorInvalidValue;
            }
          });
        }
      });
    }
    // Long sequences at small batch with a key-padding mask (or none): the 2-D kernel when a
    // block per multiprocessor covers the grid (its 150-160 KB of shared memory allow one).
    // Measured at batch 1, 12 heads (ops_bench): 5.9 / 9.0 / 11.3 µs at seq 256 / 384 / 512
    // against 7.9 / 11.8 / 15.4 for the split-key kernel (before the 48-query blocks).
    const int64_t tiles64 = (args.kv_seq + kFlashKeys - 1) / kFlashKeys;
    if (forced.kind == 0 && fast && query_tiles < 4 * sms && tiles64 >= 4) {
      const int64_t heads = args.q_heads * args.batch;
      const int64_t blocks2 = (args.q_seq + 31) / 32 * heads,
                    blocks3 = (args.q_seq + 47) / 48 * heads,
                    blocks4 = (args.q_seq + 63) / 64 * heads;
      if (blocks2 <= sms || blocks4 <= sms) {
        return Dispatch(args.type, [&](auto tag) {
          using T = decltype(tag);
          if constexpr (std::is_same_v<T, float>) {
            return cudaErrorInvalidValue;  // not eligible
          } else {
            return Dispatch(mask_type, [&](auto mask_tag) {
              using M = decltype(mask_tag);
              // 5 or 6 key tiles (seq 257-384): a key group per tile, all of them in shared
              // memory at once, so each warp walks one tile instead of two of four groups'
              // (AttentionSinglePass).
              const bool one_pass = AttentionSinglePass() && (tiles64 == 5 || tiles64 == 6);
              auto launch = [&](auto warps) {
                constexpr int W = decltype(warps)::value;
                if (one_pass && tiles64 == 5) return Launch2D<T, M, W, 5, 1>(args, stream);
                if (one_pass) return Launch2D<T, M, W, 6, 1>(args, stream);
                return Launch2D<T, M, W, 4>(args, stream);
              };
              if (blocks2 <= sms) return launch(std::integral_constant<int, 2>{});
              // 48-query blocks when they fit one a multiprocessor: 96 of them at seq 384, 132 at
              // 512 (9.09-9.14 / 10.77-10.82 us against 9.24-9.33 / 11.91-11.97 with 64-query
              // blocks, bench/results/gpu/run-2026-12-06s).
              if (blocks3 <= sms) return launch(std::integral_constant<int, 3>{});
              // Key groups that divide the tiles evenly: 6 tiles (seq 384) take 3.
              if (tiles64 <= 7) return Launch2D<T, M, 4, 3>(args, stream);
              return Launch2D<T, M, 4, 4>(args, stream);
            });
          }
        });
      }
    }
    if (forced.kind == 's' || (forced.kind == 0 && query_tiles < 4 * sms)) {
      const dim3 split_grid(static_cast<unsigned>((args.q_seq + 15) / 16),
                            static_cast<unsigned>(args.q_heads), static_cast<unsigned>(args.batch));
      return Dispatch(args.type, [&](auto tag) {
        using T = decltype(tag);
        if constexpr (std::is_same_v<T, float>) {
          return cudaErrorInvalidValue;  // not eligible
        } else {
          return Dispatch(mask_type, [&](auto mask_tag) {
            using M = decltype(mask_tag);
            if (forced.kind == 's') {
              const int code = forced.warps * 100 + forced.keys;
              switch (code) {
                case 116:
                  return LaunchSplit<T, M, 1, 16>(args, split_grid, stream);
                case 132:
                  return LaunchSplit<T, M, 1, 32>(args, split_grid, stream);
                case 232:
                  return LaunchSplit<T, M, 2, 32>(args, split_grid, stream);
                case 216:
                  return LaunchSplit<T, M, 2, 16>(args, split_grid, stream);
                case 416:
                  return LaunchSplit<T, M, 4, 16>(args, split_grid, stream);
                case 432:
                  return LaunchSplit<T, M, 4, 32>(args, split_grid, stream);
                case 816:
                  return LaunchSplit<T, M, 8, 16>(args, split_grid, stream);
                case 832:
                  return LaunchSplit<T, M, 8, 32>(args, split_grid, stream);
                default:
                  return cudaErrorInvalidValue;
              }
            }
            // Measured on the H100 at batch 1, 12 heads (ops_bench): a lone 16- or 32-key tile
            // per block up to 32 keys; with a block per multiprocessor or fewer, 4 warps over
            // 16-key tiles up to 64 keys, 8 over 32-key tiles up to 128, 8 over 16-key tiles
            // beyond; with more blocks, 4 warps over 16-key tiles (39 KB: 5 blocks per SM).
            if (args.kv_seq <= 16) return LaunchSplit<T, M, 1, 16>(args, split_grid, stream);
            if (args.kv_seq <= 32) return LaunchSplit<T, M, 1, 32>(args, split_grid, stream);
            if (query_tiles <= sms) {
              if (args.kv_seq <= 64) return LaunchSplit<T, M, 4, 16>(args, split_grid, stream);
              if (args.kv_seq <= 128) return LaunchSplit<T, M, 8, 32>(args, split_grid, stream);
              return LaunchSplit<T, M, 8, 16>(args, split_grid, stream);
            }
            return LaunchSplit<T, M, 4, 16>(args, split_grid, stream);
          });
        }
      });
    }
    const int warps = forced.kind == 'r' ? forced.warps : FlashWarps(args);
    const dim3 flash_grid(static_cast<unsigned>((args.q_seq + 16 * warps - 1) / (16 * warps)),
                          static_cast<unsigned>(args.q_heads), static_cast<unsigned>(args.batch));
    return Dispatch(args.type, [&](auto tag) {
      using T = decltype(tag);
      if constexpr (std::is_same_v<T, float>) {
        return cudaErrorInvalidValue;  // not eligible
      } else {
        return Dispatch(mask_type, [&](auto mask_tag) {
          using M = decltype(mask_tag);
          if (warps == 4) {
            FlashAttentionKernel<T, M, 4><<<flash_grid, 128, 0, stream>>>(args);
          } else if (warps == 2) {
            FlashAttentionKernel<T, M, 2><<<flash_grid, 64, 0, stream>>>(args);
          } else {
            FlashAttentionKernel<T, M, 1><<<flash_grid, 32, 0, stream>>>(args);
          }
          return cudaGetLastError();
        });
      }
    });
  }
  return Dispatch(args.type, [&](auto tag) {
    using T = decltype(tag);
    return Dispatch(mask_type, [&](auto mask_tag) {
      using M = decltype(mask_tag);
      if (shared > 48 * 1024) {
        cudaError_t e =
            cudaFuncSetAttribute(AttentionKernel<T, M>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(shared));
        if (e != cudaSuccess) return e;
      }
      AttentionKernel<T, M><<<grid, 128, shared, stream>>>(args);
      return cudaGetLastError();
    });
  });
}

cudaError_t Where(const bool* cond, const void* x, const void* y, void* out,
                  const BroadcastShape& shape, int64_t count, int element_bytes,
                  cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  if (element_bytes == 2) {
    WhereKernel<<<Blocks(count), kThreads, 0, stream>>>(cond, static_cast<const uint16_t*>(x),
                                                        static_cast<const uint16_t*>(y),
                                                        static_cast<uint16_t*>(out), shape, count);
  } else if (element_bytes == 4) {
    WhereKernel<<<Blocks(count), kThreads, 0, stream>>>(cond, static_cast<const uint32_t*>(x),
                                                        static_cast<const uint32_t*>(y),
                                                        static_cast<uint32_t*>(out), shape, count);
  } else {
    return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t LogicalNot(const bool* in, bool* out, int64_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  LogicalNotKernel<<<Blocks(count), kThreads, 0, stream>>>(in, out, count);
  return cudaGetLastError();
}

cudaError_t RangeI64(int64_t* out, int64_t start, int64_t delta, int64_t count,
                     cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  RangeKernel<<<Blocks(count), kThreads, 0, stream>>>(out, start, delta, count);
  return cudaGetLastError();
}

}  // namespace nimble::vm::cuda_ops
