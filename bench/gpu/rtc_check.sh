#!/bin/bash
# The CUDA tests with FusedElementwise through NVRTC-generated kernels and through the
# interpreter (NIMBLE_CUDA_RTC=0), then BERT-base fp16 with CUDA graphs A/B'd the same way.
# Same packing and invocation as run_suite.sh.
set -u
PKG=${1:-carry/dev/nimble.tar.xz}
OUT=${OUT:-/tmp/out} && mkdir -p "$OUT"
tar xJf "$PKG" -C /tmp && export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64
N=/tmp/nimble
export NIMBLE_RTC_CACHE_DIR=/tmp/rtc-cache
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for rtc in 1 0; do
  for t in vm_cuda_kernels_vs_cpu_test vm_cuda_lstm_test compiler_cuda_bert_test vm_cuda_gemm_test; do
    NIMBLE_CUDA_RTC=$rtc NIMBLE_BERT_ONNX=$N/bert_small.onnx timeout 120 $N/$t >"$OUT/${t}_rtc$rtc.txt" 2>&1
    echo "rtc=$rtc $t: rc=$? $(grep -cE '^\[       OK \]' "$OUT/${t}_rtc$rtc.txt") ok"
    grep -E '^\[  FAILED  \]|Failure' "$OUT/${t}_rtc$rtc.txt" | head -5
  done
  [ "$rtc" = 1 ] && grep -E "^(FusedElementwise|Add|Gelu|Sigmoid|Pow)" "$OUT/vm_cuda_kernels_vs_cpu_test_rtc1.txt" | head -12
done
ls /tmp/rtc-cache | wc -l | xargs echo "rtc cache entries:"
python3 bench/gpu/bert_gpu.py --nimblec $N/nimblec --export-only /tmp/bert.onnx || exit 1
$N/nimblec compile /tmp/bert.onnx -o /tmp/b.nbx --device=cuda --precision=fp16 --buckets seq=16,64,128,384 2>&1 | tail -1
for s in 16 64 128 384; do
  for rtc in 1 0; do
    ms=$(NIMBLE_CUDA_RTC=$rtc $N/nimblec bench /tmp/b.nbx --iterations 300 --device-graphs \
      --shape input_ids=1x$s --shape attention_mask=1x$s --shape token_type_ids=1x$s 2>/dev/null | tail -1 | awk '{print $3}')
    echo "seq $s rtc=$rtc: p50 $ms ms"
  done
done
# Throughput at batch 8 and 32 (padded to the 128 bucket) against PyTorch eager fp16.
PYTHONUNBUFFERED=1 timeout 120 python3 bench/gpu/bert_batch.py --nimblec $N/nimblec --nbx /tmp/b.nbx \
  --batches 8,32 --bucket 128 --iterations 30
