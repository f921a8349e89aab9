"""The pipeline of one batch of B images: initial latents -> search of random starts -> the loop
(with motion as a named step between its segments) -> images.

Like a diffusers pipeline, it runs in named stages; like a k-diffusion sampler, it reports each step
to a `callback` that only observes (`StepInfo.extra["phase"]` says which stage: "search" for the B*n
random starts, "replay" for the frames of the kept starts once the search has chosen, "main").  It
writes no file: the run layer (run.py) hangs progress, frames, NaN checks and state files off the
callback.  `Drawing` is everything needed to go on from any step exactly, the search included;
outputs/state.py turns it into a state file and back, and `Pipeline(..., resume=drawing)` goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from . import motion
from .engine import StepInfo, best_candidates, keep_latents, make_optimizer, optimize, restore_rng
from .guide.finish import finish_colours
from .images import noise_picture

SEARCH, REPLAY, MAIN = "search", "replay", "main"


def candidate_seed(seed: int, candidate: int) -> int:
    """The seed of an image's `candidate`-th random start (the 0th is the image's own seed)."""
    return seed if candidate == 0 else (seed + candidate * 1_000_003) % 2**31


def frames_of(image: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> [B, H, W, 3] uint8 on the CPU (what a frame file holds)."""
    return image.detach().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu()


@dataclass
class Drawing:
    """A drawing in progress: everything needed to go on from here exactly."""

    phase: str  # SEARCH (B*n starts) or MAIN (B images)
    step: int  # steps done
    z: torch.Tensor
    optimizer: torch.optim.Optimizer
    z_init: torch.Tensor | None = None
    history: list = field(default_factory=list)  # search: the losses [B*n] of each step
    shots: list = field(default_factory=list)  # search: (step, frames [B*n, H, W, 3]) at frame steps
    moved_at: int = -1  # the step count at which the picture last moved
    last_image: torch.Tensor | None = None  # the last step's image (what motion moves)
    rng: dict | None = None  # the random generators' states to go on with (a resumed drawing)

    def rows(self, index: list[int]) -> "Drawing":
        """This drawing for the latents `index` only (one image's, or its starts'), its optimiser's
        state, loss history and frames cut to them."""
        idx = torch.tensor(index, device=self.z.device)
        z, opt = keep_latents(self.z, self.optimizer, idx)

        def cut(t):
            return None if t is None else t[idx.to(t.device)]

        return Drawing(self.phase, self.step, z, opt, cut(self.z_init), [h[idx] for h in self.history],
                       [(step, cut(frames)) for step, frames in self.shots], self.moved_at, cut(self.last_image),
                       self.rng)


class Pipeline:
    """Draws the B images of one batch: `settings` (resolved) gives steps, starts, optimiser, frame
    interval and motion; `objective_for(n, z_init)` builds the objective of the B images, each
    repeated n times (n > 1: the search's starts)."""

    def __init__(self, vqgan, objective_for: Callable, settings, seeds: list[int],
                 latent_hw: tuple[int, int], init_latent: torch.Tensor | None = None, resume: Drawing | None = None):
        self.vqgan, self.objective_for, self.s, self.seeds = vqgan, objective_for, settings, seeds
        self.latent_hw, self.init_latent = latent_hw, init_latent
        self._objectives: dict = {}
        self.drawing = self._resume(resume) if resume is not None else self._start()

    # -- stage 1: initial latents ---------------------------------------------------------------
    def initial_latents(self, seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(latents, the init image's latent or None): the init image's codes for every image, else
        the codes of a noise picture from each seed (--init-noise), else random codes from each seed."""
        if self.init_latent is not None:
            z = self.init_latent.repeat(len(seeds), 1, 1, 1)
            return z, z.clone()
        if self.s.init_noise:
            h, w, device = *(n * self.vqgan.factor for n in self.latent_hw), self.vqgan.codebook.device
            return torch.cat([self.vqgan.encode(noise_picture(self.s.init_noise, sd, w, h, device)) for sd in seeds]), None
        zs = [self.vqgan.random_latent(*self.latent_hw, generator=torch.Generator().manual_seed(sd)) for sd in seeds]
        return torch.cat(zs), None

    def objective(self, n: int = 1):
        """The objective of the B images (n == 1, with the init pull) or of their n starts each."""
        if n not in self._objectives:
            self._objectives[n] = self.objective_for(n, self.drawing.z_init if n == 1 else None)
        return self._objectives[n]

    def _start(self) -> Drawing:
        s = self.s
        torch.manual_seed(self.seeds[0])
        if s.candidates > 1:
            seeds = [candidate_seed(sd, c) for sd in self.seeds for c in range(s.candidates)]
            z, z_init, phase = self.initial_latents(seeds)[0], None, SEARCH
        else:
            (z, z_init), phase = self.initial_latents(self.seeds), MAIN
        z = z.detach().clone().requires_grad_(True)
        return Drawing(phase, 0, z, make_optimizer(s.optimizer, [z], s.lr), z_init)

    def _resume(self, d: Drawing) -> Drawing:
        if d.z_init is None and d.phase == MAIN:
            d.z_init = self.initial_latents(self.seeds)[1]
        if d.rng is not None:
            restore_rng(d.rng, d.z.device)
        return d

    # -- stages 2 and 3: the search, then the loop ---------------------------------------------
    def run(self, callback: Callable[[StepInfo], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Drawing:
        """Go on until the last step or until `should_stop()`; returns the drawing (its `step` says
        how far it got)."""
        d, callback = self.drawing, callback or (lambda info: None)
        stop = should_stop or (lambda: False)
        if d.phase == SEARCH:
            if not self._search(d, callback, stop):
                return d
            self._keep_best(d, callback)
            if stop():
                return d
        self._loop(d, callback, stop)
        return d

    def _search(self, d: Drawing, callback, stop) -> bool:
        """Optimise every start for --candidate-steps steps; False if stopped before the end."""
        end, every = min(self.s.candidate_steps, self.s.steps), self.s.save_every

        def observe(info: StepInfo) -> None:
            d.history.append(info.loss)
            info.finish = self.finish
            if every and info.step % every == 0:
                d.shots.append((info.step, frames_of(info.image)))
            info.extra["phase"] = SEARCH
            callback(info)

        d.step = optimize(self.objective(self.s.candidates), d.z, d.optimizer, self.s.steps, start=d.step,
                          end=end, latent_range=self.vqgan.latent_range(), callback=observe, should_stop=stop)
        return d.step >= end and not stop()

    def _keep_best(self, d: Drawing, callback) -> None:
        """Each image goes on with its start whose loss was lowest over the search's last steps."""
        index = best_candidates(d.history, self.s.candidates)
        z, opt = keep_latents(d.z, d.optimizer, index)
        for step, frames in d.shots:
            callback(StepInfo(step, self.s.steps, d.history[step][index], None, z,
                              {"phase": REPLAY, "frames": frames[index.cpu()]}))
        d.phase, d.z, d.optimizer, d.history, d.shots = MAIN, z, opt, [], []

    def _loop(self, d: Drawing, callback, stop) -> None:
        s = self.s

        def observe(info: StepInfo) -> None:
            d.last_image = info.decoded  # motion moves the decoder's own picture
            info.finish = self.finish
            info.extra["phase"] = MAIN
            callback(info)

        while d.step < s.steps:
            end, moves = motion.boundaries(d.step, s.steps, s.save_every) if s.moving else (s.steps, False)
            if s.moving and motion.due(d.step, s.steps, s.save_every) and d.moved_at != d.step:
                self.move(d)
            d.step = optimize(self.objective(), d.z, d.optimizer, s.steps, start=d.step, end=end,
                              latent_range=self.vqgan.latent_range(), callback=observe, should_stop=stop)
            if d.step < end or stop():
                return

    def move(self, d: Drawing) -> None:
        """The motion step: move the last picture, re-encode it, reset the optimiser."""
        s = self.s
        motion.apply(self.vqgan, d.z, d.optimizer, d.last_image, s.zoom, s.pan_x, s.pan_y, s.rotate)
        d.moved_at = d.step

    # -- stage 4: images ------------------------------------------------------------------------
    def finish(self, images: torch.Tensor) -> torch.Tensor:
        """What is written or shown of decoded pictures: in --colours colours, if set."""
        return finish_colours(images, self.s.colours)

    @torch.no_grad()
    def images(self, z: torch.Tensor | None = None) -> torch.Tensor:
        """The B finished images of latent `z` (default: the drawing's; during the search, each
        image's best start so far)."""
        d = self.drawing
        if z is None and d.phase == SEARCH:
            index = best_candidates(d.history, self.s.candidates) if d.history else \
                torch.arange(len(self.seeds)) * self.s.candidates
            return self.finish(self.objective(self.s.candidates).image(d.z.detach()[index]))
        return self.finish(self.objective().image(d.z if z is None else z))
