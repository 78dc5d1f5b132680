#!/usr/bin/env python3
"""BERT-base batch 1 on the GPU: Nimble (`nimblec compile --device=cuda --precision=P`,
`nimblec bench`) against PyTorch eager and torch.compile(dynamic=True) (fp32, and fp16 through
`model.half()`) in one run.

Exports scripts/export_models.py's BERT-base (random weights, as bench/device_cpu.py), checks each
Nimble precision's GPU output against PyTorch fp32 on the GPU at seq 128 (max abs diff of
last_hidden_state, and relative to max |ref|), then times each sequence length: the median (p50)
of --iterations calls after warm-up; PyTorch is synchronised per call, Nimble's Run returns after
the outputs are back on the host. With --rounds N each length's row is timed N times, Nimble and
its peers in turn, and each cell is the median of its rounds (the peers are bound by host
overhead, so load that comes and goes on the machine falls on both sides alike).

    python3 bench/gpu/bert_gpu.py --nimblec /tmp/t/nimblec --out results.md \
        --precisions fp32,tf32,fp16 [--torch-compile] [--ab-flash]
"""
import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time
import types

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
sys.path.insert(0, os.environ.get("NIMBLE_SCRIPTS", ""))
import export_models  # noqa: E402

NAMES = ["input_ids", "attention_mask", "token_type_ids"]


def half_forward(self, input_ids, attention_mask, token_type_ids):
    """export_models.Bert.forward with the mask bias in the activations' dtype (the exported
    model builds it in fp32, which model.half() would promote the attention scores to)."""
    seq = input_ids.shape[1]
    positions = torch.arange(seq, dtype=torch.long, device=input_ids.device).unsqueeze(0)
    x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
    x = self.norm(x)
    mask_bias = ((1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -10000.0).to(x.dtype)
    for layer in self.layers:
        x = layer(x, mask_bias)
    pooled = torch.tanh(self.pooler(x[:, 0]))
    return x, pooled


def nimble_run(nimblec, nbx, feeds, work, env=None):
    for name, t in zip(NAMES, feeds):
        np.save(os.path.join(work, name + ".npy"), t.numpy())
    out_dir = os.path.join(work, "out")
    cmd = [nimblec, "run", nbx, "--output-dir", out_dir]
    for name in NAMES:
        cmd += ["--input", f"{name}={os.path.join(work, name + '.npy')}"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return np.load(os.path.join(out_dir, "last_hidden_state.npy"))


def nimble_bench(nimblec, nbx, seq, iterations, env=None, graphs=False):
    try:
        return nimble_bench_or_raise(nimblec, nbx, seq, iterations, env, graphs)
    except subprocess.CalledProcessError as e:
        print("    nimblec bench failed:", e.stderr.strip()[-500:], flush=True)
        return float("nan")


def nimble_bench_or_raise(nimblec, nbx, seq, iterations, env=None, graphs=False):
    r = subprocess.run([nimblec, "bench", nbx, "--iterations", str(iterations)] +
                       sum([["--shape", f"{n}=1x{seq}"] for n in NAMES], []) +
                       (["--device-graphs"] if graphs else []),
                       check=True, capture_output=True, text=True, env=env)
    if graphs:
        print("   ", r.stderr.strip().splitlines()[-1], flush=True)
    return float(r.stdout.splitlines()[-1].split()[2])


def torch_p50(model, seq, iterations, host_io=False):
    """p50 ms of one inference. host_io: the inputs start on the host and both outputs end
    there as float32 (what `nimblec bench` times for Nimble); otherwise everything stays on
    the GPU."""
    ids = torch.randint(0, 30522, (1, seq), device="cpu" if host_io else "cuda")
    feeds = [ids, torch.ones_like(ids), torch.zeros_like(ids)]
    times = []
    with torch.no_grad():
        for i in range(iterations + 5):
            torch.cuda.synchronize()
            t = time.perf_counter()
            if host_io:
                outs = model(*[f.cuda() for f in feeds])
                [o.float().cpu() for o in outs]
            else:
                model(*feeds)
            torch.cuda.synchronize()
            if i >= 5:
                times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[len(times) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--nimblec", required=True)
    p.add_argument("--work", default=tempfile.mkdtemp())
    p.add_argument("--seqs", default="16,64,128,384")
    p.add_argument("--precisions", default="fp32,tf32,fp16")
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--rounds", type=int, default=1,
                   help="times each row is timed, Nimble and peers in turn; cells are medians")
    p.add_argument("--torch-compile", action="store_true")
    p.add_argument("--compile-precisions", default="fp32,fp16",
                   help="precisions of the torch.compile peers (with --torch-compile)")
    p.add_argument("--graphs", default="",
                   help="precisions also compiled with buckets at --seqs and run with CUDA graphs")
    p.add_argument("--half-outputs-graphs", default="",
                   help="precisions also compiled as --graphs with --half-outputs (results "
                        "returned in the half type, as model.half()'s are)")
    p.add_argument("--ab-flash", action="store_true",
                   help="also time fp16 with the reference attention kernel")
    p.add_argument("--host-io-peers", default="",
                   help="peers (e.g. 'compile fp16') also timed with inputs from and outputs to "
                        "the host, as Nimble is")
    p.add_argument("--out")
    p.add_argument("--export-only", metavar="ONNX",
                   help="write the BERT-base ONNX file (the one timed here) to ONNX and stop")
    args = p.parse_args()
    if not args.export_only and not args.out:
        p.error("--out is required unless --export-only is given")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    torch.manual_seed(0)
    bert = export_models.Bert(12, 768, 12, 3072).eval()
    onnx_path = args.export_only or os.path.join(args.work, "bert.onnx")
    ids = torch.randint(0, 30522, (2, 9))
    export_models.export(bert, (ids, torch.ones_like(ids), torch.zeros_like(ids)), NAMES,
                         ["last_hidden_state", "pooler_output"],
                         {n: {0: "batch", 1: "seq"} for n in NAMES} |
                         {"last_hidden_state": {0: "batch", 1: "seq"},
                          "pooler_output": {0: "batch"}}, onnx_path, 14)
    if args.export_only:
        return
    precisions = args.precisions.split(",")
    nbx = {}
    for prec in precisions:
        nbx[prec] = os.path.join(args.work, f"bert_cuda_{prec}.nbx")
        t0 = time.time()
        r = subprocess.run([args.nimblec, "compile", onnx_path, "-o", nbx[prec], "--device=cuda",
                            f"--precision={prec}"], check=True, capture_output=True, text=True)
        print(prec, r.stderr.strip().splitlines()[-1], f"({time.time() - t0:.1f} s)", flush=True)
    graphs = [g for g in args.graphs.split(",") if g]
    graphs += [g + " half outputs" for g in args.half_outputs_graphs.split(",") if g]
    for prec in graphs:
        nbx[prec + "+graphs"] = os.path.join(args.work,
                                             f"bert_cuda_{prec.replace(' ', '_')}_buckets.nbx")
        t0 = time.time()
        half_outputs = ["--half-outputs"] if prec.endswith(" half outputs") else []
        r = subprocess.run([args.nimblec, "compile", onnx_path, "-o", nbx[prec + "+graphs"],
                            "--device=cuda", f"--precision={prec.split()[0]}", "--buckets",
                            f"seq={args.seqs}"] + half_outputs,
                           check=True, capture_output=True, text=True)
        print(prec, "buckets", r.stderr.strip().splitlines()[-1], f"({time.time() - t0:.1f} s)",
              flush=True)
    bert = bert.cuda()
    bert_half = copy.deepcopy(bert).half()
    bert_half.forward = types.MethodType(half_forward, bert_half)
    lines = []
    # Correctness at seq 128 against PyTorch fp32 on the GPU.
    ids = torch.randint(0, 30522, (1, 128))
    feeds = [ids, torch.ones_like(ids), torch.zeros_like(ids)]
    with torch.no_grad():
        ref = bert(*[t.cuda() for t in feeds])[0].cpu().numpy()
        ref_half = bert_half(*[t.cuda() for t in feeds])[0].float().cpu().numpy()
    scale = float(np.abs(ref).max())
    for prec in precisions + [g + "+graphs" for g in graphs]:
        try:
            t0 = time.time()
            got = nimble_run(args.nimblec, nbx[prec], feeds, args.work)
            lines.append(f"cached load {prec}: `nimblec run` of the .nbx (process start, load and "
                         f"verify, weight upload, one call, outputs written) "
                         f"{time.time() - t0:.2f} s")
            print(lines[-1], flush=True)
        except subprocess.CalledProcessError as e:
            print(prec, "nimblec run failed:", e.stderr.strip()[-500:], flush=True)
            continue
        diff = float(np.abs(got - ref).max())
        lines.append(f"correctness seq 128 {prec}: max |nimble - torch fp32| last_hidden_state = "
                     f"{diff:.3g} (max |ref| {scale:.3g}, relative {diff / scale:.3g})")
        print(lines[-1], flush=True)
    diff = float(np.abs(ref_half - ref).max())
    lines.append(f"reference: max |torch fp16 - torch fp32| = {diff:.3g} "
                 f"(relative {diff / scale:.3g})")
    print(lines[-1], flush=True)
    peers = {"eager fp32": bert, "eager fp16": bert_half}
    if args.torch_compile:
        for prec in args.compile_precisions.split(","):
            peers[f"compile {prec}"] = torch.compile(bert if prec == "fp32" else bert_half,
                                                     dynamic=True)
    cols = [f"Nimble {p}" for p in precisions] + [f"Nimble {p} graphs" for p in graphs]
    no_flash = dict(os.environ, NIMBLE_CUDA_FLASH_ATTENTION="0")
    if args.ab_flash and "fp16" in precisions:
        cols.append("Nimble fp16 ref. attention")
    cols += [f"PyTorch {k}" for k in peers]
    host_io = [k for k in args.host_io_peers.split(",") if k in peers]
    cols += [f"PyTorch {k} host in/out" for k in host_io]
    lines.append("")
    lines.append("| seq | " + " | ".join(cols) + " |")
    lines.append("| --- |" + " --- |" * len(cols))
    ratio_lines = []
    for seq in [int(s) for s in args.seqs.split(",")]:
        rounds = []
        for r in range(args.rounds):
            row = [nimble_bench(args.nimblec, nbx[p], seq, args.iterations) for p in precisions]
            row += [nimble_bench(args.nimblec, nbx[p + "+graphs"], seq, args.iterations,
                                 graphs=True) for p in graphs]
            if args.ab_flash and "fp16" in precisions:
                row.append(nimble_bench(args.nimblec, nbx["fp16"], seq, args.iterations, no_flash))
            for name, model in peers.items():
                t0 = time.time()
                row.append(torch_p50(model, seq, args.iterations))
                print(f"  {name} seq {seq}: {time.time() - t0:.1f} s", flush=True)
            for name in host_io:
                row.append(torch_p50(peers[name], seq, args.iterations, host_io=True))
            rounds.append(row)
            if args.rounds > 1:
                print(f"  round {r + 1} seq {seq}: " + " ".join(f"{v:.3f}" for v in row),
                      flush=True)
        row = [float(np.median([rr[i] for rr in rounds])) for i in range(len(rounds[0]))]
        lines.append(f"| {seq} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
        print(lines[-1], flush=True)
        # Each round's peer / Nimble ratio for the graphs' columns against torch.compile, and
        # their median (the rounds time both sides back to back).
        for g in graphs:
            for peer in [c for c in cols if c.startswith("PyTorch compile")]:
                a, b = cols.index(f"Nimble {g} graphs"), cols.index(peer)
                ratios = [rr[b] / rr[a] for rr in rounds]
                ratio_lines.append(f"seq {seq}: {peer} / Nimble {g} graphs: median "
                                   f"{float(np.median(ratios)):.2f}x (rounds " +
                                   ", ".join(f"{x:.2f}" for x in ratios) + ")")
                print(ratio_lines[-1], flush=True)
    with open(args.out, "w") as f:
        f.write(torch.cuda.get_device_name() + f", torch {torch.__version__}\n\n")
        f.write("\n".join(lines) + "\n")
        if ratio_lines:
            f.write("\n" + "\n".join(ratio_lines) + "\n")


if __name__ == "__main__":
    main()
