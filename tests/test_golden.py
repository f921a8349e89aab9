"""The same seeds and settings draw the same pictures as main 0aac3c8 did before the redesign.

References: tests/golden/*.png, made by `python tests/golden_cases.py tests/golden`, with the versions
in tests/golden/versions.json; compared within the tolerance measured across instruction sets (see
golden_cases)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import golden_cases as gc

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return gc.inputs(tmp_path_factory.mktemp("golden-inputs"))


@pytest.fixture(scope="module")
def versions():
    """'name: golden's -> now' for each stamped version that differs here (for the failure message)."""
    made, now = json.loads((GOLDEN / "versions.json").read_text()), gc.stamp()
    return ", ".join(f"{k}: {made.get(k)} -> {v}" for k, v in now.items() if made.get(k) != v) or "same versions"


@pytest.mark.parametrize("name", list(gc.cases({"base": [], "root": Path(".")})))
def test_golden_pictures(env, versions, name):
    args, files = gc.cases(env)[name]
    gc.run_case(args)
    for f in files:
        got = np.concatenate(gc.pixels(Path(f)), axis=1)
        want = np.asarray(Image.open(GOLDEN / gc.golden_name(name, f)).convert("RGB"))
        assert got.shape == want.shape
        faults = gc.shown_faults(got, want, args[0]) if name in gc.SHOWN else gc.pixel_faults(got, want)
        assert faults == [], f"{name}/{f}: {'; '.join(faults)} ({versions})"

