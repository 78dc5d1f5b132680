#!/usr/bin/env python3
"""ONNX Runtime's time per operator type on one model and input shape (p50 run profiled).

    python3 bench/ort_profile.py MODEL.onnx --shape input_ids=1x128 ... [--threads N]

Prints ms per run per op type, largest first: what Nimble's `nimblec bench --profile-kernels`
is compared with.
"""
import argparse
import collections
import json
import os

import numpy as np
import onnxruntime as ort


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--shape", action="append", default=[])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iterations", type=int, default=10)
    args = p.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_profiling = True
    so.profile_file_prefix = "/tmp/ort_profile"
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    feeds = {}
    for s in args.shape:
        name, dims = s.split("=")
        shape = tuple(int(d) for d in dims.split("x"))
        info = next(i for i in sess.get_inputs() if i.name == name)
        if "int" in info.type:
            feeds[name] = np.ones(shape, np.int64)
        else:
            feeds[name] = np.random.rand(*shape).astype(np.float32)
    for _ in range(3):
        sess.run(None, feeds)
    for _ in range(args.iterations):
        sess.run(None, feeds)
    path = sess.end_profiling()
    with open(path) as f:
        events = json.load(f)
    per_op = collections.Counter()
    calls = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"].get("op_name", "?")
            per_op[op] += e["dur"]
            calls[op] += 1
    runs = 3 + args.iterations
    total = sum(per_op.values())
    print(f"{'op':28s} {'ms/run':>10s} {'calls/run':>10s} {'share':>7s}")
    for op, us in per_op.most_common():
        print(f"{op:28s} {us / runs / 1000:10.3f} {calls[op] / runs:10.1f} "
              f"{100 * us / total:6.1f}%")
    os.remove(path)


if __name__ == "__main__":
    main()
