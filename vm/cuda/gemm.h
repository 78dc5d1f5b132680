// Row-major GEMM through cuBLASLt with fused epilogues:
//
//   D[b] = act(alpha * op(A[b]) * op(B[b]) + bias) [+ residual[b]]      b < batch
//
// op(A) is M x K (A stored M x K, or K x M with trans_a), op(B) is K x N (B stored K x N, or
// N x K with trans_b — the layout of a Linear/Gemm weight), D and residual are M x N, bias is N.
// All row-major and dense; batches are strided (default: contiguous; stride 0 broadcasts an
// operand, e.g. shared weights).
//
// Row-major is mapped onto cuBLASLt's column-major convention by computing D^T = op(B)^T op(A)^T:
// the stored row-major buffers are exactly the column-major transposes, so nothing is copied.
// The residual is cuBLASLt's C with beta = 1, which it adds *before* the epilogue; it is therefore
// allowed only with epilogues without an activation (where the two orders agree).
//
// Precisions: A, B, D, bias and residual share one storage type; accumulation is fp32 always.
// kTF32 stores fp32 and multiplies in TF32 on the tensor cores. The GELU epilogue is cuBLASLt's.
//
// Plans (descriptors, layouts and the heuristic's algorithm) are made once per (shape,
// precision, epilogue, pointer alignment) and cached, so a repeated GEMM costs one
// cublasLtMatmul call on the host; each stream gets its own workspace, so concurrent GEMMs on
// different streams never share scratch memory.
//
// Thread-safety: Run may be called concurrently from several threads (cache and workspace map are
// guarded by a mutex; cuBLASLt handles are thread-safe).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace nimble::vm::cuda {

// Destroys cuBLASLt descriptors (owned by the cached plans).
struct GemmDescDeleter {
  void operator()(cublasLtMatmulDescOpaque_t* desc) const;
  void operator()(cublasLtMatrixLayoutOpaque_t* layout) const;
  void operator()(cublasLtMatmulPreferenceOpaque_t* pref) const;
};

enum class GemmPrecision { kF32, kTF32, kF16, kBF16 };
enum class GemmEpilogue { kNone, kBias, kGelu, kBiasGelu, kRelu, kBiasRelu };

const char* PrecisionName(GemmPrecision precision);
const char* EpilogueName(GemmEpilogue epilogue);
// Bytes per stored element.
int ElementBytes(GemmPrecision precision);

struct GemmShape {
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  int64_t batch = 1;
  bool trans_a = false;
  bool trans_b = false;
  // Elements between consecutive rows of A (not transposed); 0: K. A wider row takes K columns
  // of a larger matrix, e.g. one slice of K per batch (with stride_a = K / slices).
  int64_t lda = 0;
  // D (and the residual) stored as f32 whatever the precision's storage type (fp32 partial
  // products of half inputs).
  bool d_f32 = false;
};

struct GemmOperands {
  const void* a = nullptr;
  const void* b = nullptr;
  void* d = nullptr;
  const void* bias = nullptr;      // N elements; required by the kBias* epilogues
  const void* residual = nullptr;  // M x N per batch; optional
  float alpha = 1.0f;
  // Elements between consecutive batches; -1 = contiguous (M*K, K*N, M*N), 0 = broadcast.
  int64_t stride_a = -1;
  int64_t stride_b = -1;
  int64_t stride_d = -1;
  int64_t stride_residual = -1;
};

struct GemmStats {
  int64_t runs = 0;
  int64_t heuristic_queries = 0;  // cache misses
  int64_t cached_algorithms = 0;
  int64_t workspaces = 0;  // streams that got one
  int64_t tuned = 0;       // plans whose algorithm was chosen by timing the candidates
  int64_t tune_cache_hits = 0;  // plans whose tuned algorithm came from the tune cache
  int64_t tune_failures = 0;    // tunings that failed (the heuristic's answer was kept)
};

class GemmRunner {
 public:
  static constexpr int64_t kDefaultWorkspaceBytes = int64_t{32} << 20;  // NVIDIA's Hopper advice

  static absl::StatusOr<std::unique_ptr<GemmRunner>> Create(
      int device = 0, int64_t workspace_bytes = kDefaultWorkspaceBytes);
  // Waits for the device, then frees the workspaces.
  ~GemmRunner();
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  // Queues the GEMM on `stream`. kInvalidArgument for bad shapes or missing operands,
  // kUnimplemented when cuBLASLt has no algorithm for the combination.
  absl::Status Run(const GemmShape& shape, GemmPrecision precision, GemmEpilogue epilogue,
                   const GemmOperands& operands, cudaStream_t stream);

  // Allocates `stream`'s workspace now. Needed before capturing GEMMs on `stream` into a CUDA
  // graph (cudaMalloc cannot be captured; Run then fails with kFailedPrecondition).
  absl::Status ReserveWorkspace(cudaStream_t stream);

  GemmStats Stats() const;

  // Whether plans made from now on time cuBLASLt's candidate algorithms (each from a flushed L2,
  // as a model's weights are) instead of taking the heuristic's first answer. Default:
  // NIMBLE_GEMM_AUTOTUNE=1 or 0 in the environment when set; otherwise only plans made on a
  // warm-up stream (SetWarmupStream) are tuned.
  void SetAutotune(bool on);

  // Marks `stream` as running a warm-up (on) or not (off): the eager call before a CUDA graph
  // of fixed shapes is captured, whose GEMMs the graph then replays many times, so the one-off
  // cost of tuning them pays (with the tune cache, once per machine).
  void SetWarmupStream(cudaStream_t stream, bool on);

  // A directory where tuned plans' algorithms are kept across processes (one small file per
  // plan, keyed by the device, cuBLASLt's version and everything the plan depends on): a plan
  // found there is not timed again. "" (the default): tuning results live with the runner only.
  void SetTuneCacheDir(std::string dir);

 private:
  // Everything the heuristic's answer depends on.
  struct PlanKey {
    int64_t m, n, k, batch, stride_a, stride_b, stride_d, stride_residual;
    bool trans_a, trans_b, residual;
    int64_t lda;  // 0: K
    bool d_f32;
    GemmPrecision precision;
    GemmEpilogue epilogue;
    int align_a, align_b, align_c, align_d;
    template <typename H>
    friend H AbslHashValue(H h, const PlanKey& key) {
      return H::combine(std::move(h), key.m, key.n, key.k, key.batch, key.stride_a, key.stride_b,
                        key.stride_d, key.stride_residual, key.trans_a, key.trans_b, key.residual,
                        key.lda, key.d_f32, key.precision, key.epilogue, key.align_a, key.align_b,
                        key.align_c, key.align_d);
    }
    friend bool operator==(const PlanKey& x, const PlanKey& y) {
      auto tie = [](const PlanKey& p) {
        return std::tie(p.m, p.n, p.k, p.batch, p.stride_a, p.stride_b, p.stride_d,
                        p.stride_residual, p.trans_a, p.trans_b, p.residual, p.lda, p.d_f32,
                        p.precision, p.epilogue, p.align_a, p.align_b, p.align_c, p.align_d);
      };
      return tie(x) == tie(y);
    }
  };

  // Everything a Run of one key needs but the pointers: descriptors, layouts and the algorithm.
  struct Plan {
    std::unique_ptr<cublasLtMatmulDescOpaque_t, GemmDescDeleter> desc;
    std::unique_ptr<cublasLtMatrixLayoutOpaque_t, GemmDescDeleter> lt_a, lt_b, lt_c, lt_d;
    cublasLtMatmulAlgo_t algo;
    std::vector<cublasLtMatmulAlgo_t> candidates;  // the heuristic's answers, best first
    absl::Mutex mu;  // guards desc's bias pointer from being set until the matmul is enqueued
  };

  GemmRunner(int device, int64_t workspace_bytes, cublasLtHandle_t handle)
      : device_(device), workspace_bytes_(workspace_bytes), handle_(handle) {}
  absl::StatusOr<void*> Workspace(cudaStream_t stream);
  absl::StatusOr<std::unique_ptr<Plan>> MakePlan(const PlanKey& key);
  // The plan of a key that Run did not find: made, tuned where autotuning is on (Run's
  // operands; `c` is C), and stored.
  absl::StatusOr<Plan*> NewPlan(const PlanKey& key, const GemmOperands& o, const void* c,
                                cudaStream_t stream);
  // Called with autotuning on: times the plan's candidate algorithms (and, unless
  // NIMBLE_GEMM_TUNE_WIDE=0, WidenCandidates) on these operands, each as a captured graph of a
  // few GEMMs over copies of the weights replayed from a flushed L2 (the output goes to a
  // stream-ordered scratch buffer; inputs are only read), and keeps the fastest (median of five
  // replays). Skipped while `stream` is capturing. The timing captures `stream`: no other thread
  // may queue work on it meanwhile (the VM's streams have one user at a time).
  // Returns whether a timed candidate replaced the heuristic's answer.
  // `decided`: whether the plan's algorithm is now a tuned choice (timed, or the only candidate),
  // which the tune cache may keep.
  absl::StatusOr<bool> Tune(Plan& plan, const PlanKey& key, const GemmOperands& o, const void* c,
                            cudaStream_t stream, bool* decided);
  // Variants of the heuristic's first answers (cluster shapes, custom options) that cuBLASLt
  // accepts for the plan and the plan's candidates do not already hold.
  std::vector<cublasLtMatmulAlgo_t> WidenCandidates(const Plan& plan) const;
  // The tune cache's file for `key` ("" without a cache directory) and the key's full text
  // (stored in the file and compared on reading, so a hash collision is a miss).
  std::pair<std::string, std::string> TuneCachePath(const PlanKey& key) const;
  // With autotuning on and a cache directory: the algorithm stored for `key`, if cuBLASLt still
  // accepts it for `plan`.
  std::optional<cublasLtMatmulAlgo_t> LoadTuned(const Plan& plan, const PlanKey& key) const;
  void StoreTuned(const PlanKey& key, const cublasLtMatmulAlgo_t& algo) const;

  const int device_;
  const int64_t workspace_bytes_;
  const cublasLtHandle_t handle_;

  mutable absl::Mutex mu_;
  // Plans are never erased, so a Plan* stays valid after mu_ is released.
  absl::flat_hash_map<PlanKey, std::unique_ptr<Plan>> plans_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<cudaStream_t, void*> workspaces_ ABSL_GUARDED_BY(mu_);
  GemmStats stats_ ABSL_GUARDED_BY(mu_);
  std::optional<bool> autotune_ ABSL_GUARDED_BY(mu_);  // unset: from the environment
  absl::flat_hash_set<cudaStream_t> warmup_streams_ ABSL_GUARDED_BY(mu_);
  absl::Mutex tune_mu_ ABSL_ACQUIRED_BEFORE(mu_);  // held while a plan is tuned
  std::string tune_cache_dir_ ABSL_GUARDED_BY(mu_);
};

}  // namespace nimble::vm::cuda
