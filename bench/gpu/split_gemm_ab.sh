#!/bin/bash
# Nimble's split-K GEMM (vm/cuda/split_gemm.h) against cuBLASLt on the GPU machine: the GEMM
# tests, the 48-GEMM cold-L2 bench, then BERT-base fp16 with CUDA graphs under each kernel
# (NIMBLE_GEMM_KERNEL=lt / split, alternating, two rounds, p50 of 300 replays) and the per-kernel
# GPU time of one seq-384 run under each (Nsight Compute). Run in the repository root with the
# packed binaries (bench/gpu/README.md) in carry/dev:
#   bash bench/gpu/split_gemm_ab.sh carry/dev/nimble.tar.xz
set -u
PKG=${1:-carry/dev/nimble.tar.xz}
OUT=${OUT:-/tmp/out} && mkdir -p "$OUT"
tar xJf "$PKG" -C /tmp && export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64
N=/tmp/nimble
W=/tmp/w && mkdir -p $W
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for t in vm_cuda_gemm_test compiler_cuda_bert_test vm_cuda_kernels_vs_cpu_test; do
  NIMBLE_BERT_ONNX=$N/bert_small.onnx timeout 150 $N/$t >"$OUT/$t.txt" 2>&1
  echo "$t: rc=$? $(grep -cE '^\[       OK \]' "$OUT/$t.txt") ok, $(grep -cE '^\[  FAILED  \]' "$OUT/$t.txt") failed lines"
  grep -E '^\[  FAILED  \]|Failure' -A3 "$OUT/$t.txt" | head -12
done
timeout 120 $N/vm_cuda_gemm_l2_bench | tee "$OUT/l2_bench.txt"
python3 bench/gpu/bert_gpu.py --nimblec $N/nimblec --export-only $W/bert.onnx >/dev/null || exit 1
$N/nimblec compile $W/bert.onnx -o $W/b.nbx --device=cuda --precision=fp16 \
  --buckets seq=16,64,128,384 2>&1 | tail -1
shape() { echo --shape input_ids=1x$1 --shape attention_mask=1x$1 --shape token_type_ids=1x$1; }
for round in 1 2; do
  for s in 16 64 128 384; do
    for k in lt split; do
      ms=$(NIMBLE_GEMM_KERNEL=$k $N/nimblec bench $W/b.nbx $(shape $s) --iterations 300 \
        --device-graphs 2>/tmp/err.txt | tail -1 | awk '{print $3}')
      echo "seq $s gemm=$k: p50 $ms ms; $(grep 'replay us' /tmp/err.txt)"
    done
  done
done | tee "$OUT/bert_ab.txt"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for k in ${NCU_KERNELS:-lt split}; do
  NIMBLE_GEMM_KERNEL=$k timeout 120 $NCU --csv --print-units base --metrics gpu__time_duration.sum \
    --cache-control none --clock-control none $N/nimblec bench $W/b.nbx $(shape 384) \
    --iterations 1 >$OUT/ncu_$k.csv 2>$OUT/ncu_$k.err
  echo "== ncu seq 384 gemm=$k"
  python3 bench/gpu/ncu_summary.py $OUT/ncu_$k.csv --runs 2 | tee $OUT/ncu_summary_$k.txt | head -14
done
