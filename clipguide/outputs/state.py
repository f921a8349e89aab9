"""The resumable state of a run, in both directions: one module owns the file format.

A state file holds the pipeline's drawing (latents, optimiser, step, RNG, and during a search of
random starts every start with its loss history and frames), the run's resolved settings (and
which of them the user gave), its jobs (prompt, seed, absolute output paths), the frames each job's
video has shown so far, and the files the interrupted run left at its output paths, with their sha256
(`own`): a resume may replace those, and the state file it was read from, and nothing else without
--overwrite (`carried`).  It is written atomically and read with weights-only unpickling, so loading
one runs no code."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..engine import make_optimizer, rng_state
from ..errors import UserError
from ..files import atomic_write, sha256_of
from ..options import BY_NAME, SEED_MAX, SETTINGS
from ..pipeline import MAIN, Drawing

FORMAT = "clipguide-state-2"
READABLE = ("clipguide-state-1", FORMAT)  # version 1: before the search and motion were resumable
FIX = "give the .state.pt file an interrupted run wrote"


@dataclass
class Carried:
    """What a state passes on to its resume besides the drawing (read back: what a resumed run takes over)."""

    left: dict = field(default_factory=dict)  # {path: sha256}: files its run left at its outputs, unchanged since
    shown: list = field(default_factory=list)  # per job: the frames (HxWx3 uint8) its video was given, or None
    recipes: list | None = None  # per job: its picture's recipe (a batch goes on only from a state of the same)
    file: str | None = None  # the state file it was read from

    @property
    def own(self) -> frozenset[Path]:
        """What the resume may replace without --overwrite: the files its run left, and its state file."""
        return frozenset(Path(p).resolve() for p in [*self.left, *([self.file] if self.file else [])])


def carried(state: dict | None) -> Carried:
    """What a resume of `state` (None: a fresh run) takes over; a file the state names as its run's (`own`)
    counts only while it still holds what that run wrote."""
    if state is None:
        return Carried()
    own = state.get("own")
    left = {p: h for p, h in own.items() if _holds(p, h)} if isinstance(own, dict) else {}
    return Carried(left, list(state.get("video_frames") or []), state.get("recipes"), state.get("file"))


def _holds(path, digest) -> bool:
    try:
        return Path(path).is_file() and sha256_of(path) == digest
    except (OSError, TypeError):
        return False


def _path(p) -> str | None:
    return None if p is None else str(Path(p).absolute())


def _run(settings, jobs, carry: Carried | None) -> dict:
    carry = carry or Carried()
    return {"format": FORMAT, "version": __version__, "own": dict(carry.left), "recipes": carry.recipes,
            "video_frames": [torch.from_numpy(np.stack(f)) if f else None for f in carry.shown or [None] * len(jobs)],
            "settings": {o.name: getattr(settings, o.name) for o in SETTINGS},
            "given": sorted(getattr(settings, "given", ()) or ()),
            "jobs": [{"prompt": j.prompt, "seed": j.seed, "output": _path(j.output),
                      "frames_dir": _path(j.frames_dir), "video": _path(j.video or None)} for j in jobs]}


def pack(d: Drawing, step: int, settings, jobs, carry: Carried | None = None) -> dict:
    """A state of the run of `jobs` whose drawing `d` has taken `step` steps (called from inside a
    step's callback, the drawing has not counted that step yet), with the random generators as they
    are now, and what it passes on to its resume (`carry`)."""
    return _run(settings, jobs, carry) | {
        "phase": d.phase, "step": step, "z": d.z.detach().cpu(), "z_init": None if d.z_init is None else d.z_init.cpu(),
        "optimizer": d.optimizer.state_dict(), "history": [h.cpu() for h in d.history], "shots": list(d.shots),
        "moved_at": d.moved_at, "last_image": None if d.last_image is None else d.last_image.cpu(),
        "rng": rng_state(d.z.device)}


def drawing(state: dict, settings, device: torch.device) -> Drawing:
    """The drawing a state holds, on `device`, ready for `Pipeline(..., resume=drawing)`."""
    z = state["z"].to(device).requires_grad_(True)
    opt = make_optimizer(settings.optimizer, [z], settings.lr)
    opt.load_state_dict(state["optimizer"])
    step = int(state["step"])
    on = (lambda t: None if t is None else t.to(device))
    return Drawing(state.get("phase", MAIN), step, z, opt, on(state.get("z_init")),
                   [h.to(device) for h in state.get("history", [])], list(state.get("shots", [])),
                   state.get("moved_at", step),  # a version-1 state was saved after the picture moved
                   on(state.get("last_image")), state["rng"])


def pack_reel(done: int, ema, frames: list, rng: dict, settings, job, own: dict | None = None) -> dict:
    """The state of a restyle: frames done, the running average of their latents, the output frames, and
    the random generators as they were when frame `done` began (a resume draws that frame from its start)."""
    return _run(settings, [job], Carried(own or {})) | {
        "kind": "restyle", "step": done, "ema": None if ema is None else ema.detach().cpu(),
        "frames": torch.stack(frames) if frames else None, "rng": rng}


def save_state(path: str | Path, state: dict) -> Path:
    """Write a state dict atomically (a run replaces its own state file as it goes)."""
    with atomic_write(path, overwrite=True) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_state(path: str | Path) -> dict:
    """Read a state file written by `save_state` (weights-only unpickling: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"state file not found: {path}", FIX)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"state file {path} is unreadable ({type(e).__name__})", FIX) from e
    if not isinstance(state, dict) or state.get("format") not in READABLE:
        raise UserError(f"{path} is not a clipguide state file", FIX)
    _check_run(state, path)
    state["file"] = str(path.absolute())  # where it was read from: the one state file its resume replaces
    return state


def _check_run(state: dict, path: Path) -> None:
    """The fields that say what a state's run was, of the types clipguide writes: an edited state is
    refused naming its file and the field, never half-read."""
    def bad(name: str) -> UserError:
        return UserError(f"state file {path}: field {name!r} is not what clipguide writes", FIX + ", unedited")

    step, jobs, given = state.get("step"), state.get("jobs"), state.get("given", [])
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise bad("step")
    if not isinstance(state.get("settings"), dict):
        raise bad("settings")
    if not (isinstance(given, (list, tuple)) and all(isinstance(g, str) and g in BY_NAME for g in given)):
        raise bad("given")
    if not (isinstance(jobs, list) and jobs and all(isinstance(j, dict) for j in jobs)):
        raise bad("jobs")
    for j in jobs:
        if not (isinstance(j.get("prompt"), str) and isinstance(j.get("output"), str)
                and all(j.get(k) is None or isinstance(j[k], str) for k in ("frames_dir", "video"))):
            raise bad("jobs")
        if isinstance(j.get("seed"), bool) or not isinstance(j.get("seed"), int) or not 0 <= j["seed"] <= SEED_MAX:
            raise bad("jobs")


def saved_settings(state: dict):
    """The resolved settings the state's run had, each checked like a typed option's.  An option the
    state does not name (it was added later) has its built-in default: the run that wrote the state ran
    without it."""
    from ..settings import Settings, checked

    saved = state["settings"]
    values = checked({o.name: saved.get(o.name, o.default) for o in SETTINGS}, f"state file {state.get('file')}")
    s = Settings(**values)
    s.given = frozenset(state.get("given", saved))
    return s
