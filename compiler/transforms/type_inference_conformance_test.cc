// Type inference against the ONNX backend node test suite (../shared/conformance/onnx-node):
// for every case the importer accepts, InferTypes must succeed (or report the operator as
// unsupported), and every graph output's inferred type must agree with the reference output:
// same element type and rank, and each dim equal to the reference once the input symbols are
// bound from the reference inputs (dims that are fresh run-time symbols are not compared).
//
// The few cases where type inference deliberately differs are listed in kKnownDifferences with
// a reason; a listed case that agrees fails the test, so the list stays true.
//
// Environment: NIMBLE_TYPE_CONFORMANCE_VERBOSE=1 prints every case's outcome;
// NIMBLE_TYPE_CONFORMANCE_DUMP=<case> prints that case's IR before and after inference.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "compiler/frontend/onnx/onnx_importer.h"
#include "compiler/frontend/onnx/tensor_proto.h"
#include "compiler/transforms/type_inference.h"
#include "gtest/gtest.h"

namespace nimble::compiler {
namespace {

namespace fs = std::filesystem;

constexpr char kSuite[] = "../shared/conformance/onnx-node";

// Cases whose reference outputs type inference does not reproduce, with the reason.
const std::map<std::string, std::string>& KnownDifferences() {
  static const auto* known = new std::map<std::string, std::string>{};
  return *known;
}

struct Reference {
  Type::Kind kind = Type::Kind::kTensor;
  vm::DType dtype = vm::DType::kInvalid;
  std::vector<std::vector<int64_t>> shapes;  // one per tensor (sequence elements each)
  bool empty_optional = false;
};

// Reads input/output `i` of a test data set in whichever form the graph declares.
bool ReadReference(const std::string& path, const Type& declared, Reference& out) {
  out.kind = declared.kind;
  auto add = [&](const vm::Tensor& t) {
    out.dtype = t.dtype();
    out.shapes.emplace_back(t.shape().begin(), t.shape().end());
  };
  switch (declared.kind) {
    case Type::Kind::kTensor: {
      absl::StatusOr<vm::Tensor> t = ReadTensorProtoFile(path);
      if (!t.ok()) return false;
      add(*t);
      return true;
    }
    case Type::Kind::kSequence: {
      absl::StatusOr<std::vector<vm::Tensor>> s = ReadSequenceProtoFile(path);
      if (!s.ok()) return false;
      for (const vm::Tensor& t : *s) add(t);
      return true;
    }
    case Type::Kind::kOptional: {
      absl::StatusOr<OptionalData> o = ReadOptionalProtoFile(path);
      if (!o.ok()) return false;
      if (o->kind == OptionalData::Kind::kNone) out.empty_optional = true;
      if (o->kind == OptionalData::Kind::kTensor) add(o->tensor);
      for (const vm::Tensor& t : o->sequence) add(t);
      return true;
    }
  }
  return false;
}

// Binds the symbols of `type` from a reference shape; false on a contradiction.
void Bind(const DimContext& dims, const TensorType& type, const std::vector<int64_t>& shape,
          absl::flat_hash_map<int32_t, int64_t>& bindings) {
  if (!type.has_rank() || type.rank() != static_cast<int>(shape.size())) return;
  for (int a = 0; a < type.rank(); ++a) {
    const Dim& d = (*type.dims)[a];
    if (!d || !d->AsAtom() || dims.atom(*d->AsAtom()).kind != DimContext::AtomKind::kSymbol) {
      continue;
    }
    bindings.emplace(*d->AsAtom(), shape[a]);
  }
}

// "" when `type` agrees with the reference shape.
std::string CompareTensor(const DimContext& dims, const TensorType& type, vm::DType dtype,
                          const std::vector<int64_t>& shape,
                          const absl::flat_hash_map<int32_t, int64_t>& bindings) {
  if (type.dtype != dtype) {
    return absl::StrCat("dtype ", vm::DTypeName(type.dtype), ", reference ", vm::DTypeName(dtype));
  }
  if (!type.has_rank()) return "?rank";
  if (type.rank() != static_cast<int>(shape.size())) {
    return absl::StrCat("type ", TensorTypeToString(type, dims), ", reference shape [",
                        absl::StrJoin(shape, ", "), "]");
  }
  for (int a = 0; a < type.rank(); ++a) {
    const Dim& d = (*type.dims)[a];
    if (!d) continue;
    absl::StatusOr<int64_t> v = dims.Evaluate(*d, bindings);
    if (!v.ok()) return "?dim";  // mentions a run-time symbol
    if (*v != shape[a]) {
      return absl::StrCat("type ", TensorTypeToString(type, dims), ", reference shape [",
                          absl::StrJoin(shape, ", "), "]");
    }
  }
  return "";
}

enum class Outcome { kAgrees, kDiffers, kUnsupported, kNotImported, kRuntime };

Outcome CheckCase(const fs::path& dir, std::string& message) {
  absl::StatusOr<std::unique_ptr<Module>> module = ImportOnnxModel((dir / "model.onnx").string());
  if (!module.ok()) {
    message = std::string(module.status().message());
    return Outcome::kNotImported;
  }
  Module& m = **module;
  const char* dump = std::getenv("NIMBLE_TYPE_CONFORMANCE_DUMP");
  const bool dumping = dump != nullptr && dir.filename().string() == dump;
  if (dumping) printf("%s", m.ToString().c_str());
  absl::Status status = InferTypes(m);
  if (dumping) printf("%s\n%s", status.ToString().c_str(), m.ToString().c_str());
  if (status.code() == absl::StatusCode::kUnimplemented) {
    message = std::string(status.message());
    return Outcome::kUnsupported;
  }
  if (!status.ok()) {
    message = status.ToString();
    return Outcome::kDiffers;
  }
  const fs::path data = dir / "test_data_set_0";
  absl::flat_hash_map<int32_t, int64_t> bindings;
  const Graph& g = *m.main;
  bool runtime = false;
  for (size_t i = 0; i < g.inputs().size(); ++i) {
    Reference ref;
    const Type& t = g.inputs()[i]->type();
    if (!ReadReference((data / absl::StrCat("input_", i, ".pb")).string(), t, ref)) continue;
    if (t.is_tensor() && !ref.shapes.empty()) Bind(m.dims, t.tensor, ref.shapes[0], bindings);
  }
  for (size_t i = 0; i < g.outputs().size(); ++i) {
    const Type& t = g.outputs()[i]->type();
    Reference ref;
    if (!ReadReference((data / absl::StrCat("output_", i, ".pb")).string(), t, ref)) {
      message =
          absl::StrCat("output ", i, ": cannot read the reference as ", TypeToString(t, m.dims));
      return Outcome::kDiffers;
    }
    if (ref.empty_optional || ref.shapes.empty()) continue;
    for (const std::vector<int64_t>& shape : ref.shapes) {
      std::string diff = CompareTensor(m.dims, t.tensor, ref.dtype, shape, bindings);
      if (diff == "?rank" || diff == "?dim") {
        message = absl::StrCat(message, " output ", i, ": ", TypeToString(t, m.dims));
        runtime = true;
        continue;
      }
      if (!diff.empty()) {
        message = absl::StrCat("output ", i, ": ", diff);
        return Outcome::kDiffers;
      }
    }
  }
  return runtime ? Outcome::kRuntime : Outcome::kAgrees;
}

TEST(TypeInferenceConformanceTest, NodeSuite) {
  if (!fs::is_directory(kSuite)) GTEST_SKIP() << kSuite << " is not present";
  std::vector<fs::path> cases;
  for (const fs::directory_entry& e : fs::directory_iterator(kSuite)) {
    if (e.is_directory()) cases.push_back(e.path());
  }
  std::sort(cases.begin(), cases.end());
  const bool verbose = std::getenv("NIMBLE_TYPE_CONFORMANCE_VERBOSE") != nullptr;
  std::map<Outcome, int> counts;
  std::set<std::string> unsupported_ops;
  for (const fs::path& dir : cases) {
    const std::string name = dir.filename().string();
    std::string message;
    const Outcome outcome = CheckCase(dir, message);
    ++counts[outcome];
    if (outcome == Outcome::kUnsupported) {
      const size_t start = message.find("operator '");
      if (start != std::string::npos) {
        unsupported_ops.insert(
            message.substr(start + 10, message.find('\'', start + 10) - start - 10));
      }
    }
    const bool known = KnownDifferences().count(name) != 0;
    if (verbose) printf("%-70s %d %s\n", name.c_str(), static_cast<int>(outcome), message.c_str());
    if (outcome == Outcome::kDiffers && !known) {
      ADD_FAILURE() << name << ": " << message;
    } else if ((outcome == Outcome::kAgrees || outcome == Outcome::kRuntime) && known) {
      ADD_FAILURE() << name << " agrees now; remove it from KnownDifferences";
    }
  }
  printf(
      "type inference on %zu cases: %d agree, %d agree up to run-time dims, %d differ, "
      "%d unsupported, %d not imported\n",
      cases.size(), counts[Outcome::kAgrees], counts[Outcome::kRuntime], counts[Outcome::kDiffers],
      counts[Outcome::kUnsupported], counts[Outcome::kNotImported]);
  printf("operators without a type relation: %s\n", absl::StrJoin(unsupported_ops, ", ").c_str());
}

// Robustness: every case's model, perturbed at random (attributes set to extreme values, inputs
// dropped, graph input types replaced), must make InferTypes return a status, never crash (run
// under -DNIMBLE_SANITIZE=address,undefined to catch undefined behaviour too).
void Perturb(Module& m, std::mt19937_64& rng) {
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  const int64_t extremes[] = {-1, 0, 1, 3, -7, int64_t{1} << 41, INT64_MAX, INT64_MIN};
  auto extreme = [&] { return extremes[pick(std::size(extremes))]; };
  std::vector<Node*> nodes;
  std::function<void(Graph&)> collect = [&](Graph& g) {
    for (const auto& n : g.nodes()) {
      nodes.push_back(n.get());
      for (auto& [name, sub] : n->subgraphs()) collect(*sub);
    }
  };
  collect(*m.main);
  for (int round = 0; round < 3 && !nodes.empty(); ++round) {
    Node* n = nodes[pick(nodes.size())];
    switch (pick(4)) {
      case 0: {  // extreme integer attributes
        vm::Attributes attrs;
        for (const auto& [name, value] : n->attrs().values()) {
          if (std::holds_alternative<int64_t>(value)) {
            attrs.Set(name, extreme());
          } else if (std::holds_alternative<std::vector<int64_t>>(value)) {
            std::vector<int64_t> v(pick(5));
            for (int64_t& x : v) x = extreme();
            attrs.Set(name, v);
          } else {
            attrs.Set(name, value);
          }
        }
        n->attrs() = attrs;
        break;
      }
      case 1:  // an input dropped
        if (n->num_inputs() > 0) n->set_input(static_cast<int>(pick(n->num_inputs())), nullptr);
        break;
      case 2: {  // a graph input of another type
        if (m.main->inputs().empty()) break;
        Value* in = m.main->inputs()[pick(m.main->inputs().size())];
        const vm::DType dtypes[] = {vm::DType::kF32, vm::DType::kI64, vm::DType::kBool,
                                    vm::DType::kI32};
        TensorType t{dtypes[pick(4)], std::nullopt};
        if (pick(4) != 0) {
          t.dims.emplace();
          for (size_t a = pick(6); a > 0; --a) {
            const size_t k = pick(4);
            t.dims->push_back(k == 0   ? Dim()
                              : k == 1 ? Dim(m.dims.Symbol(absl::StrCat("p", pick(3))))
                                       : Dim(DimExpr::Const(k == 2 ? 1 : 3)));
          }
        }
        in->set_type(Type::Tensor(std::move(t)));
        break;
      }
      default: {  // a constant tensor attribute of another shape and type
        for (const auto& [name, value] : n->attrs().values()) {
          if (std::holds_alternative<vm::Tensor>(value)) {
            std::vector<int64_t> data(pick(4), extreme());
            const std::vector<int64_t> shape{static_cast<int64_t>(data.size())};
            n->attrs().Set(name, vm::Tensor::FromVector<int64_t>(data, shape));
            break;
          }
        }
      }
    }
  }
}

TEST(TypeInferenceConformanceTest, PerturbedModelsNeverCrash) {
  if (!fs::is_directory(kSuite)) GTEST_SKIP() << kSuite << " is not present";
  std::vector<fs::path> cases;
  for (const fs::directory_entry& e : fs::directory_iterator(kSuite)) {
    if (e.is_directory()) cases.push_back(e.path());
  }
  std::sort(cases.begin(), cases.end());
  const char* seed = std::getenv("NIMBLE_PERTURB_SEED");  // for longer runs by hand
  std::mt19937_64 rng(seed ? std::strtoull(seed, nullptr, 10) : 20261125);
  int ok = 0, errors = 0;
  for (const fs::path& dir : cases) {
    for (int trial = 0; trial < 4; ++trial) {
      absl::StatusOr<std::unique_ptr<Module>> module =
          ImportOnnxModel((dir / "model.onnx").string());
      if (!module.ok()) break;
      Perturb(**module, rng);
      const absl::Status status = InferTypes(**module);
      ++(status.ok() ? ok : errors);
      // Internal errors are our bugs; everything else is a diagnosis of the model.
      EXPECT_NE(status.code(), absl::StatusCode::kInternal) << dir.filename() << ": " << status;
    }
  }
  printf("perturbed models: %d inferred, %d rejected with a status\n", ok, errors);
}

// A development aid: NIMBLE_TYPE_INFER_MODEL=<model.onnx> prints the model's IR after inference
// with a summary of run-time nodes and checks.
TEST(TypeInferenceConformanceTest, ModelFromEnvironment) {
  const char* path = std::getenv("NIMBLE_TYPE_INFER_MODEL");
  if (path == nullptr) GTEST_SKIP() << "NIMBLE_TYPE_INFER_MODEL is not set";
  absl::StatusOr<std::unique_ptr<Module>> module = ImportOnnxModel(path);
  ASSERT_TRUE(module.ok()) << module.status();
  ASSERT_TRUE(InferTypes(**module).ok()) << InferTypes(**module);
  printf("%s", (*module)->ToString().c_str());
  int runtime = 0, checks = 0;
  for (const auto& node : (*module)->main->nodes()) {
    runtime += node->attrs().Has("_shape_mode");
    checks += static_cast<int>(node->attrs().GetOr<std::vector<std::string>>("_checks", {}).size());
  }
  printf("%zu nodes, %d with run-time shapes, %d run-time checks\n",
         (*module)->main->nodes().size(), runtime, checks);
}

}  // namespace
}  // namespace nimble::compiler
