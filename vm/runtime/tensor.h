// Tensors: a dense row-major view (dtype, shape, byte offset) into a refcounted Storage.
// Copying a Tensor copies the view, not the data.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vm/runtime/allocator.h"
#include "vm/runtime/device.h"
#include "vm/runtime/dtype.h"

namespace nimble::vm {

using Shape = absl::InlinedVector<int64_t, 6>;

// Elements of `shape`; kInvalidArgument for a negative dim or an int64 overflow.
absl::StatusOr<int64_t> NumElements(absl::Span<const int64_t> shape);
// "[2, 128, 768]".
std::string ShapeToString(absl::Span<const int64_t> shape);

// A block of device memory. Thread-safe: immutable after construction; the bytes themselves
// are synchronised by whoever writes them (the VM gives each call its own buffers).
class Storage {
 public:
  // `bytes` from `allocator` (returned to it on destruction).
  static absl::StatusOr<std::shared_ptr<Storage>> Allocate(Allocator* allocator, size_t bytes);
  // Memory owned by someone else (mmap'ed constants, a client's buffer); `owner` keeps it alive.
  static std::shared_ptr<Storage> Wrap(void* data, size_t bytes, Device device,
                                       std::shared_ptr<void> owner);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t size() const { return size_; }
  Device device() const { return device_; }
  // Marks the bytes as never written again (an executable's constants): kernels may cache
  // what they derive from them (a repacked weight) for as long as the storage lives.
  void MarkConstant() { constant_.store(true, std::memory_order_relaxed); }
  bool constant() const { return constant_.load(std::memory_order_relaxed); }

 private:
  Storage() = default;
  friend class Tensor;

  void* data_ = nullptr;
  size_t size_ = 0;
  Device device_;
  Allocator* allocator_ = nullptr;  // null when wrapped
  std::shared_ptr<void> owner_;
  int64_t string_count_ = 0;  // std::string objects constructed at data_, destroyed with it
  std::atomic<bool> constant_{false};
};

// Thread-safe to read; concurrent writes to the same bytes are the caller's business.
class Tensor {
 public:
  Tensor() = default;  // a null tensor: defined() is false

  // Uninitialised (zeroed for kString and kBool) tensor of `shape` on `allocator`'s device.
  static absl::StatusOr<Tensor> Empty(DType dtype, absl::Span<const int64_t> shape,
                                      Allocator* allocator = DefaultCpuAllocator());
  // A view of `storage` at `byte_offset`; kInvalidArgument if it does not fit.
  static absl::StatusOr<Tensor> View(std::shared_ptr<Storage> storage, size_t byte_offset,
                                     DType dtype, absl::Span<const int64_t> shape);
  // Host tensors from values (tests, constants, shape tensors).
  template <typename T>
  static Tensor FromVector(absl::Span<const T> values, absl::Span<const int64_t> shape);
  static Tensor Scalar(int64_t value);  // i64, rank 0

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int axis) const { return shape_[axis]; }
  int64_t num_elements() const { return num_elements_; }
  size_t nbytes() const { return static_cast<size_t>(num_elements_) * DTypeSize(dtype_); }
  Device device() const { return storage_ ? storage_->device() : kCpu; }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  size_t byte_offset() const { return byte_offset_; }

  void* raw_data() const { return static_cast<char*>(storage_->data()) + byte_offset_; }
  template <typename T>
  T* data() const {
    return static_cast<T*>(raw_data());
  }

  // The same bytes with another shape of equal element count.
  absl::StatusOr<Tensor> Reshape(absl::Span<const int64_t> shape) const;

  // "f32[2, 3]".
  std::string TypeString() const;

 private:
  std::shared_ptr<Storage> storage_;
  size_t byte_offset_ = 0;
  DType dtype_ = DType::kInvalid;
  Shape shape_;
  int64_t num_elements_ = 0;
};

template <typename T>
Tensor Tensor::FromVector(absl::Span<const T> values, absl::Span<const int64_t> shape) {
  Tensor t = *Empty(DTypeOf<T>::value, shape);
  std::copy(values.begin(), values.end(), t.data<T>());
  return t;
}

}  // namespace nimble::vm
