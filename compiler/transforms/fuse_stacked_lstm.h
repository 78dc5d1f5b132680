// Recognises two stacked forward LSTM layers, the second reading the first's Y through the
// Squeeze of its direction axis (what PyTorch's nn.LSTM(num_layers=2) exports), and replaces the
// pair with one StackedLSTM node. Its CPU kernel runs the layers one after the other (one kernel
// call and no view instead of two calls and a Squeeze), or, with NIMBLE_LSTM_WAVEFRONT, both in
// one team of threads as a wavefront (layer 1's step t beside layer 2's step t - 1) with layer
// 2's input projection folded into its step's dot products: half the rounds and no GEMM for
// layer 2's inputs, but three times the cache reads a round; measured slower or even, it is off
// by default (vm/kernels/cpu/rnn.cc).
//
//   before:  %y1, %h1, %c1 = LSTM(%x, W1, R1, B1, _, %h1_0, %c1_0) {hidden_size}
//            %s = Squeeze(%y1, axes=[1])
//            %y2, %h2, %c2 = LSTM(%s, W2, R2, B2, _, %h2_0, %c2_0) {hidden_size}
//   after:   %y2, %h1, %c1, %h2, %c2 = StackedLSTM(%x, W1, R1, B1, %h1_0, %c1_0,
//                                                  W2, R2, B2, %h2_0, %c2_0)
//                                     {hidden_size (layer 1), hidden_size2}
//
// Matched: both LSTMs forward (no direction attribute, or "forward"), layout 0, default
// activations, no clip, no input_forget, no sequence_lens and no peepholes; f32 constant W, R
// and B (B may be absent); layer 1's Y read only by the Squeeze, the Squeeze's output only by
// layer 2. Run for CPU targets only: the CUDA backend has its own LSTM kernel.
#pragma once

#include "absl/status/statusor.h"
#include "compiler/ir/graph.h"

namespace nimble::compiler {

// Returns how many layer pairs were replaced.
absl::StatusOr<int> FuseStackedLstms(Module& module);

}  // namespace nimble::compiler
