"""Parse once: a run's settings and text inputs turned into one checked description, and the names
of every file a run writes.

`make_plan(settings)` resolves the options (settings.py), then parses each text input exactly once
-- the prompt and its story, --negative, --contrast, --augments, the image prompts, --batch-size,
--shard, --device -- and checks the files a run reads.  `Plan.job(...)` makes a `Job` (one image:
its parsed stages, seed and output paths).  Nothing downstream parses these again.  No torch here:
the command line answers bad input before loading anything.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .files import check_folder, check_writable, sweep_temps
from .guide.augments import parse_augments
from .guide.palette import Palette, parse_palette
from .options import BY_NAME
from .prompts import Contrast, Prompt, parse_contrast, parse_negative, parse_story, slug, with_extras
from .settings import resolve
from .values import count_or_auto, number, numbers, part_of, split

DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class Job:
    """One image to make: its prompt as given, the stages it is guided by, seed and output paths."""

    prompt: str
    stages: tuple[tuple[Prompt, ...], ...]
    seed: int
    output: Path
    frames_dir: Path | None = None
    video: Path | None = None


@dataclass(frozen=True)
class Shard:
    rank: int
    world: int
    local_rank: int = 0
    torchrun: bool = False


@dataclass(frozen=True)
class Plan:
    """A resolved, checked run: settings plus every text input parsed."""

    settings: object  # a resolved settings.Settings
    augments: tuple[str, ...]
    negative: tuple[Prompt, ...] = ()
    contrast: tuple[Contrast, ...] = ()
    image_prompts: tuple[tuple[Path, float], ...] = ()
    noise_prompts: tuple[tuple[int, float], ...] = ()  # (seed, weight)
    palette: Palette = Palette()  # colours, weight, and whether each prompt adds the colours it names
    batch_size: int = 1  # 0: as many as fit (auto)
    shard: Shard | None = None
    stages: tuple = field(default=(), compare=False)  # the prompt's parsed story, if a prompt was given

    def job(self, text: str, seed: int, output: Path, frames_dir: Path | None = None,
            video: Path | None = None, stages=None) -> Job:
        """A Job for `text` (parsed here unless its parsed `stages` are given), with the run's contrast
        rules and negative prompts added to every stage.  A job always has at least one stage: no
        stages given means `text` is parsed, and an empty or missing text is refused there."""
        story = stages or parse_story(text)
        full = with_extras([list(st) for st in story], list(self.contrast), list(self.negative))
        return Job(text, tuple(tuple(st) for st in full), seed, Path(output), frames_dir, video)

    def single_jobs(self, seed: int) -> list[Job]:
        """The images of a single-prompt run: --n-images seeds, named from -o or the prompt."""
        s = self.settings
        if s.prompt is None:
            raise UserError("this plan has no prompt, so it has no single picture to draw",
                            "give Settings(prompt=...), or make jobs with plan.job(text, seed, output)")
        n = s.n_images
        jobs = []
        for k in range(n):
            out = default_output(s, seed + k, k)
            frames = Path(s.frames_dir) / (out.stem if n > 1 else "") if s.frames_dir else None
            video = numbered(Path(s.video), k, n) if s.video else None
            jobs.append(self.job(s.prompt, seed + k, out, frames, video, stages=self.stages))
        return jobs


def make_plan(settings) -> Plan:
    """Resolve and check `settings`, parse its text inputs once, check the files it reads."""
    s = resolve(settings)
    if not DEVICE.match(s.device):
        raise UserError(f"unknown device {s.device!r}", "use auto, cpu, cuda, cuda:N or mps")
    for path, what, flag in [(s.init_image, "init image", "--init-image"),
                             (s.restyle_video, "video", "--restyle-video"), (s.batch, "batch file", "--batch")]:
        if path is not None and not Path(path).is_file():
            raise UserError(f"{what} not found: {path}", f"check the path given to {flag}")
    if s.output is not None and Path(s.output).suffix.lower() != ".png":
        raise UserError(f"-o {s.output}: the picture is a PNG, so its name must end in .png", "e.g. -o picture.png")
    check_folder(s.output_dir, "--output-dir")
    if s.frames_dir is not None:
        check_folder(s.frames_dir, "--frames-dir")
    _check_modes(s)
    return Plan(s, parse_augments(s.augments), tuple(parse_negative(s.negative)),
                tuple(parse_contrast(s.contrast)), tuple(image_prompt(p) for p in s.image_prompts or ()),
                tuple(noise_prompt(p) for p in s.noise_prompts or ()), parse_palette(s.palette),
                parse_batch_size(s.batch_size), parse_shard(s.shard) if s.shard else None,
                tuple(parse_story(s.prompt)) if s.prompt is not None else ())


def _check_modes(s) -> None:
    """Kinds of run that exclude each other."""
    if s.init_noise and s.init_image:
        raise UserError("--init-noise and --init-image are two different starts", "give one of them")
    if s.preview is not None:
        clash = [flag for flag, on in [("--batch", s.batch), ("--restyle-video", s.restyle_video),
                                       ("--n-images", s.n_images > 1), ("--video", s.video),
                                       ("--frames-dir", s.frames_dir), ("zoom/pan/rotate", s.moving)] if on]
        if clash:
            raise UserError(f"--preview tries seeds of one still picture; it does not go with {clash[0]}",
                            f"drop {clash[0]} (or --preview)")
    if s.fit and (s.batch or s.restyle_video):
        raise UserError("--fit shrinks one run's canvas; a batch or a restyled video keeps its size",
                        "drop --fit and give --width/--height")


def new_seed() -> int:
    """A random seed for a run not given one (recorded in its PNG)."""
    return int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF


def noise_prompt(spec: str) -> tuple[int, float]:
    """'42:0.5' -> (42, 0.5); '42' -> (42, 1.0): a seed in --seed's range, a weight in the declared one."""
    fix = "write SEED or SEED:WEIGHT, e.g. --noise-prompt 42:0.5"
    seed, weight = numbers(spec, BY_NAME["noise_prompts"].parts, f"--noise-prompt {spec!r}", fix)
    return number(seed, BY_NAME["seed"], f"--noise-prompt {spec!r}: seed", fix), (weight or [1.0])[0]


def image_prompt(spec: str) -> tuple[Path, float]:
    """'pic.png:0.5' -> (pic.png, 0.5); 'pic.png' -> (pic.png, 1.0) (a file named with a colon is
    taken whole); the picture must exist and the weight be in the declared range."""
    fix = "give PATH or PATH:WEIGHT with an existing picture, e.g. --image-prompt style.png:0.5"
    if Path(spec).is_file():
        return Path(spec), 1.0
    path, weight = split(spec, 1)
    if weight and Path(path).is_file():
        return Path(path), numbers(spec, BY_NAME["image_prompts"].parts, f"image prompt {spec!r}", fix)[1][0]
    raise UserError(f"image prompt not found: {path}", fix)


def parse_batch_size(spec: str) -> int:
    """'auto' -> 0; a whole number in the declared range -> itself."""
    return count_or_auto(spec, BY_NAME["batch_size"].parts[0], "--batch-size")


def parse_shard(spec: str) -> Shard:
    """'K/N' (0 <= K < N) -> Shard."""
    return Shard(*part_of(spec, BY_NAME["shard"].parts, "--shard"))


def shard_from_env(env=os.environ) -> Shard | None:
    """The shard torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK, if any."""
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    return Shard(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), True)


# -- the names of what a run writes -------------------------------------------------------------
def numbered(path: Path, k: int, n: int) -> Path:
    """`path` for image k of n: itself when n == 1, else with -k before the suffix."""
    return path if n == 1 else path.with_name(f"{path.stem}-{k}{path.suffix}")


def default_output(s, seed: int, k: int = 0) -> Path:
    """-o (numbered for --n-images), else <output-dir>/<prompt>-<seed>.png."""
    if s.output:
        return numbered(Path(s.output), k, s.n_images)
    return Path(s.output_dir) / f"{slug(s.prompt or '')}-{seed}.png"


def batch_output(out_dir: str | Path, number: int, text: str, seed: int) -> Path:
    return Path(out_dir) / f"{number:04d}-{slug(text, 50)}-{seed}.png"


def restyle_output(s) -> Path:
    return Path(s.video or Path(s.output_dir) / f"{Path(s.restyle_video).stem}-{slug(s.prompt, 40)}.mp4")


def state_path_for(output: Path) -> Path:
    return output.with_name(output.stem + ".state.pt")


def frame_path(folder: str | Path, step: int) -> Path:
    return Path(folder) / f"{step:05d}.png"


def frames_there(folder: str | Path, steps: range) -> list[Path]:
    """What stands in `folder` already under the names of the frames of `steps`, in step order: one look
    at the folder, however many steps (a run of a million steps checks as fast as one of ten)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    with os.scandir(folder) as entries:
        for e in entries:
            stem = e.name[:-4] if e.name.endswith(".png") else ""
            step = int(stem) if stem.isascii() and stem.isdigit() else -1
            if step in steps and frame_path(folder, step).name == e.name:
                found.append(step)
    return [frame_path(folder, step) for step in sorted(found)]


VIDEO_FORMATS = (".mp4", ".gif")


def check_video_name(path: str | Path) -> None:
    if Path(path).suffix.lower() not in VIDEO_FORMATS:
        raise UserError(f"cannot write video {path}: unknown format", "use a .mp4 or .gif file name")


def may_replace(path: Path, overwrite: bool, own: frozenset[Path] = frozenset()) -> bool:
    """Whether a run may replace a regular file at `path`: with --overwrite, or when it is one of `own`
    (what a resumed run left there itself: outputs/state.replaceable)."""
    return overwrite or Path(path).resolve() in own


def check_outputs(jobs: list[Job], settings, overwrite: bool, start: int = 0,
                  own: frozenset[Path] = frozenset()) -> None:
    """Every file a run of `jobs` will write, checked before the first step: absent, or (with
    `overwrite`, or one of a resume's `own` files) a regular file -- images, state files, videos and
    frames alike.  A resume from step `start` writes the frames from there on."""
    s = settings
    for j in jobs:
        check_writable(j.output, may_replace(j.output, overwrite, own))
        check_writable(state_path_for(j.output), may_replace(state_path_for(j.output), overwrite, own), "state file")
        if j.video is not None:
            check_video_name(j.video)
            check_writable(j.video, may_replace(j.video, overwrite, own), "video")
        if j.frames_dir is not None:
            check_folder(j.frames_dir, "--frames-dir")
            for path in frames_there(j.frames_dir, range(start, s.steps, s.save_every) if s.save_every else ()):
                check_writable(path, overwrite, "frame")
        for folder in {j.output.parent, j.frames_dir}:
            if folder is not None and folder.is_dir():
                sweep_temps(folder)
