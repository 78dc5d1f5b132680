tar xJf carry/dev/nimble.tar.xz -C /tmp; export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64; N=/tmp/nimble; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for t in vm_cuda_kernels_vs_cpu_test compiler_cuda_bert_test vm_cuda_runtime_test; do NIMBLE_BERT_ONNX=$N/bert_small.onnx timeout 60 $N/$t > $OUT/$t.txt 2>&1; echo "$t rc=$? $(grep -cE '^\[       OK \]' $OUT/$t.txt) ok"; grep -E '^\[  FAILED|Failure' $OUT/$t.txt | head -4; done
{ for r in 1 2; do for v in 1 0; do echo "== one_pass=$v round $r"; NIMBLE_CUDA_ATTENTION_ONE_PASS=$v timeout 30 $N/vm_cuda_ops_bench 256 320 352 384 512; done; done
  for f in q3k4 q3k6 q2k6 q3k5; do echo "== forced $f"; NIMBLE_CUDA_ATTENTION=$f timeout 30 $N/vm_cuda_ops_bench 320 384; done; } > $OUT/ops_bench.txt 2>&1
grep -v "^ *$" $OUT/ops_bench.txt | grep -v "SM clock" | head -60
mkdir -p /tmp/bw && timeout 60 python3 bench/gpu/bert_gpu.py --nimblec $N/nimblec --export-only /tmp/bw/bert.onnx > /dev/null 2>&1
OPS_BENCH=0 SEQS="384 320 128" VARIANTS="new:/tmp/nimble old:/tmp/nimble:NIMBLE_CUDA_ATTENTION_ONE_PASS=0" timeout 150 bash bench/gpu/binary_ab.sh carry/dev/nimble.tar.xz 2>&1 | grep -v "^ \|SM clock"
