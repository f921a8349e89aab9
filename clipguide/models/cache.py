"""The model cache on disk: where downloaded files live, finding them without the network, and the
record of how each one was verified.

Layout under the cache folder (`$CLIPGUIDE_CACHE`, else `$XDG_CACHE_HOME/clipguide`, else
`~/.cache/clipguide`):
  hub/        huggingface_hub's own cache layout (models--ORG--NAME/{blobs,snapshots,refs}); every Hub download
  open_clip/  the same layout, where earlier versions let open_clip cache CLIP weights (looked in, not written)
  vqgan/      files from plain URLs, under the table's `file` name
  verified/   one small JSON per model: sha256, how it was verified, which source gave it
  checksums/  remembered sha256 of big files, by (path, size, mtime)
  locks/      one lock per model, so processes sharing the cache download each file once
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from huggingface_hub import try_to_load_from_cache

from .sources import SHA256

HUB, LEGACY_HUB = "hub", "open_clip"


def cache_dir() -> Path:
    if os.environ.get("CLIPGUIDE_CACHE"):
        return Path(os.environ["CLIPGUIDE_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "clipguide"


def write_json(path: Path, data: dict) -> None:
    """Write a small JSON file atomically (never half-written)."""
    from ..files import atomic_write  # the one import of the atomic-write helper in the download code

    with atomic_write(path, overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps(data, sort_keys=True))


def hub_dir(cache: Path) -> Path:
    return cache / HUB


def hub_lookup(cache: Path, repo: str, filename: str, revision: str | None = None) -> tuple[Path, Path] | None:
    """(file, the hub cache folder holding it) if a Hub file is cached; no network."""
    for root in (cache / HUB, cache / LEGACY_HUB):
        found = try_to_load_from_cache(repo, filename, cache_dir=root, revision=revision)
        if isinstance(found, str):
            return Path(found), root
    return None


def hub_root(path: Path) -> Path:
    """The hub cache folder a snapshot file lies in (ROOT/models--ORG--NAME/snapshots/COMMIT/FILE)."""
    for parent in path.parents:
        if parent.name.startswith("models--"):
            return parent.parent
    raise ValueError(f"{path} is not in a Hugging Face Hub cache")


def blob_sha256(path: Path) -> str | None:
    """A Hub cache file is a link to blobs/<etag>; for an LFS file the etag is the file's sha256."""
    name = Path(os.path.realpath(path)).name
    return name if SHA256.fullmatch(name) else None


def discard(path: Path) -> None:
    """Delete a cached file; for a Hub snapshot link, its blob too (so a later download fetches it again)."""
    target = Path(os.path.realpath(path))
    for p in {path, target}:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def locks_dir(cache: Path) -> Path:
    folder = cache / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def lock_path(cache: Path, key: str) -> Path:
    return locks_dir(cache) / f"{_safe(key)}.lock"


def _safe(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:20]


def stamp(path: Path) -> list[int]:
    st = os.stat(path)  # follows the Hub's snapshot links to the blob
    return [st.st_size, st.st_mtime_ns]


def write_record(cache: Path, key: str, path: Path, sha256: str, how: str, source: str) -> dict:
    """Remember how the file of model `key` was verified: how is 'pinned', 'hub' or 'none'."""
    record = {"key": key, "path": str(path), "stamp": stamp(path), "sha256": sha256, "how": how, "source": source}
    try:
        write_json(cache / "verified" / f"{_safe(key)}.json", record)
    except OSError:
        pass  # a read-only cache only costs a re-check next time
    return record


def read_record(cache: Path, key: str, path: Path) -> dict | None:
    """The verification record of model `key`, if it is about this very file (same path, size and mtime)."""
    try:
        record = json.loads((cache / "verified" / f"{_safe(key)}.json").read_text())
        if record["path"] == str(path) and record["stamp"] == stamp(path):
            return record
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None
