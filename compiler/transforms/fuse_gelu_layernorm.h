// Recognises the decomposed forms of GELU and LayerNorm that exporters emit and replaces them
// with the single ops our kernels run in one pass over memory.
//
// GELU (PyTorch's erf form):
//   before:  %a = Div(%x, 1.4142135)  %b = Erf(%a)  %c = Add(%b, 1.0)  %d = Mul(%x, %c)
//            %y = Mul(%d, 0.5)
//   after:   %y = Gelu(%x)
// LayerNorm over the last axis:
//   before:  %m = ReduceMean(%x, axes=[-1])  %d = Sub(%x, %m)  %p = Pow(%d, 2)
//            %v = ReduceMean(%p, axes=[-1])  %e = Add(%v, eps)  %s = Sqrt(%e)
//            %n = Div(%d, %s)  %g = Mul(%n, gamma)  %y = Add(%g, beta)
//   after:   %y = LayerNormalization(%x, gamma, beta) {axis=-1, epsilon=eps}
#pragma once

#include "absl/status/statusor.h"
#include "compiler/ir/graph.h"

namespace nimble::compiler {

// Returns how many patterns were replaced.
absl::StatusOr<int> FuseGeluAndLayerNorm(Module& module);

}  // namespace nimble::compiler
