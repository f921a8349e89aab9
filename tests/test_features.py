"""What artists reach for (issue 20), each shown by the effect it promises on tiny models."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli_run import run
from clipguide import Settings, generate
from clipguide.guide.palette import NAMED
from clipguide.outputs.pictures import read_recipe
from clipguide.outputs.state import load_state
from clipguide.settings import resolve


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(float) / 255




@pytest.fixture
def base30(base):
    return [*base, "--steps", 30]  # the last --steps given counts


def test_the_palette_raises_the_share_of_pixels_near_its_colours():
    """The tiny model asked for a green square on white, with a palette of red and blue: far more of
    the picture comes out near red or blue than without the palette."""
    def near(path, colours):
        px = pixels(path).reshape(-1, 3)
        d = np.min([np.linalg.norm(px - np.array(c), axis=1) for c in colours], axis=0)
        return float((d < 0.2).mean())

    args = dict(model="tiny", steps=40, seed=1, candidates=1)
    plain = generate("a green square on a white background", output="plain.png", **args).outputs[0]
    held = generate("a green square on a white background", output="held.png", palette="red,#1a40e6:10",
                    **args).outputs[0]
    colours = [(0.90, 0.10, 0.10), (0x1A / 255, 0x40 / 255, 0xE6 / 255)]
    assert near(held, colours) > near(plain, colours) + 0.3
    assert read_recipe(held)["palette"] == "red,#1a40e6:10"


def test_the_tiny_preset_pulls_each_picture_toward_the_colours_its_prompt_names():
    """The tiny preset's `--palette prompt:0:10`: far fewer pixels end up neither yellow nor black in
    'a yellow triangle on a black background' than with `--palette none`, which turns it off."""
    def off_palette(path):
        px = pixels(path).reshape(-1, 3)
        d = np.min([np.linalg.norm(px - np.array(NAMED[c]), axis=1) for c in ("yellow", "black")], axis=0)
        return float((d >= 0.15).mean())

    args = dict(model="tiny", steps=40, seed=3, candidates=1)
    preset = generate("a yellow triangle on a black background", output="preset.png", **args).outputs[0]
    plain = generate("a yellow triangle on a black background", output="plain.png", palette="none", **args).outputs[0]
    assert read_recipe(preset)["palette"] == "prompt:0:10" and read_recipe(plain)["palette"] == "none"
    assert off_palette(preset) < 0.75 * off_palette(plain)


TRIANGLE = dict(prompt="a red triangle on a blue background", model="tiny", steps=40, seed=2, candidates=1)


def test_symmetry_lowers_the_left_right_difference():
    def asymmetry(path):
        p = pixels(path)
        return float(np.abs(p - p[:, ::-1]).mean())

    plain = generate(output="plain.png", **TRIANGLE).outputs[0]
    mirrored = generate(output="mirror.png", symmetry_weight=5.0, **TRIANGLE).outputs[0]
    assert asymmetry(mirrored) < 0.5 * asymmetry(plain)
    assert read_recipe(mirrored)["symmetry_weight"] == 5.0


def test_saturation_weight_lowers_the_mean_saturation():
    def saturation(path):
        p = pixels(path)
        return float((p.max(-1) - p.min(-1)).mean())

    # the preset's pull toward the prompt's (saturated) red and blue is off: this is the saturation term alone
    plain = generate(output="plain.png", palette="none", **TRIANGLE).outputs[0]
    calm = generate(output="calm.png", saturation_weight=5.0, palette="none", **TRIANGLE).outputs[0]
    assert saturation(calm) < 0.5 * saturation(plain)
    assert read_recipe(calm)["saturation_weight"] == 5.0


def test_a_noise_prompt_changes_the_picture_and_is_recorded():
    args = TRIANGLE | {"steps": 20}
    plain = generate(output="plain.png", **args).outputs[0]
    noisy = generate(output="noisy.png", noise_prompts=["42:2"], **args).outputs[0]
    other = generate(output="other.png", noise_prompts=["43:2"], **args).outputs[0]
    assert not np.array_equal(pixels(plain), pixels(noisy))
    assert not np.array_equal(pixels(noisy), pixels(other))  # the seed makes the embedding
    assert read_recipe(noisy)["noise_prompts"] == ["42:2"]


@pytest.mark.parametrize("kind", ["pixels", "gradient"])
def test_each_init_noise_changes_the_start_and_is_recorded(tiny_args, kind):
    one = tiny_args | {"steps": 1}
    plain = generate("a dog", output="plain.png", seed=5, **one).outputs[0]
    noisy = generate("a dog", output="noisy.png", seed=5, init_noise=kind, **one).outputs[0]
    again = generate("a dog", output="again.png", seed=5, init_noise=kind, **one).outputs[0]
    assert not np.array_equal(pixels(plain), pixels(noisy))
    assert np.array_equal(pixels(noisy), pixels(again))  # the seed makes the noise picture
    assert read_recipe(noisy)["init_noise"] == kind


def test_quality_scales_the_preset_as_its_table_says_and_an_explicit_option_wins():
    shaped = ("steps", "candidate_steps", "cutn", "width", "height")
    normal = resolve(Settings(prompt="a", model="tiny"))
    draft = resolve(Settings(prompt="a", model="tiny", quality="draft"))
    assert [getattr(normal, name) for name in shaped] == [150, 90, 16, 64, 64]
    assert [getattr(draft, name) for name in shaped] == [75, 45, 8, 32, 32]  # the table's 0.5 of each
    assert resolve(Settings(prompt="a", model="tiny", quality="draft", steps=150)).steps == 150
    best = resolve(Settings(prompt="a", quality="best"))
    assert best.clip == ["ViT-B-32:openai", "ViT-B-16:openai", "RN50:openai"]  # the default preset's ensemble
    assert resolve(Settings(prompt="a", quality="best", clip=["ViT-B-32:openai"])).clip == ["ViT-B-32:openai"]


def test_quality_draft_draws_fewer_steps_and_cutouts_on_a_smaller_picture(base):
    code, out, err = run("a dog", *base[:6], "--quality", "draft", "--seed", 1, "-q", "-o", "d.png")
    assert code == 0, err
    recipe = read_recipe("d.png")
    assert (recipe["quality"], recipe["steps"], recipe["cutn"]) == ("draft", 250, 16)
    assert Image.open("d.png").size == (128, 128)


def test_from_redraws_the_same_pixels_and_an_option_given_beside_it_wins(base30):
    assert run("a dog ^ a cat", *base30, "--seed", 6, "--tv-weight", 1, "--palette", "red:0.5", "-o", "a.png")[0] == 0
    code, out, err = run("--from", "a.png", "-o", "b.png", "-q")
    assert code == 0, err
    assert np.array_equal(pixels("a.png"), pixels("b.png"))
    code, _, err = run("--from", "a.png", "-o", "c.png", "--seed", 7, "-q")
    assert code == 0, err
    assert read_recipe("c.png")["seed"] == 7 and not np.array_equal(pixels("a.png"), pixels("c.png"))
    Image.new("RGB", (8, 8)).save("plain.png")
    code, _, err = run("--from", "plain.png", "-q")
    assert code == 2 and "holds no clipguide recipe" in err
    code, _, err = run("--from", "a.png", "-o", "d.png", "--quality", "draft", "-q")  # it would scale nothing
    assert code == 2 and "--quality scales only the options a run is not given" in err and not Path("d.png").exists()


def test_from_in_another_folder_reads_the_same_input_pictures_or_says_they_changed(base):
    """Issue 35 case 4: the recipe names its init image and image prompt by absolute path with their
    sha256, so --from in a folder with pictures of the same names redraws the same pixels, and a
    picture changed since is refused (not silently used)."""
    import os

    for folder, colour in [("a", (200, 30, 30)), ("b", (30, 30, 200))]:
        Path(folder).mkdir()
        Image.new("RGB", (32, 32), colour).save(f"{folder}/start.png")
        Image.new("RGB", (16, 16), colour[::-1]).save(f"{folder}/style.png")
    os.chdir("a")
    code, _, err = run("a dog", *base, "--seed", 2, "--init-image", "start.png", "--image-prompt", "style.png:2",
                       "-o", "drawn.png")
    assert code == 0, err
    recipe = read_recipe("drawn.png")
    assert recipe["init_image"] == str(Path("start.png").absolute())
    assert recipe["image_prompts"] == [f"{Path('style.png').absolute()}:2.0"]
    assert set(recipe["input_sha256"]) == {str(Path(n).absolute()) for n in ("start.png", "style.png")}
    os.chdir("../b")
    code, _, err = run("--from", "../a/drawn.png", "-o", "again.png", "-q")
    assert code == 0, err
    assert np.array_equal(pixels("again.png"), pixels("../a/drawn.png"))
    Image.new("RGB", (32, 32), (0, 255, 0)).save("../a/start.png")  # changed since
    code, _, err = run("--from", "../a/drawn.png", "-o", "changed.png", "-q")
    assert code == 2 and "start.png is not the picture it was drawn from" in err, err
    assert not Path("changed.png").exists()
    code, _, err = run("--from", "../a/drawn.png", "-o", "mine.png", "--init-image", "start.png", "-q")
    assert code == 0, err  # a picture given beside --from is the user's choice
    assert read_recipe("mine.png")["init_image"] == str(Path("start.png").absolute())


def test_preview_writes_a_numbered_sheet_and_a_state_per_seed_and_one_resumes(base30):
    code, out, err = run("a dog", *base30, "--preview", 4, "--preview-steps", 5, "--seed", 10)
    assert code == 0, err
    sheet = Path(out.strip())
    assert sheet == Path("outputs/a-dog-preview-10.png") and read_recipe(sheet)["preview_seeds"] == [10, 11, 12, 13]
    states = sorted(Path("outputs").glob("*.state.pt"))
    assert [p.name for p in states] == [f"a-dog-{s}.state.pt" for s in (10, 11, 12, 13)]
    said = re.findall(r"^(\d): seed (\d+): go on with: clipguide --resume (\S+)$", err, re.M)
    assert [(int(k), int(s)) for k, s, _ in said] == [(1, 10), (2, 11), (3, 12), (4, 13)]
    picture = pixels(sheet)
    labels = picture[-26:]  # the strip under the thumbnails, where each number and seed is written
    columns = np.where((labels < 0.5).any(-1).any(0))[0]
    assert len(np.split(columns, np.where(np.diff(columns) > 20)[0] + 1)) == 4  # four labels, one under each
    code, out, err = run("--resume", said[2][2], "-q")
    assert code == 0, err
    done = read_recipe("outputs/a-dog-12.png")
    assert done["seed"] == 12 and done["steps"] == 30 and "steps_done" not in done


def test_ctrl_c_during_a_preview_is_an_interrupt(base30, monkeypatch):
    """Issue 35 case 8: a preview stopped by Ctrl-C (here: during its first step) exits 130 with the
    interrupt's one line, keeping the sheet so far and each seed's state, not exit 0 with 'go on with'
    lines as if it had finished."""
    import clipguide.run

    monkeypatch.setattr(clipguide.run.StopFlag, "__call__", lambda self: True)  # as if Ctrl-C came at once
    code, out, err = run("a dog", *base30, "--preview", 2, "--preview-steps", 5, "--seed", 10)
    assert code == 130, err
    assert err.strip() == ("interrupted: work so far in outputs/a-dog-preview-10.png; continue with: clipguide "
                           "--resume outputs/a-dog-10.state.pt (or outputs/a-dog-11.state.pt)")
    assert out == "" and read_recipe("outputs/a-dog-preview-10.png")["steps_done"] == 1
    assert [load_state(f"outputs/a-dog-{seed}.state.pt")["step"] for seed in (10, 11)] == [1, 1]


def test_a_nan_loss_in_a_preview_fails_keeping_the_last_good_sheet(base30, monkeypatch):
    """Issue 35 case 8: the preview checks the loss like every run (it drew NaN pictures and exited 0)."""
    import clipguide.guide.objective

    real, calls = clipguide.guide.objective.prompt_loss, {"n": 0}

    def poisoned(*a):
        calls["n"] += 1
        return real(*a) * (float("nan") if calls["n"] > 3 else 1.0)

    monkeypatch.setattr(clipguide.guide.objective, "prompt_loss", poisoned)
    code, out, err = run("a dog", *base30, "--preview", 2, "--preview-steps", 5, "--seed", 20, "-q")
    assert code == 1, err
    assert "failed: the loss became nan at step 4; kept the sheet of step 3 in outputs/a-dog-preview-20.png" in err
    assert read_recipe("outputs/a-dog-preview-20.png")["steps_done"] == 3
    assert not list(Path("outputs").glob("a-dog-2?.state.pt"))


def test_fit_shrinks_an_oversized_run_to_the_reported_size(base, tiny_args, monkeypatch):
    import clipguide.run
    from clipguide.run import Session

    small = Session(Settings(prompt="a", **(tiny_args | {"width": 16, "height": 16, "cutn": 2})), log=lambda m: None)
    budget = small.need(1) + 1000  # room for a 16x16 picture, not for 64x48
    monkeypatch.setattr(clipguide.run, "available_bytes", lambda device: budget)
    args = [a for a in base if a not in (32, "--width", "--height")]
    code, _, err = run("a dog", *args, "--width", 64, "--height", 48, "--seed", 1, "-o", "big.png")
    assert code == 2 and "the largest size that fits is" in err and "--fit" in err
    size = re.search(r"the largest size that fits is (\d+)x(\d+)", err).groups()
    code, _, err = run("a dog", *args, "--width", 64, "--height", 48, "--seed", 1, "-o", "fit.png", "--fit")
    assert code == 0, err
    said = re.search(r"--fit: 64x48 needs more memory than is free; drawing at (\d+)x(\d+)", err).groups()
    assert said == size
    assert Image.open("fit.png").size == tuple(map(int, said)) and int(said[0]) < 64
    assert read_recipe("fit.png")["width"] == int(said[0])


def test_preview_honours_threads_and_the_memory_check(base30, monkeypatch):
    """A preview is a run like any other: it draws on --threads threads, and one that the memory
    estimate says will not fit is refused with one line before it starts."""
    import clipguide.run

    seen, real = [], torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real(n)))
    code, _, err = run("a dog", *base30, "--preview", 2, "--preview-steps", 2, "--threads", 1, "--seed", 3)
    assert code == 0, err
    assert 1 in seen
    monkeypatch.setattr(clipguide.run, "available_bytes", lambda device: 1000)
    code, _, err = run("a dog", *base30, "--preview", 2, "--preview-steps", 2, "--seed", 5)
    assert code == 2 and "this run needs about" in err and not Path("outputs/a-dog-preview-5.png").exists()


def test_more_threads_than_cores_is_pointed_out_and_as_many_is_not(base, monkeypatch):
    """--threads above the cores this process may use gets a note naming both numbers (such runs were
    ~10x slower on a 2-core machine); a run within them gets none."""
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    code, _, err = run("a dog", *base, "--steps", 2, "--threads", 3, "--seed", 1, "-o", "over.png")
    assert code == 0, err
    assert "--threads 3 is more than the 2 CPU cores" in err
    code, _, err = run("a dog", *base, "--steps", 2, "--threads", 2, "--seed", 1, "-o", "within.png")
    assert code == 0 and "more than the" not in err
