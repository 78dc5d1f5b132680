#!/bin/bash
# A/B of the embedding fusion (compiler pass fuse-embedding: BERT's three lookups, their sum and
# the LayerNorm as one EmbedLayerNorm kernel) on BERT-base fp16 with CUDA graphs: the bucketed
# executable run_suite.sh compiled (run it first, same call) against the same model compiled
# with --disable-pass=fuse-embedding; alternating, two rounds, p50 of 300 replays each.
set -u
OUT=${OUT:-/tmp/out} && mkdir -p "$OUT"
export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64
N=/tmp/nimble
A=/tmp/bw/bert_cuda_fp16_buckets.nbx
B=/tmp/bw/bert_cuda_fp16_buckets_unfused.nbx
$N/nimblec compile /tmp/bw/bert.onnx -o $B --device=cuda --precision=fp16 \
  --buckets seq=16,64,128,384 --disable-pass=fuse-embedding 2>&1 | tail -1
shape() { echo --shape input_ids=1x$1 --shape attention_mask=1x$1 --shape token_type_ids=1x$1; }
for round in 1 2; do
  for s in 16 64 128 384; do
    for exe in $A $B; do
      ms=$($N/nimblec bench $exe $(shape $s) --iterations 300 --device-graphs \
        2>/tmp/err.txt | tail -1 | awk '{print $3}')
      echo "seq $s $(basename $exe): p50 $ms ms; $(grep 'replay us' /tmp/err.txt)"
    done
  done
done | tee "$OUT/embed_ab.txt"
