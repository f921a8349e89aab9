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
import socket
import threading
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from .errors import UserError

META_KEY = "clipguide"


HOST = socket.gethostname().replace(".", "-")


def temp_path(path: Path) -> Path:
    """A hidden temporary name beside `path`, keeping its suffix (ffmpeg picks formats by it)."""
    return path.with_name(f".{path.stem}.{HOST}.{os.getpid()}.{threading.get_ident()}.tmp{path.suffix}")


def sweep_temps(folder: str | Path) -> int:
    """Delete temporary files that killed processes of this host left in `folder`; returns how many."""
    removed = 0
    for tmp in Path(folder).glob(f".*.{HOST}.*.tmp*"):
        try:
            pid = int(tmp.name.split(f".{HOST}.", 1)[1].split(".")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed += 1
        except (ValueError, IndexError, PermissionError):
            continue
    return removed


def publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move a finished temporary file into place (fsynced); never replace `path` unless `overwrite`."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # exclusive: fails if path exists
    except FileExistsError:
        raise UserError(f"{path} already exists", "pass --overwrite or choose another output name") from None
    except OSError:  # filesystems without hard links
        if path.exists():
            raise UserError(f"{path} already exists", "pass --overwrite or choose another output name") from None
        os.replace(tmp, path)
    else:
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_write(path: str | Path, overwrite: bool = False):
    """Yield a temporary path beside `path`; on success publish it, on failure delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        publish(tmp, path, overwrite)
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


class VideoWriter:
    """Streams frames into an mp4 (imageio-ffmpeg) or gif under a temporary name; `close` publishes."""

    def __init__(self, path: str | Path, fps: float, overwrite: bool = False):
        import imageio.v2 as iio

        self.path, self.overwrite = Path(path), overwrite
        if self.path.suffix.lower() not in (".mp4", ".gif"):
            raise UserError(f"cannot write video {self.path}: unknown format", "use a .mp4 or .gif file name")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_path(self.path)
        if self.path.suffix.lower() == ".mp4":
            self.writer = iio.get_writer(self.tmp, format="FFMPEG", fps=fps, codec="libx264", quality=8,
                                         pixelformat="yuv420p", macro_block_size=1)
        else:
            self.writer = iio.get_writer(self.tmp, format="GIF", mode="I", duration=1000 / fps, loop=0)
        self.frames = 0

    def append(self, frame: np.ndarray) -> None:
        self.writer.append_data(frame)
        self.frames += 1

    def close(self, keep: bool = True) -> Path | None:
        self.writer.close()
        try:
            if keep and self.frames:
                publish(self.tmp, self.path, self.overwrite)
                return self.path
            return None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)


class FrameWriter:
    """Saves progress frames (PNGs and/or a video) on a background thread, off the optimisation loop.

    `put` takes the frame to the CPU as uint8 and returns; a writer thread encodes.  Errors in the
    thread are raised by the next `put` or by `close`."""

    def __init__(self, frames_dir: str | Path | None = None, video: VideoWriter | None = None,
                 pattern: str = "{step:05d}.png", overwrite: bool = False, maxsize: int = 64):
        self.frames_dir = Path(frames_dir) if frames_dir else None
        self.video, self.pattern, self.overwrite = video, pattern, overwrite
        self.queue: queue.Queue = queue.Queue(maxsize)
        self.error: BaseException | None = None
        self.written: list[Path] = []
        self.thread = threading.Thread(target=self._work, name="clipguide-frames", daemon=True)
        self.thread.start()

    def _work(self):
        while (item := self.queue.get()) is not None:
            if self.error is not None:
                continue
            step, frame = item
            try:
                if self.frames_dir is not None:
                    self.written.append(save_png(self.frames_dir / self.pattern.format(step=step), frame,
                                                 overwrite=self.overwrite))
                if self.video is not None:
                    self.video.append(frame)
            except BaseException as e:  # handed to the loop's thread
                self.error = e

    def _check(self):
        if self.error is not None:
            raise self.error

    def put(self, step: int, image) -> None:
        self._check()
        if hasattr(image, "detach"):
            image = image.detach()
            image = image[0] if image.dim() == 4 else image
            image = image.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
        self.queue.put((step, np.ascontiguousarray(image)))

    def close(self, keep_video: bool = True) -> Path | None:
        self.queue.put(None)
        self.thread.join()
        video = self.video.close(keep_video and self.error is None) if self.video is not None else None
        self._check()
        return video


def save_state(path: str | Path, state: dict) -> Path:
    """Write a resumable run state (latent, optimiser, step, RNG, settings) atomically."""
    import torch

    with atomic_write(path, overwrite=True) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_state(path: str | Path) -> dict:
    """Read a state file written by `save_state` (weights-only unpickling: no code runs)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"state file not found: {path}", "give the .state.pt file an interrupted run wrote")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"state file {path} is unreadable ({type(e).__name__})",
                        "give the .state.pt file an interrupted run wrote") from e
    if not isinstance(state, dict) or state.get("format") != "clipguide-state-1":
        raise UserError(f"{path} is not a clipguide state file", "give the .state.pt file an interrupted run wrote")
    return state
