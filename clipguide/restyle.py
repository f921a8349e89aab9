"""Restyle a video: a named step on top of the loop, run like any run.

Each input frame is encoded into a latent, optimised toward the prompt for `--steps` steps from
there (pulled back toward the frame by `--init-weight`), and the output latents are smoothed across
frames with an exponential moving average (`--smooth`) so the result does not flicker.  Like every
run it shows progress, stops on a NaN loss (keeping the frames done), stops cleanly on Ctrl-C with
the frames so far published and a state file -- every frame done and the running average -- from
which `--resume` finishes exactly the video an uninterrupted run would have made.  Audio is not
carried over."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .callbacks import FiniteCheck, Progress, chain
from .engine import StepInfo, make_optimizer, optimize, restore_rng, rng_state
from .errors import Interrupted, RunFailed, UserError
from .files import fingerprints
from .guide.finish import finish_colours
from .images import fit
from .outputs.state import carried, pack_reel, save_state
from .outputs.video import VideoWriter, read_video
from .plan import Job, may_replace, state_path_for
from .prompts import slug


@dataclass
class Reel:
    """A restyle in progress: the output frames so far and the running average of their latents."""

    done: int = 0
    ema: torch.Tensor | None = None
    frames: list = field(default_factory=list)  # [H, W, 3] uint8 CPU tensors
    rng: dict | None = None  # the random generators as frame `done` began



@dataclass
class Restyled:
    path: Path
    frames: int


def restyle(session, job: Job, stop: Callable[[], bool] | None = None, progress: bool | None = None,
            resume: dict | None = None, on_frame: Callable[[int, torch.Tensor], None] | None = None) -> Restyled:
    """Restyle every frame of the settings' --restyle-video toward `job`'s prompt into `job.video`, at
    the input's frame rate.  The output latent of frame t is `smooth * out[t-1] + (1 - smooth) * z[t]`
    (z[t]: frame t after `steps` steps from its own encoding)."""
    with session.drawing(1):  # the memory check, --threads and the random generators: as for any run
        return _restyle(session, job, stop, progress, resume, on_frame)


def _restyle(session, job: Job, stop, progress, resume, on_frame) -> Restyled:
    s = session.settings
    reader, fps, count = read_video(s.restyle_video)
    carry = carried(resume)
    writer = VideoWriter(job.video, fps, may_replace(job.video, s.overwrite, carry.own))
    reel = Reel()
    if resume is not None:
        reel = Reel(int(resume["step"]), None if resume["ema"] is None else resume["ema"].to(session.device),
                    list(resume["frames"] if resume["frames"] is not None else []))
        for frame in reel.frames:
            writer.append(frame.numpy())
        restore_rng(resume["rng"], session.device)
    else:
        torch.manual_seed(job.seed)
    reel.rng = rng_state(session.device)
    bar = Progress(count or 0, reel.done, desc=slug(job.prompt, 30), enabled=progress is not False)
    keep = False
    try:
        _frames(session, session.objective([job]), reader, writer, reel, bar, stop, on_frame)
        keep = True
    except RunFailed as e:
        keep = True
        raise RunFailed(f"{e} in frame {reel.done + 1}; " + (f"kept the {reel.done} frames done in {job.video}"
                        if reel.done else "no frame was finished") + " -- try a lower --lr") from None
    finally:
        reader.close()
        bar.close()
        path = writer.close(keep=keep)
    state_file = state_path_for(Path(job.video))
    if stop is not None and stop() and (count is None or reel.done < count):
        own = carry.left | fingerprints([path])  # what its resume may replace
        state = pack_reel(reel.done, reel.ema, reel.frames, reel.rng, s, job, own)
        raise Interrupted(save_state(state_file, state), path)
    if reel.done == 0:
        raise UserError(f"video {s.restyle_video} has no frames", "give a video with at least one frame")
    if state_file.exists():
        state_file.unlink()
    return Restyled(path, reel.done)


def _frames(session, objective, reader, writer: VideoWriter, reel: Reel, bar, stop, on_frame) -> None:
    """Restyle the frames of `reader` from `reel.done` on, into `reel`, until the end or `stop()`."""
    s, vqgan = session.settings, session.vqgan
    finite, last = FiniteCheck(), {}
    observe = chain(finite, lambda info: last.update(loss=info.loss))
    for index, frame in enumerate(reader):
        if index < reel.done:
            continue
        z0 = vqgan.encode(fit(frame, (session.width, session.height), session.device))
        objective.z_init = z0
        z = z0.clone().requires_grad_(True)
        taken = optimize(objective, z, make_optimizer(s.optimizer, [z], s.lr), s.steps,
                         latent_range=vqgan.latent_range(), callback=observe, should_stop=stop)
        if taken < s.steps:
            return  # stopped within a frame: --resume does that frame again
        with torch.no_grad():
            reel.ema = z.detach() if reel.ema is None else s.smooth * reel.ema + (1 - s.smooth) * z.detach()
            out = finish_colours(objective.image(reel.ema), s.colours)
        if on_frame is not None:
            on_frame(reel.done, out)
        reel.frames.append(out[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu())
        writer.append(reel.frames[-1].numpy())
        bar(StepInfo(reel.done, max(bar.total, reel.done + 1), last["loss"], out, reel.ema, {"phase": "main"}))
        reel.done += 1
        reel.rng = rng_state(session.device)  # the next frame begins here: a stop inside it resumes from here
        if stop is not None and stop():
            return
