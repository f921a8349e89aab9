import os
from pathlib import Path

import pytest

from loopback import isolate_user_hub_cache, serving
from models import make_clip, make_vqgan

# The tests that .ci/floors runs at the lowest versions pyproject.toml allows (`pytest -m floors`): loading,
# conformance to the reference implementations, the goldens, and the web UI (gradio's floor).
FLOORS = ("test_models.py", "test_real_architectures.py", "test_download.py", "test_conformance.py",
          "test_golden.py", "test_ui.py", "test_floors.py")


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in FLOORS:
            item.add_marker(pytest.mark.floors)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Paths of tiny random models: VQ and Gumbel VQGANs, and a CLIP local-dir."""
    root = tmp_path_factory.mktemp("models")
    vq_cfg, vq_ckpt = make_vqgan(root / "vq", "VQModel")
    g_cfg, g_ckpt = make_vqgan(root / "gumbel", "GumbelVQ")
    clip = make_clip(root / "clip")
    return {"vq": (vq_cfg, vq_ckpt), "gumbel": (g_cfg, g_ckpt), "clip": clip}


@pytest.fixture
def tiny_args(tiny):
    """CLI/API options that select the tiny random models, small and fast."""
    cfg, ckpt = tiny["vq"]
    return dict(vqgan=str(ckpt), vqgan_config=str(cfg), clip=[f"local-dir:{tiny['clip']}"], width=32, height=32,
                cutn=4, steps=5)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """clipguide's cache in tmp_path, and the user's own huggingface_hub cache (which clipguide reads) an empty
    folder there too, never the real ~/.cache/huggingface of the machine running the tests."""
    monkeypatch.setenv("CLIPGUIDE_CACHE", str(tmp_path / "cache"))
    isolate_user_hub_cache(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def net(monkeypatch):
    """The loopback Hub (HF_ENDPOINT) and CDN/plain host; no token, not offline."""
    with serving(monkeypatch) as served:
        yield served


@pytest.fixture
def ckpt(tiny):
    """A real (tiny, random) VQGAN checkpoint's bytes and its config path."""
    cfg, path = tiny["vq"]
    return Path(path).read_bytes(), cfg


@pytest.fixture
def base(tiny):
    """Command-line options that select the tiny random models, small and fast (3 steps, quiet)."""
    cfg, ckpt = tiny["vq"]
    return ["--vqgan", ckpt, "--vqgan-config", cfg, "--clip", f"local-dir:{tiny['clip']}", "--width", 32,
            "--height", 32, "--cutn", 2, "--steps", 3, "-q"]
