// Precision lowering for the CUDA device (CompileOptions::precision, nimblec --precision).
//
// fp16 / bf16: the float32 activations of the compute that the device has kernels for become
// half-precision tensors; weights are converted once, at compile time (new constants); model
// inputs and outputs keep their ONNX dtypes, with Cast nodes at the edges (placed on the
// device like any other node; an output's Cast right after what it casts, so the result can
// leave for the host while the rest computes). A LayerNorm whose result is a model output
// writes it as f32 itself where the device's kernel can (no Cast between it and the host). Kernels
// compute in fp32 internally (GEMMs accumulate in fp32, LayerNorm / Softmax / attention statistics
// in fp32); only storage is halved.
//
// Which nodes are lowered, in topological order: GEMMs (MatMul / FusedMatMul / Gemm),
// Attention, LayerNormalization, EmbedLayerNorm and Gathers of float constants (embeddings)
// start half regions; any other node with a half input joins when the device's kernel accepts the
// lowered dtypes; views (Reshape, ...) follow their data. Everything else reads float32
// through a Cast. Attention masks keep their dtype (an additive f32 mask of -3.4e38 would
// round to -inf in fp16, and a mask chain computed in fp16 can produce 0 * -inf = NaN).
//
//   before:  %y = FusedMatMul(%x: f32, %w: f32 const)      %z = LayerNorm(%y, %g, %b) -> out
//   after:   %xh = Cast<to=f16>(%x)   %y = FusedMatMul(%xh, %w_half)   %z = LayerNorm(%y, %g_half,
//            %b_half): f16   %out = Cast<to=f32>(%z)
//
// GELU: a half GEMM's erf-GELU epilogue becomes the tanh form (`tanh_gelu`, the default), which
// cuBLASLt applies in the GEMM's epilogue instead of a separate kernel. The two differ by at most
// 4.7e-4 (at x = -2.70), below fp16's rounding of the activations around it; CompileOptions::
// exact_gelu (nimblec --exact-gelu) keeps erf.
//
// tf32: types stay f32; GEMM nodes get the kernel attribute precision="tf32" (TF32 tensor-core
// multiplies, fp32 storage and accumulation).
#pragma once

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "compiler/ir/graph.h"
#include "vm/runtime/device.h"

namespace nimble::compiler {

enum class Precision { kF32, kTF32, kF16, kBF16 };

// "fp32", "tf32", "fp16", "bf16".
absl::StatusOr<Precision> ParsePrecision(absl::string_view name);
const char* PrecisionName(Precision precision);

// Lowers the main graph for kernels of `device` (a GPU type). Returns the number of nodes
// lowered (tf32: GEMMs marked). kInvalidArgument for fp16/bf16/tf32 on the CPU.
// half_outputs (CompileOptions::half_outputs, nimblec --half-outputs): float32 model outputs
// computed in half precision are returned in the half type, with no Cast back to f32: half the
// bytes to copy to the host, and the executable's signature says f16 / bf16 for them (as an ONNX
// model converted to float16 without keeping its I/O types would). Outputs computed in f32
// keep their dtype.
absl::StatusOr<int> LowerPrecision(Module& module, Precision precision, vm::DeviceType device,
                                   bool tanh_gelu = true, bool half_outputs = false);

}  // namespace nimble::compiler
