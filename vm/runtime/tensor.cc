#include "vm/runtime/tensor.h"

#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"

namespace nimble::vm {

absl::StatusOr<int64_t> NumElements(absl::Span<const int64_t> shape) {
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("negative dimension ", d, " in shape ", ShapeToString(shape)));
    }
    if (__builtin_mul_overflow(count, d, &count)) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape ", ShapeToString(shape), " has more than 2^63 elements"));
    }
  }
  return count;
}

std::string ShapeToString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<std::shared_ptr<Storage>> Storage::Allocate(Allocator* allocator, size_t bytes) {
  NIMBLE_ASSIGN_OR_RETURN(void* data, allocator->Allocate(bytes));
  std::shared_ptr<Storage> storage(new Storage());
  storage->data_ = data;
  storage->size_ = bytes;
  storage->device_ = allocator->device();
  storage->allocator_ = allocator;
  return storage;
}

std::shared_ptr<Storage> Storage::Wrap(void* data, size_t bytes, Device device,
                                       std::shared_ptr<void> owner) {
  std::shared_ptr<Storage> storage(new Storage());
  storage->data_ = data;
  storage->size_ = bytes;
  storage->device_ = device;
  storage->owner_ = std::move(owner);
  return storage;
}

Storage::~Storage() {
  auto* strings = static_cast<std::string*>(data_);
  for (int64_t i = 0; i < string_count_; ++i) strings[i].~basic_string();
  if (allocator_ != nullptr) allocator_->Free(data_, size_);
}

absl::StatusOr<Tensor> Tensor::Empty(DType dtype, absl::Span<const int64_t> shape,
                                     Allocator* allocator) {
  if (DTypeSize(dtype) == 0) return absl::InvalidArgumentError("tensor of invalid dtype");
  NIMBLE_ASSIGN_OR_RETURN(int64_t count, NumElements(shape));
  size_t bytes = 0;
  if (__builtin_mul_overflow(static_cast<size_t>(count), DTypeSize(dtype), &bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", DTypeName(dtype), ShapeToString(shape), " is too large"));
  }
  NIMBLE_ASSIGN_OR_RETURN(std::shared_ptr<Storage> storage, Storage::Allocate(allocator, bytes));
  if (dtype == DType::kString) {
    if (storage->device_.type != DeviceType::kCPU) {
      return absl::InvalidArgumentError("string tensors live on the host only");
    }
    auto* strings = static_cast<std::string*>(storage->data_);
    for (int64_t i = 0; i < count; ++i) new (&strings[i]) std::string();
    storage->string_count_ = count;
  } else if (dtype == DType::kBool && storage->device_.type == DeviceType::kCPU) {
    std::memset(storage->data_, 0, bytes);
  }
  Tensor t;
  t.storage_ = std::move(storage);
  t.dtype_ = dtype;
  t.shape_.assign(shape.begin(), shape.end());
  t.num_elements_ = count;
  return t;
}

absl::StatusOr<Tensor> Tensor::View(std::shared_ptr<Storage> storage, size_t byte_offset,
                                    DType dtype, absl::Span<const int64_t> shape) {
  NIMBLE_ASSIGN_OR_RETURN(int64_t count, NumElements(shape));
  const size_t bytes = static_cast<size_t>(count) * DTypeSize(dtype);
  if (storage == nullptr || byte_offset > storage->size() ||
      bytes > storage->size() - byte_offset) {
    return absl::InvalidArgumentError(
        absl::StrCat("view ", DTypeName(dtype), ShapeToString(shape), " at offset ", byte_offset,
                     " does not fit in storage of ", storage ? storage->size() : 0, " bytes"));
  }
  Tensor t;
  t.storage_ = std::move(storage);
  t.byte_offset_ = byte_offset;
  t.dtype_ = dtype;
  t.shape_.assign(shape.begin(), shape.end());
  t.num_elements_ = count;
  return t;
}

Tensor Tensor::Scalar(int64_t value) {
  return FromVector<int64_t>(absl::MakeConstSpan(&value, 1), {});
}

absl::StatusOr<Tensor> Tensor::Reshape(absl::Span<const int64_t> shape) const {
  NIMBLE_ASSIGN_OR_RETURN(int64_t count, NumElements(shape));
  if (count != num_elements_) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot reshape ", TypeString(), " to ", ShapeToString(shape)));
  }
  Tensor t = *this;
  t.shape_.assign(shape.begin(), shape.end());
  return t;
}

std::string Tensor::TypeString() const {
  return absl::StrCat(DTypeName(dtype_), ShapeToString(shape_));
}

}  // namespace nimble::vm
