"""The losses of the method: weighted spherical distance to prompt embeddings, the init-image pull,
and a total-variation smoothness term."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def spherical_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared great-circle distance between the normalised vectors of x and y (broadcasting)."""
    x = F.normalize(x, dim=-1)
    y = F.normalize(y, dim=-1)
    return (x - y).norm(dim=-1).div(2).arcsin().pow(2).mul(2)


def prompt_loss(image_emb: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                stops: torch.Tensor) -> torch.Tensor:
    """Per-image loss [B] from cutout embeddings [B, N, D] and prompt embeddings [B, P, D].

    For each prompt, `weight * distance` is averaged over the cutouts; a negative weight pushes
    away.  Where the signed distance is below the prompt's `stop`, its gradient is cut off (its
    value is kept, so the loss still reports it).  Prompts with weight 0 do nothing."""
    d = spherical_distance(image_emb[:, :, None, :], targets[:, None, :, :])  # [B, N, P]
    signed = d * weights.sign()[:, None, :]
    floored = torch.maximum(signed, stops[:, None, :].to(signed.dtype))
    signed = floored + (signed - floored).detach()
    return (weights.abs()[:, None, :] * signed).mean(1).sum(-1)


def init_loss(z: torch.Tensor, z_init: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-image pull of the latent back toward the init image's latent [B]."""
    return (z - z_init).pow(2).flatten(1).mean(1) * (weight / 2)


def tv_loss(image: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-image total variation [B]: mean absolute difference between neighbouring pixels.

    It grows with the length of colour edges, so it favours a few flat regions over a texture of
    many small pieces that CLIP may like just as much."""
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs().flatten(1).mean(1)
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs().flatten(1).mean(1)
    return (dx + dy) * weight


def saturation_loss(image: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-image colourfulness [B]: the mean over pixels of max - min of their RGB (0 for greys)."""
    return (image.amax(1) - image.amin(1)).flatten(1).mean(1) * weight


def symmetry_loss(image: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-image left-right asymmetry [B]: mean absolute difference from the mirror image."""
    return (image - image.flip(-1)).abs().flatten(1).mean(1) * weight


def palette_loss(image: torch.Tensor, weight: float, colours: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Per-image pull toward a palette [B]: the mean over pixels of the squared distance to the nearest
    of each image's `colours` [B, K, 3]; `present` [B] (0 or 1) switches the pull off for images
    without a palette."""
    d = (image[:, None] - colours.to(image)[:, :, :, None, None]).pow(2).sum(2)  # [B, K, H, W]
    return d.amin(1).flatten(1).mean(1) * weight * present.to(image)


# The losses on the picture itself, by the option that weighs each (a weight of 0 leaves it out).
IMAGE_LOSSES = {"tv_weight": tv_loss, "saturation_weight": saturation_loss, "symmetry_weight": symmetry_loss}
