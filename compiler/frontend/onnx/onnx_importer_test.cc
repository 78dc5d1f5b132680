#include "compiler/frontend/onnx/onnx_importer.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "base/testing/status_matchers.h"
#include "compiler/frontend/onnx/onnx.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nimble::compiler {
namespace {

namespace fs = std::filesystem;
namespace pb = nimble::onnx;
using ::nimble::testing::IsOk;
using ::nimble::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kSuite[] = "../shared/conformance/onnx-node";

// ----------------------------------------------------------------------------------------------
// Model building helpers.

pb::ModelProto NewModel(int opset = 17) {
  pb::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("nimble-test");
  m.set_producer_version("1.0");
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(opset);
  m.mutable_graph()->set_name("g");
  return m;
}

// Dims: "3" -> dim_value, "?" -> no value, anything else -> dim_param.
void SetTensorType(pb::TypeProto* type, int elem_type, const std::vector<std::string>& dims,
                   bool has_shape = true) {
  auto* t = type->mutable_tensor_type();
  t->set_elem_type(elem_type);
  if (!has_shape) return;
  auto* shape = t->mutable_shape();
  for (const std::string& d : dims) {
    auto* dim = shape->add_dim();
    if (d == "?") continue;
    if (std::all_of(d.begin(), d.end(), ::isdigit)) {
      dim->set_dim_value(std::stoll(d));
    } else {
      dim->set_dim_param(d);
    }
  }
}

pb::ValueInfoProto* AddInput(pb::GraphProto* g, const std::string& name, int elem_type,
                             const std::vector<std::string>& dims, bool has_shape = true) {
  auto* vi = g->add_input();
  vi->set_name(name);
  SetTensorType(vi->mutable_type(), elem_type, dims, has_shape);
  return vi;
}

pb::ValueInfoProto* AddOutput(pb::GraphProto* g, const std::string& name, int elem_type = 0,
                              const std::vector<std::string>& dims = {}, bool has_shape = false) {
  auto* vi = g->add_output();
  vi->set_name(name);
  if (elem_type != 0 || has_shape) SetTensorType(vi->mutable_type(), elem_type, dims, has_shape);
  return vi;
}

pb::NodeProto* AddNode(pb::GraphProto* g, const std::string& op, std::vector<std::string> inputs,
                       std::vector<std::string> outputs, const std::string& name = "") {
  auto* n = g->add_node();
  n->set_op_type(op);
  if (!name.empty()) n->set_name(name);
  for (auto& i : inputs) n->add_input(i);
  for (auto& o : outputs) n->add_output(o);
  return n;
}

pb::TensorProto* AddFloatInitializer(pb::GraphProto* g, const std::string& name,
                                     std::vector<int64_t> dims, std::vector<float> values) {
  auto* t = g->add_initializer();
  t->set_name(name);
  t->set_data_type(pb::TensorProto::FLOAT);
  for (int64_t d : dims) t->add_dims(d);
  for (float v : values) t->add_float_data(v);
  return t;
}

pb::AttributeProto* AddAttr(pb::NodeProto* n, const std::string& name,
                            pb::AttributeProto::AttributeType type) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(type);
  return a;
}

absl::StatusOr<std::unique_ptr<Module>> Import(const pb::ModelProto& m,
                                               const ImportOptions& options = {}) {
  return ImportOnnxModelFromBytes(m.SerializeAsString(), "", options);
}

// x: f32[batch, 4], w: f32[4] initializer; y = Add(x, w); z = Relu(y).
pb::ModelProto TwoNodeModel() {
  pb::ModelProto m = NewModel();
  pb::GraphProto* g = m.mutable_graph();
  AddInput(g, "x", pb::TensorProto::FLOAT, {"batch", "4"});
  AddFloatInitializer(g, "w", {4}, {1, 2, 3, 4});
  AddNode(g, "Add", {"x", "w"}, {"y"}, "add");
  AddNode(g, "Relu", {"y"}, {"z"});
  auto* vi = g->add_value_info();
  vi->set_name("y");
  SetTensorType(vi->mutable_type(), pb::TensorProto::FLOAT, {"batch", "4"});
  AddOutput(g, "z", pb::TensorProto::FLOAT);
  return m;
}

// cond: bool[], x: f32[2], w: f32[2] initializer.
//   out = If(cond) then { t = Add(x, x) -> t }
//                  else { inner = If(cond) then { a = Mul(x, w) -> a } else { -> w } -> inner }
pb::ModelProto IfModel() {
  pb::ModelProto m = NewModel(16);
  pb::GraphProto* g = m.mutable_graph();
  AddInput(g, "cond", pb::TensorProto::BOOL, {});
  AddInput(g, "x", pb::TensorProto::FLOAT, {"2"});
  AddFloatInitializer(g, "w", {2}, {5, 6});
  pb::NodeProto* if_node = AddNode(g, "If", {"cond"}, {"out"}, "outer_if");

  pb::GraphProto* then_g = AddAttr(if_node, "then_branch", pb::AttributeProto::GRAPH)->mutable_g();
  then_g->set_name("then");
  AddNode(then_g, "Add", {"x", "x"}, {"t"}, "then_add");
  AddOutput(then_g, "t", pb::TensorProto::FLOAT, {"2"}, true);

  pb::GraphProto* else_g = AddAttr(if_node, "else_branch", pb::AttributeProto::GRAPH)->mutable_g();
  else_g->set_name("else");
  pb::NodeProto* inner = AddNode(else_g, "If", {"cond"}, {"inner"}, "inner_if");
  pb::GraphProto* inner_then =
      AddAttr(inner, "then_branch", pb::AttributeProto::GRAPH)->mutable_g();
  inner_then->set_name("inner_then");
  AddNode(inner_then, "Mul", {"x", "w"}, {"a"}, "inner_mul");
  AddOutput(inner_then, "a");
  pb::GraphProto* inner_else =
      AddAttr(inner, "else_branch", pb::AttributeProto::GRAPH)->mutable_g();
  inner_else->set_name("inner_else");
  AddOutput(inner_else, "w");
  AddOutput(else_g, "inner");

  AddOutput(g, "out", pb::TensorProto::FLOAT, {"2"}, true);
  return m;
}

// Structural invariants every imported module must satisfy: inputs are null, values of this
// graph defined before use, or values of an enclosing graph listed in the captures of this
// graph; subgraph parents point to the enclosing graph.
void CheckWellFormed(const Graph& g) {
  std::set<const Value*> defined(g.inputs().begin(), g.inputs().end());
  for (const auto& v : g.values()) {
    if (v->is_constant()) defined.insert(v.get());
  }
  const std::set<const Value*> captures(g.captures().begin(), g.captures().end());
  auto check = [&](const Value* v, const std::string& where) {
    ASSERT_NE(v, nullptr) << where;
    if (v->graph() == &g) {
      ASSERT_TRUE(defined.count(v)) << where << ": value %" << v->id() << " used before definition";
      return;
    }
    ASSERT_TRUE(captures.count(v)) << where << ": outer value " << v->name() << " not captured";
    bool enclosing = false;
    for (const Graph* p = g.parent(); p != nullptr; p = p->parent()) enclosing |= p == v->graph();
    ASSERT_TRUE(enclosing) << where;
  };
  for (const auto& n : g.nodes()) {
    for (const Value* in : n->inputs()) {
      if (in != nullptr) check(in, n->name());
    }
    for (const auto& [attr, sub] : n->subgraphs()) {
      ASSERT_EQ(sub->parent(), &g);
      CheckWellFormed(*sub);
      for (const Value* c : sub->captures()) {
        if (c->graph() != &g) check(c, n->name() + "." + attr + " capture");
      }
    }
    for (const Value* out : n->outputs()) defined.insert(out);
  }
  for (const Value* out : g.outputs()) check(out, "graph output");
}

// ----------------------------------------------------------------------------------------------

TEST(OnnxImporterTest, ImportsTwoNodeGraphWithSymbolicInputAndInitializer) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto module, Import(TwoNodeModel()));
  EXPECT_EQ(module->ToString(),
            "graph main(%0:x: f32[batch, 4]) {\n"
            "  %1:w: f32[4] = constant\n"
            "  %2:y: f32[batch, 4] = Add(%0:x, %1:w)\n"
            "  %3:z: f32[*] = Relu(%2:y)\n"
            "  return %3:z\n"
            "}\n");
  EXPECT_EQ(module->producer, "nimble-test 1.0");
  EXPECT_THAT(module->opsets, ElementsAre(std::pair<const std::string, int>("", 17)));
  const Graph& g = *module->main;
  ASSERT_EQ(g.nodes().size(), 2u);
  EXPECT_EQ(g.nodes()[0]->name(), "add");
  EXPECT_EQ(g.nodes()[1]->name(), "Relu_1");  // synthesized: no name in the model
  EXPECT_EQ(g.nodes()[1]->opset(), 17);
  EXPECT_EQ(g.nodes()[1]->domain(), "");
  // dim_param became a symbol with bounds [0, INT64_MAX].
  std::optional<int32_t> batch = module->dims.FindSymbol("batch");
  ASSERT_TRUE(batch.has_value());
  EXPECT_EQ(module->dims.atom(*batch).bounds.lo, 0);
  EXPECT_EQ(module->dims.atom(*batch).bounds.hi, INT64_MAX);
  // The initializer's value.
  const Value* w = g.nodes()[0]->input(1);
  ASSERT_TRUE(w->is_constant());
  const vm::Tensor& wt = *w->constant();
  EXPECT_EQ(wt.TypeString(), "f32[4]");
  EXPECT_EQ(wt.data<float>()[3], 4.0f);
  CheckWellFormed(g);
}

TEST(OnnxImporterTest, UnknownDimsAndRanks) {
  pb::ModelProto m = NewModel();
  pb::GraphProto* g = m.mutable_graph();
  AddInput(g, "a", pb::TensorProto::INT64, {"?", "n", "3"});
  AddInput(g, "b", pb::TensorProto::FLOAT16, {}, /*has_shape=*/false);
  AddInput(g, "c", pb::TensorProto::BOOL, {});  // a scalar
  AddNode(g, "Shape", {"a"}, {"s"});
  AddNode(g, "Identity", {"b"}, {"bb"});
  AddOutput(g, "s");
  AddOutput(g, "bb");
  AddOutput(g, "c");  // an output that is a graph input
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto module, Import(m));
  EXPECT_EQ(module->ToString(),
            "graph main(%0:a: i64[?, n, 3], %1:b: f16[*], %2:c: bool[]) {\n"
            "  %3:s: invalid[*] = Shape(%0:a)\n"
            "  %4:bb: invalid[*] = Identity(%1:b)\n"
            "  return %3:s, %4:bb, %2:c\n"
            "}\n");
}

TEST(OnnxImporterTest, ConvertsAttributesOfEveryKind) {
  pb::ModelProto m = NewModel();
  auto* ex = m.add_opset_import();
  ex->set_domain("com.example");
  ex->set_version(3);
  pb::GraphProto* g = m.mutable_graph();
  AddInput(g, "x", pb::TensorProto::FLOAT, {"2"});
  pb::NodeProto* n = AddNode(g, "Custom", {"x"}, {"y"}, "custom");
  n->set_domain("com.example");
  AddAttr(n, "f", pb::AttributeProto::FLOAT)->set_f(0.1f);
  AddAttr(n, "i", pb::AttributeProto::INT)->set_i(-3);
  AddAttr(n, "s", pb::AttributeProto::STRING)->set_s("abc");
  auto* floats = AddAttr(n, "floats", pb::AttributeProto::FLOATS);
  floats->add_floats(1.5f);
  floats->add_floats(-2.25f);
  auto* ints = AddAttr(n, "ints", pb::AttributeProto::INTS);
  for (int64_t v : {int64_t{1}, int64_t{2}, int64_t{1} << 40}) ints->add_ints(v);
  auto* strings = AddAttr(n, "strings", pb::AttributeProto::STRINGS);
  strings->add_strings("a");
  strings->add_strings("bc");
  auto* t = AddAttr(n, "t", pb::AttributeProto::TENSOR)->mutable_t();
  t->set_data_type(pb::TensorProto::INT64);
  t->add_dims(2);
  t->add_int64_data(7);
  t->add_int64_data(8);
  // IR version 1 style: no type, the value field decides.
  n->add_attribute()->set_name("untyped");
  n->mutable_attribute(n->attribute_size() - 1)->set_i(9);
  AddAttr(n, "empty_ints", pb::AttributeProto::INTS);
  AddOutput(g, "y");

  NIMBLE_ASSERT_OK_AND_ASSIGN(auto module, Import(m));
  EXPECT_EQ(module->opsets.at("com.example"), 3);
  const Node& node = *module->main->nodes()[0];
  EXPECT_EQ(node.domain(), "com.example");
  EXPECT_EQ(node.opset(), 3);
  const vm::Attributes& a = node.attrs();
  // FLOAT attributes are float32 values held exactly in a double.
  EXPECT_EQ(a.Get<double>("f").value(), static_cast<double>(0.1f));
  EXPECT_EQ(a.Get<int64_t>("i").value(), -3);
  EXPECT_EQ(a.Get<std::string>("s").value(), "abc");
  EXPECT_THAT(a.Get<std::vector<double>>("floats").value(), ElementsAre(1.5, -2.25));
  EXPECT_THAT(a.Get<std::vector<int64_t>>("ints").value(), ElementsAre(1, 2, int64_t{1} << 40));
  EXPECT_THAT(a.Get<std::vector<std::string>>("strings").value(), ElementsAre("a", "bc"));
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor tensor, a.Get<vm::Tensor>("t"));
  EXPECT_EQ(tensor.TypeString(), "i64[2]");
  EXPECT_EQ(tensor.data<int64_t>()[1], 8);
  EXPECT_EQ(a.Get<int64_t>("untyped").value(), 9);
  EXPECT_THAT(a.Get<std::vector<int64_t>>("empty_ints").value(), IsEmpty());
  EXPECT_THAT(module->ToString(),
              HasSubstr("= Custom(%0:x) {empty_ints=[], f=0.1, floats=[1.5, -2.25], "
                        "i=-3, ints=[1, 2, 1099511627776], s=\"abc\", strings=[\"a\", \"bc\"], "
                        "t=tensor<i64[2]>, untyped=9}"));
}

TEST(OnnxImporterTest, RejectsUnsupportedAttributeKindsNamingNodeAndAttribute) {
  struct Case {
    std::string attr;
    std::function<void(pb::AttributeProto*)> fill;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"gs",
       [](pb::AttributeProto* a) {
         a->set_type(pb::AttributeProto::GRAPHS);
         a->add_graphs();
       },
       "node 'n' (Op): attribute 'gs': attributes of type GRAPHS are not supported"},
      {"sp",
       [](pb::AttributeProto* a) {
         a->set_type(pb::AttributeProto::SPARSE_TENSOR);
         a->mutable_sparse_tensor();
       },
       "node 'n' (Op): attribute 'sp': attributes of type SPARSE_TENSOR are not supported"},
      {"tp",
       [](pb::AttributeProto* a) {
         a->set_type(pb::AttributeProto::TYPE_PROTO);
         a->mutable_tp()->mutable_tensor_type()->set_elem_type(1);
       },
       "node 'n' (Op): attribute 'tp': attributes of type TYPE_PROTO are not supported"},
      {"ts",
       [](pb::AttributeProto* a) {
         a->set_type(pb::AttributeProto::TENSORS);
         a->add_tensors();
       },
       "node 'n' (Op): attribute 'ts': attributes of type TENSORS are not supported"},
      {"ref",
       [](pb::AttributeProto* a) {
         a->set_type(pb::AttributeProto::INT);
         a->set_ref_attr_name("outer");
       },
       "node 'n' (Op): attribute 'ref': refers to the function attribute 'outer'"},
  };
  for (const Case& c : cases) {
    pb::ModelProto m = NewModel();
    pb::GraphProto* g = m.mutable_graph();
    AddInput(g, "x", pb::TensorProto::FLOAT, {"2"});
    pb::NodeProto* n = AddNode(g, "Op", {"x"}, {"y"}, "n");
    pb::AttributeProto* a = n->add_attribute();
    a->set_name(c.attr);
    c.fill(a);
    AddOutput(g, "y");
    EXPECT_THAT(Import(m), StatusIs(absl::StatusCode::kUnimplemented, HasSubstr(c.message)))
        << c.attr;
  }
}

TEST(OnnxImporterTest, AttributeErrorsAreAnnotated) {
  pb::ModelProto m = NewModel();
  pb::GraphProto* g = m.mutable_graph();
  AddInput(g, "x", pb::TensorProto::FLOAT, {"2"});
  pb::NodeProto* n = AddNode(g, "ConstantOfShape", {"x"}, {"y"}, "cos");
  auto* t = AddAttr(n, "value", pb::AttributeProto::TENSOR)->mutable_t();
  t->set_data_type(pb::TensorProto::FLOAT);
  t->add_dims(1);  // but no data
  AddOutput(g, "y");
  EXPECT_THAT(Import(m), StatusIs(absl::StatusCode::kInvalidArgument,
                                  HasSubstr("node 'cos' (ConstantOfShape): attribute 'value': "
                                            "unnamed tensor (f32[1]) has 0 values in float_data")));
}

TEST(OnnxImporterTest, IfSubgraphsCaptureOuterValues) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto module, Import(IfModel()));
  const Graph& g = *module->main;
  CheckWellFormed(g);
  ASSERT_EQ(g.nodes().size(), 1u);
  const Node& if_node = *g.nodes()[0];
  ASSERT_EQ(if_node.subgraphs().size(), 2u);
  const Graph& then_g = *if_node.subgraphs().at("then_branch");
  const Graph& else_g = *if_node.subgraphs().at("else_branch");
  EXPECT_EQ(then_g.parent(), &g);
  EXPECT_EQ(else_g.parent(), &g);
  const Value* x = g.inputs()[1];
  const Value* w = if_node.subgraphs()
                       .at("else_branch")
                       ->nodes()[0]
                       ->subgraphs()
                       .at("else_branch")
                       ->outputs()[0];
  EXPECT_EQ(w->name(), "w");
  EXPECT_EQ(w->graph(), &g);
  // The then branch reads x directly (the outer Value, not a copy).
  EXPECT_THAT(then_g.captures(), ElementsAre(x));
  EXPECT_EQ(then_g.nodes()[0]->input(0), x);
  // The else branch captures what its nested If reads: cond, x, w.
  const Value* cond = g.inputs()[0];
  EXPECT_THAT(else_g.captures(), ElementsAre(cond, x, w));
  const Node& inner = *else_g.nodes()[0];
  EXPECT_THAT(inner.subgraphs().at("then_branch")->captures(), ElementsAre(x, w));
  EXPECT_THAT(inner.subgraphs().at("else_branch")->captures(), ElementsAre(w));
  EXPECT_EQ(inner.subgraphs().at("then_branch")->parent(), &else_g);
  EXPECT_EQ(module->ToString(),
            "graph main(%0:cond: bool[], %1:x: f32[2]) {\n"
            "  %3:out: f32[2] = If(%0:cond)\n"
            "    else_branch:\n"
            "      graph else() captures(%0:cond, %1:x, %2:w) {\n"
            "        %0:inner: invalid[*] = If(%0:cond)\n"
            "          else_branch:\n"
            "            graph inner_else() captures(%2:w) {\n"
            "              return %2:w\n"
            "            }\n"
            "          then_branch:\n"
            "            graph inner_then() captures(%1:x, %2:w) {\n"
            "              %0:a: invalid[*] = Mul(%1:x, %2:w)\n"
            "              return %0:a\n"
            "            }\n"
            "        return %0:inner\n"
            "      }\n"
            "    then_branch:\n"
            "      graph then() captures(%1:x) {\n"
            "        %0:t: f32[2] = Add(%1:x, %1:x)\n"
            "        return %0:t\n"
            "      }\n"
            "  return %3:out\n"
            "}\n");
}

TEST(OnnxImporterTest, SubgraphErrorsNameTheEnclosingNode) {
  pb::ModelProto m = IfModel();
  m.mutable_graph()->mutable_node(0)->mutable_attribute(0)->mutable_g()->mutable_node(0)->set_input(
      1, "nope");
  EXPECT_THAT(Import(m), StatusIs(absl::StatusCode::kInvalidArgument,
                                  HasSubstr("node 'outer_if' (If): attribute 'then_branch': node "
                                            "'then_add' (Add): input 'nope' is not defined")));
}

TEST(OnnxImporterTest, SubgraphNamesShadowOuterNames) {
  pb::ModelProto m = IfModel();
  // The then branch defines its own "x" and reads it: no capture.
  pb::GraphProto* then_g = m.mutable_graph()->mutable_node(0)->mutable_attribute(0)->mutable_g();
  pb::NodeProto* c = then_g->add_node();
  c->set_op_type("Constant");
  c->add_output("x");
  auto* v = AddAttr(c, "value_float", pb::AttributeProto::FLOAT);
  v->set_f(1.0f);
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto module, Import(m));
  const Graph& then_branch = *module->main->nodes()[0]->subgraphs().at("then_branch");
  EXPECT_THAT(then_branch.captures(), IsEmpty());
  ASSERT_EQ(then_branch.nodes().size(), 2u);
  EXPECT_EQ(then_branch.nodes()[0]->op_type(), "Constant");  // sorted before its use
  EXPECT_EQ(then_branch.nodes()[1]->input(0), then_branch.nodes()[0]->output(0));
}

TEST(OnnxImporterTest, EmptyInputNameIsAnAbsentOptionalInput) {
  pb::ModelProto m = NewModel();
  pb::GraphProto* g = m.mutable_graph();
  AddInput(g, "x", pb::TensorProto::FLOAT, {"3"});
  AddFloatInitializer(g, "hi", {}, {6});
  AddNode(g, "Clip", {"x", "", "hi"}, {"y", ""}, "clip");
  AddOutput(g, "y");
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto module, Import(m));
  const Node& clip = *module->main->nodes()[0];
  ASSERT_EQ(clip.num_inputs(), 3);
  EXPECT_EQ(clip.input(1), nullptr);
  EXPECT_EQ(clip.input(2)->name(), "hi");
  // An empty output name is an absent optional output: an unnamed value.
  ASSERT_EQ(clip.num_outputs(), 2);
  EXPECT_EQ(clip.output(1)->name(), "");
  EXPECT_THAT(module->ToString(), HasSubstr("= Clip(%0:x, _, %1:hi)"));
}

TEST(OnnxImporterTest, SortsNodesThatAreOutOfOrder) {
  pb::ModelProto m = NewModel();
  pb::GraphProto* g = m.mutable_graph();
  AddInput(g, "x", pb::TensorProto::FLOAT, {"3"});
  AddNode(g, "Relu", {"y"}, {"z"}, "second");
  AddNode(g, "Neg", {"x"}, {"y"}, "first");
  AddOutput(g, "z");
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto module, Import(m));
  ASSERT_EQ(module->main->nodes().size(), 2u);
  EXPECT_EQ(module->main->nodes()[0]->name(), "first");
  EXPECT_EQ(module->main->nodes()[1]->name(), "second");
  CheckWellFormed(*module->main);
}

TEST(OnnxImporterTest, RejectsUndefinedNamesAndDuplicates) {
  pb::ModelProto m = NewModel();
  pb::GraphProto* g = m.mutable_graph();
  AddInput(g, "x", pb::TensorProto::FLOAT, {"3"});
  AddNode(g, "Relu", {"nope"}, {"y"}, "n1");
  AddOutput(g, "y");
  EXPECT_THAT(Import(m), StatusIs(absl::StatusCode::kInvalidArgument,
                                  HasSubstr("node 'n1' (Relu): input 'nope' is not defined")));

  pb::ModelProto out = NewModel();
  AddInput(out.mutable_graph(), "x", pb::TensorProto::FLOAT, {"3"});
  AddOutput(out.mutable_graph(), "missing");
  EXPECT_THAT(Import(out), StatusIs(absl::StatusCode::kInvalidArgument,
                                    HasSubstr("graph output 'missing' is not defined")));

  pb::ModelProto dup = NewModel();
  AddInput(dup.mutable_graph(), "x", pb::TensorProto::FLOAT, {"3"});
  AddNode(dup.mutable_graph(), "Relu", {"x"}, {"x"}, "n2");
  AddOutput(dup.mutable_graph(), "x");
  EXPECT_THAT(Import(dup), StatusIs(absl::StatusCode::kInvalidArgument,
                                    HasSubstr("node 'n2' (Relu): value 'x' is defined twice")));

  pb::ModelProto cycle = NewModel();
  AddInput(cycle.mutable_graph(), "x", pb::TensorProto::FLOAT, {"3"});
  AddNode(cycle.mutable_graph(), "Add", {"x", "b"}, {"a"});
  AddNode(cycle.mutable_graph(), "Neg", {"a"}, {"b"});
  AddOutput(cycle.mutable_graph(), "b");
  EXPECT_THAT(Import(cycle), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cycle")));
}

TEST(OnnxImporterTest, ChecksOpsets) {
  pb::ModelProto m = TwoNodeModel();
  m.mutable_opset_import(0)->set_version(6);
  EXPECT_THAT(Import(m), StatusIs(absl::StatusCode::kUnimplemented,
                                  HasSubstr("ai.onnx opset 6 is not supported (Nimble supports "
                                            "opsets 7 to 27)")));
  m.mutable_opset_import(0)->set_version(28);
  EXPECT_THAT(Import(m), StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("opset 28")));
  ImportOptions newer;
  newer.max_opset = 28;
  EXPECT_THAT(Import(m, newer), IsOk());

  // "ai.onnx" is the default domain; other domains are recorded.
  m.mutable_opset_import(0)->set_domain("ai.onnx");
  m.mutable_opset_import(0)->set_version(13);
  auto* ms = m.add_opset_import();
  ms->set_domain("com.microsoft");
  ms->set_version(1);
  m.mutable_graph()->mutable_node(1)->set_domain("ai.onnx");
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto module, Import(m));
  EXPECT_EQ(module->opsets.at(""), 13);
  EXPECT_EQ(module->opsets.at("com.microsoft"), 1);
  EXPECT_EQ(module->opsets.count("ai.onnx"), 0u);
  EXPECT_EQ(module->main->nodes()[1]->domain(), "");
  EXPECT_EQ(module->main->nodes()[1]->opset(), 13);

  pb::ModelProto none = TwoNodeModel();
  none.clear_opset_import();
  EXPECT_THAT(Import(none),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("imports no operator set")));

  pb::ModelProto unknown_domain = TwoNodeModel();
  unknown_domain.mutable_graph()->mutable_node(0)->set_domain("com.nowhere");
  EXPECT_THAT(Import(unknown_domain),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("node 'add' (Add, domain com.nowhere): domain 'com.nowhere' is "
                                 "not imported")));
}

TEST(OnnxImporterTest, InitializerThatIsAlsoAnInputIsAConstantByDefault) {
  pb::ModelProto m = TwoNodeModel();
  AddInput(m.mutable_graph(), "w", pb::TensorProto::FLOAT, {"4"});
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto module, Import(m));
  ASSERT_EQ(module->main->inputs().size(), 1u);
  EXPECT_TRUE(module->main->nodes()[0]->input(1)->is_constant());

  ImportOptions keep;
  keep.keep_initializer_inputs = true;
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto kept, Import(m, keep));
  ASSERT_EQ(kept->main->inputs().size(), 2u);
  const Value* w = kept->main->nodes()[0]->input(1);
  EXPECT_EQ(w, kept->main->inputs()[1]);
  EXPECT_FALSE(w->is_constant());
  EXPECT_THAT(kept->ToString(), HasSubstr("graph main(%0:x: f32[batch, 4], %1:w: f32[4])"));
}

TEST(OnnxImporterTest, SubgraphInputsWinOverInitializersOfTheSameName) {
  pb::ModelProto m = NewModel();
  pb::GraphProto* g = m.mutable_graph();
  AddInput(g, "n", pb::TensorProto::INT64, {});
  AddInput(g, "v", pb::TensorProto::FLOAT, {"2"});
  pb::NodeProto* loop = AddNode(g, "Loop", {"n", "", "v"}, {"v_out"}, "loop");
  pb::GraphProto* body = AddAttr(loop, "body", pb::AttributeProto::GRAPH)->mutable_g();
  body->set_name("body");
  AddInput(body, "i", pb::TensorProto::INT64, {});
  AddInput(body, "c", pb::TensorProto::BOOL, {});
  AddInput(body, "acc", pb::TensorProto::FLOAT, {"2"});
  AddFloatInitializer(body, "acc", {2}, {0, 0});
  AddNode(body, "Identity", {"c"}, {"c_out"});
  AddNode(body, "Neg", {"acc"}, {"acc_out"});
  AddOutput(body, "c_out");
  AddOutput(body, "acc_out");
  AddOutput(g, "v_out");
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto module, Import(m));
  const Graph& b = *module->main->nodes()[0]->subgraphs().at("body");
  ASSERT_EQ(b.inputs().size(), 3u);
  EXPECT_EQ(b.nodes()[1]->input(0), b.inputs()[2]);
  EXPECT_FALSE(b.inputs()[2]->is_constant());
  EXPECT_EQ(module->main->nodes()[0]->input(1), nullptr);
}

TEST(OnnxImporterTest, RejectsModelsThatAreNotUsable) {
  EXPECT_THAT(ImportOnnxModelFromBytes("", "", {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an ONNX model")));
  EXPECT_THAT(ImportOnnxModelFromBytes("this is not a protobuf \xff\xff\xff", "", {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("not an ONNX model: failed to parse protobuf")));
  pb::ModelProto no_graph = NewModel();
  no_graph.clear_graph();
  EXPECT_THAT(Import(no_graph),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has no graph")));
  pb::ModelProto no_outputs = TwoNodeModel();
  no_outputs.mutable_graph()->clear_output();
  EXPECT_THAT(Import(no_outputs),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has no outputs")));
  pb::ModelProto empty_graph = NewModel();
  EXPECT_THAT(Import(empty_graph),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has no outputs")));
  ImportOptions small;
  small.max_model_bytes = 10;
  EXPECT_THAT(Import(TwoNodeModel(), small),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("limit of 10 bytes")));
  EXPECT_THAT(ImportOnnxModel("/nonexistent/model.onnx"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/model.onnx")));
}

TEST(OnnxImporterTest, RejectsUnsupportedFeaturesClearly) {
  pb::ModelProto fn = TwoNodeModel();
  auto* f = fn.add_functions();
  f->set_name("MyGelu");
  f->set_domain("local");
  auto* local = fn.add_opset_import();
  local->set_domain("local");
  local->set_version(1);
  pb::NodeProto* call = fn.mutable_graph()->mutable_node(1);
  call->set_op_type("MyGelu");
  call->set_domain("local");
  call->set_name("gelu");
  EXPECT_THAT(Import(fn),
              StatusIs(absl::StatusCode::kUnimplemented,
                       HasSubstr("node 'gelu' (MyGelu, domain local): calls the model-local "
                                 "function 'local.MyGelu'")));

  pb::ModelProto sparse = TwoNodeModel();
  sparse.mutable_graph()->add_sparse_initializer()->mutable_values()->set_name("sp");
  EXPECT_THAT(Import(sparse),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("sparse initializer 'sp'")));

  pb::ModelProto map = TwoNodeModel();
  auto* mi = map.mutable_graph()->add_input();
  mi->set_name("m");
  mi->mutable_type()->mutable_map_type()->set_key_type(pb::TensorProto::INT64);
  EXPECT_THAT(Import(map), StatusIs(absl::StatusCode::kUnimplemented,
                                    HasSubstr("graph input 'm': map types are not supported")));

  pb::ModelProto c64 = TwoNodeModel();
  c64.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->set_elem_type(
      pb::TensorProto::COMPLEX64);
  EXPECT_THAT(Import(c64), StatusIs(absl::StatusCode::kUnimplemented,
                                    HasSubstr("graph input 'x': ONNX data type COMPLEX64")));

  pb::ModelProto c128_init = TwoNodeModel();
  c128_init.mutable_graph()->mutable_initializer(0)->set_data_type(pb::TensorProto::COMPLEX128);
  EXPECT_THAT(Import(c128_init), StatusIs(absl::StatusCode::kUnimplemented,
                                          HasSubstr("initializer 'w': tensor 'w': ONNX data type "
                                                    "COMPLEX128")));

  // The low-precision types import (graph inputs of FLOAT8E4M3FN are fine); a float8
  // initializer with the wrong amount of data is an input error.
  pb::ModelProto f8 = TwoNodeModel();
  f8.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->set_elem_type(
      pb::TensorProto::FLOAT8E4M3FN);
  EXPECT_THAT(Import(f8), IsOk());
  pb::ModelProto f8_init = TwoNodeModel();
  f8_init.mutable_graph()->mutable_initializer(0)->set_data_type(pb::TensorProto::FLOAT8E4M3FN);
  EXPECT_THAT(Import(f8_init),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tensor 'w' (f8e4m3fn[4]) has 0 values in int32_data")));

  pb::ModelProto untyped = TwoNodeModel();
  untyped.mutable_graph()->mutable_input(0)->clear_type();
  EXPECT_THAT(Import(untyped), StatusIs(absl::StatusCode::kInvalidArgument,
                                        HasSubstr("graph input 'x' has no element type")));
}

TEST(OnnxImporterTest, SequenceAndOptionalInputTypes) {
  pb::ModelProto m = NewModel(18);
  pb::GraphProto* g = m.mutable_graph();
  auto* s = g->add_input();
  s->set_name("s");
  SetTensorType(s->mutable_type()->mutable_sequence_type()->mutable_elem_type(),
                pb::TensorProto::INT64, {"?"});
  auto* o = g->add_input();
  o->set_name("o");
  SetTensorType(o->mutable_type()->mutable_optional_type()->mutable_elem_type(),
                pb::TensorProto::FLOAT, {"n"});
  auto* os = g->add_input();
  os->set_name("os");
  SetTensorType(os->mutable_type()
                    ->mutable_optional_type()
                    ->mutable_elem_type()
                    ->mutable_sequence_type()
                    ->mutable_elem_type(),
                pb::TensorProto::INT32, {}, /*has_shape=*/false);
  AddNode(g, "SequenceLength", {"s"}, {"len"});
  AddOutput(g, "len");
  AddOutput(g, "o");
  AddOutput(g, "os");
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto module, Import(m));
  EXPECT_THAT(
      module->ToString(),
      HasSubstr("graph main(%0:s: seq<i64[?]>, %1:o: opt<f32[n]>, %2:os: opt<seq<i32[*]>>)"));
}

TEST(OnnxImporterTest, ReadsExternalDataNextToTheModel) {
  std::string tmpl = (fs::temp_directory_path() / "nimble_onnx_XXXXXX").string();
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  const fs::path root(tmpl);
  const fs::path model_dir = root / "model";
  fs::create_directories(model_dir);
  const float weights[] = {10, 20, 30, 40};
  const std::string bytes(reinterpret_cast<const char*>(weights), sizeof(weights));
  for (const fs::path& p : {model_dir / "w.bin", root / "x"}) {
    FILE* f = std::fopen(p.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
  }
  auto write_model = [&](const std::string& location) {
    pb::ModelProto m = TwoNodeModel();
    pb::TensorProto* w = m.mutable_graph()->mutable_initializer(0);
    w->clear_float_data();
    w->set_data_location(pb::TensorProto::EXTERNAL);
    auto* e = w->add_external_data();
    e->set_key("location");
    e->set_value(location);
    const std::string path = (model_dir / "model.onnx").string();
    FILE* f = std::fopen(path.c_str(), "wb");
    const std::string s = m.SerializeAsString();
    std::fwrite(s.data(), 1, s.size(), f);
    std::fclose(f);
    return path;
  };

  NIMBLE_ASSERT_OK_AND_ASSIGN(auto module, ImportOnnxModel(write_model("w.bin")));
  const Value* w = module->main->nodes()[0]->input(1);
  ASSERT_TRUE(w->is_constant());
  EXPECT_EQ(w->constant()->data<float>()[0], 10.0f);
  EXPECT_EQ(w->constant()->data<float>()[3], 40.0f);

  EXPECT_THAT(ImportOnnxModel(write_model("../x")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("initializer 'w': tensor 'w': external data path '../x' "
                                 "escapes the model directory")));
  std::error_code ec;
  fs::remove_all(root, ec);
}

// Every prefix of a valid model: an error or a module, never a crash; a prefix that parses
// yields a well-formed module, the same one each time.
TEST(OnnxImporterTest, TruncatedModelsNeverCrash) {
  for (const pb::ModelProto& m : {TwoNodeModel(), IfModel()}) {
    const std::string bytes = m.SerializeAsString();
    int parsed = 0;
    for (size_t len = 0; len <= bytes.size(); ++len) {
      const absl::string_view prefix(bytes.data(), len);
      absl::StatusOr<std::unique_ptr<Module>> module = ImportOnnxModelFromBytes(prefix, "", {});
      if (!module.ok()) {
        EXPECT_NE(module.status().code(), absl::StatusCode::kInternal) << module.status();
        continue;
      }
      ++parsed;
      CheckWellFormed(*(*module)->main);
      NIMBLE_ASSERT_OK_AND_ASSIGN(auto again, ImportOnnxModelFromBytes(prefix, "", {}));
      EXPECT_EQ((*module)->ToString(), again->ToString()) << len;
    }
    EXPECT_GE(parsed, 1);  // at least the full model
  }
}

TEST(OnnxImporterTest, CorruptedModelsNeverCrash) {
  std::mt19937 rng(1234);
  for (const pb::ModelProto& m : {TwoNodeModel(), IfModel()}) {
    const std::string bytes = m.SerializeAsString();
    for (int trial = 0; trial < 3000; ++trial) {
      std::string corrupt = bytes;
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int i = 0; i < flips; ++i) {
        corrupt[rng() % corrupt.size()] = static_cast<char>(rng() & 0xff);
      }
      absl::StatusOr<std::unique_ptr<Module>> module = ImportOnnxModelFromBytes(corrupt, "", {});
      if (!module.ok()) {
        EXPECT_NE(module.status().code(), absl::StatusCode::kInternal) << module.status();
        continue;
      }
      CheckWellFormed(*(*module)->main);
    }
  }
}

// ----------------------------------------------------------------------------------------------
// Real models of the ONNX backend suite.

std::string SuiteModel(const std::string& name) {
  return std::string(kSuite) + "/" + name + "/model.onnx";
}

TEST(OnnxImporterConformanceTest, Add) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto module, ImportOnnxModel(SuiteModel("test_add")));
  EXPECT_EQ(module->producer, "backend-test");
  EXPECT_EQ(module->opsets.at(""), 14);
  EXPECT_EQ(module->ToString(),
            "graph main(%0:x: f32[3, 4, 5], %1:y: f32[3, 4, 5]) {\n"
            "  %2:sum: f32[3, 4, 5] = Add(%0:x, %1:y)\n"
            "  return %2:sum\n"
            "}\n");
}

TEST(OnnxImporterConformanceTest, If) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto module, ImportOnnxModel(SuiteModel("test_if")));
  EXPECT_EQ(module->opsets.at(""), 11);
  EXPECT_EQ(module->ToString(),
            "graph main(%0:cond: bool[]) {\n"
            "  %1:res: f32[5] = If(%0:cond)\n"
            "    else_branch:\n"
            "      graph else_body() {\n"
            "        %0:else_out: f32[5] = Constant() {value=tensor<f32[5]>}\n"
            "        return %0:else_out\n"
            "      }\n"
            "    then_branch:\n"
            "      graph then_body() {\n"
            "        %0:then_out: f32[5] = Constant() {value=tensor<f32[5]>}\n"
            "        return %0:then_out\n"
            "      }\n"
            "  return %1:res\n"
            "}\n");
  // The branches' Constant values came through as tensors.
  const Graph& then_branch = *module->main->nodes()[0]->subgraphs().at("then_branch");
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor value,
                              then_branch.nodes()[0]->attrs().Get<vm::Tensor>("value"));
  EXPECT_EQ(value.data<float>()[4], 5.0f);
}

TEST(OnnxImporterConformanceTest, Loop) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto module, ImportOnnxModel(SuiteModel("test_loop11")));
  EXPECT_EQ(module->ToString(),
            "graph main(%0:trip_count: i64[], %1:cond: bool[], %2:y: f32[1]) {\n"
            "  %3:res_y: f32[1], %4:res_scan: f32[5, 1] = Loop(%0:trip_count, %1:cond, %2:y)\n"
            "    body:\n"
            "      graph loop_body(%0:iter_count: i64[], %1:cond_in: bool[], %2:y_in: f32[1]) {\n"
            "        %3:cond_out: bool[] = Identity(%1:cond_in)\n"
            "        %4:x: invalid[*] = Constant() {value=tensor<f32[5]>}\n"
            "        %5:one: invalid[*] = Constant() {value=tensor<i64[]>}\n"
            "        %6:end: invalid[*] = Add(%0:iter_count, %5:one)\n"
            "        %7:slice_start: invalid[*] = Unsqueeze(%0:iter_count) {axes=[0]}\n"
            "        %8:slice_end: invalid[*] = Unsqueeze(%6:end) {axes=[0]}\n"
            "        %9:slice_out: invalid[*] = Slice(%4:x, %7:slice_start, %8:slice_end)\n"
            "        %10:y_out: f32[1] = Add(%2:y_in, %9:slice_out)\n"
            "        %11:scan_out: f32[1] = Identity(%10:y_out)\n"
            "        return %3:cond_out, %10:y_out, %11:scan_out\n"
            "      }\n"
            "  return %3:res_y, %4:res_scan\n"
            "}\n");
}

TEST(OnnxImporterConformanceTest, SequenceInsert) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto module,
                              ImportOnnxModel(SuiteModel("test_sequence_insert_at_back")));
  EXPECT_EQ(module->ToString(),
            "graph main(%0:sequence: seq<i64[*]>, %1:tensor: i64[3]) {\n"
            "  %2:output_sequence: seq<i64[*]> = SequenceInsert(%0:sequence, %1:tensor)\n"
            "  return %2:output_sequence\n"
            "}\n");
}

// The whole suite: every model imports, or fails with kUnimplemented for a feature Nimble
// lacks (never kInvalidArgument: these are valid models).
TEST(OnnxImporterConformanceTest, EveryModelImportsOrIsUnimplemented) {
  ImportOptions options;
  options.max_opset = 27;
  int ok = 0, unimplemented = 0;
  std::error_code ec;
  fs::directory_iterator suite(kSuite, ec);
  ASSERT_FALSE(ec) << kSuite << ": " << ec.message();
  for (const auto& entry : suite) {
    const std::string path = (entry.path() / "model.onnx").string();
    absl::StatusOr<std::unique_ptr<Module>> module = ImportOnnxModel(path, options);
    if (module.ok()) {
      ++ok;
      CheckWellFormed(*(*module)->main);
      continue;
    }
    EXPECT_EQ(module.status().code(), absl::StatusCode::kUnimplemented) << module.status();
    ++unimplemented;
  }
  std::printf("imported %d models, %d unimplemented\n", ok, unimplemented);
  EXPECT_GT(ok, 1500);
}

}  // namespace
}  // namespace nimble::compiler
