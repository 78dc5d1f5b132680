# For the next session (session 18 ran out of device time before it): the GPU tests of the split
# pair (half partials, the one-slice rule above 640 rows), split f32 against half partials and
# against no split at seq 384 / 128 and at padded batches 8 / 32 x 128, then the peers
# (bert_gpu.py as run_suite.sh runs it) and the batch throughput with the faster form.
# Binaries packed as bench/gpu/README.md says; about 330 s of commands on a warm machine.
set -x
tar xJf carry/dev/nimble.tar.xz -C /tmp; export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64; N=/tmp/nimble
(cd $N && timeout 60 ./vm_cuda_kernels_vs_cpu_test --gtest_filter='*SplitGemm*:*LayerNorm*' 2>&1 | grep -E "FAILED|PASSED|tests ran|Failure|Expected|Which" | tail -20) | tee $OUT/kernels_test.txt
for h in 0 1; do NIMBLE_SPLIT_GEMM_LN_HALF_PARTIALS=$h NIMBLE_BERT_ONNX=$N/bert_small.onnx timeout 40 $N/compiler_cuda_bert_test 2>&1 | grep -E "OK|FAILED|PASSED|Failure|rel|captures" | tail -14; done > $OUT/bert_test.txt; grep -E "PASSED|FAILED" $OUT/bert_test.txt
mkdir -p /tmp/bw && python3 bench/gpu/bert_gpu.py --nimblec $N/nimblec --export-only /tmp/bw/bert.onnx >/dev/null 2>&1
C="$N/nimblec compile /tmp/bw/bert.onnx --device=cuda --precision=fp16 --buckets seq=16,64,128,384"
NIMBLE_SPLIT_GEMM_LN=0 $C -o /tmp/base.nbx 2>&1 | tail -1
$C -o /tmp/split.nbx 2>&1 | tail -1
NIMBLE_SPLIT_GEMM_LN_HALF_PARTIALS=1 $C -o /tmp/half.nbx 2>&1 | tail -1
# The two-blocks-a-multiprocessor attention form (NIMBLE_CUDA_ATTENTION=d2k6 / d2k5, off by
# default): its tests, its time a launch, and the model at seq 384 with it.
for f in d2k6 d2k5; do (cd $N && NIMBLE_CUDA_ATTENTION=$f timeout 60 ./vm_cuda_kernels_vs_cpu_test --gtest_filter='*HalfPrecision*:*Attention*' 2>&1 | grep -E "FAILED|PASSED|Failure" | tail -5) | sed "s/^/$f: /"; done | tee $OUT/attention_d2_test.txt
set +x
for f in none q3k6 d2k6 q2k5 d2k5; do echo "$f: $(NIMBLE_CUDA_ATTENTION=$f timeout 30 $N/vm_cuda_ops_bench 320 384 2>&1 | tail -2 | awk '{printf "seq %s %s us; ", $1, $2}')"; done | tee $OUT/attention_d2_bench.txt
run() { timeout 30 $N/nimblec bench /tmp/$1.nbx --shape input_ids=$2 --shape attention_mask=$2 --shape token_type_ids=$2 --iterations ${3:-300} --device-graphs 2>/dev/null | tail -1 | awk '{print $3}'; }
for round in 1 2; do for s in 384 128; do for v in base split half; do
  echo "round $round seq $s $v p50 $(run $v 1x$s) ms"
done; done; echo "round $round seq 384 split+d2k6 p50 $(NIMBLE_CUDA_ATTENTION=d2k6 run split 1x384) ms"; done 2>&1 | tee $OUT/ab.txt
for b in 8 32; do for v in base split half; do echo "batch $b x 128 $v p50 $(run $v ${b}x128 100) ms"; done; done 2>&1 | tee -a $OUT/ab.txt
h=$(awk '/^round .* seq 384 split / {s+=$7} /^round .* seq 384 half / {h+=$7} END {print (h > 0 && h < s) ? 1 : 0}' $OUT/ab.txt)
echo "half partials for the peers' run: $h" | tee -a $OUT/ab.txt
export NIMBLE_SPLIT_GEMM_LN_HALF_PARTIALS=$h
PYTHONUNBUFFERED=1 timeout 320 python3 bench/gpu/bert_gpu.py --nimblec $N/nimblec --work /tmp/bw \
  --precisions fp16 --graphs fp16 --torch-compile --compile-precisions fp16 --iterations 50 --rounds 3 \
  --host-io-peers "compile fp16,eager fp16" --out "$OUT/bert.md" >"$OUT/bert.log" 2>&1
echo "bert_gpu.py: rc=$?"; grep -vE "^ +(eager|compile)" "$OUT/bert.log" | tail -15
nbx=/tmp/split.nbx; [ $h = 1 ] && nbx=/tmp/half.nbx
timeout 120 python3 bench/gpu/bert_batch.py --nimblec $N/nimblec --nbx $nbx 2>&1 | tee $OUT/batch.md
