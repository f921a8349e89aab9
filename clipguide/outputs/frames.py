"""Progress frames: numbered PNGs and/or a video, encoded on a background thread, off the loop."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np

from ..plan import frame_path
from .pictures import save_png
from .video import VideoWriter


class FrameWriter:
    """Saves progress frames (PNGs and/or a video) on a background thread, off the optimisation loop.

    `put` takes the frame to the CPU as uint8 and returns; a writer thread encodes.  Errors in the
    thread are raised by the next `put` or by `close`.  Frame files are never replaced unless
    `overwrite`.  `shown` keeps every frame the video was given, for a state file: a resumed run
    `replay`s them into its video first, so the video holds every frame of the run."""

    def __init__(self, frames_dir: str | Path | None = None, video: VideoWriter | None = None,
                 overwrite: bool = False, maxsize: int = 64):
        self.frames_dir = Path(frames_dir) if frames_dir else None
        self.video, self.overwrite = video, overwrite
        self.queue: queue.Queue = queue.Queue(maxsize)
        self.error: BaseException | None = None
        self.written: list[Path] = []
        self.shown: list[np.ndarray] = []
        self.thread = threading.Thread(target=self._work, name="clipguide-frames", daemon=True)
        self.thread.start()

    def _work(self):
        while (item := self.queue.get()) is not None:
            if self.error is not None:
                continue
            step, frame = item
            try:
                if self.frames_dir is not None and step is not None:
                    self.written.append(save_png(frame_path(self.frames_dir, step), frame, overwrite=self.overwrite))
                if self.video is not None:
                    self.video.append(frame)
            except BaseException as e:  # handed to the loop's thread
                self.error = e

    def _check(self):
        if self.error is not None:
            raise self.error

    def put(self, step: int, image) -> None:
        """Queue one frame: a [3, H, W] (or [1, 3, H, W]) float tensor in [0, 1], or an HxWx3 uint8 array."""
        self._check()
        if hasattr(image, "detach"):
            image = image.detach()
            image = image[0] if image.dim() == 4 else image
            image = image.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
        self._queue(step, np.ascontiguousarray(image))

    def replay(self, frames) -> None:
        """Frames (HxWx3 uint8) an interrupted run's video had shown: into the video only (their frame
        files, if any, were written then)."""
        for frame in frames:
            self._queue(None, np.ascontiguousarray(frame))

    def _queue(self, step: int | None, frame: np.ndarray) -> None:
        if self.video is not None:
            self.shown.append(frame)
        self.queue.put((step, frame))

    def close(self, keep_video: bool = True) -> Path | None:
        self.queue.put(None)
        self.thread.join()
        video = self.video.close(keep_video and self.error is None) if self.video is not None else None
        self._check()
        return video
