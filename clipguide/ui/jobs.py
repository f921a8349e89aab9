"""The web UI's job queue: runs live in the server process, one at a time, whatever page started them.

A `Task` is one piece of work (a picture, a resume, a batch) with its status, its last line of news
and its live progress.  `JobQueue` runs tasks in the order they came, on one worker thread, so one
device never draws two things at once; pages only read it (a reloaded page or a second tab sees the
same tasks), so closing a page never loses a run.  Stop works like Ctrl-C: the running task's stop
flag is set and the run saves its image and state.  Nothing here imports torch or Gradio: the queue
is tested alone, with plain callables as work.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from ..errors import Interrupted, RunFailed, UserError
from .live import Live

QUEUED, RUNNING, DONE, STOPPED, FAILED, BAD, CANCELLED = (
    "queued", "running", "done", "stopped", "failed", "bad input", "cancelled")
ENDED = (DONE, STOPPED, FAILED, BAD, CANCELLED)


class Work(Protocol):
    """What a task runs: `kind` ("draw", "resume", "batch"), `title` (what the page calls it), and
    `run(task)`, which reads `task.stopped` and reports through `task.live` and `task.log`, and
    returns (outputs, one line saying what was made)."""

    kind: str
    title: str

    def run(self, task: "Task") -> tuple[list[Path], str]: ...


@dataclass
class Task:
    id: int
    work: Any  # a Work
    owner: str | None = None  # the secret of the page that submitted it: only that page may stop it
    status: str = QUEUED
    line: str = ""  # the last news: the result, the error, where the state was saved
    outputs: list[Path] = field(default_factory=list)
    state_path: Path | None = None  # after a stop: the state file a resume goes on from
    image_path: Path | None = None  # after a stop: the picture so far
    live: Live = field(default_factory=Live)
    logs: list[str] = field(default_factory=list)
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def kind(self) -> str:
        return self.work.kind

    @property
    def title(self) -> str:
        return self.work.title

    def stopped(self) -> bool:
        """True once Stop was pressed (the run's stop flag)."""
        return self._stop.is_set()

    def log(self, message: str) -> None:
        self.logs.append(message)
        del self.logs[:-50]


class JobQueue:
    """Tasks in submission order; one worker thread runs them one at a time."""

    def __init__(self, log: Callable[[str], None] = lambda message: None):
        self._tasks: list[Task] = []
        self._ids = itertools.count(1)
        self._wake = threading.Condition()
        self._closed = False
        self._log = log
        self._worker = threading.Thread(target=self._serve, name="clipguide-ui-worker", daemon=True)
        self._worker.start()

    # -- what pages call ---------------------------------------------------------------------
    def submit(self, work: Work, owner: str | None = None) -> Task:
        with self._wake:
            if self._closed:
                raise RuntimeError("the queue is closed")
            task = Task(next(self._ids), work, owner)
            self._tasks.append(task)
            self._wake.notify_all()
        return task

    def stop(self, task_id: int | None = None) -> Task | None:
        """Stop the running task (or the given one): a running task saves and stops like Ctrl-C, a
        queued one is cancelled.  Returns the task, or None when there was nothing to stop."""
        with self._wake:
            task = self.get(task_id) if task_id is not None else self.running()
            if task is None or task.status not in (QUEUED, RUNNING):
                return None
            if task.status == QUEUED:
                task.status, task.line, task.ended = CANCELLED, "cancelled before it started", time.time()
            task._stop.set()
            return task

    def get(self, task_id: int) -> Task | None:
        return next((t for t in self._tasks if t.id == task_id), None)

    def tasks(self) -> list[Task]:
        return list(self._tasks)

    def running(self) -> Task | None:
        return next((t for t in self._tasks if t.status == RUNNING), None)

    def queued(self) -> list[Task]:
        return [t for t in self._tasks if t.status == QUEUED]

    def focus(self) -> Task | None:
        """The task a page shows: the running one, else the one that ended last, else the next queued."""
        ended = [t for t in self._tasks if t.status in ENDED and t.ended is not None]
        return self.running() or (max(ended, key=lambda t: t.ended) if ended else None) or \
            next(iter(self.queued()), None)

    def latest(self, kind: str) -> Task | None:
        return next((t for t in reversed(self._tasks) if t.kind == kind), None)

    def ended_count(self) -> int:
        return sum(t.status in ENDED for t in self._tasks)

    def close(self, wait: float = 60.0) -> None:
        """Cancel what is queued, stop what runs (it saves its state), and wait for the worker."""
        with self._wake:
            self._closed = True
            for task in self._tasks:
                if task.status == QUEUED:
                    task.status, task.line, task.ended = CANCELLED, "cancelled: the server stopped", time.time()
            running = self.running()
            if running is not None:
                running._stop.set()
            self._wake.notify_all()
        self._worker.join(wait)

    # -- the worker ----------------------------------------------------------------------------
    def _next(self) -> Task | None:
        with self._wake:
            while not self._closed:
                task = next(iter(self.queued()), None)
                if task is not None:
                    task.status, task.started = RUNNING, time.time()
                    return task
                self._wake.wait()
        return None

    def _serve(self) -> None:
        while (task := self._next()) is not None:
            self._log(f"#{task.id} {task.kind}: {task.title}")
            self._execute(task)
            self._log(f"#{task.id} {task.status}: {task.line}")

    def _execute(self, task: Task) -> None:
        try:
            task.outputs, line = task.work.run(task)
            status = DONE
        except Interrupted as e:
            task.state_path, task.image_path = Path(e.state_path), Path(e.image_path)
            status, line = STOPPED, f"stopped at step {task.live.step}: picture so far in {e.image_path}, " \
                                    f"state in {e.state_path}"
        except UserError as e:
            status, line = BAD, e.line()
        except RunFailed as e:
            status, line = FAILED, str(e)
        except Exception as e:  # a bug or an environment failure: one line, the worker goes on
            status, line = FAILED, f"{type(e).__name__}: {e}"
        with self._wake:
            task.status, task.line, task.ended = status, line, time.time()
