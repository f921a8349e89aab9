"""The tiny world: one flat-coloured shape on a plain background, with captions.

Everything is procedural and seeded; nothing is downloaded.  Pictures are 64x64 RGB floats in
[0, 1] (torch tensors [B, 3, H, W]).

Vocabulary
----------
shapes:      circle, square, triangle
colours:     red, green, blue, yellow, white, black
             (the shape's colour and the background's colour are always different)

Caption templates (``{c}`` shape colour, ``{s}`` shape, ``{b}`` background colour)::

    a {c} {s} on a {b} background     a photo of a {c} {s} on a {b} background
    a {c} {s} on {b}                  a {c} {s}
    a photo of a {c} {s}              a {s} on a {b} background
    a {s} on {b}                      a {c} shape on {b}
    a {c} shape                       a {s}
    {c}                               {b} background

so partial prompts such as "a circle", "red" or "blue background" mean something too.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..guide.palette import NAMED

SIZE = 64

COLOURS: dict[str, tuple[float, float, float]] = {  # the runtime's named colours (--palette) start with these
    name: NAMED[name] for name in ("red", "green", "blue", "yellow", "white", "black")}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Shape index len(SHAPES) is an irregular "blob": a hard negative for every shape word (see `make_blobs`).
BLOB = len(SHAPES)
SHAPE_WORDS: tuple[str, ...] = SHAPES + ("blob",)

# (format, mentions shape, mentions shape colour, mentions background), full captions first.
TEMPLATES: tuple[tuple[str, bool, bool, bool], ...] = (
    ("a {c} {s} on a {b} background", True, True, True),
    ("a photo of a {c} {s} on a {b} background", True, True, True),
    ("a {c} {s} on {b}", True, True, True),
    ("a {c} {s}", True, True, False),
    ("a photo of a {c} {s}", True, True, False),
    ("a {s} on a {b} background", True, False, True),
    ("a {s} on {b}", True, False, True),
    ("a {c} shape on {b}", False, True, True),
    ("a {c} shape", False, True, False),
    ("a {s}", True, False, False),
    ("{c}", False, True, False),
    ("{b} background", False, False, True),
)
N_FULL = 3  # the first N_FULL templates name everything
FULL_TEMPLATE_P = 0.4  # share of captions drawn from the full templates


class Batch(NamedTuple):
    """A batch of world pictures with their labels (all label tensors are [B])."""

    images: torch.Tensor  # [B, 3, H, W] float in [0, 1]
    captions: list[str]
    shape: torch.Tensor  # index into SHAPES
    colour: torch.Tensor  # index into COLOUR_NAMES (the shape's colour)
    background: torch.Tensor  # index into COLOUR_NAMES, never equal to colour
    cx: torch.Tensor  # shape centre, in pixels
    cy: torch.Tensor
    radius: torch.Tensor  # half the shape's extent, in pixels
    template: torch.Tensor  # index into TEMPLATES of each caption


def colour_tensor(name: str) -> torch.Tensor:
    """RGB of a colour name as a [3] float tensor."""
    return torch.tensor(COLOURS[name])


def caption(shape: int, colour: int, background: int, template: int = 0) -> str:
    """The caption of one labelled picture under one template."""
    return TEMPLATES[template][0].format(s=SHAPE_WORDS[shape], c=COLOUR_NAMES[colour], b=COLOUR_NAMES[background])


def shape_mask(shape: int | str, cx: float, cy: float, radius: float,
               height: int = SIZE, width: int = SIZE) -> torch.Tensor:
    """Bool [H, W] mask of the shape's pixels (pixel centres inside the shape)."""
    if isinstance(shape, str):
        shape = SHAPES.index(shape)
    y = torch.arange(height, dtype=torch.float32)[:, None] + 0.5 - float(cy)
    x = torch.arange(width, dtype=torch.float32)[None, :] + 0.5 - float(cx)
    r = float(radius)
    if SHAPES[shape] == "circle":
        return x * x + y * y <= r * r
    if SHAPES[shape] == "square":
        return (x.abs() <= r) & (y.abs() <= r)
    # upright triangle, apex at the top, base at the bottom, width 2r, height 2r
    inside_y = (y >= -r) & (y <= r)
    half = (y + r) / 2  # half-width grows from 0 at the apex to r at the base
    return inside_y & (x.abs() <= half)


def sample_labels(n: int, generator: torch.Generator, size: int = SIZE) -> dict[str, torch.Tensor]:
    """Random labels for n pictures: shape, colours (shape != background), geometry, template."""
    shape = torch.randint(len(SHAPES), (n,), generator=generator)
    colour = torch.randint(len(COLOURS), (n,), generator=generator)
    # background: any other colour, uniformly
    background = (colour + 1 + torch.randint(len(COLOURS) - 1, (n,), generator=generator)) % len(COLOURS)
    radius = size * (0.12 + 0.22 * torch.rand(n, generator=generator))  # 7.7 .. 21.8 px at 64
    margin = radius + 1  # the whole shape is inside the picture
    cx = margin + torch.rand(n, generator=generator) * (size - 2 * margin)
    cy = margin + torch.rand(n, generator=generator) * (size - 2 * margin)
    full = torch.rand(n, generator=generator) < FULL_TEMPLATE_P
    template = torch.where(full, torch.randint(N_FULL, (n,), generator=generator),
                           torch.randint(N_FULL, len(TEMPLATES), (n,), generator=generator))
    return dict(shape=shape, colour=colour, background=background, cx=cx, cy=cy, radius=radius,
                template=template)


def render(labels: dict[str, torch.Tensor], size: int = SIZE) -> torch.Tensor:
    """[B, 3, size, size] pictures for labels as made by `sample_labels`."""
    palette = torch.tensor(list(COLOURS.values()))
    images = []
    for i in range(len(labels["shape"])):
        m = shape_mask(int(labels["shape"][i]), labels["cx"][i], labels["cy"][i], labels["radius"][i], size, size)
        fg = palette[labels["colour"][i]][:, None, None]
        bg = palette[labels["background"][i]][:, None, None]
        images.append(torch.where(m, fg, bg))
    return torch.stack(images) if images else torch.zeros(0, 3, size, size)


def make_batch(n: int, seed: int | torch.Generator = 0, size: int = SIZE) -> Batch:
    """n random world pictures with captions and labels, reproducible from `seed` (int or Generator)."""
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    lab = sample_labels(n, g, size)
    caps = [caption(int(s), int(c), int(b), int(t))
            for s, c, b, t in zip(lab["shape"], lab["colour"], lab["background"], lab["template"])]
    return Batch(render(lab, size), caps, **lab)


def caption_matches(template: torch.Tensor, shape: torch.Tensor, colour: torch.Tensor, background: torch.Tensor,
                    img_shape: torch.Tensor, img_colour: torch.Tensor, img_background: torch.Tensor) -> torch.Tensor:
    """[T, I] bool: is caption t (template + its labels) true of picture i?"""
    flags = torch.tensor([t[1:] for t in TEMPLATES])[template]  # [T, 3]
    ok = torch.ones(len(template), len(img_shape), dtype=torch.bool)
    ok &= ~flags[:, 0:1] | (shape[:, None] == img_shape[None])
    ok &= ~flags[:, 1:2] | (colour[:, None] == img_colour[None])
    ok &= ~flags[:, 2:3] | (background[:, None] == img_background[None])
    return ok


def all_full_captions(template: int = 0) -> tuple[list[str], torch.Tensor]:
    """Every (shape, colour, background) combination's caption, with [N, 3] labels, for zero-shot tests."""
    rows = [(s, c, b) for s in range(len(SHAPES)) for c in range(len(COLOURS)) for b in range(len(COLOURS))
            if b != c]
    return [caption(s, c, b, template) for s, c, b in rows], torch.tensor(rows)


def all_captions() -> list[str]:
    """Every caption any template gives, for every shape word (the blob's too) and pair of colours."""
    colours = range(len(COLOUR_NAMES))
    return sorted({caption(s, c, b, t) for t in range(len(TEMPLATES)) for s in range(len(SHAPE_WORDS))
                   for c in colours for b in colours if b != c})


def area(shape: int | str, radius: float) -> float:
    """Exact area of a shape of this radius (for checking masks)."""
    if isinstance(shape, str):
        shape = SHAPES.index(shape)
    return {"circle": math.pi * radius**2, "square": 4 * radius**2, "triangle": 2 * radius**2}[SHAPES[shape]]


# ------------------------------------------------------------------------------------------ blobs
# Irregular pictures that are none of the shapes, captioned truthfully ("a red blob on a blue
# background", "a red shape on blue", "red", ...): hard negatives so that a shape prompt is not
# satisfied by a formless patch of the right colours.

BLOB_KINDS = ("noise", "ellipses", "wobble", "jagged", "many", "oversized")


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(size, dtype=torch.float32)[:, None] + 0.5
    x = torch.arange(size, dtype=torch.float32)[None, :] + 0.5
    return x, y


def blob_mask(kind: str, generator: torch.Generator, size: int = SIZE) -> torch.Tensor:
    """Bool [H, W] mask of one random irregular region (not a circle, square or triangle)."""
    g = generator
    u = lambda lo, hi: lo + (hi - lo) * float(torch.rand((), generator=g))  # noqa: E731
    x, y = _grid(size)
    if kind == "noise":  # thresholded low-pass noise: a few smooth patches up to a fragmented texture
        cells = int(torch.randint(4, 17, (), generator=g))
        n = torch.randn(1, 1, cells, cells, generator=g)
        n = torch.nn.functional.interpolate(n, size=(size, size), mode="bicubic", align_corners=False)[0, 0]
        frac = u(0.06, 0.35)
        return n >= torch.quantile(n.flatten(), 1 - frac)
    if kind == "many":  # a scatter of small shapes: several triangles are not "a triangle"
        m = torch.zeros(size, size, dtype=torch.bool)
        s = int(torch.randint(len(SHAPES), (), generator=g))
        for _ in range(int(torch.randint(3, 9, (), generator=g))):
            rr = u(0.04, 0.11) * size
            m |= shape_mask(s, u(rr + 1, size - rr - 1), u(rr + 1, size - rr - 1), rr, size, size)
        return m
    if kind == "oversized":  # a shape too big for the frame: mostly its colour, a rim of background
        while True:
            r = u(0.4, 0.8) * size
            m = shape_mask(int(torch.randint(len(SHAPES), (), generator=g)), u(0.2, 0.8) * size,
                           u(0.2, 0.8) * size, r, size, size)
            if 0.5 <= m.float().mean() <= 0.92:
                return m
    cx, cy, r = u(0.3, 0.7) * size, u(0.3, 0.7) * size, u(0.12, 0.3) * size
    if kind == "ellipses":  # a union of 2-4 rotated ellipses
        m = torch.zeros(size, size, dtype=torch.bool)
        for _ in range(int(torch.randint(2, 5, (), generator=g))):
            ex, ey = cx + u(-r, r), cy + u(-r, r)
            a, th = u(0.35, 0.9) * r, u(0, math.pi)
            b = a * u(0.2, 0.5)  # elongated, so no single ellipse passes for a circle
            dx, dy = x - ex, y - ey
            xr, yr = dx * math.cos(th) + dy * math.sin(th), -dx * math.sin(th) + dy * math.cos(th)
            m |= (xr / a) ** 2 + (yr / b) ** 2 <= 1
        return m
    ang = torch.atan2(y - cy, x - cx)
    dist = ((x - cx) ** 2 + (y - cy) ** 2).sqrt()
    if kind == "wobble":  # a star-shaped region with a smoothly wobbling rim
        rim = torch.ones_like(ang)
        for k in range(2, 7):
            rim = rim + u(0.05, 0.3) * torch.cos(k * ang + u(0, 2 * math.pi))
        return dist <= r * rim.clamp(min=0.25)
    # jagged: a polygon-like star with random vertex radii, linearly interpolated around the rim
    k = int(torch.randint(5, 14, (), generator=g))
    radii = r * (0.45 + 0.85 * torch.rand(k + 1, generator=g))
    radii[-1] = radii[0]
    pos = (ang + math.pi) / (2 * math.pi) * k
    i0 = pos.floor().long().clamp(0, k - 1)
    w = pos - i0
    return dist <= radii[i0] * (1 - w) + radii[i0 + 1] * w


def make_blobs(n: int, seed: int | torch.Generator = 0, size: int = SIZE) -> Batch:
    """n irregular blob pictures (shape index `BLOB`) with truthful captions, reproducible from `seed`.

    cx, cy are the blob's centroid and radius half its larger extent, so crops can keep it in view."""
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    lab = sample_labels(n, g, size)
    lab["shape"] = torch.full((n,), BLOB)
    palette = torch.tensor(list(COLOURS.values()))
    images, cx, cy, rad = [], [], [], []
    for i in range(n):
        while True:
            m = blob_mask(BLOB_KINDS[int(torch.randint(len(BLOB_KINDS), (), generator=g))], g, size)
            if m.sum() >= 0.03 * size * size:
                break
        ys, xs = torch.nonzero(m, as_tuple=True)
        cx.append(xs.float().mean() + 0.5)
        cy.append(ys.float().mean() + 0.5)
        rad.append(max(xs.max() - xs.min(), ys.max() - ys.min()).float() / 2 + 0.5)
        fg = palette[lab["colour"][i]][:, None, None]
        bg = palette[lab["background"][i]][:, None, None]
        images.append(torch.where(m, fg, bg))
    lab.update(cx=torch.stack(cx), cy=torch.stack(cy), radius=torch.stack(rad))
    caps = [caption(int(s), int(c), int(b), int(t))
            for s, c, b, t in zip(lab["shape"], lab["colour"], lab["background"], lab["template"])]
    return Batch(torch.stack(images), caps, **lab)


def concat(*batches: Batch) -> Batch:
    """One batch made of several (images, captions and labels in order)."""
    return Batch(*(sum((list(b[i]) for b in batches), []) if i == 1 else torch.cat([b[i] for b in batches])
                   for i in range(len(Batch._fields))))
