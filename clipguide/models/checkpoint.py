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
    except Exception as e:  # a file that is not a checkpoint breaks the unpickler in any of many ways
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{what} {path} is corrupt or truncated, or not a checkpoint at all ({reason[:160]})",
            "delete it and download it again, or point at a good copy",
        ) from e


def state_dict_of(checkpoint) -> dict:
    """The tensors of a checkpoint: Lightning files keep them under 'state_dict'."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        return checkpoint["state_dict"]
    if isinstance(checkpoint, dict):
        return checkpoint
    raise UserError("checkpoint holds no state dict", "use a VQGAN .ckpt as published by taming-transformers")


def cast_floats(state: dict, dtype: torch.dtype | None) -> dict:
    """A state dict with its floating-point tensors stored as `dtype` (None: as they are); others kept."""
    return {k: v.detach().to(dtype) if dtype is not None and v.is_floating_point() else v.detach()
            for k, v in state.items()}


def save_weights(obj, path: str | Path, deflate: bool = False) -> None:
    """`torch.save` `obj` to `path` (atomically) so that the same `obj` always gives the same bytes
    (and the same sha256): it is saved through a buffer, as torch.save names the archive's inner
    folder after the file it writes to.  The result is an ordinary PyTorch file.

    deflate: compress the zip entries (`torch.load` reads them as they are; PyTorch stores entries
    uncompressed, which leaves a weight matrix that is mostly zeros at full size), with fixed times."""
    import io

    from ..files import atomic_write

    raw = io.BytesIO()
    torch.save(obj, raw)
    with atomic_write(path, overwrite=True) as tmp:
        if not deflate:
            Path(tmp).write_bytes(raw.getvalue())
            return
        with zipfile.ZipFile(raw) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
            for entry in src.infolist():
                dst.writestr(zipfile.ZipInfo(entry.filename, date_time=(1980, 1, 1, 0, 0, 0)),
                             src.read(entry.filename), compress_type=zipfile.ZIP_DEFLATED)
