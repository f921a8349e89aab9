"""One grammar for the values that options take as text, and one check of every number's range.

- ``TEXT[:N[:N]]``: a text and up to two numbers after it -- a prompt's weight and stop, --negative's
  strength and stop, --contrast's strength, --palette's weights, an image prompt's weight, a noise
  prompt's weight (its text is its seed).  ``\\:``, ``\\|`` and ``\\^`` stand for a literal character
  (`protect` before splitting, `restore` after); when a value has more unescaped colons than it may
  have numbers, the first ones belong to the text (``a:b:1:2`` is the text ``a:b``, then 1 and 2).
- ``none`` (any case), or nothing: an option that a preset may set, turned off (`turned_off`).
- ``K/N``: part K of N, 0 <= K < N (`part_of`).
- ``N|auto``: a whole number, or ``auto`` (0) (`count_or_auto`).

Every number is checked against the range declared in options.py -- an `Option`'s own, or one of the
`Part`s of its value -- by `within`, and described by `range_text`.  No torch here.
"""

from __future__ import annotations

import math

from .errors import UserError

_ESC = {"\\:": "\x00", "\\|": "\x01", "\\^": "\x02"}


def protect(s: str) -> str:
    """`s` with its escaped separators hidden, so that splitting at ':', '|' and '^' passes them by."""
    for k, v in _ESC.items():
        s = s.replace(k, v)
    return s


def restore(s: str) -> str:
    """A protected text with its escaped separators as the literal characters they stand for."""
    for k, v in _ESC.items():
        s = s.replace(v, k[1])
    return s


def turned_off(spec: str | None) -> bool:
    """An option that a preset may set and a user may turn off: None, empty or ``none``."""
    return spec is None or spec.strip().lower() in ("", "none")


def split(spec: str, most: int) -> tuple[str, list[str]]:
    """A (protected) ``TEXT[:N...]`` -> (TEXT, the texts of at most `most` numbers)."""
    pieces = spec.split(":")
    keep = max(1, len(pieces) - most)
    return ":".join(pieces[:keep]), pieces[keep:]


def within(value, bound) -> bool:
    """Whether a number is finite and inside `bound`'s declared range (its low, above, high, below)."""
    return math.isfinite(value) and not (
        (bound.low is not None and value < bound.low) or (bound.high is not None and value > bound.high)
        or (bound.above is not None and value <= bound.above) or (bound.below is not None and value >= bound.below))


def range_text(bound) -> str:
    """'a whole number >= 1 and <= 1000000'-style words for `bound`'s range."""
    kind = "a whole number" if bound.type is int else "a number"
    parts = [f">= {plain(bound.low)}" if bound.low is not None else None,
             f"> {plain(bound.above)}" if bound.above is not None else None,
             f"<= {plain(bound.high)}" if bound.high is not None else None,
             f"< {plain(bound.below)}" if bound.below is not None else None]
    parts = [p for p in parts if p]
    return f"{kind} {' and '.join(parts)}" if parts else f"a finite {kind[2:]}"


def plain(x) -> str:
    """A number as the docs and messages write it: 1e+06, 0.5, 25 (not 25.0)."""
    return f"{x:g}" if isinstance(x, float) else str(x)


def number(text: str, bound, label: str, fix: str):
    """`text` as a number of `bound`'s type (int or float) inside its range; else a UserError that
    starts with `label` (e.g. "prompt 'a dog:x': weight")."""
    kind = int if bound.type is int else float
    try:
        value = kind(text.strip())
    except ValueError:
        words = "a whole number" if kind is int else "a number"
        raise UserError(f"{label} {text.strip()!r} is not {words}", fix) from None
    if not within(value, bound):
        raise UserError(f"{label} must be {range_text(bound)} (got {plain(value)})", fix)
    return value


def numbers(spec: str, parts: tuple, label: str, fix: str) -> tuple[str, list]:
    """A (protected) ``TEXT[:N...]`` whose numbers are `parts` (each with its name and range) ->
    (TEXT, the numbers given, each checked)."""
    text, given = split(spec, len(parts))
    return text, [number(t, p, f"{label}: {p.name}", fix) for t, p in zip(given, parts)]


def count_or_auto(spec: str, bound, flag: str) -> int:
    """``N|auto``: 'auto' -> 0; else a whole number inside `bound`'s range."""
    if spec.strip().lower() == "auto":
        return 0
    return number(spec, bound, f"{flag} {spec!r}:", f"use e.g. {flag} 4, or auto")


def part_of(spec: str, parts: tuple, flag: str) -> tuple[int, int]:
    """``K/N`` -> (K, N), each inside its part's range and K < N."""
    fix = f"write e.g. {flag} 0/4 (K from 0 to N-1)"
    k, slash, n = spec.partition("/")
    if not slash:
        raise UserError(f"{flag} {spec!r} is not K/N", fix)
    k, n = (number(t, p, f"{flag} {spec!r}: {p.name}", fix) for t, p in zip((k, n), parts))
    if not k < n:
        raise UserError(f"{flag} {spec}: need 0 <= K < N", fix)
    return k, n
