#include "compiler/transforms/pattern_util.h"

namespace nimble::compiler {

std::optional<double> ScalarConstant(const Value* v) {
  if (v == nullptr || !v->is_constant()) return std::nullopt;
  const vm::Tensor& t = *v->constant();
  if (t.num_elements() != 1) return std::nullopt;
  switch (t.dtype()) {
    case vm::DType::kF32:
      return *t.data<float>();
    case vm::DType::kF64:
      return *t.data<double>();
    case vm::DType::kI64:
      return static_cast<double>(*t.data<int64_t>());
    case vm::DType::kI32:
      return *t.data<int32_t>();
    default:
      return std::nullopt;
  }
}

bool IsConstantVector(const Value* v, int64_t n) {
  if (v == nullptr || !v->is_constant()) return false;
  const vm::Tensor& t = *v->constant();
  if (t.rank() == 0 || t.shape().back() != n || t.num_elements() != n) return false;
  return true;
}

bool SameTensorType(const Value* a, const Value* b) {
  if (!a || !b || !a->type().is_tensor() || !b->type().is_tensor()) return false;
  const TensorType& ta = a->tensor_type();
  const TensorType& tb = b->tensor_type();
  return ta.dtype == tb.dtype && ta.fully_known() && tb.fully_known() && *ta.dims == *tb.dims;
}

Node* ReplaceValue(Graph& g, Value* old, const std::string& op, std::vector<Value*> inputs,
                   const std::string& name, const Node* after) {
  Node* n = g.AddNode(op, std::move(inputs), 1, name);
  n->output(0)->set_type(old->type());
  n->output(0)->set_name(old->name());
  g.MoveLastNodeAfter(after);
  g.ReplaceAllUsesWith(old, n->output(0));
  return n;
}

std::optional<std::vector<int64_t>> IntsFromAttrOrInput(const Node& node, const char* attr,
                                                        int input) {
  if (auto a = node.attrs().Get<std::vector<int64_t>>(attr); a.ok()) return *a;
  const Value* v = node.input(input);
  if (v == nullptr || !v->is_constant()) return std::nullopt;
  const vm::Tensor& t = *v->constant();
  std::vector<int64_t> out;
  if (t.dtype() == vm::DType::kI64) {
    out.assign(t.data<int64_t>(), t.data<int64_t>() + t.num_elements());
  } else if (t.dtype() == vm::DType::kI32) {
    out.assign(t.data<int32_t>(), t.data<int32_t>() + t.num_elements());
  } else {
    return std::nullopt;
  }
  return out;
}

}  // namespace nimble::compiler
