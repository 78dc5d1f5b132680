// KServe v2 ModelInferRequest -> validated vm::Tensors, and vm::Tensors -> ModelInferResponse.
// Every check a request can fail happens here, before anything reaches the VM: input names
// (missing, unknown, twice), datatypes, ranks, static dims and dims that share a symbol, the
// batch bound, element counts of typed contents, byte sizes of raw contents, BYTES framing,
// requested output names and the `timeout` / `priority` parameters.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "grpc_service.pb.h"
#include "server/model_config.h"
#include "vm/executable.h"
#include "vm/runtime/tensor.h"

namespace nimble::server {

struct DecodedRequest {
  std::vector<vm::Tensor> inputs;  // in the executable's input order
  std::vector<int> outputs;        // indices into the executable's outputs, to return
  uint64_t timeout_us = 0;         // 0 = none
  uint32_t priority = 0;           // 0 = default
  uint64_t batch_size = 1;         // dim 0 of the first input when the model batches
};

// kInvalidArgument with a message naming the input and what is wrong.
absl::StatusOr<DecodedRequest> DecodeRequest(const inference::ModelInferRequest& request,
                                             const vm::Executable& executable,
                                             const ModelConfigFile& config);

// Fills outputs (name, datatype, shape) and raw_output_contents for `wanted` of `outputs`.
absl::Status EncodeResponse(const vm::Executable& executable,
                            const std::vector<vm::Tensor>& outputs, const std::vector<int>& wanted,
                            inference::ModelInferResponse* response);

}  // namespace nimble::server
