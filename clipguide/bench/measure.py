"""Measuring the two loops: each variant alone in a fresh process, in interleaved pairs.

A pair is one classic process and one engine process back to back (the order alternates from pair to
pair, so a drift in the machine's load hits both alike).  A process loads the models, runs `warmup`
untimed steps and `steps` timed ones, and reports the time of every step, its peak memory over the
loop, and the 1-minute load average before and after.  A variant's step time in a process is the
mean of its timed steps (so periodic costs such as frames are in it); over the pairs, the table
gives the median and the range of those, and of the per-pair ratios.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from .loops import Config, run_classic, run_engine
from .weights import Files

KINDS = ("classic", "engine")


def load_average() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _status_mb() -> dict:
    with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) / 1024 for k, v in (line.split(":", 1) for line in f) if k in ("VmRSS", "VmHWM")}


class PeakMemory:
    """Peak memory over the loop: CUDA's allocator peak, or the process's peak RSS (VmHWM reset after
    loading, Linux >= 4.0)."""

    def __init__(self, device: torch.device):
        self.device, self.base, self.kind = device, None, None

    def loaded(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base, self.kind = torch.cuda.memory_allocated(self.device) / 2**20, "cuda max_memory_allocated"
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.base, self.kind = _status_mb()["VmRSS"], "peak RSS (VmHWM reset after loading)"
        except OSError:
            self.base, self.kind = None, None

    def result(self) -> dict:
        if self.kind is None:
            return {"peak_mb": None, "models_mb": None, "peak_kind": None}
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            peak = _status_mb()["VmHWM"]
        return {"peak_mb": peak, "models_mb": self.base, "peak_kind": self.kind}


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        cpu = f"{names[0]}, {len(names)} logical CPUs" if names else cpu
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}{gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def weights_for(cfg: Config, folder: str | None, keep: list) -> Path:
    from . import weights

    if folder is None:
        tmp = tempfile.TemporaryDirectory(prefix="clipguide-bench-")
        keep.append(tmp)
        folder = tmp.name
    return weights.write(Path(folder), cfg.clip, cfg.vqgan_config, cfg.seed).root


def child(kind: str, cfg: Config, weights: Path) -> dict:
    """Run one variant in this (fresh) process; what the parent reads back."""
    from ..models.factory import resolve_device

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    load = [load_average()]
    memory = PeakMemory(device)
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "classic":
            res = run_classic(Files(weights), cfg, device, Path(tmp), loaded=memory.loaded)
        else:
            res = run_engine(Files(weights), cfg, device, Path(tmp), loaded=memory.loaded, auto=kind == "auto")
    load.append(load_average())
    return res | memory.result() | {"load": load, "threads": torch.get_num_threads(), "device": str(device)}


def spawn(kind: str, cfg: Config, weights: Path, extra_env: dict | None = None) -> dict:
    cmd = [sys.executable, "-m", "clipguide.bench", "--child", kind, "--child-config",
           json.dumps(dataclasses.asdict(cfg)), "--weights-dir", str(weights)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | (extra_env or {}))
    if done.returncode:
        raise RuntimeError(f"{kind} process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def per_image_step(res: dict, cfg: Config) -> list[float]:
    """The timed steps' seconds (warm-up steps of each image's run left out)."""
    n = res["steps_per_image"]
    runs = [res["seconds"][i:i + n] for i in range(0, len(res["seconds"]), n)]
    return [s for run in runs for s in run[cfg.warmup:]]


def summarise(res: dict, cfg: Config, kind: str, image_steps: int) -> dict:
    timed = per_image_step(res, cfg)
    step = statistics.fmean(timed)
    images = 1 if kind == "classic" else cfg.batch  # the classic loop does one image per step
    losses = res["losses"]
    return {"step_ms": 1000 * step, "step_median_ms": 1000 * statistics.median(timed),
            "images_per_hour": 3600 * images / (step * image_steps), "loss_mean": statistics.fmean(losses),
            "peak_mb": res["peak_mb"], "models_mb": res["models_mb"], "peak_kind": res["peak_kind"],
            "load": res["load"], "threads": res["threads"], "device": res["device"], "timed_steps": len(timed)}


def pairs(cfg: Config, weights: Path, n: int, image_steps: int = 500, log=print,
          kinds: tuple[str, str] = KINDS) -> dict:
    """`n` interleaved pairs of fresh processes; per-variant summaries and the per-pair ratios."""
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    for p in range(n):
        for kind in (kinds if p % 2 == 0 else kinds[::-1]):
            res = summarise(spawn(kind, cfg, weights), cfg, kind, image_steps)
            runs[kind].append(res)
            log(f"  pair {p + 1}/{n} {kind}: {res['step_ms']:.0f} ms/step, load {_fmt_load(res['load'])}")
    a, b = kinds
    ratios = [y["images_per_hour"] / x["images_per_hour"] for x, y in zip(runs[a], runs[b])]
    return {"config": dataclasses.asdict(cfg), "runs": runs, "ratios": ratios, "kinds": list(kinds)}


def _fmt_load(load: list) -> str:
    return "/".join("?" if v is None else f"{v:.2f}" for v in load)


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    """'median (min-max)'."""
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def row_line(name: str, row: dict) -> str:
    a, b = row["kinds"]
    ra, rb = row["runs"][a], row["runs"][b]
    loads = [v for r in ra + rb for v in r["load"] if v is not None]
    load = f"{min(loads):.2f}-{max(loads):.2f}" if loads else "?"

    def mem(rs):
        peaks = [r["peak_mb"] for r in rs if r["peak_mb"] is not None]
        return spread(peaks) if peaks else "-"

    diff = statistics.median(abs(x["loss_mean"] - y["loss_mean"]) / abs(x["loss_mean"]) for x, y in zip(ra, rb))
    return (f"| {name} | {spread([r['step_ms'] for r in ra])} | {spread([r['step_ms'] for r in rb])} "
            f"| **{spread(row['ratios'], '{:.2f}')}x** | {spread([r['images_per_hour'] for r in ra], '{:.1f}')} "
            f"| {spread([r['images_per_hour'] for r in rb], '{:.1f}')} | {mem(ra)} | {mem(rb)} | {load} "
            f"| {len(row['ratios'])} | {100 * diff:.1f}% |")


def table(rows: dict, header: str, kinds: tuple[str, str] = KINDS) -> str:
    a, b = kinds
    head = (f"| run | {a} ms/step | {b} ms/step | ratio | {a} img/h | {b} img/h | {a} peak MiB | {b} peak MiB "
            "| 1-min load | pairs | mean-loss diff |")
    lines = [header, "", head, "|" + "---|" * 11]
    lines += [row_line(name, row) for name, row in rows.items()]
    lines += ["", "each cell: median over the pairs (min-max); a process's ms/step is the mean of its timed steps; "
              "ratio = images/hour of the second over the first, per pair (one image: the per-step ratio); "
              "peak MiB: over the loop, each variant alone in its process"]
    return "\n".join(lines)
