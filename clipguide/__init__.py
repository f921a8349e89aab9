"""clipguide: pictures from text by CLIP-guided VQGAN.

`generate`, `Session`, `Settings`, `Job` and `Result` load on first use, so that importing the
package (and the command line's --help) does not import torch."""

__version__ = "0.1.0"

_LAZY = {"generate": "run", "Session": "run", "Result": "run", "StopFlag": "run", "Settings": "settings",
         "Job": "plan", "make_plan": "plan"}
__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'clipguide' has no attribute {name!r}")
