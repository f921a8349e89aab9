"""`--palette COLOURS[:WEIGHT[:END]]`: colour names or #rrggbb, comma-separated (no torch here).

The names are the colours of the tiny model's world (the same RGB values it was trained on) plus a few
common ones; any other colour is written as #rrggbb.  The word `prompt` stands for the colours that each
image's own prompt names (in its prompts that pull, every stage), so one batch file of many prompts gets
one palette per line: `--palette prompt:1`.  Two weights, `prompt:0:10`, make the pull grow over the run."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UserError
from ..options import BY_NAME
from ..values import numbers, turned_off

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
FIX = ("write names, #rrggbb or 'prompt' joined by commas, then an optional :WEIGHT or :START:END, e.g. "
       "--palette 'red,#1e90ff:0.5' or --palette prompt:0:10")
FROM_PROMPT = "prompt"
RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Palette:
    """The colours every pixel is pulled toward, and the pull's weight; `from_prompt`: add the
    colours each image's prompt names; `end`: the weight at the end of the run (None: constant), the
    weight moving from `weight` to `end` with the square of the run's progress, so the pull acts
    late, on a picture whose shapes are already drawn."""

    colours: tuple[RGB, ...] = ()
    weight: float = 0.0
    from_prompt: bool = False
    end: float | None = None

    def weight_at(self, step: int, steps: int) -> float:
        if self.end is None:
            return self.weight
        return self.weight + (self.end - self.weight) * (step / max(steps, 1)) ** 2

    @property
    def pulls(self) -> bool:
        return bool(self.weight or self.end)

    def for_texts(self, texts) -> tuple[RGB, ...]:
        """The palette of an image guided by `texts`: the given colours, then those the texts name
        (each once, in the order they first appear).  With `prompt`, fewer than two colours in all
        give no palette: 'a red circle' names no colour for the rest of the picture, and a pull toward
        red alone would paint all of it red."""
        out = list(self.colours)
        if self.from_prompt:
            for text in texts:
                for word in re.findall(r"[a-z]+", text.lower()):
                    if word in NAMED and NAMED[word] not in out:
                        out.append(NAMED[word])
            if len(out) < 2:
                return ()
        return tuple(out)


def parse_palette(spec: str | None) -> Palette:
    """'red,#00ff00:0.5' -> Palette(((0.9, 0.1, 0.1), (0.0, 1.0, 0.0)), 0.5); 'prompt' -> the colours
    each prompt names, weight 1; 'prompt:0:10' -> a weight growing from 0 to 10 over the run; None or
    'none' -> no palette."""
    if turned_off(spec):
        return Palette()
    colours, values = numbers(spec, BY_NAME["palette"].parts, f"--palette {spec!r}", FIX)
    values = values or [1.0]
    out, from_prompt = [], False
    for name in (c.strip() for c in colours.split(",")):
        if name.lower() == FROM_PROMPT:
            from_prompt = True
        elif name.lower() in NAMED:
            out.append(NAMED[name.lower()])
        elif HEX.match(name):
            h = HEX.match(name).group(1)
            out.append(tuple(int(h[i:i + 2], 16) / 255 for i in (0, 2, 4)))
        else:
            raise UserError(f"--palette {spec!r}: unknown colour {name!r} (named: {', '.join(NAMED)})", FIX)
    return Palette(tuple(out), values[0], from_prompt, values[1] if len(values) > 1 else None)
