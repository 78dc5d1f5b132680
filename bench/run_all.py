#!/usr/bin/python3
"""`make bench`: the benchmark suite, end to end. Writes bench/results/*.json, then
bench/report.py turns them into bench/REPORT.md and bench/report/*.png.

    /usr/bin/python3 bench/run_all.py --build-dir build [--only STEP,...] [--skip STEP,...]

Steps (in order; each writes results/<step>*.json):
  models       export BERT-base, LSTM 2x650 and the small BERT (2x128) with Debian's PyTorch
               (scripts/export_models.py) unless the build tree has them
  bert_cpu     BERT-base batch 1 latency per sequence length, Nimble vs PyTorch (bench/bert_cpu.py)
  lstm_cpu     LSTM 2x650 batch 1 latency per sequence length, Nimble vs PyTorch
               (bench/lstm_cpu.py)
  compile      `nimblec compile` of BERT-base and the small BERT, generic and with seq buckets
  server_cold  nimble-server start to READY (and to its specialized buckets) with an empty
               --cache-dir, then a restart on the same cache dir; BERT-base and the small BERT
  grpc_roundtrip  bench_grpc_roundtrip (Google Benchmark): the gRPC floor and an identity
               ModelInfer over loopback, in-process server
  concurrency  nimble-load closed loop --concurrency 1:16:x2, lognormal lengths: the small BERT
               and BERT-base, each with padding batching and without batching
  batching     nimble-load open loop (Poisson) at offered rates stepping past the no-batching
               capacity: padding batching, identical-shape batching and no batching, the small
               BERT and BERT-base
  report       bench/report.py (always last; `--only report` re-renders from the JSON files)

Every step runs its programs with check=True and the whole run stops at the first failure with
the failing command and the tail of its output (exit code 1). Server logs, model repositories
and caches go to --work (default BUILD/bench-work). Nothing here reaches the network.
"""
import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = benchlib.REPO
PYTHON = "/usr/bin/python3"  # Debian's: python3-torch, python3-onnx, python3-matplotlib
STEPS = ["models", "bert_cpu", "lstm_cpu", "compile", "server_cold", "grpc_roundtrip",
         "concurrency", "batching"]

# nimble-load's view of BERT: vocabulary-sized ids, 0/1 type ids and masks.
BERT_INTS = ["--int-max", "30522", "--int-max", "token_type_ids=2", "--int-max",
             "attention_mask=2"]
SEQ_LEN = "lognormal:mean=48,max=128"
SEQ_BOUNDS = [16, 32, 64, 128]


class StepFailed(Exception):
    pass


def rel(path):
    """Path as written in captions: relative to the repository when inside it."""
    path = os.path.abspath(path)
    return os.path.relpath(path, REPO) if path.startswith(REPO + os.sep) else path


def cmdline(cmd):
    return " ".join(shlex.quote(rel(c) if os.path.isabs(c) and os.path.exists(c) else c)
                    for c in cmd)


def run(cmd, log=None, timeout=1800):
    """Runs cmd, echoing it; raises StepFailed with the output's tail when it fails."""
    print(f"+ {cmdline(cmd)}", flush=True)
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise StepFailed(f"timed out after {timeout} s: {cmdline(cmd)}") from e
    if log:
        with open(log, "a") as f:
            f.write(f"+ {cmdline(cmd)}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise StepFailed(f"exit code {proc.returncode}: {cmdline(cmd)}\n{tail}")
    return proc, time.monotonic() - start


LIVE_SERVERS = set()  # stopped on any exit of run_all, a failure or Ctrl-C included


class Server:
    """One nimble-server process on loopback ports it picks itself (--port-file)."""

    def __init__(self, binary, repo, log, cache_dir=None):
        self.binary, self.repo, self.log, self.cache_dir = binary, repo, log, cache_dir
        self.proc = None
        self.grpc = self.metrics = None

    def command(self):
        cmd = [self.binary, f"--model-repository={self.repo}", "--grpc-address=127.0.0.1:0",
               "--metrics-address=127.0.0.1", "--metrics-port=0",
               f"--port-file={self.log}.ports", "--shutdown-grace=5s"]
        if self.cache_dir:
            cmd.append(f"--cache-dir={self.cache_dir}")
        return cmd

    def start(self):
        for path in (self.log, self.log + ".ports"):
            if os.path.exists(path):
                os.remove(path)
        print(f"+ {cmdline(self.command())} &", flush=True)
        self.started = time.monotonic()
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(self.command(), cwd=REPO, stdout=out,
                                         stderr=subprocess.STDOUT)
        LIVE_SERVERS.add(self)

    def log_text(self):
        with open(self.log) as f:
            return f.read()

    def fail(self, why):
        tail = "\n".join(self.log_text().splitlines()[-20:])
        self.stop(check=False)
        raise StepFailed(f"nimble-server ({self.repo}): {why}\n{tail}")

    def wait_for(self, pattern, timeout):
        """Seconds from the start until the log has a line matching pattern."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.fail(f"exited with code {self.proc.returncode}")
            text = self.log_text()
            if re.search(r"failed|UNAVAILABLE| error ", text) and "is READY" not in text:
                self.fail("model load failed")
            if re.search(pattern, text):
                return time.monotonic() - self.started
            time.sleep(0.02)
        self.fail(f"no '{pattern}' in the log after {timeout} s")

    def wait_ports(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(self.log + ".ports"):
                ports = dict(line.strip().split("=", 1)
                             for line in open(self.log + ".ports") if "=" in line)
                if "grpc" in ports and "metrics" in ports:
                    self.grpc, self.metrics = int(ports["grpc"]), int(ports["metrics"])
                    return
            if self.proc.poll() is not None:
                self.fail(f"exited with code {self.proc.returncode}")
            time.sleep(0.02)
        self.fail("no port file")

    def scrape(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=10) as r:
            text = r.read().decode()
        values = {}
        for line in text.splitlines():
            if line.startswith("nimble_") and " " in line:
                key, value = line.rsplit(" ", 1)
                values[key] = float(value)
        return values

    def stop(self, check=True):
        LIVE_SERVERS.discard(self)
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            if check:
                raise StepFailed(f"nimble-server ({self.repo}) did not stop on SIGTERM")
            return
        if check and rc != 0:
            raise StepFailed(f"nimble-server ({self.repo}) exited with {rc} on SIGTERM")


def bert_config(mode, max_queue_delay_us, threads):
    """config.json of the three batching modes (as bench/batching_bench.cc's, same buckets).

    One instance of `threads` threads: on the 2-core dev machine the load generator and gRPC
    need the other core, and an arena wider than the free cores stalls on descheduled workers.
    """
    config = {"buckets": {"seq": {"bounds": SEQ_BOUNDS}},
              "instance_groups": {"cpu": {"count": 1, "threads": threads}}}
    if mode == "none":
        config["max_batch_size"] = 1
        return config
    config["max_batch_size"] = 8
    config["max_queue_delay_us"] = max_queue_delay_us
    if mode == "padding":
        config["inputs"] = [{"name": n, "paddable_axes": [1]}
                            for n in ("input_ids", "attention_mask", "token_type_ids")]
        config["outputs"] = [{"name": "last_hidden_state", "slice_axes": [1]}]
    return config


def make_repo(work, name, onnx, config):
    repo = os.path.join(work, "repos", name)
    shutil.rmtree(repo, ignore_errors=True)
    os.makedirs(os.path.join(repo, "bert", "1"))
    os.symlink(os.path.abspath(onnx), os.path.join(repo, "bert", "1", "model.onnx"))
    with open(os.path.join(repo, "bert", "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    return repo


class Suite:
    def __init__(self, args):
        self.args = args
        build = os.path.abspath(args.build_dir)
        self.nimblec = args.nimblec or os.path.join(build, "compiler", "nimblec")
        self.server_bin = args.server or os.path.join(build, "server", "nimble-server")
        self.load_bin = args.load or os.path.join(build, "loadtest", "nimble-load")
        self.models = os.path.abspath(args.models or os.path.join(build, "models"))
        self.models_small = os.path.abspath(args.models_small
                                            or os.path.join(build, "models-small"))
        self.work = os.path.abspath(args.work or os.path.join(build, "bench-work"))
        self.results = os.path.abspath(args.results)
        self.bert_base = os.path.join(self.models, "bert", "model.onnx")
        self.bert_small = os.path.join(self.models_small, "bert", "model.onnx")
        self.lstm = os.path.join(self.models, "lstm", "model.onnx")
        self.log = os.path.join(self.work, "run.log")
        # The load steps' servers share one cache: a config compiled once loads from disk.
        self.load_cache = os.path.join(self.work, "cache-load")
        self.threads = args.threads

    def config(self, mode, threads=None):
        return bert_config(mode, self.args.max_queue_delay_us,
                           threads or self.args.server_threads)

    def out(self, name):
        return os.path.join(self.results, name)

    # --- steps -----------------------------------------------------------------------------

    def models_step(self):
        export = os.path.join(REPO, "scripts", "export_models.py")
        missing = [m for m in ("bert", "lstm")
                   if not os.path.exists(os.path.join(self.models, m, "model.onnx"))]
        if missing:
            run([PYTHON, export, self.models, "--models", ",".join(missing)], self.log)
        if not os.path.exists(self.bert_small):
            run([PYTHON, export, self.models_small, "--models", "bert", "--small"], self.log)

    def bert_cpu_step(self):
        run([PYTHON, os.path.join(BENCH, "bert_cpu.py"), "--models", self.models,
             "--nimblec", self.nimblec, "--threads", str(self.threads), "--seqs",
             self.args.bert_seqs, "--iterations", str(self.args.bert_iterations),
             "--json", self.out("bert_cpu.json"), "--results", ""], self.log)

    def lstm_cpu_step(self):
        run([PYTHON, os.path.join(BENCH, "lstm_cpu.py"), "--models", self.models,
             "--nimblec", self.nimblec, "--threads", str(self.threads), "--seqs",
             self.args.lstm_seqs, "--iterations", "30", "--repeats", "2",
             "--json", self.out("lstm_cpu.json"), "--results", ""], self.log)

    def compile_step(self):
        rows = []
        buckets = "seq=" + ",".join(str(b) for b in SEQ_BOUNDS)
        for model, onnx in (("BERT-base", self.bert_base), ("BERT small", self.bert_small)):
            for variant, extra in (("generic", []), ("buckets", ["--buckets", buckets])):
                nbx = os.path.join(self.work, f"compile-{len(rows)}.nbx")
                cmd = [self.nimblec, "compile", onnx, "-o", nbx, *extra]
                proc, wall = run(cmd, self.log)
                m = re.search(r" in (\d+) ms", proc.stderr)
                rows.append({"model": model, "variant": variant, "command": cmdline(cmd),
                             "compile_ms": float(m.group(1)) if m else None,
                             "wall_s": wall, "nbx_bytes": os.path.getsize(nbx)})
                os.remove(nbx)
        benchlib.write_json(self.out("compile.json"), {
            "benchmark": "compile", "meta": benchlib.meta(self.args.command),
            "threads": "nimblec's default", "rows": rows})

    def start_server(self, name, onnx, config, cache_dir=None, specialized=True):
        repo = make_repo(self.work, name, onnx, config)
        server = Server(self.server_bin, repo, os.path.join(self.work, f"{name}.log"), cache_dir)
        server.small = onnx == self.bert_small
        server.start()
        server.wait_ports()
        ready = server.wait_for(r"is READY", self.args.server_timeout)
        done = ready
        if specialized:
            done = server.wait_for(r"serves its specialized variants|executable from the disk "
                                   r"cache", self.args.server_timeout)
        return server, ready, done

    def server_cold_step(self):
        rows = []
        for model, onnx, name in (("BERT-base", self.bert_base, "base"),
                                  ("BERT small", self.bert_small, "small")):
            cache = os.path.join(self.work, f"cache-{name}")
            shutil.rmtree(cache, ignore_errors=True)
            os.makedirs(cache)
            config = self.config("padding")
            for start in ("cold", "cached"):
                server, ready, done = self.start_server(f"server-{name}-{start}", onnx, config,
                                                        cache)
                metrics = server.scrape()
                compile_s = sum(v for k, v in metrics.items()
                                if k.startswith("nimble_compile_duration_seconds_sum"))
                hits = sum(v for k, v in metrics.items()
                           if k.startswith("nimble_executable_cache_hits_total"))
                rows.append({"model": model, "start": start, "ready_s": ready,
                             "specialized_s": done, "compile_seconds_metric": compile_s,
                             "cache_hits": hits, "command": cmdline(server.command())})
                print(f"  {model} {start}: READY after {ready:.2f} s, specialized after "
                      f"{done:.2f} s (compile metric {compile_s:.2f} s, cache hits {hits:.0f})",
                      flush=True)
                server.stop()
            if rows[-1]["cache_hits"] < 1:
                raise StepFailed(f"{model}: the restart did not load from --cache-dir")
        benchlib.write_json(self.out("server_cold.json"), {
            "benchmark": "server_cold", "meta": benchlib.meta(self.args.command),
            "config": self.config("padding"), "rows": rows})

    def grpc_roundtrip_step(self):
        binary = self.args.grpc_bench or os.path.join(os.path.abspath(self.args.build_dir),
                                                      "bench", "bench_grpc_roundtrip")
        out = self.out("grpc_roundtrip.json")
        cmd = [binary, "--benchmark_min_time=2", "--benchmark_format=console",
               f"--benchmark_out={out}", "--benchmark_out_format=json"]
        run(cmd, self.log)
        with open(out) as f:
            report = json.load(f)
        report["bench"] = {"meta": benchlib.meta(self.args.command), "command": cmdline(cmd)}
        benchlib.write_json(out, report)

    def prime(self, server, requests):
        """Unmeasured requests of every length first: oneDNN creates its shape-specialized
        primitives on a length's first calls (up to 8 per kernel, ~100 ms each for BERT-base),
        which would otherwise land in the first levels of a sweep."""
        cmd = [self.load_bin, "--url", f"127.0.0.1:{server.grpc}", "--model", "bert",
               "--seq-len", "uniform:1,128", *BERT_INTS, "--seed", "2", "--quiet",
               "--concurrency", "8", "--warmup", "0s", "--requests", str(requests)]
        run(cmd, self.log, timeout=600)

    def load_cmd(self, server, extra, out_json):
        return [self.load_bin, "--url", f"127.0.0.1:{server.grpc}", "--model", "bert",
                "--seq-len", SEQ_LEN, *BERT_INTS, "--metrics-url",
                f"http://127.0.0.1:{server.metrics}/metrics", "--seed", "1", "--quiet",
                *extra, "--json", out_json]

    def finish_load(self, server, report, command, out_json):
        """Checks a nimble-load report, adds the commands and config, writes it to out_json."""
        failed = sum(level["failed"] for level in report["levels"])
        completed = sum(level["completed"] for level in report["levels"])
        if completed == 0:
            raise StepFailed(f"no request succeeded: {command}")
        report["bench"] = {"meta": benchlib.meta(self.args.command), "command": command,
                           "server_command": cmdline(server.command()),
                           "config": json.load(open(os.path.join(server.repo, "bert",
                                                                 "config.json")))}
        benchlib.write_json(out_json, report)
        print(f"  {completed} requests, {failed} failed", flush=True)

    def load(self, server, extra, out_json):
        """One nimble-load run (a closed-loop sweep) after priming the server."""
        cmd = self.load_cmd(server, extra, out_json)
        self.prime(server, 2000 if server.small else 128)
        run(cmd, self.log, timeout=1200)
        with open(out_json) as f:
            report = json.load(f)
        self.finish_load(server, report, cmdline(cmd), out_json)

    def wait_idle(self, server, timeout=300):
        """Until the server has no request queued or running (nimble_pending_requests 0)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = sum(v for k, v in server.scrape().items()
                          if k.startswith("nimble_pending_requests"))
            if pending == 0:
                return
            time.sleep(0.2)
        raise StepFailed(f"nimble-server ({server.repo}) still busy {timeout} s after a level")

    def open_loop(self, server, rates, flags, out_json):
        """One nimble-load run per rate, the server idle before each: an overloaded level's
        backlog would otherwise be the next level's queue (nimble-load sweeps back to back)."""
        self.prime(server, 2000 if server.small else 128)
        merged = None
        for rate in rates:
            cmd = self.load_cmd(server, ["--rate", f"{rate:g}", *flags], out_json)
            self.wait_idle(server)
            run(cmd, self.log, timeout=1200)
            with open(out_json) as f:
                report = json.load(f)
            if merged is None:
                merged = report
            else:
                merged["levels"] += report["levels"]
        template = cmdline(self.load_cmd(server, ["--rate", "RATE", *flags], out_json))
        self.finish_load(server, merged, f"for RATE in {' '.join(f'{r:g}' for r in rates)}; "
                         f"do {template}; done  # the server idle before each", out_json)

    def window_flags(self, warmup, window, windows):
        return ["--warmup", warmup, "--window", window, "--max-windows", str(windows)]

    def load_models(self):
        """Per model of the load steps: (name, ONNX, server threads, nimble-load window flags,
        open-loop rate step as a fraction of the no-batching capacity, number of rates)."""
        # Every server leaves a core to the load generator: its open-loop scheduler keeps a
        # core busy, and a 2-thread arena on 2 cores then stalls on the descheduled worker at
        # every kernel (BERT-base's infer went from ~25 ms to ~600 ms). BERT-base gets longer
        # windows and its open loop stops at 1.2x capacity (an overloaded level's backlog of
        # multi-second batches takes long to drain).
        models = [("small", self.bert_small, None, self.window_flags("1s", "2s", 3), 0.25, 6)]
        if not self.args.no_base_load:
            models.append(("base", self.bert_base, None, self.window_flags("2s", "3s", 3),
                           0.3, 4))
        return models

    def concurrency_step(self):
        shutil.rmtree(self.load_cache, ignore_errors=True)
        for name, onnx, threads, flags, _, _ in self.load_models():
            for mode in ("padding", "none"):
                server, _, _ = self.start_server(f"concurrency-{name}-{mode}", onnx,
                                                 self.config(mode, threads), self.load_cache)
                self.load(server, ["--concurrency", "1:16:x2", *flags],
                          self.out(f"concurrency_{name}_{mode}.json"))
                server.stop()

    def batching_step(self):
        for name, onnx, threads, flags, rate_step, levels in self.load_models():
            # Offered rates step by a fraction of the model's no-batching capacity (its best
            # closed-loop throughput in the concurrency step), so the sweep crosses that
            # capacity on any machine.
            with open(self.out(f"concurrency_{name}_none.json")) as f:
                capacity = max(lv["throughput_infer_per_s"] for lv in json.load(f)["levels"])
            step = capacity * rate_step
            step = round(step, -1) if step >= 20 else max(1.0, round(step))
            rates = [step * k for k in range(1, levels + 1)]
            print(f"  {name}: no-batching capacity {capacity:.1f}/s; rates {rates}", flush=True)
            for mode in ("padding", "identical", "none"):
                server, _, _ = self.start_server(f"batching-{name}-{mode}", onnx,
                                                 self.config(mode, threads), self.load_cache)
                self.open_loop(server, rates, ["--arrivals", "poisson", "--timeout", "30s",
                                               *flags], self.out(f"batching_{name}_{mode}.json"))
                server.stop()

    def report_step(self):
        run([PYTHON, os.path.join(BENCH, "report.py"), "--results", self.results], self.log)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build-dir", default="build")
    p.add_argument("--nimblec", default="", help="default BUILD/compiler/nimblec")
    p.add_argument("--server", default="", help="default BUILD/server/nimble-server")
    p.add_argument("--load", default="", help="default BUILD/loadtest/nimble-load")
    p.add_argument("--grpc-bench", default="", help="default BUILD/bench/bench_grpc_roundtrip")
    p.add_argument("--models", default="", help="BERT-base and LSTM (default BUILD/models)")
    p.add_argument("--models-small", default="", help="small BERT (default BUILD/models-small)")
    p.add_argument("--work", default="", help="logs, repositories, caches (BUILD/bench-work)")
    p.add_argument("--results", default=os.path.join(BENCH, "results"))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--bert-seqs", default="16,32,64,128,256,384")
    p.add_argument("--bert-iterations", type=int, default=10)
    p.add_argument("--lstm-seqs", default="16,32,64,128,256")
    p.add_argument("--server-threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                   help="threads of the server's one CPU instance (the client needs the rest)")
    p.add_argument("--max-queue-delay-us", type=int, default=500)
    p.add_argument("--no-base-load", action="store_true",
                   help="skip the BERT-base closed-loop sweep (the slowest load run)")
    p.add_argument("--server-timeout", type=float, default=300)
    p.add_argument("--only", default="", help="comma-separated steps")
    p.add_argument("--skip", default="", help="comma-separated steps")
    args = p.parse_args()
    args.command = "make bench"
    only = [s for s in args.only.split(",") if s]
    skip = [s for s in args.skip.split(",") if s]
    for s in only + skip:
        if s not in STEPS + ["report"]:
            p.error(f"unknown step '{s}' (steps: {', '.join(STEPS)})")
    suite = Suite(args)
    os.makedirs(suite.work, exist_ok=True)
    os.makedirs(suite.results, exist_ok=True)
    for binary in (suite.nimblec, suite.server_bin, suite.load_bin):
        if not os.access(binary, os.X_OK):
            print(f"run_all: {binary} is missing (build it first: `make bench` does)",
                  file=sys.stderr)
            return 1
    # SIGTERM (make killed, a CI timeout) unwinds like Ctrl-C, so the servers get stopped.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        return run_steps(suite, args, only, skip)
    finally:
        for server in list(LIVE_SERVERS):
            server.stop(check=False)


def run_steps(suite, args, only, skip):
    timings = {}
    total = time.monotonic()
    for step in STEPS:
        if (only and step not in only) or step in skip:
            continue
        print(f"== {step}", flush=True)
        start = time.monotonic()
        try:
            getattr(suite, f"{step}_step")()
        except StepFailed as e:
            print(f"\nrun_all: step '{step}' FAILED: {e}\n(log: {suite.log})", file=sys.stderr)
            return 1
        timings[step] = time.monotonic() - start
        print(f"== {step}: {timings[step]:.0f} s", flush=True)
    timings["total"] = time.monotonic() - total
    if not only:  # a partial run keeps the full run's durations
        benchlib.write_json(suite.out("run.json"), {
            "benchmark": "run", "meta": benchlib.meta(args.command), "step_seconds": timings})
    if (not only or "report" in only) and "report" not in skip:
        print("== report", flush=True)
        try:
            suite.report_step()
        except StepFailed as e:
            print(f"\nrun_all: step 'report' FAILED: {e}", file=sys.stderr)
            return 1
    print(f"run_all: done in {time.monotonic() - total:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
