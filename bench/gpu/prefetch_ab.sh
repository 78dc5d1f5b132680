#!/bin/bash
# L2 prefetch of the GEMMs' weights on a parallel graph branch (VirtualMachineOptions::
# weight_prefetch_ahead) on the GPU machine: the CUDA tests that cover it, the 48-GEMM cold-L2
# bench with its prefetch variants, then BERT-base fp16 with CUDA graphs with the prefetch off
# and 1, 2 and 3 kernels ahead (NIMBLE_WEIGHT_PREFETCH, alternating, ROUNDS rounds, p50 of 300
# replays). Run in the repository root with the packed binaries (bench/gpu/README.md):
#   bash bench/gpu/prefetch_ab.sh carry/dev/nimble.tar.xz
set -u
PKG=${1:-carry/dev/nimble.tar.xz}
OUT=${OUT:-/tmp/out} && mkdir -p "$OUT"
tar xJf "$PKG" -C /tmp && export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64
N=/tmp/nimble
W=/tmp/w && mkdir -p $W
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
(python3 bench/gpu/bert_gpu.py --nimblec $N/nimblec --export-only $W/bert.onnx >/dev/null &&
  $N/nimblec compile $W/bert.onnx -o $W/b.nbx --device=cuda --precision=fp16 \
    --buckets seq=16,64,128,384 >$W/compile.txt 2>&1) &
EXPORT=$!
for t in ${TESTS:-compiler_cuda_bert_test vm_cuda_gemm_test}; do
  NIMBLE_BERT_ONNX=$N/bert_small.onnx timeout 150 $N/$t >"$OUT/$t.txt" 2>&1
  echo "$t: rc=$? $(grep -cE '^\[       OK \]' "$OUT/$t.txt") ok, $(grep -cE '^\[  FAILED  \]' "$OUT/$t.txt") failed lines"
  grep -E '^\[  FAILED  \]|Failure|prefetches' -A3 "$OUT/$t.txt" | head -12
done
timeout 150 $N/vm_cuda_gemm_l2_bench | tee "$OUT/l2_bench.txt"
wait $EXPORT || { echo "export/compile failed"; cat $W/compile.txt; exit 1; }
tail -1 $W/compile.txt
shape() { echo --shape input_ids=1x$1 --shape attention_mask=1x$1 --shape token_type_ids=1x$1; }
for round in $(seq ${ROUNDS:-2}); do
  for s in ${SEQS:-16 128 384}; do
    for a in ${AHEADS:-0 2 1 3}; do
      ms=$(NIMBLE_WEIGHT_PREFETCH=$a $N/nimblec bench $W/b.nbx $(shape $s) --iterations 300 \
        --device-graphs 2>/tmp/err.txt | tail -1 | awk '{print $3}')
      echo "seq $s prefetch=$a: p50 $ms ms; $(grep 'replay us' /tmp/err.txt)"
    done
  done
done | tee "$OUT/bert_ab.txt"
