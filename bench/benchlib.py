"""Helpers shared by the bench/ scripts: machine and commit description, JSON output.

Every result file carries the same "meta" block, so a figure made from it can be captioned with
the machine, the commit and the exact command that produced it.
"""
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit():
    """Short HEAD of the repository, with "-dirty" when tracked files differ from it (the
    generated report and results do not count: a run rewrites them as it goes)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    head = git("rev-parse", "--short", "HEAD").stdout.strip() or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                ":!bench/results", ":!bench/report", ":!bench/REPORT.md").stdout.strip()
    return head + ("-dirty" if dirty else "")


def load_average():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def meta(command=None):
    """Machine, commit, date and the command line (this process's unless given)."""
    if command is None:
        command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO)]
                           + sys.argv[1:])
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "commit": commit(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "load_average": load_average(),
        "python": sys.executable,
    }


def write_json(path, obj):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def p50(values):
    values = sorted(values)
    return values[len(values) // 2]
