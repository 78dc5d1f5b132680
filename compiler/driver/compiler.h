// The compilation pipeline, as one readable recipe (compiler.cc): ONNX import, type inference,
// constant folding, re-inference, dead-code elimination, lowering to VM code with memory
// planning, and verification of the executable. The IR can be dumped after any pass.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "compiler/codegen/vm_codegen.h"
#include "compiler/ir/graph.h"
#include "compiler/transforms/lower_precision.h"
#include "vm/executable.h"

namespace nimble::compiler {

inline constexpr char kCompilerVersion[] = "nimble-compiler 0.2.0";

struct CompileOptions {
  // Pass names (or "all") after which the IR is handed to `dump`.
  std::set<std::string> dump_ir_after;
  std::function<void(const std::string& pass, const std::string& ir)> dump;
  // Check IR invariants between passes (always on in debug builds).
  bool verify_ir = true;
  // Called as each pass starts, for progress display.
  std::function<void(const std::string& pass)> on_pass;
  // Shape buckets: symbol -> sizes. For every combination of sizes (at most
  // kMaxSpecializedVariants) a variant with those dims folded to constants is compiled —
  // static shapes, a static memory plan, shape-specialized kernels — beside the generic
  // symbolic variant; the VM's dispatcher picks the specialized one for calls of exactly
  // those dims (the server pads requests to bucket sizes) and the generic one otherwise.
  std::map<std::string, std::vector<int64_t>> buckets;
  // Optimisation passes to skip (cse, fuse-*), for measuring what each is worth. Required
  // passes cannot be disabled.
  std::set<std::string> disabled_passes;
  // Device target (EmitOptions::device): vm::kCpu, or cuda:N to place compute on that GPU.
  vm::Device device = vm::kCpu;
  // Storage / arithmetic precision of the device's compute (lower_precision.h): fp32, tf32
  // (GEMMs on TF32 tensor cores), fp16 / bf16 (half activations and weights, fp32
  // accumulation; model inputs and outputs keep their dtypes). Not fp32 only with a GPU device.
  Precision precision = Precision::kF32;
  // fp16 / bf16 only: keep erf GELU in GEMM epilogues rather than cuBLASLt's tanh form
  // (lower_precision.h).
  bool exact_gelu = false;
  // fp16 / bf16 only: float32 outputs computed in half precision are returned in the half type
  // instead of being cast back to f32 (lower_precision.h): half the bytes to the host.
  bool half_outputs = false;
  // Symbol values at which the report evaluates the memory plan (e.g. batch=1, seq=128).
  std::map<std::string, int64_t> report_at;
};

inline constexpr int kMaxSpecializedVariants = 64;

struct PassTiming {
  std::string pass;
  double milliseconds = 0;
};

struct CompileReport {
  std::vector<PassTiming> timings;
  int num_variants = 0;
  int folded_nodes = 0;
  int removed_nodes = 0;
  int cse_merged = 0;
  int fused_patterns = 0;     // GELU and LayerNorm recognised
  int fused_embeddings = 0;   // embedding lookups + sum + LayerNorm become one EmbedLayerNorm
  int fused_matmuls = 0;      // MatMuls with epilogues
  int fused_attention = 0;    // attention blocks become one Attention node
  int packed_qkv = 0;         // attention blocks whose Q/K/V projections became one GEMM
  int fused_elementwise = 0;  // FusedElementwise kernels formed
  int fused_attention_masks = 0;  // elementwise masks of integer masks folded into Attention
  int fused_stacked_lstms = 0;    // pairs of stacked LSTM layers become one StackedLSTM (CPU)
  int lowered_precision = 0;  // nodes lowered to fp16/bf16 (tf32: GEMMs marked)
  int split_gemm_layernorms = 0;  // half GEMM + LayerNorm pairs split over K (GPU, static M)
  CodegenReport codegen;
  std::string arena_bytes;         // symbolic, printed
  std::string intermediate_bytes;  // symbolic, printed
  // The two at CompileOptions::report_at (-1 when a symbol there is missing).
  int64_t arena_bytes_at = -1;
  int64_t intermediate_bytes_at = -1;
};

// Names of the passes in pipeline order (for --dump-ir-after validation and help).
const std::vector<std::string>& PassNames();
// The passes CompileOptions::disabled_passes may name.
const std::vector<std::string>& OptionalPassNames();

// Runs the optimisation pipeline (every pass before lowering) on an imported module.
absl::Status OptimizeModule(Module& module, const CompileOptions& options, CompileReport* report);

// Compiles an imported module into a generic (symbolic) executable. The module is modified in
// place. Buckets need the model file (each variant is imported anew): see CompileOnnxFile.
absl::StatusOr<std::shared_ptr<const vm::Executable>> CompileModule(
    Module& module, const CompileOptions& options = {}, CompileReport* report = nullptr);

// Replaces the named symbols in the main graph's input types by constants.
void SpecializeInputs(Module& module, const std::map<std::string, int64_t>& values);

// Imports and compiles an ONNX file.
absl::StatusOr<std::shared_ptr<const vm::Executable>> CompileOnnxFile(
    const std::string& path, const CompileOptions& options = {}, CompileReport* report = nullptr);

// Structural invariants: inputs defined before use, outputs typed after inference.
absl::Status VerifyModule(const Module& module, bool require_types);

}  // namespace nimble::compiler
