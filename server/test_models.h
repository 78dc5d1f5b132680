// Tiny ONNX models for the server's unit tests, built in memory.
#pragma once

#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "compiler/frontend/onnx/onnx.pb.h"
#include "vm/runtime/tensor.h"

namespace nimble::server::testing {

// y = op(x, x) (or op(x) for one-input ops) with x: `elem_type`[n, 4], n a symbol.
inline std::string ElementwiseModel(const std::string& op, int elem_type = 1 /*FLOAT*/,
                                    int inputs = 2) {
  nimble::onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(17);
  auto* graph = model.mutable_graph();
  graph->set_name("test");
  auto* node = graph->add_node();
  node->set_op_type(op);
  for (int i = 0; i < inputs; ++i) node->add_input("x");
  node->add_output("y");
  for (auto* value : {graph->add_input(), graph->add_output()}) {
    value->set_name(value == &graph->input(0) ? "x" : "y");
    auto* tensor = value->mutable_type()->mutable_tensor_type();
    tensor->set_elem_type(elem_type);
    tensor->mutable_shape()->add_dim()->set_dim_param("n");
    tensor->mutable_shape()->add_dim()->set_dim_value(4);
  }
  return model.SerializeAsString();
}

// A sequence model for the batcher: x: FLOAT[b, s, 4], m: INT64[b, s];
// y = x + x (FLOAT[b, s, 4]), z = ReduceSum(x, axis 1) (FLOAT[b, 4]), w = m + m (INT64[b, s]).
inline std::string SequenceModel() {
  nimble::onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(17);
  auto* graph = model.mutable_graph();
  graph->set_name("sequence");
  auto add_node = [&](const std::string& op, std::vector<std::string> in, const std::string& out) {
    auto* node = graph->add_node();
    node->set_op_type(op);
    for (const std::string& i : in) node->add_input(i);
    node->add_output(out);
    if (op == "ReduceSum") {
      auto* keep = node->add_attribute();
      keep->set_name("keepdims");
      keep->set_type(nimble::onnx::AttributeProto::INT);
      keep->set_i(0);
    }
  };
  auto* axes = graph->add_initializer();
  axes->set_name("axes");
  axes->set_data_type(7);  // INT64
  axes->add_dims(1);
  axes->add_int64_data(1);
  add_node("Add", {"x", "x"}, "y");
  add_node("ReduceSum", {"x", "axes"}, "z");
  add_node("Add", {"m", "m"}, "w");
  auto value = [](nimble::onnx::ValueInfoProto* v, const std::string& name, int elem_type,
                  std::vector<std::string> dims) {
    v->set_name(name);
    auto* tensor = v->mutable_type()->mutable_tensor_type();
    tensor->set_elem_type(elem_type);
    for (const std::string& d : dims) {
      if (d == "4") {
        tensor->mutable_shape()->add_dim()->set_dim_value(4);
      } else {
        tensor->mutable_shape()->add_dim()->set_dim_param(d);
      }
    }
  };
  value(graph->add_input(), "x", 1, {"b", "s", "4"});
  value(graph->add_input(), "m", 7, {"b", "s"});
  value(graph->add_output(), "y", 1, {"b", "s", "4"});
  value(graph->add_output(), "z", 1, {"b", "4"});
  value(graph->add_output(), "w", 7, {"b", "s"});
  return model.SerializeAsString();
}

// Inputs of SequenceModel: x[batch, seq, 4] = base + position, m[batch, seq] = base + position.
inline std::vector<vm::Tensor> SequenceRequest(int64_t batch, int64_t seq, float base) {
  std::vector<float> x(batch * seq * 4);
  std::iota(x.begin(), x.end(), base);
  std::vector<int64_t> m(batch * seq);
  std::iota(m.begin(), m.end(), static_cast<int64_t>(base));
  return {vm::Tensor::FromVector<float>(x, {batch, seq, 4}),
          vm::Tensor::FromVector<int64_t>(m, {batch, seq})};
}

// A tensor's elements as a vector.
template <typename T>
std::vector<T> Values(const vm::Tensor& t) {
  return std::vector<T>(t.data<T>(), t.data<T>() + t.num_elements());
}

}  // namespace nimble::server::testing
