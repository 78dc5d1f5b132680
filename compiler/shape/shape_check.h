// Run-time shape checks (gradual typing). When type inference needs a fact about symbolic dims
// that it cannot prove (two dims of an Add that must broadcast, the inner dims of a MatMul), it
// does not assume it: it records a ShapeCheck on the node, and the lowering turns each check into
// a VM Assert evaluated with the run-time symbol bindings. A check that is provably false at
// compile time is an error instead (kInvalidArgument naming the node and the dims).
//
// Encoding on the node (two attributes written together by EncodeShapeChecks):
//   "_checks"      std::vector<std::string>, one per check, for people and IR dumps:
//                    "len == seq || len == 1 : broadcasting axis 2 of inputs 0 and 1"
//                  i.e. "<condition> : <message>"; the message is what the Assert reports.
//   "_check_exprs" vm::Tensor i64[n], the same checks for machines, in order:
//                    check := kind lhs rhs
//                    expr  := num_terms (coefficient num_atoms atom_id*)*
//                  where kind is ShapeCheck::Kind's value and atom ids index the module's
//                  DimContext (symbols and opaque floordiv/min/... terms alike).
// DecodeShapeChecks turns them back into ShapeChecks; the lowering never parses the text.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "compiler/ir/dim_expr.h"
#include "compiler/ir/graph.h"

namespace nimble::compiler {

struct ShapeCheck {
  enum class Kind : int64_t {
    kEqual = 0,          // lhs == rhs
    kBroadcastable = 1,  // lhs == rhs || lhs == 1   (lhs broadcasts onto rhs)
    kLessEqual = 2,      // lhs <= rhs
    kNotEqual = 3,       // lhs != rhs
  };
  Kind kind = Kind::kEqual;
  DimExpr lhs, rhs;
  std::string message;

  friend bool operator==(const ShapeCheck& a, const ShapeCheck& b) {
    return a.kind == b.kind && a.lhs == b.lhs && a.rhs == b.rhs;
  }
};

// "len == seq || len == 1".
std::string ShapeCheckCondition(const ShapeCheck& check, const DimContext& dims);

// Writes "_checks" and "_check_exprs" on `node` (replacing earlier ones); removes both when
// `checks` is empty.
void EncodeShapeChecks(Node& node, const std::vector<ShapeCheck>& checks, const DimContext& dims);

// The checks recorded on `node` (empty when none). kInvalidArgument when the attributes are
// malformed or name atoms `dims` does not have.
absl::StatusOr<std::vector<ShapeCheck>> DecodeShapeChecks(const Node& node, const DimContext& dims);

// Adds the checks recorded on `from` to those of `into` (duplicates dropped). Passes that
// replace nodes (fusion, CSE) must carry the checks of the nodes they remove this way, or the
// run-time guarantees those checks give are lost.
absl::Status MergeShapeChecks(Node& into, const Node& from, const DimContext& dims);

// Removes the attributes type inference writes ("_checks", "_check_exprs", "_shape_mode",
// "_taken_branch").
void ClearTypeInferenceAttrs(Node& node);

// Attribute names written by type inference.
inline constexpr char kChecksAttr[] = "_checks";
inline constexpr char kCheckExprsAttr[] = "_check_exprs";
inline constexpr char kShapeModeAttr[] = "_shape_mode";
inline constexpr char kShapeModeRuntime[] = "runtime";
// On an If whose condition is a compile-time constant: "then_branch" or "else_branch", the one
// that runs (the other need not type-check).
inline constexpr char kTakenBranchAttr[] = "_taken_branch";

}  // namespace nimble::compiler
