"""The model table (registry.json), the download cache, and turning a user's model spec into files.

The table is data: a new published VQGAN is a new entry (config yaml + URLs + sha256), a new
preset a new key.  Weights are cached under `$CLIPGUIDE_CACHE`, else `$XDG_CACHE_HOME/clipguide`,
else `~/.cache/clipguide`; downloads resume, are checked against their sha256 before use, and are
serialised between processes with a file lock.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from tqdm import tqdm

from ..errors import UserError

HERE = Path(__file__).parent


def load_table(path: Path = HERE / "registry.json") -> dict:
    return json.loads(path.read_text())


def cache_dir() -> Path:
    if os.environ.get("CLIPGUIDE_CACHE"):
        return Path(os.environ["CLIPGUIDE_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "clipguide"


def suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.4)
    return f"did you mean {', '.join(close)}? " if close else ""


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def checksum(path: str | Path, cache: Path | None = None) -> str:
    """sha256 of a file, remembered in the cache by (path, size, mtime) so big files hash once."""
    path = Path(path).resolve()
    st = path.stat()
    key = hashlib.sha1(str(path).encode()).hexdigest()
    memo = (cache or cache_dir()) / "checksums" / f"{key}.json"
    stamp = [st.st_size, st.st_mtime_ns]
    try:
        saved = json.loads(memo.read_text())
        if saved["stamp"] == stamp:
            return saved["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = sha256_of(path)
    try:
        from ..files import atomic_write

        with atomic_write(memo, overwrite=True) as tmp:
            Path(tmp).write_text(json.dumps({"path": str(path), "stamp": stamp, "sha256": digest}))
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return digest


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Append the rest of `url` to `part`, resuming from its current size when the server allows."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # already complete
            return
        raise
    with resp:
        if have and resp.status != 206:  # server ignored the range: start again
            have = 0
        total = resp.headers.get("Content-Length")
        total = int(total) + have if total else None
        with open(part, "ab" if have else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=part.name.removesuffix(".part"),
            disable=None, leave=False,
        ) as bar:
            while block := resp.read(1 << 20):
                f.write(block)
                bar.update(len(block))
            f.flush()
            os.fsync(f.fileno())


def download(urls: list[str], dest: Path, sha256: str | None, what: str, timeout: float = 30) -> Path:
    """Fetch `dest` from the first URL that works; verify; publish atomically; one process at a time."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if dest.exists():
            return dest
        part = dest.with_name(dest.name + ".part")
        errors = []
        for url in urls:
            try:
                _fetch(url, part, timeout)
            except (urllib.error.URLError, OSError, ValueError) as e:
                errors.append(f"{url.split('/')[2] if '//' in url else url}: {getattr(e, 'reason', e)}")
                continue
            got = sha256_of(part)
            if sha256 and got != sha256:
                part.unlink()
                raise UserError(f"checksum mismatch for {what}: expected {sha256[:12]}..., got {got[:12]}...",
                                "the download was corrupted or the file changed upstream; run again to retry")
            os.replace(part, dest)
            return dest
        raise UserError(
            f"cannot download {what} ({'; '.join(errors)[:200]})",
            f"no network? run offline with --model tiny, or download it to {dest} yourself, "
            "or pass a local file (--vqgan PATH / --clip ARCH:PATH)",
        )


def verify_builtin(path: Path, sha256: str | None, what: str, cache: Path | None = None) -> None:
    """Shipped weights must be there and match the table's checksum."""
    if not path.is_file():
        raise UserError(f"{what} is missing from this installation ({path})", "reinstall clipguide")
    if sha256 and checksum(path, cache) != sha256:
        raise UserError(f"{what} does not match its checksum ({path})", "reinstall clipguide")


@dataclass(frozen=True)
class VQGANFiles:
    name: str
    config: Path
    checkpoint: Path
    sha256: str | None  # the table's published checksum, if any


def find_entry(section: dict, name: str) -> tuple[str, dict] | None:
    for key, entry in section.items():
        if name == key or name in entry.get("aliases", ()):
            return key, entry
    return None


def resolve_vqgan(spec: str, config: str | None = None, table: dict | None = None,
                  cache: Path | None = None, fetch: bool = True) -> VQGANFiles:
    """A registry name or a checkpoint path (+ optional config path) -> files on disk."""
    table = table or load_table()
    found = find_entry(table["vqgan"], spec)
    if found:
        name, entry = found
        cfg = Path(config) if config else HERE / entry["config"]
        if "path" in entry:
            ckpt = HERE / entry["path"]
            verify_builtin(ckpt, entry.get("sha256"), f"the built-in VQGAN {name!r}", cache)
        else:
            ckpt = (cache or cache_dir()) / "vqgan" / entry["file"]
            if not ckpt.exists():
                if not fetch:
                    raise UserError(f"VQGAN {name!r} is not downloaded", f"download it to {ckpt}")
                download(entry["urls"], ckpt, entry.get("sha256"), f"VQGAN {name!r}")
        return VQGANFiles(name, cfg, ckpt, entry.get("sha256"))
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


def resolve_preset(name: str, table: dict | None = None) -> dict:
    table = table or load_table()
    if name not in table["presets"]:
        raise UserError(f"unknown model {name!r}",
                        f"{suggest(name, table['presets'])}choose one of: {', '.join(table['presets'])}")
    return table["presets"][name]
