#!/bin/bash
# Shared-memory carveout of Nimble's own kernels (NIMBLE_CUDA_CARVEOUT, vm/kernels/cuda/ops.cu)
# on BERT-base fp16 with CUDA graphs: unset against 100 (all shared, as cuBLASLt's GEMMs) and 0,
# alternating, two rounds, p50 of 300 replays; kernels vs CPU with 100 as a check. Run in the
# repository root with the packed binaries (bench/gpu/README.md):
#   bash bench/gpu/carveout_ab.sh carry/dev/nimble.tar.xz
set -u
PKG=${1:-carry/dev/nimble.tar.xz}
OUT=${OUT:-/tmp/out} && mkdir -p "$OUT"
tar xJf "$PKG" -C /tmp && export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64
N=/tmp/nimble
W=/tmp/w && mkdir -p $W
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
(python3 bench/gpu/bert_gpu.py --nimblec $N/nimblec --export-only $W/bert.onnx >/dev/null &&
  $N/nimblec compile $W/bert.onnx -o $W/b.nbx --device=cuda --precision=fp16 \
    --buckets seq=16,64,128,384 >$W/compile.txt 2>&1) &
EXPORT=$!
NIMBLE_CUDA_CARVEOUT=100 timeout 150 $N/vm_cuda_kernels_vs_cpu_test >"$OUT/kernels_carveout100.txt" 2>&1
echo "vm_cuda_kernels_vs_cpu_test (carveout 100): rc=$? $(grep -cE '^\[       OK \]' "$OUT/kernels_carveout100.txt") ok"
wait $EXPORT || { echo "export/compile failed"; cat $W/compile.txt; exit 1; }
shape() { echo --shape input_ids=1x$1 --shape attention_mask=1x$1 --shape token_type_ids=1x$1; }
for round in 1 2; do
  for s in 16 128 384; do
    for c in unset 100 0; do
      if [ $c = unset ]; then unset NIMBLE_CUDA_CARVEOUT; else export NIMBLE_CUDA_CARVEOUT=$c; fi
      ms=$($N/nimblec bench $W/b.nbx $(shape $s) --iterations 300 --device-graphs \
        2>/tmp/err.txt | tail -1 | awk '{print $3}')
      echo "seq $s carveout=$c: p50 $ms ms; $(grep 'replay us' /tmp/err.txt)"
    done
    unset NIMBLE_CUDA_CARVEOUT
  done
done | tee "$OUT/bert_ab.txt"
