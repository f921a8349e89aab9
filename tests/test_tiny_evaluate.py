"""The pixel-level judge behind the tiny model's accuracy table."""

import numpy as np
import pytest
import torch

from clipguide.tiny import world
from clipguide.tiny.evaluate import grid_prompts, judge, table


def as_uint8(image):
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def test_every_world_picture_passes_all_three_checks():
    b = world.make_batch(40, seed=7)
    for i in range(40):
        v = judge(as_uint8(b.images[i]), world.SHAPES[b.shape[i]], world.COLOUR_NAMES[b.colour[i]],
                  world.COLOUR_NAMES[b.background[i]])
        assert v["background_ok"] and v["colour_ok"] and v["shape_ok"], v


@pytest.mark.parametrize("asked", [("square", "red", "blue"), ("circle", "green", "blue"), ("circle", "red", "white")])
def test_wrong_shape_or_colours_fail_their_check(asked):
    labels = dict(shape=[0], colour=[0], background=[2], cx=[32.0], cy=[32.0], radius=[16.0])
    picture = as_uint8(world.render({k: torch.tensor(v) for k, v in labels.items()})[0])  # red circle on blue
    v = judge(picture, *asked)
    assert (v["shape_ok"], v["colour_ok"], v["background_ok"]) != (True, True, True)
    assert v["shape_ok"] == (asked[0] == "circle" and asked[1] == "red")


def test_a_blob_is_not_a_shape():
    rng = np.random.default_rng(0)
    picture = np.zeros((64, 64, 3), np.uint8) + np.array([25, 64, 230], np.uint8)
    blob = rng.random((64, 64)) < 0.3
    picture[blob] = (230, 25, 25)
    assert not judge(picture, "circle", "red", "blue")["shape_ok"]


def test_a_canvas_filled_with_the_shape_colour_is_not_a_shape():
    picture = np.zeros((64, 64, 3), np.uint8) + np.array([230, 25, 25], np.uint8)
    picture[:2] = picture[-2:] = (25, 64, 230)  # a thin blue frame round a red canvas
    picture[:, :2] = picture[:, -2:] = (25, 64, 230)
    v = judge(picture, "square", "red", "blue")
    assert v["background_ok"] and v["guess"] == "square" and v["iou"] > 0.9
    assert not v["shape_ok"]


def test_grid_and_table():
    prompts = grid_prompts()
    assert len(prompts) == 90 and len(set(prompts)) == 90
    rows = [{"shape": "circle", "background_ok": True, "colour_ok": True, "shape_ok": True, "iou": 0.8, "guess": "circle"},
            {"shape": "circle", "background_ok": True, "colour_ok": False, "shape_ok": True, "iou": 0.6, "guess": "circle"},
            {"shape": "square", "background_ok": False, "colour_ok": True, "shape_ok": False, "iou": 0.1,
             "guess": "triangle"}]
    lines = table(rows).splitlines()
    assert lines[2] == "| circle | 2 | 100% | 50% | 100% | 50% | 0.70 |"
    assert lines[3] == "| square | 1 | 0% | 100% | 0% | 0% | 0.10 |"
    assert lines[4] == "| **all** | 3 | 67% | 67% | 67% | 33% | 0.50 |"
    assert lines[-2:] == ["| circle | 2 | 0 | 0 |", "| square | 0 | 0 | 1 |"]


def test_judge_command_reads_recipes_skips_partial_pictures_and_writes_a_sheet(tmp_path, capsys):
    from PIL import Image

    from clipguide.outputs.pictures import save_png
    from clipguide.tiny.evaluate import main

    b = world.make_batch(3, 9)
    for i in range(3):
        prompt = world.caption(int(b.shape[i]), int(b.colour[i]), int(b.background[i]), 0)
        recipe = {"prompt": prompt} | ({"steps_done": 5} if i == 2 else {})  # the third one was interrupted
        save_png(tmp_path / f"{i:04d}.png", b.images[i], recipe)
    assert main(["judge", str(tmp_path), "--sheet", str(tmp_path / "sheet.png")]) == 0
    out = capsys.readouterr().out
    assert "| **all** | 2 | 100% | 100% | 100% | 100% |" in out
    sheet = np.asarray(Image.open(tmp_path / "sheet.png"))
    assert sheet.shape == (64 + 4, 15 * 66 + 2, 3)
    assert np.array_equal(sheet[2:66, 68:132], as_uint8(b.images[1]))
    assert main(["judge", str(tmp_path / "nothing-here")]) == 2
