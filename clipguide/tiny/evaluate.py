"""Pixel-level check of what the tiny model draws, over the whole world grid.

    python -m clipguide.tiny.evaluate prompts FILE      # write the 90 grid prompts, one per line
    clipguide --batch FILE --model tiny --output-dir DIR   # draw them (split with --shard K/N)
    python -m clipguide.tiny.evaluate judge DIR          # check every PNG there, print the table

A picture passes on *background* when most of its border has the asked background colour (each
pixel is given the nearest colour of the world), on *colour* when most of the non-background pixels
have the asked shape colour, and on *shape* when the region of the asked colour overlaps the asked
shape best (intersection over union >= 0.5) among circle, square and triangle fitted to its centroid
and area, and covers at most MAX_SHARE of the picture (the world's largest shape covers 46 %; a canvas
filled with the shape's colour is not a shape on a background).  The prompts come from the PNGs' own
recipes, so what is judged is what the generator made."""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from ..outputs.pictures import read_recipe
from . import world

PROMPT = re.compile(r"^a (\w+) (\w+) on an? (\w+) background$")
MAX_SHARE = 0.6


def grid_prompts() -> list[str]:
    return [f"a {c} {s} on a {b} background" for s in world.SHAPES for c in world.COLOUR_NAMES
            for b in world.COLOUR_NAMES if b != c]


def nearest_colours(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> HxW index of the nearest world colour."""
    palette = np.array([world.COLOURS[c] for c in world.COLOUR_NAMES]) * 255
    d = ((image[:, :, None, :].astype(np.float32) - palette[None, None]) ** 2).sum(-1)
    return d.argmin(-1)


def _fit_iou(region: np.ndarray, shape: str) -> float:
    h, w = region.shape
    area = region.sum()
    ys, xs = np.nonzero(region)
    cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
    r = math.sqrt(area / (world.area(shape, 1.0)))
    if shape == "triangle":
        cy -= r / 3  # a triangle's centroid sits a third of its height below the box centre
    mask = world.shape_mask(shape, cx, cy, r, h, w).numpy()
    return float((mask & region).sum() / max(1, (mask | region).sum()))


def judge(image: np.ndarray, shape: str, colour: str, background: str) -> dict:
    labels = nearest_colours(image)
    ci, bi = world.COLOUR_NAMES.index(colour), world.COLOUR_NAMES.index(background)
    border = np.concatenate([labels[:2].ravel(), labels[-2:].ravel(), labels[:, :2].ravel(), labels[:, -2:].ravel()])
    background_ok = np.bincount(border, minlength=6).argmax() == bi
    fg = labels != bi
    colour_ok = fg.mean() > 0.02 and np.bincount(labels[fg], minlength=6).argmax() == ci
    region = labels == ci
    ious = {s: _fit_iou(region, s) for s in world.SHAPES} if region.sum() >= 9 else {s: 0.0 for s in world.SHAPES}
    guess = max(ious, key=ious.get)
    shape_ok = guess == shape and ious[guess] >= 0.5 and region.mean() <= MAX_SHARE
    return {"background_ok": bool(background_ok), "colour_ok": bool(colour_ok), "shape_ok": bool(shape_ok),
            "guess": guess, "iou": round(ious[shape], 3)}


def judge_folder(folder: str | Path) -> list[dict]:
    rows = []
    for png in sorted(Path(folder).glob("*.png")):
        recipe = read_recipe(png) or {}
        m = PROMPT.match(recipe.get("prompt", ""))
        if not m or "steps_done" in recipe:
            continue
        colour, shape, background = m.groups()
        verdict = judge(np.asarray(Image.open(png).convert("RGB")), shape, colour, background)
        rows.append({"file": png.name, "shape": shape, "colour_asked": colour, "background_asked": background,
                     **verdict})
    return rows


def table(rows: list[dict]) -> str:
    groups = defaultdict(list)
    for r in rows:
        groups[r["shape"]].append(r)
    lines = ["| shape | pictures | background right | shape colour right | shape recognised | all three | mean IoU |",
             "|---|---|---|---|---|---|---|"]

    def line(name, rs):
        def pct(ok):
            return f"{100 * sum(map(ok, rs)) / len(rs):.0f}%"

        return (f"| {name} | {len(rs)} | {pct(lambda r: r['background_ok'])} | {pct(lambda r: r['colour_ok'])} | "
                f"{pct(lambda r: r['shape_ok'])} | {pct(lambda r: r['background_ok'] and r['colour_ok'] and r['shape_ok'])} | "
                f"{sum(r['iou'] for r in rs) / len(rs):.2f} |")

    for shape in world.SHAPES:
        if groups[shape]:
            lines.append(line(shape, groups[shape]))
    if rows:
        lines.append(line("**all**", rows))
    lines += ["", "| asked \\ best-fitting shape | " + " | ".join(world.SHAPES) + " |",
              "|---" * (len(world.SHAPES) + 1) + "|"]
    for shape in world.SHAPES:
        if groups[shape]:
            counts = [sum(r["guess"] == g for r in groups[shape]) for g in world.SHAPES]
            lines.append(f"| {shape} | " + " | ".join(map(str, counts)) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clipguide.tiny.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("prompts").add_argument("file")
    judge_p = sub.add_parser("judge")
    judge_p.add_argument("folder")
    judge_p.add_argument("--sheet", help="also write the judged pictures, in file-name order, as one PNG here")
    a = p.parse_args(argv)
    if a.cmd == "prompts":
        Path(a.file).write_text("\n".join(grid_prompts()) + "\n")
        return 0
    rows = judge_folder(a.folder)
    if not rows:
        print(f"no finished grid pictures in {a.folder}", file=sys.stderr)
        return 2
    print(table(rows))
    if a.sheet:
        contact_sheet([Path(a.folder) / r["file"] for r in rows], a.sheet)
    return 0


def contact_sheet(files: list[Path], path: str | Path, columns: int = 15, gap: int = 2) -> None:
    """The pictures side by side, `columns` to a row, on grey (for the README)."""
    pics = [Image.open(f).convert("RGB") for f in files]
    w, h = pics[0].size
    rows = -(-len(pics) // columns)
    sheet = Image.new("RGB", (columns * (w + gap) + gap, rows * (h + gap) + gap), (128, 128, 128))
    for i, pic in enumerate(pics):
        sheet.paste(pic, (gap + i % columns * (w + gap), gap + i // columns * (h + gap)))
    sheet.save(path)


if __name__ == "__main__":
    sys.exit(main())
