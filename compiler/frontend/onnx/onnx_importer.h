// ONNX ModelProto -> compiler IR (Module).
//
//   graph inputs   -> Graph inputs; dim_value -> constant dim, dim_param -> DimContext symbol of
//                     that name (bounds [0, INT64_MAX]), no value -> unknown dim, no shape ->
//                     unknown rank; sequence/optional types -> Type::Sequence/Optional.
//   initializers   -> constants with static types. An initializer that is also listed as an
//                     input of the main graph is, in ONNX, an input with a default value; Nimble
//                     treats it as a constant (the input disappears) unless
//                     keep_initializer_inputs. In subgraphs the input wins (their inputs are
//                     positional).
//   nodes          -> Nodes (op_type, domain with "ai.onnx" folded to "", the domain's opset,
//                     a synthesized "<Op>_<index>" name when the node has none). Attributes
//                     become vm::Attributes; GRAPH attributes become Node::subgraphs() whose
//                     reads of enclosing values are recorded with Graph::AddCapture on every
//                     graph between the reader and the value's owner.
//   value names    -> Value::name(). Node result types stay dtype kInvalid (type inference fills
//                     them) unless value_info or the graph's output list gives a type.
//
// Nodes may appear out of order (they are sorted after import); a name that no node, input or
// initializer of the graph or an enclosing graph defines is an error.
//
// Thread-safe: the functions keep no state.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "compiler/ir/graph.h"

namespace nimble::compiler {

// ai.onnx opsets the importer accepts. Older opsets changed operator signatures in ways Nimble
// does not implement.
inline constexpr int kMinOnnxOpset = 7;
inline constexpr int kMaxOnnxOpset = 27;

struct ImportOptions {
  // Keep graph inputs that have an initializer as inputs (the initializer value is dropped; the
  // caller must feed them) instead of turning them into constants.
  bool keep_initializer_inputs = false;
  // Largest model file accepted (protobuf cannot parse 2 GiB or more in one message; larger
  // weights must use external data).
  int64_t max_model_bytes = (int64_t{1} << 31) - 1;
  // Accepted range of the ai.onnx opset.
  int min_opset = kMinOnnxOpset;
  int max_opset = kMaxOnnxOpset;
};

// Reads and imports the model at `path`; external data is resolved relative to its directory.
absl::StatusOr<std::unique_ptr<Module>> ImportOnnxModel(const std::string& path,
                                                        const ImportOptions& options = {});

// Imports a serialized ModelProto. `model_dir` is where external data lives ("" when the model
// has none: external data is then an error).
absl::StatusOr<std::unique_ptr<Module>> ImportOnnxModelFromBytes(absl::string_view bytes,
                                                                 const std::string& model_dir,
                                                                 const ImportOptions& options = {});

}  // namespace nimble::compiler
