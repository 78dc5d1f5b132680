#!/usr/bin/env python3
"""BERT-base fp16 throughput at batch 8 and 32 with mixed lengths padded to a bucket: Nimble
(`nimblec bench --device-graphs` of a bucketed fp16 executable at [batch, bucket], the shape
the server's padding-batcher runs) against PyTorch eager fp16 and, with --torch-compile,
torch.compile(dynamic=True) fp16 on the same padded batch (lengths drawn uniformly from 16 to
the bucket, padding masked). Inferences per second = batch / p50 latency.

    python3 bench/gpu/bert_batch.py --nimblec /tmp/nimble/nimblec --nbx BERT_FP16_BUCKETS.nbx
"""
import argparse
import copy
import os
import subprocess
import sys
import types

import torch

sys.path.insert(0, os.path.dirname(__file__))
import bert_gpu  # noqa: E402


def torch_batch_p50(model, batch, bucket, iterations, gen):
    lengths = torch.randint(16, bucket + 1, (batch,), generator=gen)
    ids = torch.randint(0, 30522, (batch, bucket), generator=gen).cuda()
    mask = (torch.arange(bucket)[None, :] < lengths[:, None]).long().cuda()
    feeds = [ids, mask, torch.zeros_like(ids)]
    times = []
    with torch.no_grad():
        for i in range(iterations + 5):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            model(*feeds)
            end.record()
            torch.cuda.synchronize()
            if i >= 5:
                times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--nimblec", required=True)
    p.add_argument("--nbx", required=True, help="fp16 BERT-base compiled with seq buckets")
    p.add_argument("--batches", default="8,32")
    p.add_argument("--bucket", type=int, default=128)
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--torch-compile", action="store_true")
    args = p.parse_args()
    torch.manual_seed(0)
    bert = bert_gpu.export_models.Bert(12, 768, 12, 3072).eval().cuda()
    half = copy.deepcopy(bert).half()
    half.forward = types.MethodType(bert_gpu.half_forward, half)
    peers = {"eager fp16": half}
    if args.torch_compile:
        peers["compile fp16"] = torch.compile(half, dynamic=True)
    gen = torch.Generator().manual_seed(1)
    print(f"| batch | Nimble fp16 graphs ms | infer/s | " +
          " | ".join(f"PyTorch {k} ms | infer/s" for k in peers) + " |")
    print("| --- " * (3 + 2 * len(peers)) + "|")
    for batch in [int(b) for b in args.batches.split(",")]:
        shape = f"{batch}x{args.bucket}"
        r = subprocess.run([args.nimblec, "bench", args.nbx, "--iterations", str(args.iterations),
                            "--device-graphs"] +
                           sum([["--shape", f"{n}={shape}"] for n in bert_gpu.NAMES], []),
                           check=True, capture_output=True, text=True)
        ms = float(r.stdout.splitlines()[-1].split()[2])
        cells = [f"{ms:.2f}", f"{batch / ms * 1e3:.0f}"]
        for model in peers.values():
            t = torch_batch_p50(model, batch, args.bucket, args.iterations, gen)
            cells += [f"{t:.2f}", f"{batch / t * 1e3:.0f}"]
        print(f"| {batch} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
