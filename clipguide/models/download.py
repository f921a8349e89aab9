"""Getting a model file into the cache, verified: a cached copy first (no network at all), else each source
of the table in order, one process at a time.

A cached copy is used when its bytes are the expected file: the table's pin, and for a Hub file the sha256
the Hub published for it (the name of the repo blob its snapshot links to), and its size is the published one.
Its verification record only saves hashing it again: a stale record (a cache copied or moved, mtimes changed,
verified/ read-only) means the bytes are hashed again, never that the file is removed.  A copy that, checked
again, is not the expected file is not used; it is removed only from clipguide's own cache and never where
another repo shares it (cache.discard), and where it cannot be removed (a read-only cache) one line says so.

A downloaded file whose size is not the published one, whose sha256 is not the expected one (the table's pin,
else the Hub's LFS sha256), or that is not a checkpoint at all (an HTML page from a dead link) is deleted and
never used; the error names the source that gave it.  Sizes are checked first, from what the host lists, so a
wrong file is mostly refused before it is downloaded and always before it is hashed; a Hub file whose sha256 is
wrong is fetched once more afresh first.  A source that is missing (404) or gives a wrong file is reported in one
line as the next one is tried; hosts that cannot be reached at all are named once at the end, so a machine
without network gets one line, at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

from ..errors import UserError
from .cache import (READ_ONLY, discard, hub_lookup, lock_path, owned, published_sha256, read_record, stored_record,
                    write_record)
from .hashing import checksum, remember, sha256_of
from .http import fetch_url, unpack
from .hub import fetch_hub, offline, remote_info
from .sources import (Mismatch, Missing, NotCheckpoint, Source, SourceFailed, Unreachable, entry_sources,
                      not_a_checkpoint, pinned_hashes)

Log = Callable[[str], None]


def stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str
    how: str  # 'pinned' (a sha256 the table pins), 'hub' (the Hub's LFS sha256), 'size' (the size only) or 'none'
    source: str


@dataclass(frozen=True)
class Wanted:
    """A model file to get: `key` names its lock and record, `what` names it in messages, `name` for --download."""

    key: str
    what: str
    name: str
    sources: tuple[Source, ...]
    pins: frozenset[str]
    url_target: Path | None = None  # where files from plain URLs go
    alternatives: bool = False  # sources are other names of one file: a missing one is tried quietly


def vqgan_wanted(name: str, entry: dict, cache: Path) -> Wanted:
    target = cache / "vqgan" / entry["file"] if entry.get("file") else None
    return Wanted(f"vqgan:{name}", f"VQGAN {name!r}", name, tuple(entry_sources(entry)),
                  frozenset(pinned_hashes(entry)), target)


def cached_location(want: Wanted, source: Source, cache: Path) -> Path | None:
    if source.hub:
        found = hub_lookup(cache, source.hub, source.path, source.revision)
        return found[0] if found else None
    return want.url_target if want.url_target and want.url_target.is_file() else None


def usable_copy(want: Wanted, cache: Path, log: Log) -> Fetched | None:
    """A cached copy that is (or, checked now, turns out to be) the expected file; no network."""
    for source in want.sources:
        path = cached_location(want, source, cache)
        found = path and _check_copy(want, source, path, cache, log)
        if found:
            return found
    return None


def _check_copy(want: Wanted, source: Source, path: Path, cache: Path, log: Log) -> Fetched | None:
    """`path` as a verified Fetched if its bytes are the file `source` names; else None (and one line)."""
    size = path.stat().st_size
    if source.size and size != source.size:
        _reject(want, path, f"is {size:,} bytes, not the published {source.size:,}", False, cache, log)
        return None
    published = published_sha256(path) if source.hub else None
    expected = [sha for sha in (source.sha256, published) if sha]
    record = read_record(cache, want.key, path)
    got = record["sha256"] if record else checksum(path, cache)
    if any(sha != got for sha in expected):  # re-checked on the bytes, not on a remembered sha256
        got = sha256_of(path)
        remember(path, got, cache)
        record = None
    wrong = next((sha for sha in expected if sha != got), None)
    if wrong:
        kind = "pinned" if wrong in want.pins else "Hub's"
        _reject(want, path, f"has sha256 {got[:12]}..., not the {kind} {wrong[:12]}...",
                wrong == source.sha256 and got == published, cache, log)
        return None
    how = _how(got, want, bool(published), source, _earlier_how(cache, want.key, got))
    label = source.label if source.hub else "the cache"
    if not record:
        write_record(cache, want.key, path, got, how, label)
    return Fetched(path, got, how, label)


def _how(got: str, want: Wanted, hub_checked: bool, source: Source, earlier: str = "none") -> str:
    """What a file that passed its checks was verified against (see Fetched.how); `earlier`: how these very
    bytes were verified before, when nothing else vouches for them now."""
    if got in want.pins:
        return "pinned"
    if hub_checked:
        return "hub"
    if earlier != "none":
        return earlier
    return "size" if source.size else "none"


def _earlier_how(cache: Path, key: str, got: str) -> str:
    """How these very bytes were verified before, wherever they were then (a copy that followed the Hub cache's
    links has no link left to read the Hub's sha256 from); 'none' if they never were."""
    record = stored_record(cache, key) or {}
    return record.get("how", "none") if record.get("sha256") == got else "none"


def _reject(want: Wanted, path: Path, why: str, intact: bool, cache: Path, log: Log) -> None:
    """One line about a cached copy that is not used; removed only if it is damaged and clipguide's own."""
    line = f"{want.what}: the cached {path} {why}"
    if intact:  # the Hub's file of that name, unharmed: another version than the pinned one
        log(f"{line}; it is intact (another version of the file): not used, left in place")
    elif not owned(cache, path):
        log(f"{line}; not used, left in place (not clipguide's cache)")
    else:
        try:
            discard(path)
            log(f"{line}; removed it")
        except OSError as e:
            log(f"{line}; not used, and it cannot be removed ({e.strerror}: is the cache read-only?)")


def _mismatch(got: str, expected: str, what: str) -> Mismatch:
    return Mismatch(f"gave a file with sha256 {got[:12]}..., not the {what} {expected[:12]}... (deleted)")


def _check_size(path: Path, source: Source) -> None:
    if source.size and path.stat().st_size != source.size:
        raise Mismatch(f"gave {path.stat().st_size:,} bytes, not the published {source.size:,} (deleted)")


def _from_hub(want: Wanted, source: Source, cache: Path) -> Fetched:
    remote = remote_info(source.hub, source.path, source.revision)
    if source.sha256 and remote.sha256 and remote.sha256 != source.sha256:
        raise Mismatch(f"lists sha256 {remote.sha256[:12]}..., not the pinned {source.sha256[:12]}... "
                       "(not downloaded)")
    if source.size and remote.size and remote.size != source.size:
        raise Mismatch(f"lists {remote.size:,} bytes, not the published {source.size:,} (not downloaded)")
    for force in (False, True):  # a wrong file is fetched once more, afresh (shared-store copies replaced)
        path = fetch_hub(source.hub, source.path, cache, source.revision, force=force)
        try:
            _check_size(path, source)
        except Mismatch:
            discard(path)
            raise
        got = sha256_of(path)
        expected = source.sha256 or remote.sha256 or published_sha256(path)
        if not expected or got == expected:
            break
        discard(path)
        if force:
            raise _mismatch(got, expected, "pinned" if source.sha256 else "Hub's")
    remember(path, got, cache)
    return Fetched(path, got, _how(got, want, bool(expected), source), source.label)


def _from_url(want: Wanted, source: Source, cache: Path) -> Fetched:
    dest = want.url_target
    tag = hashlib.sha1(source.url.encode()).hexdigest()[:8]  # each source resumes only its own bytes
    part = dest.with_name(f"{dest.name}.{tag}.part")
    host = urllib.parse.urlsplit(source.url).hostname
    try:  # the size a zip member is published with is the member's, not the zip's
        fetch_url(source.url, part, desc=f"{dest.name} from {host}", size=None if source.member else source.size)
        if source.member:
            out = dest.with_name(f"{dest.name}.{tag}.unzipped.part")
            unpack(part, source.member, out)
            part.unlink()
            part = out
        _check_size(part, source)
        with open(part, "rb") as f:
            if reason := not_a_checkpoint(f.read(16)):
                raise NotCheckpoint(reason)
    except (Mismatch, NotCheckpoint):
        part.unlink(missing_ok=True)
        raise
    got = sha256_of(part)
    if source.sha256 and got != source.sha256:
        part.unlink()
        raise _mismatch(got, source.sha256, "pinned")
    os.replace(part, dest)
    remember(dest, got, cache)
    return Fetched(dest, got, _how(got, want, False, source), source.label)


def _not_found(want: Wanted, failures: list[tuple[Source, SourceFailed]], cache: Path) -> UserError:
    if all(isinstance(e, Unreachable) for _, e in failures):
        detail = f"no source could be reached: {failures[0][1]}; tried {', '.join(s.label for s, _ in failures)}"
    else:
        detail = "; ".join(f"{s.label}: {e}" for s, e in failures)
    if any(isinstance(e, NotCheckpoint) for _, e in failures):
        return UserError(f"no source gave the file of {want.what} ({detail[:500]})",
                         "nothing was kept, and trying again will not help: the host sends something else than the "
                         "file (a dead or expired link, or a login page); report it, or get the file by hand "
                         "and pass its path (--vqgan FILE --vqgan-config CONFIG)")
    if any(isinstance(e, Mismatch) for _, e in failures):
        return UserError(f"no source gave the published file of {want.what} ({detail[:500]})",
                         "nothing was kept: the file changed upstream or was corrupted on the way; "
                         "run again to retry, or report it")
    return UserError(f"cannot download {want.what} ({detail[:500]})",
                     f"no network? run `clipguide --download {want.name}` where there is network (it fills "
                     f"{cache}) and set HF_HUB_OFFLINE=1 where there is none, or run offline with --model tiny")


def _try_sources(want: Wanted, cache: Path, log: Log) -> Fetched:
    failures: list[tuple[Source, SourceFailed]] = []
    for i, source in enumerate(want.sources):
        try:
            got = (_from_hub if source.hub else _from_url)(want, source, cache)
        except OSError as e:
            if e.errno in READ_ONLY:
                where = f": {e.filename}" if e.filename else ""
                raise UserError(f"cannot write the model cache {cache} ({e.strerror}{where})",
                                "make it writable, or set CLIPGUIDE_CACHE to a writable folder") from e
            raise
        except SourceFailed as e:
            failures.append((source, e))
            # unreachable hosts are named once, in the error at the end (without network: one line), as is the last
            quiet = isinstance(e, Unreachable) or (want.alternatives and isinstance(e, Missing))
            if not quiet and i + 1 < len(want.sources):
                log(f"{want.what}: {source.label}: {e}; trying the next source")
            continue
        unreachable = [s.label for s, e in failures if isinstance(e, Unreachable)]
        if unreachable:
            log(f"{want.what}: got it from {source.label} ({', '.join(unreachable)} could not be reached)")
        write_record(cache, want.key, got.path, got.sha256, got.how, got.source)
        return got
    raise _not_found(want, failures, cache)


@contextlib.contextmanager
def _locked(want: Wanted, cache: Path, log: Log):
    """One process at a time per model; a cache that cannot be written (read-only) is used without a lock."""
    try:
        lock = FileLock(str(lock_path(cache, want.key)))
        lock.acquire(timeout=0.5)
    except Timeout:
        log(f"{want.what}: waiting for another process that is downloading it")
        lock.acquire()
    except OSError as e:
        if e.errno not in READ_ONLY:
            raise
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def obtain(want: Wanted, cache: Path, log: Log = stderr) -> Fetched:
    """The verified file of `want`, downloading it if no good copy is cached; raises UserError."""
    with _locked(want, cache, log):
        found = usable_copy(want, cache, log)
        if found:
            return found
        if offline():
            raise UserError(f"{want.what} is not in the cache ({cache}) and HF_HUB_OFFLINE is set",
                            f"run `clipguide --download {want.name}` on a machine with network and copy the "
                            "cache here, or use --model tiny")
        if not want.sources:
            raise UserError(f"{want.what} has no download source", "pass a local file instead")
        return _try_sources(want, cache, log)
