// Internals of the NBX executable format (vm/executable.cc): the checksum, the byte writer and
// the bounds-checked reader. Exposed for tests and the fuzzer only.
//
// Every multi-byte value is little-endian. The reader never reads past its input and never
// allocates from a length field before checking that the remaining bytes can hold that many
// elements, so a hostile file costs at most about its own size in memory.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "vm/executable.h"

namespace nimble::vm::internal {

static_assert(std::endian::native == std::endian::little,
              "the NBX reader/writer copy little-endian values directly");

// XXH64 (Yann Collet's xxHash, 64-bit variant), written from the published algorithm. Fast
// (~several GB/s), and a single flipped bit anywhere changes the result.
uint64_t Hash64(const void* data, size_t size, uint64_t seed = 0);
inline uint64_t Hash64(std::string_view bytes, uint64_t seed = 0) {
  return Hash64(bytes.data(), bytes.size(), seed);
}

// Appends little-endian fields to a string.
class ByteWriter {
 public:
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void U32(uint32_t v) { Raw(&v, sizeof(v)); }
  void I32(int32_t v) { Raw(&v, sizeof(v)); }
  void U64(uint64_t v) { Raw(&v, sizeof(v)); }
  void I64(int64_t v) { Raw(&v, sizeof(v)); }
  void F64(double v) { U64(std::bit_cast<uint64_t>(v)); }
  // u32 length, then the bytes.
  void String(std::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    Raw(s.data(), s.size());
  }
  void Raw(const void* data, size_t size) { out_.append(static_cast<const char*>(data), size); }

  std::string& bytes() { return out_; }

 private:
  std::string out_;
};

// Reads little-endian fields with a sticky error: after the first failure every read returns
// zero/empty and ok() is false, so parsing code checks once per section instead of per field.
// Counts are validated against the remaining bytes before anyone allocates for them.
class ByteReader {
 public:
  explicit ByteReader(std::string_view data) : data_(data) {}

  bool ok() const { return status_.ok(); }
  const absl::Status& status() const { return status_; }
  size_t offset() const { return pos_; }
  size_t remaining() const { return data_.size() - pos_; }

  void Fail(absl::string_view message) {
    if (ok()) {
      status_ = absl::InvalidArgumentError(
          absl::StrCat("invalid executable: ", message, " (at payload offset ", pos_, ")"));
    }
  }

  uint8_t U8(absl::string_view what) { return Fixed<uint8_t>(what); }
  uint32_t U32(absl::string_view what) { return Fixed<uint32_t>(what); }
  int32_t I32(absl::string_view what) { return Fixed<int32_t>(what); }
  uint64_t U64(absl::string_view what) { return Fixed<uint64_t>(what); }
  int64_t I64(absl::string_view what) { return Fixed<int64_t>(what); }
  double F64(absl::string_view what) { return std::bit_cast<double>(Fixed<uint64_t>(what)); }

  // A u32 element count, checked so that `count * min_element_bytes` fits in what remains
  // (every element of the list takes at least that many bytes on disk).
  uint32_t Count(size_t min_element_bytes, absl::string_view what) {
    const uint32_t count = U32(what);
    if (!ok()) return 0;
    if (static_cast<uint64_t>(count) * min_element_bytes > remaining()) {
      Fail(absl::StrCat("truncated: ", what, " says ", count, " elements of at least ",
                        min_element_bytes, " bytes but only ", remaining(), " bytes remain"));
      return 0;
    }
    return count;
  }

  std::string String(absl::string_view what) {
    const uint32_t size = U32(what);
    std::string_view bytes = Bytes(size, what);
    return std::string(bytes);
  }

  // `size` bytes, or an empty view (and an error) if fewer remain.
  std::string_view Bytes(uint64_t size, absl::string_view what) {
    if (!ok()) return {};
    if (size > remaining()) {
      Fail(absl::StrCat("truncated: ", what, " needs ", size, " bytes but only ", remaining(),
                        " remain"));
      return {};
    }
    std::string_view bytes = data_.substr(pos_, size);
    pos_ += size;
    return bytes;
  }

  // Host storage holding the bytes being read (a file's buffer): ReadTensor then views
  // aligned tensor data in place.
  void SetBacking(std::shared_ptr<Storage> backing) { backing_ = std::move(backing); }
  const std::shared_ptr<Storage>& backing() const { return backing_; }

 private:
  template <typename T>
  T Fixed(absl::string_view what) {
    std::string_view bytes = Bytes(sizeof(T), what);
    T value{};
    if (!bytes.empty()) std::memcpy(&value, bytes.data(), sizeof(T));
    return value;
  }

  std::string_view data_;
  size_t pos_ = 0;
  absl::Status status_;
  std::shared_ptr<Storage> backing_;
};

// Tensor data in the file starts at a multiple of this many bytes from the file's start (a pad
// byte count and zero bytes precede it), so a file read into an aligned buffer can hand its
// constants out in place.
inline constexpr size_t kTensorDataAlignment = 64;

// The header: magic, format version, compiler version, payload size, checksum.
inline constexpr char kExecutableMagic[4] = {'N', 'B', 'X', '\0'};
// Longest compiler version string accepted in a header.
inline constexpr size_t kMaxCompilerVersionBytes = 4096;
// Most registers one function may have (a frame allocates them all on every call).
inline constexpr int32_t kMaxRegisters = 1 << 20;

// The checksum stored in the header: XXH64 of the payload seeded with XXH64 of the compiler
// version, so that a corrupted byte anywhere after the version field is detected.
uint64_t PayloadChecksum(std::string_view compiler_version, std::string_view payload);

// Parses the file into an Executable without verifying it or resolving kernels (the fuzzer
// and tests use this to reach Verify with arbitrary but well-formed content). With `backing`
// (host storage that holds `bytes`), tensors whose data is aligned there become views of it
// instead of copies.
absl::StatusOr<Executable> ParseExecutable(std::string_view bytes,
                                           std::shared_ptr<Storage> backing = nullptr);

}  // namespace nimble::vm::internal
