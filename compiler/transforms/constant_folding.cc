#include "compiler/transforms/constant_folding.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vm/kernels/kernel.h"

namespace nimble::compiler {
namespace {

// The tensor of an ONNX Constant node, from whichever value_* attribute it has.
absl::StatusOr<vm::Tensor> ConstantNodeValue(const Node& node) {
  const vm::Attributes& a = node.attrs();
  if (auto t = a.Get<vm::Tensor>("value"); t.ok()) return *t;
  if (auto f = a.Get<double>("value_float"); f.ok()) {
    const float v = static_cast<float>(*f);
    return vm::Tensor::FromVector<float>(absl::MakeConstSpan(&v, 1), {});
  }
  if (auto fs = a.Get<std::vector<double>>("value_floats"); fs.ok()) {
    std::vector<float> v(fs->begin(), fs->end());
    return vm::Tensor::FromVector<float>(v, {static_cast<int64_t>(v.size())});
  }
  if (auto i = a.Get<int64_t>("value_int"); i.ok()) {
    return vm::Tensor::FromVector<int64_t>(absl::MakeConstSpan(&*i, 1), {});
  }
  if (auto is = a.Get<std::vector<int64_t>>("value_ints"); is.ok()) {
    return vm::Tensor::FromVector<int64_t>(*is, {static_cast<int64_t>(is->size())});
  }
  if (auto s = a.Get<std::string>("value_string"); s.ok()) {
    NIMBLE_ASSIGN_OR_RETURN(vm::Tensor t, vm::Tensor::Empty(vm::DType::kString, {}));
    *t.data<std::string>() = *s;
    return t;
  }
  if (auto ss = a.Get<std::vector<std::string>>("value_strings"); ss.ok()) {
    NIMBLE_ASSIGN_OR_RETURN(
        vm::Tensor t, vm::Tensor::Empty(vm::DType::kString, {static_cast<int64_t>(ss->size())}));
    for (size_t i = 0; i < ss->size(); ++i) t.data<std::string>()[i] = (*ss)[i];
    return t;
  }
  return absl::UnimplementedError(absl::StrCat(
      node.Describe(),
      ": Constant without a supported value attribute (sparse_value is not supported)"));
}

bool Foldable(const Node& node) {
  if (!node.subgraphs().empty() || node.num_outputs() == 0) return false;
  for (const Value* in : node.inputs()) {
    if (in != nullptr && !in->is_constant()) return false;
  }
  for (const Value* out : node.outputs()) {
    if (!out->type().is_tensor()) return false;
  }
  // Random ops must stay random.
  const std::string& op = node.op_type();
  return op != "RandomNormal" && op != "RandomUniform" && op != "RandomNormalLike" &&
         op != "RandomUniformLike" && op != "Multinomial" && op != "Bernoulli";
}

absl::StatusOr<std::vector<vm::Tensor>> Evaluate(const Node& node, int64_t max_bytes) {
  const std::string name =
      node.domain().empty() ? node.op_type() : absl::StrCat(node.domain(), ".", node.op_type());
  vm::Attributes attrs;
  for (const auto& [k, v] : node.attrs().values()) {
    if (!k.empty() && k[0] != '_') attrs.Set(k, v);
  }
  NIMBLE_ASSIGN_OR_RETURN(std::unique_ptr<vm::Kernel> kernel,
                          vm::KernelRegistry::Global().Create(name, vm::DeviceType::kCPU, attrs));
  std::vector<vm::Tensor> inputs;
  for (const Value* in : node.inputs()) inputs.push_back(in ? *in->constant() : vm::Tensor());
  std::vector<vm::Tensor> outputs(node.num_outputs());
  vm::KernelContext ctx;
  if (!kernel->allocates_outputs()) {
    std::vector<vm::Shape> shapes(node.num_outputs());
    NIMBLE_RETURN_IF_ERROR(kernel->OutputShapes(inputs, absl::MakeSpan(shapes)));
    for (int i = 0; i < node.num_outputs(); ++i) {
      const vm::DType dtype = node.output(i)->tensor_type().dtype;
      NIMBLE_ASSIGN_OR_RETURN(int64_t n, vm::NumElements(shapes[i]));
      if (n * static_cast<int64_t>(vm::DTypeSize(dtype)) > max_bytes) {
        return absl::ResourceExhaustedError("result too large to fold");
      }
      NIMBLE_ASSIGN_OR_RETURN(outputs[i], vm::Tensor::Empty(dtype, shapes[i]));
    }
  }
  NIMBLE_RETURN_IF_ERROR(kernel->Run(ctx, inputs, absl::MakeSpan(outputs)));
  return outputs;
}

}  // namespace

namespace {

absl::StatusOr<int> FoldGraph(Graph& g, const ConstantFoldingOptions& options) {
  int folded = 0;
  // Nodes are in topological order, so one forward sweep folds whole constant chains.
  std::vector<Node*> nodes;
  for (const auto& n : g.nodes()) nodes.push_back(n.get());
  for (Node* node : nodes) {
    for (auto& [name, sub] : node->subgraphs()) {
      NIMBLE_ASSIGN_OR_RETURN(int in_sub, FoldGraph(*sub, options));
      folded += in_sub;
    }
    std::vector<vm::Tensor> results;
    if (node->op_type() == "Constant" && node->domain().empty()) {
      NIMBLE_ASSIGN_OR_RETURN(vm::Tensor t, ConstantNodeValue(*node));
      results.push_back(std::move(t));
    } else if (Foldable(*node)) {
      auto evaluated = Evaluate(*node, options.max_folded_bytes);
      // A kernel that cannot evaluate here (unsupported, too large) runs at run time instead;
      // a genuine error in the model will be reported there with the same message.
      if (!evaluated.ok()) continue;
      results = *std::move(evaluated);
    } else {
      continue;
    }
    for (int i = 0; i < node->num_outputs(); ++i) {
      Value* out = node->output(i);
      std::vector<int64_t> dims(results[i].shape().begin(), results[i].shape().end());
      Value* constant = g.AddConstant(out->name(), results[i],
                                      Type::Tensor(TensorType::Static(results[i].dtype(), dims)));
      constant->set_symbolic_value(out->symbolic_value());
      g.ReplaceAllUsesWith(out, constant);
    }
    ++folded;
  }
  g.RemoveDeadNodes();
  return folded;
}

}  // namespace

absl::StatusOr<int> FoldConstants(Module& module, const ConstantFoldingOptions& options) {
  return FoldGraph(*module.main, options);
}

}  // namespace nimble::compiler
