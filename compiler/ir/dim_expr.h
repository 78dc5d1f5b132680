// Symbolic dimensions. A DimExpr is an integer polynomial (sum of coefficient × monomial) over
// atoms, where an atom is a named symbol ("batch", "seq", or one the compiler invents) or an
// opaque non-linear term (floordiv, mod, ceildiv, min, max) of other expressions. The normal
// form makes equality structural: seq+1 == 1+seq, 2*(a+b) == 2*a+2*b, (4*s)/4 == s.
// Symbols carry inclusive bounds, so min/max and comparisons fold when the bounds decide them.
//
// Atoms are interned in a DimContext owned by the module; DimExprs hold atom ids and are only
// meaningful with their context. Nimble's Any (an unknown dim with no name) is not a DimExpr:
// types say "unknown" with std::nullopt (see type.h).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace nimble::compiler {

class DimContext;

class DimExpr {
 public:
  using Monomial = std::vector<int32_t>;  // sorted atom ids (repeated for powers); empty = 1

  DimExpr() = default;  // the constant 0
  static DimExpr Const(int64_t value);
  static DimExpr Atom(int32_t atom);

  bool IsConst() const {
    return terms_.empty() || (terms_.size() == 1 && terms_.begin()->first.empty());
  }
  // The value when IsConst().
  int64_t ConstValue() const;
  std::optional<int64_t> AsConst() const {
    return IsConst() ? std::optional<int64_t>(ConstValue()) : std::nullopt;
  }
  // The atom when the expression is exactly one atom with coefficient 1.
  std::optional<int32_t> AsAtom() const;

  const std::map<Monomial, int64_t>& terms() const { return terms_; }

  friend bool operator==(const DimExpr& a, const DimExpr& b) { return a.terms_ == b.terms_; }
  friend bool operator!=(const DimExpr& a, const DimExpr& b) { return !(a == b); }
  friend bool operator<(const DimExpr& a, const DimExpr& b) { return a.terms_ < b.terms_; }

  // Exact arithmetic on the normal form. Overflow of coefficients is reported by the context's
  // checked builders; these plain operators are for expressions the compiler made itself.
  friend DimExpr operator+(const DimExpr& a, const DimExpr& b);
  friend DimExpr operator-(const DimExpr& a, const DimExpr& b);
  friend DimExpr operator*(const DimExpr& a, const DimExpr& b);
  DimExpr operator-() const;

 private:
  std::map<Monomial, int64_t> terms_;  // no zero coefficients
};

// Inclusive bounds of an expression's value; hi = INT64_MAX when unbounded.
struct DimBounds {
  int64_t lo = 0;
  int64_t hi = INT64_MAX;
};

// Owns atoms. Not thread-safe: one compilation owns one context.
class DimContext {
 public:
  enum class AtomKind : uint8_t { kSymbol, kFloorDiv, kCeilDiv, kMod, kMin, kMax };
  struct AtomInfo {
    AtomKind kind = AtomKind::kSymbol;
    std::string name;  // symbols only
    DimExpr lhs, rhs;  // opaque terms only
    DimBounds bounds;  // symbols: declared; opaque terms: derived
  };

  // A named symbol (ONNX dim_param). The same name returns the same symbol.
  DimExpr Symbol(const std::string& name, DimBounds bounds = {});
  // A fresh symbol the compiler invents ("_d0", "_d1", ...) for a dim known only at run time.
  DimExpr FreshSymbol(absl::string_view hint = "_d", DimBounds bounds = {});

  // Folded when decidable: constants, exact polynomial division, bounds that decide min/max.
  DimExpr FloorDiv(const DimExpr& a, const DimExpr& b);
  DimExpr CeilDiv(const DimExpr& a, const DimExpr& b);
  DimExpr Mod(const DimExpr& a, const DimExpr& b);
  DimExpr Min(const DimExpr& a, const DimExpr& b);
  DimExpr Max(const DimExpr& a, const DimExpr& b);

  DimBounds Bounds(const DimExpr& e) const;
  // True only when provable from the normal form and bounds.
  bool ProvablyEqual(const DimExpr& a, const DimExpr& b) const { return a == b; }
  bool ProvablyLessEqual(const DimExpr& a, const DimExpr& b) const;
  bool ProvablyNonNegative(const DimExpr& e) const { return Bounds(e).lo >= 0; }

  // Value under symbol bindings (symbol atom id -> value). kInvalidArgument when a symbol is
  // unbound, on division by zero or on overflow.
  absl::StatusOr<int64_t> Evaluate(const DimExpr& e,
                                   const absl::flat_hash_map<int32_t, int64_t>& bindings) const;

  // "2*seq + 1", "floordiv(seq, 4)".
  std::string ToString(const DimExpr& e) const;

  const AtomInfo& atom(int32_t id) const { return atoms_[id]; }
  int num_atoms() const { return static_cast<int>(atoms_.size()); }
  std::optional<int32_t> FindSymbol(const std::string& name) const;
  void SetBounds(int32_t symbol, DimBounds bounds) { atoms_[symbol].bounds = bounds; }

 private:
  DimExpr Opaque(AtomKind kind, const DimExpr& a, const DimExpr& b);
  DimExpr Extremum(AtomKind kind, const DimExpr& a, const DimExpr& b);

  std::vector<AtomInfo> atoms_;
  std::map<std::string, int32_t> symbols_;
  std::map<std::tuple<AtomKind, DimExpr, DimExpr>, int32_t> opaque_;
  int fresh_counter_ = 0;
};

}  // namespace nimble::compiler
