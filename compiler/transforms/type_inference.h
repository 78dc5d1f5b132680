// Type inference: gives every value in a module (subgraphs included) its Type — always the
// element type, and the rank and symbolic dims wherever they can be derived — by running each
// node's type relation (compiler/shape/type_relations.h) in topological order.
//
//   before:  %3 = Reshape(%0:x, %2)        %0:x: f32[batch, seq, 768], %2 = Concat(Shape..., [12,
//   64]) after:   %3: f32[batch, seq, 12, 64] = Reshape(%0:x, %2)
//
// Besides types, the pass writes:
//   Value::symbolic_value   element values of small integer shape tensors, as DimExprs;
//   "_shape_mode"="runtime" on nodes whose output dims depend on input values (NonZero,
//                           Reshape by a run-time shape, ...): those dims are fresh symbols
//                           ("_rt<n>", bounds [0, 2^40]) that the lowering binds from the tensors
//                           the kernel's run-time shape function produces;
//   "_checks"/"_check_exprs" facts the types rely on that could not be proven at compile time
//                           (see compiler/shape/shape_check.h); the lowering emits VM asserts;
//   "_taken_branch"         on an If whose condition is known at compile time: the branch that
//                           runs. Only it must type-check (the other is inferred best effort).
// Provably inconsistent models fail with kInvalidArgument naming the node; operators without a
// relation fail with kUnimplemented ("unsupported operator 'Foo' (domain '', opset 17) at node
// 'bar'").
//
// Unknown dims (nullopt) of the main graph's inputs are first named with fresh symbols ("_in<n>",
// bound from the input tensors like ONNX dim_params); constant input dims above 2^40 are
// rejected, symbol upper bounds are capped at 2^40 (keeping bounds arithmetic exact), and any
// output whose element count overflows int64 is rejected. Nodes without an opset
// use the module's opset for their domain (17 if the module has none). Re-running the pass is
// stable: a node reuses the run-time symbols it invented last time.
#pragma once

#include "absl/status/status.h"
#include "compiler/ir/graph.h"
#include "compiler/shape/type_relations.h"

namespace nimble::compiler {

// Infers the whole module with RelationRegistry::Global().
[[nodiscard]] absl::Status InferTypes(Module& module);
[[nodiscard]] absl::Status InferTypes(Module& module, const RelationRegistry& relations);

// Infers one node (and its subgraphs) from its inputs' current types, e.g. after a pass
// rewrote it.
[[nodiscard]] absl::Status InferNodeTypes(Module& module, Node& node);
[[nodiscard]] absl::Status InferNodeTypes(Module& module, Node& node,
                                          const RelationRegistry& relations);

}  // namespace nimble::compiler
