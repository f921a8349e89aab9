"""`Settings`: the options of one run, made from the declarations in options.py, and how a run's
settings are resolved (given > derived > preset > built-in default) and checked.

A `Settings` holds what a caller gave (`None`: not given); `resolve` returns a copy with every
value filled and checked, and remembers which ones were given.  Nothing here imports torch."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .errors import UserError
from .files import sha256_of
from .models.table import load_table, resolve_preset, suggest
from .options import BY_NAME, SETTINGS, Option, moving
from .values import plain, range_text, within

_FIELDS = [(o.name, Any, dataclasses.field(default=None)) for o in SETTINGS]


def _replace(self, **changes):
    out = dataclasses.replace(self, **changes)
    if getattr(self, "given", None) is not None:  # still resolved; the changes count as given
        out.given = self.given | frozenset(changes)
    return out


def _moving(self) -> bool:
    return moving(lambda name: getattr(self, name))


Settings = dataclasses.make_dataclass(
    "Settings", _FIELDS, namespace={
        "__doc__": "Every knob of a run (see options.py). `None` means not given: resolve() fills it.",
        "replace": _replace, "moving": property(_moving)})
Settings.__module__ = __name__


def given_names(s) -> frozenset:
    """The options a caller set (for a resolved Settings: those that were set before resolving)."""
    if getattr(s, "given", None) is not None:
        return s.given
    return frozenset(f.name for f in dataclasses.fields(s) if not unset(getattr(s, f.name)))


def unset(value) -> bool:
    """None, False and an empty list mean an option was not given (0 and '' were)."""
    return value is None or value is False or (isinstance(value, (list, tuple)) and not value)


def resolve(s, table: dict | None = None):
    """Fill every option not given: derived from other options, else the preset's value, else the
    built-in default; then check every value and the combinations.  A resolved Settings is returned
    as it is."""
    if getattr(s, "given", None) is not None:
        return s
    given = given_names(s)
    for name in given:
        check_value(BY_NAME[name], getattr(s, name))
    table = table or load_table()
    model = s.model or BY_NAME["model"].default
    preset, quality = resolve_preset(model, table), _quality(s.quality or BY_NAME["quality"].default, table)
    values: dict[str, Any] = {name: _given_value(getattr(s, name)) for name in given}

    def get(name: str):
        if name not in values:
            values[name] = _default(BY_NAME[name], get, preset, quality, model)
        return values[name]

    out = Settings(**{o.name: get(o.name) for o in SETTINGS})
    for o in SETTINGS:
        if o.name not in given and getattr(out, o.name) is not None:
            try:
                check_value(o, getattr(out, o.name))  # a preset's or a derived value is checked like a user's
            except UserError as e:
                raise UserError(f"{e.problem}, as the other options or the preset set it", e.fix) from None
    check_combinations(out, given)
    out.given = given
    return out


def _given_value(value):
    return list(value) if isinstance(value, tuple) else value


def _quality(name: str, table: dict) -> dict:
    levels = table.get("quality", {})
    if name not in levels:
        raise UserError(f"unknown quality {name!r}", f"{suggest(name, levels)}choose from {', '.join(levels)}")
    return levels[name]


def _default(o: Option, get, preset: dict, quality: dict, model: str):
    """An option's value when it was not given: derived from other options, else the preset's or the
    built-in default scaled by the quality level, else computed from other options."""
    if o.derive is not None:
        value = o.derive(get)
        if value is not None:
            return value
    if o.name == "clip":
        return list(quality.get("clip", {}).get(model, preset["clip"]))
    if o.name == "vqgan":
        return preset["vqgan"]
    if o.preset and o.name in preset.get("settings", {}):
        return _scaled(o, preset["settings"][o.name], quality)
    if o.fallback is not None:
        return o.fallback(get)
    value = list(o.default) if isinstance(o.default, (list, tuple)) else o.default
    return _scaled(o, value, quality)


def _scaled(o: Option, value, quality: dict):
    factor = quality.get("scale", {}).get(o.name)
    if factor is None or value is None:
        return value
    return max(1, round(value * factor)) if o.type is int else value * factor


def _typed(o: Option, value):
    """The value as the option's type, or a UserError."""
    kind = {int: "a whole number", float: "a number", str: "text", bool: "true or false", list: "a list"}[o.type]
    bad = UserError(f"{o.flag} must be {kind} (got {value!r})", f"see clipguide --help for {o.flag}")
    if o.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif o.type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
    elif o.type is list:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise bad
    elif o.type is bool:
        if not isinstance(value, bool):
            raise bad
    elif not isinstance(value, str):
        raise bad
    return value


def check_value(o: Option, value) -> None:
    """The declared type, range and choices of one option's value (None: unset, always fine)."""
    if value is None:
        return
    _typed(o, value)
    if o.choices is not None and value not in o.choices:
        from .models.table import suggest

        raise UserError(f"unknown {o.flag.lstrip('-')} {value!r}",
                        f"{suggest(value, o.choices)}choose from {', '.join(o.choices)}")
    if o.type in (int, float) and not within(value, o):
        raise UserError(f"{o.flag} must be {range_text(o)} (got {value})", f"e.g. {o.flag} {_example(o)}")


def checked(values: dict, source: str) -> dict:
    """`values` (option name -> value) read from a file (`source`: e.g. "--from pic.png"), each checked
    like a typed option's; a field no option has, or a bad value, is refused naming the file and field."""
    for name, value in values.items():
        if name not in BY_NAME or BY_NAME[name].action:
            raise UserError(f"{source}: unknown field {name!r}", "give a file clipguide wrote, unedited")
        try:
            check_value(BY_NAME[name], value)
        except UserError as e:
            raise UserError(f"{source}: field {name!r}: {e.problem}", "give a file clipguide wrote, unedited") from None
    return values


def _example(o: Option) -> str:
    if o.default is not None and not isinstance(o.default, bool):
        return plain(o.default)
    return plain(o.low if o.low is not None else (o.above or 0) + 1)


def check_combinations(s, given: frozenset) -> None:
    """What no single option's range can say: options that exclude or need each other."""
    one_start = s.init_image or s.moving or s.restyle_video
    if s.candidates > 1 and one_start:
        raise UserError("--candidates tries several random starts; an init image, a zoom video or a restyled "
                        "video has one start", "drop --candidates (or the init image / motion options)")
    if s.moving and not s.save_every:
        raise UserError("--zoom/--pan-x/--pan-y/--rotate move the picture every --save-every steps",
                        "give --save-every N (N > 0)")
    if (s.video or s.frames_dir) and not s.save_every and "save_every" in given:
        raise UserError("--video and --frames-dir need progress frames, but --save-every is 0",
                        "give --save-every N (N > 0), or drop it (10 by default)")
    if "steps" in given and s.video_length is not None:
        raise UserError("--video-length sets --steps; give one of them", "drop --steps or --video-length")
    if s.batch and s.prompt:
        raise UserError("give either a PROMPT or --batch FILE, not both", "drop one of them")
    get = lambda name: getattr(s, name)  # noqa: E731
    for o in SETTINGS:
        limit = o.most[0](get) if o.most is not None and getattr(s, o.name) is not None else None
        if limit is not None and getattr(s, o.name) > limit:
            raise UserError(f"{o.flag} {getattr(s, o.name)} is too many here: {o.most[1]}",
                            f"use {o.flag} {max(limit, 1)} or fewer, or a lower --seed")


def check_needs(s, given) -> None:
    """An option given where it would change nothing (each option's `needs`) is refused, never ignored.
    A given value equal to the built-in default changes nothing either way and passes.  For runs whose
    jobs come from the settings (the command line, `generate`): a caller of `Session` may give its
    jobs their own frames and videos."""
    get = lambda name: getattr(s, name)  # noqa: E731
    for name in sorted(given, key=list(BY_NAME).index):
        o = BY_NAME[name]
        if o.needs is not None and getattr(s, name) != o.default and not o.needs[0](get):
            flag = "/".join((*o.flags, o.flag))  # -o/--output: as the user may have typed it
            raise UserError(f"{flag} has no effect in this run: it needs {o.needs[1]}", f"drop {flag}")


def recipe_fields(s) -> dict:
    """The options a PNG's recipe records, as this run resolved them."""
    return {o.name: getattr(s, o.name) for o in SETTINGS if o.recipe}


def from_recipe(recipe: dict, source: str) -> dict:
    """The options that drew a picture, from its PNG recipe: every recorded option, and the VQGAN and
    CLIPs it names (for --from), each checked like a typed option's (`source`, e.g. "--from pic.png",
    names the file in a refusal).  Its input pictures are named by absolute path (since issue 35)."""
    bad = (lambda field: UserError(f"{source}: field {field!r} of its recipe is not what clipguide writes",
                                   "give a PNG clipguide made, unedited"))
    values = {o.name: recipe[o.name] for o in SETTINGS if o.recipe and recipe.get(o.name) is not None}
    vqgan, clip = recipe.get("vqgan") or {}, recipe.get("clip") or []
    if not isinstance(vqgan, dict):
        raise bad("vqgan")
    if not (isinstance(clip, list) and all(isinstance(c, dict) and "spec" in c for c in clip)):
        raise bad("clip")
    if vqgan.get("spec") or vqgan.get("name"):
        values["vqgan"] = vqgan.get("spec") or vqgan["name"]
    if vqgan.get("config"):
        values["vqgan_config"] = vqgan["config"]
    if clip:
        values["clip"] = [c["spec"] for c in clip]
    if not isinstance(recipe.get("batch", 1), int):
        raise bad("batch")
    return checked(values, source)


def check_inputs(recipe: dict, values: dict, png) -> None:
    """--from: each input picture of the recipe that the new run reads (`values`: its options) must still
    hold what the recipe's sha256 says it held, or the picture would come out different."""
    sums = recipe.get("input_sha256")
    used = {values.get("init_image"), *(spec.rpartition(":")[0] for spec in values.get("image_prompts") or [])}
    for path, digest in sums.items() if isinstance(sums, dict) else ():
        if path in used and Path(path).is_file() and sha256_of(path) != digest:
            raise UserError(f"--from {png}: {path} is not the picture it was drawn from (its sha256 differs)",
                            "give --init-image or --image-prompt with the picture to use")
