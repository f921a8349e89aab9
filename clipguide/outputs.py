"""Everything clipguide writes: PNGs carrying their recipe, progress frames and videos.

Every file is written under a temporary name in its final folder and renamed into place, so a
crash or SIGKILL never leaves a truncated file under a final name, and no existing file is replaced
unless `overwrite` is asked for.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from .errors import UserError

META_KEY = "clipguide"


@contextlib.contextmanager
def atomic_write(path: str | Path, overwrite: bool = False):
    """Yield a temporary path beside `path`; on success move it into place, else delete it.

    Without `overwrite`, an existing `path` is never replaced (hard-link publish: exclusive)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise UserError(f"{path} already exists", "pass --overwrite or choose another -o/--output") from None
            except OSError:  # filesystems without hard links
                if path.exists():
                    raise UserError(f"{path} already exists",
                                    "pass --overwrite or choose another -o/--output") from None
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def to_uint8(image) -> np.ndarray:
    """[3, H, W] or [1, 3, H, W] float tensor in [0, 1] -> HxWx3 uint8 array."""
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


def check_writable(path: str | Path, overwrite: bool) -> None:
    """Fail before any work if `path` cannot be written (exists, or folder not writable)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists", "pass --overwrite or choose another -o/--output")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {path.parent}: folder is not writable", "choose another output folder")
