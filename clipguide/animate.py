"""Animation: the zoom/pan/rotate feedback loop and restyling a video frame by frame.

Zoom is a callback on the engine: every `every` steps the current picture is moved (Kornia affine
warp), encoded back to the latent, and optimisation goes on from there (the classic infinite zoom).
Restyle runs a short optimisation per input frame, starting from that frame, and smooths the latents
across frames with an exponential moving average so the result does not flicker.  Both stream their
frames to the video writer as they are made."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from kornia.geometry.transform import get_affine_matrix2d, warp_affine
from tqdm import tqdm

from .engine import StepInfo, make_optimizer, optimize
from .errors import UserError
from .outputs import VideoWriter


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


class Zoom:
    """Engine callback: every `every` steps, move the picture and re-encode it into the latent."""

    def __init__(self, vqgan, optimizer, every: int, zoom=1.0, pan_x=0.0, pan_y=0.0, rotate=0.0):
        self.vqgan, self.optimizer, self.every = vqgan, optimizer, every
        self.motion = dict(zoom=zoom, pan_x=pan_x, pan_y=pan_y, rotate=rotate)

    def __call__(self, info: StepInfo) -> None:
        if info.step % self.every or info.step == info.steps - 1:
            return
        with torch.no_grad():
            moved = move(info.image.float(), **self.motion)
            info.z.copy_(self.vqgan.encode(moved))
        self.optimizer.state.clear()  # the old moments belong to the old picture


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


def restyle(session, prompt: str, video_in: str | Path, video_out: str | Path, steps: int, smooth: float,
            init_weight: float = 0.0, seed: int = 0, overwrite: bool = False, progress: bool | None = None,
            on_frame: Callable[[int, torch.Tensor], None] | None = None) -> tuple[Path, int]:
    """Restyle every frame of `video_in` toward `prompt`; write `video_out` at the input's frame rate.

    The output latent of frame t is `smooth * out[t-1] + (1 - smooth) * z[t]` (z[t]: frame t after
    `steps` steps from its own encoding).  Audio is not carried over."""
    from .api import Job
    from .images import fit

    if not 0 <= smooth < 1:
        raise UserError(f"--smooth must be in [0, 1) (got {smooth})", "use e.g. --smooth 0.5")
    reader, fps, count = read_video(video_in)
    writer = VideoWriter(video_out, fps, overwrite)
    vqgan, device = session.vqgan, session.device
    objective = session._objective([Job(prompt, seed, Path(video_out))], None)
    objective.init_weight = init_weight
    low, high = vqgan.latent_range()
    torch.manual_seed(seed)
    ema = None
    done = 0
    ok = False
    try:
        for frame in tqdm(reader, total=count, unit="frame", disable=progress is False or None):
            pic = fit(frame, (session.width, session.height), device)
            with torch.no_grad():
                z0 = vqgan.encode(pic)
            objective.z_init = z0
            z = z0.clone().requires_grad_(True)
            optimize(objective, z, make_optimizer(session.settings.optimizer, [z], session.settings.lr), steps,
                     latent_range=(low, high))
            with torch.no_grad():
                ema = z.detach() if ema is None else smooth * ema + (1 - smooth) * z.detach()
                out = objective.image(ema)
            if on_frame is not None:
                on_frame(done, out)
            writer.append(out[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
            done += 1
        ok = True
    finally:
        reader.close()
        path = writer.close(keep=ok)
    if done == 0:
        raise UserError(f"video {video_in} has no frames", "give a video with at least one frame")
    return path, done
