// A model's config.json: parsing (strict: unknown keys, wrong types and bad values are errors),
// defaults, the check against the compiled model's signature, and the views other parts need
// (compile buckets, the canonical bytes for the executable-cache key, Triton's ModelConfig).
//
// Schema: proto/nimble_config.proto; documented in the README ("Model configuration").
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model_config.pb.h"
#include "nimble_config.pb.h"
#include "vm/executable.h"

namespace nimble::server {

using ModelConfigFile = ::nimble::config::ModelConfigFile;

// Parses and checks a config.json. An empty string (no file) is the all-defaults config.
// Errors are kInvalidArgument and say which key is wrong.
absl::StatusOr<ModelConfigFile> ParseModelConfig(absl::string_view json);

// The compile buckets: per symbol the explicit bounds, or powers of two up to `max`.
std::map<std::string, std::vector<int64_t>> CompileBuckets(const ModelConfigFile& config);

// Deterministic bytes of the config (part of the executable-cache key): equal configs give
// equal bytes whatever the key order or spelling of the JSON file was.
std::string CanonicalConfigBytes(const ModelConfigFile& config);

// Checks the config against the compiled model and fills what it leaves out: every input and
// output in the model's order with its datatype and dims. Names the config uses that the model
// lacks, other datatypes, other ranks or static dims, bucket symbols the model does not have,
// and axes out of range are kInvalidArgument.
absl::Status ResolveAgainstModel(const vm::Executable& executable, ModelConfigFile& config);

// The config as Triton's ModelConfig (what the ModelConfig RPC answers). Dims exclude the batch
// dim when max_batch_size > 0, as in Triton. The full Nimble config is in
// parameters["nimble_config"] as JSON.
inference::ModelConfig ToTritonConfig(const std::string& name, const ModelConfigFile& config);

// The config as JSON with snake_case keys.
std::string ConfigToJson(const ModelConfigFile& config);

// CPU instances and threads per instance after defaults (count >= 1, threads >= 1).
int CpuInstanceCount(const ModelConfigFile& config);
// Whether config.json declares instance_groups.gpu (then the model runs on GPU instances: `count`
// per device, default 1, times `streams` — each stream one concurrent call — on `devices`,
// default every visible GPU; CPU instances only when instance_groups.cpu.count is set too).
bool HasGpuGroup(const ModelConfigFile& config);
int CpuThreadsPerInstance(const ModelConfigFile& config);

}  // namespace nimble::server
