// Internals shared by the elementwise, reduction and normalization CPU kernels: dtype
// dispatch, the parallel-for policy, portable SIMD (GCC vector extensions compiled per ISA and
// picked at run time), vectorisable float math, dtype conversion, and the FusedElementwise
// program encoding.
//
// SIMD design: hot float loops are written once as `template <int W> static Run(...)` bodies
// over `Simd<W>::F` (W float lanes). RunSimd<Body>(args...) calls the body compiled for AVX-512
// (W=16), AVX2+FMA (W=8) or the x86-64 baseline SSE2 (W=4), whichever the CPU supports, so
// the binary runs on any x86-64 and uses the widest unit available. Bodies and the math they
// call must be NIMBLE_SIMD_INLINE (always_inline) so they are compiled inside the per-ISA
// wrapper; lambdas inside bodies would not inherit the target and must be avoided.
#pragma once

// Vector-extension types wider than the baseline ISA trip GCC's ABI note on the always-inline
// helpers; they never cross a real call boundary, so the note is noise.
#pragma GCC diagnostic ignored "-Wpsabi"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "tbb/blocked_range.h"
#include "tbb/parallel_for.h"
#include "tbb/partitioner.h"
#include "vm/kernels/cpu/lowp.h"
#include "vm/kernels/fused_elementwise_program.h"
#include "vm/kernels/kernel.h"
#include "vm/runtime/dtype.h"
#include "vm/runtime/tensor.h"

namespace nimble::vm::cpu {

// ------------------------------------------------------------------------------------------
// Registration of the elementwise sub-families (elementwise.cc calls these).
void RegisterUnaryKernels(KernelRegistry& registry);            // elementwise_unary.cc
void RegisterCastKernels(KernelRegistry& registry);             // cast.cc
void RegisterFusedElementwiseKernel(KernelRegistry& registry);  // fused_elementwise.cc

// ------------------------------------------------------------------------------------------
// Dtypes.

// Options of conversions to the low-precision floats (see lowp.h).
struct CastOptions {
  bool saturate = true;                            // float8: clamp out-of-range values
  E8M0Rounding e8m0_rounding = E8M0Rounding::kUp;  // float8e8m0 only
};

// Converts `src` into `dst` (same element count, any dtypes, strings included) with ONNX Cast
// semantics: float->int truncates toward zero (NaN -> 0, out of range saturates to int64 then
// wraps like the C cast of the int64), to bool is `!= 0`, numbers print as "%.8g" / "NaN" /
// "INF" / "-INF", strings parse as numbers (kInvalidArgument naming `op` when they do not).
// The low-precision floats follow lowp.h (`options`: Cast's saturate and round_mode); anything
// to a 4- or 2-bit integer converts as to int64, then wraps to the low bits.
absl::Status CastInto(const Tensor& src, Tensor& dst, absl::string_view op = "Cast",
                      const CastOptions& options = {});
// A new tensor of `dtype` holding `src` cast (see CastInto).
absl::StatusOr<Tensor> CastTo(const Tensor& src, DType dtype, absl::string_view op = "Cast",
                              const CastOptions& options = {});

inline bool IsHalf(DType d) { return d == DType::kF16 || d == DType::kBF16; }

// Half-precision <-> float for a run of elements (d is kF16 or kBF16).
void HalfToFloat(DType d, const void* in, float* out, int64_t n);
void FloatToHalf(DType d, const float* in, void* out, int64_t n);

template <typename T>
struct TypeTag {
  using type = T;
};

constexpr uint32_t DTypeBit(DType d) { return uint32_t{1} << static_cast<int>(d); }
inline constexpr uint32_t kF32F64 = DTypeBit(DType::kF32) | DTypeBit(DType::kF64);
inline constexpr uint32_t kSignedInts =
    DTypeBit(DType::kI8) | DTypeBit(DType::kI16) | DTypeBit(DType::kI32) | DTypeBit(DType::kI64);
inline constexpr uint32_t kUnsignedInts =
    DTypeBit(DType::kU8) | DTypeBit(DType::kU16) | DTypeBit(DType::kU32) | DTypeBit(DType::kU64);
inline constexpr uint32_t kInts = kSignedInts | kUnsignedInts;
inline constexpr uint32_t kNumeric = kF32F64 | kInts;  // computed natively
inline constexpr uint32_t kBoolBit = DTypeBit(DType::kBool);

// Calls fn(TypeTag<T>{}) for the C++ type of `dtype` when dtype is in kSet; otherwise
// kInvalidArgument "<op>: unsupported dtype <name>". Only the types in kSet are instantiated.
template <uint32_t kSet, typename Fn>
absl::Status VisitDType(DType dtype, absl::string_view op, Fn&& fn) {
#define NIMBLE_VISIT_CASE(D, T)                                              \
  case DType::D:                                                             \
    if constexpr ((kSet & DTypeBit(DType::D)) != 0) return fn(TypeTag<T>{}); \
    break;
  switch (dtype) {
    NIMBLE_VISIT_CASE(kF32, float)
    NIMBLE_VISIT_CASE(kF64, double)
    NIMBLE_VISIT_CASE(kI8, int8_t)
    NIMBLE_VISIT_CASE(kI16, int16_t)
    NIMBLE_VISIT_CASE(kI32, int32_t)
    NIMBLE_VISIT_CASE(kI64, int64_t)
    NIMBLE_VISIT_CASE(kU8, uint8_t)
    NIMBLE_VISIT_CASE(kU16, uint16_t)
    NIMBLE_VISIT_CASE(kU32, uint32_t)
    NIMBLE_VISIT_CASE(kU64, uint64_t)
    NIMBLE_VISIT_CASE(kBool, bool)
    default:
      break;
  }
#undef NIMBLE_VISIT_CASE
  return absl::InvalidArgumentError(absl::StrCat(op, ": unsupported dtype ", DTypeName(dtype)));
}

// ------------------------------------------------------------------------------------------
// Common validation.

// kInvalidArgument "<op>: expected N inputs/outputs" unless the counts fit.
absl::Status CheckArity(absl::string_view op, absl::Span<const Tensor> inputs, size_t min_inputs,
                        size_t max_inputs, absl::Span<Tensor> outputs, size_t num_outputs);
// Every defined input and output is a host tensor; `count` leading inputs must be defined.
absl::Status CheckRequired(absl::string_view op, absl::Span<const Tensor> inputs, size_t count);
// `output` is defined with `dtype` and `shape`.
absl::Status CheckOutput(absl::string_view op, const Tensor& output, DType dtype,
                         absl::Span<const int64_t> shape, int index = 0);
// Normalises `axis` against `rank` (accepting [-rank, rank-1]).
absl::StatusOr<int> NormalizeAxis(absl::string_view op, int64_t axis, int rank);
// Reads a scalar (or 1-element) integer tensor.
absl::StatusOr<int64_t> ScalarInt(absl::string_view op, absl::string_view what, const Tensor& t);
// Reads a 1-D integer tensor (axes, ...).
absl::StatusOr<std::vector<int64_t>> IntList(absl::string_view op, absl::string_view what,
                                             const Tensor& t);

// ------------------------------------------------------------------------------------------
// Parallelism. Kernels split work (on oneDNN's OpenMP team, else TBB) when the caller's thread
// budget allows and the work exceeds `grain` units; small tensors run inline on the calling
// thread.

namespace kernel_util {
// onednn_util.h: OpenMP (oneDNN's team) when loaded, else TBB, bounded by num_threads.
void ParallelFor(int num_threads, int64_t n, int64_t grain,
                 absl::FunctionRef<void(int64_t, int64_t)> fn);
}  // namespace kernel_util

template <typename Fn>
void ParallelFor(const KernelContext& ctx, int64_t n, int64_t grain, Fn&& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  if (ctx.num_threads <= 1 || n <= grain) {
    fn(int64_t{0}, n);
    return;
  }
  // At most ~4 chunks per thread: enough for balance without scheduling tiny pieces.
  const int64_t max_chunks = int64_t{4} * ctx.num_threads;
  grain = std::max(grain, (n + max_chunks - 1) / max_chunks);
  kernel_util::ParallelFor(ctx.num_threads, n, grain, fn);
}

// Elements per task for memory-bound elementwise loops.
inline constexpr int64_t kElementwiseGrain = 32768;

// ------------------------------------------------------------------------------------------
// SIMD.

#define NIMBLE_SIMD_INLINE __attribute__((always_inline)) inline
#define NIMBLE_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,f16c,bmi,bmi2")))
#define NIMBLE_TARGET_AVX2 __attribute__((target("avx2,fma,f16c,bmi,bmi2")))

enum class SimdLevel { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

// The widest level the CPU supports (cached), lowered by SetSimdLevelForTesting.
SimdLevel GetSimdLevel();
SimdLevel DetectedSimdLevel();
// Caps the level (never raises it past the detected one); tests use it to cover every path.
void SetSimdLevelForTesting(SimdLevel level);

template <int W>
struct Simd {
  typedef float F __attribute__((vector_size(4 * W)));
  typedef int32_t I __attribute__((vector_size(4 * W)));
};

template <typename Body, typename... Args>
NIMBLE_TARGET_AVX512 auto RunSimdAvx512(Args... args) {
  return Body::template Run<16>(args...);
}
template <typename Body, typename... Args>
NIMBLE_TARGET_AVX2 auto RunSimdAvx2(Args... args) {
  return Body::template Run<8>(args...);
}
template <typename Body, typename... Args>
auto RunSimdBaseline(Args... args) {
  return Body::template Run<4>(args...);
}
// Body::Run<W>(args...) under the widest ISA available.
template <typename Body, typename... Args>
auto RunSimd(Args... args) {
  switch (GetSimdLevel()) {
    case SimdLevel::kAvx512:
      return RunSimdAvx512<Body>(args...);
    case SimdLevel::kAvx2:
      return RunSimdAvx2<Body>(args...);
    case SimdLevel::kBaseline:
      break;
  }
  return RunSimdBaseline<Body>(args...);
}

template <typename V>
NIMBLE_SIMD_INLINE V LoadV(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V>
NIMBLE_SIMD_INLINE void StoreV(float* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}
template <typename V>
NIMBLE_SIMD_INLINE V SplatV(float x) {
  return V{} + x;
}
template <typename V>
NIMBLE_SIMD_INLINE float HorizontalSum(const V& v) {
  constexpr int kW = sizeof(V) / sizeof(float);
  float s = 0.f;
  for (int i = 0; i < kW; ++i) s += v[i];
  return s;
}
template <typename V>
NIMBLE_SIMD_INLINE float HorizontalMax(const V& v) {
  constexpr int kW = sizeof(V) / sizeof(float);
  float m = v[0];
  for (int i = 1; i < kW; ++i) m = v[i] > m ? v[i] : m;
  return m;
}
// Compare-select max/min (maxps semantics: b when either is NaN).
template <typename V>
NIMBLE_SIMD_INLINE V MaxV(const V& a, const V& b) {
  return a > b ? a : b;
}
template <typename V>
NIMBLE_SIMD_INLINE V MinV(const V& a, const V& b) {
  return a < b ? a : b;
}
template <typename V>
NIMBLE_SIMD_INLINE V AbsV(const V& x) {
  using I = decltype(x < x);
  return (V)((I)x & 0x7fffffff);
}
// |mag| with the sign of `sign`.
template <typename V>
NIMBLE_SIMD_INLINE V CopySignV(const V& mag, const V& sign) {
  using I = decltype(mag < mag);
  return (V)(((I)mag & 0x7fffffff) | ((I)sign & std::numeric_limits<int32_t>::min()));
}

// Clamps that keep NaN (the comparison is false for NaN, so x passes through).
template <typename V>
NIMBLE_SIMD_INLINE V ClampHighV(const V& x, float hi) {
  return x > hi ? SplatV<V>(hi) : x;
}
template <typename V>
NIMBLE_SIMD_INLINE V ClampLowV(const V& x, float lo) {
  return x < lo ? SplatV<V>(lo) : x;
}

// e^r for |r| <= ln2/2 (Cephes polynomial, relative error ~1e-7), and the integer n of the
// range reduction x = n ln2 + r.
template <typename V>
NIMBLE_SIMD_INLINE V ExpReduced(const V& x, V* n_out) {
  const V round = SplatV<V>(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const V n = (x * 1.44269504088896341f + round) - round;
  V r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V p = SplatV<V>(1.9875691500E-4f);
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  *n_out = n;
  return p * (r * r) + r + 1.0f;
}

// exp(x) over the whole float range: overflow -> inf, underflow through the subnormals to 0,
// NaN -> NaN (it flows through the polynomial). The power of two is applied in two halves so
// subnormal results stay correct.
template <typename V>
NIMBLE_SIMD_INLINE V ExpV(const V& x) {
  using I = decltype(x < x);
  V n;
  V y = ExpReduced(ClampLowV(ClampHighV(x, 88.8f), -104.0f), &n);
  const I ni = __builtin_convertvector(n, I);
  const I n1 = ni >> 1;
  const I n2 = ni - n1;
  y = y * (V)((n1 + 127) << 23);
  return y * (V)((n2 + 127) << 23);
}

// exp(x) with results below the smallest normal float flushed to 0: one scaling instead of
// two. For the kernels' internal uses (softmax, sigmoid, tanh, erf), where such values vanish
// next to the rest of the computation. Overflow -> inf, NaN -> NaN.
template <typename V>
NIMBLE_SIMD_INLINE V ExpFastV(const V& x) {
  using I = decltype(x < x);
  constexpr float kLow = -87.33654475f;  // ln(2^-126)
  V n;
  const V y = ExpReduced(ClampLowV(ClampHighV(x, 88.8f), kLow), &n);
  const I ni = __builtin_convertvector(n, I);
  const V r = y * (V)((ni + 127) << 23);  // n = 128 makes the scale +inf: overflow
  return x < kLow ? SplatV<V>(0.0f) : r;
}

// erf(x), max relative error ~3e-7: odd polynomial below 0.921875, 1 - exp(-poly) above.
template <typename V>
NIMBLE_SIMD_INLINE V ErfV(const V& x) {
  const V a = AbsV(x);
  const V s = x * x;
  V ps = SplatV<V>(-5.99104969e-4f);
  ps = ps * s + 4.99339588e-3f;
  ps = ps * s + -2.67667342e-2f;
  ps = ps * s + 1.12818025e-1f;
  ps = ps * s + -3.76124859e-1f;
  ps = ps * s + 1.28379151e-1f;
  const V small = x * ps + x;
  const V t = ClampHighV(a, 3.925f);  // keeps NaN
  V pb = SplatV<V>(1.72948930e-5f);
  pb = pb * t + -3.83208680e-4f;
  pb = pb * t + 3.88393435e-3f;
  pb = pb * t + -2.42545605e-2f;
  pb = pb * t + 1.06777847e-1f;
  pb = pb * t + 6.34846687e-1f;
  pb = pb * t + 1.28717512e-1f;
  pb = pb * t + t;
  const V big = CopySignV(1.0f - ExpFastV(-pb), x);
  return a <= 0.921875f ? small : big;  // NaN takes the big branch, which stays NaN
}

// tanh(x), max relative error ~3e-7: Taylor polynomial below |x| = 0.55, 1 - 2/(e^2|x| + 1)
// above.
template <typename V>
NIMBLE_SIMD_INLINE V TanhV(const V& x) {
  const V a = AbsV(x);
  const V s = x * x;
  V p = SplatV<V>(-2.3912911424355248e-04f);
  p = p * s + 5.9002744094558598e-04f;
  p = p * s + -1.4558343870513183e-03f;
  p = p * s + 3.5921280365724810e-03f;
  p = p * s + -8.8632355299021966e-03f;
  p = p * s + 2.1869488536155203e-02f;
  p = p * s + -5.3968253968253971e-02f;
  p = p * s + 1.3333333333333333e-01f;
  p = p * s + -3.3333333333333333e-01f;
  const V small = x * (p * s) + x;
  const V e = ExpFastV(a + a);
  const V big = CopySignV(1.0f - 2.0f / (e + 1.0f), x);
  return a < 0.55f ? small : big;  // NaN takes the big branch, which stays NaN
}

template <typename V>
NIMBLE_SIMD_INLINE V SigmoidV(const V& x) {
  return 1.0f / (1.0f + ExpFastV(-x));
}

// Gelu(x) = x/2 * (1 + erf(x/sqrt2)). Where erf(z) is near -1, 1 + erf(z) = erfc(|z|) comes
// straight from the exp(-poly) form instead of a cancelling subtraction, so the negative tail
// keeps its relative accuracy (~1e-4 at x = -4) and decays to 0.
template <typename V>
NIMBLE_SIMD_INLINE V GeluV(const V& x) {
  const V z = x * 0.70710678118654752440f;
  const V a = AbsV(z);
  const V s = z * z;
  V ps = SplatV<V>(-5.99104969e-4f);
  ps = ps * s + 4.99339588e-3f;
  ps = ps * s + -2.67667342e-2f;
  ps = ps * s + 1.12818025e-1f;
  ps = ps * s + -3.76124859e-1f;
  ps = ps * s + 1.28379151e-1f;
  const V small = 1.0f + (z * ps + z);
  const V t = ClampHighV(a, 10.0f);
  V pb = SplatV<V>(1.72948930e-5f);
  pb = pb * t + -3.83208680e-4f;
  pb = pb * t + 3.88393435e-3f;
  pb = pb * t + -2.42545605e-2f;
  pb = pb * t + 1.06777847e-1f;
  pb = pb * t + 6.34846687e-1f;
  pb = pb * t + 1.28717512e-1f;
  pb = pb * t + t;
  const V erfc = ExpFastV(-pb);
  const V big = z < 0.0f ? erfc : 2.0f - erfc;  // erfc < 3e-8 past |z| = 3.925: 2 - erfc = 2
  return 0.5f * x * (a <= 0.921875f ? small : big);
}

// Gelu with the tanh approximation: x/2 * (1 + tanh(u)) = x * sigmoid(2u), which has no
// cancellation for negative x.
template <typename V>
NIMBLE_SIMD_INLINE V GeluTanhV(const V& x) {
  const V u2 = 1.59576912160573071176f * (x + 0.044715f * x * x * x);  // 2 * sqrt(2/pi) * (...)
  return x / (1.0f + ExpFastV(-u2));
}

// Scalar forms of the same approximations (bit-for-bit the lane computation up to FMA use), for
// code that needs one value.
inline float ExpScalar(float x) {
  typedef float V1 __attribute__((vector_size(4)));
  V1 v = {x};
  return ExpV(v)[0];
}

// f32 array kernels (SIMD-dispatched; in and out may alias exactly).
enum class FloatUnary { kExp, kTanh, kErf, kSigmoid, kGelu, kGeluTanh };
void ApplyFloatUnary(FloatUnary op, const float* x, float* y, int64_t n);

// ------------------------------------------------------------------------------------------
// FusedElementwise program encoding.
//
// Attributes:
//   "program"   std::vector<int64_t>: instructions of 4 words each: [opcode, dst, a, b].
//   "constants" std::vector<double>:  immediates, referenced by kConst (rounded to float).
// Slots are float32 registers; each holds one block of the output (up to kFusedBlock
// elements) or a scalar. Inputs are f32 tensors broadcast (numpy rules) to the output shape;
// every output is f32 with that shape. Slots must be written before they are read; `dst` of a
// compute instruction is a slot < kFusedMaxSlots.
//
//   opcode            dst            a               b
//   kLoad      = 0    slot           input index     -        slot <- inputs[a]
//   kConst     = 1    slot           constant index  -        slot <- constants[a]
//   kStore     = 2    output index   slot            -        outputs[dst] <- slot
//   kAdd..kPow        slot           slot            slot     slot <- a (op) b
//     kAdd = 10, kSub = 11, kMul = 12, kDiv = 13, kMax = 14, kMin = 15, kPow = 16
//   unary             slot           slot            -        slot <- op(a)
//     kNeg = 30, kExp = 31, kLog = 32, kSqrt = 33, kRsqrt = 34, kTanh = 35, kErf = 36,
//     kSigmoid = 37, kRelu = 38, kGelu = 39 (erf form), kGeluTanh = 40, kAbs = 41,
//     kReciprocal = 42
//
// Example: y = gelu(x + bias)   program = [0,0,0,0,  0,1,1,0,  10,0,0,1,  39,0,0,0,  2,0,0,0]
// Max/Min follow ONNX (NaN propagates); Pow is std::pow; Relu is max(x, 0).
// The opcode values are defined once, in vm/kernels/fused_elementwise_program.h.
enum FusedOpcode : int64_t {
  kFusedLoad = static_cast<int64_t>(FusedOp::kLoad),
  kFusedConst = static_cast<int64_t>(FusedOp::kConst),
  kFusedStore = static_cast<int64_t>(FusedOp::kStore),
  kFusedAdd = static_cast<int64_t>(FusedOp::kAdd),
  kFusedSub = static_cast<int64_t>(FusedOp::kSub),
  kFusedMul = static_cast<int64_t>(FusedOp::kMul),
  kFusedDiv = static_cast<int64_t>(FusedOp::kDiv),
  kFusedMax = static_cast<int64_t>(FusedOp::kMax),
  kFusedMin = static_cast<int64_t>(FusedOp::kMin),
  kFusedPow = static_cast<int64_t>(FusedOp::kPow),
  kFusedNeg = static_cast<int64_t>(FusedOp::kNeg),
  kFusedExp = static_cast<int64_t>(FusedOp::kExp),
  kFusedLog = static_cast<int64_t>(FusedOp::kLog),
  kFusedSqrt = static_cast<int64_t>(FusedOp::kSqrt),
  kFusedRsqrt = static_cast<int64_t>(FusedOp::kRsqrt),
  kFusedTanh = static_cast<int64_t>(FusedOp::kTanh),
  kFusedErf = static_cast<int64_t>(FusedOp::kErf),
  kFusedSigmoid = static_cast<int64_t>(FusedOp::kSigmoid),
  kFusedRelu = static_cast<int64_t>(FusedOp::kRelu),
  kFusedGelu = static_cast<int64_t>(FusedOp::kGelu),
  kFusedGeluTanh = static_cast<int64_t>(FusedOp::kGeluTanh),
  kFusedAbs = static_cast<int64_t>(FusedOp::kAbs),
  kFusedReciprocal = static_cast<int64_t>(FusedOp::kReciprocal),
};
inline constexpr int kFusedMaxSlots = kFusedProgramMaxSlots;
inline constexpr int64_t kFusedBlock = 512;

}  // namespace nimble::vm::cpu
