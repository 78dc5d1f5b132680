#include "compiler/frontend/onnx/tensor_proto.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace nimble::compiler {
namespace {

namespace fs = std::filesystem;
using nimble::onnx::TensorProto;

// raw_data and external data are little-endian; copying them with memcpy assumes the host is.
static_assert(std::endian::native == std::endian::little, "big-endian hosts need byte swapping");

// Protobuf refuses messages of 2 GiB or more.
constexpr int64_t kMaxProtoFileBytes = (int64_t{1} << 31) - 1;

// "tensor 'w'" for error messages.
std::string Describe(const TensorProto& proto) {
  return proto.name().empty() ? std::string("unnamed tensor")
                              : absl::StrCat("tensor '", proto.name(), "'");
}

std::string TypeString(vm::DType dtype, absl::Span<const int64_t> dims) {
  return absl::StrCat(vm::DTypeName(dtype), vm::ShapeToString(dims));
}

absl::Status CountMismatch(const TensorProto& proto, vm::DType dtype,
                           absl::Span<const int64_t> dims, absl::string_view field, int64_t have,
                           int64_t want) {
  return absl::InvalidArgumentError(absl::StrCat(Describe(proto), " (", TypeString(dtype, dims),
                                                 ") has ", have, " values in ", field,
                                                 ", expected ", want));
}

// Copies a repeated proto field into a new tensor, converting each element with `convert`.
template <typename Dst, typename Field, typename Convert>
absl::StatusOr<vm::Tensor> FromField(const TensorProto& proto, vm::DType dtype,
                                     absl::Span<const int64_t> dims, int64_t count,
                                     const Field& field, absl::string_view field_name,
                                     Convert convert) {
  if (field.size() != count) {
    return CountMismatch(proto, dtype, dims, field_name, field.size(), count);
  }
  NIMBLE_ASSIGN_OR_RETURN(vm::Tensor t, vm::Tensor::Empty(dtype, dims));
  Dst* out = static_cast<Dst*>(t.raw_data());
  for (int64_t i = 0; i < count; ++i) out[i] = convert(field.Get(static_cast<int>(i)));
  return t;
}

// Bytes that `count` packed elements of a 4- or 2-bit dtype take.
int64_t PackedBytes(vm::DType dtype, int64_t count) {
  const int bits = vm::PackedBits(dtype);
  return (count * bits + 7) / 8;
}

// Unpacks `count` elements of a 4- or 2-bit dtype (low bits first) to one per byte,
// sign-extending INT4 and INT2.
void Unpack(vm::DType dtype, const char* packed, int64_t count, uint8_t* out) {
  const int bits = vm::PackedBits(dtype);
  const int per_byte = 8 / bits;
  const unsigned mask = (1u << bits) - 1;
  const bool sign_extend = dtype == vm::DType::kI4 || dtype == vm::DType::kI2;
  for (int64_t i = 0; i < count; ++i) {
    const auto byte = static_cast<uint8_t>(packed[i / per_byte]);
    unsigned v = (byte >> ((i % per_byte) * bits)) & mask;
    if (sign_extend && (v & (1u << (bits - 1))) != 0) v |= ~mask;
    out[i] = static_cast<uint8_t>(v);
  }
}

// Packs one-per-byte elements of a 4- or 2-bit dtype, low bits first; unused bits are zero.
std::string Pack(vm::DType dtype, const uint8_t* in, int64_t count) {
  const int bits = vm::PackedBits(dtype);
  const int per_byte = 8 / bits;
  const unsigned mask = (1u << bits) - 1;
  std::string out(static_cast<size_t>(PackedBytes(dtype, count)), '\0');
  for (int64_t i = 0; i < count; ++i) {
    out[i / per_byte] = static_cast<char>(static_cast<uint8_t>(out[i / per_byte]) |
                                          ((in[i] & mask) << ((i % per_byte) * bits)));
  }
  return out;
}

template <typename T>
auto Cast() {
  return [](auto v) { return static_cast<T>(v); };
}

absl::StatusOr<vm::Tensor> FromTypedFields(const TensorProto& proto, vm::DType dtype,
                                           absl::Span<const int64_t> dims, int64_t count) {
  using vm::DType;
  switch (dtype) {
    case DType::kF32:
      return FromField<float>(proto, dtype, dims, count, proto.float_data(), "float_data",
                              Cast<float>());
    case DType::kF64:
      return FromField<double>(proto, dtype, dims, count, proto.double_data(), "double_data",
                               Cast<double>());
    case DType::kI64:
      return FromField<int64_t>(proto, dtype, dims, count, proto.int64_data(), "int64_data",
                                Cast<int64_t>());
    case DType::kU64:
      return FromField<uint64_t>(proto, dtype, dims, count, proto.uint64_data(), "uint64_data",
                                 Cast<uint64_t>());
    case DType::kU32:
      return FromField<uint32_t>(proto, dtype, dims, count, proto.uint64_data(), "uint64_data",
                                 Cast<uint32_t>());
    // The narrow integer types, bool and the 16-bit floats' bit patterns all live in
    // int32_data, one element per entry.
    case DType::kI32:
      return FromField<int32_t>(proto, dtype, dims, count, proto.int32_data(), "int32_data",
                                Cast<int32_t>());
    case DType::kI16:
      return FromField<int16_t>(proto, dtype, dims, count, proto.int32_data(), "int32_data",
                                Cast<int16_t>());
    case DType::kI8:
      return FromField<int8_t>(proto, dtype, dims, count, proto.int32_data(), "int32_data",
                               Cast<int8_t>());
    case DType::kU16:
    case DType::kF16:
    case DType::kBF16:
      return FromField<uint16_t>(proto, dtype, dims, count, proto.int32_data(), "int32_data",
                                 Cast<uint16_t>());
    case DType::kU8:
    case DType::kF8E4M3FN:
    case DType::kF8E4M3FNUZ:
    case DType::kF8E5M2:
    case DType::kF8E5M2FNUZ:
    case DType::kF8E8M0:
      // The 8-bit floats' bit patterns, one per entry.
      return FromField<uint8_t>(proto, dtype, dims, count, proto.int32_data(), "int32_data",
                                Cast<uint8_t>());
    case DType::kU4:
    case DType::kI4:
    case DType::kF4E2M1:
    case DType::kU2:
    case DType::kI2: {
      // Packed bytes, one per entry.
      const int64_t want = PackedBytes(dtype, count);
      if (proto.int32_data_size() != want) {
        return CountMismatch(proto, dtype, dims, "int32_data (packed)", proto.int32_data_size(),
                             want);
      }
      std::string packed(static_cast<size_t>(want), '\0');
      for (int64_t i = 0; i < want; ++i) {
        packed[i] = static_cast<char>(proto.int32_data(static_cast<int>(i)) & 0xFF);
      }
      NIMBLE_ASSIGN_OR_RETURN(vm::Tensor t, vm::Tensor::Empty(dtype, dims));
      Unpack(dtype, packed.data(), count, static_cast<uint8_t*>(t.raw_data()));
      return t;
    }
    case DType::kBool:
      return FromField<bool>(proto, dtype, dims, count, proto.int32_data(), "int32_data",
                             [](int32_t v) { return v != 0; });
    case DType::kString: {
      if (proto.string_data_size() != count) {
        return CountMismatch(proto, dtype, dims, "string_data", proto.string_data_size(), count);
      }
      NIMBLE_ASSIGN_OR_RETURN(vm::Tensor t, vm::Tensor::Empty(dtype, dims));
      for (int64_t i = 0; i < count; ++i) {
        t.data<std::string>()[i] = proto.string_data(static_cast<int>(i));
      }
      return t;
    }
    case DType::kInvalid:
      break;
  }
  return absl::InternalError(
      absl::StrCat(Describe(proto), ": no storage field for dtype ", vm::DTypeName(dtype)));
}

// A fixed-width little-endian buffer of exactly the tensor's size.
absl::StatusOr<vm::Tensor> FromBytes(const TensorProto& proto, vm::DType dtype,
                                     absl::Span<const int64_t> dims, const char* data,
                                     size_t size) {
  NIMBLE_ASSIGN_OR_RETURN(vm::Tensor t, vm::Tensor::Empty(dtype, dims));
  if (vm::PackedBits(dtype) != 0) {
    if (static_cast<int64_t>(size) != PackedBytes(dtype, t.num_elements())) {
      return absl::InternalError("byte count checked by the caller does not match");
    }
    Unpack(dtype, data, t.num_elements(), static_cast<uint8_t*>(t.raw_data()));
    return t;
  }
  if (size != t.nbytes()) {
    return absl::InternalError("byte count checked by the caller does not match");
  }
  if (size > 0) std::memcpy(t.raw_data(), data, size);
  if (dtype == vm::DType::kBool) {
    // Any non-zero byte is true; normalise so kernels can rely on 0/1.
    auto* b = static_cast<uint8_t*>(t.raw_data());
    for (size_t i = 0; i < size; ++i) b[i] = b[i] != 0;
  }
  return t;
}

// Bytes a tensor of `count` elements of `dtype` occupies in a proto (packed for the 4- and
// 2-bit types); kInvalidArgument on overflow.
absl::StatusOr<uint64_t> ByteSize(const TensorProto& proto, vm::DType dtype, int64_t count) {
  if (vm::PackedBits(dtype) != 0) return static_cast<uint64_t>(PackedBytes(dtype, count));
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(count), vm::DTypeSize(dtype), &bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(Describe(proto), " is too large"));
  }
  return bytes;
}

struct ExternalLocation {
  std::string location;
  int64_t offset = 0;
  int64_t length = -1;  // -1: to the end of the file
};

absl::StatusOr<ExternalLocation> ParseExternalData(const TensorProto& proto) {
  ExternalLocation loc;
  bool has_location = false;
  for (const auto& entry : proto.external_data()) {
    if (entry.key() == "location") {
      loc.location = entry.value();
      has_location = true;
    } else if (entry.key() == "offset" || entry.key() == "length") {
      int64_t v = 0;
      if (!absl::SimpleAtoi(entry.value(), &v) || v < 0) {
        return absl::InvalidArgumentError(absl::StrCat(Describe(proto), ": external data ",
                                                       entry.key(), " '", entry.value(),
                                                       "' is not a non-negative integer"));
      }
      (entry.key() == "offset" ? loc.offset : loc.length) = v;
    }
    // "checksum" and unknown keys are ignored.
  }
  if (!has_location || loc.location.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(proto), ": external data has no 'location'"));
  }
  return loc;
}

// The canonical path of `location` if it lies inside `model_dir` after resolving '..' and
// symlinks.
absl::StatusOr<fs::path> ResolveInside(const TensorProto& proto, const std::string& model_dir,
                                       const std::string& location) {
  const auto escapes = [&] {
    return absl::InvalidArgumentError(absl::StrCat(Describe(proto), ": external data path '",
                                                   location, "' escapes the model directory"));
  };
  if (fs::path(location).has_root_path()) return escapes();
  std::error_code ec;
  const fs::path base = fs::canonical(fs::path(model_dir), ec);
  if (ec) {
    return absl::NotFoundError(absl::StrCat(Describe(proto), ": model directory '", model_dir,
                                            "' cannot be resolved: ", ec.message()));
  }
  const fs::path target = fs::weakly_canonical(base / fs::path(location), ec);
  if (ec) {
    return absl::NotFoundError(absl::StrCat(Describe(proto), ": external data path '", location,
                                            "' cannot be resolved: ", ec.message()));
  }
  // Component-wise prefix test ("/m/dir2" is not inside "/m/dir").
  auto b = base.begin();
  auto t = target.begin();
  for (; b != base.end(); ++b, ++t) {
    if (t == target.end() || *b != *t) return escapes();
  }
  return target;
}

absl::StatusOr<vm::Tensor> FromExternal(const TensorProto& proto, vm::DType dtype,
                                        absl::Span<const int64_t> dims, int64_t count,
                                        const std::string& model_dir) {
  if (dtype == vm::DType::kString) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(proto), ": string tensors cannot use external data"));
  }
  if (model_dir.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(proto), " has external data but the model's directory is not known"));
  }
  NIMBLE_ASSIGN_OR_RETURN(ExternalLocation loc, ParseExternalData(proto));
  NIMBLE_ASSIGN_OR_RETURN(fs::path path, ResolveInside(proto, model_dir, loc.location));
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat(Describe(proto), ": external data file '", loc.location,
                                            "' does not exist or is not a file"));
  }
  const uintmax_t file_size = fs::file_size(path, ec);
  if (ec) {
    return absl::NotFoundError(absl::StrCat(Describe(proto), ": cannot stat external data file '",
                                            loc.location, "': ", ec.message()));
  }
  if (static_cast<uintmax_t>(loc.offset) > file_size) {
    return absl::InvalidArgumentError(absl::StrCat(Describe(proto), ": external data offset ",
                                                   loc.offset, " is past the end of '",
                                                   loc.location, "' (", file_size, " bytes)"));
  }
  const uintmax_t available = file_size - static_cast<uintmax_t>(loc.offset);
  const uintmax_t length = loc.length < 0 ? available : static_cast<uintmax_t>(loc.length);
  if (length > available) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(proto), ": external data [", loc.offset, ", ", loc.offset, " + ",
                     length, ") is outside '", loc.location, "' (", file_size, " bytes)"));
  }
  NIMBLE_ASSIGN_OR_RETURN(uint64_t want, ByteSize(proto, dtype, count));
  if (length != want) {
    return absl::InvalidArgumentError(absl::StrCat(Describe(proto), " (", TypeString(dtype, dims),
                                                   ") has ", length,
                                                   " bytes of external data, expected ", want));
  }
  NIMBLE_ASSIGN_OR_RETURN(vm::Tensor t, vm::Tensor::Empty(dtype, dims));
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (file == nullptr) {
    return absl::NotFoundError(
        absl::StrCat(Describe(proto), ": cannot open external data file '", loc.location, "'"));
  }
  const bool packed = vm::PackedBits(dtype) != 0;
  std::string packed_bytes(packed ? length : 0, '\0');
  void* dst = packed ? packed_bytes.data() : t.raw_data();
  if (fseeko(file.get(), static_cast<off_t>(loc.offset), SEEK_SET) != 0 ||
      std::fread(dst, 1, length, file.get()) != length) {
    return absl::DataLossError(
        absl::StrCat(Describe(proto), ": short read from external data file '", loc.location, "'"));
  }
  if (packed) Unpack(dtype, packed_bytes.data(), count, static_cast<uint8_t*>(t.raw_data()));
  if (dtype == vm::DType::kBool) {
    auto* b = static_cast<uint8_t*>(t.raw_data());
    for (uintmax_t i = 0; i < length; ++i) b[i] = b[i] != 0;
  }
  return t;
}

absl::StatusOr<vm::Tensor> TensorFromProtoImpl(const TensorProto& proto,
                                               const std::string& model_dir) {
  if (proto.has_segment()) {
    return absl::UnimplementedError(
        absl::StrCat(Describe(proto), " is segmented, which Nimble does not support"));
  }
  NIMBLE_ASSIGN_OR_RETURN(vm::DType dtype, vm::DTypeFromOnnx(proto.data_type()));
  std::vector<int64_t> dims(proto.dims().begin(), proto.dims().end());
  NIMBLE_ASSIGN_OR_RETURN(int64_t count, vm::NumElements(dims));
  if (proto.data_location() == TensorProto::EXTERNAL) {
    return FromExternal(proto, dtype, dims, count, model_dir);
  }
  if (proto.has_raw_data()) {
    if (dtype == vm::DType::kString) {
      return absl::InvalidArgumentError(
          absl::StrCat(Describe(proto), ": string tensors cannot use raw_data"));
    }
    NIMBLE_ASSIGN_OR_RETURN(uint64_t want, ByteSize(proto, dtype, count));
    if (proto.raw_data().size() != want) {
      return absl::InvalidArgumentError(absl::StrCat(Describe(proto), " (", TypeString(dtype, dims),
                                                     ") has ", proto.raw_data().size(),
                                                     " bytes of raw_data, expected ", want));
    }
    return FromBytes(proto, dtype, dims, proto.raw_data().data(), proto.raw_data().size());
  }
  return FromTypedFields(proto, dtype, dims, count);
}

template <typename Proto>
absl::StatusOr<Proto> ParseProtoFile(const std::string& path, absl::string_view what) {
  NIMBLE_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path, kMaxProtoFileBytes));
  Proto proto;
  if (!proto.ParseFromString(bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "' is not a serialized ", what, ": failed to parse protobuf"));
  }
  return proto;
}

std::string DirOf(const std::string& path) {
  fs::path dir = fs::path(path).parent_path();
  return dir.empty() ? std::string(".") : dir.string();
}

}  // namespace

absl::StatusOr<vm::Tensor> TensorFromProto(const TensorProto& proto, const std::string& model_dir) {
  absl::StatusOr<vm::Tensor> t = TensorFromProtoImpl(proto, model_dir);
  if (t.ok()) return t;
  // Errors that do not say which tensor get the name (dtype and shape checks).
  const std::string who = Describe(proto);
  if (absl::StrContains(t.status().message(), who)) return t;
  return Annotate(t.status(), who);
}

absl::Status TensorToProto(const vm::Tensor& tensor, TensorProto* proto) {
  if (!tensor.defined()) return absl::InvalidArgumentError("cannot serialize a null tensor");
  if (tensor.device().type != vm::DeviceType::kCPU) {
    return absl::InvalidArgumentError(absl::StrCat("cannot serialize a tensor on ",
                                                   tensor.device().ToString(),
                                                   "; copy it to the host first"));
  }
  const int onnx_type = vm::DTypeToOnnx(tensor.dtype());
  if (onnx_type == TensorProto::UNDEFINED) {
    return absl::InvalidArgumentError("cannot serialize a tensor of invalid dtype");
  }
  proto->clear_dims();
  proto->clear_float_data();
  proto->clear_int32_data();
  proto->clear_string_data();
  proto->clear_int64_data();
  proto->clear_double_data();
  proto->clear_uint64_data();
  proto->clear_raw_data();
  proto->clear_external_data();
  proto->clear_data_location();
  proto->clear_segment();
  for (int64_t d : tensor.shape()) proto->add_dims(d);
  proto->set_data_type(onnx_type);
  if (tensor.dtype() == vm::DType::kString) {
    const std::string* s = tensor.data<std::string>();
    for (int64_t i = 0; i < tensor.num_elements(); ++i) proto->add_string_data(s[i]);
    return absl::OkStatus();
  }
  if (vm::PackedBits(tensor.dtype()) != 0) {
    proto->set_raw_data(Pack(tensor.dtype(), static_cast<const uint8_t*>(tensor.raw_data()),
                             tensor.num_elements()));
    return absl::OkStatus();
  }
  proto->set_raw_data(static_cast<const char*>(tensor.raw_data()), tensor.nbytes());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<vm::Tensor>> SequenceFromProto(const nimble::onnx::SequenceProto& proto,
                                                          const std::string& model_dir) {
  using nimble::onnx::SequenceProto;
  const bool only_tensors = proto.sparse_tensor_values_size() == 0 &&
                            proto.sequence_values_size() == 0 && proto.map_values_size() == 0 &&
                            proto.optional_values_size() == 0;
  // An empty sequence may leave elem_type UNDEFINED.
  if (!only_tensors ||
      (proto.elem_type() != SequenceProto::TENSOR &&
       !(proto.elem_type() == SequenceProto::UNDEFINED && proto.tensor_values_size() == 0))) {
    return absl::UnimplementedError(absl::StrCat("sequence '", proto.name(), "' of elem_type ",
                                                 proto.elem_type(),
                                                 ": only sequences of tensors are supported"));
  }
  std::vector<vm::Tensor> out;
  out.reserve(proto.tensor_values_size());
  for (int i = 0; i < proto.tensor_values_size(); ++i) {
    absl::StatusOr<vm::Tensor> t = TensorFromProto(proto.tensor_values(i), model_dir);
    if (!t.ok()) {
      return Annotate(t.status(), absl::StrCat("sequence '", proto.name(), "' element ", i));
    }
    out.push_back(*std::move(t));
  }
  return out;
}

absl::StatusOr<OptionalData> OptionalFromProto(const nimble::onnx::OptionalProto& proto,
                                               const std::string& model_dir) {
  using nimble::onnx::OptionalProto;
  OptionalData out;
  switch (proto.elem_type()) {
    case OptionalProto::UNDEFINED:
      break;
    case OptionalProto::TENSOR:
      // An empty optional of a tensor type still says TENSOR but carries no value.
      if (proto.has_tensor_value()) {
        NIMBLE_ASSIGN_OR_RETURN(out.tensor, TensorFromProto(proto.tensor_value(), model_dir));
        out.kind = OptionalData::Kind::kTensor;
      }
      break;
    case OptionalProto::SEQUENCE:
      if (proto.has_sequence_value()) {
        NIMBLE_ASSIGN_OR_RETURN(out.sequence, SequenceFromProto(proto.sequence_value(), model_dir));
        out.kind = OptionalData::Kind::kSequence;
      }
      break;
    default:
      return absl::UnimplementedError(
          absl::StrCat("optional '", proto.name(), "' of elem_type ", proto.elem_type(),
                       ": only optionals of tensors and sequences of tensors are supported"));
  }
  return out;
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path, int64_t max_bytes) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    return absl::NotFoundError(absl::StrCat("cannot open '", path, "': no such file"));
  }
  // Not a FIFO or a device: those could feed us bytes forever.
  if (!fs::is_regular_file(status)) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not a regular file"));
  }
  const uintmax_t size = fs::file_size(path, ec);
  if (!ec && size > static_cast<uintmax_t>(max_bytes)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "'", path, "' is ", size, " bytes, larger than the limit of ", max_bytes, " bytes"));
  }
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (file == nullptr) {
    return absl::NotFoundError(absl::StrCat("cannot open '", path, "': ", std::strerror(errno)));
  }
  std::string bytes;
  if (!ec) bytes.reserve(size);
  char buffer[1 << 16];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file.get())) > 0) {
    // The file may grow while we read it.
    if (static_cast<int64_t>(bytes.size() + n) > max_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("'", path, "' is larger than the limit of ", max_bytes, " bytes"));
    }
    bytes.append(buffer, n);
  }
  if (std::ferror(file.get())) {
    return absl::DataLossError(absl::StrCat("error reading '", path, "'"));
  }
  return bytes;
}

absl::StatusOr<vm::Tensor> ReadTensorProtoFile(const std::string& path) {
  NIMBLE_ASSIGN_OR_RETURN(TensorProto proto, ParseProtoFile<TensorProto>(path, "TensorProto"));
  absl::StatusOr<vm::Tensor> t = TensorFromProto(proto, DirOf(path));
  if (!t.ok()) return Annotate(t.status(), absl::StrCat("'", path, "'"));
  return t;
}

absl::StatusOr<std::vector<vm::Tensor>> ReadSequenceProtoFile(const std::string& path) {
  NIMBLE_ASSIGN_OR_RETURN(auto proto,
                          ParseProtoFile<nimble::onnx::SequenceProto>(path, "SequenceProto"));
  absl::StatusOr<std::vector<vm::Tensor>> seq = SequenceFromProto(proto, DirOf(path));
  if (!seq.ok()) return Annotate(seq.status(), absl::StrCat("'", path, "'"));
  return seq;
}

absl::StatusOr<OptionalData> ReadOptionalProtoFile(const std::string& path) {
  NIMBLE_ASSIGN_OR_RETURN(auto proto,
                          ParseProtoFile<nimble::onnx::OptionalProto>(path, "OptionalProto"));
  absl::StatusOr<OptionalData> opt = OptionalFromProto(proto, DirOf(path));
  if (!opt.ok()) return Annotate(opt.status(), absl::StrCat("'", path, "'"));
  return opt;
}

}  // namespace nimble::compiler
