#!/usr/bin/python3
"""BERT-base, batch 1, on the CPU: Nimble (nimblec bench) and PyTorch on the same model, in the
same run, at the same thread count. Appends a table to bench/RESULTS.md.

    /usr/bin/python3 bench/bert_cpu.py --models build/models --nimblec build/compiler/nimblec \
        [--threads 2] [--seqs 16,64,128,384] [--iterations 20]

The model is scripts/export_models.py's BERT (HF architecture, random weights; export it with
`ctest --test-dir build -R export_models`). PyTorch runs the very module that was exported.
"""
import argparse
import datetime
import os
import platform
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
import export_models  # noqa: E402


def nimble_ms(nimblec, model, seq, threads, iterations):
    shape = f"1x{seq}"
    out = subprocess.run(
        [nimblec, "bench", model, "--shape", f"input_ids={shape}", "--shape",
         f"attention_mask={shape}", "--shape", f"token_type_ids={shape}", "--threads",
         str(threads), "--iterations", str(iterations)],
        check=True, capture_output=True, text=True).stdout.strip().splitlines()
    fields = out[-1].split()
    # iterations mean p50 p90 min kernel_calls outside_kernels_%
    return float(fields[2]), float(fields[6])


def torch_ms(model, seq, iterations):
    ids = torch.randint(0, 100, (1, seq))
    mask = torch.ones(1, seq, dtype=torch.long)
    types = torch.zeros(1, seq, dtype=torch.long)
    times = []
    with torch.no_grad():
        model(ids, mask, types)
        for _ in range(iterations):
            start = time.perf_counter()
            model(ids, mask, types)
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return times[len(times) // 2]


def cpu_name():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="build/models")
    p.add_argument("--nimblec", default="build/compiler/nimblec")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seqs", default="16,64,128,384")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "RESULTS.md"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = export_models.Bert(12, 768, 12, 3072).eval()
    onnx = os.path.join(args.models, "bert", "model.onnx")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    rows = []
    for seq in [int(s) for s in args.seqs.split(",")]:
        nimble, outside = nimble_ms(args.nimblec, onnx, seq, args.threads, args.iterations)
        pytorch = torch_ms(model, seq, args.iterations)
        rows.append((seq, nimble, outside, pytorch))
        print(f"seq {seq}: nimble {nimble:.1f} ms ({outside:.2f}% outside kernels), "
              f"pytorch {pytorch:.1f} ms, {pytorch / nimble:.1f}x", file=sys.stderr)
    with open(args.results, "a") as f:
        f.write(f"\n## BERT-base fp32, batch 1, CPU, {args.threads} threads "
                f"({datetime.date.today()}, commit {commit})\n\n")
        f.write(f"Machine: {cpu_name()}, {os.cpu_count()} cores visible. PyTorch "
                f"{torch.__version__} (Debian). p50 of {args.iterations} runs after a warm-up.\n")
        f.write(f"Command: `/usr/bin/python3 bench/bert_cpu.py --threads {args.threads} "
                f"--seqs {args.seqs}`\n\n")
        f.write("| seq | Nimble p50 ms | time outside kernels | PyTorch p50 ms | speed-up |\n")
        f.write("|---|---|---|---|---|\n")
        for seq, nimble, outside, pytorch in rows:
            f.write(f"| {seq} | {nimble:.1f} | {outside:.2f}% | {pytorch:.1f} | "
                    f"{pytorch / nimble:.1f}x |\n")


if __name__ == "__main__":
    main()
