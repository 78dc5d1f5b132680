// The compilation pipeline, as one readable recipe (compiler.cc): ONNX import, type inference,
// constant folding, re-inference, dead-code elimination, lowering to VM code with memory
// planning, and verification of the executable. The IR can be dumped after any pass.
#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "compiler/codegen/vm_codegen.h"
#include "compiler/ir/graph.h"
#include "vm/executable.h"

namespace nimble::compiler {

inline constexpr char kCompilerVersion[] = "nimble-compiler 0.1.0";

struct CompileOptions {
  // Pass names (or "all") after which the IR is handed to `dump`.
  std::set<std::string> dump_ir_after;
  std::function<void(const std::string& pass, const std::string& ir)> dump;
  // Check IR invariants between passes (always on in debug builds).
  bool verify_ir = true;
  // Called as each pass starts, for progress display.
  std::function<void(const std::string& pass)> on_pass;
};

struct PassTiming {
  std::string pass;
  double milliseconds = 0;
};

struct CompileReport {
  std::vector<PassTiming> timings;
  int folded_nodes = 0;
  int removed_nodes = 0;
  int cse_merged = 0;
  int fused_patterns = 0;     // GELU and LayerNorm recognised
  int fused_matmuls = 0;      // MatMuls with epilogues
  int fused_elementwise = 0;  // FusedElementwise kernels formed
  CodegenReport codegen;
  std::string arena_bytes;         // symbolic, printed
  std::string intermediate_bytes;  // symbolic, printed
};

// Names of the passes in pipeline order (for --dump-ir-after validation and help).
const std::vector<std::string>& PassNames();

// Compiles an imported module. The module is modified in place.
absl::StatusOr<std::shared_ptr<const vm::Executable>> CompileModule(
    Module& module, const CompileOptions& options = {}, CompileReport* report = nullptr);

// Imports and compiles an ONNX file.
absl::StatusOr<std::shared_ptr<const vm::Executable>> CompileOnnxFile(
    const std::string& path, const CompileOptions& options = {}, CompileReport* report = nullptr);

// Structural invariants: inputs defined before use, outputs typed after inference.
absl::Status VerifyModule(const Module& module, bool require_types);

}  // namespace nimble::compiler
