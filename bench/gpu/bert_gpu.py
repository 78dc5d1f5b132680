#!/usr/bin/env python3
"""BERT-base fp32 batch 1 on the GPU: Nimble (`nimblec compile --device=cuda`, `nimblec bench`)
against PyTorch eager (the module that was exported, on cuda, torch.no_grad) in one run.

Exports scripts/export_models.py's BERT-base (random weights, as bench/device_cpu.py), checks
Nimble's GPU output against PyTorch's at seq 128 (max abs diff), then times each sequence
length: the median (p50) of --iterations calls after warm-up; PyTorch is synchronised per call,
Nimble's Run returns after the outputs are back on the host.

    python3 bench/gpu/bert_gpu.py --nimblec /tmp/t/nimblec --out results.md
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
sys.path.insert(0, os.environ.get("NIMBLE_SCRIPTS", ""))
import export_models  # noqa: E402

NAMES = ["input_ids", "attention_mask", "token_type_ids"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--nimblec", required=True)
    p.add_argument("--work", default=tempfile.mkdtemp())
    p.add_argument("--seqs", default="16,64,128,384")
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.manual_seed(0)
    bert = export_models.Bert(12, 768, 12, 3072).eval()
    onnx_path = os.path.join(args.work, "bert.onnx")
    ids = torch.randint(0, 30522, (2, 9))
    export_models.export(bert, (ids, torch.ones_like(ids), torch.zeros_like(ids)), NAMES,
                         ["last_hidden_state", "pooler_output"],
                         {n: {0: "batch", 1: "seq"} for n in NAMES} |
                         {"last_hidden_state": {0: "batch", 1: "seq"},
                          "pooler_output": {0: "batch"}}, onnx_path, 14)
    nbx = os.path.join(args.work, "bert_cuda.nbx")
    t0 = time.time()
    r = subprocess.run([args.nimblec, "compile", onnx_path, "-o", nbx, "--device=cuda"],
                       check=True, capture_output=True, text=True)
    print(r.stderr.strip(), f"({time.time() - t0:.1f} s)", flush=True)
    bert = bert.cuda()
    lines = []
    # Correctness at seq 128 against PyTorch.
    ids = torch.randint(0, 30522, (1, 128))
    feeds = [ids, torch.ones_like(ids), torch.zeros_like(ids)]
    for name, t in zip(NAMES, feeds):
        np.save(os.path.join(args.work, name + ".npy"), t.numpy())
    cmd = [args.nimblec, "run", nbx, "--output-dir", os.path.join(args.work, "out")]
    for name in NAMES:
        cmd += ["--input", f"{name}={os.path.join(args.work, name + '.npy')}"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    with torch.no_grad():
        ref = bert(*[t.cuda() for t in feeds])
    got = np.load(os.path.join(args.work, "out", "last_hidden_state.npy"))
    diff = float(np.abs(got - ref[0].cpu().numpy()).max())
    lines.append(f"correctness seq 128: max |nimble cuda - torch cuda| last_hidden_state = {diff:.3g}")
    print(lines[-1], flush=True)
    lines.append("")
    lines.append("| seq | Nimble cuda p50 ms | PyTorch eager cuda p50 ms |")
    lines.append("| --- | --- | --- |")
    for seq in [int(s) for s in args.seqs.split(",")]:
        out = subprocess.run([args.nimblec, "bench", nbx, "--iterations", str(args.iterations)] +
                             sum([["--shape", f"{n}=1x{seq}"] for n in NAMES], []),
                             check=True, capture_output=True, text=True).stdout.splitlines()
        nimble = float(out[-1].split()[2])
        ids = torch.randint(0, 30522, (1, seq), device="cuda")
        feeds = [ids, torch.ones_like(ids), torch.zeros_like(ids)]
        times = []
        with torch.no_grad():
            for i in range(args.iterations + 5):
                torch.cuda.synchronize()
                t = time.perf_counter()
                bert(*feeds)
                torch.cuda.synchronize()
                if i >= 5:
                    times.append((time.perf_counter() - t) * 1e3)
        torch_ms = sorted(times)[len(times) // 2]
        lines.append(f"| {seq} | {nimble:.2f} | {torch_ms:.2f} |")
        print(lines[-1], flush=True)
    with open(args.out, "w") as f:
        f.write(torch.cuda.get_device_name() + f", torch {torch.__version__}\n\n")
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
