# Session 17, call 1: large tiles with deep split-K for BERT-base's layer GEMMs (cuBLASLt).
set -x
tar xJf carry/dev/search.tar.xz -C /tmp
export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv
timeout 280 /tmp/nimble/vm_cuda_gemm_algo_search_bench --split 384 > $OUT/split_384.txt 2>&1; echo rc=$?
tail -80 $OUT/split_384.txt
timeout 200 /tmp/nimble/vm_cuda_gemm_algo_search_bench --split 128 > $OUT/split_128.txt 2>&1; echo rc=$?
grep -E "M=|best at|heuristic #0" $OUT/split_128.txt
