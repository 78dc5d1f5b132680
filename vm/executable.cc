// The NBX executable format, the verifier and the disassembler.
//
// Layout (all little-endian):
//   header:  "NBX\0" | u32 format version | string compiler_version | u64 payload size |
//            u64 checksum (PayloadChecksum)
//   payload: functions | constants | kernels | strings | devices | inputs | outputs |
//            variants | symbol_bindings
// A string is u32 length + bytes; a list is u32 count + elements. A tensor is u8 dtype (0: null
// tensor, nothing follows), u32 rank, i64 dims, then for kString one string per element, else
// u64 byte count + raw bytes. An attribute is its name, u8 alternative index of AttrValue and
// the value. The verifier runs after every parse: the interpreter trusts what it proved.
#include "vm/executable.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <type_traits>

#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "vm/serialization_internal.h"

namespace nimble::vm {
namespace internal {
namespace {

constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kPrime2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kPrime3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kPrime4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t kPrime5 = 0x27D4EB2F165667C5ULL;

inline uint64_t Rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline uint64_t Load64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint32_t Load32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t Round(uint64_t acc, uint64_t input) {
  acc += input * kPrime2;
  acc = Rotl(acc, 31);
  return acc * kPrime1;
}
inline uint64_t MergeRound(uint64_t acc, uint64_t val) {
  acc ^= Round(0, val);
  return acc * kPrime1 + kPrime4;
}

}  // namespace

uint64_t Hash64(const void* data, size_t size, uint64_t seed) {
  const auto* p = static_cast<const unsigned char*>(data);
  const unsigned char* const end = p + size;
  uint64_t h;
  if (size >= 32) {
    uint64_t v1 = seed + kPrime1 + kPrime2;
    uint64_t v2 = seed + kPrime2;
    uint64_t v3 = seed;
    uint64_t v4 = seed - kPrime1;
    const unsigned char* const limit = end - 32;
    do {
      v1 = Round(v1, Load64(p));
      v2 = Round(v2, Load64(p + 8));
      v3 = Round(v3, Load64(p + 16));
      v4 = Round(v4, Load64(p + 24));
      p += 32;
    } while (p <= limit);
    h = Rotl(v1, 1) + Rotl(v2, 7) + Rotl(v3, 12) + Rotl(v4, 18);
    h = MergeRound(h, v1);
    h = MergeRound(h, v2);
    h = MergeRound(h, v3);
    h = MergeRound(h, v4);
  } else {
    h = seed + kPrime5;
  }
  h += static_cast<uint64_t>(size);
  while (end - p >= 8) {
    h ^= Round(0, Load64(p));
    h = Rotl(h, 27) * kPrime1 + kPrime4;
    p += 8;
  }
  if (end - p >= 4) {
    h ^= static_cast<uint64_t>(Load32(p)) * kPrime1;
    h = Rotl(h, 23) * kPrime2 + kPrime3;
    p += 4;
  }
  while (p < end) {
    h ^= static_cast<uint64_t>(*p) * kPrime5;
    h = Rotl(h, 11) * kPrime1;
    ++p;
  }
  h ^= h >> 33;
  h *= kPrime2;
  h ^= h >> 29;
  h *= kPrime3;
  h ^= h >> 32;
  return h;
}

uint64_t PayloadChecksum(std::string_view compiler_version, std::string_view payload) {
  return Hash64(payload, Hash64(compiler_version));
}

namespace {

// ---------------------------------------------------------------------------------------------
// Writing.

absl::Status WriteTensor(ByteWriter& w, const Tensor& t, absl::string_view what) {
  if (!t.defined()) {
    w.U8(static_cast<uint8_t>(DType::kInvalid));
    return absl::OkStatus();
  }
  if (t.device().type != DeviceType::kCPU) {
    return absl::UnimplementedError(
        absl::StrCat(what, " lives on ", t.device().ToString(), "; only host tensors serialise"));
  }
  w.U8(static_cast<uint8_t>(t.dtype()));
  w.U32(static_cast<uint32_t>(t.rank()));
  for (int64_t d : t.shape()) w.I64(d);
  if (t.dtype() == DType::kString) {
    const std::string* strings = t.data<std::string>();
    for (int64_t i = 0; i < t.num_elements(); ++i) {
      if (strings[i].size() > UINT32_MAX) {
        return absl::InvalidArgumentError(absl::StrCat(what, ": string element too long"));
      }
      w.String(strings[i]);
    }
    return absl::OkStatus();
  }
  w.U64(t.nbytes());
  // The writer holds the whole file from its first byte (Serialize), so its size is the offset.
  const size_t at = w.bytes().size() + 1;
  const size_t pad = (kTensorDataAlignment - at % kTensorDataAlignment) % kTensorDataAlignment;
  w.U8(static_cast<uint8_t>(pad));
  w.bytes().append(pad, '\0');
  w.Raw(t.raw_data(), t.nbytes());
  return absl::OkStatus();
}

void WriteStrings(ByteWriter& w, const std::vector<std::string>& strings) {
  w.U32(static_cast<uint32_t>(strings.size()));
  for (const std::string& s : strings) w.String(s);
}

void WriteI64s(ByteWriter& w, absl::Span<const int64_t> values) {
  w.U32(static_cast<uint32_t>(values.size()));
  for (int64_t v : values) w.I64(v);
}

void WriteDevice(ByteWriter& w, const Device& d) {
  w.U8(static_cast<uint8_t>(d.type));
  w.I32(d.ordinal);
}

absl::Status WriteAttributes(ByteWriter& w, const Attributes& attrs, absl::string_view what) {
  w.U32(static_cast<uint32_t>(attrs.values().size()));
  for (const auto& entry : attrs.values()) {
    const std::string& name = entry.first;  // not a structured binding: the lambda captures it
    const AttrValue& value = entry.second;
    w.String(name);
    w.U8(static_cast<uint8_t>(value.index()));
    absl::Status status = std::visit(
        [&](const auto& v) -> absl::Status {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, int64_t>) {
            w.I64(v);
          } else if constexpr (std::is_same_v<T, double>) {
            w.F64(v);
          } else if constexpr (std::is_same_v<T, std::string>) {
            w.String(v);
          } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
            WriteI64s(w, v);
          } else if constexpr (std::is_same_v<T, std::vector<double>>) {
            w.U32(static_cast<uint32_t>(v.size()));
            for (double d : v) w.F64(d);
          } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
            WriteStrings(w, v);
          } else {
            static_assert(std::is_same_v<T, Tensor>);
            return WriteTensor(w, v, absl::StrCat(what, " attribute '", name, "'"));
          }
          return absl::OkStatus();
        },
        value);
    NIMBLE_RETURN_IF_ERROR(status);
  }
  return absl::OkStatus();
}

void WriteSignatures(ByteWriter& w, const std::vector<TensorSignature>& signatures) {
  w.U32(static_cast<uint32_t>(signatures.size()));
  for (const TensorSignature& s : signatures) {
    w.String(s.name);
    w.U8(static_cast<uint8_t>(s.kind));
    w.U8(static_cast<uint8_t>(s.dtype));
    WriteI64s(w, s.dims);
    WriteStrings(w, s.dim_names);
  }
}

absl::Status WritePayload(const Executable& exe, ByteWriter& w) {
  w.U32(static_cast<uint32_t>(exe.functions.size()));
  for (const Function& f : exe.functions) {
    w.String(f.name);
    w.I32(f.num_params);
    w.I32(f.num_registers);
    w.U32(static_cast<uint32_t>(f.code.size()));
    for (const Instruction& in : f.code) {
      w.U8(static_cast<uint8_t>(in.op));
      w.I32(in.dst);
      w.I32(in.a);
      w.I32(in.b);
      w.I32(in.c);
      w.I64(in.imm);
      w.U32(in.list_begin);
      w.U32(in.list_size);
    }
    WriteI64s(w, f.operand_pool);
  }
  w.U32(static_cast<uint32_t>(exe.constants.size()));
  for (size_t i = 0; i < exe.constants.size(); ++i) {
    NIMBLE_RETURN_IF_ERROR(WriteTensor(w, exe.constants[i], absl::StrCat("constant ", i)));
  }
  w.U32(static_cast<uint32_t>(exe.kernels.size()));
  for (size_t i = 0; i < exe.kernels.size(); ++i) {
    const KernelEntry& k = exe.kernels[i];
    w.String(k.name);
    WriteDevice(w, k.device);
    NIMBLE_RETURN_IF_ERROR(
        WriteAttributes(w, k.attrs, absl::StrCat("kernel ", i, " '", k.name, "'")));
  }
  WriteStrings(w, exe.strings);
  w.U32(static_cast<uint32_t>(exe.devices.size()));
  for (const Device& d : exe.devices) WriteDevice(w, d);
  WriteSignatures(w, exe.inputs);
  WriteSignatures(w, exe.outputs);
  w.U32(static_cast<uint32_t>(exe.variants.size()));
  for (const Variant& v : exe.variants) {
    w.String(v.name);
    w.I32(v.function);
    WriteStrings(w, v.symbols);
    WriteI64s(w, v.lower_bounds);
    WriteI64s(w, v.upper_bounds);
    w.I64(v.planned_bytes_hint);
  }
  w.U32(static_cast<uint32_t>(exe.symbol_bindings.size()));
  for (const Executable::SymbolBinding& b : exe.symbol_bindings) {
    w.String(b.symbol);
    w.I32(b.input);
    w.I32(b.axis);
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Reading. Each Read* leaves the reader failed on bad data; callers check r.ok() per section.

constexpr size_t kInstructionBytes = 1 + 4 * 4 + 8 + 4 + 4;

Tensor ReadTensor(ByteReader& r, absl::string_view what) {
  const uint8_t code = r.U8(what);
  if (!r.ok() || code == 0) return Tensor();
  if (code >= kNumDTypes) {
    r.Fail(absl::StrCat(what, ": unknown dtype ", code));
    return Tensor();
  }
  const DType dtype = static_cast<DType>(code);
  const uint32_t rank = r.Count(8, absl::StrCat(what, " rank"));
  Shape shape;
  for (uint32_t i = 0; i < rank; ++i) shape.push_back(r.I64(what));
  if (!r.ok()) return Tensor();
  absl::StatusOr<int64_t> count = NumElements(shape);
  if (!count.ok()) {
    r.Fail(absl::StrCat(what, ": ", count.status().message()));
    return Tensor();
  }
  // Every element takes at least one byte on disk (4 for strings): bound the allocation by
  // what the file can actually hold before allocating.
  const size_t min_bytes = dtype == DType::kString ? 4 : DTypeSize(dtype);
  if (static_cast<uint64_t>(*count) > r.remaining() / min_bytes) {
    r.Fail(absl::StrCat("truncated: ", what, " has ", *count, " elements, more than the ",
                        r.remaining(), " remaining bytes can hold"));
    return Tensor();
  }
  if (dtype == DType::kString) {
    absl::StatusOr<Tensor> tensor = Tensor::Empty(dtype, shape);
    if (!tensor.ok()) {
      r.Fail(absl::StrCat(what, ": ", tensor.status().message()));
      return Tensor();
    }
    std::string* strings = tensor->data<std::string>();
    for (int64_t i = 0; i < *count && r.ok(); ++i) strings[i] = r.String(what);
    return r.ok() ? *std::move(tensor) : Tensor();
  }
  const uint64_t nbytes = r.U64(absl::StrCat(what, " byte count"));
  const uint8_t pad = r.U8(absl::StrCat(what, " padding"));
  r.Bytes(pad, absl::StrCat(what, " padding"));
  if (!r.ok()) return Tensor();
  const uint64_t want = static_cast<uint64_t>(*count) * DTypeSize(dtype);
  if (nbytes != want) {
    r.Fail(absl::StrCat(what, ": ", nbytes, " data bytes for ", DTypeName(dtype),
                        ShapeToString(shape), " which needs ", want));
    return Tensor();
  }
  std::string_view data = r.Bytes(nbytes, what);
  if (!r.ok()) return Tensor();
  // In place when the file's buffer holds the data aligned (the view keeps the buffer alive);
  // the unpacked low-precision types are copied, being range-checked below.
  if (r.backing() != nullptr && PackedBits(dtype) == 0) {
    const auto* base = static_cast<const char*>(r.backing()->data());
    if (reinterpret_cast<uintptr_t>(data.data()) % kTensorDataAlignment == 0 &&
        data.data() >= base && data.data() + nbytes <= base + r.backing()->size()) {
      absl::StatusOr<Tensor> view =
          Tensor::View(r.backing(), static_cast<size_t>(data.data() - base), dtype, shape);
      if (!view.ok()) {
        r.Fail(absl::StrCat(what, ": ", view.status().message()));
        return Tensor();
      }
      return *std::move(view);
    }
  }
  absl::StatusOr<Tensor> tensor = Tensor::Empty(dtype, shape);
  if (!tensor.ok()) {
    r.Fail(absl::StrCat(what, ": ", tensor.status().message()));
    return Tensor();
  }
  if (nbytes > 0) std::memcpy(tensor->raw_data(), data.data(), nbytes);
  // The unpacked 4- and 2-bit types hold one in-range value per byte.
  if (PackedBits(dtype) != 0) {
    const IntRange range = dtype == DType::kF4E2M1 ? IntRange{0, 15} : LowPrecisionIntRange(dtype);
    const bool is_signed = IsSigned(dtype) && dtype != DType::kF4E2M1;
    for (int64_t i = 0; i < *count; ++i) {
      const uint8_t b = static_cast<const uint8_t*>(tensor->raw_data())[i];
      const int64_t v = is_signed ? static_cast<int8_t>(b) : b;
      if (v < range.lo || v > range.hi) {
        r.Fail(absl::StrCat(what, ": ", DTypeName(dtype), " element ", i, " is ", v, ", outside [",
                            range.lo, ", ", range.hi, "]"));
        return Tensor();
      }
    }
  }
  return *std::move(tensor);
}

std::vector<std::string> ReadStrings(ByteReader& r, absl::string_view what) {
  std::vector<std::string> out(r.Count(4, what));
  for (std::string& s : out) s = r.String(what);
  return out;
}

std::vector<int64_t> ReadI64s(ByteReader& r, absl::string_view what) {
  std::vector<int64_t> out(r.Count(8, what));
  for (int64_t& v : out) v = r.I64(what);
  return out;
}

Device ReadDevice(ByteReader& r, absl::string_view what) {
  const uint8_t type = r.U8(what);
  const int32_t ordinal = r.I32(what);
  if (!r.ok()) return kCpu;
  if (type > static_cast<uint8_t>(DeviceType::kCUDA) || ordinal < 0) {
    r.Fail(absl::StrCat(what, ": unknown device (type ", type, ", ordinal ", ordinal, ")"));
    return kCpu;
  }
  return Device{static_cast<DeviceType>(type), ordinal};
}

DType ReadDType(ByteReader& r, absl::string_view what) {
  const uint8_t code = r.U8(what);
  if (code >= kNumDTypes) {
    r.Fail(absl::StrCat(what, ": unknown dtype ", code));
    return DType::kInvalid;
  }
  return static_cast<DType>(code);
}

Attributes ReadAttributes(ByteReader& r, absl::string_view what) {
  Attributes attrs;
  const uint32_t count = r.Count(5, absl::StrCat(what, " attributes"));
  for (uint32_t i = 0; i < count && r.ok(); ++i) {
    std::string name = r.String(what);
    const uint8_t kind = r.U8(what);
    if (!r.ok()) break;
    const std::string where = absl::StrCat(what, " attribute '", name, "'");
    switch (kind) {
      case 0:
        attrs.Set(name, r.I64(where));
        break;
      case 1:
        attrs.Set(name, r.F64(where));
        break;
      case 2:
        attrs.Set(name, r.String(where));
        break;
      case 3:
        attrs.Set(name, ReadI64s(r, where));
        break;
      case 4: {
        std::vector<double> values(r.Count(8, where));
        for (double& v : values) v = r.F64(where);
        attrs.Set(name, std::move(values));
        break;
      }
      case 5:
        attrs.Set(name, ReadStrings(r, where));
        break;
      case 6:
        attrs.Set(name, ReadTensor(r, where));
        break;
      default:
        r.Fail(absl::StrCat(where, ": unknown value kind ", kind));
    }
  }
  static_assert(std::variant_size_v<AttrValue> == 7, "update ReadAttributes/WriteAttributes");
  return attrs;
}

std::vector<TensorSignature> ReadSignatures(ByteReader& r, absl::string_view what) {
  std::vector<TensorSignature> out(r.Count(4 + 1 + 1 + 4 + 4, what));
  for (size_t i = 0; i < out.size() && r.ok(); ++i) {
    const std::string where = absl::StrCat(what, " ", i);
    out[i].name = r.String(where);
    out[i].kind = static_cast<ValueKind>(r.U8(where));
    out[i].dtype = ReadDType(r, where);
    out[i].dims = ReadI64s(r, where);
    out[i].dim_names = ReadStrings(r, where);
  }
  return out;
}

absl::Status ReadPayload(std::string_view payload, std::shared_ptr<Storage> backing,
                         Executable& exe) {
  ByteReader r(payload);
  r.SetBacking(std::move(backing));
  exe.functions.resize(r.Count(4 + 4 + 4 + 4 + 4, "function count"));
  for (size_t fi = 0; fi < exe.functions.size() && r.ok(); ++fi) {
    Function& f = exe.functions[fi];
    const std::string where = absl::StrCat("function ", fi);
    f.name = r.String(where);
    f.num_params = r.I32(where);
    f.num_registers = r.I32(where);
    f.code.resize(r.Count(kInstructionBytes, absl::StrCat(where, " code size")));
    for (Instruction& in : f.code) {
      const uint8_t op = r.U8(where);
      if (r.ok() && op >= kNumOpcodes) {
        r.Fail(absl::StrCat(where, ": unknown opcode ", op));
      }
      in.op = static_cast<Opcode>(op);
      in.dst = r.I32(where);
      in.a = r.I32(where);
      in.b = r.I32(where);
      in.c = r.I32(where);
      in.imm = r.I64(where);
      in.list_begin = r.U32(where);
      in.list_size = r.U32(where);
      if (!r.ok()) break;
    }
    f.operand_pool = ReadI64s(r, absl::StrCat(where, " operand pool"));
  }
  NIMBLE_RETURN_IF_ERROR(r.status());

  exe.constants.resize(r.Count(1, "constant count"));
  for (size_t i = 0; i < exe.constants.size() && r.ok(); ++i) {
    exe.constants[i] = ReadTensor(r, absl::StrCat("constant ", i));
  }
  NIMBLE_RETURN_IF_ERROR(r.status());

  exe.kernels.resize(r.Count(4 + 5 + 4, "kernel count"));
  for (size_t i = 0; i < exe.kernels.size() && r.ok(); ++i) {
    KernelEntry& k = exe.kernels[i];
    const std::string where = absl::StrCat("kernel ", i);
    k.name = r.String(where);
    k.device = ReadDevice(r, where);
    k.attrs = ReadAttributes(r, absl::StrCat(where, " '", k.name, "'"));
  }
  NIMBLE_RETURN_IF_ERROR(r.status());

  exe.strings = ReadStrings(r, "string table");
  exe.devices.resize(r.Count(5, "device count"));
  for (Device& d : exe.devices) d = ReadDevice(r, "device");
  exe.inputs = ReadSignatures(r, "input");
  exe.outputs = ReadSignatures(r, "output");
  NIMBLE_RETURN_IF_ERROR(r.status());

  exe.variants.resize(r.Count(4 + 4 + 4 + 4 + 4 + 8, "variant count"));
  for (size_t i = 0; i < exe.variants.size() && r.ok(); ++i) {
    Variant& v = exe.variants[i];
    const std::string where = absl::StrCat("variant ", i);
    v.name = r.String(where);
    v.function = r.I32(where);
    v.symbols = ReadStrings(r, where);
    v.lower_bounds = ReadI64s(r, where);
    v.upper_bounds = ReadI64s(r, where);
    v.planned_bytes_hint = r.I64(where);
  }
  exe.symbol_bindings.resize(r.Count(4 + 4 + 4, "symbol binding count"));
  for (Executable::SymbolBinding& b : exe.symbol_bindings) {
    b.symbol = r.String("symbol binding");
    b.input = r.I32("symbol binding");
    b.axis = r.I32("symbol binding");
  }
  NIMBLE_RETURN_IF_ERROR(r.status());
  if (r.remaining() != 0) {
    return absl::InvalidArgumentError(absl::StrCat("invalid executable: ", r.remaining(),
                                                   " unread bytes at the end of the payload"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Executable> ParseExecutable(std::string_view bytes,
                                           std::shared_ptr<Storage> backing) {
  // The header is read with its own reader so that its errors speak of the file, not of a
  // payload offset.
  if (bytes.size() < sizeof(kExecutableMagic)) {
    if (bytes.empty() || std::memcmp(bytes.data(), kExecutableMagic, bytes.size()) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("truncated executable: ", bytes.size(), " bytes, no complete header"));
    }
    return absl::InvalidArgumentError("not a Nimble executable (bad magic)");
  }
  if (std::memcmp(bytes.data(), kExecutableMagic, sizeof(kExecutableMagic)) != 0) {
    return absl::InvalidArgumentError("not a Nimble executable (bad magic)");
  }
  ByteReader header(bytes.substr(sizeof(kExecutableMagic)));
  const uint32_t version = header.U32("format version");
  if (!header.ok()) {
    return absl::InvalidArgumentError("truncated executable: no format version");
  }
  if (version != kExecutableFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "executable format version ", version, " is not supported: this build reads version ",
        kExecutableFormatVersion, "; recompile the model with a matching compiler"));
  }
  const uint32_t version_size = header.U32("compiler version");
  if (header.ok() && version_size > kMaxCompilerVersionBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid executable: compiler version string of ", version_size, " bytes"));
  }
  std::string_view compiler_version = header.Bytes(version_size, "compiler version");
  const uint64_t payload_size = header.U64("payload size");
  const uint64_t checksum = header.U64("checksum");
  if (!header.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("truncated executable: incomplete header (", bytes.size(), " bytes)"));
  }
  if (payload_size > header.remaining()) {
    return absl::InvalidArgumentError(absl::StrCat("truncated executable: the header announces ",
                                                   payload_size, " payload bytes but only ",
                                                   header.remaining(), " follow"));
  }
  if (payload_size < header.remaining()) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid executable: ", header.remaining() - payload_size, " bytes after the ",
                     payload_size, "-byte payload"));
  }
  std::string_view payload = bytes.substr(bytes.size() - payload_size);
  const uint64_t actual = PayloadChecksum(compiler_version, payload);
  if (actual != checksum) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "executable checksum mismatch (stored %016x, computed %016x): the file is corrupted",
        checksum, actual));
  }
  Executable exe;
  exe.compiler_version = std::string(compiler_version);
  NIMBLE_RETURN_IF_ERROR(ReadPayload(payload, std::move(backing), exe));
  return exe;
}

}  // namespace internal

// -----------------------------------------------------------------------------------------------
// Serialize / Load / Finalize.

absl::StatusOr<std::string> Executable::Serialize() const {
  if (compiler_version.size() > internal::kMaxCompilerVersionBytes) {
    return absl::InvalidArgumentError("compiler version string too long");
  }
  // The payload is written after a placeholder header which is then patched, so that a model's
  // weights are not copied once more.
  internal::ByteWriter w;
  w.Raw(internal::kExecutableMagic, sizeof(internal::kExecutableMagic));
  w.U32(kExecutableFormatVersion);
  w.String(compiler_version);
  const size_t size_at = w.bytes().size();
  w.U64(0);
  w.U64(0);
  const size_t payload_at = w.bytes().size();
  NIMBLE_RETURN_IF_ERROR(internal::WritePayload(*this, w));
  std::string& bytes = w.bytes();
  const uint64_t payload_size = bytes.size() - payload_at;
  const uint64_t checksum =
      internal::PayloadChecksum(compiler_version, std::string_view(bytes).substr(payload_at));
  std::memcpy(&bytes[size_at], &payload_size, sizeof(payload_size));
  std::memcpy(&bytes[size_at + 8], &checksum, sizeof(checksum));
  return std::move(bytes);
}

namespace {

// After Verify: resolve every kernel entry and check that InvokePacked's "kernel allocates its
// outputs" flag agrees with the kernel (a mismatch would hand a kernel null outputs).
absl::Status ResolveKernels(Executable& exe, const KernelRegistry& registry) {
  exe.kernel_instances.clear();
  exe.kernel_instances.reserve(exe.kernels.size());
  for (size_t i = 0; i < exe.kernels.size(); ++i) {
    const KernelEntry& entry = exe.kernels[i];
    absl::StatusOr<std::unique_ptr<Kernel>> kernel =
        registry.Create(entry.name, entry.device.type, entry.attrs);
    if (!kernel.ok()) {
      return Annotate(kernel.status(), absl::StrCat("resolving kernel k", i, " '", entry.name,
                                                    "' on ", entry.device.ToString()));
    }
    if (*kernel == nullptr) {
      return absl::InternalError(
          absl::StrCat("kernel factory for '", entry.name, "' returned null"));
    }
    exe.kernel_instances.push_back(*std::move(kernel));
  }
  for (const Function& f : exe.functions) {
    for (size_t pc = 0; pc < f.code.size(); ++pc) {
      const Instruction& in = f.code[pc];
      if (in.op != Opcode::kInvokePacked) continue;
      const bool variadic_flag = (in.c & kInvokePackedSequenceOutput) != 0;
      if (variadic_flag != exe.kernel_instances[in.a]->variadic_outputs()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "function '", f.name, "' pc ", pc, " (invoke_packed): kernel k", in.a, " '",
            exe.kernels[in.a].name, "' and the instruction disagree on a sequence output"));
      }
      if (variadic_flag) continue;
      const bool flag = (in.c & kInvokePackedAllocatesOutputs) != 0;
      const bool allocates = exe.kernel_instances[in.a]->allocates_outputs();
      if (flag != allocates) {
        return absl::InvalidArgumentError(absl::StrCat(
            "function '", f.name, "' pc ", pc, " (invoke_packed): kernel k", in.a, " '",
            exe.kernels[in.a].name, "' ", allocates ? "allocates" : "does not allocate",
            " its outputs but the instruction says it ", flag ? "does" : "does not"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Executable>> Executable::Finalize(
    Executable executable, const KernelRegistry& registry) {
  NIMBLE_RETURN_IF_ERROR(executable.Verify());
  NIMBLE_RETURN_IF_ERROR(ResolveKernels(executable, registry));
  return std::shared_ptr<const Executable>(std::make_shared<Executable>(std::move(executable)));
}

absl::StatusOr<std::shared_ptr<const Executable>> Executable::Load(std::string_view bytes,
                                                                   const KernelRegistry& registry) {
  NIMBLE_ASSIGN_OR_RETURN(Executable exe, internal::ParseExecutable(bytes));
  return Finalize(std::move(exe), registry);
}

absl::StatusOr<std::shared_ptr<const Executable>> Executable::LoadFile(
    const std::string& path, const KernelRegistry& registry) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    std::string message = absl::StrCat("cannot open executable '", path, "': ", strerror(err));
    return err == ENOENT ? absl::NotFoundError(message) : absl::InvalidArgumentError(message);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not a regular file"));
  }
  // The whole file in one buffer whose tensor data is aligned (the format pads it), so the
  // constants become views of it rather than copies: one pass over the bytes instead of three
  // (stdio, the string, the tensors). 2 MiB alignment lets the kernel back it with huge pages,
  // which spares most of the page faults of a few hundred megabytes of weights.
  constexpr size_t kHugePage = size_t{2} << 20;
  const size_t size = static_cast<size_t>(st.st_size);
  const size_t capacity = std::max(kHugePage, (size + kHugePage - 1) / kHugePage * kHugePage);
  void* buffer = std::aligned_alloc(kHugePage, capacity);
  if (buffer == nullptr) {
    ::close(fd);
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", size, " bytes to read '", path, "'"));
  }
  ::madvise(buffer, capacity, MADV_HUGEPAGE);  // advice only: an error changes nothing
  std::shared_ptr<void> owner(buffer, std::free);
  size_t got = 0;
  int err = 0;
  while (got < size) {
    const ssize_t n = ::read(fd, static_cast<char*>(buffer) + got, size - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) err = errno;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  if (err != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("error reading executable '", path, "': ", strerror(err)));
  }
  // Fewer bytes than fstat said: the file shrank while we read it; parse what arrived (the
  // header's payload size then reports the truncation).
  std::shared_ptr<Storage> backing = Storage::Wrap(buffer, got, kCpu, std::move(owner));
  absl::StatusOr<std::shared_ptr<const Executable>> exe =
      [&]() -> absl::StatusOr<std::shared_ptr<const Executable>> {
    NIMBLE_ASSIGN_OR_RETURN(Executable parsed,
                            internal::ParseExecutable(
                                std::string_view(static_cast<const char*>(buffer), got), backing));
    return Finalize(std::move(parsed), registry);
  }();
  if (!exe.ok()) return Annotate(exe.status(), absl::StrCat("loading '", path, "'"));
  return exe;
}

absl::Status Executable::SaveFile(const std::string& path) const {
  NIMBLE_ASSIGN_OR_RETURN(std::string bytes, Serialize());
  // Write a temporary file and rename it, so that readers never see half a file.
  const std::string temp = absl::StrCat(path, ".tmp.", getpid());
  std::FILE* file = std::fopen(temp.c_str(), "wb");
  if (file == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot create '", temp, "': ", strerror(errno)));
  }
  const bool wrote = std::fwrite(bytes.data(), 1, bytes.size(), file) == bytes.size();
  const bool closed = std::fclose(file) == 0;
  if (!wrote || !closed) {
    std::remove(temp.c_str());
    return absl::InternalError(absl::StrCat("error writing '", temp, "'"));
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(temp.c_str());
    return absl::InvalidArgumentError(
        absl::StrCat("cannot rename '", temp, "' to '", path, "': ", strerror(err)));
  }
  return absl::OkStatus();
}

// -----------------------------------------------------------------------------------------------
// Verify.

namespace {

bool InRange(int64_t index, size_t size) {
  return index >= 0 && static_cast<uint64_t>(index) < size;
}

bool IsPowerOfTwo(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

class FunctionVerifier {
 public:
  FunctionVerifier(const Executable& exe, const Function& f) : exe_(exe), f_(f) {}

  absl::Status Run() {
    if (f_.num_params < 0 || f_.num_registers < f_.num_params) {
      return Error(
          absl::StrCat("has ", f_.num_params, " parameters but ", f_.num_registers, " registers"));
    }
    if (f_.num_registers > internal::kMaxRegisters) {
      return Error(absl::StrCat("has ", f_.num_registers, " registers (at most ",
                                internal::kMaxRegisters, ")"));
    }
    if (f_.code.empty()) return Error("has no code");
    for (pc_ = 0; pc_ < f_.code.size(); ++pc_) {
      NIMBLE_RETURN_IF_ERROR(VerifyInstruction(f_.code[pc_]));
    }
    const Opcode last = f_.code.back().op;
    if (last != Opcode::kRet && last != Opcode::kGoto && last != Opcode::kFatal &&
        last != Opcode::kIf) {
      pc_ = f_.code.size() - 1;
      return InstructionError(f_.code.back(),
                              "falls off the end of the function (the last instruction must be "
                              "ret, goto, if or fatal)");
    }
    return absl::OkStatus();
  }

 private:
  absl::Status Error(absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat("function '", f_.name, "' ", message));
  }
  absl::Status InstructionError(const Instruction& in, absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat("function '", f_.name, "' pc ", pc_, " (",
                                                   GetOpcodeInfo(in.op).mnemonic, "): ", message));
  }

  absl::Status Operand(const Instruction& in, char kind, int64_t value,
                       absl::string_view field) const {
    auto out_of_range = [&](absl::string_view what, size_t size) {
      return InstructionError(
          in, absl::StrCat(field, ": ", what, " ", value, " out of range (", size, ")"));
    };
    switch (kind) {
      case 'r':
        if (!InRange(value, f_.num_registers)) return out_of_range("register", f_.num_registers);
        break;
      case 'f':
        if (!InRange(value, exe_.functions.size())) {
          return out_of_range("function", exe_.functions.size());
        }
        break;
      case 'k':
        if (!InRange(value, exe_.kernels.size())) {
          return out_of_range("kernel index", exe_.kernels.size());
        }
        break;
      case 'c':
        if (!InRange(value, exe_.constants.size())) {
          return out_of_range("constant", exe_.constants.size());
        }
        break;
      case 's':
        if (!InRange(value, exe_.strings.size())) {
          return out_of_range("string", exe_.strings.size());
        }
        break;
      case 'v':
        if (!InRange(value, exe_.devices.size())) {
          return out_of_range("device", exe_.devices.size());
        }
        break;
      case 'd':
        if (value <= 0 || value >= kNumDTypes) {
          return InstructionError(in, absl::StrCat(field, ": invalid dtype ", value));
        }
        break;
      case 'j': {
        const int64_t target = static_cast<int64_t>(pc_) + value;
        if (!InRange(target, f_.code.size())) {
          return InstructionError(
              in, absl::StrCat(field, ": jump target ", target, " outside the function (",
                               f_.code.size(), " instructions)"));
        }
        break;
      }
      case 'i':
      case '-':
        break;
      default:
        return absl::InternalError(
            absl::StrCat("opcodes.def: unknown operand kind ", std::string(1, kind)));
    }
    return absl::OkStatus();
  }

  absl::Status VerifyInstruction(const Instruction& in) {
    if (static_cast<int>(in.op) >= kNumOpcodes) {
      return Error(absl::StrCat("pc ", pc_, ": unknown opcode ", static_cast<int>(in.op)));
    }
    const OpcodeInfo& info = GetOpcodeInfo(in.op);
    static constexpr absl::string_view kFields[] = {"dst", "a", "b", "c"};
    const int32_t values[] = {in.dst, in.a, in.b, in.c};
    for (int i = 0; i < 4; ++i) {
      NIMBLE_RETURN_IF_ERROR(Operand(in, info.operands[i], values[i], kFields[i]));
    }
    if (info.list != '-' || in.list_size != 0) {
      if (static_cast<uint64_t>(in.list_begin) + in.list_size > f_.operand_pool.size()) {
        return InstructionError(
            in, absl::StrCat("operand list [", in.list_begin, ", +", in.list_size,
                             ") outside the operand pool (", f_.operand_pool.size(), ")"));
      }
    }
    if (info.list == 'R') {
      for (uint32_t i = 0; i < in.list_size; ++i) {
        NIMBLE_RETURN_IF_ERROR(
            Operand(in, 'r', f_.operand_pool[in.list_begin + i], absl::StrCat("list[", i, "]")));
      }
    }
    return Semantics(in);
  }

  // Per-opcode facts beyond operand kinds that the interpreter relies on.
  absl::Status Semantics(const Instruction& in) const {
    // An opcode without a list may carry any list_begin (VerifyInstruction checks it only
    // where there is a list): no pointer is formed from it then.
    const int64_t* list = in.list_size == 0 ? nullptr : f_.operand_pool.data() + in.list_begin;
    switch (in.op) {
      case Opcode::kInvoke: {
        const Function& callee = exe_.functions[in.a];
        if (in.list_size != static_cast<uint32_t>(callee.num_params)) {
          return InstructionError(
              in, absl::StrCat("passes ", in.list_size, " arguments to '", callee.name,
                               "' which takes ", callee.num_params));
        }
        break;
      }
      case Opcode::kAllocClosure: {
        const Function& callee = exe_.functions[in.a];
        if (in.list_size > static_cast<uint32_t>(callee.num_params)) {
          return InstructionError(
              in, absl::StrCat("captures ", in.list_size, " values for '", callee.name,
                               "' which takes ", callee.num_params));
        }
        break;
      }
      case Opcode::kInvokePacked: {
        if (in.b < 0 || static_cast<uint32_t>(in.b) > in.list_size) {
          return InstructionError(
              in, absl::StrCat(in.b, " inputs but a list of ", in.list_size, " registers"));
        }
        if (in.c < 0 || in.c > 15 || (in.c & 3) == 3) {
          return InstructionError(in, absl::StrCat("invalid flags ", in.c));
        }
        if ((in.c & kInvokePackedSequenceOutput) &&
            ((in.c & 3) != 0 || in.list_size - static_cast<uint32_t>(in.b) != 1)) {
          return InstructionError(
              in, "a sequence output is the kernel's only output and excludes flags 1 and 2");
        }
        if (in.c & kInvokePackedShapeFunction) {
          const uint32_t outputs = in.list_size - in.b;
          if (outputs > static_cast<uint32_t>(kMaxShapeFunctionOutputs)) {
            return InstructionError(
                in, absl::StrCat(outputs, " outputs with a shape function (at most ",
                                 kMaxShapeFunctionOutputs, ")"));
          }
          for (uint32_t i = 0; i < outputs; ++i) {
            const DType dtype = DecodeOutputDType(in.imm, static_cast<int>(i));
            if (dtype == DType::kInvalid || static_cast<int>(dtype) >= kNumDTypes) {
              return InstructionError(
                  in, absl::StrCat("output ", i, " has invalid dtype ", static_cast<int>(dtype)));
            }
          }
        }
        break;
      }
      case Opcode::kAllocStorage:
        if (in.c != 0 && !IsPowerOfTwo(in.c)) {
          return InstructionError(in, absl::StrCat("alignment ", in.c, " is not a power of two"));
        }
        break;
      case Opcode::kAllocTensor:
      case Opcode::kAllocTensorReg:
        if (static_cast<DType>(in.c) == DType::kString) {
          return InstructionError(in, "string tensors cannot be views of raw storage");
        }
        if (in.op == Opcode::kAllocTensor) {
          for (uint32_t i = 0; i < in.list_size; ++i) {
            if (list[i] < 0) {
              return InstructionError(in, absl::StrCat("negative dim ", list[i]));
            }
          }
        }
        break;
      case Opcode::kGetField:
      case Opcode::kTensorDim:
      case Opcode::kTensorElement:
        if (in.b < 0) return InstructionError(in, absl::StrCat("negative index ", in.b));
        break;
      case Opcode::kAdtInsert:
      case Opcode::kAdtErase:
        if (in.list_size > 1) {
          return InstructionError(in, absl::StrCat(in.list_size, " positions (at most 1)"));
        }
        break;
      case Opcode::kScalarBinary:
      case Opcode::kScalarBinaryImm:
        if (in.c < 0 || in.c >= kNumScalarOps) {
          return InstructionError(in, absl::StrCat("unknown scalar op ", in.c));
        }
        break;
      default:
        break;
    }
    return absl::OkStatus();
  }

  const Executable& exe_;
  const Function& f_;
  size_t pc_ = 0;
};

absl::Status VerifySignatures(const std::vector<TensorSignature>& signatures,
                              absl::string_view what) {
  for (const TensorSignature& s : signatures) {
    if (static_cast<uint8_t>(s.kind) > static_cast<uint8_t>(ValueKind::kOptionalSequence)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " '", s.name, "' has unknown kind ", static_cast<int>(s.kind)));
    }
    if (s.dtype == DType::kInvalid || static_cast<int>(s.dtype) >= kNumDTypes) {
      return absl::InvalidArgumentError(absl::StrCat(what, " '", s.name, "' has no dtype"));
    }
    if (!s.dim_names.empty() && s.dim_names.size() != s.dims.size()) {
      return absl::InvalidArgumentError(absl::StrCat(what, " '", s.name, "' has ", s.dims.size(),
                                                     " dims but ", s.dim_names.size(),
                                                     " dim names"));
    }
    for (int64_t d : s.dims) {
      if (d < -1) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, " '", s.name, "' has invalid dim ", d));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Executable::Verify() const {
  if (functions.size() > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError("too many functions");
  }
  for (const Function& f : functions) {
    NIMBLE_RETURN_IF_ERROR(FunctionVerifier(*this, f).Run());
  }
  for (size_t i = 0; i < constants.size(); ++i) {
    if (!constants[i].defined()) {
      return absl::InvalidArgumentError(absl::StrCat("constant ", i, " is null"));
    }
  }
  NIMBLE_RETURN_IF_ERROR(VerifySignatures(inputs, "input"));
  NIMBLE_RETURN_IF_ERROR(VerifySignatures(outputs, "output"));
  std::set<std::string> bound_symbols;
  for (const SymbolBinding& b : symbol_bindings) {
    if (!InRange(b.input, inputs.size()) || !InRange(b.axis, inputs[b.input].dims.size()) ||
        inputs[b.input].kind != ValueKind::kTensor) {
      return absl::InvalidArgumentError(absl::StrCat("symbol '", b.symbol, "' is bound to input ",
                                                     b.input, " axis ", b.axis,
                                                     " which does not exist"));
    }
    bound_symbols.insert(b.symbol);
  }
  if (variants.empty()) return absl::InvalidArgumentError("executable has no entry variant");
  for (const Variant& v : variants) {
    if (!InRange(v.function, functions.size())) {
      return absl::InvalidArgumentError(absl::StrCat("variant '", v.name, "': function ",
                                                     v.function, " out of range (",
                                                     functions.size(), ")"));
    }
    const Function& f = functions[v.function];
    if (static_cast<size_t>(f.num_params) != inputs.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("variant '", v.name, "': function '", f.name, "' takes ", f.num_params,
                       " parameters but the model has ", inputs.size(), " inputs"));
    }
    if (v.lower_bounds.size() != v.symbols.size() || v.upper_bounds.size() != v.symbols.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "variant '", v.name, "': ", v.symbols.size(), " symbols but ", v.lower_bounds.size(),
          " lower and ", v.upper_bounds.size(), " upper bounds"));
    }
    for (const std::string& s : v.symbols) {
      if (bound_symbols.count(s) == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("variant '", v.name, "' bounds symbol '", s, "' that no input binds"));
      }
    }
  }
  return absl::OkStatus();
}

// -----------------------------------------------------------------------------------------------
// Disassemble.

namespace {

std::string Quote(absl::string_view s) { return absl::StrCat("\"", absl::CEscape(s), "\""); }

// Content digest of a host tensor (so that listings differ when the bytes differ).
uint64_t TensorDigest(const Tensor& t) {
  if (!t.defined() || t.device().type != DeviceType::kCPU) return 0;
  if (t.dtype() != DType::kString) return internal::Hash64(t.raw_data(), t.nbytes());
  uint64_t h = 0;
  const std::string* strings = t.data<std::string>();
  for (int64_t i = 0; i < t.num_elements(); ++i) h = internal::Hash64(strings[i], h);
  return h;
}

std::string TensorSummary(const Tensor& t) {
  if (!t.defined()) return "null";
  return absl::StrFormat("%s %s hash=%016x", t.TypeString(), t.device().ToString(),
                         TensorDigest(t));
}

std::string AttrToString(const AttrValue& value) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, int64_t>) {
          return absl::StrCat(v);
        } else if constexpr (std::is_same_v<T, double>) {
          return absl::StrFormat("%.17g", v);
        } else if constexpr (std::is_same_v<T, std::string>) {
          return Quote(v);
        } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
          return absl::StrCat("[", absl::StrJoin(v, ", "), "]");
        } else if constexpr (std::is_same_v<T, std::vector<double>>) {
          return absl::StrCat("[",
                              absl::StrJoin(v, ", ",
                                            [](std::string* out, double d) {
                                              absl::StrAppendFormat(out, "%.17g", d);
                                            }),
                              "]");
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          return absl::StrCat(
              "[",
              absl::StrJoin(v, ", ",
                            [](std::string* out, const std::string& s) { out->append(Quote(s)); }),
              "]");
        } else {
          return TensorSummary(v);
        }
      },
      value);
}

}  // namespace

absl::string_view ValueKindName(ValueKind kind) {
  switch (kind) {
    case ValueKind::kTensor:
      return "tensor";
    case ValueKind::kSequence:
      return "sequence";
    case ValueKind::kOptional:
      return "optional";
    case ValueKind::kOptionalSequence:
      return "optional sequence";
  }
  return "unknown";
}

namespace {

std::string SignatureToString(const TensorSignature& s) {
  std::vector<std::string> dims;
  for (size_t i = 0; i < s.dims.size(); ++i) {
    const std::string name = i < s.dim_names.size() ? s.dim_names[i] : "";
    if (s.dims[i] >= 0) {
      dims.push_back(absl::StrCat(s.dims[i]));
    } else {
      dims.push_back(name.empty() ? "?" : name);
    }
  }
  const std::string tensor = absl::StrCat(DTypeName(s.dtype), "[", absl::StrJoin(dims, ", "), "]");
  switch (s.kind) {
    case ValueKind::kTensor:
      break;
    case ValueKind::kSequence:
      return absl::StrCat(s.name, ": seq(", tensor, ")");
    case ValueKind::kOptional:
      return absl::StrCat(s.name, ": optional(", tensor, ")");
    case ValueKind::kOptionalSequence:
      return absl::StrCat(s.name, ": optional(seq(", tensor, "))");
  }
  return absl::StrCat(s.name, ": ", tensor);
}

class Disassembler {
 public:
  explicit Disassembler(const Executable& exe) : exe_(exe) {}

  std::string Run() {
    absl::StrAppend(&out_, "executable (format ", kExecutableFormatVersion, ", compiler ",
                    Quote(exe_.compiler_version), ")\n");
    Section("inputs", exe_.inputs.size());
    for (const TensorSignature& s : exe_.inputs)
      absl::StrAppend(&out_, "  ", SignatureToString(s), "\n");
    Section("outputs", exe_.outputs.size());
    for (const TensorSignature& s : exe_.outputs)
      absl::StrAppend(&out_, "  ", SignatureToString(s), "\n");
    Section("symbol bindings", exe_.symbol_bindings.size());
    for (const auto& b : exe_.symbol_bindings) {
      absl::StrAppend(&out_, "  ", b.symbol, " = input ", b.input, " dim ", b.axis, "\n");
    }
    Section("variants", exe_.variants.size());
    for (const Variant& v : exe_.variants) {
      absl::StrAppend(&out_, "  ", Quote(v.name), " -> ", FunctionName(v.function));
      for (size_t i = 0; i < v.symbols.size(); ++i) {
        absl::StrAppend(&out_, i == 0 ? " where " : ", ",
                        i < v.lower_bounds.size() ? absl::StrCat(v.lower_bounds[i]) : "?",
                        " <= ", v.symbols[i],
                        " <= ", i < v.upper_bounds.size() ? absl::StrCat(v.upper_bounds[i]) : "?");
      }
      if (v.planned_bytes_hint != 0)
        absl::StrAppend(&out_, " planned ", v.planned_bytes_hint, " bytes");
      out_ += "\n";
    }
    Section("devices", exe_.devices.size());
    for (size_t i = 0; i < exe_.devices.size(); ++i) {
      absl::StrAppend(&out_, "  v", i, ": ", exe_.devices[i].ToString(), "\n");
    }
    Section("constants", exe_.constants.size());
    for (size_t i = 0; i < exe_.constants.size(); ++i) {
      absl::StrAppend(&out_, "  c", i, ": ", TensorSummary(exe_.constants[i]), "\n");
    }
    Section("kernels", exe_.kernels.size());
    for (size_t i = 0; i < exe_.kernels.size(); ++i) {
      const KernelEntry& k = exe_.kernels[i];
      absl::StrAppend(&out_, "  k", i, ": ", k.name, " on ", k.device.ToString());
      if (!k.attrs.values().empty()) {
        std::vector<std::string> attrs;
        for (const auto& [name, value] : k.attrs.values()) {
          attrs.push_back(absl::StrCat(name, "=", AttrToString(value)));
        }
        absl::StrAppend(&out_, " {", absl::StrJoin(attrs, ", "), "}");
      }
      out_ += "\n";
    }
    Section("strings", exe_.strings.size());
    for (size_t i = 0; i < exe_.strings.size(); ++i) {
      absl::StrAppend(&out_, "  s", i, ": ", Quote(exe_.strings[i]), "\n");
    }
    for (size_t i = 0; i < exe_.functions.size(); ++i) DisassembleFunction(i);
    return std::move(out_);
  }

 private:
  void Section(absl::string_view name, size_t count) {
    absl::StrAppend(&out_, name, " (", count, "):\n");
  }

  std::string FunctionName(int64_t index) const {
    if (!InRange(index, exe_.functions.size())) return absl::StrCat("f", index);
    return absl::StrCat("f", index, " (", exe_.functions[index].name, ")");
  }
  std::string KernelName(int64_t index) const {
    if (!InRange(index, exe_.kernels.size())) return absl::StrCat("k", index);
    return absl::StrCat("k", index, " (", exe_.kernels[index].name, ")");
  }
  std::string StringRef(int64_t index) const {
    if (!InRange(index, exe_.strings.size())) return absl::StrCat("s", index);
    return absl::StrCat("s", index, " ", Quote(exe_.strings[index]));
  }
  std::string DeviceName(int64_t index) const {
    if (!InRange(index, exe_.devices.size())) return absl::StrCat("v", index);
    return absl::StrCat("v", index, " (", exe_.devices[index].ToString(), ")");
  }
  static std::string DTypeString(int64_t d) {
    if (d < 0 || d >= kNumDTypes) return absl::StrCat("dtype", d);
    return std::string(DTypeName(static_cast<DType>(d)));
  }
  static absl::string_view ScalarOpName(int64_t op) {
    static constexpr absl::string_view kNames[] = {"add", "sub", "mul", "floordiv", "mod",
                                                   "min", "max", "eq",  "ne",       "lt",
                                                   "le",  "and", "or",  "ceildiv"};
    static_assert(std::size(kNames) == kNumScalarOps);
    return op >= 0 && op < kNumScalarOps ? kNames[op] : "?";
  }

  // The list operand, or part of it, as "[r1, r2]" / "[2, 3]"; tolerant of bad slices.
  std::string List(const Function& f, const Instruction& in, uint32_t begin, uint32_t end,
                   bool registers) const {
    std::vector<std::string> items;
    for (uint32_t i = begin; i < end; ++i) {
      const uint64_t at = static_cast<uint64_t>(in.list_begin) + i;
      if (at >= f.operand_pool.size()) {
        items.push_back("<bad>");
        break;
      }
      items.push_back(absl::StrCat(registers ? "r" : "", f.operand_pool[at]));
    }
    return absl::StrCat("[", absl::StrJoin(items, ", "), "]");
  }

  void DisassembleFunction(size_t index) {
    const Function& f = exe_.functions[index];
    absl::StrAppend(&out_, "\nfunction f", index, " '", f.name, "' (params ", f.num_params,
                    ", registers ", f.num_registers, "):\n");
    for (size_t pc = 0; pc < f.code.size(); ++pc) {
      absl::StrAppendFormat(&out_, "%4d: %s\n", pc, FormatInstruction(f, pc, f.code[pc]));
    }
  }

  std::string FormatInstruction(const Function& f, size_t pc, const Instruction& in) const {
    if (static_cast<int>(in.op) >= kNumOpcodes) {
      return absl::StrCat("<bad opcode ", static_cast<int>(in.op), ">");
    }
    const absl::string_view m = GetOpcodeInfo(in.op).mnemonic;
    auto r = [](int64_t reg) { return absl::StrCat("r", reg); };
    auto all = [&](bool registers) { return List(f, in, 0, in.list_size, registers); };
    auto target = [&](int64_t offset) { return static_cast<int64_t>(pc) + offset; };
    switch (in.op) {
      case Opcode::kMove:
        return absl::StrCat(m, " ", r(in.dst), " = ", r(in.a));
      case Opcode::kRet:
        return absl::StrCat(m, " ", r(in.a));
      case Opcode::kInvoke:
        return absl::StrCat(m, " ", r(in.dst), " = ", FunctionName(in.a), " ", all(true));
      case Opcode::kInvokeClosure:
        return absl::StrCat(m, " ", r(in.dst), " = ", r(in.a), " ", all(true));
      case Opcode::kInvokePacked: {
        const uint32_t inputs = in.b < 0 ? 0 : std::min<uint32_t>(in.b, in.list_size);
        std::string s = absl::StrCat(m, " ", KernelName(in.a), " in=", List(f, in, 0, inputs, true),
                                     " out=", List(f, in, inputs, in.list_size, true));
        if (in.c & kInvokePackedAllocatesOutputs) s += " kernel_allocates";
        if (in.c & kInvokePackedShapeFunction) {
          std::vector<std::string> dtypes;
          for (uint32_t i = inputs;
               i < in.list_size && i - inputs < static_cast<uint32_t>(kMaxShapeFunctionOutputs);
               ++i) {
            dtypes.push_back(DTypeString(static_cast<int>(DecodeOutputDType(in.imm, i - inputs))));
          }
          absl::StrAppend(&s, " shape_fn dtypes=[", absl::StrJoin(dtypes, ", "), "]");
        }
        if (in.c & ~3) absl::StrAppend(&s, " flags=", in.c);
        return s;
      }
      case Opcode::kAllocStorage:
        return absl::StrCat(m, " ", r(in.dst), " = size ", r(in.a), " on ", DeviceName(in.b),
                            " align ", in.c);
      case Opcode::kAllocTensor:
        return absl::StrCat(m, " ", r(in.dst), " = ", r(in.a), " offset ", r(in.b), " ",
                            DTypeString(in.c), all(false));
      case Opcode::kAllocTensorReg:
        return absl::StrCat(m, " ", r(in.dst), " = ", r(in.a), " offset ", r(in.b), " ",
                            DTypeString(in.c), all(true));
      case Opcode::kAllocADT:
        return absl::StrCat(m, " ", r(in.dst), " = tag ", in.a, " ", all(true));
      case Opcode::kAllocClosure:
        return absl::StrCat(m, " ", r(in.dst), " = ", FunctionName(in.a), " captures ", all(true));
      case Opcode::kGetField:
        return absl::StrCat(m, " ", r(in.dst), " = ", r(in.a), "[", in.b, "]");
      case Opcode::kGetTag:
        return absl::StrCat(m, " ", r(in.dst), " = tag of ", r(in.a));
      case Opcode::kAdtSize:
        return absl::StrCat(m, " ", r(in.dst), " = size of ", r(in.a));
      case Opcode::kGetFieldReg:
        return absl::StrCat(m, " ", r(in.dst), " = ", r(in.a), "[", r(in.b), "]");
      case Opcode::kAdtInsert:
        return absl::StrCat(m, " ", r(in.dst), " = ", r(in.a), " + ", r(in.b), " at ",
                            in.list_size == 0 ? std::string("end") : all(true));
      case Opcode::kAdtErase:
        return absl::StrCat(m, " ", r(in.dst), " = ", r(in.a), " without ",
                            in.list_size == 0 ? std::string("last") : all(true));
      case Opcode::kOptionalHas:
        return absl::StrCat(m, " ", r(in.dst), " = has ", r(in.a));
      case Opcode::kOptionalGet:
        return absl::StrCat(m, " ", r(in.dst), " = value of ", r(in.a));
      case Opcode::kMakeScalarTensor:
        return absl::StrCat(m, " ", r(in.dst), " = ", DTypeString(in.c), " ", r(in.a));
      case Opcode::kIf:
        return absl::StrCat(m, " ", r(in.a), " then ", target(in.b), " else ", target(in.c));
      case Opcode::kGoto:
        return absl::StrCat(m, " ", target(in.a));
      case Opcode::kLoadConst: {
        std::string s = absl::StrCat(m, " ", r(in.dst), " = c", in.a);
        if (InRange(in.a, exe_.constants.size())) {
          const Tensor& t = exe_.constants[in.a];
          absl::StrAppend(&s, " (", t.defined() ? t.TypeString() : "null", ")");
        }
        return s;
      }
      case Opcode::kLoadConsti:
        return absl::StrCat(m, " ", r(in.dst), " = ", in.imm);
      case Opcode::kFatal:
        return absl::StrCat(m, " ", StringRef(in.a));
      case Opcode::kReshapeTensor:
        return absl::StrCat(m, " ", r(in.dst), " = ", r(in.a), " to ", all(true));
      case Opcode::kDeviceCopy:
        return absl::StrCat(m, " ", r(in.dst), " = ", r(in.a), " from ", DeviceName(in.b), " to ",
                            DeviceName(in.c), in.imm & kDeviceCopyResult ? " (result)" : "");
      case Opcode::kLoadConstOn: {
        std::string s = absl::StrCat(m, " ", r(in.dst), " = c", in.a);
        if (InRange(in.a, exe_.constants.size())) {
          const Tensor& t = exe_.constants[in.a];
          absl::StrAppend(&s, " (", t.defined() ? t.TypeString() : "null", ")");
        }
        return absl::StrCat(s, " on ", DeviceName(in.b));
      }
      case Opcode::kShapeOf:
        return absl::StrCat(m, " ", r(in.dst), " = shape of ", r(in.a));
      case Opcode::kKillRegister:
        return absl::StrCat(m, " ", r(in.a));
      case Opcode::kScalarBinary:
        return absl::StrCat(m, " ", r(in.dst), " = ", r(in.a), " ", ScalarOpName(in.c), " ",
                            r(in.b));
      case Opcode::kScalarBinaryImm:
        return absl::StrCat(m, " ", r(in.dst), " = ", r(in.a), " ", ScalarOpName(in.c), " ",
                            in.imm);
      case Opcode::kTensorDim:
        return absl::StrCat(m, " ", r(in.dst), " = ", r(in.a), " dim ", in.b);
      case Opcode::kTensorElement:
        return absl::StrCat(m, " ", r(in.dst), " = ", r(in.a), "[", in.b, "]");
      case Opcode::kMakeShapeTensor:
        return absl::StrCat(m, " ", r(in.dst), " = ", all(true));
      case Opcode::kTensorSelect:
        return absl::StrCat(m, " ", r(in.dst), " = ", r(in.a), "[", r(in.b), "]");
      case Opcode::kAssert:
        return absl::StrCat(m, " ", r(in.a), " else ", StringRef(in.b), " ", all(true));
    }
    return absl::StrCat("<bad opcode ", static_cast<int>(in.op), ">");
  }

  const Executable& exe_;
  std::string out_;
};

}  // namespace

std::string Executable::Disassemble() const { return Disassembler(*this).Run(); }

}  // namespace nimble::vm
