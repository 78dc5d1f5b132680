#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vm/kernels/cpu/elementwise_internal.h"
#include "vm/kernels/kernel.h"

namespace nimble::vm {
namespace cpu {
void SetLstmFastPathForTesting(bool enabled);  // rnn.cc
// rnn.cc: mode -1 by the caches, 0 off, 1 on; fold_x: layer 1's projection inside its dots.
void SetStackedLstmWavefrontForTesting(int mode, bool fold_x);
}  // namespace cpu
namespace {

using ::nimble::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

Tensor F(std::vector<float> v, Shape shape) { return Tensor::FromVector<float>(v, shape); }

std::vector<float> Values(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.num_elements());
}

Attributes Attrs(std::initializer_list<std::pair<std::string, AttrValue>> values) {
  Attributes a;
  for (const auto& [k, v] : values) a.Set(k, v);
  return a;
}

std::vector<float> Random(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::vector<float> v(n);
  uint32_t x = seed * 2654435761u + 7;
  for (int64_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    v[i] = (static_cast<float>(x >> 8) / static_cast<float>(1 << 24) * 2.0f - 1.0f) * scale;
  }
  return v;
}

// Kernel scratch filled with NaN: a value a kernel reads before writing it shows in the outputs
// instead of passing unnoticed with what the system allocator's recycled block still held (for
// instance a previous run's correct input projection).
class PoisonAllocator : public Allocator {
 public:
  absl::StatusOr<void*> Allocate(size_t bytes) override {
    const size_t rounded = (std::max<size_t>(bytes, 1) + kAlignment - 1) / kAlignment * kAlignment;
    void* p = std::aligned_alloc(kAlignment, rounded);
    if (p == nullptr) return absl::ResourceExhaustedError("PoisonAllocator");
    std::memset(p, 0xff, rounded);  // every float a NaN
    return p;
  }
  void Free(void* ptr, size_t) override { std::free(ptr); }
  Device device() const override { return kCpu; }
  AllocatorStats stats() const override { return {}; }
  void Trim() override {}
};

absl::StatusOr<std::vector<Tensor>> RunOp(const std::string& op, const Attributes& attrs,
                                          std::vector<Tensor> inputs, int num_outputs,
                                          int threads = 1) {
  static PoisonAllocator* const poison = new PoisonAllocator;
  NIMBLE_ASSIGN_OR_RETURN(auto kernel, KernelRegistry::Global().Create(op, kCpu.type, attrs));
  std::vector<Shape> shapes(num_outputs);
  NIMBLE_RETURN_IF_ERROR(kernel->OutputShapes(inputs, absl::MakeSpan(shapes)));
  std::vector<Tensor> outputs(num_outputs);
  for (int i = 0; i < num_outputs; ++i) {
    NIMBLE_ASSIGN_OR_RETURN(outputs[i], Tensor::Empty(DType::kF32, shapes[i]));
  }
  KernelContext ctx;
  ctx.num_threads = threads;
  ctx.allocator = poison;
  NIMBLE_RETURN_IF_ERROR(kernel->Run(ctx, inputs, absl::MakeSpan(outputs)));
  return outputs;
}

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, float tol = 1e-5f) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "at " << i;
}

float Sig(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// The ONNX equations, literally, for layout 0. Outputs: Y [T, D, B, H], Y_h, Y_c [D, B, H].
struct Ref {
  std::vector<float> y, y_h, y_c;
};

enum class Kind { kLstm, kGru, kRnn };

Ref NaiveRecurrent(Kind kind, int64_t T, int64_t B, int64_t I, int64_t H, int dirs,
                   bool reverse_only, const std::vector<float>& x, const std::vector<float>& w,
                   const std::vector<float>& r, const std::vector<float>* bias,
                   const std::vector<int64_t>& lens, const std::vector<float>* h0,
                   const std::vector<float>* c0, const std::vector<float>* p, float clip,
                   bool lbr) {
  const int64_t G = kind == Kind::kLstm ? 4 : kind == Kind::kGru ? 3 : 1;
  Ref out;
  out.y.assign(T * dirs * B * H, 0.0f);
  out.y_h.assign(dirs * B * H, 0.0f);
  out.y_c.assign(dirs * B * H, 0.0f);
  auto cl = [clip](float v) { return clip > 0 ? std::clamp(v, -clip, clip) : v; };
  for (int d = 0; d < dirs; ++d) {
    const bool rev = reverse_only || d == 1;
    for (int64_t b = 0; b < B; ++b) {
      std::vector<float> hs(H, 0.0f), cs(H, 0.0f);
      if (h0) {
        for (int64_t j = 0; j < H; ++j) hs[j] = (*h0)[(d * B + b) * H + j];
      }
      if (c0) {
        for (int64_t j = 0; j < H; ++j) cs[j] = (*c0)[(d * B + b) * H + j];
      }
      for (int64_t s = 0; s < lens[b]; ++s) {
        const int64_t t = rev ? lens[b] - 1 - s : s;
        // Per-gate xw and hr (with biases) for gate q, unit j.
        auto xw = [&](int64_t q, int64_t j) {
          double v = bias ? (*bias)[d * 2 * G * H + q * H + j] : 0.0;
          for (int64_t k = 0; k < I; ++k) {
            v += x[(t * B + b) * I + k] * w[((d * G + q) * H + j) * I + k];
          }
          return static_cast<float>(v);
        };
        auto hr = [&](int64_t q, int64_t j, const std::vector<float>& hv) {
          double v = bias ? (*bias)[d * 2 * G * H + G * H + q * H + j] : 0.0;
          for (int64_t k = 0; k < H; ++k) v += hv[k] * r[((d * G + q) * H + j) * H + k];
          return static_cast<float>(v);
        };
        std::vector<float> nh(H), nc(H);
        if (kind == Kind::kLstm) {
          for (int64_t j = 0; j < H; ++j) {
            const float pi = p ? (*p)[d * 3 * H + j] : 0, po = p ? (*p)[d * 3 * H + H + j] : 0,
                        pf = p ? (*p)[d * 3 * H + 2 * H + j] : 0;
            const float i = Sig(cl(xw(0, j) + hr(0, j, hs) + pi * cs[j]));
            const float f = Sig(cl(xw(2, j) + hr(2, j, hs) + pf * cs[j]));
            const float c = std::tanh(cl(xw(3, j) + hr(3, j, hs)));
            nc[j] = f * cs[j] + i * c;
            const float o = Sig(cl(xw(1, j) + hr(1, j, hs) + po * nc[j]));
            nh[j] = o * std::tanh(nc[j]);
          }
        } else if (kind == Kind::kGru) {
          std::vector<float> z(H), rr(H), rh(H);
          for (int64_t j = 0; j < H; ++j) {
            z[j] = Sig(cl(xw(0, j) + hr(0, j, hs)));
            rr[j] = Sig(cl(xw(1, j) + hr(1, j, hs)));
          }
          for (int64_t j = 0; j < H; ++j) rh[j] = rr[j] * hs[j];
          for (int64_t j = 0; j < H; ++j) {
            const float hh = lbr ? std::tanh(cl(xw(2, j) + rr[j] * hr(2, j, hs)))
                                 : std::tanh(cl(xw(2, j) + hr(2, j, rh)));
            nh[j] = (1 - z[j]) * hh + z[j] * hs[j];
          }
        } else {
          for (int64_t j = 0; j < H; ++j) nh[j] = std::tanh(cl(xw(0, j) + hr(0, j, hs)));
        }
        hs = nh;
        if (kind == Kind::kLstm) cs = nc;
        for (int64_t j = 0; j < H; ++j) out.y[((t * dirs + d) * B + b) * H + j] = hs[j];
      }
      for (int64_t j = 0; j < H; ++j) {
        out.y_h[(d * B + b) * H + j] = hs[j];
        out.y_c[(d * B + b) * H + j] = cs[j];
      }
    }
  }
  return out;
}

struct Config {
  Kind kind;
  std::string direction;
  bool bias, lens, init, peep;
  float clip;
  bool lbr;
};

std::string OpName(Kind k) { return k == Kind::kLstm ? "LSTM" : k == Kind::kGru ? "GRU" : "RNN"; }

void CheckAgainstNaive(const Config& c) {
  const int64_t T = 4, B = 3, I = 5, H = 6;
  const int dirs = c.direction == "bidirectional" ? 2 : 1;
  const int64_t G = c.kind == Kind::kLstm ? 4 : c.kind == Kind::kGru ? 3 : 1;
  const auto x = Random(T * B * I, 1), w = Random(dirs * G * H * I, 2, 0.5f),
             r = Random(dirs * G * H * H, 3, 0.5f), bias = Random(dirs * 2 * G * H, 4, 0.3f),
             h0 = Random(dirs * B * H, 5), c0 = Random(dirs * B * H, 6),
             p = Random(dirs * 3 * H, 7, 0.5f);
  const std::vector<int64_t> lens =
      c.lens ? std::vector<int64_t>{4, 2, 3} : std::vector<int64_t>{T, T, T};
  const Ref want = NaiveRecurrent(c.kind, T, B, I, H, dirs, c.direction == "reverse", x, w, r,
                                  c.bias ? &bias : nullptr, lens, c.init ? &h0 : nullptr,
                                  c.init ? &c0 : nullptr, c.peep ? &p : nullptr, c.clip, c.lbr);
  std::vector<Tensor> inputs = {F(x, {T, B, I}),
                                F(w, {dirs, G * H, I}),
                                F(r, {dirs, G * H, H}),
                                c.bias ? F(bias, {dirs, 2 * G * H}) : Tensor(),
                                c.lens ? Tensor::FromVector<int32_t>({4, 2, 3}, {B}) : Tensor(),
                                c.init ? F(h0, {dirs, B, H}) : Tensor()};
  if (c.kind == Kind::kLstm) {
    inputs.push_back(c.init ? F(c0, {dirs, B, H}) : Tensor());
    inputs.push_back(c.peep ? F(p, {dirs, 3 * H}) : Tensor());
  }
  Attributes attrs = Attrs({{"direction", c.direction}, {"hidden_size", H}});
  if (c.clip > 0) attrs.Set("clip", static_cast<double>(c.clip));
  if (c.lbr) attrs.Set("linear_before_reset", int64_t{1});
  const int num_outputs = c.kind == Kind::kLstm ? 3 : 2;
  for (int threads : {1, 2}) {
    NIMBLE_ASSERT_OK_AND_ASSIGN(auto out,
                                RunOp(OpName(c.kind), attrs, inputs, num_outputs, threads));
    EXPECT_THAT(out[0].shape(), ElementsAre(T, dirs, B, H));
    ExpectNear(Values(out[0]), want.y);
    ExpectNear(Values(out[1]), want.y_h);
    if (c.kind == Kind::kLstm) ExpectNear(Values(out[2]), want.y_c);
  }

  // layout = 1: the same computation on transposed inputs and outputs.
  std::vector<float> x1(x.size()), h01(h0.size()), c01(c0.size());
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t k = 0; k < I; ++k) x1[(b * T + t) * I + k] = x[(t * B + b) * I + k];
    }
  }
  for (int d = 0; d < dirs; ++d) {
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t j = 0; j < H; ++j) {
        h01[(b * dirs + d) * H + j] = h0[(d * B + b) * H + j];
        c01[(b * dirs + d) * H + j] = c0[(d * B + b) * H + j];
      }
    }
  }
  inputs[0] = F(x1, {B, T, I});
  if (c.init) inputs[5] = F(h01, {B, dirs, H});
  if (c.init && c.kind == Kind::kLstm) inputs[6] = F(c01, {B, dirs, H});
  attrs.Set("layout", int64_t{1});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto out1, RunOp(OpName(c.kind), attrs, inputs, num_outputs));
  EXPECT_THAT(out1[0].shape(), ElementsAre(B, T, dirs, H));
  const auto y1 = Values(out1[0]), yh1 = Values(out1[1]);
  for (int64_t t = 0; t < T; ++t) {
    for (int d = 0; d < dirs; ++d) {
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t j = 0; j < H; ++j) {
          EXPECT_NEAR(y1[((b * T + t) * dirs + d) * H + j],
                      want.y[((t * dirs + d) * B + b) * H + j], 1e-5f);
        }
      }
    }
  }
  for (int d = 0; d < dirs; ++d) {
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t j = 0; j < H; ++j) {
        EXPECT_NEAR(yh1[(b * dirs + d) * H + j], want.y_h[(d * B + b) * H + j], 1e-5f);
      }
    }
  }
}

TEST(LstmTest, ForwardPlain) {
  CheckAgainstNaive({Kind::kLstm, "forward", false, false, false, false, 0, false});
}
TEST(LstmTest, ForwardEverything) {
  CheckAgainstNaive({Kind::kLstm, "forward", true, true, true, true, 0, false});
}
TEST(LstmTest, Reverse) {
  CheckAgainstNaive({Kind::kLstm, "reverse", true, true, true, false, 0, false});
}
TEST(LstmTest, BidirectionalWithLensAndClip) {
  CheckAgainstNaive({Kind::kLstm, "bidirectional", true, true, true, true, 0.5f, false});
}
TEST(GruTest, Bidirectional) {
  CheckAgainstNaive({Kind::kGru, "bidirectional", true, true, true, false, 0, false});
}
TEST(GruTest, LinearBeforeReset) {
  CheckAgainstNaive({Kind::kGru, "bidirectional", true, true, true, false, 0, true});
}
TEST(RnnTest, ReverseAndBidirectional) {
  CheckAgainstNaive({Kind::kRnn, "reverse", true, true, true, false, 0, false});
  CheckAgainstNaive({Kind::kRnn, "bidirectional", true, false, false, false, 0.3f, false});
}

TEST(LstmTest, InputForgetAndOptionalOutputs) {
  // input_forget couples f = 1 - i; compare with a hand computation for one unit, one step.
  const std::vector<float> w = {0.5f, -0.3f, 0.2f, 0.7f};  // i, o, f, c for H = 1, I = 1
  const std::vector<float> r = {0.1f, 0.2f, 0.3f, 0.4f};
  Attributes attrs = Attrs({{"input_forget", int64_t{1}}});
  std::vector<Tensor> inputs = {
      F({2.0f}, {1, 1, 1}), F(w, {1, 4, 1}),      F(r, {1, 4, 1}), Tensor(), Tensor(),
      F({0.5f}, {1, 1, 1}), F({-1.0f}, {1, 1, 1})};
  // Only Y_h requested: Y is a null output.
  auto kernel = KernelRegistry::Global().Create("LSTM", kCpu.type, attrs);
  ASSERT_TRUE(kernel.ok());
  std::vector<Tensor> outputs = {Tensor(), *Tensor::Empty(DType::kF32, {1, 1, 1}),
                                 *Tensor::Empty(DType::kF32, {1, 1, 1})};
  ASSERT_TRUE((*kernel)->Run(KernelContext(), inputs, absl::MakeSpan(outputs)).ok());
  const float i = Sig(2 * 0.5f + 0.5f * 0.1f), f = 1 - i, c = std::tanh(2 * 0.7f + 0.5f * 0.4f);
  const float cell = f * -1.0f + i * c;
  const float o = Sig(2 * -0.3f + 0.5f * 0.2f);
  EXPECT_NEAR(outputs[1].data<float>()[0], o * std::tanh(cell), 1e-6f);
  EXPECT_NEAR(outputs[2].data<float>()[0], cell, 1e-6f);
}

TEST(LstmTest, Errors) {
  std::vector<Tensor> inputs = {F(Random(6, 1), {2, 1, 3}), F(Random(24, 2), {1, 8, 3}),
                                F(Random(32, 3), {1, 8, 4})};
  EXPECT_THAT(RunOp("LSTM", {}, inputs, 3),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("do not fit")));
  inputs[2] = F(Random(16, 3), {1, 8, 2});
  inputs.push_back(Tensor());
  inputs.push_back(Tensor::FromVector<int32_t>({3}, {1}));
  EXPECT_THAT(RunOp("LSTM", {}, inputs, 3),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("sequence length 3")));
  EXPECT_THAT(KernelRegistry::Global().Create(
                  "LSTM", kCpu.type,
                  Attrs({{"activations", std::vector<std::string>{"Sigmoid", "Bogus", "Tanh"}}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("Bogus")));
}

// The fast LSTM path (default activations, no peepholes/clip/input_forget) against the general
// path on the same inputs: odd sizes (vector tails, uneven slices), batch rows that end early or
// never start, both layouts, initial states, every direction, several thread budgets (more
// threads than cores too) and every SIMD level.
struct FastCase {
  std::string direction;
  int64_t T, B, I, H;
  bool bias, lens, init;
  int64_t layout;
  bool peep = false;
  float clip = 0.0f;
  bool input_forget = false;
};

// constant_weights marks W and R as an executable's constants: the fast path then reads R repacked
// (PackLstmR) instead of row-major, and projects the inputs through the Gemm kernel on W
// repacked instead of in the step team's first round.
std::vector<std::vector<float>> RunLstm(const FastCase& c, int threads, bool fast,
                                        bool constant_weights = false) {
  const int dirs = c.direction == "bidirectional" ? 2 : 1;
  const int64_t T = c.T, B = c.B, H = c.H;
  std::vector<int64_t> lens(B);
  for (int64_t b = 0; b < B; ++b) lens[b] = c.lens ? (b * 5 + T) % (T + 1) : T;  // some 0, some T
  const Shape x_shape = c.layout == 0 ? Shape{T, B, c.I} : Shape{B, T, c.I};
  const Shape state = c.layout == 0 ? Shape{dirs, B, H} : Shape{B, dirs, H};
  std::vector<Tensor> inputs = {
      F(Random(T * B * c.I, 11), x_shape),
      F(Random(dirs * 4 * H * c.I, 12, 0.3f), {dirs, 4 * H, c.I}),
      F(Random(dirs * 4 * H * H, 13, 0.3f), {dirs, 4 * H, H}),
      c.bias ? F(Random(dirs * 8 * H, 14, 0.5f), {dirs, 8 * H}) : Tensor(),
      c.lens ? Tensor::FromVector<int64_t>(lens, {B}) : Tensor(),
      c.init ? F(Random(dirs * B * H, 15), state) : Tensor(),
      c.init ? F(Random(dirs * B * H, 16, 2.0f), state) : Tensor(),
      c.peep ? F(Random(dirs * 3 * H, 17), {dirs, 3 * H}) : Tensor()};
  if (constant_weights) {
    inputs[1].storage()->MarkConstant();
    inputs[2].storage()->MarkConstant();
  }
  Attributes attrs = Attrs({{"direction", c.direction}, {"layout", c.layout}});
  if (c.clip > 0) attrs.Set("clip", static_cast<double>(c.clip));
  if (c.input_forget) attrs.Set("input_forget", int64_t{1});
  cpu::SetLstmFastPathForTesting(fast);
  auto out = RunOp("LSTM", attrs, inputs, 3, threads);
  cpu::SetLstmFastPathForTesting(true);
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return {};
  return {Values((*out)[0]), Values((*out)[1]), Values((*out)[2])};
}

void CheckFastPath(const FastCase& c) {
  const auto want = RunLstm(c, 1, false);
  ASSERT_EQ(want.size(), 3u);
  for (cpu::SimdLevel level :
       {cpu::SimdLevel::kAvx512, cpu::SimdLevel::kAvx2, cpu::SimdLevel::kBaseline}) {
    cpu::SetSimdLevelForTesting(level);
    for (int threads : {1, 2, 3, 16}) {
      for (bool constant_weights : {false, true}) {
        SCOPED_TRACE(::testing::Message()
                     << c.direction << " T=" << c.T << " B=" << c.B << " H=" << c.H << " layout="
                     << c.layout << " threads=" << threads << " simd=" << static_cast<int>(level)
                     << " constant W, R=" << constant_weights);
        const auto got = RunLstm(c, threads, true, constant_weights);
        ASSERT_EQ(got.size(), 3u);
        for (int i = 0; i < 3; ++i) ExpectNear(got[i], want[i], 2e-5f);
      }
    }
  }
  cpu::SetSimdLevelForTesting(cpu::DetectedSimdLevel());
}

TEST(LstmFastPathTest, ForwardBatchOne) {
  CheckFastPath({"forward", 9, 1, 23, 37, true, false, false, 0});
}
TEST(LstmFastPathTest, ReverseBatchWithLensAndStates) {
  CheckFastPath({"reverse", 6, 5, 17, 29, true, true, true, 0});
}
TEST(LstmFastPathTest, BidirectionalLayout1) {
  CheckFastPath({"bidirectional", 5, 3, 8, 203, true, true, true, 1});
}
TEST(LstmFastPathTest, BidirectionalNoBiasManySlices) {
  // Big enough that every thread budget here gets its own slices.
  CheckFastPath({"bidirectional", 4, 2, 40, 256, false, false, true, 0});
}
TEST(LstmFastPathTest, TinyHiddenAndEmptySequences) {
  CheckFastPath({"forward", 3, 4, 2, 1, true, true, true, 0});
  CheckFastPath({"bidirectional", 1, 2, 5, 3, false, true, false, 0});
}
TEST(LstmFastPathTest, PeepholesClipAndInputForget) {
  FastCase c{"bidirectional", 6, 3, 11, 45, true, true, true, 0};
  c.peep = true;
  CheckFastPath(c);
  c.clip = 0.4f;
  CheckFastPath(c);
  c.direction = "forward";
  c.input_forget = true;
  CheckFastPath(c);
  c.peep = false;
  c.clip = 0;
  c.layout = 1;
  CheckFastPath(c);
}
TEST(LstmFastPathTest, ConcurrentCallers) {
  // Two workers run the kernel at once, each on its own budget (its own team and arena).
  const FastCase c{"bidirectional", 7, 2, 19, 130, true, true, true, 0};
  const auto want = RunLstm(c, 1, false);
  ASSERT_EQ(want.size(), 3u);
  std::vector<std::vector<std::vector<float>>> got(4);
  std::vector<std::thread> workers;
  for (int i = 0; i < 4; ++i) {
    workers.emplace_back([&, i] { got[i] = RunLstm(c, 2 + i % 2, true); });
  }
  for (std::thread& t : workers) t.join();
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(got[i].size(), 3u);
    for (int k = 0; k < 3; ++k) ExpectNear(got[i][k], want[k], 2e-5f);
  }
}
TEST(LstmFastPathTest, MoreRowsThanOneProjectionBlock) {
  // 150 and 2 x 70 rows of X; from 8 threads (hidden 256 at 16) the projection goes in blocks
  // of 64 rows.
  CheckFastPath({"forward", 150, 1, 24, 33, true, false, false, 0});
  CheckFastPath({"bidirectional", 70, 2, 19, 21, true, true, true, 1});
  CheckFastPath({"forward", 70, 2, 33, 256, true, true, false, 1});
}
TEST(LstmFastPathTest, EightThreadTeamsOverLongSequences) {
  // Teams of 8 (budget 16; these sizes get 8) over 33-50 steps: odd gate counts (4 H = 4 mod
  // 8), inputs shorter than a vector, batch rows that end early, a reverse direction and both
  // layouts.
  CheckFastPath({"bidirectional", 37, 3, 21, 105, true, true, true, 1});
  CheckFastPath({"reverse", 50, 1, 7, 257, true, false, false, 0});
  CheckFastPath({"forward", 33, 2, 40, 182, false, true, true, 0});
}
TEST(LstmFastPathTest, Hidden650) {
  CheckFastPath({"forward", 3, 1, 650, 650, true, false, false, 0});
}

// Not a test of speed: prints per-step time for the PTB-size LSTM (batch 1, hidden 650) when
// NIMBLE_BENCH is set.
TEST(LstmTest, Hidden650Timing) {
  if (std::getenv("NIMBLE_BENCH") == nullptr) GTEST_SKIP() << "set NIMBLE_BENCH to run";
  const int64_t T = 35, B = 1, I = 650, H = 650;
  std::vector<Tensor> inputs = {
      F(Random(T * B * I, 1), {T, B, I}), F(Random(4 * H * I, 2, 0.05f), {1, 4 * H, I}),
      F(Random(4 * H * H, 3, 0.05f), {1, 4 * H, H}), F(Random(8 * H, 4, 0.1f), {1, 8 * H})};
  for (int threads : {1, 2}) {
    auto kernel = *KernelRegistry::Global().Create("LSTM", kCpu.type, {});
    std::vector<Tensor> outputs = {*Tensor::Empty(DType::kF32, {T, 1, B, H}),
                                   *Tensor::Empty(DType::kF32, {1, B, H}),
                                   *Tensor::Empty(DType::kF32, {1, B, H})};
    KernelContext ctx;
    ctx.num_threads = threads;
    ASSERT_TRUE(kernel->Run(ctx, inputs, absl::MakeSpan(outputs)).ok());
    const int iters = 20;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i)
      ASSERT_TRUE(kernel->Run(ctx, inputs, absl::MakeSpan(outputs)).ok());
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() /
        iters;
    std::printf("LSTM T=%ld H=%ld threads=%d: %.3f ms per sequence, %.1f us per step\n", T, H,
                threads, ms, ms * 1000 / T);
  }
}

}  // namespace
}  // namespace nimble::vm

namespace nimble::vm {
namespace {

// StackedLSTM (two forward layers, the second reading the first's Y): the wavefront (both layers
// in one team, layer 2's input projection inside its dot products over [W | R]) against the two
// layers run in turn through the LSTM kernel.
struct StackedCase {
  int64_t T, B, I, H1, H2;
  bool bias, init;
};

std::vector<std::vector<float>> RunStacked(const StackedCase& c, int threads, int wavefront,
                                           bool fold_x = false) {
  const int64_t T = c.T, B = c.B, I = c.I, H1 = c.H1, H2 = c.H2;
  std::vector<Tensor> inputs = {F(Random(T * B * I, 21), {T, B, I}),
                                F(Random(4 * H1 * I, 22, 0.3f), {1, 4 * H1, I}),
                                F(Random(4 * H1 * H1, 23, 0.3f), {1, 4 * H1, H1}),
                                c.bias ? F(Random(8 * H1, 24, 0.5f), {1, 8 * H1}) : Tensor(),
                                c.init ? F(Random(B * H1, 25), {1, B, H1}) : Tensor(),
                                c.init ? F(Random(B * H1, 26, 2.0f), {1, B, H1}) : Tensor(),
                                F(Random(4 * H2 * H1, 27, 0.3f), {1, 4 * H2, H1}),
                                F(Random(4 * H2 * H2, 28, 0.3f), {1, 4 * H2, H2}),
                                c.bias ? F(Random(8 * H2, 29, 0.5f), {1, 8 * H2}) : Tensor(),
                                c.init ? F(Random(B * H2, 30), {1, B, H2}) : Tensor(),
                                c.init ? F(Random(B * H2, 31, 2.0f), {1, B, H2}) : Tensor()};
  for (int i : {1, 2, 6, 7}) inputs[i].storage()->MarkConstant();  // the wavefront packs them
  cpu::SetStackedLstmWavefrontForTesting(wavefront, fold_x);
  auto out = RunOp("StackedLSTM", {}, inputs, 5, threads);
  cpu::SetStackedLstmWavefrontForTesting(0, false);  // the default
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return {};
  std::vector<std::vector<float>> values;
  for (const Tensor& t : *out) values.push_back(Values(t));
  return values;
}

void CheckStacked(const StackedCase& c) {
  const auto want = RunStacked(c, 1, 0);
  ASSERT_EQ(want.size(), 5u);
  for (cpu::SimdLevel level :
       {cpu::SimdLevel::kAvx512, cpu::SimdLevel::kAvx2, cpu::SimdLevel::kBaseline}) {
    cpu::SetSimdLevelForTesting(level);
    for (int threads : {1, 2, 3, 16}) {
      for (bool fold_x : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "T=" << c.T << " I=" << c.I << " H1=" << c.H1
                                          << " H2=" << c.H2 << " threads=" << threads << " simd="
                                          << static_cast<int>(level) << " fold_x=" << fold_x);
        const auto got = RunStacked(c, threads, 1, fold_x);
        ASSERT_EQ(got.size(), 5u);
        for (int i = 0; i < 5; ++i) ExpectNear(got[i], want[i], 2e-5f);
      }
    }
  }
  cpu::SetSimdLevelForTesting(cpu::DetectedSimdLevel());
}

TEST(StackedLstmTest, WavefrontMatchesLayersInTurn) {
  CheckStacked({9, 1, 23, 37, 29, true, true});
  CheckStacked({5, 1, 40, 64, 130, false, false});  // layer 2 wider than layer 1; no bias
  CheckStacked({1, 1, 7, 16, 16, true, false});     // one step: layer 2 runs in round 1 only
}

TEST(StackedLstmTest, MatchesTwoLstmOps) {
  // The fallback (and so the wavefront, above) against two LSTM kernels and the Squeeze between.
  const StackedCase c{6, 3, 11, 24, 18, true, true};  // batch 3: the layers run in turn
  const auto got = RunStacked(c, 2, -1);              // auto: batch 3 takes the layers in turn
  ASSERT_EQ(got.size(), 5u);
  const int64_t T = c.T, B = c.B, I = c.I, H1 = c.H1, H2 = c.H2;
  auto l1 = RunOp(
      "LSTM", {},
      {F(Random(T * B * I, 21), {T, B, I}), F(Random(4 * H1 * I, 22, 0.3f), {1, 4 * H1, I}),
       F(Random(4 * H1 * H1, 23, 0.3f), {1, 4 * H1, H1}), F(Random(8 * H1, 24, 0.5f), {1, 8 * H1}),
       Tensor(), F(Random(B * H1, 25), {1, B, H1}), F(Random(B * H1, 26, 2.0f), {1, B, H1})},
      3);
  ASSERT_TRUE(l1.ok()) << l1.status();
  auto x2 = (*l1)[0].Reshape({T, B, H1});
  ASSERT_TRUE(x2.ok());
  auto l2 = RunOp(
      "LSTM", {},
      {*x2, F(Random(4 * H2 * H1, 27, 0.3f), {1, 4 * H2, H1}),
       F(Random(4 * H2 * H2, 28, 0.3f), {1, 4 * H2, H2}), F(Random(8 * H2, 29, 0.5f), {1, 8 * H2}),
       Tensor(), F(Random(B * H2, 30), {1, B, H2}), F(Random(B * H2, 31, 2.0f), {1, B, H2})},
      3);
  ASSERT_TRUE(l2.ok()) << l2.status();
  ExpectNear(got[0], Values((*l2)[0]));
  ExpectNear(got[1], Values((*l1)[1]));
  ExpectNear(got[2], Values((*l1)[2]));
  ExpectNear(got[3], Values((*l2)[1]));
  ExpectNear(got[4], Values((*l2)[2]));
}

TEST(StackedLstmTest, Errors) {
  // Layer 1: input 3, hidden 2 (W [1, 8, 3], R [1, 8, 2]); layer 2: input 2, hidden 2.
  std::vector<Tensor> inputs = {F(Random(6, 1), {2, 1, 3}),
                                F(Random(24, 2), {1, 8, 3}),
                                F(Random(32, 3), {1, 8, 4}),
                                Tensor(),
                                Tensor(),
                                Tensor(),
                                F(Random(16, 4), {1, 8, 2}),
                                F(Random(16, 5), {1, 8, 2})};
  EXPECT_THAT(RunOp("StackedLSTM", {}, inputs, 5),  // R1 says hidden 4
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("do not fit")));
  inputs[2] = F(Random(16, 3), {1, 8, 2});
  EXPECT_TRUE(RunOp("StackedLSTM", {}, inputs, 5).ok());
  inputs.push_back(F(Random(4, 6), {1, 4}));  // B2 of the wrong size
  EXPECT_THAT(RunOp("StackedLSTM", {}, inputs, 5),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("input 8")));
  inputs.resize(3);
  EXPECT_THAT(RunOp("StackedLSTM", {}, inputs, 5), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace nimble::vm
