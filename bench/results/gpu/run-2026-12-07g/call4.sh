# Prepared for the next session, after call3.sh has shown the split pass correct and faster: the
# peers (torch.compile dynamic, eager) against Nimble with split-gemm-layernorm compiled in (the
# environment reaches bert_gpu.py's nimblec), three alternating rounds, seq 384 / 128 / 64 / 16.
# Binaries packed as bench/gpu/README.md says; about 450 s of commands on a warm machine.
set -x
export NIMBLE_SPLIT_GEMM_LN=1
LSTM=0 ATTENTION_AB=0 OUT=$OUT bash bench/gpu/run_suite.sh carry/dev/nimble.tar.xz
grep -E "^\| (384|128|64|16) " $OUT/bert.md
