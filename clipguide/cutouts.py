"""Cutouts: many random square crops of the image, resized to CLIP's input size and augmented.

One class for every variant: the crop-size distribution (`cut_pow`, `cut_min`, `cut_max`), the
augment list (Kornia modules, chosen by name) and the noise are options.  All cutouts of all
images are cut in one batched `roi_align` call (adaptive area sampling, so downscaling does not
alias) and augmented in one batched Kornia call; there is no per-cutout Python loop.
"""

from __future__ import annotations

import torch
import kornia.augmentation as K
from torch import nn
from torchvision.ops import roi_align

from .errors import UserError

# name -> factory of a Kornia augmentation (the table users pick from with --augments)
AUGMENTS = {
    "affine": lambda: K.RandomAffine(degrees=15, translate=(0.1, 0.1), p=0.7, padding_mode="border"),
    "shift": lambda: K.RandomAffine(degrees=0, translate=(0.1, 0.1), p=0.7, padding_mode="border"),
    "perspective": lambda: K.RandomPerspective(0.7, p=0.7),
    "jitter": lambda: K.ColorJitter(hue=0.1, saturation=0.1, p=0.7),
    "erasing": lambda: K.RandomErasing(scale=(0.1, 0.4), ratio=(0.3, 1 / 0.3), same_on_batch=True, p=0.7),
    "flip": lambda: K.RandomHorizontalFlip(p=0.5),
    "sharpness": lambda: K.RandomSharpness(0.3, p=0.4),
    "gray": lambda: K.RandomGrayscale(p=0.1),
}
DEFAULT_AUGMENTS = ("affine", "perspective", "jitter", "erasing")


def parse_augments(spec: str | None) -> tuple[str, ...]:
    """'affine,jitter' -> ('affine', 'jitter'); 'none' or '' -> ()."""
    if spec is None:
        return DEFAULT_AUGMENTS
    names = tuple(n.strip() for n in spec.split(",") if n.strip() and n.strip() != "none")
    unknown = [n for n in names if n not in AUGMENTS]
    if unknown:
        raise UserError(f"unknown augment {unknown[0]!r}", f"choose from {', '.join(AUGMENTS)} (or none)")
    return names


class Cutouts(nn.Module):
    """image [B, 3, H, W] in [0, 1] -> cutouts [B * cutn, 3, cut_size, cut_size] (image-major).

    Crop sides are ``min + (max - min) * u ** cut_pow`` with u uniform, between `cut_min` and
    `cut_max` (fractions of the image's short side; by default from CLIP's input size, or the
    whole short side if smaller, up to the whole short side)."""

    def __init__(self, cut_size: int, cutn: int, cut_pow: float = 1.0, augments=DEFAULT_AUGMENTS,
                 noise: float = 0.1, cut_min: float | None = None, cut_max: float = 1.0):
        super().__init__()
        if cutn < 1:
            raise UserError(f"--cutn must be at least 1 (got {cutn})", "use e.g. --cutn 32")
        if cut_pow <= 0:
            raise UserError(f"--cut-pow must be positive (got {cut_pow})", "use e.g. --cut-pow 1.0")
        if cut_min is not None and not 0 < cut_min <= cut_max <= 1:
            raise UserError(f"cutout sizes must satisfy 0 < cut-min <= cut-max <= 1 (got {cut_min}, {cut_max})",
                            "give fractions of the image side, e.g. --cut-min 0.5")
        self.cut_size, self.cutn, self.cut_pow = cut_size, cutn, cut_pow
        self.cut_min, self.cut_max, self.noise = cut_min, cut_max, noise
        self.augment = nn.Sequential(*(AUGMENTS[name]() for name in augments))

    def boxes(self, batch: int, height: int, width: int, device) -> torch.Tensor:
        """[batch * cutn, 5] rows of (image index, x1, y1, x2, y2) in pixels."""
        side = min(height, width)
        lo = side * self.cut_min if self.cut_min is not None else min(self.cut_size, side)
        hi = side * self.cut_max
        n = batch * self.cutn
        size = lo + (hi - lo) * torch.rand(n, device=device).pow(self.cut_pow)
        x = torch.rand(n, device=device) * (width - size)
        y = torch.rand(n, device=device) * (height - size)
        idx = torch.arange(batch, device=device, dtype=size.dtype).repeat_interleave(self.cutn)
        return torch.stack([idx, x, y, x + size, y + size], 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        b, _, h, w = image.shape
        boxes = self.boxes(b, h, w, image.device).to(image.dtype)
        cuts = roi_align(image, boxes, self.cut_size, sampling_ratio=-1, aligned=True)
        if len(self.augment):
            cuts = self.augment(cuts)
        if self.noise:
            facs = cuts.new_empty(cuts.shape[0], 1, 1, 1).uniform_(0, self.noise)
            cuts = cuts + facs * torch.randn_like(cuts)
        return cuts
