// Binary, variadic and ternary elementwise kernels with numpy broadcasting (Add, Sub, Mul, Div,
// Pow, Mod, Max, Min, Sum, Mean, PRelu, BitShift, bitwise and logical ops, comparisons, Where,
// Clip), plus the helpers shared by the elementwise family.
//
// Design: BroadcastPlan collapses the operands' shapes into rows whose inner loop walks each
// operand with stride 1 or 0; a specialised loop per stride combination lets the compiler
// vectorise, and the f32 arithmetic loops run through the run-time-dispatched SIMD bodies.
// Work is split over TBB in chunks of kElementwiseGrain elements. f16/bf16 operands are
// computed in float (converted in full, then converted back).
#include <atomic>
#include <memory>
#include <string>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include <cpuid.h>

#include "vm/kernels/cpu/broadcast.h"
#include "vm/kernels/cpu/cpu_kernels.h"
#include "vm/kernels/cpu/elementwise_internal.h"

namespace nimble::vm::cpu {

// ------------------------------------------------------------------------------------------
// Shared helpers (declared in elementwise_internal.h).

namespace {
std::atomic<int> simd_cap{static_cast<int>(SimdLevel::kAvx512)};

// F16C and BMI2 through CPUID directly: clang 14's __builtin_cpu_supports knows neither name.
bool HasF16cAndBmi2() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  const bool f16c = (ecx >> 29) & 1;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  const bool bmi2 = (ebx >> 8) & 1;
  return f16c && bmi2;
}
}  // namespace

SimdLevel DetectedSimdLevel() {
  static const SimdLevel level = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && HasF16cAndBmi2()) {
      return SimdLevel::kAvx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && HasF16cAndBmi2()) {
      return SimdLevel::kAvx2;
    }
    return SimdLevel::kBaseline;
  }();
  return level;
}

SimdLevel GetSimdLevel() {
  return static_cast<SimdLevel>(
      std::min(static_cast<int>(DetectedSimdLevel()), simd_cap.load(std::memory_order_relaxed)));
}

void SetSimdLevelForTesting(SimdLevel level) {
  simd_cap.store(static_cast<int>(level), std::memory_order_relaxed);
}

absl::Status CheckArity(absl::string_view op, absl::Span<const Tensor> inputs, size_t min_inputs,
                        size_t max_inputs, absl::Span<Tensor> outputs, size_t num_outputs) {
  if (inputs.size() < min_inputs || inputs.size() > max_inputs) {
    return absl::InvalidArgumentError(
        min_inputs == max_inputs
            ? absl::StrCat(op, ": expected ", min_inputs, " inputs, got ", inputs.size())
            : absl::StrCat(op, ": expected ", min_inputs, " to ", max_inputs, " inputs, got ",
                           inputs.size()));
  }
  if (outputs.size() < num_outputs) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": expected ", num_outputs, " outputs, got ", outputs.size()));
  }
  return absl::OkStatus();
}

absl::Status CheckRequired(absl::string_view op, absl::Span<const Tensor> inputs, size_t count) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined()) {
      if (i < count) {
        return absl::InvalidArgumentError(absl::StrCat(op, ": input ", i, " is missing"));
      }
      continue;
    }
    if (inputs[i].device().type != DeviceType::kCPU) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": input ", i, " is not on the host"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckOutput(absl::string_view op, const Tensor& output, DType dtype,
                         absl::Span<const int64_t> shape, int index) {
  if (!output.defined()) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": output ", index, " is not allocated"));
  }
  if (output.device().type != DeviceType::kCPU) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": output ", index, " is not on the host"));
  }
  if (output.dtype() != dtype || absl::Span<const int64_t>(output.shape()) != shape) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": output ", index, " is ",
                                                   output.TypeString(), ", expected ",
                                                   DTypeName(dtype), ShapeToString(shape)));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> NormalizeAxis(absl::string_view op, int64_t axis, int rank) {
  if (axis < -rank || axis >= rank) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": axis ", axis, " is out of range for rank ", rank));
  }
  return static_cast<int>(axis < 0 ? axis + rank : axis);
}

absl::StatusOr<int64_t> ScalarInt(absl::string_view op, absl::string_view what, const Tensor& t) {
  if (!t.defined() || t.num_elements() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", what, " must be a scalar"));
  }
  if (t.dtype() == DType::kI64) return *t.data<int64_t>();
  if (t.dtype() == DType::kI32) return *t.data<int32_t>();
  return absl::InvalidArgumentError(
      absl::StrCat(op, ": ", what, " must be int32 or int64, got ", DTypeName(t.dtype())));
}

absl::StatusOr<std::vector<int64_t>> IntList(absl::string_view op, absl::string_view what,
                                             const Tensor& t) {
  if (t.rank() > 1) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", what, " must be 1-D"));
  }
  std::vector<int64_t> out(t.num_elements());
  if (t.dtype() == DType::kI64) {
    std::copy_n(t.data<int64_t>(), out.size(), out.begin());
  } else if (t.dtype() == DType::kI32) {
    std::copy_n(t.data<int32_t>(), out.size(), out.begin());
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", what, " must be int32 or int64, got ", DTypeName(t.dtype())));
  }
  return out;
}

namespace {

// ------------------------------------------------------------------------------------------
// Scalar op functors. Integer arithmetic wraps (computed in the unsigned type) so overflow is
// defined; division and modulo by zero give 0 instead of trapping.

template <typename T>
using WrapT = std::make_unsigned_t<std::common_type_t<T, unsigned>>;

template <typename T>
NIMBLE_SIMD_INLINE T WrapAdd(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    return static_cast<T>(static_cast<WrapT<T>>(a) + static_cast<WrapT<T>>(b));
  } else {
    return a + b;
  }
}

struct AddOp {
  template <typename T>
  NIMBLE_SIMD_INLINE T operator()(const T& a, const T& b) const {
    if constexpr (std::is_integral_v<T>) {
      return WrapAdd(a, b);
    } else {
      return a + b;
    }
  }
};
struct SubOp {
  template <typename T>
  NIMBLE_SIMD_INLINE T operator()(const T& a, const T& b) const {
    if constexpr (std::is_integral_v<T>) {
      return static_cast<T>(static_cast<WrapT<T>>(a) - static_cast<WrapT<T>>(b));
    } else {
      return a - b;
    }
  }
};
struct MulOp {
  template <typename T>
  NIMBLE_SIMD_INLINE T operator()(const T& a, const T& b) const {
    if constexpr (std::is_integral_v<T>) {
      return static_cast<T>(static_cast<WrapT<T>>(a) * static_cast<WrapT<T>>(b));
    } else {
      return a * b;
    }
  }
};
struct DivOp {
  template <typename T>
  NIMBLE_SIMD_INLINE T operator()(const T& a, const T& b) const {
    if constexpr (std::is_integral_v<T>) {
      if (b == 0) return 0;
      if constexpr (std::is_signed_v<T>) {
        if (b == -1) return static_cast<T>(WrapT<T>(0) - static_cast<WrapT<T>>(a));
      }
      return static_cast<T>(a / b);
    } else {
      return a / b;
    }
  }
};
// NaN-propagating max/min (numpy maximum/minimum); the mask form also works on vectors.
struct MaxOp {
  template <typename T>
  NIMBLE_SIMD_INLINE T operator()(const T& a, const T& b) const {
    if constexpr (std::is_integral_v<T>) {
      return a > b ? a : b;
    } else {
      return ((a > b) | (a != a)) ? a : b;
    }
  }
};
struct MinOp {
  template <typename T>
  NIMBLE_SIMD_INLINE T operator()(const T& a, const T& b) const {
    if constexpr (std::is_integral_v<T>) {
      return a < b ? a : b;
    } else {
      return ((a < b) | (a != a)) ? a : b;
    }
  }
};
// ONNX Mod with fmod=0: the result takes the sign of the divisor (Python %).
struct ModOp {
  template <typename T>
  T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) {
      if (b == 0) return 0;
      if constexpr (std::is_signed_v<T>) {
        if (b == -1) return 0;
        T r = static_cast<T>(a % b);
        if (r != 0 && ((r < 0) != (b < 0))) r = static_cast<T>(r + b);
        return r;
      } else {
        return static_cast<T>(a % b);
      }
    } else {
      T r = std::fmod(a, b);
      if (r != 0 && ((r < 0) != (b < 0))) r += b;
      return r;
    }
  }
};
// fmod=1: the sign of the dividend (C fmod / %).
struct FmodOp {
  template <typename T>
  T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) {
      if (b == 0) return 0;
      if constexpr (std::is_signed_v<T>) {
        if (b == -1) return 0;
      }
      return static_cast<T>(a % b);
    } else {
      return std::fmod(a, b);
    }
  }
};
struct PReluOp {
  template <typename T>
  T operator()(T x, T slope) const {
    return x < 0 ? MulOp()(x, slope) : x;
  }
};
struct ShiftLeftOp {
  template <typename T>
  T operator()(T a, T b) const {
    return b >= sizeof(T) * 8 ? T(0) : static_cast<T>(a << b);
  }
};
struct ShiftRightOp {
  template <typename T>
  T operator()(T a, T b) const {
    return b >= sizeof(T) * 8 ? T(0) : static_cast<T>(a >> b);
  }
};
struct BitAndOp {
  template <typename T>
  T operator()(T a, T b) const {
    return static_cast<T>(a & b);
  }
};
struct BitOrOp {
  template <typename T>
  T operator()(T a, T b) const {
    return static_cast<T>(a | b);
  }
};
struct BitXorOp {
  template <typename T>
  T operator()(T a, T b) const {
    return static_cast<T>(a ^ b);
  }
};
struct EqualOp {
  template <typename T>
  bool operator()(const T& a, const T& b) const {
    return a == b;
  }
};
struct GreaterOp {
  template <typename T>
  bool operator()(T a, T b) const {
    return a > b;
  }
};
struct GreaterEqualOp {
  template <typename T>
  bool operator()(T a, T b) const {
    return a >= b;
  }
};
struct LessOp {
  template <typename T>
  bool operator()(T a, T b) const {
    return a < b;
  }
};
struct LessEqualOp {
  template <typename T>
  bool operator()(T a, T b) const {
    return a <= b;
  }
};

// ------------------------------------------------------------------------------------------
// Loops.

// One broadcast segment: each operand is walked with stride 1 (sa/sb != 0) or is a scalar.
template <typename A, typename B, typename O, typename F>
inline void BinarySegment(const A* a, int64_t sa, const B* b, int64_t sb, O* out, int64_t n,
                          const F& f) {
  if (sa != 0 && sb != 0) {
    for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], b[i]);
  } else if (sa != 0) {
    const B bv = *b;
    for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], bv);
  } else if (sb != 0) {
    const A av = *a;
    for (int64_t i = 0; i < n; ++i) out[i] = f(av, b[i]);
  } else {
    const O v = f(*a, *b);
    for (int64_t i = 0; i < n; ++i) out[i] = v;
  }
}

// The f32 segment loop compiled per ISA.
template <typename F>
struct BinaryF32Body {
  template <int W>
  static NIMBLE_SIMD_INLINE void Run(const float* a, int64_t sa, const float* b, int64_t sb,
                                     float* out, int64_t n) {
    using V = typename Simd<W>::F;
    const F f;
    int64_t i = 0;
    if (sa != 0 && sb != 0) {
      for (; i + W <= n; i += W) StoreV(out + i, f(LoadV<V>(a + i), LoadV<V>(b + i)));
      for (; i < n; ++i) out[i] = f(a[i], b[i]);
    } else if (sa != 0) {
      const V bv = SplatV<V>(*b);
      for (; i + W <= n; i += W) StoreV(out + i, f(LoadV<V>(a + i), bv));
      for (; i < n; ++i) out[i] = f(a[i], *b);
    } else {
      const V av = SplatV<V>(*a);
      for (; i + W <= n; i += W) StoreV(out + i, f(av, LoadV<V>(b + i)));
      for (; i < n; ++i) out[i] = f(*a, b[i]);
    }
  }
};

template <typename A, typename B, typename O, typename F>
void RunBinary(const KernelContext& ctx, const BroadcastPlan& plan, const A* a, const B* b, O* out,
               const F& f) {
  constexpr bool kSimd =
      std::is_same_v<A, float> && std::is_same_v<B, float> && std::is_same_v<O, float> &&
      (std::is_same_v<F, AddOp> || std::is_same_v<F, SubOp> || std::is_same_v<F, MulOp> ||
       std::is_same_v<F, DivOp> || std::is_same_v<F, MaxOp> || std::is_same_v<F, MinOp>);
  ParallelFor(ctx, plan.num_elements(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
    plan.ForEachSegment(begin, end, [&](int64_t o, absl::Span<const int64_t> offs, int64_t len) {
      const int64_t sa = plan.inner_stride(0);
      const int64_t sb = plan.inner_stride(1);
      if constexpr (kSimd) {
        if (len >= 32 && (sa != 0 || sb != 0)) {
          RunSimd<BinaryF32Body<F>>(a + offs[0], sa, b + offs[1], sb, out + o, len);
          return;
        }
      }
      BinarySegment(a + offs[0], sa, b + offs[1], sb, out + o, len, f);
    });
  });
}

// f16/bf16 operands are computed in f32: convert, run, convert the result back.
absl::StatusOr<std::vector<Tensor>> ToF32(absl::Span<const Tensor> inputs, absl::string_view op) {
  std::vector<Tensor> out;
  for (const Tensor& t : inputs) {
    if (t.defined() && IsHalf(t.dtype())) {
      NIMBLE_ASSIGN_OR_RETURN(Tensor f, CastTo(t, DType::kF32, op));
      out.push_back(std::move(f));
    } else {
      out.push_back(t);
    }
  }
  return out;
}

// ------------------------------------------------------------------------------------------
// Binary kernels.

enum class BinaryKind {
  kAdd,
  kSub,
  kMul,
  kDiv,
  kMod,
  kPRelu,
  kBitShift,
  kBitwiseAnd,
  kBitwiseOr,
  kBitwiseXor,
  kAnd,
  kOr,
  kXor,
  kEqual,
  kGreater,
  kGreaterOrEqual,
  kLess,
  kLessOrEqual,
};

bool IsComparison(BinaryKind k) {
  return k == BinaryKind::kEqual || k == BinaryKind::kGreater || k == BinaryKind::kGreaterOrEqual ||
         k == BinaryKind::kLess || k == BinaryKind::kLessOrEqual;
}

absl::StatusOr<Shape> BroadcastFor(absl::string_view op, absl::Span<const Tensor> inputs) {
  std::vector<Shape> shapes;
  for (const Tensor& t : inputs) shapes.push_back(t.shape());
  auto shape = BroadcastShapes(shapes);
  if (!shape.ok()) return Annotate(shape.status(), op);
  return shape;
}

// Output shapes of an op whose single output is the broadcast of its defined inputs.
absl::Status BroadcastOutputShapes(absl::string_view op, absl::Span<const Tensor> inputs,
                                   absl::Span<Shape> output_shapes) {
  if (output_shapes.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": expected one output"));
  }
  std::vector<Tensor> defined;
  for (const Tensor& t : inputs) {
    if (t.defined()) defined.push_back(t);
  }
  if (defined.empty()) return absl::InvalidArgumentError(absl::StrCat(op, ": no inputs"));
  NIMBLE_ASSIGN_OR_RETURN(output_shapes[0], BroadcastFor(op, defined));
  return absl::OkStatus();
}

class BinaryKernel final : public Kernel {
 public:
  BinaryKernel(std::string op, BinaryKind kind, bool fmod, bool shift_left)
      : op_(std::move(op)), kind_(kind), fmod_(fmod), shift_left_(shift_left) {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op_, inputs, 2, 2, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(op_, inputs, 2));
    const DType dtype = inputs[0].dtype();
    if (inputs[1].dtype() != dtype) {
      return absl::InvalidArgumentError(absl::StrCat(op_, ": operand dtypes differ (",
                                                     DTypeName(dtype), " vs ",
                                                     DTypeName(inputs[1].dtype()), ")"));
    }
    NIMBLE_ASSIGN_OR_RETURN(Shape shape, BroadcastFor(op_, inputs));
    const DType out_dtype = IsComparison(kind_) ? DType::kBool : dtype;
    NIMBLE_RETURN_IF_ERROR(CheckOutput(op_, outputs[0], out_dtype, shape));
    NIMBLE_ASSIGN_OR_RETURN(BroadcastPlan plan,
                            BroadcastPlan::Create({inputs[0].shape(), inputs[1].shape()}, shape));
    if (IsHalf(dtype) && HalfAllowed()) {
      NIMBLE_ASSIGN_OR_RETURN(std::vector<Tensor> f, ToF32(inputs, op_));
      if (out_dtype == DType::kBool) return Dispatch(ctx, plan, f[0], f[1], outputs[0]);
      NIMBLE_ASSIGN_OR_RETURN(Tensor tmp, Tensor::Empty(DType::kF32, shape));
      NIMBLE_RETURN_IF_ERROR(Dispatch(ctx, plan, f[0], f[1], tmp));
      return CastInto(tmp, outputs[0], op_);
    }
    return Dispatch(ctx, plan, inputs[0], inputs[1], outputs[0]);
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    return BroadcastOutputShapes(op_, inputs, output_shapes);
  }

 private:
  bool HalfAllowed() const {
    switch (kind_) {
      case BinaryKind::kBitShift:
      case BinaryKind::kBitwiseAnd:
      case BinaryKind::kBitwiseOr:
      case BinaryKind::kBitwiseXor:
      case BinaryKind::kAnd:
      case BinaryKind::kOr:
      case BinaryKind::kXor:
        return false;
      default:
        return true;
    }
  }

  template <uint32_t kSet, typename F>
  absl::Status Same(const KernelContext& ctx, const BroadcastPlan& plan, const Tensor& a,
                    const Tensor& b, Tensor& out, const F& f) const {
    return VisitDType<kSet>(a.dtype(), op_, [&](auto tag) {
      using T = typename decltype(tag)::type;
      RunBinary(ctx, plan, a.data<T>(), b.data<T>(), out.data<T>(), f);
      return absl::OkStatus();
    });
  }

  template <uint32_t kSet, typename F>
  absl::Status Compare(const KernelContext& ctx, const BroadcastPlan& plan, const Tensor& a,
                       const Tensor& b, Tensor& out, const F& f) const {
    if constexpr (std::is_same_v<F, EqualOp>) {
      if (a.dtype() == DType::kString) {
        RunBinary(ctx, plan, a.data<std::string>(), b.data<std::string>(), out.data<bool>(), f);
        return absl::OkStatus();
      }
    }
    return VisitDType<kSet>(a.dtype(), op_, [&](auto tag) {
      using T = typename decltype(tag)::type;
      RunBinary(ctx, plan, a.data<T>(), b.data<T>(), out.data<bool>(), f);
      return absl::OkStatus();
    });
  }

  absl::Status Dispatch(const KernelContext& ctx, const BroadcastPlan& plan, const Tensor& a,
                        const Tensor& b, Tensor& out) const {
    switch (kind_) {
      case BinaryKind::kAdd:
        return Same<kNumeric>(ctx, plan, a, b, out, AddOp());
      case BinaryKind::kSub:
        return Same<kNumeric>(ctx, plan, a, b, out, SubOp());
      case BinaryKind::kMul:
        return Same<kNumeric>(ctx, plan, a, b, out, MulOp());
      case BinaryKind::kDiv:
        return Same<kNumeric>(ctx, plan, a, b, out, DivOp());
      case BinaryKind::kMod:
        if (fmod_) return Same<kNumeric>(ctx, plan, a, b, out, FmodOp());
        return Same<kNumeric>(ctx, plan, a, b, out, ModOp());
      case BinaryKind::kPRelu:
        return Same<kF32F64 | kSignedInts>(ctx, plan, a, b, out, PReluOp());
      case BinaryKind::kBitShift:
        if (shift_left_) return Same<kUnsignedInts>(ctx, plan, a, b, out, ShiftLeftOp());
        return Same<kUnsignedInts>(ctx, plan, a, b, out, ShiftRightOp());
      case BinaryKind::kBitwiseAnd:
        return Same<kInts>(ctx, plan, a, b, out, BitAndOp());
      case BinaryKind::kBitwiseOr:
        return Same<kInts>(ctx, plan, a, b, out, BitOrOp());
      case BinaryKind::kBitwiseXor:
        return Same<kInts>(ctx, plan, a, b, out, BitXorOp());
      case BinaryKind::kAnd:
        return Same<kBoolBit>(ctx, plan, a, b, out, BitAndOp());
      case BinaryKind::kOr:
        return Same<kBoolBit>(ctx, plan, a, b, out, BitOrOp());
      case BinaryKind::kXor:
        return Same<kBoolBit>(ctx, plan, a, b, out, BitXorOp());
      case BinaryKind::kEqual:
        return Compare<kNumeric | kBoolBit>(ctx, plan, a, b, out, EqualOp());
      case BinaryKind::kGreater:
        return Compare<kNumeric>(ctx, plan, a, b, out, GreaterOp());
      case BinaryKind::kGreaterOrEqual:
        return Compare<kNumeric>(ctx, plan, a, b, out, GreaterEqualOp());
      case BinaryKind::kLess:
        return Compare<kNumeric>(ctx, plan, a, b, out, LessOp());
      case BinaryKind::kLessOrEqual:
        return Compare<kNumeric>(ctx, plan, a, b, out, LessEqualOp());
    }
    return absl::InternalError(absl::StrCat(op_, ": unknown binary op"));
  }

  const std::string op_;
  const BinaryKind kind_;
  const bool fmod_;
  const bool shift_left_;
};

// ------------------------------------------------------------------------------------------
// Pow: base T, exponent of any numeric type; output T.

template <typename T>
T IntPow(T base, int64_t exp) {
  if (exp < 0) {
    if (base == 1) return 1;
    if constexpr (std::is_signed_v<T>) {
      if (base == -1) return (exp & 1) ? T(-1) : T(1);
    }
    return 0;  // |base| > 1: the exact result truncates to 0 (base 0: no integer infinity)
  }
  WrapT<T> result = 1;
  WrapT<T> b = static_cast<WrapT<T>>(base);
  while (exp > 0) {
    if (exp & 1) result *= b;
    b *= b;
    exp >>= 1;
  }
  return static_cast<T>(result);
}

struct FloatPowOp {
  template <typename T>
  T operator()(T a, T b) const {
    return std::pow(a, b);
  }
};

// f32 base with a scalar exponent: the common x^2, x^0.5, ... avoid powf.
void PowF32Segment(const float* a, int64_t sa, const float* b, int64_t sb, float* out, int64_t n) {
  if (sb == 0 && sa != 0) {
    const float e = *b;
    if (e == 2.0f) {
      for (int64_t i = 0; i < n; ++i) out[i] = a[i] * a[i];
    } else if (e == 1.0f) {
      for (int64_t i = 0; i < n; ++i) out[i] = a[i];
    } else if (e == 0.5f) {
      for (int64_t i = 0; i < n; ++i) out[i] = std::sqrt(a[i]);
    } else if (e == 3.0f) {
      for (int64_t i = 0; i < n; ++i) out[i] = a[i] * a[i] * a[i];
    } else {
      for (int64_t i = 0; i < n; ++i) out[i] = std::pow(a[i], e);
    }
    return;
  }
  BinarySegment(a, sa, b, sb, out, n, FloatPowOp());
}

class PowKernel final : public Kernel {
 public:
  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("Pow", inputs, 2, 2, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired("Pow", inputs, 2));
    NIMBLE_ASSIGN_OR_RETURN(Shape shape, BroadcastFor("Pow", inputs));
    const DType dtype = inputs[0].dtype();
    NIMBLE_RETURN_IF_ERROR(CheckOutput("Pow", outputs[0], dtype, shape));
    const DType edtype = inputs[1].dtype();
    if (!IsFloat(edtype) && !IsInteger(edtype)) {
      return absl::InvalidArgumentError(
          absl::StrCat("Pow: unsupported exponent dtype ", DTypeName(edtype)));
    }
    NIMBLE_ASSIGN_OR_RETURN(BroadcastPlan plan,
                            BroadcastPlan::Create({inputs[0].shape(), inputs[1].shape()}, shape));
    if (dtype == DType::kF32 || IsHalf(dtype)) {
      Tensor base = inputs[0];
      Tensor exp = inputs[1];
      if (IsHalf(dtype)) {
        NIMBLE_ASSIGN_OR_RETURN(base, CastTo(base, DType::kF32, "Pow"));
      }
      if (exp.dtype() != DType::kF32) {
        NIMBLE_ASSIGN_OR_RETURN(exp, CastTo(exp, DType::kF32, "Pow"));
      }
      Tensor out = outputs[0];
      if (IsHalf(dtype)) {
        NIMBLE_ASSIGN_OR_RETURN(out, Tensor::Empty(DType::kF32, shape));
      }
      const float* a = base.data<float>();
      const float* b = exp.data<float>();
      float* o = out.data<float>();
      ParallelFor(ctx, plan.num_elements(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
        plan.ForEachSegment(begin, end,
                            [&](int64_t off, absl::Span<const int64_t> offs, int64_t len) {
                              PowF32Segment(a + offs[0], plan.inner_stride(0), b + offs[1],
                                            plan.inner_stride(1), o + off, len);
                            });
      });
      if (IsHalf(dtype)) return CastInto(out, outputs[0], "Pow");
      return absl::OkStatus();
    }
    if (dtype == DType::kF64) {
      Tensor exp = inputs[1];
      if (exp.dtype() != DType::kF64) {
        NIMBLE_ASSIGN_OR_RETURN(exp, CastTo(exp, DType::kF64, "Pow"));
      }
      RunBinary(ctx, plan, inputs[0].data<double>(), exp.data<double>(), outputs[0].data<double>(),
                FloatPowOp());
      return absl::OkStatus();
    }
    // Integer base.
    return VisitDType<kInts>(dtype, "Pow", [&](auto tag) -> absl::Status {
      using T = typename decltype(tag)::type;
      if (IsInteger(edtype)) {
        NIMBLE_ASSIGN_OR_RETURN(Tensor exp, CastTo(inputs[1], DType::kI64, "Pow"));
        RunBinary(ctx, plan, inputs[0].data<T>(), exp.data<int64_t>(), outputs[0].data<T>(),
                  [](T a, int64_t e) { return IntPow<T>(a, e); });
        return absl::OkStatus();
      }
      NIMBLE_ASSIGN_OR_RETURN(Tensor exp, CastTo(inputs[1], DType::kF64, "Pow"));
      RunBinary(ctx, plan, inputs[0].data<T>(), exp.data<double>(), outputs[0].data<T>(),
                [](T a, double e) {
                  const double r = std::pow(static_cast<double>(a), e);
                  if (!(r == r)) return T(0);
                  if (r >= static_cast<double>(std::numeric_limits<T>::max())) {
                    return std::numeric_limits<T>::max();
                  }
                  if (r <= static_cast<double>(std::numeric_limits<T>::lowest())) {
                    return std::numeric_limits<T>::lowest();
                  }
                  return static_cast<T>(r);
                });
      return absl::OkStatus();
    });
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    return BroadcastOutputShapes("Pow", inputs, output_shapes);
  }
};

// ------------------------------------------------------------------------------------------
// Variadic Max, Min, Sum, Mean.

enum class VariadicKind { kMax, kMin, kSum, kMean };

class VariadicKernel final : public Kernel {
 public:
  VariadicKernel(std::string op, VariadicKind kind) : op_(std::move(op)), kind_(kind) {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op_, inputs, 1, 1 << 20, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(op_, inputs, inputs.size()));
    const DType dtype = inputs[0].dtype();
    for (const Tensor& t : inputs) {
      if (t.dtype() != dtype) {
        return absl::InvalidArgumentError(absl::StrCat(
            op_, ": operand dtypes differ (", DTypeName(dtype), " vs ", DTypeName(t.dtype()), ")"));
      }
    }
    NIMBLE_ASSIGN_OR_RETURN(Shape shape, BroadcastFor(op_, inputs));
    NIMBLE_RETURN_IF_ERROR(CheckOutput(op_, outputs[0], dtype, shape));
    if (IsHalf(dtype)) {
      NIMBLE_ASSIGN_OR_RETURN(std::vector<Tensor> f, ToF32(inputs, op_));
      NIMBLE_ASSIGN_OR_RETURN(Tensor tmp, Tensor::Empty(DType::kF32, shape));
      NIMBLE_RETURN_IF_ERROR(Compute(ctx, f, tmp, shape));
      return CastInto(tmp, outputs[0], op_);
    }
    return Compute(ctx, inputs, outputs[0], shape);
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    return BroadcastOutputShapes(op_, inputs, output_shapes);
  }

 private:
  absl::Status Compute(const KernelContext& ctx, absl::Span<const Tensor> inputs, Tensor& out,
                       const Shape& shape) const {
    constexpr uint32_t kSet = kNumeric;
    if (kind_ == VariadicKind::kMean && !IsFloat(out.dtype())) {
      return absl::InvalidArgumentError(
          absl::StrCat(op_, ": unsupported dtype ", DTypeName(out.dtype())));
    }
    return VisitDType<kSet>(out.dtype(), op_, [&](auto tag) -> absl::Status {
      using T = typename decltype(tag)::type;
      T* o = out.data<T>();
      // out = in0 (broadcast) op in1, then out = out op in_k.
      if (inputs.size() == 1) {
        NIMBLE_ASSIGN_OR_RETURN(BroadcastPlan plan,
                                BroadcastPlan::Create({inputs[0].shape(), shape}, shape));
        RunBinary(ctx, plan, inputs[0].data<T>(), o, o, [](T a, T) { return a; });
      } else {
        NIMBLE_ASSIGN_OR_RETURN(
            BroadcastPlan plan,
            BroadcastPlan::Create({inputs[0].shape(), inputs[1].shape()}, shape));
        Apply<T>(ctx, plan, inputs[0].data<T>(), inputs[1].data<T>(), o);
        for (size_t k = 2; k < inputs.size(); ++k) {
          NIMBLE_ASSIGN_OR_RETURN(BroadcastPlan p,
                                  BroadcastPlan::Create({shape, inputs[k].shape()}, shape));
          Apply<T>(ctx, p, o, inputs[k].data<T>(), o);
        }
      }
      if constexpr (std::is_floating_point_v<T>) {
        if (kind_ == VariadicKind::kMean) {
          const T scale = T(1) / static_cast<T>(inputs.size());
          ParallelFor(ctx, out.num_elements(), kElementwiseGrain, [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) o[i] *= scale;
          });
        }
      }
      return absl::OkStatus();
    });
  }

  template <typename T>
  void Apply(const KernelContext& ctx, const BroadcastPlan& plan, const T* a, const T* b,
             T* out) const {
    switch (kind_) {
      case VariadicKind::kMax:
        return RunBinary(ctx, plan, a, b, out, MaxOp());
      case VariadicKind::kMin:
        return RunBinary(ctx, plan, a, b, out, MinOp());
      case VariadicKind::kSum:
      case VariadicKind::kMean:
        return RunBinary(ctx, plan, a, b, out, AddOp());
    }
  }

  const std::string op_;
  const VariadicKind kind_;
};

// ------------------------------------------------------------------------------------------
// Where(condition, X, Y): dtype-agnostic, moves elements by size.

// One Where segment with compile-time strides (0: broadcast scalar, 1: contiguous).
template <int kSC, int kSX, int kSY, typename T>
inline void WhereSegment(const bool* c, const T* x, const T* y, T* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = c[i * kSC] ? x[i * kSX] : y[i * kSY];
}

template <typename T>
void WhereLoop(const KernelContext& ctx, const BroadcastPlan& plan, const bool* c, const T* x,
               const T* y, T* out) {
  const int code = (plan.inner_stride(0) != 0 ? 4 : 0) | (plan.inner_stride(1) != 0 ? 2 : 0) |
                   (plan.inner_stride(2) != 0 ? 1 : 0);
  ParallelFor(ctx, plan.num_elements(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
    plan.ForEachSegment(begin, end, [&](int64_t o, absl::Span<const int64_t> offs, int64_t n) {
      const bool* cp = c + offs[0];
      const T* xp = x + offs[1];
      const T* yp = y + offs[2];
      T* op = out + o;
      switch (code) {
        case 7:
          return WhereSegment<1, 1, 1>(cp, xp, yp, op, n);
        case 6:
          return WhereSegment<1, 1, 0>(cp, xp, yp, op, n);
        case 5:
          return WhereSegment<1, 0, 1>(cp, xp, yp, op, n);
        case 4:
          return WhereSegment<1, 0, 0>(cp, xp, yp, op, n);
        case 3:
          return WhereSegment<0, 1, 1>(cp, xp, yp, op, n);
        case 2:
          return WhereSegment<0, 1, 0>(cp, xp, yp, op, n);
        case 1:
          return WhereSegment<0, 0, 1>(cp, xp, yp, op, n);
        default:
          return WhereSegment<0, 0, 0>(cp, xp, yp, op, n);
      }
    });
  });
}

class WhereKernel final : public Kernel {
 public:
  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("Where", inputs, 3, 3, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired("Where", inputs, 3));
    if (inputs[0].dtype() != DType::kBool) {
      return absl::InvalidArgumentError(
          absl::StrCat("Where: condition must be bool, got ", DTypeName(inputs[0].dtype())));
    }
    const DType dtype = inputs[1].dtype();
    if (inputs[2].dtype() != dtype) {
      return absl::InvalidArgumentError(absl::StrCat("Where: X and Y dtypes differ (",
                                                     DTypeName(dtype), " vs ",
                                                     DTypeName(inputs[2].dtype()), ")"));
    }
    NIMBLE_ASSIGN_OR_RETURN(Shape shape, BroadcastFor("Where", inputs));
    NIMBLE_RETURN_IF_ERROR(CheckOutput("Where", outputs[0], dtype, shape));
    NIMBLE_ASSIGN_OR_RETURN(
        BroadcastPlan plan,
        BroadcastPlan::Create({inputs[0].shape(), inputs[1].shape(), inputs[2].shape()}, shape));
    const bool* c = inputs[0].data<bool>();
    if (dtype == DType::kString) {
      WhereLoop(ctx, plan, c, inputs[1].data<std::string>(), inputs[2].data<std::string>(),
                outputs[0].data<std::string>());
      return absl::OkStatus();
    }
    switch (DTypeSize(dtype)) {
      case 1:
        WhereLoop(ctx, plan, c, inputs[1].data<uint8_t>(), inputs[2].data<uint8_t>(),
                  outputs[0].data<uint8_t>());
        return absl::OkStatus();
      case 2:
        WhereLoop(ctx, plan, c, inputs[1].data<uint16_t>(), inputs[2].data<uint16_t>(),
                  outputs[0].data<uint16_t>());
        return absl::OkStatus();
      case 4:
        WhereLoop(ctx, plan, c, inputs[1].data<uint32_t>(), inputs[2].data<uint32_t>(),
                  outputs[0].data<uint32_t>());
        return absl::OkStatus();
      case 8:
        WhereLoop(ctx, plan, c, inputs[1].data<uint64_t>(), inputs[2].data<uint64_t>(),
                  outputs[0].data<uint64_t>());
        return absl::OkStatus();
      default:
        break;
    }
    return absl::InvalidArgumentError(absl::StrCat("Where: unsupported dtype ", DTypeName(dtype)));
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    return BroadcastOutputShapes("Where", inputs, output_shapes);
  }
};

// ------------------------------------------------------------------------------------------
// Clip(input, min?, max?); opset < 11 passes min/max as float attributes.

class ClipKernel final : public Kernel {
 public:
  ClipKernel(bool has_min, double min, bool has_max, double max)
      : has_min_(has_min), min_(min), has_max_(has_max), max_(max) {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("Clip", inputs, 1, 3, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired("Clip", inputs, 1));
    const Tensor& x = inputs[0];
    NIMBLE_RETURN_IF_ERROR(CheckOutput("Clip", outputs[0], x.dtype(), x.shape()));
    for (size_t i = 1; i < inputs.size(); ++i) {
      if (!inputs[i].defined()) continue;
      if (inputs[i].num_elements() != 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            "Clip: ", i == 1 ? "min" : "max", " must be a scalar, got ", inputs[i].TypeString()));
      }
      if (inputs[i].dtype() != x.dtype()) {
        return absl::InvalidArgumentError(
            absl::StrCat("Clip: ", i == 1 ? "min" : "max", " dtype ", DTypeName(inputs[i].dtype()),
                         " differs from input ", DTypeName(x.dtype())));
      }
    }
    if (IsHalf(x.dtype())) {
      NIMBLE_ASSIGN_OR_RETURN(std::vector<Tensor> f, ToF32(inputs, "Clip"));
      NIMBLE_ASSIGN_OR_RETURN(Tensor tmp, Tensor::Empty(DType::kF32, x.shape()));
      NIMBLE_RETURN_IF_ERROR(Compute(ctx, f, tmp));
      return CastInto(tmp, outputs[0], "Clip");
    }
    return Compute(ctx, inputs, outputs[0]);
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.empty() || !inputs[0].defined() || output_shapes.size() != 1) {
      return absl::InvalidArgumentError("Clip: expected an input and one output");
    }
    output_shapes[0] = inputs[0].shape();
    return absl::OkStatus();
  }

 private:
  absl::Status Compute(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                       Tensor& out) const {
    return VisitDType<kNumeric>(out.dtype(), "Clip", [&](auto tag) {
      using T = typename decltype(tag)::type;
      T lo = std::numeric_limits<T>::lowest();
      T hi = std::numeric_limits<T>::max();
      if constexpr (std::is_floating_point_v<T>) {
        lo = -std::numeric_limits<T>::infinity();
        hi = std::numeric_limits<T>::infinity();
        if (has_min_) lo = static_cast<T>(min_);
        if (has_max_) hi = static_cast<T>(max_);
      }
      if (inputs.size() > 1 && inputs[1].defined()) lo = *inputs[1].data<T>();
      if (inputs.size() > 2 && inputs[2].defined()) hi = *inputs[2].data<T>();
      const T* x = inputs[0].data<T>();
      T* y = out.data<T>();
      ParallelFor(ctx, out.num_elements(), kElementwiseGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          T v = x[i] < lo ? lo : x[i];  // NaN stays NaN
          y[i] = v > hi ? hi : v;
        }
      });
      return absl::OkStatus();
    });
  }

  const bool has_min_;
  const double min_;
  const bool has_max_;
  const double max_;
};

using Factory = absl::StatusOr<std::unique_ptr<Kernel>>;

void RegisterBinary(KernelRegistry& registry, const std::string& op, BinaryKind kind) {
  registry.Register(op, DeviceType::kCPU, [op, kind](const Attributes& attrs) -> Factory {
    bool fmod = false;
    bool shift_left = false;
    if (kind == BinaryKind::kMod) {
      const int64_t f = attrs.GetOr<int64_t>("fmod", 0);
      if (f != 0 && f != 1) {
        return absl::InvalidArgumentError(absl::StrCat("Mod: fmod must be 0 or 1, got ", f));
      }
      fmod = f == 1;
    }
    if (kind == BinaryKind::kBitShift) {
      NIMBLE_ASSIGN_OR_RETURN(std::string direction, attrs.Get<std::string>("direction"));
      if (direction != "LEFT" && direction != "RIGHT") {
        return absl::InvalidArgumentError(
            absl::StrCat("BitShift: direction must be LEFT or RIGHT, got '", direction, "'"));
      }
      shift_left = direction == "LEFT";
    }
    return std::make_unique<BinaryKernel>(op, kind, fmod, shift_left);
  });
}

}  // namespace

// ------------------------------------------------------------------------------------------

void RegisterElementwiseKernels(KernelRegistry& registry) {
  const std::pair<const char*, BinaryKind> binaries[] = {
      {"Add", BinaryKind::kAdd},
      {"Sub", BinaryKind::kSub},
      {"Mul", BinaryKind::kMul},
      {"Div", BinaryKind::kDiv},
      {"Mod", BinaryKind::kMod},
      {"PRelu", BinaryKind::kPRelu},
      {"BitShift", BinaryKind::kBitShift},
      {"BitwiseAnd", BinaryKind::kBitwiseAnd},
      {"BitwiseOr", BinaryKind::kBitwiseOr},
      {"BitwiseXor", BinaryKind::kBitwiseXor},
      {"And", BinaryKind::kAnd},
      {"Or", BinaryKind::kOr},
      {"Xor", BinaryKind::kXor},
      {"Equal", BinaryKind::kEqual},
      {"Greater", BinaryKind::kGreater},
      {"GreaterOrEqual", BinaryKind::kGreaterOrEqual},
      {"Less", BinaryKind::kLess},
      {"LessOrEqual", BinaryKind::kLessOrEqual},
  };
  for (const auto& [name, kind] : binaries) RegisterBinary(registry, name, kind);

  registry.Register("Pow", DeviceType::kCPU,
                    [](const Attributes&) -> Factory { return std::make_unique<PowKernel>(); });
  const std::pair<const char*, VariadicKind> variadics[] = {
      {"Max", VariadicKind::kMax},
      {"Min", VariadicKind::kMin},
      {"Sum", VariadicKind::kSum},
      {"Mean", VariadicKind::kMean},
  };
  for (const auto& [name, kind] : variadics) {
    const std::string op = name;
    registry.Register(op, DeviceType::kCPU, [op, kind = kind](const Attributes&) -> Factory {
      return std::make_unique<VariadicKernel>(op, kind);
    });
  }
  registry.Register("Where", DeviceType::kCPU,
                    [](const Attributes&) -> Factory { return std::make_unique<WhereKernel>(); });
  registry.Register("Clip", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    return std::make_unique<ClipKernel>(attrs.Has("min"), attrs.GetOr<double>("min", 0.0),
                                        attrs.Has("max"), attrs.GetOr<double>("max", 0.0));
  });

  RegisterUnaryKernels(registry);
  RegisterCastKernels(registry);
  RegisterFusedElementwiseKernel(registry);
}

}  // namespace nimble::vm::cpu
