"""`--list-models`: what the registry and open_clip offer."""

from __future__ import annotations

import open_clip

from .models.registry import load_table


def model_listing(table: dict | None = None) -> str:
    table = table or load_table()
    lines = ["Presets (--model):"]
    for name, p in table["presets"].items():
        lines.append(f"  {name:16} {p.get('description', '')}  [vqgan {p['vqgan']}, clip {', '.join(p['clip'])}]")
    lines.append("VQGANs (--vqgan; or a .ckpt path with --vqgan-config):")
    for name, e in table["vqgan"].items():
        aliases = f" (also {', '.join(e['aliases'])})" if e.get("aliases") else ""
        lines.append(f"  {name:16} {e.get('description', '')}{aliases}")
    lines.append("CLIP models (--clip ARCH:PRETRAINED; or ARCH:/path, local-dir:PATH, hf-hub:ORG/REPO):")
    for name in table.get("clip", {}):
        lines.append(f"  {name:16} built in")
    for arch, tag in open_clip.list_pretrained():
        lines.append(f"  {arch}:{tag}")
    return "\n".join(lines)
