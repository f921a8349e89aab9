"""Every option of clipguide, declared once.

Each `Option` holds its name, type, built-in default, help, range or choices, whether it goes into
a picture's recipe, what `--resume` may do with it, and how it is derived from other options.
Everything else comes from this table: the command line's flags and `--help` (cli.py), the resolved
and checked `Settings` (settings.py), the recipe, what a resume may change, the options tables of
docs/options.md and the README (`python -m clipguide.options README.md docs/options.md`) and the web
UI's form.  Presets (`--model`) are data in
models/registry.json and may set any option that is not marked `preset=False`.

Nothing here imports torch: the command line answers `--help` and bad input without loading it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from .guide.augments import AUGMENTS, DEFAULT_AUGMENTS
from .values import plain, protect

# --optimizer NAME -> the class of torch.optim it makes
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "adagrad": "Adagrad", "adamax": "Adamax", "radam": "RAdam",
              "nadam": "NAdam", "rmsprop": "RMSprop", "sgd": "SGD"}
SEED_MAX = 2**32 - 1
STEPS_MAX = 1_000_000  # steps of one run: some days of a large model on a GPU; more is a typo
WEIGHT_MAX = 1e6  # every weight of a loss, either sign: past it float32 losses overflow to inf

# What --resume does with an option given on its command line:
FIXED = "fixed"  # part of what is being drawn: the state's value stands, a different one is refused
FREE = "free"  # how or where to run it: the given value is used


@dataclass(frozen=True)
class Part:
    """One number inside an option's text value (values.py parses them), with its range: the weight
    and stop of `a dog:1.5:0.2`, the K and N of `--shard K/N`."""

    name: str
    type: type = float
    low: float | None = None
    high: float | None = None
    above: float | None = None
    below: float | None = None


WEIGHT = Part("weight", low=-WEIGHT_MAX, high=WEIGHT_MAX)
STOP = Part("stop", low=-WEIGHT_MAX, high=WEIGHT_MAX)
STRENGTH = Part("strength", low=0, high=WEIGHT_MAX)


@dataclass(frozen=True)
class Option:
    name: str  # the Settings field; the flag is --name-with-dashes
    type: type = str  # int, float, str, bool, or list (a repeatable str)
    default: Any = None  # the built-in default (None: unset)
    help: str = ""
    metavar: str | None = None
    flags: tuple[str, ...] = ()  # further spellings, e.g. ("-o",)
    long: str | None = None  # the long flag, when not --name-with-dashes
    low: float | None = None  # smallest value allowed
    above: float | None = None  # values must be greater than this
    high: float | None = None  # largest value allowed
    below: float | None = None  # values must be smaller than this
    choices: tuple[str, ...] | None = None
    recipe: bool = False  # recorded in every PNG's recipe
    on_resume: str = FIXED
    preset: bool = True  # a preset may set it
    derive: Callable[[Callable[[str], Any]], Any] | None = None  # a value from other options (wins over a preset)
    fallback: Callable[[Callable[[str], Any]], Any] | None = None  # the default when no preset sets one
    default_doc: str | None = None  # the default as the README and --help say it, when not a plain value
    positional: bool = False
    action: bool = False  # an action of the command line, not a setting of a run
    ui: bool = False  # on the web UI's main form
    main: bool = False  # in the README's table of the main options (docs/options.md lists every option)
    # (works(get), what it needs): given with works(get) false, the option would change nothing, so it is
    # refused with one line instead of silently ignored
    needs: tuple[Callable[[Callable[[str], Any]], bool], str] | None = None
    parts: tuple[Part, ...] = ()  # the numbers inside a text value, in order, with their ranges
    # (most(get), why): the largest value allowed, given the other options (None: no limit)
    most: tuple[Callable[[Callable[[str], Any]], int | None], str] | None = None

    @property
    def flag(self) -> str:
        return self.long or "--" + self.name.replace("_", "-")


def moving(get) -> bool:
    return (get("zoom"), get("pan_x"), get("pan_y"), get("rotate")) != (1.0, 0.0, 0.0, 0.0)


def _video_steps(get) -> int:
    frames = math.ceil(get("video_length") * get("fps"))
    return max(1, (frames - 1) * get("save_every") + 1)


def _steps(get):
    if get("video_length") is not None:
        return _video_steps(get)
    return 30 if get("restyle_video") else None  # restyle: steps per input frame


def _seeds_left(get):  # N images from --seed: seeds seed ... seed+N-1, each a seed --from accepts
    return None if get("seed") is None else SEED_MAX - get("seed") + 1


SEEDS = (_seeds_left, f"its seeds run from --seed to --seed + N - 1, and a seed is at most {SEED_MAX}")


def _one_start(get):  # init images, motion and restyling have one start: no search of random starts
    return 1 if (get("init_image") or moving(get) or get("restyle_video")) else None


def _writes_frames(get) -> bool:  # progress frames are written (a video, a folder) or the picture moves
    return bool(moving(get) or get("video_length") is not None or get("frames_dir") or get("video"))


def _frame_steps(get):
    return 10 if _writes_frames(get) else None


def _video_out(get) -> bool:  # a video of this run's frames (a restyled video keeps its input's frame rate)
    return bool(get("video") or get("video_length") is not None) and _not_restyle(get)


def _frames(get) -> bool:  # frames of a drawn picture (a restyle writes its own, one per input frame)
    return _writes_frames(get) and _not_restyle(get)


def _not_restyle(get) -> bool:
    return not get("restyle_video")


def _not_batch(get) -> bool:
    return not get("batch")


def _story(get) -> bool:  # a prompt of several stages (a batch file's lines may each be one)
    return bool(get("batch")) or get("prompt") is None or "^" in protect(get("prompt"))


STORY = (_story, "a story, a prompt of stages 'a ^ b'")
STILL = (_not_restyle, "a still picture, not --restyle-video")
ZOOM = (_not_restyle, "a still picture's zoom video, not --restyle-video")
O = Option
OPTIONS: tuple[Option, ...] = (
    O("prompt", help="what to draw (see the prompt syntax); not needed with --batch, --resume, --list-models",
      positional=True, recipe=True, preset=False, ui=True, main=True, parts=(WEIGHT, STOP)),
    O("negative", default="", metavar="TEXT[:S]", recipe=True, ui=True,
      help="push every image away from TEXT with strength S (default 1), in every story stage; '|' joins several; "
           "'none' turns a preset's off", default_doc="none", main=True, parts=(STRENGTH, STOP)),
    O("contrast", default="", metavar="RULES", recipe=True,
      help="push each prompt away from itself with words swapped, WORD[,WORD...]=REPLACEMENT[:S] (S default 1), "
           "'|' joins several; 'none' turns a preset's off", default_doc="none", parts=(STRENGTH,)),
    O("steps", int, 500, f"optimisation steps, at most {STEPS_MAX} (with --restyle-video: per frame, default 30)",
      "N", low=1, high=STEPS_MAX,
      recipe=True, on_resume=FREE, derive=_steps, ui=True, main=True),
    O("width", int, 256, "canvas width; rounded down to a multiple of the VQGAN's factor", "W", low=1, high=16384,
      recipe=True, ui=True, main=True),
    O("height", int, 256, "canvas height; rounded down to a multiple of the VQGAN's factor", "H", low=1,
      high=16384, recipe=True, ui=True, main=True),
    O("seed", int, None, "random seed, recorded in the PNG; the same seed, settings and device give the same image",
      "N", low=0, high=SEED_MAX, recipe=True, preset=False, default_doc="random", ui=True, main=True),
    O("output", str, None, "output PNG", "PATH", flags=("-o",), on_resume=FREE, preset=False,
      default_doc="outputs/<prompt>-<seed>.png",
      needs=(_not_restyle, "a still picture (a restyled video is written to --video)"), main=True),
    O("overwrite", bool, False, "replace existing files (images, frames, videos); without it nothing existing "
      "is ever replaced", on_resume=FREE, preset=False, main=True),
    O("save_every", int, 0, "save a progress frame every N steps (a zoom video moves the picture as often)", "N",
      low=0, high=STEPS_MAX, recipe=True, derive=_frame_steps,
      default_doc="0, or 10 with --video, --frames-dir or motion", ui=True,
      needs=(_frames, "--video, --frames-dir, --video-length or --zoom/--pan-x/--pan-y/--rotate, not "
                      "--restyle-video")),
    O("video", str, None, "render the progress frames to this .mp4 (bundled ffmpeg) or .gif, encoded while the "
      "run goes on", "PATH", preset=False, needs=(_not_batch, "a prompt or --restyle-video, not --batch"), main=True),
    O("fps", float, 25.0, "frame rate of --video", "F", above=0, high=1000, ui=True,
      needs=(_video_out, "a video of a drawn picture (--video or --video-length); a restyled video keeps its "
                         "input's frame rate")),
    O("frames_dir", str, None, "write progress frames as numbered PNGs into this folder", "DIR", preset=False,
      needs=STILL),
    O("batch", str, None, "prompt file: one prompt per line; blank lines and '#' comments skipped; one image per "
      "line", "FILE", preset=False, main=True),
    O("batch_size", str, "1", "with --batch: optimise N lines together as one batch of latents; 'auto' takes the "
      "most (up to 8) that the memory estimate says fit", "N|auto", preset=False,
      parts=(Part("N", int, low=1, high=256),),
      needs=(lambda get: bool(get("batch")), "--batch FILE")),
    O("output_dir", str, "outputs", "where default outputs and batch images go", "DIR", preset=False, main=True),
    O("clip", list, None, "CLIP model: ARCH:PRETRAINED (open_clip tags, e.g. ViT-B-32:openai), ARCH:/path/to/weights, "
      "local-dir:PATH, hf-hub:ORG/REPO or a built-in name; repeat for an ensemble (losses summed)", "SPEC",
      default_doc="preset", main=True),
    O("vqgan", str, None, "a registry name (see --list-models) or a .ckpt path", "NAME|PATH", default_doc="preset",
      main=True),
    O("vqgan_config", str, None, "the model.yaml of a --vqgan checkpoint path (looked for as <ckpt>.yaml, "
      "model.yaml, ../configs/model.yaml)", "PATH", default_doc="beside the ckpt"),
    O("model", str, "default", "preset pair of models and settings (see --list-models)", "NAME", recipe=True,
      preset=False, ui=True, main=True),
    O("quality", str, "normal", "scale the preset: draft, normal, better, best (steps, cutouts, size and the CLIP "
      "ensemble, as the registry's quality table says); an option given explicitly always wins", "LEVEL",
      recipe=True, preset=False, main=True),
    O("cutn", int, 32, "cutouts per step", "N", low=1, high=4096, recipe=True, ui=True),
    O("cut_pow", float, 1.0, "cutout size distribution; > 1 favours small cutouts", "P", above=0, high=100,
      recipe=True),
    O("cut_min", float, None, "smallest cutout, as a fraction of the short side", "F", above=0, high=1,
      recipe=True, default_doc="CLIP size"),
    O("augments", str, None, f"Kornia augments from {', '.join(AUGMENTS)}, comma-separated, or none "
      "(affine: rotate ±15°, shift ±10 %; shift: the same shift, no rotation)", "LIST", recipe=True,
      default_doc=",".join(DEFAULT_AUGMENTS), ui=True),
    O("noise", float, 0.1, "largest noise added to cutouts", "F", low=0, high=10, recipe=True),
    O("lr", float, 0.1, "learning rate", "F", above=0, high=1000, recipe=True, ui=True),
    O("optimizer", str, "adam", "optimiser", "NAME", choices=tuple(OPTIMIZERS), recipe=True),
    O("init_image", str, None, "start from this picture (scaled to cover and centre-cropped) instead of random "
      "codes", "PATH", recipe=True, preset=False, ui=True, needs=STILL, main=True),
    O("init_weight", float, 0.0, "keep pulling the latent toward the init image", "F", low=0, high=WEIGHT_MAX,
      recipe=True, ui=True, needs=(lambda get: bool(get("init_image") or get("restyle_video")),
                          "--init-image or --restyle-video")),
    O("tv_weight", float, 0.0, "smoothness: penalise the picture's total variation, so it forms a few flat regions "
      "rather than a texture", "F", low=0, high=WEIGHT_MAX, recipe=True),
    O("candidates", int, 1, "try N random starts per image for the first --candidate-steps steps (as one batch), "
      "then go on with the one whose loss was lowest over its last 5 steps", "N", low=1, high=64, recipe=True,
      derive=_one_start, ui=True, main=True),
    O("candidate_steps", int, None, "how long the --candidates search runs before the best start is kept", "N",
      low=1, high=STEPS_MAX, recipe=True, fallback=lambda get: max(1, get("steps") // 5), default_doc="steps / 5",
      needs=(lambda get: get("candidates") > 1, "--candidates N with N > 1")),
    O("image_prompts", list, None, "steer toward a picture with weight W (default 1)", "PATH[:W]",
      long="--image-prompt", recipe=True, preset=False, ui=True, main=True, parts=(WEIGHT,)),
    O("noise_prompts", list, None, "steer toward a random embedding made from SEED, with weight W (default 1), as "
      "one more target in every stage", "SEED[:W]", long="--noise-prompt", recipe=True, preset=False, parts=(WEIGHT,)),
    O("init_noise", str, None, "start from an encoded picture of random pixels or a random colour gradient (one "
      "per seed) instead of random codes", "KIND", choices=("pixels", "gradient"), recipe=True, default_doc="none",
      needs=STILL),
    O("saturation_weight", float, 0.0, "keep colours from blowing out: penalise each pixel's colourfulness "
      "(max - min of its RGB)", "F", low=0, high=WEIGHT_MAX, recipe=True),
    O("symmetry_weight", float, 0.0, "left-right mirror symmetry: penalise the difference between the picture and "
      "its mirror image", "F", low=0, high=WEIGHT_MAX, recipe=True),
    O("palette", str, None, "pull every pixel toward its nearest palette colour: names (red, green, blue, yellow, "
      "white, black, orange, purple, pink, brown, grey), #rrggbb, or 'prompt' (the colours each image's prompt "
      "names; none if fewer than two in all), comma-separated, with weight W (default 1); W:END: the weight "
      "grows from W to END with the square of the run's progress (a late pull that cleans colours once the "
      "shapes are drawn)",
      "COLOURS[:W[:END]]", recipe=True, default_doc="none",
      parts=(Part("weight", low=0, high=WEIGHT_MAX), Part("end", low=0, high=WEIGHT_MAX))),
    O("colours", int, 0, "finish every picture written or shown (final, frames, video, preview) in its N main "
      "colours and their two-colour blends: k-means finds them, each pixel moves onto the nearest blend, so soft "
      "edges stay and specks of other colours go; the guidance itself scores the unfinished picture; 0: off",
      "N", low=0, high=8, recipe=True, on_resume=FREE),
    O("change_every", int, None, "steps per story stage", "N", low=1, high=STEPS_MAX, recipe=True,
      default_doc="steps / stages",
      needs=STORY),
    O("blend_steps", int, 0, "steps over which one story stage blends into the next", "N", low=0, high=STEPS_MAX,
      recipe=True, needs=STORY),
    O("preview", int, None, "try N seeds (from --seed) for --preview-steps steps as one batch: a contact sheet of "
      "numbered thumbnails and a resumable state per seed; go on with one by --resume of its state", "N", low=1,
      high=64, preset=False, main=True, most=SEEDS),
    O("preview_steps", int, None, "steps of a --preview", "S", low=1, high=STEPS_MAX, preset=False,
      fallback=lambda get: max(1, get("steps") // 5), default_doc="steps / 5",
      needs=(lambda get: get("preview") is not None, "--preview N")),
    O("fit", bool, False, "when the memory estimate says the run will not fit, draw at the largest size that does "
      "(and say so) instead of stopping", preset=False),
    O("n_images", int, 1, "N images of the prompt (seeds seed ... seed+N-1) optimised together as one batch", "N",
      low=1, high=256, preset=False, most=SEEDS, ui=True,
      needs=(lambda get: _not_batch(get) and _not_restyle(get),
             "a still picture of one prompt, not --batch or --restyle-video")),
    O("device", str, "auto", "auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps", "D", on_resume=FREE,
      main=True),
    O("threads", int, None, "CPU threads for torch during the run; small models on a shared CPU run faster with "
      "fewer threads than cores", "N", low=1, high=1024, on_resume=FREE, recipe=True,
      default_doc="torch's default", main=True),
    O("precision", str, "auto", "auto (bf16 autocast for CLIP and the decoder on CUDA, fp32 elsewhere), fp32, bf16 "
      "or fp16; the loss and latent stay fp32", "P", choices=("auto", "fp32", "bf16", "fp16"), recipe=True),
    O("resume", str, None, "continue an interrupted run from its .state.pt file (--steps may raise the total, -o "
      "moves the picture)", "STATE", on_resume=FREE, preset=False, main=True),
    O("state_every", int, 100, "write a resumable <output>.state.pt every N steps (0 = off); removed when the run "
      "completes", "N", low=0, high=STEPS_MAX, on_resume=FREE,
      needs=(_not_restyle, "a picture, a batch or a preview, not --restyle-video (which writes its state when "
                           "stopped)")),
    O("zoom", float, 1.0, "zoom video: every --save-every steps scale the picture by F about its centre (>1 moves "
      "in), re-encode it and go on", "F", above=0, high=100, recipe=True, needs=ZOOM),
    O("pan_x", float, 0.0, "zoom video: move the picture right by PX pixels every --save-every steps", "PX",
      low=-1e4, high=1e4, recipe=True, needs=ZOOM),
    O("pan_y", float, 0.0, "zoom video: move the picture down by PX pixels every --save-every steps", "PX",
      low=-1e4, high=1e4, recipe=True, needs=ZOOM),
    O("rotate", float, 0.0, "zoom video: rotate by DEG degrees every --save-every steps", "DEG", low=-360, high=360,
      recipe=True, needs=ZOOM),
    O("video_length", float, None, "seconds of video at --fps; sets --steps to (S*fps - 1)*save-every + 1", "S",
      above=0, high=86400, preset=False,
      needs=(lambda get: bool(get("video") or get("frames_dir")) and _not_restyle(get),
             "--video or --frames-dir, not --restyle-video (a restyled video is as long as its input)")),
    O("restyle_video", str, None, "restyle each frame of this video toward the prompt (--steps per frame); writes "
      "--video or outputs/<in>-<prompt>.mp4 at the input's frame rate, without audio", "IN", preset=False,
      needs=(_not_batch, "a prompt, not --batch")),
    O("smooth", float, 0.5, "restyle: each output latent is F*previous + (1-F)*this frame's, so the result does "
      "not flicker", "F", low=0, below=1, needs=(lambda get: bool(get("restyle_video")), "--restyle-video")),
    O("shard", str, None, "with --batch: do only lines K, K+N, K+2N, ... (0 <= K < N), e.g. one SLURM array task "
      "each", "K/N", preset=False, parts=(Part("K", int, low=0), Part("N", int, low=1))),
    O("cache_dir", str, None, "model downloads", "DIR", on_resume=FREE, preset=False,
      default_doc="$CLIPGUIDE_CACHE, else $XDG_CACHE_HOME/clipguide, else ~/.cache/clipguide"),
    O("quiet", bool, False, "no progress bar or progress lines", flags=("-q",), on_resume=FREE, preset=False),
    O("list_models", bool, False, "list presets, VQGANs and CLIP models with whether each is in the cache, its size "
      "and whether it was verified, then exit", action=True, main=True),
    O("download", list, None, "download these models into the cache, then exit: VQGAN names, CLIP specs, presets "
      "(their pair; 'default' is the default preset's), for machines that go offline later", "NAME", action=True,
      main=True),
    O("replay", str, None, "draw again from the recipe in a PNG clipguide made; options given beside it override "
      "the recipe's (with none: the same pixels, on the same device)", "PNG", long="--from", action=True, main=True),
    O("debug", bool, False, "show tracebacks", action=True),
    O("version", bool, False, "print the version, then exit", action=True),
)

BY_NAME = {o.name: o for o in OPTIONS}
SETTINGS = tuple(o for o in OPTIONS if not o.action)


def markdown_table(presets: dict, main_only: bool = False) -> str:
    """The options table of the docs (every option, or with `main_only` the README's main ones), from the
    declarations and the presets' settings."""
    lines = ["| option | default | meaning |", "|---|---|---|"]
    for o in OPTIONS:
        if main_only and not o.main:
            continue
        if o.positional:
            name = f"`{o.name.upper()}`"
        else:
            spelled = ", ".join(f"`{f}`" for f in (*o.flags, o.flag))
            name = spelled[:-1] + (f" {o.metavar}`" if o.metavar else "`")
            name += " (repeatable)" if o.type is list else ""
        cells = [name, default_text(o, presets, markdown=True), o.help]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def default_text(o: Option, presets: dict, markdown: bool = False) -> str:
    """'500 (tiny: 150)'-style text of an option's default, with each preset that sets it."""
    q = (lambda v: f"`{v}`") if markdown else str
    if o.type is bool:
        base = "off"
    elif o.default_doc is not None:
        base = o.default_doc
    else:
        base = "" if o.default is None else q(plain(o.default))
    notes = [f"{name}: {q(plain(p['settings'][o.name]))}" for name, p in presets.items()
             if o.name in p.get("settings", {})]
    return f"{base} ({'; '.join(notes)})" if notes else base


# The tables a document may hold, each between its two markers: every option, or the main ones.
TABLES = {"options table": False, "main options table": True}


def markers(kind: str) -> tuple[str, str]:
    return f"<!-- {kind}: python -m clipguide.options FILE -->", f"<!-- end of {kind} -->"


def with_tables(text: str, presets: dict) -> str:
    """`text` with each table it marks (see TABLES) made again from the declarations."""
    for kind, main_only in TABLES.items():
        start, end = markers(kind)
        if start in text:
            head, rest = text.split(start, 1)
            text = f"{head}{start}\n{markdown_table(presets, main_only)}\n{end}{rest.split(end, 1)[1]}"
    return text


if __name__ == "__main__":  # python -m clipguide.options [FILE...]: print the table, or write it into each FILE
    import sys
    from pathlib import Path

    from .models.table import load_table

    table = load_table()["presets"]
    for name in sys.argv[1:]:
        Path(name).write_text(with_tables(Path(name).read_text(), table))
    if len(sys.argv) == 1:
        print(markdown_table(table))
