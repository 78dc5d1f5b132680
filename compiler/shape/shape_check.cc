#include "compiler/shape/shape_check.h"

#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/types/span.h"
#include "base/status_macros.h"

namespace nimble::compiler {
namespace {

void EncodeExpr(const DimExpr& e, std::vector<int64_t>& out) {
  out.push_back(static_cast<int64_t>(e.terms().size()));
  for (const auto& [monomial, coeff] : e.terms()) {
    out.push_back(coeff);
    out.push_back(static_cast<int64_t>(monomial.size()));
    for (int32_t atom : monomial) out.push_back(atom);
  }
}

// Reads one expression at `pos`; advances `pos`.
absl::StatusOr<DimExpr> DecodeExpr(absl::Span<const int64_t> data, size_t& pos,
                                   const DimContext& dims) {
  auto next = [&]() -> absl::StatusOr<int64_t> {
    if (pos >= data.size()) return absl::InvalidArgumentError("truncated _check_exprs");
    return data[pos++];
  };
  NIMBLE_ASSIGN_OR_RETURN(int64_t num_terms, next());
  if (num_terms < 0 || static_cast<size_t>(num_terms) > data.size()) {
    return absl::InvalidArgumentError("malformed _check_exprs");
  }
  DimExpr e;
  for (int64_t t = 0; t < num_terms; ++t) {
    NIMBLE_ASSIGN_OR_RETURN(int64_t coeff, next());
    NIMBLE_ASSIGN_OR_RETURN(int64_t num_atoms, next());
    if (num_atoms < 0 || static_cast<size_t>(num_atoms) > data.size()) {
      return absl::InvalidArgumentError("malformed _check_exprs");
    }
    DimExpr term = DimExpr::Const(coeff);
    for (int64_t a = 0; a < num_atoms; ++a) {
      NIMBLE_ASSIGN_OR_RETURN(int64_t atom, next());
      if (atom < 0 || atom >= dims.num_atoms()) {
        return absl::InvalidArgumentError(absl::StrCat("_check_exprs names unknown atom ", atom));
      }
      term = term * DimExpr::Atom(static_cast<int32_t>(atom));
    }
    e = e + term;
  }
  return e;
}

void EraseAttrs(Node& node, std::initializer_list<absl::string_view> names) {
  vm::Attributes kept;
  for (const auto& [name, value] : node.attrs().values()) {
    bool drop = false;
    for (absl::string_view n : names) drop = drop || name == n;
    if (!drop) kept.Set(name, value);
  }
  node.attrs() = std::move(kept);
}

}  // namespace

std::string ShapeCheckCondition(const ShapeCheck& check, const DimContext& dims) {
  const std::string l = dims.ToString(check.lhs), r = dims.ToString(check.rhs);
  switch (check.kind) {
    case ShapeCheck::Kind::kEqual:
      return absl::StrCat(l, " == ", r);
    case ShapeCheck::Kind::kBroadcastable:
      return absl::StrCat(l, " == ", r, " || ", l, " == 1");
    case ShapeCheck::Kind::kLessEqual:
      return absl::StrCat(l, " <= ", r);
    case ShapeCheck::Kind::kNotEqual:
      return absl::StrCat(l, " != ", r);
  }
  return "?";
}

void EncodeShapeChecks(Node& node, const std::vector<ShapeCheck>& checks, const DimContext& dims) {
  EraseAttrs(node, {kChecksAttr, kCheckExprsAttr});
  if (checks.empty()) return;
  std::vector<std::string> text;
  std::vector<int64_t> exprs;
  for (const ShapeCheck& c : checks) {
    text.push_back(absl::StrCat(ShapeCheckCondition(c, dims), " : ", c.message));
    exprs.push_back(static_cast<int64_t>(c.kind));
    EncodeExpr(c.lhs, exprs);
    EncodeExpr(c.rhs, exprs);
  }
  node.attrs().Set(kChecksAttr, std::move(text));
  const int64_t n = static_cast<int64_t>(exprs.size());
  node.attrs().Set(kCheckExprsAttr,
                   vm::Tensor::FromVector<int64_t>(exprs, absl::Span<const int64_t>(&n, 1)));
}

absl::Status MergeShapeChecks(Node& into, const Node& from, const DimContext& dims) {
  NIMBLE_ASSIGN_OR_RETURN(std::vector<ShapeCheck> merged, DecodeShapeChecks(into, dims));
  NIMBLE_ASSIGN_OR_RETURN(std::vector<ShapeCheck> more, DecodeShapeChecks(from, dims));
  for (ShapeCheck& c : more) {
    bool seen = false;
    for (const ShapeCheck& m : merged) seen = seen || m == c;
    if (!seen) merged.push_back(std::move(c));
  }
  EncodeShapeChecks(into, merged, dims);
  return absl::OkStatus();
}

void ClearTypeInferenceAttrs(Node& node) {
  EraseAttrs(node, {kChecksAttr, kCheckExprsAttr, kShapeModeAttr, kTakenBranchAttr});
}

absl::StatusOr<std::vector<ShapeCheck>> DecodeShapeChecks(const Node& node,
                                                          const DimContext& dims) {
  std::vector<ShapeCheck> out;
  if (!node.attrs().Has(kCheckExprsAttr)) return out;
  NIMBLE_ASSIGN_OR_RETURN(vm::Tensor t, node.attrs().Get<vm::Tensor>(kCheckExprsAttr));
  NIMBLE_ASSIGN_OR_RETURN(std::vector<std::string> text,
                          node.attrs().Get<std::vector<std::string>>(kChecksAttr));
  if (!t.defined() || t.dtype() != vm::DType::kI64 || t.rank() != 1 || t.device() != vm::kCpu) {
    return absl::InvalidArgumentError("_check_exprs must be a host i64 vector");
  }
  absl::Span<const int64_t> data(t.data<int64_t>(), static_cast<size_t>(t.num_elements()));
  size_t pos = 0;
  while (pos < data.size()) {
    const int64_t kind = data[pos++];
    if (kind < 0 || kind > static_cast<int64_t>(ShapeCheck::Kind::kNotEqual)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown shape check kind ", kind));
    }
    ShapeCheck c;
    c.kind = static_cast<ShapeCheck::Kind>(kind);
    NIMBLE_ASSIGN_OR_RETURN(c.lhs, DecodeExpr(data, pos, dims));
    NIMBLE_ASSIGN_OR_RETURN(c.rhs, DecodeExpr(data, pos, dims));
    out.push_back(std::move(c));
  }
  if (out.size() != text.size()) {
    return absl::InvalidArgumentError("_checks and _check_exprs disagree");
  }
  for (size_t i = 0; i < out.size(); ++i) {
    std::pair<std::string, std::string> parts = absl::StrSplit(text[i], absl::MaxSplits(" : ", 1));
    out[i].message = parts.second;
  }
  return out;
}

}  // namespace nimble::compiler
