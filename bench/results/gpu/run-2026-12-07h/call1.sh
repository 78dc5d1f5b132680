# Session 18, call 1: split-gemm-layernorm (MatMulSplitK + SplitSumLayerNorm) tested on the GPU
# and A/B'd against the default path, with f32 and f16 partial products. ~240 s on a warm machine.
set -x
tar xJf carry/dev/nimble.tar.xz -C /tmp; export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64; N=/tmp/nimble
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
(cd $N && timeout 60 ./vm_cuda_kernels_vs_cpu_test --gtest_filter='*SplitGemm*:*HalfPrecision*:*LayerNorm*' 2>&1 | grep -E "FAILED|PASSED|tests ran|Failure|Expected|Which|SplitSum|MatMulSplitK" | tail -80) > $OUT/kernels_test.txt; tail -5 $OUT/kernels_test.txt
(cd $N && timeout 40 ./vm_cuda_gemm_test --gtest_filter='*KSlices*:*MatchesCpu*' 2>&1 | grep -E "FAILED|PASSED|tests ran|Failure" | tail -8) | tee $OUT/gemm_test.txt
for h in 0 1; do NIMBLE_SPLIT_GEMM_LN=1 NIMBLE_SPLIT_GEMM_LN_HALF_PARTIALS=$h NIMBLE_BERT_ONNX=$N/bert_small.onnx timeout 60 $N/compiler_cuda_bert_test 2>&1 | grep -E "OK|FAILED|PASSED|Failure|rel" | tail -12; done | tee $OUT/bert_test.txt
timeout 90 $N/vm_cuda_gemm_ln_bench 384 128 2>&1 | tee $OUT/gemm_ln.txt
mkdir -p /tmp/bw && python3 bench/gpu/bert_gpu.py --nimblec $N/nimblec --export-only /tmp/bw/bert.onnx >/dev/null 2>&1
C="$N/nimblec compile /tmp/bw/bert.onnx --device=cuda --precision=fp16 --buckets seq=16,64,128,384"
$C -o /tmp/base.nbx 2>&1 | tail -1
export NIMBLE_SPLIT_GEMM_LN=1
$C -o /tmp/split.nbx 2>&1 | tail -2
NIMBLE_SPLIT_GEMM_LN_HALF_PARTIALS=1 $C -o /tmp/half.nbx 2>&1 | tail -1
NIMBLE_SPLIT_GEMM_LN_SMALL_K=0 $C -o /tmp/splitbig.nbx 2>&1 | tail -1
unset NIMBLE_SPLIT_GEMM_LN
shape() { echo --shape input_ids=1x$1 --shape attention_mask=1x$1 --shape token_type_ids=1x$1; }
V="base:base split:split half:half rows2:split:NIMBLE_SPLIT_LN_ROWS=2 splitbig:splitbig"
for round in 1 2 3; do for s in 384 128; do for v in $V; do
  IFS=: read -r label nbx setting <<<"$v"
  [ $s = 128 ] && [ $round = 3 ] && continue
  { [ $label = splitbig ] || [ $label = rows2 ]; } && [ $round = 3 ] && continue
  ms=$(env ${setting:-NIMBLE_AB=1} $N/nimblec bench /tmp/$nbx.nbx $(shape $s) --iterations 300 --device-graphs 2>/dev/null | tail -1 | awk '{print $3}')
  echo "round $round seq $s $label p50 $ms ms"
done; done; done 2>&1 | tee $OUT/ab.txt
for s in 64 16; do for v in base split half; do
  echo "seq $s $v p50 $($N/nimblec bench /tmp/$v.nbx $(shape $s) --iterations 300 --device-graphs 2>/dev/null | tail -1 | awk '{print $3}') ms"
done; done 2>&1 | tee -a $OUT/ab.txt
