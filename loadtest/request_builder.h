// Turns a model's KServe metadata into ModelInferRequests: the shape of every input for a drawn
// sequence length, with random contents in valid ranges or contents from a shapes file.
//
// Random contents are generated once per input at the largest shape the run can ask for; each
// request copies the prefix it needs into raw_input_contents, so a request costs a memcpy, not
// a random draw per element.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpc_service.pb.h"
#include "loadtest/distributions.h"

namespace nimble::load {

struct InputSpec {
  std::string name;
  std::string datatype;       // KServe name
  std::vector<int64_t> dims;  // full shape, -1 dynamic
};

struct ModelSpec {
  std::string name;
  std::string version;
  std::vector<InputSpec> inputs;
  int64_t max_batch_size = 0;  // from ModelConfig; 0 when unknown
};

// Inputs from ModelMetadata; max_batch_size from ModelConfig when `config` is given.
absl::StatusOr<ModelSpec> ModelSpecFromProtos(const inference::ModelMetadataResponse& metadata,
                                              const inference::ModelConfigResponse* config);

// Bytes per element of a KServe datatype in raw_input_contents (BYTES: ours, 4-byte length + 1
// byte). 0 for an unknown datatype.
int64_t ElementBytes(absl::string_view datatype);

struct BuilderOptions {
  std::optional<int64_t> batch;  // dim 0 is a batch dim of this size
  std::optional<int> seq_axis;   // only this axis takes the sequence length
  int64_t max_seq_len = 1;       // largest length the distribution draws
  int64_t int_max = 100;
  std::map<std::string, int64_t> int_max_per_input;
  uint64_t seed = 1;
  std::string shapes_json;  // contents of --shapes-file, "" for none
};

// Immutable after Create(); Build() is const and thread-safe.
class RequestBuilder {
 public:
  static absl::StatusOr<RequestBuilder> Create(const ModelSpec& model,
                                               const BuilderOptions& options);

  // One request at `seq_len`; `index` picks the shapes-file entry (index mod entries).
  void Build(int64_t seq_len, uint64_t index, inference::ModelInferRequest* request) const;

  // The shape input `i` gets at `seq_len` without a shapes-file entry.
  std::vector<int64_t> Shape(size_t input, int64_t seq_len) const;

  int64_t batch() const { return batch_; }
  // "INT64[1,seq]" per input, for the report.
  std::vector<std::pair<std::string, std::string>> Describe() const;

 private:
  enum class Dim : int64_t { kBatch = -2, kSeq = -3, kOne = -4 };  // else the fixed size
  struct Input {
    InputSpec spec;
    std::vector<int64_t> dims;  // fixed size, or a Dim marker
    int64_t element_bytes = 0;
    std::string random;  // random contents at the largest shape
  };
  struct Override {
    std::vector<int64_t> shape;
    std::string raw;  // empty: take the random prefix
  };

  std::string model_name_;
  std::string model_version_;
  int64_t batch_ = 1;
  std::vector<Input> inputs_;
  // Shapes-file entries: one map from input index to its override per entry.
  std::vector<std::vector<std::optional<Override>>> entries_;
};

}  // namespace nimble::load
