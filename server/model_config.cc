#include "server/model_config.h"

#include <algorithm>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "compiler/transforms/lower_precision.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/util/json_util.h"
#include "server/kserve_types.h"

namespace nimble::server {
namespace {

using config::TensorConfig;

absl::Status Bad(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: ", what));
}

absl::Status CheckDims(absl::string_view where,
                       const google::protobuf::RepeatedField<int64_t>& dims) {
  for (int64_t d : dims) {
    if (d < -1) return Bad(absl::StrCat(where, ".dims: ", d, " is neither -1 (dynamic) nor >= 0"));
  }
  return absl::OkStatus();
}

absl::Status CheckAxes(absl::string_view where, absl::string_view key,
                       const google::protobuf::RepeatedField<int64_t>& axes, int rank) {
  std::set<int64_t> seen;
  for (int64_t axis : axes) {
    if (axis < 0 || (rank >= 0 && axis >= rank)) {
      return Bad(absl::StrCat(where, ".", key, ": axis ", axis, " is out of range",
                              rank >= 0 ? absl::StrCat(" for rank ", rank) : ""));
    }
    if (!seen.insert(axis).second)
      return Bad(absl::StrCat(where, ".", key, ": axis ", axis, " twice"));
  }
  return absl::OkStatus();
}

absl::Status CheckTensors(absl::string_view key,
                          const google::protobuf::RepeatedPtrField<TensorConfig>& tensors) {
  std::set<std::string> names;
  for (int i = 0; i < tensors.size(); ++i) {
    const TensorConfig& t = tensors[i];
    const std::string where = absl::StrCat(key, "[", i, "]");
    if (t.name().empty()) return Bad(absl::StrCat(where, ".name is missing"));
    if (!names.insert(t.name()).second) {
      return Bad(absl::StrCat(key, ": '", t.name(), "' is listed twice"));
    }
    if (!t.datatype().empty()) {
      auto dtype = DTypeFromKServe(t.datatype());
      if (!dtype.ok()) return Bad(absl::StrCat(where, ".datatype: ", dtype.status().message()));
    }
    NIMBLE_RETURN_IF_ERROR(CheckDims(where, t.dims()));
    const int rank = t.dims().empty() ? -1 : t.dims_size();
    NIMBLE_RETURN_IF_ERROR(CheckAxes(where, "paddable_axes", t.paddable_axes(), rank));
    NIMBLE_RETURN_IF_ERROR(CheckAxes(where, "slice_axes", t.slice_axes(), rank));
    if (key == "outputs" && (!t.paddable_axes().empty() || t.pad_value() != 0)) {
      return Bad(absl::StrCat(where, ": paddable_axes and pad_value are for inputs"));
    }
    if (key == "inputs" && !t.slice_axes().empty()) {
      return Bad(absl::StrCat(where, ": slice_axes are for outputs"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckConfig(const ModelConfigFile& c) {
  NIMBLE_RETURN_IF_ERROR(CheckTensors("inputs", c.inputs()));
  NIMBLE_RETURN_IF_ERROR(CheckTensors("outputs", c.outputs()));
  for (const auto& [symbol, b] : c.buckets()) {
    const std::string where = absl::StrCat("buckets.", symbol);
    if (b.bounds().empty() == (b.max() == 0)) {
      return Bad(absl::StrCat(where, ": give either bounds or max"));
    }
    if (b.max() < 0) return Bad(absl::StrCat(where, ".max must be positive"));
    int64_t previous = 0;
    for (int64_t bound : b.bounds()) {
      if (bound <= previous) {
        return Bad(absl::StrCat(where, ".bounds must be positive and increasing, got ",
                                absl::StrJoin(b.bounds(), ", ")));
      }
      previous = bound;
    }
  }
  if (c.max_batch_size() < 0) return Bad("max_batch_size must be >= 0");
  if (c.priority_levels() == 0 && c.default_priority() != 0) {
    return Bad("default_priority needs priority_levels");
  }
  if (c.default_priority() > c.priority_levels()) {
    return Bad(absl::StrCat("default_priority ", c.default_priority(), " is above priority_levels ",
                            c.priority_levels()));
  }
  const auto& groups = c.instance_groups();
  if (groups.cpu().count() < 0 || groups.cpu().threads() < 0) {
    return Bad("instance_groups.cpu: count and threads must be >= 0");
  }
  if (groups.gpu().count() < 0 || groups.gpu().streams() < 0) {
    return Bad("instance_groups.gpu: count and streams must be >= 0");
  }
  if (!groups.gpu().precision().empty()) {
    if (absl::Status p = compiler::ParsePrecision(groups.gpu().precision()).status(); !p.ok()) {
      return Bad(absl::StrCat("instance_groups.gpu.precision: ", p.message()));
    }
  }
  {
    std::set<int> seen;
    for (int d : groups.gpu().devices()) {
      if (d < 0) return Bad(absl::StrCat("instance_groups.gpu.devices: ", d, " is negative"));
      if (!seen.insert(d).second) {
        return Bad(absl::StrCat("instance_groups.gpu.devices: ", d, " is listed twice"));
      }
    }
  }
  for (int i = 0; i < c.warmup_size(); ++i) {
    for (const auto& [name, shape] : c.warmup(i).inputs()) {
      for (int64_t d : shape.dims()) {
        if (d < 0) {
          return Bad(absl::StrCat("warmup[", i, "].inputs.", name, ": dims must be >= 0"));
        }
      }
    }
  }
  return absl::OkStatus();
}

// The declared config entry for `name`, or null.
const TensorConfig* FindTensor(const google::protobuf::RepeatedPtrField<TensorConfig>& tensors,
                               const std::string& name) {
  for (const TensorConfig& t : tensors) {
    if (t.name() == name) return &t;
  }
  return nullptr;
}

absl::Status ResolveTensors(absl::string_view key, const std::vector<vm::TensorSignature>& sigs,
                            google::protobuf::RepeatedPtrField<TensorConfig>& declared) {
  for (const TensorConfig& t : declared) {
    const bool known = std::any_of(
        sigs.begin(), sigs.end(), [&](const vm::TensorSignature& s) { return s.name == t.name(); });
    if (!known) {
      std::vector<std::string> names;
      for (const auto& s : sigs) names.push_back(s.name);
      return Bad(absl::StrCat(key, ": the model has no ", key == "inputs" ? "input" : "output",
                              " '", t.name(), "' (it has: ", absl::StrJoin(names, ", "), ")"));
    }
  }
  google::protobuf::RepeatedPtrField<TensorConfig> resolved;
  for (const vm::TensorSignature& sig : sigs) {
    TensorConfig t;
    if (const TensorConfig* d = FindTensor(declared, sig.name)) t = *d;
    t.set_name(sig.name);
    const std::string where = absl::StrCat(key, " '", sig.name, "'");
    if (sig.kind != vm::ValueKind::kTensor) {
      return absl::UnimplementedError(absl::StrCat(where, " is an ONNX ",
                                                   vm::ValueKindName(sig.kind),
                                                   "; the KServe protocol carries tensors only"));
    }
    const std::string model_type = KServeDatatype(sig.dtype);
    if (!t.datatype().empty() && t.datatype() != model_type) {
      return Bad(
          absl::StrCat(where, ": datatype ", t.datatype(), ", but the model's is ", model_type));
    }
    t.set_datatype(model_type);
    if (t.dims().empty()) {
      t.mutable_dims()->Assign(sig.dims.begin(), sig.dims.end());
    } else {
      if (t.dims_size() != static_cast<int>(sig.dims.size())) {
        return Bad(absl::StrCat(where, ": rank ", t.dims_size(), ", but the model's is ",
                                sig.dims.size()));
      }
      for (int i = 0; i < t.dims_size(); ++i) {
        if (sig.dims[i] >= 0 && t.dims(i) != sig.dims[i]) {
          return Bad(absl::StrCat(where, ": dim ", i, " is ", t.dims(i), ", but the model's is ",
                                  sig.dims[i]));
        }
      }
    }
    const int rank = t.dims_size();
    NIMBLE_RETURN_IF_ERROR(CheckAxes(where, "paddable_axes", t.paddable_axes(), rank));
    NIMBLE_RETURN_IF_ERROR(CheckAxes(where, "slice_axes", t.slice_axes(), rank));
    *resolved.Add() = std::move(t);
  }
  declared = std::move(resolved);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfigFile> ParseModelConfig(absl::string_view json) {
  ModelConfigFile config;
  if (!json.empty()) {
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = false;
    auto status = google::protobuf::util::JsonStringToMessage(
        google::protobuf::StringPiece(json.data(), json.size()), &config, options);
    if (!status.ok()) {
      return Bad(absl::StrCat("not a valid Nimble model config: ",
                              std::string(status.message().data(), status.message().size())));
    }
  }
  NIMBLE_RETURN_IF_ERROR(CheckConfig(config));
  return config;
}

std::map<std::string, std::vector<int64_t>> CompileBuckets(const ModelConfigFile& config) {
  std::map<std::string, std::vector<int64_t>> buckets;
  for (const auto& [symbol, b] : config.buckets()) {
    std::vector<int64_t>& sizes = buckets[symbol];
    if (!b.bounds().empty()) {
      sizes.assign(b.bounds().begin(), b.bounds().end());
      continue;
    }
    for (int64_t size = 1; size < b.max(); size *= 2) sizes.push_back(size);
    sizes.push_back(b.max());
  }
  return buckets;
}

std::string CanonicalConfigBytes(const ModelConfigFile& config) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    config.SerializeToCodedStream(&coded);
  }
  return bytes;
}

absl::Status ResolveAgainstModel(const vm::Executable& executable, ModelConfigFile& config) {
  NIMBLE_RETURN_IF_ERROR(ResolveTensors("inputs", executable.inputs, *config.mutable_inputs()));
  NIMBLE_RETURN_IF_ERROR(ResolveTensors("outputs", executable.outputs, *config.mutable_outputs()));
  std::set<std::string> symbols;
  for (const vm::TensorSignature& sig : executable.inputs) {
    for (const std::string& name : sig.dim_names) {
      if (!name.empty()) symbols.insert(name);
    }
  }
  for (const auto& [symbol, unused] : config.buckets()) {
    if (!symbols.contains(symbol)) {
      return Bad(absl::StrCat("buckets: the model's inputs have no dynamic dim '", symbol,
                              "' (they have: ", absl::StrJoin(symbols, ", "), ")"));
    }
  }
  for (int i = 0; i < config.warmup_size(); ++i) {
    for (const auto& [name, shape] : config.warmup(i).inputs()) {
      const TensorConfig* t = FindTensor(config.inputs(), name);
      if (t == nullptr)
        return Bad(absl::StrCat("warmup[", i, "]: the model has no input '", name, "'"));
      if (shape.dims_size() != t->dims_size()) {
        return Bad(absl::StrCat("warmup[", i, "].inputs.", name, ": rank ", shape.dims_size(),
                                ", but the input's is ", t->dims_size()));
      }
    }
  }
  return absl::OkStatus();
}

int CpuInstanceCount(const ModelConfigFile& config) {
  return std::max(1, config.instance_groups().cpu().count());
}

bool HasGpuGroup(const ModelConfigFile& config) { return config.instance_groups().has_gpu(); }

int CpuThreadsPerInstance(const ModelConfigFile& config) {
  if (config.instance_groups().cpu().threads() > 0) return config.instance_groups().cpu().threads();
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  return std::max(1, cores / CpuInstanceCount(config));
}

std::string ConfigToJson(const ModelConfigFile& config) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(config, &json, options);
  return json;
}

inference::ModelConfig ToTritonConfig(const std::string& name, const ModelConfigFile& config) {
  inference::ModelConfig out;
  out.set_name(name);
  out.set_platform("nimble_onnx");
  out.set_backend("nimble");
  out.set_max_batch_size(config.max_batch_size());
  const int skip = config.max_batch_size() > 0 ? 1 : 0;
  for (const TensorConfig& t : config.inputs()) {
    inference::ModelInput* in = out.add_input();
    in->set_name(t.name());
    auto dtype = DTypeFromKServe(t.datatype());
    in->set_data_type(dtype.ok() ? TritonDataType(*dtype) : inference::TYPE_INVALID);
    for (int i = skip; i < t.dims_size(); ++i) in->add_dims(t.dims(i));
  }
  for (const TensorConfig& t : config.outputs()) {
    inference::ModelOutput* o = out.add_output();
    o->set_name(t.name());
    auto dtype = DTypeFromKServe(t.datatype());
    o->set_data_type(dtype.ok() ? TritonDataType(*dtype) : inference::TYPE_INVALID);
    for (int i = skip; i < t.dims_size(); ++i) o->add_dims(t.dims(i));
  }
  inference::ModelDynamicBatching* batching = out.mutable_dynamic_batching();
  batching->set_max_queue_delay_microseconds(config.max_queue_delay_us());
  batching->set_priority_levels(config.priority_levels());
  batching->set_default_priority_level(config.default_priority());
  batching->mutable_default_queue_policy()->set_default_timeout_microseconds(
      config.default_timeout_us());
  batching->mutable_default_queue_policy()->set_allow_timeout_override(true);
  batching->mutable_default_queue_policy()->set_max_queue_size(config.max_queue_size());
  inference::ModelInstanceGroup* group = out.add_instance_group();
  group->set_name(absl::StrCat(name, "_cpu"));
  group->set_kind(inference::ModelInstanceGroup::KIND_CPU);
  group->set_count(CpuInstanceCount(config));
  for (int i = 0; i < config.warmup_size(); ++i) {
    inference::ModelWarmup* w = out.add_model_warmup();
    w->set_name(absl::StrCat("warmup_", i));
    w->set_batch_size(1);
    for (const auto& [input, shape] : config.warmup(i).inputs()) {
      inference::ModelWarmup::Input& in = (*w->mutable_inputs())[input];
      in.set_zero_data(true);
      in.mutable_dims()->Assign(shape.dims().begin(), shape.dims().end());
      const TensorConfig* t = FindTensor(config.inputs(), input);
      if (t != nullptr) {
        auto dtype = DTypeFromKServe(t->datatype());
        if (dtype.ok()) in.set_data_type(TritonDataType(*dtype));
      }
    }
  }
  (*out.mutable_parameters())["nimble_config"].set_string_value(ConfigToJson(config));
  return out;
}

}  // namespace nimble::server
