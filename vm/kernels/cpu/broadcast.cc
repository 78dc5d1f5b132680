#include "vm/kernels/cpu/broadcast.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"

namespace nimble::vm::cpu {

absl::StatusOr<Shape> BroadcastShapes(absl::Span<const Shape> shapes) {
  size_t rank = 0;
  for (const Shape& s : shapes) rank = std::max(rank, s.size());
  Shape out(rank, 1);
  for (const Shape& s : shapes) {
    const size_t shift = rank - s.size();
    for (size_t i = 0; i < s.size(); ++i) {
      const int64_t d = s[i];
      int64_t& o = out[shift + i];
      if (d == o || d == 1) continue;
      if (o == 1) {
        o = d;
        continue;
      }
      std::vector<std::string> parts;
      for (const Shape& t : shapes) parts.push_back(ShapeToString(t));
      return absl::InvalidArgumentError(
          absl::StrCat("shapes ", absl::StrJoin(parts, ", "), " cannot be broadcast together"));
    }
  }
  return out;
}

Shape BroadcastStrides(absl::Span<const int64_t> in_shape, absl::Span<const int64_t> out_shape) {
  Shape strides(out_shape.size(), 0);
  const size_t shift = out_shape.size() - in_shape.size();
  int64_t stride = 1;
  for (size_t i = in_shape.size(); i-- > 0;) {
    strides[shift + i] = in_shape[i] == 1 ? 0 : stride;
    stride *= in_shape[i];
  }
  return strides;
}

absl::StatusOr<BroadcastPlan> BroadcastPlan::Create(absl::Span<const Shape> in_shapes,
                                                    absl::Span<const int64_t> out_shape) {
  const int n = static_cast<int>(in_shapes.size());
  const size_t rank = out_shape.size();
  for (const Shape& s : in_shapes) {
    bool ok = s.size() <= rank;
    for (size_t i = 0; ok && i < s.size(); ++i) {
      const int64_t d = s[i];
      ok = d == 1 || d == out_shape[rank - s.size() + i];
    }
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "shape ", ShapeToString(s), " cannot be broadcast to ", ShapeToString(out_shape)));
    }
  }
  BroadcastPlan plan;
  NIMBLE_ASSIGN_OR_RETURN(plan.num_elements_, NumElements(out_shape));
  std::vector<Shape> strides;
  for (const Shape& s : in_shapes) strides.push_back(BroadcastStrides(s, out_shape));

  // Merge dims, dropping size-1 output dims (they contribute nothing to the walk).
  std::vector<int64_t> dims;
  std::vector<std::vector<int64_t>> merged(n);
  for (size_t k = 0; k < rank; ++k) {
    if (out_shape[k] == 1) continue;
    bool can_merge = !dims.empty();
    for (int i = 0; can_merge && i < n; ++i) {
      // Contiguous with the previous dim for this input: prev_stride == stride * extent, or
      // both broadcast (0).
      can_merge = merged[i].back() == strides[i][k] * out_shape[k];
    }
    if (can_merge) {
      dims.back() *= out_shape[k];
      for (int i = 0; i < n; ++i) merged[i].back() = strides[i][k];
      continue;
    }
    dims.push_back(out_shape[k]);
    for (int i = 0; i < n; ++i) merged[i].push_back(strides[i][k]);
  }
  plan.inner_strides_.assign(n, 0);
  plan.outer_strides_.resize(n);
  if (dims.empty() || plan.num_elements_ == 0) {
    // Scalar output, or empty: one row of num_elements (the inner loop then never reads
    // inputs whose stride is nonzero past their end since inputs are scalars or empty).
    plan.inner_ = std::max<int64_t>(plan.num_elements_, 1);
    plan.outer_ = plan.num_elements_ == 0 ? 0 : 1;
    for (int i = 0; i < n; ++i) plan.inner_strides_[i] = plan.num_elements_ > 1 ? 1 : 0;
    return plan;
  }
  // The inner dim must have stride 0 or 1 for every input; when an input has another stride
  // there (it cannot: the last non-1 dim of a row-major input always has stride 1 or 0).
  plan.inner_ = dims.back();
  plan.outer_ = plan.num_elements_ / plan.inner_;
  for (int i = 0; i < n; ++i) plan.inner_strides_[i] = merged[i].back() == 0 ? 0 : 1;
  plan.outer_dims_.assign(dims.begin(), dims.end() - 1);
  for (int i = 0; i < n; ++i) {
    plan.outer_strides_[i].assign(merged[i].begin(), merged[i].end() - 1);
  }
  return plan;
}

int64_t BroadcastPlan::RowOffset(int i, int64_t row) const {
  int64_t off = 0;
  for (int k = static_cast<int>(outer_dims_.size()) - 1; k >= 0; --k) {
    off += (row % outer_dims_[k]) * outer_strides_[i][k];
    row /= outer_dims_[k];
  }
  return off;
}

}  // namespace nimble::vm::cpu
