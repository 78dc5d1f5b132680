// Kernel attributes: the compile-time parameters of a kernel instance (axis, epsilon, a fused
// elementwise program, ...). Written by the compiler, stored in the executable, read by kernel
// factories at load time.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "vm/runtime/tensor.h"

namespace nimble::vm {

using AttrValue = std::variant<int64_t, double, std::string, std::vector<int64_t>,
                               std::vector<double>, std::vector<std::string>, Tensor>;

// Thread-safe to read; built once, then immutable.
class Attributes {
 public:
  void Set(const std::string& name, AttrValue value) { values_[name] = std::move(value); }
  bool Has(const std::string& name) const { return values_.count(name) != 0; }

  // kNotFound if absent, kInvalidArgument if of another type.
  template <typename T>
  absl::StatusOr<T> Get(const std::string& name) const {
    auto it = values_.find(name);
    if (it == values_.end()) {
      return absl::NotFoundError(absl::StrCat("attribute '", name, "' is missing"));
    }
    if (const T* v = std::get_if<T>(&it->second)) return *v;
    return absl::InvalidArgumentError(absl::StrCat("attribute '", name, "' has the wrong type"));
  }
  template <typename T>
  T GetOr(const std::string& name, T fallback) const {
    auto it = values_.find(name);
    if (it == values_.end()) return fallback;
    if (const T* v = std::get_if<T>(&it->second)) return *v;
    return fallback;
  }

  const std::map<std::string, AttrValue>& values() const { return values_; }

 private:
  std::map<std::string, AttrValue> values_;  // ordered: serialisation is deterministic
};

}  // namespace nimble::vm
