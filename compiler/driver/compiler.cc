#include "compiler/driver/compiler.h"

#include <chrono>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "compiler/frontend/onnx/onnx_importer.h"
#include "compiler/transforms/constant_folding.h"
#include "compiler/transforms/cse.h"
#include "compiler/transforms/fuse_elementwise.h"
#include "compiler/transforms/fuse_gelu_layernorm.h"
#include "compiler/transforms/fuse_matmul_epilogue.h"
#include "compiler/transforms/type_inference.h"

namespace nimble::compiler {
namespace {

absl::Status VerifyGraph(const Graph& g, absl::flat_hash_set<const Value*> defined,
                         bool require_types) {
  for (const Value* in : g.inputs()) defined.insert(in);
  for (const Value* c : g.captures()) defined.insert(c);
  for (const auto& node : g.nodes()) {
    for (const Value* in : node->inputs()) {
      if (in != nullptr && !in->is_constant() && !defined.contains(in)) {
        return absl::InternalError(absl::StrCat("IR verifier: ", node->Describe(), " reads %",
                                                in->id(), " before it is defined"));
      }
    }
    for (const auto& [name, sub] : node->subgraphs()) {
      NIMBLE_RETURN_IF_ERROR(VerifyGraph(*sub, defined, require_types));
    }
    for (const Value* out : node->outputs()) {
      if (require_types && out->type().is_tensor() && out->tensor_type().dtype == vm::DType::kInvalid) {
        return absl::InternalError(absl::StrCat("IR verifier: ", node->Describe(), " output ",
                                                out->output_index(), " has no dtype"));
      }
      defined.insert(out);
    }
  }
  for (const Value* out : g.outputs()) {
    if (!out->is_constant() && !defined.contains(out)) {
      return absl::InternalError(absl::StrCat("IR verifier: graph output %", out->id(), " is undefined"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status VerifyModule(const Module& module, bool require_types) {
  return VerifyGraph(*module.main, {}, require_types);
}

const std::vector<std::string>& PassNames() {
  static const std::vector<std::string> names = {
      "import",    "infer-types",        "fold-constants", "reinfer-types",    "cse",
      "fuse-gelu-layernorm", "fuse-matmul-epilogue", "fuse-elementwise", "dce", "lower-to-vm"};
  return names;
}

absl::StatusOr<std::shared_ptr<const vm::Executable>> CompileModule(Module& module,
                                                                    const CompileOptions& options,
                                                                    CompileReport* report) {
  CompileReport local;
  CompileReport& r = report ? *report : local;
  bool types_ready = false;
  auto run = [&](const std::string& name, const std::function<absl::Status()>& pass) -> absl::Status {
    if (options.on_pass) options.on_pass(name);
    const auto start = std::chrono::steady_clock::now();
    NIMBLE_RETURN_IF_ERROR(pass());
    r.timings.push_back({name, std::chrono::duration<double, std::milli>(
                                   std::chrono::steady_clock::now() - start)
                                   .count()});
    if (options.verify_ir && name != "lower-to-vm") {
      NIMBLE_RETURN_IF_ERROR(Annotate(VerifyModule(module, types_ready), absl::StrCat("after ", name)));
    }
    if (options.dump && (options.dump_ir_after.count("all") || options.dump_ir_after.count(name))) {
      options.dump(name, module.ToString());
    }
    return absl::OkStatus();
  };

  if (options.dump && (options.dump_ir_after.count("all") || options.dump_ir_after.count("import"))) {
    options.dump("import", module.ToString());
  }
  // The recipe.
  NIMBLE_RETURN_IF_ERROR(run("infer-types", [&] { return InferTypes(module); }));
  types_ready = true;
  NIMBLE_RETURN_IF_ERROR(run("fold-constants", [&]() -> absl::Status {
    NIMBLE_ASSIGN_OR_RETURN(r.folded_nodes, FoldConstants(module));
    return absl::OkStatus();
  }));
  NIMBLE_RETURN_IF_ERROR(run("reinfer-types", [&] { return InferTypes(module); }));
  auto counted = [&](absl::StatusOr<int> (*pass)(Module&), int* count) {
    return [&module, pass, count]() -> absl::Status {
      NIMBLE_ASSIGN_OR_RETURN(*count, pass(module));
      return absl::OkStatus();
    };
  };
  NIMBLE_RETURN_IF_ERROR(run("cse", counted(EliminateCommonSubexpressions, &r.cse_merged)));
  NIMBLE_RETURN_IF_ERROR(run("fuse-gelu-layernorm", counted(FuseGeluAndLayerNorm, &r.fused_patterns)));
  NIMBLE_RETURN_IF_ERROR(run("fuse-matmul-epilogue", counted(FuseMatMulEpilogues, &r.fused_matmuls)));
  NIMBLE_RETURN_IF_ERROR(run("fuse-elementwise", counted(FuseElementwise, &r.fused_elementwise)));
  NIMBLE_RETURN_IF_ERROR(run("dce", [&]() -> absl::Status {
    r.removed_nodes = module.main->RemoveDeadNodes();
    return absl::OkStatus();
  }));
  vm::Executable executable;
  executable.compiler_version = kCompilerVersion;
  executable.devices.push_back(vm::kCpu);
  NIMBLE_RETURN_IF_ERROR(run("lower-to-vm", [&]() -> absl::Status {
    NIMBLE_ASSIGN_OR_RETURN(int main_fn, EmitMainFunction(module, executable, &r.codegen));
    vm::Variant generic;
    generic.name = "generic";
    generic.function = main_fn;
    executable.variants.push_back(generic);
    return absl::OkStatus();
  }));
  r.arena_bytes = module.dims.ToString(r.codegen.arena_bytes);
  r.intermediate_bytes = module.dims.ToString(r.codegen.intermediate_bytes);
  return vm::Executable::Finalize(std::move(executable));
}

absl::StatusOr<std::shared_ptr<const vm::Executable>> CompileOnnxFile(
    const std::string& path, const CompileOptions& options, CompileReport* report) {
  if (options.on_pass) options.on_pass("import");
  NIMBLE_ASSIGN_OR_RETURN(std::unique_ptr<Module> module, ImportOnnxModel(path));
  return CompileModule(*module, options, report);
}

}  // namespace nimble::compiler
