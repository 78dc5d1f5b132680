#include "compiler/transforms/fuse_attention_mask.h"

#include <array>
#include <optional>
#include <vector>

#include "base/status_macros.h"
#include "compiler/shape/shape_check.h"
#include "compiler/transforms/pattern_util.h"
#include "vm/kernels/fused_elementwise_program.h"

namespace nimble::compiler {
namespace {

using vm::FusedOp;

// a x + b, x being the program's one input.
struct Affine {
  double a = 0, b = 0;
};

// The program's output as an affine function of its input, or nullopt when it is not one
// (or the program has other than one input and one output).
std::optional<Affine> AffineProgram(const std::vector<int64_t>& program,
                                    const std::vector<double>& constants) {
  if (program.empty() || program.size() % 4 != 0) return std::nullopt;
  std::array<std::optional<Affine>, vm::kFusedProgramMaxSlots> slot;
  auto in = [&](int64_t s) -> std::optional<Affine> {
    return s >= 0 && s < vm::kFusedProgramMaxSlots ? slot[s] : std::nullopt;
  };
  std::optional<Affine> result;
  int stores = 0;
  for (size_t i = 0; i < program.size(); i += 4) {
    const auto op = static_cast<FusedOp>(program[i]);
    const int64_t dst = program[i + 1];
    if (op != FusedOp::kStore && (dst < 0 || dst >= vm::kFusedProgramMaxSlots)) {
      return std::nullopt;
    }
    const std::optional<Affine> x = in(program[i + 2]), y = in(program[i + 3]);
    std::optional<Affine> r;
    switch (op) {
      case FusedOp::kLoad:
        if (program[i + 2] != 0) return std::nullopt;
        r = Affine{1, 0};
        break;
      case FusedOp::kConst:
        if (program[i + 2] < 0 || program[i + 2] >= static_cast<int64_t>(constants.size())) {
          return std::nullopt;
        }
        r = Affine{0, constants[program[i + 2]]};
        break;
      case FusedOp::kStore:
        if (dst != 0 || !x) return std::nullopt;
        result = x;
        ++stores;
        continue;
      case FusedOp::kAdd:
        if (x && y) r = Affine{x->a + y->a, x->b + y->b};
        break;
      case FusedOp::kSub:
        if (x && y) r = Affine{x->a - y->a, x->b - y->b};
        break;
      case FusedOp::kNeg:
        if (x) r = Affine{-x->a, -x->b};
        break;
      case FusedOp::kMul:
        if (x && y && x->a == 0) r = Affine{x->b * y->a, x->b * y->b};
        if (x && y && y->a == 0) r = Affine{x->a * y->b, x->b * y->b};
        break;
      case FusedOp::kDiv:
        if (x && y && y->a == 0 && y->b != 0) r = Affine{x->a / y->b, x->b / y->b};
        break;
      default:
        break;
    }
    if (!r) return std::nullopt;
    slot[dst] = r;
  }
  if (stores != 1) return std::nullopt;
  return result;
}

bool IsIntegerTensor(const Value* v) {
  if (v == nullptr || !v->type().is_tensor()) return false;
  const vm::DType d = v->tensor_type().dtype;
  return d == vm::DType::kI64 || d == vm::DType::kI32;
}

bool IsPlainAttentionMask(const Node& n, const Value* mask) {
  if (n.op_type() != "Attention" || !n.domain().empty() || n.input(3) != mask) return false;
  for (int i = 0; i < n.num_inputs(); ++i) {
    if (i != 3 && n.input(i) == mask) return false;
  }
  return !n.attrs().Has("mask_fill") && !n.attrs().Has("mask_scale") &&
         !n.attrs().Has("mask_offset");
}

}  // namespace

absl::StatusOr<int> FuseAttentionMasks(Module& module) {
  Graph& g = *module.main;
  std::vector<Node*> nodes;
  for (const auto& n : g.nodes()) nodes.push_back(n.get());
  const UseCounts uses(g);
  int fused = 0;
  for (Node* fe : nodes) {
    if (fe->op_type() != "FusedElementwise" || !fe->domain().empty() || fe->num_inputs() != 1 ||
        fe->num_outputs() != 1) {
      continue;
    }
    Value* mask = fe->output(0);
    const Node* cast = ProducerOf(fe->input(0), "Cast");
    if (cast == nullptr || cast->num_inputs() != 1 || !IsIntegerTensor(cast->input(0))) continue;
    if (!fe->input(0)->type().is_tensor() || fe->input(0)->tensor_type().dtype != vm::DType::kF32) {
      continue;
    }
    const std::optional<Affine> f =
        AffineProgram(fe->attrs().GetOr<std::vector<int64_t>>("program", {}),
                      fe->attrs().GetOr<std::vector<double>>("constants", {}));
    if (!f) continue;
    // Every use of the mask (graph outputs and subgraph captures count too) is an Attention's.
    std::vector<Node*> readers;
    for (Node* n : nodes) {
      if (IsPlainAttentionMask(*n, mask)) readers.push_back(n);
    }
    if (readers.empty() || static_cast<int>(readers.size()) != uses(mask)) continue;
    for (Node* att : readers) {
      att->set_input(3, cast->input(0));
      att->attrs().Set("mask_scale", f->a);
      att->attrs().Set("mask_offset", f->b);
      // The run-time shape checks of the replaced ops guard the Attention nodes.
      NIMBLE_RETURN_IF_ERROR(MergeShapeChecks(*att, *cast, module.dims));
      NIMBLE_RETURN_IF_ERROR(MergeShapeChecks(*att, *fe, module.dims));
    }
    ++fused;
  }
  if (fused > 0) g.RemoveDeadNodes();
  return fused;
}

}  // namespace nimble::compiler
