// Indexing kernels: Gather, GatherElements, GatherND, ScatterND, ScatterElements, NonZero, TopK,
// OneHot, Compress, Unique, NonMaxSuppression.
//
// Every index read from a tensor is checked against its dim before use (negative indices count
// from the end); an index outside [-dim, dim) is kInvalidArgument naming the op, never a stray
// read. Elements are moved by size (std::string for kString); ops that compare or combine values
// (TopK, Unique, scatter reductions) dispatch on the real element type, with f16/bf16 compared as
// float. NonZero, Compress, Unique and NonMaxSuppression produce data-dependent shapes and
// allocate their outputs.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "vm/kernels/cpu/cpu_kernels.h"
#include "vm/kernels/cpu/fp16.h"
#include "vm/kernels/cpu/lowp.h"
#include "vm/kernels/cpu/onednn_util.h"

// GCC 12 reports absl::InlinedVector's copy of an inlined (small) Shape as "maybe uninitialized"
// (a known false positive of its inliner).
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

constexpr int64_t kParallelGrainBytes = 32 * 1024;

int64_t Product(absl::Span<const int64_t> dims) {
  int64_t p = 1;
  for (int64_t d : dims) p *= d;
  return p;
}

// Indices as int64 with negative values wrapped; kInvalidArgument for any outside [-dim, dim).
absl::StatusOr<std::vector<int64_t>> ReadIndices(const Tensor& t, int64_t dim,
                                                 absl::string_view op) {
  NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> idx, ReadInts(t, op, "indices"));
  for (int64_t& i : idx) {
    if (i < -dim || i >= dim) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": index ", i, " is out of range for a dim of ", dim));
    }
    if (i < 0) i += dim;
  }
  return idx;
}

// Calls fn(T{}) with the C++ type of a numeric dtype (not f16/bf16/bool/string).
template <typename Fn>
absl::Status DispatchArithmetic(DType dtype, absl::string_view op, Fn&& fn) {
  switch (dtype) {
    case DType::kF32:
      return fn(float{});
    case DType::kF64:
      return fn(double{});
    case DType::kI8:
      return fn(int8_t{});
    case DType::kI16:
      return fn(int16_t{});
    case DType::kI32:
      return fn(int32_t{});
    case DType::kI64:
      return fn(int64_t{});
    case DType::kU8:
      return fn(uint8_t{});
    case DType::kU16:
      return fn(uint16_t{});
    case DType::kU32:
      return fn(uint32_t{});
    case DType::kU64:
      return fn(uint64_t{});
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": element type ", DTypeName(dtype), " is not supported"));
  }
}

// Comparison keys of a tensor's elements: the data itself for ordered types, a float copy for
// f16/bf16. Calls fn(const K* keys).
template <typename Fn>
absl::Status WithKeys(const Tensor& t, absl::string_view op, Fn&& fn) {
  const int64_t n = t.num_elements();
  switch (t.dtype()) {
    case DType::kF16:
    case DType::kBF16: {
      std::vector<float> keys(n);
      const uint16_t* p = t.data<uint16_t>();
      const bool half = t.dtype() == DType::kF16;
      for (int64_t i = 0; i < n; ++i) {
        keys[i] = half ? HalfToFloat(p[i]) : BFloat16ToFloat(p[i]);
      }
      return fn(static_cast<const float*>(keys.data()));
    }
    case DType::kBool:
      return fn(t.data<bool>());
    case DType::kString:
      return fn(t.data<std::string>());
    default:
      return DispatchArithmetic(t.dtype(), op, [&](auto tag) {
        using T = decltype(tag);
        return fn(static_cast<const T*>(t.data<T>()));
      });
  }
}

// Three-way comparison where NaN equals NaN and is above every number (a strict weak order,
// which std::sort needs).
template <typename K>
int Compare3(const K& a, const K& b) {
  if constexpr (std::is_floating_point_v<K>) {
    const bool na = std::isnan(a), nb = std::isnan(b);
    if (na || nb) return na == nb ? 0 : (na ? 1 : -1);
  }
  if (a < b) return -1;
  if (b < a) return 1;
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Gather

class GatherKernel final : public SingleOutputKernel {
 public:
  explicit GatherKernel(int64_t axis) : SingleOutputKernel("Gather"), axis_(axis) {}

 private:
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 2, 2));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, 0, "data"));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, 1, "indices"));
    const Tensor& data = inputs[0];
    NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(axis_, data.rank(), op()));
    Shape out(data.shape().begin(), data.shape().begin() + axis);
    out.insert(out.end(), inputs[1].shape().begin(), inputs[1].shape().end());
    out.insert(out.end(), data.shape().begin() + axis + 1, data.shape().end());
    return out;
  }
  absl::Status Compute(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    const Tensor& data = inputs[0];
    const int axis = static_cast<int>(axis_ < 0 ? axis_ + data.rank() : axis_);
    const int64_t dim = data.dim(axis);
    NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> idx, ReadIndices(inputs[1], dim, op()));
    const int64_t outer = Product(absl::MakeConstSpan(data.shape()).subspan(0, axis));
    const int64_t inner = Product(absl::MakeConstSpan(data.shape()).subspan(axis + 1));
    const int64_t n = static_cast<int64_t>(idx.size());
    const size_t es = DTypeSize(data.dtype());
    const char* src = static_cast<const char*>(data.raw_data());
    char* dst = static_cast<char*>(out.raw_data());
    const int64_t grain =
        std::max<int64_t>(1, kParallelGrainBytes / std::max<int64_t>(1, inner * es));
    ParallelFor(ctx.num_threads, outer * n, grain, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t o = r / n, k = r % n;
        kernel_util::CopyElements(data.dtype(), dst + r * inner * es,
                                  src + (o * dim + idx[k]) * inner * es, inner);
      }
    });
    return absl::OkStatus();
  }

  const int64_t axis_;
};

// ---------------------------------------------------------------------------------------------
// GatherElements, ScatterElements

class GatherElementsKernel final : public SingleOutputKernel {
 public:
  explicit GatherElementsKernel(int64_t axis) : SingleOutputKernel("GatherElements"), axis_(axis) {}

 private:
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 2, 2));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, 0, "data"));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, 1, "indices"));
    const Tensor& data = inputs[0];
    const Tensor& indices = inputs[1];
    NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(axis_, data.rank(), op()));
    bool ok = indices.rank() == data.rank();
    for (int i = 0; ok && i < data.rank(); ++i) ok = i == axis || indices.dim(i) <= data.dim(i);
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat("GatherElements: indices ",
                                                     indices.TypeString(), " do not fit data ",
                                                     data.TypeString()));
    }
    return indices.shape();
  }
  absl::Status Compute(const KernelContext&, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    const Tensor& data = inputs[0];
    const int axis = static_cast<int>(axis_ < 0 ? axis_ + data.rank() : axis_);
    NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> idx, ReadIndices(inputs[1], data.dim(axis), op()));
    const Shape strides = Strides(data.shape());
    const Shape& ishape = inputs[1].shape();
    return DispatchByElementSize(data.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* src = data.data<T>();
      T* dst = out.data<T>();
      Shape pos(ishape.size(), 0);
      for (int64_t e = 0; e < static_cast<int64_t>(idx.size()); ++e) {
        int64_t off = 0;
        for (size_t i = 0; i < ishape.size(); ++i) {
          off += (static_cast<int>(i) == axis ? idx[e] : pos[i]) * strides[i];
        }
        dst[e] = src[off];
        for (size_t i = ishape.size(); i-- > 0;) {
          if (++pos[i] < ishape[i]) break;
          pos[i] = 0;
        }
      }
      return absl::OkStatus();
    });
  }

  const int64_t axis_;
};

enum class Reduction { kNone, kAdd, kMul, kMax, kMin };

absl::StatusOr<Reduction> ParseReduction(const Attributes& attrs) {
  const std::string r = attrs.GetOr<std::string>("reduction", "none");
  if (r == "none") return Reduction::kNone;
  if (r == "add") return Reduction::kAdd;
  if (r == "mul") return Reduction::kMul;
  if (r == "max") return Reduction::kMax;
  if (r == "min") return Reduction::kMin;
  return absl::InvalidArgumentError(absl::StrCat("unknown reduction '", r, "'"));
}

template <typename T>
void Combine(Reduction r, T& dst, const T& src) {
  if constexpr (std::is_arithmetic_v<T>) {
    switch (r) {
      case Reduction::kNone:
        dst = src;
        return;
      case Reduction::kAdd:
        dst = static_cast<T>(dst + src);
        return;
      case Reduction::kMul:
        dst = static_cast<T>(dst * src);
        return;
      case Reduction::kMax:
        dst = std::max(dst, src);
        return;
      case Reduction::kMin:
        dst = std::min(dst, src);
        return;
    }
  }
  dst = src;  // kNone on element-size types and strings
}

// Runs fn(T{}) with T the element type for `reduction`: any dtype by size for kNone, the
// arithmetic type otherwise.
template <typename Fn>
absl::Status DispatchScatter(DType dtype, Reduction reduction, absl::string_view op, Fn&& fn) {
  if (reduction == Reduction::kNone) return DispatchByElementSize(dtype, fn);
  return DispatchArithmetic(dtype, op, fn);
}

class ScatterElementsKernel final : public SingleOutputKernel {
 public:
  ScatterElementsKernel(int64_t axis, Reduction reduction)
      : SingleOutputKernel("ScatterElements"), axis_(axis), reduction_(reduction) {}

 private:
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 3, 3));
    const char* names[] = {"data", "indices", "updates"};
    for (int i = 0; i < 3; ++i) NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, i, names[i]));
    const Tensor& data = inputs[0];
    const Tensor& indices = inputs[1];
    const Tensor& updates = inputs[2];
    NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(axis_, data.rank(), op()));
    bool ok = indices.rank() == data.rank() && updates.shape() == indices.shape() &&
              updates.dtype() == data.dtype();
    for (int i = 0; ok && i < data.rank(); ++i) ok = i == axis || indices.dim(i) <= data.dim(i);
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("ScatterElements: indices ", indices.TypeString(), " and updates ",
                       updates.TypeString(), " do not fit data ", data.TypeString()));
    }
    return data.shape();
  }
  absl::Status Compute(const KernelContext&, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    const Tensor& data = inputs[0];
    const int axis = static_cast<int>(axis_ < 0 ? axis_ + data.rank() : axis_);
    NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> idx, ReadIndices(inputs[1], data.dim(axis), op()));
    const Shape strides = Strides(data.shape());
    const Shape& ishape = inputs[1].shape();
    return DispatchScatter(data.dtype(), reduction_, op(), [&](auto tag) {
      using T = decltype(tag);
      const T* upd = inputs[2].data<T>();
      T* dst = out.data<T>();
      std::copy(data.data<T>(), data.data<T>() + data.num_elements(), dst);
      Shape pos(ishape.size(), 0);
      for (int64_t e = 0; e < static_cast<int64_t>(idx.size()); ++e) {
        int64_t off = 0;
        for (size_t i = 0; i < ishape.size(); ++i) {
          off += (static_cast<int>(i) == axis ? idx[e] : pos[i]) * strides[i];
        }
        Combine(reduction_, dst[off], upd[e]);
        for (size_t i = ishape.size(); i-- > 0;) {
          if (++pos[i] < ishape[i]) break;
          pos[i] = 0;
        }
      }
      return absl::OkStatus();
    });
  }

  const int64_t axis_;
  const Reduction reduction_;
};

// ---------------------------------------------------------------------------------------------
// GatherND, ScatterND

// Element offsets (within one batch slice of `data`) of the index tuples of `indices`, whose
// last dim is the tuple length k.
absl::StatusOr<std::vector<int64_t>> TupleOffsets(const Tensor& data, const Tensor& indices,
                                                  int batch_dims, absl::string_view op) {
  NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> raw, ReadInts(indices, op, "indices"));
  const int k = static_cast<int>(indices.dim(indices.rank() - 1));
  const Shape strides = Strides(absl::MakeConstSpan(data.shape()).subspan(batch_dims));
  const int64_t tuples =
      k == 0 ? Product(absl::MakeConstSpan(indices.shape()).first(indices.rank() - 1))
             : static_cast<int64_t>(raw.size()) / k;
  std::vector<int64_t> offsets(tuples, 0);
  for (int64_t t = 0; t < tuples; ++t) {
    int64_t off = 0;
    for (int j = 0; j < k; ++j) {
      const int64_t dim = data.dim(batch_dims + j);
      int64_t i = raw[t * k + j];
      if (i < -dim || i >= dim) {
        return absl::InvalidArgumentError(
            absl::StrCat(op, ": index ", i, " is out of range for a dim of ", dim));
      }
      if (i < 0) i += dim;
      off += i * strides[j];
    }
    offsets[t] = off;
  }
  return offsets;
}

class GatherNDKernel final : public SingleOutputKernel {
 public:
  explicit GatherNDKernel(int64_t batch_dims)
      : SingleOutputKernel("GatherND"), batch_dims_(batch_dims) {}

 private:
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 2, 2));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, 0, "data"));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, 1, "indices"));
    const Tensor& data = inputs[0];
    const Tensor& indices = inputs[1];
    const int64_t b = batch_dims_;
    const int q = indices.rank(), r = data.rank();
    if (q < 1 || r < 1 || b < 0 || b >= std::min(q, r)) {
      return absl::InvalidArgumentError(absl::StrCat("GatherND: batch_dims ", b, " with data ",
                                                     data.TypeString(), " and indices ",
                                                     indices.TypeString()));
    }
    const int64_t k = indices.dim(q - 1);
    bool ok = k >= 1 && k <= r - b;
    for (int i = 0; ok && i < b; ++i) ok = indices.dim(i) == data.dim(i);
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat("GatherND: indices ", indices.TypeString(),
                                                     " do not fit data ", data.TypeString()));
    }
    Shape out(indices.shape().begin(), indices.shape().end() - 1);
    out.insert(out.end(), data.shape().begin() + b + k, data.shape().end());
    return out;
  }
  absl::Status Compute(const KernelContext&, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    const Tensor& data = inputs[0];
    const Tensor& indices = inputs[1];
    const int b = static_cast<int>(batch_dims_);
    const int64_t k = indices.dim(indices.rank() - 1);
    NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> offsets, TupleOffsets(data, indices, b, op()));
    const int64_t batches = Product(absl::MakeConstSpan(data.shape()).first(b));
    const int64_t batch_size = Product(absl::MakeConstSpan(data.shape()).subspan(b));
    const int64_t slice = Product(absl::MakeConstSpan(data.shape()).subspan(b + k));
    const int64_t per_batch = batches == 0 ? 0 : static_cast<int64_t>(offsets.size()) / batches;
    const size_t es = DTypeSize(data.dtype());
    const char* src = static_cast<const char*>(data.raw_data());
    char* dst = static_cast<char*>(out.raw_data());
    for (int64_t t = 0; t < static_cast<int64_t>(offsets.size()); ++t) {
      const int64_t batch = t / per_batch;
      kernel_util::CopyElements(data.dtype(), dst + t * slice * es,
                                src + (batch * batch_size + offsets[t]) * es, slice);
    }
    return absl::OkStatus();
  }

  const int64_t batch_dims_;
};

class ScatterNDKernel final : public SingleOutputKernel {
 public:
  explicit ScatterNDKernel(Reduction reduction)
      : SingleOutputKernel("ScatterND"), reduction_(reduction) {}

 private:
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 3, 3));
    const char* names[] = {"data", "indices", "updates"};
    for (int i = 0; i < 3; ++i) NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, i, names[i]));
    const Tensor& data = inputs[0];
    const Tensor& indices = inputs[1];
    const Tensor& updates = inputs[2];
    bool ok = indices.rank() >= 1 && updates.dtype() == data.dtype();
    int64_t k = ok ? indices.dim(indices.rank() - 1) : 0;
    ok = ok && k >= 1 && k <= data.rank();
    if (ok) {
      Shape expected(indices.shape().begin(), indices.shape().end() - 1);
      expected.insert(expected.end(), data.shape().begin() + k, data.shape().end());
      ok = updates.shape() == expected;
    }
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat("ScatterND: indices ", indices.TypeString(),
                                                     " and updates ", updates.TypeString(),
                                                     " do not fit data ", data.TypeString()));
    }
    return data.shape();
  }
  absl::Status Compute(const KernelContext&, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    const Tensor& data = inputs[0];
    const Tensor& indices = inputs[1];
    const int64_t k = indices.dim(indices.rank() - 1);
    NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> offsets, TupleOffsets(data, indices, 0, op()));
    const int64_t slice = Product(absl::MakeConstSpan(data.shape()).subspan(k));
    return DispatchScatter(data.dtype(), reduction_, op(), [&](auto tag) {
      using T = decltype(tag);
      const T* upd = inputs[2].data<T>();
      T* dst = out.data<T>();
      std::copy(data.data<T>(), data.data<T>() + data.num_elements(), dst);
      for (size_t t = 0; t < offsets.size(); ++t) {
        for (int64_t j = 0; j < slice; ++j)
          Combine(reduction_, dst[offsets[t] + j], upd[t * slice + j]);
      }
      return absl::OkStatus();
    });
  }

  const Reduction reduction_;
};

// ---------------------------------------------------------------------------------------------
// NonZero, Compress (allocate their outputs)

bool IsNonZero(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kString:
      return !t.data<std::string>()[i].empty();
    case DType::kF16:
    case DType::kBF16:
      return (t.data<uint16_t>()[i] & 0x7fff) != 0;
    case DType::kF32:
      return t.data<float>()[i] != 0.0f;
    case DType::kF64:
      return t.data<double>()[i] != 0.0;
    case DType::kBool:
      return t.data<bool>()[i];
    case DType::kF8E4M3FN:
    case DType::kF8E4M3FNUZ:
    case DType::kF8E5M2:
    case DType::kF8E5M2FNUZ:
    case DType::kF4E2M1:
    case DType::kF8E8M0:  // -0 patterns are zero; E8M0 has no zero at all
      return LowPrecisionFloatToFloat(t.dtype(), t.data<uint8_t>()[i]) != 0.0f;
    default: {
      const size_t es = DTypeSize(t.dtype());
      const char* p = static_cast<const char*>(t.raw_data()) + i * es;
      for (size_t b = 0; b < es; ++b) {
        if (p[b] != 0) return true;
      }
      return false;
    }
  }
}

class AllocatingKernel : public Kernel {
 public:
  bool allocates_outputs() const final { return true; }
  absl::Status OutputShapes(absl::Span<const Tensor>, absl::Span<Shape>) const final {
    return absl::UnimplementedError("the output shape depends on the data; the kernel allocates");
  }
};

class NonZeroKernel final : public AllocatingKernel {
 public:
  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("NonZero", inputs.size(), 1, 1));
    NIMBLE_RETURN_IF_ERROR(CheckDefined("NonZero", inputs, 0, "X"));
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputs("NonZero", outputs, 1, 1));
    const Tensor& x = inputs[0];
    std::vector<int64_t> hits;
    for (int64_t i = 0; i < x.num_elements(); ++i) {
      if (IsNonZero(x, i)) hits.push_back(i);
    }
    const int64_t n = static_cast<int64_t>(hits.size());
    // A scalar gives one coordinate row of zeros, as onnxruntime does.
    const int rows = std::max(1, x.rank());
    NIMBLE_ASSIGN_OR_RETURN(outputs[0], Tensor::Empty(DType::kI64, {rows, n}, ctx.allocator));
    int64_t* o = outputs[0].data<int64_t>();
    if (x.rank() == 0) {
      std::fill(o, o + n, 0);
      return absl::OkStatus();
    }
    for (int64_t j = 0; j < n; ++j) {
      int64_t flat = hits[j];
      for (int d = x.rank() - 1; d >= 0; --d) {
        o[d * n + j] = flat % x.dim(d);
        flat /= x.dim(d);
      }
    }
    return absl::OkStatus();
  }
};

class CompressKernel final : public AllocatingKernel {
 public:
  explicit CompressKernel(std::optional<int64_t> axis) : axis_(axis) {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("Compress", inputs.size(), 2, 2));
    NIMBLE_RETURN_IF_ERROR(CheckDefined("Compress", inputs, 0, "input"));
    NIMBLE_RETURN_IF_ERROR(CheckDefined("Compress", inputs, 1, "condition"));
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputs("Compress", outputs, 1, 1));
    const Tensor& x = inputs[0];
    const Tensor& cond = inputs[1];
    if (cond.rank() != 1 || cond.dtype() != DType::kBool) {
      return absl::InvalidArgumentError(
          absl::StrCat("Compress: condition must be 1-D bool, got ", cond.TypeString()));
    }
    int axis = -1;
    Shape shape = {x.num_elements()};
    if (axis_.has_value()) {
      NIMBLE_ASSIGN_OR_RETURN(axis, NormalizeAxis(*axis_, x.rank(), "Compress"));
      shape = x.shape();
    }
    const int a = axis < 0 ? 0 : axis;
    const int64_t dim = shape[a];
    std::vector<int64_t> keep;
    for (int64_t i = 0; i < std::min(dim, cond.num_elements()); ++i) {
      if (cond.data<bool>()[i]) keep.push_back(i);
    }
    const int64_t outer = Product(absl::MakeConstSpan(shape).first(a));
    const int64_t inner = Product(absl::MakeConstSpan(shape).subspan(a + 1));
    Shape out_shape = shape;
    out_shape[a] = static_cast<int64_t>(keep.size());
    NIMBLE_ASSIGN_OR_RETURN(outputs[0], Tensor::Empty(x.dtype(), out_shape, ctx.allocator));
    const size_t es = DTypeSize(x.dtype());
    const char* src = static_cast<const char*>(x.raw_data());
    char* dst = static_cast<char*>(outputs[0].raw_data());
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t k : keep) {
        kernel_util::CopyElements(x.dtype(), dst, src + (o * dim + k) * inner * es, inner);
        dst += inner * es;
      }
    }
    return absl::OkStatus();
  }

 private:
  const std::optional<int64_t> axis_;
};

// ---------------------------------------------------------------------------------------------
// TopK

class TopKKernel final : public Kernel {
 public:
  TopKKernel(int64_t axis, bool largest) : axis_(axis), largest_(largest) {}

  absl::Status OutputShapes(absl::Span<const Tensor> inputs,
                            absl::Span<Shape> output_shapes) const override {
    NIMBLE_ASSIGN_OR_RETURN(Plan plan, MakePlan(inputs));
    for (Shape& s : output_shapes) s = plan.out;
    return absl::OkStatus();
  }

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_ASSIGN_OR_RETURN(Plan plan, MakePlan(inputs));
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputs("TopK", outputs, 2, 2));
    const Shape shapes[] = {plan.out, plan.out};
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputShapes("TopK", outputs, shapes));
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputDType("TopK", outputs[0], inputs[0].dtype()));
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputDType("TopK", outputs[1], DType::kI64));
    const Tensor& x = inputs[0];
    const int64_t dim = x.dim(plan.axis);
    const int64_t k = plan.out[plan.axis];
    const int64_t outer = Product(absl::MakeConstSpan(x.shape()).first(plan.axis));
    const int64_t inner = Product(absl::MakeConstSpan(x.shape()).subspan(plan.axis + 1));
    // Indices first (the optional values output is a gather by them).
    std::vector<int64_t> scratch_indices;
    int64_t* indices = nullptr;
    if (outputs[1].defined()) {
      indices = outputs[1].data<int64_t>();
    } else {
      scratch_indices.resize(outer * inner * k);
      indices = scratch_indices.data();
    }
    NIMBLE_RETURN_IF_ERROR(WithKeys(x, "TopK", [&](const auto* keys) {
      using K = std::remove_cv_t<std::remove_pointer_t<decltype(keys)>>;
      const bool largest = largest_;
      // Larger (or smaller) key first; equal keys by lower index.
      auto before = [keys, largest](int64_t a, int64_t b, int64_t ia, int64_t ib) {
        const int c = Compare3<K>(keys[a], keys[b]);
        if (c != 0) return largest ? c > 0 : c < 0;
        return ia < ib;
      };
      ParallelFor(ctx.num_threads, outer * inner,
                  std::max<int64_t>(1, 4096 / std::max<int64_t>(1, dim)),
                  [&](int64_t begin, int64_t end) {
                    std::vector<int64_t> order(dim);
                    for (int64_t s = begin; s < end; ++s) {
                      const int64_t o = s / inner, i = s % inner;
                      const int64_t base = o * dim * inner + i;
                      std::iota(order.begin(), order.end(), 0);
                      auto cmp = [&](int64_t a, int64_t b) {
                        return before(base + a * inner, base + b * inner, a, b);
                      };
                      std::partial_sort(order.begin(), order.begin() + k, order.end(), cmp);
                      for (int64_t j = 0; j < k; ++j) indices[(o * k + j) * inner + i] = order[j];
                    }
                  });
      return absl::OkStatus();
    }));
    if (outputs[0].defined()) {
      const size_t es = DTypeSize(x.dtype());
      const char* src = static_cast<const char*>(x.raw_data());
      char* dst = static_cast<char*>(outputs[0].raw_data());
      for (int64_t o = 0; o < outer; ++o) {
        for (int64_t j = 0; j < k; ++j) {
          for (int64_t i = 0; i < inner; ++i) {
            const int64_t out_off = (o * k + j) * inner + i;
            kernel_util::CopyElements(x.dtype(), dst + out_off * es,
                                      src + ((o * dim + indices[out_off]) * inner + i) * es, 1);
          }
        }
      }
    }
    return absl::OkStatus();
  }

 private:
  struct Plan {
    int axis = 0;
    Shape out;
  };
  absl::StatusOr<Plan> MakePlan(absl::Span<const Tensor> inputs) const {
    NIMBLE_RETURN_IF_ERROR(CheckArity("TopK", inputs.size(), 2, 2));
    NIMBLE_RETURN_IF_ERROR(CheckDefined("TopK", inputs, 0, "X"));
    NIMBLE_RETURN_IF_ERROR(CheckDefined("TopK", inputs, 1, "K"));
    const Tensor& x = inputs[0];
    Plan plan;
    NIMBLE_ASSIGN_OR_RETURN(plan.axis, NormalizeAxis(axis_, x.rank(), "TopK"));
    NIMBLE_ASSIGN_OR_RETURN(int64_t k, kernel_util::ReadScalarInt(inputs[1], "TopK", "K"));
    if (k < 0 || k > x.dim(plan.axis)) {
      return absl::InvalidArgumentError(absl::StrCat("TopK: k = ", k, " is outside [0, ",
                                                     x.dim(plan.axis), "] for ", x.TypeString()));
    }
    plan.out = x.shape();
    plan.out[plan.axis] = k;
    return plan;
  }

  const int64_t axis_;
  const bool largest_;
};

// ---------------------------------------------------------------------------------------------
// OneHot

class OneHotKernel final : public SingleOutputKernel {
 public:
  explicit OneHotKernel(int64_t axis) : SingleOutputKernel("OneHot"), axis_(axis) {}

 private:
  absl::StatusOr<int64_t> Depth(absl::Span<const Tensor> inputs) const {
    NIMBLE_ASSIGN_OR_RETURN(double d, kernel_util::ReadScalarDouble(inputs[1], op(), "depth"));
    if (!(d >= 1) || d > 1e15) {
      return absl::InvalidArgumentError(absl::StrCat("OneHot: depth ", d, " is not positive"));
    }
    return static_cast<int64_t>(d);
  }
  absl::StatusOr<Shape> InferShape(absl::Span<const Tensor> inputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity(op(), inputs.size(), 3, 3));
    const char* names[] = {"indices", "depth", "values"};
    for (int i = 0; i < 3; ++i) NIMBLE_RETURN_IF_ERROR(CheckDefined(op(), inputs, i, names[i]));
    if (inputs[2].num_elements() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("OneHot: values must have 2 elements, got ", inputs[2].TypeString()));
    }
    if (inputs[0].dtype() == DType::kString) {
      return absl::InvalidArgumentError("OneHot: indices must be numeric");
    }
    NIMBLE_ASSIGN_OR_RETURN(int64_t depth, Depth(inputs));
    const int r = inputs[0].rank();
    NIMBLE_ASSIGN_OR_RETURN(int axis, NormalizeAxis(axis_, r + 1, op()));
    Shape out = inputs[0].shape();
    out.insert(out.begin() + axis, depth);
    return out;
  }
  absl::StatusOr<DType> OutputDType(absl::Span<const Tensor> inputs) const override {
    return inputs[2].dtype();
  }
  absl::Status Compute(const KernelContext&, absl::Span<const Tensor> inputs,
                       const Tensor& out) const override {
    NIMBLE_ASSIGN_OR_RETURN(int64_t depth, Depth(inputs));
    const Tensor& indices = inputs[0];
    const int axis = static_cast<int>(axis_ < 0 ? axis_ + indices.rank() + 1 : axis_);
    const int64_t outer = Product(absl::MakeConstSpan(indices.shape()).first(axis));
    const int64_t inner = Product(absl::MakeConstSpan(indices.shape()).subspan(axis));
    return DispatchByElementSize(out.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T off = inputs[2].data<T>()[0];
      const T on = inputs[2].data<T>()[1];
      T* o = out.data<T>();
      std::fill(o, o + out.num_elements(), off);
      for (int64_t a = 0; a < outer; ++a) {
        for (int64_t i = 0; i < inner; ++i) {
          const double v = kernel_util::ElementAsDouble(indices, a * inner + i);
          if (!(v >= -static_cast<double>(depth) && v < static_cast<double>(depth))) continue;
          int64_t idx = static_cast<int64_t>(v);
          if (idx < 0) idx += depth;
          if (idx < 0 || idx >= depth) continue;
          o[(a * depth + idx) * inner + i] = on;
        }
      }
      return absl::OkStatus();
    });
  }

  const int64_t axis_;
};

// ---------------------------------------------------------------------------------------------
// Unique

class UniqueKernel final : public AllocatingKernel {
 public:
  UniqueKernel(std::optional<int64_t> axis, bool sorted) : axis_(axis), sorted_(sorted) {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    NIMBLE_RETURN_IF_ERROR(CheckArity("Unique", inputs.size(), 1, 1));
    NIMBLE_RETURN_IF_ERROR(CheckDefined("Unique", inputs, 0, "X"));
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputs("Unique", outputs, 1, 4));
    const Tensor& x = inputs[0];
    Shape shape = {x.num_elements()};
    int axis = 0;
    if (axis_.has_value()) {
      NIMBLE_ASSIGN_OR_RETURN(axis, NormalizeAxis(*axis_, x.rank(), "Unique"));
      shape = x.shape();
    }
    const int64_t n = shape[axis];
    const int64_t outer = Product(absl::MakeConstSpan(shape).first(axis));
    const int64_t inner = Product(absl::MakeConstSpan(shape).subspan(axis + 1));
    // Slices along the axis compare lexicographically in (outer, inner) order.
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::vector<int64_t> group_of(n, 0);  // group id of each slice
    std::vector<int64_t> first;           // per group: first occurrence
    std::vector<int64_t> count;           // per group
    NIMBLE_RETURN_IF_ERROR(WithKeys(x, "Unique", [&](const auto* keys) {
      using K = std::remove_cv_t<std::remove_pointer_t<decltype(keys)>>;
      auto cmp_slices = [&](int64_t a, int64_t b) {
        for (int64_t o = 0; o < outer; ++o) {
          for (int64_t i = 0; i < inner; ++i) {
            const int c = Compare3<K>(keys[(o * n + a) * inner + i], keys[(o * n + b) * inner + i]);
            if (c != 0) return c;
          }
        }
        return 0;
      };
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t a, int64_t b) { return cmp_slices(a, b) < 0; });
      for (int64_t j = 0; j < n; ++j) {
        if (j == 0 || cmp_slices(order[j - 1], order[j]) != 0) {
          first.push_back(order[j]);
          count.push_back(0);
        }
        group_of[order[j]] = static_cast<int64_t>(first.size()) - 1;
        ++count.back();
      }
      return absl::OkStatus();
    }));
    const int64_t groups = static_cast<int64_t>(first.size());
    // rank[g]: output position of sorted group g.
    std::vector<int64_t> position(groups);
    std::iota(position.begin(), position.end(), 0);
    if (!sorted_) {
      std::vector<int64_t> by_first(groups);
      std::iota(by_first.begin(), by_first.end(), 0);
      std::sort(by_first.begin(), by_first.end(),
                [&](int64_t a, int64_t b) { return first[a] < first[b]; });
      for (int64_t p = 0; p < groups; ++p) position[by_first[p]] = p;
    }
    Shape y_shape = shape;
    y_shape[axis] = groups;
    if (!axis_.has_value()) y_shape = {groups};
    NIMBLE_ASSIGN_OR_RETURN(outputs[0], Tensor::Empty(x.dtype(), y_shape, ctx.allocator));
    const size_t es = DTypeSize(x.dtype());
    const char* src = static_cast<const char*>(x.raw_data());
    char* dst = static_cast<char*>(outputs[0].raw_data());
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t o = 0; o < outer; ++o) {
        kernel_util::CopyElements(x.dtype(), dst + ((o * groups + position[g]) * inner) * es,
                                  src + ((o * n + first[g]) * inner) * es, inner);
      }
    }
    if (outputs.size() > 1) {
      NIMBLE_ASSIGN_OR_RETURN(outputs[1], Tensor::Empty(DType::kI64, {groups}, ctx.allocator));
      for (int64_t g = 0; g < groups; ++g) outputs[1].data<int64_t>()[position[g]] = first[g];
    }
    if (outputs.size() > 2) {
      NIMBLE_ASSIGN_OR_RETURN(outputs[2], Tensor::Empty(DType::kI64, {n}, ctx.allocator));
      for (int64_t j = 0; j < n; ++j) outputs[2].data<int64_t>()[j] = position[group_of[j]];
    }
    if (outputs.size() > 3) {
      NIMBLE_ASSIGN_OR_RETURN(outputs[3], Tensor::Empty(DType::kI64, {groups}, ctx.allocator));
      for (int64_t g = 0; g < groups; ++g) outputs[3].data<int64_t>()[position[g]] = count[g];
    }
    return absl::OkStatus();
  }

 private:
  const std::optional<int64_t> axis_;
  const bool sorted_;
};

// ---------------------------------------------------------------------------------------------
// NonMaxSuppression

class NonMaxSuppressionKernel final : public AllocatingKernel {
 public:
  explicit NonMaxSuppressionKernel(bool center_point_box) : center_(center_point_box) {}

  absl::Status Run(const KernelContext& ctx, absl::Span<const Tensor> inputs,
                   absl::Span<Tensor> outputs) const override {
    constexpr absl::string_view kOp = "NonMaxSuppression";
    NIMBLE_RETURN_IF_ERROR(CheckArity(kOp, inputs.size(), 2, 5));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(kOp, inputs, 0, "boxes"));
    NIMBLE_RETURN_IF_ERROR(CheckDefined(kOp, inputs, 1, "scores"));
    NIMBLE_RETURN_IF_ERROR(kernel_util::CheckOutputs(kOp, outputs, 1, 1));
    const Tensor& boxes = inputs[0];
    const Tensor& scores = inputs[1];
    if (boxes.rank() != 3 || boxes.dim(2) != 4 || scores.rank() != 3 ||
        scores.dim(0) != boxes.dim(0) || scores.dim(2) != boxes.dim(1) ||
        boxes.dtype() != DType::kF32 || scores.dtype() != DType::kF32) {
      return absl::InvalidArgumentError(absl::StrCat(
          "NonMaxSuppression: boxes ", boxes.TypeString(), " and scores ", scores.TypeString(),
          " must be f32 [batches, boxes, 4] and [batches, classes, boxes]"));
    }
    int64_t max_out = 0;
    float iou_threshold = 0.0f;
    bool has_score_threshold = false;
    float score_threshold = 0.0f;
    if (Present(inputs, 2)) {
      NIMBLE_ASSIGN_OR_RETURN(
          max_out, kernel_util::ReadScalarInt(inputs[2], kOp, "max_output_boxes_per_class"));
    }
    if (Present(inputs, 3)) {
      NIMBLE_ASSIGN_OR_RETURN(double v,
                              kernel_util::ReadScalarDouble(inputs[3], kOp, "iou_threshold"));
      iou_threshold = static_cast<float>(v);
    }
    if (Present(inputs, 4)) {
      NIMBLE_ASSIGN_OR_RETURN(double v,
                              kernel_util::ReadScalarDouble(inputs[4], kOp, "score_threshold"));
      score_threshold = static_cast<float>(v);
      has_score_threshold = true;
    }
    const int64_t batches = boxes.dim(0), num_boxes = boxes.dim(1), classes = scores.dim(1);
    std::vector<int64_t> selected;  // triples
    if (max_out > 0) {
      const float* bx = boxes.data<float>();
      const float* sc = scores.data<float>();
      std::vector<int64_t> candidates;
      std::vector<int64_t> kept;
      for (int64_t b = 0; b < batches; ++b) {
        const float* bb = bx + b * num_boxes * 4;
        for (int64_t c = 0; c < classes; ++c) {
          const float* s = sc + (b * classes + c) * num_boxes;
          candidates.clear();
          for (int64_t i = 0; i < num_boxes; ++i) {
            if (!has_score_threshold || s[i] > score_threshold) candidates.push_back(i);
          }
          // Higher score first; equal scores by lower box index.
          std::stable_sort(candidates.begin(), candidates.end(),
                           [s](int64_t x, int64_t y) { return Compare3<float>(s[x], s[y]) > 0; });
          kept.clear();
          for (int64_t i : candidates) {
            if (static_cast<int64_t>(kept.size()) >= max_out) break;
            bool suppressed = false;
            for (int64_t j : kept) {
              if (Suppresses(bb + j * 4, bb + i * 4, iou_threshold)) {
                suppressed = true;
                break;
              }
            }
            if (suppressed) continue;
            kept.push_back(i);
            selected.insert(selected.end(), {b, c, i});
          }
        }
      }
    }
    const int64_t n = static_cast<int64_t>(selected.size()) / 3;
    NIMBLE_ASSIGN_OR_RETURN(outputs[0], Tensor::Empty(DType::kI64, {n, 3}, ctx.allocator));
    std::copy(selected.begin(), selected.end(), outputs[0].data<int64_t>());
    return absl::OkStatus();
  }

 private:
  // Corners (y1, x1, y2, x2) with min <= max.
  void Corners(const float* box, float c[4]) const {
    if (center_) {
      const float xc = box[0], yc = box[1], w = box[2] / 2, h = box[3] / 2;
      c[0] = yc - h;
      c[1] = xc - w;
      c[2] = yc + h;
      c[3] = xc + w;
    } else {
      c[0] = std::min(box[0], box[2]);
      c[1] = std::min(box[1], box[3]);
      c[2] = std::max(box[0], box[2]);
      c[3] = std::max(box[1], box[3]);
    }
  }
  bool Suppresses(const float* a, const float* b, float threshold) const {
    float ca[4], cb[4];
    Corners(a, ca);
    Corners(b, cb);
    const float area_a = (ca[2] - ca[0]) * (ca[3] - ca[1]);
    const float area_b = (cb[2] - cb[0]) * (cb[3] - cb[1]);
    if (area_a <= 0 || area_b <= 0) return false;
    const float ih = std::min(ca[2], cb[2]) - std::max(ca[0], cb[0]);
    const float iw = std::min(ca[3], cb[3]) - std::max(ca[1], cb[1]);
    if (ih <= 0 || iw <= 0) return false;
    const float inter = ih * iw;
    return inter / (area_a + area_b - inter) > threshold;
  }

  const bool center_;
};

template <typename K, typename... Args>
absl::StatusOr<KernelPtr> Make(Args&&... args) {
  return KernelPtr(new K(std::forward<Args>(args)...));
}

std::optional<int64_t> OptionalAxis(const Attributes& a) {
  if (!a.Has("axis")) return std::nullopt;
  return a.GetOr<int64_t>("axis", 0);
}

}  // namespace

void RegisterIndexingKernels(KernelRegistry& registry) {
  auto reg = [&registry](const std::string& name, KernelFactory factory) {
    registry.Register(name, DeviceType::kCPU, std::move(factory));
  };
  reg("Gather",
      [](const Attributes& a) { return Make<GatherKernel>(a.GetOr<int64_t>("axis", 0)); });
  reg("GatherElements",
      [](const Attributes& a) { return Make<GatherElementsKernel>(a.GetOr<int64_t>("axis", 0)); });
  reg("GatherND",
      [](const Attributes& a) { return Make<GatherNDKernel>(a.GetOr<int64_t>("batch_dims", 0)); });
  reg("ScatterND", [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
    NIMBLE_ASSIGN_OR_RETURN(Reduction r, ParseReduction(a));
    return Make<ScatterNDKernel>(r);
  });
  auto scatter_elements = [](const Attributes& a) -> absl::StatusOr<KernelPtr> {
    NIMBLE_ASSIGN_OR_RETURN(Reduction r, ParseReduction(a));
    return Make<ScatterElementsKernel>(a.GetOr<int64_t>("axis", 0), r);
  };
  reg("ScatterElements", scatter_elements);
  reg("Scatter", scatter_elements);  // opset 9-10 name of ScatterElements
  reg("NonZero", [](const Attributes&) { return Make<NonZeroKernel>(); });
  reg("Compress", [](const Attributes& a) { return Make<CompressKernel>(OptionalAxis(a)); });
  reg("TopK", [](const Attributes& a) {
    return Make<TopKKernel>(a.GetOr<int64_t>("axis", -1), a.GetOr<int64_t>("largest", 1) != 0);
  });
  reg("OneHot",
      [](const Attributes& a) { return Make<OneHotKernel>(a.GetOr<int64_t>("axis", -1)); });
  reg("Unique", [](const Attributes& a) {
    return Make<UniqueKernel>(OptionalAxis(a), a.GetOr<int64_t>("sorted", 1) != 0);
  });
  reg("NonMaxSuppression", [](const Attributes& a) {
    return Make<NonMaxSuppressionKernel>(a.GetOr<int64_t>("center_point_box", 0) != 0);
  });
}

}  // namespace nimble::vm::cpu
