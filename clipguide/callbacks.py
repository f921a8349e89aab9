"""What hangs off the pipeline's callback: progress, frames, finite-loss checks and state files.

Each is a small callable taking a `StepInfo` that only observes (it never changes the latent or the
optimiser); `chain` runs several.  Only these decide when to read device tensors (a host sync), so
the loop itself never waits on the GPU.  `info.extra["phase"]` tells a search step ("search"), the
frames of the kept starts after a search ("replay") and the main loop ("main") apart."""

from __future__ import annotations

import math
import sys
import time
from typing import Callable, TextIO

import torch
from tqdm import tqdm

from .engine import StepInfo
from .errors import RunFailed


def chain(*callbacks: Callable | None) -> Callable[[StepInfo], None]:
    active = [c for c in callbacks if c is not None]

    def run(info: StepInfo) -> None:
        for c in active:
            c(info)

    return run


def phase(info: StepInfo) -> str:
    return info.extra.get("phase", "main")


class Progress:
    """In a terminal, a tqdm bar (step, it/s, loss); elsewhere (batch logs, SLURM, torchrun) a plain
    line on `stream` every `percent` % of the run: step, loss, it/s.  The loss is read from the
    device only every `every` steps."""

    def __init__(self, total: int, start: int = 0, every: int = 1, desc: str | None = None, enabled: bool = True,
                 stream: TextIO | None = None, tty: bool | None = None, percent: float = 5.0):
        self.every, self.total, self.desc = max(1, every), total, desc
        self.stream = stream or sys.stderr
        tty = self.stream.isatty() if tty is None else tty
        self.bar = tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True, file=self.stream,
                        disable=not (enabled and tty))
        self.lines = enabled and not tty
        self.line_every = max(1, math.ceil(total * percent / 100))
        self.last_loss: float | None = None
        self.t0, self.start = time.perf_counter(), start

    def __call__(self, info: StepInfo) -> None:
        if phase(info) == "replay":
            return
        self.bar.update(1)
        done = info.step + 1
        line_due = self.lines and (done % self.line_every == 0 or done == info.steps)
        if info.step % self.every == 0 or info.step == info.steps - 1 or line_due:
            self.last_loss = info.loss.mean().item()
            self.bar.set_postfix(loss=f"{self.last_loss:.4f}", refresh=False)
        if line_due:
            rate = (done - self.start) / max(1e-9, time.perf_counter() - self.t0)
            name = f"{self.desc}: " if self.desc else ""
            print(f"{name}step {done}/{info.steps} ({100 * done // info.steps}%), loss {self.last_loss:.4f}, "
                  f"{rate:.2f} it/s", file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()


class FiniteCheck:
    """Stops the run when the loss stops being finite, keeping the last latent that was good.

    Checked every `every` steps of the main loop (each check is a host sync)."""

    def __init__(self, every: int = 1):
        self.every = max(1, every)
        self.good_z: torch.Tensor | None = None
        self.good_step = -1

    def __call__(self, info: StepInfo) -> None:
        if phase(info) != "main" or (info.step % self.every and info.step != info.steps - 1):
            return
        value = float(info.loss.sum())
        if not math.isfinite(value):
            raise RunFailed(f"the loss became {value} at step {info.step + 1}")
        self.good_z = info.z.detach().clone()
        self.good_step = info.step + 1


class Frames:
    """Every `every` steps, hand each image of the batch to its FrameWriter (which encodes off-thread);
    after a search, the kept starts' frames of the search steps."""

    def __init__(self, writers: list, every: int):
        self.writers, self.every = writers, every

    def __call__(self, info: StepInfo) -> None:
        kind = phase(info)
        if kind == "search" or not self.every or info.step % self.every:
            return
        for i, w in enumerate(self.writers):
            if w is not None:
                w.put(info.step, info.extra["frames"][i].numpy() if kind == "replay" else info.image[i])


class Checkpoint:
    """Every `every` steps, write the resumable state through `save(steps_done)`."""

    def __init__(self, save: Callable[[int], None], every: int):
        self.save, self.every = save, every

    def __call__(self, info: StepInfo) -> None:
        done = info.step + 1
        if phase(info) != "replay" and self.every and done % self.every == 0 and done < info.steps:
            self.save(done)
