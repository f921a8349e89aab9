"""The web page (Gradio): the form made from the declarations, the live panel, the batch tab and the
gallery, wired to an `App`.

Pages hold no run: a timer asks the app every half second what the queue shows (the running task,
else the last one), so a reloaded page or a second tab shows the same run; while nothing runs or
waits it asks every `IDLE` seconds, so an idle tab costs the server little.  The preview, the curve
and the gallery are sent only when they changed.  The gallery's pictures stay on the server: a
click sends an index into the list this page was shown.

What a user typed (prompts, file names, the messages quoting them) is shown as text, in text boxes,
never as Markdown or HTML.  Each tab keeps a secret (`OWNER_JS`: in the tab's sessionStorage, so a
reload keeps it and another tab has its own); the runs it submits are its own to stop and resume.
The server hands out the files the gallery lists (`page.allowed_paths`, set at each look) and
Gradio's own temporary files, nothing else."""

from __future__ import annotations

import re
import secrets

import gradio as gr
import pandas as pd

from ..errors import UserError
from ..settings import range_text
from .app import App, queue_text, short, status_text, warnings_text
from .jobs import QUEUED, RUNNING
from .form import CHOICE, NUMBER, PICTURE, PICTURES, TEXT, Field
from .runner import VIDEO_DEFAULTS

TICK, IDLE = 0.5, 2.0  # seconds between looks at the queue: while something runs or waits, else
SYNTAX = """**Prompt syntax**: `text:weight` (a negative weight pushes away) · `a | b:0.5` several prompts at once ·
`a ^ b ^ c` a story, one stage after another · `\\:` `\\|` `\\^` a literal `:` `|` `^`"""
MANIFEST = ["line", "prompt", "seed", "status", "seconds", "file"]
CSS = "#gallery img, #preview img { image-rendering: pixelated; }"  # small pictures stay sharp when shown large
OWNER_KEY = "clipguide-owner"
OWNER_JS = f"(token) => [sessionStorage.getItem('{OWNER_KEY}') || '']"  # the tab's secret, sent on load
KEEP_JS = f"(token) => {{ sessionStorage.setItem('{OWNER_KEY}', token); return []; }}"
# Ctrl+Enter (or Cmd+Enter) anywhere on the page presses the Run button of the tab it was typed in
KEYS_JS = """() => document.addEventListener('keydown', (e) => {
  if (e.key !== 'Enter' || !(e.ctrlKey || e.metaKey)) return;
  const batch = e.target.closest && e.target.closest('#tab-batch');
  const button = document.querySelector(batch ? '#run-batch' : '#run');
  if (button) { e.preventDefault(); button.click(); }
})"""


def _field(f: Field, app: App):
    """A field's component.  Numbers are text boxes: blank means the default (shown greyed), as on the
    command line; a number box would send 0."""
    bounded = f.kind == NUMBER and (f.option.high is not None or f.option.below is not None)
    info = f"{f.info}; {range_text(f.option)}" if bounded else f.info  # the declared range, as the check says it
    common = dict(label=f.label, info=info, elem_id=f"field-{f.name}")
    if f.option.positional:  # its syntax is shown below it
        return gr.Textbox(lines=2, max_lines=6, placeholder="a red circle on a blue background", label=f.label,
                          elem_id=f"field-{f.name}")
    if f.kind in (TEXT, NUMBER):
        default = VIDEO_DEFAULTS.get(f.name, f.default)  # the web UI's own, where it picks a video's pace
        return gr.Textbox(placeholder=f"default: {default}" if default else None, **common)
    if f.kind == CHOICE:
        choices = app.model_choices() if f.name == "model" else list(f.choices)  # which presets work offline
        return gr.Dropdown(choices, value=app.model if f.name == "model" else None, **common)
    # pictures are files: Gradio's Image would decode an upload before the app sees it, and a file that
    # is not a picture (or too large) would fail there, without a word on the page
    return gr.File(file_count="single" if f.kind == PICTURE else "multiple", file_types=["image"], label=f.label,
                   elem_id=f"field-{f.name}")


def form(app: App) -> tuple[dict, gr.Textbox]:
    """The fields, laid out: texts, then the short fields four to a row, then the uploads."""
    comps: dict = {}
    texts = [f for f in app.form if f.kind == TEXT]
    shorts = [f for f in app.form if f.kind in (NUMBER, CHOICE)]
    uploads = [f for f in app.form if f.kind in (PICTURE, PICTURES)]
    for f in texts:
        comps[f.name] = _field(f, app)
        if f.option.positional:
            gr.Markdown(SYNTAX)
    for k in range(0, len(shorts), 4):
        with gr.Row():
            for f in shorts[k:k + 4]:
                comps[f.name] = _field(f, app)
    weights = None
    with gr.Row():
        for f in uploads:
            with gr.Column():
                comps[f.name] = _field(f, app)
                if f.kind == PICTURES:
                    weights = gr.Textbox(label="image prompt weights", placeholder="1, 0.5 (one per picture; "
                                         "default 1)", elem_id="field-weights")
    return comps, weights if weights is not None else gr.Textbox(visible=False)


def curve(view) -> pd.DataFrame:
    """The loss curve as the plot takes it (typed columns, so the axes are numbers even when empty).
    One line: Gradio 6 stops drawing a plot coloured by a column once it is updated while shown."""
    rows = list(view.curve) if view is not None else []
    return pd.DataFrame({"step": pd.Series([r[0] for r in rows], dtype="int64"),
                         "loss": pd.Series([r[1] for r in rows], dtype="float64")})


def enlarged(image, least: int = 256):
    """A small preview scaled up by a whole factor (nearest neighbour), so a 64-pixel picture shows."""
    if image is None:
        return None
    factor = max(1, least // max(1, min(image.shape[:2])))
    return image.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else image


def claim(token: str | None) -> tuple[str, str]:
    """The tab's secret: the one its sessionStorage kept, or a new one."""
    token = token if re.fullmatch(r"[0-9a-f]{32}", token or "") else secrets.token_hex(16)
    return token, token


def _said(action, done: str = "submitted") -> str:
    """Run a page action; what it did, or the one line of a user's mistake."""
    try:
        task = action()
    except UserError as e:
        return f"⚠ {e.line()}"
    return f"{done} #{task.id}: {short(task.title, 160)}"


def refresh(app: App, seen: dict | None, page: gr.Blocks):
    """What changed since this page last looked: status, warnings, preview, curve, queue, manifest, gallery."""
    seen = dict(seen or {})
    task = app.queue.focus()
    tick = TICK if task is not None and task.status in (QUEUED, RUNNING) else IDLE
    timer = gr.skip() if tick == seen.get("tick") else gr.Timer(tick)
    seen["tick"] = tick
    view = task.live.view() if task is not None else None
    live = (task.id, view.version) if task is not None else None
    preview = plot = gr.skip()
    if live != seen.get("live"):
        seen["live"] = live
        preview, plot = enlarged(view.image if view is not None else None), curve(view)
    done = (view.step, view.steps) if view is not None and view.steps else (0, 1)
    bar = gr.skip() if done == seen.get("bar") else progress_bar(*done)
    seen["bar"] = done
    notes = warnings_text(task)
    warnings = gr.skip() if notes == seen.get("notes") else gr.update(value=notes, visible=bool(notes))
    seen["notes"] = notes
    rows = app.manifest()
    manifest = gr.skip() if rows == seen.get("manifest") else rows
    seen["manifest"] = rows
    gallery = pictures = gr.skip()
    made = (app.queue.ended_count(), len(rows))  # a run ended, or a line of a batch
    if made != seen.get("made"):
        seen["made"] = made
        found = app.pictures()
        page.allowed_paths = [str(p) for p in app.served]  # what /gradio_api/file= may hand out
        gallery, pictures = [(str(p.path), p.caption) for p in found], found
    return (status_text(task, app.queue, app.words), bar, warnings, preview, plot, queue_text(app.queue), manifest, gallery,
            pictures, timer, seen)


def progress_bar(step: int, steps: int) -> str:
    """The run's steps done as a bar (made of two numbers only: nothing a user typed)."""
    return f'<progress value="{int(step)}" max="{max(1, int(steps))}" style="width: 100%"></progress>'


def _line(elem_id: str, value: str = "", lines: int = 1, visible: bool = True) -> gr.Textbox:
    """A line of news, shown as text (a prompt in it is never rendered)."""
    return gr.Textbox(value, interactive=False, show_label=False, container=False, lines=lines, max_lines=lines,
                      visible=visible, elem_id=elem_id)


def live_panel() -> dict:
    c = {}
    c["status"] = _line("status", "Nothing has run yet.")
    c["progress"] = gr.HTML(progress_bar(0, 1), elem_id="progress")
    c["warnings"] = _line("warnings", lines=2, visible=False)  # what the command line would warn
    c["preview"] = gr.Image(label="preview", interactive=False, format="png", height=320, elem_id="preview",
                            buttons=["fullscreen"])  # the picture is in the gallery, with its recipe
    c["curve"] = gr.LinePlot(curve(None), x="step", y="loss", title="loss (image 0; the first start while "
                             "searching)", height=220, elem_id="loss-curve")
    with gr.Row():
        c["stop"] = gr.Button("Stop", variant="stop", elem_id="stop")
        c["resume"] = gr.Button("Resume", elem_id="resume")
        c["cancel"] = gr.Button("Cancel queued", elem_id="cancel")  # this tab's last run that waits
    c["queue"] = _line("queue")
    c["message"] = _line("message", lines=3)
    return c


def gallery_panel(app: App) -> dict:
    c = {}
    with gr.Row():
        with gr.Column(scale=3):
            c["gallery"] = gr.Gallery(label=f"output folder {app.output_dir.name}", columns=6, height=360,
                                      allow_preview=False, fit_columns=False, object_fit="contain",
                                      elem_id="gallery")
        with gr.Column(scale=2):
            c["recipe"] = gr.Textbox(label="recipe (the JSON the PNG carries; the pictures it read by name)", lines=12, max_lines=12,
                                     interactive=False, buttons=["copy"], elem_id="recipe")
            with gr.Row():
                c["use"] = gr.Button("Use these settings", interactive=False, elem_id="use-settings")
                c["seed"] = gr.Button("Use its seed", interactive=False, elem_id="use-seed")
                c["init"] = gr.Button("Send to init image", interactive=False, elem_id="send-to-init")
                c["resume_picture"] = gr.Button("Resume this picture", visible=False, elem_id="resume-picture")
            with gr.Row():  # the files themselves, byte for byte, with the recipe the PNG carries
                c["png"] = gr.DownloadButton("Download PNG", visible=False, elem_id="download-png")
                c["mp4"] = gr.DownloadButton("Download video", visible=False, elem_id="download-video")
            c["video"] = gr.Video(label="the run's video", visible=False, interactive=False, elem_id="video",
                                  buttons=[])
    c["pictures"] = gr.State(None)
    c["selected"] = gr.State(None)
    return c


def build(app: App) -> gr.Blocks:
    """The page of `app`."""
    with gr.Blocks(title="clipguide", analytics_enabled=False) as page:
        gr.Markdown("## clipguide · pictures from text", elem_id="header")
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Tab("Draw", elem_id="tab-draw"):
                    fields, weights = form(app)
                    with gr.Row():
                        video = gr.Checkbox(label="also make a video of the run (.mp4 beside the picture)",
                                            elem_id="field-video")
                        dice = gr.Button("random seed", size="sm", elem_id="random-seed")
                    run = gr.Button("Run (Ctrl+Enter)", variant="primary", elem_id="run")
                with gr.Tab("Batch", elem_id="tab-batch"):
                    gr.Markdown("One prompt per line (`#` starts a comment); line *n* gets seed + *n*. The "
                                "options of the Draw tab apply; the pictures go to a new `batch-<time>` folder.")
                    upload = gr.File(label="prompt file", file_types=[".txt"], elem_id="batch-file")
                    pasted = gr.Textbox(label="or paste prompts", lines=6, elem_id="batch-text")
                    run_batch = gr.Button("Run batch", variant="primary", elem_id="run-batch")
                    manifest = gr.Dataframe(headers=MANIFEST, value=[], label="manifest", interactive=False,
                                            datatype="str", elem_id="manifest")  # text, never Markdown
            with gr.Column(scale=2):
                live = live_panel()
        shown = gallery_panel(app)
        seen, owner, token = gr.State(None), gr.State(None), gr.Textbox(visible=False)
        names = list(fields)
        inputs = [fields[n] for n in names] + [weights]

        def values(args) -> dict:
            return dict(zip(names, args))

        def draw(*args):
            return _said(lambda: app.draw(values(args[:-3]), args[-3], args[-2], owner=args[-1]))

        def batch(*args):
            return _said(lambda: app.batch(values(args[:-4]), args[-2], args[-3], args[-4], owner=args[-1]))

        run.click(draw, inputs + [video, owner], live["message"], concurrency_limit=None)
        run_batch.click(batch, inputs + [upload, pasted, owner], live["message"], concurrency_limit=None)
        live["stop"].click(lambda o: _said(lambda: app.stop(o), "stopping"), owner, live["message"],
                           concurrency_limit=None)
        live["resume"].click(lambda o: _said(lambda: app.resume(o)), owner, live["message"], concurrency_limit=None)
        live["cancel"].click(lambda o: _said(lambda: app.cancel(o), "cancelled"), owner, live["message"],
                             concurrency_limit=None)
        dice.click(lambda: "", None, fields["seed"])  # blank: a new random seed for each run
        timer = gr.Timer(TICK)
        outputs = [live["status"], live["progress"], live["warnings"], live["preview"], live["curve"], live["queue"], manifest,
                   shown["gallery"], shown["pictures"], timer, seen]
        timer.tick(lambda s: refresh(app, s, page), seen, outputs, concurrency_limit=None)
        page.load(claim, token, [owner, token], js=OWNER_JS).then(None, token, None, js=KEEP_JS).then(
            lambda: refresh(app, None, page), None, outputs)
        wire_gallery(app, shown, fields, names, live["message"], owner)
    return page


def _file(path) -> dict:
    """A video or download button showing the file at `path` (a path the gallery found), or hidden."""
    return gr.update(value=str(path), visible=True) if path else gr.update(value=None, visible=False)


def wire_gallery(app: App, c: dict, fields: dict, names: list[str], message, owner: gr.State) -> None:
    """A click on a picture: its recipe, its files to download, its video, "use these settings", "use its
    seed", "send to init image", "resume this picture"."""
    buttons = [c["use"], c["seed"], c["init"]]

    def select(pictures, event: gr.SelectData):
        if not pictures or event.index is None or event.index >= len(pictures):
            return ("", *[gr.update(interactive=False)] * 3, gr.update(visible=False), *[_file(None)] * 3, None)
        p = pictures[event.index]
        return (app.recipe_text(p), *[gr.update(interactive=True)] * 3, gr.update(visible=p.state is not None),
                _file(p.video), _file(p.path), _file(p.video), p)

    def use(picture):
        if picture is None:
            return [gr.skip()] * len(names)
        chosen = app.recipe_values(picture)
        return [chosen[n] if n in chosen else gr.skip() for n in names]

    def resume_picture(picture, token):
        if picture is None:
            return "⚠ no picture selected -- click one in the gallery"
        return _said(lambda: app.resume_picture(picture, owner=token))

    c["gallery"].select(select, c["pictures"], [c["recipe"], *buttons, c["resume_picture"], c["video"], c["png"],
                                                c["mp4"], c["selected"]])
    c["use"].click(use, c["selected"], [fields[n] for n in names])
    c["seed"].click(lambda p: str(p.recipe.get("seed", "")) if p is not None else gr.skip(), c["selected"],
                    fields["seed"])
    c["init"].click(lambda p: str(p.path) if p is not None else gr.skip(), c["selected"], fields["init_image"])
    c["resume_picture"].click(resume_picture, [c["selected"], owner], message)
