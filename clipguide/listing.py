"""`--list-models`: presets, VQGANs and CLIPs, each with its cache state, size and verification."""

from __future__ import annotations

from pathlib import Path

from .models.inventory import Row, model_rows

HEADINGS = {
    "preset": "Presets (--model):",
    "vqgan": "VQGANs (--vqgan; or a .ckpt path with --vqgan-config):",
    "clip": "CLIP models (--clip ARCH:PRETRAINED; or ARCH:/path, local-dir:PATH, hf-hub:ORG/REPO):\n"
            "  (not pinned: a download is checked against the sha256 the Hub lists for it)",
}


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _line(row: Row) -> str:
    """name, where it is (built in / cached / -), size, and what it was (or, not cached, will be) checked against;
    for a file of the table, a second line: where its pins were published."""
    cached = "built in" if row.verified == "built in" else ("cached" if row.cached else "-")
    verified = "" if row.verified == "built in" else row.verified or ("sha256 pinned" if row.pinned else "")
    text = f"  {row.name:22} {cached:8} {human_size(row.size):>8}  {verified:32} {row.description}"
    return text.rstrip() + (f"\n  {'':22} pins: {row.pins}" if row.pins else "")


def model_listing(table: dict | None = None, cache: Path | None = None) -> str:
    lines, kind = [], None
    for row in model_rows(table, cache):
        if row.kind != kind:
            kind = row.kind
            lines.append(HEADINGS[kind])
        lines.append(_line(row))
    return "\n".join(lines)
