set -e
tar xJf carry/dev-cpu/nimble.tar.xz -C /tmp && cp /tmp/nimble/nimblec /tmp/nimble/nimblec.base
export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
lscpu | grep -E "^Model:|Model name|L2" || true
/tmp/nimble/vm_cpu_kernels_test --gtest_filter='StackedLstm*:LstmFastPath*' 2>&1 | tail -3 | tee $OUT/rnn_test.txt
CARRY=carry/dev-cpu THREADS="16 8" BASE_FLAGS=--disable-pass=fuse-stacked-lstm \
  VARIANTS="auto:X=1 wave:NIMBLE_LSTM_WAVEFRONT=1 wavex:NIMBLE_LSTM_WAVEFRONT=1,NIMBLE_LSTM_WAVEFRONT_X=1" bash bench/device_lstm_ab.sh 2>&1 | tee $OUT/lstm_ab.txt
W=/tmp/lstm-ab; N=/tmp/nimble/nimblec
$N inspect $W/lstm.nbx | grep -c StackedLSTM || true
for f in lstm lstm_base; do for x in 0 1; do echo "trace $f x=$x t=16 s=128"; NIMBLE_LSTM_WAVEFRONT_X=$x NIMBLE_LSTM_TRACE=1 $N bench $W/$f.nbx --shape x=128x1x650 --threads 16 --iterations 10 2>&1 | grep -E "team|projection|^10 " | tail -4; done; done 2>&1 | tee $OUT/lstm_trace.txt
timeout 330 /tmp/nimble/vm_cuda_gemm_algo_search_bench 384 128 2>&1 | tee $OUT/search.txt
