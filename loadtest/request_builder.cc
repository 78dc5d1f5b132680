#include "loadtest/request_builder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace nimble::load {
namespace {

constexpr int64_t kMaxInputBytes = int64_t{1} << 30;

uint16_t FloatToHalf(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint16_t sign = (bits >> 16) & 0x8000;
  const int exponent = static_cast<int>((bits >> 23) & 0xff) - 127 + 15;
  if (exponent <= 0) return sign;  // flushed to zero
  if (exponent >= 31) return sign | 0x7c00;
  return sign | static_cast<uint16_t>(exponent << 10) | ((bits >> 13) & 0x3ff);
}

template <typename T>
void Append(std::string* out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out->append(bytes, sizeof(T));
}

// Appends `value` as one element of `datatype`. BYTES takes `text`.
void AppendElement(absl::string_view datatype, double value, absl::string_view text,
                   std::string* out) {
  if (datatype == "FP32") return Append(out, static_cast<float>(value));
  if (datatype == "FP64") return Append(out, value);
  if (datatype == "FP16") return Append(out, FloatToHalf(static_cast<float>(value)));
  if (datatype == "BF16") {
    const float f = static_cast<float>(value);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    return Append(out, static_cast<uint16_t>(bits >> 16));
  }
  if (datatype == "BOOL") return Append(out, static_cast<uint8_t>(value != 0));
  if (datatype == "INT8") return Append(out, static_cast<int8_t>(value));
  if (datatype == "INT16") return Append(out, static_cast<int16_t>(value));
  if (datatype == "INT32") return Append(out, static_cast<int32_t>(value));
  if (datatype == "INT64") return Append(out, static_cast<int64_t>(value));
  if (datatype == "UINT8") return Append(out, static_cast<uint8_t>(value));
  if (datatype == "UINT16") return Append(out, static_cast<uint16_t>(value));
  if (datatype == "UINT32") return Append(out, static_cast<uint32_t>(value));
  if (datatype == "UINT64") return Append(out, static_cast<uint64_t>(value));
  if (datatype == "BYTES") {
    Append(out, static_cast<uint32_t>(text.size()));
    out->append(text.data(), text.size());
  }
}

bool IsInteger(absl::string_view datatype) {
  return datatype.find("INT") != absl::string_view::npos;
}

// The largest value + 1 an integer type holds, capped at 2^53 (exact in a double).
double IntegerLimit(absl::string_view datatype) {
  if (datatype == "INT8") return 128;
  if (datatype == "UINT8") return 256;
  if (datatype == "INT16") return 32768;
  if (datatype == "UINT16") return 65536;
  if (datatype == "INT32") return 2147483648.0;
  if (datatype == "UINT32") return 4294967296.0;
  return 9007199254740992.0;
}

std::string RandomContents(absl::string_view datatype, int64_t elements, int64_t int_max,
                           Rng& rng) {
  std::string out;
  out.reserve(elements * ElementBytes(datatype));
  const double limit = std::min<double>(static_cast<double>(int_max), IntegerLimit(datatype));
  std::uniform_real_distribution<double> unit(0, 1);
  std::uniform_int_distribution<int64_t> ints(0, static_cast<int64_t>(limit) - 1);
  for (int64_t i = 0; i < elements; ++i) {
    if (datatype == "BYTES") {
      const char c = static_cast<char>('0' + rng() % 10);
      AppendElement(datatype, 0, absl::string_view(&c, 1), &out);
    } else if (datatype == "BOOL") {
      AppendElement(datatype, static_cast<double>(rng() & 1), "", &out);
    } else if (IsInteger(datatype)) {
      AppendElement(datatype, static_cast<double>(ints(rng)), "", &out);
    } else {
      AppendElement(datatype, unit(rng), "", &out);
    }
  }
  return out;
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

// Flattens nested JSON lists of numbers/bools/strings into `datatype` elements.
absl::Status AppendJsonContents(const google::protobuf::Value& value, absl::string_view datatype,
                                std::string* out, int64_t* count) {
  switch (value.kind_case()) {
    case google::protobuf::Value::kListValue:
      for (const auto& v : value.list_value().values()) {
        NIMBLE_RETURN_IF_ERROR(AppendJsonContents(v, datatype, out, count));
      }
      return absl::OkStatus();
    case google::protobuf::Value::kNumberValue:
      if (datatype == "BYTES") break;
      AppendElement(datatype, value.number_value(), "", out);
      ++*count;
      return absl::OkStatus();
    case google::protobuf::Value::kBoolValue:
      if (datatype == "BYTES") break;
      AppendElement(datatype, value.bool_value() ? 1 : 0, "", out);
      ++*count;
      return absl::OkStatus();
    case google::protobuf::Value::kStringValue:
      if (datatype != "BYTES") break;
      AppendElement(datatype, 0, value.string_value(), out);
      ++*count;
      return absl::OkStatus();
    default:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("a content element does not fit datatype ", datatype));
}

int64_t Elements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace

int64_t ElementBytes(absl::string_view datatype) {
  if (datatype == "BOOL" || datatype == "INT8" || datatype == "UINT8") return 1;
  if (datatype == "INT16" || datatype == "UINT16" || datatype == "FP16" || datatype == "BF16") {
    return 2;
  }
  if (datatype == "INT32" || datatype == "UINT32" || datatype == "FP32") return 4;
  if (datatype == "INT64" || datatype == "UINT64" || datatype == "FP64") return 8;
  if (datatype == "BYTES") return 5;
  return 0;
}

absl::StatusOr<ModelSpec> ModelSpecFromProtos(const inference::ModelMetadataResponse& metadata,
                                              const inference::ModelConfigResponse* config) {
  ModelSpec spec;
  spec.name = metadata.name();
  if (metadata.inputs_size() == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("model '", metadata.name(), "' has no inputs in its metadata"));
  }
  for (const auto& in : metadata.inputs()) {
    InputSpec s{in.name(), in.datatype(), {in.shape().begin(), in.shape().end()}};
    for (int64_t d : s.dims) {
      if (d < -1) {
        return absl::InvalidArgumentError(
            absl::StrCat("input '", in.name(), "' has dim ", d, " in its metadata"));
      }
    }
    spec.inputs.push_back(std::move(s));
  }
  if (config != nullptr) spec.max_batch_size = config->config().max_batch_size();
  return spec;
}

absl::StatusOr<RequestBuilder> RequestBuilder::Create(const ModelSpec& model,
                                                      const BuilderOptions& options) {
  RequestBuilder b;
  b.model_name_ = model.name;
  b.model_version_ = model.version;
  const bool batched = options.batch.has_value() || model.max_batch_size > 0;
  b.batch_ = options.batch.value_or(1);
  bool seq_axis_found = false;
  Rng rng(options.seed);
  for (const InputSpec& spec : model.inputs) {
    Input in;
    in.spec = spec;
    in.element_bytes = ElementBytes(spec.datatype);
    if (in.element_bytes == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", spec.name, "': unsupported datatype '", spec.datatype, "'"));
    }
    for (size_t i = 0; i < spec.dims.size(); ++i) {
      const int64_t d = spec.dims[i];
      if (batched && i == 0) {
        if (d >= 0 && d != b.batch_) {
          return absl::InvalidArgumentError(absl::StrCat("input '", spec.name, "': dim 0 is ", d,
                                                         ", not the batch size ", b.batch_));
        }
        in.dims.push_back(static_cast<int64_t>(Dim::kBatch));
      } else if (d >= 0) {
        in.dims.push_back(d);
      } else if (!options.seq_axis.has_value() || *options.seq_axis == static_cast<int>(i)) {
        seq_axis_found = true;
        in.dims.push_back(static_cast<int64_t>(Dim::kSeq));
      } else {
        in.dims.push_back(static_cast<int64_t>(Dim::kOne));
      }
    }
    b.inputs_.push_back(std::move(in));
  }
  if (options.seq_axis.has_value() && !seq_axis_found) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--seq-axis ", *options.seq_axis, " is not a dynamic non-batch axis of any input"));
  }

  // Shapes file: {"data": [{"INPUT": {"shape": [...], "content": [...]}, ...}, ...]}.
  std::vector<int64_t> largest(b.inputs_.size(), 0);
  if (!options.shapes_json.empty()) {
    google::protobuf::Struct root;
    const auto parsed = google::protobuf::util::JsonStringToMessage(options.shapes_json, &root);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("shapes file is not valid JSON: ", std::string(parsed.message())));
    }
    auto data = root.fields().find("data");
    if (data == root.fields().end() || !data->second.has_list_value() ||
        data->second.list_value().values_size() == 0) {
      return absl::InvalidArgumentError("shapes file: needs a non-empty \"data\" list");
    }
    for (const auto& entry : data->second.list_value().values()) {
      const int e = static_cast<int>(b.entries_.size());
      if (!entry.has_struct_value()) {
        return absl::InvalidArgumentError(
            absl::StrCat("shapes file: data[", e, "] is not an object"));
      }
      std::vector<std::optional<Override>> overrides(b.inputs_.size());
      for (const auto& [name, value] : entry.struct_value().fields()) {
        auto it = std::find_if(b.inputs_.begin(), b.inputs_.end(),
                               [&](const Input& in) { return in.spec.name == name; });
        if (it == b.inputs_.end()) {
          return absl::InvalidArgumentError(
              absl::StrCat("shapes file: data[", e, "] names '", name, "', not a model input"));
        }
        const size_t index = it - b.inputs_.begin();
        const std::string where = absl::StrCat("shapes file: data[", e, "].", name);
        Override o;
        const auto& fields = value.struct_value().fields();
        if (auto shape = fields.find("shape"); shape != fields.end()) {
          for (const auto& d : shape->second.list_value().values()) {
            if (!d.has_number_value() || d.number_value() < 0 ||
                d.number_value() != std::floor(d.number_value())) {
              return absl::InvalidArgumentError(where + ".shape: dims must be integers >= 0");
            }
            o.shape.push_back(static_cast<int64_t>(d.number_value()));
          }
        } else {
          for (int64_t d : it->spec.dims) {
            if (d < 0) {
              return absl::InvalidArgumentError(where + ": needs \"shape\" (dynamic dims)");
            }
          }
          o.shape = it->spec.dims;
        }
        if (o.shape.size() != it->spec.dims.size()) {
          return absl::InvalidArgumentError(absl::StrCat(where, ".shape has rank ", o.shape.size(),
                                                         ", the model's input ",
                                                         it->spec.dims.size()));
        }
        if (auto content = fields.find("content"); content != fields.end()) {
          int64_t count = 0;
          NIMBLE_RETURN_IF_ERROR(
              Annotate(AppendJsonContents(content->second, it->spec.datatype, &o.raw, &count),
                       where + ".content"));
          if (count != Elements(o.shape)) {
            return absl::InvalidArgumentError(absl::StrCat(where, ".content has ", count,
                                                           " elements, shape ", ShapeText(o.shape),
                                                           " needs ", Elements(o.shape)));
          }
        } else {
          largest[index] = std::max(largest[index], Elements(o.shape));
        }
        overrides[index] = std::move(o);
      }
      b.entries_.push_back(std::move(overrides));
    }
  }

  for (size_t i = 0; i < b.inputs_.size(); ++i) {
    Input& in = b.inputs_[i];
    const int64_t elements = std::max(Elements(b.Shape(i, options.max_seq_len)), largest[i]);
    if (elements * in.element_bytes > kMaxInputBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", in.spec.name, "' would need ", elements * in.element_bytes,
                       " bytes at the longest sequence (", options.max_seq_len, ")"));
    }
    auto limit = options.int_max_per_input.find(in.spec.name);
    in.random = RandomContents(
        in.spec.datatype, elements,
        limit != options.int_max_per_input.end() ? limit->second : options.int_max, rng);
  }
  for (const auto& [name, limit] : options.int_max_per_input) {
    if (std::none_of(b.inputs_.begin(), b.inputs_.end(),
                     [&](const Input& in) { return in.spec.name == name; })) {
      return absl::InvalidArgumentError(
          absl::StrCat("--int-max ", name, "=", limit, ": the model has no input '", name, "'"));
    }
  }
  return b;
}

std::vector<int64_t> RequestBuilder::Shape(size_t input, int64_t seq_len) const {
  std::vector<int64_t> shape;
  for (int64_t d : inputs_[input].dims) {
    switch (static_cast<Dim>(d)) {
      case Dim::kBatch:
        shape.push_back(batch_);
        break;
      case Dim::kSeq:
        shape.push_back(seq_len);
        break;
      case Dim::kOne:
        shape.push_back(1);
        break;
      default:
        shape.push_back(d);
    }
  }
  return shape;
}

void RequestBuilder::Build(int64_t seq_len, uint64_t index,
                           inference::ModelInferRequest* request) const {
  request->set_model_name(model_name_);
  request->set_model_version(model_version_);
  const std::vector<std::optional<Override>>* entry =
      entries_.empty() ? nullptr : &entries_[index % entries_.size()];
  for (size_t i = 0; i < inputs_.size(); ++i) {
    const Input& in = inputs_[i];
    const Override* o = entry != nullptr && (*entry)[i].has_value() ? &*(*entry)[i] : nullptr;
    const std::vector<int64_t> shape = o != nullptr ? o->shape : Shape(i, seq_len);
    auto* tensor = request->add_inputs();
    tensor->set_name(in.spec.name);
    tensor->set_datatype(in.spec.datatype);
    tensor->mutable_shape()->Assign(shape.begin(), shape.end());
    if (o != nullptr && !o->raw.empty()) {
      request->add_raw_input_contents(o->raw);
    } else {
      request->add_raw_input_contents(in.random.data(), Elements(shape) * in.element_bytes);
    }
  }
}

std::vector<std::pair<std::string, std::string>> RequestBuilder::Describe() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const Input& in : inputs_) {
    std::vector<std::string> dims;
    for (int64_t d : in.dims) {
      switch (static_cast<Dim>(d)) {
        case Dim::kBatch:
          dims.push_back(absl::StrCat("batch=", batch_));
          break;
        case Dim::kSeq:
          dims.push_back("seq");
          break;
        case Dim::kOne:
          dims.push_back("1");
          break;
        default:
          dims.push_back(absl::StrCat(d));
      }
    }
    out.emplace_back(in.spec.name,
                     absl::StrCat(in.spec.datatype, "[", absl::StrJoin(dims, ","), "]"));
  }
  return out;
}

}  // namespace nimble::load
