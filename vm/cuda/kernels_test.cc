// LayerNorm / Softmax / Gelu / Attention kernels against float64 CPU references, fp32 and fp16.
// Inputs are rounded to the storage type before the reference sees them; outputs are poisoned
// with NaN first. Error measure ||out - ref|| / ||ref||: fp32 <= 1e-5, fp16 <= 2e-3 (output
// rounding 2^-11 plus fp16 intermediates of the fused residual).
#include "vm/cuda/kernels.h"

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

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

float Round(float x, DType t) { return t == DType::kF16 ? __half2float(__float2half_rn(x)) : x; }
double Tolerance(DType t) { return t == DType::kF16 ? 2e-3 : 1e-5; }
int Bytes(DType t) { return t == DType::kF16 ? 2 : 4; }
const char* Name(DType t) { return t == DType::kF16 ? "fp16" : "fp32"; }

class KernelsTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    NIMBLE_ASSERT_OK_AND_ASSIGN(stream_, Stream::Create());
    NIMBLE_ASSERT_OK_AND_ASSIGN(allocator_, DeviceAllocator::Create({}));
  }

  std::vector<float> Random(int64_t n, float lo, float hi) {
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(n);
    for (float& x : v) x = Round(dist(rng_), GetParam());
    return v;
  }

  // Uploads `values` in the test's dtype (or as fp32 when `as_f32`).
  DeviceBuffer Upload(const std::vector<float>& values, bool as_f32 = false) {
    const DType t = as_f32 ? DType::kF32 : GetParam();
    std::vector<uint8_t> bytes(values.size() * Bytes(t));
    for (size_t i = 0; i < values.size(); ++i) {
      if (t == DType::kF16) {
        __half h = __float2half_rn(values[i]);
        std::memcpy(&bytes[i * 2], &h, 2);
      } else {
        std::memcpy(&bytes[i * 4], &values[i], 4);
      }
    }
    auto buffer = allocator_->AllocateBuffer(static_cast<int64_t>(bytes.size()), stream_->get());
    EXPECT_THAT(buffer.status(), IsOk());
    if (!buffer.ok()) return DeviceBuffer();
    EXPECT_THAT(CudaStatus(cudaMemcpyAsync(buffer->data(), bytes.data(), bytes.size(),
                                           cudaMemcpyHostToDevice, stream_->get()),
                           "upload"),
                IsOk());
    EXPECT_THAT(stream_->Synchronize(), IsOk());
    return std::move(*buffer);
  }
  DeviceBuffer Poisoned(int64_t count) {
    return Upload(std::vector<float>(count, std::numeric_limits<float>::quiet_NaN()));
  }
  std::vector<float> Download(const DeviceBuffer& buffer, int64_t count) {
    std::vector<uint8_t> bytes(count * Bytes(GetParam()));
    EXPECT_THAT(CudaStatus(cudaMemcpyAsync(bytes.data(), buffer.data(), bytes.size(),
                                           cudaMemcpyDeviceToHost, stream_->get()),
                           "download"),
                IsOk());
    EXPECT_THAT(stream_->Synchronize(), IsOk());
    std::vector<float> out(count);
    for (int64_t i = 0; i < count; ++i) {
      if (GetParam() == DType::kF16) {
        __half h;
        std::memcpy(&h, &bytes[i * 2], 2);
        out[i] = __half2float(h);
      } else {
        std::memcpy(&out[i], &bytes[i * 4], 4);
      }
    }
    return out;
  }
  void ExpectClose(const std::vector<float>& out, const std::vector<double>& ref,
                   const std::string& what) {
    ASSERT_EQ(out.size(), ref.size());
    double err = 0, norm = 0;
    int64_t bad = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      if (!std::isfinite(out[i])) ++bad;
      err += (out[i] - ref[i]) * (out[i] - ref[i]);
      norm += ref[i] * ref[i];
    }
    ASSERT_EQ(bad, 0) << what << ": non-finite or unwritten outputs";
    const double rel = std::sqrt(err / std::max(norm, 1e-30));
    std::printf("  %-4s %-50s rel err %.2e\n", Name(GetParam()), what.c_str(), rel);
    EXPECT_LE(rel, Tolerance(GetParam())) << what;
  }

  std::mt19937 rng_{42};
  std::unique_ptr<Stream> stream_;
  std::unique_ptr<DeviceAllocator> allocator_;
};

TEST_P(KernelsTest, LayerNormWithFusedResidual) {
  for (auto [rows, cols] :
       {std::pair<int64_t, int64_t>{3, 768}, {17, 1023}, {4, 1500}, {2, 4096}, {5, 7}, {3, 5000}}) {
    const std::string what = "LayerNorm " + std::to_string(rows) + "x" + std::to_string(cols);
    std::vector<float> x = Random(rows * cols, -2, 2);
    std::vector<float> r = Random(rows * cols, -2, 2);
    for (float& v : x) v = Round(v + 3.0f, GetParam());  // a large mean tests the two-pass variance
    std::vector<float> gamma = Random(cols, 0.5f, 1.5f);
    std::vector<float> beta = Random(cols, -0.5f, 0.5f);
    DeviceBuffer dx = Upload(x), dr = Upload(r), dg = Upload(gamma), db = Upload(beta);
    DeviceBuffer out = Poisoned(rows * cols), sum = Poisoned(rows * cols);
    ASSERT_THAT(LayerNorm(dx.data(), dr.data(), dg.data(), db.data(), out.data(), sum.data(), rows,
                          cols, 1e-5f, GetParam(), stream_->get()),
                IsOk());
    std::vector<double> ref(rows * cols), ref_sum(rows * cols);
    for (int64_t i = 0; i < rows; ++i) {
      double mean = 0, var = 0;
      for (int64_t c = 0; c < cols; ++c) {
        // The kernel normalises the stored sum, i.e. after rounding to the storage type.
        ref_sum[i * cols + c] = Round(x[i * cols + c] + r[i * cols + c], GetParam());
        mean += ref_sum[i * cols + c];
      }
      mean /= cols;
      for (int64_t c = 0; c < cols; ++c) var += std::pow(ref_sum[i * cols + c] - mean, 2);
      var /= cols;
      for (int64_t c = 0; c < cols; ++c) {
        ref[i * cols + c] =
            (ref_sum[i * cols + c] - mean) / std::sqrt(var + 1e-5) * gamma[c] + beta[c];
      }
    }
    ExpectClose(Download(out, rows * cols), ref, what);
    ExpectClose(Download(sum, rows * cols), ref_sum, what + " (sum)");
  }
  // In place: the new residual stream overwrites the residual input.
  const int64_t rows = 4, cols = 300;
  std::vector<float> x = Random(rows * cols, -1, 1), r = Random(rows * cols, -1, 1);
  std::vector<float> gamma(cols, 1.0f), beta(cols, 0.0f);
  DeviceBuffer dx = Upload(x), dr = Upload(r), dg = Upload(gamma), db = Upload(beta);
  DeviceBuffer out = Poisoned(rows * cols);
  ASSERT_THAT(LayerNorm(dx.data(), dr.data(), dg.data(), db.data(), out.data(), dr.data(), rows,
                        cols, 1e-5f, GetParam(), stream_->get()),
              IsOk());
  std::vector<double> ref_sum(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) ref_sum[i] = Round(x[i] + r[i], GetParam());
  ExpectClose(Download(dr, rows * cols), ref_sum, "LayerNorm in-place residual");
}

TEST_P(KernelsTest, SoftmaxWithBroadcastMaskAndFullyMaskedRow) {
  const int64_t batch = 2, heads = 3, queries = 5, keys = 77;
  const int64_t rows = batch * heads * queries;
  std::vector<float> x = Random(rows * keys, -4, 4);
  std::vector<float> mask(batch * keys, 0.0f);
  for (int64_t j = 60; j < keys; ++j) mask[j] = -10000.0f;        // batch 0: last keys padded
  for (int64_t j = 0; j < keys; ++j) mask[keys + j] = -INFINITY;  // batch 1: all masked
  const float scale = 0.125f;
  DeviceBuffer dx = Upload(x), dmask = Upload(mask, /*as_f32=*/true);
  DeviceBuffer out = Poisoned(rows * keys);
  ASSERT_THAT(Softmax(dx.data(), dmask.as<float>(), out.data(), rows, keys, scale, heads * queries,
                      GetParam(), stream_->get()),
              IsOk());
  std::vector<double> ref(rows * keys, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const float* m = mask.data() + (r / (heads * queries)) * keys;
    double max = -INFINITY, sum = 0;
    for (int64_t j = 0; j < keys; ++j) max = std::max(max, double{x[r * keys + j]} * scale + m[j]);
    if (max == -INFINITY) continue;  // zeros
    for (int64_t j = 0; j < keys; ++j)
      sum += std::exp(double{x[r * keys + j]} * scale + m[j] - max);
    for (int64_t j = 0; j < keys; ++j) {
      ref[r * keys + j] = std::exp(double{x[r * keys + j]} * scale + m[j] - max) / sum;
    }
  }
  std::vector<float> got = Download(out, rows * keys);
  ExpectClose(got, ref, "Softmax 30x77 masked");
  EXPECT_EQ(got[(rows - 1) * keys], 0.0f) << "fully masked row is zeros";
  // Without a mask, rows of every register-path width and one longer than the warp path.
  for (int64_t cols : {200, 400, 1000, 5000}) {
    std::vector<float> y = Random(3 * cols, -8, 8);
    DeviceBuffer dy = Upload(y), out2 = Poisoned(3 * cols);
    ASSERT_THAT(
        Softmax(dy.data(), nullptr, out2.data(), 3, cols, 1.0f, 1, GetParam(), stream_->get()),
        IsOk());
    std::vector<double> ref2(3 * cols);
    for (int64_t r = 0; r < 3; ++r) {
      double max = -INFINITY, sum = 0;
      for (int64_t j = 0; j < cols; ++j) max = std::max(max, double{y[r * cols + j]});
      for (int64_t j = 0; j < cols; ++j) sum += std::exp(y[r * cols + j] - max);
      for (int64_t j = 0; j < cols; ++j) ref2[r * cols + j] = std::exp(y[r * cols + j] - max) / sum;
    }
    ExpectClose(Download(out2, 3 * cols), ref2, "Softmax 3x" + std::to_string(cols));
  }
}

TEST_P(KernelsTest, GeluErfAndTanh) {
  const int64_t n = 100003;
  std::vector<float> x = Random(n, -6, 6);
  DeviceBuffer dx = Upload(x);
  for (bool tanh_form : {false, true}) {
    DeviceBuffer out = Poisoned(n);
    ASSERT_THAT(Gelu(dx.data(), out.data(), n, tanh_form, GetParam(), stream_->get()), IsOk());
    std::vector<double> ref(n);
    for (int64_t i = 0; i < n; ++i) {
      const double v = x[i];
      ref[i] = tanh_form
                   ? 0.5 * v * (1 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)))
                   : 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
    }
    ExpectClose(Download(out, n), ref, tanh_form ? "Gelu tanh" : "Gelu erf");
  }
}

TEST_P(KernelsTest, AttentionMatchesReference) {
  struct Case {
    AttentionShape shape;
    bool mask;
  };
  const Case cases[] = {
      {{.batch = 2, .heads = 3, .seq_q = 13, .seq_k = 13, .head_dim = 64}, false},
      // Key-padding mask [batch, seq_k] broadcast over heads and queries.
      {{.batch = 2, .heads = 2, .seq_q = 37, .seq_k = 37, .head_dim = 32, .mask_batch_stride = 37},
       true},
      // Causal mask [seq_q, seq_k] shared by every batch and head; decoder-like shapes.
      {{.batch = 1, .heads = 4, .seq_q = 128, .seq_k = 128, .head_dim = 80, .mask_row_stride = 128},
       true},
      {{.batch = 1, .heads = 2, .seq_q = 3, .seq_k = 512, .head_dim = 128}, false},
      // Per-head mask [batch, heads, seq_k]; head 1 of batch 1 is masked out entirely (zeros).
      {{.batch = 2,
        .heads = 2,
        .seq_q = 9,
        .seq_k = 70,
        .head_dim = 16,
        .mask_batch_stride = 140,
        .mask_head_stride = 70},
       true},
  };
  for (const Case& c : cases) {
    const AttentionShape& s = c.shape;
    const std::string what = "Attention b" + std::to_string(s.batch) + " h" +
                             std::to_string(s.heads) + " q" + std::to_string(s.seq_q) + " k" +
                             std::to_string(s.seq_k) + " d" + std::to_string(s.head_dim) +
                             (c.mask ? " masked" : "");
    const int64_t bh = s.batch * s.heads;
    std::vector<float> q = Random(bh * s.seq_q * s.head_dim, -1, 1);
    std::vector<float> k = Random(bh * s.seq_k * s.head_dim, -1, 1);
    std::vector<float> v = Random(bh * s.seq_k * s.head_dim, -1, 1);
    const int64_t mask_size = s.mask_batch_stride > 0 ? s.batch * s.mask_batch_stride
                                                      : std::max<int64_t>(1, s.seq_q) * s.seq_k;
    std::vector<float> mask(mask_size, 0.0f);
    for (int64_t i = 0; i < mask_size; ++i) {
      if (s.mask_head_stride > 0) {
        mask[i] = i >= 3 * s.seq_k ? -INFINITY : ((i % s.seq_k) % 3 == 0 ? -10000.0f : 0.0f);
      } else if (s.mask_row_stride > 0) {
        mask[i] = (i % s.seq_k) > (i / s.seq_k) ? -INFINITY : 0.0f;  // causal
      } else {
        mask[i] = (i % s.seq_k) >= s.seq_k - 1 - (i / s.seq_k) * 5 ? -10000.0f : 0.0f;
      }
    }
    const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
    DeviceBuffer dq = Upload(q), dk = Upload(k), dv = Upload(v), dm = Upload(mask, true);
    DeviceBuffer out = Poisoned(bh * s.seq_q * s.head_dim);
    ASSERT_THAT(Attention(dq.data(), dk.data(), dv.data(), c.mask ? dm.as<float>() : nullptr,
                          out.data(), s, scale, GetParam(), stream_->get()),
                IsOk());
    std::vector<double> ref(bh * s.seq_q * s.head_dim);
    std::vector<double> p(s.seq_k);
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t h = 0; h < s.heads; ++h) {
        const int64_t head = b * s.heads + h;
        for (int64_t i = 0; i < s.seq_q; ++i) {
          double max = -INFINITY;
          for (int64_t j = 0; j < s.seq_k; ++j) {
            double dot = 0;
            for (int64_t d = 0; d < s.head_dim; ++d) {
              dot += double{q[(head * s.seq_q + i) * s.head_dim + d]} *
                     k[(head * s.seq_k + j) * s.head_dim + d];
            }
            p[j] = dot * scale;
            if (c.mask) {
              p[j] += mask[b * s.mask_batch_stride + h * s.mask_head_stride +
                           i * s.mask_row_stride + j];
            }
            max = std::max(max, p[j]);
          }
          if (max == -INFINITY) {  // fully masked: zeros
            for (int64_t d = 0; d < s.head_dim; ++d) ref[(head * s.seq_q + i) * s.head_dim + d] = 0;
            continue;
          }
          double sum = 0;
          for (int64_t j = 0; j < s.seq_k; ++j) sum += (p[j] = std::exp(p[j] - max));
          for (int64_t d = 0; d < s.head_dim; ++d) {
            double acc = 0;
            for (int64_t j = 0; j < s.seq_k; ++j) {
              acc += p[j] * v[(head * s.seq_k + j) * s.head_dim + d];
            }
            ref[(head * s.seq_q + i) * s.head_dim + d] = acc / sum;
          }
        }
      }
    }
    ExpectClose(Download(out, bh * s.seq_q * s.head_dim), ref, what);
  }
  EXPECT_THAT(
      Attention(nullptr, nullptr, nullptr, nullptr, nullptr,
                {.seq_q = 4, .seq_k = 513, .head_dim = 64}, 1.0f, GetParam(), stream_->get()),
      StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("seq_k <= 512")));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, KernelsTest, ::testing::Values(DType::kF32, DType::kF16),
                         [](const auto& info) { return std::string(Name(info.param)); });

}  // namespace
}  // namespace nimble::vm::cuda
