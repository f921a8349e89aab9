"""The model table, registry.json: VQGANs (configs, download sources, checksums), built-in CLIPs and
presets.  Reading it needs nothing but json, so the command line can check a model name or show a
preset's defaults without loading any model library."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from ..errors import UserError

HERE = Path(__file__).parent


def load_table(path: Path = HERE / "registry.json") -> dict:
    return json.loads(path.read_text())


def suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.4)
    return f"did you mean {', '.join(close)}? " if close else ""


def find_entry(section: dict, name: str) -> tuple[str, dict] | None:
    for key, entry in section.items():
        if name == key or name in entry.get("aliases", ()):
            return key, entry
    return None


def resolve_preset(name: str, table: dict | None = None) -> dict:
    table = table or load_table()
    if name not in table["presets"]:
        raise UserError(f"unknown model {name!r}",
                        f"{suggest(name, table['presets'])}choose one of: {', '.join(table['presets'])}")
    return table["presets"][name]
