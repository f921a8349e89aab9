"""What the tiny model's two trainers share: the learning-rate schedule and the progress line."""

from __future__ import annotations

import math
import sys
import time
from typing import Callable


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def lr_at(step: int, steps: int, peak: float, warmup: int = 100) -> float:
    """Linear warm-up (at most a tenth of the run) then cosine decay to 5% of the peak."""
    warmup = max(1, min(warmup, steps // 10))
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def report(what: str, label: str, step: int, steps: int, history: list[float], every: int, t0: float,
           extra: Callable[[], str] = lambda: "") -> None:
    """Every `every` steps and at the last one, log the mean of the recent losses and the time so far."""
    if (step + 1) % every == 0 or step == steps - 1:
        recent = sum(history[-every:]) / len(history[-every:])
        log(f"{what} step {step + 1}/{steps} {label} {recent:.4f} {extra()} {time.time() - t0:.0f}s")
