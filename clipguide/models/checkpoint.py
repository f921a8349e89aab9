"""Reading checkpoint files safely: `torch.load(weights_only=True)` and safetensors.

Published VQGAN checkpoints are PyTorch Lightning files whose pickles name Lightning classes
(callbacks, hyper-parameter containers) besides the tensors.  Those objects are never needed, so
instead of unpickling arbitrary code we stand an inert placeholder in for each such class and keep
the weights-only unpickler.  A pickle that names anything else torch does not allow (`os.system`,
`builtins.eval`, a class of some other package) would run code when unpickled: such a file is refused
as holding code, and nothing of it runs.  Zip-format files are memory-mapped, so only the tensors
that are used are read (a transformer file gives its VQGAN, a fraction of it, without its GPT and
optimiser states being read).
"""

from __future__ import annotations

import io
import pickle
import pickletools
import zipfile
from pathlib import Path

import torch

from ..errors import UserError

# Modules whose classes a training run stores as bookkeeping (callbacks, hyper-parameters, scalars):
# they get inert placeholders.  Any other global torch does not allow counts as code.
METADATA = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "omegaconf.", "typing.", "argparse.Namespace",
            "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype")
STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}


class _Placeholder:
    """Inert stand-in for a class named in a checkpoint that clipguide has no use for."""

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs

    def __setstate__(self, state):
        self.state = state


def _placeholder(name: str) -> type:
    """A placeholder class torch's unpickler takes for the global `name` (module.qualname)."""
    module, _, qualname = name.rpartition(".")
    cls = type(qualname, (_Placeholder,), {})
    cls.__module__, cls.__qualname__ = module, qualname
    return cls


def _globals_in(stream, pickles: int) -> set[str]:
    """The globals (module.name) the first `pickles` pickles of `stream` name, read without unpickling.

    A global whose name cannot be read statically (STACK_GLOBAL on computed strings) is '?'."""
    found, recent, memo = set(), [], {}
    for op, arg in _ops(stream, pickles):
        if op.name in ("GLOBAL", "INST"):
            found.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            module, name = (recent[-2:] if len(recent) > 1 else [None, None])
            found.add(f"{module}.{name}" if isinstance(module, str) and isinstance(name, str) else "?")
        elif op.name in STRINGS:
            recent.append(arg)
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            recent.append(memo.get(arg))
        elif op.name in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):
            memo[len(memo) if op.name == "MEMOIZE" else arg] = recent[-1] if recent else None
        elif op.stack_after:
            recent.append(None)
    return found


def _ops(stream, pickles: int):
    """(opcode, argument) of the first `pickles` pickles of `stream`, as far as they are pickles (the legacy
    format's raw storage bytes follow its pickles; a damaged pickle ends where it stops making sense)."""
    for _ in range(pickles):
        try:
            for op, arg, _pos in pickletools.genops(stream):
                yield op, arg
        except (ValueError, EOFError):
            return


def pickle_globals(path: Path) -> set[str]:
    """Every global a PyTorch file's pickles name: the zip format's `*.pkl` records, or the first pickles
    of the legacy format (magic number, version, system info, the object, its storage keys)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.endswith(".pkl")]
                return set().union(*(_globals_in(io.BytesIO(zf.read(n)), 1) for n in names))
        with open(path, "rb") as f:
            return _globals_in(f, 5)
    except (OSError, zipfile.BadZipFile, KeyError):  # unreadable: torch.load's own error says what is wrong
        return set()


def _code(names: set[str]) -> list[str]:
    """Those of `names` that would run code if unpickled: neither allowed by torch's weights-only unpickler
    nor a training run's bookkeeping class (METADATA)."""
    unpickler = torch._weights_only_unpickler  # the lists torch.load(weights_only=True) itself goes by
    allowed = {**getattr(unpickler, "_get_allowed_globals", dict)(), **getattr(unpickler, "_get_user_allowed_globals", dict)()}
    return sorted(n for n in names if n not in allowed and not n.startswith(METADATA))


def holds_code(path: Path, what: str, names: set[str] | None = None) -> UserError | None:
    """The error for a pickled file whose globals (`names`, else read from it) would run code; else None."""
    if path.suffix == ".safetensors" or not path.is_file():
        return None
    code = _code(pickle_globals(path) if names is None else names)
    if not code:
        return None
    return UserError(f"{what} {path} holds code: unpickling it would call {', '.join(code[:3])}; "
                     "it was not loaded and nothing in it ran",
                     "delete it and get the file from its published source (clipguide --download NAME)")


def _mappable(path: Path) -> bool:
    """Whether torch can memory-map the file: the zip format with its records stored, not compressed (torch
    maps compressed records as they lie, which gives wrong numbers without an error).  Others are read whole."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return all(info.compress_type == zipfile.ZIP_STORED for info in zf.infolist())


def _load(path: Path, placeholders: list | None = None):
    mmap = _mappable(path)
    if placeholders is None:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    with torch.serialization.safe_globals(placeholders):
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)


def load_weights(path: str | Path, what: str = "checkpoint") -> dict:
    """Load a `.ckpt/.pt/.pth/.bin` or `.safetensors` file onto the CPU without running pickled code.

    Tensors of a zip-format file are memory-mapped from it: copy those to keep past the file's life."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}", "check the path, or use a model name from --list-models")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        try:
            return _load(path)
        except pickle.UnpicklingError:  # a global torch does not allow: bookkeeping, or code
            names = pickle_globals(path)
            if refused := holds_code(path, what, names):
                raise refused from None
            return _load(path, [_placeholder(n) for n in names if n.startswith(METADATA)])
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
