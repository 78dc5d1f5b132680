// Data-movement kernels: Shape, Size, Reshape, Flatten, Squeeze, Unsqueeze, Identity, Transpose,
// Concat, Split, Slice, Expand, Tile, Pad, ConstantOfShape, Range, Trilu, DepthToSpace,
// SpaceToDepth, EyeLike, ReverseSequence.
//
// Design: every op that rearranges elements without arithmetic (Transpose, Slice, Expand, Tile,
// DepthToSpace, SpaceToDepth) is one strided copy: the output, walked in row-major order, reads
// the input at `base + sum(index[i] * stride[i])` with arbitrary (negative for reversed slices,
// zero for broadcasts) strides. StridedCopy merges dims that stay contiguous, then copies rows
// with memcpy (stride 1), a fill (stride 0) or a gather, in parallel over rows; a source whose
// second-to-last dim is the contiguous one (a batched 2-D transpose) is copied in cache tiles.
// Elements are moved by size (uint8..uint64) or as std::string, so every dtype works.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "vm/kernels/cpu/broadcast.h"
#include "vm/kernels/cpu/cpu_kernels.h"
#include "vm/kernels/cpu/onednn_util.h"

// GCC 12 reports absl::InlinedVector's copy of an inlined (small) Shape as "maybe uninitialized"
// (a known false positive of its inliner); Shape is copied everywhere here.
#if defined(__GNUC__) && !defined(__clang__)  // clang has no such warning
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace nimble::vm::cpu {
namespace {

using kernel_util::CheckArity;
using kernel_util::CheckDefined;
using kernel_util::Present;
using kernel_util::DispatchByElementSize;
using kernel_util::NormalizeAxis;
using kernel_util::ParallelFor;
using kernel_util::ReadInts;
using kernel_util::SingleOutputKernel;
using kernel_util::Strides;

using KernelPtr = std::unique_ptr<Kernel>;

// Rows of at least this many bytes are worth a task of their own.
constexpr int64_t kParallelGrainBytes = 32 * 1024;

template <typename T>
void CopyRow(T* dst, const T* src, int64_t n, int64_t stride) {
  if (stride == 1) {
    if constexpr (std::is_trivially_copyable_v<T>) {
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(T));
    } else {
      std::copy(src, src + n, dst);
    }
  } else if (stride == 0) {
    std::fill(dst, dst + n, *src);
  } else {
    for (int64_t k = 0; k < n; ++k) dst[k] = src[k * stride];
  }
}

// dst (dense, row-major `shape_in`) = src read at sum(index[i] * strides_in[i]).
template <typename T>
void StridedCopy(int num_threads, T* dst, const T* src, absl::Span<const int64_t> shape_in,
                 absl::Span<const int64_t> strides_in) {
  Shape shape, strides;
  for (size_t i = 0; i < shape_in.size(); ++i) {
    if (shape_in[i] == 0) return;
    if (shape_in[i] == 1) continue;
    if (!shape.empty() && strides.back() == strides_in[i] * shape_in[i]) {
      shape.back() *= shape_in[i];
      strides.back() = strides_in[i];
    } else {
      shape.push_back(shape_in[i]);
      strides.push_back(strides_in[i]);
    }
  }
  if (shape.empty()) {
    dst[0] = src[0];
    return;
  }
  const int d = static_cast<int>(shape.size()) - 1;  // outer dims
  const int64_t inner = shape[d];
  const int64_t inner_stride = strides[d];

  // Batched 2-D transpose: the source's contiguous dim is the output's second-to-last.
  if (d >= 1 && strides[d - 1] == 1 && inner_stride != 0 && inner_stride != 1) {
    constexpr int64_t kTile = 32;
    const int64_t rows = shape[d - 1];
    const int64_t batches = [&] {
      int64_t b = 1;
      for (int i = 0; i < d - 1; ++i) b *= shape[i];
      return b;
    }();
    const int64_t row_tiles = (rows + kTile - 1) / kTile;
    const int64_t items = batches * row_tiles;
    const int64_t grain = std::max<int64_t>(1, kParallelGrainBytes / (kTile * inner * sizeof(T)));
    ParallelFor(num_threads, items, grain, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        int64_t b = item / row_tiles;
        const int64_t i0 = (item % row_tiles) * kTile;
        const int64_t i1 = std::min(rows, i0 + kTile);
        int64_t src_off = 0;
        for (int k = d - 2; k >= 0; --k) {
          src_off += (b % shape[k]) * strides[k];
          b /= shape[k];
        }
        T* out = dst + (item / row_tiles) * rows * inner;
        for (int64_t j0 = 0; j0 < inner; j0 += kTile) {
          const int64_t j1 = std::min(inner, j0 + kTile);
          for (int64_t i = i0; i < i1; ++i) {
            const T* s = src + src_off + i;
            T* o = out + i * inner;
            for (int64_t j = j0; j < j1; ++j) o[j] = s[j * inner_stride];
          }
        }
      }
    });
    return;
  }

  int64_t rows = 1;
  for (int i = 0; i < d; ++i) rows *= shape[i];
  const int64_t grain = std::max<int64_t>(1, kParallelGrainBytes / (inner * sizeof(T)));
  ParallelFor(num_threads, rows, grain, [&](int64_t begin, int64_t end) {
    Shape index(d, 0);
    int64_t off = 0;
    int64_t r = begin;
    for (int k = d - 1; k >= 0; --k) {
      index[k] = r % shape[k];
      r /= shape[k];
      off += index[k] * strides[k];
    }
    for (int64_t row = begin; row < end; ++row) {
      CopyRow(dst + row * inner, src + off, inner, inner_stride);
      for (int k = d - 1; k >= 0; --k) {
        off += strides[k];
        if (++index[k] < shape[k]) break;
        off -= shape[k] * strides[k];
        index[k] = 0;
      }
    }
  });
}

// StridedCopy on any dtype, reading `src` from element `base`.
absl::Status StridedCopyTensor(int num_threads, const Tensor& dst, const Tensor& src, int64_t base,
                               absl::Span<const int64_t> shape, absl::Span<const int64_t> strides) {
  return DispatchByElementSize(src.dtype(), [&](auto tag) {
    using T = decltype(tag);
    StridedCopy<T>(num_threads, dst.data<T>(), src.data<T>() + base, shape, strides);
    return absl::OkStatus();
  });
}

absl::Status CopyAll(const Tensor& dst, const Tensor& src) {
  kernel_util::CopyElements(src.dtype(), dst.raw_data(), src.raw_data(), src.num_elements());
  return absl::OkStatus();
}

absl::Status CheckInput(const std::string& op, absl::Span<const Tensor> inputs, size_t index,
                        absl::string_view what) {
  return CheckDefined(op, inputs, index, what);
}

// ---------------------------------------------------------------------------------------------
// Shape, Size

class ShapeKernel final : public SingleOutputKernel {
 public:
  explicit ShapeKernel(const Attributes& attrs)
      : SingleOutputKernel("Shape"),
        start_(attrs.GetOr<int64_t>("start", 0)),
        has_end_(attrs.Has("end")),
        end_(attrs.GetOr<int64_t>("end", 0)) {}

 private:
  std::pair<int64_t, int64_t> Range(int rank) const {
    auto clamp = [rank](int64_t v) {
      if (v < 0) v += rank;
      return std::clamp<int64_t>(v, 0, rank);
    };
    const int64_t start = clamp(start_);
    const int64_t end = has_end_ ? clamp(end_) : rank;
    return {start, std::max(start, end)};
  }
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 1, 1));
    NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 0, "data"));
    auto [start, end] = Range(inputs[0].rank());
    return Shape{end - start};
  }
  absl::StatusOr<DType> OutputDType(absl::Span<const Tensor>) const override { return DType::kI64; }
  absl::Status Compute(const KernelContext&, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    auto [start, end] = Range(inputs[0].rank());
    for (int64_t i = start; i < end; ++i) out.data<int64_t>()[i - start] = inputs[0].dim(i);
    return absl::OkStatus();
  }

  const int64_t start_;
  const bool has_end_;
  const int64_t end_;
};

class SizeKernel final : public SingleOutputKernel {
 public:
  SizeKernel() : SingleOutputKernel("Size") {}

 private:
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 1, 1));
    NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 0, "data"));
    return Shape{};
  }
  absl::StatusOr<DType> OutputDType(absl::Span<const Tensor>) const override { return DType::kI64; }
  absl::Status Compute(const KernelContext&, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    out.data<int64_t>()[0] = inputs[0].num_elements();
    return absl::OkStatus();
  }
};

// ---------------------------------------------------------------------------------------------
// Views: Reshape, Flatten, Squeeze, Unsqueeze, Identity. Run copies (the compiler normally
// turns these into the VM's ReshapeTensor and never calls the kernel).

class ViewKernel : public SingleOutputKernel {
 public:
  using SingleOutputKernel::SingleOutputKernel;

 protected:
  absl::Status Compute(const KernelContext&, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    return CopyAll(out, inputs[0]);
  }
};

class ReshapeKernel final : public ViewKernel {
 public:
  explicit ReshapeKernel(const Attributes& attrs)
      : ViewKernel("Reshape"),
        allowzero_(attrs.GetOr<int64_t>("allowzero", 0) != 0),
        has_shape_attr_(attrs.Has("shape")),
        shape_attr_(attrs.GetOr<std::vector<int64_t>>("shape", {})) {}

 private:
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 1, 2));
    NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 0, "data"));
    std::vector<int64_t> dims;
    if (Present(inputs, 1)) {
      NIMBLE_ASSIGN_OR_RETURN(dims, ReadInts(inputs[1], op(), "shape"));
      if (inputs[1].rank() != 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("Reshape: shape must be 1-D, got ", inputs[1].TypeString()));
      }
    } else if (has_shape_attr_) {
      dims = shape_attr_;
    } else {
      return absl::InvalidArgumentError("Reshape: input shape is missing");
    }
    const Tensor& data = inputs[0];
    Shape out(dims.begin(), dims.end());
    int infer = -1;
    bool has_zero = false;
    for (size_t i = 0; i < dims.size(); ++i) {
      if (dims[i] == -1) {
        if (infer >= 0) {
          return absl::InvalidArgumentError(
              absl::StrCat("Reshape: shape ", ShapeToString(out), " has more than one -1"));
        }
        infer = static_cast<int>(i);
      } else if (dims[i] == 0) {
        has_zero = true;
        if (!allowzero_) {
          if (static_cast<int>(i) >= data.rank()) {
            return absl::InvalidArgumentError(
                absl::StrCat("Reshape: shape ", ShapeToString(out), " copies dim ", i,
                             " (0) but the data is ", data.TypeString()));
          }
          out[i] = data.dim(static_cast<int>(i));
        }
      } else if (dims[i] < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("Reshape: invalid dim ", dims[i], " in shape ", ShapeToString(out)));
      }
    }
    if (allowzero_ && has_zero && infer >= 0) {
      return absl::InvalidArgumentError(absl::StrCat("Reshape: shape ", ShapeToString(out),
                                                     " has both 0 and -1 with allowzero=1"));
    }
    int64_t known = 1;
    for (size_t i = 0; i < out.size(); ++i) {
      if (static_cast<int>(i) == infer) continue;
      if (__builtin_mul_overflow(known, out[i], &known)) {
        return absl::InvalidArgumentError(
            absl::StrCat("Reshape: shape ", ShapeToString(out), " is too large"));
      }
    }
    const int64_t total = data.num_elements();
    if (infer >= 0) {
      if (known == 0 || total % known != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "Reshape: cannot reshape ", data.TypeString(), " to ", ShapeToString(out)));
      }
      out[infer] = total / known;
    } else if (known != total) {
      return absl::InvalidArgumentError(
          absl::StrCat("Reshape: cannot reshape ", data.TypeString(), " to ", ShapeToString(out)));
    }
    return out;
  }

  const bool allowzero_;
  const bool has_shape_attr_;
  const std::vector<int64_t> shape_attr_;
};

class FlattenKernel final : public ViewKernel {
 public:
  explicit FlattenKernel(const Attributes& attrs)
      : ViewKernel("Flatten"), axis_(attrs.GetOr<int64_t>("axis", 1)) {}

 private:
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 1, 1));
    NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 0, "input"));
    const Tensor& x = inputs[0];
    const int rank = x.rank();
    if (axis_ < -rank || axis_ > rank) {
      return absl::InvalidArgumentError(
          absl::StrCat("Flatten: axis ", axis_, " is out of range for ", x.TypeString()));
    }
    const int axis = static_cast<int>(axis_ < 0 ? axis_ + rank : axis_);
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < rank; ++i) (i < axis ? outer : inner) *= x.dim(i);
    return Shape{outer, inner};
  }

  const int64_t axis_;
};

// Axes from input 1 or the "axes" attribute (older opsets); absent gives nullopt.
absl::StatusOr<std::optional<std::vector<int64_t>>> AxesFrom(absl::Span<const Tensor> inputs,
                                                             size_t index, bool has_attr,
                                                             const std::vector<int64_t>& attr,
                                                             absl::string_view op) {
  if (Present(inputs, index)) {
    NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> axes, ReadInts(inputs[index], op, "axes"));
    return std::optional<std::vector<int64_t>>(std::move(axes));
  }
  if (has_attr) return std::optional<std::vector<int64_t>>(attr);
  return std::optional<std::vector<int64_t>>();
}

// Normalises `axes` against `rank`; duplicates are errors.
absl::StatusOr<std::vector<int>> NormalizeAxes(absl::Span<const int64_t> axes, int rank,
                                               absl::string_view op) {
  std::vector<int> out;
  std::vector<bool> seen(rank, false);
  for (int64_t a : axes) {
    NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(a, rank, op));
    if (seen[axis]) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": axis ", a, " is repeated"));
    }
    seen[axis] = true;
    out.push_back(axis);
  }
  return out;
}

class SqueezeKernel final : public ViewKernel {
 public:
  explicit SqueezeKernel(const Attributes& attrs)
      : ViewKernel("Squeeze"),
        has_axes_attr_(attrs.Has("axes")),
        axes_attr_(attrs.GetOr<std::vector<int64_t>>("axes", {})) {}

 private:
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 1, 2));
    NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 0, "data"));
    const Tensor& x = inputs[0];
    NIMBLE_ASSIGN_OR_RETURN(auto axes, AxesFrom(inputs, 1, has_axes_attr_, axes_attr_, op()));
    Shape out;
    if (!axes.has_value()) {
      for (int64_t d : x.shape()) {
        if (d != 1) out.push_back(d);
      }
      return out;
    }
    NIMBLE_ASSIGN_OR_RETURN(std::vector<int> norm, NormalizeAxes(*axes, x.rank(), op()));
    std::vector<bool> drop(x.rank(), false);
    for (int a : norm) {
      if (x.dim(a) != 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("Squeeze: axis ", a, " of ", x.TypeString(), " is not 1"));
      }
      drop[a] = true;
    }
    for (int i = 0; i < x.rank(); ++i) {
      if (!drop[i]) out.push_back(x.dim(i));
    }
    return out;
  }

  const bool has_axes_attr_;
  const std::vector<int64_t> axes_attr_;
};

class UnsqueezeKernel final : public ViewKernel {
 public:
  explicit UnsqueezeKernel(const Attributes& attrs)
      : ViewKernel("Unsqueeze"),
        has_axes_attr_(attrs.Has("axes")),
        axes_attr_(attrs.GetOr<std::vector<int64_t>>("axes", {})) {}

 private:
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 1, 2));
    NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 0, "data"));
    const Tensor& x = inputs[0];
    NIMBLE_ASSIGN_OR_RETURN(auto axes, AxesFrom(inputs, 1, has_axes_attr_, axes_attr_, op()));
    if (!axes.has_value()) return absl::InvalidArgumentError("Unsqueeze: axes are missing");
    const int out_rank = x.rank() + static_cast<int>(axes->size());
    NIMBLE_ASSIGN_OR_RETURN(std::vector<int> norm, NormalizeAxes(*axes, out_rank, op()));
    std::vector<bool> insert(out_rank, false);
    for (int a : norm) insert[a] = true;
    Shape out;
    int j = 0;
    for (int i = 0; i < out_rank; ++i) out.push_back(insert[i] ? 1 : x.dim(j++));
    return out;
  }

  const bool has_axes_attr_;
  const std::vector<int64_t> axes_attr_;
};

class IdentityKernel final : public ViewKernel {
 public:
  IdentityKernel() : ViewKernel("Identity") {}

 private:
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 1, 1));
    NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 0, "input"));
    return inputs[0].shape();
  }
};

// ---------------------------------------------------------------------------------------------
// Transpose

class TransposeKernel final : public SingleOutputKernel {
 public:
  explicit TransposeKernel(const Attributes& attrs)
      : SingleOutputKernel("Transpose"),
        has_perm_(attrs.Has("perm")),
        perm_(attrs.GetOr<std::vector<int64_t>>("perm", {})) {}

 private:
  absl::StatusOr<std::vector<int>> Perm(const Tensor& x) const {
    const int rank = x.rank();
    std::vector<int> perm(rank);
    if (!has_perm_) {
      for (int i = 0; i < rank; ++i) perm[i] = rank - 1 - i;
      return perm;
    }
    if (static_cast<int>(perm_.size()) != rank) {
      return absl::InvalidArgumentError(absl::StrCat("Transpose: perm [", absl::StrJoin(perm_, ","),
                                                     "] does not match ", x.TypeString()));
    }
    std::vector<bool> seen(rank, false);
    for (int i = 0; i < rank; ++i) {
      const int64_t p = perm_[i];
      if (p < 0 || p >= rank || seen[p]) {
        return absl::InvalidArgumentError(
            absl::StrCat("Transpose: perm [", absl::StrJoin(perm_, ","), "] is not a permutation"));
      }
      seen[p] = true;
      perm[i] = static_cast<int>(p);
    }
    return perm;
  }
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 1, 1));
    NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 0, "data"));
    NIMBLE_ASSIGN_OR_RETURN(std::vector<int> perm, Perm(inputs[0]));
    Shape out;
    for (int p : perm) out.push_back(inputs[0].dim(p));
    return out;
  }
  absl::Status Compute(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    const Tensor& x = inputs[0];
    NIMBLE_ASSIGN_OR_RETURN(std::vector<int> perm, Perm(x));
    const Shape in_strides = Strides(x.shape());
    Shape strides;
    for (int p : perm) strides.push_back(in_strides[p]);
    return StridedCopyTensor(ctx.num_threads, out, x, 0, out.shape(), strides);
  }

  const bool has_perm_;
  const std::vector<int64_t> perm_;
};

// ---------------------------------------------------------------------------------------------
// Concat, Split

class ConcatKernel final : public SingleOutputKernel {
 public:
  explicit ConcatKernel(int64_t axis) : SingleOutputKernel("Concat"), axis_(axis) {}

 private:
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    if (inputs.empty()) return absl::InvalidArgumentError("Concat: no inputs");
    for (size_t i = 0; i < inputs.size(); ++i) {
      NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, i, absl::StrCat(i)));
    }
    const Tensor& first = inputs[0];
    NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(axis_, first.rank(), op()));
    Shape out = first.shape();
    out[axis] = 0;
    for (const Tensor& t : inputs) {
      bool ok = t.dtype() == first.dtype() && t.rank() == first.rank();
      for (int i = 0; ok && i < t.rank(); ++i) ok = i == axis || t.dim(i) == first.dim(i);
      if (!ok) {
        return absl::InvalidArgumentError(absl::StrCat("Concat: cannot concatenate ",
                                                       first.TypeString(), " and ", t.TypeString(),
                                                       " on axis ", axis));
      }
      out[axis] += t.dim(axis);
    }
    return out;
  }
  absl::Status Compute(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    const int axis = static_cast<int>(axis_ < 0 ? axis_ + out.rank() : axis_);
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < axis; ++i) outer *= out.dim(i);
    for (int i = axis + 1; i < out.rank(); ++i) inner *= out.dim(i);
    const int64_t out_row = out.dim(axis) * inner;
    const size_t es = DTypeSize(out.dtype());
    const int64_t grain =
        std::max<int64_t>(1, kParallelGrainBytes / std::max<int64_t>(1, out_row * es));
    ParallelFor(ctx.num_threads, outer, grain, [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        char* dst = static_cast<char*>(out.raw_data()) + o * out_row * es;
        for (const Tensor& t : inputs) {
          const int64_t row = t.dim(axis) * inner;
          kernel_util::CopyElements(out.dtype(), dst,
                                    static_cast<const char*>(t.raw_data()) + o * row * es, row);
          dst += row * es;
        }
      }
    });
    return absl::OkStatus();
  }

  const int64_t axis_;
};

class SplitKernel final : public Kernel {
 public:
  explicit SplitKernel(const Attributes& attrs)
      : axis_(attrs.GetOr<int64_t>("axis", 0)),
        num_outputs_(attrs.GetOr<int64_t>("num_outputs", 0)),
        has_split_attr_(attrs.Has("split")),
        split_attr_(attrs.GetOr<std::vector<int64_t>>("split", {})) {}

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    NIMBLE_ASSIGN_OR_RETURN(Plan plan, MakePlan(inputs, output_shapes.size()));
    for (size_t i = 0; i < output_shapes.size(); ++i) {
      output_shapes[i] = inputs[0].shape();
      output_shapes[i][plan.axis] = plan.sizes[i];
    }
    return absl::OkStatus();
  }

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(Plan plan, MakePlan(inputs, outputs.size()));
    const Tensor& x = inputs[0];
    std::vector<Shape> shapes(outputs.size(), x.shape());
    for (size_t i = 0; i < outputs.size(); ++i) {
      shapes[i][plan.axis] = plan.sizes[i];
      NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputDType("Split", outputs[i], x.dtype()));
    }
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputShapes("Split", outputs, shapes));
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < plan.axis; ++i) outer *= x.dim(i);
    for (int i = plan.axis + 1; i < x.rank(); ++i) inner *= x.dim(i);
    const int64_t in_row = x.dim(plan.axis) * inner;
    const size_t es = DTypeSize(x.dtype());
    const int64_t grain =
        std::max<int64_t>(1, kParallelGrainBytes / std::max<int64_t>(1, in_row * es));
    ParallelFor(ctx.num_threads, outer, grain, [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        const char* src = static_cast<const char*>(x.raw_data()) + o * in_row * es;
        for (size_t i = 0; i < outputs.size(); ++i) {
          const int64_t row = plan.sizes[i] * inner;
          if (outputs[i].defined()) {
            kernel_util::CopyElements(
                x.dtype(), static_cast<char*>(outputs[i].raw_data()) + o * row * es, src, row);
          }
          src += row * es;
        }
      }
    });
    return absl::OkStatus();
  }

 private:
  struct Plan {
    int axis = 0;
    std::vector<int64_t> sizes;
  };

  absl::StatusOr<Plan> MakePlan(absl::Span<const Tensor> inputs, size_t num_outputs) const {
    NIMBLE_RETURN_IF_ERROR(CheckArity("Split", inputs.size(), 1, 2));
    NIMBLE_RETURN_IF_ERROR(CheckDefined("Split", inputs, 0, "input"));
    if (num_outputs == 0) return absl::InvalidArgumentError("Split: no outputs");
    const Tensor& x = inputs[0];
    Plan plan;
    NIMBLE_ASSIGN_OR_RETURN(plan.axis, NormalizeAxis(axis_, x.rank(), "Split"));
    const int64_t dim = x.dim(plan.axis);
    if (Present(inputs, 1) || has_split_attr_) {
      if (Present(inputs, 1)) {
        NIMBLE_ASSIGN_OR_RETURN(plan.sizes, ReadInts(inputs[1], "Split", "split"));
      } else {
        plan.sizes = split_attr_;
      }
      int64_t sum = 0;
      for (int64_t s : plan.sizes) {
        if (s < 0) return absl::InvalidArgumentError("Split: negative split size");
        sum += s;
      }
      if (plan.sizes.size() != num_outputs || sum != dim) {
        return absl::InvalidArgumentError(
            absl::StrCat("Split: sizes [", absl::StrJoin(plan.sizes, ","), "] do not split dim ",
                         dim, " into ", num_outputs, " outputs"));
      }
      return plan;
    }
    if (num_outputs_ != 0 && num_outputs_ != static_cast<int64_t>(num_outputs)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Split: num_outputs is ", num_outputs_, " but the node has ", num_outputs, " outputs"));
    }
    // Equal parts; when the dim does not divide, the last part is smaller (opset 18).
    const int64_t n = static_cast<int64_t>(num_outputs);
    const int64_t chunk = (dim + n - 1) / n;
    int64_t left = dim;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t s = std::min(chunk, left);
      plan.sizes.push_back(s);
      left -= s;
    }
    return plan;
  }

  const int64_t axis_;
  const int64_t num_outputs_;
  const bool has_split_attr_;
  const std::vector<int64_t> split_attr_;
};

// ---------------------------------------------------------------------------------------------
// SplitToSequence, ConcatFromSequence (sequences reach kernels as their tensors, and leave
// SplitToSequence as a variable number of tensors the VM packs into a sequence).

class SplitToSequenceKernel final : public Kernel {
 public:
  explicit SplitToSequenceKernel(const Attributes& attrs)
      : axis_(attrs.GetOr<int64_t>("axis", 0)), keepdims_(attrs.GetOr<int64_t>("keepdims", 1)) {}

  bool variadic_outputs() const override { return true; }

  absl::Status OutputShapes(absl::Span<const Tensor>, absl::Span<Shape>) const override {
    return absl::InternalError("SplitToSequence has a variable number of outputs");
  }
  absl::Status Run(const KernelContext&, absl::Span<const Tensor>,
                   absl::Span<Tensor>) const override {
    return absl::InternalError("SplitToSequence runs through RunVariadic");
  }

  absl::StatusOr<std::vector<Tensor>> RunVariadic(const KernelContext& ctx,
                                                  absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("SplitToSequence", inputs.size(), 1, 2));
    NIMBLE_RETURN_IF_ERROR(CheckDefined("SplitToSequence", inputs, 0, "input"));
    const Tensor& x = inputs[0];
    NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(axis_, x.rank(), "SplitToSequence"));
    const int64_t dim = x.dim(axis);
    std::vector<int64_t> sizes;
    bool squeeze = false;
    if (!Present(inputs, 1)) {
      sizes.assign(static_cast<size_t>(dim), 1);
      squeeze = keepdims_ == 0;
    } else {
      NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> split,
                              ReadInts(inputs[1], "SplitToSequence", "split"));
      if (inputs[1].rank() == 0) {
        const int64_t chunk = split[0];
        if (chunk <= 0) {
          return absl::InvalidArgumentError(
              absl::StrCat("SplitToSequence: split ", chunk, " must be positive"));
        }
        for (int64_t left = dim; left > 0; left -= chunk) sizes.push_back(std::min(chunk, left));
      } else {
        int64_t sum = 0;
        for (int64_t v : split) {
          if (v < 0) return absl::InvalidArgumentError("SplitToSequence: negative split size");
          sum += v;
        }
        if (sum != dim) {
          return absl::InvalidArgumentError(absl::StrCat("SplitToSequence: sizes [",
                                                         absl::StrJoin(split, ","), "] sum to ",
                                                         sum, " but dim ", axis, " is ", dim));
        }
        sizes = std::move(split);
      }
    }
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < axis; ++i) outer *= x.dim(i);
    for (int i = axis + 1; i < x.rank(); ++i) inner *= x.dim(i);
    const int64_t in_row = dim * inner;
    const size_t es = DTypeSize(x.dtype());
    std::vector<Tensor> out;
    out.reserve(sizes.size());
    int64_t offset = 0;
    for (int64_t size : sizes) {
      Shape shape = x.shape();
      if (squeeze) {
        shape.erase(shape.begin() + axis);
      } else {
        shape[axis] = size;
      }
      NIMBLE_ASSIGN_OR_RETURN(Tensor t, Tensor::Empty(x.dtype(), shape, ctx.allocator));
      const int64_t row = size * inner;
      for (int64_t o = 0; o < outer; ++o) {
        kernel_util::CopyElements(
            x.dtype(), static_cast<char*>(t.raw_data()) + o * row * es,
            static_cast<const char*>(x.raw_data()) + (o * in_row + offset * inner) * es, row);
      }
      offset += size;
      out.push_back(std::move(t));
    }
    return out;
  }

 private:
  const int64_t axis_;
  const int64_t keepdims_;
};

class ConcatFromSequenceKernel final : public SingleOutputKernel {
 public:
  ConcatFromSequenceKernel(int64_t axis, bool new_axis)
      : SingleOutputKernel("ConcatFromSequence"), axis_(axis), new_axis_(new_axis) {}

 private:
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    if (inputs.empty()) {
      return absl::InvalidArgumentError("ConcatFromSequence: the sequence is empty");
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, i, absl::StrCat(i)));
    }
    const Tensor& first = inputs[0];
    NIMBLE_ASSIGN_OR_RETURN(int axis,
                            NormalizeAxis(axis_, first.rank() + (new_axis_ ? 1 : 0), op()));
    Shape out = first.shape();
    if (new_axis_) {
      out.insert(out.begin() + axis, static_cast<int64_t>(inputs.size()));
    } else {
      out[axis] = 0;
    }
    for (const Tensor& t : inputs) {
      bool ok = t.dtype() == first.dtype() && t.rank() == first.rank();
      for (int i = 0; ok && i < t.rank(); ++i) {
        ok = (!new_axis_ && i == axis) || t.dim(i) == first.dim(i);
      }
      if (!ok) {
        return absl::InvalidArgumentError(
            absl::StrCat("ConcatFromSequence: cannot concatenate ", first.TypeString(), " and ",
                         t.TypeString(), new_axis_ ? " along a new axis " : " on axis ", axis));
      }
      if (!new_axis_) out[axis] += t.dim(axis);
    }
    return out;
  }
  absl::Status Compute(const KernelContext&, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    const int axis = static_cast<int>(axis_ < 0 ? axis_ + out.rank() : axis_);
    int64_t outer = 1;
    for (int i = 0; i < axis; ++i) outer *= out.dim(i);
    const size_t es = DTypeSize(out.dtype());
    char* dst = static_cast<char*>(out.raw_data());
    for (int64_t o = 0; o < outer; ++o) {
      for (const Tensor& t : inputs) {
        const int64_t row = outer == 0 ? 0 : t.num_elements() / outer;
        kernel_util::CopyElements(out.dtype(), dst,
                                  static_cast<const char*>(t.raw_data()) + o * row * es, row);
        dst += row * es;
      }
    }
    return absl::OkStatus();
  }

  const int64_t axis_;
  const bool new_axis_;
};

// ---------------------------------------------------------------------------------------------
// Slice

class SliceKernel final : public SingleOutputKernel {
 public:
  explicit SliceKernel(const Attributes& attrs)
      : SingleOutputKernel("Slice"),
        has_attr_form_(attrs.Has("starts")),
        starts_attr_(attrs.GetOr<std::vector<int64_t>>("starts", {})),
        ends_attr_(attrs.GetOr<std::vector<int64_t>>("ends", {})),
        axes_attr_(attrs.GetOr<std::vector<int64_t>>("axes", {})) {}

 private:
  struct Plan {
    Shape out;
    Shape starts;  // per input dim
    Shape steps;   // per input dim
  };

  absl::StatusOr<Plan> MakePlan(absl::Span<const Tensor> inputs) const {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 1, 5));
    NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 0, "data"));
    const Tensor& x = inputs[0];
    std::vector<int64_t> starts, ends, axes, steps;
    if (Present(inputs, 1) || !has_attr_form_) {
      NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 1, "starts"));
      NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 2, "ends"));
      NIMBLE_ASSIGN_OR_RETURN(starts, ReadInts(inputs[1], op(), "starts"));
      NIMBLE_ASSIGN_OR_RETURN(ends, ReadInts(inputs[2], op(), "ends"));
      if (Present(inputs, 3)) {
        NIMBLE_ASSIGN_OR_RETURN(axes, ReadInts(inputs[3], op(), "axes"));
      }
      if (Present(inputs, 4)) {
        NIMBLE_ASSIGN_OR_RETURN(steps, ReadInts(inputs[4], op(), "steps"));
      }
    } else {
      starts = starts_attr_;
      ends = ends_attr_;
      axes = axes_attr_;
    }
    if (axes.empty()) {
      for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
    }
    if (steps.empty()) steps.assign(starts.size(), 1);
    if (ends.size() != starts.size() || axes.size() != starts.size() ||
        steps.size() != starts.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Slice: starts, ends, axes and steps have different lengths (", starts.size(), ", ",
          ends.size(), ", ", axes.size(), ", ", steps.size(), ")"));
    }
    NIMBLE_ASSIGN_OR_RETURN(std::vector<int> norm, NormalizeAxes(axes, x.rank(), op()));
    Plan plan;
    plan.out = x.shape();
    plan.starts.assign(x.rank(), 0);
    plan.steps.assign(x.rank(), 1);
    for (size_t i = 0; i < norm.size(); ++i) {
      const int a = norm[i];
      const int64_t dim = x.dim(a);
      int64_t step = steps[i];
      if (step == 0) return absl::InvalidArgumentError("Slice: step is 0");
      // A step as long as the dim picks at most one element; clamping keeps the stride
      // arithmetic below from overflowing on steps like INT64_MIN.
      step = std::clamp<int64_t>(step, -std::max<int64_t>(dim, 1), std::max<int64_t>(dim, 1));
      int64_t start = starts[i];
      int64_t end = ends[i];
      if (start < 0) start += dim;
      if (end < 0) end += dim;
      int64_t size = 0;
      if (step > 0) {
        start = std::clamp<int64_t>(start, 0, dim);
        end = std::clamp<int64_t>(end, 0, dim);
        if (end > start) size = (end - start - 1) / step + 1;
      } else {
        start = std::clamp<int64_t>(start, 0, std::max<int64_t>(dim - 1, 0));
        end = std::clamp<int64_t>(end, -1, dim - 1);
        if (start > end && dim > 0) size = (start - end - 1) / (-step) + 1;
      }
      plan.out[a] = size;
      plan.starts[a] = start;
      plan.steps[a] = step;
    }
    return plan;
  }
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(Plan plan, MakePlan(inputs));
    return plan.out;
  }
  absl::Status Compute(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    NIMBLE_ASSIGN_OR_RETURN(Plan plan, MakePlan(inputs));
    if (out.num_elements() == 0) return absl::OkStatus();
    const Tensor& x = inputs[0];
    const Shape in_strides = Strides(x.shape());
    int64_t base = 0;
    Shape strides(x.rank());
    for (int i = 0; i < x.rank(); ++i) {
      base += plan.starts[i] * in_strides[i];
      strides[i] = plan.steps[i] * in_strides[i];
    }
    return StridedCopyTensor(ctx.num_threads, out, x, base, plan.out, strides);
  }

  const bool has_attr_form_;
  const std::vector<int64_t> starts_attr_, ends_attr_, axes_attr_;
};

// ---------------------------------------------------------------------------------------------
// Expand, Tile

class ExpandKernel final : public SingleOutputKernel {
 public:
  ExpandKernel() : SingleOutputKernel("Expand") {}

 private:
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 2, 2));
    NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 0, "input"));
    NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 1, "shape"));
    NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> dims, ReadInts(inputs[1], op(), "shape"));
    for (int64_t d : dims) {
      if (d < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("Expand: negative dim in shape [", absl::StrJoin(dims, ","), "]"));
      }
    }
    const Shape target(dims.begin(), dims.end());
    auto out = BroadcastShapes({inputs[0].shape(), target});
    if (!out.ok()) return Annotate(out.status(), "Expand");
    return out;
  }
  absl::Status Compute(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    const Shape strides = BroadcastStrides(inputs[0].shape(), out.shape());
    return StridedCopyTensor(ctx.num_threads, out, inputs[0], 0, out.shape(), strides);
  }
};

class TileKernel final : public SingleOutputKernel {
 public:
  TileKernel() : SingleOutputKernel("Tile") {}

 private:
  absl::StatusOr<std::vector<int64_t>> Repeats(absl::Span<const Tensor> inputs) const {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 2, 3));
    NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 0, "input"));
    NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 1, "repeats"));
    NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> repeats, ReadInts(inputs[1], op(), "repeats"));
    if (static_cast<int>(repeats.size()) != inputs[0].rank()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Tile: ", repeats.size(), " repeats for ", inputs[0].TypeString()));
    }
    for (int64_t r : repeats) {
      if (r < 0) return absl::InvalidArgumentError(absl::StrCat("Tile: negative repeat ", r));
    }
    return repeats;
  }
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> repeats, Repeats(inputs));
    Shape out = inputs[0].shape();
    for (size_t i = 0; i < repeats.size(); ++i) {
      if (__builtin_mul_overflow(out[i], repeats[i], &out[i])) {
        return absl::InvalidArgumentError("Tile: output is too large");
      }
    }
    return out;
  }
  absl::Status Compute(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> repeats, Repeats(inputs));
    const Tensor& x = inputs[0];
    const Shape in_strides = Strides(x.shape());
    // Output [r0*d0, r1*d1, ...] read as [r0, d0, r1, d1, ...] with stride 0 on the repeats.
    Shape shape, strides;
    for (int i = 0; i < x.rank(); ++i) {
      shape.push_back(repeats[i]);
      strides.push_back(0);
      shape.push_back(x.dim(i));
      strides.push_back(in_strides[i]);
    }
    return StridedCopyTensor(ctx.num_threads, out, x, 0, shape, strides);
  }
};

// ---------------------------------------------------------------------------------------------
// Pad

enum class PadMode { kConstant, kReflect, kEdge, kWrap };

class PadKernel final : public SingleOutputKernel {
 public:
  PadKernel(PadMode mode, const Attributes& attrs)
      : SingleOutputKernel("Pad"),
        mode_(mode),
        has_pads_attr_(attrs.Has("pads")),
        pads_attr_(attrs.GetOr<std::vector<int64_t>>("pads", {})),
        value_attr_(attrs.GetOr<double>("value", 0.0)) {}

 private:
  // Begin/end pads per input dim.
  absl::StatusOr<std::pair<Shape, Shape>> Pads(absl::Span<const Tensor> inputs) const {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 1, 4));
    NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 0, "data"));
    const Tensor& x = inputs[0];
    std::vector<int64_t> pads;
    if (Present(inputs, 1)) {
      NIMBLE_ASSIGN_OR_RETURN(pads, ReadInts(inputs[1], op(), "pads"));
    } else if (has_pads_attr_) {
      pads = pads_attr_;
    } else {
      return absl::InvalidArgumentError("Pad: pads are missing");
    }
    std::vector<int> axes;
    if (Present(inputs, 3)) {
      NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> raw, ReadInts(inputs[3], op(), "axes"));
      NIMBLE_ASSIGN_OR_RETURN(axes, NormalizeAxes(raw, x.rank(), op()));
    } else {
      for (int i = 0; i < x.rank(); ++i) axes.push_back(i);
    }
    if (pads.size() != 2 * axes.size()) {
      return absl::InvalidArgumentError(absl::StrCat("Pad: ", pads.size(), " pads for ",
                                                     axes.size(), " axes of ", x.TypeString()));
    }
    Shape begin(x.rank(), 0), end(x.rank(), 0);
    for (size_t i = 0; i < axes.size(); ++i) {
      begin[axes[i]] = pads[i];
      end[axes[i]] = pads[i + axes.size()];
    }
    return std::make_pair(begin, end);
  }
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(auto pads, Pads(inputs));
    const Tensor& x = inputs[0];
    Shape out = x.shape();
    for (int i = 0; i < x.rank(); ++i) {
      if (__builtin_add_overflow(out[i], pads.first[i], &out[i]) ||
          __builtin_add_overflow(out[i], pads.second[i], &out[i])) {
        return absl::InvalidArgumentError("Pad: pads are too large");
      }
      if (out[i] < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("Pad: pads crop dim ", i, " of ", x.TypeString(), " below zero"));
      }
      if (out[i] > 0 && x.dim(i) == 0 && mode_ != PadMode::kConstant) {
        return absl::InvalidArgumentError(
            absl::StrCat("Pad: cannot pad the empty dim ", i, " in a non-constant mode"));
      }
    }
    return out;
  }
  absl::Status Compute(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    NIMBLE_ASSIGN_OR_RETURN(auto pads, Pads(inputs));
    const Tensor& x = inputs[0];
    // Source index of each output coordinate per dim; -1 where the constant goes.
    std::vector<std::vector<int64_t>> table(x.rank());
    for (int a = 0; a < x.rank(); ++a) {
      const int64_t dim = x.dim(a);
      table[a].resize(out.dim(a));
      for (int64_t o = 0; o < out.dim(a); ++o) {
        const int64_t i = o - pads.first[a];
        int64_t s = i;
        if (i < 0 || i >= dim) {
          switch (mode_) {
            case PadMode::kConstant:
              s = -1;
              break;
            case PadMode::kEdge:
              s = std::clamp<int64_t>(i, 0, dim - 1);
              break;
            case PadMode::kWrap:
              s = ((i % dim) + dim) % dim;
              break;
            case PadMode::kReflect: {
              if (dim == 1) {
                s = 0;
                break;
              }
              const int64_t period = 2 * (dim - 1);
              s = ((i % period) + period) % period;
              if (s >= dim) s = period - s;
              break;
            }
          }
        }
        table[a][o] = s;
      }
    }
    return DispatchByElementSize(x.dtype(), [&](auto tag) -> absl::Status {
      using T = decltype(tag);
      T constant{};
      if constexpr (std::is_same_v<T, std::string>) {
        if (Present(inputs, 2) && inputs[2].dtype() == DType::kString &&
            inputs[2].num_elements() > 0) {
          constant = inputs[2].data<std::string>()[0];
        }
      } else {
        if (Present(inputs, 2) && inputs[2].num_elements() > 0) {
          if (inputs[2].dtype() == x.dtype()) {
            std::memcpy(&constant, inputs[2].raw_data(), sizeof(T));
          } else {
            NIMBLE_RETURN_IF_ERROR(kernel_util::WriteScalar(
                x.dtype(), kernel_util::ElementAsDouble(inputs[2], 0), &constant));
          }
        } else if (value_attr_ != 0.0) {
          NIMBLE_RETURN_IF_ERROR(kernel_util::WriteScalar(x.dtype(), value_attr_, &constant));
        }
      }
      PadCopy<T>(ctx.num_threads, out.data<T>(), x.data<T>(), out.shape(), Strides(x.shape()),
                 table, constant);
      return absl::OkStatus();
    });
  }

  template <typename T>
  static void PadCopy(int num_threads, T* dst, const T* src, const Shape& out_shape,
                      const Shape& in_strides, const std::vector<std::vector<int64_t>>& table,
                      const T& constant) {
    const int rank = static_cast<int>(out_shape.size());
    if (rank == 0) {
      dst[0] = src[0];
      return;
    }
    const int64_t inner = out_shape[rank - 1];
    if (inner == 0) return;
    int64_t rows = 1;
    for (int i = 0; i < rank - 1; ++i) rows *= out_shape[i];
    const std::vector<int64_t>& inner_table = table[rank - 1];
    const int64_t grain = std::max<int64_t>(1, kParallelGrainBytes / (inner * sizeof(T)));
    ParallelFor(num_threads, rows, grain, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        T* o = dst + row * inner;
        int64_t r = row;
        int64_t off = 0;
        bool pad = false;
        for (int a = rank - 2; a >= 0; --a) {
          const int64_t s = table[a][r % out_shape[a]];
          r /= out_shape[a];
          if (s < 0) {
            pad = true;
            break;
          }
          off += s * in_strides[a];
        }
        if (pad) {
          std::fill(o, o + inner, constant);
          continue;
        }
        for (int64_t k = 0; k < inner; ++k) {
          const int64_t s = inner_table[k];
          o[k] = s < 0 ? constant : src[off + s];
        }
      }
    });
  }

  const PadMode mode_;
  const bool has_pads_attr_;
  const std::vector<int64_t> pads_attr_;
  const double value_attr_;
};

// ---------------------------------------------------------------------------------------------
// ConstantOfShape, Range, EyeLike

class ConstantOfShapeKernel final : public SingleOutputKernel {
 public:
  explicit ConstantOfShapeKernel(Tensor value)
      : SingleOutputKernel("ConstantOfShape"), value_(std::move(value)) {}

 private:
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 1, 1));
    NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 0, "input"));
    NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> dims, ReadInts(inputs[0], op(), "input"));
    Shape out(dims.begin(), dims.end());
    auto count = NumElements(out);
    if (!count.ok()) return Annotate(count.status(), "ConstantOfShape");
    return out;
  }
  absl::StatusOr<DType> OutputDType(absl::Span<const Tensor>) const override {
    return value_.defined() ? value_.dtype() : DType::kF32;
  }
  absl::Status Compute(const KernelContext& ctx, absl::Span<const Tensor>,
                       const Tensor& out) const override {
    if (!value_.defined()) {
      std::memset(out.raw_data(), 0, out.nbytes());
      return absl::OkStatus();
    }
    return DispatchByElementSize(out.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T v = value_.data<T>()[0];
      T* o = out.data<T>();
      const int64_t n = out.num_elements();
      ParallelFor(ctx.num_threads, n, kParallelGrainBytes,
                  [&](int64_t b, int64_t e) { std::fill(o + b, o + e, v); });
      return absl::OkStatus();
    });
  }

  const Tensor value_;
};

class RangeKernel final : public SingleOutputKernel {
 public:
  RangeKernel() : SingleOutputKernel("Range") {}

 private:
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 3, 3));
    const char* names[] = {"start", "limit", "delta"};
    for (int i = 0; i < 3; ++i) {
      NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, i, names[i]));
      if (inputs[i].num_elements() != 1 || inputs[i].dtype() != inputs[0].dtype() ||
          inputs[i].dtype() == DType::kString || inputs[i].dtype() == DType::kBool) {
        return absl::InvalidArgumentError(
            absl::StrCat("Range: ", names[i], " must be a scalar of the start's numeric type, got ",
                         inputs[i].TypeString()));
      }
    }
    const DType dtype = inputs[0].dtype();
    int64_t n = 0;
    if (IsInteger(dtype)) {
      NIMBLE_ASSIGN_OR_RETURN(int64_t start, kernel_util::ReadScalarInt(inputs[0], op(), "start"));
      NIMBLE_ASSIGN_OR_RETURN(int64_t limit, kernel_util::ReadScalarInt(inputs[1], op(), "limit"));
      NIMBLE_ASSIGN_OR_RETURN(int64_t delta, kernel_util::ReadScalarInt(inputs[2], op(), "delta"));
      if (delta == 0) return absl::InvalidArgumentError("Range: delta is 0");
      const __int128 diff = static_cast<__int128>(limit) - start;
      __int128 count = 0;
      if (delta > 0 && diff > 0) count = (diff + delta - 1) / delta;
      if (delta < 0 && diff < 0)
        count = (-diff + (-static_cast<__int128>(delta)) - 1) / -static_cast<__int128>(delta);
      n = static_cast<int64_t>(count);
    } else {
      const double start = kernel_util::ElementAsDouble(inputs[0], 0);
      const double limit = kernel_util::ElementAsDouble(inputs[1], 0);
      const double delta = kernel_util::ElementAsDouble(inputs[2], 0);
      if (delta == 0) return absl::InvalidArgumentError("Range: delta is 0");
      const double count = std::ceil((limit - start) / delta);
      if (!std::isfinite(count) || count > 9.0e18) {
        return absl::InvalidArgumentError(
            absl::StrCat("Range: cannot make a range from ", start, " to ", limit, " by ", delta));
      }
      n = count > 0 ? static_cast<int64_t>(count) : 0;
    }
    return Shape{n};
  }
  absl::Status Compute(const KernelContext&, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    const int64_t n = out.num_elements();
    switch (out.dtype()) {
      case DType::kF32:
        return Fill<float>(inputs, out, n);
      case DType::kF64:
        return Fill<double>(inputs, out, n);
      case DType::kI8:
        return Fill<int8_t>(inputs, out, n);
      case DType::kI16:
        return Fill<int16_t>(inputs, out, n);
      case DType::kI32:
        return Fill<int32_t>(inputs, out, n);
      case DType::kI64:
        return Fill<int64_t>(inputs, out, n);
      case DType::kU8:
        return Fill<uint8_t>(inputs, out, n);
      case DType::kU16:
        return Fill<uint16_t>(inputs, out, n);
      case DType::kU32:
        return Fill<uint32_t>(inputs, out, n);
      case DType::kU64:
        return Fill<uint64_t>(inputs, out, n);
      default:
        for (int64_t i = 0; i < n; ++i) {
          const double v = kernel_util::ElementAsDouble(inputs[0], 0) +
                           static_cast<double>(i) * kernel_util::ElementAsDouble(inputs[2], 0);
          NIMBLE_RETURN_IF_ERROR(kernel_util::WriteScalar(
              out.dtype(), v, static_cast<char*>(out.raw_data()) + i * DTypeSize(out.dtype())));
        }
        return absl::OkStatus();
    }
  }
  template <typename T>
  static absl::Status Fill(absl::Span<const Tensor> inputs, const Tensor& out, int64_t n) {
    const T start = inputs[0].data<T>()[0];
    const T delta = inputs[2].data<T>()[0];
    T* o = out.data<T>();
    for (int64_t i = 0; i < n; ++i) o[i] = static_cast<T>(start + static_cast<T>(i) * delta);
    return absl::OkStatus();
  }
};

class EyeLikeKernel final : public SingleOutputKernel {
 public:
  explicit EyeLikeKernel(const Attributes& attrs)
      : SingleOutputKernel("EyeLike"), k_(attrs.GetOr<int64_t>("k", 0)) {}

 private:
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 1, 1));
    NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 0, "input"));
    if (inputs[0].rank() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("EyeLike: input must be 2-D, got ", inputs[0].TypeString()));
    }
    return inputs[0].shape();
  }
  // The "dtype" attribute is an ONNX type code; the compiler allocates the output with it.
  absl::StatusOr<DType> OutputDType(absl::Span<const Tensor>) const override {
    return DType::kInvalid;
  }
  absl::Status Compute(const KernelContext&, absl::Span<const Tensor>,
                       const Tensor& out) const override {
    if (out.dtype() == DType::kString) {
      return absl::InvalidArgumentError("EyeLike: string output");
    }
    const size_t es = DTypeSize(out.dtype());
    char one[8] = {};
    NIMBLE_RETURN_IF_ERROR(kernel_util::WriteScalar(out.dtype(), 1.0, one));
    std::memset(out.raw_data(), 0, out.nbytes());
    const int64_t rows = out.dim(0), cols = out.dim(1);
    char* o = static_cast<char*>(out.raw_data());
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t j = i + k_;
      if (j >= 0 && j < cols) std::memcpy(o + (i * cols + j) * es, one, es);
    }
    return absl::OkStatus();
  }

  const int64_t k_;
};

// ---------------------------------------------------------------------------------------------
// Trilu, DepthToSpace, SpaceToDepth, ReverseSequence

class TriluKernel final : public SingleOutputKernel {
 public:
  explicit TriluKernel(const Attributes& attrs)
      : SingleOutputKernel("Trilu"), upper_(attrs.GetOr<int64_t>("upper", 1) != 0) {}

 private:
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 1, 2));
    NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 0, "input"));
    if (inputs[0].rank() < 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("Trilu: input must have rank >= 2, got ", inputs[0].TypeString()));
    }
    if (Present(inputs, 1)) {
      NIMBLE_RETURN_IF_ERROR(kernel_util::ReadScalarInt(inputs[1], op(), "k").status());
    }
    return inputs[0].shape();
  }
  absl::Status Compute(const KernelContext&, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    int64_t k = 0;
    if (Present(inputs, 1)) {
      NIMBLE_ASSIGN_OR_RETURN(k, kernel_util::ReadScalarInt(inputs[1], op(), "k"));
    }
    const Tensor& x = inputs[0];
    const int64_t rows = x.dim(x.rank() - 2), cols = x.dim(x.rank() - 1);
    const int64_t batches = rows * cols == 0 ? 0 : x.num_elements() / (rows * cols);
    return DispatchByElementSize(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* s = x.data<T>();
      T* o = out.data<T>();
      for (int64_t b = 0; b < batches; ++b) {
        for (int64_t i = 0; i < rows; ++i) {
          for (int64_t j = 0; j < cols; ++j) {
            const int64_t idx = (b * rows + i) * cols + j;
            const bool keep = upper_ ? (j - i >= k) : (j - i <= k);
            o[idx] = keep ? s[idx] : T{};
          }
        }
      }
      return absl::OkStatus();
    });
  }

  const bool upper_;
};

// DepthToSpace and SpaceToDepth: a reshape to 6-D, a transpose, a reshape back.
class SpaceDepthKernel final : public SingleOutputKernel {
 public:
  SpaceDepthKernel(bool to_space, int64_t blocksize, bool crd)
      : SingleOutputKernel(to_space ? "DepthToSpace" : "SpaceToDepth"),
        to_space_(to_space),
        b_(blocksize),
        crd_(crd) {}

 private:
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 1, 1));
    NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 0, "input"));
    const Tensor& x = inputs[0];
    if (x.rank() != 4) {
      return absl::InvalidArgumentError(
          absl::StrCat(op(), ": input must be 4-D, got ", x.TypeString()));
    }
    const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
    if (to_space_) {
      if (c % (b_ * b_) != 0) {
        return absl::InvalidArgumentError(absl::StrCat("DepthToSpace: channels of ", x.TypeString(),
                                                       " not divisible by blocksize^2"));
      }
      return Shape{n, c / (b_ * b_), h * b_, w * b_};
    }
    if (h % b_ != 0 || w % b_ != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "SpaceToDepth: spatial dims of ", x.TypeString(), " not divisible by blocksize"));
    }
    return Shape{n, c * b_ * b_, h / b_, w / b_};
  }
  absl::Status Compute(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    const Tensor& x = inputs[0];
    const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3), b = b_;
    Shape view, perm_shape;
    std::vector<int> perm;
    if (to_space_) {
      view = crd_ ? Shape{n, c / (b * b), b, b, h, w} : Shape{n, b, b, c / (b * b), h, w};
      perm = crd_ ? std::vector<int>{0, 1, 4, 2, 5, 3} : std::vector<int>{0, 3, 4, 1, 5, 2};
    } else {
      view = Shape{n, c, h / b, b, w / b, b};
      perm = {0, 3, 5, 1, 2, 4};
    }
    const Shape view_strides = Strides(view);
    Shape shape, strides;
    for (int p : perm) {
      shape.push_back(view[p]);
      strides.push_back(view_strides[p]);
    }
    return StridedCopyTensor(ctx.num_threads, out, x, 0, shape, strides);
  }

  const bool to_space_;
  const int64_t b_;
  const bool crd_;
};

class ReverseSequenceKernel final : public SingleOutputKernel {
 public:
  ReverseSequenceKernel(int64_t batch_axis, int64_t time_axis)
      : SingleOutputKernel("ReverseSequence"), batch_axis_(batch_axis), time_axis_(time_axis) {}

 private:
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 2, 2));
    NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 0, "input"));
    NIMBLE_RETURN_IF_ERROR(CheckInput(op(), inputs, 1, "sequence_lens"));
    const Tensor& x = inputs[0];
    if (x.rank() < 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("ReverseSequence: input must have rank >= 2, got ", x.TypeString()));
    }
    if (inputs[1].num_elements() != x.dim(static_cast<int>(batch_axis_))) {
      return absl::InvalidArgumentError(
          absl::StrCat("ReverseSequence: sequence_lens ", inputs[1].TypeString(),
                       " does not match the batch of ", x.TypeString()));
    }
    return x.shape();
  }
  absl::Status Compute(const KernelContext&, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    const Tensor& x = inputs[0];
    NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> lens, ReadInts(inputs[1], op(), "sequence_lens"));
    const int64_t steps = x.dim(static_cast<int>(time_axis_));
    for (int64_t len : lens) {
      if (len < 0 || len > steps) {
        return absl::InvalidArgumentError(
            absl::StrCat("ReverseSequence: sequence length ", len, " is outside [0, ", steps, "]"));
      }
    }
    const Shape strides = Strides(x.shape());
    int64_t inner = 1;
    for (int i = 2; i < x.rank(); ++i) inner *= x.dim(i);
    const int64_t ts = strides[time_axis_], bs = strides[batch_axis_];
    const size_t es = DTypeSize(x.dtype());
    const char* src = static_cast<const char*>(x.raw_data());
    char* dst = static_cast<char*>(out.raw_data());
    for (size_t b = 0; b < lens.size(); ++b) {
      for (int64_t t = 0; t < steps; ++t) {
        const int64_t from = t < lens[b] ? lens[b] - 1 - t : t;
        kernel_util::CopyElements(x.dtype(), dst + (t * ts + b * bs) * es,
                                  src + (from * ts + b * bs) * es, inner);
      }
    }
    return absl::OkStatus();
  }

  const int64_t batch_axis_;
  const int64_t time_axis_;
};

// ---------------------------------------------------------------------------------------------
// Factories

template <typename K, typename... Args>
absl::StatusOr<KernelPtr> Make(Args&&... args) {
  return KernelPtr(new K(std::forward<Args>(args)...));
}

}  // namespace

void RegisterTensorKernels(KernelRegistry& registry) {
  auto reg = [&registry](const std::string& name, KernelFactory factory) {
    registry.Register(name, DeviceType::kCPU, std::move(factory));
  };
  reg("Shape", [](const Attributes& a) { return Make<ShapeKernel>(a); });
  reg("Size", [](const Attributes&) { return Make<SizeKernel>(); });
  reg("Reshape", [](const Attributes& a) { return Make<ReshapeKernel>(a); });
  reg("Flatten", [](const Attributes& a) { return Make<FlattenKernel>(a); });
  reg("Squeeze", [](const Attributes& a) { return Make<SqueezeKernel>(a); });
  reg("Unsqueeze", [](const Attributes& a) { return Make<UnsqueezeKernel>(a); });
  reg("Identity", [](const Attributes&) { return Make<IdentityKernel>(); });
  reg("Transpose", [](const Attributes& a) { return Make<TransposeKernel>(a); });
  reg("Concat", [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
    NIMBLE_ASSIGN_OR_RETURN(int64_t axis, a.Get<int64_t>("axis"));
    return Make<ConcatKernel>(axis);
  });
  reg("Split", [](const Attributes& a) { return Make<SplitKernel>(a); });
  reg("SplitToSequence", [](const Attributes& a) { return Make<SplitToSequenceKernel>(a); });
  reg("ConcatFromSequence", [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
    NIMBLE_ASSIGN_OR_RETURN(int64_t axis, a.Get<int64_t>("axis"));
    return Make<ConcatFromSequenceKernel>(axis, a.GetOr<int64_t>("new_axis", 0) != 0);
  });
  reg("Slice", [](const Attributes& a) { return Make<SliceKernel>(a); });
  reg("Expand", [](const Attributes&) { return Make<ExpandKernel>(); });
  reg("Tile", [](const Attributes&) { return Make<TileKernel>(); });
  reg("Pad", [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
    const std::string mode = a.GetOr<std::string>("mode", "constant");
    PadMode m;
    if (mode == "constant") {
      m = PadMode::kConstant;
    } else if (mode == "reflect") {
      m = PadMode::kReflect;
    } else if (mode == "edge") {
      m = PadMode::kEdge;
    } else if (mode == "wrap") {
      m = PadMode::kWrap;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown Pad mode '", mode, "'"));
    }
    return Make<PadKernel>(m, a);
  });
  reg("ConstantOfShape", [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
    Tensor value;
    if (a.Has("value")) {
      NIMBLE_ASSIGN_OR_RETURN(value, a.Get<Tensor>("value"));
      if (!value.defined() || value.num_elements() != 1 ||
          value.device().type != DeviceType::kCPU) {
        return absl::InvalidArgumentError("attribute 'value' must be one host element");
      }
    }
    return Make<ConstantOfShapeKernel>(value);
  });
  reg("Range", [](const Attributes&) { return Make<RangeKernel>(); });
  reg("EyeLike", [](const Attributes& a) { return Make<EyeLikeKernel>(a); });
  reg("Trilu", [](const Attributes& a) { return Make<TriluKernel>(a); });
  auto space_depth = [](bool to_space) {
    return [to_space](const Attributes& a) -> absl::StatusOr<KernelPtr> {
      NIMBLE_ASSIGN_OR_RETURN(int64_t blocksize, a.Get<int64_t>("blocksize"));
      if (blocksize <= 0 || blocksize > (1 << 20)) {
        return absl::InvalidArgumentError(absl::StrCat("invalid blocksize ", blocksize));
      }
      const std::string mode = a.GetOr<std::string>("mode", "DCR");
      if (mode != "DCR" && mode != "CRD") {
        return absl::InvalidArgumentError(absl::StrCat("unknown mode '", mode, "'"));
      }
      return Make<SpaceDepthKernel>(to_space, blocksize, mode == "CRD");
    };
  };
  reg("DepthToSpace", space_depth(true));
  reg("SpaceToDepth", space_depth(false));
  reg("ReverseSequence", [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
    const int64_t batch_axis = a.GetOr<int64_t>("batch_axis", 1);
    const int64_t time_axis = a.GetOr<int64_t>("time_axis", 0);
    if (!((batch_axis == 0 && time_axis == 1) || (batch_axis == 1 && time_axis == 0))) {
      return absl::InvalidArgumentError("batch_axis and time_axis must be 0 and 1");
    }
    return Make<ReverseSequenceKernel>(batch_axis, time_axis);
  });
}

}  // namespace nimble::vm::cpu
