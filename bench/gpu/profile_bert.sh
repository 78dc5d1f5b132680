#!/bin/bash
# BERT-base fp16 on the GPU machine: graph-replay latency per sequence length, then GPU time per
# kernel (Nsight Compute, one eager run at seq 128 and 384). Run in the repository root through
# the device tool with the packed nimblec (bench/gpu/README.md) in carry/dev:
#   bash bench/gpu/profile_bert.sh carry/dev/nimble.tar.xz
# Writes $OUT/summary_<seq>.txt (per kernel name) and $OUT/order_<seq>.txt (launch order).
set -u
PKG=${1:-carry/dev/nimble.tar.xz}
PREC=${PRECISION:-fp16}
tar xJf "$PKG" -C /tmp && export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64
N=/tmp/nimble/nimblec
W=/tmp/w && mkdir -p $W
OUT=${OUT:-/tmp/out} && mkdir -p "$OUT"
python3 bench/gpu/bert_gpu.py --nimblec $N --export-only $W/bert.onnx || exit 1
/usr/bin/time -f "cold compile %e s" $N compile $W/bert.onnx -o $W/b.nbx --device=cuda \
  --precision=$PREC --buckets seq=16,64,128,384 2>&1 | tail -2
shape() { echo --shape input_ids=1x$1 --shape attention_mask=1x$1 --shape token_type_ids=1x$1; }
for s in 16 64 128 384; do
  echo "== seq $s, $PREC, graphs"
  $N bench $W/b.nbx $(shape $s) --iterations 200 --device-graphs 2>&1 | tail -2
done
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for s in ${NCU_SEQS:-128 384}; do
  $NCU --csv --print-units base --metrics gpu__time_duration.sum --cache-control none \
    --clock-control none $N bench $W/b.nbx $(shape $s) --iterations 1 >$OUT/ncu_$s.csv 2>$OUT/ncu_$s.err
  python3 bench/gpu/ncu_summary.py $OUT/ncu_$s.csv --runs 2 --order $OUT/order_$s.txt \
    | tee $OUT/summary_$s.txt | head -30
done
