// FusedElementwise: a register program over f32 slots that the compiler emits for chains of
// elementwise ops (encoding in elementwise_internal.h), plus the SIMD f32 array kernels
// (ApplyFloatUnary) the unary and normalization kernels share.
//
// Execution: the output is walked in broadcast segments (BroadcastPlan) cut into blocks of at
// most kFusedBlock elements. Per block, every slot is either a scalar (constants, broadcast
// inputs) or a pointer to kFusedBlock floats: loads alias the input memory (no copy), compute
// instructions write their slot's own buffer, so a program touches each input and output once
// and keeps intermediates in L1. The whole block interpreter is compiled per ISA (RunSimd), so
// every instruction is a vector loop at the CPU's width. Blocks are spread over TBB.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vm/kernels/cpu/broadcast.h"
#include "vm/kernels/cpu/elementwise_internal.h"

namespace nimble::vm::cpu {
namespace {

// ------------------------------------------------------------------------------------------
// ApplyFloatUnary.

template <FloatUnary kOp, typename V>
NIMBLE_SIMD_INLINE V ApplyUnaryV(const V& v) {
  if constexpr (kOp == FloatUnary::kExp) return ExpV(v);
  if constexpr (kOp == FloatUnary::kTanh) return TanhV(v);
  if constexpr (kOp == FloatUnary::kErf) return ErfV(v);
  if constexpr (kOp == FloatUnary::kSigmoid) return SigmoidV(v);
  if constexpr (kOp == FloatUnary::kGelu) return GeluV(v);
  if constexpr (kOp == FloatUnary::kGeluTanh) return GeluTanhV(v);
}

template <typename V>
NIMBLE_SIMD_INLINE V LoadPartial(const float* p, int64_t n) {
  float buf[sizeof(V) / sizeof(float)] = {};
  std::memcpy(buf, p, n * sizeof(float));
  return LoadV<V>(buf);
}

template <typename V>
NIMBLE_SIMD_INLINE void StorePartial(float* p, const V& v, int64_t n) {
  float buf[sizeof(V) / sizeof(float)];
  StoreV(buf, v);
  std::memcpy(p, buf, n * sizeof(float));
}

template <FloatUnary kOp>
struct UnaryArrayBody {
  template <int W>
  static NIMBLE_SIMD_INLINE void Run(const float* x, float* y, int64_t n) {
    using V = typename Simd<W>::F;
    int64_t i = 0;
    for (; i + 2 * W <= n; i += 2 * W) {
      const V a = ApplyUnaryV<kOp>(LoadV<V>(x + i));
      const V b = ApplyUnaryV<kOp>(LoadV<V>(x + i + W));
      StoreV(y + i, a);
      StoreV(y + i + W, b);
    }
    for (; i + W <= n; i += W) StoreV(y + i, ApplyUnaryV<kOp>(LoadV<V>(x + i)));
    if (i < n) StorePartial(y + i, ApplyUnaryV<kOp>(LoadPartial<V>(x + i, n - i)), n - i);
  }
};

// ------------------------------------------------------------------------------------------
// FusedElementwise.

struct Instr {
  int64_t op, dst, a, b;
};

struct FusedProgram {
  std::vector<Instr> code;
  std::vector<float> constants;
  int num_inputs = 0;   // inputs referenced (max index + 1)
  int num_outputs = 0;  // outputs stored (max index + 1)
};

// A slot during one block: a scalar or a pointer to n floats.
struct Slot {
  const float* ptr;
  float value;
  bool scalar;
};

#define NIMBLE_FUSED_BINARY(Name, expr)                             \
  struct Name {                                                     \
    template <typename V>                                           \
    NIMBLE_SIMD_INLINE V operator()(const V& a, const V& b) const { \
      return expr;                                                  \
    }                                                               \
  };
NIMBLE_FUSED_BINARY(FAdd, a + b)
NIMBLE_FUSED_BINARY(FSub, a - b)
NIMBLE_FUSED_BINARY(FMul, a* b)
NIMBLE_FUSED_BINARY(FDiv, a / b)
NIMBLE_FUSED_BINARY(FMax, ((a > b) | (a != a)) ? a : b)
NIMBLE_FUSED_BINARY(FMin, ((a < b) | (a != a)) ? a : b)
#undef NIMBLE_FUSED_BINARY

struct FPow {
  template <typename V>
  NIMBLE_SIMD_INLINE V operator()(const V& a, const V& b) const {
    V r{};
    for (size_t k = 0; k < sizeof(V) / sizeof(float); ++k) r[k] = std::pow(a[k], b[k]);
    return r;
  }
};

#define NIMBLE_FUSED_UNARY(Name, expr)                  \
  struct Name {                                         \
    template <typename V>                               \
    NIMBLE_SIMD_INLINE V operator()(const V& a) const { \
      return expr;                                      \
    }                                                   \
  };
NIMBLE_FUSED_UNARY(FNeg, -a)
NIMBLE_FUSED_UNARY(FExp, ExpV(a))
NIMBLE_FUSED_UNARY(FTanh, TanhV(a))
NIMBLE_FUSED_UNARY(FErf, ErfV(a))
NIMBLE_FUSED_UNARY(FSigmoid, SigmoidV(a))
NIMBLE_FUSED_UNARY(FRelu, a < 0.0f ? SplatV<V>(0.0f) : a)
NIMBLE_FUSED_UNARY(FGelu, GeluV(a))
NIMBLE_FUSED_UNARY(FGeluTanh, GeluTanhV(a))
NIMBLE_FUSED_UNARY(FAbs, AbsV(a))
NIMBLE_FUSED_UNARY(FReciprocal, 1.0f / a)
#undef NIMBLE_FUSED_UNARY

struct FLog {
  template <typename V>
  NIMBLE_SIMD_INLINE V operator()(const V& a) const {
    V r{};
    for (size_t k = 0; k < sizeof(V) / sizeof(float); ++k) r[k] = std::log(a[k]);
    return r;
  }
};
struct FSqrt {
  template <typename V>
  NIMBLE_SIMD_INLINE V operator()(const V& a) const {
    V r{};
    for (size_t k = 0; k < sizeof(V) / sizeof(float); ++k) r[k] = __builtin_sqrtf(a[k]);
    return r;
  }
};
struct FRsqrt {
  template <typename V>
  NIMBLE_SIMD_INLINE V operator()(const V& a) const {
    return 1.0f / FSqrt()(a);
  }
};

template <typename V, typename F>
NIMBLE_SIMD_INLINE void BinaryBlock(Slot& d, const Slot& a, const Slot& b, float* buf, int64_t n,
                                    const F& f) {
  constexpr int W = sizeof(V) / sizeof(float);
  if (a.scalar && b.scalar) {
    d.value = f(SplatV<V>(a.value), SplatV<V>(b.value))[0];
    d.scalar = true;
    return;
  }
  int64_t i = 0;
  const float* pa = a.ptr;
  const float* pb = b.ptr;
  if (!a.scalar && !b.scalar) {
    for (; i + W <= n; i += W) StoreV(buf + i, f(LoadV<V>(pa + i), LoadV<V>(pb + i)));
  } else if (a.scalar) {
    const V va = SplatV<V>(a.value);
    for (; i + W <= n; i += W) StoreV(buf + i, f(va, LoadV<V>(pb + i)));
  } else {
    const V vb = SplatV<V>(b.value);
    for (; i + W <= n; i += W) StoreV(buf + i, f(LoadV<V>(pa + i), vb));
  }
  if (i < n) {
    const V va = a.scalar ? SplatV<V>(a.value) : LoadPartial<V>(pa + i, n - i);
    const V vb = b.scalar ? SplatV<V>(b.value) : LoadPartial<V>(pb + i, n - i);
    StorePartial(buf + i, f(va, vb), n - i);
  }
  d.ptr = buf;
  d.scalar = false;
}

template <typename V, typename F>
NIMBLE_SIMD_INLINE void UnaryBlock(Slot& d, const Slot& a, float* buf, int64_t n, const F& f) {
  constexpr int W = sizeof(V) / sizeof(float);
  if (a.scalar) {
    d.value = f(SplatV<V>(a.value))[0];
    d.scalar = true;
    return;
  }
  const float* pa = a.ptr;
  int64_t i = 0;
  for (; i + W <= n; i += W) StoreV(buf + i, f(LoadV<V>(pa + i)));
  if (i < n) StorePartial(buf + i, f(LoadPartial<V>(pa + i, n - i)), n - i);
  d.ptr = buf;
  d.scalar = false;
}

struct FusedBlockBody {
  // Evaluates `prog` over one block of n <= kFusedBlock elements. in[i]/in_stride[i]: input i at
  // the block start, walked with stride 1 or 0 (scalar); out[j]: output j at the block start.
  template <int W>
  static NIMBLE_SIMD_INLINE void Run(const FusedProgram* prog, const float* const* in,
                                     const int64_t* in_stride, float* const* out, int64_t n) {
    using V = typename Simd<W>::F;
    alignas(64) float buffers[kFusedMaxSlots][kFusedBlock];
    Slot slots[kFusedMaxSlots];
    for (const Instr& ins : prog->code) {
      Slot& d = slots[ins.dst < kFusedMaxSlots ? ins.dst : 0];
      float* buf = buffers[ins.dst < kFusedMaxSlots ? ins.dst : 0];
      switch (ins.op) {
        case kFusedLoad:
          if (in_stride[ins.a] == 0) {
            d.value = in[ins.a][0];
            d.scalar = true;
          } else {
            d.ptr = in[ins.a];
            d.scalar = false;
          }
          break;
        case kFusedConst:
          d.value = prog->constants[ins.a];
          d.scalar = true;
          break;
        case kFusedStore: {
          const Slot& s = slots[ins.a];
          float* o = out[ins.dst];
          if (s.scalar) {
            for (int64_t i = 0; i < n; ++i) o[i] = s.value;
          } else {
            std::memcpy(o, s.ptr, n * sizeof(float));
          }
          break;
        }
        case kFusedAdd:
          BinaryBlock<V>(d, slots[ins.a], slots[ins.b], buf, n, FAdd());
          break;
        case kFusedSub:
          BinaryBlock<V>(d, slots[ins.a], slots[ins.b], buf, n, FSub());
          break;
        case kFusedMul:
          BinaryBlock<V>(d, slots[ins.a], slots[ins.b], buf, n, FMul());
          break;
        case kFusedDiv:
          BinaryBlock<V>(d, slots[ins.a], slots[ins.b], buf, n, FDiv());
          break;
        case kFusedMax:
          BinaryBlock<V>(d, slots[ins.a], slots[ins.b], buf, n, FMax());
          break;
        case kFusedMin:
          BinaryBlock<V>(d, slots[ins.a], slots[ins.b], buf, n, FMin());
          break;
        case kFusedPow:
          BinaryBlock<V>(d, slots[ins.a], slots[ins.b], buf, n, FPow());
          break;
        case kFusedNeg:
          UnaryBlock<V>(d, slots[ins.a], buf, n, FNeg());
          break;
        case kFusedExp:
          UnaryBlock<V>(d, slots[ins.a], buf, n, FExp());
          break;
        case kFusedLog:
          UnaryBlock<V>(d, slots[ins.a], buf, n, FLog());
          break;
        case kFusedSqrt:
          UnaryBlock<V>(d, slots[ins.a], buf, n, FSqrt());
          break;
        case kFusedRsqrt:
          UnaryBlock<V>(d, slots[ins.a], buf, n, FRsqrt());
          break;
        case kFusedTanh:
          UnaryBlock<V>(d, slots[ins.a], buf, n, FTanh());
          break;
        case kFusedErf:
          UnaryBlock<V>(d, slots[ins.a], buf, n, FErf());
          break;
        case kFusedSigmoid:
          UnaryBlock<V>(d, slots[ins.a], buf, n, FSigmoid());
          break;
        case kFusedRelu:
          UnaryBlock<V>(d, slots[ins.a], buf, n, FRelu());
          break;
        case kFusedGelu:
          UnaryBlock<V>(d, slots[ins.a], buf, n, FGelu());
          break;
        case kFusedGeluTanh:
          UnaryBlock<V>(d, slots[ins.a], buf, n, FGeluTanh());
          break;
        case kFusedAbs:
          UnaryBlock<V>(d, slots[ins.a], buf, n, FAbs());
          break;
        case kFusedReciprocal:
          UnaryBlock<V>(d, slots[ins.a], buf, n, FReciprocal());
          break;
        default:
          break;  // rejected when the program was built
      }
    }
  }
};

bool IsBinaryOpcode(int64_t op) { return op >= kFusedAdd && op <= kFusedPow; }
bool IsUnaryOpcode(int64_t op) { return op >= kFusedNeg && op <= kFusedReciprocal; }

absl::StatusOr<FusedProgram> BuildProgram(const Attributes& attrs) {
  NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> words, attrs.Get<std::vector<int64_t>>("program"));
  const std::vector<double> constants = attrs.GetOr<std::vector<double>>("constants", {});
  if (words.empty() || words.size() % 4 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "program must be a non-empty list of 4-word instructions, got ", words.size(), " words"));
  }
  FusedProgram prog;
  for (double c : constants) prog.constants.push_back(static_cast<float>(c));
  bool written[kFusedMaxSlots] = {};
  std::vector<bool> stored;
  auto slot_ok = [](int64_t s) { return s >= 0 && s < kFusedMaxSlots; };
  for (size_t pc = 0; pc < words.size() / 4; ++pc) {
    const Instr ins{words[4 * pc], words[4 * pc + 1], words[4 * pc + 2], words[4 * pc + 3]};
    auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat(
          "instruction ", pc, " [", ins.op, ", ", ins.dst, ", ", ins.a, ", ", ins.b, "]: ", what));
    };
    const bool binary = IsBinaryOpcode(ins.op);
    const bool unary = IsUnaryOpcode(ins.op);
    if (ins.op == kFusedLoad) {
      if (!slot_ok(ins.dst)) return bad("bad destination slot");
      if (ins.a < 0 || ins.a >= 1024) return bad("bad input index");
      prog.num_inputs = std::max(prog.num_inputs, static_cast<int>(ins.a) + 1);
      written[ins.dst] = true;
    } else if (ins.op == kFusedConst) {
      if (!slot_ok(ins.dst)) return bad("bad destination slot");
      if (ins.a < 0 || ins.a >= static_cast<int64_t>(constants.size())) {
        return bad("constant index out of range");
      }
      written[ins.dst] = true;
    } else if (ins.op == kFusedStore) {
      if (ins.dst < 0 || ins.dst >= 1024) return bad("bad output index");
      if (!slot_ok(ins.a) || !written[ins.a]) return bad("stores an unwritten slot");
      if (stored.size() <= static_cast<size_t>(ins.dst)) stored.resize(ins.dst + 1, false);
      stored[ins.dst] = true;
    } else if (binary || unary) {
      if (!slot_ok(ins.dst)) return bad("bad destination slot");
      if (!slot_ok(ins.a) || !written[ins.a]) return bad("reads an unwritten slot");
      if (binary && (!slot_ok(ins.b) || !written[ins.b])) return bad("reads an unwritten slot");
      written[ins.dst] = true;
    } else {
      return bad("unknown opcode");
    }
    prog.code.push_back(ins);
  }
  if (stored.empty()) return absl::InvalidArgumentError("program stores no output");
  for (size_t i = 0; i < stored.size(); ++i) {
    if (!stored[i])
      return absl::InvalidArgumentError(absl::StrCat("output ", i, " is never stored"));
  }
  prog.num_outputs = static_cast<int>(stored.size());
  return prog;
}

class FusedElementwiseKernel final : public Kernel {
 public:
  explicit FusedElementwiseKernel(FusedProgram prog) : prog_(std::move(prog)) {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    constexpr absl::string_view kOp = "FusedElementwise";
    NIMBLE_RETURN_IF_ERROR(
        CheckArity(kOp, inputs, prog_.num_inputs, 1 << 20, outputs, prog_.num_outputs));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(kOp, inputs, inputs.size()));
    std::vector<Shape> shapes;
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (inputs[i].dtype() != DType::kF32) {
        return absl::InvalidArgumentError(
            absl::StrCat(kOp, ": input ", i, " is ", inputs[i].TypeString(), ", expected f32"));
      }
      shapes.push_back(inputs[i].shape());
    }
    auto shape_or = BroadcastShapes(shapes);
    if (!shape_or.ok()) return Annotate(shape_or.status(), kOp);
    const Shape& shape = *shape_or;
    for (int j = 0; j < prog_.num_outputs; ++j) {
      NIMBLE_RETURN_IF_ERROR(CheckOutput(kOp, outputs[j], DType::kF32, shape, j));
    }
    NIMBLE_ASSIGN_OR_RETURN(BroadcastPlan plan, BroadcastPlan::Create(shapes, shape));
    const int ni = static_cast<int>(inputs.size());
    // Loads alias input memory and stores happen mid-program, so an output that reuses an
    // input's buffer (in-place execution) would feed later loads their own results: such
    // inputs are read from a copy.
    std::vector<Tensor> copies;
    std::vector<const float*> in_base(ni);
    for (int i = 0; i < ni; ++i) {
      in_base[i] = inputs[i].data<float>();
      const char* lo = static_cast<const char*>(inputs[i].raw_data());
      const char* hi = lo + inputs[i].nbytes();
      for (int j = 0; j < prog_.num_outputs; ++j) {
        const char* olo = static_cast<const char*>(outputs[j].raw_data());
        const char* ohi = olo + outputs[j].nbytes();
        if (lo < ohi && olo < hi) {
          NIMBLE_ASSIGN_OR_RETURN(Tensor copy, CastTo(inputs[i], DType::kF32, kOp));
          in_base[i] = copy.data<float>();
          copies.push_back(std::move(copy));
          break;
        }
      }
    }
    std::vector<float*> out_base(prog_.num_outputs);
    for (int j = 0; j < prog_.num_outputs; ++j) out_base[j] = outputs[j].data<float>();
    std::vector<int64_t> strides(ni);
    for (int i = 0; i < ni; ++i) strides[i] = plan.inner_stride(i);

    ParallelFor(ctx, plan.num_elements(), 8192, [&](int64_t begin, int64_t end) {
      std::vector<const float*> in(ni);
      std::vector<float*> out(out_base.size());
      plan.ForEachSegment(begin, end, [&](int64_t o, absl::Span<const int64_t> offs, int64_t len) {
        for (int64_t c = 0; c < len; c += kFusedBlock) {
          const int64_t m = std::min(kFusedBlock, len - c);
          for (int i = 0; i < ni; ++i) in[i] = in_base[i] + offs[i] + c * strides[i];
          for (size_t j = 0; j < out.size(); ++j) out[j] = out_base[j] + o + c;
          RunSimd<FusedBlockBody>(&prog_, static_cast<const float* const*>(in.data()),
                                  static_cast<const int64_t*>(strides.data()),
                                  static_cast<float* const*>(out.data()), m);
        }
      });
    });
    return absl::OkStatus();
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    std::vector<Shape> shapes;
    for (const Tensor& t : inputs) {
      if (!t.defined()) return absl::InvalidArgumentError("FusedElementwise: missing input");
      shapes.push_back(t.shape());
    }
    auto shape = BroadcastShapes(shapes);
    if (!shape.ok()) return Annotate(shape.status(), "FusedElementwise");
    for (Shape& s : output_shapes) s = *shape;
    return absl::OkStatus();
  }

 private:
  const FusedProgram prog_;
};

}  // namespace

void ApplyFloatUnary(FloatUnary op, const float* x, float* y, int64_t n) {
  switch (op) {
    case FloatUnary::kExp:
      return RunSimd<UnaryArrayBody<FloatUnary::kExp>>(x, y, n);
    case FloatUnary::kTanh:
      return RunSimd<UnaryArrayBody<FloatUnary::kTanh>>(x, y, n);
    case FloatUnary::kErf:
      return RunSimd<UnaryArrayBody<FloatUnary::kErf>>(x, y, n);
    case FloatUnary::kSigmoid:
      return RunSimd<UnaryArrayBody<FloatUnary::kSigmoid>>(x, y, n);
    case FloatUnary::kGelu:
      return RunSimd<UnaryArrayBody<FloatUnary::kGelu>>(x, y, n);
    case FloatUnary::kGeluTanh:
      return RunSimd<UnaryArrayBody<FloatUnary::kGeluTanh>>(x, y, n);
  }
}

void RegisterFusedElementwiseKernel(KernelRegistry& registry) {
  registry.Register("FusedElementwise", DeviceType::kCPU,
                    [](const Attributes& attrs) -> absl::StatusOr<std::unique_ptr<Kernel>> {
                      NIMBLE_ASSIGN_OR_RETURN(FusedProgram prog, BuildProgram(attrs));
                      return std::make_unique<FusedElementwiseKernel>(std::move(prog));
                    });
}

}  // namespace nimble::vm::cpu
