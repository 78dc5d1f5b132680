// Does any cuBLASLt configuration beat the heuristic's first answer on BERT-base's layer GEMMs?
// For each of the four GEMMs (fp16 in and out, fp32 accumulation, the model's epilogues and
// residuals; M rows, default 384 and 128):
//   qkv  = x * Wqkv + b           M x 2304 x 768
//   out  = x * Wo + b + x         M x 768 x 768 (residual)
//   ffn1 = gelu(y * W1 + b)       M x 3072 x 768
//   ffn2 = h * W2 + b + y         M x 768 x 3072 (residual)
// it enumerates configurations and times each the way the model runs them: kReps GEMMs with
// distinct weights in one CUDA graph, replayed after an L2 flush (so weights come from HBM and
// activations from L2, as in a 12-layer model).
//   phase 1  every algorithm id's tiles x stages x cluster shapes (split-K 1), plus the
//            heuristic's answers (best-fit and limited to each id): 3 replays each, min
//   phase 2  the 24 fastest of phase 1 with split-K 2-4 and each reduction scheme, CTA
//            swizzling and custom options: 3 replays each
//   final    the 8 fastest and the heuristic's first four, 30 replays each, median; the winner's
//            output compared with the heuristic's
// Prints per GEMM the heuristic's first answer, the winner, their configurations and times.
// With --split it runs SplitSearch instead (large tiles, deep split-K; see there).
// Usage: vm_cuda_gemm_algo_search_bench [--split] [M ...]
#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "vm/cuda/cuda_status.h"
#include "vm/cuda/device_info.h"
#include "vm/cuda/graph_timing.h"
#include "vm/cuda/l2_prefetch.h"
#include "vm/cuda/stream.h"

namespace nimble::vm::cuda {
namespace {

constexpr int kReps = 12;  // GEMMs per graph, each with its own weights
constexpr int64_t kHidden = 768, kQkv = 2304, kFfn = 3072;
constexpr size_t kWorkspace = size_t{32} << 20;

struct Shape {
  const char* name;
  int64_t n, k;
  cublasLtEpilogue_t epilogue;
  bool residual;
};
constexpr Shape kShapes[4] = {{"qkv", kQkv, kHidden, CUBLASLT_EPILOGUE_BIAS, false},
                              {"out", kHidden, kHidden, CUBLASLT_EPILOGUE_BIAS, true},
                              {"ffn1", kFfn, kHidden, CUBLASLT_EPILOGUE_GELU_BIAS, false},
                              {"ffn2", kHidden, kFfn, CUBLASLT_EPILOGUE_BIAS, true}};

bool Ok(cublasStatus_t s) { return s == CUBLAS_STATUS_SUCCESS; }

template <typename T>
T Config(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoConfigAttributes_t attr) {
  T v{};
  size_t written = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&algo, attr, &v, sizeof(v), &written);
  return v;
}

std::string Describe(const cublasLtMatmulAlgo_t& algo) {
  return absl::StrFormat(
      "id %d tile %u stages %u cluster %u splitk %d red %u swz %u custom %u inner %u",
      Config<int32_t>(algo, CUBLASLT_ALGO_CONFIG_ID),
      Config<uint32_t>(algo, CUBLASLT_ALGO_CONFIG_TILE_ID),
      Config<uint32_t>(algo, CUBLASLT_ALGO_CONFIG_STAGES_ID),
      Config<uint16_t>(algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID),
      Config<int32_t>(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM),
      Config<uint32_t>(algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME),
      Config<uint32_t>(algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING),
      Config<uint32_t>(algo, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION),
      Config<uint16_t>(algo, CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID));
}

template <typename T>
std::vector<T> CapList(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoCapAttributes_t attr) {
  size_t bytes = 0;
  if (!Ok(cublasLtMatmulAlgoCapGetAttribute(&algo, attr, nullptr, 0, &bytes)) || bytes == 0) {
    return {};
  }
  std::vector<T> v(bytes / sizeof(T));
  size_t written = 0;
  if (!Ok(cublasLtMatmulAlgoCapGetAttribute(&algo, attr, v.data(), bytes, &written))) return {};
  v.resize(written / sizeof(T));
  return v;
}

template <typename T>
T Cap(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoCapAttributes_t attr) {
  T v{};
  size_t written = 0;
  cublasLtMatmulAlgoCapGetAttribute(&algo, attr, &v, sizeof(v), &written);
  return v;
}

struct Candidate {
  cublasLtMatmulAlgo_t algo;
  float us = 0;
  std::string origin;
};

bool SameAlgo(const cublasLtMatmulAlgo_t& a, const cublasLtMatmulAlgo_t& b) {
  return std::memcmp(&a, &b, sizeof(a)) == 0;
}

class Problem {
 public:
  Problem(cublasLtHandle_t handle, const Shape& shape, int64_t m, std::mt19937& rng)
      : handle_(handle), shape_(shape), m_(m) {
    for (int r = 0; r < kReps; ++r) {
      weights_.push_back(DeviceRandom(shape.n * shape.k, rng));
      biases_.push_back(DeviceRandom(shape.n, rng));
    }
    a_ = DeviceRandom(m * shape.k, rng);
    c_ = DeviceRandom(m * shape.n, rng);
    d_ = DeviceRandom(m * shape.n, rng);
    // Column-major view, as GemmRunner: D^T (N x M) = W^T-view (N x K) * x^T-view (K x M).
    cublasLtMatrixLayoutCreate(&la_, CUDA_R_16F, shape.n, shape.k, shape.n);
    cublasLtMatrixLayoutCreate(&lb_, CUDA_R_16F, shape.k, m, shape.k);
    cublasLtMatrixLayoutCreate(&lc_, CUDA_R_16F, shape.n, m, shape.n);
    cublasLtMatrixLayoutCreate(&ld_, CUDA_R_16F, shape.n, m, shape.n);
    cublasLtMatmulDescCreate(&desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    const int32_t op = CUBLAS_OP_N;
    cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSA, &op, sizeof(op));
    cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSB, &op, sizeof(op));
    const uint32_t epilogue = shape.epilogue;
    cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                   sizeof(epilogue));
  }
  ~Problem() {
    for (void* p : weights_) cudaFree(p);
    for (void* p : biases_) cudaFree(p);
    cudaFree(a_);
    cudaFree(c_);
    cudaFree(d_);
    cublasLtMatrixLayoutDestroy(la_);
    cublasLtMatrixLayoutDestroy(lb_);
    cublasLtMatrixLayoutDestroy(lc_);
    cublasLtMatrixLayoutDestroy(ld_);
    cublasLtMatmulDescDestroy(desc_);
  }
  bool ready() const {
    for (const auto* list : {&weights_, &biases_}) {
      for (void* p : *list) {
        if (p == nullptr) return false;
      }
    }
    return a_ != nullptr && c_ != nullptr && d_ != nullptr;
  }

  // The heuristic's answers: best fit, or limited to one algorithm id.
  std::vector<cublasLtMatmulAlgo_t> Heuristic(int count, int algo_id = -1) {
    cublasLtMatmulPreference_t pref = nullptr;
    cublasLtMatmulPreferenceCreate(&pref);
    const uint64_t ws = kWorkspace;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                         sizeof(ws));
    std::vector<cublasLtMatmulHeuristicResult_t> results(count);
    int returned = 0;
    std::vector<cublasLtMatmulAlgo_t> algos;
    cublasLtMatmulAlgo_t limited;
    bool ok = true;
    if (algo_id >= 0) {
      const uint32_t mode = CUBLASLT_SEARCH_LIMITED_BY_ALGO_ID;
      ok = Ok(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_SEARCH_MODE, &mode,
                                                   sizeof(mode))) &&
           Ok(Init(algo_id, &limited));
      if (ok) results[0].algo = limited;  // the search starts from the id in the first result
    }
    if (ok && Ok(cublasLtMatmulAlgoGetHeuristic(handle_, desc_, la_, lb_, lc_, ld_, pref, count,
                                                results.data(), &returned))) {
      for (int i = 0; i < returned; ++i) {
        if (Ok(results[i].state)) algos.push_back(results[i].algo);
      }
    }
    cublasLtMatmulPreferenceDestroy(pref);
    return algos;
  }

  cublasStatus_t Init(int id, cublasLtMatmulAlgo_t* algo) {
    return cublasLtMatmulAlgoInit(handle_, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16F, CUDA_R_16F,
                                  CUDA_R_16F, CUDA_R_16F, id, algo);
  }

  bool Check(const cublasLtMatmulAlgo_t& algo) {
    cublasLtMatmulHeuristicResult_t result = {};
    return Ok(cublasLtMatmulAlgoCheck(handle_, desc_, la_, lb_, lc_, ld_, &algo, &result)) &&
           Ok(result.state) && result.workspaceSize <= kWorkspace;
  }

  cublasStatus_t Run(const cublasLtMatmulAlgo_t& algo, int rep, void* workspace,
                     cudaStream_t stream) {
    cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &biases_[rep],
                                   sizeof(void*));
    const float alpha = 1.0f, beta = shape_.residual ? 1.0f : 0.0f;
    return cublasLtMatmul(handle_, desc_, &alpha, weights_[rep], la_, a_, lb_, &beta,
                          shape_.residual ? c_ : d_, lc_, d_, ld_, &algo, workspace, kWorkspace,
                          stream);
  }

  // Median (or, with few replays, about the minimum) of the graph of kReps GEMMs, µs a GEMM;
  // each replay after an L2 flush unless flush_bytes is 0.
  absl::StatusOr<float> Time(const cublasLtMatmulAlgo_t& algo, int replays, void* workspace,
                             void* flush, int64_t flush_bytes, cudaStream_t stream) {
    NIMBLE_ASSIGN_OR_RETURN(const float ms,
                            MedianGraphReplayMs(
                                stream, replays,
                                [&]() -> absl::Status {
                                  for (int r = 0; r < kReps; ++r) {
                                    const cublasStatus_t s = Run(algo, r, workspace, stream);
                                    if (!Ok(s))
                                      return absl::InternalError(cublasLtGetStatusName(s));
                                  }
                                  return absl::OkStatus();
                                },
                                [&] {
                                  return flush_bytes > 0 ? FlushL2(flush, flush_bytes, stream)
                                                         : absl::OkStatus();
                                }));
    return ms * 1e3f / kReps;
  }

  // The output of rep 0 with `algo`, on the host.
  std::vector<float> Output(const cublasLtMatmulAlgo_t& algo, void* workspace,
                            cudaStream_t stream) {
    std::vector<__half> host(static_cast<size_t>(m_ * shape_.n));
    if (!Ok(Run(algo, 0, workspace, stream)) || cudaStreamSynchronize(stream) != cudaSuccess ||
        cudaMemcpy(host.data(), d_, host.size() * 2, cudaMemcpyDeviceToHost) != cudaSuccess) {
      return {};
    }
    std::vector<float> out(host.size());
    for (size_t i = 0; i < host.size(); ++i) out[i] = __half2float(host[i]);
    return out;
  }

  const Shape& shape() const { return shape_; }

 private:
  cublasLtHandle_t handle_;
  Shape shape_;
  int64_t m_;
  std::vector<void*> weights_, biases_;
  void *a_ = nullptr, *c_ = nullptr, *d_ = nullptr;
  cublasLtMatrixLayout_t la_ = nullptr, lb_ = nullptr, lc_ = nullptr, ld_ = nullptr;
  cublasLtMatmulDesc_t desc_ = nullptr;
};

void AddUnique(std::vector<Candidate>& pool, const cublasLtMatmulAlgo_t& algo,
               const std::string& origin) {
  for (const Candidate& c : pool) {
    if (SameAlgo(c.algo, algo)) return;
  }
  pool.push_back({algo, 0, origin});
}

template <typename T>
bool SetConfig(cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoConfigAttributes_t attr, T v) {
  return Ok(cublasLtMatmulAlgoConfigSetAttribute(&algo, attr, &v, sizeof(v)));
}

int Search(cublasLtHandle_t handle, const Shape& shape, int64_t m, std::mt19937& rng,
           void* workspace, void* flush, int64_t flush_bytes, cudaStream_t stream) {
  Problem problem(handle, shape, m, rng);
  if (!problem.ready()) {
    std::printf("allocation failed\n");
    return 1;
  }
  const std::vector<cublasLtMatmulAlgo_t> heuristic = problem.Heuristic(16);
  if (heuristic.empty()) {
    std::printf("%s M=%ld: no heuristic answer\n", shape.name, m);
    return 1;
  }
  std::vector<Candidate> pool;
  for (size_t i = 0; i < heuristic.size(); ++i) AddUnique(pool, heuristic[i], "heur");
  int ids[512];
  int nids = 0;
  cublasLtMatmulAlgoGetIds(handle, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16F, CUDA_R_16F,
                           CUDA_R_16F, CUDA_R_16F, 512, ids, &nids);
  const uint16_t clusters[] = {CUBLASLT_CLUSTER_SHAPE_AUTO,  CUBLASLT_CLUSTER_SHAPE_1x1x1,
                               CUBLASLT_CLUSTER_SHAPE_2x1x1, CUBLASLT_CLUSTER_SHAPE_1x2x1,
                               CUBLASLT_CLUSTER_SHAPE_4x1x1, CUBLASLT_CLUSTER_SHAPE_1x4x1,
                               CUBLASLT_CLUSTER_SHAPE_2x2x1};
  int checked = 0;
  for (int i = 0; i < nids; ++i) {
    for (const auto& algo : problem.Heuristic(8, ids[i])) {
      AddUnique(pool, algo, absl::StrFormat("heur-id%d", ids[i]));
    }
    cublasLtMatmulAlgo_t base;
    if (!Ok(problem.Init(ids[i], &base))) continue;
    std::vector<uint32_t> tiles = CapList<uint32_t>(base, CUBLASLT_ALGO_CAP_TILE_IDS);
    std::vector<uint32_t> stages = CapList<uint32_t>(base, CUBLASLT_ALGO_CAP_STAGES_IDS);
    if (tiles.empty()) tiles.push_back(CUBLASLT_MATMUL_TILE_UNDEFINED);
    if (stages.empty()) stages.push_back(CUBLASLT_MATMUL_STAGES_UNDEFINED);
    for (uint32_t tile : tiles) {
      for (uint32_t stage : stages) {
        for (uint16_t cluster : clusters) {
          cublasLtMatmulAlgo_t algo = base;
          if (!SetConfig(algo, CUBLASLT_ALGO_CONFIG_TILE_ID, tile) ||
              !SetConfig(algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, stage) ||
              !SetConfig(algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, cluster)) {
            continue;
          }
          ++checked;
          if (problem.Check(algo)) AddUnique(pool, algo, absl::StrFormat("enum-id%d", ids[i]));
        }
      }
    }
  }
  std::printf("%s M=%ld N=%ld K=%ld: %d algorithm ids, %d configurations checked, %zu in phase 1\n",
              shape.name, m, shape.n, shape.k, nids, checked, pool.size());
  std::fflush(stdout);
  auto time_all = [&](std::vector<Candidate>& list, int replays) {
    for (Candidate& c : list) {
      auto us = problem.Time(c.algo, replays, workspace, flush, flush_bytes, stream);
      c.us = us.ok() ? *us : 1e9f;
      if (!us.ok()) (void)cudaGetLastError();
    }
    std::sort(list.begin(), list.end(),
              [](const Candidate& a, const Candidate& b) { return a.us < b.us; });
  };
  time_all(pool, 3);
  // Phase 2: split-K, reduction schemes, swizzling, custom options around the 24 fastest.
  std::vector<Candidate> expanded;
  for (size_t i = 0; i < std::min<size_t>(24, pool.size()); ++i) {
    const cublasLtMatmulAlgo_t& base = pool[i].algo;
    const int split_support = Cap<int32_t>(base, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT);
    const uint32_t red_mask = Cap<uint32_t>(base, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK);
    const int swz_support = Cap<uint32_t>(base, CUBLASLT_ALGO_CAP_CTA_SWIZZLING_SUPPORT);
    const int custom_max = std::min(Cap<int32_t>(base, CUBLASLT_ALGO_CAP_CUSTOM_OPTION_MAX), 7);
    for (int split : {1, 2, 3, 4}) {
      if (split > 1 && split_support == 0) break;
      for (uint32_t red : {0u, 1u, 2u, 4u}) {
        if ((split == 1) != (red == 0) || (red != 0 && (red_mask & red) == 0)) continue;
        for (uint32_t swz = 0; swz <= (swz_support != 0 ? 1u : 0u); ++swz) {
          for (uint32_t custom = 0; custom <= static_cast<uint32_t>(std::max(custom_max, 0));
               ++custom) {
            cublasLtMatmulAlgo_t algo = base;
            if (!SetConfig(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, int32_t{split}) ||
                !SetConfig(algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, red) ||
                !SetConfig(algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, swz) ||
                !SetConfig(algo, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, custom)) {
              continue;
            }
            bool seen = false;
            for (size_t j = 0; j < pool.size() && !seen; ++j) seen = SameAlgo(pool[j].algo, algo);
            for (const Candidate& c : expanded) seen = seen || SameAlgo(c.algo, algo);
            if (!seen && problem.Check(algo)) expanded.push_back({algo, 0, pool[i].origin + "+x"});
          }
        }
      }
    }
  }
  std::printf("  phase 2: %zu configurations\n", expanded.size());
  std::fflush(stdout);
  time_all(expanded, 3);
  std::vector<Candidate> finals;
  for (size_t i = 0; i < heuristic.size() && i < 4; ++i) {
    finals.push_back({heuristic[i], 0, absl::StrFormat("heuristic #%zu", i)});
  }
  for (const auto* list : {&pool, &expanded}) {
    for (size_t i = 0; i < std::min<size_t>(8, list->size()); ++i) {
      bool seen = false;
      for (const Candidate& c : finals) seen = seen || SameAlgo(c.algo, (*list)[i].algo);
      if (!seen) finals.push_back((*list)[i]);
    }
  }
  for (Candidate& c : finals) {
    auto us = problem.Time(c.algo, 30, workspace, flush, flush_bytes, stream);
    c.us = us.ok() ? *us : 1e9f;
    if (!us.ok()) (void)cudaGetLastError();
  }
  const float heuristic_us = finals[0].us;
  std::sort(finals.begin(), finals.end(),
            [](const Candidate& a, const Candidate& b) { return a.us < b.us; });
  const std::vector<float> reference = problem.Output(heuristic[0], workspace, stream);
  for (size_t i = 0; i < finals.size(); ++i) {
    const std::vector<float> out = problem.Output(finals[i].algo, workspace, stream);
    double max_diff = out.size() == reference.size() && !out.empty() ? 0.0 : INFINITY;
    for (size_t j = 0; j < out.size() && j < reference.size(); ++j) {
      max_diff = std::max<double>(max_diff, std::fabs(out[j] - reference[j]));
    }
    std::printf("  %7.2f us (%.2fx) max|diff| %.2e  %-22s %s\n", finals[i].us,
                heuristic_us / finals[i].us, max_diff, finals[i].origin.c_str(),
                Describe(finals[i].algo).c_str());
  }
  std::fflush(stdout);
  return 0;
}

// --split: large tiles with deep split-K. At M = 384 the N = 768 GEMMs run 72 blocks of 64x64
// tiles, each streaming (64 + 64) x K operands through one multiprocessor, and phase 2 only
// splits the phase-1 winners (those small tiles) 2-4 ways. Here every tile of at least 64 x 64
// from kSplitTiles, with four cluster shapes, split 2-16 ways under each reduction scheme the
// algorithm takes, is timed against the heuristic's answers, cold (L2 flushed) and warm.
constexpr uint32_t kSplitTiles[] = {
    CUBLASLT_MATMUL_TILE_64x64,   CUBLASLT_MATMUL_TILE_64x128,  CUBLASLT_MATMUL_TILE_128x64,
    CUBLASLT_MATMUL_TILE_128x128, CUBLASLT_MATMUL_TILE_64x256,  CUBLASLT_MATMUL_TILE_256x64,
    CUBLASLT_MATMUL_TILE_128x256, CUBLASLT_MATMUL_TILE_256x128, CUBLASLT_MATMUL_TILE_128x192,
    CUBLASLT_MATMUL_TILE_192x128, CUBLASLT_MATMUL_TILE_64x192,  CUBLASLT_MATMUL_TILE_128x96,
    CUBLASLT_MATMUL_TILE_96x128,  CUBLASLT_MATMUL_TILE_256x256};

int SplitSearch(cublasLtHandle_t handle, const Shape& shape, int64_t m, std::mt19937& rng,
                void* workspace, void* flush, int64_t flush_bytes, cudaStream_t stream) {
  Problem problem(handle, shape, m, rng);
  if (!problem.ready()) {
    std::printf("allocation failed\n");
    return 1;
  }
  const std::vector<cublasLtMatmulAlgo_t> heuristic = problem.Heuristic(16);
  if (heuristic.empty()) {
    std::printf("%s M=%ld: no heuristic answer\n", shape.name, m);
    return 1;
  }
  const uint16_t clusters[] = {CUBLASLT_CLUSTER_SHAPE_AUTO, CUBLASLT_CLUSTER_SHAPE_1x1x1,
                               CUBLASLT_CLUSTER_SHAPE_2x1x1, CUBLASLT_CLUSTER_SHAPE_1x2x1};
  std::vector<Candidate> pool;
  int checked = 0;
  for (size_t h = 0; h < heuristic.size() && h < 2; ++h) {
    const cublasLtMatmulAlgo_t& base = heuristic[h];
    const uint32_t red_mask = Cap<uint32_t>(base, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK);
    for (uint32_t tile : kSplitTiles) {
      for (uint16_t cluster : clusters) {
        for (int split : {1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16}) {
          for (uint32_t red : {0u, 1u, 2u, 4u}) {
            if ((split == 1) != (red == 0) || (red != 0 && (red_mask & red) == 0)) continue;
            cublasLtMatmulAlgo_t algo = base;
            if (!SetConfig(algo, CUBLASLT_ALGO_CONFIG_TILE_ID, tile) ||
                !SetConfig(algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, cluster) ||
                !SetConfig(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, int32_t{split}) ||
                !SetConfig(algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, red)) {
              continue;
            }
            ++checked;
            if (problem.Check(algo)) {
              AddUnique(pool, algo, absl::StrFormat("split-h%zu", h));
            }
          }
        }
      }
    }
  }
  std::printf("%s M=%ld N=%ld K=%ld: %d configurations checked, %zu accepted\n", shape.name, m,
              shape.n, shape.k, checked, pool.size());
  std::fflush(stdout);
  for (Candidate& c : pool) {
    auto us = problem.Time(c.algo, 3, workspace, flush, flush_bytes, stream);
    c.us = us.ok() ? *us : 1e9f;
    if (!us.ok()) (void)cudaGetLastError();
  }
  std::sort(pool.begin(), pool.end(),
            [](const Candidate& a, const Candidate& b) { return a.us < b.us; });
  // The best of each split count, so the trend shows even where nothing wins.
  for (int split : {1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16}) {
    for (const Candidate& c : pool) {
      if (Config<int32_t>(c.algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM) == split) {
        std::printf("  best at split %2d: %7.2f us  %s\n", split, c.us, Describe(c.algo).c_str());
        break;
      }
    }
  }
  std::vector<Candidate> finals;
  for (size_t i = 0; i < heuristic.size() && i < 2; ++i) {
    finals.push_back({heuristic[i], 0, absl::StrFormat("heuristic #%zu", i)});
  }
  for (size_t i = 0; i < pool.size() && finals.size() < 12; ++i) {
    bool seen = false;
    for (const Candidate& c : finals) seen = seen || SameAlgo(c.algo, pool[i].algo);
    if (!seen) finals.push_back(pool[i]);
  }
  std::vector<float> warm(finals.size());
  for (size_t i = 0; i < finals.size(); ++i) {
    auto cold = problem.Time(finals[i].algo, 30, workspace, flush, flush_bytes, stream);
    auto hot = problem.Time(finals[i].algo, 30, workspace, nullptr, 0, stream);
    finals[i].us = cold.ok() ? *cold : 1e9f;
    warm[i] = hot.ok() ? *hot : 1e9f;
    if (!cold.ok() || !hot.ok()) (void)cudaGetLastError();
  }
  const float heuristic_us = finals[0].us, heuristic_warm = warm[0];
  const std::vector<float> reference = problem.Output(heuristic[0], workspace, stream);
  for (size_t i = 0; i < finals.size(); ++i) {
    const std::vector<float> out = problem.Output(finals[i].algo, workspace, stream);
    double max_diff = out.size() == reference.size() && !out.empty() ? 0.0 : INFINITY;
    for (size_t j = 0; j < out.size() && j < reference.size(); ++j) {
      max_diff = std::max<double>(max_diff, std::fabs(out[j] - reference[j]));
    }
    std::printf("  cold %7.2f us (%.2fx) warm %7.2f us (%.2fx) max|diff| %.2e  %-14s %s\n",
                finals[i].us, heuristic_us / finals[i].us, warm[i], heuristic_warm / warm[i],
                max_diff, finals[i].origin.c_str(), Describe(finals[i].algo).c_str());
  }
  std::fflush(stdout);
  return 0;
}

int Main(int argc, char** argv) {
  auto devices = ListDevices();
  if (!devices.ok()) {
    std::printf("no GPU: %s\n", devices.status().ToString().c_str());
    return 77;
  }
  std::printf("device: %s\n", Describe(devices->front()).c_str());
  std::vector<int64_t> ms;
  bool split = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--split") == 0) {
      split = true;
    } else {
      ms.push_back(std::atoll(argv[i]));
    }
  }
  if (ms.empty()) ms = {384, 128};
  cublasLtHandle_t handle = nullptr;
  if (!Ok(cublasLtCreate(&handle))) {
    std::printf("cublasLtCreate failed\n");
    return 1;
  }
  auto stream = Stream::Create();
  void *workspace = nullptr, *flush = nullptr;
  const int64_t flush_bytes = int64_t{128} << 20;
  if (!stream.ok() || cudaMalloc(&workspace, kWorkspace) != cudaSuccess ||
      cudaMalloc(&flush, flush_bytes) != cudaSuccess) {
    std::printf("setup failed\n");
    return 1;
  }
  std::mt19937 rng(11);
  for (int64_t m : ms) {
    for (const Shape& shape : kShapes) {
      const auto search = split ? SplitSearch : Search;
      if (search(handle, shape, m, rng, workspace, flush, flush_bytes, (*stream)->get()) != 0) {
        return 1;
      }
    }
  }
  cudaFree(workspace);
  cudaFree(flush);
  cublasLtDestroy(handle);
  return 0;
}

}  // namespace
}  // namespace nimble::vm::cuda

int main(int argc, char** argv) { return nimble::vm::cuda::Main(argc, argv); }
