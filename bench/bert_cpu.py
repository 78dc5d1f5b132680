#!/usr/bin/python3
"""BERT-base, batch 1, on the CPU: Nimble (nimblec bench) and PyTorch on the same model, in the
same run, at the same thread count. Appends a table to bench/RESULTS.md and/or writes JSON.

    /usr/bin/python3 bench/bert_cpu.py --models build/models --nimblec build/compiler/nimblec \
        [--threads 2] [--seqs 16,64,128,384] [--iterations 20] [--json FILE] [--results '']

The model is scripts/export_models.py's BERT (HF architecture, random weights; export it with
`ctest --test-dir build -R export_models`). PyTorch runs the very module that was exported.
The ONNX file is compiled once (`nimblec compile`, timed: the JSON's compile_ms) and every
length is timed on that executable. `--results ''` skips the Markdown table.
"""
import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
import export_models  # noqa: E402
import benchlib  # noqa: E402  (bench/ is on sys.path as the script's directory)


def compile_nbx(nimblec, onnx, nbx):
    """Compiles ONNX -> .nbx; returns nimblec's own compile time in ms."""
    start = time.perf_counter()
    err = subprocess.run([nimblec, "compile", onnx, "-o", nbx], check=True, capture_output=True,
                         text=True).stderr
    m = re.search(r" in (\d+) ms", err)
    return float(m.group(1)) if m else (time.perf_counter() - start) * 1000


def nimble_ms(nimblec, model, seq, threads, iterations):
    shape = f"1x{seq}"
    out = subprocess.run(
        [nimblec, "bench", model, "--shape", f"input_ids={shape}", "--shape",
         f"attention_mask={shape}", "--shape", f"token_type_ids={shape}", "--threads",
         str(threads), "--iterations", str(iterations)],
        check=True, capture_output=True, text=True).stdout.strip().splitlines()
    fields = out[-1].split()
    # iterations mean p50 p90 min kernel_calls outside_kernels_%
    return float(fields[2]), float(fields[6]), float(fields[4])


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
    return benchlib.p50(times), min(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="build/models")
    p.add_argument("--nimblec", default="build/compiler/nimblec")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seqs", default="16,64,128,384")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--json", default="", help="write the results here as JSON")
    p.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "RESULTS.md"),
                   help="Markdown file to append a table to ('' for none)")
    args = p.parse_args()
    meta = benchlib.meta()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = export_models.Bert(12, 768, 12, 3072).eval()
    onnx = os.path.join(args.models, "bert", "model.onnx")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        nbx = os.path.join(tmp, "bert.nbx")
        compile_ms = compile_nbx(args.nimblec, onnx, nbx)
        print(f"compiled {onnx} in {compile_ms:.0f} ms", file=sys.stderr)
        for seq in [int(s) for s in args.seqs.split(",")]:
            nimble, outside, nimble_min = nimble_ms(args.nimblec, nbx, seq, args.threads,
                                                    args.iterations)
            pytorch, pytorch_min = torch_ms(model, seq, args.iterations)
            rows.append((seq, nimble, outside, pytorch, nimble_min, pytorch_min))
            print(f"seq {seq}: nimble {nimble:.1f} ms ({outside:.2f}% outside kernels), "
                  f"pytorch {pytorch:.1f} ms, {pytorch / nimble:.1f}x", file=sys.stderr)
    if args.json:
        benchlib.write_json(args.json, {
            "benchmark": "bert_cpu", "meta": meta, "model": "BERT-base fp32 (12x768), batch 1",
            "onnx": onnx, "threads": args.threads, "iterations": args.iterations,
            "statistic": "p50", "peer": f"PyTorch {torch.__version__} eager",
            "compile_ms": compile_ms,
            "rows": [{"seq": s, "nimble_ms": n, "nimble_outside_kernels_pct": o, "peer_ms": t,
                      "nimble_min_ms": nm, "peer_min_ms": tm}
                     for s, n, o, t, nm, tm in rows]})
    if not args.results:
        return
    with open(args.results, "a") as f:
        f.write(f"\n## BERT-base fp32, batch 1, CPU, {args.threads} threads "
                f"({datetime.date.today()}, commit {meta['commit']})\n\n")
        f.write(f"Machine: {meta['cpu']}, {meta['cores']} cores visible. PyTorch "
                f"{torch.__version__} (Debian). p50 of {args.iterations} runs after a warm-up.\n")
        f.write(f"Command: `/usr/bin/python3 bench/bert_cpu.py --threads {args.threads} "
                f"--seqs {args.seqs}`\n\n")
        f.write("| seq | Nimble p50 ms | time outside kernels | PyTorch p50 ms | speed-up |\n")
        f.write("|---|---|---|---|---|\n")
        for seq, nimble, outside, pytorch, _, _ in rows:
            f.write(f"| {seq} | {nimble:.1f} | {outside:.2f}% | {pytorch:.1f} | "
                    f"{pytorch / nimble:.1f}x |\n")


if __name__ == "__main__":
    main()
