"""The web UI without a browser: the job queue, the live preview, the form made from the declarations,
uploads, the gallery, and runs of the tiny model through the app's actions."""

import json
import os
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
from clipguide.options import OPTIONS
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
    assert [f.name for f in form] == [o.name for o in OPTIONS if o.ui]
    kinds = {f.name: f.kind for f in form}
    assert {"prompt", "negative", "steps", "width", "height", "seed", "model", "cutn", "lr", "init_image",
            "image_prompts"} <= set(kinds)
    assert (kinds["init_image"], kinds["image_prompts"], kinds["steps"]) == (PICTURE, PICTURES, NUMBER)
    steps = next(f for f in form if f.name == "steps")
    assert steps.default == "500 (tiny: 150)" and steps.info == next(o.help for o in OPTIONS if o.name == "steps")
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
