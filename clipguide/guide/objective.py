"""The objective: what a step minimises for a batch of B images.

`build_objective` turns each image's prompt schedule, the image prompts and the guidance settings
into an `Objective`: for each CLIP of the ensemble a `Member` (its cutouts and the [B, P, D] prompt
embeddings), the per-step prompt weights, the stops, the init-image pull and the smoothness term.
`Objective(z, step)` decodes the latent, cuts, embeds and returns the per-image loss and the image.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from .cutouts import Cutouts
from .losses import IMAGE_LOSSES, init_loss, palette_loss, prompt_loss
from .palette import Palette


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
    `image_losses` are terms on the decoded image itself (smoothness, saturation, symmetry, palette),
    each a function image -> per-image loss [B]."""

    vqgan: torch.nn.Module
    members: list[Member]
    weights: Callable[[int], torch.Tensor]
    stops: torch.Tensor
    z_init: torch.Tensor | None = None
    init_weight: float = 0.0
    autocast: torch.dtype | None = None  # e.g. torch.bfloat16 on GPU; loss and latent stay fp32
    channels_last: bool = False
    image_losses: list = field(default_factory=list)
    codebook_norms: torch.Tensor | None = field(default=None, repr=False)

    def image(self, z: torch.Tensor) -> torch.Tensor:
        """Quantise (straight-through) and decode: latent -> image in [0, 1]."""
        if self.codebook_norms is None:  # the models are frozen: the codebook's norms are computed once
            self.codebook_norms = self.vqgan.codebook_norms()
        zq = self.vqgan.quantize_st(z, self.codebook_norms)
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
        for term in self.image_losses:
            losses = losses + term(image, step)
        return losses, image


@dataclass
class ImageTargets:
    """Targets that hold in every stage -- image prompts, then noise prompts: one embedding each for
    every CLIP of the ensemble, and their weights."""

    embeds: list[list[torch.Tensor]] = field(default_factory=list)  # [clip][picture] -> [1, D]
    weights: list[float] = field(default_factory=list)


def encode_texts(clips: list, schedules: list, log: Callable[[str], None]) -> list[dict]:
    """Each distinct prompt text of `schedules`, embedded once by each CLIP ([text] -> [D]); a text
    longer than the first CLIP's context is warned about once."""
    texts = list(dict.fromkeys(p.text for sched in schedules for p in sched.entries))
    for text in texts:
        n = clips[0].token_count(text)
        if n > clips[0].context_length:
            log(f"warning: prompt {text[:40]!r}... is {n} tokens; CLIP reads the first "
                f"{clips[0].context_length} and ignores the rest")
    return [dict(zip(texts, clip.encode_text(texts))) for clip in clips]


def _padded(rows: list[list[float]], width: int, fill: float) -> list[list[float]]:
    return [row + [fill] * (width - len(row)) for row in rows]


def build_objective(vqgan, clips: list, schedules: list, guide, augments: tuple[str, ...],
                    images: ImageTargets, encoded: list[dict], z_init: torch.Tensor | None = None,
                    autocast: torch.dtype | None = None, palette: Palette = Palette()) -> Objective:
    """The objective of B images, image b following `schedules[b]` (a prompts.PromptSchedule).

    `guide` carries cutn, cut_pow, cut_min, noise, init_weight and the image losses' weights (a
    Settings); `palette` is a guide.palette.Palette; `encoded` is `encode_texts`' output for these
    schedules (or a superset of them)."""
    device = vqgan.codebook.device
    n_img = len(images.weights)
    width = max(len(sc.entries) for sc in schedules) + n_img
    members = []
    for ci, clip in enumerate(clips):
        rows = []
        for sched in schedules:
            emb = torch.stack([encoded[ci][p.text] for p in sched.entries])
            pics = images.embeds[ci] if n_img else []
            row = torch.cat([emb] + pics) if pics else emb
            rows.append(torch.cat([row, row.new_zeros(width - row.shape[0], row.shape[1])]))
        cut = Cutouts(clip.image_size, guide.cutn, guide.cut_pow, augments, guide.noise, guide.cut_min)
        members.append(Member(clip, cut, torch.stack(rows)))
    stops = torch.tensor(_padded([sc.stops + [-float("inf")] * n_img for sc in schedules], width, -float("inf")),
                         device=device)
    cache: dict = {}

    def weights(step: int) -> torch.Tensor:
        key = tuple(tuple(sc.weights_at(step)) for sc in schedules)
        if key not in cache:
            cache.clear()
            cache[key] = torch.tensor(_padded([list(k) + images.weights for k in key], width, 0.0), device=device)
        return cache[key]

    return Objective(vqgan, members, weights, stops, z_init, guide.init_weight or 0.0, autocast,
                     image_losses=image_losses(guide, palette, schedules, device))


def image_losses(guide, palette: Palette, schedules: list, device) -> list:
    """The image terms the settings weigh, in the registry's order, then the palette's pull (each
    image's palette: the given colours and, with `prompt`, those its pulling prompts name); each term
    is called with (image, step)."""
    terms = [_steady(fn, getattr(guide, name)) for name, fn in IMAGE_LOSSES.items() if getattr(guide, name)]
    palettes = [palette.for_texts(p.text for p in sc.entries if p.weight > 0) for sc in schedules]
    if palette.pulls and any(palettes):
        k = max(len(p) for p in palettes)
        rows = [list(p) + [p[0] if p else (0.0, 0.0, 0.0)] * (k - len(p)) for p in palettes]  # repeats change no min
        colours = torch.tensor(rows, device=device)
        present = torch.tensor([float(bool(p)) for p in palettes], device=device)

        def pull(image: torch.Tensor, step: int) -> torch.Tensor:
            return palette_loss(image, palette.weight_at(step, guide.steps), colours, present)
        terms.append(pull)
    return terms


def _steady(fn: Callable, weight: float) -> Callable:
    """A term whose weight does not change over the run."""
    return lambda image, step: fn(image, weight)
