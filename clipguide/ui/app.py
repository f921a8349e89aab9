"""The web UI's state and actions, without the page: the form, the queue, the runner, the uploads.

`App` holds everything (no globals); page.py calls its methods and shows what they return.  A user's
mistake comes back as a `UserError` whose one line the page shows; nothing here needs Gradio, so the
actions are tested without a browser.

A run belongs to the page that submitted it (`owner`, a secret only that page holds): every page
may watch it, only its owner may stop or resume it.  `served` is what the server may hand out: the
pictures and videos the gallery lists, nothing else of the output folder."""

from __future__ import annotations

import functools
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError
from ..files import check_folder, sweep_temps
from ..models.table import load_table, resolve_preset
from .form import PICTURE, PICTURES, as_labels, fields, from_recipe, given, image_prompt_specs
from .gallery import Picture, scan
from .jobs import QUEUED, RUNNING, STOPPED, JobQueue, Task
from .runner import Runner
from .uploads import Uploads


def _worded(action):
    """An action whose one-line mistakes are said as the page says things (`App.words`)."""

    @functools.wraps(action)
    def act(self, *args, **kwargs):
        try:
            return action(self, *args, **kwargs)
        except UserError as e:
            raise UserError(self.words(e.problem), self.words(e.fix) if e.fix else None) from None

    return act


class App:
    def __init__(self, output_dir: str | Path = "outputs", model: str = "tiny",
                 log: Callable[[str], None] = lambda message: None):
        self.presets = load_table()["presets"]
        resolve_preset(model)  # an unknown name: one line, before anything starts
        self.model = model
        self.output_dir = writable_folder(output_dir)
        for folder in (self.output_dir, *self.output_dir.glob("batch-*/")):
            sweep_temps(folder)  # what a killed server was writing (a video, a picture)
        self.form = fields(self.presets)
        self.uploads = Uploads()
        self.runner = Runner(self.output_dir, self.uploads)
        self.queue = JobQueue(lambda message: log(printable(message)))
        self.served: list[Path] = []  # the files of the gallery's last look
        self._submitting = threading.Lock()

    # -- actions -------------------------------------------------------------------------------
    def settings(self, values: dict[str, Any], weights: str = "") -> dict:
        """`Settings` keywords of the form: typed fields as given, uploads copied under new names."""
        out = given(self.form, values)
        for f in self.form:
            value = values.get(f.name)
            if f.kind == PICTURE and value:
                out[f.name] = str(self.uploads.picture(value, f.label))
            elif f.kind == PICTURES and value:
                copies = [self.uploads.picture(v, f.label) for v in value]
                out[f.name] = image_prompt_specs(copies, weights)
            elif f.kind == PICTURES and (weights or "").strip():
                raise UserError(f"image prompt weights {weights.strip()!r} given without a picture",
                                f"upload the pictures into {f.label}, or clear the weights")
        return out

    @_worded
    def draw(self, values: dict[str, Any], weights: str = "", video: bool = False, *,
             owner: str | None = None) -> Task:
        with self._submitting:  # the names a queued run will write are checked and claimed at once
            task = self.queue.submit(self.runner.draw(self.settings(values, weights), video), owner)
            self.runner.claim(task)
        return task

    @_worded
    def batch(self, values: dict[str, Any], text: str = "", upload: str | None = None, weights: str = "", *,
              owner: str | None = None) -> Task:
        if upload:
            text = self.uploads.text_file(upload)
        name = Path(upload).name if upload else "the pasted prompts"
        return self.queue.submit(self.runner.batch(text, self.settings(values, weights), name), owner)

    @_worded
    def stop(self, owner: str | None) -> Task:
        """Stop the running task, if `owner` submitted it."""
        task = self.queue.running()
        if task is None:
            raise UserError("nothing is running", "Stop stops the run shown above")
        _check_owner(task, owner, "stop")
        self.queue.stop(task.id)
        return task

    @_worded
    def cancel(self, owner: str | None) -> Task:
        """Cancel the last run `owner` queued that has not started."""
        mine = [t for t in self.queue.queued() if owner is not None and t.owner == owner]
        if not mine:
            raise UserError("this tab has no queued run", "Cancel takes back a run of this tab that waits its turn")
        self.queue.stop(mine[-1].id)
        return mine[-1]

    @_worded
    def resume(self, owner: str | None) -> Task:
        """Go on with the run the page shows, if Stop stopped it and `owner` submitted it."""
        task = self.queue.focus()
        if task is None or task.status != STOPPED:
            raise UserError("the run shown is not stopped", "Resume goes on from a run that Stop stopped")
        _check_owner(task, owner, "resume")
        return self.queue.submit(self.runner.again(task), owner)

    @_worded
    def resume_picture(self, picture: Picture, *, owner: str | None = None) -> Task:
        if picture.state is None:
            raise UserError("this picture has no state file to go on from", "start it again with its settings")
        return self.queue.submit(self.runner.resume(picture.state), owner)

    def pictures(self) -> list[Picture]:
        """The gallery's pictures; from now on the server hands out these and their videos only."""
        found = scan(self.output_dir)
        self.served = [p.path for p in found] + [p.video for p in found if p.video is not None]
        return found

    def words(self, text: str) -> str:
        """A message as the page says it: the form's labels for its flags, an uploaded file by the name
        it had in the browser, never the path of the server's copy; a file of the output folder by its
        name there (the page shows no path of the server's)."""
        for copy, name in self.uploads.names.items():
            text = text.replace(copy, name)
        text = text.replace(f"{self.output_dir}{os.sep}", "")
        return as_labels(self.form, text)

    def recipe_text(self, picture: Picture) -> str:
        """The recipe as the page shows it: an upload by the name it had in the browser, any other
        picture a run read by its file name, never a path of the server."""
        return picture.recipe_text(lambda path: self.uploads.names.get(path, Path(path).name))

    def recipe_values(self, picture: Picture) -> dict[str, Any]:
        """The form's values of a picture's settings; the seed is left blank (a new random one), so that
        "use these settings" makes another picture, unless the seed is asked for.  A save-every of 0 (a
        run without frames) is left blank too: with "also make a video" it would be refused."""
        chosen = {**from_recipe(self.form, picture.recipe), "seed": ""}
        if chosen.get("save_every") == "0":
            chosen["save_every"] = ""
        return chosen

    def model_choices(self) -> list[tuple[str, str]]:
        """The presets as the model field offers them: whether each one's models are here (works offline)."""
        from ..models.inventory import model_rows

        here = {r.name: r.cached for r in model_rows(load_table()) if r.kind == "preset"}
        return [(f"{name} ({'offline' if here.get(name) else 'not downloaded'})", name)
                for name in self.presets]

    def manifest(self) -> list[list]:
        """The rows of the latest batch's manifest so far: line, prompt, seed, status, seconds, file."""
        task = self.queue.latest("batch")
        path = task.work.manifest if task is not None else None
        if path is None or not path.is_file():
            return []
        rows = []
        for text in path.read_text().splitlines():
            r = json.loads(text)
            rows.append([r["line"], r["prompt"] or "", r["seed"] if r["seed"] is not None else "", r["status"],
                         r["seconds"], Path(r["output"]).name if r["output"] else r.get("error", "")])
        return rows

    def close(self) -> None:
        self.queue.close()
        self.uploads.close()


def writable_folder(path: str | Path) -> Path:
    """The output folder, made if absent, after checking that files can be made in it: one line if not."""
    folder = check_folder(path, "--output-dir").resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise UserError(f"cannot write to {folder}: {e.strerror or e}", "choose another --output-dir") from None
    return folder


def _check_owner(task: Task, owner: str | None, what: str) -> None:
    if owner is None or task.owner != owner:
        raise UserError(f"#{task.id} was started in another tab", f"only that tab can {what} it; this one can watch")


def printable(text: str, limit: int = 200) -> str:
    """`text` for a terminal: control and format characters (NUL, escape sequences, right-to-left
    overrides, line breaks) written as escapes, and cut to `limit` characters."""
    return short("".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text), limit)


def status_text(task: Task | None, queue: JobQueue, words: Callable[[str], str] = str) -> str:
    """One line (plain text) about the run a page shows; `words` says its news as the page does."""
    if task is None:
        return "Nothing has run yet."
    view = task.live.view()
    if task.status == RUNNING:
        if not view.steps:
            return f"running #{task.id} {short(task.title)} · loading the models"
        what = f"step {view.step}/{view.steps}"
        what += f" · {view.rate:.1f} it/s · {eta(view.steps - view.step, view.rate)} left" if view.rate else ""
        what += f" · loss {view.loss:.4f}" if view.loss is not None else ""
        what += " · searching random starts" if view.phase == "search" else ""
        return f"running #{task.id} {short(task.title)} · {what}"
    if task.status == QUEUED:
        ahead = [t for t in queue.tasks() if t.status in (QUEUED, RUNNING) and t.id < task.id]
        return f"queued #{task.id} {short(task.title)} · {len(ahead)} ahead"
    return f"{task.status} #{task.id} {short(task.title)} · {words(task.line)}"


def eta(steps: int, rate: float) -> str:
    """About how long `steps` more steps take at `rate` steps a second: '~42 s', '~3 min', '~2 h'."""
    seconds = steps / rate
    if seconds < 90:
        return f"~{seconds:.0f} s"
    return f"~{seconds / 60:.0f} min" if seconds < 5400 else f"~{seconds / 3600:.1f} h"


def warnings_text(task: Task | None, most: int = 4) -> str:
    """The warnings the run shown gave (as the command line prints them), each once."""
    found = dict.fromkeys(m for m in (task.logs if task is not None else []) if m.startswith("warning:"))
    return "\n".join(list(found)[:most])


def queue_text(queue: JobQueue) -> str:
    waiting = queue.queued()
    if not waiting:
        return ""
    return "Queued: " + "; ".join(f"#{t.id} {short(t.title)}" for t in waiting)


def short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"

