"""The Python API: `generate(prompt, ...)` and `Session` (models loaded once, many runs).

A Session turns a plan (plan.py) into pictures: it loads the models through the factory, builds
each batch's objective, runs the pipeline, and hangs the outputs off its callback -- progress,
frames and videos, NaN checks, state files -- then writes the PNGs with their recipes.  The command
line and the web UI are thin shells over this module; nothing here knows about Typer or Gradio.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import __version__
from .callbacks import Checkpoint, FiniteCheck, Frames, Progress, chain, phase
from .errors import Interrupted, RunFailed, UserError
from .files import fingerprints
from .guide.objective import ImageTargets, build_objective, encode_texts
from .images import load_image
from .memory import available_bytes, estimator, largest_fitting
from .models.factory import autocast_dtype, load_models, resolve_device
from .outputs.frames import FrameWriter
from .outputs.pictures import save_png
from .outputs.state import Carried, carried, drawing, pack, save_state
from .outputs.video import VideoWriter
from .pipeline import MAIN, SEARCH, Pipeline
from .plan import Job, Plan, check_outputs, make_plan, may_replace, new_seed, state_path_for
from .prompts import schedule, slug
from .settings import Settings, check_needs, recipe_fields, resolve


def _stderr(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


@dataclass
class Result:
    outputs: list[Path]
    steps: int
    loss: list[float]  # per image, at the last step
    seconds: float
    videos: list[Path] = field(default_factory=list)
    recipes: list[dict] = field(default_factory=list)


class StopFlag:
    """Set by SIGINT/SIGTERM (or `set()`, e.g. a Stop button) while a run is active: the loop
    finishes its step, then saves and stops."""

    def __init__(self):
        self.signal: int | None = None

    def __call__(self) -> bool:
        return self.signal is not None

    def set(self, signum: int = signal.SIGINT) -> None:
        self.signal = signum

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handle(signum, frame):
            if self.signal is not None:  # second Ctrl-C: stop now
                signal.default_int_handler(signum, frame)
            self.signal = signum

        for s in old:
            signal.signal(s, handle)
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


@contextlib.contextmanager
def cpu_threads(n: int | None, device: torch.device):
    """torch's intra-op threads set to `n` for the block (CPU only), then put back."""
    if not n or device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _warn_oversubscribed(threads: int | None, device: torch.device, log: Callable[[str], None]) -> None:
    """A note when --threads asks for more threads than this process has CPU cores: on a 2-core machine,
    two threads per core ran a tiny picture ~10x slower than one thread per core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if threads and device.type == "cpu" and cores and threads > cores:
        log(f"note: --threads {threads} is more than the {cores} CPU cores this process may use; more threads than "
            f"cores slows a run down many times (use --threads {cores} or fewer)")


def canvas(width: int, height: int, factor: int) -> tuple[int, int]:
    """The canvas of a `width` x `height` request: each side rounded down to a multiple of the VQGAN's
    `factor`; one line when a side would be nothing."""
    fitted = width // factor * factor, height // factor * factor
    if min(fitted) < factor:
        raise UserError(f"size {width}x{height} is smaller than the VQGAN's factor {factor}",
                        f"use --width/--height of at least {factor}")
    return fitted


class Session:
    """Loaded models and a resolved plan, reused for every image of a run or a batch."""

    def __init__(self, settings: Settings | Plan, log: Callable[[str], None] = _stderr, models=None):
        """`models`: the `models` of an earlier Session with the same --vqgan, --clip, --vqgan-config,
        --cache-dir and device, reused instead of loaded again (the web UI keeps them between runs)."""
        self.plan = settings if isinstance(settings, Plan) else make_plan(settings)
        self.settings = s = self.plan.settings
        self.log = log
        self.device = resolve_device(s.device)
        _warn_oversubscribed(s.threads, self.device, log)
        with cpu_threads(s.threads, self.device):
            self.models = models or load_models(s.vqgan, s.clip, self.device, s.vqgan_config,
                                                Path(s.cache_dir) if s.cache_dir else None)
            self._canvas()
            self.estimate = estimator(self.vqgan, self.clips, s.cutn)  # probed once per session
            if s.fit:
                self._fit(self.run_batch())
            self.autocast = autocast_dtype(s.precision, self.device)
            self.image_targets = self._targets()
            self.init_latent = None
            if s.init_image:
                pic = load_image(s.init_image, "init image", size=(self.width, self.height), device=self.device)
                self.init_latent = self.vqgan.encode(pic)
        # the pictures read, as a recipe records them: --from elsewhere reads the same files, or says they changed
        self.inputs = fingerprints([s.init_image, *(p for p, _ in self.plan.image_prompts)])

    def _targets(self) -> ImageTargets:
        """Image prompts (embedded once) and noise prompts (a random embedding from each seed)."""
        pics = [(load_image(p, "image prompt", device=self.device), w) for p, w in self.plan.image_prompts]
        embeds = []
        for c in self.clips:
            noise = [torch.randn(1, c.model.visual.output_dim, generator=torch.Generator().manual_seed(seed))
                     for seed, _ in self.plan.noise_prompts]
            embeds.append([c.embed_picture(pic) for pic, _ in pics] + [n.to(self.device) for n in noise])
        return ImageTargets(embeds, [w for _, w in pics] + [w for _, w in self.plan.noise_prompts])

    @property
    def vqgan(self):
        return self.models.vqgan

    @property
    def clips(self):
        return self.models.clips

    def _canvas(self) -> None:
        s, f = self.settings, self.vqgan.factor
        self.width, self.height = canvas(s.width, s.height, f)
        if (self.width, self.height) != (s.width, s.height):
            self.log(f"note: size rounded down to {self.width}x{self.height} (a multiple of the VQGAN's factor {f})")
        self.latent_hw = (self.height // f, self.width // f)

    @property
    def sync_every(self) -> int:
        """How often the progress line and the NaN check read the loss (each read waits for the device)."""
        return 1 if self.device.type == "cpu" else 25

    def need(self, batch: int) -> int:
        """Bytes a run of `batch` images on this canvas needs, by the memory estimate."""
        return self.estimate(batch, self.latent_hw)

    def run_batch(self) -> int:
        """How many latents a single-prompt run optimises at once (images times random starts)."""
        s = self.settings
        return (s.preview or s.n_images) * s.candidates

    def fitting_batch(self, most: int) -> int:
        """The largest number of images (up to `most`) the memory estimate says fit at once."""
        have = available_bytes(self.device)
        if have is None:
            return 1
        return max([b for b in range(1, most + 1) if self.need(b) <= 0.8 * have] or [1])

    def _shortfall(self, batch: int) -> tuple[int, int, tuple[int, int] | None] | None:
        """None when `batch` latents fit (or free memory is unknown); else (bytes needed, bytes free, the
        largest latent that fits or None)."""
        have, need = available_bytes(self.device), self.need(batch)
        if have is None or need <= have:
            return None
        return need, have, largest_fitting(self.estimate, batch, self.latent_hw, have)

    def check_fits(self, batch: int) -> None:
        """Refuse a run whose estimate is more memory than the device has free, naming both and the
        largest size that fits."""
        short = self._shortfall(batch)
        if short is not None:
            self._refuse(*short)

    def _refuse(self, need: int, have: int, fits: tuple[int, int] | None) -> None:
        f = self.vqgan.factor
        hint = f"the largest size that fits is {fits[1] * f}x{fits[0] * f}: pass --fit to draw at it, or " \
            if fits else ""
        raise UserError(f"this run needs about {need / 2**30:.1f} GiB of {self.device.type} memory but "
                        f"{have / 2**30:.1f} GiB is free",
                        hint + "use a smaller --width/--height, fewer --cutn or fewer --n-images")

    def _fit(self, batch: int) -> None:
        """--fit: shrink the canvas (same aspect) to the largest size the memory estimate says fits."""
        short = self._shortfall(batch)
        if short is None:
            return
        fits = short[2]
        if fits is None:
            self._refuse(*short)
        f = self.vqgan.factor
        self.log(f"note: --fit: {self.width}x{self.height} needs more memory than is free; drawing at "
                 f"{fits[1] * f}x{fits[0] * f}")
        self.latent_hw, self.width, self.height = fits, fits[1] * f, fits[0] * f

    def recipe(self, job: Job) -> dict:
        """Every setting that made `job`'s picture, as its PNG records it."""
        s = self.settings
        info = self.models.info()
        spec = str(Path(s.vqgan).absolute()) if Path(s.vqgan).is_file() else s.vqgan
        info["vqgan"] = info["vqgan"] | {"spec": spec, "config": s.vqgan_config and str(Path(s.vqgan_config).absolute())}
        return recipe_fields(s) | {
            "prompt": job.prompt, "seed": job.seed, "width": self.width, "height": self.height,
            "augments": ",".join(self.plan.augments) or "none",
            "init_image": s.init_image and str(Path(s.init_image).absolute()),
            "image_prompts": [f"{path.absolute()}:{weight!r}" for path, weight in self.plan.image_prompts],
            "input_sha256": self.inputs, **info, "device": self.device.type, "version": __version__}

    def recipes(self, jobs: list[Job]) -> list[dict]:
        """The recipes of `jobs`' pictures drawn together, as their PNGs and the run's state files record them."""
        return [self.recipe(j) | ({"batch": len(jobs)} if len(jobs) > 1 else {}) for j in jobs]

    def objective(self, jobs: list[Job], n: int = 1, z_init: torch.Tensor | None = None):
        """The objective of `jobs`' images, each repeated `n` times (a search's random starts)."""
        s = self.settings
        schedules = [schedule([list(st) for st in j.stages], s.steps, s.change_every, s.blend_steps)
                     for j in jobs for _ in range(n)]
        encoded = encode_texts(self.clips, schedules, self.log)
        return build_objective(self.vqgan, self.clips, schedules, s, self.plan.augments, self.image_targets, encoded,
                               z_init, self.autocast, self.plan.palette)

    def pipeline(self, jobs: list[Job], resume: dict | None = None) -> Pipeline:
        """The pipeline of `jobs`' images, fresh or going on from a state."""
        return Pipeline(self.vqgan, lambda n, z_init: self.objective(jobs, n, z_init), self.settings,
                        [j.seed for j in jobs], self.latent_hw, self.init_latent,
                        drawing(resume, self.settings, self.device) if resume is not None else None)

    # -- running ----------------------------------------------------------------------------
    def run(self, jobs: list[Job], resume: dict | None = None, stop: Callable[[], bool] | None = None,
            progress: bool | None = None, replace: bool = False, on_step: Callable | None = None) -> Result:
        """Optimise the images of `jobs` together (one batch of latents); write PNGs, frames, videos.

        Existing outputs are replaced only with --overwrite, with `replace` (a batch redoing the
        partial picture an interrupted run left), or, resuming, where the state's own run left them
        (outputs/state.carried).  `on_step` observes every step too (e.g. a live preview)."""
        s, t0 = self.settings, time.perf_counter()
        overwrite, carry = s.overwrite or replace, carried(resume)
        check_outputs(jobs, s, overwrite, int(resume["step"]) if resume else 0, carry.own)
        searching = (resume or {}).get("phase", SEARCH if s.candidates > 1 and resume is None else MAIN) == SEARCH
        with self.drawing(len(jobs) * (s.candidates if searching else 1)):
            pipe = self.pipeline(jobs, resume)
            return self._draw(pipe, jobs, overwrite, carry, stop, progress, on_step, t0)

    @contextlib.contextmanager
    def drawing(self, latents: int):
        """What every drawing of this session runs inside: the memory check for `latents` latents at
        once, --threads, and the random generators forked (the caller's are left as they were)."""
        self.check_fits(latents)
        rng_devices = [self.device] if self.device.type == "cuda" else []
        with cpu_threads(self.settings.threads, self.device), torch.random.fork_rng(devices=rng_devices):
            yield

    def _draw(self, pipe: Pipeline, jobs, overwrite: bool, carry: Carried, stop, progress, on_step, t0) -> Result:
        s = self.settings
        mine = (lambda path: may_replace(path, overwrite, carry.own))  # noqa: E731
        recipes = self.recipes(jobs)
        state_path = state_path_for(jobs[0].output)
        writers = [FrameWriter(j.frames_dir, VideoWriter(j.video, s.fps, mine(j.video)) if j.video else None,
                               overwrite=overwrite) if (j.frames_dir or j.video) else None for j in jobs]
        for w, frames in zip(writers, carry.shown):  # the frames the video had before the interruption
            if w is not None and frames is not None:
                w.replay(frames.numpy())

        def save(done: int | None = None) -> Path:
            step = pipe.drawing.step if done is None else done
            shown = [w.shown if w is not None else None for w in writers]
            return save_state(state_path, pack(pipe.drawing, step, s, jobs, Carried(carry.left, shown, recipes)))

        bar = Progress(s.steps, pipe.drawing.step, self.sync_every, desc=slug(jobs[0].prompt, 30),
                       enabled=progress is not False)
        finite, last = FiniteCheck(self.sync_every), {}
        callback = chain(bar, finite, lambda info: last.update(loss=info.loss) if phase(info) == MAIN else None,
                         Frames(writers, s.save_every) if s.save_every else None,
                         Checkpoint(save, s.state_every) if s.state_every else None, on_step)
        ok = False
        try:
            drawing = pipe.run(callback, stop)
            ok = True
        except RunFailed as e:
            raise self._keep_good(e, pipe, finite, jobs, recipes, mine) from None
        finally:
            bar.close()
            videos = [w.close(keep_video=ok) for w in writers if w is not None]
        images = pipe.images()
        if drawing.step < s.steps:  # stopped by a signal: keep everything, exit resumable
            for i, (j, r) in enumerate(zip(jobs, recipes)):
                save_png(j.output, images[i], r | {"steps_done": drawing.step}, mine(j.output))
            carry.left.update(fingerprints([j.output for j in jobs] + videos))  # what the resume may replace
            raise Interrupted(save(), jobs[0].output)
        outputs = [save_png(j.output, images[i], r, mine(j.output)) for i, (j, r) in enumerate(zip(jobs, recipes))]
        if state_path.exists():
            state_path.unlink()
        final = last["loss"].tolist() if last else []
        return Result(outputs, drawing.step, final, time.perf_counter() - t0, [v for v in videos if v], recipes)

    def _keep_good(self, error, pipe, finite, jobs, recipes, mine) -> RunFailed:
        """A NaN or infinite loss: keep the last good image (where `mine(path)` allows), and say how to
        avoid it."""
        if finite.good_z is None:
            return RunFailed(f"{error}; no good image to keep -- try a lower --lr")
        images = pipe.images(finite.good_z)
        kept = [save_png(j.output, images[i], r | {"steps_done": finite.good_step}, mine(j.output))
                for i, (j, r) in enumerate(zip(jobs, recipes))]
        return RunFailed(f"{error}; kept the image of step {finite.good_step} in {kept[0]} -- try a lower --lr")


def generate(prompt: str, log: Callable[[str], None] = _stderr, progress: bool | None = None, **options) -> Result:
    """Make images for `prompt`; options are `Settings` fields (e.g. steps=200, model="tiny")."""
    settings = resolve(Settings(prompt=prompt, **options))
    if settings.restyle_video or settings.preview is not None:
        raise UserError("generate draws still pictures; it runs no restyle_video or preview",
                        "use clipguide.restyle.restyle or clipguide.preview.preview with a Session")
    check_needs(settings, settings.given)  # an option that would change nothing is refused, as on the command line
    session = Session(settings, log)
    s = session.settings
    flag = StopFlag()
    with flag.installed():
        return session.run(session.plan.single_jobs(s.seed if s.seed is not None else new_seed()), stop=flag,
                           progress=progress)
