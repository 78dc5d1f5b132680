# Nineteenth session, call 3 (what the device budget had left after failed starts): seq 384 only,
# Nimble fp16 graphs with and without --half-outputs against torch.compile fp16, three rounds;
# then the BERT GPU tests (half outputs among them) if time is left.
tar xJf carry/dev/nimble.tar.xz -C /tmp; export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64; N=/tmp/nimble
mkdir -p /tmp/bw
PYTHONUNBUFFERED=1 timeout 150 python3 bench/gpu/bert_gpu.py --nimblec $N/nimblec --work /tmp/bw \
  --precisions fp16 --graphs fp16 --half-outputs-graphs fp16 --torch-compile --compile-precisions fp16 \
  --iterations 50 --rounds 3 --seqs 384 --host-io-peers "compile fp16" --out "$OUT/bert.md" >"$OUT/bert.log" 2>&1
echo "bert_gpu.py: rc=$?"; cat $OUT/bert.md; grep -E "round|correctness" $OUT/bert.log
(cd $N && NIMBLE_BERT_ONNX=$N/bert_small.onnx timeout 40 ./compiler_cuda_bert_test 2>&1 | grep -E "OK \]|FAILED|PASSED|Failure|relative|Expected|Which" | tail -40) | tee $OUT/bert_test.txt
