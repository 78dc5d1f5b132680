tar xJf carry/dev/nimble.tar.xz -C /tmp; export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64; N=/tmp/nimble
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
for v in "0 0" "0 8" "2 0" "2 8" "2 4"; do set -- $v; NIMBLE_CUDA_ATTENTION_ONE_PASS=$1 NIMBLE_CUDA_ATTENTION_CLUSTER=$2 timeout 60 $N/vm_cuda_kernels_vs_cpu_test > $OUT/kvc_p$1_c$2.txt 2>&1; echo "kernels_vs_cpu one_pass=$1 cluster=$2 rc=$? $(grep -cE '^\[       OK \]' $OUT/kvc_p$1_c$2.txt) ok"; grep -E '^\[  FAILED|Failure' $OUT/kvc_p$1_c$2.txt | head -4; done
{ for r in 1 2; do for v in "1 0" "1 8" "2 0" "2 8" "2 4"; do set -- $v; echo "== one_pass=$1 cluster=$2 round $r"; NIMBLE_CUDA_ATTENTION_ONE_PASS=$1 NIMBLE_CUDA_ATTENTION_CLUSTER=$2 timeout 30 $N/vm_cuda_ops_bench 256 320 384; done; done; } > $OUT/ops_bench.txt 2>&1
grep -v "^ *$" $OUT/ops_bench.txt | grep -v "SM clock" | grep -i -E "==|attention" | head -60
timeout 60 python3 bench/gpu/d2h_copy.py 2>&1 | tee $OUT/d2h.txt
(cd $N && timeout 90 ./vm_cuda_gemm_test 2>&1 | grep -E "FAILED|PASSED|tests ran" | tail -6) | tee $OUT/gemm_test.txt
for v in "1 0" "2 8"; do set -- $v; NIMBLE_CUDA_ATTENTION_ONE_PASS=$1 NIMBLE_CUDA_ATTENTION_CLUSTER=$2 NIMBLE_BERT_ONNX=$N/bert_small.onnx timeout 60 $N/compiler_cuda_bert_test 2>&1 | tail -1 | tee -a $OUT/bert_test.txt; done
mkdir -p /tmp/bw && timeout 60 python3 bench/gpu/bert_gpu.py --nimblec $N/nimblec --export-only /tmp/bw/bert.onnx > /dev/null 2>&1
$N/nimblec compile /tmp/bw/bert.onnx -o /tmp/bw/b.nbx --device=cuda --precision=fp16 --buckets seq=16,64,128,384 2>&1 | tail -1
sh() { echo --shape input_ids=1x$1 --shape attention_mask=1x$1 --shape token_type_ids=1x$1; }
t() { local s0=$EPOCHREALTIME; "$@" >/dev/null 2>&1; local s1=$EPOCHREALTIME; awk "BEGIN{printf \"%.3f\", $s1 - $s0}"; }
export NIMBLE_GEMM_TUNE_CACHE_DIR=/tmp/tc
{ for s in 384 128; do rm -rf /tmp/tc
  a=$(NIMBLE_GEMM_AUTOTUNE=0 t $N/nimblec bench /tmp/bw/b.nbx $(sh $s) --iterations 1 --device-graphs)
  b=$(t $N/nimblec bench /tmp/bw/b.nbx $(sh $s) --iterations 1 --device-graphs)
  c=$(t $N/nimblec bench /tmp/bw/b.nbx $(sh $s) --iterations 1 --device-graphs)
  echo "seq $s: process (load, one call, capture) s: untuned $a / warm-up tuned, cold cache $b / warm cache $c; cache files $(ls /tmp/tc | wc -l)"; done; } 2>&1 | tee $OUT/first_call.txt
OPS_BENCH=0 SEQS="384 128" VARIANTS="untuned:/tmp/nimble:NIMBLE_GEMM_AUTOTUNE=0 tuned:/tmp/nimble c8:/tmp/nimble:NIMBLE_CUDA_ATTENTION_CLUSTER=8 p2:/tmp/nimble:NIMBLE_CUDA_ATTENTION_ONE_PASS=2 p2c8:/tmp/nimble:NIMBLE_CUDA_ATTENTION_ONE_PASS=2,NIMBLE_CUDA_ATTENTION_CLUSTER=8" timeout 220 bash bench/gpu/binary_ab.sh carry/dev/nimble.tar.xz 2>&1 | grep -v "^ \|SM clock"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
for v in "1 0" "2 8"; do set -- $v; NIMBLE_CUDA_ATTENTION_ONE_PASS=$1 NIMBLE_CUDA_ATTENTION_CLUSTER=$2 timeout 60 $NCU --section SpeedOfLight --section WarpStateStats --section LaunchStats --section MemoryWorkloadAnalysis --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio -k regex:FlashAttention --launch-skip 3 --launch-count 1 $N/nimblec bench /tmp/bw/b.nbx $(sh 384) --iterations 1 > $OUT/ncu_p$1_c$2.txt 2>&1; echo "ncu $v rc=$?"; grep -E "Duration|L2 Cache Throughput|Warp Cycles Per Issued" $OUT/ncu_p$1_c$2.txt; grep stalled $OUT/ncu_p$1_c$2.txt | sort -k3 -g -r | head -6; done
