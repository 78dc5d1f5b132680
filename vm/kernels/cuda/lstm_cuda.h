// Launcher of the LSTM recurrence behind the VM's CUDA LSTM kernel (lstm.cc). C++17 and free of
// vm/ headers so that nvcc compiles lstm.cu; asynchronous on `stream`, returns the launch error.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace nimble::vm::cuda_ops {

struct ErrorRecord;  // ops_cuda.h

// One ONNX LSTM with the default activations (sigmoid, tanh, tanh), no clip, no input_forget.
// Shapes as in ONNX; layout 0: X / Y rows (t, b), states [dirs, batch, H]; layout 1: rows
// (b, t), states [batch, dirs, H]. Optional pointers may be null.
struct LstmArgs {
  int64_t seq = 0;
  int64_t batch = 0;
  int64_t hidden = 0;
  int dirs = 1;          // 2: bidirectional (direction 1 runs backwards)
  bool reverse = false;  // direction = "reverse" (dirs == 1)
  int layout = 0;
  // X · W^T of every (t, b) row in X's order, [seq * batch, dirs * 4H]; gate blocks i, o, f, c.
  const float* gates = nullptr;
  const float* r = nullptr;        // R [dirs, 4H, H]
  const float* bias = nullptr;     // B [dirs, 8H] (Wb then Rb)
  // [batch] int32 or int64 (seq_lens_i64); clamped to [0, seq], values outside reported to
  // `errors` when it is not null.
  const void* seq_lens = nullptr;
  bool seq_lens_i64 = false;
  ErrorRecord* errors = nullptr;
  const float* initial_h = nullptr;  // state layout
  const float* initial_c = nullptr;
  const float* peepholes = nullptr;  // P [dirs, 3H] (i, o, f)
  float* y = nullptr;                // Y: [seq, dirs, batch, H] or [batch, seq, dirs, H]
  float* y_h = nullptr;              // state layout
  float* y_c = nullptr;
  float* workspace = nullptr;  // LstmWorkspaceFloats() floats, 16-byte aligned
};

// Floats of device scratch LstmRecurrence needs (hidden-state double buffer and cell state).
int64_t LstmWorkspaceFloats(int64_t batch, int64_t hidden, int dirs);

// Runs the recurrence of every direction as one persistent cooperative kernel on the current
// device. cudaErrorNotSupported where the device cannot launch cooperative kernels.
cudaError_t LstmRecurrence(const LstmArgs& args, cudaStream_t stream);

}  // namespace nimble::vm::cuda_ops
