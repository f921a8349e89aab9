"""The model table (registry.json) and turning a user's model spec into files.

The table is data: a new published VQGAN is a new entry (config yaml + download sources with their sha256),
a new preset a new key.  Downloads, the cache and verification live in download.py, cache.py and hub.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .cache import cache_dir
from .download import Log, obtain, stderr, usable_copy, vqgan_wanted
from .hashing import checksum, sha256_of
from .table import HERE, find_entry, load_table, resolve_preset, suggest

__all__ = ["HERE", "VQGANFiles", "cache_dir", "checksum", "find_entry", "load_table", "resolve_preset",
           "resolve_vqgan", "sha256_of", "suggest", "verify_builtin"]

def verify_builtin(path: Path, sha256: str | None, what: str) -> None:
    """Shipped weights must be there and match the table's checksum, hashed every time (a few MB, a few
    ms): a remembered checksum would trust weights changed in place with their size and mtime kept."""
    if not path.is_file():
        raise UserError(f"{what} is missing from this installation ({path})", "reinstall clipguide")
    if sha256 and sha256_of(path) != sha256:
        raise UserError(f"{what} does not match its checksum ({path})", "reinstall clipguide")


@dataclass(frozen=True)
class VQGANFiles:
    name: str
    config: Path
    checkpoint: Path
    sha256: str | None  # the checksum it was verified against (pinned or the Hub's), if any


def resolve_vqgan(spec: str, config: str | None = None, table: dict | None = None,
                  cache: Path | None = None, fetch: bool = True, log: Log = stderr) -> VQGANFiles:
    """A registry name or a checkpoint path (+ optional config path) -> files on disk.

    A named VQGAN comes from the cache when a verified copy is there (no network), else it is downloaded;
    with fetch=False a missing one is a UserError."""
    table = table or load_table()
    found = find_entry(table["vqgan"], spec)
    if found:
        name, entry = found
        cfg = Path(config) if config else HERE / entry["config"]
        if "path" in entry:
            ckpt = HERE / entry["path"]
            verify_builtin(ckpt, entry.get("sha256"), f"the built-in VQGAN {name!r}")
            return VQGANFiles(name, cfg, ckpt, entry.get("sha256"))
        cache = cache_dir(cache)
        want = vqgan_wanted(name, entry, cache)
        got = obtain(want, cache, log) if fetch else usable_copy(want, cache, log)
        if got is None:
            raise UserError(f"VQGAN {name!r} is not downloaded", f"run `clipguide --download {name}`")
        return VQGANFiles(name, cfg, got.path, got.sha256 if got.how in ("pinned", "hub") else None)
    path = Path(spec).expanduser()
    if path.is_file():
        if config:
            cfg = Path(config)
        else:
            candidates = [path.with_suffix(".yaml"), path.parent / "model.yaml", path.parent.parent / "configs" / "model.yaml"]
            cfg = next((c for c in candidates if c.is_file()), None)
            if cfg is None:
                raise UserError(f"no config found beside VQGAN checkpoint {path}",
                                "pass its model.yaml with --vqgan-config")
        return VQGANFiles(path.stem, cfg, path, None)
    if "/" in spec or spec.endswith((".ckpt", ".pt", ".pth", ".safetensors")):
        raise UserError(f"VQGAN checkpoint not found: {spec}", "check the path, or use a name from --list-models")
    raise UserError(f"unknown VQGAN {spec!r}",
                    f"{suggest(spec, table['vqgan'])}see clipguide --list-models, or pass a .ckpt path")
