// The CUDA kernels of the VM against the CPU kernels of the same op on random inputs (label
// `cuda`: without a GPU the binary exits 77 = skipped). Each case runs the CPU kernel on host
// tensors and the CUDA kernel on copies in device memory (outputs poisoned with NaN first) and
// compares with max |cuda - cpu| <= 1e-4 * (1 + max |cpu|) (fp32; GEMMs on cuBLASLt's fp32
// path, transcendental functions from CUDA's libdevice).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vm/kernels/cpu/fp16.h"
#include "vm/kernels/cuda/cuda_device.h"
#include "vm/kernels/cuda/cuda_test_util.h"
#include "vm/kernels/kernel.h"
#include "vm/kernels/split_gemm_rule.h"

namespace nimble::vm {
namespace {

using namespace ::nimble::vm::cuda_testing;  // NOLINT
using ::nimble::testing::IsOk;

std::mt19937& Rng() {
  static std::mt19937 rng(1234);
  return rng;
}

Tensor RandomF32(const Shape& shape, float lo = -2.0f, float hi = 2.0f) {
  Tensor t = *Tensor::Empty(DType::kF32, shape);
  std::uniform_real_distribution<float> d(lo, hi);
  for (int64_t i = 0; i < t.num_elements(); ++i) t.data<float>()[i] = d(Rng());
  return t;
}

Tensor RandomI64(const Shape& shape, int64_t lo, int64_t hi) {
  Tensor t = *Tensor::Empty(DType::kI64, shape);
  std::uniform_int_distribution<int64_t> d(lo, hi);
  for (int64_t i = 0; i < t.num_elements(); ++i) t.data<int64_t>()[i] = d(Rng());
  return t;
}

// Runs `op` on both devices and compares output 0 (f32, i64 or bool).
void Compare(const std::string& op, const Attributes& attrs, const std::vector<Tensor>& inputs,
             DType out_dtype, const Shape& out_shape, double tolerance = 1e-4) {
  SCOPED_TRACE(op + " -> " + ShapeToString(out_shape));
  KernelRegistry& r = KernelRegistry::Global();
  auto cpu = r.Create(op, DeviceType::kCPU, attrs);
  auto gpu = r.Create(op, DeviceType::kCUDA, attrs);
  ASSERT_THAT(cpu.status(), IsOk());
  ASSERT_THAT(gpu.status(), IsOk());
  std::vector<Tensor> cpu_out = {*Tensor::Empty(out_dtype, out_shape)};
  KernelContext cpu_ctx;
  ASSERT_THAT((*cpu)->Run(cpu_ctx, inputs, absl::MakeSpan(cpu_out)), IsOk());
  std::vector<Tensor> dev_in;
  for (const Tensor& t : inputs) dev_in.push_back(ToDevice(t));
  std::vector<Tensor> gpu_out = {*Tensor::Empty(out_dtype, out_shape, Gpu())};
  ASSERT_EQ(cudaMemset(gpu_out[0].raw_data(), 0xff, gpu_out[0].nbytes()), cudaSuccess);  // NaN
  KernelContext gpu_ctx;
  gpu_ctx.device = Device{DeviceType::kCUDA, 0};
  gpu_ctx.allocator = Gpu();
  ASSERT_THAT((*gpu)->Run(gpu_ctx, dev_in, absl::MakeSpan(gpu_out)), IsOk());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  Tensor got = ToHost(gpu_out[0]);
  const Tensor& want = cpu_out[0];
  double max_ref = 0, max_diff = 0;
  for (int64_t i = 0; i < want.num_elements(); ++i) {
    double w = 0, g = 0;
    if (out_dtype == DType::kF32) {
      w = want.data<float>()[i], g = got.data<float>()[i];
    } else if (out_dtype == DType::kI64) {
      w = static_cast<double>(want.data<int64_t>()[i]);
      g = static_cast<double>(got.data<int64_t>()[i]);
    } else if (out_dtype == DType::kBool) {
      w = want.data<bool>()[i], g = got.data<bool>()[i];
    }
    max_ref = std::max(max_ref, std::abs(w));
    const double diff = std::isnan(g) ? INFINITY : std::abs(w - g);
    max_diff = std::max(max_diff, diff);
  }
  EXPECT_LE(max_diff, tolerance * (1 + max_ref)) << "max |ref| " << max_ref;
  std::printf("%-20s %-18s max diff %.3g (max |ref| %.3g)\n", op.c_str(),
              ShapeToString(out_shape).c_str(), max_diff, max_ref);
}

TEST(CudaKernelsTest, MatMulBatchedAndBroadcast) {
  Compare("MatMul", {}, {RandomF32({37, 65}), RandomF32({65, 129})}, DType::kF32, {37, 129});
  Compare("MatMul", {}, {RandomF32({3, 17, 33}), RandomF32({3, 33, 9})}, DType::kF32, {3, 17, 9});
  Compare("MatMul", {}, {RandomF32({2, 4, 7, 16}), RandomF32({16, 5})}, DType::kF32, {2, 4, 7, 5});
  Compare("MatMul", {}, {RandomF32({2, 1, 7, 16}), RandomF32({1, 3, 16, 5})}, DType::kF32,
          {2, 3, 7, 5});
}

TEST(CudaKernelsTest, FusedMatMulEpilogues) {
  for (const std::string act : {"", "gelu", "relu", "gelu_tanh", "tanh"}) {
    for (bool trans_b : {false, true}) {
      Tensor b = trans_b ? RandomF32({96, 64}) : RandomF32({64, 96});
      Compare("FusedMatMul", A({{"activation", act}, {"transB", int64_t{trans_b}}, {"alpha", 0.5}}),
              {RandomF32({2, 13, 64}), b, RandomF32({96}), RandomF32({2, 13, 96})}, DType::kF32,
              {2, 13, 96});
    }
  }
  Compare("FusedMatMul", A({{"activation", std::string("gelu")}}),
          {RandomF32({5, 64}), RandomF32({64, 32}), RandomF32({32}), Tensor()}, DType::kF32,
          {5, 32});
}

// Concat and Split: blocks copied with cudaMemcpy2DAsync (one row when the axis is 0), empty
// inputs along the axis (GPT-2's past at the first step), negative axes, i64 and bool data.
TEST(CudaKernelsTest, ConcatSplitNot) {
  Compare("Concat", A({{"axis", int64_t{1}}}),
          {RandomF32({2, 3, 4}), RandomF32({2, 0, 4}), RandomF32({2, 5, 4})}, DType::kF32,
          {2, 8, 4});
  Compare("Concat", A({{"axis", int64_t{-1}}}), {RandomF32({3, 2, 5}), RandomF32({3, 2, 7})},
          DType::kF32, {3, 2, 12});
  Compare("Concat", A({{"axis", int64_t{0}}}), {RandomI64({2, 6}, -9, 9), RandomI64({1, 6}, -9, 9)},
          DType::kI64, {3, 6});
  Tensor bits = *Tensor::Empty(DType::kBool, {3, 17});
  for (int64_t i = 0; i < bits.num_elements(); ++i) bits.data<bool>()[i] = (i * 7) % 3 == 0;
  Compare("Not", {}, {bits}, DType::kBool, {3, 17});

  KernelRegistry& r = KernelRegistry::Global();
  for (int64_t axis : {1, -1}) {
    SCOPED_TRACE(absl::StrCat("Split axis ", axis));
    const Tensor x = axis == 1 ? RandomF32({2, 9, 4}) : RandomF32({2, 4, 9});
    Tensor sizes = *Tensor::Empty(DType::kI64, {3});
    sizes.data<int64_t>()[0] = 2, sizes.data<int64_t>()[1] = 0, sizes.data<int64_t>()[2] = 7;
    const std::vector<Shape> shapes = axis == 1
                                          ? std::vector<Shape>{{2, 2, 4}, {2, 0, 4}, {2, 7, 4}}
                                          : std::vector<Shape>{{2, 4, 2}, {2, 4, 0}, {2, 4, 7}};
    auto cpu = r.Create("Split", DeviceType::kCPU, A({{"axis", axis}}));
    auto gpu = r.Create("Split", DeviceType::kCUDA, A({{"axis", axis}}));
    ASSERT_THAT(cpu.status(), IsOk());
    ASSERT_THAT(gpu.status(), IsOk());
    std::vector<Tensor> want, got;
    for (const Shape& shape : shapes) {
      want.push_back(*Tensor::Empty(DType::kF32, shape));
      got.push_back(*Tensor::Empty(DType::kF32, shape, Gpu()));
    }
    KernelContext cpu_ctx;
    ASSERT_THAT((*cpu)->Run(cpu_ctx, {x, sizes}, absl::MakeSpan(want)), IsOk());
    KernelContext gpu_ctx;
    gpu_ctx.device = Device{DeviceType::kCUDA, 0};
    gpu_ctx.allocator = Gpu();
    // The split sizes stay on the host (KernelTraits::host_inputs), as the compiler places them.
    ASSERT_THAT((*gpu)->Run(gpu_ctx, {ToDevice(x), sizes}, absl::MakeSpan(got)), IsOk());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    for (size_t i = 0; i < shapes.size(); ++i) {
      const Tensor host = ToHost(got[i]);
      for (int64_t e = 0; e < host.num_elements(); ++e) {
        ASSERT_EQ(host.data<float>()[e], want[i].data<float>()[e]) << "output " << i << " at " << e;
      }
    }
  }
}

TEST(CudaKernelsTest, Gemm) {
  Compare("Gemm", A({{"transB", int64_t{1}}}),
          {RandomF32({4, 32}), RandomF32({16, 32}), RandomF32({16})}, DType::kF32, {4, 16});
  Compare("Gemm", A({{"transA", int64_t{1}}, {"alpha", 2.0}, {"beta", 0.5}}),
          {RandomF32({32, 4}), RandomF32({32, 16}), RandomF32({4, 1})}, DType::kF32, {4, 16});
}

TEST(CudaKernelsTest, LayerNormSoftmax) {
  for (int64_t cols : {7, 128, 768, 1000}) {
    Compare("LayerNormalization", A({{"axis", int64_t{-1}}, {"epsilon", 1e-12}}),
            {RandomF32({3, 5, cols}), RandomF32({cols}), RandomF32({cols})}, DType::kF32,
            {3, 5, cols});
    Compare("Softmax", A({{"axis", int64_t{-1}}}), {RandomF32({4, 3, cols}, -8, 8)}, DType::kF32,
            {4, 3, cols});
  }
  Compare("Softmax", A({{"axis", int64_t{1}}}), {RandomF32({4, 9, 5})}, DType::kF32, {4, 9, 5});
  Compare("LogSoftmax", A({{"axis", int64_t{-1}}}), {RandomF32({6, 33})}, DType::kF32, {6, 33});
}

TEST(CudaKernelsTest, AttentionWithMasks) {
  const int64_t heads = 4, head = 16;
  for (int64_t seq : {1, 7, 64, 300}) {
    const int64_t hidden = heads * head;
    // BERT's form: 3-D Q/K/V, additive mask [batch, 1, 1, seq].
    Compare("Attention", A({{"q_num_heads", heads}, {"kv_num_heads", heads}, {"scale", 0.25}}),
            {RandomF32({2, seq, hidden}), RandomF32({2, seq, hidden}), RandomF32({2, seq, hidden}),
             RandomF32({2, 1, 1, seq}, -10000, 0)},
            DType::kF32, {2, seq, hidden});
    // The same as an i32 keep-mask with mask_scale / mask_offset (fuse-attention-mask).
    Tensor keep = *Tensor::Empty(DType::kI32, {2, 1, 1, seq});
    for (int64_t i = 0; i < 2 * seq; ++i) keep.data<int32_t>()[i] = i % 3 != 0 ? 1 : 0;
    Compare("Attention",
            A({{"q_num_heads", heads},
               {"kv_num_heads", heads},
               {"mask_scale", 1e4},
               {"mask_offset", -1e4}}),
            {RandomF32({2, seq, hidden}), RandomF32({2, seq, hidden}), RandomF32({2, seq, hidden}),
             keep},
            DType::kF32, {2, seq, hidden});
    // 4-D, grouped KV heads, bool mask [seq, seq].
    Tensor mask = *Tensor::Empty(DType::kBool, {seq, seq});
    for (int64_t i = 0; i < seq * seq; ++i) mask.data<bool>()[i] = (i % seq) <= (i / seq);
    Compare("Attention", {},
            {RandomF32({2, heads, seq, head}), RandomF32({2, 2, seq, head}),
             RandomF32({2, 2, seq, head}), mask},
            DType::kF32, {2, heads, seq, head});
  }
}

TEST(CudaKernelsTest, ElementwiseAndFusedPrograms) {
  for (const char* op : {"Add", "Sub", "Mul", "Div"}) {
    Compare(op, {}, {RandomF32({3, 1, 5}), RandomF32({4, 1}, 0.5, 2)}, DType::kF32, {3, 4, 5});
  }
  for (const char* op : {"Tanh", "Erf", "Sigmoid", "Relu", "Exp", "Neg", "Abs"}) {
    Compare(op, {}, {RandomF32({1000})}, DType::kF32, {1000});
  }
  Compare("Sqrt", {}, {RandomF32({77}, 0.1, 4)}, DType::kF32, {77});
  Compare("Gelu", {}, {RandomF32({2, 300})}, DType::kF32, {2, 300});
  Compare("Gelu", A({{"approximate", std::string("tanh")}}), {RandomF32({2, 300})}, DType::kF32,
          {2, 300});
  // BERT's embedding sum and mask programs (as the fusion pass emits them).
  Compare("FusedElementwise",
          A({{"constants", std::vector<double>{}},
             {"program", std::vector<int64_t>{0, 0, 0, 0, 0,  1, 1, 0, 10, 2, 0, 1,
                                              0, 3, 2, 0, 10, 4, 2, 3, 2,  0, 4, 0}}}),
          {RandomF32({2, 9, 32}), RandomF32({1, 9, 32}), RandomF32({2, 9, 32})}, DType::kF32,
          {2, 9, 32});
  Compare("FusedElementwise",
          A({{"constants", std::vector<double>{1, -10000}},
             {"program", std::vector<int64_t>{1, 0, 0, 0, 0,  1, 0, 0, 11, 2, 0, 1,
                                              1, 3, 1, 0, 12, 4, 2, 3, 2,  0, 4, 0}}}),
          {RandomF32({2, 1, 1, 9}, 0, 1)}, DType::kF32, {2, 1, 1, 9});
}

TEST(CudaKernelsTest, GatherCastTransposeWhere) {
  Compare("Gather", {}, {RandomF32({1000, 32}), RandomI64({2, 7}, -1000, 999)}, DType::kF32,
          {2, 7, 32});
  Compare("Gather", A({{"axis", int64_t{1}}}), {RandomF32({2, 9, 16}), RandomI64({}, 0, 8)},
          DType::kF32, {2, 16});
  Compare("Cast", A({{"to", int64_t{1}}}), {RandomI64({5, 6}, -100, 100)}, DType::kF32, {5, 6});
  Compare("Cast", A({{"to", int64_t{7}}}), {RandomF32({5, 6}, -100, 100)}, DType::kI64, {5, 6},
          0);  // both truncate toward zero
  Compare("Transpose", A({{"perm", std::vector<int64_t>{0, 2, 1, 3}}}), {RandomF32({2, 3, 4, 5})},
          DType::kF32, {2, 4, 3, 5});
  Tensor cond = *Tensor::Empty(DType::kBool, {3, 1});
  for (int i = 0; i < 3; ++i) cond.data<bool>()[i] = i != 1;
  Compare("Where", {}, {cond, RandomF32({3, 4}), RandomF32({4})}, DType::kF32, {3, 4});
}

// BERT's embedding layer as the compiler fuses it: three lookups (positions broadcast over the
// batch, i32 token types), summed and normalised; rows in registers (768, 256; 100 in f32) and
// the block kernel (100 in halves: not whole 16-byte vectors; 1200: longer than a warp holds).
std::vector<Tensor> EmbedInputs(int64_t cols) {
  Tensor types = *Tensor::Empty(DType::kI32, {2, 7});
  for (int i = 0; i < 14; ++i) types.data<int32_t>()[i] = i % 2;
  return {RandomF32({1000, cols}), RandomI64({2, 7}, -1000, 999),
          RandomF32({16, cols}),   RandomI64({1, 7}, 0, 15),
          RandomF32({2, cols}),    types,
          RandomF32({cols}),       RandomF32({cols})};
}

TEST(CudaKernelsTest, EmbedLayerNorm) {
  const Attributes attrs = A({{"embeddings", int64_t{3}}, {"epsilon", 1e-12}});
  for (int64_t cols : {768, 256, 100, 1200}) {
    Compare("EmbedLayerNorm", attrs, EmbedInputs(cols), DType::kF32, {2, 7, cols});
  }
  std::vector<Tensor> no_params = EmbedInputs(64);
  no_params.resize(6);
  Compare("EmbedLayerNorm", attrs, no_params, DType::kF32, {2, 7, 64});
  // Absent position ids: the positions along the last leading dim (the compiler drops a Range).
  for (int64_t cols : {768, 100}) {
    std::vector<Tensor> counted = EmbedInputs(cols);
    counted[3] = Tensor();
    Compare("EmbedLayerNorm", attrs, counted, DType::kF32, {2, 7, cols});
  }
}

// A kernel that finds an index out of range writes zeros and reports it in the caller's error
// record; the host reads it once the stream is done, and reading clears it.
TEST(CudaKernelsTest, OutOfRangeIndicesAreReportedToTheErrorRecord) {
  DeviceApi* api = KernelRegistry::Global().GetDeviceApi(DeviceType::kCUDA);
  ASSERT_NE(api, nullptr);
  absl::StatusOr<DeviceErrorRecord*> record = api->NewErrorRecord(0);
  ASSERT_THAT(record.status(), IsOk());
  const Device gpu{DeviceType::kCUDA, 0};
  KernelContext ctx;
  ctx.device = gpu;
  ctx.allocator = Gpu();
  ctx.device_errors = *record;
  auto run = [&](const std::string& op, const Attributes& attrs, const std::vector<Tensor>& in,
                 const Shape& out_shape) {
    auto kernel = KernelRegistry::Global().Create(op, DeviceType::kCUDA, attrs);
    EXPECT_THAT(kernel.status(), IsOk());
    std::vector<Tensor> dev_in;
    for (const Tensor& t : in) dev_in.push_back(ToDevice(t));
    std::vector<Tensor> out = {*Tensor::Empty(DType::kF32, out_shape, Gpu())};
    EXPECT_THAT((*kernel)->Run(ctx, dev_in, absl::MakeSpan(out)), IsOk());
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    return ToHost(out[0]);
  };
  Tensor ids = RandomI64({2, 3}, 0, 9);
  ids.data<int64_t>()[4] = 10;
  Tensor got = run("Gather", {}, {RandomF32({10, 4}, 1, 2), ids}, {2, 3, 4});
  for (int c = 0; c < 4; ++c) EXPECT_EQ(got.data<float>()[4 * 4 + c], 0.0f);
  EXPECT_EQ(got.data<float>()[0] >= 1.0f, true);
  EXPECT_THAT(TakeDeviceError(**record, gpu),
              ::nimble::testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                          ::testing::HasSubstr("Gather on cuda:0: index 10 is "
                                                               "out of range [-10, 10)")));
  EXPECT_THAT(TakeDeviceError(**record, gpu), IsOk());  // taken
  // In range (negative counts from the end): nothing reported.
  ids.data<int64_t>()[4] = -10;
  run("Gather", {}, {RandomF32({10, 4}), ids}, {2, 3, 4});
  EXPECT_THAT(TakeDeviceError(**record, gpu), IsOk());
  for (int64_t cols : {768, 100}) {
    std::vector<Tensor> in = EmbedInputs(cols);
    in[3].data<int64_t>()[5] = -17;
    run("EmbedLayerNorm", A({{"embeddings", int64_t{3}}}), in, {2, 7, cols});
    EXPECT_THAT(TakeDeviceError(**record, gpu),
                ::nimble::testing::StatusIs(
                    absl::StatusCode::kInvalidArgument,
                    ::testing::HasSubstr("embedding lookup on cuda:0: index -17 is out of range "
                                         "[-16, 16)")))
        << cols;
  }
  api->FreeErrorRecord(*record);
}

// f32 tensor `t` stored as `half` (kF16 / kBF16), and back.
Tensor ToHalf(const Tensor& t, DType half) {
  Tensor h = *Tensor::Empty(half, t.shape());
  auto* d = static_cast<uint16_t*>(h.raw_data());
  for (int64_t i = 0; i < t.num_elements(); ++i) {
    d[i] = half == DType::kF16 ? cpu::FloatToHalf(t.data<float>()[i])
                               : cpu::FloatToBFloat16(t.data<float>()[i]);
  }
  return h;
}
Tensor FromHalf(const Tensor& h) {
  Tensor t = *Tensor::Empty(DType::kF32, h.shape());
  const auto* s = static_cast<const uint16_t*>(h.raw_data());
  for (int64_t i = 0; i < h.num_elements(); ++i) {
    t.data<float>()[i] =
        h.dtype() == DType::kF16 ? cpu::HalfToFloat(s[i]) : cpu::BFloat16ToFloat(s[i]);
  }
  return t;
}

// max |got - want| <= tolerance * (1 + max |want|) over two f32 tensors (NaN in `got` fails);
// returns {max |got - want|, max |want|}.
std::pair<double, double> ExpectCloseF32(const Tensor& want, const Tensor& got, double tolerance) {
  double max_ref = 0, max_diff = 0;
  for (int64_t i = 0; i < got.num_elements(); ++i) {
    const double w = want.data<float>()[i], g = got.data<float>()[i];
    max_ref = std::max(max_ref, std::abs(w));
    max_diff = std::max(max_diff, std::isnan(g) ? INFINITY : std::abs(w - g));
  }
  EXPECT_LE(max_diff, tolerance * (1 + max_ref)) << "max |ref| " << max_ref;
  return {max_diff, max_ref};
}

// The CUDA kernel on `half` storage against the CPU kernel in f32 on the same (rounded) inputs:
// max |cuda - cpu| <= tolerance * (1 + max |cpu|). f32 inputs listed in `keep` stay f32 (the
// attention mask).
// `f32_output`: the device kernel reads half inputs and writes f32 (LayerNorm's f32 output
// type, which lower_precision gives a LayerNorm at a model output).
void CompareHalf(const std::string& op, const Attributes& attrs, std::vector<Tensor> inputs,
                 const Shape& out_shape, DType half, double tolerance,
                 std::vector<size_t> keep = {}, bool f32_output = false) {
  SCOPED_TRACE(op + " " + std::string(DTypeName(half)) + " -> " + ShapeToString(out_shape) +
               (f32_output ? " f32" : ""));
  KernelRegistry& r = KernelRegistry::Global();
  auto cpu = r.Create(op, DeviceType::kCPU, attrs);
  auto gpu = r.Create(op, DeviceType::kCUDA, attrs);
  ASSERT_THAT(cpu.status(), IsOk());
  ASSERT_THAT(gpu.status(), IsOk());
  std::vector<Tensor> dev_in;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const bool lower = inputs[i].defined() && inputs[i].dtype() == DType::kF32 &&
                       std::find(keep.begin(), keep.end(), i) == keep.end();
    if (lower) {
      Tensor h = ToHalf(inputs[i], half);
      inputs[i] = FromHalf(h);  // the CPU reference sees the rounded values
      dev_in.push_back(ToDevice(h));
    } else {
      dev_in.push_back(ToDevice(inputs[i]));
    }
  }
  std::vector<Tensor> cpu_out = {*Tensor::Empty(DType::kF32, out_shape)};
  KernelContext cpu_ctx;
  ASSERT_THAT((*cpu)->Run(cpu_ctx, inputs, absl::MakeSpan(cpu_out)), IsOk());
  std::vector<Tensor> gpu_out = {*Tensor::Empty(f32_output ? DType::kF32 : half, out_shape, Gpu())};
  ASSERT_EQ(cudaMemset(gpu_out[0].raw_data(), 0xff, gpu_out[0].nbytes()), cudaSuccess);  // NaN
  KernelContext gpu_ctx;
  gpu_ctx.device = Device{DeviceType::kCUDA, 0};
  gpu_ctx.allocator = Gpu();
  ASSERT_THAT((*gpu)->Run(gpu_ctx, dev_in, absl::MakeSpan(gpu_out)), IsOk());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  Tensor got = f32_output ? ToHost(gpu_out[0]) : FromHalf(ToHost(gpu_out[0]));
  const auto [max_diff, max_ref] = ExpectCloseF32(cpu_out[0], got, tolerance);
  std::printf("%-20s %-5s %-18s max diff %.3g (max |ref| %.3g)\n", op.c_str(),
              std::string(DTypeName(half)).c_str(), ShapeToString(out_shape).c_str(), max_diff,
              max_ref);
}

// The split-gemm-layernorm pass's pair: MatMulSplitK's f32 or half partial products of half
// inputs (cuBLASLt batched over K slices, rows of A K wide) and SplitSumLayerNorm on the
// warp-per-row path (cols a multiple of 8 up to 1024, splits 1-4, and 6 or 8 for f32 partials)
// and the block-per-row one.
TEST(CudaKernelsTest, SplitGemmLayerNorm) {
  for (auto [half, tol] :
       std::vector<std::pair<DType, double>>{{DType::kF16, 4e-3}, {DType::kBF16, 3e-2}}) {
    for (int64_t splits : {1, 2, 3}) {
      for (bool f32_output : {true, false}) {
        CompareHalf("MatMulSplitK", A({{"splits", splits}}),
                    {RandomF32({2, 13, 96}), RandomF32({96, 40})}, {splits, 2, 13, 40}, half,
                    f32_output ? 1e-4 : tol, {}, f32_output);
      }
    }
    CompareHalf("MatMulSplitK", A({{"splits", int64_t{2}}}),
                {RandomF32({384, 3072}, -0.5f, 0.5f), RandomF32({3072, 768}, -0.05f, 0.05f)},
                {2, 384, 768}, half, 1e-4, {}, /*f32_output=*/true);
    for (int64_t cols : {768, 1000, 100, 1200}) {
      for (int64_t splits : {1, 2, 3, 5, 8}) {
        for (bool f32_output : {false, true}) {
          // Partials kept f32 ({0}) or stored as `half` too (the reference sees them rounded).
          for (const std::vector<size_t>& keep : {std::vector<size_t>{0}, std::vector<size_t>{}}) {
            CompareHalf("SplitSumLayerNorm", A({{"epsilon", 1e-12}, {"splits", splits}}),
                        {RandomF32({splits, 3, 5, cols}), RandomF32({cols}),
                         RandomF32({3, 5, cols}), RandomF32({cols}), RandomF32({cols})},
                        {3, 5, cols}, half, f32_output ? 1e-4 : tol, keep, f32_output);
          }
        }
      }
      // Without bias, residual and beta.
      CompareHalf("SplitSumLayerNorm", A({{"epsilon", 1e-5}}),
                  {RandomF32({2, 7, cols}), Tensor(), Tensor(), RandomF32({cols}), Tensor()},
                  {7, cols}, half, tol, {0});
    }
  }
}

// Above kMaxSplitRows rows the pair runs as one slice (vm/kernels/split_gemm_rule.h): MatMulSplitK
// writes slice 0 only (slice 1 keeps the NaN it was filled with) and SplitSumLayerNorm reads
// slice 0 only, so the result matches the CPU pair.
TEST(CudaKernelsTest, SplitGemmPairAboveTheRowLimitUsesOneSlice) {
  const int64_t rows = kMaxSplitRows + 60, k = 96, n = 64;
  std::vector<Tensor> in = {RandomF32({rows, k}), RandomF32({k, n}, -0.2f, 0.2f),
                            RandomF32({n}),       RandomF32({rows, n}),
                            RandomF32({n}),       RandomF32({n})};
  std::vector<Tensor> dev;
  for (Tensor& t : in) {
    Tensor h = ToHalf(t, DType::kF16);
    t = FromHalf(h);  // the CPU pair sees the rounded values
    dev.push_back(ToDevice(h));
  }
  KernelRegistry& r = KernelRegistry::Global();
  const Attributes split = A({{"splits", int64_t{2}}});
  const Attributes norm = A({{"epsilon", 1e-5}});
  // CPU pair in f32.
  std::vector<Tensor> cpu_parts = {*Tensor::Empty(DType::kF32, {2, rows, n})};
  std::vector<Tensor> cpu_y = {*Tensor::Empty(DType::kF32, {rows, n})};
  KernelContext cpu_ctx;
  ASSERT_THAT((*r.Create("MatMulSplitK", DeviceType::kCPU, split))
                  ->Run(cpu_ctx, {in[0], in[1]}, absl::MakeSpan(cpu_parts)),
              IsOk());
  ASSERT_THAT((*r.Create("SplitSumLayerNorm", DeviceType::kCPU, norm))
                  ->Run(cpu_ctx, {cpu_parts[0], in[2], in[3], in[4], in[5]}, absl::MakeSpan(cpu_y)),
              IsOk());
  // GPU pair, f16 in and out, f32 partials.
  std::vector<Tensor> parts = {*Tensor::Empty(DType::kF32, {2, rows, n}, Gpu())};
  std::vector<Tensor> y = {*Tensor::Empty(DType::kF16, {rows, n}, Gpu())};
  ASSERT_EQ(cudaMemset(parts[0].raw_data(), 0xff, parts[0].nbytes()), cudaSuccess);  // NaN
  KernelContext gpu_ctx;
  gpu_ctx.device = Device{DeviceType::kCUDA, 0};
  gpu_ctx.allocator = Gpu();
  ASSERT_THAT((*r.Create("MatMulSplitK", DeviceType::kCUDA, split))
                  ->Run(gpu_ctx, {dev[0], dev[1]}, absl::MakeSpan(parts)),
              IsOk());
  ASSERT_THAT((*r.Create("SplitSumLayerNorm", DeviceType::kCUDA, norm))
                  ->Run(gpu_ctx, {parts[0], dev[2], dev[3], dev[4], dev[5]}, absl::MakeSpan(y)),
              IsOk());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const Tensor got = FromHalf(ToHost(y[0]));
  ExpectCloseF32(cpu_y[0], got, 4e-3);
}

// fp16 / bf16 storage: every kernel the precision lowering uses, with bounds of a few units of
// the output's last place (fp16 2^-11, bf16 2^-8) plus fp32-accumulated GEMM rounding.
TEST(CudaKernelsTest, HalfPrecisionKernels) {
  for (auto [half, tol] :
       std::vector<std::pair<DType, double>>{{DType::kF16, 4e-3}, {DType::kBF16, 3e-2}}) {
    CompareHalf("MatMul", {}, {RandomF32({37, 64}), RandomF32({64, 129})}, {37, 129}, half, tol);
    CompareHalf("FusedMatMul",
                A({{"activation", std::string("gelu")}, {"transB", int64_t{1}}, {"alpha", 0.5}}),
                {RandomF32({2, 13, 64}), RandomF32({96, 64}), RandomF32({96}), Tensor()},
                {2, 13, 96}, half, tol);
    CompareHalf("FusedMatMul", A({{"transB", int64_t{1}}}),
                {RandomF32({26, 64}), RandomF32({96, 64}), RandomF32({96}), RandomF32({26, 96})},
                {26, 96}, half, tol);
    // Rows in registers (768, 1000: a partial last vector) and the block kernel (100, 1200).
    for (int64_t cols : {768, 1000, 100, 1200}) {
      CompareHalf("LayerNormalization", A({{"axis", int64_t{-1}}, {"epsilon", 1e-12}}),
                  {RandomF32({3, 5, cols}), RandomF32({cols}), RandomF32({cols})}, {3, 5, cols},
                  half, tol);
      // Half in, f32 out (no rounding of the result: fp32's bound).
      CompareHalf("LayerNormalization", A({{"axis", int64_t{-1}}, {"epsilon", 1e-12}}),
                  {RandomF32({3, 5, cols}), RandomF32({cols}), RandomF32({cols})}, {3, 5, cols},
                  half, 1e-4, {}, /*f32_output=*/true);
    }
    // GELU (tanh form) with bias in cuBLASLt's epilogue.
    CompareHalf("FusedMatMul", A({{"activation", std::string("gelu_tanh")}}),
                {RandomF32({2, 13, 64}), RandomF32({64, 96}), RandomF32({96}), Tensor()},
                {2, 13, 96}, half, tol);
    CompareHalf("Softmax", A({{"axis", int64_t{-1}}}), {RandomF32({4, 3, 128}, -8, 8)}, {4, 3, 128},
                half, tol);
    // Head dim 16 takes the reference kernel, head dim 64 the tensor-core one (one 16-key tile,
    // one partial 32-key tile, several key tiles, a partial last tile, key padding masks that
    // mask whole rows' worth of keys).
    for (int64_t seq : {7, 16, 33, 128, 300}) {
      CompareHalf("Attention", A({{"q_num_heads", int64_t{4}}, {"kv_num_heads", int64_t{4}}}),
                  {RandomF32({2, seq, 64}), RandomF32({2, seq, 64}), RandomF32({2, seq, 64}),
                   RandomF32({2, 1, 1, seq}, -10000, 0)},
                  {2, seq, 64}, half, tol, {3});
      Tensor pad = *Tensor::Empty(DType::kF32, {2, 1, 1, seq});
      for (int64_t i = 0; i < 2 * seq; ++i)
        pad.data<float>()[i] = (i % seq) < seq / 2 + 1 ? 0 : -1e4;
      CompareHalf(
          "Attention", A({{"q_num_heads", int64_t{2}}, {"kv_num_heads", int64_t{2}}}),
          {RandomF32({2, seq, 128}), RandomF32({2, seq, 128}), RandomF32({2, seq, 128}), pad},
          {2, seq, 128}, half, tol, {3});
      // fuse-attention-mask's form: the i64 padding mask with mask_scale / mask_offset.
      Tensor keep = *Tensor::Empty(DType::kI64, {2, 1, 1, seq});
      for (int64_t i = 0; i < 2 * seq; ++i) {
        keep.data<int64_t>()[i] = (i % seq) < seq / 2 + 1 ? 1 : 0;
      }
      CompareHalf(
          "Attention",
          A({{"q_num_heads", int64_t{2}},
             {"kv_num_heads", int64_t{2}},
             {"mask_scale", 1e4},
             {"mask_offset", -1e4}}),
          {RandomF32({2, seq, 128}), RandomF32({2, seq, 128}), RandomF32({2, seq, 128}), keep},
          {2, seq, 128}, half, tol);
      // Packed QKV (pack-qkv's form): one [b, s, (4 + 2 x 2) x 64] tensor as Q, K and V.
      Tensor qkv = RandomF32({2, seq, 512});
      CompareHalf("Attention",
                  A({{"q_num_heads", int64_t{4}}, {"kv_num_heads", int64_t{2}},
                     {"qkv_packed", int64_t{1}}}),
                  {qkv, qkv, qkv, pad}, {2, seq, 256}, half, tol, {3});
      // 4-D, grouped KV heads, bool causal-shaped mask, head dim 64.
      Tensor mask = *Tensor::Empty(DType::kBool, {seq, seq});
      for (int64_t i = 0; i < seq * seq; ++i) mask.data<bool>()[i] = (i % seq) <= (i / seq);
      CompareHalf("Attention", {},
                  {RandomF32({1, 4, seq, 64}), RandomF32({1, 2, seq, 64}),
                   RandomF32({1, 2, seq, 64}), mask},
                  {1, 4, seq, 64}, half, tol);
    }
    // Enough query tiles for the row-parallel kernel (the shapes above take the split-key one
    // from 2 key tiles up): 2 and 4 warps per block.
    for (int64_t batch : {4, 8}) {
      Tensor pad = *Tensor::Empty(DType::kF32, {batch, 1, 1, 256});
      for (int64_t i = 0; i < batch * 256; ++i)
        pad.data<float>()[i] = (i % 256) < 200 + i / 256 ? 0 : -1e4;
      CompareHalf("Attention", A({{"q_num_heads", int64_t{12}}, {"kv_num_heads", int64_t{12}}}),
                  {RandomF32({batch, 256, 768}), RandomF32({batch, 256, 768}),
                   RandomF32({batch, 256, 768}), pad},
                  {batch, 256, 768}, half, tol, {3});
    }
    // BERT-base's heads at batch 1 over 5 and 6 key tiles: the 2-D kernel's single-pass forms
    // (2 query warps x 5 groups at 300, x 6 groups at 340, 3 x 6 at 384), with the float and
    // the folded i64 padding mask.
    for (int64_t seq : {300, 340, 384}) {
      Tensor pad = *Tensor::Empty(DType::kF32, {1, 1, 1, seq});
      Tensor keep = *Tensor::Empty(DType::kI64, {1, 1, 1, seq});
      for (int64_t i = 0; i < seq; ++i) {
        pad.data<float>()[i] = i < seq - 37 ? 0 : -1e4;
        keep.data<int64_t>()[i] = i < seq - 37 ? 1 : 0;
      }
      CompareHalf(
          "Attention", A({{"q_num_heads", int64_t{12}}, {"kv_num_heads", int64_t{12}}}),
          {RandomF32({1, seq, 768}), RandomF32({1, seq, 768}), RandomF32({1, seq, 768}), pad},
          {1, seq, 768}, half, tol, {3});
      CompareHalf(
          "Attention",
          A({{"q_num_heads", int64_t{12}},
             {"kv_num_heads", int64_t{12}},
             {"mask_scale", 1e4},
             {"mask_offset", -1e4}}),
          {RandomF32({1, seq, 768}), RandomF32({1, seq, 768}), RandomF32({1, seq, 768}), keep},
          {1, seq, 768}, half, tol);
    }
    CompareHalf("FusedElementwise",
                A({{"constants", std::vector<double>{}},
                   {"program", std::vector<int64_t>{0, 0, 0, 0, 0,  1, 1, 0, 10, 2, 0, 1,
                                                    0, 3, 2, 0, 10, 4, 2, 3, 2,  0, 4, 0}}}),
                {RandomF32({2, 9, 32}), RandomF32({1, 9, 32}), RandomF32({2, 9, 32})}, {2, 9, 32},
                half, tol);
    for (int64_t cols : {768, 100}) {
      CompareHalf("EmbedLayerNorm", A({{"embeddings", int64_t{3}}, {"epsilon", 1e-12}}),
                  EmbedInputs(cols), {2, 7, cols}, half, tol);
    }
    CompareHalf("Gelu", {}, {RandomF32({2, 300})}, {2, 300}, half, tol);
    CompareHalf("Transpose", A({{"perm", std::vector<int64_t>{0, 2, 1, 3}}}),
                {RandomF32({2, 3, 4, 5})}, {2, 4, 3, 5}, half, 0);
    CompareHalf("Gather", {}, {RandomF32({100, 32}), RandomI64({2, 7}, -100, 99)}, {2, 7, 32}, half,
                0);
    Tensor cond = *Tensor::Empty(DType::kBool, {3, 1});
    for (int i = 0; i < 3; ++i) cond.data<bool>()[i] = i != 1;
    CompareHalf("Where", {}, {cond, RandomF32({3, 4}), RandomF32({4})}, {3, 4}, half, 0);
  }
  // The casts at the edges of a lowered graph.
  for (DType half : {DType::kF16, DType::kBF16}) {
    Tensor x = FromHalf(ToHalf(RandomF32({5, 6}, -100, 100), half));  // exactly representable
    const int64_t to = DTypeToOnnx(half);
    KernelRegistry& r = KernelRegistry::Global();
    auto to_half = r.Create("Cast", DeviceType::kCUDA, A({{"to", to}}));
    auto to_f32 = r.Create("Cast", DeviceType::kCUDA, A({{"to", int64_t{1}}}));
    ASSERT_THAT(to_half.status(), IsOk());
    ASSERT_THAT(to_f32.status(), IsOk());
    KernelContext ctx;
    ctx.device = Device{DeviceType::kCUDA, 0};
    ctx.allocator = Gpu();
    std::vector<Tensor> h = {*Tensor::Empty(half, {5, 6}, Gpu())};
    std::vector<Tensor> back = {*Tensor::Empty(DType::kF32, {5, 6}, Gpu())};
    ASSERT_THAT((*to_half)->Run(ctx, {ToDevice(x)}, absl::MakeSpan(h)), IsOk());
    ASSERT_THAT((*to_f32)->Run(ctx, h, absl::MakeSpan(back)), IsOk());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    Tensor got = ToHost(back[0]);
    for (int64_t i = 0; i < 30; ++i) EXPECT_EQ(got.data<float>()[i], x.data<float>()[i]);
  }
}

// A captured graph's copies to the host can be pointed at other buffers per launch (the VM
// hands graph results to callers that way), except a copy whose buffer a later copy of the same
// graph uploads again, which would then upload stale bytes.
TEST(CudaDeviceApiTest, GraphRedirectsHostCopiesThatNothingUploadsAgain) {
  DeviceApi* api = KernelRegistry::Global().GetDeviceApi(DeviceType::kCUDA);
  ASSERT_NE(api, nullptr);
  const Device gpu{DeviceType::kCUDA, 0};
  absl::StatusOr<void*> stream = api->CreateStream(0);
  ASSERT_THAT(stream.status(), IsOk());
  absl::StatusOr<std::unique_ptr<Allocator>> arena = api->NewHostArena();
  ASSERT_THAT(arena.status(), IsOk());
  constexpr size_t kBytes = 1024;
  std::vector<unsigned char> pattern(3 * kBytes);
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<unsigned char>(i * 7 + 3);
  void* dev_bytes = nullptr;
  ASSERT_EQ(cudaMalloc(&dev_bytes, 3 * kBytes), cudaSuccess);
  char* dev = static_cast<char*>(dev_bytes);
  ASSERT_EQ(cudaMemcpy(dev, pattern.data(), 3 * kBytes, cudaMemcpyHostToDevice), cudaSuccess);
  void* out = *(*arena)->Allocate(kBytes);   // read by the caller only
  void* back = *(*arena)->Allocate(kBytes);  // uploaded again by the graph
  ASSERT_THAT(api->BeginCapture(0, *stream), IsOk());
  ASSERT_THAT(api->Copy(out, kCpu, dev, gpu, kBytes, *stream), IsOk());
  ASSERT_THAT(api->Copy(back, kCpu, dev + kBytes, gpu, kBytes, *stream), IsOk());
  ASSERT_THAT(api->Copy(dev + 2 * kBytes, gpu, back, kCpu, kBytes, *stream), IsOk());
  absl::StatusOr<std::unique_ptr<DeviceGraph>> graph = api->EndCapture(*stream);
  ASSERT_THAT(graph.status(), IsOk());
  const int index = (*graph)->FindHostCopy(out, kBytes);
  EXPECT_GE(index, 0);
  EXPECT_EQ((*graph)->FindHostCopy(back, kBytes), -1);
  EXPECT_EQ((*graph)->FindHostCopy(out, kBytes / 2), -1);  // not the whole copy
  absl::StatusOr<std::shared_ptr<Storage>> fresh = api->PinnedHostStorage(kBytes);
  ASSERT_THAT(fresh.status(), IsOk());
  std::memset((*fresh)->data(), 0, kBytes);
  std::memset(out, 0, kBytes);
  ASSERT_THAT((*graph)->SetHostCopyDestination(index, (*fresh)->data()), IsOk());
  ASSERT_THAT((*graph)->Launch(*stream), IsOk());
  ASSERT_THAT(api->Synchronize(*stream), IsOk());
  EXPECT_EQ(std::memcmp((*fresh)->data(), pattern.data(), kBytes), 0);
  EXPECT_EQ(static_cast<unsigned char*>(out)[0], 0);  // the captured buffer was not written
  std::vector<unsigned char> uploaded(kBytes);
  ASSERT_EQ(cudaMemcpy(uploaded.data(), dev + 2 * kBytes, kBytes, cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_EQ(std::memcmp(uploaded.data(), pattern.data() + kBytes, kBytes), 0);
  graph->reset();
  cudaFree(dev);
  api->DestroyStream(*stream);
}

}  // namespace
}  // namespace nimble::vm
