"""What hangs off the engine's callback: progress bar, frames, finite-loss checks and state files.

Each is a small callable taking a `StepInfo`; `chain` runs several.  Only these decide when to read
device tensors (a host sync), so the loop itself never waits on the GPU."""

from __future__ import annotations

import math
from typing import Callable

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


class Progress:
    """tqdm bar (step, it/s); the loss is read from the device only every `every` steps."""

    def __init__(self, total: int, start: int = 0, every: int = 1, desc: str | None = None, disable=None):
        self.every = max(1, every)
        self.bar = tqdm(total=total, initial=start, desc=desc, unit="step", disable=disable, dynamic_ncols=True)
        self.last_loss: float | None = None

    def __call__(self, info: StepInfo) -> None:
        self.bar.update(1)
        if info.step % self.every == 0 or info.step == info.steps - 1:
            self.last_loss = info.loss.mean().item()
            self.bar.set_postfix(loss=f"{self.last_loss:.4f}", refresh=False)

    def close(self) -> None:
        self.bar.close()


class FiniteCheck:
    """Stops the run when the loss stops being finite, keeping the last latent that was good.

    Checked every `every` steps (each check is a host sync)."""

    def __init__(self, every: int = 1):
        self.every = max(1, every)
        self.good_z: torch.Tensor | None = None
        self.good_step = -1

    def __call__(self, info: StepInfo) -> None:
        if info.step % self.every and info.step != info.steps - 1:
            return
        value = float(info.loss.sum())
        if not math.isfinite(value):
            raise RunFailed(f"the loss became {value} at step {info.step + 1}")
        self.good_z = info.z.detach().clone()
        self.good_step = info.step + 1


class Frames:
    """Every `every` steps, hand each image of the batch to its FrameWriter (which encodes off-thread)."""

    def __init__(self, writers: list, every: int):
        self.writers, self.every = writers, every

    def __call__(self, info: StepInfo) -> None:
        if self.every and info.step % self.every == 0:
            for i, w in enumerate(self.writers):
                if w is not None:
                    w.put(info.step, info.image[i])


class Checkpoint:
    """Every `every` steps, write the resumable state through `save(steps_done)`."""

    def __init__(self, save: Callable[[int], None], every: int):
        self.save, self.every = save, every

    def __call__(self, info: StepInfo) -> None:
        done = info.step + 1
        if self.every and done % self.every == 0 and done < info.steps:
            self.save(done)
