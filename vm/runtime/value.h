// What a VM register holds: nothing, an int64 scalar (shape arithmetic), a tensor, a storage
// block, an ADT (tagged tuple: ONNX sequences, tuples, optionals) or a closure.
#pragma once

#include <cstdint>
#include <memory>
#include <variant>
#include <vector>

#include "vm/runtime/tensor.h"

namespace nimble::vm {

struct ADT;
struct Closure;
using ADTRef = std::shared_ptr<const ADT>;
using ClosureRef = std::shared_ptr<const Closure>;
using StorageRef = std::shared_ptr<Storage>;

using Value = std::variant<std::monostate, int64_t, Tensor, StorageRef, ADTRef, ClosureRef>;

// ADT tags the compiler and the VM's signature checks agree on. Tag 0 is a plain tuple (a
// function's several results); ONNX sequences hold tensors; ONNX optionals hold zero fields
// (none) or one (a tensor or a sequence).
inline constexpr int32_t kTupleTag = 0;
inline constexpr int32_t kSequenceTag = 1;
inline constexpr int32_t kOptionalTag = 2;

// Immutable once built; shared between registers and calls.
struct ADT {
  int32_t tag = 0;
  std::vector<Value> fields;
};

struct Closure {
  int32_t function = 0;
  std::vector<Value> captured;
};

}  // namespace nimble::vm
