#include "server/batcher.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "vm/kernels/cpu/fp16.h"

namespace nimble::server {
namespace {

absl::Status Bad(const std::string& message) { return absl::InvalidArgumentError(message); }

template <typename T>
absl::StatusOr<std::string> IntegerBytes(double value) {
  if (value != std::floor(value) || value < static_cast<double>(std::numeric_limits<T>::lowest()) ||
      value > static_cast<double>(std::numeric_limits<T>::max())) {
    return Bad(absl::StrCat("pad_value ", value, " does not fit the input's integer type"));
  }
  const T v = static_cast<T>(value);
  return std::string(reinterpret_cast<const char*>(&v), sizeof(T));
}

template <typename T>
std::string Bytes(T v) {
  return std::string(reinterpret_cast<const char*>(&v), sizeof(T));
}

// One element of `value` in `dtype`'s memory representation.
absl::StatusOr<std::string> PadBytes(vm::DType dtype, double value) {
  using vm::DType;
  switch (dtype) {
    case DType::kF32:
      return Bytes(static_cast<float>(value));
    case DType::kF64:
      return Bytes(value);
    case DType::kF16:
      return Bytes(vm::cpu::FloatToHalf(static_cast<float>(value)));
    case DType::kBF16:
      return Bytes(vm::cpu::FloatToBFloat16(static_cast<float>(value)));
    case DType::kI8:
      return IntegerBytes<int8_t>(value);
    case DType::kI16:
      return IntegerBytes<int16_t>(value);
    case DType::kI32:
      return IntegerBytes<int32_t>(value);
    case DType::kI64:
      return IntegerBytes<int64_t>(value);
    case DType::kU8:
      return IntegerBytes<uint8_t>(value);
    case DType::kU16:
      return IntegerBytes<uint16_t>(value);
    case DType::kU32:
      return IntegerBytes<uint32_t>(value);
    case DType::kU64:
      return IntegerBytes<uint64_t>(value);
    case DType::kBool:
      if (value != 0 && value != 1) return Bad("pad_value of a BOOL input must be 0 or 1");
      return Bytes(static_cast<uint8_t>(value));
    default:
      // Low-precision types keep one byte per element; 0 is zero in all of them.
      if (vm::IsLowPrecision(dtype) && value == 0) return std::string(1, '\0');
      return absl::UnimplementedError(
          absl::StrCat("padding ", vm::DTypeName(dtype), " inputs with ", value));
  }
}

int64_t NextPowerOfTwo(int64_t v) {
  int64_t p = 1;
  while (p < v && p < (int64_t{1} << 62)) p *= 2;
  return p;
}

// Copies the block `small` (contiguous, shape `small_shape`) into or out of `big` (contiguous,
// shape `big_shape`, every dim after the first >= small's) at batch offset `batch_offset`.
void CopyBlock(const vm::Shape& small_shape, const vm::Shape& big_shape, int64_t batch_offset,
               size_t element_size, char* small, char* big, bool into_big) {
  const int rank = static_cast<int>(small_shape.size());
  if (rank == 0) return;
  // Element strides of `big`.
  std::vector<int64_t> stride(rank, 1);
  for (int k = rank - 2; k >= 0; --k) stride[k] = stride[k + 1] * big_shape[k + 1];
  if (rank == 1) {
    char* at = big + batch_offset * element_size;
    const size_t bytes = small_shape[0] * element_size;
    if (bytes == 0) return;
    into_big ? std::memcpy(at, small, bytes) : std::memcpy(small, at, bytes);
    return;
  }
  const size_t row_bytes = small_shape[rank - 1] * element_size;
  int64_t rows = 1;
  for (int k = 0; k < rank - 1; ++k) rows *= small_shape[k];
  if (rows == 0 || row_bytes == 0) return;
  std::vector<int64_t> index(rank - 1, 0);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t offset = (index[0] + batch_offset) * stride[0];
    for (int k = 1; k < rank - 1; ++k) offset += index[k] * stride[k];
    char* at = big + offset * element_size;
    char* row = small + r * row_bytes;
    into_big ? std::memcpy(at, row, row_bytes) : std::memcpy(row, at, row_bytes);
    for (int k = rank - 2; k >= 0; --k) {
      if (++index[k] < small_shape[k]) break;
      index[k] = 0;
    }
  }
}

}  // namespace

absl::StatusOr<BatchPlan> BatchPlan::Create(const ModelConfigFile& config,
                                            const vm::Executable& executable) {
  BatchPlan plan;
  plan.max_batch_size_ = config.max_batch_size();
  plan.buckets_ = CompileBuckets(config);
  if (config.inputs_size() != static_cast<int>(executable.inputs.size()) ||
      config.outputs_size() != static_cast<int>(executable.outputs.size())) {
    return absl::InternalError("the config was not resolved against the executable");
  }
  const bool batching = plan.batching();
  // Where each dim symbol of the inputs is read, and whether a paddable axis carries it.
  std::map<std::string, std::pair<int, int>> symbol_source;
  std::map<std::string, bool> symbol_padded;
  for (int i = 0; i < config.inputs_size(); ++i) {
    const config::TensorConfig& t = config.inputs(i);
    const vm::TensorSignature& sig = executable.inputs[i];
    const std::string where = absl::StrCat("inputs '", t.name(), "'");
    InputPlan in;
    in.dtype = sig.dtype;
    const int rank = static_cast<int>(sig.dims.size());
    in.paddable.assign(rank, false);
    in.symbols.assign(rank, "");
    for (int a = 0; a < rank; ++a) {
      if (a < static_cast<int>(sig.dim_names.size()) && sig.dims[a] < 0) {
        in.symbols[a] = sig.dim_names[a];
      }
      if (!in.symbols[a].empty()) symbol_source.emplace(in.symbols[a], std::make_pair(i, a));
    }
    if (batching) {
      if (rank == 0 || sig.dims[0] >= 0) {
        return Bad(absl::StrCat("max_batch_size ", plan.max_batch_size_, " needs a dynamic dim 0 ",
                                "(the batch dim) on every input, but ", where, " has shape ",
                                vm::ShapeToString(sig.dims)));
      }
      if (sig.dtype == vm::DType::kString) {
        return absl::UnimplementedError(
            absl::StrCat("max_batch_size > 1 with BYTES ", where, ": batching is not supported"));
      }
    }
    for (int64_t axis : t.paddable_axes()) {
      if (!batching) {
        return Bad(absl::StrCat(where, ": paddable_axes need max_batch_size > 1"));
      }
      if (axis == 0 || sig.dims[axis] >= 0) {
        return Bad(absl::StrCat(where, ": paddable axis ", axis,
                                axis == 0 ? " is the batch dim" : " is a static dim"));
      }
      in.paddable[axis] = true;
      if (!in.symbols[axis].empty()) symbol_padded[in.symbols[axis]] = true;
    }
    if (!t.paddable_axes().empty()) {
      auto bytes = PadBytes(sig.dtype, t.pad_value());
      if (!bytes.ok()) return Bad(absl::StrCat(where, ": ", bytes.status().message()));
      in.pad_bytes = *std::move(bytes);
    }
    plan.inputs_.push_back(std::move(in));
  }
  // Inputs sharing a symbol must agree on padding it, or padded requests would disagree on it.
  for (const InputPlan& in : plan.inputs_) {
    for (size_t a = 1; a < in.symbols.size(); ++a) {
      if (!in.symbols[a].empty() && symbol_padded.contains(in.symbols[a]) && !in.paddable[a]) {
        return Bad(absl::StrCat("dim symbol '", in.symbols[a],
                                "' is paddable on one input but not on every input that has it"));
      }
    }
  }
  for (int o = 0; o < config.outputs_size(); ++o) {
    const config::TensorConfig& t = config.outputs(o);
    const vm::TensorSignature& sig = executable.outputs[o];
    const std::string where = absl::StrCat("outputs '", t.name(), "'");
    if (batching && (sig.dims.empty() || sig.dims[0] >= 0)) {
      return Bad(absl::StrCat("max_batch_size ", plan.max_batch_size_, " needs a dynamic dim 0 ",
                              "(the batch dim) on every output, but ", where, " has shape ",
                              vm::ShapeToString(sig.dims)));
    }
    if (batching && sig.dtype == vm::DType::kString) {
      return absl::UnimplementedError(
          absl::StrCat("max_batch_size > 1 with BYTES ", where, ": batching is not supported"));
    }
    OutputPlan out;
    for (int64_t axis : t.slice_axes()) {
      if (!batching) return Bad(absl::StrCat(where, ": slice_axes need max_batch_size > 1"));
      const std::string symbol =
          axis < static_cast<int64_t>(sig.dim_names.size()) ? sig.dim_names[axis] : "";
      if (axis == 0 || symbol.empty() || !symbol_padded.contains(symbol)) {
        return Bad(absl::StrCat(where, ": slice axis ", axis, " (dim '", symbol,
                                "') is not a dim that a paddable input axis has"));
      }
      const auto [input, input_axis] = symbol_source.at(symbol);
      out.slices.push_back({static_cast<int>(axis), input, input_axis});
    }
    plan.outputs_.push_back(std::move(out));
  }
  for (const auto& [symbol, bounds] : plan.buckets_) {
    auto it = symbol_source.find(symbol);
    if (it != symbol_source.end()) plan.bucket_sources_.push_back({symbol, it->second});
  }
  return plan;
}

int64_t BatchPlan::PadTarget(const std::string& symbol, int64_t length) const {
  auto it = buckets_.find(symbol);
  if (it == buckets_.end()) return NextPowerOfTwo(length);
  for (int64_t bound : it->second) {
    if (bound >= length) return bound;
  }
  return length;  // past the last bucket: only equal lengths batch
}

BatchKey BatchPlan::Classify(absl::Span<const vm::Tensor> inputs) const {
  BatchKey key;
  std::vector<std::string> parts;
  for (const auto& [symbol, source] : bucket_sources_) {
    const auto [input, axis] = source;
    if (input >= static_cast<int>(inputs.size()) || axis >= inputs[input].rank()) continue;
    const int64_t value = inputs[input].dim(axis);
    const std::vector<int64_t>& bounds = buckets_.at(symbol);
    auto bound = std::lower_bound(bounds.begin(), bounds.end(), value);
    parts.push_back(bound == bounds.end() ? absl::StrCat(symbol, ">", bounds.back())
                                          : absl::StrCat(symbol, "=", *bound));
  }
  key.bucket = parts.empty() ? "generic" : absl::StrJoin(parts, ",");
  if (!batching()) return key;
  key.batch = inputs.empty() || inputs[0].rank() == 0 ? 1 : inputs[0].dim(0);
  for (size_t i = 0; i < inputs.size() && i < inputs_.size(); ++i) {
    const vm::Tensor& t = inputs[i];
    key.shape.push_back(t.rank());
    for (int a = 1; a < t.rank(); ++a) {
      const bool pad = a < static_cast<int>(inputs_[i].paddable.size()) && inputs_[i].paddable[a];
      key.shape.push_back(pad ? PadTarget(inputs_[i].symbols[a], t.dim(a)) : t.dim(a));
    }
  }
  return key;
}

absl::StatusOr<std::vector<vm::Tensor>> BatchPlan::Combine(
    absl::Span<const std::vector<vm::Tensor>* const> requests) const {
  std::vector<vm::Tensor> combined;
  if (requests.empty()) return absl::InternalError("Combine of no requests");
  for (size_t i = 0; i < inputs_.size(); ++i) {
    const InputPlan& plan = inputs_[i];
    vm::Shape shape = (*requests[0])[i].shape();
    shape[0] = 0;
    bool padded = false;
    for (const std::vector<vm::Tensor>* r : requests) {
      const vm::Tensor& t = (*r)[i];
      if (t.rank() != static_cast<int>(shape.size())) {
        return absl::InternalError("batched requests differ in rank");
      }
      shape[0] += t.dim(0);
      for (int a = 1; a < t.rank(); ++a) {
        if (t.dim(a) != shape[a]) {
          if (!plan.paddable[a]) return absl::InternalError("batched requests differ in shape");
          padded = true;
          shape[a] = std::max(shape[a], t.dim(a));
        }
      }
    }
    NIMBLE_ASSIGN_OR_RETURN(vm::Tensor out, vm::Tensor::Empty(plan.dtype, shape));
    const size_t element = vm::DTypeSize(plan.dtype);
    char* base = static_cast<char*>(out.raw_data());
    if (padded) {
      const int64_t n = out.num_elements();
      if (plan.pad_bytes.find_first_not_of('\0') == std::string::npos) {
        std::memset(base, 0, out.nbytes());
      } else {
        for (int64_t e = 0; e < n; ++e) {
          std::memcpy(base + e * element, plan.pad_bytes.data(), element);
        }
      }
    }
    int64_t offset = 0;
    for (const std::vector<vm::Tensor>* r : requests) {
      const vm::Tensor& t = (*r)[i];
      CopyBlock(t.shape(), shape, offset, element, static_cast<char*>(t.raw_data()), base,
                /*into_big=*/true);
      offset += t.dim(0);
    }
    combined.push_back(std::move(out));
  }
  return combined;
}

absl::StatusOr<std::vector<std::vector<vm::Tensor>>> BatchPlan::Split(
    absl::Span<const vm::Tensor> outputs,
    absl::Span<const std::vector<vm::Tensor>* const> requests) const {
  int64_t total = 0;
  for (const std::vector<vm::Tensor>* r : requests) total += (*r)[0].dim(0);
  std::vector<std::vector<vm::Tensor>> split(requests.size());
  for (size_t o = 0; o < outputs.size(); ++o) {
    const vm::Tensor& big = outputs[o];
    if (big.rank() == 0 || big.dim(0) != total) {
      return absl::InternalError(absl::StrCat("output ", o, " has shape ",
                                              vm::ShapeToString(big.shape()),
                                              ", not the combined batch of ", total));
    }
    const OutputPlan* plan = o < outputs_.size() ? &outputs_[o] : nullptr;
    const size_t element = vm::DTypeSize(big.dtype());
    int64_t offset = 0;
    for (size_t j = 0; j < requests.size(); ++j) {
      const std::vector<vm::Tensor>& inputs = *requests[j];
      vm::Shape shape = big.shape();
      shape[0] = inputs[0].dim(0);
      if (plan != nullptr) {
        for (const SliceAxis& s : plan->slices) {
          shape[s.axis] = std::min(shape[s.axis], inputs[s.input].dim(s.input_axis));
        }
      }
      NIMBLE_ASSIGN_OR_RETURN(vm::Tensor out, vm::Tensor::Empty(big.dtype(), shape));
      CopyBlock(shape, big.shape(), offset, element, static_cast<char*>(out.raw_data()),
                static_cast<char*>(big.raw_data()), /*into_big=*/false);
      offset += shape[0];
      split[j].push_back(std::move(out));
    }
  }
  return split;
}

}  // namespace nimble::server
