// The CUDA LSTM (lstm.cc, lstm.cu) against the CPU LSTM kernel on random inputs (label `cuda`:
// without a GPU the binary exits 77 = skipped). Every case draws fresh inputs, poisons the GPU
// outputs with NaN and compares each requested output with
// max |cuda - cpu| <= 1e-4 * max(1, max |cpu|).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vm/kernels/cuda/cuda_device.h"
#include "vm/kernels/cuda/cuda_test_util.h"
#include "vm/kernels/kernel.h"

namespace nimble::vm {
namespace {

using namespace ::nimble::vm::cuda_testing;  // NOLINT
using ::nimble::testing::IsOk;
using ::nimble::testing::StatusIs;
using ::testing::HasSubstr;

std::mt19937& Rng() {
  static std::mt19937 rng(4321);
  return rng;
}

Tensor RandomF32(const Shape& shape, float bound) {
  Tensor t = *Tensor::Empty(DType::kF32, shape);
  std::uniform_real_distribution<float> d(-bound, bound);
  for (int64_t i = 0; i < t.num_elements(); ++i) t.data<float>()[i] = d(Rng());
  return t;
}

struct LstmCase {
  std::string name;
  int64_t seq = 1, batch = 1, input = 16, hidden = 16;
  std::string direction = "forward";
  int64_t layout = 0;
  bool bias = true;
  std::vector<int64_t> lens;  // empty: no sequence_lens
  DType lens_dtype = DType::kI32;
  bool initial = false, peepholes = false;
  bool outputs[3] = {true, true, true};  // Y, Y_h, Y_c
};

int Dirs(const LstmCase& c) { return c.direction == "bidirectional" ? 2 : 1; }

Shape StateShape(const LstmCase& c) {
  return c.layout == 0 ? Shape{Dirs(c), c.batch, c.hidden} : Shape{c.batch, Dirs(c), c.hidden};
}

Shape OutShape(const LstmCase& c, int i) {
  if (i > 0) return StateShape(c);
  return c.layout == 0 ? Shape{c.seq, Dirs(c), c.batch, c.hidden}
                       : Shape{c.batch, c.seq, Dirs(c), c.hidden};
}

// X, W, R, B, sequence_lens, initial_h, initial_c, P (absent ones undefined, trailing dropped).
std::vector<Tensor> Inputs(const LstmCase& c) {
  const int64_t dirs = Dirs(c), h = c.hidden;
  // PyTorch's initialisation scale, so gates are neither saturated nor all linear.
  const float w = 1.0f / std::sqrt(static_cast<float>(h));
  std::vector<Tensor> in(8);
  in[0] = RandomF32(c.layout == 0 ? Shape{c.seq, c.batch, c.input} : Shape{c.batch, c.seq, c.input},
                    1.0f);
  in[1] = RandomF32({dirs, 4 * h, c.input}, w);
  in[2] = RandomF32({dirs, 4 * h, h}, w);
  if (c.bias) in[3] = RandomF32({dirs, 8 * h}, w);
  if (!c.lens.empty()) {
    Tensor lens = *Tensor::Empty(c.lens_dtype, {c.batch});
    for (int64_t b = 0; b < c.batch; ++b) {
      if (c.lens_dtype == DType::kI64) {
        lens.data<int64_t>()[b] = c.lens[b];
      } else {
        lens.data<int32_t>()[b] = static_cast<int32_t>(c.lens[b]);
      }
    }
    in[4] = lens;
  }
  if (c.initial) {
    in[5] = RandomF32(StateShape(c), 1.0f);
    in[6] = RandomF32(StateShape(c), 1.0f);
  }
  if (c.peepholes) in[7] = RandomF32({dirs, 3 * h}, w);
  while (!in.back().defined()) in.pop_back();
  return in;
}

Attributes AttributesOf(const LstmCase& c) {
  return A({{"direction", c.direction}, {"hidden_size", c.hidden}, {"layout", c.layout}});
}

// max |got - want| (NaN counts as infinite) and max |want|.
std::pair<double, double> MaxDiff(const Tensor& want, const Tensor& got) {
  double max_diff = 0, max_ref = 0;
  for (int64_t i = 0; i < want.num_elements(); ++i) {
    const double w = want.data<float>()[i], g = got.data<float>()[i];
    max_ref = std::max(max_ref, std::abs(w));
    max_diff = std::max(max_diff, std::isnan(g) ? INFINITY : std::abs(w - g));
  }
  return {max_diff, max_ref};
}

void Compare(const LstmCase& c) {
  SCOPED_TRACE(c.name);
  KernelRegistry& r = KernelRegistry::Global();
  const Attributes attrs = AttributesOf(c);
  auto cpu = r.Create("LSTM", DeviceType::kCPU, attrs);
  auto gpu = r.Create("LSTM", DeviceType::kCUDA, attrs);
  ASSERT_THAT(cpu.status(), IsOk());
  ASSERT_THAT(gpu.status(), IsOk());
  const std::vector<Tensor> inputs = Inputs(c);
  std::vector<Tensor> cpu_out(3), gpu_out(3);
  for (int i = 0; i < 3; ++i) {
    if (!c.outputs[i]) continue;
    cpu_out[i] = *Tensor::Empty(DType::kF32, OutShape(c, i));
    gpu_out[i] = *Tensor::Empty(DType::kF32, OutShape(c, i), Gpu());
    ASSERT_EQ(cudaMemset(gpu_out[i].raw_data(), 0xff, gpu_out[i].nbytes()), cudaSuccess);  // NaN
  }
  KernelContext cpu_ctx;
  ASSERT_THAT((*cpu)->Run(cpu_ctx, inputs, absl::MakeSpan(cpu_out)), IsOk());
  std::vector<Tensor> dev_in;
  for (const Tensor& t : inputs) dev_in.push_back(ToDevice(t));
  KernelContext gpu_ctx;
  gpu_ctx.device = Device{DeviceType::kCUDA, 0};
  gpu_ctx.allocator = Gpu();
  ASSERT_THAT((*gpu)->Run(gpu_ctx, dev_in, absl::MakeSpan(gpu_out)), IsOk());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const char* names[3] = {"Y", "Y_h", "Y_c"};
  for (int i = 0; i < 3; ++i) {
    if (!c.outputs[i]) continue;
    const auto [diff, ref] = MaxDiff(cpu_out[i], ToHost(gpu_out[i]));
    EXPECT_LE(diff, 1e-4 * std::max(1.0, ref)) << names[i] << ", max |ref| " << ref;
    std::printf("%-44s %-4s max diff %.3g (max |ref| %.3g)\n", c.name.c_str(), names[i], diff, ref);
  }
}

TEST(CudaLstmTest, Hidden650Batch1) {
  for (int64_t seq : {1, 16, 128}) {
    LstmCase c;
    c.name = "h650 b1 seq " + std::to_string(seq);
    c.seq = seq, c.input = 650, c.hidden = 650;
    Compare(c);
  }
}

TEST(CudaLstmTest, SequenceLengths) {
  LstmCase c;
  c.seq = 7, c.batch = 3, c.input = 32, c.hidden = 64, c.lens = {5, 2, 7};
  for (const char* direction : {"forward", "reverse", "bidirectional"}) {
    c.direction = direction;
    c.name = std::string("h64 b3 lens 5,2,7 ") + direction;
    Compare(c);
  }
  c.lens = {0, 7, 3};  // a row with no steps keeps its initial state
  c.lens_dtype = DType::kI64;
  c.initial = true;
  c.name = "h64 b3 lens 0,7,3 i64 bidirectional initial";
  Compare(c);
}

// A length past the sequence (or negative) runs clamped and is reported in the caller's error
// record, which the VM turns into the call's error (the CPU kernel rejects it up front).
TEST(CudaLstmTest, SequenceLengthsOutOfRangeAreReported) {
  DeviceApi* api = KernelRegistry::Global().GetDeviceApi(DeviceType::kCUDA);
  ASSERT_NE(api, nullptr);
  absl::StatusOr<DeviceErrorRecord*> record = api->NewErrorRecord(0);
  ASSERT_THAT(record.status(), IsOk());
  LstmCase c;
  c.seq = 7, c.batch = 3, c.input = 32, c.hidden = 64;
  const Device gpu{DeviceType::kCUDA, 0};
  for (const std::vector<int64_t>& lens :
       {std::vector<int64_t>{5, 9, 7}, std::vector<int64_t>{-1, 2, 7},
        std::vector<int64_t>{5, 2, 7}}) {
    c.lens = lens;
    auto kernel = KernelRegistry::Global().Create("LSTM", DeviceType::kCUDA, AttributesOf(c));
    ASSERT_THAT(kernel.status(), IsOk());
    std::vector<Tensor> dev_in;
    for (const Tensor& t : Inputs(c)) dev_in.push_back(ToDevice(t));
    std::vector<Tensor> out(3);
    for (int i = 0; i < 3; ++i) out[i] = *Tensor::Empty(DType::kF32, OutShape(c, i), Gpu());
    KernelContext ctx;
    ctx.device = gpu;
    ctx.allocator = Gpu();
    ctx.device_errors = *record;
    ASSERT_THAT((*kernel)->Run(ctx, dev_in, absl::MakeSpan(out)), IsOk());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const absl::Status reported = TakeDeviceError(**record, gpu);
    if (std::all_of(lens.begin(), lens.end(), [&](int64_t l) { return l >= 0 && l <= c.seq; })) {
      EXPECT_THAT(reported, IsOk());
    } else {
      EXPECT_EQ(reported.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(std::string(reported.message()),
                  ::testing::HasSubstr(absl::StrCat("LSTM on cuda:0: sequence_lens value ",
                                                    lens[0] < 0 ? lens[0] : lens[1],
                                                    " is outside [0, 7]")));
    }
  }
  api->FreeErrorRecord(*record);
}

TEST(CudaLstmTest, Bidirectional) {
  LstmCase c;
  c.name = "h650 b2 seq 16 bidirectional";
  c.seq = 16, c.batch = 2, c.input = 650, c.hidden = 650, c.direction = "bidirectional";
  Compare(c);
}

TEST(CudaLstmTest, InitialStatesAndPeepholes) {
  LstmCase c;
  c.seq = 9, c.batch = 4, c.input = 24, c.hidden = 37;  // H not a multiple of 4
  c.initial = true;
  c.name = "h37 b4 initial";
  Compare(c);
  c.peepholes = true;
  c.name = "h37 b4 initial peepholes";
  Compare(c);
  c.direction = "reverse", c.bias = false;
  c.name = "h37 b4 initial peepholes reverse no bias";
  Compare(c);
}

TEST(CudaLstmTest, Layout1) {
  LstmCase c;
  c.seq = 9, c.batch = 4, c.input = 13, c.hidden = 37, c.layout = 1;
  c.direction = "bidirectional", c.lens = {9, 3, 1, 6}, c.initial = true, c.peepholes = true;
  c.name = "layout 1 h37 b4 bidirectional lens initial peep";
  Compare(c);
}

TEST(CudaLstmTest, OutputSubsets) {
  LstmCase c;
  c.seq = 5, c.batch = 2, c.input = 8, c.hidden = 16;
  c.outputs[0] = false;
  c.name = "Y_h and Y_c only";
  Compare(c);
  c.outputs[0] = true, c.outputs[1] = false, c.outputs[2] = false;
  c.name = "Y only";
  Compare(c);
}

// R does not fit in the shared memory of one block per SM: read from global memory.
TEST(CudaLstmTest, LargeHiddenReadsRFromGlobalMemory) {
  LstmCase c;
  c.name = "h2048 b2 seq 4 initial peepholes";
  c.seq = 4, c.batch = 2, c.input = 64, c.hidden = 2048, c.initial = true, c.peepholes = true;
  Compare(c);
}

// The VM captures bucketed variants into CUDA graphs: the GEMM, the scratch allocations and the
// cooperative launch must all be capturable, and a replay must equal the eager run bitwise.
TEST(CudaLstmTest, CapturesIntoACudaGraph) {
  LstmCase c;
  c.seq = 16, c.batch = 1, c.input = 650, c.hidden = 650;
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  NIMBLE_ASSERT_OK_AND_ASSIGN(cuda::DeviceAllocator * pool, cuda_device::DevicePool(0));
  cuda_device::CudaAllocator allocator(pool, 0, stream);
  NIMBLE_ASSERT_OK_AND_ASSIGN(cuda::GemmRunner * gemm, cuda_device::Gemm(0));
  ASSERT_THAT(gemm->ReserveWorkspace(stream), IsOk());
  auto kernel = KernelRegistry::Global().Create("LSTM", DeviceType::kCUDA, AttributesOf(c));
  ASSERT_THAT(kernel.status(), IsOk());
  std::vector<Tensor> in;
  for (const Tensor& t : Inputs(c)) in.push_back(ToDevice(t, &allocator));
  std::vector<Tensor> eager, graphed;
  for (int i = 0; i < 3; ++i) {
    eager.push_back(*Tensor::Empty(DType::kF32, OutShape(c, i), &allocator));
    graphed.push_back(*Tensor::Empty(DType::kF32, OutShape(c, i), &allocator));
    ASSERT_EQ(cudaMemset(graphed[i].raw_data(), 0xff, graphed[i].nbytes()), cudaSuccess);
  }
  KernelContext ctx;
  ctx.device = Device{DeviceType::kCUDA, 0};
  ctx.allocator = &allocator;
  ctx.stream = stream;
  ASSERT_THAT((*kernel)->Run(ctx, in, absl::MakeSpan(eager)), IsOk());
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);

  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), cudaSuccess);
  const absl::Status run = (*kernel)->Run(ctx, in, absl::MakeSpan(graphed));
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_THAT(run, IsOk());
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int replay = 0; replay < 2; ++replay) {
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  }
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  for (int i = 0; i < 3; ++i) {
    const Tensor want = ToHost(eager[i]), got = ToHost(graphed[i]);
    EXPECT_EQ(std::memcmp(want.raw_data(), got.raw_data(), want.nbytes()), 0) << "output " << i;
  }
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  in.clear(), eager.clear(), graphed.clear();  // freed on `stream` before it goes
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

TEST(CudaLstmTest, BadShapesAreInvalidArgument) {
  LstmCase c;
  c.seq = 3, c.hidden = 8;
  std::vector<Tensor> in;
  for (const Tensor& t : Inputs(c)) in.push_back(ToDevice(t));
  in[2] = ToDevice(RandomF32({1, 32, 7}, 1.0f));  // R of hidden 7
  auto kernel = KernelRegistry::Global().Create("LSTM", DeviceType::kCUDA, AttributesOf(c));
  ASSERT_THAT(kernel.status(), IsOk());
  std::vector<Tensor> out = {*Tensor::Empty(DType::kF32, OutShape(c, 0), Gpu())};
  KernelContext ctx;
  ctx.device = Device{DeviceType::kCUDA, 0};
  ctx.allocator = Gpu();
  EXPECT_THAT((*kernel)->Run(ctx, in, absl::MakeSpan(out)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("do not fit")));
}

// What the compiler's placement asks: nodes the CUDA kernel cannot run stay on the host.
TEST(CudaLstmTest, TraitsRefuseWhatOnlyTheCpuKernelDoes) {
  const KernelTraits traits = KernelRegistry::Global().Traits("LSTM", DeviceType::kCUDA);
  ASSERT_TRUE(traits.supports);
  const DType f32 = DType::kF32, none = DType::kInvalid;
  const std::vector<DType> in = {f32, f32, f32, f32, DType::kI32, f32, f32, f32};
  const std::vector<DType> out = {f32, f32, f32};
  EXPECT_TRUE(traits.supports(in, out, {}));
  EXPECT_TRUE(traits.supports({f32, f32, f32}, {none, f32}, {}));
  EXPECT_TRUE(traits.supports({f32, f32, f32, none, DType::kI64}, out, {}));
  EXPECT_TRUE(
      traits.supports(in, out,
                      A({{"direction", std::string("bidirectional")},
                         {"layout", int64_t{1}},
                         {"activations", std::vector<std::string>{"Sigmoid", "Tanh", "Tanh"}}})));
  EXPECT_FALSE(traits.supports(in, out, A({{"clip", 3.0}})));
  EXPECT_FALSE(traits.supports(in, out, A({{"input_forget", int64_t{1}}})));
  EXPECT_FALSE(traits.supports(
      in, out, A({{"activations", std::vector<std::string>{"Sigmoid", "Tanh", "Relu"}}})));
  EXPECT_FALSE(traits.supports({DType::kF16, DType::kF16, DType::kF16}, {DType::kF16}, {}));
  EXPECT_FALSE(traits.supports({f32, f32, f32}, {DType::kF64}, {}));
  EXPECT_FALSE(traits.supports({f32, f32, f32, f32, DType::kF32}, out, {}));  // float lengths
  EXPECT_THAT(
      KernelRegistry::Global().Create("LSTM", DeviceType::kCUDA, A({{"clip", 3.0}})).status(),
      StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("clip")));
}

}  // namespace
}  // namespace nimble::vm
