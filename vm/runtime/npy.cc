#include "vm/runtime/npy.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/status_macros.h"

namespace nimble::vm {
namespace {

constexpr char kMagic[] = "\x93NUMPY";

absl::StatusOr<DType> DTypeFromDescr(absl::string_view descr) {
  static const std::pair<const char*, DType> kTable[] = {
      {"<f4", DType::kF32}, {"<f8", DType::kF64}, {"<f2", DType::kF16}, {"|i1", DType::kI8},
      {"<i2", DType::kI16}, {"<i4", DType::kI32}, {"<i8", DType::kI64}, {"|u1", DType::kU8},
      {"<u2", DType::kU16}, {"<u4", DType::kU32}, {"<u8", DType::kU64}, {"|b1", DType::kBool},
  };
  for (const auto& [name, dtype] : kTable) {
    if (descr == name) return dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat("unsupported .npy dtype '", descr, "'"));
}

const char* DescrFromDType(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "<f4";
    case DType::kF64: return "<f8";
    case DType::kF16: return "<f2";
    case DType::kI8: return "|i1";
    case DType::kI16: return "<i2";
    case DType::kI32: return "<i4";
    case DType::kI64: return "<i8";
    case DType::kU8: return "|u1";
    case DType::kU16: return "<u2";
    case DType::kU32: return "<u4";
    case DType::kU64: return "<u8";
    case DType::kBool: return "|b1";
    default: return nullptr;
  }
}

// Value of 'key' in the header dict: "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }".
absl::StatusOr<absl::string_view> DictValue(absl::string_view header, absl::string_view key) {
  const std::string quoted = absl::StrCat("'", key, "':");
  size_t pos = header.find(quoted);
  if (pos == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(".npy header has no '", key, "'"));
  }
  absl::string_view rest = absl::StripLeadingAsciiWhitespace(header.substr(pos + quoted.size()));
  if (!rest.empty() && rest[0] == '(') {
    size_t close = rest.find(')');
    if (close == absl::string_view::npos) return absl::InvalidArgumentError("bad .npy shape");
    return rest.substr(1, close - 1);
  }
  if (!rest.empty() && rest[0] == '\'') {
    size_t close = rest.find('\'', 1);
    if (close == absl::string_view::npos) return absl::InvalidArgumentError("bad .npy header");
    return rest.substr(1, close - 1);
  }
  size_t end = rest.find_first_of(",}");
  return absl::StripAsciiWhitespace(rest.substr(0, end));
}

}  // namespace

absl::StatusOr<Tensor> ParseNpy(absl::string_view bytes) {
  if (bytes.size() < 10 || bytes.substr(0, 6) != absl::string_view(kMagic, 6)) {
    return absl::InvalidArgumentError("not a .npy file (bad magic)");
  }
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return absl::InvalidArgumentError("truncated .npy header");
    uint32_t len;
    std::memcpy(&len, bytes.data() + 8, 4);
    header_len = len;
    offset = 12;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unsupported .npy version ", major));
  }
  if (bytes.size() < offset + header_len) return absl::InvalidArgumentError("truncated .npy header");
  absl::string_view header = bytes.substr(offset, header_len);
  NIMBLE_ASSIGN_OR_RETURN(absl::string_view descr, DictValue(header, "descr"));
  NIMBLE_ASSIGN_OR_RETURN(absl::string_view fortran, DictValue(header, "fortran_order"));
  NIMBLE_ASSIGN_OR_RETURN(absl::string_view shape_text, DictValue(header, "shape"));
  NIMBLE_ASSIGN_OR_RETURN(DType dtype, DTypeFromDescr(descr));
  if (fortran != "False") return absl::InvalidArgumentError("Fortran-order .npy is not supported");
  Shape shape;
  for (absl::string_view part : absl::StrSplit(shape_text, ',', absl::SkipWhitespace())) {
    int64_t d;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &d) || d < 0) {
      return absl::InvalidArgumentError(absl::StrCat("bad .npy shape (", shape_text, ")"));
    }
    shape.push_back(d);
  }
  NIMBLE_ASSIGN_OR_RETURN(Tensor t, Tensor::Empty(dtype, shape));
  const absl::string_view data = bytes.substr(offset + header_len);
  if (data.size() != t.nbytes()) {
    return absl::InvalidArgumentError(absl::StrCat(".npy data has ", data.size(), " bytes, expected ",
                                                   t.nbytes(), " for ", t.TypeString()));
  }
  std::memcpy(t.raw_data(), data.data(), data.size());
  return t;
}

absl::StatusOr<Tensor> ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path, "'"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string bytes = buffer.str();
  auto t = ParseNpy(bytes);
  if (!t.ok()) return Annotate(t.status(), path);
  return t;
}

absl::Status WriteNpy(const std::string& path, const Tensor& tensor) {
  const char* descr = DescrFromDType(tensor.dtype());
  if (descr == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot write ", DTypeName(tensor.dtype()), " to .npy"));
  }
  // "()", "(5,)", "(2, 3)".
  const std::string shape = tensor.rank() == 1 ? absl::StrCat(tensor.dim(0), ",")
                                               : absl::StrJoin(tensor.shape(), ", ");
  std::string header = absl::StrCat("{'descr': '", descr,
                                    "', 'fortran_order': False, 'shape': (", shape, "), }");
  // Pad so that data starts at a multiple of 64 bytes; the header ends with '\n'.
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat("cannot write '", path, "'"));
  out.write(kMagic, 6);
  const char version[2] = {1, 0};
  out.write(version, 2);
  const uint16_t len = static_cast<uint16_t>(header.size());
  out.write(reinterpret_cast<const char*>(&len), 2);
  out << header;
  out.write(static_cast<const char*>(tensor.raw_data()), static_cast<std::streamsize>(tensor.nbytes()));
  if (!out.good()) return absl::InternalError(absl::StrCat("failed writing '", path, "'"));
  return absl::OkStatus();
}

}  // namespace nimble::vm
