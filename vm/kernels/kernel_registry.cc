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

}  // namespace nimble::vm
