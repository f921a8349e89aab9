"""PNGs that carry their recipe: the JSON of every setting that made the picture, in a PNG text chunk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from ..files import atomic_write

META_KEY = "clipguide"


def to_uint8(image) -> np.ndarray:
    """[3, H, W] or [1, 3, H, W] float tensor in [0, 1] (or an HxWx3 uint8 array) -> HxWx3 uint8 array."""
    if hasattr(image, "detach"):
        image = image.detach().float().cpu()
        if image.dim() == 4:
            image = image[0]
        image = image.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    return np.ascontiguousarray(image)


def save_png(path: str | Path, image, recipe: dict | None = None, overwrite: bool = False) -> Path:
    """Write a PNG atomically, with `recipe` as JSON in a PNG text chunk."""
    info = PngImagePlugin.PngInfo()
    if recipe is not None:
        info.add_text(META_KEY, json.dumps(recipe, sort_keys=True))
    with atomic_write(path, overwrite) as tmp:
        Image.fromarray(to_uint8(image)).save(tmp, format="PNG", pnginfo=info)
    return Path(path)


def read_recipe(path: str | Path) -> dict | None:
    """The recipe stored in a clipguide PNG, or None."""
    with Image.open(path) as im:
        text = im.text.get(META_KEY) if hasattr(im, "text") else None
    return json.loads(text) if text else None
