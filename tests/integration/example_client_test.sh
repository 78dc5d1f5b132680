#!/usr/bin/env bash
# Runs examples/python_client.py against a real nimble-server: upload of the small BERT, then
# one inference; the output shapes must be the model's.
#   example_client_test.sh SERVER_BINARY SOURCE_DIR MODEL.onnx WORK_DIR
set -euo pipefail
server=$1 source=$2 model=$3 work=$4
rm -rf "$work" && mkdir -p "$work/repo"
"$server" --model-repository="$work/repo" --grpc-address=127.0.0.1:0 --metrics-port=-1 \
  --port-file="$work/ports" --log-level=warn 2>"$work/server.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 300); do [ -f "$work/ports" ] && break; sleep 0.1; done
port=$(sed -n 's/^grpc=//p' "$work/ports")
out=$(/usr/bin/python3 "$source/examples/python_client.py" --server "127.0.0.1:$port" \
        --model bert --onnx "$model" --seq 7)
echo "$out"
grep -q "^last_hidden_state: float32\[1, 7, 128\]" <<<"$out"
grep -q "^pooler_output: float32\[1, 128\]" <<<"$out"
kill -TERM $pid
wait $pid
trap - EXIT
