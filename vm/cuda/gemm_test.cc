// cuBLASLt GEMM against a float64 CPU reference on fixed awkward shapes and random ones, for
// each precision. Inputs are drawn fresh, rounded to the storage precision first (so the
// reference sees exactly what the GPU sees), the output is poisoned with NaN before each run
// (an unwritten element fails), and the error measure is ||out - ref|| / ||ref||:
//   fp32 <= 1e-5 (fp32 accumulation), tf32 <= 2e-3 (10-bit mantissa products),
//   fp16 <= 2e-3 (output rounding 2^-11), bf16 <= 1e-2 (output rounding 2^-8).
#include "vm/cuda/gemm.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vm/cuda/cuda_status.h"
#include "vm/cuda/device_allocator.h"
#include "vm/cuda/stream.h"

namespace nimble::vm::cuda {
namespace {

using ::nimble::testing::IsOk;
using ::nimble::testing::StatusIs;
using ::testing::HasSubstr;

double Tolerance(GemmPrecision p) {
  switch (p) {
    case GemmPrecision::kF32:
      return 1e-5;
    case GemmPrecision::kTF32:
    case GemmPrecision::kF16:
      return 2e-3;
    case GemmPrecision::kBF16:
      return 1e-2;
  }
  return 0;
}

float RoundTo(float x, GemmPrecision p) {
  if (p == GemmPrecision::kF16) return __half2float(__float2half_rn(x));
  if (p == GemmPrecision::kBF16) return __bfloat162float(__float2bfloat16_rn(x));
  return x;
}

std::vector<uint8_t> Encode(const std::vector<float>& values, GemmPrecision p) {
  std::vector<uint8_t> bytes(values.size() * ElementBytes(p));
  for (size_t i = 0; i < values.size(); ++i) {
    if (p == GemmPrecision::kF16) {
      __half h = __float2half_rn(values[i]);
      std::memcpy(&bytes[i * 2], &h, 2);
    } else if (p == GemmPrecision::kBF16) {
      __nv_bfloat16 h = __float2bfloat16_rn(values[i]);
      std::memcpy(&bytes[i * 2], &h, 2);
    } else {
      std::memcpy(&bytes[i * 4], &values[i], 4);
    }
  }
  return bytes;
}

std::vector<float> Decode(const std::vector<uint8_t>& bytes, GemmPrecision p) {
  const size_t n = bytes.size() / ElementBytes(p);
  std::vector<float> values(n);
  for (size_t i = 0; i < n; ++i) {
    if (p == GemmPrecision::kF16) {
      __half h;
      std::memcpy(&h, &bytes[i * 2], 2);
      values[i] = __half2float(h);
    } else if (p == GemmPrecision::kBF16) {
      __nv_bfloat16 h;
      std::memcpy(&h, &bytes[i * 2], 2);
      values[i] = __bfloat162float(h);
    } else {
      std::memcpy(&values[i], &bytes[i * 4], 4);
    }
  }
  return values;
}

double GeluTanh(double x) {
  return 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}
double GeluErf(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

struct Case {
  int64_t m, n, k, batch = 1;
  bool trans_a = false, trans_b = false;
  GemmEpilogue epilogue = GemmEpilogue::kNone;
  bool residual = false;
  bool broadcast_b = false;  // one B for every batch (stride 0)
  float alpha = 1.0f;
};

std::string Describe(const Case& c) {
  return absl::StrFormat("M=%d N=%d K=%d batch=%d ta=%d tb=%d %s%s%s alpha=%g", c.m, c.n, c.k,
                         c.batch, c.trans_a, c.trans_b, EpilogueName(c.epilogue),
                         c.residual ? " +residual" : "", c.broadcast_b ? " bcastB" : "", c.alpha);
}

class GemmTest : public ::testing::TestWithParam<GemmPrecision> {
 protected:
  void SetUp() override {
    NIMBLE_ASSERT_OK_AND_ASSIGN(stream_, Stream::Create());
    NIMBLE_ASSERT_OK_AND_ASSIGN(allocator_, DeviceAllocator::Create({.byte_limit = 1 << 30}));
    NIMBLE_ASSERT_OK_AND_ASSIGN(runner_, GemmRunner::Create());
  }

  absl::StatusOr<DeviceBuffer> Upload(const std::vector<uint8_t>& bytes) {
    auto buffer = allocator_->AllocateBuffer(static_cast<int64_t>(bytes.size()), stream_->get());
    if (!buffer.ok()) return buffer.status();
    absl::Status s = CudaStatus(cudaMemcpyAsync(buffer->data(), bytes.data(), bytes.size(),
                                                cudaMemcpyHostToDevice, stream_->get()),
                                "upload");
    if (!s.ok()) return s;
    s = stream_->Synchronize();
    if (!s.ok()) return s;
    return buffer;
  }

  // Runs one case and checks it against the reference. Returns the relative error.
  void Check(const Case& c, GemmPrecision p, std::mt19937& rng) {
    SCOPED_TRACE(Describe(c));
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    auto random = [&](int64_t count) {
      std::vector<float> v(count);
      for (float& x : v) x = RoundTo(dist(rng), p);
      return v;
    };
    const int64_t b_batches = c.broadcast_b ? 1 : c.batch;
    std::vector<float> a = random(c.batch * c.m * c.k);
    std::vector<float> b = random(b_batches * c.k * c.n);
    const bool has_bias = c.epilogue == GemmEpilogue::kBias ||
                          c.epilogue == GemmEpilogue::kBiasGelu ||
                          c.epilogue == GemmEpilogue::kBiasRelu;
    std::vector<float> bias = random(c.n);
    std::vector<float> residual = random(c.batch * c.m * c.n);

    NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceBuffer da, Upload(Encode(a, p)));
    NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceBuffer db, Upload(Encode(b, p)));
    NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceBuffer dbias, Upload(Encode(bias, p)));
    NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceBuffer dres, Upload(Encode(residual, p)));
    const int64_t d_bytes = c.batch * c.m * c.n * ElementBytes(p);
    NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceBuffer dd, Upload(std::vector<uint8_t>(d_bytes, 0xFF)));

    GemmOperands ops{.a = da.data(),
                     .b = db.data(),
                     .d = dd.data(),
                     .bias = has_bias ? dbias.data() : nullptr,
                     .residual = c.residual ? dres.data() : nullptr,
                     .alpha = c.alpha,
                     .stride_b = c.broadcast_b ? 0 : -1};
    GemmShape shape{
        .m = c.m, .n = c.n, .k = c.k, .batch = c.batch, .trans_a = c.trans_a, .trans_b = c.trans_b};
    ASSERT_THAT(runner_->Run(shape, p, c.epilogue, ops, stream_->get()), IsOk());
    std::vector<uint8_t> out_bytes(d_bytes);
    ASSERT_THAT(CudaStatus(cudaMemcpyAsync(out_bytes.data(), dd.data(), d_bytes,
                                           cudaMemcpyDeviceToHost, stream_->get()),
                           "download"),
                IsOk());
    ASSERT_THAT(stream_->Synchronize(), IsOk());
    std::vector<float> out = Decode(out_bytes, p);

    const bool gelu = c.epilogue == GemmEpilogue::kGelu || c.epilogue == GemmEpilogue::kBiasGelu;
    const bool relu = c.epilogue == GemmEpilogue::kRelu || c.epilogue == GemmEpilogue::kBiasRelu;
    double err_tanh = 0, err_erf = 0, norm = 0;
    int64_t bad = 0;
    for (int64_t bt = 0; bt < c.batch; ++bt) {
      const float* pa = a.data() + bt * c.m * c.k;
      const float* pb = b.data() + (c.broadcast_b ? 0 : bt * c.k * c.n);
      for (int64_t i = 0; i < c.m; ++i) {
        for (int64_t j = 0; j < c.n; ++j) {
          double acc = 0;
          for (int64_t kk = 0; kk < c.k; ++kk) {
            const double av = c.trans_a ? pa[kk * c.m + i] : pa[i * c.k + kk];
            const double bv = c.trans_b ? pb[j * c.k + kk] : pb[kk * c.n + j];
            acc += av * bv;
          }
          double v = c.alpha * acc + (has_bias ? bias[j] : 0.0);
          const int64_t at = (bt * c.m + i) * c.n + j;
          if (c.residual) v += residual[at];
          double ref_tanh = v, ref_erf = v;
          if (gelu) {
            ref_tanh = GeluTanh(v);
            ref_erf = GeluErf(v);
          } else if (relu) {
            ref_tanh = ref_erf = v > 0 ? v : 0;
          }
          const double o = out[at];
          if (!std::isfinite(o)) ++bad;
          err_tanh += (o - ref_tanh) * (o - ref_tanh);
          err_erf += (o - ref_erf) * (o - ref_erf);
          norm += ref_tanh * ref_tanh;
        }
      }
    }
    ASSERT_EQ(bad, 0) << "non-finite or unwritten outputs";
    ASSERT_GT(norm, 0);
    const double rel_tanh = std::sqrt(err_tanh / norm);
    const double rel_erf = std::sqrt(err_erf / norm);
    const double rel = std::min(rel_tanh, rel_erf);
    std::printf(
        "  %-5s %-60s rel err %.2e%s\n", PrecisionName(p), Describe(c).c_str(), rel,
        gelu ? (rel_tanh <= rel_erf ? " (GELU matches tanh form)" : " (GELU matches erf form)")
             : "");
    EXPECT_LE(rel, Tolerance(p));
  }

  std::unique_ptr<Stream> stream_;
  std::unique_ptr<DeviceAllocator> allocator_;
  std::unique_ptr<GemmRunner> runner_;
};

// K cut into slices, one batch each, written as f32 partial products (the split GEMM in front of
// SplitSumLayerNorm): A's rows are K wide (lda) while each batch reads K / slices of them.
TEST_P(GemmTest, KSlicesIntoF32Partials) {
  const GemmPrecision p = GetParam();
  std::mt19937 rng(77 + static_cast<int>(p));
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  struct Sliced {
    int64_t m, n, k, slices;
  };
  for (const Sliced& c : {Sliced{384, 768, 3072, 2}, Sliced{37, 40, 96, 3}, Sliced{5, 8, 64, 8},
                          Sliced{128, 64, 768, 1}}) {
    SCOPED_TRACE(absl::StrFormat("M=%d N=%d K=%d slices=%d", c.m, c.n, c.k, c.slices));
    std::vector<float> a(c.m * c.k), b(c.k * c.n);
    for (float& x : a) x = RoundTo(dist(rng), p);
    for (float& x : b) x = RoundTo(dist(rng), p);
    NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceBuffer da, Upload(Encode(a, p)));
    NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceBuffer db, Upload(Encode(b, p)));
    const int64_t d_bytes = c.slices * c.m * c.n * 4;
    NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceBuffer dd, Upload(std::vector<uint8_t>(d_bytes, 0xFF)));
    const int64_t ks = c.k / c.slices;
    GemmOperands ops{.a = da.data(),
                     .b = db.data(),
                     .d = dd.data(),
                     .stride_a = ks,
                     .stride_b = ks * c.n,
                     .stride_d = c.m * c.n};
    GemmShape shape{.m = c.m, .n = c.n, .k = ks, .batch = c.slices, .lda = c.k, .d_f32 = true};
    ASSERT_THAT(runner_->Run(shape, p, GemmEpilogue::kNone, ops, stream_->get()), IsOk());
    std::vector<float> out(c.slices * c.m * c.n);
    ASSERT_THAT(CudaStatus(cudaMemcpyAsync(out.data(), dd.data(), d_bytes, cudaMemcpyDeviceToHost,
                                           stream_->get()),
                           "download"),
                IsOk());
    ASSERT_THAT(stream_->Synchronize(), IsOk());
    double err = 0, norm = 0;
    for (int64_t s = 0; s < c.slices; ++s) {
      for (int64_t i = 0; i < c.m; ++i) {
        for (int64_t j = 0; j < c.n; ++j) {
          double ref = 0;
          for (int64_t kk = s * ks; kk < (s + 1) * ks; ++kk)
            ref += double{a[i * c.k + kk]} * b[kk * c.n + j];
          const double o = out[(s * c.m + i) * c.n + j];
          ASSERT_TRUE(std::isfinite(o)) << "slice " << s << " row " << i << " col " << j;
          err += (o - ref) * (o - ref);
          norm += ref * ref;
        }
      }
    }
    // fp32 accumulation and an f32 output: no output rounding to the storage type.
    EXPECT_LE(std::sqrt(err / norm), p == GemmPrecision::kTF32 ? 2e-3 : 1e-5);
  }
  // lda only for A not transposed, at least K; f32 D without bias or activation.
  GemmOperands none{.a = this, .b = this, .d = this};
  EXPECT_THAT(runner_->Run({.m = 4, .n = 4, .k = 8, .lda = 4}, p, GemmEpilogue::kNone, none,
                           stream_->get()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("lda")));
  EXPECT_THAT(runner_->Run({.m = 4, .n = 4, .k = 8, .d_f32 = true}, p, GemmEpilogue::kBias,
                           {.a = this, .b = this, .d = this, .bias = this}, stream_->get()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("f32 D")));
}

TEST_P(GemmTest, MatchesCpuReference) {
  const GemmPrecision p = GetParam();
  std::mt19937 rng(1234 + static_cast<int>(p));
  std::vector<Case> cases = {
      {.m = 1, .n = 3072, .k = 768, .epilogue = GemmEpilogue::kBiasGelu},
      {.m = 37, .n = 65, .k = 129},
      {.m = 37,
       .n = 65,
       .k = 129,
       .trans_a = true,
       .trans_b = true,
       .epilogue = GemmEpilogue::kBias},
      {.m = 65, .n = 129, .k = 37, .trans_b = true, .epilogue = GemmEpilogue::kRelu},
      {.m = 128, .n = 3072, .k = 768, .trans_b = true, .epilogue = GemmEpilogue::kBiasGelu},
      {.m = 128,
       .n = 768,
       .k = 3072,
       .trans_b = true,
       .epilogue = GemmEpilogue::kBias,
       .residual = true},
      {.m = 17, .n = 33, .k = 9, .batch = 3, .epilogue = GemmEpilogue::kBias, .residual = true},
      {.m = 20, .n = 24, .k = 40, .batch = 4, .epilogue = GemmEpilogue::kGelu, .broadcast_b = true},
      {.m = 64, .n = 64, .k = 64, .batch = 2, .trans_a = true, .epilogue = GemmEpilogue::kBiasRelu},
      {.m = 8, .n = 8, .k = 8, .alpha = 0.5f},
  };
  std::uniform_int_distribution<int64_t> dim(1, 200);
  const GemmEpilogue epilogues[] = {GemmEpilogue::kNone, GemmEpilogue::kBias,
                                    GemmEpilogue::kGelu, GemmEpilogue::kBiasGelu,
                                    GemmEpilogue::kRelu, GemmEpilogue::kBiasRelu};
  for (int i = 0; i < 4; ++i) {
    cases.push_back({.m = dim(rng),
                     .n = dim(rng),
                     .k = dim(rng),
                     .batch = 1 + i % 2,
                     .trans_a = (rng() & 1) != 0,
                     .trans_b = (rng() & 1) != 0,
                     .epilogue = epilogues[rng() % 6]});
  }
  for (const Case& c : cases) Check(c, p, rng);
}

// With autotuning every candidate of cuBLASLt's heuristic runs (timed from a flushed L2) before
// the plan keeps one: whichever wins, the results stay within the reference's tolerance.
TEST_P(GemmTest, TunedPlansMatchCpuReference) {
  const GemmPrecision p = GetParam();
  std::mt19937 rng(99 + static_cast<int>(p));
  runner_->SetAutotune(true);
  const Case cases[] = {
      {.m = 16, .n = 2304, .k = 768, .trans_b = true, .epilogue = GemmEpilogue::kBias},
      {.m = 64, .n = 768, .k = 3072, .epilogue = GemmEpilogue::kBias, .residual = true},
      {.m = 37, .n = 65, .k = 129, .batch = 2, .epilogue = GemmEpilogue::kBiasGelu},
  };
  for (const Case& c : cases) Check(c, p, rng);
  EXPECT_EQ(runner_->Stats().cached_algorithms, 3);
}

// A tuned plan's algorithm is stored in the tune cache and a second runner takes it from there
// without timing; a damaged entry is a miss (tuned again), never an algorithm used blindly.
TEST_P(GemmTest, TunedAlgorithmsAreKeptInTheTuneCache) {
  const GemmPrecision p = GetParam();
  std::mt19937 rng(7 + static_cast<int>(p));
  const std::string dir = ::testing::TempDir() + "/nimble_gemm_tune_" +
                          std::string(PrecisionName(p)) + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  const Case c{.m = 48, .n = 96, .k = 160, .epilogue = GemmEpilogue::kBias, .residual = true};
  runner_->SetAutotune(true);
  runner_->SetTuneCacheDir(dir);
  Check(c, p, rng);
  EXPECT_EQ(runner_->Stats().tune_cache_hits, 0);
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files += e.is_regular_file();
  ASSERT_EQ(files, 1);

  NIMBLE_ASSERT_OK_AND_ASSIGN(auto second, GemmRunner::Create());
  second->SetAutotune(true);
  second->SetTuneCacheDir(dir);
  std::swap(runner_, second);
  Check(c, p, rng);
  EXPECT_EQ(runner_->Stats().tune_cache_hits, 1);

  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::ofstream(e.path(), std::ios::trunc) << "damaged\n";
  }
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto third, GemmRunner::Create());
  third->SetAutotune(true);
  third->SetTuneCacheDir(dir);
  std::swap(runner_, third);
  Check(c, p, rng);
  EXPECT_EQ(runner_->Stats().tune_cache_hits, 0);
  std::filesystem::remove_all(dir);
}

// Without a setting (NIMBLE_GEMM_AUTOTUNE unset, no SetAutotune), plans made on a stream marked
// as a graph's warm-up are tuned and kept in the tune cache; plans made elsewhere are not.
TEST_P(GemmTest, WarmupStreamsTuneTheirPlans) {
  if (std::getenv("NIMBLE_GEMM_AUTOTUNE") != nullptr) GTEST_SKIP() << "the environment decides";
  const GemmPrecision p = GetParam();
  std::mt19937 rng(11 + static_cast<int>(p));
  const std::string dir = ::testing::TempDir() + "/nimble_gemm_warmup_" +
                          std::string(PrecisionName(p)) + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  runner_->SetTuneCacheDir(dir);
  auto files = [&] {
    int n = 0;
    std::error_code error;
    for (const auto& e : std::filesystem::directory_iterator(dir, error)) n += e.is_regular_file();
    return n;
  };
  runner_->SetWarmupStream(stream_->get(), true);
  Check({.m = 48, .n = 96, .k = 160, .epilogue = GemmEpilogue::kBias, .residual = true}, p, rng);
  runner_->SetWarmupStream(stream_->get(), false);
  EXPECT_EQ(files(), 1);
  Check({.m = 40, .n = 96, .k = 160, .epilogue = GemmEpilogue::kBias, .residual = true}, p, rng);
  EXPECT_EQ(files(), 1);
  EXPECT_EQ(runner_->Stats().cached_algorithms, 2);
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(AllPrecisions, GemmTest,
                         ::testing::Values(GemmPrecision::kF32, GemmPrecision::kTF32,
                                           GemmPrecision::kF16, GemmPrecision::kBF16),
                         [](const auto& info) { return std::string(PrecisionName(info.param)); });

TEST(GemmRunnerTest, CachesTheAlgorithmPerShapeAndWorkspacePerStream) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto stream, Stream::Create());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto other, Stream::Create());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto runner, GemmRunner::Create());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto allocator, DeviceAllocator::Create({}));
  NIMBLE_ASSERT_OK_AND_ASSIGN(DeviceBuffer buf, allocator->AllocateBuffer(3 << 20, stream->get()));
  ASSERT_THAT(CudaStatus(cudaMemsetAsync(buf.data(), 0, 3 << 20, stream->get()), "memset"), IsOk());
  auto* base = buf.as<char>();
  GemmOperands ops{.a = base, .b = base + (1 << 20), .d = base + (2 << 20)};
  GemmShape shape{.m = 64, .n = 96, .k = 128};
  ASSERT_THAT(runner->Run(shape, GemmPrecision::kF16, GemmEpilogue::kNone, ops, stream->get()),
              IsOk());
  ASSERT_THAT(runner->Run(shape, GemmPrecision::kF16, GemmEpilogue::kNone, ops, other->get()),
              IsOk());
  GemmStats stats = runner->Stats();
  EXPECT_EQ(stats.runs, 2);
  EXPECT_EQ(stats.heuristic_queries, 1);
  EXPECT_EQ(stats.workspaces, 2);
  shape.m = 65;
  ASSERT_THAT(runner->Run(shape, GemmPrecision::kF16, GemmEpilogue::kNone, ops, stream->get()),
              IsOk());
  ASSERT_THAT(runner->Run(shape, GemmPrecision::kBF16, GemmEpilogue::kNone, ops, stream->get()),
              IsOk());
  stats = runner->Stats();
  EXPECT_EQ(stats.heuristic_queries, 3);
  EXPECT_EQ(stats.cached_algorithms, 3);
  EXPECT_EQ(stats.workspaces, 2);
  ASSERT_THAT(stream->Synchronize(), IsOk());
  ASSERT_THAT(other->Synchronize(), IsOk());
}

// Row-major fp32 reference: act(A[MxK] B[KxN] + bias), act = GELU (tanh form) when `gelu`.
std::vector<double> ReferenceF32(const std::vector<float>& a, const std::vector<float>& b,
                                 const std::vector<float>& bias, int64_t m, int64_t n, int64_t k,
                                 bool gelu) {
  std::vector<double> d(m * n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = bias.empty() ? 0.0 : bias[j];
      for (int64_t kk = 0; kk < k; ++kk) acc += double{a[i * k + kk]} * b[kk * n + j];
      d[i * n + j] = gelu ? GeluTanh(acc) : acc;
    }
  }
  return d;
}

double RelativeError(const std::vector<float>& out, const std::vector<double>& ref) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    err += (out[i] - ref[i]) * (out[i] - ref[i]);
    norm += ref[i] * ref[i];
  }
  return std::sqrt(err / norm);
}

std::vector<float> RandomVector(int64_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Four threads, each on its own stream with its own operands and bias, share one runner and
// therefore its cached plans (whose descriptor holds the bias pointer): every thread must still
// get its own result.
TEST(GemmRunnerTest, ConcurrentThreadsSharingPlansGetTheirOwnResults) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto runner, GemmRunner::Create());
  constexpr int kThreads = 4;
  constexpr int64_t kM = 33, kN = 48, kK = 64;
  std::vector<absl::Status> results(kThreads);
  std::vector<double> errors(kThreads, INFINITY);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      results[t] = [&]() -> absl::Status {
        std::mt19937 rng(100 + t);
        std::vector<float> a = RandomVector(kM * kK, rng), b = RandomVector(kK * kN, rng);
        std::vector<float> bias(kN, static_cast<float>(t + 1));
        NIMBLE_ASSIGN_OR_RETURN(auto stream, Stream::Create());
        float *da = nullptr, *db = nullptr, *dbias = nullptr, *dd = nullptr;
        NIMBLE_CUDA_RETURN_IF_ERROR(cudaMalloc(reinterpret_cast<void**>(&da), a.size() * 4));
        NIMBLE_CUDA_RETURN_IF_ERROR(cudaMalloc(reinterpret_cast<void**>(&db), b.size() * 4));
        NIMBLE_CUDA_RETURN_IF_ERROR(cudaMalloc(reinterpret_cast<void**>(&dbias), kN * 4));
        NIMBLE_CUDA_RETURN_IF_ERROR(cudaMalloc(reinterpret_cast<void**>(&dd), kM * kN * 4));
        NIMBLE_CUDA_RETURN_IF_ERROR(cudaMemcpy(da, a.data(), a.size() * 4, cudaMemcpyDefault));
        NIMBLE_CUDA_RETURN_IF_ERROR(cudaMemcpy(db, b.data(), b.size() * 4, cudaMemcpyDefault));
        NIMBLE_CUDA_RETURN_IF_ERROR(cudaMemcpy(dbias, bias.data(), kN * 4, cudaMemcpyDefault));
        for (int i = 0; i < 200; ++i) {
          NIMBLE_RETURN_IF_ERROR(
              runner->Run({.m = kM, .n = kN, .k = kK}, GemmPrecision::kF32, GemmEpilogue::kBias,
                          {.a = da, .b = db, .d = dd, .bias = dbias}, stream->get()));
        }
        std::vector<float> out(kM * kN);
        NIMBLE_CUDA_RETURN_IF_ERROR(
            cudaMemcpyAsync(out.data(), dd, out.size() * 4, cudaMemcpyDefault, stream->get()));
        NIMBLE_RETURN_IF_ERROR(stream->Synchronize());
        errors[t] = RelativeError(out, ReferenceF32(a, b, bias, kM, kN, kK, false));
        for (float* p : {da, db, dbias, dd}) cudaFree(p);
        return absl::OkStatus();
      }();
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_THAT(results[t], IsOk()) << "thread " << t;
    EXPECT_LE(errors[t], 1e-5) << "thread " << t;
  }
  GemmStats stats = runner->Stats();
  EXPECT_EQ(stats.runs, kThreads * 200);
  EXPECT_EQ(stats.cached_algorithms, 1);
  EXPECT_EQ(stats.workspaces, kThreads);
}

// A GEMM captured into a CUDA graph replays correctly on new inputs; without a reserved
// workspace, capture fails cleanly instead of invalidating the capture with cudaMalloc.
TEST(GemmRunnerTest, CapturesIntoACudaGraphAfterReservingTheWorkspace) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto runner, GemmRunner::Create());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto stream, Stream::Create());
  constexpr int64_t kM = 16, kN = 96, kK = 40;
  std::mt19937 rng(9);
  std::vector<float> b = RandomVector(kK * kN, rng), bias = RandomVector(kN, rng);
  float *da = nullptr, *db = nullptr, *dbias = nullptr, *dd = nullptr;
  ASSERT_THAT(CudaStatus(cudaMalloc(reinterpret_cast<void**>(&da), kM * kK * 4), "a"), IsOk());
  ASSERT_THAT(CudaStatus(cudaMalloc(reinterpret_cast<void**>(&db), kK * kN * 4), "b"), IsOk());
  ASSERT_THAT(CudaStatus(cudaMalloc(reinterpret_cast<void**>(&dbias), kN * 4), "bias"), IsOk());
  ASSERT_THAT(CudaStatus(cudaMalloc(reinterpret_cast<void**>(&dd), kM * kN * 4), "d"), IsOk());
  ASSERT_THAT(CudaStatus(cudaMemcpy(db, b.data(), b.size() * 4, cudaMemcpyDefault), "b"), IsOk());
  ASSERT_THAT(CudaStatus(cudaMemcpy(dbias, bias.data(), kN * 4, cudaMemcpyDefault), "b"), IsOk());
  const GemmShape shape{.m = kM, .n = kN, .k = kK};
  const GemmOperands ops{.a = da, .b = db, .d = dd, .bias = dbias};

  // Capture without a workspace: a clean error, and the capture itself stays valid.
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto fresh, Stream::Create());
  ASSERT_THAT(
      CudaStatus(cudaStreamBeginCapture(fresh->get(), cudaStreamCaptureModeThreadLocal), "begin"),
      IsOk());
  EXPECT_THAT(runner->Run(shape, GemmPrecision::kF32, GemmEpilogue::kBiasGelu, ops, fresh->get()),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("ReserveWorkspace")));
  cudaGraph_t empty = nullptr;
  ASSERT_THAT(CudaStatus(cudaStreamEndCapture(fresh->get(), &empty), "end"), IsOk());
  cudaGraphDestroy(empty);

  ASSERT_THAT(runner->ReserveWorkspace(stream->get()), IsOk());
  ASSERT_THAT(
      CudaStatus(cudaStreamBeginCapture(stream->get(), cudaStreamCaptureModeThreadLocal), "begin"),
      IsOk());
  ASSERT_THAT(runner->Run(shape, GemmPrecision::kF32, GemmEpilogue::kBiasGelu, ops, stream->get()),
              IsOk());
  cudaGraph_t graph = nullptr;
  ASSERT_THAT(CudaStatus(cudaStreamEndCapture(stream->get(), &graph), "end"), IsOk());
  cudaGraphExec_t exec = nullptr;
  ASSERT_THAT(CudaStatus(cudaGraphInstantiate(&exec, graph, 0), "instantiate"), IsOk());
  for (int replay = 0; replay < 3; ++replay) {
    std::vector<float> a = RandomVector(kM * kK, rng);
    ASSERT_THAT(
        CudaStatus(cudaMemcpyAsync(da, a.data(), a.size() * 4, cudaMemcpyDefault, stream->get()),
                   "a"),
        IsOk());
    ASSERT_THAT(CudaStatus(cudaMemsetAsync(dd, 0xFF, kM * kN * 4, stream->get()), "poison"),
                IsOk());
    ASSERT_THAT(CudaStatus(cudaGraphLaunch(exec, stream->get()), "launch"), IsOk());
    std::vector<float> out(kM * kN);
    ASSERT_THAT(
        CudaStatus(
            cudaMemcpyAsync(out.data(), dd, out.size() * 4, cudaMemcpyDefault, stream->get()), "d"),
        IsOk());
    ASSERT_THAT(stream->Synchronize(), IsOk());
    EXPECT_LE(RelativeError(out, ReferenceF32(a, b, bias, kM, kN, kK, true)), 1e-5)
        << "replay " << replay;
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  for (float* p : {da, db, dbias, dd}) cudaFree(p);
}

TEST(GemmRunnerTest, RejectsBadArguments) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto runner, GemmRunner::Create());
  int dummy[4];
  GemmOperands ops{.a = dummy, .b = dummy, .d = dummy};
  EXPECT_THAT(
      runner->Run({.m = 0, .n = 4, .k = 4}, GemmPrecision::kF32, GemmEpilogue::kNone, ops, nullptr),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("positive")));
  EXPECT_THAT(
      runner->Run({.m = 4, .n = 4, .k = 4}, GemmPrecision::kF32, GemmEpilogue::kBias, ops, nullptr),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs a bias")));
  ops.residual = dummy;
  EXPECT_THAT(
      runner->Run({.m = 4, .n = 4, .k = 4}, GemmPrecision::kF32, GemmEpilogue::kGelu, ops, nullptr),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("residual")));
  ops.residual = nullptr;
  ops.d = nullptr;
  EXPECT_THAT(
      runner->Run({.m = 4, .n = 4, .k = 4}, GemmPrecision::kF32, GemmEpilogue::kNone, ops, nullptr),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("null")));
}

}  // namespace
}  // namespace nimble::vm::cuda
