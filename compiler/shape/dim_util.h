// Arithmetic on symbolic dims that type relations need beyond DimContext: overflow-checked
// sum/product (constants come from model data), exact polynomial division (Reshape's -1),
// and decidable comparisons.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <vector>

#include "compiler/ir/dim_expr.h"
#include "compiler/ir/type.h"

namespace nimble::compiler {

// Largest constant dim type inference accepts from model data (larger is an error), and the
// magnitude beyond which an index (Slice's INT64_MAX ends) counts as "to the end".
inline constexpr int64_t kMaxStaticDim = int64_t{1} << 40;
inline constexpr int64_t kHugeIndex = int64_t{1} << 48;

// Whether every coefficient of `e` lies within ±2^62, so that sums and differences of two such
// expressions (which DimContext's folding computes) cannot overflow. Constants read from model
// data (Slice's INT64_MAX ends) may not be.
bool IsSafe(const DimExpr& e);

// a + b, a - b, a * b; nullopt when a coefficient would leave ±2^62.
std::optional<DimExpr> CheckedAdd(const DimExpr& a, const DimExpr& b);
std::optional<DimExpr> CheckedSub(const DimExpr& a, const DimExpr& b);
std::optional<DimExpr> CheckedMul(const DimExpr& a, const DimExpr& b);

// q with a == q * b exactly (polynomial division), when there is one.
std::optional<DimExpr> ExactDiv(const DimExpr& a, const DimExpr& b);

// Provable facts (true only when the normal form and bounds decide them).
bool ProvablyNotEqual(const DimContext& ctx, const DimExpr& a, const DimExpr& b);
bool ProvablyNotOne(const DimContext& ctx, const DimExpr& e);
bool ProvablyPositive(const DimContext& ctx, const DimExpr& e);

// Product of dims [begin, end); nullopt when one is unknown or on overflow.
std::optional<DimExpr> ProductOf(const std::vector<Dim>& dims, size_t begin, size_t end);

// Ids of the symbols `e` mentions, looking inside opaque terms.
void CollectSymbols(const DimContext& ctx, const DimExpr& e, std::set<int32_t>& out);

}  // namespace nimble::compiler
