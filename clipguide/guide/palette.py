"""`--palette COLOURS[:WEIGHT]`: colour names or #rrggbb, comma-separated (no torch here).

The names are the colours of the tiny model's world (the same RGB values it was trained on) plus a few
common ones; any other colour is written as #rrggbb."""

from __future__ import annotations

import math
import re

from ..errors import UserError

# The tiny world's six colours (clipguide/tiny/world.py takes its table from here), then others.
NAMED: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.75, 0.20),
    "blue": (0.10, 0.25, 0.90),
    "yellow": (0.95, 0.90, 0.10),
    "white": (0.97, 0.97, 0.97),
    "black": (0.05, 0.05, 0.05),
    "orange": (0.95, 0.55, 0.10),
    "purple": (0.55, 0.20, 0.70),
    "pink": (0.95, 0.60, 0.75),
    "brown": (0.50, 0.30, 0.15),
    "grey": (0.50, 0.50, 0.50),
    "gray": (0.50, 0.50, 0.50),
}
HEX = re.compile(r"^#([0-9a-fA-F]{6})$")
FIX = "write names or #rrggbb joined by commas, with an optional :WEIGHT, e.g. --palette 'red,#1e90ff:0.5'"


def parse_palette(spec: str | None) -> tuple[tuple[tuple[float, float, float], ...], float]:
    """'red,#00ff00:0.5' -> (((0.9, 0.1, 0.1), (0.0, 1.0, 0.0)), 0.5); None or 'none' -> ((), 0.0)."""
    if spec is None or spec.strip().lower() in ("", "none"):
        return (), 0.0
    head, colon, tail = spec.rpartition(":")
    colours, weight = (head, tail) if colon else (spec, "1")
    try:
        value = float(weight)
    except ValueError:
        raise UserError(f"--palette {spec!r}: weight {weight!r} is not a number", FIX) from None
    if not (math.isfinite(value) and value >= 0):
        raise UserError(f"--palette {spec!r}: weight must be a finite number >= 0", FIX)
    out = []
    for name in (c.strip() for c in colours.split(",")):
        if name.lower() in NAMED:
            out.append(NAMED[name.lower()])
        elif HEX.match(name):
            h = HEX.match(name).group(1)
            out.append(tuple(int(h[i:i + 2], 16) / 255 for i in (0, 2, 4)))
        else:
            raise UserError(f"--palette {spec!r}: unknown colour {name!r} (named: {', '.join(NAMED)})", FIX)
    return tuple(out), value
