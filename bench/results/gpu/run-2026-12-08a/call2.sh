# Nineteenth session, call 2: half partial products by default (f43bc58), --half-outputs
# (results in fp16, as model.half()'s are), and the peers with four rounds (seq 384 first); then an A/B of
# input hoisting and two result-copy branches with half outputs (what time is left).
set -x
tar xJf carry/dev/nimble.tar.xz -C /tmp; export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64; N=/tmp/nimble
(cd $N && NIMBLE_BERT_ONNX=$N/bert_small.onnx timeout 90 ./compiler_cuda_bert_test 2>&1 | grep -E "OK \]|FAILED|PASSED|Failure|relative|Expected|Which" | tail -40) | tee $OUT/bert_test.txt
mkdir -p /tmp/bw
PYTHONUNBUFFERED=1 timeout 330 python3 bench/gpu/bert_gpu.py --nimblec $N/nimblec --work /tmp/bw \
  --precisions fp16 --graphs fp16 --half-outputs-graphs fp16 --torch-compile --compile-precisions fp16 \
  --iterations 50 --rounds 4 --seqs 384,128,64,16 --host-io-peers "compile fp16" --out "$OUT/bert.md" >"$OUT/bert.log" 2>&1
echo "bert_gpu.py: rc=$?"; cat $OUT/bert.md
C="$N/nimblec compile /tmp/bw/bert.onnx --device=cuda --precision=fp16 --buckets seq=16,64,128,384"
$C -o /tmp/def.nbx 2>&1 | tail -1
$C --half-outputs -o /tmp/ho.nbx 2>&1 | tail -1
NIMBLE_CODEGEN_HOIST_INPUT_COPIES=1 $C --half-outputs -o /tmp/hoh.nbx 2>&1 | tail -1
set +x
run() { timeout 30 $N/nimblec bench /tmp/$1.nbx --shape input_ids=$2 --shape attention_mask=$2 --shape token_type_ids=$2 --iterations ${3:-300} --device-graphs 2>/dev/null | tail -1 | awk '{print $3}'; }
for round in 1 2; do for s in 384 128; do
  for v in def ho hoh; do echo "round $round seq $s $v p50 $(run $v 1x$s) ms"; done
  echo "round $round seq $s ho+2branches p50 $(NIMBLE_RESULT_COPY_BRANCHES=2 run ho 1x$s) ms"
done; done 2>&1 | tee $OUT/ab.txt
