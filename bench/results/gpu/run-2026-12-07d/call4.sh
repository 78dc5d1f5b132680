set -x
tar xJf carry/dev/nimble.tar.xz -C /tmp; export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64; N=/tmp/nimble
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
mkdir -p /tmp/bw && python3 bench/gpu/bert_gpu.py --nimblec $N/nimblec --export-only /tmp/bw/bert.onnx
OPS_BENCH=0 SEQS="384 128" VARIANTS="base:/tmp/nimble tune:/tmp/nimble:NIMBLE_GEMM_AUTOTUNE=1" timeout 100 bash bench/gpu/binary_ab.sh carry/dev/nimble.tar.xz
(cd $N && timeout 45 ./vm_cuda_gemm_test 2>&1 | grep -E "FAILED|PASSED|tests ran" | tail -6) | tee $OUT/gemm_test.txt
NIMBLE_GEMM_AUTOTUNE=1 NIMBLE_BERT_ONNX=$N/bert_small.onnx timeout 30 $N/compiler_cuda_bert_test 2>&1 | tail -2 | tee $OUT/bert_test.txt
