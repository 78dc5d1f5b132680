#include "compiler/transforms/lower_precision.h"

#include <algorithm>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "compiler/transforms/pattern_util.h"
#include "vm/kernels/cpu/fp16.h"
#include "vm/kernels/kernel.h"

namespace nimble::compiler {
namespace {

std::string KernelName(const Node& node) {
  return node.domain().empty() ? node.op_type() : absl::StrCat(node.domain(), ".", node.op_type());
}

bool IsGemm(const Node& node) {
  const std::string& op = node.op_type();
  return node.domain().empty() && (op == "MatMul" || op == "FusedMatMul" || op == "Gemm");
}

bool IsView(const Node& node) {
  static const std::set<std::string> kViews = {"Reshape", "Flatten", "Squeeze", "Unsqueeze",
                                               "Identity"};
  return node.domain().empty() && kViews.count(node.op_type()) != 0 && node.num_outputs() == 1;
}

// Reads only its input's shape: no Cast is needed in front of it.
bool ReadsShapeOnly(const Node& node) {
  return node.domain().empty() && (node.op_type() == "Shape" || node.op_type() == "Size");
}

// Starts a half region: the GEMMs, attention, layer norm, embedding lookups (also fused with
// their layer norm).
bool IsAnchor(const Node& node) {
  if (!node.domain().empty()) return false;
  const std::string& op = node.op_type();
  if (IsGemm(node) || op == "Attention" || op == "LayerNormalization" || op == "EmbedLayerNorm") {
    return true;
  }
  return op == "Gather" && node.input(0) != nullptr && node.input(0)->is_constant() &&
         IsF32(node.input(0));
}

// The attention mask keeps its dtype (see the header).
bool KeepsDType(const Node& node, int input) {
  return node.domain().empty() && node.op_type() == "Attention" && input == 3;
}

vm::Attributes KernelAttrs(const Node& node) {
  vm::Attributes attrs;
  for (const auto& [name, value] : node.attrs().values()) {
    if (name.empty() || name[0] != '_') attrs.Set(name, value);
  }
  return attrs;
}

bool DeviceAccepts(const Node& node, const std::vector<vm::DType>& ins,
                   const std::vector<vm::DType>& outs, vm::DeviceType device) {
  const vm::KernelRegistry& registry = vm::KernelRegistry::Global();
  const std::string name = KernelName(node);
  if (!registry.Has(name, device)) return false;
  const vm::KernelTraits traits = registry.Traits(name, device);
  const vm::Attributes attrs = KernelAttrs(node);
  if (traits.supports && !traits.supports(ins, outs, attrs)) return false;
  return registry.Create(name, device, attrs).ok();
}

class Lowering {
 public:
  Lowering(Graph& g, vm::DType half, bool tanh_gelu, bool half_outputs)
      : g_(g), half_(half), tanh_gelu_(tanh_gelu), half_outputs_(half_outputs) {}

  absl::StatusOr<int> Run(vm::DeviceType device) {
    std::vector<Node*> order;
    for (const auto& node : g_.nodes()) order.push_back(node.get());
    auto is_output = [&](const Value* v) {
      return std::find(g_.outputs().begin(), g_.outputs().end(), v) != g_.outputs().end();
    };
    int lowered_nodes = 0;
    for (Node* node : order) {
      bool lower = false;
      if (node->subgraphs().empty()) {
        if (IsView(*node)) {
          lower = lowered_.contains(node->input(0)) && IsF32(node->output(0));
        } else {
          lower = Candidate(*node) && DeviceAccepts(*node, InTypes(*node), OutTypes(*node), device);
        }
      }
      if (!lower) {
        if (ReadsShapeOnly(*node)) continue;
        for (int i = 0; i < node->num_inputs(); ++i) {
          Value* in = node->input(i);
          if (in != nullptr && lowered_.contains(in))
            node->set_input(i, CastTo(in, vm::DType::kF32));
        }
        continue;
      }
      ++lowered_nodes;
      // A LayerNorm whose result is a model output reads half and writes the f32 result itself,
      // where the device's kernel can: the result leaves for the host with no Cast kernel in
      // between (BERT's last_hidden_state), and half consumers, if any, read it through a Cast
      // (BERT's pooler: one row).
      const bool f32_result = !half_outputs_ && node->domain().empty() &&
                              node->op_type() == "LayerNormalization" && node->num_outputs() == 1 &&
                              IsF32(node->output(0)) && is_output(node->output(0)) &&
                              DeviceAccepts(*node, InTypes(*node), {vm::DType::kF32}, device);
      const int data_inputs = IsView(*node) ? 1 : node->num_inputs();
      for (int i = 0; i < data_inputs; ++i) {
        Value* in = node->input(i);
        if (!IsF32(in) || KeepsDType(*node, i)) continue;
        if (in->is_constant()) {
          NIMBLE_ASSIGN_OR_RETURN(Value * c, HalfConstant(in));
          node->set_input(i, c);
        } else {
          node->set_input(i, CastTo(in, half_));
        }
      }
      for (Value* out : node->outputs()) {
        if (!IsF32(out) || f32_result) continue;
        out->type().tensor.dtype = half_;
        lowered_.insert(out);
      }
      if (tanh_gelu_ && node->op_type() == "FusedMatMul" &&
          node->attrs().GetOr<std::string>("activation", "") == "gelu") {
        node->attrs().Set("activation", std::string("gelu_tanh"));
      }
    }
    // Model outputs keep their dtype: the half value is renamed, its f32 cast takes the name.
    // With half_outputs the half value is the output.
    std::vector<Value*>& outputs = g_.mutable_outputs();
    for (Value*& out : outputs) {
      if (half_outputs_ || !lowered_.contains(out)) continue;
      const bool made = !to_f32_.contains(out);
      Value* f32 = CastTo(out, vm::DType::kF32);
      // Right after what it casts, so that the result leaves for the host while the rest of
      // the graph computes (vm_codegen emits its copy there).
      if (made && out->producer() != nullptr) g_.MoveLastNodeAfter(out->producer());
      const std::string name = out->name();
      if (!name.empty()) {
        out->set_name(absl::StrCat(name, "/half"));
        f32->set_name(name);
      }
      out = f32;
    }
    NIMBLE_RETURN_IF_ERROR(g_.TopologicalSort());
    return lowered_nodes;
  }

 private:
  // Whether the node would compute in half: it starts a region or reads a half value, and has
  // float32 outputs.
  bool Candidate(const Node& node) const {
    bool f32_out = false;
    for (const Value* out : node.outputs()) f32_out = f32_out || IsF32(out);
    if (!f32_out) return false;
    if (IsAnchor(node)) return true;
    for (const Value* in : node.inputs()) {
      if (in != nullptr && lowered_.contains(in)) return true;
    }
    return false;
  }

  std::vector<vm::DType> InTypes(const Node& node) const {
    std::vector<vm::DType> types;
    for (int i = 0; i < node.num_inputs(); ++i) {
      const Value* in = node.input(i);
      if (in == nullptr || !in->type().is_tensor()) {
        types.push_back(vm::DType::kInvalid);
      } else if (IsF32(in) && !KeepsDType(node, i)) {
        types.push_back(half_);
      } else {
        types.push_back(in->tensor_type().dtype);
      }
    }
    return types;
  }

  std::vector<vm::DType> OutTypes(const Node& node) const {
    std::vector<vm::DType> types;
    for (const Value* out : node.outputs()) {
      types.push_back(!out->type().is_tensor() ? vm::DType::kInvalid
                      : IsF32(out)             ? half_
                                               : out->tensor_type().dtype);
    }
    return types;
  }

  // A Cast of `v` to `to` (one per value and direction).
  Value* CastTo(Value* v, vm::DType to) {
    auto& memo = to == vm::DType::kF32 ? to_f32_ : to_half_;
    if (auto it = memo.find(v); it != memo.end()) return it->second;
    Node* cast = g_.AddNode("Cast", {v}, 1, absl::StrCat(v->name(), "/cast_", vm::DTypeName(to)));
    cast->set_opset(19);
    cast->attrs().Set("to", static_cast<int64_t>(vm::DTypeToOnnx(to)));
    TensorType t = v->tensor_type();
    t.dtype = to;
    cast->output(0)->set_type(Type::Tensor(t));
    if (!v->name().empty())
      cast->output(0)->set_name(absl::StrCat(v->name(), "/", vm::DTypeName(to)));
    memo[v] = cast->output(0);
    if (to != vm::DType::kF32) lowered_.insert(cast->output(0));
    return cast->output(0);
  }

  // The weight converted at compile time (one per constant).
  absl::StatusOr<Value*> HalfConstant(Value* v) {
    if (auto it = to_half_.find(v); it != to_half_.end()) return it->second;
    const vm::Tensor& f32 = *v->constant();
    NIMBLE_ASSIGN_OR_RETURN(vm::Tensor h, vm::Tensor::Empty(half_, f32.shape()));
    const float* src = f32.data<float>();
    auto* dst = static_cast<uint16_t*>(h.raw_data());
    if (half_ == vm::DType::kF16) {
      vm::cpu::FloatToHalf(src, dst, f32.num_elements());
    } else {
      vm::cpu::FloatToBFloat16(src, dst, f32.num_elements());
    }
    TensorType t = v->tensor_type();
    t.dtype = half_;
    Value* c = g_.AddConstant(absl::StrCat(v->name(), "/", vm::DTypeName(half_)), std::move(h),
                              Type::Tensor(t));
    to_half_[v] = c;
    lowered_.insert(c);
    return c;
  }

  Graph& g_;
  const vm::DType half_;
  const bool tanh_gelu_;
  const bool half_outputs_;
  absl::flat_hash_set<const Value*> lowered_;  // values stored as half_
  absl::flat_hash_map<const Value*, Value*> to_half_, to_f32_;
};

}  // namespace

absl::StatusOr<Precision> ParsePrecision(absl::string_view name) {
  if (name == "fp32") return Precision::kF32;
  if (name == "tf32") return Precision::kTF32;
  if (name == "fp16") return Precision::kF16;
  if (name == "bf16") return Precision::kBF16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown precision '", name, "' (fp32, tf32, fp16 or bf16)"));
}

const char* PrecisionName(Precision precision) {
  switch (precision) {
    case Precision::kF32:
      return "fp32";
    case Precision::kTF32:
      return "tf32";
    case Precision::kF16:
      return "fp16";
    case Precision::kBF16:
      return "bf16";
  }
  return "?";
}

absl::StatusOr<int> LowerPrecision(Module& module, Precision precision, vm::DeviceType device,
                                   bool tanh_gelu, bool half_outputs) {
  if (precision == Precision::kF32) return 0;
  if (device == vm::DeviceType::kCPU) {
    return absl::InvalidArgumentError(absl::StrCat("precision ", PrecisionName(precision),
                                                   " needs a GPU device (--device=cuda)"));
  }
  Graph& g = *module.main;
  if (precision == Precision::kTF32) {
    int marked = 0;
    for (const auto& node : g.nodes()) {
      if (!IsGemm(*node) || !IsF32(node->output(0))) continue;
      node->attrs().Set("precision", std::string("tf32"));
      ++marked;
    }
    return marked;
  }
  const vm::DType half = precision == Precision::kF16 ? vm::DType::kF16 : vm::DType::kBF16;
  return Lowering(g, half, tanh_gelu, half_outputs).Run(device);
}

}  // namespace nimble::compiler
