#include "compiler/ir/dim_expr.h"

#include <algorithm>
#include <functional>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace nimble::compiler {
namespace {

constexpr int64_t kInf = std::numeric_limits<int64_t>::max();
constexpr int64_t kNegInf = std::numeric_limits<int64_t>::min();

int64_t SatAdd(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) return (a > 0) ? kInf : kNegInf;
  return r;
}
int64_t SatMul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return ((a > 0) == (b > 0)) ? kInf : kNegInf;
  return r;
}
int64_t FloorDivInt(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}
int64_t FloorModInt(int64_t a, int64_t b) { return a - FloorDivInt(a, b) * b; }

DimExpr::Monomial MergeMonomials(const DimExpr::Monomial& a, const DimExpr::Monomial& b) {
  DimExpr::Monomial out;
  out.reserve(a.size() + b.size());
  std::merge(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

}  // namespace

DimExpr DimExpr::Const(int64_t value) {
  DimExpr e;
  if (value != 0) e.terms_[{}] = value;
  return e;
}

DimExpr DimExpr::Atom(int32_t atom) {
  DimExpr e;
  e.terms_[{atom}] = 1;
  return e;
}

int64_t DimExpr::ConstValue() const { return terms_.empty() ? 0 : terms_.begin()->second; }

std::optional<int32_t> DimExpr::AsAtom() const {
  if (terms_.size() != 1) return std::nullopt;
  const auto& [monomial, coeff] = *terms_.begin();
  if (coeff != 1 || monomial.size() != 1) return std::nullopt;
  return monomial[0];
}

DimExpr operator+(const DimExpr& a, const DimExpr& b) {
  DimExpr r = a;
  for (const auto& [m, c] : b.terms_) {
    int64_t& slot = r.terms_[m];
    slot += c;
    if (slot == 0) r.terms_.erase(m);
  }
  return r;
}

DimExpr DimExpr::operator-() const {
  DimExpr r = *this;
  for (auto& [m, c] : r.terms_) c = -c;
  return r;
}

DimExpr operator-(const DimExpr& a, const DimExpr& b) { return a + (-b); }

DimExpr operator*(const DimExpr& a, const DimExpr& b) {
  DimExpr r;
  for (const auto& [ma, ca] : a.terms_) {
    for (const auto& [mb, cb] : b.terms_) {
      DimExpr::Monomial m = MergeMonomials(ma, mb);
      int64_t& slot = r.terms_[m];
      slot += ca * cb;
      if (slot == 0) r.terms_.erase(m);
    }
  }
  return r;
}

DimExpr DimContext::Symbol(const std::string& name, DimBounds bounds) {
  auto it = symbols_.find(name);
  if (it != symbols_.end()) return DimExpr::Atom(it->second);
  const int32_t id = static_cast<int32_t>(atoms_.size());
  atoms_.push_back(AtomInfo{AtomKind::kSymbol, name, {}, {}, bounds});
  symbols_[name] = id;
  return DimExpr::Atom(id);
}

DimExpr DimContext::FreshSymbol(absl::string_view hint, DimBounds bounds) {
  std::string name;
  do {
    name = absl::StrCat(hint, fresh_counter_++);
  } while (symbols_.count(name) != 0);
  return Symbol(name, bounds);
}

std::optional<int32_t> DimContext::FindSymbol(const std::string& name) const {
  auto it = symbols_.find(name);
  if (it == symbols_.end()) return std::nullopt;
  return it->second;
}

DimExpr DimContext::Opaque(AtomKind kind, const DimExpr& a, const DimExpr& b) {
  auto key = std::make_tuple(kind, a, b);
  auto it = opaque_.find(key);
  if (it != opaque_.end()) return DimExpr::Atom(it->second);
  const int32_t id = static_cast<int32_t>(atoms_.size());
  AtomInfo info{kind, "", a, b, {}};
  const DimBounds ba = Bounds(a), bb = Bounds(b);
  switch (kind) {
    case AtomKind::kFloorDiv:
    case AtomKind::kCeilDiv:
      // Conservative: non-negative operands give [0, ceil(a.hi / b.lo)].
      info.bounds = (bb.lo > 0 && ba.lo >= 0)
                        ? DimBounds{0, ba.hi == kInf ? kInf : SatAdd(ba.hi, bb.lo - 1) / bb.lo}
                        : DimBounds{kNegInf, kInf};
      break;
    case AtomKind::kMod:
      info.bounds =
          bb.lo > 0 ? DimBounds{0, bb.hi == kInf ? kInf : bb.hi - 1} : DimBounds{kNegInf, kInf};
      break;
    case AtomKind::kMin:
      info.bounds = {std::min(ba.lo, bb.lo), std::min(ba.hi, bb.hi)};
      break;
    case AtomKind::kMax:
      info.bounds = {std::max(ba.lo, bb.lo), std::max(ba.hi, bb.hi)};
      break;
    case AtomKind::kSymbol:
      break;
  }
  atoms_.push_back(std::move(info));
  opaque_[key] = id;
  return DimExpr::Atom(id);
}

DimExpr DimContext::FloorDiv(const DimExpr& a, const DimExpr& b) {
  if (auto cb = b.AsConst()) {
    if (*cb == 1) return a;
    if (auto ca = a.AsConst(); ca && *cb != 0) return DimExpr::Const(FloorDivInt(*ca, *cb));
    if (*cb > 0) {
      // Exact when every coefficient is divisible: (4*s + 8) / 4 = s + 2.
      bool divisible = true;
      for (const auto& [m, c] : a.terms()) divisible = divisible && (c % *cb == 0);
      if (divisible) {
        DimExpr r;
        for (const auto& term : a.terms()) {
          DimExpr mono = DimExpr::Const(term.second / *cb);
          for (int32_t atom : term.first) mono = mono * DimExpr::Atom(atom);
          r = r + mono;
        }
        return r;
      }
    }
  }
  if (a == b && Bounds(b).lo > 0) return DimExpr::Const(1);
  return Opaque(AtomKind::kFloorDiv, a, b);
}

DimExpr DimContext::CeilDiv(const DimExpr& a, const DimExpr& b) {
  if (auto cb = b.AsConst()) {
    if (*cb == 1) return a;
    if (auto ca = a.AsConst(); ca && *cb != 0) return DimExpr::Const(-FloorDivInt(-*ca, *cb));
    if (*cb > 0) {
      bool divisible = true;
      for (const auto& term : a.terms()) divisible = divisible && (term.second % *cb == 0);
      if (divisible) return FloorDiv(a, b);  // exact
    }
  }
  // ceil(a/b) = floor((a + b - 1) / b); folds when exact.
  DimExpr exact = FloorDiv(a + b - DimExpr::Const(1), b);
  if (!exact.AsAtom() || atom(*exact.AsAtom()).kind != AtomKind::kFloorDiv) return exact;
  return Opaque(AtomKind::kCeilDiv, a, b);
}

DimExpr DimContext::Mod(const DimExpr& a, const DimExpr& b) {
  if (auto cb = b.AsConst()) {
    if (*cb == 1) return DimExpr::Const(0);
    if (auto ca = a.AsConst(); ca && *cb != 0) return DimExpr::Const(FloorModInt(*ca, *cb));
    if (*cb > 0) {
      bool divisible = true;
      for (const auto& [m, c] : a.terms()) divisible = divisible && (c % *cb == 0);
      if (divisible) return DimExpr::Const(0);
    }
  }
  return Opaque(AtomKind::kMod, a, b);
}

// min/max are kept flat and canonical: max(a, max(b, a)) is max(a, b), operands dominated by
// another operand (provably) are dropped, and the rest are sorted, so equal sets intern to the
// same atom and memory plans of symbolic sizes stay short.
DimExpr DimContext::Extremum(AtomKind kind, const DimExpr& a, const DimExpr& b) {
  std::vector<DimExpr> operands;
  std::function<void(const DimExpr&)> collect = [&](const DimExpr& e) {
    if (auto atom = e.AsAtom(); atom && atoms_[*atom].kind == kind) {
      collect(atoms_[*atom].lhs);
      collect(atoms_[*atom].rhs);
      return;
    }
    if (std::find(operands.begin(), operands.end(), e) == operands.end()) operands.push_back(e);
  };
  collect(a);
  collect(b);
  const bool is_max = kind == AtomKind::kMax;
  std::vector<DimExpr> kept;
  for (size_t i = 0; i < operands.size(); ++i) {
    bool dominated = false;
    for (size_t j = 0; j < operands.size() && !dominated; ++j) {
      if (i == j) continue;
      const bool le = ProvablyLessEqual(operands[i], operands[j]);
      const bool ge = ProvablyLessEqual(operands[j], operands[i]);
      // Dominated by j (ties broken by index so exactly one of two equal operands stays).
      dominated = is_max ? (le && (!ge || j < i)) : (ge && (!le || j < i));
    }
    if (!dominated) kept.push_back(operands[i]);
  }
  std::sort(kept.begin(), kept.end());
  DimExpr result = kept[0];
  for (size_t i = 1; i < kept.size(); ++i) result = Opaque(kind, result, kept[i]);
  return result;
}

DimExpr DimContext::Min(const DimExpr& a, const DimExpr& b) { return Extremum(AtomKind::kMin, a, b); }

DimExpr DimContext::Max(const DimExpr& a, const DimExpr& b) { return Extremum(AtomKind::kMax, a, b); }

DimBounds DimContext::Bounds(const DimExpr& e) const {
  DimBounds total{0, 0};
  for (const auto& [m, c] : e.terms()) {
    // Bounds of the monomial (atoms are treated as independent; sound, not tight).
    int64_t lo = 1, hi = 1;
    for (int32_t id : m) {
      const DimBounds b = atoms_[id].bounds;
      const int64_t cands[] = {SatMul(lo, b.lo), SatMul(lo, b.hi), SatMul(hi, b.lo),
                               SatMul(hi, b.hi)};
      lo = *std::min_element(std::begin(cands), std::end(cands));
      hi = *std::max_element(std::begin(cands), std::end(cands));
    }
    const int64_t tlo = c >= 0 ? SatMul(c, lo) : SatMul(c, hi);
    const int64_t thi = c >= 0 ? SatMul(c, hi) : SatMul(c, lo);
    total.lo = SatAdd(total.lo, tlo);
    total.hi = SatAdd(total.hi, thi);
  }
  return total;
}

bool DimContext::ProvablyLessEqual(const DimExpr& a, const DimExpr& b) const {
  if (a == b) return true;
  const DimBounds d = Bounds(b - a);
  return d.lo >= 0 && d.lo != kNegInf;
}

absl::StatusOr<int64_t> DimContext::Evaluate(
    const DimExpr& e, const absl::flat_hash_map<int32_t, int64_t>& bindings) const {
  int64_t total = 0;
  for (const auto& [m, c] : e.terms()) {
    int64_t term = c;
    for (int32_t id : m) {
      const AtomInfo& info = atoms_[id];
      int64_t v = 0;
      if (info.kind == AtomKind::kSymbol) {
        auto it = bindings.find(id);
        if (it == bindings.end()) {
          return absl::InvalidArgumentError(absl::StrCat("symbol '", info.name, "' is unbound"));
        }
        v = it->second;
      } else {
        auto lhs = Evaluate(info.lhs, bindings);
        if (!lhs.ok()) return lhs.status();
        auto rhs = Evaluate(info.rhs, bindings);
        if (!rhs.ok()) return rhs.status();
        const bool divides = info.kind == AtomKind::kFloorDiv || info.kind == AtomKind::kCeilDiv ||
                             info.kind == AtomKind::kMod;
        if (divides && *rhs == 0) return absl::InvalidArgumentError("division by zero in a shape");
        switch (info.kind) {
          case AtomKind::kFloorDiv:
            v = FloorDivInt(*lhs, *rhs);
            break;
          case AtomKind::kCeilDiv:
            v = -FloorDivInt(-*lhs, *rhs);
            break;
          case AtomKind::kMod:
            v = FloorModInt(*lhs, *rhs);
            break;
          case AtomKind::kMin:
            v = std::min(*lhs, *rhs);
            break;
          case AtomKind::kMax:
            v = std::max(*lhs, *rhs);
            break;
          case AtomKind::kSymbol:
            break;
        }
      }
      if (__builtin_mul_overflow(term, v, &term)) {
        return absl::InvalidArgumentError("shape arithmetic overflows int64");
      }
    }
    if (__builtin_add_overflow(total, term, &total)) {
      return absl::InvalidArgumentError("shape arithmetic overflows int64");
    }
  }
  return total;
}

std::string DimContext::ToString(const DimExpr& e) const {
  if (e.terms().empty()) return "0";
  std::vector<std::string> parts;
  // Constant term last: "seq + 1" rather than "1 + seq".
  for (auto it = e.terms().begin(); it != e.terms().end(); ++it) {
    const auto& [m, c] = *it;
    if (m.empty()) continue;
    std::vector<std::string> factors;
    for (int32_t id : m) {
      const AtomInfo& info = atoms_[id];
      switch (info.kind) {
        case AtomKind::kSymbol:
          factors.push_back(info.name);
          break;
        case AtomKind::kFloorDiv:
          factors.push_back(
              absl::StrCat("floordiv(", ToString(info.lhs), ", ", ToString(info.rhs), ")"));
          break;
        case AtomKind::kCeilDiv:
          factors.push_back(
              absl::StrCat("ceildiv(", ToString(info.lhs), ", ", ToString(info.rhs), ")"));
          break;
        case AtomKind::kMod:
          factors.push_back(
              absl::StrCat("mod(", ToString(info.lhs), ", ", ToString(info.rhs), ")"));
          break;
        case AtomKind::kMin:
          factors.push_back(
              absl::StrCat("min(", ToString(info.lhs), ", ", ToString(info.rhs), ")"));
          break;
        case AtomKind::kMax:
          factors.push_back(
              absl::StrCat("max(", ToString(info.lhs), ", ", ToString(info.rhs), ")"));
          break;
      }
    }
    std::string mono = absl::StrJoin(factors, "*");
    if (c == 1)
      parts.push_back(mono);
    else if (c == -1)
      parts.push_back("-" + mono);
    else
      parts.push_back(absl::StrCat(c, "*", mono));
  }
  if (auto it = e.terms().find({}); it != e.terms().end())
    parts.push_back(absl::StrCat(it->second));
  std::string out = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) {
    if (parts[i][0] == '-')
      absl::StrAppend(&out, " - ", parts[i].substr(1));
    else
      absl::StrAppend(&out, " + ", parts[i]);
  }
  return out;
}

}  // namespace nimble::compiler
