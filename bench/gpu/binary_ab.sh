#!/bin/bash
# A/B of builds and settings on the GPU machine: this tree's binaries (/tmp/nimble) against a
# base commit's nimblec and vm_cuda_ops_bench (/tmp/nimble_base, packed like bench/gpu/README.md
# says, sharing /tmp/nimble/lib), each variant optionally with environment settings (A=1,B=2).
# BERT-base fp16 with CUDA graphs, each build running the executable it compiled itself: p50 of
# 300 replays, variants alternating, two rounds; then the attention and LayerNorm kernels alone
# (vm_cuda_ops_bench, per build); then, with NCU_ATTENTION=1, Nsight Compute's full section set
# for one attention launch at seq 384 of each build (OPS_BENCH=0 skips the kernel benches). Run
# after run_suite.sh in the same call (it exports the model to /tmp/bw/bert.onnx):
#   VARIANTS="new:/tmp/nimble base:/tmp/nimble_base \
#     nobranch:/tmp/nimble:NIMBLE_RESULT_COPY_BRANCH=0" \
#     bash bench/gpu/binary_ab.sh carry/dev/nimble_base.tar.xz
set -u
BASE_PKG=${1:-carry/dev/nimble_base.tar.xz}
OUT=${OUT:-/tmp/out} && mkdir -p "$OUT"
tar xJf "$BASE_PKG" -C /tmp || exit 1
export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64
VARIANTS=${VARIANTS:-"nimble:/tmp/nimble nimble_base:/tmp/nimble_base"}
SEQS=${SEQS:-16 128 384}
shape() { echo --shape input_ids=1x$1 --shape attention_mask=1x$1 --shape token_type_ids=1x$1; }
BUILDS=$(for v in $VARIANTS; do echo "$v" | cut -d: -f2; done | sort -u)
for b in $BUILDS; do
  # A build folder may hold compile_flags (extra nimblec compile arguments), so one build can
  # serve two variants: a folder of links to /tmp/nimble's binaries plus, say,
  # "--disable-pass=fuse-attention-mask".
  $b/nimblec compile /tmp/bw/bert.onnx -o $b/bert.nbx --device=cuda --precision=fp16 \
    --buckets seq=16,64,128,384 $(cat $b/compile_flags 2>/dev/null) 2>&1 | tail -1
done
{
  for round in 1 2; do
    for s in $SEQS; do
      for v in $VARIANTS; do
        IFS=: read -r label b setting <<<"$v"
        ms=$(env $(echo "${setting:-NIMBLE_AB=1}" | tr , ' ') $b/nimblec bench $b/bert.nbx $(shape $s) --iterations 300 \
          --device-graphs 2>/tmp/err.txt | tail -1 | awk '{print $3}')
        echo "seq $s $label: p50 $ms ms; $(grep 'replay us' /tmp/err.txt)"
      done
    done
  done
  for round in 1 2; do
    [ "${OPS_BENCH:-1}" = 1 ] || break  # OPS_BENCH=0: the whole model only
    for b in $BUILDS; do
      [ -e $b/compile_flags ] && continue  # the same kernels as the build it links to
      echo "== vm_cuda_ops_bench $b"
      $b/vm_cuda_ops_bench 64 128 256 384 512
    done
  done
} 2>&1 | tee "$OUT/binary_ab.txt"
[ "${NCU_ATTENTION:-0}" = 1 ] || exit 0
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for b in $BUILDS; do
  name=$(basename $b)
  $NCU --set full -k regex:FlashAttention --launch-skip 3 --launch-count 1 \
    $b/nimblec bench $b/bert.nbx $(shape 384) --iterations 1 >"$OUT/ncu_attention_$name.txt" 2>&1
  echo "ncu $name: rc=$? $(grep -E 'Duration|Executed Ipc A|Issue Slots Busy' \
    "$OUT/ncu_attention_$name.txt" | tr -s ' ' | head -4 | tr '\n' ';')"
done
