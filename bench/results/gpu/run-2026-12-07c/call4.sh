tar xJf carry/dev/nimble.tar.xz -C /tmp; export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64; N=/tmp/nimble/nimblec
NCU_SEQS=384 timeout 200 bash bench/gpu/profile_bert.sh carry/dev/nimble.tar.xz 2>&1 | tail -45
NSYS=$(command -v nsys || ls /opt/nvidia/nsight-systems/*/bin/nsys /usr/local/cuda/bin/nsys 2>/dev/null | head -1); echo "nsys: $NSYS"
shape() { echo --shape input_ids=1x$1 --shape attention_mask=1x$1 --shape token_type_ids=1x$1; }
if [ -n "$NSYS" ]; then
  timeout 150 $NSYS profile -o /tmp/r384 --force-overwrite true --cuda-graph-trace=node -t cuda $N bench /tmp/w/b.nbx $(shape 384) --iterations 30 --device-graphs > $OUT/nsys.log 2>&1; echo "nsys rc=$?"
  timeout 120 $NSYS stats --report cuda_gpu_trace --format csv --output $OUT/trace384 /tmp/r384.nsys-rep > /dev/null 2>&1; echo "stats rc=$?"; ls -la $OUT; xz -9 $OUT/trace384*.csv 2>/dev/null; ls -la $OUT
fi
