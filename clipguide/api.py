"""The Python API: `generate(prompt, ...)` and `Session` (models loaded once, many runs).

The CLI is a thin shell over this module; nothing here knows about Typer.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from .animate import Zoom
from .callbacks import Checkpoint, FiniteCheck, Frames, Progress, chain
from .cutouts import Cutouts, parse_augments
from .engine import Member, Objective, StepInfo, best_candidates, keep_latents, make_optimizer, optimize
from .errors import Interrupted, RunFailed, UserError
from .images import load_image
from .memory import available_bytes, check_fits, estimator
from .models.clip import load_clip
from .models.registry import checksum, resolve_vqgan
from .models.vqgan import load_vqgan
from .outputs import FrameWriter, VideoWriter, check_writable, save_png, save_state, sweep_temps
from .prompts import PromptSchedule, contrast_prompts, parse_contrast, parse_negative, parse_story, slug
from .speed import prepare_clip, prepare_vqgan
from .settings import RECIPE_KEYS, Settings, autocast_dtype, resolve_device, split_image_prompt, with_defaults


def _stderr(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


@dataclass
class Job:
    """One image to make."""

    prompt: str
    seed: int
    output: Path
    frames_dir: Path | None = None
    video: Path | None = None


@dataclass
class Result:
    outputs: list[Path]
    steps: int
    loss: list[float]  # per image, at the last step
    seconds: float
    videos: list[Path] = field(default_factory=list)
    recipes: list[dict] = field(default_factory=list)


class StopFlag:
    """Set by SIGINT/SIGTERM while a run is active: the loop finishes its step, then saves and stops."""

    def __init__(self):
        self.signal: int | None = None

    def __call__(self) -> bool:
        return self.signal is not None

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


class Session:
    """Loaded models and resolved settings, reused for every image of a run or a batch."""

    def __init__(self, settings: Settings, log: Callable[[str], None] = _stderr):
        self.settings = s = with_defaults(settings)
        self.log = log
        self.device = resolve_device(s.device)
        if s.threads and self.device.type == "cpu":
            torch.set_num_threads(s.threads)  # small models on shared CPUs: fewer threads avoid oversubscription
        cache = Path(s.cache_dir) if s.cache_dir else None
        files = resolve_vqgan(s.vqgan, s.vqgan_config, cache=cache)
        self.vqgan = load_vqgan(files.config, files.checkpoint).to(self.device)
        self.vqgan_info = {"name": files.name, "sha256": checksum(files.checkpoint, cache)}
        self.clips = [load_clip(spec, self.device, cache=cache) for spec in s.clip]
        prepare_vqgan(self.vqgan, self.device)  # the fast path: same results, cheaper steps (speed.py)
        for clip in self.clips:
            prepare_clip(clip, self.device)
        f = self.vqgan.factor
        self.width, self.height = s.width // f * f, s.height // f * f
        if min(self.width, self.height) < f:
            raise UserError(f"size {s.width}x{s.height} is smaller than the VQGAN's factor {f}",
                            f"use --width/--height of at least {f}")
        if (self.width, self.height) != (s.width, s.height):
            log(f"note: size rounded down to {self.width}x{self.height} (a multiple of the VQGAN's factor {f})")
        self.autocast = autocast_dtype(s.precision, self.device)
        self.image_prompts = [split_image_prompt(p) for p in s.image_prompts]
        self.image_prompt_embeds = [
            [c.embed_picture(load_image(p, "image prompt", device=self.device)) for p, _ in self.image_prompts]
            for c in self.clips]
        self.latent_hw = (self.height // f, self.width // f)
        self.need = estimator(self.vqgan, self.clips, self.latent_hw, s.cutn)  # probed once per session

    def fitting_batch(self, most: int) -> int:
        """The largest number of images (up to `most`) the memory estimate says fit at once."""
        have = available_bytes(self.device)
        if have is None:
            return 1
        return max([b for b in range(1, most + 1) if self.need(b) <= 0.8 * have] or [1])

    def recipe(self, job: Job) -> dict:
        s = self.settings
        r = {k: getattr(s, k) for k in RECIPE_KEYS}
        r.update(prompt=job.prompt, seed=job.seed, width=self.width, height=self.height,
                 augments=",".join(parse_augments(s.augments)) or "none", init_image=s.init_image,
                 image_prompts=s.image_prompts, vqgan=self.vqgan_info,
                 clip=[{"spec": c.spec, "sha256": c.sha256} for c in self.clips],
                 device=self.device.type, version=__version__)
        return r

    # -- building the objective -------------------------------------------------------------
    def _objective(self, jobs: list[Job], z_init):
        s = self.settings
        schedules, negative, rules = [], parse_negative(s.negative), parse_contrast(s.contrast)
        for j in jobs:
            stages = [stage + contrast_prompts(stage, rules) + negative for stage in parse_story(j.prompt)]
            every = s.change_every or max(1, -(-s.steps // len(stages)))  # default: equal shares of the run
            schedules.append(PromptSchedule(stages, every, s.blend_steps))
        texts = list(dict.fromkeys(p.text for sched in schedules for p in sched.entries))  # each once
        for text in texts:  # (--candidates repeats every image's prompt N times)
            n = self.clips[0].token_count(text)
            if n > self.clips[0].context_length:
                self.log(f"warning: prompt {text[:40]!r}... is {n} tokens; CLIP reads the first "
                         f"{self.clips[0].context_length} and ignores the rest")
        n_img = len(self.image_prompts)
        width = max(len(sc.entries) for sc in schedules) + n_img
        members = []
        for ci, clip in enumerate(self.clips):
            rows, encoded = [], dict(zip(texts, clip.encode_text(texts)))
            for sched in schedules:
                emb = torch.stack([encoded[p.text] for p in sched.entries])
                pics = self.image_prompt_embeds[ci]
                row = torch.cat([emb] + pics) if pics else emb
                pad = row.new_zeros(width - row.shape[0], row.shape[1])
                rows.append(torch.cat([row, pad]))
            cut = Cutouts(clip.image_size, s.cutn, s.cut_pow, parse_augments(s.augments), s.noise, s.cut_min)
            members.append(Member(clip, cut, torch.stack(rows)))
        img_w = [w for _, w in self.image_prompts]

        def padded(values, fill):
            return [row + [fill] * (width - len(row)) for row in values]

        stops = torch.tensor(padded([sc.stops + [-float("inf")] * n_img for sc in schedules], -float("inf")),
                             device=self.device)
        cache: dict = {}

        def weights(step: int) -> torch.Tensor:
            key = tuple(tuple(sc.weights_at(step)) for sc in schedules)
            if key not in cache:
                cache.clear()
                cache[key] = torch.tensor(padded([list(k) + img_w for k in key], 0.0), device=self.device)
            return cache[key]

        return Objective(self.vqgan, members, weights, stops, z_init, s.init_weight or 0.0, self.autocast,
                         tv_weight=s.tv_weight or 0.0)

    def _initial_latent(self, jobs: list[Job]) -> tuple[torch.Tensor, torch.Tensor | None]:
        s = self.settings
        if s.init_image:
            pic = load_image(s.init_image, "init image", size=(self.width, self.height), device=self.device)
            z = self.vqgan.encode(pic).repeat(len(jobs), 1, 1, 1)
            return z, z.clone()
        zs = [self.vqgan.random_latent(*self.latent_hw, generator=torch.Generator().manual_seed(j.seed)) for j in jobs]
        return torch.cat(zs), None

    def _explore(self, jobs: list[Job], callback, stop, save_every: int) -> tuple[torch.Tensor, object, int, list]:
        """--candidates N: optimise N random starts per image for --candidate-steps steps, keep the best.

        Returns (kept latents [B], their optimiser, steps done, the kept images' StepInfo of every
        `save_every`-th step, for the frames).  Candidate 0 of each image starts where a run without
        candidates would."""
        s = self.settings
        n = s.candidates
        starts = [dataclasses.replace(j, seed=candidate_seed(j.seed, c)) for j in jobs for c in range(n)]
        z, _ = self._initial_latent(starts)
        z.requires_grad_(True)
        opt = make_optimizer(s.optimizer, [z], s.lr)
        objective = self._objective(starts, None)
        history, shots = [], []

        def record(info: StepInfo) -> None:
            history.append(info.loss)
            if save_every and info.step % save_every == 0:
                shots.append(info)

        steps = min(s.candidate_steps, s.steps)
        done = optimize(objective, z, opt, steps, latent_range=self.vqgan.latent_range(),
                        callback=chain(callback, record), should_stop=stop)
        index = best_candidates(history, n)
        z, opt = keep_latents(z, opt, index)
        return z, opt, done, [StepInfo(i.step, s.steps, i.loss[index], i.image[index], z) for i in shots]

    # -- running ----------------------------------------------------------------------------
    def run(self, jobs: list[Job], resume: dict | None = None, stop: Callable[[], bool] | None = None,
            progress: bool | None = None, replace: bool = False) -> Result:
        """Optimise the images of `jobs` together (one batch of latents); write PNGs, frames, videos.

        Existing outputs are replaced only with --overwrite, when resuming, or with `replace` (a
        batch redoing the partial picture an interrupted run left)."""
        s = self.settings
        t0 = time.perf_counter()
        overwrite = s.overwrite or replace or resume is not None  # a resumed run replaces its own partial image
        for j in jobs:
            for path in (j.output, j.video):
                if path is not None:
                    check_writable(path, overwrite)
            for folder in {j.output.parent, j.frames_dir}:
                if folder is not None and folder.is_dir():
                    sweep_temps(folder)
        explore = s.candidates > 1 and resume is None
        check_fits(self.need(len(jobs) * (s.candidates if explore else 1)), self.device)
        z, z_init = self._initial_latent(jobs)
        if resume is not None:
            z = resume["z"].to(self.device)
            z_init = resume["z_init"].to(self.device) if resume.get("z_init") is not None else z_init
        objective = self._objective(jobs, z_init)
        z = z.detach().clone().requires_grad_(True)
        opt = make_optimizer(s.optimizer, [z], s.lr)
        start = 0
        if resume is not None:
            opt.load_state_dict(resume["optimizer"])
            start = int(resume["step"])
            torch.set_rng_state(resume["rng"]["cpu"])
            if self.device.type == "cuda" and resume["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(resume["rng"]["cuda"], self.device)
        else:
            torch.manual_seed(jobs[0].seed)
        recipes = [self.recipe(j) for j in jobs]
        state_path = state_path_for(jobs[0].output)

        def save(done: int) -> Path:
            rng = {"cpu": torch.get_rng_state(),
                   "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
            return save_state(state_path, {
                "format": "clipguide-state-1", "version": __version__, "step": done, "z": z.detach().cpu(),
                "z_init": None if z_init is None else z_init.cpu(), "optimizer": opt.state_dict(), "rng": rng,
                "settings": dataclasses.asdict(s), "jobs": [dataclasses.asdict(j) | {
                    "output": str(j.output), "frames_dir": j.frames_dir and str(j.frames_dir),
                    "video": j.video and str(j.video)} for j in jobs]})

        save_every = s.save_every or (10 if any(j.frames_dir or j.video for j in jobs) else 0)
        writers = [FrameWriter(j.frames_dir, VideoWriter(j.video, s.fps, overwrite) if j.video else None,
                               overwrite=True) if (j.frames_dir or j.video) else None for j in jobs]
        sync_every = 1 if self.device.type == "cpu" else 25
        bar = Progress(s.steps, start, sync_every, desc=slug(jobs[0].prompt, 30), disable=progress is False or None)
        finite = FiniteCheck(sync_every)
        motion = Zoom(self.vqgan, opt, save_every, s.zoom, s.pan_x, s.pan_y, s.rotate) if s.moving else None
        last: dict = {}
        frames = Frames(writers, save_every) if save_every else None
        callback = chain(bar, finite, lambda info: last.update(loss=info.loss), frames, motion,
                         Checkpoint(save, s.state_every) if s.state_every else None)
        ok = False
        try:
            if explore:  # several starts per image for the first steps; z and opt become the kept ones
                z, opt, start, shots = self._explore(jobs, bar, stop, save_every)
                for info in shots:
                    frames(info)
            if start < s.steps and not (explore and stop and stop()):
                done = optimize(objective, z, opt, s.steps, start=start, latent_range=self.vqgan.latent_range(),
                                callback=callback, should_stop=stop)
            else:
                done = start
            ok = True
        except RunFailed as e:
            if finite.good_z is None:
                raise RunFailed(f"{e}; no good image to keep -- try a lower --lr") from None
            with torch.no_grad():
                images = objective.image(finite.good_z)
            kept = [save_png(j.output, images[i], r | {"steps_done": finite.good_step}, overwrite)
                    for i, (j, r) in enumerate(zip(jobs, recipes))]
            raise RunFailed(f"{e}; kept the image of step {finite.good_step} in {kept[0]} -- try a lower --lr") from None
        finally:
            bar.close()
            videos = [w.close(keep_video=ok) for w in writers if w is not None]
        with torch.no_grad():
            images = objective.image(z)
        if done < s.steps:  # stopped by a signal: keep everything, exit resumable
            for i, (j, r) in enumerate(zip(jobs, recipes)):
                save_png(j.output, images[i], r | {"steps_done": done}, True)
            raise Interrupted(save(done), jobs[0].output)
        outputs = [save_png(j.output, images[i], r, overwrite) for i, (j, r) in enumerate(zip(jobs, recipes))]
        if state_path.exists():
            state_path.unlink()
        final = last["loss"].tolist() if last else []
        return Result(outputs, done, final, time.perf_counter() - t0, [v for v in videos if v], recipes)


def candidate_seed(seed: int, candidate: int) -> int:
    """The seed of an image's `candidate`-th random start (the 0th is the image's own seed)."""
    return seed if candidate == 0 else (seed + candidate * 1_000_003) % 2**31


def state_path_for(output: Path) -> Path:
    return output.with_name(output.stem + ".state.pt")


def default_jobs(s: Settings, seed: int) -> list[Job]:
    """The images of a single-prompt run: `--n-images` seeds, named from -o or the prompt."""
    jobs = []
    for k in range(s.n_images):
        sd = seed + k
        if s.output:
            out = Path(s.output)
            out = out if s.n_images == 1 else out.with_name(f"{out.stem}-{k}{out.suffix}")
        else:
            out = Path(s.output_dir) / f"{slug(s.prompt or '')}-{sd}.png"
        suffix = "" if s.n_images == 1 else f"-{k}"
        frames = Path(s.frames_dir) / (f"{out.stem}" if s.n_images > 1 else "") if s.frames_dir else None
        video = None
        if s.video:
            v = Path(s.video)
            video = v.with_name(f"{v.stem}{suffix}{v.suffix}")
        jobs.append(Job(s.prompt, sd, out, frames, video))
    return jobs


def new_seed() -> int:
    return int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF


def generate(prompt: str, log: Callable[[str], None] = _stderr, **options) -> Result:
    """Make images for `prompt`; options are `Settings` fields (e.g. steps=200, model="tiny")."""
    s = Settings(prompt=prompt, **options)
    parse_story(prompt)
    session = Session(s, log)
    seed = s.seed if s.seed is not None else new_seed()
    flag = StopFlag()
    with flag.installed():
        return session.run(default_jobs(session.settings, seed), stop=flag)
