// MatMulSplitK + SplitSumLayerNorm against the ops they replace (FusedMatMul with bias and
// residual, then LayerNormalization) and a float64 reference, in f32, f16 and bf16.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vm/kernels/cpu/elementwise_test_util.h"
#include "vm/kernels/split_gemm_rule.h"

namespace nimble::vm::cpu {
namespace {

using ::nimble::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Pointwise;
using namespace ::nimble::vm::cpu::testing;  // NOLINT

Tensor Typed(DType dtype, const std::vector<float>& v, Shape shape) {
  return dtype == DType::kF32 ? F(v, std::move(shape)) : Half(dtype, v, std::move(shape));
}
std::vector<float> Floats(const Tensor& t) {
  return t.dtype() == DType::kF32 ? Values<float>(t) : HalfValues(t);
}

TEST(SplitGemmTest, SplitPairEqualsGemmThenLayerNorm) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  struct Case {
    int64_t batch, rows, k, n, splits;
  };
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    // The last case is past kMaxSplitRows: one slice in effect (vm/kernels/split_gemm_rule.h).
    for (const Case& c : {Case{1, 7, 48, 24, 2}, Case{2, 5, 96, 40, 3}, Case{1, 3, 64, 8, 8},
                          Case{1, 4, 32, 16, 1}, Case{2, kMaxSplitRows / 2 + 10, 48, 8, 2}}) {
      SCOPED_TRACE(::testing::Message() << DTypeName(dtype) << " rows " << c.batch * c.rows << " K "
                                        << c.k << " N " << c.n << " splits " << c.splits);
      auto random = [&](int64_t count) {
        std::vector<float> v(count);
        for (float& x : v) x = dist(rng);
        return v;
      };
      // Values rounded to the storage type first, so the reference sees what the kernels see.
      auto stored = [&](std::vector<float> v, Shape shape) {
        return Floats(Typed(dtype, v, std::move(shape)));
      };
      const Shape xs = {c.batch, c.rows, c.k}, ys = {c.batch, c.rows, c.n};
      const std::vector<float> x = stored(random(c.batch * c.rows * c.k), xs);
      const std::vector<float> w = stored(random(c.k * c.n), {c.k, c.n});
      const std::vector<float> bias = stored(random(c.n), {c.n});
      const std::vector<float> res = stored(random(c.batch * c.rows * c.n), ys);
      const std::vector<float> gamma = stored(random(c.n), {c.n});
      const std::vector<float> beta = stored(random(c.n), {c.n});
      // Partial products in f32 and in the storage type; the split pair to either type.
      for (DType parts_type : {DType::kF32, dtype}) {
        if (parts_type == dtype && dtype == DType::kF32) continue;
        NIMBLE_ASSERT_OK_AND_ASSIGN(
            auto parts, RunOp("MatMulSplitK", Attrs({{"splits", c.splits}}),
                              {Typed(dtype, x, xs), Typed(dtype, w, {c.k, c.n})}, 1, {parts_type}));
        ASSERT_EQ(parts[0].shape(), (Shape{c.splits, c.batch, c.rows, c.n}));
        ASSERT_EQ(parts[0].dtype(), parts_type);
        if (c.batch * c.rows > kMaxSplitRows) {  // the whole-K product in slice 0, zeros after
          const std::vector<float> all = Floats(parts[0]);
          EXPECT_THAT(std::vector<float>(all.begin() + c.batch * c.rows * c.n, all.end()),
                      ::testing::Each(0.0f));
        }
        for (DType out : {dtype, DType::kF32}) {
          SCOPED_TRACE(::testing::Message() << "partials " << DTypeName(parts_type));
          NIMBLE_ASSERT_OK_AND_ASSIGN(
              auto y, RunOp("SplitSumLayerNorm", Attrs({{"epsilon", 1e-5}}),
                            {parts[0], Typed(dtype, bias, {c.n}), Typed(dtype, res, ys),
                             Typed(dtype, gamma, {c.n}), Typed(dtype, beta, {c.n})},
                            1, {out}));
          // float64 reference.
          std::vector<double> ref(c.batch * c.rows * c.n);
          const int64_t rows = c.batch * c.rows;
          for (int64_t r = 0; r < rows; ++r) {
            std::vector<double> v(c.n);
            double mean = 0;
            for (int64_t j = 0; j < c.n; ++j) {
              double acc = bias[j] + res[r * c.n + j];
              for (int64_t kk = 0; kk < c.k; ++kk) acc += double{x[r * c.k + kk]} * w[kk * c.n + j];
              v[j] = acc;
              mean += acc / c.n;
            }
            double var = 0;
            for (double e : v) var += (e - mean) * (e - mean) / c.n;
            for (int64_t j = 0; j < c.n; ++j) {
              ref[r * c.n + j] = (v[j] - mean) / std::sqrt(var + 1e-5) * gamma[j] + beta[j];
            }
          }
          // Half partials add a rounding a slice (the f32 sum of S of them).
          const double tol = out == DType::kF32 && parts_type == DType::kF32 ? 1e-4
                             : dtype == DType::kF16                          ? 4e-3
                                                                             : 2e-2;
          EXPECT_THAT(Floats(y[0]), Pointwise(NearRel(tol, tol), ref)) << DTypeName(out);
          if (out != dtype || dtype != DType::kF32) continue;
          // The ops the pass replaces (their CPU kernels are f32 only).
          NIMBLE_ASSERT_OK_AND_ASSIGN(auto fused,
                                      RunOp("FusedMatMul", Attrs({{"activation", std::string()}}),
                                            {Typed(dtype, x, xs), Typed(dtype, w, {c.k, c.n}),
                                             Typed(dtype, bias, {c.n}), Typed(dtype, res, ys)}));
          NIMBLE_ASSERT_OK_AND_ASSIGN(
              auto ln, RunOp("LayerNormalization", Attrs({{"epsilon", 1e-5}}),
                             {fused[0], Typed(dtype, gamma, {c.n}), Typed(dtype, beta, {c.n})}));
          const std::vector<float> a = Floats(ln[0]);
          std::vector<double> unfused(a.begin(), a.end());
          EXPECT_THAT(Floats(y[0]), Pointwise(NearRel(2 * tol, 2 * tol), unfused));
        }
      }
    }
  }
}

TEST(SplitGemmTest, BadInputIsAnError) {
  const Tensor x = F(std::vector<float>(12, 1.0f), {3, 4});
  const Tensor w = F(std::vector<float>(8, 1.0f), {4, 2});
  // K = 4 does not split 3 ways.
  EXPECT_THAT(RunOp("MatMulSplitK", Attrs({{"splits", int64_t{3}}}), {x, w}, 1, {DType::kF32}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("slices")));
  EXPECT_THAT(RunOp("MatMulSplitK", Attrs({{"splits", int64_t{0}}}), {x, w}, 1, {DType::kF32}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("splits")));
  // The partial products are f32 or x's type (here f32).
  EXPECT_THAT(RunOp("MatMulSplitK", Attrs({{"splits", int64_t{2}}}), {x, w}, 1, {DType::kF16}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto parts, RunOp("MatMulSplitK", Attrs({{"splits", int64_t{2}}}), {x, w}, 1, {DType::kF32}));
  // No partial products at all.
  EXPECT_THAT(
      RunOp("SplitSumLayerNorm", {}, {F({}, {0, 3, 2}), Tensor(), Tensor(), F({1, 1}, {2})}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no partial products")));
  // K = 0: empty products are zeros.
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto empty, RunOp("MatMulSplitK", Attrs({{"splits", int64_t{2}}}),
                                                {F({}, {3, 0}), F({}, {0, 2})}, 1, {DType::kF32}));
  EXPECT_THAT(Values<float>(empty[0]), ::testing::Each(0.0f));
  EXPECT_EQ(empty[0].shape(), (Shape{2, 3, 2}));
  // gamma is required; a residual of the wrong shape is refused.
  EXPECT_THAT(RunOp("SplitSumLayerNorm", {}, {parts[0], Tensor(), Tensor(), Tensor()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("gamma")));
  EXPECT_THAT(
      RunOp("SplitSumLayerNorm", {}, {parts[0], Tensor(), F({1, 2}, {1, 2}), F({1, 1}, {2})}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("input 2")));
}

}  // namespace
}  // namespace nimble::vm::cpu
