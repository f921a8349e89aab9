"""Story blends, zoom/pan/rotate videos and video restyling."""

from pathlib import Path

import imageio.v2 as iio
import numpy as np
import pytest
import torch

from clipguide import Session, Settings, generate
from clipguide.motion import apply, move
from clipguide.restyle import restyle


def video_frames(path):
    with iio.get_reader(path) as r:
        return r.count_frames(), r.get_meta_data()["fps"]


def test_video_length_sets_frames_and_duration(tiny_args):
    result = generate("a dog", seed=1, video="z.mp4", video_length=2, fps=5, save_every=2, zoom=1.05,
                      **(tiny_args | {"steps": None}))
    frames, fps = video_frames("z.mp4")
    assert (frames, fps) == (10, 5.0)  # 2 s at 5 fps
    assert result.steps == 19  # 9 moves of 2 steps, plus the first frame


def test_video_length_without_a_video_or_with_a_restyle_is_refused(tiny_args, clip_video):
    from clipguide.errors import UserError

    args = {k: v for k, v in tiny_args.items() if k != "steps"}  # --video-length sets the steps itself
    with pytest.raises(UserError, match="--video-length has no effect in this run: it needs --video or --frames-dir"):
        generate("a dog", seed=1, video_length=2, **args)
    assert not list(Path(".").glob("*.png"))
    from clipguide.settings import check_needs, resolve  # the command line's check, on a restyle's settings

    restyling = resolve(Settings(prompt="a dog", video_length=2, restyle_video=str(clip_video), video="r.gif", **args))
    with pytest.raises(UserError, match="--video-length has no effect in this run"):
        check_needs(restyling, restyling.given)


def test_pan_shifts_by_whole_pixels():
    image = torch.rand(1, 3, 16, 16)
    moved = move(image, pan_x=3)
    assert torch.allclose(moved[..., 3:], image[..., :-3], atol=1e-5)
    moved = move(image, pan_y=-2)
    assert torch.allclose(moved[..., :-2, :], image[..., 2:, :], atol=1e-5)


def test_zoom_scales_about_the_centre_and_rotate_turns():
    image = torch.zeros(1, 1, 17, 17)
    image[..., 8, 10] = 1  # two pixels right of the centre
    assert move(image, zoom=2.0)[0, 0, 8, 12].item() == pytest.approx(1.0, abs=1e-5)
    turned = move(image, rotate=90)
    assert torch.allclose(turned, torch.rot90(image, 1, (2, 3)), atol=1e-5) or \
        torch.allclose(turned, torch.rot90(image, -1, (2, 3)), atol=1e-5)


def test_the_motion_step_re_encodes_the_moved_picture_and_resets_the_optimiser(tiny_args):
    session = Session(Settings(prompt="a dog", **tiny_args), log=lambda m: None)
    vq = session.vqgan
    z = vq.random_latent(8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    opt = torch.optim.Adam([z])
    z.grad = torch.ones_like(z)
    opt.step()
    image = vq.decode(vq.quantize_st(z)).detach()
    apply(vq, z, opt, image, zoom=1.5, rotate=10)
    assert torch.equal(z.detach(), vq.encode(move(image, zoom=1.5, rotate=10)))
    assert len(opt.state) == 0


def test_a_zoom_run_moves_the_picture_after_each_frame_step_but_the_last(tiny_args):
    """Motion is a step of the pipeline between segments of the loop: after steps 0, 2, 4 of 7."""
    from clipguide.pipeline import Pipeline

    moved = []
    real = Pipeline.move
    Pipeline.move = lambda self, d: moved.append(d.step) or real(self, d)
    try:
        generate("a dog", seed=1, zoom=1.1, save_every=2, **(tiny_args | {"steps": 7}))
    finally:
        Pipeline.move = real
    assert moved == [1, 3, 5]  # steps done when it moves: after the steps with index 0, 2 and 4


@pytest.fixture
def clip_video(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "in.mp4"
    base = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    with iio.get_writer(path, format="FFMPEG", fps=8, codec="libx264", macro_block_size=1) as w:
        for i in range(6):
            w.append_data(np.roll(base, 2 * i, axis=1))
    return path


def restyled(tiny_args, video, out, smooth=0.5, **kw):
    session = Session(Settings(prompt="oil paint", restyle_video=str(video), smooth=smooth,
                               **(tiny_args | {"steps": 2})), log=lambda m: None)
    job = session.plan.job("oil paint", 0, Path(out), video=Path(out))
    return restyle(session, job, progress=False, **kw)


def test_restyle_keeps_frame_count_and_rate(tiny_args, clip_video):
    done = restyled(tiny_args, clip_video, "out.mp4")
    assert done.frames == 6 and video_frames(done.path) == (6, 8.0)


def test_smoothing_lowers_frame_to_frame_change(tiny_args, clip_video):
    def change(smooth, name):
        frames = []
        restyled(tiny_args, clip_video, name, smooth, on_frame=lambda i, img: frames.append(img.clone()))
        return np.mean([(a - b).abs().mean().item() for a, b in zip(frames, frames[1:])])

    assert change(0.8, "smooth.mp4") < change(0.0, "raw.mp4")


@pytest.mark.parametrize("calls_before_stop", [3, 5], ids=["inside-a-frame", "between-frames"])
def test_restyle_interrupted_resumes_to_the_same_video(tiny_args, clip_video, calls_before_stop):
    """Ctrl-C during a restyle saves the frames done and the running average; --resume finishes the
    very video an uninterrupted run makes (GIF frames compared exactly), whether the stop came between two
    frames or inside one, which the resume draws again from its start (issue 35 case 6: the random state
    saved was the one at the stop, so that frame came out different)."""
    from clipguide.batch import resume_plan
    from clipguide.errors import Interrupted, UserError

    restyled(tiny_args, clip_video, "whole.gif")
    calls = []
    with pytest.raises(Interrupted):
        restyled(tiny_args, clip_video, "part.gif", stop=lambda: calls.append(1) or len(calls) > calls_before_stop)
    assert Path("part.state.pt").exists()
    with pytest.raises(UserError, match="a restyled video goes on into its own video file"):
        resume_plan("part.state.pt", {"output": "moved.png"})  # it would write no picture there
    plan, jobs, state = resume_plan("part.state.pt", {})
    assert 0 < state["step"] < 6
    done = restyle(Session(plan, log=lambda m: None), jobs[0], progress=False, resume=state)
    assert done.frames == 6 and not Path("part.state.pt").exists()
    import imageio.v3 as iio3

    assert np.array_equal(iio3.imread("part.gif", index=None), iio3.imread("whole.gif", index=None))


def test_restyle_from_the_cli(tiny, clip_video):
    from typer.testing import CliRunner

    from clipguide.cli import app

    cfg, ckpt = tiny["vq"]
    r = CliRunner().invoke(app, ["oil paint", "--restyle-video", str(clip_video), "--vqgan", str(ckpt),
                                 "--clip", f"local-dir:{tiny['clip']}", "--width", "32", "--height", "32",
                                 "--cutn", "2", "--steps", "1", "-q"])
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == "outputs/in-oil-paint.mp4" and video_frames("outputs/in-oil-paint.mp4")[0] == 6


def test_restyle_honours_threads_and_the_memory_check(tiny_args, clip_video, monkeypatch):
    """A restyle is a run like any other: --threads counts, and the memory check refuses one that
    will not fit before any frame is written."""
    import clipguide.run
    from clipguide.errors import UserError

    seen, real = [], torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real(n)))
    restyled(tiny_args | {"threads": 1}, clip_video, "threads.gif")
    assert 1 in seen
    monkeypatch.setattr(clipguide.run, "available_bytes", lambda device: 1000)
    with pytest.raises(UserError, match="this run needs about"):
        restyled(tiny_args, clip_video, "big.gif")
    assert not Path("big.gif").exists()
