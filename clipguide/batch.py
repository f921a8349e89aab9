"""Runs of many images: prompt files (resumable: finished images are skipped) and `--resume`."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .api import Job, Session, StopFlag, _stderr, state_path_for
from .errors import Interrupted, RunFailed, UserError
from .outputs import load_state, read_recipe, sweep_temps
from .prompts import read_batch, slug
from .settings import Settings


@dataclass
class BatchSummary:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)  # one per line handled here (the manifest's rows)

    def line(self) -> str:
        return (f"batch: {len(self.done)} made, {len(self.skipped)} already done, "
                f"{len(self.bad_lines)} bad lines, {len(self.failed)} failed")


@dataclass
class LineJob:
    number: int
    job: Job | None  # None for a bad line
    error: str | None = None


def batch_lines(s: Settings) -> list[LineJob]:
    """Every prompt line of the batch file, good or bad.  Line n gets seed `seed + n` (seed 0 if
    not given), so a re-run names and makes the same images."""
    base = s.seed or 0
    out_dir = Path(s.output_dir)
    lines = []
    for line in read_batch(s.batch):
        if line.error:
            lines.append(LineJob(line.number, None, f"{s.batch}:{line.number}: {line.error}"))
            continue
        seed = base + line.number
        out = out_dir / f"{line.number:04d}-{slug(line.text, 50)}-{seed}.png"
        frames = Path(s.frames_dir) / out.stem if s.frames_dir else None
        lines.append(LineJob(line.number, Job(line.text, seed, out, frames, None)))
    return lines


def run_batch(settings: Settings, log: Callable[[str], None] = _stderr, session: Session | None = None,
              rank: int = 0, world: int = 1, batch_size: int = 1) -> BatchSummary:
    """Make one image per good line of `settings.batch`, skipping images that already exist.

    With `world` > 1 this process takes every `world`-th line (good or bad) from `rank`, so the
    shards together handle every line exactly once.  `batch_size` images are optimised together
    (one batch of latents); 0 picks the most (up to 8) that the memory estimate says fit."""
    summary = BatchSummary()
    mine = batch_lines(settings)[rank::world]
    if Path(settings.output_dir).is_dir():
        sweep_temps(settings.output_dir)

    def record(lj: LineJob, status: str, seconds: float = 0.0, note: str | None = None):
        job = lj.job
        summary.records.append({"line": lj.number, "prompt": job.prompt if job else None,
                                "seed": job.seed if job else None, "output": str(job.output) if job else None,
                                "rank": rank, "seconds": round(seconds, 3), "status": status,
                                **({"error": note} if note else {})})

    todo = []
    for lj in mine:
        if lj.job is None:
            log(f"skipping bad line {lj.error}")
            summary.bad_lines.append(lj.error)
            record(lj, "bad", note=lj.error)
        elif not settings.overwrite and finished(lj.job.output):
            summary.skipped.append(lj.job.output)
            record(lj, "exists")
        else:
            todo.append(lj)
    if todo:
        session = session or Session(settings, log)
        size = batch_size if batch_size > 0 else session.fitting_batch(8)
        if size > 1:
            log(f"optimising {size} images at a time")
    flag = StopFlag()
    with flag.installed():
        for n in range(0, len(todo), size if todo else 1):
            chunk = todo[n:n + size]
            jobs = [lj.job for lj in chunk]
            for k, job in enumerate(jobs, n + 1):
                log(f"[{k}/{len(todo)}] {job.prompt} -> {job.output}")
            t0 = time.perf_counter()
            try:
                result = session.run(jobs, resume=_matching_state(state_path_for(jobs[0].output), jobs), stop=flag,
                                     replace=True)  # finished images were skipped above; these are partial
                summary.done.extend(result.outputs)
                for lj in chunk:
                    record(lj, "done", (time.perf_counter() - t0) / len(chunk))
            except RunFailed as e:
                log(f"failed: {jobs[0].output}{' ...' if len(jobs) > 1 else ''}: {e}")
                for lj in chunk:
                    summary.failed.append(f"{lj.job.output}: {e}")
                    record(lj, "failed", (time.perf_counter() - t0) / len(chunk), str(e))
            except Interrupted:
                log(summary.line() + " (interrupted; run the same command again to continue)")
                raise
    return summary


def finished(path: Path) -> bool:
    """An image is finished when it exists and is not the partial picture of an interrupted run."""
    if not path.exists():
        return False
    try:
        recipe = read_recipe(path)
    except Exception:  # not a PNG of ours: it is the user's, leave it alone
        return True
    return recipe is None or "steps_done" not in recipe


def _matching_state(path: Path, jobs: list[Job]) -> dict | None:
    """A state file left by an interrupted run of these same jobs, if any (then they resume)."""
    if not path.exists():
        return None
    try:
        state = load_state(path)
    except UserError:
        return None
    if [(j["prompt"], j["seed"]) for j in state.get("jobs", [])] == [(j.prompt, j.seed) for j in jobs]:
        return state
    return None


# Settings added after the state format was fixed, with the value that means "off".
ADDED_SINCE = {"negative": "", "contrast": ""}


def resume_settings(path: str | Path, overrides: dict) -> tuple[Settings, list[Job], dict]:
    """Settings and jobs of an interrupted run from its state file (`--steps` etc. may override)."""
    state = load_state(path)
    fields = {f.name for f in dataclasses.fields(Settings)}
    saved = ADDED_SINCE | state["settings"]  # a state from before an option existed ran without it
    s = Settings(**{k: v for k, v in saved.items() if k in fields})
    s = dataclasses.replace(s, overwrite=True, resume=str(path), **overrides)
    jobs = [Job(j["prompt"], j["seed"], Path(j["output"]), j["frames_dir"] and Path(j["frames_dir"]),
                j["video"] and Path(j["video"])) for j in state["jobs"]]
    if state["step"] >= s.steps:
        raise UserError(f"{path} is already at step {state['step']} of {s.steps}", "pass a larger --steps to go on")
    return s, jobs, state
