// Import runs in two passes per graph so that out-of-order nodes (which some exporters write)
// still resolve: pass 1 creates every node and names its outputs, pass 2 resolves inputs,
// converts attributes and imports subgraphs. Subgraphs are imported in pass 2, when every name
// of the enclosing graphs is known, and TopologicalSort restores a valid order at the end.
#include "compiler/frontend/onnx/onnx_importer.h"

#include <algorithm>
#include <climits>
#include <filesystem>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "compiler/frontend/onnx/onnx.pb.h"
#include "compiler/frontend/onnx/tensor_proto.h"

namespace nimble::compiler {
namespace {

namespace pb = nimble::onnx;

// Names visible in one graph; lookups fall back to the enclosing graphs' scopes.
struct Scope {
  Graph* graph;
  Scope* parent;
  std::map<std::string, Value*> values;
};

std::string NormalizeDomain(const std::string& domain) {
  return domain == "ai.onnx" ? std::string() : domain;
}

const char* AttributeTypeName(pb::AttributeProto::AttributeType type) {
  switch (type) {
    case pb::AttributeProto::UNDEFINED:
      return "UNDEFINED";
    case pb::AttributeProto::FLOAT:
      return "FLOAT";
    case pb::AttributeProto::INT:
      return "INT";
    case pb::AttributeProto::STRING:
      return "STRING";
    case pb::AttributeProto::TENSOR:
      return "TENSOR";
    case pb::AttributeProto::GRAPH:
      return "GRAPH";
    case pb::AttributeProto::SPARSE_TENSOR:
      return "SPARSE_TENSOR";
    case pb::AttributeProto::TYPE_PROTO:
      return "TYPE_PROTO";
    case pb::AttributeProto::FLOATS:
      return "FLOATS";
    case pb::AttributeProto::INTS:
      return "INTS";
    case pb::AttributeProto::STRINGS:
      return "STRINGS";
    case pb::AttributeProto::TENSORS:
      return "TENSORS";
    case pb::AttributeProto::GRAPHS:
      return "GRAPHS";
    case pb::AttributeProto::SPARSE_TENSORS:
      return "SPARSE_TENSORS";
    case pb::AttributeProto::TYPE_PROTOS:
      return "TYPE_PROTOS";
  }
  return "UNKNOWN";
}

// IR version 1 models leave AttributeProto.type unset; the value field in use decides.
pb::AttributeProto::AttributeType InferAttributeType(const pb::AttributeProto& a) {
  using A = pb::AttributeProto;
  if (a.type() != A::UNDEFINED) return a.type();
  if (a.has_f()) return A::FLOAT;
  if (a.has_i()) return A::INT;
  if (a.has_s()) return A::STRING;
  if (a.has_t()) return A::TENSOR;
  if (a.has_g()) return A::GRAPH;
  if (a.has_sparse_tensor()) return A::SPARSE_TENSOR;
  if (a.has_tp()) return A::TYPE_PROTO;
  if (a.floats_size() > 0) return A::FLOATS;
  if (a.ints_size() > 0) return A::INTS;
  if (a.strings_size() > 0) return A::STRINGS;
  if (a.tensors_size() > 0) return A::TENSORS;
  if (a.graphs_size() > 0) return A::GRAPHS;
  if (a.sparse_tensors_size() > 0) return A::SPARSE_TENSORS;
  if (a.type_protos_size() > 0) return A::TYPE_PROTOS;
  return A::UNDEFINED;
}

class Importer {
 public:
  Importer(const pb::ModelProto& model, std::string model_dir, const ImportOptions& options,
           Module* module)
      : model_(model), model_dir_(std::move(model_dir)), options_(options), module_(module) {}

  absl::Status Run() {
    NIMBLE_RETURN_IF_ERROR(ImportOpsets());
    for (const pb::FunctionProto& f : model_.functions()) {
      functions_[{NormalizeDomain(f.domain()), f.name()}] = &f;
    }
    module_->producer = model_.producer_name();
    if (!model_.producer_version().empty()) {
      absl::StrAppend(&module_->producer, " ", model_.producer_version());
    }
    Scope scope{module_->main.get(), nullptr, {}};
    NIMBLE_RETURN_IF_ERROR(ImportGraph(model_.graph(), &scope));
    if (module_->main->outputs().empty()) {
      return absl::InvalidArgumentError("the model's graph has no outputs");
    }
    return absl::OkStatus();
  }

 private:
  absl::Status ImportOpsets() {
    if (model_.opset_import_size() == 0) {
      return absl::InvalidArgumentError("the model imports no operator set (opset_import)");
    }
    for (const pb::OperatorSetIdProto& op : model_.opset_import()) {
      const std::string domain = NormalizeDomain(op.domain());
      if (op.version() < 1 || op.version() > INT_MAX) {
        return absl::InvalidArgumentError(absl::StrCat("opset_import of domain '", op.domain(),
                                                       "' has invalid version ", op.version()));
      }
      // Listed twice: nodes bind to the highest version.
      int& version = module_->opsets[domain];
      version = std::max(version, static_cast<int>(op.version()));
    }
    auto it = module_->opsets.find("");
    if (it != module_->opsets.end() &&
        (it->second < options_.min_opset || it->second > options_.max_opset)) {
      return absl::UnimplementedError(
          absl::StrCat("ai.onnx opset ", it->second, " is not supported (Nimble supports opsets ",
                       options_.min_opset, " to ", options_.max_opset, ")"));
    }
    return absl::OkStatus();
  }

  // ONNX tensor type -> TensorType. A missing element type gives kInvalid.
  absl::StatusOr<TensorType> ConvertTensorType(int elem_type, const pb::TensorShapeProto* shape) {
    TensorType t;
    if (elem_type != pb::TensorProto::UNDEFINED) {
      NIMBLE_ASSIGN_OR_RETURN(t.dtype, vm::DTypeFromOnnx(elem_type));
    }
    if (shape == nullptr) return t;
    std::vector<Dim> dims;
    dims.reserve(shape->dim_size());
    for (const pb::TensorShapeProto::Dimension& d : shape->dim()) {
      if (d.has_dim_value() && d.dim_value() >= 0) {
        dims.push_back(DimExpr::Const(d.dim_value()));
      } else if (d.has_dim_param() && !d.dim_param().empty()) {
        // Dims are sizes: a named dim is a symbol >= 0.
        dims.push_back(module_->dims.Symbol(d.dim_param(), DimBounds{0, INT64_MAX}));
      } else {
        // No value, or a negative dim_value (old exporters' way of saying "unknown").
        dims.push_back(std::nullopt);
      }
    }
    t.dims = std::move(dims);
    return t;
  }

  absl::StatusOr<TensorType> ConvertTensorTypeProto(const pb::TypeProto::Tensor& t) {
    return ConvertTensorType(t.elem_type(), t.has_shape() ? &t.shape() : nullptr);
  }

  // ONNX TypeProto -> Type. An absent type (allowed for subgraph inputs and value_info) is a
  // tensor of unknown dtype and rank.
  absl::StatusOr<Type> ConvertType(const pb::TypeProto& tp) {
    switch (tp.value_case()) {
      case pb::TypeProto::kTensorType: {
        NIMBLE_ASSIGN_OR_RETURN(TensorType t, ConvertTensorTypeProto(tp.tensor_type()));
        return Type::Tensor(std::move(t));
      }
      case pb::TypeProto::kSequenceType: {
        const pb::TypeProto& elem = tp.sequence_type().elem_type();
        if (elem.value_case() == pb::TypeProto::VALUE_NOT_SET) return Type::Sequence({});
        if (elem.value_case() != pb::TypeProto::kTensorType) {
          return absl::UnimplementedError("only sequences of tensors are supported");
        }
        NIMBLE_ASSIGN_OR_RETURN(TensorType t, ConvertTensorTypeProto(elem.tensor_type()));
        return Type::Sequence(std::move(t));
      }
      case pb::TypeProto::kOptionalType: {
        const pb::TypeProto& elem = tp.optional_type().elem_type();
        if (elem.value_case() == pb::TypeProto::kTensorType) {
          NIMBLE_ASSIGN_OR_RETURN(TensorType t, ConvertTensorTypeProto(elem.tensor_type()));
          return Type::Optional(std::move(t));
        }
        if (elem.value_case() == pb::TypeProto::kSequenceType) {
          const pb::TypeProto& inner = elem.sequence_type().elem_type();
          if (inner.value_case() == pb::TypeProto::VALUE_NOT_SET) {
            return Type::Optional({}, /*of_sequence=*/true);
          }
          if (inner.value_case() == pb::TypeProto::kTensorType) {
            NIMBLE_ASSIGN_OR_RETURN(TensorType t, ConvertTensorTypeProto(inner.tensor_type()));
            return Type::Optional(std::move(t), /*of_sequence=*/true);
          }
        }
        if (elem.value_case() == pb::TypeProto::VALUE_NOT_SET) return Type::Optional({});
        return absl::UnimplementedError(
            "only optionals of tensors and of sequences of tensors are supported");
      }
      case pb::TypeProto::kMapType:
        return absl::UnimplementedError("map types are not supported");
      case pb::TypeProto::kSparseTensorType:
        return absl::UnimplementedError("sparse tensor types are not supported");
      case pb::TypeProto::kOpaqueType:
        return absl::UnimplementedError("opaque types are not supported");
      case pb::TypeProto::VALUE_NOT_SET:
        break;
    }
    return Type::Tensor({});
  }

  // A name defined in `scope`'s own graph.
  absl::Status Define(Scope* scope, const std::string& name, Value* value) {
    if (!scope->values.emplace(name, value).second) {
      return absl::InvalidArgumentError(absl::StrCat("value '", name, "' is defined twice"));
    }
    return absl::OkStatus();
  }

  // Resolves `name` in `scope` or an enclosing one. A value of an enclosing graph is recorded
  // as a capture of every graph from `scope`'s up to (not including) the owner's.
  Value* Lookup(Scope* scope, const std::string& name) {
    for (Scope* s = scope; s != nullptr; s = s->parent) {
      auto it = s->values.find(name);
      if (it == s->values.end()) continue;
      for (Scope* c = scope; c != s; c = c->parent) c->graph->AddCapture(it->second);
      return it->second;
    }
    return nullptr;
  }

  absl::Status ImportGraph(const pb::GraphProto& gp, Scope* scope) {
    Graph* graph = scope->graph;
    const bool is_main = scope->parent == nullptr;

    std::map<std::string, const pb::TensorProto*> initializers;
    for (int i = 0; i < gp.initializer_size(); ++i) {
      const pb::TensorProto& t = gp.initializer(i);
      if (t.name().empty()) {
        return absl::InvalidArgumentError(absl::StrCat("initializer #", i, " has no name"));
      }
      if (!initializers.emplace(t.name(), &t).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("initializer '", t.name(), "' is defined twice"));
      }
    }
    if (gp.sparse_initializer_size() > 0) {
      return absl::UnimplementedError(absl::StrCat(
          "sparse initializer '", gp.sparse_initializer(0).values().name(), "' is not supported"));
    }

    // Inputs. In the main graph, one with an initializer of the same name is an input with a
    // default value: a constant unless the caller keeps such inputs. A subgraph's inputs are
    // positional (Loop/Scan bodies), so there the input always wins.
    for (int i = 0; i < gp.input_size(); ++i) {
      const pb::ValueInfoProto& vi = gp.input(i);
      if (vi.name().empty()) {
        return absl::InvalidArgumentError(absl::StrCat("graph input #", i, " has no name"));
      }
      auto init = initializers.find(vi.name());
      if (init != initializers.end()) {
        if (is_main && !options_.keep_initializer_inputs) continue;
        initializers.erase(init);
      }
      absl::StatusOr<Type> type = ConvertType(vi.type());
      if (!type.ok()) {
        return Annotate(type.status(), absl::StrCat("graph input '", vi.name(), "'"));
      }
      if (is_main && type->kind == Type::Kind::kTensor &&
          type->tensor.dtype == vm::DType::kInvalid) {
        return absl::InvalidArgumentError(
            absl::StrCat("graph input '", vi.name(), "' has no element type"));
      }
      NIMBLE_RETURN_IF_ERROR(Define(scope, vi.name(), graph->AddInput(vi.name(), *type)));
    }

    // Initializers, in file order.
    for (const pb::TensorProto& t : gp.initializer()) {
      if (!initializers.count(t.name())) continue;  // kept as an input
      absl::StatusOr<vm::Tensor> tensor = TensorFromProto(t, model_dir_);
      if (!tensor.ok()) {
        return Annotate(tensor.status(), absl::StrCat("initializer '", t.name(), "'"));
      }
      std::vector<int64_t> shape(tensor->shape().begin(), tensor->shape().end());
      Type type = Type::Tensor(TensorType::Static(tensor->dtype(), shape));
      NIMBLE_RETURN_IF_ERROR(
          Define(scope, t.name(), graph->AddConstant(t.name(), *std::move(tensor), type)));
    }

    // Pass 1: nodes and the names of their outputs.
    std::vector<Node*> nodes;
    nodes.reserve(gp.node_size());
    for (int i = 0; i < gp.node_size(); ++i) {
      const pb::NodeProto& np = gp.node(i);
      if (np.op_type().empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "node #", i, (np.name().empty() ? "" : " '" + np.name() + "'"), " has no op_type"));
      }
      std::string name = np.name().empty() ? absl::StrCat(np.op_type(), "_", i) : np.name();
      Node* node = graph->AddNode(np.op_type(), {}, np.output_size(), std::move(name));
      node->set_domain(NormalizeDomain(np.domain()));
      for (int j = 0; j < np.output_size(); ++j) {
        if (np.output(j).empty()) continue;  // an absent optional output
        node->output(j)->set_name(np.output(j));
        absl::Status defined = Define(scope, np.output(j), node->output(j));
        if (!defined.ok()) return Annotate(defined, node->Describe());
      }
      nodes.push_back(node);
    }

    // Pass 2: inputs, opsets, attributes, subgraphs.
    for (int i = 0; i < gp.node_size(); ++i) {
      absl::Status s = ImportNode(gp.node(i), nodes[i], scope);
      if (!s.ok()) return Annotate(s, nodes[i]->Describe());
    }

    // Known types of intermediate values help type inference. Unconvertible ones are skipped:
    // they are hints, and the op itself reports unsupported types.
    for (const pb::ValueInfoProto& vi : gp.value_info()) {
      auto it = scope->values.find(vi.name());
      if (it == scope->values.end() || it->second->producer() == nullptr || !vi.has_type()) {
        continue;
      }
      absl::StatusOr<Type> type = ConvertType(vi.type());
      if (type.ok()) it->second->set_type(*std::move(type));
    }

    for (int i = 0; i < gp.output_size(); ++i) {
      const pb::ValueInfoProto& vi = gp.output(i);
      if (vi.name().empty()) {
        return absl::InvalidArgumentError(absl::StrCat("graph output #", i, " has no name"));
      }
      Value* v = Lookup(scope, vi.name());
      if (v == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("graph output '", vi.name(), "' is not defined"));
      }
      graph->AddOutput(v);
      if (v->producer() != nullptr && v->graph() == graph && vi.has_type()) {
        absl::StatusOr<Type> type = ConvertType(vi.type());
        if (type.ok()) v->set_type(*std::move(type));
      }
    }

    absl::Status sorted = graph->TopologicalSort();
    if (!sorted.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "graph '", gp.name(), "' has a cycle: its nodes cannot be put in topological order"));
    }
    return absl::OkStatus();
  }

  absl::Status ImportNode(const pb::NodeProto& np, Node* node, Scope* scope) {
    auto fn = functions_.find({node->domain(), np.op_type()});
    if (fn != functions_.end()) {
      return absl::UnimplementedError(absl::StrCat(
          "calls the model-local function '", node->domain().empty() ? "" : node->domain() + ".",
          np.op_type(), "'; model-local functions (FunctionProto) are not supported yet"));
    }
    auto opset = module_->opsets.find(node->domain());
    if (opset == module_->opsets.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("domain '", node->domain().empty() ? "ai.onnx" : node->domain(),
                       "' is not imported by the model (opset_import)"));
    }
    node->set_opset(opset->second);

    std::vector<Value*> inputs;
    inputs.reserve(np.input_size());
    for (const std::string& name : np.input()) {
      if (name.empty()) {  // an absent optional input
        inputs.push_back(nullptr);
        continue;
      }
      Value* v = Lookup(scope, name);
      if (v == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("input '", name, "' is not defined"));
      }
      inputs.push_back(v);
    }
    node->set_inputs(std::move(inputs));
    if (node->op_type() == "Scan" && node->domain().empty() && node->opset() < 9) {
      return ImportBatchedScan(np, node, scope);
    }

    for (int i = 0; i < np.attribute_size(); ++i) {
      const pb::AttributeProto& a = np.attribute(i);
      if (a.name().empty()) {
        return absl::InvalidArgumentError(absl::StrCat("attribute #", i, " has no name"));
      }
      absl::Status s = ImportAttribute(a, node, scope);
      if (!s.ok()) return Annotate(s, absl::StrCat("attribute '", a.name(), "'"));
    }
    // DFT's signal axis was an attribute (default 1) before opset 20 and is an input (default -2)
    // since: kernels see the older form with the attribute always set.
    if (node->op_type() == "DFT" && node->domain().empty() && node->opset() < 20 &&
        !node->attrs().Has("axis")) {
      node->attrs().Set("axis", int64_t{1});
    }
    return absl::OkStatus();
  }

  // Scan before opset 9 scans axis 1 of inputs that share a batch axis 0, each batch element on
  // its own: Scan_8(sequence_lens, states..., xs...) becomes
  //   Loop(M = batch) { b -> Scan_9(Gather(states, b)..., Gather(xs, b)...) }
  // whose per-iteration outputs (final states, stacked scan outputs) the Loop stacks along a new
  // axis 0: [batch, ...] and [batch, steps, ...], the opset-8 outputs. The Scan body is imported
  // unchanged, inside the Loop's body. Per-element sequence_lens would give scan outputs of
  // different lengths and are not supported.
  absl::Status ImportBatchedScan(const pb::NodeProto& np, Node* node, Scope* scope) {
    const int opset = node->opset();
    if (node->num_inputs() < 2) {
      return absl::InvalidArgumentError("Scan (opset < 9) needs sequence_lens and scan inputs");
    }
    if (node->input(0) != nullptr) {
      return absl::UnimplementedError(
          "Scan before opset 9 with sequence_lens (per-batch-element lengths) is not supported");
    }
    const pb::AttributeProto* body_attr = nullptr;
    for (const pb::AttributeProto& a : np.attribute()) {
      if (a.name() == "body" && a.has_g()) body_attr = &a;
    }
    if (body_attr == nullptr) return absl::InvalidArgumentError("Scan needs a 'body' graph");
    Graph* graph = scope->graph;
    const std::vector<Value*> operands(node->inputs().begin() + 1, node->inputs().end());
    for (Value* v : operands) {
      if (v == nullptr)
        return absl::InvalidArgumentError("Scan states and scan inputs are required");
    }
    // M: the batch size, dim 0 of the first operand.
    const std::string prefix = node->name() + "/";
    Node* shape = graph->AddNode("Shape", {operands[0]}, 1, prefix + "shape");
    Value* zero = graph->AddConstant(prefix + "zero",
                                     vm::Tensor::FromVector<int64_t>(std::vector<int64_t>{0}, {}),
                                     Type::Tensor(TensorType::Static(vm::DType::kI64, {})));
    Node* batch = graph->AddNode("Gather", {shape->output(0), zero}, 1, prefix + "batch");
    for (Node* n : {shape, batch}) n->set_opset(opset);
    shape->output(0)->set_name(prefix + "shape");
    batch->output(0)->set_name(prefix + "batch");

    auto loop_body = std::make_unique<Graph>(prefix + "batch_loop", graph);
    Scope loop_scope{loop_body.get(), scope, {}};
    const Type scalar_i64 = Type::Tensor(TensorType::Static(vm::DType::kI64, {}));
    Value* b = loop_body->AddInput(prefix + "b", scalar_i64);
    Value* cond = loop_body->AddInput(prefix + "cond",
                                      Type::Tensor(TensorType::Static(vm::DType::kBool, {})));
    std::vector<Value*> per_element;
    for (size_t i = 0; i < operands.size(); ++i) {
      loop_body->AddCapture(operands[i]);
      Node* g =
          loop_body->AddNode("Gather", {operands[i], b}, 1, absl::StrCat(prefix, "gather_", i));
      g->set_opset(opset);
      g->output(0)->set_name(g->name());
      per_element.push_back(g->output(0));
    }
    Node* scan = loop_body->AddNode("Scan", per_element, node->num_outputs(), prefix + "scan");
    scan->set_opset(9);
    for (const pb::AttributeProto& a : np.attribute()) {
      if (a.name() == "num_scan_inputs" && a.type() == pb::AttributeProto::INT) {
        scan->attrs().Set("num_scan_inputs", static_cast<int64_t>(a.i()));
      } else if (a.name() == "directions") {
        scan->attrs().Set("scan_input_directions",
                          std::vector<int64_t>(a.ints().begin(), a.ints().end()));
      } else if (a.name() != "body") {
        return absl::InvalidArgumentError(
            absl::StrCat("Scan (opset ", opset, ") has no attribute '", a.name(), "'"));
      }
    }
    const std::string name =
        body_attr->g().name().empty() ? absl::StrCat(node->name(), ".body") : body_attr->g().name();
    auto scan_body = std::make_unique<Graph>(name, loop_body.get());
    Scope body_scope{scan_body.get(), &loop_scope, {}};
    scan->subgraphs()["body"] = std::move(scan_body);
    NIMBLE_RETURN_IF_ERROR(Annotate(ImportGraph(body_attr->g(), &body_scope), "attribute 'body'"));
    loop_body->AddOutput(cond);
    for (Value* out : scan->outputs()) loop_body->AddOutput(out);

    node->set_op_type("Loop");
    node->set_inputs({batch->output(0), nullptr});
    node->subgraphs()["body"] = std::move(loop_body);
    return absl::OkStatus();
  }

  absl::Status ImportAttribute(const pb::AttributeProto& a, Node* node, Scope* scope) {
    using A = pb::AttributeProto;
    if (!a.ref_attr_name().empty()) {
      return absl::UnimplementedError(
          absl::StrCat("refers to the function attribute '", a.ref_attr_name(),
                       "' (ref_attr_name), which is only supported inside functions"));
    }
    vm::Attributes& attrs = node->attrs();
    const A::AttributeType type = InferAttributeType(a);
    switch (type) {
      case A::FLOAT:
        // ONNX attributes are float32; the double holds that value exactly.
        attrs.Set(a.name(), static_cast<double>(a.f()));
        return absl::OkStatus();
      case A::INT:
        attrs.Set(a.name(), static_cast<int64_t>(a.i()));
        return absl::OkStatus();
      case A::STRING:
        attrs.Set(a.name(), a.s());
        return absl::OkStatus();
      case A::FLOATS:
        attrs.Set(a.name(), std::vector<double>(a.floats().begin(), a.floats().end()));
        return absl::OkStatus();
      case A::INTS:
        attrs.Set(a.name(), std::vector<int64_t>(a.ints().begin(), a.ints().end()));
        return absl::OkStatus();
      case A::STRINGS:
        attrs.Set(a.name(), std::vector<std::string>(a.strings().begin(), a.strings().end()));
        return absl::OkStatus();
      case A::TENSOR: {
        NIMBLE_ASSIGN_OR_RETURN(vm::Tensor t, TensorFromProto(a.t(), model_dir_));
        attrs.Set(a.name(), std::move(t));
        return absl::OkStatus();
      }
      case A::GRAPH: {
        const std::string name =
            a.g().name().empty() ? absl::StrCat(node->name(), ".", a.name()) : a.g().name();
        auto sub = std::make_unique<Graph>(name, scope->graph);
        Scope sub_scope{sub.get(), scope, {}};
        node->subgraphs()[a.name()] = std::move(sub);
        return ImportGraph(a.g(), &sub_scope);
      }
      case A::TYPE_PROTO:
        // Optional's 'type' (the type of an empty optional): as elem_type + elem_is_sequence,
        // which the Optional type relation reads.
        if (node->op_type() == "Optional" && a.name() == "type") {
          const pb::TypeProto* t = &a.tp();
          if (t->value_case() == pb::TypeProto::kOptionalType) t = &t->optional_type().elem_type();
          bool is_sequence = false;
          if (t->value_case() == pb::TypeProto::kSequenceType) {
            is_sequence = true;
            t = &t->sequence_type().elem_type();
          }
          if (t->value_case() != pb::TypeProto::kTensorType) {
            return absl::UnimplementedError("Optional 'type' must be a tensor or sequence type");
          }
          attrs.Set("elem_type", static_cast<int64_t>(t->tensor_type().elem_type()));
          attrs.Set("elem_is_sequence", static_cast<int64_t>(is_sequence ? 1 : 0));
          return absl::OkStatus();
        }
        break;
      case A::UNDEFINED:
        return absl::InvalidArgumentError("has no type and no value");
      case A::SPARSE_TENSOR:
      case A::TENSORS:
      case A::GRAPHS:
      case A::SPARSE_TENSORS:
      case A::TYPE_PROTOS:
        break;
    }
    return absl::UnimplementedError(
        absl::StrCat("attributes of type ", AttributeTypeName(type), " are not supported"));
  }

  const pb::ModelProto& model_;
  const std::string model_dir_;
  const ImportOptions& options_;
  Module* module_;
  std::map<std::pair<std::string, std::string>, const pb::FunctionProto*> functions_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Module>> ImportOnnxModelFromBytes(absl::string_view bytes,
                                                                 const std::string& model_dir,
                                                                 const ImportOptions& options) {
  if (bytes.empty()) return absl::InvalidArgumentError("not an ONNX model: the input is empty");
  if (static_cast<int64_t>(bytes.size()) > std::min<int64_t>(options.max_model_bytes, INT_MAX)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the model is ", bytes.size(), " bytes, larger than the limit of ",
                     std::min<int64_t>(options.max_model_bytes, INT_MAX),
                     " bytes (store large weights as external data)"));
  }
  pb::ModelProto model;
  if (!model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError("not an ONNX model: failed to parse protobuf");
  }
  if (!model.has_graph()) {
    return absl::InvalidArgumentError("not an ONNX model: the ModelProto has no graph");
  }
  auto module = std::make_unique<Module>();
  Importer importer(model, model_dir, options, module.get());
  NIMBLE_RETURN_IF_ERROR(importer.Run());
  return module;
}

absl::StatusOr<std::unique_ptr<Module>> ImportOnnxModel(const std::string& path,
                                                        const ImportOptions& options) {
  NIMBLE_ASSIGN_OR_RETURN(
      std::string bytes,
      ReadFileToString(path, std::min<int64_t>(options.max_model_bytes, INT_MAX)));
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = std::filesystem::path(".");
  absl::StatusOr<std::unique_ptr<Module>> module =
      ImportOnnxModelFromBytes(bytes, dir.string(), options);
  if (!module.ok()) return Annotate(module.status(), absl::StrCat("'", path, "'"));
  return module;
}

}  // namespace nimble::compiler
