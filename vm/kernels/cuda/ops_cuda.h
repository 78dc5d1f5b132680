// Launchers of the CUDA kernels behind the VM's CUDA kernel adapters (ops.cc). C++17 and free of
// vm/ headers so that nvcc compiles ops.cu; every launcher is asynchronous on `stream` and
// returns the launch error (errors of the execution surface at the next synchronisation).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace nimble::vm::cuda_ops {

inline constexpr int kMaxRank = 8;
inline constexpr int kMaxProgramInputs = 8;
inline constexpr int kMaxProgramInstructions = 96;
inline constexpr int kMaxProgramConstants = 32;
inline constexpr int kMaxProgramSlots = 32;

// An output of `rank` dims; per input, element strides over the output's dims (0 broadcasts).
struct BroadcastShape {
  int rank = 0;
  int64_t dims[kMaxRank] = {};
  int64_t strides[kMaxProgramInputs][kMaxRank] = {};
};

// The FusedElementwise program (vm/kernels/fused_elementwise_program.h), narrowed to bytes.
struct Program {
  int num_instructions = 0;
  int num_inputs = 0;
  int num_outputs = 0;
  int8_t code[kMaxProgramInstructions][4] = {};
  float constants[kMaxProgramConstants] = {};
};

// Storage type of the floating-point tensors of a launch; arithmetic is fp32 throughout (half
// types are converted on load and rounded once on store).
enum class FloatType { kF32 = 0, kF16, kBF16 };

// vm::DeviceErrorRecord (vm/kernels/kernel.h), seen from the device: bad input a kernel finds
// is written here (plain stores, page-locked host memory) and the kernel keeps a defined result.
struct ErrorRecord {
  int32_t code;
  int32_t unused;
  int64_t value;
  int64_t bound;
};
inline constexpr int32_t kErrorGatherIndex = 1;
inline constexpr int32_t kErrorEmbeddingIndex = 2;
inline constexpr int32_t kErrorSequenceLength = 3;

struct ProgramArgs {
  const void* inputs[kMaxProgramInputs] = {};
  void* outputs[kMaxProgramInputs] = {};
};

// Every input and output of the program has storage type `type`.
cudaError_t RunProgram(const Program& program, const ProgramArgs& args, const BroadcastShape& shape,
                       int64_t count, FloatType type, cudaStream_t stream);

// Activations of FusedMatMul's epilogue (the CPU kernel's order: act(x) then + residual).
enum class Act { kNone = 0, kRelu, kGelu, kGeluTanh, kTanh, kSigmoid };
// x[i] = act(x[i] + (bias ? bias[i % n] : 0)) + (residual ? residual[i] : 0).
cudaError_t BiasActResidual(void* x, const void* bias, const void* residual, int64_t count,
                            int64_t n, Act act, FloatType type, cudaStream_t stream);

// out[o, j, i] = data[o, index[j], i] (outer x num_indices x inner); element_bytes 1/2/4/8.
// Negative indices count from the end; out-of-range ones give zeros and are reported to
// `errors` when it is not null.
cudaError_t Gather(const void* data, const void* indices, bool indices_i64, void* out,
                   int64_t outer, int64_t axis_dim, int64_t num_indices, int64_t inner,
                   int element_bytes, ErrorRecord* errors, cudaStream_t stream);

// EmbedLayerNorm: y[r, :] = LayerNorm(sum_k table_k[ids_k[r'], :]) * gamma + beta for each of
// the `rows` output rows, where r' is r's position in ids_k by `id_strides[k]` over the output's
// leading dims `dims` (0 broadcasts); null ids_k: the positions along the last of them (rank >=
// 1). Tables [vocab_k, cols] and y share the float type; sums and statistics in fp32. Negative
// ids count from the end; out-of-range ones add zeros and are reported to `errors` when it is
// not null.
inline constexpr int kMaxEmbeddings = 4;
struct EmbedArgs {
  int count = 0;
  const void* tables[kMaxEmbeddings] = {};
  int64_t vocab[kMaxEmbeddings] = {};
  const void* ids[kMaxEmbeddings] = {};
  bool ids_i64[kMaxEmbeddings] = {};
  int rank = 0;  // of the output's leading dims
  int64_t dims[kMaxRank] = {};
  int64_t id_strides[kMaxEmbeddings][kMaxRank] = {};
};
cudaError_t EmbedLayerNorm(const EmbedArgs& args, const void* gamma, const void* beta, void* y,
                           int64_t rows, int64_t cols, float epsilon, FloatType type,
                           ErrorRecord* errors, cudaStream_t stream);

// dtype codes for Cast: the vm::DType values of f32, f16, bf16, f64, i8, i16, i32, i64, u8, bool.
cudaError_t Cast(const void* in, int in_dtype, void* out, int out_dtype, int64_t count,
                 cudaStream_t stream);
bool CastSupported(int dtype);

// out = permutation of in: out dims `dims`, in strides permuted into `in_strides` (elements).
cudaError_t Transpose(const void* in, void* out, int rank, const int64_t* dims,
                      const int64_t* in_strides, int64_t count, int element_bytes,
                      cudaStream_t stream);

// Per row of `cols`: y = (x - mean) / sqrt(var + eps) * gamma + beta (gamma/beta may be null).
// x, gamma and beta share storage type `type`, y is of `out_type`: `type`, or f32 (a half
// LayerNorm whose result leaves the model as f32: lower_precision's rule); statistics in fp32.
cudaError_t LayerNorm(const void* x, const void* gamma, const void* beta, void* y, int64_t rows,
                      int64_t cols, float epsilon, FloatType type, FloatType out_type,
                      cudaStream_t stream);

// The end of a GEMM whose K was split into `splits` slices (partial products of parts_type, f32
// or `type`, slice s at parts + s * part_stride, each rows x cols): per row, y = LayerNorm(sum_s
// parts[s] + bias + residual) * gamma + beta, sums and statistics in fp32. bias (cols), residual
// (rows x cols), gamma and beta are of `type` (f16 or bf16; any may be null), y of `type` or
// f32. A warp a row when cols is a multiple of 8 up to 1024, splits is 1-4 (f32 partials: also
// 6 or 8) and every pointer and slice is 16-byte aligned; a block a row otherwise.
inline constexpr int kMaxSplitSumParts = 8;
cudaError_t SplitSumLayerNorm(const void* parts, FloatType parts_type, int splits,
                              int64_t part_stride, const void* bias, const void* residual,
                              const void* gamma, const void* beta, void* y, int64_t rows,
                              int64_t cols, float epsilon, FloatType type, FloatType out_type,
                              cudaStream_t stream);

// Softmax over `r` elements of stride `inner` for each (outer, inner): ONNX Softmax (opset 13).
cudaError_t Softmax(const void* x, void* y, int64_t outer, int64_t r, int64_t inner, bool log,
                    FloatType type, cudaStream_t stream);

// Scaled dot-product attention; q/k/v/y addressed through element strides (batch, head, seq),
// the head dim contiguous. mask: null, f32 additive or bool (false -> mask_fill), indexed with
// strides (0 broadcasts) over (batch, head, query, key); keys >= mask_keys are masked (-inf).
// q, k, v and y have storage type `type`; an additive mask is f32 or `mask_type`.
struct AttentionArgs {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* y = nullptr;
  FloatType type = FloatType::kF32;
  const void* mask = nullptr;
  bool mask_bool = false;
  FloatType mask_type = FloatType::kF32;
  float mask_fill = -__builtin_huge_valf();
  // A numeric mask adds mask_offset + mask_scale * mask; mask_int_bytes 8 / 4: it is i64 / i32
  // (mask_type is then ignored).
  float mask_scale = 1.0f, mask_offset = 0.0f;
  int mask_int_bytes = 0;
  int64_t mask_strides[4] = {};
  int64_t mask_keys = 0;
  int64_t batch = 0, q_heads = 0, kv_heads = 0, q_seq = 0, kv_seq = 0, head = 0, v_head = 0;
  int64_t q_strides[3] = {}, k_strides[3] = {}, v_strides[3] = {}, y_strides[3] = {};
  float scale = 1.0f;
  bool causal = false;
};
cudaError_t Attention(const AttentionArgs& args, cudaStream_t stream);

// out = cond ? x : y, all broadcast into `shape` (inputs 0, 1, 2 = cond, x, y); 2- or 4-byte x/y.
cudaError_t Where(const bool* cond, const void* x, const void* y, void* out,
                  const BroadcastShape& shape, int64_t count, int element_bytes,
                  cudaStream_t stream);

// out[i] = !in[i] (ONNX Not).
cudaError_t LogicalNot(const bool* in, bool* out, int64_t count, cudaStream_t stream);

// Fills out[i] = start + i * delta (f32 or i64).
cudaError_t RangeI64(int64_t* out, int64_t start, int64_t delta, int64_t count,
                     cudaStream_t stream);

}  // namespace nimble::vm::cuda_ops
