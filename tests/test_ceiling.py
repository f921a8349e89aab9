"""The ceiling measurement: the shipped tiny VQGAN fitted to true world pictures, then judged strictly."""

import pytest
import torch

from clipguide.models.registry import resolve_vqgan
from clipguide.models.vqgan import load_vqgan
from clipguide.tiny import ceiling, world


@pytest.fixture(scope="module")
def vqgan():
    files = resolve_vqgan("tiny", fetch=False)
    return load_vqgan(files.config, files.checkpoint).requires_grad_(False)


def test_no_steps_gives_the_encoders_own_reconstruction(vqgan):
    b = world.make_batch(3, 11)
    pictures, losses = ceiling.fit_latents(vqgan, b.images, steps=0, lr=0.1)
    with torch.no_grad():
        assert torch.equal(pictures, vqgan.decode(vqgan.encode(b.images)))
    assert torch.equal(losses[0], losses[1])


def test_the_kept_picture_is_the_closest_step_and_never_worse_than_the_start(vqgan):
    b = world.make_batch(4, 12)
    pictures, losses = ceiling.fit_latents(vqgan, b.images, steps=6, lr=0.01)
    diff = (pictures - b.images).flatten(1)
    assert torch.allclose(diff.abs().mean(1) + diff.pow(2).mean(1), losses[1], atol=1e-6)
    assert (losses[1] <= losses[0]).all()
    assert (losses[1] < losses[0]).any()  # some step got closer than the encoder's codes


def test_true_world_pictures_pass_and_their_labels_are_the_ones_judged():
    b = world.make_batch(9, 13)
    verdicts = ceiling.judge_batch(b.images, b)
    assert all(v["background_ok"] and v["colour_ok"] and v["shape_ok"] and v["specks"] == 0 for v in verdicts)
    swapped = b._replace(colour=b.background, background=b.colour)  # the same pictures, colours asked the wrong way
    assert not any(v["background_ok"] or v["shape_ok"] for v in ceiling.judge_batch(b.images, swapped))
    bands = {v["size"] for v in verdicts}
    assert {f"radius < {ceiling.SMALL:g} px", f"radius >= {ceiling.SMALL:g} px"} >= bands
    assert all(f"Shapes of {band}" in ceiling.report(verdicts) for band in bands)


def test_the_command_prints_raw_and_finished_tables(capsys):
    assert ceiling.main(["--pictures", "3", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "Raw:" in out and "With the two-colour finish" in out and out.count("| **all** | 3 |") >= 4


def test_a_missing_checkpoint_is_one_line_and_exit_2(tmp_path, capsys):
    assert ceiling.main(["--vqgan", str(tmp_path / "none.ckpt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: VQGAN checkpoint not found") and "\n" not in err
