// libFuzzer entry point: any byte string must import or fail with a status, never crash, hang
// or leak. Build with -DNIMBLE_FUZZ=ON and Clang; run e.g.
//   ./onnx_importer_fuzzer -max_len=65536 ../shared/conformance/onnx-node/*/model.onnx
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "compiler/frontend/onnx/onnx_importer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // No model directory: external data must be rejected without touching the file system.
  auto module = nimble::compiler::ImportOnnxModelFromBytes(
      absl::string_view(reinterpret_cast<const char*>(data), size), /*model_dir=*/"");
  if (module.ok()) (void)(*module)->ToString();
  return 0;
}
