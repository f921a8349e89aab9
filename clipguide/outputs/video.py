"""Videos: written as frames come (imageio-ffmpeg for .mp4, Pillow for .gif) under a temporary name
and published when closed; and read frame by frame for restyling."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..files import publish, temp_path
from ..plan import check_video_name


class VideoWriter:
    """Streams frames into an mp4 (imageio-ffmpeg) or gif under a temporary name; `close` publishes."""

    def __init__(self, path: str | Path, fps: float, overwrite: bool = False):
        import imageio.v2 as iio

        self.path, self.overwrite = Path(path), overwrite
        check_video_name(self.path)
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


def read_video(path: str | Path):
    """(frame iterator of HxWx3 uint8 arrays, fps, frame count or None)."""
    import imageio.v2 as iio

    path = Path(path)
    if not path.is_file():
        raise UserError(f"video not found: {path}", "check the path given to --restyle-video")
    try:
        reader = iio.get_reader(path, format="FFMPEG")
        meta = reader.get_meta_data()
    except Exception as e:  # imageio raises many kinds for non-videos
        raise UserError(f"cannot read video {path} ({type(e).__name__})", "give an .mp4, .mov, .webm ... file") from None
    fps = float(meta.get("fps") or 25.0)
    try:
        count = reader.count_frames()
    except Exception:  # some containers cannot say
        count = None
    return reader, fps, count
