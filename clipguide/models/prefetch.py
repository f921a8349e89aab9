"""`clipguide --download NAME...`: fill the cache ahead of time (for machines that go offline later),
and the CLIP side of "look in the cache first, go online only for what is missing".

NAME is a VQGAN name, a CLIP spec (`ARCH:TAG` from open_clip's list, or `hf-hub:ORG/REPO`) or a preset
(`default` is the classic preset's pair).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .cache import cache_dir, hub_root
from .download import Fetched, Log, Wanted, obtain, stderr
from .registry import HERE, find_entry, load_table, resolve_vqgan, suggest
from .sources import Source, clip_hub_files


def _clip_required(spec: str, repo: str, names: tuple[str, ...], cache: Path, log: Log) -> None:
    """Small files a Hub CLIP needs besides its weights (its open_clip_config.json)."""
    for name in names:
        source = Source(hub=repo, path=name)
        obtain(Wanted(f"clip:{spec}:{name}", f"{name} of CLIP {spec}", spec, (source,), frozenset()), cache, log)


def clip_weights(spec: str, cache: Path, log: Log = stderr) -> tuple[Fetched, Path]:
    """(weights, the hub cache folder holding them) for `ARCH:TAG` or `hf-hub:ORG/REPO`.

    From clipguide's cache, or the user's own huggingface_hub cache, when there (no network; the folder returned
    is then that cache, which open_clip reads offline), else downloaded and verified against the Hub's sha256."""
    files = clip_hub_files(spec)
    if files is None:
        raise ValueError(f"{spec!r} names no Hub files")
    _clip_required(spec, files.repo, files.required, cache, log)
    sources = tuple(Source(hub=files.repo, path=name) for name in files.weights)
    want = Wanted(f"clip:{spec}", f"CLIP weights {spec}", spec, sources, frozenset(), alternatives=True)
    got = obtain(want, cache, log)
    return got, hub_root(got.path)


def _plan(names: list[str], table: dict) -> list[tuple[str, str]]:
    """[(kind, name)] to fetch, in order, without repeats; presets expand to their VQGAN and CLIPs."""
    plan: list[tuple[str, str]] = []
    for name in names:
        if name in table["presets"]:
            preset = table["presets"][name]
            items = [("vqgan", preset["vqgan"])] + [("clip", c) for c in preset["clip"]]
        elif find_entry(table["vqgan"], name):
            items = [("vqgan", find_entry(table["vqgan"], name)[0])]
        elif find_entry(table.get("clip", {}), name) or clip_hub_files(name):
            items = [("clip", name)]
        else:
            known = [*table["presets"], *table["vqgan"], "ViT-B-32:openai", "hf-hub:ORG/REPO"]
            raise UserError(f"nothing to download for {name!r}",
                            f"{suggest(name, known)}name a preset, a VQGAN or a CLIP ARCH:TAG from --list-models")
        plan += [item for item in items if item not in plan]
    return plan


def _one(kind: str, name: str, table: dict, cache: Path, log: Log) -> Path:
    if kind == "vqgan":
        files = resolve_vqgan(name, table=table, cache=cache, log=log)
        return files.checkpoint
    found = find_entry(table.get("clip", {}), name)
    if found:
        return HERE / found[1]["local_dir"]  # built in: nothing to download
    return clip_weights(name, cache, log)[0].path


def download_models(names: list[str], cache: Path | None = None, log: Log = stderr,
                    table: dict | None = None) -> list[Path]:
    """Download (or find, already cached) every named model; one line each; the files' paths.

    Raises UserError for an unknown name or a download that fails (after trying every source)."""
    table = table or load_table()
    cache = cache_dir(cache)
    paths = []
    for kind, name in _plan(names, table):
        path = _one(kind, name, table, cache, log)
        size = path.stat().st_size if path.is_file() else None
        log(f"{kind} {name}: {path}" + (f" ({size / 1e6:,.0f} MB)" if size else ""))
        paths.append(path)
    return paths
