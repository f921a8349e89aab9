"""Interruption, crashes and resumption: nothing a signal or a kill does may cost work or leave a broken file."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v2 as iio
import numpy as np
import pytest
import torch
from PIL import Image

import clipguide.guide.objective
from clipguide import generate
from clipguide.errors import RunFailed
from clipguide.outputs.pictures import read_recipe
from clipguide.outputs.state import load_state


def cli(args, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "clipguide", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture
def base(tiny):
    cfg, ckpt = tiny["vq"]
    return ["--vqgan", ckpt, "--vqgan-config", cfg, "--clip", f"local-dir:{tiny['clip']}", "--width", 32,
            "--height", 32, "--cutn", 2, "-q", "--seed", 3]


def wait_for(path: Path, proc, timeout=120):
    end = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_image_and_state_and_resume_equals_an_uninterrupted_run(base, sig):
    full = cli([*base, "a dog", "--steps", 40, "-o", "full.png"])
    assert full.wait() == 0, full.communicate()
    proc = cli([*base, "a dog", "--steps", 40, "-o", "part.png", "--frames-dir", "fr", "--save-every", 1])
    wait_for(Path("fr/00008.png"), proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "clipguide --resume part.state.pt" in err
    done = read_recipe("part.png")["steps_done"]
    assert 8 <= done < 40
    assert load_state("part.state.pt")["step"] == done
    resumed = cli(["--resume", "part.state.pt", "-q"])
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert np.array_equal(np.asarray(Image.open("part.png")), np.asarray(Image.open("full.png")))
    assert not Path("part.state.pt").exists()
    assert "steps_done" not in read_recipe("part.png")


def test_a_good_run_left_without_teardown_still_delivers_its_output_and_whole_files(base, tmp_path):
    # `main` skips the interpreter's teardown after a good run: what it printed into a pipe (block-buffered here,
    # no PYTHONUNBUFFERED) must still arrive, and the PNG and the video must be whole
    out = tmp_path / "pic.png"
    args = [*base, "a dog", "--steps", 6, "-o", out, "--video", tmp_path / "v.mp4", "--save-every", 2]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run([sys.executable, "-m", "clipguide", *map(str, args)], capture_output=True, text=True,
                          env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(out), str(tmp_path / "v.mp4")]
    assert read_recipe(out)["steps"] == 6 and "steps_done" not in read_recipe(out)  # finished, not partial
    assert np.asarray(Image.open(out)).shape == (32, 32, 3)
    with iio.get_reader(tmp_path / "v.mp4") as video:  # a video cut short has no index and does not open
        assert video.count_frames() >= 3
    bad = subprocess.run([sys.executable, "-m", "clipguide", *map(str, [*base, "a dog", "-o", out])],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--overwrite" in bad.stderr


def test_sigkill_never_leaves_a_truncated_file_under_a_final_name(base):
    for delay in (0.0, 0.13, 0.31):
        for left in ("fr", "k.state.pt"):  # what the last kill left: this run's own are waited for and checked
            shutil.rmtree(left) if Path(left).is_dir() else Path(left).unlink(missing_ok=True)
        proc = cli([*base, "a dog", "--steps", 10000, "-o", "k.png", "--frames-dir", "fr", "--save-every", 1,
                    "--state-every", 1, "--video", "k.mp4", "--overwrite"])
        wait_for(Path("fr/00003.png"), proc)
        time.sleep(delay)
        proc.kill()
        proc.communicate()
        for png in Path("fr").glob("[0-9]*.png"):
            with Image.open(png) as im:
                im.load()  # raises on a truncated file
        # a state every step: the one of step 3 was written before frame 3 was handed to its writer
        assert load_state("k.state.pt")["step"] >= 3
        assert not Path("k.mp4").exists() and not Path("k.png").exists()
    rerun = cli([*base, "a dog", "--steps", 2, "-o", "k.png", "--frames-dir", "fr", "--video", "k.mp4", "--overwrite"])
    assert rerun.wait() == 0
    assert not [p for p in Path(".").rglob(".*tmp*")], "a new run sweeps the temporary files killed runs left"


def test_batch_interrupted_then_rerun_finishes_without_redoing_work(base):
    Path("p.txt").write_text("a dog\na cat\n")
    command = [*base, "--batch", "p.txt", "--output-dir", "out", "--steps", 80, "--save-every", 1, "--frames-dir", "fr"]
    proc = cli(command)
    wait_for(Path("fr/0001-a-dog-4/00005.png"), proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    done = load_state("out/0001-a-dog-4.state.pt")["step"]
    assert 5 <= done < 80
    # the record of what was done survives the interruption (there was none before issue 23)
    rows = [json.loads(line) for line in Path("out/manifest.jsonl").read_text().splitlines()]
    assert [(r["line"], r["status"]) for r in rows] == [(1, "interrupted")]
    drawn = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in Path("fr/0001-a-dog-4").glob("*.png")}
    rerun = cli(command)  # the same command again, as the interruption says
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert f"going on from step {done} of out/0001-a-dog-4.state.pt" in err
    assert all((p.stat().st_ino, p.stat().st_mtime_ns) == was for p, was in drawn.items())  # not drawn again
    assert len(list(Path("fr/0001-a-dog-4").glob("*.png"))) == 80
    assert "2 made, 0 already done" in err
    rows = [json.loads(line) for line in Path("out/manifest.jsonl").read_text().splitlines()]
    assert [(r["line"], r["status"]) for r in rows] == [(1, "done"), (2, "done")]
    assert sorted(p.name for p in Path("out").glob("*.png")) == ["0001-a-dog-4.png", "0002-a-cat-5.png"]
    assert not list(Path("out").glob("*.state.pt"))


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_image(tiny_args, monkeypatch):
    real = clipguide.guide.objective.prompt_loss
    calls = {"n": 0}

    def poisoned(*a):
        calls["n"] += 1
        loss = real(*a)
        return loss * float("nan") if calls["n"] > 4 else loss

    monkeypatch.setattr(clipguide.guide.objective, "prompt_loss", poisoned)
    with pytest.raises(RunFailed, match="the loss became nan at step 5.*kept the image of step 4"):
        generate("a dog", seed=1, output="n.png", **(tiny_args | {"steps": 20}))
    assert read_recipe("n.png")["steps_done"] == 4
    assert np.asarray(Image.open("n.png")).std() > 0


class Killed(Exception):
    """What a SIGKILL does to a run, in-process: it stops between two steps, and nothing more is written."""


@pytest.mark.parametrize("how", ["interrupted", "killed after a state"])
def test_a_resumed_video_holds_every_frame_of_the_run(tiny_args, how):
    """Issue 35 case 2: the video of a run interrupted at step 11 of 20 (or killed at step 11 after a state
    file at step 6) and resumed holds the ten frames an uninterrupted run's video holds, not the last few."""
    from clipguide import Session, Settings
    from clipguide.errors import Interrupted
    from cli_run import run

    args = tiny_args | {"steps": 20, "save_every": 2, "threads": 1}
    generate("a dog", seed=4, output="full.png", video="full.mp4", progress=False, **args)
    session = Session(Settings(prompt="a dog", video="part.mp4", output="part.png", state_every=6, **args),
                      log=lambda m: None)
    seen = {"steps": 0}

    def step(info):
        seen["steps"] = info.step + 1
        if how != "interrupted" and seen["steps"] == 11:
            raise Killed

    with pytest.raises(Interrupted if how == "interrupted" else Killed):
        session.run(session.plan.single_jobs(4), stop=lambda: seen["steps"] >= 11, progress=False, on_step=step)
    assert load_state("part.state.pt")["step"] == (11 if how == "interrupted" else 6)
    code, out, err = run("--resume", "part.state.pt", "-q")
    assert code == 0, err
    frames = [np.stack([f for f in iio.get_reader(name).iter_data()]) for name in ("full.mp4", "part.mp4")]
    assert len(frames[0]) == 10 and frames[1].shape == frames[0].shape
    assert np.array_equal(frames[1], frames[0])
    assert np.array_equal(np.asarray(Image.open("part.png")), np.asarray(Image.open("full.png")))


def test_a_batch_rerun_goes_on_from_a_state_only_when_everything_that_shapes_the_picture_matches(tiny_args):
    """Issue 35 case 5: a line interrupted during its search of three starts goes on from its state when
    rerun with the same settings (and comes out as an uninterrupted run's picture), but a rerun with
    another --lr starts the line afresh, says so, and draws what a fresh run at that lr draws."""
    from clipguide import Settings
    from clipguide.batch import run_batch
    from clipguide.errors import Interrupted
    from clipguide.plan import make_plan

    Path("p.txt").write_text("a dog\n")
    args = tiny_args | {"steps": 8, "candidates": 3, "threads": 1}

    def batch(folder, stop=None, **changes):
        said, seen = [], {"steps": 0}
        plan = make_plan(Settings(batch="p.txt", output_dir=folder, **(args | changes)))
        run_batch(plan, log=said.append, progress=False, stop=stop and (lambda: seen["steps"] >= stop),
                  on_step=lambda info: seen.update(steps=info.step + 1))
        return said

    def picture(folder):
        return np.asarray(Image.open(f"{folder}/0001-a-dog-1.png"))

    batch("full")
    batch("full-lr", lr=0.5)
    for folder in ("same", "other"):
        with pytest.raises(Interrupted):
            batch(folder, stop=1)
        assert load_state(f"{folder}/0001-a-dog-1.state.pt")["phase"] == "search"
    said = batch("same")
    assert "going on from step 1 of same/0001-a-dog-1.state.pt" in said
    assert np.array_equal(picture("same"), picture("full"))
    said = batch("other", lr=0.5)
    assert "note: other/0001-a-dog-1.state.pt was drawn with lr 0.1, not 0.5; starting its line afresh" in said
    assert not any("going on" in line for line in said)
    assert np.array_equal(picture("other"), picture("full-lr")) and read_recipe("other/0001-a-dog-1.png")["lr"] == 0.5
