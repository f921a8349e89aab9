"""Cutouts: many random square crops of the image, resized to CLIP's input size and augmented.

One class for every variant: the crop-size distribution (`cut_pow`, `cut_min`, `cut_max`), the
augment list (Kornia modules, chosen by name from `augments.AUGMENTS`) and the noise are options.  All cutouts of all
images are cut in one batched `roi_align` call (adaptive area sampling, so downscaling does not
alias) and augmented in one batched Kornia call; there is no per-cutout Python loop.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import roi_align

from .augments import DEFAULT_AUGMENTS, build


class Cutouts(nn.Module):
    """image [B, 3, H, W] in [0, 1] -> cutouts [B * cutn, 3, cut_size, cut_size] (image-major).

    Crop sides are ``min + (max - min) * u ** cut_pow`` with u uniform, between `cut_min` and
    `cut_max` (fractions of the image's short side; by default from CLIP's input size, or the
    whole short side if smaller, up to the whole short side)."""

    def __init__(self, cut_size: int, cutn: int, cut_pow: float = 1.0, augments=DEFAULT_AUGMENTS,
                 noise: float = 0.1, cut_min: float | None = None, cut_max: float = 1.0):
        super().__init__()
        if cutn < 1 or cut_pow <= 0 or (cut_min is not None and not 0 < cut_min <= cut_max <= 1):
            raise ValueError(f"cutouts need cutn >= 1, cut_pow > 0, 0 < cut_min <= cut_max <= 1 "
                             f"(got {cutn}, {cut_pow}, {cut_min}, {cut_max})")
        self.cut_size, self.cutn, self.cut_pow = cut_size, cutn, cut_pow
        self.cut_min, self.cut_max, self.noise = cut_min, cut_max, noise
        self.augment = nn.Sequential(*(build(name) for name in augments))

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
