"""`--colours N`: finish a picture in at most N colours, soft edges kept.

The picture's N main colours are found by k-means over its pixels (the first centre is the median
of its outermost ring, each further one the pixel farthest from those found, then Lloyd's
iterations, and each colour is the median of its pixels at the end); each pixel is then moved to
the nearest point of the segments between two of those colours.  A pixel that blends two of them
(a soft edge) stays a blend; a pixel of some other colour (a speck) becomes one of them or their
blend.  Only what is written or shown is finished: the guidance scores the decoder's own picture,
so the gradients are those of the run without it.
"""

from __future__ import annotations

import torch

ITERATIONS = 10  # Lloyd's iterations at most; they stop early when no pixel changes its colour


def _first_centres(pixels: torch.Tensor, ring: torch.Tensor, n: int) -> torch.Tensor:
    """[B, n, 3]: the ring's median colour, then each time the pixel farthest from the centres so far."""
    centres = [ring.median(1).values]
    nearest = (pixels - centres[0][:, None]).pow(2).sum(-1)
    for _ in range(n - 1):
        far = nearest.argmax(1)
        centres.append(pixels[torch.arange(len(pixels)), far])
        nearest = torch.minimum(nearest, (pixels - centres[-1][:, None]).pow(2).sum(-1))
    return torch.stack(centres, 1)


def main_colours(pixels: torch.Tensor, ring: torch.Tensor, n: int) -> torch.Tensor:
    """[B, P, 3] pixels (and [B, R, 3] of the outer ring) -> [B, n, 3] their n main colours."""
    centres = _first_centres(pixels, ring, n)
    owner = None
    for _ in range(ITERATIONS):
        new = torch.cdist(pixels, centres).argmin(-1)  # [B, P]
        if owner is not None and torch.equal(new, owner):
            break
        owner = new
        hits = torch.nn.functional.one_hot(owner, n).to(pixels.dtype)  # [B, P, n]
        count = hits.sum(1)[..., None]  # [B, n, 1]
        means = hits.transpose(1, 2) @ pixels / count.clamp_min(1)
        centres = torch.where(count > 0, means, centres)  # a colour no pixel chose keeps its place
    return _medians(pixels, owner, centres)


def _medians(pixels: torch.Tensor, owner: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Each colour as the per-channel median of its pixels: the flat colour itself, where a mean would
    lean toward the blends along its edges."""
    out = centres.clone()
    for b in range(len(pixels)):
        for k in range(centres.shape[1]):
            mine = pixels[b][owner[b] == k]
            if len(mine):
                out[b, k] = mine.median(0).values
    return out


def onto_blends(pixels: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Each pixel moved to the nearest point of the segments between two of `centres` [B, n, 3]."""
    best = centres[:, :1].expand_as(pixels).clone()
    best_d = (pixels - best).pow(2).sum(-1)
    n = centres.shape[1]
    for i in range(n):
        for j in range(i + 1, n):
            a, b = centres[:, i:i + 1], centres[:, j:j + 1]
            ab = b - a
            t = ((pixels - a) * ab).sum(-1, keepdim=True) / ab.pow(2).sum(-1, keepdim=True).clamp_min(1e-12)
            point = a + t.clamp(0, 1) * ab
            d = (pixels - point).pow(2).sum(-1)
            closer = d < best_d
            best = torch.where(closer[..., None], point, best)
            best_d = torch.where(closer, d, best_d)
    return best


@torch.no_grad()
def finish_colours(images: torch.Tensor, n: int) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> the same pictures in at most `n` colours and their blends (n = 0: as
    they are; n = 1: one flat colour)."""
    if not n:
        return images
    b, c, h, w = images.shape
    x = images.detach().float()
    pixels = x.flatten(2).transpose(1, 2)  # [B, P, 3]
    ring = torch.cat([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], -1).transpose(1, 2)
    centres = main_colours(pixels, ring, n)
    out = onto_blends(pixels, centres) if n > 1 else centres.expand_as(pixels)
    return out.transpose(1, 2).reshape(b, c, h, w).to(images.dtype)
