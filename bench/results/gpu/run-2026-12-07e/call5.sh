tar xJf carry/dev/nimble.tar.xz -C /tmp; export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64; N=/tmp/nimble
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
NSYS=$(command -v nsys || ls /opt/nvidia/nsight-systems/*/bin/nsys /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems*/bin/nsys 2>/dev/null | head -1); echo "nsys: $NSYS"
mkdir -p /tmp/bw && timeout 60 python3 bench/gpu/bert_gpu.py --nimblec $N/nimblec --export-only /tmp/bw/bert.onnx > /dev/null 2>&1
$N/nimblec compile /tmp/bw/bert.onnx -o /tmp/bw/b.nbx --device=cuda --precision=fp16 --buckets seq=16,64,128,384 2>&1 | tail -1
sh() { echo --shape input_ids=1x$1 --shape attention_mask=1x$1 --shape token_type_ids=1x$1; }
for s in 384 128; do
  timeout 150 $NSYS profile -o /tmp/r$s --force-overwrite true --cuda-graph-trace=node -t cuda $N/nimblec bench /tmp/bw/b.nbx $(sh $s) --iterations 30 --device-graphs > $OUT/nsys_$s.log 2>&1; echo "nsys $s rc=$?"
  timeout 120 $NSYS stats --report cuda_gpu_trace --format csv --output /tmp/t$s /tmp/r$s.nsys-rep > /dev/null 2>&1; echo "stats rc=$?"
  python3 bench/gpu/graph_timeline.py /tmp/t${s}_cuda_gpu_trace.csv > $OUT/timeline_$s.txt 2>&1
  head -14 $OUT/timeline_$s.txt; echo ...; tail -14 $OUT/timeline_$s.txt
done
