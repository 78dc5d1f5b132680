// Where a buffer lives. Stored in executables as (type, ordinal); never renumber.
#pragma once

#include <cstdint>
#include <string>

namespace nimble::vm {

enum class DeviceType : uint8_t { kCPU = 0, kCUDA = 1 };

struct Device {
  DeviceType type = DeviceType::kCPU;
  int32_t ordinal = 0;

  friend bool operator==(const Device&, const Device&) = default;
  std::string ToString() const {
    return type == DeviceType::kCPU ? "cpu" : "cuda:" + std::to_string(ordinal);
  }
};

inline constexpr Device kCpu{DeviceType::kCPU, 0};

}  // namespace nimble::vm
