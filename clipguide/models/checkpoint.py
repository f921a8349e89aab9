"""Reading checkpoint files safely: `torch.load(weights_only=True)` and safetensors.

Published VQGAN checkpoints are PyTorch Lightning files whose pickles name Lightning classes
(callbacks, hyper-parameter containers) besides the tensors.  Those objects are never needed, so
instead of unpickling arbitrary code we stand an inert placeholder in for each such class and keep
the weights-only unpickler.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import UserError


class _Placeholder:
    """Inert stand-in for a class named in a checkpoint that clipguide has no use for."""

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs

    def __setstate__(self, state):
        self.state = state


def _placeholders_for(path: Path) -> list:
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    return [(type(name.rsplit(".", 1)[-1], (_Placeholder,), {}), name) for name in names]


def load_weights(path: str | Path, what: str = "checkpoint") -> dict:
    """Load a `.ckpt/.pt/.pth/.bin` or `.safetensors` file onto the CPU without running pickled code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}", "check the path, or use a model name from --list-models")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            with torch.serialization.safe_globals(_placeholders_for(path)):
                return torch.load(str(path), map_location="cpu", weights_only=True)
    except UserError:
        raise
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{what} {path} is corrupt or truncated ({reason[:160]})",
            "delete it and download it again, or point at a good copy",
        ) from e


def state_dict_of(checkpoint) -> dict:
    """The tensors of a checkpoint: Lightning files keep them under 'state_dict'."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        return checkpoint["state_dict"]
    if isinstance(checkpoint, dict):
        return checkpoint
    raise UserError("checkpoint holds no state dict", "use a VQGAN .ckpt as published by taming-transformers")
