"""Reading the pictures a user gives (init image, image prompts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError


def fit(array: np.ndarray, size: tuple[int, int], device="cpu") -> torch.Tensor:
    """HxWx3 uint8 array -> [1, 3, h, w] in [0, 1], scaled to cover `size` (w, h) and centre-cropped."""
    im = ImageOps.fit(Image.fromarray(array).convert("RGB"), size, Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].to(device)


def load_image(path: str | Path, what: str = "image", size: tuple[int, int] | None = None,
               device="cpu") -> torch.Tensor:
    """A picture file -> [1, 3, H, W] float in [0, 1]; with `size` (w, h), scaled to cover and centre-cropped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}", "check the path")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            if size is not None:
                im = ImageOps.fit(im, size, Image.Resampling.LANCZOS)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"{what} {path} is not a readable image ({type(e).__name__})",
                        "give a PNG, JPEG or other picture file") from None
    return torch.from_numpy(arr).permute(2, 0, 1)[None].to(device)
