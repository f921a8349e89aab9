"""The web UI without a browser: the job queue, the live preview, the form made from the declarations,
uploads, the gallery, and runs of the tiny model through the app's actions."""

import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from clipguide.engine import StepInfo
from clipguide.errors import Interrupted, RunFailed, UserError
from clipguide.models.table import load_table
from clipguide.outputs.pictures import read_recipe, save_png
from clipguide.ui.form import NUMBER, PICTURE, PICTURES, fields, from_recipe, given, image_prompt_specs
from clipguide.ui.gallery import scan
from clipguide.ui.jobs import BAD, CANCELLED, DONE, ENDED, FAILED, QUEUED, RUNNING, STOPPED, JobQueue
from clipguide.ui.live import Live
from clipguide.ui.uploads import Uploads


def wait_for(check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@dataclass
class Gate:
    """Work that runs until released or stopped; stopping raises Interrupted like a real run."""

    title: str = "gate"
    kind: str = "draw"
    fail: Exception | None = None

    def __post_init__(self):
        self.started, self.release = threading.Event(), threading.Event()

    def run(self, task):
        self.started.set()
        while not self.release.is_set():
            if task.stopped():
                raise Interrupted("x.state.pt", "x.png")
            time.sleep(0.01)
        if self.fail is not None:
            raise self.fail
        return [Path(f"{self.title}.png")], f"made {self.title}"


@pytest.fixture
def queue():
    q = JobQueue()
    yield q
    q.close(wait=5)


def test_the_queue_runs_one_task_at_a_time_in_order_and_shows_the_rest_queued(queue):
    first, second = Gate("first"), Gate("second")
    a, b = queue.submit(first), queue.submit(second)
    assert first.started.wait(5)
    time.sleep(0.1)
    assert (a.status, b.status) == (RUNNING, QUEUED) and not second.started.is_set()
    assert queue.running() is a and queue.queued() == [b] and queue.focus() is a
    first.release.set()
    assert second.started.wait(5)
    assert a.status == DONE and a.outputs == [Path("first.png")] and a.line == "made first"
    second.release.set()
    wait_for(lambda: b.status == DONE)
    assert queue.focus() is b  # nothing runs: a page shows the task that ended last


def test_stop_stops_the_running_task_like_ctrl_c_and_cancels_a_queued_one(queue):
    running, waiting = Gate("running"), Gate("waiting")
    a, b = queue.submit(running), queue.submit(waiting)
    assert running.started.wait(5)
    assert queue.stop(b.id) is b and b.status == CANCELLED
    assert queue.stop() is a
    wait_for(lambda: a.status == STOPPED)
    assert (a.state_path, a.image_path) == (Path("x.state.pt"), Path("x.png"))
    assert "x.state.pt" in a.line
    time.sleep(0.1)
    assert not waiting.started.is_set()  # a cancelled task never starts
    assert queue.stop() is None  # nothing left to stop


@pytest.mark.parametrize("error, status, line", [
    (UserError("--steps must be >= 1", "e.g. --steps 500"), BAD, "--steps must be >= 1 -- e.g. --steps 500"),
    (RunFailed("the loss became NaN"), FAILED, "the loss became NaN"),
    (ValueError("a bug"), FAILED, "ValueError: a bug"),
])
def test_a_failing_task_ends_with_one_line_and_the_worker_goes_on(queue, error, status, line):
    bad, good = Gate("bad", fail=error), Gate("good")
    a, b = queue.submit(bad), queue.submit(good)
    bad.release.set()
    good.release.set()
    wait_for(lambda: b.status == DONE)
    assert (a.status, a.line) == (status, line)


def test_close_cancels_what_waits_and_stops_what_runs():
    q = JobQueue()
    running, waiting = Gate("running"), Gate("waiting")
    a, b = q.submit(running), q.submit(waiting)
    assert running.started.wait(5)
    q.close(wait=5)
    assert (a.status, b.status) == (STOPPED, CANCELLED)
    with pytest.raises(RuntimeError):
        q.submit(Gate())


def Step(step, steps, loss, image, extra):
    return StepInfo(step, steps, loss, image, None, extra)


def test_live_keeps_the_preview_step_rate_and_curve_and_starts_a_new_curve_per_picture():
    live = Live(every=0.0)
    image = torch.zeros(2, 3, 4, 6)
    for k in range(5):
        live.on_step(Step(k, 5, torch.tensor([1.0 - k / 10, 9.0]), image + k / 10, {"phase": "main"}))
        time.sleep(0.01)
    live.on_step(Step(2, 5, torch.tensor([0.0]), None, {"phase": "replay"}))  # a replay is not shown again
    view = live.view()
    assert (view.step, view.steps, view.version) == (5, 5, 5)
    assert view.image.shape == (4, 6, 3) and view.image.dtype == np.uint8 and view.image[0, 0, 0] == 102
    assert [round(loss, 3) for _, loss, _ in view.curve] == [1.0, 0.9, 0.8, 0.7, 0.6]  # image 0's loss
    assert view.rate is not None and view.rate > 0
    live.on_step(Step(0, 5, torch.tensor([2.0]), image, {"phase": "main"}))  # the next picture of a batch
    assert [p[:2] for p in live.view().curve] == [(1, 2.0)]


def test_live_previews_at_most_every_few_seconds_and_always_at_the_last_step():
    live = Live(every=3600)
    for k in range(10):
        live.on_step(Step(k, 10, torch.tensor([1.0]), torch.zeros(1, 3, 2, 2), {"phase": "main"}))
    assert live.view().version == 2  # the first step and the last


def test_the_form_is_the_declarations_marked_for_it():
    presets = load_table()["presets"]
    form = fields(presets)
    assert [f.name for f in form] == ["prompt", "negative", "steps", "width", "height", "seed", "save_every", "fps",
                                      "model", "cutn", "augments", "lr", "init_image", "init_weight", "candidates",
                                      "image_prompts", "n_images"]
    kinds = {f.name: f.kind for f in form}
    assert (kinds["init_image"], kinds["image_prompts"], kinds["steps"]) == (PICTURE, PICTURES, NUMBER)
    steps = next(f for f in form if f.name == "steps")
    assert steps.default == "500 (tiny: 150)" and steps.info.startswith("optimisation steps")
    assert next(f for f in form if f.name == "model").choices == tuple(presets)


def test_form_values_become_settings_keywords_blank_ones_are_not_given():
    form = fields(load_table()["presets"])
    values = {"prompt": " a dog ", "negative": "", "steps": "40", "lr": "0.05", "seed": None, "model": "tiny",
              "init_image": "/etc/passwd"}
    assert given(form, values) == {"prompt": "a dog", "steps": 40, "lr": 0.05, "model": "tiny"}
    with pytest.raises(UserError, match="steps must be a whole number"):
        given(form, {"steps": "1.5"})
    with pytest.raises(UserError, match="cutn must be a number"):
        given(form, {"cutn": "many"})
    recipe = {"prompt": "a dog", "steps": 40, "lr": 0.05, "seed": 7, "init_image": "/tmp/x.png", "model": "tiny"}
    assert from_recipe(form, recipe) == {"prompt": "a dog", "steps": "40", "lr": "0.05", "seed": "7", "model": "tiny"}


def test_image_prompt_weights_pair_with_the_uploaded_pictures():
    assert image_prompt_specs([Path("a.png"), Path("b.png")], "0.5") == ["a.png:0.5", "b.png:1"]
    with pytest.raises(UserError, match="2 image prompt weights for 1 pictures"):
        image_prompt_specs([Path("a.png")], "1, 2")
    with pytest.raises(UserError, match="not a number"):
        image_prompt_specs([Path("a.png")], "heavy")


def test_uploads_are_copied_under_generated_names(tmp_path):
    source = tmp_path / "my secret name.PNG"
    save_png(source, np.zeros((4, 4, 3), np.uint8))
    uploads = Uploads(tmp_path)
    try:
        copy = uploads.picture(source)
        assert copy.parent == uploads.folder and copy.suffix == ".png" and "secret" not in copy.name
        assert copy.read_bytes() == source.read_bytes() and source.exists()
        odd = tmp_path / "x.sh"
        odd.write_bytes(source.read_bytes())
        assert uploads.picture(odd).suffix == ".img"
        assert uploads.text("a dog").read_text() == "a dog\n"
        with pytest.raises(UserError, match="gone"):
            uploads.picture(tmp_path / "missing.png")
    finally:
        uploads.close()
    assert not uploads.folder.exists()


def test_an_upload_that_is_not_a_picture_or_too_large_to_decode_is_refused_by_its_name(tmp_path):
    from PIL import Image

    text, huge = tmp_path / "notes.png", tmp_path / "huge.png"
    text.write_text("not a picture")
    Image.new("1", (20_000, 20_000)).save(huge)  # 400 million pixels in a small file
    uploads = Uploads(tmp_path)
    try:
        with pytest.raises(UserError, match=r"^the uploaded init-image notes.png is not a readable image"):
            uploads.picture(text, "init-image")
        with pytest.raises(UserError, match=r"^the uploaded image prompt huge.png is too large to decode safely"):
            uploads.picture(huge, "image prompt")
        assert list(uploads.folder.iterdir()) == []
    finally:
        uploads.close()


def test_the_gallery_reads_recipes_and_finds_videos_and_state_files(tmp_path):
    pixels = np.zeros((4, 4, 3), np.uint8)
    save_png(tmp_path / "old.png", pixels, {"prompt": "a dog", "seed": 1, "steps": 10})
    time.sleep(0.02)
    save_png(tmp_path / "batch-1" / "0001-cat-2.png", pixels, {"prompt": "a cat", "seed": 2, "steps": 10,
                                                                "steps_done": 4})
    (tmp_path / "batch-1" / "0001-cat-2.state.pt").write_bytes(b"state")
    (tmp_path / "old.mp4").write_bytes(b"video")
    save_png(tmp_path / "foreign.png", pixels)  # no recipe: not ours
    save_png(tmp_path / ".old.host.1.1.tmp.png", pixels, {"prompt": "half written"})
    save_png(tmp_path / ".hidden" / "x.png", pixels, {"prompt": "in a hidden folder", "seed": 3, "steps": 1})
    (tmp_path / "linked.png").symlink_to(tmp_path / "old.png")  # links are never listed (nor served)
    (tmp_path / "linked-folder").symlink_to(tmp_path / "batch-1")
    (tmp_path / "batch-1" / "0001-cat-2.mp4").symlink_to(tmp_path / "old.mp4")
    found = scan(tmp_path)
    assert [p.path.name for p in found] == ["0001-cat-2.png", "old.png"]
    cat, dog = found
    assert cat.partial and cat.state == tmp_path / "batch-1" / "0001-cat-2.state.pt" and cat.video is None
    assert "stopped at step 4 of 10" in cat.caption
    assert not dog.partial and dog.video == tmp_path / "old.mp4" and dog.state is None
    assert json.loads(dog.recipe_text())["prompt"] == "a dog"


def test_importing_the_ui_core_loads_neither_gradio_nor_torch():
    code = ("import sys, clipguide.ui.app, clipguide.cli; "
            "print(sorted(m for m in ('gradio', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- runs of the tiny model through the app's actions ------------------------------------------------
TINY = {"model": "tiny", "steps": "8", "candidates": "1", "cutn": "4"}


@pytest.fixture
def app(tmp_path):
    from clipguide.ui.app import App

    a = App(tmp_path / "out", "tiny")
    yield a
    a.close()


def finished(task, timeout=180):
    wait_for(lambda: task.status in ENDED, timeout)
    return task


def test_a_picture_from_the_app_is_the_picture_of_the_python_api_and_is_never_replaced(app, tmp_path):
    from clipguide import generate

    task = finished(app.draw({"prompt": "a red circle", "seed": "5", **TINY}))
    out = tmp_path / "out" / "a-red-circle-5.png"
    assert (task.status, task.outputs) == (DONE, [out]), task.line
    reference = generate("a red circle", model="tiny", steps=8, candidates=1, cutn=4, seed=5,
                         output=str(tmp_path / "ref.png"), progress=False).outputs[0]
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(reference)))
    assert {k: v for k, v in read_recipe(out).items() if k != "output"} == \
        {k: v for k, v in read_recipe(reference).items() if k != "output"}
    before = out.read_bytes()
    with pytest.raises(UserError, match="already exists -- change the seed or the prompt"):
        app.draw({"prompt": "a red circle", "seed": "5", **TINY})
    assert out.read_bytes() == before


def test_stop_leaves_a_state_that_resume_finishes_and_only_the_runs_owner_may_stop_or_resume(app, tmp_path):
    task = app.draw({"prompt": "a blue square", "seed": "6", **TINY, "steps": "400"}, owner="me")
    wait_for(lambda: task.live.view().step >= 3, 120)
    for stranger in ("you", None):
        with pytest.raises(UserError, match="#1 was started in another tab -- only that tab can stop it"):
            app.stop(stranger)
    assert task.status == RUNNING
    assert app.stop("me") is task
    finished(task)
    out, state = tmp_path / "out" / "a-blue-square-6.png", tmp_path / "out" / "a-blue-square-6.state.pt"
    assert task.status == STOPPED and task.state_path == state and state.is_file()
    stopped_at = read_recipe(out)["steps_done"]
    assert 3 <= stopped_at < 400
    with pytest.raises(UserError, match="#1 was started in another tab -- only that tab can resume it"):
        app.resume("you")
    again = app.resume("me")
    assert again.kind == "resume" and again.owner == "me"
    wait_for(lambda: again.live.view().step > stopped_at, 120)
    app.stop("me")
    finished(again)
    assert again.status == STOPPED and read_recipe(out)["steps_done"] > stopped_at
    with pytest.raises(UserError, match="nothing is running"):
        app.stop("me")


def test_a_batch_fills_its_manifest_in_a_new_folder(app, tmp_path):
    task = finished(app.batch(dict(TINY, steps="3"), text="a red circle\n# a comment\na green square\n"))
    assert task.status == DONE, task.line
    folder = task.work.folder
    assert folder.parent == tmp_path / "out" and folder.name.startswith("batch-")
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    assert [(r["line"], r["prompt"], r["status"]) for r in rows] == [(1, "a red circle", "done"),
                                                                    (3, "a green square", "done")]
    assert [r[3] for r in app.manifest()] == ["done", "done"]
    assert {p.path.name for p in app.pictures()} == {"0001-a-red-circle-1.png", "0003-a-green-square-3.png"}


def test_an_uploaded_init_image_is_read_from_the_servers_own_copy(app, tmp_path):
    upload = tmp_path / "holiday photo.png"
    save_png(upload, np.full((64, 64, 3), 200, np.uint8))
    task = finished(app.draw({"prompt": "a red circle", "seed": "1", **TINY, "steps": "2", "init_image": str(upload)}))
    assert task.status == DONE, task.line
    used = Path(read_recipe(task.outputs[0])["init_image"])
    assert used.parent == app.uploads.folder and "holiday" not in used.name


def test_a_video_of_the_run_goes_beside_the_picture_and_the_gallery_finds_it(app, tmp_path):
    task = finished(app.draw({"prompt": "a red circle", "seed": "2", **TINY}, video=True))
    out = tmp_path / "out" / "a-red-circle-2.png"
    assert task.status == DONE and task.outputs == [out, out.with_suffix(".mp4")], task.line
    assert out.with_suffix(".mp4").stat().st_size > 0
    assert [(p.path, p.video) for p in app.pictures()] == [(out, out.with_suffix(".mp4"))]


def test_a_users_mistake_is_one_line_before_anything_runs(app):
    with pytest.raises(UserError, match="no prompt given"):
        app.draw({"prompt": "  ", **TINY})
    with pytest.raises(UserError, match="^steps must be a whole number >= 1"):
        app.draw({"prompt": "a dog", **TINY, "steps": "0"})
    with pytest.raises(UserError, match="no prompts given"):
        app.batch(TINY, text="\n")
    with pytest.raises(UserError, match="the run shown is not stopped"):
        app.resume("me")
    assert app.queue.tasks() == []


def test_messages_name_fields_by_their_labels_and_uploads_by_the_names_the_user_gave_them(app, tmp_path):
    from clipguide.ui.app import status_text

    with pytest.raises(UserError) as caught:
        app.draw({"prompt": "a dog", **TINY, "steps": "0"})
    assert caught.value.line() == "steps must be a whole number >= 1 and <= 1000000 (got 0) -- e.g. steps 500"
    broken = tmp_path / "holiday photo.png"
    save_png(broken, np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    broken.write_bytes(broken.read_bytes()[:300])  # its header reads, its pixels do not
    task = finished(app.draw({"prompt": "a dog", "seed": "1", **TINY, "init_image": str(broken)}))
    said = status_text(task, app.queue, app.words)
    assert task.status == BAD and str(app.uploads.folder) in task.line
    assert said.endswith("init image holiday photo.png is not a readable image (OSError) -- give a PNG, JPEG or "
                         "other picture file") and str(app.uploads.folder) not in said


def test_clipguide_ui_refuses_an_unknown_model_in_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "clipguide.ui", "--model", "nope", "--output-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [run.stderr.strip()] and "unknown model 'nope'" in run.stderr


def test_a_loopback_host_gets_no_warning_and_any_other_host_does():
    from clipguide.ui.serve import host_warning, parser

    assert parser().parse_args([]).host is None  # 127.0.0.1 unless given
    for host in ("127.0.0.1", "localhost", "127.0.0.2", "127.255.0.9", "::1", "[::1]"):
        assert host_warning(host) is None, host
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org"):
        assert "anyone who can reach it" in host_warning(host) and host in host_warning(host)


def ui(*args, timeout=120, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clipguide.ui", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_a_port_that_is_not_one_is_refused_in_one_line_and_leaves_no_temporary_folder(tmp_path):
    (tmp_path / "tmp").mkdir()
    for port in ("99999", "0"):
        run = ui("--port", port, "--output-dir", str(tmp_path / "out"), timeout=60,
                 env=dict(os.environ, TMPDIR=str(tmp_path / "tmp")))
        assert run.returncode == 2 and run.stderr == f"error: --port {port} is not a port -- give a number from 1 to " \
            "65535, or leave it out\n", run.stderr
    import socket

    with socket.socket() as taken:  # a port in use: found only once the server has started
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        run = ui("--port", port, "--output-dir", str(tmp_path / "out"), timeout=120,
                 env=dict(os.environ, TMPDIR=str(tmp_path / "tmp")))
    assert run.returncode == 2 and run.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port} ("), run.stderr
    assert run.stderr.count("\n") == 1 and run.stderr.endswith(" -- choose another --port\n"), run.stderr
    assert list((tmp_path / "tmp").iterdir()) == []


def test_the_server_removes_what_a_killed_server_was_writing(tmp_path):
    from clipguide.files import temp_path
    from clipguide.ui.app import App

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "out"
    (out / "batch-1").mkdir(parents=True)
    left = [temp_path(out / "a-dog-1.mp4"), temp_path(out / "batch-1" / "0001-a-cat-2.png")]
    left = [p.with_name(p.name.replace(f".{os.getpid()}.", f".{dead.stdout.strip()}.")) for p in left]
    alive = temp_path(out / "a-dog-2.mp4")  # a file this process is writing
    for p in [*left, alive]:
        p.write_bytes(b"half a video")
    App(out, "tiny").close()
    assert [p.exists() for p in left] == [False, False] and alive.exists()


def test_listening_beyond_this_machine_needs_a_password_file(tmp_path):
    run = ui("--host", "0.0.0.0", "--output-dir", str(tmp_path / "out"), timeout=60)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "--host 0.0.0.0 lets other machines in" in run.stderr and "--auth" in run.stderr
    run = ui("--host", "0.0.0.0", "--auth", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "out"))
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "cannot read" in run.stderr, run.stderr
    empty = tmp_path / "empty"
    empty.write_text("# no user\nann\n")
    run = ui("--auth", str(empty), "--output-dir", str(tmp_path / "out"))
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "user:password" in run.stderr, run.stderr
    assert not (tmp_path / "out").exists()


def test_auth_reads_user_password_lines():
    from clipguide.ui.serve import read_auth

    assert read_auth("# comment\nann:pass:word\n\nbob:x y\n") == {"ann": "pass:word", "bob": "x y"}
    with pytest.raises(UserError, match="line 2"):
        read_auth("ann:x\nbob\n")


@pytest.mark.parametrize("folder, problem", [
    ("/etc/passwd", "is not a folder"),  # a system file: never served, never written
    ("/proc/clipguide-out", "cannot write to /proc/clipguide-out"),  # read-only even for root
    ("/proc", "cannot write to /proc"),
])
def test_an_output_folder_that_cannot_be_written_is_refused_in_one_line(folder, problem):
    run = ui("--output-dir", folder, timeout=60)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert problem in run.stderr and "Traceback" not in run.stderr


def test_prompts_echoed_to_the_servers_terminal_are_escaped_and_cut(tmp_path):
    from clipguide.ui.app import App

    said = []
    app = App(tmp_path / "out", "tiny", log=said.append)
    try:
        prompt = "a\x00b\u202ec\x1b[31m\nd" + "x" * 10_000
        finished(app.draw({"prompt": prompt, "seed": "1", **TINY, "steps": "2"}, owner="me"))
    finally:
        app.close()
    assert len(said) == 2 and all(len(line) <= 200 and line.isprintable() for line in said), said
    assert said[0].startswith("#1 draw: a\\x00b\\u202ec\\x1b[31m\\ndxxx") and said[0].endswith("x…")


def test_steps_has_the_declared_upper_bound_and_the_form_says_it(app):
    from clipguide.options import BY_NAME
    from clipguide.ui.page import _field

    high = BY_NAME["steps"].high
    assert high is not None and high < 1e12
    with pytest.raises(UserError, match=f"^steps must be a whole number >= 1 and <= {high} \\(got {high + 1}\\)"):
        app.draw({"prompt": "a dog", **TINY, "steps": str(high + 1)})
    steps = next(f for f in app.form if f.name == "steps")
    assert _field(steps, app).info.endswith(f"<= {high}")  # the field's note says the bound the check uses
    assert app.queue.tasks() == []


def test_a_size_smaller_than_the_vqgans_factor_is_refused_before_it_is_queued(app):
    for size in ({"width": "1"}, {"height": "3"}):
        with pytest.raises(UserError, match="^size .* is smaller than the VQGAN's factor 4 -- use width/height of at"):
            app.draw({"prompt": "a dog", "seed": "1", **TINY, **size})
    assert app.queue.tasks() == []


def test_a_second_run_that_would_write_the_same_picture_is_refused_before_it_is_queued(app, tmp_path):
    first = app.draw({"prompt": "a red circle", "seed": "9", **TINY, "steps": "30"}, owner="me")
    with pytest.raises(UserError, match=r"^#1 \((queued|running)\) will write a-red-circle-9.png -- change the seed"):
        app.draw({"prompt": "a red circle", "seed": "9", **TINY, "steps": "30"}, owner="me")
    assert app.queue.tasks() == [first]
    assert finished(first).status == DONE, first.line


def test_image_prompt_weights_without_a_picture_are_refused(app):
    with pytest.raises(UserError, match="^image prompt weights '0.5' given without a picture -- upload"):
        app.draw({"prompt": "a dog", "seed": "1", **TINY}, weights=" 0.5 ")
    assert app.queue.tasks() == []


def test_a_queued_run_is_cancelled_by_its_owner_only(app):
    gate = Gate("running")
    running = app.queue.submit(gate, "me")
    assert gate.started.wait(5)
    waiting = app.draw({"prompt": "a dog", "seed": "1", **TINY}, owner="me")
    for stranger in ("you", None):
        with pytest.raises(UserError, match="^this tab has no queued run"):
            app.cancel(stranger)
    assert waiting.status == QUEUED
    assert app.cancel("me") is waiting and waiting.status == CANCELLED
    gate.release.set()
    wait_for(lambda: running.status == DONE)
    assert waiting.status == CANCELLED and not (app.output_dir / "a-dog-1.png").exists()


def test_a_video_of_a_short_run_lasts_long_enough_to_watch_unless_its_fields_say_otherwise(app, tmp_path):
    import imageio.v2 as iio

    def frames_and_fps(path):
        with iio.get_reader(path) as r:
            return r.count_frames(), r.get_meta_data()["fps"]

    assert {"fps", "save_every"} <= {f.name for f in app.form}  # from the declarations' ui=True
    task = finished(app.draw({"prompt": "a red circle", "seed": "2", **TINY, "steps": "40"}, video=True))
    assert task.status == DONE, task.line
    frames, fps = frames_and_fps(task.outputs[1])
    assert frames >= 40 and frames / fps >= 4.0, (frames, fps)
    task = finished(app.draw({"prompt": "a red circle", "seed": "3", **TINY, "steps": "40", "save_every": "10",
                              "fps": "8"}, video=True))
    assert task.status == DONE, task.line
    assert frames_and_fps(task.outputs[1]) == (4, 8.0)  # a frame every 10 of 40 steps
    for submit in (lambda: app.draw({"prompt": "a red circle", "seed": "4", **TINY, "fps": "8"}),
                   lambda: app.batch({**TINY, "fps": "8"}, text="a red circle\n")):
        with pytest.raises(UserError, match="^fps has no effect in this run: it needs a video"):
            submit()
    assert len(app.queue.tasks()) == 2  # the two videos above; nothing more


def test_the_status_line_says_how_long_the_run_has_left():
    from clipguide.ui.app import eta, status_text

    q = JobQueue()
    try:
        gate = Gate("a dog")
        task = q.submit(gate)
        assert gate.started.wait(5)
        task.live.on_step(Step(0, 100, torch.tensor([1.0]), torch.zeros(1, 3, 2, 2), {"phase": "main"}))
        time.sleep(0.3)
        task.live.on_step(Step(9, 100, torch.tensor([1.0]), torch.zeros(1, 3, 2, 2), {"phase": "main"}))
        said = status_text(task, q)
        gate.release.set()
    finally:
        q.close(wait=5)
    assert re.search(r"step 10/100 · [\d.]+ it/s · ~\d+ s left", said), said
    assert (eta(30, 2.0), eta(600, 2.0), eta(36000, 2.0)) == ("~15 s", "~5 min", "~5.0 h")


def test_use_these_settings_leaves_the_seed_blank_and_the_model_choice_says_what_works_offline(app, tmp_path):
    from clipguide.ui.gallery import Picture

    recipe = {"prompt": "a dog", "seed": 7, "steps": 40, "model": "tiny", "save_every": 0, "fps": 25.0}
    assert app.recipe_values(Picture(tmp_path / "x.png", recipe)) == \
        {"prompt": "a dog", "steps": "40", "model": "tiny", "seed": "", "save_every": "", "fps": "25.0"}
    choices = dict((name, label) for label, name in app.model_choices())
    assert choices["tiny"] == "tiny (offline)"
    assert choices["default"] == "default (not downloaded)"  # nothing in this test's cache


def test_the_page_names_the_output_folders_files_without_the_servers_path(app):
    from clipguide.ui.app import status_text
    from clipguide.ui.jobs import Task

    out = app.output_dir
    task = Task(1, Gate("a dog"), status=STOPPED, line=f"stopped at step 3: picture so far in {out / 'a-dog-1.png'}, "
                f"state in {out / 'a-dog-1.state.pt'}", ended=time.time())
    said = status_text(task, app.queue, app.words)
    assert said == "stopped #1 a dog · stopped at step 3: picture so far in a-dog-1.png, state in a-dog-1.state.pt"


def test_the_recipe_shown_names_the_pictures_a_run_read_without_a_path_of_the_server(app, tmp_path):
    from clipguide.ui.gallery import Picture

    upload = tmp_path / "holiday photo.png"
    save_png(upload, np.full((8, 8, 3), 9, np.uint8))
    copy = app.uploads.picture(upload, "init-image")
    recipe = {"prompt": "a dog", "seed": 1, "init_image": str(copy),
              "image_prompts": [f"{tmp_path}/b.png:0.5", "/srv/pictures/c d.png"], "input_sha256": {str(copy): "ab"}}
    shown = json.loads(app.recipe_text(Picture(tmp_path / "x.png", recipe)))
    assert shown == {"prompt": "a dog", "seed": 1, "init_image": "holiday photo.png",
                     "image_prompts": ["b.png:0.5", "c d.png"], "input_sha256": {"holiday photo.png": "ab"}}


def test_n_images_augments_and_init_weight_from_the_form_reach_the_run(app, tmp_path):
    """The form's n-images, augments and init-weight fields draw what the Python API draws with them; an
    init weight without an init image is refused before anything is queued, as on the command line."""
    from clipguide import generate
    from PIL import Image

    task = finished(app.draw({"prompt": "a red circle", "seed": "5", **TINY, "n_images": "2", "augments": "none"}))
    assert task.status == DONE and len(task.outputs) == 2, task.line
    reference = generate("a red circle", model="tiny", steps=8, candidates=1, cutn=4, seed=5, n_images=2,
                         augments="none", output_dir=str(tmp_path / "ref"), progress=False).outputs
    assert [read_recipe(p)["seed"] for p in task.outputs] == [5, 6]
    for ours, theirs in zip(task.outputs, reference):
        assert np.array_equal(np.asarray(Image.open(ours)), np.asarray(Image.open(theirs)))
    upload = tmp_path / "start.png"
    save_png(upload, np.full((64, 64, 3), 200, np.uint8))
    pulled = finished(app.draw({"prompt": "a red circle", "seed": "7", **TINY, "init_image": str(upload),
                                "init_weight": "50"}))
    assert pulled.status == DONE, pulled.line

    def api(weight):
        return np.asarray(Image.open(generate("a red circle", model="tiny", steps=8, candidates=1, cutn=4, seed=7,
                                              init_image=str(upload), init_weight=weight, progress=False,
                                              output=str(tmp_path / f"w{weight}.png")).outputs[0]))
    with_weight = api(50.0)
    assert np.array_equal(np.asarray(Image.open(pulled.outputs[0])), with_weight)
    assert not np.array_equal(with_weight, api(0.0))  # the weight shows in the picture
    with pytest.raises(UserError, match="init-weight has no effect"):
        app.draw({"prompt": "a red circle", **TINY, "init_weight": "2"})
