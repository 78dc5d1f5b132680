// Multidirectional (numpy) broadcasting shared by the CPU kernels.
//
// BroadcastShapes gives the ONNX output shape of broadcast operands. BroadcastPlan turns a set
// of operand shapes and the output shape into the cheapest loop nest: size-1 output dims are
// dropped and adjacent dims that every operand walks the same way are merged, so `[N, D] + [D]`
// becomes an outer loop over N with a contiguous inner loop over D, and same-shape operands
// become one flat loop. Kernels then run a specialised inner loop per (operand stride 0 or 1)
// combination, which the compiler vectorises.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vm/runtime/tensor.h"

namespace nimble::vm::cpu {

// The broadcast of `shapes` (right-aligned; each dim equal or 1). kInvalidArgument naming the
// shapes when they are incompatible. An empty list gives the scalar shape [].
absl::StatusOr<Shape> BroadcastShapes(absl::Span<const Shape> shapes);

// Row-major element strides of `in_shape` read as `out_shape` (which `in_shape` broadcasts to):
// 0 on broadcast dims. The result has out_shape.size() entries.
Shape BroadcastStrides(absl::Span<const int64_t> in_shape, absl::Span<const int64_t> out_shape);

// A collapsed loop nest over an output and the operands broadcast to it.
// Thread-safe to read.
class BroadcastPlan {
 public:
  // `in_shapes` must broadcast to `out_shape` (checked: kInvalidArgument otherwise).
  static absl::StatusOr<BroadcastPlan> Create(absl::Span<const Shape> in_shapes,
                                              absl::Span<const int64_t> out_shape);

  int num_inputs() const { return static_cast<int>(inner_strides_.size()); }
  int64_t num_elements() const { return num_elements_; }
  // Length of the innermost loop (the last merged dim); 1 for a scalar output.
  int64_t inner() const { return inner_; }
  // Number of inner rows (num_elements / inner).
  int64_t outer() const { return outer_; }
  // Stride (0 or 1) of input `i` along the inner loop.
  int64_t inner_stride(int i) const { return inner_strides_[i]; }
  // Element offset of input `i` at the start of inner row `row`.
  int64_t RowOffset(int i, int64_t row) const;

  // Visits the output range [begin, end) as pieces that stay inside one inner row:
  // fn(out_offset, in_offsets (num_inputs entries), length). Cheap per piece (an odometer).
  template <typename Fn>
  void ForEachSegment(int64_t begin, int64_t end, Fn&& fn) const;

 private:
  int64_t num_elements_ = 0;
  int64_t inner_ = 1;
  int64_t outer_ = 1;
  std::vector<int64_t> inner_strides_;               // per input
  std::vector<int64_t> outer_dims_;                  // merged outer dims, outermost first
  std::vector<std::vector<int64_t>> outer_strides_;  // per input, per outer dim
};

template <typename Fn>
void BroadcastPlan::ForEachSegment(int64_t begin, int64_t end, Fn&& fn) const {
  if (begin >= end) return;
  const int n = num_inputs();
  const int d = static_cast<int>(outer_dims_.size());
  absl::InlinedVector<int64_t, 8> offsets(n);
  Shape index(d, 0);
  int64_t row = begin / inner_;
  int64_t pos = begin % inner_;
  // Decompose the first row into the odometer once.
  for (int k = d - 1; k >= 0; --k) {
    index[k] = row % outer_dims_[k];
    row /= outer_dims_[k];
  }
  for (int i = 0; i < n; ++i) {
    int64_t off = 0;
    for (int k = 0; k < d; ++k) off += index[k] * outer_strides_[i][k];
    offsets[i] = off;
  }
  int64_t out = begin;
  absl::InlinedVector<int64_t, 8> seg_offsets(n);
  while (out < end) {
    const int64_t len = std::min(inner_ - pos, end - out);
    for (int i = 0; i < n; ++i) seg_offsets[i] = offsets[i] + pos * inner_strides_[i];
    fn(out, absl::Span<const int64_t>(seg_offsets.data(), n), len);
    out += len;
    pos = 0;
    // Advance the odometer by one row.
    for (int k = d - 1; k >= 0; --k) {
      if (++index[k] < outer_dims_[k]) {
        for (int i = 0; i < n; ++i) offsets[i] += outer_strides_[i][k];
        break;
      }
      index[k] = 0;
      for (int i = 0; i < n; ++i) offsets[i] -= (outer_dims_[k] - 1) * outer_strides_[i][k];
    }
  }
}

}  // namespace nimble::vm::cpu
