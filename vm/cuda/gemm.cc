#include "vm/cuda/gemm.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "vm/cuda/cuda_status.h"
#include "vm/cuda/l2_prefetch.h"

namespace nimble::vm::cuda {

void GemmDescDeleter::operator()(cublasLtMatmulDescOpaque_t* desc) const {
  cublasLtMatmulDescDestroy(desc);
}
void GemmDescDeleter::operator()(cublasLtMatrixLayoutOpaque_t* layout) const {
  cublasLtMatrixLayoutDestroy(layout);
}
void GemmDescDeleter::operator()(cublasLtMatmulPreferenceOpaque_t* pref) const {
  cublasLtMatmulPreferenceDestroy(pref);
}

namespace {

using MatmulDesc = std::unique_ptr<cublasLtMatmulDescOpaque_t, GemmDescDeleter>;
using Layout = std::unique_ptr<cublasLtMatrixLayoutOpaque_t, GemmDescDeleter>;
using Preference = std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, GemmDescDeleter>;

cudaDataType_t DataType(GemmPrecision precision) {
  switch (precision) {
    case GemmPrecision::kF16:
      return CUDA_R_16F;
    case GemmPrecision::kBF16:
      return CUDA_R_16BF;
    case GemmPrecision::kF32:
    case GemmPrecision::kTF32:
      break;
  }
  return CUDA_R_32F;
}

cublasLtEpilogue_t LtEpilogue(GemmEpilogue epilogue) {
  switch (epilogue) {
    case GemmEpilogue::kNone:
      return CUBLASLT_EPILOGUE_DEFAULT;
    case GemmEpilogue::kBias:
      return CUBLASLT_EPILOGUE_BIAS;
    case GemmEpilogue::kGelu:
      return CUBLASLT_EPILOGUE_GELU;
    case GemmEpilogue::kBiasGelu:
      return CUBLASLT_EPILOGUE_GELU_BIAS;
    case GemmEpilogue::kRelu:
      return CUBLASLT_EPILOGUE_RELU;
    case GemmEpilogue::kBiasRelu:
      return CUBLASLT_EPILOGUE_RELU_BIAS;
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}

bool HasBias(GemmEpilogue e) {
  return e == GemmEpilogue::kBias || e == GemmEpilogue::kBiasGelu || e == GemmEpilogue::kBiasRelu;
}
bool HasActivation(GemmEpilogue e) { return e != GemmEpilogue::kNone && e != GemmEpilogue::kBias; }

// Largest power of two <= 256 dividing the address and every batch offset: what the kernels
// may assume about each batch's base address.
int Alignment(const void* ptr, int64_t stride_elements, int element_bytes) {
  uint64_t bits = reinterpret_cast<uintptr_t>(ptr) | 256;
  if (stride_elements > 0) bits |= static_cast<uint64_t>(stride_elements * element_bytes);
  return static_cast<int>(bits & (~bits + 1));
}

absl::StatusOr<Layout> MakeLayout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld,
                                  int64_t batch, int64_t stride) {
  cublasLtMatrixLayout_t raw = nullptr;
  NIMBLE_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&raw, type, static_cast<uint64_t>(rows),
                                                           static_cast<uint64_t>(cols), ld));
  Layout layout(raw);
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    NIMBLE_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutSetAttribute(
        raw, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
    NIMBLE_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutSetAttribute(
        raw, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
  return layout;
}

template <typename T>
absl::Status SetDesc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                     const T& value) {
  return CublasStatus(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(value)),
                      "cublasLtMatmulDescSetAttribute");
}

absl::Status Validate(const GemmShape& s, GemmEpilogue epilogue, const GemmOperands& o) {
  if (s.m <= 0 || s.n <= 0 || s.k <= 0 || s.batch <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("GEMM needs positive M, N, K and batch; got M=%d N=%d K=%d batch=%d", s.m,
                        s.n, s.k, s.batch));
  }
  constexpr int64_t kMaxDim = (int64_t{1} << 31) - 1;
  if (s.m > kMaxDim || s.n > kMaxDim || s.k > kMaxDim || s.batch > kMaxDim) {
    return absl::InvalidArgumentError("GEMM dimension exceeds 2^31 - 1");
  }
  if (o.a == nullptr || o.b == nullptr || o.d == nullptr) {
    return absl::InvalidArgumentError("GEMM operand A, B or D is null");
  }
  if (HasBias(epilogue) && o.bias == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("GEMM epilogue ", EpilogueName(epilogue), " needs a bias"));
  }
  if (!HasBias(epilogue) && o.bias != nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("GEMM bias given but epilogue ", EpilogueName(epilogue), " has none"));
  }
  if (o.residual != nullptr && HasActivation(epilogue)) {
    return absl::InvalidArgumentError(
        absl::StrCat("GEMM residual with activation epilogue ", EpilogueName(epilogue),
                     ": cuBLASLt adds C before the activation, which is not act(x) + residual"));
  }
  for (int64_t stride : {o.stride_a, o.stride_b, o.stride_d, o.stride_residual}) {
    if (stride < -1) return absl::InvalidArgumentError("GEMM batch stride < -1");
  }
  if (s.lda != 0 && (s.trans_a || s.lda < s.k)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("GEMM lda %d: only for A not transposed, and at least K=%d", s.lda, s.k));
  }
  if (s.d_f32 && (HasBias(epilogue) || HasActivation(epilogue))) {
    return absl::InvalidArgumentError("GEMM with f32 D: no bias or activation epilogue");
  }
  if (s.batch > 1 && o.stride_d == 0) {
    return absl::InvalidArgumentError("GEMM output batch stride 0 would overlap the batches");
  }
  return absl::OkStatus();
}

}  // namespace

const char* PrecisionName(GemmPrecision precision) {
  switch (precision) {
    case GemmPrecision::kF32:
      return "fp32";
    case GemmPrecision::kTF32:
      return "tf32";
    case GemmPrecision::kF16:
      return "fp16";
    case GemmPrecision::kBF16:
      return "bf16";
  }
  return "?";
}

const char* EpilogueName(GemmEpilogue epilogue) {
  switch (epilogue) {
    case GemmEpilogue::kNone:
      return "none";
    case GemmEpilogue::kBias:
      return "bias";
    case GemmEpilogue::kGelu:
      return "gelu";
    case GemmEpilogue::kBiasGelu:
      return "bias+gelu";
    case GemmEpilogue::kRelu:
      return "relu";
    case GemmEpilogue::kBiasRelu:
      return "bias+relu";
  }
  return "?";
}

int ElementBytes(GemmPrecision precision) {
  return precision == GemmPrecision::kF16 || precision == GemmPrecision::kBF16 ? 2 : 4;
}

absl::StatusOr<std::unique_ptr<GemmRunner>> GemmRunner::Create(int device,
                                                               int64_t workspace_bytes) {
  if (workspace_bytes < 0) return absl::InvalidArgumentError("GEMM workspace_bytes < 0");
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  cublasLtHandle_t handle = nullptr;
  NIMBLE_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&handle));
  return std::unique_ptr<GemmRunner>(new GemmRunner(device, workspace_bytes, handle));
}

GemmRunner::~GemmRunner() {
  cudaDeviceSynchronize();  // GEMMs in flight still use the workspaces
  absl::MutexLock lock(&mu_);
  for (auto& [stream, workspace] : workspaces_) cudaFree(workspace);
  cublasLtDestroy(handle_);
}

absl::StatusOr<void*> GemmRunner::Workspace(cudaStream_t stream) {
  if (workspace_bytes_ == 0) return nullptr;
  absl::MutexLock lock(&mu_);
  auto it = workspaces_.find(stream);
  if (it != workspaces_.end()) return it->second;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) {
    return absl::FailedPreconditionError(
        "GEMM on a capturing stream without a workspace: call ReserveWorkspace(stream) before "
        "cudaStreamBeginCapture (cudaMalloc is not capturable)");
  }
  void* workspace = nullptr;
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaMalloc(&workspace, static_cast<size_t>(workspace_bytes_)));
  workspaces_.emplace(stream, workspace);
  ++stats_.workspaces;
  return workspace;
}

absl::Status GemmRunner::ReserveWorkspace(cudaStream_t stream) {
  return Workspace(stream).status();
}

absl::StatusOr<std::unique_ptr<GemmRunner::Plan>> GemmRunner::MakePlan(const PlanKey& key) {
  const cudaDataType_t type = DataType(key.precision);
  auto plan = std::make_unique<Plan>();
  // Column-major view: D^T (N x M) = op(B)^T (N x K) * op(A)^T (K x M).
  NIMBLE_ASSIGN_OR_RETURN(
      plan->lt_a, key.trans_b ? MakeLayout(type, key.k, key.n, key.k, key.batch, key.stride_b)
                              : MakeLayout(type, key.n, key.k, key.n, key.batch, key.stride_b));
  NIMBLE_ASSIGN_OR_RETURN(
      plan->lt_b, key.trans_a ? MakeLayout(type, key.m, key.k, key.m, key.batch, key.stride_a)
                              : MakeLayout(type, key.k, key.m, key.lda != 0 ? key.lda : key.k,
                                           key.batch, key.stride_a));
  const cudaDataType_t d_type = key.d_f32 ? CUDA_R_32F : type;
  NIMBLE_ASSIGN_OR_RETURN(plan->lt_c,
                          MakeLayout(d_type, key.n, key.m, key.n, key.batch, key.stride_residual));
  NIMBLE_ASSIGN_OR_RETURN(plan->lt_d,
                          MakeLayout(d_type, key.n, key.m, key.n, key.batch, key.stride_d));
  cublasLtMatmulDesc_t raw_desc = nullptr;
  NIMBLE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(
      &raw_desc,
      key.precision == GemmPrecision::kTF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F,
      CUDA_R_32F));
  plan->desc.reset(raw_desc);
  const int32_t op_a = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int32_t op_b = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  NIMBLE_RETURN_IF_ERROR(SetDesc(raw_desc, CUBLASLT_MATMUL_DESC_TRANSA, op_a));
  NIMBLE_RETURN_IF_ERROR(SetDesc(raw_desc, CUBLASLT_MATMUL_DESC_TRANSB, op_b));
  const uint32_t lt_epilogue = LtEpilogue(key.epilogue);
  NIMBLE_RETURN_IF_ERROR(SetDesc(raw_desc, CUBLASLT_MATMUL_DESC_EPILOGUE, lt_epilogue));
  if (HasBias(key.epilogue)) {
    const int64_t bias_stride = 0;  // one bias for every batch
    NIMBLE_RETURN_IF_ERROR(SetDesc(raw_desc, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, bias_stride));
  }

  cublasLtMatmulPreference_t raw_pref = nullptr;
  NIMBLE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&raw_pref));
  Preference pref(raw_pref);
  const uint64_t workspace = static_cast<uint64_t>(workspace_bytes_);
  NIMBLE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      raw_pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)));
  const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> alignments[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_d}};
  for (const auto& [attr, value] : alignments) {
    NIMBLE_CUBLAS_RETURN_IF_ERROR(
        cublasLtMatmulPreferenceSetAttribute(raw_pref, attr, &value, sizeof(value)));
  }
  // NIMBLE_GEMM_REDUCTION_MASK (A/B measurements): the split-K reduction schemes the heuristic
  // may answer with (cublasLtReductionScheme_t bits; 0: no split-K, 1: in place only, without
  // the separate reduction kernel). Default: all. BERT-base fp16 with graphs (H200, 2026-12-06,
  // bench/results/gpu/run-2026-12-06u): no split-K 0.59-0.66 ms at seq 16-128 against
  // 0.37-0.44; in place only the same as all.
  static const int reduction_mask = [] {
    const char* v = std::getenv("NIMBLE_GEMM_REDUCTION_MASK");
    return v != nullptr ? std::atoi(v) : -1;
  }();
  if (reduction_mask >= 0) {
    const uint32_t mask = static_cast<uint32_t>(reduction_mask) & CUBLASLT_REDUCTION_SCHEME_MASK;
    NIMBLE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
        raw_pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &mask, sizeof(mask)));
  }
  constexpr int kCandidates = 16;
  cublasLtMatmulHeuristicResult_t results[kCandidates] = {};
  int returned = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
      handle_, raw_desc, plan->lt_a.get(), plan->lt_b.get(), plan->lt_c.get(), plan->lt_d.get(),
      raw_pref, kCandidates, results, &returned);
  if (status == CUBLAS_STATUS_NOT_SUPPORTED || (status == CUBLAS_STATUS_SUCCESS && returned == 0)) {
    return absl::UnimplementedError(absl::StrFormat(
        "cuBLASLt has no algorithm for %s GEMM M=%d N=%d K=%d batch=%d epilogue %s",
        PrecisionName(key.precision), key.m, key.n, key.k, key.batch, EpilogueName(key.epilogue)));
  }
  NIMBLE_RETURN_IF_ERROR(CublasStatus(status, "cublasLtMatmulAlgoGetHeuristic"));
  for (int i = 0; i < returned; ++i) {
    if (results[i].state == CUBLAS_STATUS_SUCCESS) plan->candidates.push_back(results[i].algo);
  }
  if (plan->candidates.empty()) plan->candidates.push_back(results[0].algo);
  plan->algo = plan->candidates.front();
  return plan;
}

// Whether new plans time their candidates (SetAutotune, else NIMBLE_GEMM_AUTOTUNE=1 / 0, else
// on warm-up streams only). The heuristic's own answers alone did not pay: on the H100 with
// BERT-base fp16 neither its 16 answers nor split-K forms of its first four beat its first
// answer when timed from a cold L2 (vm_cuda_gemm_l2_bench, bench/results/gpu/run-2026-12-06e);
// its first answers' cluster shapes and custom options (WidenCandidates) give 2-10% a GEMM
// (bench/results/gpu/run-2026-12-07d). Timing back to back would keep a candidate's weights in
// L2 from one repetition to the next, which a model's GEMMs (weights streamed from HBM once per
// call) never see: on the H100 that picked slower algorithms (run-2026-12-06b). Each timing
// therefore runs kTuneCopies GEMMs on as many copies of the weights, captured in a graph and
// replayed after an L2 flush with only the activations (operand A) prefetched back.
static std::optional<bool> AutotuneFromEnv() {
  const char* v = std::getenv("NIMBLE_GEMM_AUTOTUNE");
  if (v != nullptr && v[0] == '0') return false;
  if (v != nullptr && v[0] == '1') return true;
  return std::nullopt;
}

// Whether tuning also tries variants of the heuristic's first answers (WidenCandidates);
// NIMBLE_GEMM_TUNE_WIDE=0 times the heuristic's answers only (A/B measurements).
static bool WideTuneFromEnv() {
  static const bool wide = [] {
    const char* v = std::getenv("NIMBLE_GEMM_TUNE_WIDE");
    return v == nullptr || v[0] != '0';
  }();
  return wide;
}

void GemmRunner::SetAutotune(bool on) {
  absl::MutexLock lock(&mu_);
  autotune_ = on;
}

void GemmRunner::SetWarmupStream(cudaStream_t stream, bool on) {
  absl::MutexLock lock(&mu_);
  if (on) {
    warmup_streams_.insert(stream);
  } else {
    warmup_streams_.erase(stream);
  }
}

void GemmRunner::SetTuneCacheDir(std::string dir) {
  absl::MutexLock lock(&mu_);
  tune_cache_dir_ = std::move(dir);
}

std::pair<std::string, std::string> GemmRunner::TuneCachePath(const PlanKey& key) const {
  std::string dir;
  {
    absl::MutexLock lock(&mu_);
    dir = tune_cache_dir_;
  }
  if (dir.empty()) return {};
  cudaDeviceProp prop = {};
  if (cudaGetDeviceProperties(&prop, device_) != cudaSuccess) {
    cudaGetLastError();
    return {};
  }
  const std::string text = absl::StrFormat(
      "nimble-gemm-tune 2 %s sm_%d%d sms %d cublasLt %d workspace %d | m %d n %d k %d batch %d "
      "strides %d %d %d %d trans %d %d residual %d precision %s epilogue %s align %d %d %d %d "
      "lda %d d_f32 %d wide %d",
      prop.name, prop.major, prop.minor, prop.multiProcessorCount,
      static_cast<int64_t>(cublasLtGetVersion()), workspace_bytes_, key.m, key.n, key.k, key.batch,
      key.stride_a, key.stride_b, key.stride_d, key.stride_residual, key.trans_a, key.trans_b,
      key.residual, PrecisionName(key.precision), EpilogueName(key.epilogue), key.align_a,
      key.align_b, key.align_c, key.align_d, key.lda, key.d_f32, WideTuneFromEnv());
  uint64_t hash = 1469598103934665603ull;  // FNV-1a: the same in every process
  for (unsigned char ch : text) hash = (hash ^ ch) * 1099511628211ull;
  return {absl::StrFormat("%s/%016x.algo", dir, hash), text};
}

std::optional<cublasLtMatmulAlgo_t> GemmRunner::LoadTuned(const Plan& plan,
                                                          const PlanKey& key) const {
  const auto [path, text] = TuneCachePath(key);
  if (path.empty()) return std::nullopt;
  std::ifstream in(path);
  std::string stored, hex;
  if (!std::getline(in, stored) || stored != text || !std::getline(in, hex)) return std::nullopt;
  cublasLtMatmulAlgo_t algo;
  if (hex.size() != 2 * sizeof(algo)) return std::nullopt;
  auto* bytes = reinterpret_cast<unsigned char*>(&algo);
  for (size_t i = 0; i < sizeof(algo); ++i) {
    unsigned value = 0;
    if (std::sscanf(hex.c_str() + 2 * i, "%2x", &value) != 1) return std::nullopt;
    bytes[i] = static_cast<unsigned char>(value);
  }
  // A damaged or foreign entry is a miss, never an algorithm cuBLASLt does not accept.
  cublasLtMatmulHeuristicResult_t result = {};
  if (cublasLtMatmulAlgoCheck(handle_, plan.desc.get(), plan.lt_a.get(), plan.lt_b.get(),
                              plan.lt_c.get(), plan.lt_d.get(), &algo,
                              &result) != CUBLAS_STATUS_SUCCESS ||
      result.state != CUBLAS_STATUS_SUCCESS ||
      result.workspaceSize > static_cast<size_t>(workspace_bytes_)) {
    return std::nullopt;
  }
  return algo;
}

void GemmRunner::StoreTuned(const PlanKey& key, const cublasLtMatmulAlgo_t& algo) const {
  const auto [path, text] = TuneCachePath(key);
  if (path.empty()) return;
  std::error_code error;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), error);
  if (error) return;  // a cache that cannot be written only costs the next process a tuning
  std::string hex;
  const auto* bytes = reinterpret_cast<const unsigned char*>(&algo);
  for (size_t i = 0; i < sizeof(algo); ++i) hex += absl::StrFormat("%02x", bytes[i]);
  // Written aside and renamed into place: a reader sees a whole entry or none.
  static std::atomic<int> serial{0};  // threads of one process write their own files
  const std::string tmp = absl::StrFormat("%s.%d.%d.tmp", path, static_cast<int>(getpid()),
                                          serial.fetch_add(1, std::memory_order_relaxed));
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text << "\n" << hex << "\n";
    if (!out) {
      std::filesystem::remove(tmp, error);
      return;
    }
  }
  std::filesystem::rename(tmp, path, error);
  if (error) std::filesystem::remove(tmp, error);
}

// The heuristic's first kWidenFrom answers with each cluster shape of kClusters and each custom
// option the algorithm accepts (up to 8), those that cuBLASLt accepts for the plan. On the H100
// an exhaustive search over cuBLASLt's configurations for BERT-base's layer GEMMs
// (vm_cuda_gemm_algo_search_bench, bench/results/gpu/run-2026-12-07d) found its winners among
// these: at M = 384 5-10% faster than the heuristic's first answer (QKV 5.89 against 6.41 µs,
// FFN1 7.25 against 7.95), mostly 1x1 clusters and custom options 1, 3, 5 or 7.
std::vector<cublasLtMatmulAlgo_t> GemmRunner::WidenCandidates(const Plan& plan) const {
  constexpr size_t kWidenFrom = 4;
  constexpr uint16_t kClusters[] = {CUBLASLT_CLUSTER_SHAPE_1x1x1, CUBLASLT_CLUSTER_SHAPE_2x1x1,
                                    CUBLASLT_CLUSTER_SHAPE_1x2x1, CUBLASLT_CLUSTER_SHAPE_4x1x1,
                                    CUBLASLT_CLUSTER_SHAPE_2x2x1, CUBLASLT_CLUSTER_SHAPE_4x2x1};
  std::vector<cublasLtMatmulAlgo_t> out;
  auto seen = [&](const cublasLtMatmulAlgo_t& a) {
    for (const auto& b : plan.candidates) {
      if (std::memcmp(&a, &b, sizeof(a)) == 0) return true;
    }
    for (const auto& b : out) {
      if (std::memcmp(&a, &b, sizeof(a)) == 0) return true;
    }
    return false;
  };
  for (size_t i = 0; i < plan.candidates.size() && i < kWidenFrom; ++i) {
    const cublasLtMatmulAlgo_t& base = plan.candidates[i];
    int32_t custom_max = 0;
    size_t written = 0;
    if (cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_CUSTOM_OPTION_MAX, &custom_max,
                                          sizeof(custom_max), &written) != CUBLAS_STATUS_SUCCESS) {
      custom_max = 0;
    }
    custom_max = std::clamp(custom_max, 0, 7);
    for (uint16_t cluster : kClusters) {
      for (uint32_t custom = 0; custom <= static_cast<uint32_t>(custom_max); ++custom) {
        cublasLtMatmulAlgo_t algo = base;
        if (cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID,
                                                 &cluster,
                                                 sizeof(cluster)) != CUBLAS_STATUS_SUCCESS ||
            cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, &custom,
                                                 sizeof(custom)) != CUBLAS_STATUS_SUCCESS ||
            seen(algo)) {
          continue;
        }
        cublasLtMatmulHeuristicResult_t result = {};
        if (cublasLtMatmulAlgoCheck(handle_, plan.desc.get(), plan.lt_a.get(), plan.lt_b.get(),
                                    plan.lt_c.get(), plan.lt_d.get(), &algo,
                                    &result) == CUBLAS_STATUS_SUCCESS &&
            result.state == CUBLAS_STATUS_SUCCESS &&
            result.workspaceSize <= static_cast<size_t>(workspace_bytes_)) {
          out.push_back(algo);
        }
      }
    }
  }
  return out;
}

absl::StatusOr<bool> GemmRunner::Tune(Plan& plan, const PlanKey& key, const GemmOperands& o,
                                      const void* c, cudaStream_t stream, bool* decided) {
  *decided = false;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) return false;
  std::vector<cublasLtMatmulAlgo_t> candidates = plan.candidates;
  if (WideTuneFromEnv()) {
    for (const auto& algo : WidenCandidates(plan)) candidates.push_back(algo);
  }
  if (candidates.size() < 2) {
    *decided = true;  // nothing to choose from
    return false;
  }
  NIMBLE_ASSIGN_OR_RETURN(void* workspace, Workspace(stream));
  const int bytes = ElementBytes(key.precision);
  const int64_t d_elems = key.batch > 1 ? (key.batch - 1) * key.stride_d + key.m * key.n
                                        : key.m * key.n;
  // A's extent: the last batch's last row ends (m - 1) * lda + k elements past its start.
  const int64_t a_rows = key.lda != 0 ? (key.m - 1) * key.lda + key.k : key.m * key.k;
  const int64_t a_elems =
      key.batch > 1 && key.stride_a > 0 ? (key.batch - 1) * key.stride_a + a_rows : a_rows;
  const int64_t b_bytes =
      (key.batch > 1 && key.stride_b > 0 ? (key.batch - 1) * key.stride_b + key.k * key.n
                                         : key.k * key.n) *
      bytes;
  int l2_bytes = 0;
  NIMBLE_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&l2_bytes, cudaDevAttrL2CacheSize, device_));
  const int64_t flush_bytes = std::max<int64_t>(int64_t{2} * l2_bytes, int64_t{8} << 20);
  // Copies of the weights, so that each GEMM of a timing reads its own from HBM (up to
  // kTuneCopies, fewer for weights over ~11 MB: at most ~64 MB of them in all).
  constexpr int kTuneCopies = 6;
  const int copies = static_cast<int>(
      std::clamp<int64_t>((int64_t{64} << 20) / std::max<int64_t>(b_bytes, 1), 1, kTuneCopies));
  // Copies 256 bytes apart at least, as aligned as the plan's alignment promises.
  const int64_t copy_stride = (b_bytes + 255) / 256 * 256;
  void* scratch = nullptr;
  void* flush = nullptr;
  void* weights = nullptr;
  // Stream-ordered: no device-wide synchronisation that could disturb other streams' work.
  NIMBLE_CUDA_RETURN_IF_ERROR(
      cudaMallocAsync(&scratch, static_cast<size_t>(d_elems) * (key.d_f32 ? 4 : bytes), stream));
  absl::Status status = CudaStatus(
      cudaMallocAsync(&flush, static_cast<size_t>(flush_bytes), stream), "cudaMallocAsync");
  if (status.ok() && copies > 1) {
    status = CudaStatus(
        cudaMallocAsync(&weights, static_cast<size_t>((copies - 1) * copy_stride), stream),
        "cudaMallocAsync");
  }
  for (int r = 1; status.ok() && r < copies; ++r) {
    status =
        CudaStatus(cudaMemcpyAsync(static_cast<char*>(weights) + (r - 1) * copy_stride, o.b,
                                   static_cast<size_t>(b_bytes), cudaMemcpyDeviceToDevice, stream),
                   "cudaMemcpyAsync");
  }
  cudaEvent_t start = nullptr, stop = nullptr;
  if (status.ok()) status = CudaStatus(cudaEventCreate(&start), "cudaEventCreate");
  if (status.ok()) status = CudaStatus(cudaEventCreate(&stop), "cudaEventCreate");
  const float alpha = o.alpha;
  const float beta = o.residual != nullptr ? 1.0f : 0.0f;
  // Without a residual C is the output: the scratch buffer stands in for both.
  const void* c_in = o.residual != nullptr ? c : scratch;
  if (status.ok() && HasBias(key.epilogue)) {
    status = SetDesc(plan.desc.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER, o.bias);
  }
  auto enqueue = [&](const cublasLtMatmulAlgo_t& algo) {
    for (int r = 0; r < copies; ++r) {
      const void* w = r == 0 ? o.b : static_cast<const char*>(weights) + (r - 1) * copy_stride;
      if (cublasLtMatmul(handle_, plan.desc.get(), &alpha, w, plan.lt_a.get(), o.a, plan.lt_b.get(),
                         &beta, c_in, plan.lt_c.get(), scratch, plan.lt_d.get(), &algo, workspace,
                         static_cast<size_t>(workspace_bytes_), stream) != CUBLAS_STATUS_SUCCESS) {
        return false;
      }
    }
    return true;
  };
  float best_ms = std::numeric_limits<float>::infinity();
  size_t best = 0;
  constexpr int kReplays = 5;
  for (size_t i = 0; status.ok() && i < candidates.size(); ++i) {
    // Eagerly once: an algorithm that does not run here is no candidate.
    if (!enqueue(candidates[i])) continue;
    // A candidate that cannot be captured (or a stream that cannot capture, like the legacy
    // default stream) is skipped, not an error: the heuristic's answer remains.
    if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
      (void)cudaGetLastError();
      continue;
    }
    const bool captured = enqueue(candidates[i]);
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
    cudaGraphExec_t exec = nullptr;
    if (ended != cudaSuccess || !captured || graph == nullptr ||
        cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) {
      (void)cudaGetLastError();
      exec = nullptr;
    }
    if (graph != nullptr) (void)cudaGraphDestroy(graph);
    std::vector<float> times;
    for (int r = 0; status.ok() && exec != nullptr && r < kReplays; ++r) {
      status = FlushL2(flush, flush_bytes, stream);
      if (status.ok()) status = PrefetchL2(o.a, a_elems * bytes, stream);
      if (status.ok()) status = CudaStatus(cudaEventRecord(start, stream), "cudaEventRecord");
      if (status.ok()) status = CudaStatus(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
      if (status.ok()) status = CudaStatus(cudaEventRecord(stop, stream), "cudaEventRecord");
      if (status.ok()) status = CudaStatus(cudaEventSynchronize(stop), "cudaEventSynchronize");
      float ms = 0;
      if (status.ok()) status = CudaStatus(cudaEventElapsedTime(&ms, start, stop), "elapsed");
      if (status.ok()) times.push_back(ms);
    }
    if (exec != nullptr) (void)cudaGraphExecDestroy(exec);
    if (times.size() != kReplays) continue;
    std::sort(times.begin(), times.end());
    if (times[kReplays / 2] < best_ms) best_ms = times[kReplays / 2], best = i;
  }
  if (start != nullptr) cudaEventDestroy(start);
  if (stop != nullptr) cudaEventDestroy(stop);
  const absl::Status freed = CudaStatus(cudaFreeAsync(scratch, stream), "cudaFreeAsync");
  if (flush != nullptr) (void)cudaFreeAsync(flush, stream);
  if (weights != nullptr) (void)cudaFreeAsync(weights, stream);
  NIMBLE_RETURN_IF_ERROR(status);
  NIMBLE_RETURN_IF_ERROR(freed);
  if (best_ms == std::numeric_limits<float>::infinity()) return false;
  *decided = true;
  plan.algo = candidates[best];
  return best != 0;
}

absl::StatusOr<GemmRunner::Plan*> GemmRunner::NewPlan(const PlanKey& key, const GemmOperands& o,
                                                      const void* c, cudaStream_t stream) {
  bool autotune = false;
  {
    absl::MutexLock lock(&mu_);
    autotune = autotune_.value_or(AutotuneFromEnv().value_or(warmup_streams_.contains(stream)));
  }
  // One tuning at a time per runner (per device): VMs warming up side by side (a server's
  // instances) would otherwise time the same plan at once, disturbing each other's timings,
  // which the tune cache would keep. A plan that another thread tuned meanwhile is taken.
  std::optional<absl::MutexLock> tune_lock;
  if (autotune) {
    tune_lock.emplace(&tune_mu_);
    absl::MutexLock lock(&mu_);
    if (auto it = plans_.find(key); it != plans_.end()) return it->second.get();
  }
  // Built outside mu_ (the heuristic takes tens of microseconds); a racing thread's identical
  // plan is dropped in favour of the first one stored.
  NIMBLE_ASSIGN_OR_RETURN(std::unique_ptr<Plan> made, MakePlan(key));
  bool tuned = false;
  std::optional<cublasLtMatmulAlgo_t> cached;
  if (autotune) cached = LoadTuned(*made, key);
  if (cached) {
    made->algo = *cached;
  } else if (autotune) {
    bool decided = false;
    absl::StatusOr<bool> timed = Tune(*made, key, o, c, stream, &decided);
    if (timed.ok()) {
      tuned = *timed;
      // Only a timed choice is kept (not the heuristic's answer of a plan made while capturing).
      if (decided) StoreTuned(key, made->algo);
    } else {
      // Tuning is an optimisation: a failure there (its buffers not allocated, say) keeps the
      // heuristic's answer. An error that sticks to the context (an earlier kernel's, found
      // while timing) is the call's error.
      (void)cudaGetLastError();
      if (const cudaError_t sticky = cudaStreamQuery(stream);
          sticky != cudaSuccess && sticky != cudaErrorNotReady) {
        return timed.status();
      }
      made->algo = made->candidates.front();
      absl::MutexLock lock(&mu_);
      ++stats_.tune_failures;
    }
  }
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = plans_.try_emplace(key, std::move(made));
  if (inserted) ++stats_.heuristic_queries;
  if (inserted && tuned) ++stats_.tuned;
  if (inserted && cached) ++stats_.tune_cache_hits;
  stats_.cached_algorithms = static_cast<int64_t>(plans_.size());
  return it->second.get();
}

absl::Status GemmRunner::Run(const GemmShape& s, GemmPrecision precision, GemmEpilogue epilogue,
                             const GemmOperands& o, cudaStream_t stream) {
  NIMBLE_RETURN_IF_ERROR(Validate(s, epilogue, o));
  const int bytes = ElementBytes(precision);
  const int d_bytes = s.d_f32 ? 4 : bytes;
  const int64_t stride_a = o.stride_a >= 0 ? o.stride_a : s.m * (s.lda > 0 ? s.lda : s.k);
  const int64_t stride_b = o.stride_b >= 0 ? o.stride_b : s.k * s.n;
  const int64_t stride_d = o.stride_d >= 0 ? o.stride_d : s.m * s.n;
  const int64_t stride_c =
      o.residual == nullptr ? stride_d : (o.stride_residual >= 0 ? o.stride_residual : s.m * s.n);
  const void* c = o.residual != nullptr ? o.residual : o.d;
  const bool batched = s.batch > 1;  // strides of a single matrix are irrelevant to the plan
  const PlanKey key{.m = s.m,
                    .n = s.n,
                    .k = s.k,
                    .batch = s.batch,
                    .stride_a = batched ? stride_a : 0,
                    .stride_b = batched ? stride_b : 0,
                    .stride_d = batched ? stride_d : 0,
                    .stride_residual = batched ? stride_c : 0,
                    .trans_a = s.trans_a,
                    .trans_b = s.trans_b,
                    .residual = o.residual != nullptr,
                    .lda = s.trans_a || s.lda == s.k ? 0 : s.lda,
                    .d_f32 = s.d_f32,
                    .precision = precision,
                    .epilogue = epilogue,
                    // cuBLASLt's A is our B and vice versa.
                    .align_a = Alignment(o.b, batched ? stride_b : 0, bytes),
                    .align_b = Alignment(o.a, batched ? stride_a : 0, bytes),
                    .align_c = Alignment(c, batched ? stride_c : 0, d_bytes),
                    .align_d = Alignment(o.d, batched ? stride_d : 0, d_bytes)};
  Plan* plan = nullptr;
  {
    absl::MutexLock lock(&mu_);
    ++stats_.runs;
    auto it = plans_.find(key);
    if (it != plans_.end()) plan = it->second.get();
  }
  if (plan == nullptr) {
    NIMBLE_ASSIGN_OR_RETURN(plan, NewPlan(key, o, c, stream));
  }
  NIMBLE_ASSIGN_OR_RETURN(void* workspace, Workspace(stream));
  const float alpha = o.alpha;
  const float beta = o.residual != nullptr ? 1.0f : 0.0f;
  // The bias pointer lives in the shared descriptor: set it and enqueue under the plan's lock.
  absl::MutexLock lock(&plan->mu);
  if (HasBias(epilogue)) {
    NIMBLE_RETURN_IF_ERROR(SetDesc(plan->desc.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER, o.bias));
  }
  absl::Status status = CublasStatus(
      cublasLtMatmul(handle_, plan->desc.get(), &alpha, o.b, plan->lt_a.get(), o.a,
                     plan->lt_b.get(), &beta, c, plan->lt_c.get(), o.d, plan->lt_d.get(),
                     &plan->algo, workspace, static_cast<size_t>(workspace_bytes_), stream),
      "cublasLtMatmul");
  if (status.ok()) return status;  // the context string is built only for errors
  return Annotate(status, absl::StrFormat("%s GEMM M=%d N=%d K=%d batch=%d epilogue %s",
                                          PrecisionName(precision), s.m, s.n, s.k, s.batch,
                                          EpilogueName(epilogue)));
}

GemmStats GemmRunner::Stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace nimble::vm::cuda
