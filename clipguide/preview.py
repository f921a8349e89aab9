"""`--preview N`: try N seeds of a prompt for a few steps, as one batch, before committing to one.

The N images are drawn together for `--preview-steps` steps; a contact sheet shows them numbered, with
each seed under its picture; each seed's drawing is saved as its own state file, so
`clipguide --resume <that state>` finishes the picture you chose to the full `--steps`.  Like any run,
a stop (Ctrl-C) keeps the sheet so far and the states and ends `Interrupted`, and a NaN loss ends it
`RunFailed`, keeping the sheet of the last good step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .callbacks import FiniteCheck, Progress, chain
from .errors import Interrupted, RunFailed
from .files import check_writable
from .outputs.pictures import save_png
from .outputs.state import pack, save_state
from .pipeline import frames_of
from .plan import check_outputs, default_output, slug, state_path_for


@dataclass
class Preview:
    sheet: Path
    seeds: list[int]
    states: list[Path]
    steps: int


def sheet_path(s, seed: int) -> Path:
    return Path(s.output) if s.output else Path(s.output_dir) / f"{slug(s.prompt)}-preview-{seed}.png"


def contact_sheet(images: list[np.ndarray], labels: list[str], side: int = 160) -> np.ndarray:
    """Thumbnails (HxWx3 uint8) side by side, scaled to `side` pixels high, each with its label under it."""
    font = ImageFont.load_default()
    pad, text_h = 8, 18
    thumbs = [Image.fromarray(im).resize((round(side * im.shape[1] / im.shape[0]), side), Image.Resampling.NEAREST)
              for im in images]
    width = sum(t.width for t in thumbs) + pad * (len(thumbs) + 1)
    sheet = Image.new("RGB", (width, side + text_h + 2 * pad), (255, 255, 255))
    draw, x = ImageDraw.Draw(sheet), pad
    for thumb, label in zip(thumbs, labels):
        sheet.paste(thumb, (x, pad))
        draw.text((x, pad + side + 3), label, fill=(0, 0, 0), font=font)
        x += thumb.width + pad
    return np.asarray(sheet)


def preview(session, seed: int, count: int, steps: int, stop=None, progress: bool | None = None) -> Preview:
    """Draw `count` seeds from `seed` on for `steps` steps; write the sheet and one state per seed."""
    s = session.settings
    jobs = [session.plan.job(s.prompt, seed + k, default_output(s.replace(output=None), seed + k))
            for k in range(count)]
    sheet = sheet_path(s, seed)
    check_writable(sheet, s.overwrite)
    check_outputs(jobs, s, s.overwrite)
    bar = Progress(steps, 0, desc=f"preview {slug(s.prompt, 20)}", enabled=progress is not False)
    finite, done = FiniteCheck(session.sync_every), {"steps": 0}

    def enough() -> bool:
        return done["steps"] >= steps or bool(stop and stop())

    with session.drawing(len(jobs) * s.candidates):  # the memory check, --threads: as for any run
        pipe = session.pipeline(jobs)
        try:
            pipe.run(chain(bar, finite, lambda info: done.update(steps=info.step + 1)), enough)
        except RunFailed as e:  # a NaN loss: the sheet of the last good step, no states
            if finite.good_z is None:
                raise RunFailed(f"{e}; no good sheet to keep -- try a lower --lr") from None
            _sheet(sheet, pipe.images(finite.good_z), jobs, finite.good_step, s)
            raise RunFailed(f"{e}; kept the sheet of step {finite.good_step} in {sheet} -- try a lower --lr") from None
        finally:
            bar.close()
        d = pipe.drawing
        _sheet(sheet, pipe.images(), jobs, d.step, s)
    states = []
    starts = s.candidates if d.phase == "search" else 1
    for k, job in enumerate(jobs):
        rows = list(range(k * starts, (k + 1) * starts))
        states.append(save_state(state_path_for(job.output), pack(d.rows(rows), d.step, s, [job])))
    if d.step < min(steps, s.steps):  # stopped (Ctrl-C): the sheet so far and every seed's state are kept
        raise Interrupted(states[0], sheet, states[1:])
    return Preview(sheet, [j.seed for j in jobs], states, d.step)


def _sheet(path: Path, images, jobs, step: int, s) -> Path:
    """The contact sheet of `images` (the seeds' finished pictures at `step`), with its recipe."""
    labels = [f"{k + 1}: seed {job.seed}" for k, job in enumerate(jobs)]
    return save_png(path, contact_sheet(list(frames_of(images).numpy()), labels),
                    {"prompt": s.prompt, "preview_seeds": [j.seed for j in jobs], "steps_done": step}, s.overwrite)
