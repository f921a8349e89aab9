"""Motion, the classic infinite zoom: every `every` steps the current picture is moved (zoom about
the centre, pan, rotate; a Kornia affine warp with reflected edges), encoded back into the latent,
and optimisation goes on from there.  The pipeline applies it as a named step between segments of
the loop; nothing here runs inside the loop."""

from __future__ import annotations

import torch
from kornia.geometry.transform import get_affine_matrix2d, warp_affine


def move(image: torch.Tensor, zoom: float = 1.0, pan_x: float = 0.0, pan_y: float = 0.0,
         rotate: float = 0.0) -> torch.Tensor:
    """Zoom about the centre (>1 moves in), move the content right/down by `pan_x`/`pan_y` pixels,
    rotate by `rotate` degrees; edges are reflected."""
    b, _, h, w = image.shape
    dev, dt = image.device, image.dtype
    center = torch.tensor([[(w - 1) / 2, (h - 1) / 2]], device=dev, dtype=dt).expand(b, 2)
    matrix = get_affine_matrix2d(torch.tensor([[pan_x, pan_y]], device=dev, dtype=dt).expand(b, 2), center,
                                 torch.full((b, 2), zoom, device=dev, dtype=dt),
                                 torch.full((b,), rotate, device=dev, dtype=dt))
    return warp_affine(image, matrix[:, :2], (h, w), padding_mode="reflection", align_corners=True)


def boundaries(done: int, steps: int, every: int) -> tuple[int, bool]:
    """(end of the loop's next segment, whether the picture moves there) for a run at `done` steps:
    the picture moves after each step whose index is a multiple of `every`, except the last."""
    end = (done // every) * every + 1
    if end <= done:
        end += every
    return (end, True) if end < steps else (steps, False)


def due(done: int, steps: int, every: int) -> bool:
    """Whether the picture moves once `done` steps are taken."""
    return 0 < done < steps and (done - 1) % every == 0


@torch.no_grad()
def apply(vqgan, z: torch.Tensor, optimizer, image: torch.Tensor, zoom=1.0, pan_x=0.0, pan_y=0.0,
          rotate=0.0) -> None:
    """Move `image` (the last step's picture), encode it into `z` in place and reset the optimiser's
    moments (they belong to the old picture)."""
    z.copy_(vqgan.encode(move(image.float(), zoom, pan_x, pan_y, rotate)))
    optimizer.state.clear()
