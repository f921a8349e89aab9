"""Plain HTTP(S) downloads into a partial file: redirects followed, a cut download resumed, a progress bar.

The caller owns the partial file's name and verifies it before giving it its final name.  What is fetched is a
checkpoint or a zip of one: a body that starts like neither (an HTML error or share page) is refused before
anything is written, and so is one whose length is not the published size.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from .sources import Mismatch, Missing, NotCheckpoint, SourceFailed, Unreachable, not_a_checkpoint

USER_AGENT = "clipguide (https://pypi.org/project/clipguide)"


def _reason(error: Exception) -> str:
    """A short, human reason for a failed request."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code}" + (" (not found)" if error.code == 404 else "")
    if isinstance(error, urllib.error.URLError):
        reason = error.reason
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
        return f"cannot connect ({text})"
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(error, (http.client.IncompleteRead, ConnectionError, http.client.RemoteDisconnected)):
        return "connection cut (the partial file is kept to resume)"
    return f"{type(error).__name__}: {error}"[:120]


def _open(url: str, have: int, timeout: float):
    """The response for the rest of `url` after `have` bytes (None when the file is already complete)."""
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the partial file is complete
            return None
        raise


def _append(url: str, part: Path, timeout: float, desc: str, size: int | None) -> None:
    """Append the rest of `url` to `part`, resuming from its size when the server honours Range.

    `size`: the whole file's published size.  A fresh body is looked at before anything is written: one that does
    not start like a checkpoint, or whose length is not `size`, is refused after its first block."""
    have = part.stat().st_size if part.exists() else 0
    resp = _open(url, have, timeout)
    if resp is None:
        return
    with resp:
        if have and resp.status != 206:  # the server ignored the range: start again
            have = 0
        length = resp.headers.get("Content-Length")
        total = int(length) + have if length else None
        block = resp.read(1 << 20)
        if not have and (reason := not_a_checkpoint(block)):
            raise NotCheckpoint(reason)
        if size and total is not None and total != size:
            raise Mismatch(f"serves {total:,} bytes, not the published {size:,} (not downloaded)")
        with open(part, "ab" if have else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=desc, disable=None, leave=False,
        ) as bar:
            while block:
                f.write(block)
                bar.update(len(block))
                block = resp.read(1 << 20)
            f.flush()
            os.fsync(f.fileno())
        if total is not None and part.stat().st_size < total:
            raise http.client.IncompleteRead(b"", total - part.stat().st_size)


def fetch_url(url: str, part: Path, desc: str = "", timeout: float = 30.0, attempts: int = 3,
              size: int | None = None) -> None:
    """Complete `part` from `url`; a connection cut after some progress resumes (up to `attempts` times).

    Raises SourceFailed with a short reason; a cut partial file stays for the next run to resume.  A body
    that is not a checkpoint (NotCheckpoint) or not of the published `size` (Mismatch) is not written.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        before = part.stat().st_size if part.exists() else 0
        try:
            _append(url, part, timeout, desc, size)
            return
        except (OSError, http.client.HTTPException) as e:
            grew = part.exists() and part.stat().st_size > before
            if not grew or attempt == attempts - 1:
                unreachable = isinstance(e, (socket.timeout, TimeoutError)) or (
                    isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError))
                missing = isinstance(e, urllib.error.HTTPError) and e.code == 404
                raise (Unreachable if unreachable else Missing if missing else SourceFailed)(_reason(e)) from e


def unpack(archive: Path, member: str, out: Path) -> None:
    """Copy `member` of the zip `archive` to `out` (the caller verifies it and renames it)."""
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
    except (zipfile.BadZipFile, KeyError) as e:
        out.unlink(missing_ok=True)
        archive.unlink(missing_ok=True)
        raise SourceFailed(f"not a zip holding {member} ({type(e).__name__})") from e
