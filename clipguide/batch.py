"""Runs of many images: prompt files (resumable: finished images are skipped), their shards across
processes, GPUs and machines, the manifest, and `--resume` of a state file.

Lines are split round-robin by position (rank r of N takes lines r, r+N, ...), so every line is
done exactly once; a restarted rank skips the images that already exist.  Under torchrun each rank
works on `cuda:LOCAL_RANK` (or the CPU), and rank 0 gathers one JSONL manifest through
torch.distributed's store; the ranks share no tensors, so no collective backend is needed.  Each
process writes its manifest as lines finish, so an interruption never loses the record."""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable

from .errors import Interrupted, RunFailed, UserError
from .files import sweep_temps, write_text
from .options import BY_NAME, FREE, SEED_MAX
from .outputs.pictures import read_recipe
from .outputs.state import carried, load_state, saved_settings
from .plan import Job, Plan, Shard, batch_output, check_outputs, make_plan, state_path_for
from .prompts import read_batch
from .run import Session, StopFlag, _stderr
from .settings import check_value


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


def batch_lines(plan: Plan) -> list[LineJob]:
    """Every prompt line of the batch file, good or bad.  Line n gets seed `seed + n` (seed 0 if
    not given), so a re-run names and makes the same images."""
    s = plan.settings
    lines = []
    for line in read_batch(s.batch):
        if line.error:
            lines.append(LineJob(line.number, None, f"{s.batch}:{line.number}: {line.error}"))
            continue
        seed = (s.seed or 0) + line.number
        if seed > SEED_MAX:
            raise UserError(f"{s.batch}:{line.number}: its seed --seed + {line.number} is past {SEED_MAX}",
                            f"give a --seed of at most {SEED_MAX - line.number}")
        out = batch_output(s.output_dir, line.number, line.text, seed)
        frames = Path(s.frames_dir) / out.stem if s.frames_dir else None
        lines.append(LineJob(line.number, plan.job(line.text, seed, out, frames, stages=line.stages)))
    return lines


def manifest_path(output_dir: str | Path, shard: Shard, gathered: bool = False) -> Path:
    """manifest.jsonl for a whole batch (one process, or gathered by torchrun's rank 0); each shard
    of several writes manifest-K-of-N.jsonl as its lines finish."""
    name = "manifest.jsonl" if shard.world == 1 or gathered else f"manifest-{shard.rank}-of-{shard.world}.jsonl"
    return Path(output_dir) / name


def write_manifest(path: Path, records: list[dict]) -> Path:
    records = sorted(records, key=lambda r: r["line"])
    return write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def run_batch(plan: Plan, log: Callable[[str], None] = _stderr, session: Session | None = None,
              shard: Shard = Shard(0, 1), manifest: Path | None = None, stop: Callable[[], bool] | None = None,
              on_step: Callable | None = None, progress: bool | None = None) -> BatchSummary:
    """Make one image per good line of the plan's batch file, skipping images that already exist.

    This process takes every `shard.world`-th line (good or bad) from `shard.rank`, so the shards
    together handle every line exactly once.  `plan.batch_size` images are optimised together (one
    batch of latents); 0 picks the most (up to 8) that the memory estimate says fit.  With
    `manifest`, the records so far are written there after every line.  `stop` (default: Ctrl-C and
    SIGTERM) stops it like Ctrl-C; `on_step` and `progress` are those of `Session.run`."""
    s, summary = plan.settings, BatchSummary()
    mine = batch_lines(plan)[shard.rank::shard.world]
    if Path(s.output_dir).is_dir():
        sweep_temps(s.output_dir)

    def record(lj: LineJob, status: str, seconds: float = 0.0, note: str | None = None):
        job = lj.job
        summary.records.append({"line": lj.number, "prompt": job.prompt if job else None,
                                "seed": job.seed if job else None, "output": str(job.output) if job else None,
                                "rank": shard.rank, "seconds": round(seconds, 3), "status": status,
                                **({"error": note} if note else {})})
        if manifest is not None:
            write_manifest(manifest, summary.records)

    todo = []
    for lj in mine:
        if lj.job is None:
            log(f"skipping bad line {lj.error}")
            summary.bad_lines.append(lj.error)
            record(lj, "bad", note=lj.error)
        elif not s.overwrite and finished(lj.job.output):
            summary.skipped.append(lj.job.output)
            record(lj, "exists")
        else:
            todo.append(lj)
    if todo:
        session = session or Session(plan, log)
        _run_lines(session, todo, plan.batch_size or session.fitting_batch(8), summary, record, log,
                   dict(stop=stop, on_step=on_step, progress=progress))
    return summary


def _run_lines(session: Session, todo: list[LineJob], size: int, summary: BatchSummary, record, log,
               run: dict) -> None:
    if size > 1:
        log(f"optimising {size} images at a time")
    flag = run["stop"] or StopFlag()
    with flag.installed() if run["stop"] is None else contextlib.nullcontext():
        for n in range(0, len(todo), size):
            chunk = todo[n:n + size]
            jobs = [lj.job for lj in chunk]
            for k, job in enumerate(jobs, n + 1):
                log(f"[{k}/{len(todo)}] {job.prompt} -> {job.output}")
            t0 = time.perf_counter()
            try:  # finished images were skipped; these are partial or new
                state = _matching_state(state_path_for(jobs[0].output), session.recipes(jobs), log)
                result = session.run(jobs, resume=state, stop=flag, replace=True, on_step=run["on_step"],
                                     progress=run["progress"])
                summary.done.extend(result.outputs)
                for lj in chunk:
                    record(lj, "done", (time.perf_counter() - t0) / len(chunk))
            except RunFailed as e:
                log(f"failed: {jobs[0].output}{' ...' if len(jobs) > 1 else ''}: {e}")
                for lj in chunk:
                    summary.failed.append(f"{lj.job.output}: {e}")
                    record(lj, "failed", (time.perf_counter() - t0) / len(chunk), str(e))
            except Interrupted:
                for lj in chunk:
                    record(lj, "interrupted", (time.perf_counter() - t0) / len(chunk))
                log(summary.line() + " (interrupted; run the same command again to continue)")
                raise


def finished(path: Path) -> bool:
    """An image is finished when it exists and is not the partial picture of an interrupted run."""
    if not path.exists():
        return False
    try:
        recipe = read_recipe(path)
    except Exception:  # not a PNG of ours: it is the user's, leave it alone
        return True
    return recipe is None or "steps_done" not in recipe


def _matching_state(path: Path, recipes: list[dict], log) -> dict | None:
    """The state file an interrupted run of these same pictures left, to go on from: only when the
    recipes its pictures were drawn with are theirs (`recipes`: prompt, seed, every setting, the
    models, input pictures and batch -- everything that shapes them), so the picture comes out as an
    uninterrupted run's.  Otherwise None, and one line says why the line starts afresh."""
    if not path.exists():
        return None
    try:
        state = load_state(path)
    except UserError as e:
        log(f"note: {e.problem}; starting its line afresh")
        return None
    other = _difference(state.get("recipes"), recipes)
    if other:
        log(f"note: {path} was drawn {other}; starting its line afresh")
        return None
    log(f"going on from step {state['step']} of {path}")
    return state


def _difference(saved: list | None, recipes: list[dict]) -> str | None:
    """How the recipes a state records differ from `recipes`, in words; None if they are the same."""
    if not isinstance(saved, list) or len(saved) != len(recipes) or not all(isinstance(r, dict) for r in saved):
        return "by an older clipguide or for other lines (it records no recipes of these pictures)"
    for old, new in zip(saved, recipes):
        for key in sorted(old.keys() | new.keys()):
            if old.get(key) != new.get(key):
                return f"with {key} {_brief(old.get(key))}, not {_brief(new.get(key))}"
    return None


def _brief(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 40 else text[:37] + "..."


# -- --resume -----------------------------------------------------------------------------------
def resume_plan(path: str | Path, given: dict) -> tuple[Plan, list[Job], dict]:
    """The plan and jobs of an interrupted run from its state file.  Of the options given with
    --resume, those that say how or where to run (--steps, -o, --device, ...) are used; one that
    would change what is drawn is refused with one line, never silently ignored.  The files it will
    write are checked like a fresh run's: absent, or what the state's own run left there (or with
    --overwrite, given with --resume: the interrupted run's is not inherited)."""
    state = load_state(path)
    s = saved_settings(state)
    for name, value in given.items():
        o = BY_NAME[name]
        check_value(o, value)
        if o.on_resume != FREE and value != getattr(s, name):
            raise UserError(f"{o.flag if not o.positional else 'a prompt'} cannot change on --resume: the state "
                            f"continues the run it was made with", f"drop {o.flag if not o.positional else 'the prompt'}"
                            " (or start a new run without --resume)")
    s = s.replace(**({"overwrite": False} | {k: v for k, v in given.items() if BY_NAME[k].on_resume == FREE}),
                  resume=str(path))
    plan = make_plan(s)
    jobs = [plan.job(j["prompt"], j["seed"], Path(j["output"]), j["frames_dir"] and Path(j["frames_dir"]),
                     j["video"] and Path(j["video"])) for j in state["jobs"]]
    if given.get("output"):
        if state.get("kind") == "restyle":
            raise UserError("-o names a picture; a restyled video goes on into its own video file", "drop -o")
        if len(jobs) > 1:
            raise UserError(f"-o names one picture, but {path} holds {len(jobs)}", "drop -o")
        jobs = [Job(jobs[0].prompt, jobs[0].stages, jobs[0].seed, Path(given["output"]), jobs[0].frames_dir,
                    jobs[0].video)]
    if state.get("kind") != "restyle" and state["step"] >= s.steps:
        raise UserError(f"{path} is already at step {state['step']} of {s.steps}", "pass a larger --steps to go on")
    check_outputs(jobs, s, s.overwrite, 0 if state.get("kind") == "restyle" else int(state["step"]),
                  carried(state).own)
    return plan, jobs, state


# -- torchrun -----------------------------------------------------------------------------------
def device_for(shard: Shard, device: str) -> str:
    """Under torchrun, 'auto' and 'cuda' mean this rank's own GPU."""
    import torch

    if shard.torchrun and device in ("auto", "cuda") and torch.cuda.is_available():
        torch.cuda.set_device(shard.local_rank)
        return f"cuda:{shard.local_rank}"
    return device


def _store(shard: Shard):
    """torch.distributed's key-value store of this torchrun job (the agent's, when it serves one).

    Keys carry the restart count: a restarted group must not read what a killed one wrote."""
    import torch.distributed as dist

    store, _, _ = next(dist.rendezvous("env://", shard.rank, shard.world))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"clipguide/manifest/{attempt}/", store)


def gather(shard: Shard, records: list[dict], output_dir: str | Path) -> Path | None:
    """Under torchrun, rank 0 gathers every rank's records into one manifest (the others return None);
    otherwise each process has written its own as it went."""
    if not (shard.torchrun and shard.world > 1):
        return manifest_path(output_dir, shard)
    store = _store(shard)
    store.set(str(shard.rank), json.dumps(records))
    if shard.rank != 0:
        return None
    keys = [str(r) for r in range(shard.world)]
    store.wait(keys, timedelta(hours=24))  # ranks finish their shares at different times
    return write_manifest(manifest_path(output_dir, shard, gathered=True),
                          [r for key in keys for r in json.loads(store.get(key))])
