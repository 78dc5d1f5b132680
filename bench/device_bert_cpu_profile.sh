#!/bin/bash
# BERT-base fp32 on the GPU machine's CPU, cell by cell (THREADS:SEQ pairs): `nimblec bench`
# under each variant (LABEL:ENV=VALUE, the same binary; p50 and min of 20 runs, two rounds),
# optionally the per-kernel profile (PROFILE=1: of the first variant; PROFILE=all: of each),
# then ONNX Runtime 1.30 on the same ONNX file and thread count (bench/device_cpu.py's ort_ms).
# A variant BIN=NAME runs nimble/NAME (another build carried in the same tarball) instead. Run
# from the repository root through the device tool with CARRY holding nimble.tar.xz
# (nimble/nimblec and nimble/lib/*):
#   CARRY=carry/dev-cpu CELLS="2:16 16:64" VARIANTS="new:X=1 old:NIMBLE_SMALL_GEMM=0" \
#     bash bench/device_bert_cpu_profile.sh
set -e
CARRY=${CARRY:-carry/dev-cpu}
CELLS=${CELLS:-2:16 16:64}
VARIANTS=${VARIANTS:-default:X=1}
tar xJf $CARRY/nimble.tar.xz -C /tmp
export LD_LIBRARY_PATH=/tmp/nimble/lib
N=/tmp/nimble/nimblec; W=/tmp/bert-prof
mkdir -p $W
# Sets bin and envs for variant $1 (LABEL:ENV=VALUE, or LABEL:BIN=NAME for another build).
variant() {
  bin=$N; envs=${1#*:}
  case "$envs" in BIN=*) bin=/tmp/nimble/${envs#BIN=}; envs=X=1 ;; esac
}
python3 bench/gpu/bert_gpu.py --nimblec $N --export-only $W/bert.onnx >/dev/null 2>&1
$N compile $W/bert.onnx -o $W/bert.nbx | tail -1 | cut -c1-100
for cell in $CELLS; do
  t=${cell%%:*}; s=${cell#*:}
  echo "== threads $t seq $s"
  shape="--shape input_ids=1x$s --shape attention_mask=1x$s --shape token_type_ids=1x$s"
  if [ "${PROFILE:-0}" != 0 ]; then
    profiled=${VARIANTS%% *}
    [ "$PROFILE" = all ] && profiled=$VARIANTS
    for v in $profiled; do
      variant "$v"
      echo "profile ${v%%:*}"
      env $envs $bin bench $W/bert.nbx $shape --threads $t --iterations 20 --profile-kernels 2>&1 \
        | sed -n 4,9p
    done
  fi
  for r in 1 2; do
    for v in $VARIANTS; do
      variant "$v"
      echo "r=$r t=$t s=$s ${v%%:*} $(env $envs $bin bench $W/bert.nbx $shape --threads $t \
        --iterations 20 2>&1 | tail -1 | awk '{print "p50", $3, "min", $5}')"
    done
  done
  python3 - $W/bert.onnx $t $s <<'PY'
import sys
import numpy as np
sys.path.insert(0, "bench")
from device_cpu import ort_ms
path, t, s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ids = np.random.randint(0, 30522, (1, s)).astype(np.int64)
feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
print(f"ORT threads {t} seq {s}: p50 {ort_ms(path, feeds, t, 20):.2f} ms", flush=True)
PY
done
