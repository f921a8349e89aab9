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
recipes, so what is judged is what the generator made.

The strict judge (`judge_strict`, the second table) asks what a person would: the whole outermost
ring of pixels within TOLERANCE of the asked background colour; the shape drawn as one piece of the
asked colour (within TOLERANCE) with the asked shape's geometry (`SHAPE_RULES`, measured by
`geometry.measures`); and no speck: no clump of MIN_SPECK to MAX_SPECK pixels that are neither the
background's colour, nor the shape's on the shape, nor a blend of the two at the shape's edge (a
foreign-coloured spot, or a dark dot of the background's hue, in the background or on the shape)."""

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
from . import geometry, world

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


# The strict judge.  Distances are RGB distances of values in [0, 1]; the world's colours are at least 0.8 apart.
TOLERANCE = 0.25  # a pixel within this of a world colour is that colour
MIN_SPECK, MAX_SPECK = 3, 64  # pixels: a smaller clump is not a speck, nor is a larger one (a wrong colour or shape)
EDGE = 2  # pixels: a blend of the shape's and the background's colours this near the shape's edge is its edge
BLEND = 0.15  # an edge pixel this far from the blend, in a 2x2 block of such pixels, is a speck's, not a soft edge's
# measure -> (lowest, highest) allowed; measures from geometry.measures.  The world's own shapes
# (600 of every size) measure: circles fill 0.74-0.82, aspect 0.94-1.07, roundness >= 0.985,
# solidity >= 0.92; squares fill 1.0; triangles fill 0.50-0.57, corners3 >= 0.79, solidity >= 0.90.
SHAPE_RULES = {
    "circle": {"fill": (0.70, 0.86), "aspect": (0.87, 1.15), "roundness": (0.90, 1.0), "solidity": (0.88, 1.0)},
    "square": {"fill": (0.90, 1.0), "aspect": (0.85, 1.15)},
    "triangle": {"fill": (0.42, 0.62), "aspect": (0.80, 1.25), "corners3": (0.70, 1.0), "solidity": (0.85, 1.0)},
}
ONE_PIECE = 0.05  # pixels of the asked colour outside the shape's main piece, as a share of it, at most


def _distance(image: np.ndarray, rgb) -> np.ndarray:
    return np.linalg.norm(image - np.asarray(rgb), axis=-1)


def _segment_distance(image: np.ndarray, a, b) -> np.ndarray:
    """Distance of each pixel to the segment between colours a and b (a blend of the two is near it)."""
    a, b = np.asarray(a), np.asarray(b)
    t = np.clip((image - b) @ (a - b) / ((a - b) @ (a - b)), 0, 1)
    return np.linalg.norm(image - (b + t[..., None] * (a - b)), axis=-1)


def _dilate(mask: np.ndarray, k: int) -> np.ndarray:
    padded = np.pad(mask, k)
    h, w = mask.shape
    return np.logical_or.reduce([padded[dy:dy + h, dx:dx + w] for dy in range(2 * k + 1) for dx in range(2 * k + 1)])


def specks(image: np.ndarray, colour: str, background: str, shape: np.ndarray) -> list[int]:
    """Sizes of the specks of a float [H, W, 3] picture whose shape is the bool mask `shape`: clumps
    of MIN_SPECK to MAX_SPECK pixels that are neither the background's colour, nor the shape's colour on
    the shape, nor a blend of the two within EDGE pixels of the shape's edge.  The edge is the outline of
    the shape with its holes filled: a hole in the shape is not an edge, so a blend inside one is a speck.
    A soft edge is thin: edge pixels BLEND or more from the blend that fill a 2x2 block are a clump, not one."""
    fg, bg = world.COLOURS[colour], world.COLOURS[background]
    solid = geometry.filled(shape)
    edge = _dilate(solid, EDGE) & _dilate(~solid, EDGE)
    plain = (_distance(image, bg) < TOLERANCE) | ((_distance(image, fg) < TOLERANCE) & _dilate(shape, 1))
    blend = _segment_distance(image, fg, bg)
    clumped = geometry.thick(edge & ~plain & (blend >= BLEND))
    clean = plain | ((blend < TOLERANCE) & edge & ~clumped)
    return [int(p.sum()) for p in geometry.pieces(~clean) if MIN_SPECK <= p.sum() <= MAX_SPECK]


def shape_faults(piece: np.ndarray, shape: str) -> tuple[list[str], dict]:
    """(the SHAPE_RULES the piece breaks, its measures)."""
    m = geometry.measures(piece)
    return [k for k, (lo, hi) in SHAPE_RULES[shape].items() if not lo <= m[k] <= hi], m


def judge_strict(image: np.ndarray, shape: str, colour: str, background: str) -> dict:
    """The strict verdict on one uint8 [H, W, 3] picture (see the module doc); `why` names what failed."""
    pic = image.astype(np.float32) / 255
    fg, bg = world.COLOURS[colour], world.COLOURS[background]
    ring = np.concatenate([pic[0], pic[-1], pic[1:-1, 0], pic[1:-1, -1]])
    why = [] if (_distance(ring, bg) < TOLERANCE).all() else ["background"]
    of_colour = _distance(pic, fg) < TOLERANCE
    parts = geometry.pieces(of_colour)
    main = parts[0] if parts else np.zeros(of_colour.shape, bool)
    if main.sum() < 0.02 * main.size:
        why.append("colour")
        return {"background_ok": "background" not in why, "colour_ok": False, "shape_ok": False,
                "specks": len(specks(pic, colour, background, main)), "why": why}
    if of_colour.sum() - main.sum() > ONE_PIECE * main.sum():
        why.append("pieces")
    if main.mean() > MAX_SHARE:
        why.append("size")
    faults, m = shape_faults(main, shape)
    why += faults
    found = specks(pic, colour, background, main)
    return {"background_ok": "background" not in why, "colour_ok": True,
            "shape_ok": not set(why) - {"background"}, "specks": len(found), "why": why,
            **{k: round(v, 3) for k, v in m.items()}}


def judge_folder(folder: str | Path) -> list[dict]:
    """The old judge's verdict on every finished grid picture in `folder`, with the strict judge's
    under the key "strict"."""
    rows = []
    for png in sorted(Path(folder).glob("*.png")):
        recipe = read_recipe(png) or {}
        m = PROMPT.match(recipe.get("prompt", ""))
        if not m or "steps_done" in recipe:
            continue
        colour, shape, background = m.groups()
        picture = np.asarray(Image.open(png).convert("RGB"))
        rows.append({"file": png.name, "shape": shape, "colour_asked": colour, "background_asked": background,
                     **judge(picture, shape, colour, background),
                     "strict": judge_strict(picture, shape, colour, background)})
    return rows


def _by_shape(rows: list[dict], columns: list[tuple[str, object]]) -> list[str]:
    """Markdown rows, one per asked shape and one for all: `columns` are (title, f(rows) -> cell)."""
    groups = defaultdict(list)
    for r in rows:
        groups[r["shape"]].append(r)
    lines = ["| shape | pictures | " + " | ".join(t for t, _ in columns) + " |", "|---" * (len(columns) + 2) + "|"]
    named = [(s, groups[s]) for s in world.SHAPES if groups[s]] + ([("**all**", rows)] if rows else [])
    return lines + [f"| {name} | {len(rs)} | " + " | ".join(f(rs) for _, f in columns) + " |" for name, rs in named]


def _share(ok):
    return lambda rs: f"{100 * sum(map(ok, rs)) / len(rs):.0f}%"


def table(rows: list[dict]) -> str:
    """The old judge's table and its confusion table."""
    lines = _by_shape(rows, [
        ("background right", _share(lambda r: r["background_ok"])),
        ("shape colour right", _share(lambda r: r["colour_ok"])),
        ("shape recognised", _share(lambda r: r["shape_ok"])),
        ("all three", _share(lambda r: r["background_ok"] and r["colour_ok"] and r["shape_ok"])),
        ("mean IoU", lambda rs: f"{sum(r['iou'] for r in rs) / len(rs):.2f}")])
    lines += ["", "| asked \\ best-fitting shape | " + " | ".join(world.SHAPES) + " |",
              "|---" * (len(world.SHAPES) + 1) + "|"]
    for shape in world.SHAPES:
        asked = [r for r in rows if r["shape"] == shape]
        if asked:
            lines.append(f"| {shape} | " + " | ".join(str(sum(r["guess"] == g for r in asked)) for g in world.SHAPES)
                         + " |")
    return "\n".join(lines)


def strict_passes(v: dict) -> bool:
    return v["background_ok"] and v["colour_ok"] and v["shape_ok"] and v["specks"] == 0


STRICT_FAULTS = ("pieces", "size", "fill", "aspect", "roundness", "corners3", "solidity")


def strict_table(verdicts: list[dict]) -> str:
    """The strict judge's table (rows: its verdicts with the asked "shape"), and how many pictures
    broke each of its shape rules."""
    lines = _by_shape(verdicts, [
        ("background right", _share(lambda v: v["background_ok"])),
        ("shape colour right", _share(lambda v: v["colour_ok"])),
        ("shape right", _share(lambda v: v["shape_ok"])),
        ("no speck", _share(lambda v: v["specks"] == 0)),
        ("all four", _share(strict_passes))])
    lines += [""] + _by_shape(verdicts, [(f"{f} wrong", lambda rs, f=f: str(sum(f in v["why"] for v in rs)))
                                         for f in STRICT_FAULTS])
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
    print("\nStrict judge:\n")
    print(strict_table([r["strict"] | {"shape": r["shape"]} for r in rows]))
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
