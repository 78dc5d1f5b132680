#!/usr/bin/env python3
"""Nimble against ONNX Runtime and PyTorch on the GPU machine's CPU, in one run, same files.

Runs where PyTorch and onnxruntime are installed (the `device` machine: 16-core Xeon, PyTorch
2.11, ONNX Runtime 1.30). Exports scripts/export_models.py's BERT-base and 2x650 LSTM there,
then for each thread count and sequence length times
  - BERT-base fp32 batch 1: `nimblec bench` on the ONNX file vs an ORT session on the same file
    (intra_op_num_threads = threads, sequential execution, all graph optimisations);
  - LSTM 2x650 batch 1: `nimblec bench` vs the PyTorch module that was exported
    (torch.set_num_threads(threads)), and ORT on the same file for reference.
Each cell runs --rounds rounds, alternating Nimble and its peers (Nimble, peer, Nimble, peer,
...), each round --iterations runs after warm-up; a number is the median over the rounds of each
round's p50, so load that comes and goes on the shared machine falls on both sides alike. Both
models are compiled to executables once (`nimblec compile`), outside the timing. Writes a
Markdown table to --out (and stdout).

    python3 bench/device_cpu.py --nimblec /tmp/nimble/nimblec --out results.md
"""
import argparse
import datetime
import os
import platform
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
import export_models  # noqa: E402


def cpu_name():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def p50(times):
    times = sorted(times)
    return times[len(times) // 2]


def nimble_ms(nimblec, model, shapes, threads, iterations):
    cmd = [nimblec, "bench", model, "--threads", str(threads), "--iterations", str(iterations)]
    for name, shape in shapes.items():
        cmd += ["--shape", f"{name}={'x'.join(str(d) for d in shape)}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()
    fields = out[-1].split()  # iterations mean p50 p90 min kernel_calls outside_%
    return float(fields[2]), float(fields[6])


def ort_ms(path, feeds, threads, iterations):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    for _ in range(3):
        sess.run(None, feeds)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - start) * 1000)
    return p50(times)


def torch_ms(model, inputs, threads, iterations):
    torch.set_num_threads(threads)
    with torch.no_grad():
        for _ in range(3):
            model(*inputs)
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            model(*inputs)
            times.append((time.perf_counter() - start) * 1000)
    return p50(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--nimblec", required=True)
    p.add_argument("--work", default="/tmp/nimble-bench")
    p.add_argument("--threads", default="2,16")
    p.add_argument("--seqs", default="16,64,128,384")
    p.add_argument("--lstm-seqs", default="16,64,128")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    threads_list = [int(t) for t in args.threads.split(",")]
    os.makedirs(args.work, exist_ok=True)
    torch.manual_seed(0)
    bert = export_models.Bert(12, 768, 12, 3072).eval()
    bert_path = os.path.join(args.work, "bert.onnx")
    ids = torch.randint(0, 30522, (2, 9))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    export_models.export(bert, (ids, torch.ones_like(ids), torch.zeros_like(ids)), names,
                         ["last_hidden_state", "pooler_output"],
                         {n: {0: "batch", 1: "seq"} for n in names} |
                         {"last_hidden_state": {0: "batch", 1: "seq"},
                          "pooler_output": {0: "batch"}}, bert_path, 14)
    lstm = export_models.Lstm(650, 650).eval()
    lstm_path = os.path.join(args.work, "lstm.onnx")
    export_models.export(lstm, (torch.randn(5, 1, 650),), ["x"], ["y", "h", "c"],
                         {"x": {0: "seq", 1: "batch"}, "y": {0: "seq", 1: "batch"},
                          "h": {1: "batch"}, "c": {1: "batch"}}, lstm_path, 14)
    compiled = {}
    for path in (bert_path, lstm_path):
        compiled[path] = path[:-len(".onnx")] + ".nbx"
        subprocess.run([args.nimblec, "compile", path, "-o", compiled[path]], check=True,
                       capture_output=True)

    def rounds(*measures):
        # Median over rounds of each measure's p50, the measures alternating within a round.
        samples = [[] for _ in measures]
        for _ in range(args.rounds):
            for i, measure in enumerate(measures):
                samples[i].append(measure())
        return [sorted(v)[len(v) // 2] for v in samples]

    lines = [f"## CPU of the GPU machine ({datetime.date.today()})", "",
             f"Machine: {cpu_name()}, {os.cpu_count()} cores visible. PyTorch {torch.__version__}, "
             f"ONNX Runtime {ort.__version__}. Median over {args.rounds} alternating rounds "
             f"(Nimble, peers, Nimble, ...) of each round's p50 of {args.iterations} runs after "
             "warm-up; Nimble and its peers run the same ONNX file (the same module for "
             "PyTorch) in one process tree.", "",
             "Command: `python3 bench/device_cpu.py --nimblec NIMBLEC --out FILE` "
             "(through the device tool; see bench/README.md)", "",
             "### BERT-base fp32, batch 1", "",
             "| threads | seq | Nimble ms | outside kernels | ORT ms | ORT / Nimble |",
             "|---|---|---|---|---|---|"]
    for threads in threads_list:
        for seq in [int(s) for s in args.seqs.split(",")]:
            shape = (1, seq)
            feeds = {"input_ids": np.random.randint(0, 30522, shape).astype(np.int64),
                     "attention_mask": np.ones(shape, np.int64),
                     "token_type_ids": np.zeros(shape, np.int64)}
            (nimble, outside), ref = rounds(
                lambda: nimble_ms(args.nimblec, compiled[bert_path], {n: shape for n in names},
                                  threads, args.iterations),
                lambda: ort_ms(bert_path, feeds, threads, args.iterations))
            lines.append(f"| {threads} | {seq} | {nimble:.1f} | {outside:.2f}% | {ref:.1f} | "
                         f"{ref / nimble:.2f}x |")
            print(lines[-1], flush=True)
    lines += ["", "### LSTM 2x650, batch 1", "",
              "| threads | seq | Nimble ms | PyTorch ms | PyTorch / Nimble | ORT ms |",
              "|---|---|---|---|---|---|"]
    for threads in threads_list:
        for seq in [int(s) for s in args.lstm_seqs.split(",")]:
            x = torch.randn(seq, 1, 650)
            nimble, pt, ref = rounds(
                lambda: nimble_ms(args.nimblec, compiled[lstm_path], {"x": (seq, 1, 650)},
                                  threads, args.iterations)[0],
                lambda: torch_ms(lstm, (x,), threads, args.iterations),
                lambda: ort_ms(lstm_path, {"x": x.numpy()}, threads, args.iterations))
            lines.append(f"| {threads} | {seq} | {nimble:.2f} | {pt:.2f} | {pt / nimble:.2f}x | "
                         f"{ref:.2f} |")
            print(lines[-1], flush=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
