#include "compiler/transforms/split_gemm_layernorm.h"

#include <cstdlib>
#include <string>
#include <vector>

#include "base/status_macros.h"
#include "compiler/shape/shape_check.h"
#include "compiler/transforms/pattern_util.h"

namespace nimble::compiler {
namespace {

constexpr int64_t kSmallK = 1536;

bool IsHalf(vm::DType d) { return d == vm::DType::kF16 || d == vm::DType::kBF16; }

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && v[0] != '\0' ? std::atoll(v) : fallback;
}

// The split count for an M x K GEMM (0: leave it). Half partials cost the summing LayerNorm
// half the bytes a slice, so they pay for a third slice at M = 384 too (vm_cuda_gemm_ln_bench
// on an H100, K = 3072: f32 9.52 / 9.67 µs a layer at S = 2 / 3, f16 9.09 / 8.85).
int64_t Splits(int64_t m, int64_t k, bool half_partials) {
  if (k < kSmallK) return EnvInt("NIMBLE_SPLIT_GEMM_LN_SMALL_K", 1) != 0 ? 1 : 0;
  const int64_t forced = EnvInt("NIMBLE_SPLIT_GEMM_LN_SPLITS", 0);
  if (forced > 0) return forced;
  if (half_partials) return m >= 96 ? 3 : 4;
  return m >= 256 ? 2 : m >= 96 ? 3 : 4;
}

}  // namespace

absl::StatusOr<int> SplitGemmLayerNorms(Module& module) {
  Graph& g = *module.main;
  UseCounts uses(g);
  std::vector<Node*> norms;
  for (const auto& n : g.nodes()) {
    if (n->op_type() == "LayerNormalization" && n->domain().empty()) norms.push_back(n.get());
  }
  int split = 0;
  for (Node* ln : norms) {
    if (ln->num_outputs() != 1 || ln->num_inputs() < 2) continue;  // no Mean / InvStdDev outputs
    Value* y = ln->input(0);
    Node* mm = y != nullptr ? y->producer() : nullptr;
    if (mm == nullptr || mm->op_type() != "FusedMatMul" || !mm->domain().empty() || uses(y) != 1 ||
        mm->num_inputs() < 2 || mm->num_outputs() != 1) {
      continue;
    }
    if (mm->attrs().GetOr<int64_t>("transB", 0) != 0 ||
        mm->attrs().GetOr<double>("alpha", 1.0) != 1.0 ||
        !mm->attrs().GetOr<std::string>("activation", "").empty() ||
        mm->attrs().GetOr<std::string>("precision", "") == "tf32") {
      continue;
    }
    Value* x = mm->input(0);
    Value* w = mm->input(1);
    Value* bias = mm->num_inputs() > 2 ? mm->input(2) : nullptr;
    Value* residual = mm->num_inputs() > 3 ? mm->input(3) : nullptr;
    Value* gamma = ln->input(1);
    Value* beta = ln->num_inputs() > 2 ? ln->input(2) : nullptr;
    if (x == nullptr || w == nullptr || !w->is_constant() || w->constant()->rank() != 2 ||
        gamma == nullptr || !x->type().is_tensor() || !y->type().is_tensor() ||
        !ln->output(0)->type().is_tensor()) {
      continue;
    }
    const TensorType& xt = x->tensor_type();
    const TensorType& yt = y->tensor_type();
    const vm::DType half = yt.dtype;
    if (!IsHalf(half) || xt.dtype != half || w->constant()->dtype() != half || !xt.has_rank() ||
        xt.rank() < 2 || !yt.has_rank()) {
      continue;
    }
    // Every dim known (symbolic ones too: a bucketed variant's batch); M counted from the
    // constant ones, a symbolic dim as 1 (batch 1, what bucketed variants serve most).
    bool dims_known = true;
    int64_t m = 1;
    for (int i = 0; i < xt.rank(); ++i) {
      const Dim& d = (*xt.dims)[i];
      dims_known = dims_known && d.has_value();
      if (i + 1 < xt.rank() && d && d->AsConst()) m *= *d->AsConst();
    }
    const Dim& x_k = xt.dims->back();
    if (!dims_known || !x_k->AsConst()) continue;
    const vm::DType out_dtype = ln->output(0)->tensor_type().dtype;
    if (out_dtype != half && out_dtype != vm::DType::kF32) continue;
    // Every parameter of the GEMM's type and the expected extent (the kernel checks again).
    bool params_ok = true;
    for (Value* p : {bias, residual, gamma, beta}) {
      params_ok =
          params_ok && (p == nullptr || (p->type().is_tensor() && p->tensor_type().dtype == half));
    }
    if (!params_ok) continue;
    const int64_t axis = ln->attrs().GetOr<int64_t>("axis", -1);
    if (axis != -1 && axis != yt.rank() - 1) continue;
    const int64_t k = w->constant()->dim(0), n = w->constant()->dim(1);
    if (*x_k->AsConst() != k || k <= 0 || n <= 0 || n % 8 != 0 || n > 1024 || m <= 0) continue;
    const bool half_partials = EnvInt("NIMBLE_SPLIT_GEMM_LN_HALF_PARTIALS", 1) != 0;
    const int64_t splits = Splits(m, k, half_partials);
    if (splits <= 0 || splits > 8 || k % splits != 0 || (k / splits) % 8 != 0) continue;

    Node* gemm = g.AddNode("MatMulSplitK", {x, w}, 1, mm->name() + "/split");
    std::vector<Dim> parts_dims = {DimExpr::Const(splits)};
    parts_dims.insert(parts_dims.end(), xt.dims->begin(), xt.dims->end() - 1);
    parts_dims.push_back(DimExpr::Const(n));
    // Partial products in the GEMM's half type (half the bytes written and read, one more
    // rounding a slice; sums in f32), or f32 with NIMBLE_SPLIT_GEMM_LN_HALF_PARTIALS=0 (A/B).
    const vm::DType parts_type = half_partials ? half : vm::DType::kF32;
    gemm->output(0)->set_type(Type::Tensor(TensorType::Of(parts_type, parts_dims)));
    gemm->output(0)->set_name(y->name() + "/parts");
    gemm->attrs().Set("splits", splits);
    gemm->set_opset(mm->opset());
    g.MoveLastNodeAfter(mm);
    Node* norm =
        ReplaceValue(g, ln->output(0), "SplitSumLayerNorm",
                     {gemm->output(0), bias, residual, gamma, beta}, ln->name() + "/split_sum", ln);
    norm->attrs().Set("epsilon", ln->attrs().GetOr<double>("epsilon", 1e-5));
    norm->attrs().Set("splits", splits);
    norm->set_opset(ln->opset());
    NIMBLE_RETURN_IF_ERROR(MergeShapeChecks(*gemm, *mm, module.dims));
    NIMBLE_RETURN_IF_ERROR(MergeShapeChecks(*norm, *ln, module.dims));
    uses.Refresh(g);
    ++split;
  }
  if (split > 0) g.RemoveDeadNodes();
  return split;
}

}  // namespace nimble::compiler
