"""The gallery: the pictures of the output folder, read from the recipes their PNGs carry.

A PNG without a clipguide recipe is not ours and is not shown, nor is a hidden name or a link (the
server hands out what the gallery lists: a link to another file is never listed).  A picture that a
stopped run left (its recipe says `steps_done`) is shown as such, with its state file when there is
one (then it can be resumed).  A video beside a picture with the same name (`x.png`, `x.mp4`) is the
run's video.  The page holds the list it showed: a click sends an index, never a path."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..outputs.pictures import read_recipe
from ..plan import state_path_for

VIDEO_SUFFIXES = (".mp4", ".gif")
FILES = ("init_image", "image_prompts", "input_sha256")  # the recipe's fields that name pictures a run read


@dataclass(frozen=True)
class Picture:
    path: Path
    recipe: dict
    video: Path | None = None
    state: Path | None = None  # the state file of a stopped run's picture

    @property
    def partial(self) -> bool:
        return "steps_done" in self.recipe

    @property
    def caption(self) -> str:
        r = self.recipe
        words = str(r.get("prompt") or "")
        words = words if len(words) <= 40 else words[:39] + "…"
        note = f" · stopped at step {r['steps_done']} of {r.get('steps')}" if self.partial else ""
        return f"{words} · seed {r.get('seed')}{note}"

    def recipe_text(self, name=lambda path: Path(path).name) -> str:
        """The recipe as JSON, each picture the run read (init image, image prompts) named by `name(path)`:
        by default its file name, not the path of the server's copy."""
        recipe = dict(self.recipe)
        for key in FILES:
            value = recipe.get(key)
            if isinstance(value, str):
                recipe[key] = name(value)
            elif isinstance(value, list):
                recipe[key] = [_renamed(v, name) if isinstance(v, str) else v for v in value]
            elif isinstance(value, dict):  # input_sha256: path -> checksum
                recipe[key] = {name(k): v for k, v in value.items()}
        return json.dumps(recipe, indent=1, sort_keys=True)


def _renamed(spec: str, name) -> str:
    """An image prompt's PATH[:W] with its path named by `name`."""
    path, colon, weight = spec.rpartition(":")
    if colon and path and _number(weight):
        return f"{name(path)}:{weight}"
    return name(spec)


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _recipe(path: Path) -> dict | None:
    try:
        recipe = read_recipe(path)
    except Exception:  # not a picture we can read: not ours
        return None
    return recipe if isinstance(recipe, dict) else None


def _listed(path: Path, folder: Path) -> bool:
    """A regular file of `folder` or of a subfolder, with no hidden name and no link on the way."""
    return path.is_file() and not any(p.name.startswith(".") or p.is_symlink() for p in (path, path.parent)
                                      if p != folder)


def scan(folder: str | Path, limit: int = 120) -> list[Picture]:
    """The pictures in `folder` and its subfolders one level down (batch folders), newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in (p for pattern in ("*.png", "*/*.png") for p in folder.glob(pattern)):
        try:  # hidden names are files being written; a file may go while we look
            if _listed(path, folder):
                found.append((path.stat().st_mtime, path))
        except OSError:
            continue
    pictures = []
    for _, path in sorted(found, reverse=True):
        recipe = _recipe(path)
        if recipe is None:
            continue
        video = next((v for v in (path.with_suffix(s) for s in VIDEO_SUFFIXES) if _listed(v, folder)), None)
        state = state_path_for(path)
        pictures.append(Picture(path, recipe, video, state if state.is_file() else None))
        if len(pictures) >= limit:
            break
    return pictures
