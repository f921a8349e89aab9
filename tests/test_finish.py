"""`--colours N`: every picture written is finished in its N main colours and their blends."""

import numpy as np
import torch
from PIL import Image

from clipguide import generate
from clipguide.guide.finish import finish_colours
from clipguide.outputs.pictures import read_recipe

RED, BLUE, OLIVE = (0.9, 0.1, 0.1), (0.1, 0.25, 0.9), (0.45, 0.45, 0.05)


def segment_distance(px: np.ndarray, a, b) -> np.ndarray:
    a, b = np.asarray(a), np.asarray(b)
    t = np.clip((px - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1)
    return np.linalg.norm(px - (a + t[..., None] * (b - a)), axis=-1)


def red_square_on_blue(speck=OLIVE) -> torch.Tensor:
    """A red square on blue with a soft left edge (a half-and-half column) and a 3x3 speck."""
    image = torch.tensor(BLUE)[:, None, None].repeat(1, 32, 32)
    image[:, 8:24, 10:24] = torch.tensor(RED)[:, None, None]
    image[:, 8:24, 9] = (torch.tensor(RED) + torch.tensor(BLUE))[:, None] / 2
    image[:, 26:29, 3:6] = torch.tensor(speck)[:, None, None]
    return image[None]


def test_two_colours_remove_a_speck_and_keep_the_soft_edge_and_the_flat_colours():
    before = red_square_on_blue()
    after = finish_colours(before, 2)[0].permute(1, 2, 0).numpy()
    was = before[0].permute(1, 2, 0).numpy()
    speck = after[26:29, 3:6].reshape(-1, 3)
    assert np.abs(was[26:29, 3:6] - OLIVE).max() < 1e-6 and segment_distance(speck, RED, BLUE).max() < 1e-5
    assert np.linalg.norm(speck - np.asarray(OLIVE), axis=-1).min() > 0.2  # the olive is gone
    untouched = np.ones((32, 32), bool)
    untouched[26:29, 3:6] = False
    assert np.abs(after[untouched] - was[untouched]).max() < 1e-5  # flat colours and the blend column stay
    assert np.abs(after[8:24, 9] - (np.asarray(RED) + BLUE) / 2).max() < 1e-5


def test_three_colours_keep_a_third_colour_and_zero_changes_nothing():
    before = red_square_on_blue(speck=(0.1, 0.75, 0.2))
    assert torch.equal(finish_colours(before, 0), before)
    assert (finish_colours(before, 2) - before).abs().max() > 0.3  # two colours: the green goes
    assert (finish_colours(before, 3) - before).abs().max() < 1e-5  # red, blue and green are its three


def test_each_picture_of_a_batch_gets_its_own_colours():
    one = red_square_on_blue()
    other = one[:, [1, 2, 0]]  # the same picture with its channels turned: other colours
    both = finish_colours(torch.cat([one, other]), 2)
    assert (both[0] - finish_colours(one, 2)[0]).abs().max() < 1e-6
    assert (both[1] - finish_colours(other, 2)[0]).abs().max() < 1e-6


def off_two_colours(path) -> float:
    """The largest distance of a pixel from the blends of the picture's two commonest colours."""
    px = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    values, counts = np.unique(px, axis=0, return_counts=True)
    a, b = values[np.argsort(counts)[-2:]] / 255
    return float(segment_distance(px / 255, a, b).max())


def test_a_run_with_colours_writes_two_colour_pictures_and_frames_and_steers_the_same(tmp_path, tiny_args):
    args = dict(tiny_args, steps=6, seed=5, save_every=3)
    plain = generate("a red circle", output=str(tmp_path / "plain.png"), frames_dir=str(tmp_path / "f0"), **args)
    flat = generate("a red circle", output=str(tmp_path / "flat.png"), frames_dir=str(tmp_path / "f2"), colours=2,
                    **args)
    assert off_two_colours(plain.outputs[0]) > 0.1  # the random models draw many colours
    assert off_two_colours(flat.outputs[0]) < 0.02  # within the PNG's rounding of a blend of two
    frames = sorted((tmp_path / "f2").glob("*.png"))
    assert frames and all(off_two_colours(f) < 0.02 for f in frames)
    assert plain.loss == flat.loss  # the guidance scores the decoder's own picture either way
    assert read_recipe(flat.outputs[0])["colours"] == 2 and read_recipe(plain.outputs[0])["colours"] == 0
