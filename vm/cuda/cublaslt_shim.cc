// The cuBLASLt entry points Nimble uses, resolved from libcublasLt.so with dlopen on first use
// instead of linking the library.
//
// Why: libcublasLt.so has 94 KB of thread-local storage. Linked at start-up, that TLS becomes
// part of every thread's static TLS block, which glibc carves out of each thread's stack —
// and threads with small fixed stacks then fail to start (civetweb, under prometheus-cpp's
// exposer, creates 100 KB stacks: the metrics endpoint would not come up in any binary that
// links the CUDA backend). A dlopen'd library's TLS is allocated dynamically instead.
//
// The definitions below have the exact prototypes of cublasLt.h (which the compiler checks),
// so callers use the ordinary API. Without the library every call returns
// CUBLAS_STATUS_NOT_INITIALIZED and the status strings say why.
#include <cublasLt.h>
#include <dlfcn.h>

#include <mutex>
#include <string>

namespace {

struct Library {
  void* handle = nullptr;
  std::string error;
};

const Library& Lib() {
  static Library lib;
  static std::once_flag once;
  std::call_once(once, [] {
    for (const char* name : {"libcublasLt.so.13", "libcublasLt.so"}) {
      lib.handle = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (lib.handle != nullptr) return;
    }
    const char* error = dlerror();
    lib.error = error != nullptr ? error : "libcublasLt.so.13 not found";
  });
  return lib;
}

template <typename Fn>
Fn Resolve(const char* name) {
  const Library& lib = Lib();
  if (lib.handle == nullptr) return nullptr;
  return reinterpret_cast<Fn>(dlsym(lib.handle, name));
}

// Resolves `name` once and forwards the arguments; CUBLAS_STATUS_NOT_INITIALIZED when the
// library or the symbol is missing.
#define NIMBLE_CUBLASLT_FORWARD(name, ...)                 \
  using Fn = decltype(&::name);                            \
  static const Fn fn = Resolve<Fn>(#name);                 \
  if (fn == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED; \
  return fn(__VA_ARGS__)

}  // namespace

extern "C" {

cublasStatus_t CUBLASWINAPI cublasLtCreate(cublasLtHandle_t* lightHandle) {
  NIMBLE_CUBLASLT_FORWARD(cublasLtCreate, lightHandle);
}

cublasStatus_t CUBLASWINAPI cublasLtDestroy(cublasLtHandle_t lightHandle) {
  NIMBLE_CUBLASLT_FORWARD(cublasLtDestroy, lightHandle);
}

const char* CUBLASWINAPI cublasLtGetStatusName(cublasStatus_t status) {
  using Fn = decltype(&::cublasLtGetStatusName);
  static const Fn fn = Resolve<Fn>("cublasLtGetStatusName");
  if (fn == nullptr) return "CUBLAS_STATUS_NOT_INITIALIZED";
  return fn(status);
}

const char* CUBLASWINAPI cublasLtGetStatusString(cublasStatus_t status) {
  using Fn = decltype(&::cublasLtGetStatusString);
  static const Fn fn = Resolve<Fn>("cublasLtGetStatusString");
  if (fn == nullptr) {
    static const std::string message = "cuBLASLt could not be loaded: " + Lib().error;
    return message.c_str();
  }
  return fn(status);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmul(
    cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t computeDesc, const void* alpha,
    const void* A, cublasLtMatrixLayout_t Adesc, const void* B, cublasLtMatrixLayout_t Bdesc,
    const void* beta, const void* C, cublasLtMatrixLayout_t Cdesc, void* D,
    cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t* algo, void* workspace,
    size_t workspaceSizeInBytes, cudaStream_t stream) {
  NIMBLE_CUBLASLT_FORWARD(cublasLtMatmul, lightHandle, computeDesc, alpha, A, Adesc, B, Bdesc, beta,
                          C, Cdesc, D, Ddesc, algo, workspace, workspaceSizeInBytes, stream);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t operationDesc, cublasLtMatrixLayout_t Adesc,
    cublasLtMatrixLayout_t Bdesc, cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
    cublasLtMatmulPreference_t preference, int requestedAlgoCount,
    cublasLtMatmulHeuristicResult_t heuristicResultsArray[], int* returnAlgoCount) {
  NIMBLE_CUBLASLT_FORWARD(cublasLtMatmulAlgoGetHeuristic, lightHandle, operationDesc, Adesc, Bdesc,
                          Cdesc, Ddesc, preference, requestedAlgoCount, heuristicResultsArray,
                          returnAlgoCount);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* matmulDesc,
                                                     cublasComputeType_t computeType,
                                                     cudaDataType_t scaleType) {
  NIMBLE_CUBLASLT_FORWARD(cublasLtMatmulDescCreate, matmulDesc, computeType, scaleType);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t matmulDesc) {
  NIMBLE_CUBLASLT_FORWARD(cublasLtMatmulDescDestroy, matmulDesc);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t matmulDesc,
                                                           cublasLtMatmulDescAttributes_t attr,
                                                           const void* buf, size_t sizeInBytes) {
  NIMBLE_CUBLASLT_FORWARD(cublasLtMatmulDescSetAttribute, matmulDesc, attr, buf, sizeInBytes);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  NIMBLE_CUBLASLT_FORWARD(cublasLtMatmulPreferenceCreate, pref);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  NIMBLE_CUBLASLT_FORWARD(cublasLtMatmulPreferenceDestroy, pref);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceSetAttribute(
    cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
    size_t sizeInBytes) {
  NIMBLE_CUBLASLT_FORWARD(cublasLtMatmulPreferenceSetAttribute, pref, attr, buf, sizeInBytes);
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* matLayout,
                                                       cudaDataType type, uint64_t rows,
                                                       uint64_t cols, int64_t ld) {
  NIMBLE_CUBLASLT_FORWARD(cublasLtMatrixLayoutCreate, matLayout, type, rows, cols, ld);
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t matLayout) {
  NIMBLE_CUBLASLT_FORWARD(cublasLtMatrixLayoutDestroy, matLayout);
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t matLayout,
                                                             cublasLtMatrixLayoutAttribute_t attr,
                                                             const void* buf, size_t sizeInBytes) {
  NIMBLE_CUBLASLT_FORWARD(cublasLtMatrixLayoutSetAttribute, matLayout, attr, buf, sizeInBytes);
}

size_t CUBLASWINAPI cublasLtGetVersion(void) {
  using Fn = decltype(&::cublasLtGetVersion);
  static const Fn fn = Resolve<Fn>("cublasLtGetVersion");
  return fn == nullptr ? 0 : fn();
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoGetIds(cublasLtHandle_t lightHandle,
                                                     cublasComputeType_t computeType,
                                                     cudaDataType_t scaleType, cudaDataType_t Atype,
                                                     cudaDataType_t Btype, cudaDataType_t Ctype,
                                                     cudaDataType_t Dtype, int requestedAlgoCount,
                                                     int algoIdsArray[], int* returnAlgoCount) {
  NIMBLE_CUBLASLT_FORWARD(cublasLtMatmulAlgoGetIds, lightHandle, computeType, scaleType, Atype,
                          Btype, Ctype, Dtype, requestedAlgoCount, algoIdsArray, returnAlgoCount);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoInit(cublasLtHandle_t lightHandle,
                                                   cublasComputeType_t computeType,
                                                   cudaDataType_t scaleType, cudaDataType_t Atype,
                                                   cudaDataType_t Btype, cudaDataType_t Ctype,
                                                   cudaDataType_t Dtype, int algoId,
                                                   cublasLtMatmulAlgo_t* algo) {
  NIMBLE_CUBLASLT_FORWARD(cublasLtMatmulAlgoInit, lightHandle, computeType, scaleType, Atype, Btype,
                          Ctype, Dtype, algoId, algo);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoCheck(
    cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t operationDesc, cublasLtMatrixLayout_t Adesc,
    cublasLtMatrixLayout_t Bdesc, cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
    const cublasLtMatmulAlgo_t* algo, cublasLtMatmulHeuristicResult_t* result) {
  NIMBLE_CUBLASLT_FORWARD(cublasLtMatmulAlgoCheck, lightHandle, operationDesc, Adesc, Bdesc, Cdesc,
                          Ddesc, algo, result);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoCapGetAttribute(
    const cublasLtMatmulAlgo_t* algo, cublasLtMatmulAlgoCapAttributes_t attr, void* buf,
    size_t sizeInBytes, size_t* sizeWritten) {
  NIMBLE_CUBLASLT_FORWARD(cublasLtMatmulAlgoCapGetAttribute, algo, attr, buf, sizeInBytes,
                          sizeWritten);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoConfigSetAttribute(
    cublasLtMatmulAlgo_t* algo, cublasLtMatmulAlgoConfigAttributes_t attr, const void* buf,
    size_t sizeInBytes) {
  NIMBLE_CUBLASLT_FORWARD(cublasLtMatmulAlgoConfigSetAttribute, algo, attr, buf, sizeInBytes);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoConfigGetAttribute(
    const cublasLtMatmulAlgo_t* algo, cublasLtMatmulAlgoConfigAttributes_t attr, void* buf,
    size_t sizeInBytes, size_t* sizeWritten) {
  NIMBLE_CUBLASLT_FORWARD(cublasLtMatmulAlgoConfigGetAttribute, algo, attr, buf, sizeInBytes,
                          sizeWritten);
}

}  // extern "C"
