"""`python -m clipguide.bench --startup`: the README's first command, its wall time phase by phase.

Runs `clipguide "a red circle on a blue background" --model tiny` (with a fixed seed, in a temporary
folder, its own model cache warmed by one untimed run first, as a user's second picture would find
it) in fresh processes, and splits each one's wall time into: interpreter start and the command
line's own import, the imports a run needs (torch, open_clip, taming, ...), model loading, the
checksums of the weights, the memory probe, the rest of setting up the session, the run (search,
steps, the PNG) and whatever is left (exit).  The driver is plain `python -c` code, so that nothing
of the benchmark is imported into the process it measures.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = ["a red circle on a blue background", "--model", "tiny"]

DRIVER = r"""
import json, sys, time
now = lambda: (time.perf_counter(), time.process_time())
t0 = now()
phases = {}
import clipguide.cli as cli
try:  # Typer imports its pydantic adapters when it parses the first argument: the command line's own cost
    import typer._adapters
except ImportError:
    pass
t1 = now()
phases["command line import"] = [t1[0] - t0[0], t1[1] - t0[1]]
import clipguide.run as run, clipguide.models.factory as factory, clipguide.models.clip as mclip
import clipguide.models.registry as registry
t2 = now()
phases["imports for a run"] = [t2[0] - t1[0], t2[1] - t1[1]]
spent = {k: [0.0, 0.0] for k in ["command line work", "model look-up", "model loading", "checksums", "memory probe", "session set-up", "the run"]}
stack = []
def timed(owner, name, phase):  # a phase's time less the phases timed inside it
    fn = getattr(owner, name)
    def wrapper(*a, **k):
        t = now()
        stack.append([0.0, 0.0])
        try:
            return fn(*a, **k)
        finally:
            inner, took = stack.pop(), [b - a for a, b in zip(t, now())]
            for i in (0, 1):
                spent[phase][i] += took[i] - inner[i]
                if stack:
                    stack[-1][i] += took[i]
    setattr(owner, name, wrapper)
for owner in (factory, mclip, registry):
    if hasattr(owner, "checksum"):
        timed(owner, "checksum", "checksums")
timed(cli, "_vqgan_at_hand", "model look-up")  # before torch is imported
timed(run, "load_models", "model loading")
timed(run, "estimator", "memory probe")
timed(run.Session, "__init__", "session set-up")
timed(run.Session, "run", "the run")
def command(args):  # parsing, plans, output checks and writing: what no other phase names
    try:
        return cli.app(args, standalone_mode=False)
    except SystemExit as e:
        return e.code
holder = type("holder", (), {"command": staticmethod(command)})
timed(holder, "command", "command line work")
code = holder.command(sys.argv[1:])
phases.update(spent)
phases["in-process total"] = [b - a for a, b in zip(t0, now())]
print("STARTUP " + json.dumps(phases), file=sys.stderr)
cli.leave(code)  # as the console script leaves
"""


def run_once(folder: Path, extra: list[str], env: dict) -> dict:
    cmd = [sys.executable, "-c", DRIVER, *COMMAND, "--seed", "0", "-o", str(folder / "tiny.png"), "--overwrite",
           *extra]
    load = os.getloadavg()[0]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=folder, env=env)
    wall = time.perf_counter() - t
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("STARTUP ")]
    if done.returncode or not lines:
        raise RuntimeError(f"the command failed:\n{done.stderr[-2000:]}")
    phases = json.loads(lines[-1][len("STARTUP "):])
    inside = phases.pop("in-process total")
    phases["interpreter start and exit"] = [wall - inside[0], cpu - inside[1]]
    return {"wall": wall, "cpu": cpu, "phases": phases, "load": [load, os.getloadavg()[0]]}


def measure(n: int = 5, extra: list[str] | None = None, log=print) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="clipguide-startup-") as tmp:
        folder = Path(tmp)
        env = os.environ | {"CLIPGUIDE_CACHE": str(folder / "cache")}
        run_once(folder, extra or [], env)  # warms the checksum memo, as a user's second run finds it
        runs = []
        for i in range(n):
            runs.append(run_once(folder, extra or [], env))
            log(f"  run {i + 1}/{n}: {runs[-1]['wall']:.2f} s wall, load {runs[-1]['load'][0]:.2f}")
        return runs


def table(runs: list[dict]) -> str:
    """Each phase's wall and CPU seconds: median (min-max) over the runs."""
    def cell(vals):
        return f"{statistics.median(vals):.2f} ({min(vals):.2f}-{max(vals):.2f})"

    first = runs[0]["phases"]
    names = ["interpreter start and exit"] + [k for k in first if k != "interpreter start and exit"]
    lines = ["| phase | wall s | CPU s |", "|---|---|---|"]
    for name in names:
        lines.append(f"| {name} | {cell([r['phases'][name][0] for r in runs])} "
                     f"| {cell([r['phases'][name][1] for r in runs])} |")
    lines.append(f"| **total** | **{cell([r['wall'] for r in runs])}** | **{cell([r['cpu'] for r in runs])}** |")
    loads = [v for r in runs for v in r["load"]]
    return "\n".join(lines) + f"\n\n{len(runs)} runs; 1-minute load {min(loads):.2f}-{max(loads):.2f}"


def main(args) -> dict:
    runs = measure(args.pairs or 5, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: clipguide {' '.join(COMMAND)}\n")
    print(table(runs))
    return {"runs": runs}
