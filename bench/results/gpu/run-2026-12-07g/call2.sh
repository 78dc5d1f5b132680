# Session 17: large tiles with deep split-K for BERT-base's layer GEMMs (cuBLASLt): the search,
# the tests with split candidates in tuning, and the whole model A/B; K split into batched fp32
# partials summed by the LayerNorm kernel (vm_cuda_gemm_ln_bench).
set -x
tar xJf carry/dev/nimble.tar.xz -C /tmp; export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64; N=/tmp/nimble
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
timeout 60 $N/vm_cuda_gemm_ln_bench 384 128 2>&1 | tee $OUT/gemm_ln.txt
timeout 150 $N/vm_cuda_gemm_algo_search_bench --split 384 > $OUT/split_384.txt 2>&1; echo rc=$?
grep -E "M=|best at|heuristic #0|cold" $OUT/split_384.txt | head -90
mkdir -p /tmp/bw && python3 bench/gpu/bert_gpu.py --nimblec $N/nimblec --export-only /tmp/bw/bert.onnx >/dev/null 2>&1
OPS_BENCH=0 SEQS="384 128" VARIANTS="base:/tmp/nimble split:/tmp/nimble:NIMBLE_GEMM_TUNE_SPLIT=1" timeout 120 bash bench/gpu/binary_ab.sh carry/dev/nimble.tar.xz
(cd $N && NIMBLE_GEMM_TUNE_SPLIT=1 timeout 60 ./vm_cuda_gemm_test 2>&1 | grep -E "FAILED|PASSED|tests ran" | tail -6) | tee $OUT/gemm_test.txt
NIMBLE_GEMM_TUNE_SPLIT=1 NIMBLE_BERT_ONNX=$N/bert_small.onnx timeout 40 $N/compiler_cuda_bert_test 2>&1 | tail -2 | tee $OUT/bert_test.txt
timeout 90 $N/vm_cuda_gemm_algo_search_bench --split 128 > $OUT/split_128.txt 2>&1; echo rc=$?
grep -E "M=|best at|heuristic #0" $OUT/split_128.txt
