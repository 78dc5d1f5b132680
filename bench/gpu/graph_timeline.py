#!/usr/bin/env python3
"""The timeline of one CUDA graph replay from an Nsight Systems GPU trace.

Reads `nsys stats --report cuda_gpu_trace --format csv` output (run with --cuda-graph-trace=node,
so each graph node is a row), splits the rows into bursts separated by idle gaps longer than
--split-us, and prints the last burst (the last replay of `nimblec bench --device-graphs`): each
node's start offset, duration and the idle gap before it, then totals: span, busy time (union of
the nodes' intervals), idle time, copies.

    nsys profile -o r --cuda-graph-trace=node -t cuda nimblec bench m.nbx ... --device-graphs
    nsys stats --report cuda_gpu_trace --format csv --output t r.nsys-rep
    python3 bench/gpu/graph_timeline.py t_cuda_gpu_trace.csv

or, without Nsight Systems, the trace that bench/gpu/cupti/cupti_trace.cc writes.
"""
import argparse
import csv


def column(header, *names):
    for i, h in enumerate(header):
        if any(n.lower() in h.lower() for n in names):
            return i
    raise SystemExit(f"no column like {names} in {header}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("csv")
    p.add_argument("--split-us", type=float, default=40.0)
    p.add_argument("--burst", type=int, default=-1, help="which burst (default: the last)")
    args = p.parse_args()
    with open(args.csv, newline="") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    start_i, dur_i, name_i = column(header, "Start"), column(header, "Duration"), column(header, "Name")
    nodes = sorted((float(r[start_i]) / 1e3, float(r[dur_i]) / 1e3, r[name_i]) for r in rows if r)
    bursts, current, end = [], [], None
    for n in nodes:
        if end is not None and n[0] - end > args.split_us:
            bursts.append(current)
            current = []
        current.append(n)
        end = max(end or 0.0, n[0] + n[1])
    bursts.append(current)
    print(f"{len(nodes)} rows, {len(bursts)} bursts; burst sizes (last 8): "
          f"{[len(b) for b in bursts[-8:]]}")
    b = bursts[args.burst]
    t0 = b[0][0]
    busy, idle, copies, reach = 0.0, 0.0, 0.0, t0
    print(f"{'start us':>9} {'dur us':>7} {'gap us':>7}  name")
    for s, d, name in b:
        gap = max(0.0, s - reach)
        idle += gap
        busy += max(0.0, s + d - max(s, reach))
        reach = max(reach, s + d)
        if "memcpy" in name.lower() or "memset" in name.lower():
            copies += d
        print(f"{s - t0:9.1f} {d:7.2f} {gap:7.2f}  {name[:90]}")
    print(f"span {reach - t0:.1f} us, busy {busy:.1f}, idle {idle:.1f}, copies {copies:.1f} "
          f"({len(b)} nodes)")


if __name__ == "__main__":
    main()
