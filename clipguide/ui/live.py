"""The live preview of a run: its picture every few steps, the step, the speed and the loss curve.

`Live.on_step` is the `on_step` observer of `Session.run` (it runs on the worker thread); pages read
`Live.view()`, a copy taken under a lock.  The picture is taken at most every `every` seconds (and at
the last step), so a fast model does not spend its time making previews; the loss of image 0 is kept
for every step on the CPU (where reading it costs nothing) and at each preview elsewhere.  During a
search of random starts the preview and the curve follow the first start of the first image; the
search's replay of frames is not shown again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..outputs.pictures import to_uint8


@dataclass(frozen=True)
class LiveView:
    version: int  # grows with every new preview
    step: int  # steps done
    steps: int
    phase: str  # "search" or "main"
    rate: float | None  # steps per second
    loss: float | None
    image: np.ndarray | None  # HxWx3 uint8
    curve: tuple[tuple[int, float, str], ...] = field(default=())  # (step, loss, phase)


class Live:
    def __init__(self, every: float = 0.25):
        self.every = every
        self._lock = threading.Lock()
        self.version = self.step = self.steps = 0
        self.phase = ""
        self.rate: float | None = None
        self.image: np.ndarray | None = None
        self.curve: list[tuple[int, float, str]] = []
        self._shown_at = float("-inf")
        self._mark: tuple[float, int] | None = None  # (time, step) of the last rate measurement

    def on_step(self, info) -> None:
        phase = info.extra.get("phase", "main")
        if phase == "replay" or info.decoded is None:
            return
        now = time.monotonic()
        due = now - self._shown_at >= self.every or info.step + 1 >= info.steps
        point = None
        if due or info.loss.device.type == "cpu":
            point = (info.step + 1, float(info.loss[0]), phase)
        image = to_uint8(info.image[0]) if due else None
        with self._lock:
            if info.step + 1 < self.step:  # the next picture of a batch: a new curve
                self.curve, self._mark, self.rate = [], None, None
            self.step, self.steps, self.phase = info.step + 1, info.steps, phase
            if point is not None:
                self.curve.append(point)
            if image is not None:
                self._measure(now)
                self.image, self._shown_at = image, now
                self.version += 1

    def _measure(self, now: float) -> None:
        if self._mark is not None and now > self._mark[0] and self.step > self._mark[1]:
            fresh = (self.step - self._mark[1]) / (now - self._mark[0])
            self.rate = fresh if self.rate is None else 0.5 * self.rate + 0.5 * fresh
        self._mark = (now, self.step)

    def view(self) -> LiveView:
        with self._lock:
            return LiveView(self.version, self.step, self.steps, self.phase, self.rate,
                            self.curve[-1][1] if self.curve else None, self.image, tuple(self.curve))
