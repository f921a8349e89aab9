"""Writing files safely: the bottom layer every other module may use.

Every file clipguide writes goes to a hidden temporary name in its final folder and is renamed into
place once complete, so a crash or SIGKILL never leaves a truncated file under a final name.  An
existing file is replaced only when asked (`overwrite`), and then only if it is a regular file:
a folder, a device node, a socket or a pipe under that name is never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import stat
import threading
from pathlib import Path

from .errors import UserError

HOST = socket.gethostname().replace(".", "-")
EXISTS_FIX = "pass --overwrite or choose another name"


def temp_path(path: Path) -> Path:
    """A hidden temporary name beside `path`, keeping its suffix (ffmpeg picks formats by it)."""
    return path.with_name(f".{path.stem}.{HOST}.{os.getpid()}.{threading.get_ident()}.tmp{path.suffix}")


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprints(paths) -> dict[str, str]:
    """{absolute path: sha256} of those of `paths` that are files (None: skipped)."""
    return {str(Path(p).absolute()): sha256_of(p) for p in paths if p is not None and Path(p).is_file()}


def sweep_temps(folder: str | Path) -> int:
    """Delete temporary files that killed processes of this host left in `folder`; returns how many."""
    removed = 0
    for tmp in Path(folder).glob(f".*.{HOST}.*.tmp*"):
        try:
            pid = int(tmp.name.split(f".{HOST}.", 1)[1].split(".")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed += 1
        except (ValueError, IndexError, PermissionError):
            continue
    return removed


def _kind(path: Path) -> str | None:
    """None if nothing is at `path`, 'file' for a regular file, else what is there."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "symbolic link to nothing" if os.path.islink(path) else None  # a dangling link is not free
    except OSError:
        return "something that cannot be read"
    if stat.S_ISREG(mode):
        return "file"
    return "folder" if stat.S_ISDIR(mode) else "device, pipe or socket"


def check_writable(path: str | Path, overwrite: bool, what: str = "output") -> Path:
    """Fail before any work if `path` cannot be written: it exists (without `overwrite`), it is not a
    regular file, or its folder cannot be made or written.  Returns the path."""
    path = Path(path)
    kind = _kind(path)
    if kind not in (None, "file"):
        raise UserError(f"{what} {path} is a {kind}, not a file", "give a file name")
    if kind == "file" and not overwrite:
        raise UserError(f"{path} already exists", EXISTS_FIX)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {path.parent}: not a writable folder", "choose another output folder")
    return path


def check_folder(path: str | Path, what: str) -> Path:
    """A folder clipguide will write into: absent (it is made) or a writable folder."""
    path = Path(path)
    if _kind(path) not in (None, "folder"):
        raise UserError(f"{what} {path} is not a folder", "give a folder name")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {path}: not a writable folder", "choose another folder")
    return path


def publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move a finished temporary file into place (fsynced); never replace `path` unless `overwrite`,
    and never replace anything but a regular file."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    kind = _kind(path)
    if kind not in (None, "file"):
        raise UserError(f"{path} is a {kind}, not a file", "give a file name")
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # exclusive: fails if path exists
    except FileExistsError:
        raise UserError(f"{path} already exists", EXISTS_FIX) from None
    except OSError:  # filesystems without hard links
        if path.exists():
            raise UserError(f"{path} already exists", EXISTS_FIX) from None
        os.replace(tmp, path)
    else:
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_write(path: str | Path, overwrite: bool = False):
    """Yield a temporary path beside `path`; on success publish it, on failure delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        publish(tmp, path, overwrite)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_text(path: str | Path, text: str, overwrite: bool = True) -> Path:
    """Write a small text file atomically."""
    with atomic_write(path, overwrite) as tmp:
        Path(tmp).write_text(text)
    return Path(path)
