"""The web UI's runs, made through the same Python API as the command line: `make_plan` checks what
was asked (a `UserError` is the one line the page shows), `Session.run` / `run_batch` /
`resume_plan` do the work, with the same outputs, recipes, no-clobber rule and state files.

Every file a run writes lands in the output folder under a name made here (`<prompt>-<seed>.png`, a
video beside it, `batch-<time>/` for a prompt file), never one taken from the request; nothing is
ever replaced.  The models of the last run stay loaded, so the next run with the same models starts
at once.  Preparing a run only checks it (no torch); the worker thread runs it."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..files import EXISTS_FIX
from ..plan import Job, Plan, check_outputs, make_plan
from ..prompts import read_batch
from ..options import BY_NAME
from ..settings import Settings, check_needs
from .jobs import QUEUED, RUNNING

NEW_NAME = "change the seed or the prompt: the web UI never replaces a file"


WATCHABLE = 4.0  # seconds: the least a run's video lasts unless the form's save-every or fps say otherwise
FRAMES = 100  # about this many frames in a video of a long run
VIDEO_DEFAULTS = {"save_every": f"with a video: steps / {FRAMES}, at least 1",
                  "fps": f"{BY_NAME['fps'].default:g}, less for a short run: a video lasts at least {WATCHABLE:g} s"}


def watchable(steps: int, given: dict) -> dict:
    """save-every and fps for a video a person can watch, where the form left them blank: about FRAMES
    frames (a frame every step of a short run), shown at the declared frame rate, or slower so the video
    lasts at least WATCHABLE seconds."""
    save_every = given["save_every"] if "save_every" in given else max(1, steps // FRAMES)
    frames = max(1, steps // max(1, save_every))  # a frame every save-every steps
    fps = given["fps"] if "fps" in given else min(BY_NAME["fps"].default, max(1.0, frames // WATCHABLE))
    return {"save_every": save_every, "fps": fps}


def _names(paths) -> str:
    return ", ".join(str(p) for p in paths)


@dataclass
class DrawWork:
    runner: "Runner"
    plan: Plan
    jobs: list[Job]
    resume: dict | None = None  # the state a resumed run goes on from
    kind: str = "draw"

    @property
    def title(self) -> str:
        return self.jobs[0].prompt

    def run(self, task) -> tuple[list[Path], str]:
        session = self.runner.session(self.plan, task.log)
        result = session.run(self.jobs, resume=self.resume, stop=task.stopped, progress=False,
                             on_step=task.live.on_step)
        outputs = result.outputs + result.videos
        return outputs, f"done in {result.seconds:.1f} s: {_names(outputs)}"


@dataclass
class BatchWork:
    runner: "Runner"
    plan: Plan
    folder: Path
    lines: int
    kind: str = "batch"
    manifest: Path = field(init=False)

    def __post_init__(self):
        self.manifest = self.folder / "manifest.jsonl"

    @property
    def title(self) -> str:
        return f"{self.lines} prompts into {self.folder.name}/"

    def run(self, task) -> tuple[list[Path], str]:
        from ..batch import run_batch

        session = self.runner.session(self.plan, task.log)
        summary = run_batch(self.plan, task.log, session=session, manifest=self.manifest, stop=task.stopped,
                            on_step=task.live.on_step, progress=False)
        return summary.done, summary.line()


class Runner:
    def __init__(self, output_dir: str | Path, uploads):
        self.output_dir = Path(output_dir)
        self.uploads = uploads
        self._models: tuple = (None, None)  # (what they are, the loaded models)
        self._batch_lock = threading.Lock()
        self.claims: dict[Path, object] = {}  # a picture's path -> the task that will write it

    # -- preparing: checks only, on the page's thread --------------------------------------------
    def draw(self, given: dict, video: bool = False) -> DrawWork:
        """One picture of `given` (Settings keywords) into the output folder, with a video beside it.
        Everything a run could fail on before its first step is checked here, before it is queued: the
        canvas, and the names of its files (on disk, or to be written by a run queued before it)."""
        if not given.get("prompt"):
            raise UserError("no prompt given", "type what to draw into the prompt box")
        given = {**given, "output_dir": str(self.output_dir)}
        given.setdefault("seed", secrets.randbelow(2**31))
        plan = make_plan(Settings(**given))
        if video:
            given["video"] = str(plan.single_jobs(given["seed"])[0].output.with_suffix(".mp4"))
            given.update(watchable(plan.settings.steps, given))
            plan = make_plan(Settings(**given))
        check_needs(plan.settings, plan.settings.given)  # a field that would change nothing: one line
        self._check_canvas(plan)
        jobs = plan.single_jobs(given["seed"])
        self._check_new(jobs, plan)
        return DrawWork(self, plan, jobs)

    def resume(self, state_path: str | Path) -> DrawWork:
        """Go on from the state file a stopped run left (a path the server found, never a request's)."""
        from ..batch import resume_plan

        plan, jobs, state = resume_plan(state_path, {})
        if state.get("kind") == "restyle":
            raise UserError("a restyled video is resumed on the command line", f"run clipguide --resume {state_path}")
        return DrawWork(self, plan, jobs, resume=state, kind="resume")

    def batch(self, text: str, given: dict, name: str = "the pasted prompts") -> BatchWork:
        """A prompt file (its text; `name`: what the user calls it) into a new folder `batch-<time>` of
        the output folder, with the form's options (not its prompt)."""
        if not text.strip():
            raise UserError("no prompts given", "upload a prompt file or paste prompts, one per line")
        given = {k: v for k, v in given.items() if k != "prompt"}
        path = self.uploads.text(text, name)
        good = [line for line in read_batch(str(path)) if not line.error]
        if not good:
            raise UserError("no usable prompt line in the prompt file", "write one prompt per line ('#': a comment)")
        checked = make_plan(Settings(**given, batch=str(path), output_dir=str(self.output_dir)))  # before a folder
        check_needs(checked.settings, checked.settings.given)  # a field that would change nothing: one line
        folder = self._batch_folder()
        return BatchWork(self, make_plan(Settings(**given, batch=str(path), output_dir=str(folder))), folder,
                         len(good))

    def again(self, task) -> DrawWork | BatchWork:
        """The work that goes on from a stopped task: a batch runs again (finished pictures are skipped,
        the interrupted one resumes from its state), a picture resumes from its state file."""
        if task.kind == "batch":
            return task.work
        if task.state_path is None:
            raise UserError("nothing to resume", "Resume goes on from a run that Stop stopped")
        if not Path(task.state_path).is_file():
            raise UserError(f"the state file {task.state_path} is gone", "start the picture again")
        return self.resume(task.state_path)

    def _check_new(self, jobs: list[Job], plan: Plan) -> None:
        try:
            check_outputs(jobs, plan.settings, overwrite=False)
        except UserError as e:
            raise (UserError(e.problem, NEW_NAME) if e.fix == EXISTS_FIX else e) from None
        for job in jobs:
            task = self.claims.get(job.output)
            if task is not None and task.status in (QUEUED, RUNNING):
                raise UserError(f"#{task.id} ({task.status}) will write {job.output.name}", NEW_NAME)

    def claim(self, task) -> None:
        """`task` will write its pictures: a later run may not be queued to write the same files."""
        for job in getattr(task.work, "jobs", ()):
            self.claims[job.output] = task

    @staticmethod
    def _check_canvas(plan: Plan) -> None:
        """The canvas a named VQGAN would draw (its factor read from its config, on the meta device): one
        line now rather than a failure in the queue.  A checkpoint path is checked when it loads."""
        import torch

        from ..models.table import HERE, find_entry, load_table
        from ..models.vqgan import read_config, vqgan_from_config
        from ..run import canvas

        s = plan.settings
        found = find_entry(load_table()["vqgan"], s.vqgan) if s.vqgan else None
        if found is None:
            return
        with torch.device("meta"):
            factor = vqgan_from_config(read_config(s.vqgan_config or HERE / found[1]["config"])).factor
        canvas(s.width, s.height, factor)

    def _batch_folder(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        with self._batch_lock:
            for n in range(1, 1000):
                folder = self.output_dir / (f"batch-{stamp}" + (f"-{n}" if n > 1 else ""))
                try:
                    folder.mkdir(parents=True)
                    return folder
                except FileExistsError:
                    continue
        raise UserError(f"cannot find a free folder name in {self.output_dir}", "try again in a second")

    # -- running: on the worker thread -------------------------------------------------------------
    def session(self, plan: Plan, log):
        """A Session of `plan`, reusing the last run's models when they are the same ones."""
        from ..run import Session

        s = plan.settings
        key = (s.vqgan, tuple(s.clip), s.vqgan_config, s.cache_dir, s.device)
        cached_key, models = self._models
        if cached_key != key:
            self._models = (None, None)  # let the old models go before loading others
            models = None
        session = Session(plan, log, models=models)
        self._models = (key, session.models)
        return session
