#!/bin/bash
# Multi-GPU serving scaling (issue 8): BERT-base served from GPU instances on 1, 2, 4, ... GPUs of
# one host, the same mixed-length nimble-load workload against each, throughput and scaling.
# Output correctness across devices is server_gpu_instance_test's
# InstancesOnEveryGpuAnswerLikeOneGpuAndShareTheWork (run it first: it skips below 2 GPUs).
#
# Run on the GPU machine from the repository root, with NIMBLE pointing at a folder holding
# nimble-server, nimble-load and server_gpu_instance_test (+ lib/ of their shared libraries, see
# carry/dev-gpu/pack.sh) and OUT at a results folder:
#     NIMBLE=/tmp/nimble OUT=/tmp/out bash bench/gpu/multi_gpu_serving.sh
# Writes $OUT/multi_gpu_<n>.json (nimble-load) and prints a table; scaling is throughput(n) /
# throughput(1), against the issue's bar of 0.9 n. PRECISION (default fp16) sets the GPU precision.
set -e
NIMBLE=${NIMBLE:-/tmp/nimble}; OUT=${OUT:-/tmp/out}; mkdir -p $OUT
export LD_LIBRARY_PATH=$NIMBLE/lib:/usr/local/cuda/lib64:$LD_LIBRARY_PATH
GPUS=$(nvidia-smi -L | wc -l)
echo "GPUs: $GPUS"; nvidia-smi -L
$NIMBLE/server_gpu_instance_test 2>&1 | grep -E "^\[ |SKIP|Failure" || true
R=/tmp/multi_gpu_repo; rm -rf $R; mkdir -p $R/bert/1
python3 - $R/bert/1/model.onnx <<'PY'
import sys, torch
sys.path.insert(0, "scripts")
import export_models
torch.manual_seed(0)
m = export_models.Bert(12, 768, 12, 3072).eval()
ids = torch.randint(0, 30522, (2, 9))
names = ["input_ids", "attention_mask", "token_type_ids"]
export_models.export(m, (ids, torch.ones_like(ids), torch.zeros_like(ids)), names,
    ["last_hidden_state", "pooler_output"],
    {n: {0: "batch", 1: "seq"} for n in names} | {"last_hidden_state": {0: "batch", 1: "seq"},
                                                   "pooler_output": {0: "batch"}}, sys.argv[1], 14)
PY
declare -A RATE
for n in 1 2 4 8; do
  [ $n -le $GPUS ] || break
  devices=$(seq -s, 0 $((n - 1)))
  cat > $R/bert/config.json <<J
{"buckets": {"seq": {"bounds": [16, 32, 64, 128, 256, 512]}}, "max_batch_size": 32,
 "max_queue_delay_us": 1000,
 "inputs": [{"name": "input_ids", "paddable_axes": [1]}, {"name": "attention_mask", "paddable_axes": [1]},
            {"name": "token_type_ids", "paddable_axes": [1]}],
 "outputs": [{"name": "last_hidden_state", "slice_axes": [1]}],
 "instance_groups": {"gpu": {"devices": [$devices], "count": 2, "precision": "${PRECISION:-fp16}",
                           "graphs": true}}}
J
  $NIMBLE/nimble-server --model-repository=$R --grpc-address=127.0.0.1:8001 --metrics-port=8002 \
    --cache-dir=/tmp/multi_gpu_cache > $OUT/server_$n.log 2>&1 &
  server=$!
  for i in $(seq 1 600); do grep -q "serves its specialized variants" $OUT/server_$n.log && break; sleep 0.5; done
  $NIMBLE/nimble-load --url 127.0.0.1:8001 --model bert --seq-len lognormal:mean=64,max=512 \
    --int-max token_type_ids=2 --concurrency $((64 * n)) --warmup 3s --window 5s --max-windows 8 \
    --quiet --json $OUT/multi_gpu_$n.json | tail -3
  RATE[$n]=$(python3 -c "import json,sys; print(json.load(open('$OUT/multi_gpu_$n.json'))['levels'][0]['throughput_infer_per_s'])" 2>/dev/null || echo 0)
  kill $server; wait $server || true
done
echo "| GPUs | infer/s | scaling | bar (0.9 n) |"
for n in 1 2 4 8; do
  [ -n "${RATE[$n]}" ] || continue
  python3 -c "r1=${RATE[1]}; r=${RATE[$n]}; print(f'| $n | {r:.0f} | {r / r1 if r1 else 0:.2f} | {0.9 * $n:.1f} |')"
done
