// Tiny ONNX models for the server's unit tests, built in memory.
#pragma once

#include <string>
#include <vector>

#include "compiler/frontend/onnx/onnx.pb.h"

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

}  // namespace nimble::server::testing
