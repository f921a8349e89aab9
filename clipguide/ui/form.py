"""The web UI's form, made from the option declarations (options.py): no second list of options.

Every option declared with `ui=True` becomes a field: its label is its flag, its help and default
(with each preset's value) are the field's note, the presets are the model's choices; numbers are typed
as text (blank: the default).  An option whose value names a file (metavar PATH...) becomes an upload: the
browser sends the picture, never a path.  `given` turns what a page sent into `Settings` keywords
(a blank field is an option not given); `from_recipe` turns a PNG's recipe back into field values
("use these settings"); `as_labels` writes a message's flags as the form's labels.  No Gradio here:
page.py lays the fields out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..options import BY_NAME, OPTIONS, Option, default_text
from ..values import number

TEXT, NUMBER, CHOICE, PICTURE, PICTURES = "text", "number", "choice", "picture", "pictures"


@dataclass(frozen=True)
class Field:
    option: Option
    kind: str
    label: str
    info: str  # the declaration's help
    default: str  # the default as the README says it, with each preset's value
    choices: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.option.name

    @property
    def integer(self) -> bool:
        return self.option.type is int


def is_upload(o: Option) -> bool:
    """An option whose value names a file the run reads: the form takes an upload instead."""
    return (o.metavar or "").startswith("PATH")


def fields(presets: dict) -> list[Field]:
    """The form's fields, in the declarations' order."""
    out = []
    for o in OPTIONS:
        if not o.ui:
            continue
        label = o.name if o.positional else o.flag.lstrip("-")
        if is_upload(o):
            kind = PICTURES if o.type is list else PICTURE
        elif o.name == "model":
            kind = CHOICE
        elif o.type in (int, float):
            kind = NUMBER
        else:
            kind = CHOICE if o.choices else TEXT
        choices = tuple(presets) if o.name == "model" else (o.choices or ())
        out.append(Field(o, kind, label, o.help, default_text(o, presets), choices))
    return out


def given(form: list[Field], values: dict[str, Any]) -> dict[str, Any]:
    """`Settings` keywords from the values of the non-upload fields (a blank field: not given).
    Numbers are checked for their type here; ranges and everything else by `make_plan`."""
    out = {}
    for f in form:
        if f.kind in (PICTURE, PICTURES) or f.name not in values:
            continue
        value = values[f.name]
        if isinstance(value, str):
            value = value.strip()
        if value is None or value == "":
            continue
        if f.kind == NUMBER:
            value = _number(f, value)
        out[f.name] = value
    return out


def _number(f: Field, value) -> int | float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{f.label} must be a number (got {value!r})", f"type a number into {f.label}") from None
    if not f.integer:
        return number
    if not number.is_integer():
        raise UserError(f"{f.label} must be a whole number (got {value})", f"type a whole number into {f.label}")
    return int(number)


def from_recipe(form: list[Field], recipe: dict) -> dict[str, Any]:
    """The field values that remake a picture from its recipe (uploads are not in it: the pictures
    a run read are not offered back to the browser)."""
    return {f.name: str(recipe[f.name]) if f.kind == NUMBER else recipe[f.name] for f in form
            if f.kind not in (PICTURE, PICTURES) and f.name in recipe and recipe[f.name] is not None}


def image_prompt_specs(paths: list, weights: str) -> list[str]:
    """PATH:W specs of the uploaded image prompts; `weights` is comma-separated, one per picture
    (missing ones are 1)."""
    parts = [w.strip() for w in (weights or "").split(",") if w.strip()]
    if len(parts) > len(paths):
        raise UserError(f"{len(parts)} image prompt weights for {len(paths)} pictures",
                        "give one weight per uploaded picture, comma-separated")
    specs = []
    for k, path in enumerate(paths):
        weight = parts[k] if k < len(parts) else "1"
        number(weight, BY_NAME["image_prompts"].parts[0], "image prompt weight", "e.g. 0.5, 1")
        specs.append(f"{path}:{weight}")
    return specs


def as_labels(form: list[Field], text: str) -> str:
    """`text` with the flags of the form's fields written as their labels ("--steps" -> "steps"), as
    the page names them; other flags stay."""
    labels = {f.option.flag: f.label for f in form if not f.option.positional}
    return re.sub(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", lambda m: labels.get(m.group(0), m.group(0)), text)
