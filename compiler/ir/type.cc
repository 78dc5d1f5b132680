#include "compiler/ir/type.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace nimble::compiler {

bool TensorType::fully_known() const {
  if (!dims) return false;
  for (const Dim& d : *dims) {
    if (!d) return false;
  }
  return true;
}

bool TensorType::is_static() const {
  if (!dims) return false;
  for (const Dim& d : *dims) {
    if (!d || !d->IsConst()) return false;
  }
  return true;
}

std::vector<int64_t> TensorType::StaticDims() const {
  std::vector<int64_t> out;
  for (const Dim& d : *dims) out.push_back(d->ConstValue());
  return out;
}

std::optional<DimExpr> TensorType::NumElements() const {
  if (!fully_known()) return std::nullopt;
  DimExpr n = DimExpr::Const(1);
  for (const Dim& d : *dims) n = n * *d;
  return n;
}

TensorType TensorType::Static(vm::DType dtype, const std::vector<int64_t>& dims) {
  std::vector<Dim> out;
  for (int64_t d : dims) out.push_back(DimExpr::Const(d));
  return {dtype, std::move(out)};
}

std::string TensorTypeToString(const TensorType& type, const DimContext& ctx) {
  std::string dtype(vm::DTypeName(type.dtype));
  if (!type.dims) return absl::StrCat(dtype, "[*]");
  std::vector<std::string> dims;
  for (const Dim& d : *type.dims) dims.push_back(d ? ctx.ToString(*d) : "?");
  return absl::StrCat(dtype, "[", absl::StrJoin(dims, ", "), "]");
}

std::string TypeToString(const Type& type, const DimContext& ctx) {
  switch (type.kind) {
    case Type::Kind::kTensor:
      return TensorTypeToString(type.tensor, ctx);
    case Type::Kind::kSequence:
      return absl::StrCat("seq<", TensorTypeToString(type.tensor, ctx), ">");
    case Type::Kind::kOptional:
      return type.optional_of_sequence
                 ? absl::StrCat("opt<seq<", TensorTypeToString(type.tensor, ctx), ">>")
                 : absl::StrCat("opt<", TensorTypeToString(type.tensor, ctx), ">");
  }
  return "?";
}

}  // namespace nimble::compiler
