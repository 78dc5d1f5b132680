// NumPy .npy files (format 1.0/2.0/3.0, little-endian, C order) to and from tensors, for
// nimblec's --input/--output-dir and for tests against PyTorch references.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "vm/runtime/tensor.h"

namespace nimble::vm {

absl::StatusOr<Tensor> ReadNpy(const std::string& path);
absl::StatusOr<Tensor> ParseNpy(absl::string_view bytes);
absl::Status WriteNpy(const std::string& path, const Tensor& tensor);

}  // namespace nimble::vm
