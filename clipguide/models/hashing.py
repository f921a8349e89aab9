"""sha256 of model files, remembered in the cache by (path, size, mtime) so a big file is hashed once."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..files import sha256_of
from .cache import cache_dir, stamp, write_json

__all__ = ["checksum", "remember", "sha256_of"]


def _memo(path: Path, cache: Path | None) -> Path:
    return cache_dir(cache) / "checksums" / f"{hashlib.sha1(str(path).encode()).hexdigest()}.json"


def remember(path: str | Path, digest: str, cache: Path | None = None) -> None:
    """Record a sha256 just computed elsewhere (e.g. while downloading) for `path` as it is now."""
    path = Path(path).resolve()
    try:
        write_json(_memo(path, cache), {"path": str(path), "stamp": stamp(path), "sha256": digest})
    except OSError:
        pass  # a read-only cache only costs a re-hash next time


def checksum(path: str | Path, cache: Path | None = None) -> str:
    """sha256 of a file; hashed once, then remembered while its size and mtime stay the same."""
    path = Path(path).resolve()
    try:
        saved = json.loads(_memo(path, cache).read_text())
        if saved["stamp"] == stamp(path):
            return saved["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = sha256_of(path)
    remember(path, digest, cache)
    return digest
