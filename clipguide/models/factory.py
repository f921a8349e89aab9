"""One factory for the models of a run: a VQGAN and one or more CLIPs, loaded, on the device, with
the fast path applied (models/fast.py) -- the way open_clip's `create_model` is one door to every
model it knows."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UserError
from .clip import Clip, load_clip, split_spec
from .fast import prepare_clip, prepare_vqgan
from .registry import checksum, resolve_vqgan
from .vqgan import VQGAN, load_vqgan


@dataclass
class Models:
    vqgan: VQGAN
    clips: list[Clip]
    device: torch.device
    vqgan_info: dict = field(default_factory=dict)  # name and sha256 of the checkpoint, for recipes

    def info(self) -> dict:
        """What a recipe records of the models."""
        return {"vqgan": self.vqgan_info, "clip": [{"spec": c.spec, "sha256": c.sha256} for c in self.clips]}


def resolve_device(spec: str) -> torch.device:
    """'auto' -> CUDA, else MPS, else CPU; otherwise the named device, which must be there."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"unknown device {spec!r}", "use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec}: no CUDA GPU is available here", "use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {spec}: only {torch.cuda.device_count()} GPU(s) here", "use cuda:0 ...")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"--device {spec}: MPS is not available here", "use --device cpu (or auto)")
    return device


def autocast_dtype(precision: str, device: torch.device):
    """Mixed precision for CLIP and the decoder: bf16 by default on CUDA, fp32 elsewhere."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def load_models(vqgan: str, clips: list[str], device: torch.device, vqgan_config: str | None = None,
                cache: Path | None = None) -> Models:
    """Load the VQGAN (a registry name or a checkpoint path) and every CLIP spec onto `device`, with
    the fast path applied: the same results, cheaper steps."""
    files = resolve_vqgan(vqgan, vqgan_config, cache=cache)
    model = load_vqgan(files.config, files.checkpoint).to(device)
    info = {"name": files.name, "sha256": checksum(files.checkpoint, cache)}
    loaded = [_load_clip(spec, device, cache) for spec in clips]
    prepare_vqgan(model, device)
    for clip in loaded:
        prepare_clip(clip, device)
    return Models(model, loaded, device, info)


@contextlib.contextmanager
def _unset_init():
    """While a model whose every weight is then read from a file is built, torch.nn.init's random
    fills become NaN fills (a memset instead of a random number per weight); yields the tensors so
    filled, so that one the file did not set cannot go unnoticed."""
    init = torch.nn.init
    names = [n for n in dir(init) if n.endswith("_") and not n.startswith("_") and callable(getattr(init, n))]
    saved = {n: getattr(init, n) for n in names}
    filled: list[torch.Tensor] = []

    def nan_fill(tensor, *args, **kwargs):
        filled.append(tensor)
        with torch.no_grad():
            return tensor.fill_(float("nan"))

    for n in names:
        setattr(init, n, nan_fill)
    try:
        yield filled
    finally:
        for n, fn in saved.items():
            setattr(init, n, fn)


def _load_clip(spec: str, device: torch.device, cache: Path | None) -> Clip:
    """`load_clip` without the random initialisation that the loaded weights replace (~1 s for
    ViT-B-32 on a CPU core).  Weights wholly overwrite what they load into, so a filled tensor whose
    first element is still NaN was not loaded: then the model is built the ordinary way, as is one
    of random weights."""
    if split_spec(spec)[1] == "random":
        return load_clip(spec, device, cache=cache)
    with _unset_init() as filled:
        clip = load_clip(spec, device, cache=cache)
    return clip if _all_loaded(filled) else load_clip(spec, device, cache=cache)


def _all_loaded(filled: list[torch.Tensor]) -> bool:
    return not any(t.is_floating_point() and t.numel() and bool(t.reshape(-1)[:1].isnan()) for t in filled)
