// Every CPU kernel family registers here; KernelRegistry::Global() calls RegisterCpuKernels.
#include "vm/kernels/cpu/cpu_kernels.h"
#include "vm/kernels/kernel.h"

namespace nimble::vm {

void RegisterCpuKernels(KernelRegistry& registry) {
  cpu::RegisterElementwiseKernels(registry);
  cpu::RegisterReductionKernels(registry);
  cpu::RegisterNormalizationKernels(registry);
  cpu::RegisterTensorKernels(registry);
  cpu::RegisterIndexingKernels(registry);
  cpu::RegisterLinalgKernels(registry);
  cpu::RegisterRnnKernels(registry);
  cpu::RegisterLossKernels(registry);
  cpu::RegisterMiscKernels(registry);
  cpu::RegisterAttentionKernels(registry);
  cpu::RegisterSplitGemmKernels(registry);
  cpu::RegisterImageKernels(registry);
}

}  // namespace nimble::vm
