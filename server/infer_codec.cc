#include "server/infer_codec.h"

#include <cstring>
#include <limits>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "server/kserve_types.h"

namespace nimble::server {
namespace {

using inference::InferTensorContents;

absl::Status Bad(absl::string_view input, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("input '", input, "': ", what));
}

template <typename To, typename From>
absl::Status CopyTyped(absl::string_view input, const google::protobuf::RepeatedField<From>& from,
                       vm::Tensor& tensor) {
  To* out = tensor.data<To>();
  for (int i = 0; i < from.size(); ++i) {
    const From v = from[i];
    if constexpr (std::is_integral_v<To> && !std::is_same_v<To, bool> &&
                  !std::is_same_v<To, From>) {
      if (v < static_cast<From>(std::numeric_limits<To>::min()) ||
          v > static_cast<From>(std::numeric_limits<To>::max())) {
        return Bad(input, absl::StrCat("value ", v, " at element ", i, " is out of range of ",
                                       vm::DTypeName(tensor.dtype())));
      }
    }
    out[i] = static_cast<To>(v);
  }
  return absl::OkStatus();
}

// Number of typed elements present, for the element-count check.
int TypedCount(const InferTensorContents& c) {
  return c.bool_contents_size() + c.int_contents_size() + c.int64_contents_size() +
         c.uint_contents_size() + c.uint64_contents_size() + c.fp32_contents_size() +
         c.fp64_contents_size() + c.bytes_contents_size();
}

absl::Status FillTyped(absl::string_view name, const std::string& datatype,
                       const InferTensorContents& c, vm::Tensor& t) {
  const int64_t n = t.num_elements();
  const int given = TypedCount(c);
  auto need = [&](int size, absl::string_view field) -> absl::Status {
    if (size != given) {
      return Bad(name, absl::StrCat(datatype, " data goes in contents.", field));
    }
    if (size != n) {
      return Bad(name,
                 absl::StrCat("contents.", field, " has ", size, " elements, the shape needs ", n));
    }
    return absl::OkStatus();
  };
  switch (t.dtype()) {
    case vm::DType::kBool:
      NIMBLE_RETURN_IF_ERROR(need(c.bool_contents_size(), "bool_contents"));
      return CopyTyped<bool>(name, c.bool_contents(), t);
    case vm::DType::kI8:
      NIMBLE_RETURN_IF_ERROR(need(c.int_contents_size(), "int_contents"));
      return CopyTyped<int8_t>(name, c.int_contents(), t);
    case vm::DType::kI16:
      NIMBLE_RETURN_IF_ERROR(need(c.int_contents_size(), "int_contents"));
      return CopyTyped<int16_t>(name, c.int_contents(), t);
    case vm::DType::kI32:
      NIMBLE_RETURN_IF_ERROR(need(c.int_contents_size(), "int_contents"));
      return CopyTyped<int32_t>(name, c.int_contents(), t);
    case vm::DType::kI64:
      NIMBLE_RETURN_IF_ERROR(need(c.int64_contents_size(), "int64_contents"));
      return CopyTyped<int64_t>(name, c.int64_contents(), t);
    case vm::DType::kU8:
      NIMBLE_RETURN_IF_ERROR(need(c.uint_contents_size(), "uint_contents"));
      return CopyTyped<uint8_t>(name, c.uint_contents(), t);
    case vm::DType::kU16:
      NIMBLE_RETURN_IF_ERROR(need(c.uint_contents_size(), "uint_contents"));
      return CopyTyped<uint16_t>(name, c.uint_contents(), t);
    case vm::DType::kU32:
      NIMBLE_RETURN_IF_ERROR(need(c.uint_contents_size(), "uint_contents"));
      return CopyTyped<uint32_t>(name, c.uint_contents(), t);
    case vm::DType::kU64:
      NIMBLE_RETURN_IF_ERROR(need(c.uint64_contents_size(), "uint64_contents"));
      return CopyTyped<uint64_t>(name, c.uint64_contents(), t);
    case vm::DType::kF32:
      NIMBLE_RETURN_IF_ERROR(need(c.fp32_contents_size(), "fp32_contents"));
      return CopyTyped<float>(name, c.fp32_contents(), t);
    case vm::DType::kF64:
      NIMBLE_RETURN_IF_ERROR(need(c.fp64_contents_size(), "fp64_contents"));
      return CopyTyped<double>(name, c.fp64_contents(), t);
    case vm::DType::kString: {
      NIMBLE_RETURN_IF_ERROR(need(c.bytes_contents_size(), "bytes_contents"));
      std::string* out = t.data<std::string>();
      for (int i = 0; i < c.bytes_contents_size(); ++i) out[i] = c.bytes_contents(i);
      return absl::OkStatus();
    }
    default:
      return Bad(name, absl::StrCat(datatype,
                                    " has no typed contents field in KServe v2; send it in "
                                    "raw_input_contents"));
  }
}

absl::Status FillRaw(absl::string_view name, const std::string& raw, vm::Tensor& t) {
  const int64_t n = t.num_elements();
  if (t.dtype() == vm::DType::kString) {
    // Each element: a 4-byte little-endian length, then that many bytes.
    std::string* out = t.data<std::string>();
    size_t pos = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (raw.size() - pos < 4) {
        return Bad(name, absl::StrCat("raw BYTES data ends at element ", i, " of ", n));
      }
      uint32_t len = 0;
      std::memcpy(&len, raw.data() + pos, 4);
      pos += 4;
      if (raw.size() - pos < len) {
        return Bad(name, absl::StrCat("raw BYTES element ", i, " says ", len, " bytes but only ",
                                      raw.size() - pos, " remain"));
      }
      out[i].assign(raw.data() + pos, len);
      pos += len;
    }
    if (pos != raw.size()) {
      return Bad(name, absl::StrCat("raw BYTES data has ", raw.size() - pos, " bytes after its ", n,
                                    " elements"));
    }
    return absl::OkStatus();
  }
  if (raw.size() != t.nbytes()) {
    return Bad(name, absl::StrCat("raw_input_contents has ", raw.size(), " bytes, but ",
                                  KServeDatatype(t.dtype()), vm::ShapeToString(t.shape()),
                                  " needs ", t.nbytes()));
  }
  if (!raw.empty()) std::memcpy(t.raw_data(), raw.data(), raw.size());
  if (t.dtype() == vm::DType::kBool) {
    uint8_t* b = t.data<uint8_t>();
    for (int64_t i = 0; i < n; ++i) b[i] = b[i] != 0;
  }
  return absl::OkStatus();
}

absl::Status CheckDataSize(absl::string_view name, int64_t elements, vm::DType dtype,
                           const inference::ModelInferRequest::InferInputTensor& in,
                           const std::string* raw) {
  if (raw == nullptr) {
    if (TypedCount(in.contents()) != elements) {
      return Bad(name, absl::StrCat("contents hold ", TypedCount(in.contents()),
                                    " elements, the shape needs ", elements));
    }
    return absl::OkStatus();
  }
  if (dtype == vm::DType::kString) {
    // Every element has at least its 4-byte length.
    if (elements > static_cast<int64_t>(raw->size() / 4)) {
      return Bad(name, absl::StrCat("raw BYTES data of ", raw->size(), " bytes cannot hold ",
                                    elements, " elements"));
    }
    return absl::OkStatus();
  }
  const int64_t size = static_cast<int64_t>(vm::DTypeSize(dtype));
  if (elements > static_cast<int64_t>(raw->size()) / size ||
      elements * size != static_cast<int64_t>(raw->size())) {
    return Bad(name, absl::StrCat("raw_input_contents has ", raw->size(), " bytes, but ",
                                  KServeDatatype(dtype), vm::ShapeToString(in.shape()), " needs ",
                                  elements, " x ", size));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> UnsignedParameter(absl::string_view key,
                                           const inference::InferParameter& p) {
  switch (p.parameter_choice_case()) {
    case inference::InferParameter::kInt64Param:
      if (p.int64_param() < 0) break;
      return static_cast<uint64_t>(p.int64_param());
    case inference::InferParameter::kUint64Param:
      return p.uint64_param();
    default:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("parameter '", key, "' must be a non-negative integer"));
}

}  // namespace

absl::StatusOr<DecodedRequest> DecodeRequest(const inference::ModelInferRequest& request,
                                             const vm::Executable& exe,
                                             const ModelConfigFile& config) {
  DecodedRequest out;
  for (const auto& [key, value] : request.parameters()) {
    if (key == "timeout") {
      NIMBLE_ASSIGN_OR_RETURN(out.timeout_us, UnsignedParameter(key, value));
    } else if (key == "priority") {
      NIMBLE_ASSIGN_OR_RETURN(uint64_t priority, UnsignedParameter(key, value));
      if (priority > std::numeric_limits<uint32_t>::max()) {
        return absl::InvalidArgumentError("parameter 'priority' is out of range");
      }
      out.priority = static_cast<uint32_t>(priority);
    }
    // Other parameters (e.g. Triton clients' binary_data_output) do not change the answer.
  }

  const bool raw = request.raw_input_contents_size() > 0;
  if (raw && request.raw_input_contents_size() != request.inputs_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "raw_input_contents has ", request.raw_input_contents_size(), " entries for ",
        request.inputs_size(), " inputs (when raw contents are used, every input needs one)"));
  }
  std::map<std::string, int> given;  // name -> index in request.inputs
  for (int i = 0; i < request.inputs_size(); ++i) {
    const std::string& name = request.inputs(i).name();
    const bool known = std::any_of(exe.inputs.begin(), exe.inputs.end(),
                                   [&](const vm::TensorSignature& s) { return s.name == name; });
    if (!known) {
      std::vector<std::string> names;
      for (const auto& s : exe.inputs) names.push_back(s.name);
      return absl::InvalidArgumentError(absl::StrCat(
          "unexpected input '", name, "': the model's inputs are ", absl::StrJoin(names, ", ")));
    }
    if (!given.emplace(name, i).second) {
      return absl::InvalidArgumentError(absl::StrCat("input '", name, "' is given twice"));
    }
  }

  std::map<std::string, int64_t> symbols;  // symbol -> value seen first
  out.inputs.reserve(exe.inputs.size());
  for (size_t k = 0; k < exe.inputs.size(); ++k) {
    const vm::TensorSignature& sig = exe.inputs[k];
    auto it = given.find(sig.name);
    if (it == given.end()) {
      return absl::InvalidArgumentError(absl::StrCat("missing input '", sig.name, "'"));
    }
    const auto& in = request.inputs(it->second);
    const std::string expected = KServeDatatype(sig.dtype);
    if (in.datatype() != expected) {
      return Bad(sig.name, absl::StrCat("datatype ", in.datatype().empty() ? "\"\"" : in.datatype(),
                                        ", the model expects ", expected));
    }
    const auto& dims = k < static_cast<size_t>(config.inputs_size())
                           ? config.inputs(k).dims()
                           : google::protobuf::RepeatedField<int64_t>();
    if (in.shape_size() != static_cast<int>(sig.dims.size())) {
      return Bad(sig.name, absl::StrCat("rank ", in.shape_size(), " (shape ",
                                        vm::ShapeToString(in.shape()), "), the model expects rank ",
                                        sig.dims.size(), " ", vm::ShapeToString(sig.dims)));
    }
    for (int d = 0; d < in.shape_size(); ++d) {
      const int64_t value = in.shape(d);
      if (value < 0) return Bad(sig.name, absl::StrCat("dim ", d, " is negative (", value, ")"));
      const int64_t want = d < dims.size() ? dims[d] : sig.dims[d];
      if (want >= 0 && value != want) {
        return Bad(sig.name, absl::StrCat("dim ", d, " is ", value, ", the model expects ", want,
                                          " (shape ", vm::ShapeToString(sig.dims), ")"));
      }
      const std::string& symbol =
          d < static_cast<int>(sig.dim_names.size()) ? sig.dim_names[d] : "";
      if (want < 0 && !symbol.empty()) {
        auto [seen, inserted] = symbols.emplace(symbol, value);
        if (!inserted && seen->second != value) {
          return Bad(sig.name,
                     absl::StrCat("dim ", d, " ('", symbol, "') is ", value,
                                  ", but another input gave '", symbol, "' = ", seen->second));
        }
      }
    }
    if (config.max_batch_size() > 0 && in.shape_size() > 0 &&
        in.shape(0) > config.max_batch_size()) {
      return Bad(sig.name, absl::StrCat("batch ", in.shape(0), " is over max_batch_size ",
                                        config.max_batch_size()));
    }
    auto elements = vm::NumElements(in.shape());
    if (!elements.ok()) return Bad(sig.name, elements.status().message());
    // The data must be there before anything is allocated for it: a tiny request must not make
    // the server allocate what its shape claims.
    NIMBLE_RETURN_IF_ERROR(CheckDataSize(sig.name, *elements, sig.dtype, in,
                                         raw ? &request.raw_input_contents(it->second) : nullptr));
    auto tensor = vm::Tensor::Empty(sig.dtype, in.shape());
    if (!tensor.ok()) return Bad(sig.name, tensor.status().message());
    if (raw) {
      if (TypedCount(in.contents()) != 0) {
        return Bad(sig.name, "has both contents and raw_input_contents");
      }
      NIMBLE_RETURN_IF_ERROR(FillRaw(sig.name, request.raw_input_contents(it->second), *tensor));
    } else {
      NIMBLE_RETURN_IF_ERROR(FillTyped(sig.name, in.datatype(), in.contents(), *tensor));
    }
    if (k == 0 && config.max_batch_size() > 0 && tensor->rank() > 0) {
      out.batch_size = static_cast<uint64_t>(tensor->dim(0));
    }
    out.inputs.push_back(*std::move(tensor));
  }

  std::set<std::string> requested;
  for (const auto& o : request.outputs()) {
    int index = -1;
    for (size_t j = 0; j < exe.outputs.size(); ++j) {
      if (exe.outputs[j].name == o.name()) index = static_cast<int>(j);
    }
    if (index < 0) {
      std::vector<std::string> names;
      for (const auto& s : exe.outputs) names.push_back(s.name);
      return absl::InvalidArgumentError(absl::StrCat("unknown requested output '", o.name(),
                                                     "': the model's outputs are ",
                                                     absl::StrJoin(names, ", ")));
    }
    if (!requested.insert(o.name()).second) {
      return absl::InvalidArgumentError(absl::StrCat("output '", o.name(), "' is requested twice"));
    }
    out.outputs.push_back(index);
  }
  if (out.outputs.empty()) {
    for (size_t j = 0; j < exe.outputs.size(); ++j) out.outputs.push_back(static_cast<int>(j));
  }
  return out;
}

absl::Status EncodeResponse(const vm::Executable& exe, const std::vector<vm::Tensor>& outputs,
                            const std::vector<int>& wanted,
                            inference::ModelInferResponse* response) {
  if (outputs.size() != exe.outputs.size()) {
    return absl::InternalError(absl::StrCat("the model returned ", outputs.size(),
                                            " outputs, its signature has ", exe.outputs.size()));
  }
  for (int index : wanted) {
    const vm::Tensor& t = outputs[index];
    if (t.device() != vm::kCpu) {
      return absl::InternalError(
          absl::StrCat("output '", exe.outputs[index].name, "' is not in host memory"));
    }
    auto* o = response->add_outputs();
    o->set_name(exe.outputs[index].name);
    o->set_datatype(KServeDatatype(t.dtype()));
    for (int64_t d : t.shape()) o->add_shape(d);
    std::string* raw = response->add_raw_output_contents();
    if (t.dtype() == vm::DType::kString) {
      const std::string* s = t.data<std::string>();
      for (int64_t i = 0; i < t.num_elements(); ++i) {
        const uint32_t len = static_cast<uint32_t>(s[i].size());
        raw->append(reinterpret_cast<const char*>(&len), 4);
        raw->append(s[i]);
      }
      continue;
    }
    if (t.nbytes() > 0) raw->assign(static_cast<const char*>(t.raw_data()), t.nbytes());
  }
  return absl::OkStatus();
}

}  // namespace nimble::server
