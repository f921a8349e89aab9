"""Runs of many images: prompt files (resumable: finished images are skipped) and `--resume`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .api import Job, Session, StopFlag, _stderr, state_path_for
from .errors import Interrupted, RunFailed, UserError
from .outputs import load_state
from .prompts import read_batch, slug
from .settings import Settings


@dataclass
class BatchSummary:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"batch: {len(self.done)} made, {len(self.skipped)} already done, "
                f"{len(self.bad_lines)} bad lines, {len(self.failed)} failed")


def batch_jobs(s: Settings) -> tuple[list[Job], list[str]]:
    """(jobs for the good lines, messages for the bad ones).  Line n gets seed `seed + n`
    (seed 0 if not given), so a re-run names and makes the same images."""
    jobs, bad = [], []
    base = s.seed or 0
    out_dir = Path(s.output_dir)
    for line in read_batch(s.batch):
        if line.error:
            bad.append(f"{s.batch}:{line.number}: {line.error}")
            continue
        seed = base + line.number
        out = out_dir / f"{line.number:04d}-{slug(line.text, 50)}-{seed}.png"
        frames = Path(s.frames_dir) / out.stem if s.frames_dir else None
        jobs.append(Job(line.text, seed, out, frames, None))
    return jobs, bad


def run_batch(settings: Settings, log: Callable[[str], None] = _stderr, session: Session | None = None,
              select: Callable[[list[Job]], list[Job]] | None = None) -> BatchSummary:
    """Make one image per good line of `settings.batch`, skipping images that already exist."""
    summary = BatchSummary()
    jobs, summary.bad_lines = batch_jobs(settings)
    for msg in summary.bad_lines:
        log(f"skipping bad line {msg}")
    if select is not None:
        jobs = select(jobs)
    todo = []
    for job in jobs:
        if job.output.exists() and not settings.overwrite and not state_path_for(job.output).exists():
            summary.skipped.append(job.output)
        else:
            todo.append(job)
    session = session or Session(settings, log)
    flag = StopFlag()
    with flag.installed():
        for n, job in enumerate(todo, 1):
            log(f"[{n}/{len(todo)}] {job.prompt} -> {job.output}")
            try:
                resume = _matching_state(state_path_for(job.output), job)
                result = session.run([job], resume=resume, stop=flag)
                summary.done.extend(result.outputs)
            except RunFailed as e:
                log(f"failed: {job.output}: {e}")
                summary.failed.append(f"{job.output}: {e}")
            except Interrupted:
                log(summary.line() + " (interrupted; run the same command again to continue)")
                raise
    return summary


def _matching_state(path: Path, job: Job) -> dict | None:
    """A state file left by an interrupted run of this same job, if any (then it resumes)."""
    if not path.exists():
        return None
    try:
        state = load_state(path)
    except UserError:
        return None
    jobs = state.get("jobs", [])
    if len(jobs) == 1 and jobs[0]["prompt"] == job.prompt and jobs[0]["seed"] == job.seed:
        return state
    return None


def resume_settings(path: str | Path, overrides: dict) -> tuple[Settings, list[Job], dict]:
    """Settings and jobs of an interrupted run from its state file (`--steps` etc. may override)."""
    state = load_state(path)
    fields = {f.name for f in dataclasses.fields(Settings)}
    s = Settings(**{k: v for k, v in state["settings"].items() if k in fields})
    s = dataclasses.replace(s, overwrite=True, resume=str(path), **overrides)
    jobs = [Job(j["prompt"], j["seed"], Path(j["output"]), j["frames_dir"] and Path(j["frames_dir"]),
                j["video"] and Path(j["video"])) for j in state["jobs"]]
    if state["step"] >= s.steps:
        raise UserError(f"{path} is already at step {state['step']} of {s.steps}", "pass a larger --steps to go on")
    return s, jobs, state
