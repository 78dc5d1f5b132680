# For the next session (not run: the device budget ran out). Tests and A/B of the input-copy
# hoisting (compile time) and the two result-copy branches, both off by default.
tar xJf carry/dev/nimble.tar.xz -C /tmp; export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64; N=/tmp/nimble
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for e in "A=0" "NIMBLE_CODEGEN_HOIST_INPUT_COPIES=1" "NIMBLE_RESULT_COPY_BRANCHES=2"; do env $e NIMBLE_BERT_ONNX=$N/bert_small.onnx timeout 60 $N/compiler_cuda_bert_test 2>&1 | tail -1; done
mkdir -p /tmp/bw && timeout 60 python3 bench/gpu/bert_gpu.py --nimblec $N/nimblec --export-only /tmp/bw/bert.onnx > /dev/null 2>&1
$N/nimblec compile /tmp/bw/bert.onnx -o /tmp/bw/b0.nbx --device=cuda --precision=fp16 --buckets seq=16,64,128,384 2>&1 | tail -1
NIMBLE_CODEGEN_HOIST_INPUT_COPIES=1 $N/nimblec compile /tmp/bw/bert.onnx -o /tmp/bw/b.nbx --device=cuda --precision=fp16 --buckets seq=16,64,128,384 2>&1 | tail -1
sh() { echo --shape input_ids=1x$1 --shape attention_mask=1x$1 --shape token_type_ids=1x$1; }
for s in 384 128; do $N/nimblec bench /tmp/bw/b.nbx $(sh $s) --iterations 5 --device-graphs > /dev/null 2>&1; done
for r in 1 2 3; do for s in 384 128; do
  a=$(NIMBLE_RESULT_COPY_BRANCHES=2 $N/nimblec bench /tmp/bw/b.nbx $(sh $s) --iterations 300 --device-graphs 2>/dev/null | tail -1 | awk '{print $3}')
  b=$($N/nimblec bench /tmp/bw/b.nbx $(sh $s) --iterations 300 --device-graphs 2>/dev/null | tail -1 | awk '{print $3}')
  c=$(NIMBLE_RESULT_COPY_BRANCHES=2 $N/nimblec bench /tmp/bw/b0.nbx $(sh $s) --iterations 300 --device-graphs 2>/dev/null | tail -1 | awk '{print $3}')
  d=$($N/nimblec bench /tmp/bw/b0.nbx $(sh $s) --iterations 300 --device-graphs 2>/dev/null | tail -1 | awk '{print $3}')
  echo "round $r seq $s p50 ms: both $a / hoist only $b / two branches only $c / neither $d"; done; done | tee $OUT/ab.txt
