"""The loop: optimise VQGAN latents so that CLIP sees the prompts in the decoded images.

Shaped like k-diffusion's samplers: `optimize` is one function of an objective, the latent, an
optimiser, a step range and a `callback` that only observes; progress bars, frames, logs, NaN
checks and state files hang off the callback, never inside the loop.  `best_candidates` and
`keep_latents` let a run try several random starts per image for a few steps and go on with the
best.  Nothing here knows about the command line.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import torch

from .options import OPTIMIZERS

@dataclass
class StepInfo:
    """What a callback sees after each step (tensors stay on the device: reading them syncs)."""

    step: int  # 0-based index of the step just taken
    steps: int  # total steps of the run
    loss: torch.Tensor  # [B] per-image loss at this step (before the update)
    decoded: torch.Tensor | None  # [B, 3, H, W] the decoder's picture the loss scored (before the update)
    z: torch.Tensor  # the latent after the update
    extra: dict = field(default_factory=dict)
    finish: Callable[[torch.Tensor], torch.Tensor] | None = None  # what is shown of it (--colours)

    @functools.cached_property
    def image(self) -> torch.Tensor | None:
        """The picture as written or shown: `decoded`, finished on first use (most steps show nothing)."""
        return self.decoded if self.finish is None or self.decoded is None else self.finish(self.decoded)


def make_optimizer(name: str, params, lr: float):
    """An optimiser by its --optimizer name (options.OPTIMIZERS)."""
    return getattr(torch.optim, OPTIMIZERS[name])(params, lr=lr)


def optimize(objective: Callable, z: torch.Tensor, optimizer, steps: int, *, start: int = 0,
             end: int | None = None, latent_range: tuple[torch.Tensor, torch.Tensor] | None = None,
             callback: Callable[[StepInfo], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> int:
    """Take steps `start..end-1` (`end` defaults to `steps`, the run's total) on `z` in place;
    returns the number of steps done in total.

    After each optimiser step the latent is clamped to `latent_range` (the codebook's range).
    `should_stop` is polled after each step (and its callback): a True ends the loop early."""
    end = steps if end is None else end
    step = start
    for step in range(start, end):
        optimizer.zero_grad(set_to_none=True)
        losses, image = objective(z, step)
        losses.sum().backward()
        optimizer.step()
        if latent_range is not None:
            with torch.no_grad():
                z.copy_(torch.maximum(torch.minimum(z, latent_range[1]), latent_range[0]))
        if callback is not None:
            callback(StepInfo(step, steps, losses.detach(), image.detach(), z))
        if should_stop is not None and should_stop():
            return step + 1
    return max(step + 1, start) if end > start else start


def rng_state(device: torch.device) -> dict:
    """The random generators' state now: the CPU's, and the GPU's when `device` is one."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def restore_rng(saved: dict, device: torch.device) -> None:
    """Put the random generators back as `rng_state` saved them (the GPU's when `device` is one and it was saved)."""
    torch.set_rng_state(saved["cpu"])
    if device.type == "cuda" and saved.get("cuda") is not None:
        torch.cuda.set_rng_state(saved["cuda"], device)


def best_candidates(history: list[torch.Tensor], n: int, window: int = 5) -> torch.Tensor:
    """Which of each image's `n` candidate latents to keep: the lowest loss over the last `window` steps.

    `history` holds the per-latent losses [B * n] of each step taken, image b's candidates being
    latents b*n .. b*n+n-1; a candidate whose loss is not finite is never kept over one that is.
    Returns the [B] indices into the B * n latents."""
    recent = torch.stack(history[-window:]).float().mean(0).view(-1, n)
    recent = torch.nan_to_num(recent, nan=float("inf"))
    return recent.argmin(1) + torch.arange(recent.shape[0], device=recent.device) * n


def keep_latents(z: torch.Tensor, optimizer, index: torch.Tensor):
    """(latent, optimiser) for the rows `index` of a batch of latents, the optimiser's state kept.

    Per-element state (Adam's moments, ...) is cut to the kept rows; step counts carry over, so the
    kept latents go on exactly as they would have."""
    kept = z.detach()[index].clone().requires_grad_(True)
    state = optimizer.state_dict()

    def cut(v):  # copies, never shares: an optimiser counts its steps in place
        if not torch.is_tensor(v):
            return v
        return v[index].clone() if v.shape == z.shape else v.clone()

    state["state"] = {k: {name: cut(v) for name, v in st.items()} for k, st in state["state"].items()}
    new = type(optimizer)([kept], lr=optimizer.param_groups[0]["lr"])
    new.load_state_dict(state)
    return kept, new
