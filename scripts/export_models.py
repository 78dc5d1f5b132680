#!/usr/bin/python3
"""Exports the test models with dynamic axes and writes PyTorch reference outputs.

Run with Debian's interpreter (python3-torch 1.13, python3-onnx):
    /usr/bin/python3 scripts/export_models.py OUT_DIR [--models bert,gpt2,lstm,loop] [--small]

Writes, per model, OUT_DIR/<model>/model.onnx and OUT_DIR/<model>/cases/<case>/{inputs,outputs}
with one .npy per tensor (named after the ONNX input/output), plus OUT_DIR/<model>/manifest.txt
listing the cases. Weights are random but fixed (seeded), so the files are reproducible.

Models:
  bert  HF-architecture BERT (embeddings, attention mask, GELU, LayerNorm, pooler); BERT-base
        (12 layers, 768 hidden) unless --small (2 layers, 128 hidden).
  gpt2  GPT-2-small-style decoder with past key/values as inputs and outputs.
  lstm  2-layer LSTM (the ONNX LSTM op), hidden 650 (--small: 64).
  loop  a scripted data-dependent while loop (ONNX Loop).
"""
import argparse
import hashlib
import inspect
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn

SEQ_LENS = [1, 7, 33, 128, 384]
BATCHES = [1, 4]


class BertSelfAttention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)

    def split(self, x):
        b, s, _ = x.shape
        return x.view(b, s, self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x, mask_bias):
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask_bias
        probs = torch.softmax(scores, dim=-1)
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        ctx = ctx.view(ctx.shape[0], ctx.shape[1], -1)
        return self.norm(self.dense(ctx) + x)


class BertLayer(nn.Module):
    def __init__(self, hidden, heads, intermediate):
        super().__init__()
        self.attention = BertSelfAttention(hidden, heads)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.output = nn.Linear(intermediate, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x, mask_bias):
        a = self.attention(x, mask_bias)
        h = nn.functional.gelu(self.intermediate(a))
        return self.norm(self.output(h) + a)


class Bert(nn.Module):
    def __init__(self, layers, hidden, heads, intermediate, vocab=30522, max_pos=512):
        super().__init__()
        self.word = nn.Embedding(vocab, hidden)
        self.position = nn.Embedding(max_pos, hidden)
        self.token_type = nn.Embedding(2, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.layers = nn.ModuleList([BertLayer(hidden, heads, intermediate) for _ in range(layers)])
        self.pooler = nn.Linear(hidden, hidden)

    def forward(self, input_ids, attention_mask, token_type_ids):
        seq = input_ids.shape[1]
        positions = torch.arange(seq, dtype=torch.long, device=input_ids.device).unsqueeze(0)
        x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
        x = self.norm(x)
        mask_bias = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -10000.0
        for layer in self.layers:
            x = layer(x, mask_bias)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        return x, pooled


class Gpt2Block(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.ln1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden)
        self.fc = nn.Linear(hidden, 4 * hidden)
        self.out = nn.Linear(4 * hidden, hidden)

    def forward(self, x, past_k, past_v):
        b, s, h = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(h, dim=2)
        q = q.view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = torch.cat([past_k, k.view(b, s, self.heads, self.head_dim).transpose(1, 2)], dim=2)
        v = torch.cat([past_v, v.view(b, s, self.heads, self.head_dim).transpose(1, 2)], dim=2)
        total = k.shape[2]
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        # Causal mask over past + new positions: query i sees keys j <= past + i.
        past = total - s
        rows = torch.arange(s, device=x.device).unsqueeze(1) + past
        cols = torch.arange(total, device=x.device).unsqueeze(0)
        scores = scores.masked_fill(cols > rows, -1e4)
        a = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(b, s, h)
        x = x + self.proj(a)
        x = x + self.out(nn.functional.gelu(self.fc(self.ln2(x)), approximate="tanh"))
        return x, k, v


class Gpt2(nn.Module):
    def __init__(self, layers, hidden, heads, vocab=50257, max_pos=1024):
        super().__init__()
        self.wte = nn.Embedding(vocab, hidden)
        self.wpe = nn.Embedding(max_pos, hidden)
        self.blocks = nn.ModuleList([Gpt2Block(hidden, heads) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(hidden)

    def forward(self, input_ids, *past):
        s = input_ids.shape[1]
        past_len = past[0].shape[2]
        positions = torch.arange(s, device=input_ids.device).unsqueeze(0) + past_len
        x = self.wte(input_ids) + self.wpe(positions)
        presents = []
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, past[2 * i], past[2 * i + 1])
            presents += [k, v]
        logits = torch.matmul(self.ln_f(x), self.wte.weight.t())
        return (logits, *presents)


class Lstm(nn.Module):
    def __init__(self, features, hidden):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2)

    def forward(self, x):
        y, (h, c) = self.lstm(x)
        return y, h, c


@torch.jit.script
def halve_until_small(x: torch.Tensor, limit: torch.Tensor):
    steps = torch.zeros([1], dtype=torch.long)
    while bool(x.abs().sum() > limit):
        x = x * 0.5
        steps = steps + 1
    return x, steps


class Loop(nn.Module):
    def forward(self, x, limit):
        return halve_until_small(x, limit)


def save_case(case_dir, names, tensors, kind):
    os.makedirs(os.path.join(case_dir, kind), exist_ok=True)
    for name, t in zip(names, tensors):
        np.save(os.path.join(case_dir, kind, name + ".npy"), t.detach().numpy())


def export(model, args, input_names, output_names, dynamic_axes, path, opset):
    extra = {}
    # PyTorch 2.9+ defaults to the dynamo exporter; ask for the TorchScript one everywhere so
    # every machine exports the same graph.
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        extra["dynamo"] = False
    torch.onnx.export(model, args, path, input_names=input_names, output_names=output_names,
                      dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True,
                      **extra)


def write_cases(out, model, cases, input_names, output_names):
    with open(os.path.join(out, "manifest.txt"), "w") as manifest:
        for name, inputs in cases:
            with torch.no_grad():
                outputs = model(*inputs)
            if isinstance(outputs, torch.Tensor):
                outputs = (outputs,)
            save_case(os.path.join(out, "cases", name), input_names, inputs, "inputs")
            save_case(os.path.join(out, "cases", name), output_names, outputs, "outputs")
            manifest.write(name + "\n")


def bert(out, small):
    cfg = dict(layers=2, hidden=128, heads=2, intermediate=512) if small else \
        dict(layers=12, hidden=768, heads=12, intermediate=3072)
    model = Bert(**cfg).eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    outs = ["last_hidden_state", "pooler_output"]
    ids = torch.randint(0, 30522, (2, 9))
    export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), names, outs,
           {n: {0: "batch", 1: "seq"} for n in names} |
           {"last_hidden_state": {0: "batch", 1: "seq"}, "pooler_output": {0: "batch"}},
           os.path.join(out, "model.onnx"), 14)
    cases = []
    g = torch.Generator().manual_seed(1)
    for b in BATCHES:
        for s in SEQ_LENS:
            ids = torch.randint(0, 30522, (b, s), generator=g)
            mask = torch.ones(b, s, dtype=torch.long)
            mask[0, s // 2 + 1:] = 0  # some padding in the first row
            types = torch.zeros(b, s, dtype=torch.long)
            types[:, s // 2:] = 1
            cases.append((f"b{b}_s{s}", (ids, mask, types)))
    write_cases(out, model, cases, names, outs)


def gpt2(out, small):
    layers, hidden, heads = (2, 128, 2) if small else (12, 768, 12)
    model = Gpt2(layers, hidden, heads).eval()
    head_dim = hidden // heads
    past_names = [f"past_{i // 2}_{'kv'[i % 2]}" for i in range(2 * layers)]
    present_names = [f"present_{i // 2}_{'kv'[i % 2]}" for i in range(2 * layers)]
    names, outs = ["input_ids"] + past_names, ["logits"] + present_names
    past = [torch.randn(1, heads, 3, head_dim) for _ in range(2 * layers)]
    dyn = {"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    dyn |= {n: {0: "batch", 2: "past"} for n in past_names}
    dyn |= {n: {0: "batch", 2: "total"} for n in present_names}
    export(model, (torch.randint(0, 50257, (1, 5)), *past), names, outs, dyn,
           os.path.join(out, "model.onnx"), 14)
    cases = []
    g = torch.Generator().manual_seed(2)
    for b in BATCHES:
        for s, p in [(1, 0), (7, 0), (33, 0), (1, 7), (1, 128), (7, 33), (128, 0), (384, 0)]:
            ids = torch.randint(0, 50257, (b, s), generator=g)
            past = [torch.randn(b, heads, p, head_dim, generator=g) for _ in range(2 * layers)]
            cases.append((f"b{b}_s{s}_p{p}", (ids, *past)))
    write_cases(out, model, cases, names, outs)


def lstm(out, small):
    features, hidden = (32, 64) if small else (650, 650)
    model = Lstm(features, hidden).eval()
    export(model, (torch.randn(5, 1, features),), ["x"], ["y", "h", "c"],
           {"x": {0: "seq", 1: "batch"}, "y": {0: "seq", 1: "batch"}, "h": {1: "batch"},
            "c": {1: "batch"}}, os.path.join(out, "model.onnx"), 14)
    g = torch.Generator().manual_seed(3)
    cases = [(f"b{b}_s{s}", (torch.randn(s, b, features, generator=g),))
             for b in BATCHES for s in [1, 7, 16, 33, 64, 128, 384]]
    write_cases(out, model, cases, ["x"], ["y", "h", "c"])


def loop(out, small):
    model = Loop()
    export(model, (torch.randn(2, 3), torch.tensor(1.0)), ["x", "limit"], ["y", "steps"],
           {"x": {0: "n", 1: "m"}, "y": {0: "n", 1: "m"}}, os.path.join(out, "model.onnx"), 14)
    g = torch.Generator().manual_seed(4)
    cases = [(f"n{n}_m{m}_l{l}", (torch.randn(n, m, generator=g) * 10, torch.tensor(float(l))))
             for n, m, l in [(1, 1, 1), (2, 3, 1), (4, 33, 5), (7, 128, 0.5), (1, 5, 1000)]]
    write_cases(out, model, cases, ["x", "limit"], ["y", "steps"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--models", default="bert,gpt2,lstm,loop")
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    with open(__file__, "rb") as f:
        version = hashlib.sha256(f.read() + str(args.small).encode()).hexdigest()
    for name in args.models.split(","):
        out = os.path.join(args.out, name)
        stamp = os.path.join(out, "stamp")
        # Re-export only when this script or the flags changed.
        if os.path.exists(stamp) and open(stamp).read() == version:
            print(f"{name}: up to date in {out}", file=sys.stderr)
            continue
        os.makedirs(out, exist_ok=True)
        {"bert": bert, "gpt2": gpt2, "lstm": lstm, "loop": loop}[name](out, args.small)
        with open(stamp, "w") as f:
            f.write(version)
        print(f"exported {name} -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
