#!/usr/bin/env python3
"""Model-execution latency on the GPU machine: Nimble against PyTorch eager,
torch.compile(dynamic=True) and ONNX Runtime, same files, same inputs, same run.

Runs there with its python3 (PyTorch 2.11, onnxruntime 1.30; see bench/gpu/README.md for the
device-tool command). Exports scripts/export_models.py's BERT-base and 2x650 LSTM with that
PyTorch (so Nimble and ONNX Runtime read one ONNX file and PyTorch runs the module that was
exported), then for each sequence length (batch 1) times

  CPU, at --threads threads (torch.set_num_threads, ORT intra_op_num_threads, nimblec --threads):
    nimble            `nimblec bench` on the ONNX file
    torch_eager       the module, torch.no_grad()
    torch_compile     torch.compile(module, dynamic=True); its first call (the compile) is
                      reported separately as compile_s
    ort               ONNX Runtime CPUExecutionProvider, all graph optimisations
  GPU (when torch.cuda.is_available()), fp32, latency includes a torch.cuda.synchronize():
    nimble            `nimblec bench --device cuda` once nimblec has it (the CUDA backend is in
                      progress: until then the row says "unsupported" and why)
    torch_eager, torch_compile (dynamic=True), ort (CUDAExecutionProvider, when installed)

Every number is the p50 of --iterations calls after --warmup calls. A peer that fails (no
C++ compiler for inductor, no CUDA provider, ...) is recorded with its error and the run goes
on; Nimble's CPU row failing stops the run (exit 1). Writes --json (and a Markdown table to
--md); bench/report.py renders the JSON when it is copied into bench/results/gpu.json.

    python3 bench/gpu/model_compare.py --nimblec /tmp/nimble/nimblec --json $OUT/gpu.json \
        --md $OUT/gpu.md [--threads 16] [--seqs 16,64,128,384] [--lstm-seqs 16,64,128] \
        [--only cpu|gpu] [--models bert,lstm]
"""
import argparse
import os
import subprocess
import sys
import time
import traceback

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
sys.path.insert(0, os.path.join(HERE, ".."))
import benchlib  # noqa: E402
import export_models  # noqa: E402

BERT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def export(work):
    """BERT-base and LSTM 2x650 ONNX files (opset 14, dynamic batch and sequence)."""
    torch.manual_seed(0)
    bert = export_models.Bert(12, 768, 12, 3072).eval()
    bert_path = os.path.join(work, "bert.onnx")
    ids = torch.randint(0, 30522, (2, 9))
    export_models.export(bert, (ids, torch.ones_like(ids), torch.zeros_like(ids)), BERT_INPUTS,
                         ["last_hidden_state", "pooler_output"],
                         {n: {0: "batch", 1: "seq"} for n in BERT_INPUTS} |
                         {"last_hidden_state": {0: "batch", 1: "seq"},
                          "pooler_output": {0: "batch"}}, bert_path, 14)
    lstm = export_models.Lstm(650, 650).eval()
    lstm_path = os.path.join(work, "lstm.onnx")
    export_models.export(lstm, (torch.randn(5, 1, 650),), ["x"], ["y", "h", "c"],
                         {"x": {0: "seq", 1: "batch"}, "y": {0: "seq", 1: "batch"},
                          "h": {1: "batch"}, "c": {1: "batch"}}, lstm_path, 14)
    return {"bert": (bert, bert_path), "lstm": (lstm, lstm_path)}


def inputs_for(model, seq):
    """(numpy feeds by ONNX name, torch tensors in forward order, nimblec --shape specs)."""
    if model == "bert":
        shape = (1, seq)
        feeds = {"input_ids": np.random.randint(0, 30522, shape).astype(np.int64),
                 "attention_mask": np.ones(shape, np.int64),
                 "token_type_ids": np.zeros(shape, np.int64)}
        return feeds, [torch.from_numpy(feeds[n]) for n in BERT_INPUTS], \
            [f"{n}=1x{seq}" for n in BERT_INPUTS]
    x = np.random.randn(seq, 1, 650).astype(np.float32)
    return {"x": x}, [torch.from_numpy(x)], [f"x={seq}x1x650"]


def timed(fn, iterations, warmup, sync=None):
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append((time.perf_counter() - start) * 1000)
    return benchlib.p50(times)


def nimble_ms(nimblec, onnx, shapes, threads, iterations, device):
    cmd = [nimblec, "bench", onnx, "--threads", str(threads), "--iterations", str(iterations)]
    for s in shapes:
        cmd += ["--shape", s]
    if device == "cuda":
        usage = subprocess.run([nimblec], capture_output=True, text=True).stderr
        if "--device" not in usage:
            raise RuntimeError("unsupported: this nimblec has no --device flag yet (the CUDA "
                               "backend is in progress, issue 7)")
        cmd += ["--device", "cuda"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()
    fields = out[-1].split()  # iterations mean p50 p90 min kernel_calls outside_%
    return float(fields[2])


def ort_session(onnx, threads, device):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError("unsupported: onnxruntime has no CUDAExecutionProvider here "
                               f"(providers: {ort.get_available_providers()})")
        return ort.InferenceSession(onnx, so, providers=["CUDAExecutionProvider"])
    return ort.InferenceSession(onnx, so, providers=["CPUExecutionProvider"])


class Runner:
    def __init__(self, args, models):
        self.args, self.models = args, models
        self.rows = []
        self.compiled = {}  # (model, device) -> torch.compile'd module (dynamic=True)
        self.ort = {}       # (model, device) -> session

    def record(self, model, device, seq, peer, fn, fatal=False):
        row = {"model": model, "device": device, "seq": seq, "peer": peer}
        try:
            row.update(fn())
        except Exception as e:  # noqa: BLE001 - a failing peer is a result, not a crash
            if fatal:
                raise
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if self.args.verbose:
                traceback.print_exc()
        self.rows.append(row)
        shown = f"{row['ms']:.2f} ms" if "ms" in row else row["error"]
        print(f"{model} {device} seq {seq} {peer}: {shown}", flush=True)

    def run(self, model, device, seq):
        module, onnx = self.models[model]
        a = self.args
        feeds, tensors, shapes = inputs_for(model, seq)
        sync = torch.cuda.synchronize if device == "cuda" else None
        if device == "cuda":
            module = module.to("cuda")
            tensors = [t.to("cuda") for t in tensors]

        def nimble():
            return {"ms": nimble_ms(a.nimblec, onnx, shapes, a.threads, a.iterations, device)}

        def eager():
            with torch.no_grad():
                return {"ms": timed(lambda: module(*tensors), a.iterations, a.warmup, sync)}

        def compiled():
            out = {}
            key = (model, device)
            if key not in self.compiled:
                self.compiled[key] = torch.compile(module, dynamic=True)
            fn = self.compiled[key]
            with torch.no_grad():
                start = time.perf_counter()
                fn(*tensors)  # the first call at this length: compile or guard check
                if sync:
                    sync()
                out["first_call_s"] = time.perf_counter() - start
                out["ms"] = timed(lambda: fn(*tensors), a.iterations, a.warmup, sync)
            return out

        def ort():
            key = (model, device)
            if key not in self.ort:
                self.ort[key] = ort_session(onnx, a.threads, device)
            sess = self.ort[key]
            return {"ms": timed(lambda: sess.run(None, feeds), a.iterations, a.warmup)}

        self.record(model, device, seq, "nimble", nimble, fatal=device == "cpu")
        self.record(model, device, seq, "torch_eager", eager)
        self.record(model, device, seq, "torch_compile", compiled)
        self.record(model, device, seq, "ort", ort)


def markdown(result):
    meta = result["meta"]
    lines = [f"## Model execution on the GPU machine ({meta['date']}, commit {meta['commit']})",
             "", f"Machine: {meta['cpu']}, {meta['cores']} cores; GPU: {result['gpu']}. "
             f"PyTorch {result['torch']}, ONNX Runtime {result['onnxruntime']}. CPU runs at "
             f"{result['threads']} threads. p50 of {result['iterations']} calls after "
             f"{result['warmup']} warm-up calls, batch 1, fp32.", "",
             f"Command: `{meta['command']}`", ""]
    peers = ["nimble", "torch_eager", "torch_compile", "ort"]
    for model in sorted({r["model"] for r in result["rows"]}):
        for device in ("cpu", "cuda"):
            rows = [r for r in result["rows"] if r["model"] == model and r["device"] == device]
            if not rows:
                continue
            lines += [f"### {model}, {device}", "", "| seq | " + " | ".join(
                f"{p} ms" for p in peers) + " |", "|---" * (len(peers) + 1) + "|"]
            for seq in sorted({r["seq"] for r in rows}):
                cells = []
                for p in peers:
                    r = next((r for r in rows if r["seq"] == seq and r["peer"] == p), None)
                    cells.append("—" if r is None else f"{r['ms']:.2f}" if "ms" in r
                                 else "error")
                lines.append(f"| {seq} | " + " | ".join(cells) + " |")
            errors = sorted({f"{r['peer']}: {r['error']}" for r in rows if "error" in r})
            lines += [""] + [f"- {e}" for e in errors] + ([""] if errors else [])
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nimblec", required=True)
    p.add_argument("--work", default="/tmp/nimble-gpu-bench")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seqs", default="16,64,128,384")
    p.add_argument("--lstm-seqs", default="16,64,128")
    p.add_argument("--models", default="bert,lstm")
    p.add_argument("--only", choices=["cpu", "gpu"], default=None)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", required=True)
    p.add_argument("--md", default="")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    meta = benchlib.meta()
    os.makedirs(args.work, exist_ok=True)
    torch.set_num_threads(args.threads)
    np.random.seed(0)
    models = export(args.work)
    devices = [] if args.only == "gpu" else ["cpu"]
    if args.only != "cpu":
        if torch.cuda.is_available():
            devices.append("cuda")
        elif args.only == "gpu":
            print("model_compare: --only gpu but torch sees no CUDA device", file=sys.stderr)
            return 1
    runner = Runner(args, models)
    seqs = {"bert": [int(s) for s in args.seqs.split(",")],
            "lstm": [int(s) for s in args.lstm_seqs.split(",")]}
    for device in devices:
        for model in args.models.split(","):
            for seq in seqs[model]:
                runner.run(model, device, seq)
    try:
        import onnxruntime
        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = "not installed"
    result = {"benchmark": "gpu_model_compare", "meta": meta, "threads": args.threads,
              "iterations": args.iterations, "warmup": args.warmup, "torch": torch.__version__,
              "onnxruntime": ort_version,
              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
              "rows": runner.rows}
    benchlib.write_json(args.json, result)
    text = markdown(result)
    print(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
