// Miscellaneous ops: RotaryEmbedding, LpPool, Shrink, LRN, QuantizeLinear, DequantizeLinear,
// MaxUnpool.
//
// They compute in f32 (f16/bf16 through f32; Shrink and LRN also f64 through double) on the
// calling thread: small, memory-bound ops that real models rarely make hot.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <limits>
#include <locale>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vm/kernels/cpu/broadcast.h"
#include "vm/kernels/cpu/cpu_kernels.h"
#include "vm/kernels/cpu/elementwise_internal.h"
#include "vm/kernels/cpu/fp16.h"
#include "vm/kernels/cpu/onednn_util.h"

namespace nimble::vm::cpu {
namespace {

using Factory = absl::StatusOr<std::unique_ptr<Kernel>>;

// The tensor as f32 (a cast copy for f16/bf16, the tensor itself for f32).
absl::StatusOr<Tensor> AsF32(absl::string_view op, absl::string_view what, const Tensor& t) {
  if (t.dtype() == DType::kF32) return t;
  if (IsHalf(t.dtype())) return CastTo(t, DType::kF32, op);
  return absl::InvalidArgumentError(
      absl::StrCat(op, ": ", what, " must be f32, f16 or bf16, got ", DTypeName(t.dtype())));
}

// Runs `fill` on an f32 view of `out` (a scratch tensor cast back for f16/bf16).
template <typename Fn>
absl::Status WithF32Output(absl::string_view op, Tensor& out, Fn&& fill) {
  if (out.dtype() == DType::kF32) return fill(out.data<float>());
  if (!IsHalf(out.dtype())) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": unsupported output dtype ", DTypeName(out.dtype())));
  }
  NIMBLE_ASSIGN_OR_RETURN(Tensor f, Tensor::Empty(DType::kF32, out.shape()));
  NIMBLE_RETURN_IF_ERROR(fill(f.data<float>()));
  return CastInto(f, out, op);
}

absl::Status SameShape(absl::string_view op, absl::Span<const Tensor> inputs,
                       absl::Span<Shape> output_shapes) {
  if (inputs.empty() || !inputs[0].defined() || output_shapes.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": expected an input and one output"));
  }
  output_shapes[0] = inputs[0].shape();
  return absl::OkStatus();
}

// ------------------------------------------------------------------------------------------
// RotaryEmbedding(X, cos_cache, sin_cache, position_ids?) (opset 23).

class RotaryEmbeddingKernel final : public Kernel {
 public:
  RotaryEmbeddingKernel(bool interleaved, int64_t rotary_dim, int64_t num_heads)
      : interleaved_(interleaved), rotary_dim_(rotary_dim), num_heads_(num_heads) {}

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    constexpr char kOp[] = "RotaryEmbedding";
    NIMBLE_RETURN_IF_ERROR(CheckArity(kOp, inputs, 3, 4, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(kOp, inputs, 3));
    const Tensor& x = inputs[0];
    NIMBLE_RETURN_IF_ERROR(CheckOutput(kOp, outputs[0], x.dtype(), x.shape()));
    int64_t batch = 0, seq = 0, heads = 0, head_size = 0;
    if (x.rank() == 4) {
      batch = x.dim(0), heads = x.dim(1), seq = x.dim(2), head_size = x.dim(3);
    } else if (x.rank() == 3) {
      if (num_heads_ <= 0 || x.dim(2) % num_heads_ != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            kOp, ": a 3-D input needs num_heads > 0 dividing its hidden size, got num_heads ",
            num_heads_, " for ", x.TypeString()));
      }
      batch = x.dim(0), seq = x.dim(1), heads = num_heads_, head_size = x.dim(2) / num_heads_;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(kOp, ": input must be 3-D or 4-D, got ", x.TypeString()));
    }
    const int64_t rot = rotary_dim_ == 0 ? head_size : rotary_dim_;
    if (rot < 0 || rot > head_size || rot % 2 != 0) {
      return absl::InvalidArgumentError(absl::StrCat(kOp, ": rotary_embedding_dim ", rot,
                                                     " must be even and <= head size ", head_size));
    }
    const int64_t half = rot / 2;
    const Tensor& cos_t = inputs[1];
    const Tensor& sin_t = inputs[2];
    const bool has_pos = inputs.size() > 3 && inputs[3].defined();
    std::vector<int64_t> pos;
    if (has_pos) {
      const Tensor& p = inputs[3];
      if (p.rank() != 2 || p.dim(0) != batch || p.dim(1) != seq) {
        return absl::InvalidArgumentError(absl::StrCat(kOp, ": position_ids must be [", batch, ", ",
                                                       seq, "], got ", p.TypeString()));
      }
      NIMBLE_RETURN_IF_ERROR(VisitDType<kInts>(p.dtype(), kOp, [&](auto tag) {
        using T = typename decltype(tag)::type;
        for (int64_t i = 0; i < p.num_elements(); ++i)
          pos.push_back(static_cast<int64_t>(p.data<T>()[i]));
        return absl::OkStatus();
      }));
      for (const Tensor* c : {&cos_t, &sin_t}) {
        if (c->rank() != 2 || c->dim(1) != half) {
          return absl::InvalidArgumentError(
              absl::StrCat(kOp, ": with position_ids the caches must be [max_position, ", half,
                           "], got ", c->TypeString()));
        }
      }
      const int64_t max_pos = std::min(cos_t.dim(0), sin_t.dim(0));
      for (int64_t v : pos) {
        if (v < 0 || v >= max_pos) {
          return absl::InvalidArgumentError(
              absl::StrCat(kOp, ": position id ", v, " is out of range [0, ", max_pos, ")"));
        }
      }
    } else {
      for (const Tensor* c : {&cos_t, &sin_t}) {
        if (c->rank() != 3 || c->dim(0) != batch || c->dim(1) != seq || c->dim(2) != half) {
          return absl::InvalidArgumentError(
              absl::StrCat(kOp, ": without position_ids the caches must be [", batch, ", ", seq,
                           ", ", half, "], got ", c->TypeString()));
        }
      }
    }
    NIMBLE_ASSIGN_OR_RETURN(Tensor xf, AsF32(kOp, "X", x));
    NIMBLE_ASSIGN_OR_RETURN(Tensor cf, AsF32(kOp, "cos_cache", cos_t));
    NIMBLE_ASSIGN_OR_RETURN(Tensor sf, AsF32(kOp, "sin_cache", sin_t));
    const float* xp = xf.data<float>();
    const float* cp = cf.data<float>();
    const float* sp = sf.data<float>();
    const bool four_d = x.rank() == 4;
    return WithF32Output(kOp, outputs[0], [&](float* out) {
      std::vector<float> row(head_size);
      for (int64_t b = 0; b < batch; ++b) {
        for (int64_t s = 0; s < seq; ++s) {
          const int64_t crow = has_pos ? pos[b * seq + s] : b * seq + s;
          const float* c = cp + crow * half;
          const float* sn = sp + crow * half;
          for (int64_t h = 0; h < heads; ++h) {
            const int64_t off = four_d ? ((b * heads + h) * seq + s) * head_size
                                       : (b * seq + s) * heads * head_size + h * head_size;
            std::memcpy(row.data(), xp + off, head_size * sizeof(float));
            float* o = out + off;
            for (int64_t i = 0; i < half; ++i) {
              const int64_t i1 = interleaved_ ? 2 * i : i;
              const int64_t i2 = interleaved_ ? 2 * i + 1 : i + half;
              const float x1 = row[i1], x2 = row[i2];
              o[i1] = c[i] * x1 - sn[i] * x2;
              o[i2] = sn[i] * x1 + c[i] * x2;
            }
            for (int64_t i = rot; i < head_size; ++i) o[i] = row[i];
          }
        }
      }
      return absl::OkStatus();
    });
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    return SameShape("RotaryEmbedding", inputs, output_shapes);
  }

 private:
  const bool interleaved_;
  const int64_t rotary_dim_;
  const int64_t num_heads_;
};

// ------------------------------------------------------------------------------------------
// Shrink(x): x + bias below -lambd, x - bias above lambd, 0 between.

// ---------------------------------------------------------------------------------------------
// HannWindow, HammingWindow, BlackmanWindow (opset 17): w[n] = a0 - a1 cos(2 pi n / N)
// + a2 cos(4 pi n / N) for n < size, N = size (periodic) or size - 1 (symmetric; a window of one
// point is 1). Computed in double, stored as output_datatype.

enum class WindowKind { kHann, kHamming, kBlackman };

class WindowKernel final : public Kernel {
 public:
  WindowKernel(std::string op, WindowKind kind, bool periodic, DType dtype)
      : op_(std::move(op)), kind_(kind), periodic_(periodic), dtype_(dtype) {}

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op_, inputs, 1, 1, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(op_, inputs, 1));
    NIMBLE_ASSIGN_OR_RETURN(const int64_t size, Size(inputs));
    NIMBLE_RETURN_IF_ERROR(CheckOutput(op_, outputs[0], dtype_, {size}));
    double a0 = 0.5, a1 = 0.5, a2 = 0.0;
    if (kind_ == WindowKind::kHamming) a0 = 25.0 / 46.0, a1 = 1.0 - a0;
    if (kind_ == WindowKind::kBlackman) a0 = 0.42, a1 = 0.5, a2 = 0.08;
    const int64_t n_den = periodic_ ? size : size - 1;
    const double step = n_den > 0 ? 2.0 * M_PI / static_cast<double>(n_den) : 0.0;
    char* out = static_cast<char*>(outputs[0].raw_data());
    const size_t bytes = DTypeSize(dtype_);
    for (int64_t n = 0; n < size; ++n) {
      const double x = step * static_cast<double>(n);
      const double w = n_den > 0 ? a0 - a1 * std::cos(x) + a2 * std::cos(2.0 * x) : 1.0;
      NIMBLE_RETURN_IF_ERROR(kernel_util::WriteScalar(dtype_, w, out + n * bytes));
    }
    return absl::OkStatus();
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    NIMBLE_ASSIGN_OR_RETURN(const int64_t size, Size(inputs));
    output_shapes[0] = Shape{size};
    return absl::OkStatus();
  }

 private:
  absl::StatusOr<int64_t> Size(absl::Span<const Tensor> inputs) const {
    if (inputs.empty() || !inputs[0].defined()) {
      return absl::InvalidArgumentError(absl::StrCat(op_, ": input 'size' is required"));
    }
    NIMBLE_ASSIGN_OR_RETURN(const int64_t size, ScalarInt(op_, "size", inputs[0]));
    if (size < 0 || size > (int64_t{1} << 31)) {
      return absl::InvalidArgumentError(
          absl::StrCat(op_, ": size must be in [0, 2^31], got ", size));
    }
    return size;
  }

  const std::string op_;
  const WindowKind kind_;
  const bool periodic_;
  const DType dtype_;
};

// ---------------------------------------------------------------------------------------------
// MelWeightMatrix (opset 17): [dft_length / 2 + 1, num_mel_bins] triangular filters mapping a
// onesided spectrum onto the mel scale (mel = 2595 log10(1 + hz / 700)). num_mel_bins + 2 points
// evenly spaced in mel from lower_edge_hertz to upper_edge_hertz, spaced by (high - low) /
// (num_mel_bins + 2) as ONNX's reference spaces them, become spectrogram bins
// floor((dft_length + 1) hz / sample_rate); filter i rises from point i to point i + 1 and falls
// to point i + 2. The mel edges are computed in the edge inputs' precision (float for f32 and
// the half types) and the points in double, as the reference does, so the bins agree.

// Python's float floor division (numpy's npy_divmod), which the reference's bins come from.
double PyFloorDiv(double a, double b) {
  const double mod = std::fmod(a, b);
  double div = (a - mod) / b;
  if (mod != 0.0 && ((b < 0) != (mod < 0))) div -= 1.0;
  if (div == 0.0) return std::copysign(0.0, a / b);
  const double floor_div = std::floor(div);
  return div - floor_div > 0.5 ? floor_div + 1.0 : floor_div;
}

// The mel of the lower edge and the step between points, in T.
template <typename T>
std::pair<double, double> MelLowAndStep(double lower, double upper, int64_t points) {
  auto mel = [](T hz) -> T { return T(2595) * std::log10(T(1) + hz / T(700)); };
  const T low = mel(static_cast<T>(lower)), high = mel(static_cast<T>(upper));
  return {low, (high - low) / static_cast<T>(points)};
}

class MelWeightMatrixKernel final : public Kernel {
 public:
  explicit MelWeightMatrixKernel(DType dtype) : dtype_(dtype) {}

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("MelWeightMatrix", inputs, 5, 5, outputs, 1));
    NIMBLE_ASSIGN_OR_RETURN(const Plan p, MakePlan(inputs));
    const int64_t rows = p.dft_length / 2 + 1;
    NIMBLE_RETURN_IF_ERROR(CheckOutput("MelWeightMatrix", outputs[0], dtype_, {rows, p.mel_bins}));
    std::vector<int64_t> bin(static_cast<size_t>(p.mel_bins + 2));
    for (int64_t k = 0; k < p.mel_bins + 2; ++k) {
      const double mel = static_cast<double>(k) * p.step + p.low_mel;
      const double hz = 700.0 * (std::pow(10.0, mel / 2595.0) - 1.0);
      const double b = PyFloorDiv(static_cast<double>(p.dft_length + 1) * hz,
                                  static_cast<double>(p.sample_rate));
      if (!(b >= 0.0 && b <= static_cast<double>(rows))) {
        return absl::InvalidArgumentError(absl::StrCat(
            "MelWeightMatrix: the edges ", p.lower, " and ", p.upper, " Hz map outside the ", rows,
            " spectrogram bins (sample_rate ", p.sample_rate, ")"));
      }
      bin[k] = static_cast<int64_t>(b);
    }
    if (bin[p.mel_bins] >= rows) {
      return absl::InvalidArgumentError(absl::StrCat("MelWeightMatrix: upper_edge_hertz ", p.upper,
                                                     " maps past the last spectrogram bin"));
    }
    std::vector<double> w(static_cast<size_t>(rows * p.mel_bins), 0.0);
    for (int64_t i = 0; i < p.mel_bins; ++i) {
      const int64_t left = bin[i], center = bin[i + 1], right = bin[i + 2];
      if (center == left) {
        w[center * p.mel_bins + i] = 1.0;
      } else {
        for (int64_t j = left; j <= center; ++j) {
          w[j * p.mel_bins + i] =
              static_cast<double>(j - left) / static_cast<double>(center - left);
        }
      }
      for (int64_t j = center; j < right; ++j) {
        w[j * p.mel_bins + i] =
            static_cast<double>(right - j) / static_cast<double>(right - center);
      }
    }
    char* out = static_cast<char*>(outputs[0].raw_data());
    const size_t bytes = DTypeSize(dtype_);
    for (size_t n = 0; n < w.size(); ++n) {
      NIMBLE_RETURN_IF_ERROR(kernel_util::WriteScalar(dtype_, w[n], out + n * bytes));
    }
    return absl::OkStatus();
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    NIMBLE_ASSIGN_OR_RETURN(const Plan p, MakePlan(inputs));
    output_shapes[0] = Shape{p.dft_length / 2 + 1, p.mel_bins};
    return absl::OkStatus();
  }

 private:
  struct Plan {
    int64_t mel_bins = 0, dft_length = 0, sample_rate = 0;
    double lower = 0, upper = 0, low_mel = 0, step = 0;
  };

  static absl::StatusOr<Plan> MakePlan(absl::Span<const Tensor> inputs) {
    constexpr absl::string_view kOp = "MelWeightMatrix";
    NIMBLE_RETURN_IF_ERROR(CheckRequired(kOp, inputs, 5));
    Plan p;
    NIMBLE_ASSIGN_OR_RETURN(p.mel_bins, ScalarInt(kOp, "num_mel_bins", inputs[0]));
    NIMBLE_ASSIGN_OR_RETURN(p.dft_length, ScalarInt(kOp, "dft_length", inputs[1]));
    NIMBLE_ASSIGN_OR_RETURN(p.sample_rate, ScalarInt(kOp, "sample_rate", inputs[2]));
    constexpr int64_t kMax = int64_t{1} << 31;
    if (p.mel_bins < 1 || p.dft_length < 1 || p.sample_rate < 1 || p.mel_bins > kMax ||
        p.dft_length > kMax || (p.dft_length / 2 + 1) * p.mel_bins > kMax) {
      return absl::InvalidArgumentError(absl::StrCat(
          "MelWeightMatrix: num_mel_bins ", p.mel_bins, ", dft_length ", p.dft_length,
          " and sample_rate ", p.sample_rate, " must be positive (and the matrix below 2^31)"));
    }
    const DType edge = inputs[3].dtype();
    if (!IsFloat(edge) || inputs[4].dtype() != edge || inputs[3].num_elements() != 1 ||
        inputs[4].num_elements() != 1) {
      return absl::InvalidArgumentError(
          "MelWeightMatrix: lower_edge_hertz and upper_edge_hertz must be float scalars of one "
          "type");
    }
    p.lower = kernel_util::ElementAsDouble(inputs[3], 0);
    p.upper = kernel_util::ElementAsDouble(inputs[4], 0);
    if (!(p.lower >= 0.0 && p.upper > p.lower && std::isfinite(p.upper))) {
      return absl::InvalidArgumentError(
          absl::StrCat("MelWeightMatrix: need 0 <= lower_edge_hertz < upper_edge_hertz, got ",
                       p.lower, " and ", p.upper));
    }
    std::tie(p.low_mel, p.step) = edge == DType::kF64
                                      ? MelLowAndStep<double>(p.lower, p.upper, p.mel_bins + 2)
                                      : MelLowAndStep<float>(p.lower, p.upper, p.mel_bins + 2);
    return p;
  }

  const DType dtype_;
};

// ---------------------------------------------------------------------------------------------
// DFT (opsets 17, 20): the discrete Fourier transform along one signal axis of a real [..., 1] or
// complex [..., 2] signal, zero-padded or cut to dft_length; onesided keeps the first
// floor(L / 2) + 1 frequencies; inverse divides by L. inverse + onesided is the inverse real
// transform (numpy's irfft): a real [..., 1] signal of length L (default 2 (n - 1)) from a half
// spectrum, the imaginary parts of its zero (and, for even L, Nyquist) terms ignored. Direct
// O(n L) sums in double. The axis is the attribute (the importer sets it before opset 20), else
// input 2, else -2; negative axes count from the end of the full shape.

// Term k of the direct DFT of `count` samples over a period of `len`: the sum of sample(n)
// e^{sign 2 pi i n k / len}, sample(n) returning (re, im). Shared by DFT and STFT.
template <typename Sample>
std::pair<double, double> DftTerm(const Sample& sample, int64_t count, int64_t len, int64_t k,
                                  double sign) {
  const double w = sign * 2.0 * M_PI / static_cast<double>(len);
  double re = 0.0, im = 0.0;
  for (int64_t n = 0; n < count; ++n) {
    const auto [zr, zi] = sample(n);
    const double angle = w * static_cast<double>((n * k) % len);
    const double cs = std::cos(angle), sn = std::sin(angle);
    re += zr * cs - zi * sn;
    im += zr * sn + zi * cs;
  }
  return {re, im};
}

class DftKernel final : public Kernel {
 public:
  DftKernel(std::optional<int64_t> axis, bool inverse, bool onesided)
      : axis_(axis), inverse_(inverse), onesided_(onesided) {}

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("DFT", inputs, 1, 3, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired("DFT", inputs, 1));
    NIMBLE_ASSIGN_OR_RETURN(const Plan plan, MakePlan(inputs));
    const Tensor& x = inputs[0];
    NIMBLE_RETURN_IF_ERROR(CheckOutput("DFT", outputs[0], x.dtype(), plan.out));
    NIMBLE_ASSIGN_OR_RETURN(Tensor xd, CastTo(x, DType::kF64, "DFT"));
    NIMBLE_ASSIGN_OR_RETURN(Tensor yd, Tensor::Empty(DType::kF64, plan.out));
    const int64_t c_in = x.dim(x.rank() - 1), c_out = plan.out.back();
    const int64_t n_in = x.dim(plan.axis), n_out = plan.out[plan.axis], len = plan.length;
    const double* in = xd.data<double>();
    double* out = yd.data<double>();
    const double sign = inverse_ ? 1.0 : -1.0;
    const double norm = inverse_ ? 1.0 / static_cast<double>(len) : 1.0;
    const double w = 2.0 * M_PI / static_cast<double>(len);
    for (int64_t o = 0; o < plan.outer; ++o) {
      for (int64_t i = 0; i < plan.inner; ++i) {
        auto at_in = [&](int64_t n, int64_t comp) {
          return in[((o * n_in + n) * plan.inner + i) * c_in + comp];
        };
        for (int64_t k = 0; k < n_out; ++k) {
          double re = 0.0, im = 0.0;
          if (inverse_ && onesided_) {  // irfft: the Hermitian half spectrum, a real output
            const int64_t half = len / 2;
            for (int64_t f = 0; f <= half && f < n_in; ++f) {
              const double zr = at_in(f, 0), zi = c_in == 2 ? at_in(f, 1) : 0.0;
              const double angle = w * static_cast<double>((f * k) % len);
              const bool edge = f == 0 || (len % 2 == 0 && f == half);
              const double term = zr * std::cos(angle) - zi * std::sin(angle);
              re += edge ? (f == 0 ? zr : term) : 2.0 * term;
            }
          } else {
            auto sample = [&](int64_t n) {
              return std::pair<double, double>(at_in(n, 0), c_in == 2 ? at_in(n, 1) : 0.0);
            };
            std::tie(re, im) = DftTerm(sample, std::min(n_in, len), len, k, sign);
          }
          double* y = out + ((o * n_out + k) * plan.inner + i) * c_out;
          y[0] = re * norm;
          if (c_out == 2) y[1] = im * norm;
        }
      }
    }
    return CastInto(yd, outputs[0], "DFT");
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    NIMBLE_ASSIGN_OR_RETURN(const Plan plan, MakePlan(inputs));
    output_shapes[0] = plan.out;
    return absl::OkStatus();
  }

 private:
  struct Plan {
    int axis = 0;
    int64_t length = 0;  // L
    int64_t outer = 1, inner = 1;
    Shape out;
  };

  absl::StatusOr<Plan> MakePlan(absl::Span<const Tensor> inputs) const {
    if (inputs.empty() || !inputs[0].defined()) {
      return absl::InvalidArgumentError("DFT: input is required");
    }
    const Tensor& x = inputs[0];
    const int r = x.rank();
    if (!IsFloat(x.dtype()) || r < 2 || (x.dim(r - 1) != 1 && x.dim(r - 1) != 2)) {
      return absl::InvalidArgumentError(
          absl::StrCat("DFT: input must be a float tensor [..., 1 or 2], got ", x.TypeString(), " ",
                       ShapeToString(x.shape())));
    }
    int64_t axis = -2;
    if (axis_) {
      axis = *axis_;
    } else if (inputs.size() > 2 && inputs[2].defined()) {
      NIMBLE_ASSIGN_OR_RETURN(axis, ScalarInt("DFT", "axis", inputs[2]));
    }
    if (axis < 0) axis += r;
    if (axis < 0 || axis >= r - 1) {
      return absl::InvalidArgumentError(absl::StrCat("DFT: axis out of range for rank ", r));
    }
    Plan p;
    p.axis = static_cast<int>(axis);
    const int64_t n = x.dim(p.axis);
    const bool irfft = inverse_ && onesided_;
    if (inputs.size() > 1 && inputs[1].defined()) {
      NIMBLE_ASSIGN_OR_RETURN(p.length, ScalarInt("DFT", "dft_length", inputs[1]));
    } else {
      p.length = irfft ? 2 * (n - 1) : n;
    }
    if (p.length < 1 || p.length > (int64_t{1} << 31)) {
      return absl::InvalidArgumentError(
          absl::StrCat("DFT: dft_length must be in [1, 2^31], got ", p.length));
    }
    for (int d = 0; d < p.axis; ++d) p.outer *= x.dim(d);
    for (int d = p.axis + 1; d < r - 1; ++d) p.inner *= x.dim(d);
    p.out = x.shape();
    p.out[p.axis] = irfft || !onesided_ ? p.length : p.length / 2 + 1;
    p.out[r - 1] = irfft ? 1 : 2;
    return p;
  }

  const std::optional<int64_t> axis_;
  const bool inverse_, onesided_;
};

// ---------------------------------------------------------------------------------------------
// STFT (opset 17): frames of frame_length samples every frame_step along a real [batch, n, 1] or
// complex [batch, n, 2] signal, each multiplied by the window (when given; its length is the
// frame length unless frame_length is) and transformed by a direct DFT in double; onesided keeps
// floor(frame_length / 2) + 1 bins. Output [batch, frames, bins, 2].

class StftKernel final : public Kernel {
 public:
  explicit StftKernel(bool onesided) : onesided_(onesided) {}

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("STFT", inputs, 2, 4, outputs, 1));
    NIMBLE_ASSIGN_OR_RETURN(const Plan p, MakePlan(inputs));
    const Tensor& x = inputs[0];
    NIMBLE_RETURN_IF_ERROR(CheckOutput("STFT", outputs[0], x.dtype(), p.out));
    NIMBLE_ASSIGN_OR_RETURN(Tensor xd, CastTo(x, DType::kF64, "STFT"));
    std::vector<double> window(static_cast<size_t>(p.frame), 1.0);
    if (inputs.size() > 2 && inputs[2].defined()) {
      for (int64_t i = 0; i < p.frame; ++i) window[i] = kernel_util::ElementAsDouble(inputs[2], i);
    }
    NIMBLE_ASSIGN_OR_RETURN(Tensor yd, Tensor::Empty(DType::kF64, p.out));
    const int64_t n = x.dim(1), c = x.dim(2), frames = p.out[1], bins = p.out[2];
    for (int64_t b = 0; b < x.dim(0); ++b) {
      for (int64_t f = 0; f < frames; ++f) {
        const double* frame = xd.data<double>() + (b * n + f * p.step) * c;
        auto sample = [&](int64_t t) {
          return std::pair<double, double>(frame[t * c] * window[t],
                                           c == 2 ? frame[t * c + 1] * window[t] : 0.0);
        };
        for (int64_t k = 0; k < bins; ++k) {
          const auto [re, im] = DftTerm(sample, p.frame, p.frame, k, -1.0);
          double* y = yd.data<double>() + ((b * frames + f) * bins + k) * 2;
          y[0] = re, y[1] = im;
        }
      }
    }
    return CastInto(yd, outputs[0], "STFT");
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    NIMBLE_ASSIGN_OR_RETURN(const Plan p, MakePlan(inputs));
    output_shapes[0] = p.out;
    return absl::OkStatus();
  }

 private:
  struct Plan {
    int64_t step = 0, frame = 0;
    Shape out;
  };

  absl::StatusOr<Plan> MakePlan(absl::Span<const Tensor> inputs) const {
    if (inputs.size() < 2 || !inputs[0].defined() || !inputs[1].defined()) {
      return absl::InvalidArgumentError("STFT: signal and frame_step are required");
    }
    const Tensor& x = inputs[0];
    if (!IsFloat(x.dtype()) || x.rank() != 3 || (x.dim(2) != 1 && x.dim(2) != 2)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "STFT: signal must be float [batch, length, 1 or 2], got ", x.TypeString()));
    }
    Plan p;
    NIMBLE_ASSIGN_OR_RETURN(p.step, ScalarInt("STFT", "frame_step", inputs[1]));
    const bool has_window = inputs.size() > 2 && inputs[2].defined();
    if (inputs.size() > 3 && inputs[3].defined()) {
      NIMBLE_ASSIGN_OR_RETURN(p.frame, ScalarInt("STFT", "frame_length", inputs[3]));
    } else if (has_window) {
      p.frame = inputs[2].num_elements();
    } else {
      return absl::InvalidArgumentError("STFT: needs a window or frame_length");
    }
    if (has_window && (inputs[2].rank() != 1 || inputs[2].num_elements() != p.frame)) {
      return absl::InvalidArgumentError("STFT: the window must be 1-D of frame_length");
    }
    if (p.step < 1 || p.frame < 1 || p.frame > x.dim(1)) {
      return absl::InvalidArgumentError(absl::StrCat("STFT: frame_step ", p.step,
                                                     " and frame_length ", p.frame,
                                                     " do not fit a signal of ", x.dim(1)));
    }
    const int64_t frames = (x.dim(1) - p.frame) / p.step + 1;
    p.out = {x.dim(0), frames, onesided_ ? p.frame / 2 + 1 : p.frame, 2};
    return p;
  }

  const bool onesided_;
};

// ---------------------------------------------------------------------------------------------
// DynamicQuantizeLinear (opset 11): uint8 quantization of a float tensor with the scale and zero
// point of its range widened to include 0: scale = (max - min) / 255, zero point =
// saturate(round(-min / scale)), y = saturate(round(x / scale) + zero point); rounding half to
// even. An all-zero input gives scale 0, zero point 0 and zeros.

class DynamicQuantizeLinearKernel final : public Kernel {
 public:
  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    constexpr absl::string_view kOp = "DynamicQuantizeLinear";
    NIMBLE_RETURN_IF_ERROR(CheckArity(kOp, inputs, 1, 1, outputs, 3));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(kOp, inputs, 1));
    const Tensor& x = inputs[0];
    if (x.dtype() != DType::kF32) {
      return absl::InvalidArgumentError(
          absl::StrCat("DynamicQuantizeLinear: x must be float32, got ", x.TypeString()));
    }
    NIMBLE_RETURN_IF_ERROR(CheckOutput(kOp, outputs[0], DType::kU8, x.shape(), 0));
    NIMBLE_RETURN_IF_ERROR(CheckOutput(kOp, outputs[1], DType::kF32, {}, 1));
    NIMBLE_RETURN_IF_ERROR(CheckOutput(kOp, outputs[2], DType::kU8, {}, 2));
    const float* xv = x.data<float>();
    float lo = 0.0f, hi = 0.0f;
    for (int64_t i = 0; i < x.num_elements(); ++i) {
      if (std::isnan(xv[i])) {
        return absl::InvalidArgumentError("DynamicQuantizeLinear: x contains NaN");
      }
      lo = std::min(lo, xv[i]);
      hi = std::max(hi, xv[i]);
    }
    const float scale = (hi - lo) / 255.0f;
    float zero = 0.0f;
    if (scale > 0.0f) zero = std::clamp(std::nearbyint(0.0f - lo / scale), 0.0f, 255.0f);
    outputs[1].data<float>()[0] = scale;
    outputs[2].data<uint8_t>()[0] = static_cast<uint8_t>(zero);
    uint8_t* y = outputs[0].data<uint8_t>();
    for (int64_t i = 0; i < x.num_elements(); ++i) {
      const float q = scale > 0.0f ? std::nearbyint(xv[i] / scale) + zero : 0.0f;
      y[i] = static_cast<uint8_t>(std::clamp(q, 0.0f, 255.0f));
    }
    return absl::OkStatus();
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.empty() || !inputs[0].defined()) {
      return absl::InvalidArgumentError("DynamicQuantizeLinear: input 'x' is required");
    }
    output_shapes[0] = inputs[0].shape();
    output_shapes[1].clear();  // scalars
    output_shapes[2].clear();
    return absl::OkStatus();
  }
};

// ---------------------------------------------------------------------------------------------
// Det (opset 22): determinant of each square matrix in the last two dims, by LU decomposition
// with partial pivoting in double precision.

class DetKernel final : public Kernel {
 public:
  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("Det", inputs, 1, 1, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired("Det", inputs, 1));
    const Tensor& x = inputs[0];
    NIMBLE_ASSIGN_OR_RETURN(const Shape out_shape, OutShape(x));
    NIMBLE_RETURN_IF_ERROR(CheckOutput("Det", outputs[0], x.dtype(), out_shape));
    const int64_t n = x.dim(x.rank() - 1);
    const int64_t count = outputs[0].num_elements();
    NIMBLE_ASSIGN_OR_RETURN(Tensor xf, CastTo(x, DType::kF64, "Det"));
    std::vector<double> lu(static_cast<size_t>(n * n));
    std::vector<double> dets(static_cast<size_t>(count));
    for (int64_t m = 0; m < count; ++m) {
      std::copy_n(xf.data<double>() + m * n * n, n * n, lu.begin());
      double det = 1.0;
      for (int64_t c = 0; c < n && det != 0.0; ++c) {
        int64_t pivot = c;
        for (int64_t r = c + 1; r < n; ++r) {
          if (std::abs(lu[r * n + c]) > std::abs(lu[pivot * n + c])) pivot = r;
        }
        if (lu[pivot * n + c] == 0.0) {
          det = 0.0;
          break;
        }
        if (pivot != c) {
          for (int64_t k = 0; k < n; ++k) std::swap(lu[c * n + k], lu[pivot * n + k]);
          det = -det;
        }
        const double d = lu[c * n + c];
        det *= d;
        for (int64_t r = c + 1; r < n; ++r) {
          const double f = lu[r * n + c] / d;
          for (int64_t k = c + 1; k < n; ++k) lu[r * n + k] -= f * lu[c * n + k];
        }
      }
      dets[static_cast<size_t>(m)] = det;
    }
    char* out = static_cast<char*>(outputs[0].raw_data());
    const size_t bytes = DTypeSize(x.dtype());
    for (int64_t m = 0; m < count; ++m) {
      NIMBLE_RETURN_IF_ERROR(kernel_util::WriteScalar(x.dtype(), dets[m], out + m * bytes));
    }
    return absl::OkStatus();
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.empty() || !inputs[0].defined()) {
      return absl::InvalidArgumentError("Det: input 'X' is required");
    }
    NIMBLE_ASSIGN_OR_RETURN(output_shapes[0], OutShape(inputs[0]));
    return absl::OkStatus();
  }

 private:
  static absl::StatusOr<Shape> OutShape(const Tensor& x) {
    if (!IsFloat(x.dtype())) {
      return absl::InvalidArgumentError(
          absl::StrCat("Det: X must be a floating-point tensor, got ", x.TypeString()));
    }
    if (x.rank() < 2 || x.dim(x.rank() - 1) != x.dim(x.rank() - 2)) {
      return absl::InvalidArgumentError(
          absl::StrCat("Det: X must be [..., M, M], got ", ShapeToString(x.shape())));
    }
    return Shape(x.shape().begin(), x.shape().end() - 2);
  }
};

// Swish (opset 24): x * sigmoid(alpha * x), computed in double for every float type.
class SwishKernel final : public Kernel {
 public:
  explicit SwishKernel(double alpha) : alpha_(alpha) {}

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("Swish", inputs, 1, 1, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired("Swish", inputs, 1));
    const Tensor& x = inputs[0];
    if (!IsFloat(x.dtype())) {
      return absl::InvalidArgumentError(
          absl::StrCat("Swish: X must be a floating-point tensor, got ", x.TypeString()));
    }
    NIMBLE_RETURN_IF_ERROR(CheckOutput("Swish", outputs[0], x.dtype(), x.shape()));
    NIMBLE_ASSIGN_OR_RETURN(Tensor xd, CastTo(x, DType::kF64, "Swish"));
    NIMBLE_ASSIGN_OR_RETURN(Tensor yd, Tensor::Empty(DType::kF64, x.shape()));
    for (int64_t i = 0; i < x.num_elements(); ++i) {
      const double v = xd.data<double>()[i];
      yd.data<double>()[i] = v / (1.0 + std::exp(-alpha_ * v));
    }
    return CastInto(yd, outputs[0], "Swish");
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    return SameShape("Swish", inputs, output_shapes);
  }

 private:
  const double alpha_;
};

// ---------------------------------------------------------------------------------------------
// QLinearMatMul (opsets 10, 21): y = saturate(rint((a - a_zp) (b - b_zp) * a_scale * b_scale /
// y_scale + y_zp)), int32 accumulation, as ONNX's reference computes it: the combined scale in
// the scales' own type (float16 products are rounded to float16), rounding half to even.
// a, b: int8 / uint8 of rank 2 or 3 (a leading batch dim broadcasts as in MatMul); scales and
// zero points per tensor.

class QLinearMatMulKernel final : public Kernel {
 public:
  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    constexpr absl::string_view kOp = "QLinearMatMul";
    NIMBLE_RETURN_IF_ERROR(CheckArity(kOp, inputs, 8, 8, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(kOp, inputs, 8));
    NIMBLE_ASSIGN_OR_RETURN(const Shape out_shape, OutShape(inputs));
    const Tensor &a = inputs[0], &b = inputs[3], &y_zp = inputs[7];
    NIMBLE_RETURN_IF_ERROR(CheckOutput(kOp, outputs[0], y_zp.dtype(), out_shape));
    for (int i : {1, 2, 4, 5, 6, 7}) {
      if (inputs[i].num_elements() != 1) {
        return absl::UnimplementedError(absl::StrCat(
            "QLinearMatMul: only per-tensor scales and zero points are supported (input ", i,
            " has ", inputs[i].num_elements(), " elements)"));
      }
    }
    // The combined scale as the reference computes it: in the scales' type.
    const DType scale_type = inputs[1].dtype();
    const double sa = kernel_util::ElementAsDouble(inputs[1], 0);
    const double sb = kernel_util::ElementAsDouble(inputs[4], 0);
    const double sy = kernel_util::ElementAsDouble(inputs[6], 0);
    if (!(std::isfinite(sa) && sa > 0 && std::isfinite(sb) && sb > 0 && std::isfinite(sy) &&
          sy > 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "QLinearMatMul: scales must be finite and positive, got ", sa, ", ", sb, ", ", sy));
    }
    double scale = sa * sb / sy;
    if (scale_type == DType::kF32) {
      scale = static_cast<float>(static_cast<float>(sa * sb) / static_cast<float>(sy));
    } else if (scale_type == DType::kF16) {
      const float ab = HalfToFloat(FloatToHalf(static_cast<float>(sa * sb)));
      scale = HalfToFloat(FloatToHalf(ab / static_cast<float>(sy)));
    }
    const int32_t za = static_cast<int32_t>(kernel_util::ElementAsDouble(inputs[2], 0));
    const int32_t zb = static_cast<int32_t>(kernel_util::ElementAsDouble(inputs[5], 0));
    const double zy = kernel_util::ElementAsDouble(y_zp, 0);
    const bool signed_out = y_zp.dtype() == DType::kI8;
    const double lo = signed_out ? -128.0 : 0.0, hi = signed_out ? 127.0 : 255.0;
    const int64_t m = a.dim(a.rank() - 2), k = a.dim(a.rank() - 1), n = b.dim(b.rank() - 1);
    const int64_t batch = out_shape.size() == 3 ? out_shape[0] : 1;
    const int64_t a_step = a.rank() == 3 && a.dim(0) > 1 ? m * k : 0;
    const int64_t b_step = b.rank() == 3 && b.dim(0) > 1 ? k * n : 0;
    auto element = [](const Tensor& t, int64_t i) -> int32_t {
      return t.dtype() == DType::kI8 ? t.data<int8_t>()[i] : t.data<uint8_t>()[i];
    };
    for (int64_t bt = 0; bt < batch; ++bt) {
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          int32_t acc = 0;
          for (int64_t p = 0; p < k; ++p) {
            acc += (element(a, bt * a_step + i * k + p) - za) *
                   (element(b, bt * b_step + p * n + j) - zb);
          }
          const double v = std::nearbyint(std::clamp(acc * scale + zy, lo, hi));
          const int64_t at = (bt * m + i) * n + j;
          if (signed_out) {
            outputs[0].data<int8_t>()[at] = static_cast<int8_t>(v);
          } else {
            outputs[0].data<uint8_t>()[at] = static_cast<uint8_t>(v);
          }
        }
      }
    }
    return absl::OkStatus();
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    NIMBLE_ASSIGN_OR_RETURN(output_shapes[0], OutShape(inputs));
    return absl::OkStatus();
  }

 private:
  static absl::StatusOr<Shape> OutShape(absl::Span<const Tensor> inputs) {
    if (inputs.size() != 8) return absl::InvalidArgumentError("QLinearMatMul: 8 inputs");
    for (const Tensor& t : inputs) {
      if (!t.defined()) return absl::InvalidArgumentError("QLinearMatMul: every input is required");
    }
    const Tensor &a = inputs[0], &b = inputs[3];
    auto int8 = [](DType d) { return d == DType::kI8 || d == DType::kU8; };
    if (!int8(a.dtype()) || !int8(b.dtype()) || !int8(inputs[7].dtype()) ||
        inputs[2].dtype() != a.dtype() || inputs[5].dtype() != b.dtype()) {
      return absl::InvalidArgumentError(
          "QLinearMatMul: a, b, their zero points and y_zero_point must be int8 or uint8");
    }
    for (int i : {1, 4, 6}) {
      if (!IsFloat(inputs[i].dtype())) {
        return absl::InvalidArgumentError("QLinearMatMul: scales must be floating point");
      }
    }
    const int ra = a.rank(), rb = b.rank();
    if (ra < 2 || ra > 3 || rb < 2 || rb > 3 || a.dim(ra - 1) != b.dim(rb - 2)) {
      return absl::InvalidArgumentError(absl::StrCat("QLinearMatMul: a ", ShapeToString(a.shape()),
                                                     " and b ", ShapeToString(b.shape()),
                                                     " do not multiply (rank 2 or 3)"));
    }
    const int64_t ba = ra == 3 ? a.dim(0) : 1, bb = rb == 3 ? b.dim(0) : 1;
    if (ba != bb && ba != 1 && bb != 1) {
      return absl::InvalidArgumentError("QLinearMatMul: batch dims do not broadcast");
    }
    Shape out;
    if (ra == 3 || rb == 3) out.push_back(std::max(ba, bb));
    out.push_back(a.dim(ra - 2));
    out.push_back(b.dim(rb - 1));
    return out;
  }
};

// StringConcat (opset 20): x + y elementwise on string tensors, numpy broadcasting. String
// tensors are never views of the VM's raw storage, so the kernel allocates its output.
class StringConcatKernel final : public Kernel {
 public:
  bool allocates_outputs() const override { return true; }

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("StringConcat", inputs, 2, 2, outputs, 1));
    if (!inputs[0].defined() || !inputs[1].defined()) {
      return absl::InvalidArgumentError("StringConcat: two inputs are required");
    }
    Shape out_shape;
    NIMBLE_RETURN_IF_ERROR(Shapes(inputs, &out_shape));
    NIMBLE_ASSIGN_OR_RETURN(outputs[0], Tensor::Empty(DType::kString, out_shape));
    NIMBLE_ASSIGN_OR_RETURN(BroadcastPlan plan,
                            BroadcastPlan::Create({inputs[0].shape(), inputs[1].shape()}, out_shape));
    const std::string* x = inputs[0].data<std::string>();
    const std::string* y = inputs[1].data<std::string>();
    std::string* out = outputs[0].data<std::string>();
    const int64_t step_x = plan.inner_stride(0), step_y = plan.inner_stride(1);
    plan.ForEachSegment(0, plan.num_elements(),
                        [&](int64_t o, absl::Span<const int64_t> in, int64_t len) {
                          for (int64_t j = 0; j < len; ++j) {
                            out[o + j] = x[in[0] + j * step_x] + y[in[1] + j * step_y];
                          }
                        });
    return absl::OkStatus();
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    return Shapes(inputs, &output_shapes[0]);
  }

 private:
  static absl::Status Shapes(absl::Span<const Tensor> inputs, Shape* out) {
    if (inputs.size() != 2 || !inputs[0].defined() || !inputs[1].defined()) {
      return absl::InvalidArgumentError("StringConcat: two inputs are required");
    }
    for (int i = 0; i < 2; ++i) {
      if (inputs[i].dtype() != DType::kString) {
        return absl::InvalidArgumentError(absl::StrCat("StringConcat: input ", i,
                                                       " must be string, got ",
                                                       inputs[i].TypeString()));
      }
    }
    NIMBLE_ASSIGN_OR_RETURN(*out, BroadcastShapes({inputs[0].shape(), inputs[1].shape()}));
    return absl::OkStatus();
  }
};

// StringSplit (opset 20): each element split on `delimiter` (consecutive delimiters give empty
// substrings), or, with no or an empty delimiter, on runs of whitespace with leading and
// trailing whitespace dropped (Python's str.split); at most `maxsplit` splits from the left.
// Y: X's dims + [the largest count], padded with ""; Z: the count of each element.
class StringSplitKernel final : public Kernel {
 public:
  StringSplitKernel(std::string delimiter, std::optional<int64_t> maxsplit)
      : delimiter_(std::move(delimiter)), maxsplit_(maxsplit) {}

  bool allocates_outputs() const override { return true; }
  absl::Status OutputShapes(absl::Span<const Tensor>, absl::Span<Shape>) const override {
    return absl::UnimplementedError("StringSplit: the output shape depends on the data");
  }

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("StringSplit", inputs, 1, 1, outputs, 2));
    if (!inputs[0].defined() || inputs[0].dtype() != DType::kString) {
      return absl::InvalidArgumentError("StringSplit: X must be a string tensor");
    }
    const Tensor& x = inputs[0];
    std::vector<std::vector<std::string>> parts(static_cast<size_t>(x.num_elements()));
    int64_t widest = 0;
    for (int64_t i = 0; i < x.num_elements(); ++i) {
      parts[i] = Split(x.data<std::string>()[i]);
      widest = std::max<int64_t>(widest, static_cast<int64_t>(parts[i].size()));
    }
    Shape y_shape = x.shape();
    y_shape.push_back(widest);
    NIMBLE_ASSIGN_OR_RETURN(outputs[0], Tensor::Empty(DType::kString, y_shape));
    NIMBLE_ASSIGN_OR_RETURN(outputs[1], Tensor::Empty(DType::kI64, x.shape()));
    for (int64_t i = 0; i < x.num_elements(); ++i) {
      outputs[1].data<int64_t>()[i] = static_cast<int64_t>(parts[i].size());
      for (size_t j = 0; j < parts[i].size(); ++j) {
        outputs[0].data<std::string>()[i * widest + static_cast<int64_t>(j)] =
            std::move(parts[i][j]);
      }
    }
    return absl::OkStatus();
  }

 private:
  std::vector<std::string> Split(const std::string& s) const {
    std::vector<std::string> out;
    int64_t splits = 0;
    const bool limited = maxsplit_.has_value();
    if (delimiter_.empty()) {
      auto space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
      size_t i = 0;
      while (i < s.size()) {
        while (i < s.size() && space(s[i])) ++i;
        if (i == s.size()) break;
        if (limited && splits == *maxsplit_) {  // the rest, trailing whitespace dropped
          size_t end = s.size();
          while (end > i && space(s[end - 1])) --end;
          out.push_back(s.substr(i, end - i));
          break;
        }
        size_t j = i;
        while (j < s.size() && !space(s[j])) ++j;
        out.push_back(s.substr(i, j - i));
        if (j < s.size()) ++splits;
        i = j;
      }
      return out;
    }
    size_t start = 0;
    while (true) {
      const size_t at = (limited && splits == *maxsplit_) ? std::string::npos
                                                          : s.find(delimiter_, start);
      if (at == std::string::npos) {
        out.push_back(s.substr(start));
        return out;
      }
      out.push_back(s.substr(start, at - start));
      start = at + delimiter_.size();
      ++splits;
    }
  }

  const std::string delimiter_;
  const std::optional<int64_t> maxsplit_;
};

// StringNormalizer (opset 10): drops the elements of a [C] or [1, C] string tensor that are
// stopwords (compared case-insensitively unless is_case_sensitive), then lower- or upper-cases
// the rest (case_change_action LOWER, UPPER or NONE). Y is [C'] or [1, C']; when every element
// is dropped, [1] or [1, 1] holding "". Case mapping is per code point of UTF-8 text through the
// locale's ctype<wchar_t> facet (C.UTF-8 stands in for the default en_US when that is not
// installed); bytes that are not valid UTF-8 pass through unchanged.

enum class CaseChange { kNone, kLower, kUpper };

// The code point of the UTF-8 sequence at s[i] and its length, or nullopt if it is malformed.
std::optional<std::pair<char32_t, int>> DecodeUtf8(const std::string& s, size_t i) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return std::pair<char32_t, int>(c, 1);
  const int len = c >= 0xF0 && c < 0xF5   ? 4
                  : c >= 0xE0 && c < 0xF0 ? 3
                  : c >= 0xC2 && c < 0xE0 ? 2
                                          : 0;
  if (len == 0 || i + len > s.size()) return std::nullopt;
  char32_t cp = c & (0x7F >> len);
  for (int k = 1; k < len; ++k) {
    const unsigned char cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) return std::nullopt;
    cp = (cp << 6) | (cc & 0x3F);
  }
  const char32_t min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return std::nullopt;
  return std::pair<char32_t, int>(cp, len);
}

void AppendUtf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

class StringNormalizerKernel final : public Kernel {
 public:
  StringNormalizerKernel(CaseChange change, bool case_sensitive, std::vector<std::string> stopwords,
                         std::locale locale)
      : change_(change), case_sensitive_(case_sensitive), locale_(std::move(locale)) {
    for (const std::string& w : stopwords) {
      stopwords_.insert(case_sensitive_ ? w : Convert(w, CaseChange::kLower));
    }
  }

  bool allocates_outputs() const override { return true; }
  absl::Status OutputShapes(absl::Span<const Tensor>, absl::Span<Shape>) const override {
    return absl::UnimplementedError("StringNormalizer: the output shape depends on the data");
  }

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("StringNormalizer", inputs, 1, 1, outputs, 1));
    if (!inputs[0].defined() || inputs[0].dtype() != DType::kString) {
      return absl::InvalidArgumentError("StringNormalizer: X must be a string tensor");
    }
    const Tensor& x = inputs[0];
    if (x.rank() != 1 && !(x.rank() == 2 && x.dim(0) == 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "StringNormalizer: X must be [C] or [1, C], got ", ShapeToString(x.shape())));
    }
    std::vector<std::string> kept;
    for (int64_t i = 0; i < x.num_elements(); ++i) {
      const std::string& s = x.data<std::string>()[i];
      const bool stop = !stopwords_.empty() &&
                        stopwords_.count(case_sensitive_ ? s : Convert(s, CaseChange::kLower)) != 0;
      if (!stop) kept.push_back(Convert(s, change_));
    }
    if (kept.empty()) kept.emplace_back();
    const int64_t n = static_cast<int64_t>(kept.size());
    NIMBLE_ASSIGN_OR_RETURN(outputs[0],
                            Tensor::Empty(DType::kString, x.rank() == 1 ? Shape{n} : Shape{1, n}));
    for (int64_t i = 0; i < n; ++i) outputs[0].data<std::string>()[i] = std::move(kept[i]);
    return absl::OkStatus();
  }

 private:
  std::string Convert(const std::string& s, CaseChange change) const {
    if (change == CaseChange::kNone) return s;
    const auto& ctype = std::use_facet<std::ctype<wchar_t>>(locale_);
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
      const auto decoded = DecodeUtf8(s, i);
      if (!decoded) {
        out.push_back(s[i++]);
        continue;
      }
      const wchar_t w = static_cast<wchar_t>(decoded->first);
      const wchar_t mapped = change == CaseChange::kLower ? ctype.tolower(w) : ctype.toupper(w);
      AppendUtf8(static_cast<char32_t>(mapped), out);
      i += decoded->second;
    }
    return out;
  }

  const CaseChange change_;
  const bool case_sensitive_;
  const std::locale locale_;
  std::unordered_set<std::string> stopwords_;  // lowercased unless case_sensitive_
};

absl::StatusOr<std::unique_ptr<Kernel>> MakeStringNormalizer(const Attributes& a) {
  const std::string action = a.GetOr<std::string>("case_change_action", "NONE");
  CaseChange change = CaseChange::kNone;
  if (action == "LOWER") {
    change = CaseChange::kLower;
  } else if (action == "UPPER") {
    change = CaseChange::kUpper;
  } else if (action != "NONE") {
    return absl::InvalidArgumentError(absl::StrCat(
        "StringNormalizer: case_change_action must be LOWER, UPPER or NONE, got '", action, "'"));
  }
  // The named locale, its UTF-8 variant, and for the default (en_US) C.UTF-8.
  const std::string name = a.GetOr<std::string>("locale", "");
  std::vector<std::string> candidates;
  if (!name.empty()) candidates = {name + ".UTF-8", name};
  if (name.empty() || name == "en_US" || name == "en_US.UTF-8" || name == "C") {
    candidates.push_back("C.UTF-8");
  }
  std::optional<std::locale> locale;
  for (const std::string& c : candidates) {
    try {
      locale.emplace(c);
      break;
    } catch (const std::runtime_error&) {
    }
  }
  if (!locale) {
    return absl::InvalidArgumentError(
        absl::StrCat("StringNormalizer: locale '", name, "' is not available"));
  }
  return std::make_unique<StringNormalizerKernel>(
      change, a.GetOr<int64_t>("is_case_sensitive", 0) != 0,
      a.GetOr<std::vector<std::string>>("stopwords", {}), *std::move(locale));
}

// ---------------------------------------------------------------------------------------------
// TfIdfVectorizer (opset 9): counts, per row of a [C] or [B, C] tensor of int32 / int64 / string
// tokens, the occurrences of the pool's n-grams with min_gram_length <= n <= max_gram_length,
// the n items of an n-gram taken every d = 1..max_skip_count + 1 positions (unigrams once).
// The pool lists the 1-grams from ngram_counts[0], the 2-grams from ngram_counts[1], ...; the
// k-th n-gram of the pool (over all sizes) counts in output column ngram_indexes[k]. TF gives the
// counts, IDF weights[column] (default 1) where the count is non-zero, TFIDF weights[column] *
// count, as f32 [output size] or [B, output size], output size = max(ngram_indexes) + 1.
// The pool n-grams sit in a trie over token ids, so a walk stops at the first token no pool
// n-gram continues with.

enum class TfIdfMode { kTf, kIdf, kTfIdf };

class TfIdfVectorizerKernel final : public Kernel {
 public:
  struct Config {
    TfIdfMode mode = TfIdfMode::kTf;
    int64_t min_gram = 1, max_gram = 1, max_skip = 0;
    int64_t output_size = 0;
    std::vector<double> weights;  // per output column, empty for all ones
  };

  // Builds the token vocabulary and the trie from the pool. `pool` holds int64s or strings.
  static absl::StatusOr<std::unique_ptr<Kernel>> Create(
      Config config, const std::vector<int64_t>& pool_ints,
      const std::vector<std::string>& pool_strings, const std::vector<int64_t>& counts,
      const std::vector<int64_t>& indexes) {
    std::unique_ptr<TfIdfVectorizerKernel> k(
        new TfIdfVectorizerKernel(std::move(config), !pool_strings.empty()));
    const int64_t total =
        static_cast<int64_t>(k->strings_ ? pool_strings.size() : pool_ints.size());
    std::vector<int32_t> tokens(static_cast<size_t>(total));
    for (int64_t i = 0; i < total; ++i) {
      const auto next =
          static_cast<int32_t>(k->strings_ ? k->string_ids_.size() : k->int_ids_.size());
      tokens[i] = k->strings_ ? k->string_ids_.emplace(pool_strings[i], next).first->second
                              : k->int_ids_.emplace(pool_ints[i], next).first->second;
    }
    k->nodes_.emplace_back();  // the root
    int64_t ngram = 0;         // the pool ordinal of the next n-gram
    for (size_t i = 0; i < counts.size(); ++i) {
      const int64_t n = static_cast<int64_t>(i) + 1;
      const int64_t begin = counts[i];
      const int64_t end = i + 1 < counts.size() ? counts[i + 1] : total;
      if (begin < 0 || end < begin || end > total) {
        return absl::InvalidArgumentError(absl::StrCat(
            "TfIdfVectorizer: ngram_counts must be non-decreasing offsets into the pool of ", total,
            ", got ", begin, " for ", n, "-grams"));
      }
      for (int64_t at = begin; at + n <= end; at += n, ++ngram) {
        if (n < k->config_.min_gram || n > k->config_.max_gram) continue;
        if (ngram >= static_cast<int64_t>(indexes.size())) {
          return absl::InvalidArgumentError(absl::StrCat(
              "TfIdfVectorizer: the pool has more n-grams than ngram_indexes' ", indexes.size()));
        }
        int32_t node = 0;
        for (int64_t j = at; j < at + n; ++j) node = k->Child(node, tokens[j]);
        k->nodes_[node].column = indexes[ngram];  // a repeated n-gram counts in its last column
      }
    }
    return std::unique_ptr<Kernel>(std::move(k));
  }

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("TfIdfVectorizer", inputs, 1, 1, outputs, 1));
    NIMBLE_ASSIGN_OR_RETURN(const Shape out_shape, OutShape(inputs));
    NIMBLE_RETURN_IF_ERROR(CheckOutput("TfIdfVectorizer", outputs[0], DType::kF32, out_shape));
    const Tensor& x = inputs[0];
    const int64_t rows = x.rank() == 2 ? x.dim(0) : 1;
    const int64_t cols = rows == 0 ? 0 : x.num_elements() / rows;
    const int64_t width = config_.output_size;
    std::vector<int64_t> counts(static_cast<size_t>(width));
    std::vector<int32_t> row(static_cast<size_t>(cols));
    float* out = outputs[0].data<float>();
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) row[c] = TokenId(x, r * cols + c);
      std::fill(counts.begin(), counts.end(), 0);
      CountRow(row, counts);
      for (int64_t c = 0; c < width; ++c) {
        const double w = config_.weights.empty() ? 1.0 : config_.weights[c];
        const double v = config_.mode == TfIdfMode::kTf    ? static_cast<double>(counts[c])
                         : config_.mode == TfIdfMode::kIdf ? (counts[c] > 0 ? w : 0.0)
                                                           : w * static_cast<double>(counts[c]);
        out[r * width + c] = static_cast<float>(v);
      }
    }
    return absl::OkStatus();
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    NIMBLE_ASSIGN_OR_RETURN(output_shapes[0], OutShape(inputs));
    return absl::OkStatus();
  }

 private:
  struct Node {
    std::unordered_map<int32_t, int32_t> children;  // token id -> node
    int64_t column = -1;                            // the output column of a pool n-gram
  };

  TfIdfVectorizerKernel(Config config, bool strings)
      : config_(std::move(config)), strings_(strings) {}

  int32_t Child(int32_t node, int32_t token) {
    auto [it, added] = nodes_[node].children.emplace(token, static_cast<int32_t>(nodes_.size()));
    if (added) nodes_.emplace_back();
    return it->second;
  }

  // The pool token id of element i of x, -1 for a token outside the pool.
  int32_t TokenId(const Tensor& x, int64_t i) const {
    if (strings_) {
      auto it = string_ids_.find(x.data<std::string>()[i]);
      return it == string_ids_.end() ? -1 : it->second;
    }
    const int64_t v = x.dtype() == DType::kI64 ? x.data<int64_t>()[i] : x.data<int32_t>()[i];
    auto it = int_ids_.find(v);
    return it == int_ids_.end() ? -1 : it->second;
  }

  void CountRow(const std::vector<int32_t>& row, std::vector<int64_t>& counts) const {
    const int64_t n = static_cast<int64_t>(row.size());
    // Skips of n or more reach nothing past a start (and unigrams count at skip 1 only), so
    // the loop stops there however large max_skip_count is.
    const int64_t last_skip = std::min(config_.max_skip, std::max<int64_t>(n - 1, 0)) + 1;
    for (int64_t skip = 1; skip <= last_skip; ++skip) {
      for (int64_t start = 0; start < n; ++start) {
        int32_t node = 0;
        for (int64_t len = 1, at = start; len <= config_.max_gram && at < n; ++len, at += skip) {
          auto it = nodes_[node].children.find(row[at]);
          if (it == nodes_[node].children.end()) break;
          node = it->second;
          const bool counted = len >= config_.min_gram && (len > 1 || skip == 1);
          if (counted && nodes_[node].column >= 0) ++counts[nodes_[node].column];
        }
      }
    }
  }

  absl::StatusOr<Shape> OutShape(absl::Span<const Tensor> inputs) const {
    if (inputs.empty() || !inputs[0].defined()) {
      return absl::InvalidArgumentError("TfIdfVectorizer: X is required");
    }
    const Tensor& x = inputs[0];
    const bool ints = x.dtype() == DType::kI32 || x.dtype() == DType::kI64;
    if (strings_ ? x.dtype() != DType::kString : !ints) {
      return absl::InvalidArgumentError(
          absl::StrCat("TfIdfVectorizer: X must be ",
                       strings_ ? "string (pool_strings)" : "int32 or int64 (pool_int64s)",
                       ", got ", x.TypeString()));
    }
    if (x.rank() > 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("TfIdfVectorizer: X must be [C] or [B, C], got ", ShapeToString(x.shape())));
    }
    if (x.rank() == 2) return Shape{x.dim(0), config_.output_size};
    return Shape{config_.output_size};
  }

  const Config config_;
  const bool strings_;
  std::unordered_map<int64_t, int32_t> int_ids_;
  std::unordered_map<std::string, int32_t> string_ids_;
  std::vector<Node> nodes_;  // nodes_[0] is the root
};

absl::StatusOr<std::unique_ptr<Kernel>> MakeTfIdfVectorizer(const Attributes& a) {
  using Ints = std::vector<int64_t>;
  TfIdfVectorizerKernel::Config c;
  const std::string mode = a.GetOr<std::string>("mode", "");
  if (mode == "TF") {
    c.mode = TfIdfMode::kTf;
  } else if (mode == "IDF") {
    c.mode = TfIdfMode::kIdf;
  } else if (mode == "TFIDF") {
    c.mode = TfIdfMode::kTfIdf;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("TfIdfVectorizer: mode must be TF, IDF or TFIDF, got '", mode, "'"));
  }
  c.min_gram = a.GetOr<int64_t>("min_gram_length", 0);
  c.max_gram = a.GetOr<int64_t>("max_gram_length", 0);
  c.max_skip = a.GetOr<int64_t>("max_skip_count", 0);
  if (c.min_gram < 1 || c.max_gram < c.min_gram || c.max_skip < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TfIdfVectorizer: need 1 <= min_gram_length <= max_gram_length and max_skip_count >= 0, "
        "got ",
        c.min_gram, ", ", c.max_gram, " and ", c.max_skip));
  }
  const Ints indexes = a.GetOr<Ints>("ngram_indexes", {});
  const Ints counts = a.GetOr<Ints>("ngram_counts", {});
  if (indexes.empty() || counts.empty()) {
    return absl::InvalidArgumentError(
        "TfIdfVectorizer: ngram_counts and ngram_indexes are required");
  }
  for (int64_t i : indexes) {
    if (i < 0 || i >= (int64_t{1} << 31)) {
      return absl::InvalidArgumentError(
          absl::StrCat("TfIdfVectorizer: ngram_indexes must be in [0, 2^31), got ", i));
    }
    c.output_size = std::max(c.output_size, i + 1);
  }
  if (auto w = a.Get<std::vector<double>>("weights"); w.ok()) {
    if (static_cast<int64_t>(w->size()) < c.output_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "TfIdfVectorizer: ", w->size(), " weights for ", c.output_size, " output columns"));
    }
    c.weights = *std::move(w);
  }
  const Ints pool_ints = a.GetOr<Ints>("pool_int64s", {});
  const auto pool_strings = a.GetOr<std::vector<std::string>>("pool_strings", {});
  if (pool_ints.empty() == pool_strings.empty()) {
    return absl::InvalidArgumentError(
        "TfIdfVectorizer: exactly one of pool_int64s and pool_strings must be given");
  }
  return TfIdfVectorizerKernel::Create(std::move(c), pool_ints, pool_strings, counts, indexes);
}

// ---------------------------------------------------------------------------------------------
// The ai.onnx.preview.training optimizers: one step for n tensors at once, with the learning
// rate R and the update count T as scalars. Inputs R, T, X1..Xn, G1..Gn, then the state lists
// (Adagrad: H; Momentum: V; Adam: V, H); outputs the new X list and the new state lists.
// Float and double; computed in double.
//   Adagrad:  g = c X + G; H' = H + g^2; X' = X - R / (1 + T decay) * g / (sqrt(H') + eps)
//   Momentum: g = c X + G; V' = alpha V + (T > 0 ? beta : 1) g;
//             X' = X - R V' (standard) or X - R (g + alpha V') (nesterov)
//   Adam:     g = c X + G; V' = alpha V + (1 - alpha) g; H' = beta H + (1 - beta) g^2;
//             R' = T > 0 ? R sqrt(1 - beta^T) / (1 - alpha^T) : R;
//             X' = (1 - c_post) (X - R' V' / (sqrt(H') + eps))

enum class Optimizer { kAdagrad, kMomentum, kAdam };

class OptimizerKernel final : public Kernel {
 public:
  OptimizerKernel(Optimizer kind, const Attributes& a)
      : kind_(kind),
        decay_(a.GetOr<double>("decay_factor", 0.0)),
        epsilon_(a.GetOr<double>("epsilon", 1e-6)),
        norm_(a.GetOr<double>("norm_coefficient", 0.0)),
        norm_post_(a.GetOr<double>("norm_coefficient_post", 0.0)),
        alpha_(a.GetOr<double>("alpha", kind == Optimizer::kAdam ? 0.9 : 0.0)),
        beta_(a.GetOr<double>("beta", kind == Optimizer::kAdam ? 0.999 : 0.0)),
        nesterov_(a.GetOr<std::string>("mode", "standard") == "nesterov") {}

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(const int n, Count(inputs));
    const int groups = kind_ == Optimizer::kAdam ? 4 : 3;
    if (static_cast<int>(outputs.size()) != (groups - 1) * n) {
      return absl::InvalidArgumentError(absl::StrCat(Name(), ": ", (groups - 1) * n,
                                                     " outputs expected, got ", outputs.size()));
    }
    const double r = kernel_util::ElementAsDouble(inputs[0], 0);
    const double t = kernel_util::ElementAsDouble(inputs[1], 0);
    for (int j = 0; j < n; ++j) {
      const Tensor& x = inputs[2 + j];
      std::vector<const Tensor*> in = {&x, &inputs[2 + n + j]};
      for (int g = 2; g < groups; ++g) in.push_back(&inputs[2 + g * n + j]);
      std::vector<Tensor*> out = {&outputs[j]};
      for (int g = 2; g < groups; ++g) out.push_back(&outputs[(g - 1) * n + j]);
      for (const Tensor* v : in) {
        if (!v->defined() || !IsFloat(v->dtype()) || v->shape() != x.shape()) {
          return absl::InvalidArgumentError(absl::StrCat(
              Name(), ": tensor ", j, "'s X, G and state must be float tensors of one shape"));
        }
      }
      for (size_t k = 0; k < out.size(); ++k) {
        NIMBLE_RETURN_IF_ERROR(
            CheckOutput(Name(), *out[k], in[k == 0 ? 0 : k + 1]->dtype(), x.shape()));
      }
      std::vector<Tensor> d(in.size());
      for (size_t k = 0; k < in.size(); ++k) {
        NIMBLE_ASSIGN_OR_RETURN(d[k], CastTo(*in[k], DType::kF64, Name()));
      }
      std::vector<Tensor> nd(out.size());
      for (size_t k = 0; k < out.size(); ++k) {
        NIMBLE_ASSIGN_OR_RETURN(nd[k], Tensor::Empty(DType::kF64, x.shape()));
      }
      for (int64_t i = 0; i < x.num_elements(); ++i) {
        const double xv = d[0].data<double>()[i];
        const double g = norm_ * xv + d[1].data<double>()[i];
        double x_new = xv;
        if (kind_ == Optimizer::kAdagrad) {
          const double h = d[2].data<double>()[i] + g * g;
          x_new = xv - r / (1.0 + t * decay_) * g / (std::sqrt(h) + epsilon_);
          nd[1].data<double>()[i] = h;
        } else if (kind_ == Optimizer::kMomentum) {
          const double v = alpha_ * d[2].data<double>()[i] + (t > 0 ? beta_ : 1.0) * g;
          x_new = nesterov_ ? xv - r * (g + alpha_ * v) : xv - r * v;
          nd[1].data<double>()[i] = v;
        } else {
          const double v = alpha_ * d[2].data<double>()[i] + (1.0 - alpha_) * g;
          const double h = beta_ * d[3].data<double>()[i] + (1.0 - beta_) * g * g;
          const double rate =
              t > 0 ? r * std::sqrt(1.0 - std::pow(beta_, t)) / (1.0 - std::pow(alpha_, t)) : r;
          x_new = (1.0 - norm_post_) * (xv - rate * v / (std::sqrt(h) + epsilon_));
          nd[1].data<double>()[i] = v;
          nd[2].data<double>()[i] = h;
        }
        nd[0].data<double>()[i] = x_new;
      }
      for (size_t k = 0; k < out.size(); ++k) {
        NIMBLE_RETURN_IF_ERROR(CastInto(nd[k], *out[k], Name()));
      }
    }
    return absl::OkStatus();
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    NIMBLE_ASSIGN_OR_RETURN(const int n, Count(inputs));
    for (size_t k = 0; k < output_shapes.size(); ++k) {
      output_shapes[k] = inputs[2 + static_cast<int>(k) % n].shape();
    }
    return absl::OkStatus();
  }

 private:
  const char* Name() const {
    return kind_ == Optimizer::kAdagrad ? "Adagrad"
                                        : (kind_ == Optimizer::kMomentum ? "Momentum" : "Adam");
  }
  absl::StatusOr<int> Count(absl::Span<const Tensor> inputs) const {
    const int groups = kind_ == Optimizer::kAdam ? 4 : 3;
    const int lists = static_cast<int>(inputs.size()) - 2;
    if (lists <= 0 || lists % groups != 0 || !inputs[0].defined() || !inputs[1].defined() ||
        inputs[0].num_elements() != 1 || inputs[1].num_elements() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          Name(), ": needs scalars R and T, then ", groups, " lists of equal length"));
    }
    return lists / groups;
  }

  const Optimizer kind_;
  const double decay_, epsilon_, norm_, norm_post_, alpha_, beta_;
  const bool nesterov_;
};

// RegexFullMatch (opset 20): whether each string matches `pattern` entirely. The pattern is
// compiled once (std::regex, ECMAScript grammar: RE2's syntax for the common constructs:
// classes, escapes \w \d \s, alternation, repetition, anchors).
class RegexFullMatchKernel final : public Kernel {
 public:
  explicit RegexFullMatchKernel(std::regex re) : re_(std::move(re)) {}

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("RegexFullMatch", inputs, 1, 1, outputs, 1));
    if (!inputs[0].defined() || inputs[0].dtype() != DType::kString) {
      return absl::InvalidArgumentError("RegexFullMatch: X must be a string tensor");
    }
    const Tensor& x = inputs[0];
    NIMBLE_RETURN_IF_ERROR(CheckOutput("RegexFullMatch", outputs[0], DType::kBool, x.shape()));
    // std::regex reports runaway backtracking by throwing: turned into a Status here.
    try {
      for (int64_t i = 0; i < x.num_elements(); ++i) {
        outputs[0].data<bool>()[i] = std::regex_match(x.data<std::string>()[i], re_);
      }
    } catch (const std::regex_error& e) {
      return absl::ResourceExhaustedError(absl::StrCat("RegexFullMatch: ", e.what()));
    }
    return absl::OkStatus();
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    return SameShape("RegexFullMatch", inputs, output_shapes);
  }

 private:
  const std::regex re_;
};

// ai.onnx.ml Binarizer: 1 where X > threshold, else 0, in X's type.
class BinarizerKernel final : public Kernel {
 public:
  explicit BinarizerKernel(double threshold) : threshold_(threshold) {}

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("Binarizer", inputs, 1, 1, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired("Binarizer", inputs, 1));
    const Tensor& x = inputs[0];
    if (!IsFloat(x.dtype()) && !IsInteger(x.dtype())) {
      return absl::InvalidArgumentError(
          absl::StrCat("Binarizer: X must be numeric, got ", x.TypeString()));
    }
    NIMBLE_RETURN_IF_ERROR(CheckOutput("Binarizer", outputs[0], x.dtype(), x.shape()));
    char* out = static_cast<char*>(outputs[0].raw_data());
    const size_t bytes = DTypeSize(x.dtype());
    for (int64_t i = 0; i < x.num_elements(); ++i) {
      const double v = kernel_util::ElementAsDouble(x, i);
      NIMBLE_RETURN_IF_ERROR(
          kernel_util::WriteScalar(x.dtype(), v > threshold_ ? 1.0 : 0.0, out + i * bytes));
    }
    return absl::OkStatus();
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    return SameShape("Binarizer", inputs, output_shapes);
  }

 private:
  const double threshold_;
};

// ai.onnx.ml ArrayFeatureExtractor: Z[..., k] = X[..., Y[k]] over X's last axis (a 1-D X reads
// as [1, N]); negative or out-of-range indices are errors. Any element type, strings too, so the
// kernel allocates its output.
class ArrayFeatureExtractorKernel final : public Kernel {
 public:
  bool allocates_outputs() const override { return true; }
  absl::Status OutputShapes(absl::Span<const Tensor>, absl::Span<Shape>) const override {
    return absl::UnimplementedError("ArrayFeatureExtractor allocates its output");
  }

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    constexpr absl::string_view kOp = "ArrayFeatureExtractor";
    NIMBLE_RETURN_IF_ERROR(CheckArity(kOp, inputs, 2, 2, outputs, 1));
    if (!inputs[0].defined() || !inputs[1].defined() || inputs[0].rank() < 1) {
      return absl::InvalidArgumentError("ArrayFeatureExtractor: X (rank >= 1) and Y are required");
    }
    const Tensor &x = inputs[0], &y = inputs[1];
    if (y.dtype() != DType::kI64) {
      return absl::InvalidArgumentError(
          absl::StrCat("ArrayFeatureExtractor: Y must be int64, got ", y.TypeString()));
    }
    const int64_t n = x.dim(x.rank() - 1), k = y.num_elements();
    const int64_t rows = n == 0 ? 0 : x.num_elements() / n;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t idx = y.data<int64_t>()[j];
      if (idx < 0 || idx >= n) {
        return absl::InvalidArgumentError(absl::StrCat("ArrayFeatureExtractor: index ", idx,
                                                       " is outside [0, ", n, ")"));
      }
    }
    Shape out_shape;
    if (x.rank() == 1) {
      out_shape = {1, k};
    } else {
      out_shape.assign(x.shape().begin(), x.shape().end() - 1);
      out_shape.push_back(k);
    }
    NIMBLE_ASSIGN_OR_RETURN(outputs[0], Tensor::Empty(x.dtype(), out_shape));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < k; ++j) {
        const int64_t from = r * n + y.data<int64_t>()[j], to = r * k + j;
        if (x.dtype() == DType::kString) {
          outputs[0].data<std::string>()[to] = x.data<std::string>()[from];
        } else {
          const size_t bytes = DTypeSize(x.dtype());
          std::memcpy(static_cast<char*>(outputs[0].raw_data()) + to * bytes,
                      static_cast<const char*>(x.raw_data()) + from * bytes, bytes);
        }
      }
    }
    return absl::OkStatus();
  }
};

// TensorScatter (opset 24): a KV-cache update. The output is past_cache with, for each batch
// row b, update's `seq` entries along `axis` written from write_indices[b] (default 0) on;
// mode "circular" wraps positions modulo the cache length, "linear" requires them to fit.
class TensorScatterKernel final : public Kernel {
 public:
  TensorScatterKernel(int64_t axis, bool circular) : axis_(axis), circular_(circular) {}

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("TensorScatter", inputs, 2, 3, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired("TensorScatter", inputs, 2));
    const Tensor &past = inputs[0], &update = inputs[1];
    NIMBLE_ASSIGN_OR_RETURN(const int axis, Axis(inputs));
    NIMBLE_RETURN_IF_ERROR(CheckOutput("TensorScatter", outputs[0], past.dtype(), past.shape()));
    const int64_t batch = past.dim(0), cache = past.dim(axis), seq = update.dim(axis);
    int64_t middle = 1, inner = 1;
    for (int d = 1; d < axis; ++d) middle *= past.dim(d);
    for (int d = axis + 1; d < past.rank(); ++d) inner *= past.dim(d);
    const size_t bytes = DTypeSize(past.dtype()) * static_cast<size_t>(inner);
    char* out = static_cast<char*>(outputs[0].raw_data());
    if (past.nbytes() > 0) std::memcpy(out, past.raw_data(), past.nbytes());
    const char* up = static_cast<const char*>(update.raw_data());
    const bool has_indices = inputs.size() > 2 && inputs[2].defined();
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t start =
          has_indices ? static_cast<int64_t>(kernel_util::ElementAsDouble(inputs[2], b)) : 0;
      if (start < 0 || (!circular_ && start + seq > cache) || (circular_ && start >= cache)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "TensorScatter: write index ", start, " with ", seq, " entries does not fit a cache of ",
            cache, circular_ ? " (circular)" : ""));
      }
      for (int64_t m = 0; m < middle; ++m) {
        for (int64_t t = 0; t < seq; ++t) {
          const int64_t pos = circular_ ? (start + t) % cache : start + t;
          std::memcpy(out + ((b * middle + m) * cache + pos) * bytes,
                      up + ((b * middle + m) * seq + t) * bytes, bytes);
        }
      }
    }
    return absl::OkStatus();
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    NIMBLE_RETURN_IF_ERROR(Axis(inputs).status());
    output_shapes[0] = inputs[0].shape();
    return absl::OkStatus();
  }

 private:
  absl::StatusOr<int> Axis(absl::Span<const Tensor> inputs) const {
    if (inputs.size() < 2 || !inputs[0].defined() || !inputs[1].defined()) {
      return absl::InvalidArgumentError("TensorScatter: past_cache and update are required");
    }
    const Tensor &past = inputs[0], &update = inputs[1];
    const int r = past.rank();
    const int64_t axis = axis_ < 0 ? axis_ + r : axis_;
    bool ok = update.dtype() == past.dtype() && update.rank() == r && axis >= 1 && axis < r &&
              update.dim(static_cast<int>(axis)) <= past.dim(static_cast<int>(axis));
    for (int d = 0; ok && d < r; ++d) ok = d == axis || update.dim(d) == past.dim(d);
    if (ok && inputs.size() > 2 && inputs[2].defined()) {
      ok = IsInteger(inputs[2].dtype()) && inputs[2].num_elements() == past.dim(0);
    }
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "TensorScatter: update ", update.TypeString(), " does not fit past_cache ",
          past.TypeString(), " along axis ", axis_, " (or write_indices is not one per batch)"));
    }
    return static_cast<int>(axis);
  }

  const int64_t axis_;
  const bool circular_;
};

// ai.onnx.ml LabelEncoder (opset 4): each element of X looked up among the keys (keys_strings,
// keys_int64s, keys_floats or keys_tensor) and replaced by the value at the same position
// (values_*), or by the default (default_string "_Unused", default_int64 -1, default_float -0.0,
// or default_tensor). Float keys compare by value, NaN matching NaN. String outputs are
// allocated by the kernel.
class LabelEncoderKernel final : public Kernel {
 public:
  LabelEncoderKernel(Tensor keys, Tensor values, Tensor fallback)
      : keys_(std::move(keys)), values_(std::move(values)), default_(std::move(fallback)) {
    for (int64_t i = 0; i < keys_.num_elements(); ++i) {
      if (keys_.dtype() == DType::kString) {
        strings_.emplace(keys_.data<std::string>()[i], i);
      } else {
        const double k = kernel_util::ElementAsDouble(keys_, i);
        if (std::isnan(k)) {
          nan_index_ = i;
        } else {
          numbers_.emplace(k, i);
        }
      }
    }
  }

  bool allocates_outputs() const override { return values_.dtype() == DType::kString; }

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("LabelEncoder", inputs, 1, 1, outputs, 1));
    if (!inputs[0].defined()) return absl::InvalidArgumentError("LabelEncoder: X is required");
    const Tensor& x = inputs[0];
    if ((x.dtype() == DType::kString) != (keys_.dtype() == DType::kString)) {
      return absl::InvalidArgumentError(absl::StrCat("LabelEncoder: X is ", x.TypeString(),
                                                     " but the keys are ", keys_.TypeString()));
    }
    if (allocates_outputs()) {
      NIMBLE_ASSIGN_OR_RETURN(outputs[0], Tensor::Empty(DType::kString, x.shape()));
    } else {
      NIMBLE_RETURN_IF_ERROR(CheckOutput("LabelEncoder", outputs[0], values_.dtype(), x.shape()));
    }
    const size_t bytes = DTypeSize(values_.dtype());
    for (int64_t i = 0; i < x.num_elements(); ++i) {
      int64_t at = -1;
      if (x.dtype() == DType::kString) {
        auto it = strings_.find(x.data<std::string>()[i]);
        if (it != strings_.end()) at = it->second;
      } else {
        const double k = kernel_util::ElementAsDouble(x, i);
        if (std::isnan(k)) {
          at = nan_index_;
        } else if (auto it = numbers_.find(k); it != numbers_.end()) {
          at = it->second;
        }
      }
      const Tensor& from = at >= 0 ? values_ : default_;
      const int64_t index = at >= 0 ? at : 0;
      if (values_.dtype() == DType::kString) {
        outputs[0].data<std::string>()[i] = from.data<std::string>()[index];
      } else {
        std::memcpy(static_cast<char*>(outputs[0].raw_data()) + i * bytes,
                    static_cast<const char*>(from.raw_data()) + index * bytes, bytes);
      }
    }
    return absl::OkStatus();
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    return SameShape("LabelEncoder", inputs, output_shapes);
  }

 private:
  const Tensor keys_, values_, default_;
  std::unordered_map<std::string, int64_t> strings_;
  std::map<double, int64_t> numbers_;
  int64_t nan_index_ = -1;
};

absl::StatusOr<std::unique_ptr<Kernel>> MakeLabelEncoder(const Attributes& a) {
  auto list = [&](const char* prefix) -> absl::StatusOr<Tensor> {
    const std::string p = prefix;
    if (auto v = a.Get<std::vector<std::string>>(p + "_strings"); v.ok()) {
      NIMBLE_ASSIGN_OR_RETURN(Tensor t, Tensor::Empty(DType::kString,
                                                      {static_cast<int64_t>(v->size())}));
      for (size_t i = 0; i < v->size(); ++i) t.data<std::string>()[i] = (*v)[i];
      return t;
    }
    if (auto v = a.Get<std::vector<int64_t>>(p + "_int64s"); v.ok()) {
      return Tensor::FromVector<int64_t>(*v, {static_cast<int64_t>(v->size())});
    }
    if (auto v = a.Get<std::vector<double>>(p + "_floats"); v.ok()) {
      std::vector<float> f(v->begin(), v->end());
      return Tensor::FromVector<float>(f, {static_cast<int64_t>(f.size())});
    }
    if (auto t = a.Get<Tensor>(p + "_tensor"); t.ok()) return *t;
    return absl::InvalidArgumentError(absl::StrCat("LabelEncoder: no ", p, " attribute"));
  };
  NIMBLE_ASSIGN_OR_RETURN(Tensor keys, list("keys"));
  NIMBLE_ASSIGN_OR_RETURN(Tensor values, list("values"));
  if (keys.num_elements() != values.num_elements()) {
    return absl::InvalidArgumentError(absl::StrCat("LabelEncoder: ", keys.num_elements(),
                                                   " keys but ", values.num_elements(), " values"));
  }
  Tensor fallback;
  if (auto t = a.Get<Tensor>("default_tensor"); t.ok()) {
    if (t->dtype() != values.dtype() || t->num_elements() < 1) {
      return absl::InvalidArgumentError("LabelEncoder: default_tensor must hold one value");
    }
    fallback = *t;
  } else if (values.dtype() == DType::kString) {
    NIMBLE_ASSIGN_OR_RETURN(fallback, Tensor::Empty(DType::kString, {1}));
    fallback.data<std::string>()[0] = a.GetOr<std::string>("default_string", "_Unused");
  } else if (values.dtype() == DType::kI64) {
    fallback = Tensor::FromVector<int64_t>({a.GetOr<int64_t>("default_int64", -1)}, {1});
  } else if (values.dtype() == DType::kF32) {
    fallback = Tensor::FromVector<float>({static_cast<float>(a.GetOr<double>("default_float", -0.0))},
                                         {1});
  } else {
    NIMBLE_ASSIGN_OR_RETURN(fallback, Tensor::Empty(values.dtype(), {1}));
    std::memset(fallback.raw_data(), 0, fallback.nbytes());
  }
  return std::make_unique<LabelEncoderKernel>(std::move(keys), std::move(values),
                                              std::move(fallback));
}

// ---------------------------------------------------------------------------------------------
// ai.onnx.ml TreeEnsemble (opset 5): each row of X [N, F] walks every tree of the ensemble from
// its root (tree_roots). Interior node i compares feature nodes_featureids[i] with
// nodes_splits[i] by nodes_modes[i] (LEQ, LT, GTE, GT, EQ, NEQ, or MEMBER of the i-th
// NaN-delimited set of membership_values; a NaN feature goes the true way where
// nodes_missing_value_tracks_true) and branches to another node or to a leaf, which gives
// leaf_weights[j] to target leaf_targetids[j]. Leaves are aggregated per target (SUM, AVERAGE
// over the trees, MIN, MAX; MIN and MAX start from the type's extreme, as ONNX's reference
// does), then post-transformed (NONE, SOFTMAX, LOGISTIC, SOFTMAX_ZERO, PROBIT). Y [N, n_targets]
// in X's type, computed in double. A walk longer than the node count (a cycle) is an error.

enum class TreeMode { kLeq, kLt, kGte, kGt, kEq, kNeq, kMember };
enum class TreeAggregate { kAverage, kSum, kMin, kMax };
enum class TreePost { kNone, kSoftmax, kLogistic, kSoftmaxZero, kProbit };

// The inverse error function: Winitzki's approximation refined by two Newton steps.
double ErfInv(double y) {
  if (y <= -1.0) return -std::numeric_limits<double>::infinity();
  if (y >= 1.0) return std::numeric_limits<double>::infinity();
  constexpr double kA = 0.147;
  const double ln = std::log(1.0 - y * y), t = 2.0 / (M_PI * kA) + ln / 2.0;
  double x = std::copysign(std::sqrt(std::sqrt(t * t - ln / kA) - t), y);
  for (int i = 0; i < 2; ++i) {
    x -= (std::erf(x) - y) / (2.0 / std::sqrt(M_PI) * std::exp(-x * x));
  }
  return x;
}

class TreeEnsembleKernel final : public Kernel {
 public:
  struct Branch {
    bool leaf = false;
    int64_t index = 0;  // into the nodes, or the leaves
  };
  struct Node {
    TreeMode mode = TreeMode::kLeq;
    int64_t feature = 0;
    double split = 0;
    bool missing_true = false;
    int64_t set = -1;  // into Model::sets for kMember
    Branch if_true, if_false;
  };
  struct Model {
    std::vector<Node> nodes;
    std::vector<std::vector<double>> sets;  // sorted
    std::vector<int64_t> leaf_targets;
    std::vector<double> leaf_weights;
    std::vector<int64_t> roots;
    int64_t n_targets = 0, max_feature = -1;
    TreeAggregate aggregate = TreeAggregate::kSum;
    TreePost post = TreePost::kNone;
  };

  explicit TreeEnsembleKernel(Model model) : m_(std::move(model)) {}

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("TreeEnsemble", inputs, 1, 1, outputs, 1));
    NIMBLE_ASSIGN_OR_RETURN(const Shape out_shape, OutShape(inputs));
    const Tensor& x = inputs[0];
    NIMBLE_RETURN_IF_ERROR(CheckOutput("TreeEnsemble", outputs[0], x.dtype(), out_shape));
    NIMBLE_ASSIGN_OR_RETURN(Tensor xd, CastTo(x, DType::kF64, "TreeEnsemble"));
    NIMBLE_ASSIGN_OR_RETURN(Tensor yd, Tensor::Empty(DType::kF64, out_shape));
    const double extreme = x.dtype() == DType::kF64   ? std::numeric_limits<double>::max()
                           : x.dtype() == DType::kF32 ? std::numeric_limits<float>::max()
                           : x.dtype() == DType::kF16 ? 65504.0
                                                      : 3.3895313892515355e38;  // bf16
    const int64_t features = x.dim(1), targets = m_.n_targets;
    const double trees = static_cast<double>(m_.roots.size());
    for (int64_t r = 0; r < x.dim(0); ++r) {
      const double* row = xd.data<double>() + r * features;
      double* y = yd.data<double>() + r * targets;
      const double init = m_.aggregate == TreeAggregate::kMin   ? extreme
                          : m_.aggregate == TreeAggregate::kMax ? -extreme
                                                                : 0.0;
      std::fill(y, y + targets, init);
      for (int64_t root : m_.roots) {
        NIMBLE_ASSIGN_OR_RETURN(const int64_t leaf, Walk(row, root));
        double& v = y[m_.leaf_targets[leaf]];
        const double w = m_.leaf_weights[leaf];
        switch (m_.aggregate) {
          case TreeAggregate::kSum:
            v += w;
            break;
          case TreeAggregate::kAverage:
            v += w / trees;
            break;
          case TreeAggregate::kMin:
            v = std::min(v, w);
            break;
          case TreeAggregate::kMax:
            v = std::max(v, w);
            break;
        }
      }
      PostTransform(y, targets);
    }
    return CastInto(yd, outputs[0], "TreeEnsemble");
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    NIMBLE_ASSIGN_OR_RETURN(output_shapes[0], OutShape(inputs));
    return absl::OkStatus();
  }

 private:
  absl::StatusOr<Shape> OutShape(absl::Span<const Tensor> inputs) const {
    if (inputs.empty() || !inputs[0].defined()) {
      return absl::InvalidArgumentError("TreeEnsemble: X is required");
    }
    const Tensor& x = inputs[0];
    if (!IsFloat(x.dtype()) || x.rank() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("TreeEnsemble: X must be a float tensor [N, F], got ", x.TypeString()));
    }
    if (m_.max_feature >= x.dim(1)) {
      return absl::InvalidArgumentError(absl::StrCat("TreeEnsemble: a node tests feature ",
                                                     m_.max_feature, " of X ",
                                                     ShapeToString(x.shape())));
    }
    return Shape{x.dim(0), m_.n_targets};
  }

  bool Holds(const Node& n, double x) const {
    if (n.missing_true && std::isnan(x)) return true;
    switch (n.mode) {
      case TreeMode::kLeq:
        return x <= n.split;
      case TreeMode::kLt:
        return x < n.split;
      case TreeMode::kGte:
        return x >= n.split;
      case TreeMode::kGt:
        return x > n.split;
      case TreeMode::kEq:
        return x == n.split;
      case TreeMode::kNeq:
        return x != n.split;
      case TreeMode::kMember:
        return std::binary_search(m_.sets[n.set].begin(), m_.sets[n.set].end(), x);
    }
    return false;
  }

  // The leaf that `row` reaches from node `root`.
  absl::StatusOr<int64_t> Walk(const double* row, int64_t root) const {
    Branch at{false, root};
    for (size_t steps = 0; !at.leaf; ++steps) {
      if (steps > m_.nodes.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("TreeEnsemble: the tree at node ", root, " has a cycle"));
      }
      const Node& n = m_.nodes[at.index];
      at = Holds(n, row[n.feature]) ? n.if_true : n.if_false;
    }
    return at.index;
  }

  void PostTransform(double* y, int64_t n) const {
    switch (m_.post) {
      case TreePost::kNone:
        return;
      case TreePost::kLogistic:
        for (int64_t i = 0; i < n; ++i) y[i] = 1.0 / (1.0 + std::exp(-y[i]));
        return;
      case TreePost::kProbit:
        for (int64_t i = 0; i < n; ++i) y[i] = std::sqrt(2.0) * ErfInv(2.0 * y[i] - 1.0);
        return;
      case TreePost::kSoftmax:
      case TreePost::kSoftmaxZero: {
        // SOFTMAX_ZERO leaves zero scores at zero and out of the sum.
        const bool skip_zero = m_.post == TreePost::kSoftmaxZero;
        double top = -std::numeric_limits<double>::infinity(), sum = 0.0;
        for (int64_t i = 0; i < n; ++i) {
          if (!(skip_zero && y[i] == 0.0)) top = std::max(top, y[i]);
        }
        for (int64_t i = 0; i < n; ++i) {
          if (skip_zero && y[i] == 0.0) continue;
          y[i] = std::exp(y[i] - top);
          sum += y[i];
        }
        for (int64_t i = 0; i < n && sum > 0.0; ++i) y[i] /= sum;
        return;
      }
    }
  }

  const Model m_;
};

absl::StatusOr<std::unique_ptr<Kernel>> MakeTreeEnsemble(const Attributes& a) {
  using Ints = std::vector<int64_t>;
  auto values = [&](const char* name, bool required) -> absl::StatusOr<std::vector<double>> {
    auto t = a.Get<Tensor>(name);
    if (!t.ok()) {
      if (!required && absl::IsNotFound(t.status())) return std::vector<double>{};
      return absl::InvalidArgumentError(
          absl::StrCat("TreeEnsemble: tensor attribute '", name, "' is required"));
    }
    if (t->dtype() == DType::kString) {
      return absl::InvalidArgumentError(absl::StrCat("TreeEnsemble: '", name, "' is not numeric"));
    }
    std::vector<double> v(static_cast<size_t>(t->num_elements()));
    for (int64_t i = 0; i < t->num_elements(); ++i) v[i] = kernel_util::ElementAsDouble(*t, i);
    return v;
  };
  NIMBLE_ASSIGN_OR_RETURN(const std::vector<double> modes, values("nodes_modes", true));
  NIMBLE_ASSIGN_OR_RETURN(const std::vector<double> splits, values("nodes_splits", true));
  NIMBLE_ASSIGN_OR_RETURN(const std::vector<double> weights, values("leaf_weights", true));
  NIMBLE_ASSIGN_OR_RETURN(const std::vector<double> members, values("membership_values", false));
  const Ints features = a.GetOr<Ints>("nodes_featureids", {});
  const Ints true_ids = a.GetOr<Ints>("nodes_truenodeids", {});
  const Ints false_ids = a.GetOr<Ints>("nodes_falsenodeids", {});
  const Ints true_leafs = a.GetOr<Ints>("nodes_trueleafs", {});
  const Ints false_leafs = a.GetOr<Ints>("nodes_falseleafs", {});
  const Ints missing = a.GetOr<Ints>("nodes_missing_value_tracks_true", {});
  const size_t n = modes.size();
  if (n == 0 || splits.size() != n || features.size() != n || true_ids.size() != n ||
      false_ids.size() != n || true_leafs.size() != n || false_leafs.size() != n ||
      (!missing.empty() && missing.size() != n)) {
    return absl::InvalidArgumentError(
        "TreeEnsemble: the nodes_* attributes must be non-empty and of one length");
  }
  TreeEnsembleKernel::Model m;
  m.leaf_targets = a.GetOr<Ints>("leaf_targetids", {});
  m.leaf_weights = weights;
  m.roots = a.GetOr<Ints>("tree_roots", {});
  m.n_targets = a.GetOr<int64_t>("n_targets", 0);
  const int64_t aggregate = a.GetOr<int64_t>("aggregate_function", 1);
  const int64_t post = a.GetOr<int64_t>("post_transform", 0);
  if (m.leaf_targets.empty() || m.leaf_targets.size() != weights.size()) {
    return absl::InvalidArgumentError(
        "TreeEnsemble: leaf_targetids and leaf_weights must be non-empty and of one length");
  }
  if (m.n_targets < 1 || m.n_targets > (int64_t{1} << 31) || m.roots.empty() || aggregate < 0 ||
      aggregate > 3 || post < 0 || post > 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TreeEnsemble: need n_targets >= 1 and tree_roots, aggregate_function in [0, 3] and "
        "post_transform in [0, 4]; got ",
        m.n_targets, ", ", m.roots.size(), " roots, ", aggregate, " and ", post));
  }
  m.aggregate = static_cast<TreeAggregate>(aggregate);
  m.post = static_cast<TreePost>(post);
  for (int64_t t : m.leaf_targets) {
    if (t < 0 || t >= m.n_targets) {
      return absl::InvalidArgumentError(
          absl::StrCat("TreeEnsemble: leaf target ", t, " is outside [0, ", m.n_targets, ")"));
    }
  }
  const auto num_nodes = static_cast<int64_t>(n);
  const auto num_leaves = static_cast<int64_t>(weights.size());
  for (int64_t r : m.roots) {
    if (r < 0 || r >= num_nodes) {
      return absl::InvalidArgumentError(
          absl::StrCat("TreeEnsemble: tree root ", r, " is not a node"));
    }
  }
  size_t next_member = 0;
  for (size_t i = 0; i < n; ++i) {
    TreeEnsembleKernel::Node node;
    const double mode = modes[i];
    if (!(mode >= 0 && mode <= 6) || mode != std::floor(mode)) {
      return absl::InvalidArgumentError(absl::StrCat("TreeEnsemble: node ", i, " has mode ", mode));
    }
    node.mode = static_cast<TreeMode>(static_cast<int>(mode));
    node.feature = features[i];
    node.split = splits[i];
    node.missing_true = !missing.empty() && missing[i] != 0;
    if (node.feature < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("TreeEnsemble: node ", i, " has feature id ", node.feature));
    }
    m.max_feature = std::max(m.max_feature, node.feature);
    auto branch = [&](int64_t id, int64_t leaf) -> absl::StatusOr<TreeEnsembleKernel::Branch> {
      const int64_t limit = leaf != 0 ? num_leaves : num_nodes;
      if (id < 0 || id >= limit) {
        return absl::InvalidArgumentError(absl::StrCat("TreeEnsemble: node ", i, " branches to ",
                                                       leaf != 0 ? "leaf " : "node ", id, " of ",
                                                       limit));
      }
      return TreeEnsembleKernel::Branch{leaf != 0, id};
    };
    NIMBLE_ASSIGN_OR_RETURN(node.if_true, branch(true_ids[i], true_leafs[i]));
    NIMBLE_ASSIGN_OR_RETURN(node.if_false, branch(false_ids[i], false_leafs[i]));
    if (node.mode == TreeMode::kMember) {
      if (next_member >= members.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("TreeEnsemble: membership_values has no set for the MEMBER node ", i));
      }
      std::vector<double> set;
      while (next_member < members.size() && !std::isnan(members[next_member])) {
        set.push_back(members[next_member++]);
      }
      ++next_member;  // the NaN (or the end)
      std::sort(set.begin(), set.end());
      node.set = static_cast<int64_t>(m.sets.size());
      m.sets.push_back(std::move(set));
    }
    m.nodes.push_back(node);
  }
  return std::make_unique<TreeEnsembleKernel>(std::move(m));
}

class ShrinkKernel final : public Kernel {
 public:
  ShrinkKernel(double lambd, double bias) : lambd_(lambd), bias_(bias) {}

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("Shrink", inputs, 1, 1, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired("Shrink", inputs, 1));
    const Tensor& x = inputs[0];
    NIMBLE_RETURN_IF_ERROR(CheckOutput("Shrink", outputs[0], x.dtype(), x.shape()));
    auto shrink = [&](double v) {
      return v < -lambd_ ? v + bias_ : (v > lambd_ ? v - bias_ : 0.0);
    };
    if (IsHalf(x.dtype())) {
      NIMBLE_ASSIGN_OR_RETURN(Tensor xf, CastTo(x, DType::kF32, "Shrink"));
      return WithF32Output("Shrink", outputs[0], [&](float* out) {
        for (int64_t i = 0; i < x.num_elements(); ++i) {
          out[i] = static_cast<float>(shrink(xf.data<float>()[i]));
        }
        return absl::OkStatus();
      });
    }
    return VisitDType<kNumeric>(x.dtype(), "Shrink", [&](auto tag) {
      using T = typename decltype(tag)::type;
      for (int64_t i = 0; i < x.num_elements(); ++i) {
        outputs[0].data<T>()[i] = static_cast<T>(shrink(static_cast<double>(x.data<T>()[i])));
      }
      return absl::OkStatus();
    });
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    return SameShape("Shrink", inputs, output_shapes);
  }

 private:
  const double lambd_;
  const double bias_;
};

// ------------------------------------------------------------------------------------------
// LRN(x) over the channel axis of [N, C, d...].

class LrnKernel final : public Kernel {
 public:
  LrnKernel(int64_t size, double alpha, double beta, double bias)
      : size_(size), alpha_(alpha), beta_(beta), bias_(bias) {}

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("LRN", inputs, 1, 1, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired("LRN", inputs, 1));
    const Tensor& x = inputs[0];
    NIMBLE_RETURN_IF_ERROR(CheckOutput("LRN", outputs[0], x.dtype(), x.shape()));
    if (x.rank() < 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("LRN: input must have rank >= 2 ([N, C, ...]), got ", x.TypeString()));
    }
    if (size_ <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("LRN: size must be positive, got ", size_));
    }
    NIMBLE_ASSIGN_OR_RETURN(Tensor xf, AsF32("LRN", "X", x));
    const int64_t n = x.dim(0), c = x.dim(1);
    int64_t inner = 1;
    for (int i = 2; i < x.rank(); ++i) inner *= x.dim(i);
    const int64_t lo = (size_ - 1) / 2, hi = size_ - 1 - lo;
    const float* xp = xf.data<float>();
    return WithF32Output("LRN", outputs[0], [&](float* out) {
      for (int64_t b = 0; b < n; ++b) {
        for (int64_t ch = 0; ch < c; ++ch) {
          const int64_t c0 = std::max<int64_t>(0, ch - lo), c1 = std::min(c - 1, ch + hi);
          for (int64_t d = 0; d < inner; ++d) {
            double sq = 0.0;
            for (int64_t k = c0; k <= c1; ++k) {
              const double v = xp[(b * c + k) * inner + d];
              sq += v * v;
            }
            const int64_t idx = (b * c + ch) * inner + d;
            out[idx] = static_cast<float>(
                xp[idx] / std::pow(bias_ + alpha_ / static_cast<double>(size_) * sq, beta_));
          }
        }
      }
      return absl::OkStatus();
    });
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    return SameShape("LRN", inputs, output_shapes);
  }

 private:
  const int64_t size_;
  const double alpha_, beta_, bias_;
};

// ------------------------------------------------------------------------------------------
// LpPool(x) over the spatial axes of [N, C, d...].

struct PoolGeometry {
  std::vector<int64_t> out, pad_begin;
};

class LpPoolKernel final : public Kernel {
 public:
  LpPoolKernel(std::vector<int64_t> kernel, std::vector<int64_t> strides, std::vector<int64_t> pads,
               std::vector<int64_t> dilations, bool ceil_mode, double p, std::string auto_pad)
      : kernel_(std::move(kernel)),
        strides_(std::move(strides)),
        pads_(std::move(pads)),
        dilations_(std::move(dilations)),
        ceil_mode_(ceil_mode),
        p_(p),
        auto_pad_(std::move(auto_pad)) {}

  absl::StatusOr<PoolGeometry> Geometry(const Shape& x) const {
    const int64_t sp = static_cast<int64_t>(x.size()) - 2;
    if (sp < 1 || static_cast<int64_t>(kernel_.size()) != sp) {
      return absl::InvalidArgumentError(absl::StrCat("LpPool: input must be [N, C, d...] with ",
                                                     kernel_.size(), " spatial axes, got rank ",
                                                     x.size()));
    }
    auto at = [&](const std::vector<int64_t>& v, int64_t i, int64_t dflt) {
      return v.empty() ? dflt : v[i];
    };
    if ((!strides_.empty() && static_cast<int64_t>(strides_.size()) != sp) ||
        (!dilations_.empty() && static_cast<int64_t>(dilations_.size()) != sp) ||
        (!pads_.empty() && static_cast<int64_t>(pads_.size()) != 2 * sp)) {
      return absl::InvalidArgumentError("LpPool: strides, dilations or pads have the wrong length");
    }
    PoolGeometry g;
    for (int64_t i = 0; i < sp; ++i) {
      const int64_t in = x[i + 2], k = kernel_[i], s = at(strides_, i, 1), d = at(dilations_, i, 1);
      if (k <= 0 || s <= 0 || d <= 0) {
        return absl::InvalidArgumentError(
            "LpPool: kernel_shape, strides and dilations must be positive");
      }
      const int64_t ek = d * (k - 1) + 1;
      int64_t out = 0, pb = 0;
      if (auto_pad_ == "SAME_UPPER" || auto_pad_ == "SAME_LOWER") {
        out = (in + s - 1) / s;
        const int64_t total = std::max<int64_t>(0, (out - 1) * s + ek - in);
        pb = auto_pad_ == "SAME_UPPER" ? total / 2 : total - total / 2;
      } else if (auto_pad_ == "VALID") {
        out = in >= ek ? (in - ek) / s + 1 : 0;
      } else if (auto_pad_ == "NOTSET" || auto_pad_.empty()) {
        pb = at(pads_, i, 0);
        const int64_t pe = at(pads_, i + sp, 0);
        const int64_t span = in + pb + pe - ek;
        if (span < 0) {
          out = 0;
        } else {
          out = (ceil_mode_ ? (span + s - 1) / s : span / s) + 1;
          if (ceil_mode_ && (out - 1) * s >= in + pb) --out;
        }
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("LpPool: unknown auto_pad '", auto_pad_, "'"));
      }
      g.out.push_back(out);
      g.pad_begin.push_back(pb);
    }
    return g;
  }

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("LpPool", inputs, 1, 1, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired("LpPool", inputs, 1));
    const Tensor& x = inputs[0];
    NIMBLE_ASSIGN_OR_RETURN(PoolGeometry g, Geometry(x.shape()));
    Shape out_shape = {x.dim(0), x.dim(1)};
    for (int64_t o : g.out) out_shape.push_back(o);
    NIMBLE_RETURN_IF_ERROR(CheckOutput("LpPool", outputs[0], x.dtype(), out_shape));
    NIMBLE_ASSIGN_OR_RETURN(Tensor xf, AsF32("LpPool", "X", x));
    const int sp = x.rank() - 2;
    int64_t in_size = 1, out_size = 1;
    for (int i = 0; i < sp; ++i) in_size *= x.dim(i + 2), out_size *= g.out[i];
    int64_t k_count = 1;
    for (int64_t k : kernel_) k_count *= k;
    const float* xp = xf.data<float>();
    return WithF32Output("LpPool", outputs[0], [&](float* out) {
      std::vector<int64_t> oi(sp), ki(sp);
      for (int64_t plane = 0; plane < x.dim(0) * x.dim(1); ++plane) {
        const float* src = xp + plane * in_size;
        for (int64_t o = 0; o < out_size; ++o) {
          int64_t rem = o;
          for (int i = sp - 1; i >= 0; --i) oi[i] = rem % g.out[i], rem /= g.out[i];
          double acc = 0.0;
          for (int64_t kk = 0; kk < k_count; ++kk) {
            int64_t krem = kk, offset = 0;
            bool inside = true;
            for (int i = sp - 1; i >= 0; --i) ki[i] = krem % kernel_[i], krem /= kernel_[i];
            for (int i = 0; i < sp; ++i) {
              const int64_t s = strides_.empty() ? 1 : strides_[i];
              const int64_t d = dilations_.empty() ? 1 : dilations_[i];
              const int64_t pos = oi[i] * s - g.pad_begin[i] + ki[i] * d;
              if (pos < 0 || pos >= x.dim(i + 2)) {
                inside = false;
                break;
              }
              offset = offset * x.dim(i + 2) + pos;
            }
            if (inside) acc += std::pow(std::abs(static_cast<double>(src[offset])), p_);
          }
          out[plane * out_size + o] = static_cast<float>(std::pow(acc, 1.0 / p_));
        }
      }
      return absl::OkStatus();
    });
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.empty() || !inputs[0].defined() || output_shapes.size() != 1) {
      return absl::InvalidArgumentError("LpPool: expected an input and one output");
    }
    NIMBLE_ASSIGN_OR_RETURN(PoolGeometry g, Geometry(inputs[0].shape()));
    Shape s = {inputs[0].dim(0), inputs[0].dim(1)};
    for (int64_t o : g.out) s.push_back(o);
    output_shapes[0] = s;
    return absl::OkStatus();
  }

 private:
  const std::vector<int64_t> kernel_, strides_, pads_, dilations_;
  const bool ceil_mode_;
  const double p_;
  const std::string auto_pad_;
};

// ------------------------------------------------------------------------------------------
// QuantizeLinear(x, y_scale, y_zero_point?) and DequantizeLinear(x, x_scale, x_zero_point?):
// per-tensor, per-axis and blocked scales; integer types (4- and 2-bit ones included), float8 and
// float4e2m1. Float8/float4 quantize as x / scale + zero_point cast with 'saturate' (lowp.h).

// Maps each element of `x` to its scale/zero-point index.
class ScaleIndexer {
 public:
  static absl::StatusOr<ScaleIndexer> Make(absl::string_view op, const Tensor& x,
                                           const Tensor& scale, int64_t axis, int64_t block) {
    ScaleIndexer ix;
    if (scale.num_elements() == 1 && (scale.rank() == 0 || block <= 0)) return ix;
    NIMBLE_ASSIGN_OR_RETURN(int a, NormalizeAxis(op, axis, std::max(x.rank(), 1)));
    if (x.rank() == 0) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": a scalar input needs a scalar scale"));
    }
    ix.axis_dim_ = x.dim(a);
    for (int i = a + 1; i < x.rank(); ++i) ix.inner_ *= x.dim(i);
    if (block <= 0) {
      if (scale.rank() != 1 || scale.dim(0) != ix.axis_dim_) {
        return absl::InvalidArgumentError(absl::StrCat(
            op, ": per-axis scale must be [", ix.axis_dim_, "], got ", scale.TypeString()));
      }
      ix.mode_ = kAxis;
      return ix;
    }
    ix.block_ = block;
    ix.blocks_ = (ix.axis_dim_ + block - 1) / block;
    bool ok = scale.rank() == x.rank();
    for (int i = 0; ok && i < x.rank(); ++i) {
      ok = scale.dim(i) == (i == a ? ix.blocks_ : x.dim(i));
    }
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": blocked scale shape ",
                                                     scale.TypeString(), " does not match input ",
                                                     x.TypeString()));
    }
    ix.mode_ = kBlocked;
    return ix;
  }

  int64_t operator()(int64_t i) const {
    switch (mode_) {
      case kTensor:
        return 0;
      case kAxis:
        return (i / inner_) % axis_dim_;
      case kBlocked: {
        const int64_t in = i % inner_, a = (i / inner_) % axis_dim_;
        const int64_t o = i / (inner_ * axis_dim_);
        return (o * blocks_ + a / block_) * inner_ + in;
      }
    }
    return 0;
  }

 private:
  enum Mode { kTensor, kAxis, kBlocked };
  Mode mode_ = kTensor;
  int64_t axis_dim_ = 1, inner_ = 1, block_ = 1, blocks_ = 1;
};

// An integer tensor's values as int64.
absl::StatusOr<std::vector<int64_t>> IntValues(absl::string_view op, absl::string_view what,
                                               const Tensor& t) {
  std::vector<int64_t> out(t.num_elements());
  if (IsLowPrecisionInteger(t.dtype())) {
    // One element per byte, sign-extended for i4/i2.
    const bool is_signed = IsSigned(t.dtype());
    const auto* b = static_cast<const uint8_t*>(t.raw_data());
    for (int64_t i = 0; i < t.num_elements(); ++i) {
      out[i] = is_signed ? static_cast<int8_t>(b[i]) : b[i];
    }
    return out;
  }
  absl::Status s = VisitDType<kInts>(t.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    for (int64_t i = 0; i < t.num_elements(); ++i) out[i] = static_cast<int64_t>(t.data<T>()[i]);
    return absl::OkStatus();
  });
  if (!s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", what, " must be an integer tensor, got ", DTypeName(t.dtype())));
  }
  return out;
}

class QuantizeKernel final : public Kernel {
 public:
  QuantizeKernel(bool quantize, int64_t axis, int64_t block, bool saturate)
      : op_(quantize ? "QuantizeLinear" : "DequantizeLinear"),
        quantize_(quantize),
        axis_(axis),
        block_(block),
        saturate_(saturate) {}

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op_, inputs, 2, 3, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired(op_, inputs, 2));
    const Tensor& x = inputs[0];
    const Tensor& scale = inputs[1];
    const Tensor zp = inputs.size() > 2 ? inputs[2] : Tensor();
    NIMBLE_RETURN_IF_ERROR(CheckOutput(op_, outputs[0], outputs[0].dtype(), x.shape()));
    NIMBLE_ASSIGN_OR_RETURN(ScaleIndexer ix, ScaleIndexer::Make(op_, x, scale, axis_, block_));
    NIMBLE_ASSIGN_OR_RETURN(Tensor sf, AsF32(op_, "scale", scale));
    if (zp.defined() && zp.num_elements() != scale.num_elements()) {
      return absl::InvalidArgumentError(absl::StrCat(op_, ": zero point ", zp.TypeString(),
                                                     " does not match scale ", scale.TypeString()));
    }
    // The quantized side: x for DequantizeLinear, y for QuantizeLinear.
    const DType qtype = quantize_ ? outputs[0].dtype() : x.dtype();
    if (quantize_ && zp.defined() && zp.dtype() != qtype) {
      return absl::InvalidArgumentError(
          absl::StrCat(op_, ": zero point dtype ", DTypeName(zp.dtype()),
                       " differs from the output's ", DTypeName(qtype)));
    }
    if (IsLowPrecisionFloat(qtype)) return RunFloat(x, sf, zp, ix, outputs[0]);
    const float* sc = sf.data<float>();
    std::vector<int64_t> zero(scale.num_elements(), 0);
    if (zp.defined()) {
      NIMBLE_ASSIGN_OR_RETURN(zero, IntValues(op_, "zero point", zp));
    }
    const int64_t n = x.num_elements();
    if (!quantize_) {
      NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> xv, IntValues(op_, "input", x));
      return WithF32Output(op_, outputs[0], [&](float* out) {
        for (int64_t i = 0; i < n; ++i) {
          const int64_t k = ix(i);
          out[i] = static_cast<float>(xv[i] - zero[k]) * sc[k];
        }
        return absl::OkStatus();
      });
    }
    NIMBLE_ASSIGN_OR_RETURN(Tensor xf, AsF32(op_, "input", x));
    const float* xp = xf.data<float>();
    Tensor& y = outputs[0];
    const auto quantize = [&](auto* out, double lo, double hi) {
      for (int64_t i = 0; i < n; ++i) {
        const int64_t k = ix(i);
        double q =
            std::nearbyint(static_cast<double>(xp[i] / sc[k])) + static_cast<double>(zero[k]);
        if (std::isnan(q)) q = 0;
        out[i] = static_cast<std::remove_pointer_t<decltype(out)>>(std::clamp(q, lo, hi));
      }
    };
    if (IsLowPrecisionInteger(y.dtype())) {
      const IntRange range = LowPrecisionIntRange(y.dtype());
      quantize(static_cast<int8_t*>(y.raw_data()), static_cast<double>(range.lo),
               static_cast<double>(range.hi));
      return absl::OkStatus();
    }
    absl::Status s = VisitDType<kInts>(y.dtype(), op_, [&](auto tag) {
      using T = typename decltype(tag)::type;
      quantize(y.data<T>(), static_cast<double>(std::numeric_limits<T>::min()),
               static_cast<double>(std::numeric_limits<T>::max()));
      return absl::OkStatus();
    });
    if (!s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(op_, ": unsupported output dtype ", DTypeName(y.dtype())));
    }
    return absl::OkStatus();
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    return SameShape(op_, inputs, output_shapes);
  }

 private:
  // Float8 / float4e2m1: values (and zero points) are floats.
  absl::Status RunFloat(const Tensor& x, const Tensor& sf, const Tensor& zp, const ScaleIndexer& ix,
                        Tensor& y) const {
    const float* sc = sf.data<float>();
    const int64_t n = x.num_elements();
    std::vector<float> zero(sf.num_elements(), 0.0f);
    if (zp.defined()) {
      NIMBLE_ASSIGN_OR_RETURN(Tensor zf, CastTo(zp, DType::kF32, op_));
      zero.assign(zf.data<float>(), zf.data<float>() + zf.num_elements());
    }
    if (!quantize_) {
      NIMBLE_ASSIGN_OR_RETURN(Tensor xf, CastTo(x, DType::kF32, op_));
      const float* xp = xf.data<float>();
      return WithF32Output(op_, y, [&](float* out) {
        for (int64_t i = 0; i < n; ++i) {
          const int64_t k = ix(i);
          out[i] = (xp[i] - zero[k]) * sc[k];
        }
        return absl::OkStatus();
      });
    }
    NIMBLE_ASSIGN_OR_RETURN(Tensor xf, AsF32(op_, "input", x));
    const float* xp = xf.data<float>();
    auto* out = static_cast<uint8_t*>(y.raw_data());
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = ix(i);
      out[i] = FloatToLowPrecisionFloat(y.dtype(), xp[i] / sc[k] + zero[k], saturate_);
    }
    return absl::OkStatus();
  }

  const std::string op_;
  const bool quantize_;
  const int64_t axis_;
  const int64_t block_;
  const bool saturate_;
};

// ------------------------------------------------------------------------------------------
// MaxUnpool(X, I, output_shape?): scatters X into zeros at the flat output indices I.

class MaxUnpoolKernel final : public Kernel {
 public:
  MaxUnpoolKernel(std::vector<int64_t> kernel, std::vector<int64_t> strides,
                  std::vector<int64_t> pads)
      : kernel_(std::move(kernel)), strides_(std::move(strides)), pads_(std::move(pads)) {}

  absl::Status Run(const KernelContext&, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("MaxUnpool", inputs, 2, 3, outputs, 1));
    NIMBLE_RETURN_IF_ERROR(CheckRequired("MaxUnpool", inputs, 2));
    Shape shape;
    NIMBLE_RETURN_IF_ERROR(OutputShapes(inputs, absl::MakeSpan(&shape, 1)));
    const Tensor& x = inputs[0];
    NIMBLE_RETURN_IF_ERROR(CheckOutput("MaxUnpool", outputs[0], x.dtype(), shape));
    const Tensor& idx = inputs[1];
    if (idx.shape() != x.shape()) {
      return absl::InvalidArgumentError(absl::StrCat("MaxUnpool: indices ", idx.TypeString(),
                                                     " do not match X ", x.TypeString()));
    }
    NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> iv, IntValues("MaxUnpool", "indices", idx));
    // Indices address the inferred (unpadded) output; an explicit output_shape places that
    // at its origin.
    Shape inferred;
    NIMBLE_RETURN_IF_ERROR(InferredShape(x, &inferred));
    int64_t inferred_total = 1;
    for (int64_t d : inferred) inferred_total *= d;
    const int64_t total = outputs[0].num_elements();
    for (int64_t& v : iv) {
      if (v < 0 || v >= inferred_total) {
        return absl::InvalidArgumentError(
            absl::StrCat("MaxUnpool: index ", v, " is out of range [0, ", inferred_total, ")"));
      }
      if (shape == inferred) continue;
      int64_t rem = v, mapped = 0, stride = 1;
      for (int i = static_cast<int>(inferred.size()) - 1; i >= 0; --i) {
        const int64_t c = rem % inferred[i];
        rem /= inferred[i];
        if (c >= shape[i]) {
          return absl::InvalidArgumentError(
              absl::StrCat("MaxUnpool: index ", v, " falls outside output_shape"));
        }
        mapped += c * stride;
        stride *= shape[i];
      }
      v = mapped;
    }
    if (IsHalf(x.dtype())) {
      NIMBLE_ASSIGN_OR_RETURN(Tensor xf, CastTo(x, DType::kF32, "MaxUnpool"));
      return WithF32Output("MaxUnpool", outputs[0], [&](float* out) {
        std::fill(out, out + total, 0.0f);
        for (size_t i = 0; i < iv.size(); ++i) out[iv[i]] = xf.data<float>()[i];
        return absl::OkStatus();
      });
    }
    return VisitDType<kNumeric>(x.dtype(), "MaxUnpool", [&](auto tag) {
      using T = typename decltype(tag)::type;
      T* out = outputs[0].data<T>();
      std::fill(out, out + total, T(0));
      for (size_t i = 0; i < iv.size(); ++i) out[iv[i]] = x.data<T>()[i];
      return absl::OkStatus();
    });
  }

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    if (inputs.size() < 2 || !inputs[0].defined() || output_shapes.size() != 1) {
      return absl::InvalidArgumentError("MaxUnpool: expected X, I and one output");
    }
    const Tensor& x = inputs[0];
    const int64_t sp = static_cast<int64_t>(x.rank()) - 2;
    if (sp < 1 || static_cast<int64_t>(kernel_.size()) != sp ||
        (!strides_.empty() && static_cast<int64_t>(strides_.size()) != sp) ||
        (!pads_.empty() && static_cast<int64_t>(pads_.size()) != 2 * sp)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "MaxUnpool: X ", x.TypeString(), " does not match kernel_shape, strides or pads"));
    }
    if (inputs.size() > 2 && inputs[2].defined()) {
      NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> s,
                              IntList("MaxUnpool", "output_shape", inputs[2]));
      if (static_cast<int64_t>(s.size()) != x.rank()) {
        return absl::InvalidArgumentError(
            absl::StrCat("MaxUnpool: output_shape must have ", x.rank(), " values"));
      }
      Shape out;
      for (int64_t d : s) {
        if (d < 0) return absl::InvalidArgumentError("MaxUnpool: negative output_shape value");
        out.push_back(d);
      }
      output_shapes[0] = out;
      return absl::OkStatus();
    }
    return InferredShape(x, &output_shapes[0]);
  }

  absl::Status InferredShape(const Tensor& x, Shape* shape) const {
    const int64_t sp = static_cast<int64_t>(x.rank()) - 2;
    Shape out = {x.dim(0), x.dim(1)};
    for (int64_t i = 0; i < sp; ++i) {
      const int64_t s = strides_.empty() ? 1 : strides_[i];
      const int64_t pad = pads_.empty() ? 0 : pads_[i] + pads_[i + sp];
      const int64_t d = (x.dim(i + 2) - 1) * s - pad + kernel_[i];
      if (d < 0) return absl::InvalidArgumentError("MaxUnpool: negative output size");
      out.push_back(d);
    }
    *shape = out;
    return absl::OkStatus();
  }

 private:
  const std::vector<int64_t> kernel_, strides_, pads_;
};

}  // namespace

void RegisterMiscKernels(KernelRegistry& registry) {
  registry.Register("MaxUnpool", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    if (!attrs.Has("kernel_shape")) {
      return absl::InvalidArgumentError("MaxUnpool: attribute 'kernel_shape' is required");
    }
    using Ints = std::vector<int64_t>;
    return std::make_unique<MaxUnpoolKernel>(attrs.GetOr<Ints>("kernel_shape", {}),
                                             attrs.GetOr<Ints>("strides", {}),
                                             attrs.GetOr<Ints>("pads", {}));
  });
  for (const bool quantize : {true, false}) {
    const std::string op = quantize ? "QuantizeLinear" : "DequantizeLinear";
    registry.Register(op, DeviceType::kCPU, [quantize](const Attributes& attrs) -> Factory {
      return std::make_unique<QuantizeKernel>(quantize, attrs.GetOr<int64_t>("axis", 1),
                                              attrs.GetOr<int64_t>("block_size", 0),
                                              attrs.GetOr<int64_t>("saturate", 1) != 0);
    });
  }
  registry.Register("RotaryEmbedding", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    return std::make_unique<RotaryEmbeddingKernel>(attrs.GetOr<int64_t>("interleaved", 0) != 0,
                                                   attrs.GetOr<int64_t>("rotary_embedding_dim", 0),
                                                   attrs.GetOr<int64_t>("num_heads", 0));
  });
  const std::pair<const char*, WindowKind> windows[] = {{"HannWindow", WindowKind::kHann},
                                                        {"HammingWindow", WindowKind::kHamming},
                                                        {"BlackmanWindow", WindowKind::kBlackman}};
  for (const auto& window : windows) {
    // (No structured bindings: clang 14, `make fuzz`'s compiler, cannot capture them.)
    const std::string op = window.first;
    const WindowKind kind = window.second;
    registry.Register(op, DeviceType::kCPU, [op, kind](const Attributes& attrs) -> Factory {
      NIMBLE_ASSIGN_OR_RETURN(const DType dtype,
                              DTypeFromOnnx(attrs.GetOr<int64_t>("output_datatype", 1)));
      if (!IsFloat(dtype) && !IsInteger(dtype)) {
        return absl::InvalidArgumentError(
            absl::StrCat(op, ": output_datatype must be numeric, got ", DTypeName(dtype)));
      }
      return std::make_unique<WindowKernel>(op, kind, attrs.GetOr<int64_t>("periodic", 1) != 0,
                                            dtype);
    });
  }
  registry.Register("MelWeightMatrix", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    NIMBLE_ASSIGN_OR_RETURN(const DType dtype,
                            DTypeFromOnnx(attrs.GetOr<int64_t>("output_datatype", 1)));
    if (!IsFloat(dtype) && !IsInteger(dtype)) {
      return absl::InvalidArgumentError(
          absl::StrCat("MelWeightMatrix: output_datatype must be numeric, got ", DTypeName(dtype)));
    }
    return std::make_unique<MelWeightMatrixKernel>(dtype);
  });
  registry.Register("DynamicQuantizeLinear", DeviceType::kCPU, [](const Attributes&) -> Factory {
    return std::make_unique<DynamicQuantizeLinearKernel>();
  });
  const std::pair<const char*, Optimizer> optimizers[] = {
      {"ai.onnx.preview.training.Adagrad", Optimizer::kAdagrad},
      {"ai.onnx.preview.training.Momentum", Optimizer::kMomentum},
      {"ai.onnx.preview.training.Adam", Optimizer::kAdam}};
  for (const auto& optimizer : optimizers) {
    const Optimizer kind = optimizer.second;
    registry.Register(optimizer.first, DeviceType::kCPU,
                      [kind](const Attributes& attrs) -> Factory {
                        return std::make_unique<OptimizerKernel>(kind, attrs);
                      });
  }
  registry.Register("RegexFullMatch", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    const std::string pattern = attrs.GetOr<std::string>("pattern", "");
    try {
      return std::make_unique<RegexFullMatchKernel>(std::regex(pattern, std::regex::ECMAScript));
    } catch (const std::regex_error& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("RegexFullMatch: bad pattern '", pattern, "': ", e.what()));
    }
  });
  registry.Register("ai.onnx.ml.Binarizer", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    return std::make_unique<BinarizerKernel>(attrs.GetOr<double>("threshold", 0.0));
  });
  registry.Register("ai.onnx.ml.ArrayFeatureExtractor", DeviceType::kCPU,
                    [](const Attributes&) -> Factory {
                      return std::make_unique<ArrayFeatureExtractorKernel>();
                    });
  registry.Register("ai.onnx.ml.LabelEncoder", DeviceType::kCPU, MakeLabelEncoder);
  registry.Register("ai.onnx.ml.TreeEnsemble", DeviceType::kCPU, MakeTreeEnsemble);
  registry.Register("TensorScatter", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    const std::string mode = attrs.GetOr<std::string>("mode", "linear");
    if (mode != "linear" && mode != "circular") {
      return absl::InvalidArgumentError(
          absl::StrCat("TensorScatter: mode must be linear or circular, got '", mode, "'"));
    }
    return std::make_unique<TensorScatterKernel>(attrs.GetOr<int64_t>("axis", -2),
                                                 mode == "circular");
  });
  registry.Register("StringSplit", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    std::optional<int64_t> maxsplit;
    if (attrs.Has("maxsplit")) {
      maxsplit = attrs.GetOr<int64_t>("maxsplit", 0);
      if (*maxsplit < 0) return absl::InvalidArgumentError("StringSplit: maxsplit must be >= 0");
    }
    return std::make_unique<StringSplitKernel>(attrs.GetOr<std::string>("delimiter", ""),
                                               maxsplit);
  });
  registry.Register("StringNormalizer", DeviceType::kCPU, MakeStringNormalizer);
  registry.Register("TfIdfVectorizer", DeviceType::kCPU, MakeTfIdfVectorizer);
  registry.Register("StringConcat", DeviceType::kCPU, [](const Attributes&) -> Factory {
    return std::make_unique<StringConcatKernel>();
  });
  registry.Register("Swish", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    return std::make_unique<SwishKernel>(attrs.GetOr<double>("alpha", 1.0));
  });
  registry.Register("DFT", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    std::optional<int64_t> axis;
    if (attrs.Has("axis")) axis = attrs.GetOr<int64_t>("axis", 1);
    return std::make_unique<DftKernel>(axis, attrs.GetOr<int64_t>("inverse", 0) != 0,
                                       attrs.GetOr<int64_t>("onesided", 0) != 0);
  });
  registry.Register("STFT", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    return std::make_unique<StftKernel>(attrs.GetOr<int64_t>("onesided", 1) != 0);
  });
  registry.Register("QLinearMatMul", DeviceType::kCPU, [](const Attributes&) -> Factory {
    return std::make_unique<QLinearMatMulKernel>();
  });
  registry.Register("Det", DeviceType::kCPU,
                    [](const Attributes&) -> Factory { return std::make_unique<DetKernel>(); });
  registry.Register("Shrink", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    return std::make_unique<ShrinkKernel>(attrs.GetOr<double>("lambd", 0.5),
                                          attrs.GetOr<double>("bias", 0.0));
  });
  registry.Register("LRN", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    if (!attrs.Has("size")) return absl::InvalidArgumentError("LRN: attribute 'size' is required");
    return std::make_unique<LrnKernel>(
        attrs.GetOr<int64_t>("size", 1), attrs.GetOr<double>("alpha", 1e-4),
        attrs.GetOr<double>("beta", 0.75), attrs.GetOr<double>("bias", 1.0));
  });
  registry.Register("LpPool", DeviceType::kCPU, [](const Attributes& attrs) -> Factory {
    if (!attrs.Has("kernel_shape")) {
      return absl::InvalidArgumentError("LpPool: attribute 'kernel_shape' is required");
    }
    using Ints = std::vector<int64_t>;
    const double p = static_cast<double>(attrs.GetOr<int64_t>("p", 2));
    if (p <= 0) return absl::InvalidArgumentError("LpPool: p must be positive");
    return std::make_unique<LpPoolKernel>(
        attrs.GetOr<Ints>("kernel_shape", {}), attrs.GetOr<Ints>("strides", {}),
        attrs.GetOr<Ints>("pads", {}), attrs.GetOr<Ints>("dilations", {}),
        attrs.GetOr<int64_t>("ceil_mode", 0) != 0, p,
        attrs.GetOr<std::string>("auto_pad", "NOTSET"));
  });
}

}  // namespace nimble::vm::cpu
