#!/usr/bin/env python3
"""Summarises an `ncu --csv --metrics gpu__time_duration.sum --print-units base` log of
`nimblec bench --iterations N`: GPU time per kernel (the last run's launches only, which are
the last 1/(N+1) of the log when every run launches the same kernels), largest first, and the
last run's launches in order.

    python3 bench/gpu/ncu_summary.py LOG.csv --runs N+1 [--order ORDER.txt]
"""
import argparse
import csv
import io
import sys


def short(name):
    name = name.split("(")[0]
    for prefix in ("void ", "nimble::vm::cuda_ops::", "(anonymous namespace)::"):
        name = name.replace(prefix, "")
    return name[:70]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("log")
    p.add_argument("--runs", type=int, required=True, help="runs in the log (warm-up included)")
    p.add_argument("--order", help="write the last run's launches in order here")
    args = p.parse_args()
    text = open(args.log, errors="replace").read()
    start = text.find('"ID"')
    if start < 0:
        sys.exit("no ncu CSV in " + args.log)
    rows = [r for r in csv.DictReader(io.StringIO(text[start:]))
            if r.get("Metric Name") == "gpu__time_duration.sum"]
    per_run = len(rows) // args.runs
    last = rows[len(rows) - per_run:]
    agg = {}
    for r in last:
        n = short(r["Kernel Name"])
        t, c = agg.get(n, (0.0, 0))
        agg[n] = (t + float(r["Metric Value"].replace(",", "")) / 1e3, c + 1)
    total = sum(t for t, _ in agg.values())
    print(f"{len(rows)} launches in {args.runs} runs; last run: {per_run} kernels, "
          f"{total:.1f} us of GPU time")
    print(f"{'kernel':70s} {'calls':>6s} {'us':>9s} {'us/call':>8s} {'share':>6s}")
    for n, (t, c) in sorted(agg.items(), key=lambda kv: -kv[1][0]):
        print(f"{n:70s} {c:6d} {t:9.1f} {t / c:8.2f} {100 * t / total:5.1f}%")
    if args.order:
        with open(args.order, "w") as f:
            for r in last:
                f.write(f"{float(r['Metric Value'].replace(',', '')) / 1e3:8.2f} us  "
                        f"grid {r.get('Grid Size', '?'):>14s} block {r.get('Block Size', '?'):>12s}  "
                        f"{short(r['Kernel Name'])}\n")


if __name__ == "__main__":
    main()
