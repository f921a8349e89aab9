"""What `--list-models` shows for each model: is it in the cache, its size, what it was verified against, and,
for the table's files, where their pinned sha256 and size were published.

Reads the cache only (no network, no hashing): a cached file without a verification record shows as
'not checked' until it is first used or `--download` runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import open_clip

from .cache import cache_dir, hub_lookup, read_record
from .download import cached_location, vqgan_wanted
from .registry import HERE, load_table
from .sources import clip_hub_files, expected_size, file_pins

VERIFIED = {"pinned": "verified: pinned sha256", "hub": "verified: Hub sha256", "size": "checked: published size only",
            "none": "unverified: none published"}


@dataclass(frozen=True)
class Row:
    name: str
    kind: str  # 'preset', 'vqgan' or 'clip'
    cached: bool  # in the cache, or built in
    size: int | None  # bytes: of the cached file, else the published size when known
    verified: str  # 'built in', 'verified: ...', 'unverified: ...', 'not checked yet', or '' when not cached
    pinned: bool  # the table pins a sha256 for this file
    description: str = ""
    pins: str = ""  # where the file's pins were published ('unpinned: ...' where nowhere); '' for no table file


def _state(key: str, path: Path | None, cache: Path) -> tuple[bool, int | None, str]:
    if path is None:
        return False, None, ""
    record = read_record(cache, key, path)
    return True, path.stat().st_size, VERIFIED[record["how"]] if record else "not checked"


def vqgan_rows(table: dict, cache: Path) -> list[Row]:
    rows = []
    for name, entry in table["vqgan"].items():
        aliases = f" (also {', '.join(entry['aliases'])})" if entry.get("aliases") else ""
        description = entry.get("description", "") + aliases
        if "path" in entry:
            path = HERE / entry["path"]
            rows.append(Row(name, "vqgan", path.is_file(), path.stat().st_size if path.is_file() else None,
                            "built in", bool(entry.get("sha256")), description))
            continue
        want = vqgan_wanted(name, entry, cache)
        path = next(filter(None, (cached_location(want, s, cache) for s in want.sources)), None)
        cached, size, verified = _state(want.key, path, cache)
        rows.append(Row(name, "vqgan", cached, size if cached else expected_size(entry), verified,
                        bool(want.pins), description, file_pins(entry).describe()))
    return rows


def clip_row(spec: str, cache: Path) -> Row:
    files = clip_hub_files(spec)
    found = next(filter(None, (hub_lookup(cache, files.repo, w) for w in files.weights)), None) if files else None
    cached, size, verified = _state(f"clip:{spec}", found[0] if found else None, cache)
    return Row(spec, "clip", cached, size, verified, False)


def clip_rows(table: dict, cache: Path) -> list[Row]:
    rows = [Row(name, "clip", True, None, "built in", bool(e.get("sha256")), e.get("description", ""))
            for name, e in table.get("clip", {}).items()]
    return rows + [clip_row(f"{arch}:{tag}", cache) for arch, tag in open_clip.list_pretrained()]


def preset_rows(table: dict, parts: dict[tuple[str, str], Row]) -> list[Row]:
    rows = []
    for name, p in table["presets"].items():
        members = [parts.get(("vqgan", p["vqgan"]))] + [parts.get(("clip", c)) for c in p["clip"]]
        cached = all(m is not None and m.cached for m in members)
        sizes = [m.size for m in members if m is not None]
        size = sum(sizes) if sizes and None not in sizes else None
        description = f"{p.get('description', '')}  [vqgan {p['vqgan']}, clip {', '.join(p['clip'])}]"
        rows.append(Row(name, "preset", cached, size, "", False, description))
    return rows


def model_rows(table: dict | None = None, cache: Path | None = None) -> list[Row]:
    """Rows for presets, VQGANs and CLIPs, in that order."""
    table = table or load_table()
    cache = cache_dir(cache)
    vqgans, clips = vqgan_rows(table, cache), clip_rows(table, cache)
    parts = {(r.kind, r.name): r for r in vqgans + clips}
    for p in table["presets"].values():  # a preset may name a CLIP by an hf-hub: spec, not in the lists
        for spec in p["clip"]:
            if ("clip", spec) not in parts and clip_hub_files(spec):
                parts[("clip", spec)] = clip_row(spec, cache)
    return preset_rows(table, parts) + vqgans + clips
