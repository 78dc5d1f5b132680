# A/B of the LSTM fast path on the GPU machine's CPU, in one device call: two nimblec builds
# (and environment variants of the new one) interleaved, then PyTorch 2.11 and ORT 1.30 on the
# same module / ONNX file. Run from the repository root through the device tool, with CARRY
# holding nimble.tar.xz (nimble/nimblec, nimble/nimblec.base, nimble/lib/*) in `carry`:
#
#     CARRY=carry/dev-cpu VARIANTS="new:X=1 other:SOME_ENV=value" bash bench/device_lstm_ab.sh
#
# Each variant is LABEL:ENV=VALUE[,ENV=VALUE...], run with the new build. BASE_FLAGS are extra
# `nimblec compile` flags of the base build's executable (e.g. --disable-pass=... with the same
# binary as nimblec.base); THREADS and SEQS default to "2 16" and "16 64 128". Prints one line per
# (repeat, threads, seq, variant): p50 and min of 20 runs in ms; then one line per (threads, seq)
# for the peers.
set -e
export PYTHONUNBUFFERED=1
CARRY=${CARRY:-carry/dev-cpu}
VARIANTS=${VARIANTS:-new:X=1}
THREADS=${THREADS:-2 16}
SEQS=${SEQS:-16 64 128}
tar xJf $CARRY/nimble.tar.xz -C /tmp
export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64
N=/tmp/nimble/nimblec; B=/tmp/nimble/nimblec.base; W=/tmp/lstm-ab
mkdir -p $W
echo "L2 $(getconf LEVEL2_CACHE_SIZE) nproc $(nproc) $(date -u +%F)"
python3 - $W <<'PY'
import sys, torch
sys.path.insert(0, "scripts")
import export_models
torch.manual_seed(0)
export_models.export(export_models.Lstm(650, 650).eval(), (torch.randn(5, 1, 650),), ["x"],
                     ["y", "h", "c"], {"x": {0: "seq", 1: "batch"}, "y": {0: "seq", 1: "batch"},
                                       "h": {1: "batch"}, "c": {1: "batch"}},
                     sys.argv[1] + "/lstm.onnx", 14)
PY
$N compile $W/lstm.onnx -o $W/lstm.nbx > /dev/null
$B compile $W/lstm.onnx -o $W/lstm_base.nbx $BASE_FLAGS > /dev/null
L() { tail -1 | awk '{print "p50", $3, "min", $5}'; }
for r in 1 2; do for t in $THREADS; do for s in $SEQS; do
  echo "r=$r t=$t s=$s base $($B bench $W/lstm_base.nbx --shape x=${s}x1x650 --threads $t --iterations 20 | L)"
  for v in $VARIANTS; do
    echo "r=$r t=$t s=$s ${v%%:*} $(env $(echo ${v#*:} | tr , " ") $N bench $W/lstm.nbx --shape x=${s}x1x650 --threads $t --iterations 20 | L)"
  done
done; done; done
python3 - $W <<'PY'
import sys, torch
sys.path.insert(0, "bench")
sys.path.insert(0, "scripts")
import export_models
from device_cpu import ort_ms, torch_ms
torch.manual_seed(0)
lstm = export_models.Lstm(650, 650).eval()
for threads in (2, 16):
    for seq in (16, 64, 128):
        x = torch.randn(seq, 1, 650)
        print(f"peer t={threads} s={seq} torch={torch_ms(lstm, (x,), threads, 20):.2f} "
              f"ort={ort_ms(sys.argv[1] + '/lstm.onnx', {'x': x.numpy()}, threads, 20):.2f}",
              flush=True)
PY
