"""Reading the pictures a user gives (init image, image prompts, video frames).

Every bit depth is read at its own scale (a 16-bit picture is not clipped to white), a picture too
large to decode safely is refused with one line, and EXIF orientation is applied."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError

FIX = "give a PNG, JPEG or other picture file"


def fit(array: np.ndarray, size: tuple[int, int], device="cpu") -> torch.Tensor:
    """HxWx3 uint8 array -> [1, 3, h, w] in [0, 1], scaled to cover `size` (w, h) and centre-cropped."""
    im = ImageOps.fit(Image.fromarray(array).convert("RGB"), size, Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].to(device)


def _rgb(im: Image.Image) -> Image.Image:
    """An 8-bit RGB picture of `im`, whatever its mode; 16- and 32-bit grey are scaled, not clipped."""
    if im.mode.startswith("I") or im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) <= 65535 else float(a.max())
        top = 1.0 if im.mode == "F" else top
        im = Image.fromarray(np.clip(a / top * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    return im.convert("RGB")


@contextlib.contextmanager
def opened(path: str | Path, what: str):
    """`Image.open(path)`; a file that is not a readable picture, or one too large to decode safely
    (when opened or while used), is one line that calls it `what`."""
    try:
        with Image.open(path) as im:
            yield im
    except Image.DecompressionBombError:
        raise UserError(f"{what} is too large to decode safely (over {2 * Image.MAX_IMAGE_PIXELS:,} pixels)",
                        "scale it down first, e.g. to 4096 pixels on its long side") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"{what} is not a readable image ({type(e).__name__})", FIX) from None


def load_image(path: str | Path, what: str = "image", size: tuple[int, int] | None = None,
               device="cpu") -> torch.Tensor:
    """A picture file -> [1, 3, H, W] float in [0, 1]; with `size` (w, h), scaled to cover and centre-cropped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}", "check the path")
    with opened(path, f"{what} {path}") as im:
        im = _rgb(ImageOps.exif_transpose(im))
        if size is not None:
            im = ImageOps.fit(im, size, Image.Resampling.LANCZOS)
        arr = np.asarray(im, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].to(device)


def noise_picture(kind: str, seed: int, width: int, height: int, device="cpu") -> torch.Tensor:
    """A start for --init-noise, [1, 3, H, W] in [0, 1]: random pixels, or a gradient between two
    random colours across a random direction; the same seed gives the same picture."""
    rng = np.random.default_rng(seed)
    if kind == "pixels":
        arr = rng.random((height, width, 3), dtype=np.float32)
    elif kind == "gradient":
        a, b = rng.random(3, dtype=np.float32), rng.random(3, dtype=np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        t = (np.cos(angle) * x / max(1, width - 1) + np.sin(angle) * y / max(1, height - 1))
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
        arr = a + (b - a) * t[..., None]
    else:
        raise ValueError(f"unknown noise kind {kind!r}")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1)[None].to(device)
