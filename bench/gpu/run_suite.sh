#!/bin/bash
# One device call for issue 7's numbers: the CUDA tests, BERT-base (bert_gpu.py: fp16 eager and
# with CUDA graphs against PyTorch eager and torch.compile(dynamic=True) fp16, correctness at seq
# 128, cold compile and cached load), the LSTM (model_compare.py, GPU part) and an A/B of the
# attention kernel choice at seq 384. Run in the
# repository root on the GPU machine with the packed binaries (bench/gpu/README.md) in carry/dev:
#   bash bench/gpu/run_suite.sh carry/dev/nimble.tar.xz
# Logs go to $OUT (tests.txt, bert.md, bert.log, lstm.json, lstm.md, lstm.log).
set -u
PKG=${1:-carry/dev/nimble.tar.xz}
OUT=${OUT:-/tmp/out} && mkdir -p "$OUT"
tar xJf "$PKG" -C /tmp && export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64
N=/tmp/nimble
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for t in vm_cuda_gemm_test vm_cuda_kernels_vs_cpu_test vm_cuda_lstm_test compiler_cuda_bert_test; do
  NIMBLE_BERT_ONNX=$N/bert_small.onnx timeout 120 $N/$t >"$OUT/$t.txt" 2>&1
  echo "$t: rc=$? $(grep -cE '^\[       OK \]' "$OUT/$t.txt") ok, $(grep -cE '^\[  FAILED  \]' "$OUT/$t.txt") failed lines"
  grep -E '^\[  FAILED  \]|Failure' "$OUT/$t.txt" | head -5
done
mkdir -p /tmp/bw && PYTHONUNBUFFERED=1 timeout ${BERT_TIMEOUT:-330} python3 bench/gpu/bert_gpu.py --nimblec $N/nimblec --work /tmp/bw \
  --precisions fp16 --graphs fp16 --torch-compile --compile-precisions fp16 --iterations 50 --rounds ${BERT_ROUNDS:-3} \
  --host-io-peers "compile fp16,eager fp16" \
  --out "$OUT/bert.md" >"$OUT/bert.log" 2>&1
echo "bert_gpu.py: rc=$?"; grep -vE "^ +(eager|compile)" "$OUT/bert.log" | tail -15
# LSTM=0 / ATTENTION_AB=0 skip the last two parts (short device budgets).
if [ "${LSTM:-1}" != 0 ]; then
  PYTHONUNBUFFERED=1 timeout ${LSTM_TIMEOUT:-150} python3 bench/gpu/model_compare.py --nimblec $N/nimblec \
    --only gpu --models lstm --lstm-seqs 16,64,128 --iterations 20 --json "$OUT/lstm.json" \
    --md "$OUT/lstm.md" >"$OUT/lstm.log" 2>&1
  echo "model_compare.py lstm: rc=$?"; tail -8 "$OUT/lstm.log"
fi
[ "${ATTENTION_AB:-1}" = 0 ] && exit 0
# A/B of the attention kernel choice on the bucketed fp16 executable bert_gpu.py compiled: the
# shape rule (seq 384: the 2-D kernel) against the split-key kernel it replaced there
# (NIMBLE_CUDA_ATTENTION=s4x16), alternating twice; the other buckets as a check.
for round in 1 2; do
  for s in 16 64 128 384; do
    for choice in default s4x16; do
      [ $s != 384 ] && [ $choice != default ] && continue
      if [ $choice = default ]; then unset NIMBLE_CUDA_ATTENTION; else export NIMBLE_CUDA_ATTENTION=$choice; fi
      ms=$($N/nimblec bench /tmp/bw/bert_cuda_fp16_buckets.nbx --iterations 300 \
        --device-graphs --shape input_ids=1x$s --shape attention_mask=1x$s --shape token_type_ids=1x$s \
        2>/tmp/bench_err.txt | tail -1 | awk '{print $3}')
      echo "seq $s attention=$choice: p50 $ms ms; $(grep 'replay us' /tmp/bench_err.txt)"
    done
    unset NIMBLE_CUDA_ATTENTION
  done
done
