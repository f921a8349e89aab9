"""The model cache on disk: where downloaded files live, finding them without the network, and the
record of how each one was verified.

Layout under the cache folder (`$CLIPGUIDE_CACHE`, else `$XDG_CACHE_HOME/clipguide`, else
`~/.cache/clipguide`):
  hub/        huggingface_hub's own cache layout (models--ORG--NAME/{blobs,snapshots,refs}, and since
              huggingface_hub 2.4 a shared store blobs/XX/<Xet hash> behind the repos' blobs/<sha256> links);
              every Hub download
  open_clip/  the same layout, where earlier versions let open_clip cache CLIP weights (looked in, not written)
  vqgan/      files from plain URLs, under the table's `file` name
  verified/   one small JSON per model: sha256, how it was verified, which source gave it
  checksums/  remembered sha256 of big files, by (path, size, mtime)
  locks/      one lock per model, so processes sharing the cache download each file once
The user's own huggingface_hub cache (huggingface_hub.constants.HF_HUB_CACHE: $HF_HUB_CACHE, else
$HF_HOME/hub, else ~/.cache/huggingface/hub) is looked in too, after ours, and never written.
docs/cache.md says what is looked in and what may be removed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache

from ..errors import UserError
from .sources import SHA256

HUB, LEGACY_HUB, URL_FILES = "hub", "open_clip", "vqgan"
READ_ONLY = {errno.EACCES, errno.EPERM, errno.EROFS}  # what writing to a read-only cache raises


def cache_dir(given: Path | None = None) -> Path:
    """The cache folder: `given` (--cache-dir), else $CLIPGUIDE_CACHE, else $XDG_CACHE_HOME/clipguide, else
    ~/.cache/clipguide.  Something else standing at that path is refused in one line, before anything is read."""
    if given:
        path = Path(given)
    elif os.environ.get("CLIPGUIDE_CACHE"):
        path = Path(os.environ["CLIPGUIDE_CACHE"])
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clipguide"
    if path.exists() and not path.is_dir():
        raise UserError(f"the model cache {path} is not a folder",
                        "point --cache-dir (or CLIPGUIDE_CACHE) at a folder, or move that file away")
    return path


def write_json(path: Path, data: dict) -> None:
    """Write a small JSON file atomically (never half-written)."""
    from ..files import atomic_write  # the one import of the atomic-write helper in the download code

    with atomic_write(path, overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps(data, sort_keys=True))


def hub_dir(cache: Path) -> Path:
    return cache / HUB


def hub_roots(cache: Path) -> list[Path]:
    """Hub cache folders looked in, in order: ours, the legacy one, then the user's own huggingface_hub cache
    (read when called, so it follows huggingface_hub's own HF_HUB_CACHE / HF_HOME / ~/.cache rules)."""
    roots: list[Path] = []
    for root in (cache / HUB, cache / LEGACY_HUB, Path(hub_constants.HF_HUB_CACHE).expanduser()):
        if root.is_dir() and not any(os.path.samefile(root, r) for r in roots):
            roots.append(root)
    return roots


def hub_lookup(cache: Path, repo: str, filename: str, revision: str | None = None) -> tuple[Path, Path] | None:
    """(file, the hub cache folder holding it) if a Hub file is cached; no network, nothing written."""
    for root in hub_roots(cache):
        found = try_to_load_from_cache(repo, filename, cache_dir=root, revision=revision)
        if isinstance(found, str):
            return Path(found), root
    return None


def hub_root(path: Path) -> Path:
    """The hub cache folder a snapshot file lies in (ROOT/models--ORG--NAME/snapshots/COMMIT/FILE)."""
    return _repo_dir(path).parent


def _repo_dir(path: Path) -> Path:
    for parent in path.parents:
        if parent.name.startswith("models--"):
            return parent
    raise ValueError(f"{path} is not in a Hugging Face Hub cache")


def owned(cache: Path, path: Path) -> bool:
    """Whether `path` lies in the part of clipguide's cache that clipguide writes (hub/ and vqgan/): the only
    places a bad file is ever removed from.  The legacy open_clip/ folder and the user's own huggingface_hub
    cache are only read."""
    path = Path(os.path.abspath(path))
    return any(path.is_relative_to(os.path.abspath(cache / d)) for d in (HUB, URL_FILES))


def repo_blob(path: Path) -> Path | None:
    """The repo's blobs/<etag> entry a snapshot link points at (one link deep), or None (not a link: a copy that
    followed links, or a cache made without symlinks)."""
    try:
        target = Path(os.path.normpath(path.parent / os.readlink(path)))
        return target if target.parent == _repo_dir(path) / "blobs" else None
    except (OSError, ValueError):
        return None


def published_sha256(path: Path) -> str | None:
    """The sha256 the Hub published for a Hub cache file, as huggingface_hub recorded it: the name of the repo
    blob (blobs/<etag>) its snapshot link points at, for an LFS file the Hub's X-Linked-Etag, its sha256.
    Only one link deep: past it, huggingface_hub 2.4's shared store names files by their Xet hash, which is
    no sha256 even though it is 64 hex digits too."""
    blob = repo_blob(path)
    return blob.name if blob is not None and SHA256.fullmatch(blob.name) else None


def discard(path: Path) -> None:
    """Remove a bad file from clipguide's own cache: the file, or a Hub snapshot entry and the repo's blob it
    links to.  What something else may share is left: huggingface_hub's shared store (blobs/XX/<Xet hash>,
    which other repos link to) is never touched, nor a blob with other hard links; a download with
    force_download replaces those the way huggingface_hub does.  Raises OSError where the cache cannot be
    written (the callers say so in one line)."""
    blob = repo_blob(path)
    _unlink(path)
    if blob is not None and (blob.is_symlink() or _links(blob) == 1):
        _unlink(blob)  # a link into the shared store, or a blob nothing else holds


def _links(path: Path) -> int:
    try:
        return os.lstat(path).st_nlink
    except FileNotFoundError:
        return 0


def _unlink(path: Path) -> None:
    try:
        path.unlink()
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


def _record_path(cache: Path, path: Path) -> str:
    """A file's path as its record keeps it: relative to the cache when inside it, so a cache copied whole to
    another place (`cp -a`) keeps its records."""
    path = Path(os.path.abspath(path))
    return str(path.relative_to(os.path.abspath(cache))) if path.is_relative_to(os.path.abspath(cache)) else str(path)


def write_record(cache: Path, key: str, path: Path, sha256: str, how: str, source: str) -> dict:
    """Remember how the file of model `key` was verified: how is 'pinned', 'hub' or 'none'."""
    record = {"key": key, "path": _record_path(cache, path), "stamp": stamp(path), "sha256": sha256, "how": how,
              "source": source}
    try:
        write_json(cache / "verified" / f"{_safe(key)}.json", record)
    except OSError:
        pass  # a read-only cache only costs a re-check next time
    return record


def stored_record(cache: Path, key: str) -> dict | None:
    """The verification record of model `key` as stored, whichever file it was about."""
    try:
        record = json.loads((cache / "verified" / f"{_safe(key)}.json").read_text())
        return record if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None


def read_record(cache: Path, key: str, path: Path) -> dict | None:
    """The verification record of model `key`, if it is about this very file (same path, size and mtime)."""
    record = stored_record(cache, key)
    try:
        if record and record["path"] == _record_path(cache, path) and record["stamp"] == stamp(path):
            return record
    except (OSError, KeyError):
        pass
    return None
