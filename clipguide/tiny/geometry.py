"""Measures of a region of a small picture (a bool mask), for judging the shapes the tiny model draws.

Pure numpy, no image library: the pictures are 64x64, so plain loops over pixels are fast enough.

- `pieces`: the 8-connected pieces of a mask, largest first.
- `filled`: a mask with its holes (pieces of the rest that do not reach the picture's edge) filled.
- `thick`: the pixels of a mask that lie in a 2x2 block of it (a line one pixel wide has none).
- `convex_hull`: the hull of a set of points (Andrew's monotone chain), counter-clockwise.
- `measures`: of one piece: its bounding box's aspect and the share of it the piece fills, its
  solidity (area over the area of its convex hull), its roundness (overlap with the disc of the
  same area at its centroid) and its corner share (how much of its hull the largest triangle
  with corners on the hull covers: about 1 for a triangle, 1/2 for a square, 0.41 for a disc).
"""

from __future__ import annotations

import math

import numpy as np

_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def pieces(mask: np.ndarray) -> list[np.ndarray]:
    """The 8-connected pieces of a bool [H, W] mask, as bool masks, largest first."""
    seen = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    found = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        piece = np.zeros_like(seen)
        stack = [(y0, x0)]
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            piece[y, x] = True
            for dy, dx in _NEIGHBOURS:
                v, u = y + dy, x + dx
                if 0 <= v < h and 0 <= u < w and mask[v, u] and not seen[v, u]:
                    seen[v, u] = True
                    stack.append((v, u))
        found.append(piece)
    return sorted(found, key=lambda p: -int(p.sum()))


def filled(mask: np.ndarray) -> np.ndarray:
    """The mask with its holes filled: every piece of the rest that touches no side of the picture."""
    out = mask.copy()
    for piece in pieces(~mask):
        if not (piece[0].any() or piece[-1].any() or piece[:, 0].any() or piece[:, -1].any()):
            out |= piece
    return out


def thick(mask: np.ndarray) -> np.ndarray:
    """The pixels of the mask that belong to some 2x2 block of it."""
    block = mask[:-1, :-1] & mask[1:, :-1] & mask[:-1, 1:] & mask[1:, 1:]
    out = np.zeros_like(mask)
    for dy in (0, 1):
        for dx in (0, 1):
            out[dy:dy + block.shape[0], dx:dx + block.shape[1]] |= block
    return out


def convex_hull(points: np.ndarray) -> np.ndarray:
    """[K, 2] hull vertices of [N, 2] points, counter-clockwise (y up), without repeated points."""
    pts = sorted(set(map(tuple, np.asarray(points, dtype=float).tolist())))
    if len(pts) < 3:
        return np.array(pts, dtype=float).reshape(-1, 2)

    def turn(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def chain(seq):
        out = []
        for p in seq:
            while len(out) >= 2 and turn(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out[:-1]

    return np.array(chain(pts) + chain(pts[::-1]), dtype=float)


def polygon_area(vertices: np.ndarray) -> float:
    """Area of a simple polygon given by its [K, 2] vertices in order (shoelace formula)."""
    if len(vertices) < 3:
        return 0.0
    x, y = vertices[:, 0], vertices[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def largest_triangle(vertices: np.ndarray) -> float:
    """Area of the largest triangle whose corners are among `vertices` (all triples, vectorised)."""
    if len(vertices) < 3:
        return 0.0
    a, b, c = vertices[:, None, None], vertices[None, :, None], vertices[None, None, :]
    cross = (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])
    return float(np.abs(cross).max() / 2)


def pixel_corners(mask: np.ndarray) -> np.ndarray:
    """[4N, 2] corner points (x, y) of the unit squares of a mask's pixels: the region as drawn."""
    ys, xs = np.nonzero(mask)
    corners = [(xs + dx, ys + dy) for dx in (0, 1) for dy in (0, 1)]
    return np.concatenate([np.stack(c, 1) for c in corners]).astype(float)


def measures(piece: np.ndarray) -> dict[str, float]:
    """Shape measures of one piece (a bool [H, W] mask with at least one pixel); see the module doc."""
    ys, xs = np.nonzero(piece)
    area = float(len(xs))
    width, height = float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)
    hull = convex_hull(pixel_corners(piece))
    hull_area = polygon_area(hull)
    radius = math.sqrt(area / math.pi)
    yy, xx = np.mgrid[:piece.shape[0], :piece.shape[1]] + 0.5
    disc = (xx - xs.mean() - 0.5) ** 2 + (yy - ys.mean() - 0.5) ** 2 <= radius ** 2
    return {"area": area, "aspect": width / height, "fill": area / (width * height),
            "solidity": area / max(hull_area, 1.0),
            "roundness": float((disc & piece).sum() / max(1, (disc | piece).sum())),
            "corners3": largest_triangle(hull) / max(hull_area, 1.0)}
