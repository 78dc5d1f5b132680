// nimblec: the compiler and VM from the command line.
//
//   nimblec compile MODEL.onnx -o MODEL.nbx [--dump-ir-after=PASS|all]
//   nimblec run MODEL.onnx|MODEL.nbx --input NAME=FILE.npy|FILE.pb ... [--output-dir DIR]
//   nimblec inspect MODEL.nbx|MODEL.onnx
//   nimblec bench MODEL.onnx|MODEL.nbx --shape NAME=1x128 ... [--iterations N] [--threads N]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "compiler/driver/compiler.h"
#include "compiler/frontend/onnx/tensor_proto.h"
#include "tbb/global_control.h"
#include "vm/executable.h"
#include "vm/runtime/npy.h"
#include "vm/virtual_machine.h"

namespace nimble {
namespace {

constexpr char kUsage[] =
    "usage:\n"
    "  nimblec compile MODEL.onnx -o MODEL.nbx [--device=cpu|cuda] "
    "[--precision=fp32|tf32|fp16|bf16] [--exact-gelu] [--half-outputs] "
    "[--buckets NAME=16,32,64,...] [--dump-ir-after=PASS|all] [--disable-pass=PASS,...]\n"
    "  nimblec run MODEL.onnx|MODEL.nbx --input NAME=FILE.npy|FILE.pb ... [--output-dir DIR]\n"
    "  nimblec inspect MODEL.nbx|MODEL.onnx\n"
    "  nimblec bench MODEL.onnx|MODEL.nbx --shape NAME=1x128 ... [--iterations N] [--threads N]\n"
    "                [--profile-kernels] [--device-graphs]\n";

struct Args {
  std::string command;
  std::string model;
  std::string output;
  std::string output_dir;
  std::vector<std::string> dump_ir_after;
  std::vector<std::string> disabled_passes;
  bool profile_kernels = false;
  bool exact_gelu = false;  // --exact-gelu: fp16/bf16 GEMMs keep erf GELU (lower_precision.h)
  bool half_outputs = false;   // --half-outputs: fp16/bf16 results stay half (lower_precision.h)
  bool device_graphs = false;  // bench: VirtualMachineOptions::device_graphs
  std::vector<std::pair<std::string, std::string>> inputs;  // name -> file
  std::vector<std::pair<std::string, std::string>> shapes;  // name -> "1x128"
  std::map<std::string, std::vector<int64_t>> buckets;      // symbol -> sizes
  int iterations = 20;
  int threads = 1;
  vm::Device device = vm::kCpu;  // --device=cpu|cuda[:N] (compiling an .onnx)
  compiler::Precision precision = compiler::Precision::kF32;  // --precision (with a GPU device)
};

absl::StatusOr<Args> ParseArgs(int argc, char** argv) {
  if (argc < 3) return absl::InvalidArgumentError("missing command or model");
  Args args;
  args.command = argv[1];
  std::vector<std::string> rest(argv + 2, argv + argc);
  auto value_of = [&](size_t& i, const std::string& flag) -> absl::StatusOr<std::string> {
    const std::string& arg = rest[i];
    if (absl::StartsWith(arg, flag + "=")) return arg.substr(flag.size() + 1);
    if (i + 1 >= rest.size())
      return absl::InvalidArgumentError(absl::StrCat(flag, " needs a value"));
    return rest[++i];
  };
  auto pair_of =
      [](const std::string& v,
         const std::string& flag) -> absl::StatusOr<std::pair<std::string, std::string>> {
    const size_t eq = v.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(absl::StrCat(flag, " wants NAME=VALUE, got '", v, "'"));
    }
    return std::make_pair(v.substr(0, eq), v.substr(eq + 1));
  };
  for (size_t i = 0; i < rest.size(); ++i) {
    const std::string& arg = rest[i];
    auto is = [&](const char* flag) {
      return arg == flag || absl::StartsWith(arg, absl::StrCat(flag, "="));
    };
    if (is("-o") || is("--output")) {
      NIMBLE_ASSIGN_OR_RETURN(args.output, value_of(i, arg.substr(0, arg.find('='))));
    } else if (is("--output-dir")) {
      NIMBLE_ASSIGN_OR_RETURN(args.output_dir, value_of(i, "--output-dir"));
    } else if (is("--device-graphs")) {
      args.device_graphs = true;
    } else if (is("--profile-kernels")) {
      args.profile_kernels = true;
    } else if (is("--exact-gelu")) {
      args.exact_gelu = true;
    } else if (is("--half-outputs")) {
      args.half_outputs = true;
    } else if (is("--disable-pass")) {
      NIMBLE_ASSIGN_OR_RETURN(std::string v, value_of(i, "--disable-pass"));
      for (absl::string_view p : absl::StrSplit(v, ',')) args.disabled_passes.emplace_back(p);
    } else if (is("--dump-ir-after")) {
      NIMBLE_ASSIGN_OR_RETURN(std::string v, value_of(i, "--dump-ir-after"));
      for (absl::string_view p : absl::StrSplit(v, ',')) args.dump_ir_after.emplace_back(p);
    } else if (is("--input")) {
      NIMBLE_ASSIGN_OR_RETURN(std::string v, value_of(i, "--input"));
      NIMBLE_ASSIGN_OR_RETURN(auto p, pair_of(v, "--input"));
      args.inputs.push_back(p);
    } else if (is("--buckets")) {
      NIMBLE_ASSIGN_OR_RETURN(std::string v, value_of(i, "--buckets"));
      NIMBLE_ASSIGN_OR_RETURN(auto p, pair_of(v, "--buckets"));
      for (absl::string_view size : absl::StrSplit(p.second, ',', absl::SkipEmpty())) {
        int64_t n = 0;
        if (!absl::SimpleAtoi(size, &n) || n <= 0) {
          return absl::InvalidArgumentError(
              absl::StrCat("--buckets ", v, ": '", size, "' is not a positive size"));
        }
        args.buckets[p.first].push_back(n);
      }
    } else if (is("--shape")) {
      NIMBLE_ASSIGN_OR_RETURN(std::string v, value_of(i, "--shape"));
      NIMBLE_ASSIGN_OR_RETURN(auto p, pair_of(v, "--shape"));
      args.shapes.push_back(p);
    } else if (is("--device")) {
      NIMBLE_ASSIGN_OR_RETURN(std::string v, value_of(i, "--device"));
      if (v == "cpu") {
        args.device = vm::kCpu;
      } else if (v == "cuda" || absl::StartsWith(v, "cuda:")) {
        int ordinal = 0;
        if (v.size() > 5 && (!absl::SimpleAtoi(v.substr(5), &ordinal) || ordinal < 0)) {
          return absl::InvalidArgumentError(absl::StrCat("--device: bad device '", v, "'"));
        }
        args.device = vm::Device{vm::DeviceType::kCUDA, ordinal};
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("--device wants cpu, cuda or cuda:N, got '", v, "'"));
      }
    } else if (is("--precision")) {
      NIMBLE_ASSIGN_OR_RETURN(std::string v, value_of(i, "--precision"));
      NIMBLE_ASSIGN_OR_RETURN(args.precision, compiler::ParsePrecision(v));
    } else if (is("--iterations") || is("--threads")) {
      const std::string flag = arg.substr(0, arg.find('='));
      NIMBLE_ASSIGN_OR_RETURN(std::string v, value_of(i, flag));
      int n = 0;
      if (!absl::SimpleAtoi(v, &n) || n <= 0) {
        return absl::InvalidArgumentError(absl::StrCat(flag, " wants a positive integer"));
      }
      (flag == "--iterations" ? args.iterations : args.threads) = n;
    } else if (!arg.empty() && arg[0] == '-') {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag '", arg, "'"));
    } else if (args.model.empty()) {
      args.model = arg;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
  }
  if (args.model.empty()) return absl::InvalidArgumentError("missing model path");
  return args;
}

bool IsTerminal() { return isatty(STDERR_FILENO) != 0; }

// Loads an .nbx, or compiles an .onnx (with progress on a terminal).
absl::StatusOr<std::shared_ptr<const vm::Executable>> LoadOrCompile(
    const Args& args, compiler::CompileReport* report = nullptr) {
  if (absl::EndsWith(args.model, ".nbx")) return vm::Executable::LoadFile(args.model);
  compiler::CompileOptions options;
  options.buckets = args.buckets;
  options.device = args.device;
  options.precision = args.precision;
  options.exact_gelu = args.exact_gelu;
  options.half_outputs = args.half_outputs;
  for (const std::string& p : args.dump_ir_after) options.dump_ir_after.insert(p);
  for (const std::string& p : args.dump_ir_after) {
    const auto& names = compiler::PassNames();
    if (p != "all" && std::find(names.begin(), names.end(), p) == names.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--dump-ir-after: unknown pass '", p, "' (passes: ", absl::StrJoin(names, ", "), ")"));
    }
  }
  for (const std::string& p : args.disabled_passes) {
    const auto& names = compiler::OptionalPassNames();
    if (std::find(names.begin(), names.end(), p) == names.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--disable-pass: '", p,
                       "' cannot be disabled (optional passes: ", absl::StrJoin(names, ", "), ")"));
    }
    options.disabled_passes.insert(p);
  }
  options.dump = [](const std::string& pass, const std::string& ir) {
    std::cout << "// ----- IR after " << pass << "\n" << ir << std::flush;
  };
  if (IsTerminal()) {
    options.on_pass = [](const std::string& pass) {
      std::fprintf(stderr, "\r\033[K  %s ...", pass.c_str());
    };
  }
  auto exe = compiler::CompileOnnxFile(args.model, options, report);
  if (IsTerminal()) std::fprintf(stderr, "\r\033[K");
  return exe;
}

absl::StatusOr<vm::Tensor> ReadInput(const std::string& path) {
  if (absl::EndsWith(path, ".npy")) return vm::ReadNpy(path);
  if (absl::EndsWith(path, ".pb")) return compiler::ReadTensorProtoFile(path);
  return absl::InvalidArgumentError(absl::StrCat("input '", path, "' is neither .npy nor .pb"));
}

std::string Summary(const vm::Tensor& t) {
  std::string s = t.TypeString();
  if (t.dtype() == vm::DType::kF32 && t.num_elements() > 0) {
    const float* d = t.data<float>();
    double sum = 0, mn = d[0], mx = d[0];
    for (int64_t i = 0; i < t.num_elements(); ++i) {
      sum += d[i];
      mn = std::min<double>(mn, d[i]);
      mx = std::max<double>(mx, d[i]);
    }
    absl::StrAppend(&s, "  mean=", sum / t.num_elements(), " min=", mn, " max=", mx);
  }
  return s;
}

absl::Status Compile(const Args& args) {
  if (args.output.empty()) return absl::InvalidArgumentError("compile needs -o MODEL.nbx");
  compiler::CompileReport report;
  const auto start = std::chrono::steady_clock::now();
  NIMBLE_ASSIGN_OR_RETURN(auto exe, LoadOrCompile(args, &report));
  NIMBLE_RETURN_IF_ERROR(exe->SaveFile(args.output));
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(
      stderr,
      "compiled %s -> %s in %.0f ms: %d kernel calls, %d views, %d shape nodes elided, "
      "%d runtime shape functions, %d variants; arena %s bytes (intermediates without reuse: %s)\n",
      args.model.c_str(), args.output.c_str(), ms, report.codegen.num_kernel_calls,
      report.codegen.num_views, report.codegen.num_shape_nodes_elided,
      report.codegen.num_runtime_shape_calls, report.num_variants, report.arena_bytes.c_str(),
      report.intermediate_bytes.c_str());
  if (args.device.type != vm::DeviceType::kCPU) {
    std::fprintf(stderr, "  on %s: %d kernel calls, %d device copies; precision %s (%d nodes)\n",
                 args.device.ToString().c_str(), report.codegen.num_device_kernel_calls,
                 report.codegen.num_device_copies, compiler::PrecisionName(args.precision),
                 report.lowered_precision);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<vm::Tensor>> GatherInputs(
    const vm::Executable& exe, const std::map<std::string, vm::Tensor>& given) {
  std::vector<vm::Tensor> inputs;
  for (const vm::TensorSignature& sig : exe.inputs) {
    auto it = given.find(sig.name);
    if (it == given.end())
      return absl::InvalidArgumentError(absl::StrCat("missing --input ", sig.name, "=FILE"));
    inputs.push_back(it->second);
  }
  for (const auto& [name, t] : given) {
    if (std::none_of(exe.inputs.begin(), exe.inputs.end(),
                     [&](const auto& s) { return s.name == name; })) {
      return absl::InvalidArgumentError(absl::StrCat("the model has no input '", name, "'"));
    }
  }
  return inputs;
}

absl::Status Run(const Args& args) {
  NIMBLE_ASSIGN_OR_RETURN(auto exe, LoadOrCompile(args));
  std::map<std::string, vm::Tensor> given;
  for (const auto& [name, path] : args.inputs) {
    NIMBLE_ASSIGN_OR_RETURN(given[name], ReadInput(path));
  }
  NIMBLE_ASSIGN_OR_RETURN(std::vector<vm::Tensor> inputs, GatherInputs(*exe, given));
  vm::VirtualMachineOptions vm_options;
  vm_options.num_threads = args.threads;
  vm::VirtualMachine machine(exe, vm_options);
  const auto start = std::chrono::steady_clock::now();
  NIMBLE_ASSIGN_OR_RETURN(std::vector<vm::Tensor> outputs, machine.Run(inputs));
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (!args.output_dir.empty()) std::filesystem::create_directories(args.output_dir);
  for (size_t i = 0; i < outputs.size(); ++i) {
    const std::string& name = exe->outputs[i].name;
    std::printf("%s: %s\n", name.c_str(), Summary(outputs[i]).c_str());
    if (!args.output_dir.empty()) {
      NIMBLE_RETURN_IF_ERROR(vm::WriteNpy(
          (std::filesystem::path(args.output_dir) / (name + ".npy")).string(), outputs[i]));
    }
  }
  std::printf("ran in %.3f ms\n", ms);
  return absl::OkStatus();
}

absl::Status Inspect(const Args& args) {
  NIMBLE_ASSIGN_OR_RETURN(auto exe, LoadOrCompile(args));
  auto print_sig = [](const char* what, const std::vector<vm::TensorSignature>& sigs) {
    for (const auto& s : sigs) {
      std::vector<std::string> dims;
      for (size_t i = 0; i < s.dims.size(); ++i) {
        dims.push_back(s.dims[i] >= 0 ? absl::StrCat(s.dims[i])
                                      : (s.dim_names[i].empty() ? "?" : s.dim_names[i]));
      }
      std::printf("%s %s: %s[%s]\n", what, s.name.c_str(),
                  std::string(vm::DTypeName(s.dtype)).c_str(), absl::StrJoin(dims, ", ").c_str());
    }
  };
  std::printf("compiler: %s\n", exe->compiler_version.c_str());
  print_sig("input ", exe->inputs);
  print_sig("output", exe->outputs);
  // Variants and their memory plans: a static arena size where every dim is folded, otherwise
  // the arena is sized per call by the function's scalar code (its alloc_storage lines).
  for (const auto& v : exe->variants) {
    const vm::Function& f = exe->functions[v.function];
    int allocs = 0;
    for (const vm::Instruction& in : f.code) allocs += in.op == vm::Opcode::kAllocStorage;
    std::printf(
        "variant %s -> function %d '%s': %zu instructions, %d registers, %d alloc_storage, "
        "memory plan %s\n",
        v.name.c_str(), v.function, f.name.c_str(), f.code.size(), f.num_registers, allocs,
        v.planned_bytes_hint > 0
            ? absl::StrCat("static, arena ", v.planned_bytes_hint, " bytes").c_str()
            : "symbolic (arena sized per call)");
  }
  std::printf("%s", exe->Disassemble().c_str());
  return absl::OkStatus();
}

absl::StatusOr<vm::Tensor> RandomInput(const vm::TensorSignature& sig,
                                       const std::string& shape_text, std::mt19937& rng) {
  vm::Shape shape;
  for (absl::string_view d : absl::StrSplit(shape_text, 'x', absl::SkipEmpty())) {
    int64_t v;
    if (!absl::SimpleAtoi(d, &v) || v < 0) {
      return absl::InvalidArgumentError(absl::StrCat("bad --shape ", sig.name, "=", shape_text));
    }
    shape.push_back(v);
  }
  NIMBLE_ASSIGN_OR_RETURN(vm::Tensor t, vm::Tensor::Empty(sig.dtype, shape));
  switch (sig.dtype) {
    case vm::DType::kF32: {
      std::normal_distribution<float> dist;
      for (int64_t i = 0; i < t.num_elements(); ++i) t.data<float>()[i] = dist(rng);
      break;
    }
    case vm::DType::kI64: {
      // Token ids: small non-negative values, valid for any embedding table; attention masks
      // all ones; token type ids (segment ids) zero.
      const bool mask = absl::StrContains(sig.name, "mask");
      const bool type = absl::StrContains(sig.name, "type");
      std::uniform_int_distribution<int64_t> dist(0, 99);
      for (int64_t i = 0; i < t.num_elements(); ++i) {
        t.data<int64_t>()[i] = mask ? 1 : type ? 0 : dist(rng);
      }
      break;
    }
    case vm::DType::kI32: {
      std::uniform_int_distribution<int32_t> dist(0, 99);
      for (int64_t i = 0; i < t.num_elements(); ++i) t.data<int32_t>()[i] = dist(rng);
      break;
    }
    case vm::DType::kBool:
      for (int64_t i = 0; i < t.num_elements(); ++i) t.data<bool>()[i] = true;
      break;
    default:
      return absl::UnimplementedError(
          absl::StrCat("bench cannot make random ", vm::DTypeName(sig.dtype), " inputs"));
  }
  return t;
}

absl::Status Bench(const Args& args) {
  NIMBLE_ASSIGN_OR_RETURN(auto exe, LoadOrCompile(args));
  std::mt19937 rng(42);
  std::vector<vm::Tensor> inputs;
  for (const vm::TensorSignature& sig : exe->inputs) {
    auto it = std::find_if(args.shapes.begin(), args.shapes.end(),
                           [&](const auto& p) { return p.first == sig.name; });
    if (it == args.shapes.end())
      return absl::InvalidArgumentError(absl::StrCat("missing --shape ", sig.name, "=DIMS"));
    NIMBLE_ASSIGN_OR_RETURN(vm::Tensor t, RandomInput(sig, it->second, rng));
    inputs.push_back(std::move(t));
  }
  vm::VirtualMachineOptions vm_options;
  vm_options.num_threads = args.threads;
  vm_options.profile = true;
  vm_options.device_graphs = args.device_graphs;
  vm::VirtualMachine machine(exe, vm_options);
  NIMBLE_RETURN_IF_ERROR(machine.Run(inputs).status());  // warm-up
  if (machine.device_graphs_enabled()) {
    NIMBLE_RETURN_IF_ERROR(machine.Run(inputs).status());  // the capture
  }
  machine.ResetProfile();
  const vm::DeviceGraphStats before = machine.device_graph_stats();
  std::vector<double> ms;
  for (int i = 0; i < args.iterations; ++i) {
    const auto start = std::chrono::steady_clock::now();
    NIMBLE_RETURN_IF_ERROR(machine.Run(inputs).status());
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                     .count());
  }
  std::sort(ms.begin(), ms.end());
  if (args.device_graphs) {
    const vm::DeviceGraphStats& g = machine.device_graph_stats();
    std::fprintf(stderr, "device graphs: %s; %lld captures, %lld replays, %lld eager calls\n",
                 machine.device_graphs_enabled() ? "on" : "unavailable",
                 static_cast<long long>(g.captures), static_cast<long long>(g.replays),
                 static_cast<long long>(g.eager_calls));
    // Per replay of the timed calls.
    if (g.replays > before.replays) {
      const double n = static_cast<double>(g.replays - before.replays) * 1e3;
      std::fprintf(stderr,
                   "replay us: inputs and result buffers %.1f, launch+wait %.1f, result out %.1f\n",
                   (g.replay_inputs_ns - before.replay_inputs_ns) / n,
                   (g.replay_device_ns - before.replay_device_ns) / n,
                   (g.replay_result_ns - before.replay_result_ns) / n);
    }
  }
  double sum = 0;
  for (double m : ms) sum += m;
  const vm::VmProfile& p = machine.profile();
  const double outside =
      p.total_ns ? 100.0 * static_cast<double>(p.outside_kernels_ns()) / p.total_ns : 0;
  std::printf("%-10s %10s %10s %10s %10s %12s %14s\n", "iterations", "mean_ms", "p50_ms", "p90_ms",
              "min_ms", "kernel_calls", "outside_kern_%");
  std::printf("%-10d %10.3f %10.3f %10.3f %10.3f %12lld %14.2f\n", args.iterations, sum / ms.size(),
              ms[ms.size() / 2], ms[ms.size() * 9 / 10], ms.front(),
              static_cast<long long>(p.runs ? p.kernel_calls / p.runs : 0), outside);
  if (args.profile_kernels && p.runs > 0) {
    // Time per kernel (op name + shape-relevant attributes folded by name), largest first.
    std::map<std::string, std::pair<int64_t, int64_t>> by_name;  // ns, calls
    for (size_t k = 0; k < p.per_kernel_ns.size(); ++k) {
      auto& e = by_name[exe->kernels[k].name];
      e.first += p.per_kernel_ns[k];
      e.second += p.per_kernel_calls[k];
    }
    std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> rows(by_name.begin(),
                                                                          by_name.end());
    std::sort(rows.begin(), rows.end(),
              [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
    std::printf("\n%-28s %12s %10s %8s\n", "kernel", "ms/run", "calls/run", "share");
    for (const auto& [name, e] : rows) {
      std::printf("%-28s %12.3f %10.1f %7.1f%%\n", name.c_str(),
                  static_cast<double>(e.first) / p.runs / 1e6,
                  static_cast<double>(e.second) / p.runs,
                  p.kernel_ns ? 100.0 * static_cast<double>(e.first) / p.kernel_ns : 0.0);
    }
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace nimble

int main(int argc, char** argv) {
  auto args = nimble::ParseArgs(argc, argv);
  if (!args.ok()) {
    std::fprintf(stderr, "nimblec: %s\n%s", std::string(args.status().message()).c_str(),
                 nimble::kUsage);
    return 2;
  }
  // --threads is the whole budget: TBB's workers too, not only each kernel's share.
  tbb::global_control threads(tbb::global_control::max_allowed_parallelism,
                              static_cast<size_t>(std::max(1, args->threads)));
  absl::Status status;
  if (args->command == "compile")
    status = nimble::Compile(*args);
  else if (args->command == "run")
    status = nimble::Run(*args);
  else if (args->command == "inspect")
    status = nimble::Inspect(*args);
  else if (args->command == "bench")
    status = nimble::Bench(*args);
  else {
    std::fprintf(stderr, "nimblec: unknown command '%s'\n%s", args->command.c_str(),
                 nimble::kUsage);
    return 2;
  }
  if (!status.ok()) {
    std::fprintf(stderr, "nimblec: error: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
