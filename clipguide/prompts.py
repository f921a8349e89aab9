"""Prompt syntax, story schedules and batch files.

A prompt is ``text[:weight[:stop]]``; several are joined with ``|`` into one stage; stages of a
story are joined with ``^`` and switched every ``change_every`` steps (optionally blended over
``blend_steps``).  A negative weight pushes the image away from the text; ``stop`` ends the pull
once the distance to that text drops below it.  `parse_negative` reads ``--negative``: prompts
that push away in every stage; `parse_contrast` reads ``--contrast``: rules that push each prompt
away from itself with some words swapped (`contrast_prompts`).  Write ``\\:``, ``\\|`` or ``\\^`` for a literal
character.  The grammar of each value, and the ranges of its numbers, are values.py's and options.py's.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .options import BY_NAME
from .values import numbers, protect, restore, split, turned_off


@dataclass(frozen=True)
class Prompt:
    text: str
    weight: float = 1.0
    stop: float = -math.inf

    def __str__(self) -> str:
        out = self.text.replace(":", "\\:").replace("|", "\\|").replace("^", "\\^")
        if self.weight != 1.0 or self.stop != -math.inf:
            out += f":{self.weight:g}"
        if self.stop != -math.inf:
            out += f":{self.stop:g}"
        return out


FIX = "write text:weight[:stop] with numbers, e.g. 'a dog:1.5', or escape a colon as \\:"


def _parse_one(spec: str, option: str = "prompt") -> Prompt:
    """A protected ``text[:weight[:stop]]``, its numbers in the ranges `option` declares."""
    o = BY_NAME[option]
    label = f"{'prompt' if o.positional else o.flag} {restore(spec)!r}"
    text = restore(split(spec, len(o.parts))[0]).strip()
    if not text:
        raise UserError(f"empty prompt in {restore(spec)!r}", "give some text, e.g. 'a painting of a dog'")
    _, (weight, stop) = _padded(numbers(spec, o.parts, label, FIX))
    return Prompt(text, weight, stop)


def _padded(parsed: tuple[str, list]) -> tuple[str, list]:
    text, given = parsed
    return text, given + [1.0, -math.inf][len(given):]


def parse_prompt(spec: str) -> Prompt:
    """One ``text[:weight[:stop]]``."""
    return _parse_one(protect(spec))


def parse_stage(spec: str) -> list[Prompt]:
    """``a:1 | b:-0.5`` -> prompts; their weights may not all be zero."""
    return _stage_protected(protect(spec))


def parse_story(spec: str) -> list[list[Prompt]]:
    """``a ^ b ^ c`` -> one list of prompts per stage."""
    if not spec or not spec.strip():
        raise UserError("empty prompt", "give some text, e.g. clipguide \"a painting of a dog\"")
    return [_stage_protected(s) for s in protect(spec).split("^")]


def _stage_protected(spec: str) -> list[Prompt]:
    prompts = [_parse_one(p) for p in spec.split("|")]
    if not any(p.weight for p in prompts):
        raise UserError(f"all prompt weights are zero in {restore(spec).strip()!r}",
                        "give at least one prompt a non-zero weight")
    return prompts


def parse_negative(spec: str | None) -> list[Prompt]:
    """``--negative 'a blob:0.3 | text'`` -> prompts that push every stage away from their text.

    Each ``text[:strength[:stop]]`` becomes a prompt of weight -strength (strength defaults to 1).
    None, empty or ``none`` -> no prompts."""
    if turned_off(spec):
        return []
    protected = protect(spec)
    if "^" in protected:
        raise UserError(f"--negative {spec!r}: it applies to every stage, so it cannot be a story ('^')",
                        "write text[:strength], several joined with '|'")
    prompts = [_parse_one(part, "negative") for part in protected.split("|")]
    return [Prompt(p.text, -p.weight, p.stop) for p in prompts]


@dataclass(frozen=True)
class Contrast:
    """``circle,square=blob:0.3``: a prompt naming any of `words` is also pushed away, with
    `strength` times its weight, from its own text with those words replaced by `replacement`."""

    words: tuple[str, ...]
    replacement: str
    strength: float = 1.0

    def apply(self, text: str) -> str | None:
        """`text` with the words swapped (whole words, any case), or None if it names none of them."""
        pattern = r"\b(?:" + "|".join(re.escape(w) for w in self.words) + r")\b"
        swapped, n = re.subn(pattern, lambda m: self.replacement, text, flags=re.IGNORECASE)
        return swapped if n else None


def parse_contrast(spec: str | None) -> list[Contrast]:
    """``--contrast 'circle,square,triangle=blob:0.3 | red=colourful'`` -> rules; None, '' or 'none' -> []."""
    if turned_off(spec):
        return []
    fix = "write WORD[,WORD...]=REPLACEMENT[:STRENGTH], e.g. --contrast 'circle,square=blob:0.3'"
    rules = []
    for part in protect(spec).split("|"):
        head, strength = numbers(part, BY_NAME["contrast"].parts, f"--contrast {spec!r}", fix)
        words, eq, replacement = restore(head).partition("=")
        words = tuple(w.strip() for w in words.split(",") if w.strip())
        if not eq or not words or not replacement.strip():
            raise UserError(f"--contrast {spec!r}: {restore(part).strip()!r} is not WORDS=REPLACEMENT", fix)
        rules.append(Contrast(words, replacement.strip(), (strength or [1.0])[0]))
    return rules


def contrast_prompts(stage: list[Prompt], rules: list[Contrast]) -> list[Prompt]:
    """The prompts `rules` add to a stage: for each pulling prompt and each rule that matches it,
    its swapped text with weight -strength * weight."""
    out = []
    for p in stage:
        for rule in rules:
            swapped = rule.apply(p.text) if p.weight > 0 and rule.strength else None
            if swapped is not None and swapped != p.text:
                out.append(Prompt(swapped, -rule.strength * p.weight))
    return out


class PromptSchedule:
    """Weights of every prompt of every stage, per step.

    All stages' prompts form one list (`entries`), embedded once; a step's weights are those of
    its stage (others zero), blended linearly from the previous stage over `blend_steps`."""

    def __init__(self, stages: list[list[Prompt]], change_every: int | None = None, blend_steps: int = 0):
        self.stages = stages
        self.entries = [p for stage in stages for p in stage]
        self.change_every = change_every
        self.blend_steps = max(0, blend_steps)
        self._stage_vectors = []
        start = 0
        for stage in stages:
            vec = [0.0] * len(self.entries)
            for j, p in enumerate(stage):
                vec[start + j] = p.weight
            self._stage_vectors.append(vec)
            start += len(stage)

    def stage_at(self, step: int) -> int:
        if len(self.stages) == 1 or not self.change_every:
            return 0
        return min(step // self.change_every, len(self.stages) - 1)

    def weights_at(self, step: int) -> list[float]:
        s = self.stage_at(step)
        vec = self._stage_vectors[s]
        if s == 0 or not self.blend_steps:
            return list(vec)
        t = (step - s * self.change_every + 1) / self.blend_steps
        if t >= 1:
            return list(vec)
        prev = self._stage_vectors[s - 1]
        return [(1 - t) * a + t * b for a, b in zip(prev, vec)]

    @property
    def stops(self) -> list[float]:
        return [p.stop for p in self.entries]


def with_extras(stages: list[list[Prompt]], rules: list[Contrast], negative: list[Prompt]) -> list[list[Prompt]]:
    """Each stage's own prompts, then the prompts its contrast rules add, then the negative prompts."""
    return [stage + contrast_prompts(stage, rules) + list(negative) for stage in stages]


def schedule(stages: list[list[Prompt]], steps: int, change_every: int | None, blend_steps: int) -> PromptSchedule:
    """A story's schedule over a run of `steps`: stages switch every `change_every` steps (default:
    equal shares of the run), blended over `blend_steps`."""
    if not stages:
        raise ValueError("a prompt schedule needs at least one stage (a Job's stages are never empty)")
    every = change_every or max(1, -(-steps // len(stages)))
    return PromptSchedule(stages, every, blend_steps)


@dataclass(frozen=True)
class BatchLine:
    number: int
    text: str
    error: str | None = None
    stages: tuple = ()  # the line's story, parsed


def read_batch(path: str | Path) -> list[BatchLine]:
    """Lines of a prompt file: one prompt per line; blank lines and ``#`` comments skipped.

    A line that does not parse comes back with `error` set (the run reports and skips it)."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first line
    except FileNotFoundError:
        raise UserError(f"batch file not found: {path}", "check the path given to --batch") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read batch file {path} ({type(e).__name__})", "give a UTF-8 text file") from None
    lines = []
    for n, line in enumerate(raw.splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            lines.append(BatchLine(n, text, stages=tuple(parse_story(text))))
        except UserError as e:
            lines.append(BatchLine(n, text, e.line()))
    if not lines:
        raise UserError(f"batch file {path} has no prompts", "write one prompt per line")
    return lines


def slug(text: str, limit: int = 60) -> str:
    """File-name-safe form of a prompt."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:limit].rstrip("-") or "image"
