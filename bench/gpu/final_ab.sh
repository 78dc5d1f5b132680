#!/bin/bash
# A/B on the bucketed fp16 BERT-base that run_suite.sh compiled (run it first, same call): the
# weight prefetch distance (NIMBLE_WEIGHT_PREFETCH: off, 3 = default, 5) and the split-K
# reduction schemes cuBLASLt may pick (NIMBLE_GEMM_REDUCTION_MASK: 0 = no split-K, 1 = in place
# only), alternating, two rounds, p50 of 300 replays; then the 48-GEMM cold-L2 bench (warm and
# tiny variants included).
set -u
OUT=${OUT:-/tmp/out} && mkdir -p "$OUT"
export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64
N=/tmp/nimble
B=/tmp/bw/bert_cuda_fp16_buckets.nbx
shape() { echo --shape input_ids=1x$1 --shape attention_mask=1x$1 --shape token_type_ids=1x$1; }
for round in 1 2; do
  for s in 16 64 128 384; do
    for cfg in "NIMBLE_WEIGHT_PREFETCH=0" "X=default" "NIMBLE_WEIGHT_PREFETCH=5" \
      "NIMBLE_GEMM_REDUCTION_MASK=0" "NIMBLE_GEMM_REDUCTION_MASK=1"; do
      ms=$(env $cfg $N/nimblec bench $B $(shape $s) --iterations 300 --device-graphs \
        2>/tmp/err.txt | tail -1 | awk '{print $3}')
      echo "seq $s $cfg: p50 $ms ms; $(grep 'replay us' /tmp/err.txt)"
    done
  done
done | tee "$OUT/bert_ab.txt"
timeout 150 $N/vm_cuda_gemm_l2_bench | tee "$OUT/l2_bench.txt"
