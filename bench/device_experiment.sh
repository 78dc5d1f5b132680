set -e
export PYTHONUNBUFFERED=1
tar xJf carry/dev/nimble.tar.xz -C /tmp
export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64
N=/tmp/nimble/nimblec
grep -o -w 'avx512f\|avx512_bf16\|amx_tile\|avx2\|avx512_vnni' /proc/cpuinfo | sort | uniq -c | head
nproc
python3 - <<'PY'
import sys, torch
sys.path.insert(0, "scripts")
import export_models
torch.manual_seed(0)
m = export_models.Bert(12, 768, 12, 3072).eval()
ids = torch.randint(0, 30522, (2, 9))
names = ["input_ids", "attention_mask", "token_type_ids"]
export_models.export(m, (ids, torch.ones_like(ids), torch.zeros_like(ids)), names,
    ["last_hidden_state", "pooler_output"],
    {n: {0: "batch", 1: "seq"} for n in names} | {"last_hidden_state": {0: "batch", 1: "seq"}, "pooler_output": {0: "batch"}},
    "/tmp/bert.onnx", 14)
PY
S="--shape input_ids=1x128 --shape attention_mask=1x128 --shape token_type_ids=1x128"
$N compile /tmp/bert.onnx -o /tmp/bert.nbx
for t in 16 2; do
  echo "== nimble threads $t default"; $N bench /tmp/bert.nbx $S --threads $t --iterations 20 --profile-kernels | head -9
  echo "== nimble threads $t PASSIVE"; OMP_WAIT_POLICY=PASSIVE $N bench /tmp/bert.nbx $S --threads $t --iterations 20 | tail -1
  echo "== nimble threads $t ACTIVE"; OMP_WAIT_POLICY=ACTIVE $N bench /tmp/bert.nbx $S --threads $t --iterations 20 | tail -1
  echo "== nimble threads $t OMP_PROC_BIND=close"; OMP_PROC_BIND=close OMP_PLACES=cores $N bench /tmp/bert.nbx $S --threads $t --iterations 20 | tail -1
  echo "== ORT threads $t"; python3 bench/ort_profile.py /tmp/bert.onnx $S --threads $t --iterations 20 | head -8 || true
done
echo "== dnnl verbose"
DNNL_VERBOSE=1 $N bench /tmp/bert.nbx $S --threads 16 --iterations 1 | grep "exec" | awk -F, '{print $3,$4,$5, $(NF-1)}' | sort | uniq -c | sort -rn | head -12
