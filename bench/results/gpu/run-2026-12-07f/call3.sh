# Where the fused attention block's time goes: ops_bench probes, cluster occupancy, CUPTI timeline.
tar xJf carry/dev/nimble.tar.xz -C /tmp; tar xJf carry/dev/cupti.tar.xz -C /tmp; export LD_LIBRARY_PATH=/tmp/nimble/lib:/tmp/cupti:/usr/local/cuda/lib64; N=/tmp/nimble
timeout 200 $N/vm_cuda_ops_bench 16 128 384 2>&1 | tee $OUT/ops_bench.txt
mkdir -p /tmp/bw && timeout 60 python3 bench/gpu/bert_gpu.py --nimblec $N/nimblec --export-only /tmp/bw/bert.onnx > /dev/null 2>&1
NIMBLE_FUSE_ATTENTION_OUT_NORM=1 $N/nimblec compile /tmp/bw/bert.onnx -o /tmp/bw/bF.nbx --device=cuda --precision=fp16 --buckets seq=16,64,128,384 2>&1 | tail -1
sh() { echo --shape input_ids=1x$1 --shape attention_mask=1x$1 --shape token_type_ids=1x$1; }
for s in 384 16; do
  CUDA_INJECTION64_PATH=/tmp/cupti/libnimble_cupti_trace.so NIMBLE_CUPTI_TRACE=$OUT/trace_$s.csv timeout 120 $N/nimblec bench /tmp/bw/bF.nbx $(sh $s) --iterations 30 --device-graphs 2>&1 | tail -1
  python3 bench/gpu/graph_timeline.py $OUT/trace_$s.csv > $OUT/timeline_$s.txt 2>&1
  head -16 $OUT/timeline_$s.txt | cut -c1-120; tail -3 $OUT/timeline_$s.txt; rm -f $OUT/trace_$s.csv
done
