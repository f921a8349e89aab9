"""The same seeds and settings draw the same pixels as main 0aac3c8 did before the redesign.

References: tests/golden/*.png, made by `python tests/golden_cases.py tests/golden` on that commit."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import golden_cases as gc

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return gc.inputs(tmp_path_factory.mktemp("golden-inputs"))


@pytest.mark.parametrize("name", list(gc.cases({"base": [], "root": Path(".")})))
def test_golden_pixels(env, name):
    args, files = gc.cases(env)[name]
    gc.run_case(args)
    for f in files:
        got = np.concatenate(gc.pixels(Path(f)), axis=1)
        want = np.asarray(Image.open(GOLDEN / gc.golden_name(name, f)).convert("RGB"))
        assert got.shape == want.shape
        differ = int((got != want).any(-1).sum())
        assert differ == 0, f"{name}/{f}: {differ} of {got.shape[0] * got.shape[1]} pixels differ"
