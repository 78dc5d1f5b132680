// The ONNX backend node test suite (../shared/conformance/onnx-node, 1765 cases), every case
// compiled and run in this one process. Each case passes, fails or is unsupported; every case
// that does not pass must be named in exclusions.txt with a reason, and an excluded case that
// passes fails the test too (so the list stays true). Tolerances are the ONNX runner's:
// rtol 1e-3, atol 1e-7, dtypes must match.
//
// Environment:
//   NIMBLE_CONFORMANCE_FILTER=substr   run only cases whose name contains substr
//   NIMBLE_CONFORMANCE_WRITE_EXCLUSIONS=path  write the exclusion list of this run to path
//   NIMBLE_CONFORMANCE_REPORT=path     write the per-op report (markdown) to path
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/status_macros.h"
#include "compiler/driver/compiler.h"
#include "compiler/frontend/onnx/onnx_importer.h"
#include "compiler/frontend/onnx/tensor_proto.h"
#include "gtest/gtest.h"
#include "vm/kernels/cpu/lowp.h"
#include "vm/virtual_machine.h"

namespace nimble {
namespace {

namespace fs = std::filesystem;

constexpr char kSuite[] = "../shared/conformance/onnx-node";
constexpr double kRtol = 1e-3;
constexpr double kAtol = 1e-7;

enum class Outcome { kPass, kFail, kUnsupported, kSkipped };

struct Result {
  Outcome outcome = Outcome::kPass;
  std::string op;
  std::string message;
  bool on_gpu = false;  // some kernel of the executable runs on a CUDA device
};

std::string FirstLine(absl::string_view text) {
  std::string line(text.substr(0, text.find('\n')));
  return line.size() > 300 ? line.substr(0, 300) + "..." : line;
}

double ToDouble(const vm::Tensor& t, int64_t i);

absl::Status Compare(const vm::Tensor& actual, const vm::Tensor& expected,
                     const std::string& what) {
  if (actual.dtype() != expected.dtype()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": dtype ", vm::DTypeName(actual.dtype()),
                                                   ", expected ", vm::DTypeName(expected.dtype())));
  }
  if (actual.shape() != expected.shape()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": shape ",
                                                   vm::ShapeToString(actual.shape()), ", expected ",
                                                   vm::ShapeToString(expected.shape())));
  }
  const int64_t n = expected.num_elements();
  if (expected.dtype() == vm::DType::kString) {
    for (int64_t i = 0; i < n; ++i) {
      if (actual.data<std::string>()[i] != expected.data<std::string>()[i]) {
        return absl::InvalidArgumentError(absl::StrCat(what, ": string element ", i, " differs"));
      }
    }
    return absl::OkStatus();
  }
  const bool exact = !vm::IsFloat(expected.dtype());
  for (int64_t i = 0; i < n; ++i) {
    const double a = ToDouble(actual, i), e = ToDouble(expected, i);
    if (std::isnan(e) && std::isnan(a)) continue;
    if (std::isinf(e) && a == e) continue;
    const bool ok = exact ? a == e : std::abs(a - e) <= kAtol + kRtol * std::abs(e);
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": element ", i, " is ", a, ", expected ", e));
    }
  }
  return absl::OkStatus();
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal
      int e = -1;
      uint32_t m = mant;
      do {
        ++e;
        m <<= 1;
      } while ((m & 0x400) == 0);
      bits = sign | ((127 - 15 - e) << 23) | ((m & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

double ToDouble(const vm::Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case vm::DType::kF32:
      return t.data<float>()[i];
    case vm::DType::kF64:
      return t.data<double>()[i];
    case vm::DType::kF16:
      return HalfToFloat(t.data<uint16_t>()[i]);
    case vm::DType::kBF16: {
      uint32_t bits = static_cast<uint32_t>(t.data<uint16_t>()[i]) << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    case vm::DType::kI8:
      return t.data<int8_t>()[i];
    case vm::DType::kI16:
      return t.data<int16_t>()[i];
    case vm::DType::kI32:
      return t.data<int32_t>()[i];
    case vm::DType::kI64:
      return static_cast<double>(t.data<int64_t>()[i]);
    case vm::DType::kU8:
      return t.data<uint8_t>()[i];
    case vm::DType::kU16:
      return t.data<uint16_t>()[i];
    case vm::DType::kU32:
      return t.data<uint32_t>()[i];
    case vm::DType::kU64:
      return static_cast<double>(t.data<uint64_t>()[i]);
    case vm::DType::kBool:
      return t.data<bool>()[i] ? 1 : 0;
    case vm::DType::kI4:
    case vm::DType::kI2:
      return t.data<int8_t>()[i];
    case vm::DType::kU4:
    case vm::DType::kU2:
      return t.data<uint8_t>()[i];
    case vm::DType::kF8E4M3FN:
    case vm::DType::kF8E4M3FNUZ:
    case vm::DType::kF8E5M2:
    case vm::DType::kF8E5M2FNUZ:
    case vm::DType::kF4E2M1:
    case vm::DType::kF8E8M0:
      return vm::cpu::LowPrecisionFloatToFloat(t.dtype(), t.data<uint8_t>()[i]);
    default:
      return NAN;
  }
}

vm::Value SequenceValue(std::vector<vm::Tensor> tensors) {
  auto adt = std::make_shared<vm::ADT>();
  adt->tag = vm::kSequenceTag;
  for (vm::Tensor& t : tensors) adt->fields.push_back(std::move(t));
  return vm::ADTRef(std::move(adt));
}

// A test data file as the graph input/output `type` says: a TensorProto, a SequenceProto (a
// sequence ADT) or an OptionalProto (an optional ADT).
absl::StatusOr<vm::Value> ReadValue(const fs::path& path, const compiler::Type* type) {
  using Kind = compiler::Type::Kind;
  if (type == nullptr || type->kind == Kind::kTensor) {
    NIMBLE_ASSIGN_OR_RETURN(vm::Tensor t, compiler::ReadTensorProtoFile(path.string()));
    return vm::Value(std::move(t));
  }
  if (type->kind == Kind::kSequence) {
    NIMBLE_ASSIGN_OR_RETURN(std::vector<vm::Tensor> ts,
                            compiler::ReadSequenceProtoFile(path.string()));
    return SequenceValue(std::move(ts));
  }
  NIMBLE_ASSIGN_OR_RETURN(compiler::OptionalData data,
                          compiler::ReadOptionalProtoFile(path.string()));
  auto adt = std::make_shared<vm::ADT>();
  adt->tag = vm::kOptionalTag;
  if (data.kind == compiler::OptionalData::Kind::kTensor) adt->fields.push_back(data.tensor);
  if (data.kind == compiler::OptionalData::Kind::kSequence) {
    adt->fields.push_back(SequenceValue(std::move(data.sequence)));
  }
  return vm::ADTRef(std::move(adt));
}

absl::Status CompareValues(const vm::Value& actual, const vm::Value& expected,
                           const std::string& what) {
  if (const vm::Tensor* e = std::get_if<vm::Tensor>(&expected)) {
    const vm::Tensor* a = std::get_if<vm::Tensor>(&actual);
    if (a == nullptr) return absl::InvalidArgumentError(absl::StrCat(what, ": not a tensor"));
    return Compare(*a, *e, what);
  }
  const vm::ADTRef* e = std::get_if<vm::ADTRef>(&expected);
  const vm::ADTRef* a = std::get_if<vm::ADTRef>(&actual);
  if (e == nullptr || *e == nullptr) return absl::InternalError("expected value is not an ADT");
  if (a == nullptr || *a == nullptr || (*a)->tag != (*e)->tag) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": not a ", (*e)->tag == vm::kSequenceTag ? "sequence" : "optional"));
  }
  if ((*a)->fields.size() != (*e)->fields.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", (*a)->fields.size(), " elements, expected ", (*e)->fields.size()));
  }
  for (size_t i = 0; i < (*e)->fields.size(); ++i) {
    NIMBLE_RETURN_IF_ERROR(
        CompareValues((*a)->fields[i], (*e)->fields[i], absl::StrCat(what, "[", i, "]")));
  }
  return absl::OkStatus();
}

std::vector<fs::path> Numbered(const fs::path& dir, const std::string& prefix) {
  std::vector<fs::path> files;
  for (int i = 0;; ++i) {
    fs::path p = dir / absl::StrCat(prefix, i, ".pb");
    if (!fs::exists(p)) break;
    files.push_back(p);
  }
  return files;
}

Result RunCase(const fs::path& dir) {
  Result result;
  auto module = compiler::ImportOnnxModel((dir / "model.onnx").string());
  if (!module.ok()) {
    result.outcome =
        absl::IsUnimplemented(module.status()) ? Outcome::kUnsupported : Outcome::kFail;
    result.message = absl::StrCat("import: ", module.status().message());
    return result;
  }
  result.op = (*module)->main->nodes().empty() ? "(none)" : (*module)->main->nodes()[0]->op_type();
  std::vector<compiler::Type> input_types, output_types;
  for (const compiler::Value* v : (*module)->main->inputs()) input_types.push_back(v->type());
  for (const compiler::Value* v : (*module)->main->outputs()) output_types.push_back(v->type());
  compiler::CompileOptions options;
#ifdef NIMBLE_CONFORMANCE_CUDA
  // The GPU run: compute placed on cuda:0 (ops without a CUDA kernel stay on the host).
  options.device = vm::Device{vm::DeviceType::kCUDA, 0};
#endif
  auto exe = compiler::CompileModule(**module, options);
  if (!exe.ok()) {
    result.outcome = absl::IsUnimplemented(exe.status()) ? Outcome::kUnsupported : Outcome::kFail;
    result.message = absl::StrCat("compile: ", exe.status().message());
    return result;
  }
  for (const vm::KernelEntry& k : (*exe)->kernels) {
    if (k.device.type == vm::DeviceType::kCUDA) result.on_gpu = true;
  }
  vm::VirtualMachine machine(*exe);
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_directory() ||
        !absl::StartsWith(entry.path().filename().string(), "test_data_set_")) {
      continue;
    }
    std::vector<vm::Value> inputs;
    const std::vector<fs::path> input_files = Numbered(entry.path(), "input_");
    for (size_t i = 0; i < input_files.size(); ++i) {
      const compiler::Type* type = i < input_types.size() ? &input_types[i] : nullptr;
      auto v = ReadValue(input_files[i], type);
      if (!v.ok()) {
        result.outcome = Outcome::kUnsupported;
        result.message =
            absl::StrCat("input ", input_files[i].filename().string(), ": ", v.status().message());
        return result;
      }
      inputs.push_back(*std::move(v));
    }
    auto outputs = machine.RunValues(inputs);
    if (!outputs.ok()) {
      result.outcome =
          absl::IsUnimplemented(outputs.status()) ? Outcome::kUnsupported : Outcome::kFail;
      result.message = absl::StrCat("run: ", outputs.status().message());
      return result;
    }
    const std::vector<fs::path> expected_files = Numbered(entry.path(), "output_");
    if (expected_files.size() != outputs->size()) {
      result.outcome = Outcome::kFail;
      result.message = absl::StrCat(outputs->size(), " outputs, expected ", expected_files.size());
      return result;
    }
    for (size_t i = 0; i < expected_files.size(); ++i) {
      const compiler::Type* type = i < output_types.size() ? &output_types[i] : nullptr;
      auto expected = ReadValue(expected_files[i], type);
      if (!expected.ok()) {
        result.outcome = Outcome::kUnsupported;
        result.message = absl::StrCat("expected output: ", expected.status().message());
        return result;
      }
      absl::Status cmp = CompareValues((*outputs)[i], *expected, absl::StrCat("output ", i));
      if (!cmp.ok()) {
        result.outcome = Outcome::kFail;
        result.message = std::string(cmp.message());
        return result;
      }
    }
  }
  return result;
}

// exclusions.txt: "<case> <reason...>" per line; '#' starts a comment line. A reason starting
// with "crash:" means the case is not run at all (it would take the process down).
std::map<std::string, std::string> ReadExclusions(const fs::path& path) {
  std::map<std::string, std::string> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    absl::string_view l = absl::StripAsciiWhitespace(line);
    if (l.empty() || l[0] == '#') continue;
    const size_t space = l.find(' ');
    out[std::string(l.substr(0, space))] =
        space == absl::string_view::npos ? ""
                                         : std::string(absl::StripAsciiWhitespace(l.substr(space)));
  }
  return out;
}

TEST(ConformanceTest, OnnxBackendNodeSuite) {
  ASSERT_TRUE(fs::exists(kSuite)) << kSuite << " is missing";
  const fs::path exclusions_path = fs::path("tests/conformance/exclusions.txt");
  const auto exclusions = ReadExclusions(exclusions_path);
  const char* filter = std::getenv("NIMBLE_CONFORMANCE_FILTER");

  std::vector<fs::path> cases;
  for (const auto& entry : fs::directory_iterator(kSuite)) {
    if (entry.is_directory()) cases.push_back(entry.path());
  }
  std::sort(cases.begin(), cases.end());

  std::map<std::string, Result> results;
  struct Tally {
    int pass = 0, fail = 0, unsupported = 0, skipped = 0;
  };
  std::map<std::string, Tally> per_op;
  Tally total;
  for (const fs::path& dir : cases) {
    const std::string name = dir.filename().string();
    if (filter && !absl::StrContains(name, filter)) continue;
    auto ex = exclusions.find(name);
    Result r;
    if (ex != exclusions.end() && absl::StartsWith(ex->second, "crash:")) {
      r.outcome = Outcome::kSkipped;
      r.message = ex->second;
    } else {
      r = RunCase(dir);
    }
    Tally& t = per_op[r.op.empty() ? "(import failed)" : r.op];
    switch (r.outcome) {
      case Outcome::kPass:
        ++t.pass;
        ++total.pass;
        break;
      case Outcome::kFail:
        ++t.fail;
        ++total.fail;
        break;
      case Outcome::kUnsupported:
        ++t.unsupported;
        ++total.unsupported;
        break;
      case Outcome::kSkipped:
        ++t.skipped;
        ++total.skipped;
        break;
    }
    results[name] = std::move(r);
  }

  const int run = static_cast<int>(results.size());
  std::printf(
      "conformance: %d cases: %d passed (%.1f%%), %d failed, %d unsupported, %d not run (crash)\n",
      run, total.pass, run ? 100.0 * total.pass / run : 0.0, total.fail, total.unsupported,
      total.skipped);
#ifdef NIMBLE_CONFORMANCE_CUDA
  int gpu_cases = 0, gpu_passed = 0;
  for (const auto& [name, r] : results) {
    gpu_cases += r.on_gpu ? 1 : 0;
    gpu_passed += r.on_gpu && r.outcome == Outcome::kPass ? 1 : 0;
  }
  std::printf("conformance on cuda:0: %d cases ran kernels on the GPU, %d of them passed\n",
              gpu_cases, gpu_passed);
#endif
  if (const char* report = std::getenv("NIMBLE_CONFORMANCE_REPORT")) {
    std::ofstream out(report);
    out << "| op | passed | failed | unsupported | not run |\n|---|---|---|---|---|\n";
    for (const auto& [op, t] : per_op) {
      out << "| " << op << " | " << t.pass << " | " << t.fail << " | " << t.unsupported << " | "
          << t.skipped << " |\n";
    }
    out << "| **total** | " << total.pass << " | " << total.fail << " | " << total.unsupported
        << " | " << total.skipped << " |\n";
  }
  if (const char* write = std::getenv("NIMBLE_CONFORMANCE_WRITE_EXCLUSIONS")) {
    std::ofstream out(write);
    out << "# Conformance cases that do not pass, with the reason (generated by\n"
           "# NIMBLE_CONFORMANCE_WRITE_EXCLUSIONS=tests/conformance/exclusions.txt, then "
           "edited).\n";
    for (const auto& [name, r] : results) {
      if (r.outcome == Outcome::kPass) continue;
      const char* kind = r.outcome == Outcome::kFail      ? "fail"
                         : r.outcome == Outcome::kSkipped ? ""
                                                          : "unsupported";
      if (r.outcome == Outcome::kSkipped) {
        out << name << " " << r.message << "\n";
      } else {
        out << name << " " << kind << ": " << FirstLine(r.message) << "\n";
      }
    }
  }
  for (const auto& [name, r] : results) {
    const bool excluded = exclusions.count(name) != 0;
    if (r.outcome == Outcome::kPass) {
      EXPECT_FALSE(excluded) << name << " passes but is listed in " << exclusions_path
                             << ": remove it";
    } else if (r.outcome != Outcome::kSkipped) {
      EXPECT_TRUE(excluded) << name
                            << " does not pass and is not excluded: " << FirstLine(r.message);
    }
  }
}

}  // namespace
}  // namespace nimble
