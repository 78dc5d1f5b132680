# AttentionOutNorm (fused attention block) tests and A/B; HEAD tests; hoisting / branches A/B.
tar xJf carry/dev/nimble.tar.xz -C /tmp; export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64; N=/tmp/nimble; export NIMBLE_BERT_ONNX=$N/bert_small.onnx
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
t() { f=$OUT/$1.txt; shift; timeout 150 "$@" > $f 2>&1; echo "$(basename $f) rc=$? $(grep -cE '^\[       OK' $f) ok $(grep -cE '^\[  FAILED' $f) failed"; grep -E "^\[  FAILED|Failure|rror" $f | head -4; }
t on $N/vm_cuda_kernels_vs_cpu_test --gtest_filter=*AttentionOutNorm*; grep AttentionOutNorm $OUT/on.txt | head -30
NIMBLE_CUDA_ATTENTION_OUT_NORM=0 t off $N/vm_cuda_kernels_vs_cpu_test --gtest_filter=*AttentionOutNorm*
t kernels $N/vm_cuda_kernels_vs_cpu_test; t bert $N/compiler_cuda_bert_test; grep -E "relative|fused" $OUT/bert.txt | head -24; t gemm $N/vm_cuda_gemm_test
mkdir -p /tmp/bw && timeout 60 python3 bench/gpu/bert_gpu.py --nimblec $N/nimblec --export-only /tmp/bw/bert.onnx > /dev/null 2>&1
c() { env $1 $N/nimblec compile /tmp/bw/bert.onnx -o /tmp/bw/$2.nbx --device=cuda --precision=fp16 --buckets seq=16,64,128,384 2>&1 | tail -1 | cut -c1-90; }
c A=0 b0; c NIMBLE_FUSE_ATTENTION_OUT_NORM=1 bF; c NIMBLE_FUSE_ATTENTION_OUT_NORM=1,NIMBLE_CODEGEN_HOIST_INPUT_COPIES=1 bFH
sh() { echo --shape input_ids=1x$1 --shape attention_mask=1x$1 --shape token_type_ids=1x$1; }
b() { env $1 timeout 30 $N/nimblec bench /tmp/bw/$2.nbx $(sh $3) --iterations ${4:-300} --device-graphs 2>/dev/null | tail -1 | awk '{print $3}'; }
for s in 384 128 64 16; do for x in b0 bF; do b A=0 $x $s 5 > /dev/null; done; done
for r in 1 2 3; do for s in 384 128 64 16; do
  echo "round $r seq $s p50 ms: base $(b A=0 b0 $s) / fused $(b A=0 bF $s) / fused+hoist $(b A=0 bFH $s) / fused+hoist+2br $(b NIMBLE_RESULT_COPY_BRANCHES=2 bFH $s) / base+2br $(b NIMBLE_RESULT_COPY_BRANCHES=2 b0 $s)"
done; done | tee $OUT/ab.txt
