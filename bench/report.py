#!/usr/bin/python3
"""Renders bench/results/*.json (written by bench/run_all.py) into bench/report/*.png and
bench/REPORT.md. Needs Debian's python3-matplotlib; reads only the JSON files.

    /usr/bin/python3 bench/report.py [--results bench/results] [--figures bench/report] \
        [--out bench/REPORT.md]

Every figure carries a footer with the machine, the commit and the command that produced its
numbers; REPORT.md repeats it as the caption, with the full commands.
"""
import argparse
import json
import os
import sys
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BENCH = os.path.dirname(os.path.abspath(__file__))
MODES = {"padding": "padding batching", "identical": "identical-shape batching",
         "none": "no batching (max_batch_size 1)"}
MODEL_NAMES = {"small": "BERT small (2x128)", "base": "BERT-base (12x768)"}
COLORS = {"padding": "tab:blue", "identical": "tab:orange", "none": "tab:gray"}


def load(results, name):
    path = os.path.join(results, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def machine(meta):
    return f"{meta['cpu']}, {meta['cores']} cores"


def load_note(meta):
    """The 1-minute load average when the step started: how busy the shared machine was."""
    la = meta.get("load_average")
    return f"load average {la[0]:.1f} at the start" if la else "load average not recorded"


def footer(fig, meta, commands):
    lines = [f"Machine: {machine(meta)}; commit {meta['commit']}; {meta['date']} "
             f"({load_note(meta)}); run by `make bench`"]
    width = int(fig.get_figwidth() * 20)  # characters of 5.5 pt monospace per line
    lines = [piece for line in lines for piece in textwrap.wrap(line, width)]
    for c in commands:
        lines += textwrap.wrap(c, width, initial_indent="$ ", subsequent_indent="    ")
    fig.text(0.005, 0.005, "\n".join(lines), fontsize=5.5, family="monospace", va="bottom")
    return len(lines)


def save(fig, path, n_footer_lines):
    fig.tight_layout(rect=(0, 0.012 * n_footer_lines + 0.01, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def caption(meta, commands):
    cmds = "\n".join(f"    {c}" for c in commands)
    return (f"*Machine: {machine(meta)}. Commit `{meta['commit']}`, {meta['date']} "
            f"({load_note(meta)}). "
            f"Made by `make bench`, which ran:*\n\n{cmds}\n")


class Report:
    def __init__(self, results, figures, out):
        self.results, self.figures, self.out = results, figures, out
        self.md = []
        self.headlines = []

    def figure_path(self, name):
        return os.path.join(self.figures, name)

    def image(self, name, alt):
        rel = os.path.relpath(self.figure_path(name), os.path.dirname(os.path.abspath(self.out)))
        self.md.append(f"![{alt}]({rel})\n")

    # --- 1. model execution ---------------------------------------------------------------

    def model_latency(self):
        bert, lstm = load(self.results, "bert_cpu.json"), load(self.results, "lstm_cpu.json")
        runs = [r for r in (bert, lstm) if r]
        if not runs:
            return
        self.md.append("## 1. Model execution latency vs sequence length (batch 1)\n")
        fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 4.3), squeeze=False)
        for ax, run in zip(axes[0], runs):
            seqs = [r["seq"] for r in run["rows"]]
            ax.plot(seqs, [r["nimble_ms"] for r in run["rows"]], "o-", label="Nimble")
            ax.plot(seqs, [r["peer_ms"] for r in run["rows"]], "s--", label=run["peer"])
            if all("nimble_min_ms" in r for r in run["rows"]):  # fastest call: contention-free-er
                ax.plot(seqs, [r["nimble_min_ms"] for r in run["rows"]], ":", color="tab:blue",
                        alpha=0.6, label="Nimble, fastest call")
                ax.plot(seqs, [r["peer_min_ms"] for r in run["rows"]], ":", color="tab:orange",
                        alpha=0.6, label="PyTorch, fastest call")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(seqs, [str(s) for s in seqs])
            ax.set_xlabel("sequence length")
            ax.set_ylabel(f"{run['statistic']} latency per call (ms)")
            ax.set_title(f"{run['model']}, {run['threads']} threads", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        n = footer(fig, runs[0]["meta"], [r["meta"]["command"] for r in runs])
        save(fig, self.figure_path("model_latency.png"), n)
        self.image("model_latency.png", "model latency vs sequence length")
        self.md.append(caption(runs[0]["meta"], [r["meta"]["command"] for r in runs]))
        for run in runs:
            self.md.append(f"\n**{run['model']}**, {run['threads']} threads for both, "
                           f"{run['statistic']} of {run['iterations']} calls after a warm-up"
                           + (f", lowest of {run['repeats']} interleaved repeats"
                              if run.get("repeats", 1) > 1 else "")
                           + (f"; Nimble compiled once in {run['compile_ms'] / 1000:.1f} s"
                              if "compile_ms" in run else "") + ".\n")
            mins = all("nimble_min_ms" in r for r in run["rows"])
            self.md.append("| seq | Nimble ms | peer ms | peer / Nimble |"
                           + (" Nimble fastest ms | peer fastest ms |" if mins else "")
                           + "\n|---|---|---|---|" + ("---|---|" if mins else ""))
            for r in run["rows"]:
                self.md.append(f"| {r['seq']} | {r['nimble_ms']:.2f} | {r['peer_ms']:.2f} | "
                               f"{r['peer_ms'] / r['nimble_ms']:.2f}x |"
                               + (f" {r['nimble_min_ms']:.2f} | {r['peer_min_ms']:.2f} |"
                                  if mins else ""))
            self.md.append("")
            ratios = [r["peer_ms"] / r["nimble_ms"] for r in run["rows"]]
            self.headlines.append(
                f"{run['model']}: Nimble {min(ratios):.1f}x-{max(ratios):.1f}x faster than "
                f"{run['peer']} (seq {run['rows'][0]['seq']}-{run['rows'][-1]['seq']}, "
                f"{run['threads']} threads)")

    # --- 2. throughput vs concurrency -----------------------------------------------------

    def concurrency(self):
        series = [(name, load(self.results, f"concurrency_{name}.json"))
                  for name in ("small_padding", "small_none", "base_padding", "base_none")]
        series = [(n, r) for n, r in series if r]
        if not series:
            return
        self.md.append("## 2. Throughput vs concurrency through the server (closed loop)\n")
        models = sorted({n.split("_")[0] for n, _ in series}, key=lambda m: m != "small")
        fig, axes = plt.subplots(2, len(models), figsize=(5.2 * len(models), 6.5), squeeze=False)
        for col, model in enumerate(models):
            for name, run in series:
                if not name.startswith(model):
                    continue
                mode = name.split("_", 1)[1]
                levels = run["levels"]
                x = [lv["concurrency"] for lv in levels]
                axes[0][col].plot(x, [lv["throughput_infer_per_s"] for lv in levels], "o-",
                                  color=COLORS[mode], label=MODES[mode])
                axes[1][col].plot(x, [lv["latency"]["p99_us"] / 1000 for lv in levels], "o-",
                                  color=COLORS[mode], label=MODES[mode])
            title = f"{MODEL_NAMES[model]}, lengths {series[0][1]['seq_len']}"
            axes[0][col].set_title(title, fontsize=9)
            axes[0][col].set_ylabel("throughput (infer/s)")
            axes[1][col].set_ylabel("p99 latency (ms)")
            levels = [lv["concurrency"] for _, r in series for lv in r["levels"]]
            for ax in (axes[0][col], axes[1][col]):
                ax.set_xscale("log", base=2)
                ax.set_xticks(sorted(set(levels)), [f"{c:g}" for c in sorted(set(levels))])
                ax.set_xlabel("concurrency (requests in flight)")
                ax.grid(True, which="both", alpha=0.3)
                ax.legend(fontsize=7)
            axes[0][col].set_ylim(bottom=0)
        commands = [r["bench"]["command"] for _, r in series]
        n = footer(fig, series[0][1]["bench"]["meta"], commands)
        save(fig, self.figure_path("throughput_concurrency.png"), n)
        self.image("throughput_concurrency.png", "throughput vs concurrency")
        self.md.append(caption(series[0][1]["bench"]["meta"],
                               [r["bench"]["server_command"] + " &" for _, r in series[:1]]
                               + commands))
        self.md.append("Server configs (config.json):\n")
        for name, run in series:
            self.md.append(f"- `{name}`: `{json.dumps(run['bench']['config'])}`")
        self.md.append("\n| run | concurrency | infer/s | p50 ms | p99 ms | avg batch | "
                       "errors | windows |\n|---|---|---|---|---|---|---|---|")
        for name, run in series:
            for lv in run["levels"]:
                self.md.append(
                    f"| {name} | {lv['concurrency']:g} | {lv['throughput_infer_per_s']:.1f} | "
                    f"{lv['latency']['p50_us'] / 1000:.2f} | {lv['latency']['p99_us'] / 1000:.2f}"
                    f" | {lv['server'].get('avg_batch', 0):.2f} | {lv['failed']} | "
                    f"{lv['stop_reason']} |")
            best = max(run["levels"], key=lambda lv: lv["throughput_infer_per_s"])
            self.headlines.append(
                f"server, {name}: peak {best['throughput_infer_per_s']:.0f} infer/s at "
                f"concurrency {best['concurrency']:g} (p99 {best['latency']['p99_us'] / 1000:.1f}"
                f" ms, average batch {best['server'].get('avg_batch', 0):.2f})")
        self.md.append("")

    # --- 3. p99 vs offered load -----------------------------------------------------------

    def batching(self):
        models = []
        for model in ("small", "base"):
            series = [(mode, load(self.results, f"batching_{model}_{mode}.json"))
                      for mode in MODES]
            series = [(m, r) for m, r in series if r]
            if series:
                models.append((model, series))
        if not models:
            return
        self.md.append("## 3. p99 latency vs offered load: padding vs identical-shape vs no "
                       "batching (open loop, Poisson arrivals)\n")
        fig, axes = plt.subplots(len(models), 2, figsize=(10.4, 4.0 * len(models)),
                                 squeeze=False)
        for row, (model, series) in enumerate(models):
            ax_p99, ax_tput = axes[row]
            for mode, run in series:
                levels = run["levels"]
                x = [lv["rate"] for lv in levels]
                ax_p99.plot(x, [lv["latency"]["p99_us"] / 1000 for lv in levels], "o-",
                            color=COLORS[mode], label=MODES[mode])
                ax_tput.plot(x, [lv["throughput_infer_per_s"] for lv in levels], "o-",
                             color=COLORS[mode], label=MODES[mode])
            x = [lv["rate"] for lv in series[0][1]["levels"]]
            ax_tput.plot(x, x, ":", color="black", label="offered")
            ax_p99.set_yscale("log")
            ax_p99.set_ylabel("p99 latency from scheduled send (ms)")
            ax_tput.set_ylabel("completed (infer/s)")
            title = f"{MODEL_NAMES[model]}, lengths {series[0][1]['seq_len']}"
            for ax in (ax_p99, ax_tput):
                ax.set_title(title, fontsize=9)
                ax.set_xlabel("offered load (requests/s)")
                ax.grid(True, which="both", alpha=0.3)
                ax.legend(fontsize=7)
        first = models[0][1][0][1]["bench"]
        commands = [r["bench"]["command"] for _, series in models for _, r in series]
        n = footer(fig, first["meta"], commands[:1] + [
            f"... and {len(commands) - 1} more (same flags; REPORT.md lists them)"])
        save(fig, self.figure_path("batching_p99.png"), n)
        self.image("batching_p99.png", "p99 vs offered load")
        self.md.append(caption(first["meta"], commands))
        self.md.append("Latency is measured from each request's scheduled send time, so a "
                       "saturated server shows as growing latency, not as a lower offered rate. "
                       "Rates step by a fraction of the model's no-batching capacity (its best "
                       "closed-loop throughput in section 2): the small BERT by 0.25x up to "
                       "1.5x, BERT-base by 0.3x up to 1.2x. Server configs (config.json):\n")
        for model, series in models:
            for mode, run in series:
                self.md.append(f"- {MODEL_NAMES[model]}, {MODES[mode]}: "
                               f"`{json.dumps(run['bench']['config'])}`")
        self.md.append("\n| model | config | offered /s | completed /s | p50 ms | p99 ms | "
                       "avg batch | errors | late sends |\n|---|---|---|---|---|---|---|---|---|")
        for model, series in models:
            for mode, run in series:
                for lv in run["levels"]:
                    self.md.append(
                        f"| {model} | {mode} | {lv['rate']:g} | "
                        f"{lv['throughput_infer_per_s']:.1f} | "
                        f"{lv['latency']['p50_us'] / 1000:.2f} | "
                        f"{lv['latency']['p99_us'] / 1000:.2f} | "
                        f"{lv['server'].get('avg_batch', 0):.2f} | {lv['failed']} | "
                        f"{lv.get('late_sends', 0)} |")
        # Headline: the highest offered rate each mode kept up with (>= 95% completed, p99
        # under 10x its lowest-load p99).
        for model, series in models:
            for mode, run in series:
                floor = min(lv["latency"]["p99_us"] for lv in run["levels"])
                ok = [lv for lv in run["levels"]
                      if lv["latency"]["p99_us"] <= 10 * floor and lv["failed"] == 0
                      and lv["throughput_infer_per_s"] >= 0.95 * lv["rate"]]
                best = max(ok, key=lambda lv: lv["rate"]) if ok else None
                self.headlines.append(
                    f"open loop, {MODEL_NAMES[model]}, {MODES[mode]}: kept up to "
                    + (f"{best['rate']:g}/s (p99 {best['latency']['p99_us'] / 1000:.1f} ms)"
                       if best else "none of the rates")
                    + f"; p99 at the lowest rate {floor / 1000:.1f} ms")
        self.md.append("")

    # --- 4. compile cold vs cached ---------------------------------------------------------

    def compile_times(self):
        comp, cold = load(self.results, "compile.json"), load(self.results, "server_cold.json")
        if not comp and not cold:
            return
        self.md.append("## 4. Compile time: cold vs cached\n")
        fig, ax = plt.subplots(figsize=(9, 4.6))
        labels, values, colors = [], [], []
        for r in (comp or {}).get("rows", []):
            labels.append(f"{r['model']}: nimblec compile ({r['variant']})")
            values.append(r["compile_ms"] / 1000)
            colors.append("tab:purple")
        for r in (cold or {}).get("rows", []):
            if r["start"] == "cold":
                labels.append(f"{r['model']}: server cold, to READY (generic)")
                values.append(r["ready_s"])
                colors.append("tab:red")
                labels.append(f"{r['model']}: server cold, to specialized buckets")
                values.append(r["specialized_s"])
                colors.append("tab:orange")
            else:
                labels.append(f"{r['model']}: server restart, --cache-dir, to READY")
                values.append(r["ready_s"])
                colors.append("tab:green")
        y = list(range(len(labels)))[::-1]
        ax.barh(y, values, color=colors)
        for yi, v in zip(y, values):
            ax.text(v, yi, f" {v:.2f} s", va="center", fontsize=7)
        ax.set_yticks(y, labels, fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("seconds (log scale)")
        ax.grid(True, axis="x", which="both", alpha=0.3)
        meta = (cold or comp)["meta"]
        commands = [r["command"] for r in (comp or {}).get("rows", [])[:2]] + \
                   [r["command"] for r in (cold or {}).get("rows", [])[:1]]
        n = footer(fig, meta, commands)
        save(fig, self.figure_path("compile_cold_cached.png"), n)
        self.image("compile_cold_cached.png", "compile time cold vs cached")
        self.md.append(caption(meta, commands))
        self.md.append("Server times are wall clock from spawning `nimble-server` until its log "
                       "says the model is READY (warm-up run included) or serves its "
                       "specialized variants; the restart reuses the first run's `--cache-dir` "
                       f"(config: `{json.dumps((cold or {}).get('config'))}`).\n")
        if comp:
            self.md.append("| model | nimblec compile | ms | .nbx MiB |\n|---|---|---|---|")
            for r in comp["rows"]:
                self.md.append(f"| {r['model']} | {r['variant']} | {r['compile_ms']:.0f} | "
                               f"{r['nbx_bytes'] / 2**20:.1f} |")
            self.md.append("")
        if cold:
            self.md.append("| model | start | to READY s | to specialized s | compile metric s "
                           "| cache hits |\n|---|---|---|---|---|---|")
            for r in cold["rows"]:
                self.md.append(f"| {r['model']} | {r['start']} | {r['ready_s']:.2f} | "
                               f"{r['specialized_s']:.2f} | {r['compile_seconds_metric']:.2f} | "
                               f"{r['cache_hits']:.0f} |")
            self.md.append("")
            by = {(r["model"], r["start"]): r for r in cold["rows"]}
            for model in sorted({r["model"] for r in cold["rows"]}):
                c, w = by.get((model, "cold")), by.get((model, "cached"))
                if c and w:
                    self.headlines.append(
                        f"{model}: server restart from --cache-dir READY in {w['ready_s']:.2f} s"
                        f" vs {c['specialized_s']:.2f} s to compile every bucket cold "
                        f"({c['ready_s']:.2f} s to the first, generic, READY)")

    # --- GPU machine (bench/gpu/model_compare.py, copied in by hand) --------------------------

    def gpu(self):
        run = load(self.results, "gpu.json")
        if not run:
            return
        self.md.append("## GPU machine: Nimble vs PyTorch eager, torch.compile(dynamic=True), "
                       "ONNX Runtime\n")
        panels = sorted({(r["model"], r["device"]) for r in run["rows"]})
        fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False)
        for ax, (model, device) in zip(axes[0], panels):
            rows = [r for r in run["rows"] if r["model"] == model and r["device"] == device]
            for peer in ("nimble", "torch_eager", "torch_compile", "ort"):
                pts = [(r["seq"], r["ms"]) for r in rows if r["peer"] == peer and "ms" in r]
                if pts:
                    ax.plot(*zip(*pts), "o-", label=peer)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length")
            ax.set_ylabel("p50 latency per call (ms)")
            ax.set_title(f"{model}, {device}" + (f", {run['threads']} threads"
                                                 if device == "cpu" else f", {run['gpu']}"),
                         fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        meta = run["meta"]
        n = footer(fig, meta, [meta["command"]])
        save(fig, self.figure_path("gpu_model_latency.png"), n)
        self.image("gpu_model_latency.png", "GPU machine model latency")
        self.md.append(caption(meta, [meta["command"]]).replace(
            "Made by `make bench`", "Made on the GPU machine (bench/gpu/README.md)"))
        errors = sorted({f"{r['device']} {r['peer']}: {r['error']}" for r in run["rows"]
                         if "error" in r})
        self.md += [f"- not measured: {e}" for e in errors] + [""]

    # --- gRPC floor (table only) -----------------------------------------------------------

    def grpc_roundtrip(self):
        run = load(self.results, "grpc_roundtrip.json")
        if not run:
            return
        self.md.append("## gRPC round trip over loopback (concurrency 1, in-process server)\n")
        self.md.append(caption(run["bench"]["meta"], [run["bench"]["command"]]))
        self.md.append("| call | mean us | p50 us | p99 us | iterations |\n|---|---|---|---|---|")
        for b in run["benchmarks"]:
            p50 = f"{b['p50_us']:.1f}" if "p50_us" in b else "—"
            p99 = f"{b['p99_us']:.1f}" if "p99_us" in b else "—"
            self.md.append(f"| {b['name']} | {b['real_time']:.1f} | {p50} | {p99} | "
                           f"{b['iterations']} |")
            if "p50_us" in b:
                self.headlines.append(f"gRPC identity ModelInfer round trip: p50 {p50} us, "
                                      f"p99 {p99} us")
        self.md.append("")

    def write(self):
        os.makedirs(self.figures, exist_ok=True)
        run = load(self.results, "run.json")
        self.model_latency()
        self.concurrency()
        self.batching()
        self.compile_times()
        self.grpc_roundtrip()
        self.gpu()
        head = ["# Nimble benchmark report", "",
                "Generated by `make bench` (bench/run_all.py, then bench/report.py) from "
                "`bench/results/*.json`; do not edit by hand — rerun `make bench`, or "
                "`/usr/bin/python3 bench/report.py` to re-render from the JSON.", ""]
        if run:
            meta = run["meta"]
            steps = ", ".join(f"{k} {v:.0f} s" for k, v in run["step_seconds"].items()
                              if k != "total")
            load_avg = meta.get("load_average")
            head += [f"Machine: **{machine(meta)}**. The last full `make bench` (commit "
                     f"`{meta['commit']}`, finished {meta['date']}) took "
                     f"**{run['step_seconds']['total'] / 60:.1f} min** ({steps})"
                     + (f"; load average at the end {load_avg[0]:.2f} / {load_avg[1]:.2f} / "
                        f"{load_avg[2]:.2f} (1/5/15 min)" if load_avg else "") + ". Steps "
                     "rerun since (`make bench BENCH_ARGS=--only=...`) replace their own JSON "
                     "files: each section's caption gives the commit, time and load average of "
                     "the run that made it.", ""]
        head += ["**Noise.** The dev machine is shared: other people build and benchmark on the "
                 "same 2 cores while this runs, and the load generator shares them with the "
                 "server. Repeat a run before believing a difference under ~10-20%; read the "
                 "server figures as shapes (where a curve bends), not as absolute capacity.", "",
                 "## Headlines", ""] + [f"- {h}" for h in self.headlines] + [""]
        expected = {"bert_cpu.json": "`bert_cpu` step", "lstm_cpu.json": "`lstm_cpu` step",
                    "compile.json": "`compile` step", "server_cold.json": "`server_cold` step",
                    "grpc_roundtrip.json": "`grpc_roundtrip` step",
                    "concurrency_base_none.json": "BERT-base load runs (`--no-base-load`?)",
                    "gpu.json": "GPU machine comparison (run by hand: bench/gpu/README.md)"}
        missing = [why for name, why in expected.items()
                   if not os.path.exists(os.path.join(self.results, name))]
        tail = ["## Not in this report", ""] + [f"- {m}: no results" for m in missing] + [
            "- Nimble on the GPU at fp16 with CUDA graphs, and GPU serving: bench/RESULTS.md "
            "(model_compare.py runs fp32 without graphs).", "- BERT-base open-loop levels hold "
            "few requests (a few per "
            "second for ~12 s): their p99 is close to the maximum of ~100 samples.", ""]
        with open(self.out, "w") as f:
            f.write("\n".join(head + self.md + tail) + "\n")
        print(f"report: wrote {self.out} and {len(os.listdir(self.figures))} figures in "
              f"{self.figures}", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", default=os.path.join(BENCH, "results"))
    p.add_argument("--figures", default=os.path.join(BENCH, "report"))
    p.add_argument("--out", default=os.path.join(BENCH, "REPORT.md"))
    args = p.parse_args()
    Report(args.results, args.figures, args.out).write()


if __name__ == "__main__":
    main()
