#include <cmath>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vm/kernels/cpu/elementwise_test_util.h"
#include "vm/kernels/cpu/small_gemm.h"
#include "vm/kernels/kernel.h"

namespace nimble::vm {
namespace {

using ::nimble::testing::IsOk;
using ::nimble::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

Tensor F(std::vector<float> v, Shape shape) { return Tensor::FromVector<float>(v, shape); }
Tensor I(std::vector<int64_t> v, Shape shape) { return Tensor::FromVector<int64_t>(v, shape); }

template <typename T>
std::vector<T> Values(const Tensor& t) {
  return std::vector<T>(t.data<T>(), t.data<T>() + t.num_elements());
}

Attributes Attrs(std::initializer_list<std::pair<std::string, AttrValue>> values) {
  Attributes a;
  for (const auto& [k, v] : values) a.Set(k, v);
  return a;
}

int64_t Count(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

// Deterministic values in [-1, 1).
std::vector<float> Random(int64_t n, uint32_t seed) {
  std::vector<float> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (int64_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    v[i] = static_cast<float>(x >> 8) / static_cast<float>(1 << 24) * 2.0f - 1.0f;
  }
  return v;
}

absl::StatusOr<std::vector<Tensor>> RunOp(const std::string& op, const Attributes& attrs,
                                          std::vector<Tensor> inputs, int num_outputs = 1,
                                          std::vector<DType> dtypes = {}, int threads = 1) {
  NIMBLE_ASSIGN_OR_RETURN(auto kernel, KernelRegistry::Global().Create(op, kCpu.type, attrs));
  std::vector<Shape> shapes(num_outputs);
  NIMBLE_RETURN_IF_ERROR(kernel->OutputShapes(inputs, absl::MakeSpan(shapes)));
  std::vector<Tensor> outputs(num_outputs);
  for (int i = 0; i < num_outputs; ++i) {
    const DType dtype = i < static_cast<int>(dtypes.size()) ? dtypes[i] : inputs[0].dtype();
    NIMBLE_ASSIGN_OR_RETURN(outputs[i], Tensor::Empty(dtype, shapes[i]));
  }
  KernelContext ctx;
  ctx.num_threads = threads;
  NIMBLE_RETURN_IF_ERROR(kernel->Run(ctx, inputs, absl::MakeSpan(outputs)));
  return outputs;
}

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, float rel = 1e-4f) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], rel * std::max(1.0f, std::fabs(want[i]))) << "at " << i;
  }
}

// Numpy matmul of row-major a and b, by definition.
std::vector<float> NaiveMatMul(const std::vector<float>& a, Shape as, const std::vector<float>& b,
                               Shape bs, Shape* out_shape) {
  const bool av = as.size() == 1, bv = bs.size() == 1;
  if (av) as = {1, as[0]};
  if (bv) bs = {bs[0], 1};
  const int64_t m = as[as.size() - 2], k = as.back(), n = bs.back();
  Shape ab(as.begin(), as.end() - 2), bb(bs.begin(), bs.end() - 2);
  const size_t r = std::max(ab.size(), bb.size());
  while (ab.size() < r) ab.insert(ab.begin(), 1);
  while (bb.size() < r) bb.insert(bb.begin(), 1);
  Shape batch(r);
  for (size_t i = 0; i < r; ++i) batch[i] = std::max(ab[i], bb[i]);
  *out_shape = batch;
  if (!av) out_shape->push_back(m);
  if (!bv) out_shape->push_back(n);
  std::vector<float> out(Count(batch) * m * n);
  Shape idx(r, 0);
  for (int64_t bi = 0; bi < Count(batch); ++bi) {
    int64_t ao = 0, bo = 0;
    for (size_t i = 0; i < r; ++i) {
      ao = ao * ab[i] + (ab[i] == 1 ? 0 : idx[i]);
      bo = bo * bb[i] + (bb[i] == 1 ? 0 : idx[i]);
    }
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t q = 0; q < k; ++q) {
          s += static_cast<double>(a[ao * m * k + i * k + q]) * b[bo * k * n + q * n + j];
        }
        out[(bi * m + i) * n + j] = static_cast<float>(s);
      }
    }
    for (size_t i = r; i-- > 0;) {
      if (++idx[i] < batch[i]) break;
      idx[i] = 0;
    }
  }
  return out;
}

TEST(MatMulTest, BroadcastingAndVectorsMatchNaive) {
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{2, 3, 4}, {4, 5}},           // folded into one GEMM
      {{3, 4}, {2, 4, 5}},           // A broadcast over B's batch
      {{2, 1, 3, 4}, {1, 5, 4, 6}},  // both broadcast
      {{2, 5, 3, 4}, {2, 5, 4, 6}},  // plain batch
      {{4}, {4, 5}},                 // 1-D A
      {{2, 3, 4}, {4}},              // 1-D B
      {{4}, {4}},                    // dot product -> scalar
      {{4}, {3, 4, 2}},              // 1-D A against a batch
      {{64, 96}, {96, 80}},          // larger
  };
  uint32_t seed = 1;
  for (const auto& [as, bs] : cases) {
    const auto a = Random(Count(as), seed++), b = Random(Count(bs), seed++);
    Shape want_shape;
    const auto want = NaiveMatMul(a, as, b, bs, &want_shape);
    for (int threads : {1, 2}) {
      NIMBLE_ASSERT_OK_AND_ASSIGN(auto out,
                                  RunOp("MatMul", {}, {F(a, as), F(b, bs)}, 1, {}, threads));
      EXPECT_EQ(out[0].shape(), want_shape) << ShapeToString(as) << " x " << ShapeToString(bs);
      ExpectNear(Values<float>(out[0]), want);
    }
  }
}

TEST(MatMulTest, EmptyInnerDimGivesZeros) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("MatMul", {}, {F({}, {2, 0}), F({}, {0, 3})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(0, 0, 0, 0, 0, 0));
}

TEST(MatMulTest, ErrorsAndOtherTypes) {
  EXPECT_THAT(RunOp("MatMul", {}, {F(Random(6, 1), {2, 3}), F(Random(8, 2), {4, 2})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("inner dims")));
  EXPECT_THAT(RunOp("MatMul", {}, {F(Random(12, 1), {2, 2, 3}), F(Random(18, 2), {3, 3, 2})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("broadcast")));
  // i64 and f64 by reference loops.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("MatMul", {}, {I({1, 2, 3, 4}, {2, 2}), I({5, 6, 7, 8}, {2, 2})}));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(19, 22, 43, 50));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("MatMul", {},
                                         {Tensor::FromVector<double>({1, 2}, {1, 2}),
                                          Tensor::FromVector<double>({3, 4}, {2, 1})}));
  EXPECT_THAT(Values<double>(out[0]), ElementsAre(11));
}

float Gelu(float x) { return 0.5f * x * (1.0f + std::erf(x / std::sqrt(2.0f))); }

TEST(FusedMatMulTest, BiasGeluResidualWithTransB) {
  const int64_t b = 2, s = 5, k = 16, n = 24;
  const auto a = Random(b * s * k, 11), w = Random(n * k, 12), bias = Random(n, 13),
             res = Random(b * s * n, 14);
  // w is [n, k] (transB): reference uses its transpose.
  std::vector<float> wt(k * n);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < k; ++j) wt[j * n + i] = w[i * k + j];
  }
  Shape shape;
  const auto prod = NaiveMatMul(a, {b, s, k}, wt, {k, n}, &shape);
  for (float alpha : {1.0f, 0.5f}) {
    std::vector<float> want(prod.size());
    for (size_t i = 0; i < prod.size(); ++i) {
      want[i] = Gelu(alpha * prod[i] + bias[i % n]) + res[i];
    }
    NIMBLE_ASSERT_OK_AND_ASSIGN(
        auto out, RunOp("FusedMatMul",
                        Attrs({{"transB", int64_t{1}},
                               {"alpha", static_cast<double>(alpha)},
                               {"activation", std::string("gelu")}}),
                        {F(a, {b, s, k}), F(w, {n, k}), F(bias, {n}), F(res, {b, s, n})}));
    EXPECT_THAT(out[0].shape(), ElementsAre(b, s, n));
    ExpectNear(Values<float>(out[0]), want);
  }
}

// constant_b: B is read from a copy in oneDNN's preferred layout, reused across calls and M.
TEST(FusedMatMulTest, ConstantWeightsPacked) {
  const int64_t k = 64, n = 96;
  const auto w = Random(k * n, 61), bias = Random(n, 62);
  std::vector<float> wt(n * k);
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < n; ++j) wt[j * k + i] = w[i * n + j];
  }
  for (int64_t trans : {0, 1}) {
    auto kernel = KernelRegistry::Global().Create(
        "FusedMatMul", kCpu.type,
        Attrs(
            {{"transB", trans}, {"activation", std::string("gelu")}, {"constant_b", int64_t{1}}}));
    ASSERT_THAT(kernel, IsOk());
    Tensor b = trans ? F(wt, {n, k}) : F(w, {k, n});
    for (int64_t m : {1, 7, 33, 7}) {
      const auto a = Random(2 * m * k, 63 + m);
      Shape shape;
      const auto prod = NaiveMatMul(a, {2, m, k}, w, {k, n}, &shape);
      std::vector<float> want(prod.size());
      for (size_t i = 0; i < prod.size(); ++i) want[i] = Gelu(prod[i] + bias[i % n]);
      std::vector<Tensor> outputs = {*Tensor::Empty(DType::kF32, {2, m, n})};
      const std::vector<Tensor> inputs = {F(a, {2, m, k}), b, F(bias, {n})};
      ASSERT_THAT((*kernel)->Run(KernelContext(), inputs, absl::MakeSpan(outputs)), IsOk());
      ExpectNear(Values<float>(outputs[0]), want);
    }
  }
  // MatMul and Gemm take the attribute too.
  const auto a = Random(5 * k, 70);
  Shape shape;
  const auto prod = NaiveMatMul(a, {5, k}, w, {k, n}, &shape);
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("MatMul", Attrs({{"constant_b", int64_t{1}}}), {F(a, {5, k}), F(w, {k, n})}));
  ExpectNear(Values<float>(out[0]), prod);
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("Gemm", Attrs({{"constant_b", int64_t{1}}, {"transB", int64_t{1}}}),
                 {F(a, {5, k}), F(wt, {n, k})}));
  ExpectNear(Values<float>(out[0]), prod);
}

// 8 to 16 rows against a constant B run SmallGemm (column panels; small_gemm.h) on AVX-512
// machines: every row count, widths that are not a multiple of the 16-column panel, several
// threads over many panels, alpha, each activation, bias and residual, both B layouts.
TEST(FusedMatMulTest, FewRowsAgainstConstantWeights) {
  const int64_t k = 300;
  KernelContext ctx;
  ctx.num_threads = 3;
  for (int64_t n : {1000, 7}) {
    const auto w = Random(k * n, 91), bias = Random(n, 92);
    std::vector<float> wt(n * k);
    for (int64_t i = 0; i < k; ++i) {
      for (int64_t j = 0; j < n; ++j) wt[j * k + i] = w[i * n + j];
    }
    for (const char* act : {"", "relu", "gelu", "gelu_tanh", "tanh", "sigmoid"}) {
      for (int64_t trans : {0, 1}) {
        auto kernel = KernelRegistry::Global().Create("FusedMatMul", kCpu.type,
                                                      Attrs({{"transB", trans},
                                                             {"alpha", 0.5},
                                                             {"activation", std::string(act)},
                                                             {"constant_b", int64_t{1}}}));
        ASSERT_THAT(kernel, IsOk());
        for (int64_t m : {1, 2, 5, 8, 15, 16, 17, 40, 128, 129}) {
          SCOPED_TRACE(absl::StrCat("n=", n, " act=", act, " transB=", trans, " m=", m));
          const bool residual = m % 2 == 1;  // added after the activation
          const auto a = Random(m * k, 93 + m), res = Random(m * n, 94 + m);
          Shape shape;
          const auto prod = NaiveMatMul(a, {m, k}, w, {k, n}, &shape);
          std::vector<float> want(prod.size());
          for (size_t i = 0; i < prod.size(); ++i) {
            const double v = 0.5 * prod[i] + bias[i % n];
            const std::string name = act;
            double y = v;
            if (name == "relu") y = std::max(v, 0.0);
            if (name == "gelu") y = Gelu(static_cast<float>(v));
            if (name == "gelu_tanh") {
              y = 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
            }
            if (name == "tanh") y = std::tanh(v);
            if (name == "sigmoid") y = 1.0 / (1.0 + std::exp(-v));
            want[i] = static_cast<float>(y + (residual ? res[i] : 0.0f));
          }
          std::vector<Tensor> outputs = {*Tensor::Empty(DType::kF32, {m, n})};
          std::vector<Tensor> inputs = {F(a, {m, k}), trans ? F(wt, {n, k}) : F(w, {k, n}),
                                        F(bias, {n})};
          if (residual) inputs.push_back(F(res, {m, n}));
          ASSERT_THAT((*kernel)->Run(ctx, inputs, absl::MakeSpan(outputs)), IsOk());
          ExpectNear(Values<float>(outputs[0]), want);
        }
      }
    }
  }
}

// SmallGemm itself past one block of 16 rows (the kernels take it up to SmallGemmMaxRows()):
// each block reuses the panels, the last block is partial.
TEST(SmallGemmTest, RowBlocksShareThePanels) {
  if (!cpu::SmallGemmAvailable()) GTEST_SKIP() << "no AVX-512";
  // Past 16 rows blocks take panel pairs: n = 45 gives a pair and a last single panel, n = 29 a
  // pair whose second panel is partial; k = 300 at 64 rows and more transposes A on 3 threads.
  for (const auto& [k, n] : {std::pair<int64_t, int64_t>{70, 45}, {300, 29}}) {
    const auto w = Random(k * n, 95), bias = Random(n, 96);
    std::vector<float> panels(cpu::SmallGemmPanelFloats(k, n));
    cpu::SmallGemmPack(w.data(), k, n, n, 1, panels.data());
    for (int64_t m : {16, 17, 40, 64, 128}) {
      SCOPED_TRACE(absl::StrCat("k=", k, " n=", n, " m=", m));
      const auto a = Random(m * k, 97 + m), res = Random(m * n, 98 + m);
      Shape shape;
      const auto prod = NaiveMatMul(a, {m, k}, w, {k, n}, &shape);
      std::vector<float> want(prod.size()), got(prod.size(), -1.0f);
      for (size_t i = 0; i < prod.size(); ++i) {
        want[i] = std::max(2.0f * prod[i] + bias[i % n], 0.0f) + res[i];
      }
      cpu::SmallGemmEpilogue e;
      e.alpha = 2.0f, e.bias = bias.data(), e.act = cpu::SmallGemmAct::kRelu;
      e.residual = res.data();
      cpu::SmallGemm(3, a.data(), k, panels.data(), got.data(), m, n, k, e);
      ExpectNear(got, want);
    }
  }
}

// Past kSpecializedPrimitives row counts one kernel runs new ones on a run-time-row primitive
// (the residual then goes through the sum post-op): results stay exact for every length,
// in any order, with and without activation.
TEST(FusedMatMulTest, ManyRowCountsShareARuntimeDimPrimitive) {
  const int64_t k = 32, n = 48;
  const auto w = Random(k * n, 81), bias = Random(n, 82);
  KernelContext ctx;
  ctx.num_threads = 2;
  for (const char* activation : {"", "relu", "gelu"}) {
    auto kernel = KernelRegistry::Global().Create(
        "FusedMatMul", kCpu.type,
        Attrs({{"activation", std::string(activation)}, {"constant_b", int64_t{1}}}));
    ASSERT_THAT(kernel, IsOk());
    for (int64_t m : {1, 2, 3, 5, 8, 13, 21, 34, 55, 3, 89, 144, 1, 17, 100, 233, 512, 1536}) {
      SCOPED_TRACE(absl::StrCat(activation, " m=", m));
      // Batch 2 over [2, m, k] x [k, n]: folded into one [2m, k] product.
      const auto a = Random(2 * m * k, 83 + m), res = Random(2 * m * n, 84 + m);
      Shape shape;
      const auto prod = NaiveMatMul(a, {2, m, k}, w, {k, n}, &shape);
      std::vector<float> want(prod.size());
      for (size_t i = 0; i < prod.size(); ++i) {
        float v = prod[i] + bias[i % n];
        if (std::string(activation) == "relu") v = std::max(v, 0.0f);
        if (std::string(activation) == "gelu") v = Gelu(v);
        want[i] = v + res[i];
      }
      std::vector<Tensor> outputs = {*Tensor::Empty(DType::kF32, {2, m, n})};
      const std::vector<Tensor> inputs = {F(a, {2, m, k}), F(w, {k, n}), F(bias, {n}),
                                          F(res, {2, m, n})};
      ASSERT_THAT((*kernel)->Run(ctx, inputs, absl::MakeSpan(outputs)), IsOk());
      ExpectNear(Values<float>(outputs[0]), want);
    }
  }
}

TEST(FusedMatMulTest, Activations) {
  const auto a = Random(3 * 8, 21), w = Random(8 * 4, 22), bias = Random(4, 23);
  Shape shape;
  const auto prod = NaiveMatMul(a, {3, 8}, w, {8, 4}, &shape);
  const std::vector<std::pair<std::string, float (*)(float)>> acts = {
      {"relu", [](float x) { return x > 0 ? x : 0.0f; }},
      {"tanh", [](float x) { return std::tanh(x); }},
      {"sigmoid", [](float x) { return 1.0f / (1.0f + std::exp(-x)); }},
      {"gelu_tanh",
       [](float x) {
         return 0.5f * x * (1.0f + std::tanh(0.7978845608f * (x + 0.044715f * x * x * x)));
       }},
      {"", [](float x) { return x; }},
  };
  for (const auto& [name, fn] : acts) {
    std::vector<float> want(prod.size());
    for (size_t i = 0; i < prod.size(); ++i) want[i] = fn(prod[i] + bias[i % 4]);
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("FusedMatMul", Attrs({{"activation", name}}),
                                                {F(a, {3, 8}), F(w, {8, 4}), F(bias, {4})}));
    ExpectNear(Values<float>(out[0]), want);
  }
  EXPECT_THAT(KernelRegistry::Global().Create("FusedMatMul", kCpu.type,
                                              Attrs({{"activation", std::string("swish")}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("swish")));
}

TEST(GemmTest, TransposesAlphaBetaAndC) {
  const int64_t m = 3, k = 5, n = 4;
  const auto a = Random(m * k, 31), b = Random(k * n, 32);
  Shape shape;
  const auto prod = NaiveMatMul(a, {m, k}, b, {k, n}, &shape);
  std::vector<float> at(k * m), bt(n * k);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < k; ++j) at[j * m + i] = a[i * k + j];
  }
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < n; ++j) bt[j * k + i] = b[i * n + j];
  }
  struct Case {
    Shape c_shape;
    float alpha, beta;
  };
  const std::vector<Case> cases = {
      {{n}, 1.0f, 1.0f},      // bias
      {{1, n}, 2.0f, 1.0f},   // bias with alpha
      {{m, 1}, 1.0f, 0.5f},   // column broadcast
      {{m, n}, 0.7f, -1.5f},  // full C
      {{}, 1.0f, 2.0f},       // scalar C
      {{m, n}, 0.0f, 1.0f},   // alpha 0
  };
  uint32_t seed = 40;
  for (const Case& c : cases) {
    const auto cv = Random(Count(c.c_shape), seed++);
    std::vector<float> want(m * n);
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        int64_t ci = 0;
        if (c.c_shape.size() == 1) ci = j;
        if (c.c_shape.size() == 2)
          ci = (c.c_shape[0] == 1 ? 0 : i) * c.c_shape[1] + (c.c_shape[1] == 1 ? 0 : j);
        want[i * n + j] = c.alpha * prod[i * n + j] + c.beta * cv[ci];
      }
    }
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Gemm",
                                                Attrs({{"alpha", static_cast<double>(c.alpha)},
                                                       {"beta", static_cast<double>(c.beta)},
                                                       {"transA", int64_t{1}},
                                                       {"transB", int64_t{1}}}),
                                                {F(at, {k, m}), F(bt, {n, k}), F(cv, c.c_shape)}));
    EXPECT_THAT(out[0].shape(), ElementsAre(m, n));
    ExpectNear(Values<float>(out[0]), want);
  }
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Gemm", {}, {F(a, {m, k}), F(b, {k, n})}));
  ExpectNear(Values<float>(out[0]), prod);
  EXPECT_THAT(RunOp("Gemm", {}, {F(a, {m, k}), F(b, {k, n}), F({1, 2}, {2})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not broadcast")));
}

TEST(MatMulIntegerTest, ZeroPoints) {
  Tensor a = Tensor::FromVector<uint8_t>({11, 7, 3, 10, 6, 2, 9, 5, 1, 8, 4, 0}, {4, 3});
  Tensor b = Tensor::FromVector<uint8_t>({1, 4, 2, 5, 3, 6}, {3, 2});
  Tensor az = Tensor::FromVector<uint8_t>({12}, {});
  Tensor bz = Tensor::FromVector<uint8_t>({0}, {});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out,
                              RunOp("MatMulInteger", {}, {a, b, az, bz}, 1, {DType::kI32}));
  // ONNX matmulinteger example.
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(-38, -83, -44, -98, -50, -113, -56, -128));
}

// Direct convolution by definition (NC + spatial, explicit pads).
std::vector<float> NaiveConv(const std::vector<float>& x, const Shape& xs,
                             const std::vector<float>& w, const Shape& ws,
                             const std::vector<float>* bias, int64_t group, const Shape& strides,
                             const Shape& dil, const Shape& pads, Shape* out_shape) {
  const int s = static_cast<int>(xs.size()) - 2;
  const int64_t n = xs[0], c = xs[1], m = ws[0], cg = c / group, mg = m / group;
  Shape os = {n, m};
  for (int i = 0; i < s; ++i) {
    const int64_t ext = (ws[i + 2] - 1) * dil[i] + 1;
    os.push_back((xs[i + 2] + pads[i] + pads[i + s] - ext) / strides[i] + 1);
  }
  *out_shape = os;
  std::vector<float> out(Count(os), 0.0f);
  const Shape sp_out(os.begin() + 2, os.end());
  const Shape sp_k(ws.begin() + 2, ws.end());
  const Shape sp_in(xs.begin() + 2, xs.end());
  const int64_t out_sp = Count(sp_out), k_sp = Count(sp_k), in_sp = Count(sp_in);
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t oc = 0; oc < m; ++oc) {
      const int64_t g = oc / mg;
      for (int64_t o = 0; o < out_sp; ++o) {
        double acc = bias ? (*bias)[oc] : 0.0;
        for (int64_t ic = 0; ic < cg; ++ic) {
          for (int64_t kk = 0; kk < k_sp; ++kk) {
            int64_t off = 0, orem = o, krem = kk;
            bool inside = true;
            Shape opos(s), kpos(s);
            for (int i = s - 1; i >= 0; --i) {
              opos[i] = orem % sp_out[i];
              orem /= sp_out[i];
              kpos[i] = krem % sp_k[i];
              krem /= sp_k[i];
            }
            for (int i = 0; i < s; ++i) {
              const int64_t p = opos[i] * strides[i] - pads[i] + kpos[i] * dil[i];
              inside = inside && p >= 0 && p < sp_in[i];
              off = off * sp_in[i] + p;
            }
            if (!inside) continue;
            acc += static_cast<double>(x[(b * c + g * cg + ic) * in_sp + off]) *
                   w[(oc * cg + ic) * k_sp + kk];
          }
        }
        out[(b * m + oc) * out_sp + o] = static_cast<float>(acc);
      }
    }
  }
  return out;
}

TEST(ConvTest, MatchesNaive) {
  struct Case {
    Shape x, w;
    int64_t group;
    Shape strides, dil, pads;
    bool bias;
  };
  const std::vector<Case> cases = {
      {{1, 3, 7, 7}, {4, 3, 3, 3}, 1, {1, 1}, {1, 1}, {1, 1, 1, 1}, true},
      {{2, 4, 9, 8}, {6, 2, 3, 2}, 2, {2, 1}, {1, 2}, {0, 1, 2, 0}, true},
      {{1, 4, 6, 6}, {4, 1, 3, 3}, 4, {1, 1}, {1, 1}, {1, 1, 1, 1}, false},  // depthwise
      {{2, 3, 10}, {5, 3, 3}, 1, {2}, {2}, {1, 2}, true},                    // 1-D
      {{1, 2, 4, 5, 6}, {3, 2, 2, 3, 2}, 1, {1, 2, 1}, {1, 1, 2}, {0, 1, 0, 1, 0, 1}, true},
  };
  uint32_t seed = 50;
  for (const Case& c : cases) {
    const auto x = Random(Count(c.x), seed++), w = Random(Count(c.w), seed++),
               b = Random(c.w[0], seed++);
    Shape want_shape;
    const auto want = NaiveConv(x, c.x, w, c.w, c.bias ? &b : nullptr, c.group, c.strides, c.dil,
                                c.pads, &want_shape);
    std::vector<Tensor> inputs = {F(x, c.x), F(w, c.w)};
    if (c.bias) inputs.push_back(F(b, {c.w[0]}));
    // Plain and packed (constant_w) weights; each kernel runs twice to hit its caches.
    for (int64_t constant_w : {0, 1}) {
      auto kernel = KernelRegistry::Global().Create(
          "Conv", kCpu.type,
          Attrs({{"group", c.group},
                 {"strides", std::vector<int64_t>(c.strides.begin(), c.strides.end())},
                 {"dilations", std::vector<int64_t>(c.dil.begin(), c.dil.end())},
                 {"pads", std::vector<int64_t>(c.pads.begin(), c.pads.end())},
                 {"constant_w", constant_w}}));
      ASSERT_THAT(kernel, IsOk());
      Shape shape;
      ASSERT_THAT((*kernel)->OutputShapes(inputs, absl::MakeSpan(&shape, 1)), IsOk());
      EXPECT_EQ(shape, want_shape) << ShapeToString(c.x);
      for (int rep = 0; rep < 2; ++rep) {
        std::vector<Tensor> outputs = {*Tensor::Empty(DType::kF32, shape)};
        KernelContext ctx;
        ctx.num_threads = 2;
        ASSERT_THAT((*kernel)->Run(ctx, inputs, absl::MakeSpan(outputs)), IsOk());
        ExpectNear(Values<float>(outputs[0]), want);
      }
    }
  }
}

// f16 / bf16 convolve in f32 and round once: the naive f32 convolution of the rounded inputs,
// rounded to the type, within one rounding step; plain and packed weights alike.
TEST(ConvTest, HalfTypesComputeInF32) {
  const Shape xs = {2, 4, 6, 5}, ws = {6, 2, 3, 2};
  const auto x = Random(Count(xs), 80), w = Random(Count(ws), 81), b = Random(6, 82);
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    SCOPED_TRACE(DTypeName(dtype));
    const Tensor xh = cpu::testing::Half(dtype, x, xs), wh = cpu::testing::Half(dtype, w, ws),
                 bh = cpu::testing::Half(dtype, b, {6});
    Shape want_shape;
    const std::vector<float> bias_rounded = cpu::testing::HalfValues(bh);
    const auto want = NaiveConv(cpu::testing::HalfValues(xh), xs, cpu::testing::HalfValues(wh), ws,
                                &bias_rounded, 2, {1, 2}, {1, 1}, {1, 0, 1, 1}, &want_shape);
    const float step = dtype == DType::kF16 ? 1.0f / 1024 : 1.0f / 128;
    for (int64_t constant_w : {0, 1}) {
      const Attributes attrs = Attrs({{"group", int64_t{2}},
                                      {"strides", std::vector<int64_t>{1, 2}},
                                      {"pads", std::vector<int64_t>{1, 0, 1, 1}},
                                      {"constant_w", constant_w}});
      NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("Conv", attrs, {xh, wh, bh}));
      ASSERT_EQ(out[0].dtype(), dtype);
      ASSERT_EQ(out[0].shape(), want_shape);
      const std::vector<float> got = cpu::testing::HalfValues(out[0]);
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_NEAR(got[i], want[i], std::abs(want[i]) * step + 1e-6f) << "element " << i;
      }
    }
  }
  EXPECT_THAT(RunOp("Conv", {}, {cpu::testing::Half(DType::kF16, x, xs), F(w, ws)}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("one type")));
  EXPECT_THAT(RunOp("Conv", {},
                    {cpu::testing::Half(DType::kF16, x, xs),
                     cpu::testing::Half(DType::kF16, w, {6, 4, 3, 2}), F(b, {6})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bias")));
}

TEST(ConvTest, AutoPadShapesAndErrors) {
  Tensor x = F(Random(1 * 2 * 7 * 7, 1), {1, 2, 7, 7});
  Tensor w = F(Random(3 * 2 * 3 * 3, 2), {3, 2, 3, 3});
  auto kernel = KernelRegistry::Global().Create(
      "Conv", kCpu.type,
      Attrs({{"auto_pad", std::string("SAME_UPPER")}, {"strides", std::vector<int64_t>{2, 2}}}));
  ASSERT_THAT(kernel, IsOk());
  Shape shape;
  ASSERT_THAT((*kernel)->OutputShapes({x, w}, absl::MakeSpan(&shape, 1)), IsOk());
  EXPECT_THAT(shape, ElementsAre(1, 3, 4, 4));
  kernel = KernelRegistry::Global().Create("Conv", kCpu.type,
                                           Attrs({{"auto_pad", std::string("VALID")}}));
  ASSERT_THAT((*kernel)->OutputShapes({x, w}, absl::MakeSpan(&shape, 1)), IsOk());
  EXPECT_THAT(shape, ElementsAre(1, 3, 5, 5));
  EXPECT_THAT(RunOp("Conv", {}, {x, F(Random(3 * 3 * 9, 3), {3, 3, 3, 3})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("group")));
  // SAME_UPPER result equals explicit pads (total 2 on 7 with stride 2 and kernel 3: 1 + 1).
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto same, RunOp("Conv",
                                               Attrs({{"auto_pad", std::string("SAME_UPPER")},
                                                      {"strides", std::vector<int64_t>{2, 2}}}),
                                               {x, w}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto expl, RunOp("Conv",
                                               Attrs({{"pads", std::vector<int64_t>{1, 1, 1, 1}},
                                                      {"strides", std::vector<int64_t>{2, 2}}}),
                                               {x, w}));
  ExpectNear(Values<float>(same[0]), Values<float>(expl[0]));
}

// ConvInteger: a 2x2 kernel of ones over a 3x3 uint8 image minus its zero point 1, padded by 1
// (the padding counts as the zero point, i.e. 0 after the subtraction), w_zero_point 0; then
// per-channel weight zero points and the errors.
TEST(ConvIntegerTest, SumsOfShiftedValues) {
  const Tensor x = Tensor::FromVector<uint8_t>({2, 3, 4, 5, 6, 7, 8, 9, 10}, {1, 1, 3, 3});
  const Tensor w = Tensor::FromVector<uint8_t>({1, 1, 1, 1}, {1, 1, 2, 2});
  const Tensor xzp = Tensor::FromVector<uint8_t>({1}, {});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, RunOp("ConvInteger", Attrs({{"pads", std::vector<int64_t>{1, 1, 1, 1}}}),
                      {x, w, xzp}, 1, {DType::kI32}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1, 4, 4));
  // x - 1 = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]; corner windows see one value, the centre four.
  EXPECT_THAT(Values<int32_t>(out[0]),
              ElementsAre(1, 3, 5, 3, 5, 12, 16, 9, 11, 24, 28, 15, 7, 15, 17, 9));
  // Two output channels with weight zero points 1 and 0: the first sees w - 1 = 0.
  const Tensor w2 = Tensor::FromVector<uint8_t>({1, 1, 1, 1, 1, 1, 1, 1}, {2, 1, 2, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, RunOp("ConvInteger", {}, {x, w2, xzp, Tensor::FromVector<uint8_t>({1, 0}, {2})}, 1,
                 {DType::kI32}));
  EXPECT_THAT(Values<int32_t>(out[0]), ElementsAre(0, 0, 0, 0, 12, 16, 24, 28));
  EXPECT_THAT(RunOp("ConvInteger", {}, {F({1}, {1, 1, 1}), w}, 1, {DType::kI32}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("uint8 or int8")));
}

TEST(QLinearConvTest, RequantizesPerChannel) {
  // 1x1 kernels over x - 10 = [0, 10, 20, 30]: channel 0 (w - 1 = 2, bias 4, scale 0.5 * 1 / s)
  // and channel 1 (w - 1 = 4, bias -8, scale 0.5 * 0.5 / s).
  const Tensor x = Tensor::FromVector<uint8_t>({10, 20, 30, 40}, {1, 1, 2, 2});
  const Tensor w = Tensor::FromVector<uint8_t>({3, 5}, {2, 1, 1, 1});
  const Tensor u8_10 = Tensor::FromVector<uint8_t>({10}, {});
  const Tensor w_scale = F({1, 0.5f}, {2});
  const Tensor w_zp = Tensor::FromVector<uint8_t>({1, 1}, {2});
  const Tensor bias = Tensor::FromVector<int32_t>({4, -8}, {2});
  auto run = [&](float y_scale, uint8_t y_zp) {
    return RunOp("QLinearConv", {},
                 {x, F({0.5f}, {}), u8_10, w, w_scale, w_zp, F({y_scale}, {}),
                  Tensor::FromVector<uint8_t>({y_zp}, {}), bias},
                 1, {DType::kU8});
  };
  // y_scale 2: sums [4, 24, 44, 64] * 0.25 and [-8, 32, 72, 112] * 0.125, plus 100.
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, run(2.0f, 100));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 2, 2, 2));
  EXPECT_THAT(Values<uint8_t>(out[0]), ElementsAre(101, 106, 111, 116, 99, 104, 109, 114));
  // y_scale 4, zero point 0: halves round to even, -0.5 saturates at 0.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, run(4.0f, 0));
  EXPECT_THAT(Values<uint8_t>(out[0]), ElementsAre(0, 3, 6, 8, 0, 2, 4, 7));
  EXPECT_THAT(RunOp("QLinearConv", {},
                    {x, F({0.5f}, {}), u8_10, w, F({1, 2, 3}, {3}), w_zp, F({1}, {}),
                     Tensor::FromVector<uint8_t>({0}, {})},
                    1, {DType::kU8}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("w_scale")));
  EXPECT_THAT(
      RunOp("QLinearConv", {}, {x, F({0.5f}, {}), u8_10, w, w_scale, w_zp, F({1}, {}), F({0}, {})},
            1, {DType::kU8}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("y_zero_point")));
  EXPECT_THAT(run(0.0f, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("finite and positive")));
}

TEST(ConvTransposeTest, MatchesScatterDefinition) {
  // x [1, 2, 3, 3], w [2, 3/groups..] with stride 2, pads 1/0, output_padding 1.
  for (int64_t group : {1, 2}) {
    const Shape xs = {2, 2, 3, 4}, ws = {2, 4 / group, 3, 2};
    const int64_t sh = 2, sw = 1, pt = 1, pl = 0, pb = 0, pr = 1, oph = 1;
    const auto x = Random(Count(xs), 70 + group), w = Random(Count(ws), 80 + group),
               bias = Random(4, 90);
    const int64_t oh = sh * (3 - 1) + oph + 3 - pt - pb, ow = sw * (4 - 1) + 2 - pl - pr;
    std::vector<float> want(2 * 4 * oh * ow, 0.0f);
    const int64_t cg = 2 / group, mg = 4 / group;
    for (int64_t n = 0; n < 2; ++n) {
      for (int64_t ic = 0; ic < 2; ++ic) {
        const int64_t g = ic / cg;
        for (int64_t ih = 0; ih < 3; ++ih) {
          for (int64_t iw = 0; iw < 4; ++iw) {
            for (int64_t o = 0; o < mg; ++o) {
              for (int64_t kh = 0; kh < 3; ++kh) {
                for (int64_t kw = 0; kw < 2; ++kw) {
                  const int64_t y = ih * sh - pt + kh, xx = iw * sw - pl + kw;
                  if (y < 0 || y >= oh || xx < 0 || xx >= ow) continue;
                  want[((n * 4 + g * mg + o) * oh + y) * ow + xx] +=
                      x[((n * 2 + ic) * 3 + ih) * 4 + iw] * w[((ic * mg + o) * 3 + kh) * 2 + kw];
                }
              }
            }
          }
        }
      }
    }
    for (int64_t i = 0; i < static_cast<int64_t>(want.size()); ++i) {
      want[i] += bias[(i / (oh * ow)) % 4];
    }
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto out,
                                RunOp("ConvTranspose",
                                      Attrs({{"group", group},
                                             {"strides", std::vector<int64_t>{sh, sw}},
                                             {"pads", std::vector<int64_t>{pt, pl, pb, pr}},
                                             {"output_padding", std::vector<int64_t>{oph, 0}}}),
                                      {F(x, xs), F(w, ws), F(bias, {4})}));
    EXPECT_THAT(out[0].shape(), ElementsAre(2, 4, oh, ow));
    ExpectNear(Values<float>(out[0]), want);
  }
}

TEST(PoolTest, OnnxExamples) {
  // maxpool_2d_pads: 5x5 input 1..25, kernel 5, pads 2.
  std::vector<float> x(25);
  for (int i = 0; i < 25; ++i) x[i] = static_cast<float>(i + 1);
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("MaxPool",
                                              Attrs({{"kernel_shape", std::vector<int64_t>{5, 5}},
                                                     {"pads", std::vector<int64_t>{2, 2, 2, 2}}}),
                                              {F(x, {1, 1, 5, 5})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(13, 14, 15, 15, 15, 18, 19, 20, 20, 20, 23, 24, 25,
                                                 25, 25, 23, 24, 25, 25, 25, 23, 24, 25, 25, 25));
  // averagepool_2d_pads_count_include_pad: kernel 3, pads 2 on 1..25.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("AveragePool",
                                         Attrs({{"kernel_shape", std::vector<int64_t>{3, 3}},
                                                {"pads", std::vector<int64_t>{2, 2, 2, 2}},
                                                {"count_include_pad", int64_t{1}}}),
                                         {F(x, {1, 1, 5, 5})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1, 7, 7));
  const std::vector<float> got = Values<float>(out[0]);
  EXPECT_NEAR(got[0], 1.0f / 9, 1e-6);  // only x[0,0] = 1 inside
  EXPECT_NEAR(got[2], (1 + 2 + 3) / 9.0f, 1e-6);
  EXPECT_NEAR(got[24], (7 + 8 + 9 + 12 + 13 + 14 + 17 + 18 + 19) / 9.0f, 1e-6);
  // Without count_include_pad the corner averages only the real element.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("AveragePool",
                                         Attrs({{"kernel_shape", std::vector<int64_t>{3, 3}},
                                                {"pads", std::vector<int64_t>{2, 2, 2, 2}}}),
                                         {F(x, {1, 1, 5, 5})}));
  EXPECT_NEAR(Values<float>(out[0])[0], 1.0f, 1e-6);
  // maxpool_2d_ceil: 4x4, kernel 3, stride 2, ceil -> 2x2.
  std::vector<float> x16(16);
  for (int i = 0; i < 16; ++i) x16[i] = static_cast<float>(i + 1);
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("MaxPool",
                                         Attrs({{"kernel_shape", std::vector<int64_t>{3, 3}},
                                                {"strides", std::vector<int64_t>{2, 2}},
                                                {"ceil_mode", int64_t{1}}}),
                                         {F(x16, {1, 1, 4, 4})}, 2, {DType::kF32, DType::kI64}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(11, 12, 15, 16));
  EXPECT_THAT(Values<int64_t>(out[1]), ElementsAre(10, 11, 14, 15));
  // Dilated 1-D max pool.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("MaxPool",
                                         Attrs({{"kernel_shape", std::vector<int64_t>{2}},
                                                {"dilations", std::vector<int64_t>{2}}}),
                                         {F({1, 5, 2, 0, 3}, {1, 1, 5})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(2, 5, 3));
}

TEST(ConvTransposeTest, OutputShapeAndPadsAttributes) {
  Tensor x = F(Random(9, 1), {1, 1, 3, 3});
  Tensor w = F(Random(18, 2), {1, 2, 3, 3});
  auto shape_of = [&](Attributes a) -> Shape {
    auto kernel = KernelRegistry::Global().Create("ConvTranspose", kCpu.type, a);
    Shape s;
    EXPECT_THAT((*kernel)->OutputShapes({x, w}, absl::MakeSpan(&s, 1)), IsOk());
    return s;
  };
  // ONNX convtranspose_output_shape and convtranspose_pads.
  EXPECT_THAT(shape_of(Attrs({{"strides", std::vector<int64_t>{3, 2}},
                              {"output_shape", std::vector<int64_t>{10, 8}}})),
              ElementsAre(1, 2, 10, 8));
  EXPECT_THAT(shape_of(Attrs({{"strides", std::vector<int64_t>{3, 2}},
                              {"pads", std::vector<int64_t>{1, 2, 1, 2}}})),
              ElementsAre(1, 2, 7, 3));
  EXPECT_THAT(shape_of(Attrs({{"strides", std::vector<int64_t>{2, 2}},
                              {"auto_pad", std::string("SAME_UPPER")}})),
              ElementsAre(1, 2, 6, 6));
  // output_shape [10, 8] equals output_padding [1, 1] on the unpadded result (9 + 1, 7 + 1).
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto a, RunOp("ConvTranspose",
                                            Attrs({{"strides", std::vector<int64_t>{3, 2}},
                                                   {"output_shape", std::vector<int64_t>{10, 8}}}),
                                            {x, w}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto b, RunOp("ConvTranspose",
                                            Attrs({{"strides", std::vector<int64_t>{3, 2}},
                                                   {"output_padding", std::vector<int64_t>{1, 1}}}),
                                            {x, w}));
  ExpectNear(Values<float>(a[0]), Values<float>(b[0]));
}

TEST(PoolTest, SameUpperAndLower) {
  std::vector<float> x(25);
  for (int i = 0; i < 25; ++i) x[i] = static_cast<float>(i + 1);
  // ONNX maxpool_2d_same_upper.
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("MaxPool",
                                              Attrs({{"kernel_shape", std::vector<int64_t>{3, 3}},
                                                     {"strides", std::vector<int64_t>{2, 2}},
                                                     {"auto_pad", std::string("SAME_UPPER")}}),
                                              {F(x, {1, 1, 5, 5})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(7, 9, 10, 17, 19, 20, 22, 24, 25));
  // ONNX averagepool_2d_same_lower (kernel 2, stride 1 on 32x32 in the original; 5x5 here):
  // the first row and column average a single padded-out neighbour away.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("AveragePool",
                                         Attrs({{"kernel_shape", std::vector<int64_t>{2, 2}},
                                                {"auto_pad", std::string("SAME_LOWER")}}),
                                         {F(x, {1, 1, 5, 5})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 1, 5, 5));
  const auto got = Values<float>(out[0]);
  EXPECT_NEAR(got[0], 1.0f, 1e-6);                    // only x[0,0]
  EXPECT_NEAR(got[1], 1.5f, 1e-6);                    // x[0,0], x[0,1]
  EXPECT_NEAR(got[6], (1 + 2 + 6 + 7) / 4.0f, 1e-6);  // full window
}

TEST(PoolTest, Global) {
  Tensor x = F({1, 2, 3, 4, -1, -2, -3, -8}, {1, 2, 2, 2});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, RunOp("GlobalAveragePool", {}, {x}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 2, 1, 1));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(2.5, -3.5));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, RunOp("GlobalMaxPool", {}, {x}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(4, -1));
}

TEST(EinsumTest, ProductsMatchMatMul) {
  auto einsum = [](const std::string& eq, std::vector<Tensor> inputs) {
    return RunOp("Einsum", Attrs({{"equation", eq}}), std::move(inputs));
  };
  const auto a = Random(2 * 3 * 4, 1), b = Random(2 * 4 * 5, 2);
  Shape shape;
  const auto want = NaiveMatMul(a, {2, 3, 4}, b, {2, 4, 5}, &shape);
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, einsum("bij,bjk->bik", {F(a, {2, 3, 4}), F(b, {2, 4, 5})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(2, 3, 5));
  ExpectNear(Values<float>(out[0]), want);
  // Output order permuted: bik -> kbi.
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, einsum("bij,bjk->kbi", {F(a, {2, 3, 4}), F(b, {2, 4, 5})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(5, 2, 3));
  const auto got = Values<float>(out[0]);
  for (int64_t bb = 0; bb < 2; ++bb) {
    for (int64_t i = 0; i < 3; ++i) {
      for (int64_t k = 0; k < 5; ++k) {
        EXPECT_NEAR(got[(k * 2 + bb) * 3 + i], want[(bb * 3 + i) * 5 + k], 1e-4);
      }
    }
  }
  // Attention scores: q·k^T over d.
  const auto q = Random(1 * 2 * 3 * 4, 3), kt = Random(1 * 2 * 5 * 4, 4);
  NIMBLE_ASSERT_OK_AND_ASSIGN(out,
                              einsum("bhid,bhjd->bhij", {F(q, {1, 2, 3, 4}), F(kt, {1, 2, 5, 4})}));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 2, 3, 5));
  EXPECT_NEAR(Values<float>(out[0])[1 * 15 + 2 * 5 + 4],
              q[(1 * 3 + 2) * 4 + 0] * kt[(1 * 5 + 4) * 4 + 0] +
                  q[(1 * 3 + 2) * 4 + 1] * kt[(1 * 5 + 4) * 4 + 1] +
                  q[(1 * 3 + 2) * 4 + 2] * kt[(1 * 5 + 4) * 4 + 2] +
                  q[(1 * 3 + 2) * 4 + 3] * kt[(1 * 5 + 4) * 4 + 3],
              1e-5);
  // Broadcast ellipsis, implicit output: same as MatMul.
  const auto e1 = Random(2 * 1 * 3 * 4, 5), e2 = Random(5 * 4 * 2, 6);
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, einsum("...ij,...jk", {F(e1, {2, 1, 3, 4}), F(e2, {5, 4, 2})}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto mm,
                              RunOp("MatMul", {}, {F(e1, {2, 1, 3, 4}), F(e2, {5, 4, 2})}));
  EXPECT_EQ(out[0].shape(), mm[0].shape());
  ExpectNear(Values<float>(out[0]), Values<float>(mm[0]));
}

TEST(EinsumTest, ReferenceCases) {
  auto einsum = [](const std::string& eq, std::vector<Tensor> inputs) {
    return RunOp("Einsum", Attrs({{"equation", eq}}), std::move(inputs));
  };
  Tensor m = F({1, 2, 3, 4, 5, 6, 7, 8, 9}, {3, 3});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out, einsum("ii->i", {m}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 5, 9));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, einsum("ii", {m}));
  EXPECT_EQ(out[0].rank(), 0);
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(15));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, einsum("ij->ji", {F({1, 2, 3, 4, 5, 6}, {2, 3})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(1, 4, 2, 5, 3, 6));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, einsum("ij->i", {F({1, 2, 3, 4, 5, 6}, {2, 3})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(6, 15));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, einsum("i,i", {F({1, 2, 3}, {3}), F({4, 5, 6}, {3})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(32));
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, einsum("ij,ij->ij", {F({1, 2, 3, 4}, {2, 2}), F({5, 6, 7, 8}, {2, 2})}));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(5, 12, 21, 32));
  NIMBLE_ASSERT_OK_AND_ASSIGN(out, einsum("i,j->ij", {I({1, 2}, {2}), I({3, 4, 5}, {3})}));
  EXPECT_THAT(Values<int64_t>(out[0]), ElementsAre(3, 4, 5, 6, 8, 10));
  EXPECT_THAT(einsum("ij,jk->ik", {F({1, 2}, {1, 2}), F({1, 2, 3}, {3, 1})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected 2")));
  EXPECT_THAT(einsum("ij->k", {F({1, 2}, {1, 2})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad output label")));
}

// One kernel instance, many threads, several shapes: the primitive cache must stay consistent.
TEST(MatMulTest, ConcurrentCallsShareOneKernel) {
  auto kernel = KernelRegistry::Global().Create("FusedMatMul", kCpu.type,
                                                Attrs({{"activation", std::string("relu")}}));
  ASSERT_THAT(kernel, IsOk());
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int iter = 0; iter < 20; ++iter) {
        const int64_t m = 1 + (iter + t) % 7, k = 12, n = 10;
        const auto a = Random(m * k, t * 100 + iter), b = Random(k * n, 7);
        Shape shape;
        auto want = NaiveMatMul(a, {m, k}, b, {k, n}, &shape);
        for (float& v : want) v = v > 0 ? v : 0;
        std::vector<Tensor> outputs = {*Tensor::Empty(DType::kF32, {m, n})};
        const std::vector<Tensor> inputs = {F(a, {m, k}), F(b, {k, n})};
        if (!(*kernel)->Run(KernelContext(), inputs, absl::MakeSpan(outputs)).ok()) {
          ++failures[t];
          continue;
        }
        const auto got = Values<float>(outputs[0]);
        for (size_t i = 0; i < got.size(); ++i) {
          if (std::fabs(got[i] - want[i]) > 1e-4f * std::max(1.0f, std::fabs(want[i]))) {
            ++failures[t];
            break;
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_THAT(failures, ElementsAre(0, 0, 0, 0));
}

TEST(CausalConvWithStateTest, PastStateBiasAndPresentState) {
  // Channel 0: seq = [10 | 1 2 3], taps [1, 2]: 10 + 2, 1 + 4, 2 + 6, plus 0.5. Channel 1:
  // taps [0, 1] pass the current position through, plus -1. present_state: each row's last
  // k - 1 = 1 entry.
  const Tensor x = F({1, 2, 3, 4, 5, 6}, {1, 2, 3});
  const Tensor w = F({1, 2, 0, 1}, {2, 1, 2});
  const Tensor bias = F({0.5f, -1}, {2});
  const Tensor past = F({10, 7}, {1, 2, 1});
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      auto out, cpu::testing::RunOp("CausalConvWithState", {}, {x, w, bias, past}, 2));
  EXPECT_THAT(out[0].shape(), ElementsAre(1, 2, 3));
  EXPECT_THAT(Values<float>(out[0]), ElementsAre(12.5f, 5.5f, 8.5f, 3, 4, 5));
  EXPECT_THAT(out[1].shape(), ElementsAre(1, 2, 1));
  EXPECT_THAT(Values<float>(out[1]), ElementsAre(3, 6));
  // No past state: zero padding; SiLU (alias swish) fused; k = 1 leaves an empty state.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, cpu::testing::RunOp("CausalConvWithState", Attrs({{"activation", std::string("swish")}}),
                               {F({1, -2}, {1, 1, 2}), F({2}, {1, 1, 1})}, 2));
  EXPECT_THAT(Values<float>(out[0]),
              ElementsAre(::testing::FloatNear(2 / (1 + std::exp(-2.0f)), 1e-6f),
                          ::testing::FloatNear(-4 / (1 + std::exp(4.0f)), 1e-6f)));
  EXPECT_THAT(out[1].shape(), ElementsAre(1, 1, 0));
  // f16 in and out.
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      out, cpu::testing::RunOp("CausalConvWithState", {},
                               {cpu::testing::Half(DType::kF16, {1, 2, 3}, {1, 1, 3}),
                                cpu::testing::Half(DType::kF16, {1, 1}, {1, 1, 2})},
                               2));
  EXPECT_EQ(out[0].dtype(), DType::kF16);
  EXPECT_THAT(cpu::testing::HalfValues(out[0]), ElementsAre(1, 3, 5));
  EXPECT_THAT(cpu::testing::HalfValues(out[1]), ElementsAre(3));
}

TEST(CausalConvWithStateTest, RejectsBadInputs) {
  const Tensor x = F({1, 2, 3, 4}, {1, 2, 2});
  EXPECT_THAT(cpu::testing::RunOp("CausalConvWithState", {}, {x, F({1, 2}, {1, 1, 2})}, 2),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("weight")));
  EXPECT_THAT(
      cpu::testing::RunOp("CausalConvWithState", {}, {F({1, 2}, {2}), F({1}, {1, 1, 1})}, 2),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank 3")));
  EXPECT_THAT(
      cpu::testing::RunOp("CausalConvWithState", {},
                          {x, F({1, 2, 3, 4}, {2, 1, 2}), Tensor(), F({0, 0, 0, 0}, {1, 2, 2})}, 2),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("past_state")));
  EXPECT_THAT(KernelRegistry::Global().Create("CausalConvWithState", kCpu.type,
                                              Attrs({{"activation", std::string("gelu")}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("activation")));
}

}  // namespace
}  // namespace nimble::vm
