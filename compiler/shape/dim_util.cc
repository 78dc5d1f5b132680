#include "compiler/shape/dim_util.h"

#include <algorithm>
#include <map>

namespace nimble::compiler {
namespace {

constexpr __int128 kCoeffLimit = static_cast<__int128>(1) << 62;

using Terms = std::map<DimExpr::Monomial, __int128>;

std::optional<DimExpr> Build(const Terms& terms) {
  DimExpr out;
  for (const auto& [m, c] : terms) {
    if (c == 0) continue;
    if (c >= kCoeffLimit || c <= -kCoeffLimit) return std::nullopt;
    DimExpr term = DimExpr::Const(static_cast<int64_t>(c));
    for (int32_t atom : m) term = term * DimExpr::Atom(atom);
    out = out + term;
  }
  return out;
}

Terms ToTerms(const DimExpr& e) {
  Terms t;
  for (const auto& [m, c] : e.terms()) t[m] = c;
  return t;
}

DimExpr::Monomial Merge(const DimExpr::Monomial& a, const DimExpr::Monomial& b) {
  DimExpr::Monomial out;
  std::merge(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

// Graded lexicographic order on monomials (a proper monomial order, so division terminates):
// higher degree first, then the larger exponent of the smallest differing atom id.
bool GrlexLess(const DimExpr::Monomial& a, const DimExpr::Monomial& b) {
  if (a.size() != b.size()) return a.size() < b.size();
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return a[i] > b[i];
  }
  return false;
}

std::pair<DimExpr::Monomial, int64_t> Leading(const DimExpr& e) {
  auto best = e.terms().begin();
  for (auto it = e.terms().begin(); it != e.terms().end(); ++it) {
    if (GrlexLess(best->first, it->first)) best = it;
  }
  return *best;
}

}  // namespace

bool IsSafe(const DimExpr& e) {
  for (const auto& [m, c] : e.terms()) {
    if (c >= (int64_t{1} << 62) || c <= -(int64_t{1} << 62)) return false;
  }
  return true;
}

std::optional<DimExpr> CheckedAdd(const DimExpr& a, const DimExpr& b) {
  Terms t = ToTerms(a);
  for (const auto& [m, c] : b.terms()) t[m] += c;
  return Build(t);
}

std::optional<DimExpr> CheckedSub(const DimExpr& a, const DimExpr& b) {
  Terms t = ToTerms(a);
  for (const auto& [m, c] : b.terms()) t[m] -= c;
  return Build(t);
}

std::optional<DimExpr> CheckedMul(const DimExpr& a, const DimExpr& b) {
  Terms t;
  for (const auto& [ma, ca] : a.terms()) {
    for (const auto& [mb, cb] : b.terms()) {
      __int128& slot = t[Merge(ma, mb)];
      slot += static_cast<__int128>(ca) * cb;
      if (slot >= kCoeffLimit * 4 || slot <= -kCoeffLimit * 4) return std::nullopt;
    }
  }
  return Build(t);
}

std::optional<DimExpr> ExactDiv(const DimExpr& a, const DimExpr& b) {
  if (b.terms().empty()) return std::nullopt;  // division by zero
  if (a == b) return DimExpr::Const(1);
  DimExpr q;
  DimExpr rem = a;
  const auto [lead_m, lead_c] = Leading(b);
  for (int step = 0; step < 256; ++step) {
    if (rem.terms().empty()) return q;
    const auto [m, c] = Leading(rem);
    if (c % lead_c != 0 || !std::includes(m.begin(), m.end(), lead_m.begin(), lead_m.end())) {
      return std::nullopt;
    }
    DimExpr::Monomial rest;
    std::set_difference(m.begin(), m.end(), lead_m.begin(), lead_m.end(), std::back_inserter(rest));
    DimExpr t = DimExpr::Const(c / lead_c);
    for (int32_t atom : rest) t = t * DimExpr::Atom(atom);
    std::optional<DimExpr> tb = CheckedMul(t, b);
    if (!tb) return std::nullopt;
    std::optional<DimExpr> next = CheckedSub(rem, *tb);
    if (!next) return std::nullopt;
    rem = *next;
    q = q + t;
  }
  return std::nullopt;
}

bool ProvablyNotEqual(const DimContext& ctx, const DimExpr& a, const DimExpr& b) {
  std::optional<DimExpr> d = CheckedSub(a, b);
  if (!d) return false;
  if (d->IsConst()) return d->ConstValue() != 0;
  const DimBounds bounds = ctx.Bounds(*d);
  return bounds.lo > 0 || bounds.hi < 0;
}

bool ProvablyNotOne(const DimContext& ctx, const DimExpr& e) {
  if (e.IsConst()) return e.ConstValue() != 1;
  const DimBounds b = ctx.Bounds(e);
  return b.lo >= 2 || b.hi <= 0;
}

bool ProvablyPositive(const DimContext& ctx, const DimExpr& e) { return ctx.Bounds(e).lo >= 1; }

std::optional<DimExpr> ProductOf(const std::vector<Dim>& dims, size_t begin, size_t end) {
  DimExpr p = DimExpr::Const(1);
  for (size_t i = begin; i < end && i < dims.size(); ++i) {
    if (!dims[i]) return std::nullopt;
    std::optional<DimExpr> next = CheckedMul(p, *dims[i]);
    if (!next) return std::nullopt;
    p = *next;
  }
  return p;
}

void CollectSymbols(const DimContext& ctx, const DimExpr& e, std::set<int32_t>& out) {
  for (const auto& [m, c] : e.terms()) {
    for (int32_t atom : m) {
      const DimContext::AtomInfo& info = ctx.atom(atom);
      if (info.kind == DimContext::AtomKind::kSymbol) {
        out.insert(atom);
      } else {
        CollectSymbols(ctx, info.lhs, out);
        CollectSymbols(ctx, info.rhs, out);
      }
    }
  }
}

}  // namespace nimble::compiler
