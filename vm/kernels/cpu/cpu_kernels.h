// Registration entry points of the CPU kernel families (one .cc file or more each).
#pragma once

#include "vm/kernels/kernel.h"

namespace nimble::vm::cpu {

// Unary/binary/ternary elementwise ops with broadcasting, Cast, comparisons, logic,
// activations, and the compiler's FusedElementwise programs.
void RegisterElementwiseKernels(KernelRegistry& registry);
// Reduce*, ArgMax/ArgMin, CumSum.
void RegisterReductionKernels(KernelRegistry& registry);
// Softmax, LogSoftmax, LayerNormalization, BatchNormalization, InstanceNormalization, ...
void RegisterNormalizationKernels(KernelRegistry& registry);
// Shape, Reshape, Transpose, Concat, Split, Slice, Squeeze, Unsqueeze, Flatten, Expand, Tile,
// Pad, Identity, ConstantOfShape, Range, Trilu, ...
void RegisterTensorKernels(KernelRegistry& registry);
// Gather, GatherElements, GatherND, ScatterND, ScatterElements, NonZero, TopK, Where-like
// index ops, OneHot, ...
void RegisterIndexingKernels(KernelRegistry& registry);
// MatMul, Gemm, Conv, ConvTranspose, pooling (oneDNN where it pays).
void RegisterLinalgKernels(KernelRegistry& registry);
// LSTM, GRU, RNN.
void RegisterRnnKernels(KernelRegistry& registry);
// NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss, Dropout (inference), CumProd.
void RegisterLossKernels(KernelRegistry& registry);
// RotaryEmbedding, LpPool, Shrink, LRN, QuantizeLinear, DequantizeLinear, MaxUnpool.
void RegisterMiscKernels(KernelRegistry& registry);
// Attention (scaled dot-product, also the target of the fuse-attention pass)
void RegisterAttentionKernels(KernelRegistry& registry);
// MatMulSplitK and SplitSumLayerNorm (the split-gemm-layernorm pass's ops).
void RegisterSplitGemmKernels(KernelRegistry& registry);
// Resize, Upsample, GridSample, CenterCropPad, Col2Im, AffineGrid, RoiAlign, DeformConv.
void RegisterImageKernels(KernelRegistry& registry);

}  // namespace nimble::vm::cpu
