#include "absl/strings/str_cat.h"
#include "vm/kernels/kernel.h"

namespace nimble::vm {

KernelRegistry& KernelRegistry::Global() {
  static KernelRegistry* registry = [] {
    auto* r = new KernelRegistry();
    RegisterCpuKernels(*r);
#ifdef NIMBLE_HAVE_CUDA
    RegisterCudaKernels(*r);
#endif
    return r;
  }();
  return *registry;
}

void KernelRegistry::Register(const std::string& name, DeviceType device, KernelFactory factory) {
  std::lock_guard<std::mutex> lock(mutex_);
  factories_[{name, device}] = std::move(factory);
}

bool KernelRegistry::Has(const std::string& name, DeviceType device) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return factories_.count({name, device}) != 0;
}

void KernelRegistry::SetTraits(const std::string& name, DeviceType device, KernelTraits traits) {
  std::lock_guard<std::mutex> lock(mutex_);
  traits_[{name, device}] = std::move(traits);
}

KernelTraits KernelRegistry::Traits(const std::string& name, DeviceType device) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = traits_.find({name, device});
  return it == traits_.end() ? KernelTraits{} : it->second;
}

void KernelRegistry::SetDeviceApi(DeviceType device, DeviceApi* api) {
  std::lock_guard<std::mutex> lock(mutex_);
  apis_[device] = api;
}

DeviceApi* KernelRegistry::GetDeviceApi(DeviceType device) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = apis_.find(device);
  return it == apis_.end() ? nullptr : it->second;
}

absl::StatusOr<std::unique_ptr<Kernel>> KernelRegistry::Create(const std::string& name,
                                                               DeviceType device,
                                                               const Attributes& attrs) const {
  KernelFactory factory;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = factories_.find({name, device});
    if (it == factories_.end()) {
      return absl::NotFoundError(
          absl::StrCat("no kernel '", name, "' for ", device == DeviceType::kCPU ? "cpu" : "cuda"));
    }
    factory = it->second;
  }
  auto kernel = factory(attrs);
  if (!kernel.ok()) {
    return absl::Status(kernel.status().code(),
                        absl::StrCat("kernel '", name, "': ", kernel.status().message()));
  }
  return kernel;
}

absl::Status TakeDeviceError(DeviceErrorRecord& record, Device device) {
  // The device wrote the record through the bus; read it as memory that changes under us.
  const volatile DeviceErrorRecord& r = record;
  const int32_t code = r.code;
  if (code == kDeviceErrorNone) return absl::OkStatus();
  const int64_t value = r.value, bound = r.bound;
  volatile DeviceErrorRecord& w = record;
  w.value = 0;
  w.bound = 0;
  w.code = kDeviceErrorNone;
  const std::string where = device.ToString();
  switch (code) {
    case kDeviceErrorGatherIndex:
      return absl::InvalidArgumentError(absl::StrCat(
          "Gather on ", where, ": index ", value, " is out of range [-", bound, ", ", bound, ")"));
    case kDeviceErrorEmbeddingIndex:
      return absl::InvalidArgumentError(absl::StrCat("embedding lookup on ", where, ": index ",
                                                     value, " is out of range [-", bound, ", ",
                                                     bound, ")"));
    case kDeviceErrorSequenceLength:
      return absl::InvalidArgumentError(absl::StrCat("LSTM on ", where, ": sequence_lens value ",
                                                     value, " is outside [0, ", bound, "]"));
    default:
      return absl::InternalError(absl::StrCat("a kernel on ", where, " reported error code ", code,
                                              " (value ", value, ", bound ", bound, ")"));
  }
}

}  // namespace nimble::vm
