#!/usr/bin/python3
"""2-layer LSTM, hidden 650, input 650, batch 1 (a Zaremba-style language model) on the CPU:
Nimble (nimblec bench) and PyTorch on the same module, in the same run, at the same thread
count. Appends a table to bench/RESULTS.md and/or writes JSON (--json FILE; --results '' skips
the table).

    /usr/bin/python3 bench/lstm_cpu.py --nimblec build/compiler/nimblec \
        [--models build/models] [--threads 2] [--seqs 16,64,128] [--iterations 50] \
        [--repeats 3] [--baseline OTHER_NIMBLEC] [--json FILE] [--results '']

The ONNX file is scripts/export_models.py's LSTM (`export_models.py OUT --models lstm`); when
--models has none, the module is exported there first. PyTorch runs the same module class and
sizes (its random weights do not change the time). Each number is the p50 of --iterations runs
after a warm-up; with --repeats N, the whole comparison runs N times, interleaved, and the
table takes the lowest p50 of each (the dev machine is shared: other builds slow single runs).
--baseline adds a column for another nimblec binary (the build before a change).
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
import benchlib  # noqa: E402  (bench/ is on sys.path as the script's directory)


def nimble_ms(nimblec, model, seq, threads, iterations):
    out = subprocess.run(
        [nimblec, "bench", model, "--shape", f"x={seq}x1x650", "--threads", str(threads),
         "--iterations", str(iterations)],
        check=True, capture_output=True, text=True).stdout.strip().splitlines()
    fields = out[-1].split()
    # iterations mean p50 p90 min kernel_calls outside_kernels_%
    return float(fields[2])


def torch_ms(model, seq, iterations):
    x = torch.randn(seq, 1, 650)
    times = []
    with torch.no_grad():
        for _ in range(3):
            model(x)
        for _ in range(iterations):
            start = time.perf_counter()
            model(x)
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
    p.add_argument("--baseline", default="", help="another nimblec to time alongside")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seqs", default="16,64,128")
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", default="", help="write the results here as JSON")
    p.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "RESULTS.md"),
                   help="Markdown file to append a table to ('' for none)")
    args = p.parse_args()
    meta = benchlib.meta()
    torch.set_num_threads(args.threads)
    onnx = os.path.join(args.models, "lstm", "model.onnx")
    if not os.path.exists(onnx):
        subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "..", "scripts",
                                                     "export_models.py"), args.models,
                        "--models", "lstm"], check=True)
    torch.manual_seed(0)
    model = export_models.Lstm(650, 650).eval()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=os.path.dirname(os.path.abspath(__file__))
                            ).stdout.strip()
    seqs = [int(s) for s in args.seqs.split(",")]
    best = {}
    for _ in range(args.repeats):
        for seq in seqs:
            row = best.setdefault(seq, [float("inf")] * 3)
            row[0] = min(row[0], nimble_ms(args.nimblec, onnx, seq, args.threads,
                                           args.iterations))
            row[1] = min(row[1], torch_ms(model, seq, args.iterations))
            if args.baseline:
                row[2] = min(row[2], nimble_ms(args.baseline, onnx, seq, args.threads,
                                               args.iterations))
    for seq in seqs:
        nimble, pytorch, base = best[seq]
        extra = f", baseline {base:.2f} ms" if args.baseline else ""
        print(f"seq {seq}: nimble {nimble:.2f} ms, pytorch {pytorch:.2f} ms, "
              f"pytorch/nimble {pytorch / nimble:.2f}x{extra}", file=sys.stderr)
    if args.json:
        benchlib.write_json(args.json, {
            "benchmark": "lstm_cpu", "meta": meta, "model": "LSTM 2x650 fp32, batch 1",
            "onnx": onnx, "threads": args.threads, "iterations": args.iterations,
            "repeats": args.repeats, "statistic": "p50",
            "peer": f"PyTorch {torch.__version__} eager",
            "rows": [{"seq": seq, "nimble_ms": best[seq][0], "peer_ms": best[seq][1]}
                     | ({"baseline_ms": best[seq][2]} if args.baseline else {})
                     for seq in seqs]})
    if not args.results:
        return
    with open(args.results, "a") as f:
        f.write(f"\n## LSTM 2x650, batch 1, CPU, {args.threads} threads "
                f"({datetime.date.today()}, commit {commit})\n\n")
        f.write(f"Machine: {cpu_name()}, {os.cpu_count()} cores visible. PyTorch "
                f"{torch.__version__}. p50 of {args.iterations} runs after a warm-up"
                + (f", lowest of {args.repeats} interleaved repeats" if args.repeats > 1 else "")
                + ".\n")
        f.write(f"Command: `/usr/bin/python3 bench/lstm_cpu.py --threads {args.threads} "
                f"--seqs {args.seqs} --iterations {args.iterations} --repeats {args.repeats}"
                + (" --baseline BASELINE_NIMBLEC" if args.baseline else "") + "`\n\n")
        if args.baseline:
            f.write("| seq | Nimble p50 ms | Nimble before p50 ms | PyTorch p50 ms | "
                    "PyTorch / Nimble |\n|---|---|---|---|---|\n")
        else:
            f.write("| seq | Nimble p50 ms | PyTorch p50 ms | PyTorch / Nimble |\n"
                    "|---|---|---|---|\n")
        for seq in seqs:
            nimble, pytorch, base = best[seq]
            before = f" {base:.2f} |" if args.baseline else ""
            f.write(f"| {seq} | {nimble:.2f} |{before} {pytorch:.2f} | "
                    f"{pytorch / nimble:.2f}x |\n")


if __name__ == "__main__":
    main()
