"""Files from the Hugging Face Hub through huggingface_hub: its cache layout and resume, and its settings
HF_ENDPOINT (a mirror or proxy of the Hub), HF_TOKEN (gated or private repositories) and HF_HUB_OFFLINE.

HF_ENDPOINT and HF_HUB_OFFLINE are read when a download starts, not only when huggingface_hub is imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants as hub_constants
from huggingface_hub import errors as hub_errors
from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

from .cache import READ_ONLY, hub_dir
from .sources import SHA256, Missing, SourceFailed, Unreachable

NETWORK_ERRORS = {"ConnectError", "ConnectTimeout", "TimeoutException", "NetworkError", "ProxyError"}


def offline() -> bool:
    """HF_HUB_OFFLINE: use only what is cached, make no request."""
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return flag or hub_constants.is_offline_mode()


def endpoint() -> str | None:
    value = os.environ.get("HF_ENDPOINT", "").strip()
    return value.rstrip("/") or None


@dataclass(frozen=True)
class Remote:
    """What the Hub says about a file before it is downloaded."""

    sha256: str | None  # the LFS sha256 the Hub publishes for the file (None for a small git-stored file)
    size: int | None
    commit: str | None


def failure(error: Exception) -> SourceFailed:
    """A huggingface_hub or network error as a short reason."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:100]
    if isinstance(error, hub_errors.RemoteEntryNotFoundError):
        return Missing("file not found (404)")
    if isinstance(error, hub_errors.LocalEntryNotFoundError):  # no answer from the Hub, nothing cached
        return Unreachable(f"cannot connect ({first})")
    if isinstance(error, hub_errors.RevisionNotFoundError):
        return SourceFailed("revision not found")
    if isinstance(error, hub_errors.GatedRepoError):
        return SourceFailed("gated repository: accept its terms on the Hub and set HF_TOKEN")
    if isinstance(error, hub_errors.RepositoryNotFoundError):
        return SourceFailed("repository not found (or private: set HF_TOKEN)")
    if isinstance(error, hub_errors.OfflineModeIsEnabled):
        return Unreachable("HF_HUB_OFFLINE is set")
    if isinstance(error, hub_errors.HfHubHTTPError) and error.response is not None:
        return SourceFailed(f"HTTP {error.response.status_code}")
    if {c.__name__ for c in type(error).__mro__} & NETWORK_ERRORS or isinstance(error, OSError):
        return Unreachable(f"cannot connect ({first})")
    return SourceFailed(f"{type(error).__name__}: {first}")


def remote_info(repo: str, filename: str, revision: str | None = None, timeout: float = 10.0) -> Remote:
    """One HEAD request, no retries (so a machine without network fails at once)."""
    url = hf_hub_url(repo, filename, revision=revision, endpoint=endpoint())
    try:
        meta = get_hf_file_metadata(url, timeout=timeout, endpoint=endpoint())
    except Exception as e:  # huggingface_hub and its HTTP client raise many types
        raise failure(e) from e
    sha = meta.etag if meta.etag and SHA256.fullmatch(meta.etag) else None
    return Remote(sha, meta.size, meta.commit_hash)


def fetch_hub(repo: str, filename: str, cache: Path, revision: str | None = None, force: bool = False) -> Path:
    """Download into the Hub cache layout under `cache` (resumes within the call); the cached file's path.

    force: download again even if cached (huggingface_hub's force_download, which also replaces a file of its
    shared store rather than linking to it).  A cache that cannot be written raises its OSError as it is."""
    try:
        path = hf_hub_download(repo, filename, revision=revision, cache_dir=hub_dir(cache), endpoint=endpoint(),
                               force_download=force)
    except OSError as e:
        if e.errno in READ_ONLY:
            raise
        raise failure(e) from e
    except Exception as e:  # huggingface_hub and its HTTP client raise many types
        raise failure(e) from e
    return Path(path)
