// libFuzzer target for the executable loader: arbitrary bytes must give a status, never a
// crash, a hang or an unbounded allocation.
//
//   cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang \
//     -DNIMBLE_FUZZ=ON -DNIMBLE_CUDA=OFF && ninja -C build-fuzz executable_fuzzer
//   ./build-fuzz/vm/executable_fuzzer -max_len=65536 corpus/
//
// The checksum would stop almost every mutation at the header, so the fuzzer also feeds the
// input as a *payload* wrapped in a valid header (by its first byte), which reaches the payload
// parser, the verifier and the disassembler. An executable that parses and verifies is
// serialised again and must reload to the same listing.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "vm/executable.h"
#include "vm/serialization_internal.h"

namespace {

std::string WithHeader(std::string_view payload) {
  constexpr std::string_view kVersion = "fuzz";
  nimble::vm::internal::ByteWriter w;
  w.Raw(nimble::vm::internal::kExecutableMagic, sizeof(nimble::vm::internal::kExecutableMagic));
  w.U32(nimble::vm::kExecutableFormatVersion);
  w.String(kVersion);
  w.U64(payload.size());
  w.U64(nimble::vm::internal::PayloadChecksum(kVersion, payload));
  w.Raw(payload.data(), payload.size());
  return std::move(w.bytes());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  // First byte odd: the rest is a whole file; even: the rest is a payload.
  const std::string file =
      (data[0] & 1) ? std::string(input.substr(1)) : WithHeader(input.substr(1));
  absl::StatusOr<nimble::vm::Executable> exe = nimble::vm::internal::ParseExecutable(file);
  if (!exe.ok()) return 0;
  // Disassembly must cope with unverified content too.
  const std::string raw_listing = exe->Disassemble();
  if (!exe->Verify().ok()) return 0;
  absl::StatusOr<std::string> bytes = exe->Serialize();
  if (!bytes.ok()) return 0;
  absl::StatusOr<nimble::vm::Executable> again = nimble::vm::internal::ParseExecutable(*bytes);
  if (!again.ok() || !again->Verify().ok() || again->Disassemble() != raw_listing) std::abort();
  return 0;
}
