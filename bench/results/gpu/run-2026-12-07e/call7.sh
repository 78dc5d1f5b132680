tar xJf carry/dev/nimble.tar.xz -C /tmp; tar xJf carry/dev/cupti.tar.xz -C /tmp; export LD_LIBRARY_PATH=/tmp/nimble/lib:/tmp/cupti:/usr/local/cuda/lib64; N=/tmp/nimble
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
NIMBLE_BERT_ONNX=$N/bert_small.onnx timeout 60 $N/compiler_cuda_bert_test 2>&1 | grep -E "OK|FAILED|PASSED" | tail -6
NIMBLE_CODEGEN_HOIST_INPUT_COPIES=0 NIMBLE_BERT_ONNX=$N/bert_small.onnx timeout 60 $N/compiler_cuda_bert_test 2>&1 | tail -1
mkdir -p /tmp/bw && timeout 60 python3 bench/gpu/bert_gpu.py --nimblec $N/nimblec --export-only /tmp/bw/bert.onnx > /dev/null 2>&1
$N/nimblec compile /tmp/bw/bert.onnx -o /tmp/bw/b.nbx --device=cuda --precision=fp16 --buckets seq=16,64,128,384 2>&1 | tail -1
NIMBLE_CODEGEN_HOIST_INPUT_COPIES=0 $N/nimblec compile /tmp/bw/bert.onnx -o /tmp/bw/b0.nbx --device=cuda --precision=fp16 --buckets seq=16,64,128,384 2>&1 | tail -1
sh() { echo --shape input_ids=1x$1 --shape attention_mask=1x$1 --shape token_type_ids=1x$1; }
for s in 384 128; do $N/nimblec bench /tmp/bw/b.nbx $(sh $s) --iterations 5 --device-graphs > /dev/null 2>&1; done
for r in 1 2 3; do for s in 384 128; do
  a=$($N/nimblec bench /tmp/bw/b.nbx $(sh $s) --iterations 300 --device-graphs 2>/dev/null | tail -1 | awk '{print $3}')
  b=$($N/nimblec bench /tmp/bw/b0.nbx $(sh $s) --iterations 300 --device-graphs 2>/dev/null | tail -1 | awk '{print $3}')
  c=$(NIMBLE_RESULT_COPY_BRANCHES=1 $N/nimblec bench /tmp/bw/b.nbx $(sh $s) --iterations 300 --device-graphs 2>/dev/null | tail -1 | awk '{print $3}')
  d=$(NIMBLE_RESULT_COPY_BRANCHES=1 $N/nimblec bench /tmp/bw/b0.nbx $(sh $s) --iterations 300 --device-graphs 2>/dev/null | tail -1 | awk '{print $3}')
  echo "round $r seq $s p50 ms: new $a / no hoist $b / one copy branch $c / neither $d"; done; done | tee $OUT/ab.txt
CUDA_INJECTION64_PATH=/tmp/cupti/libnimble_cupti_trace.so NIMBLE_CUPTI_TRACE=$OUT/trace_new_384.csv timeout 120 $N/nimblec bench /tmp/bw/b.nbx $(sh 384) --iterations 30 --device-graphs > /dev/null 2>&1; xz -9 $OUT/trace_new_384.csv; ls $OUT
