"""The loop: optimise VQGAN latents so that CLIP sees the prompts in the decoded images.

Shaped like k-diffusion's samplers: `optimize` is one function of an objective, the latent, an
optimiser, a step range and a `callback`; progress bars, frames, logs, NaN checks and state files
hang off the callback, never inside the loop.  `best_candidates` and `keep_latents` let a run try
several random starts per image for a few steps and go on with the best.  Nothing here knows about
the command line.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from .cutouts import Cutouts
from .losses import init_loss, prompt_loss, tv_loss

OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adagrad": torch.optim.Adagrad,
    "adamax": torch.optim.Adamax,
    "radam": torch.optim.RAdam,
    "nadam": torch.optim.NAdam,
    "rmsprop": torch.optim.RMSprop,
    "sgd": torch.optim.SGD,
}


@dataclass
class Member:
    """One CLIP model of the ensemble with its cutouts and the embeddings it steers toward."""

    clip: object  # models.clip.Clip
    cutouts: Cutouts
    targets: torch.Tensor  # [B, P, D] prompt embeddings (text and image prompts)


@dataclass
class Objective:
    """loss(z, step) for a batch of B independent images.

    `weights(step)` gives the [B, P] prompt weights of that step (story stages, blends);
    `stops` is [B, P]; `z_init`/`init_weight` pull the latent back toward an init image;
    `tv_weight` weighs the decoded image's total variation (smoothness)."""

    vqgan: torch.nn.Module
    members: list[Member]
    weights: Callable[[int], torch.Tensor]
    stops: torch.Tensor
    z_init: torch.Tensor | None = None
    init_weight: float = 0.0
    autocast: torch.dtype | None = None  # e.g. torch.bfloat16 on GPU; loss and latent stay fp32
    channels_last: bool = False
    tv_weight: float = 0.0

    def image(self, z: torch.Tensor) -> torch.Tensor:
        """Quantise (straight-through) and decode: latent -> image in [0, 1]."""
        zq = self.vqgan.quantize_st(z)
        if self.channels_last:
            zq = zq.contiguous(memory_format=torch.channels_last)
        with self._amp(z):
            return self.vqgan.decode(zq).float()

    def _amp(self, z):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(z.device.type, dtype=self.autocast)

    def __call__(self, z: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-image loss [B], image [B, 3, H, W])."""
        image = self.image(z)
        weights = self.weights(step)
        losses = torch.zeros(z.shape[0], device=z.device)
        for m in self.members:
            cuts = m.cutouts(image)
            with self._amp(z):
                emb = m.clip.encode_image(cuts)
            emb = emb.float().view(z.shape[0], -1, emb.shape[-1])
            losses = losses + prompt_loss(emb, m.targets, weights, self.stops)
        if self.z_init is not None and self.init_weight:
            losses = losses + init_loss(z, self.z_init, self.init_weight)
        if self.tv_weight:
            losses = losses + tv_loss(image, self.tv_weight)
        return losses, image


@dataclass
class StepInfo:
    """What a callback sees after each step (tensors stay on the device: reading them syncs)."""

    step: int  # 0-based index of the step just taken
    steps: int  # total steps of the run
    loss: torch.Tensor  # [B] per-image loss at this step (before the update)
    image: torch.Tensor  # [B, 3, H, W] image at this step (before the update)
    z: torch.Tensor  # the latent after the update
    extra: dict = field(default_factory=dict)


def make_optimizer(name: str, params, lr: float):
    return OPTIMIZERS[name](params, lr=lr)


def optimize(objective: Callable, z: torch.Tensor, optimizer, steps: int, *, start: int = 0,
             latent_range: tuple[torch.Tensor, torch.Tensor] | None = None,
             callback: Callable[[StepInfo], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> int:
    """Take steps `start..steps-1` on `z` in place; returns the number of steps done in total.

    After each optimiser step the latent is clamped to `latent_range` (the codebook's range).
    `should_stop` is polled after each step (and its callback): a True ends the loop early."""
    step = start
    for step in range(start, steps):
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
    return max(step + 1, start) if steps > start else start


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
