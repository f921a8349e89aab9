"""All settings of a run, their defaults, presets (`--model`), and checks of what a user typed."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .cutouts import parse_augments
from .engine import OPTIMIZERS
from .errors import UserError
from .models.registry import resolve_preset, suggest
from .prompts import parse_contrast, parse_negative


@dataclass
class Settings:
    """Every knob of a run. `None` means: the preset's value, else the built-in default."""

    prompt: str | None = None
    negative: str | None = None
    contrast: str | None = None
    steps: int | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    output: str | None = None
    overwrite: bool = False
    save_every: int | None = None
    video: str | None = None
    fps: float = 25.0
    frames_dir: str | None = None
    batch: str | None = None
    output_dir: str = "outputs"
    clip: list[str] = field(default_factory=list)
    vqgan: str | None = None
    vqgan_config: str | None = None
    model: str = "default"
    cutn: int | None = None
    cut_pow: float | None = None
    cut_min: float | None = None
    augments: str | None = None
    noise: float | None = None
    lr: float | None = None
    optimizer: str | None = None
    init_image: str | None = None
    init_weight: float | None = None
    tv_weight: float | None = None
    candidates: int | None = None
    candidate_steps: int | None = None
    image_prompts: list[str] = field(default_factory=list)
    change_every: int | None = None
    blend_steps: int | None = None
    n_images: int = 1
    device: str = "auto"
    resume: str | None = None
    state_every: int | None = None
    precision: str = "auto"
    cache_dir: str | None = None
    zoom: float = 1.0
    pan_x: float = 0.0
    pan_y: float = 0.0
    rotate: float = 0.0
    video_length: float | None = None
    restyle_video: str | None = None
    smooth: float = 0.5
    threads: int | None = None

    @property
    def moving(self) -> bool:
        return (self.zoom, self.pan_x, self.pan_y, self.rotate) != (1.0, 0.0, 0.0, 0.0)

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)


DEFAULTS = dict(negative="", contrast="", threads=None, steps=500, width=256, height=256, save_every=0, cutn=32, cut_pow=1.0, augments=None, noise=0.1,
                lr=0.1, optimizer="adam", init_weight=0.0, tv_weight=0.0, candidates=1, change_every=None, blend_steps=0, state_every=100)

# The settings a PNG's recipe records (with the prompt, seed, size, augments, models and version).
RECIPE_KEYS = ("negative", "contrast", "steps", "cutn", "cut_pow", "cut_min", "noise", "lr", "optimizer", "init_weight", "tv_weight",
               "candidates", "candidate_steps", "change_every", "blend_steps", "model", "precision", "zoom", "pan_x",
               "pan_y", "rotate")


def with_defaults(s: Settings) -> Settings:
    """Fill every `None` from the preset named by `model`, then from DEFAULTS; then check values."""
    preset = resolve_preset(s.model)
    filled = {}
    for key, default in DEFAULTS.items():
        if getattr(s, key) is None:
            filled[key] = preset["settings"].get(key, default)
    if s.candidates is None and (s.init_image or s.moving or s.restyle_video):
        filled["candidates"] = 1  # a preset's search of random starts; these runs have one start
    if s.cut_min is None and "cut_min" in preset["settings"]:
        filled["cut_min"] = preset["settings"]["cut_min"]
    if s.restyle_video and s.steps is None:
        filled["steps"] = 30  # per input frame
    if s.save_every is None and (s.moving or s.video_length):
        filled["save_every"] = 10
    if s.video_length is not None:
        if s.video_length <= 0:
            raise UserError(f"--video-length must be positive (got {s.video_length})", "use e.g. --video-length 10")
        frames = math.ceil(s.video_length * s.fps)
        filled["steps"] = max(1, (frames - 1) * filled.get("save_every", s.save_every) + 1)
    if s.candidate_steps is None:
        filled["candidate_steps"] = preset["settings"].get(
            "candidate_steps", max(1, filled.get("steps", s.steps) // 5))  # a fifth of the run
    if not s.clip:
        filled["clip"] = list(preset["clip"])
    if s.vqgan is None:
        filled["vqgan"] = preset["vqgan"]
    out = s.replace(**filled)
    check(out)
    return out


def check(s: Settings) -> None:
    if s.steps <= 0:
        raise UserError(f"--steps must be positive (got {s.steps})", "use e.g. --steps 500")
    if s.threads is not None and s.threads < 1:
        raise UserError(f"--threads must be at least 1 (got {s.threads})", "use e.g. --threads 2")
    if s.n_images < 1:
        raise UserError(f"--n-images must be at least 1 (got {s.n_images})", "use e.g. --n-images 4")
    for name in ("width", "height"):
        if getattr(s, name) <= 0:
            raise UserError(f"--{name} must be positive (got {getattr(s, name)})", "use e.g. --width 256")
    for name in ("save_every", "state_every", "blend_steps"):
        if getattr(s, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0", "use 0 to turn it off")
    if s.change_every is not None and s.change_every <= 0:
        raise UserError("--change-every must be positive", "use e.g. --change-every 100")
    if not (s.tv_weight >= 0 and math.isfinite(s.tv_weight)):
        raise UserError(f"--tv-weight must be a number >= 0 (got {s.tv_weight})",
                        "use e.g. --tv-weight 1, or 0 to turn it off")
    if s.candidates < 1 or s.candidate_steps < 1:
        raise UserError("--candidates and --candidate-steps must be at least 1",
                        "use e.g. --candidates 4 --candidate-steps 30 (--candidates 1: no search)")
    if s.candidates > 1 and (s.init_image or s.moving or s.restyle_video):
        raise UserError("--candidates tries several random starts; an init image, a zoom video or a restyled "
                        "video has one start", "drop --candidates (or the init image / motion options)")
    if not (s.lr > 0 and math.isfinite(s.lr)):
        raise UserError(f"--lr must be a positive number (got {s.lr})", "use e.g. --lr 0.1")
    if s.fps <= 0:
        raise UserError(f"--fps must be positive (got {s.fps})", "use e.g. --fps 25")
    if s.optimizer not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {s.optimizer!r}",
                        f"{suggest(s.optimizer, OPTIMIZERS)}choose from {', '.join(OPTIMIZERS)}")
    if s.zoom <= 0:
        raise UserError(f"--zoom must be positive (got {s.zoom})", "use e.g. --zoom 1.02 (>1 moves in)")
    if s.moving and not s.save_every:
        raise UserError("--zoom/--pan-x/--pan-y/--rotate move the picture every --save-every steps",
                        "give --save-every N (N > 0)")
    if not 0 <= s.smooth < 1:
        raise UserError(f"--smooth must be in [0, 1) (got {s.smooth})", "use e.g. --smooth 0.5")
    if s.restyle_video and not Path(s.restyle_video).is_file():
        raise UserError(f"video not found: {s.restyle_video}", "check the path given to --restyle-video")
    if s.precision not in ("auto", "fp32", "bf16", "fp16"):
        raise UserError(f"unknown precision {s.precision!r}", "choose auto, fp32, bf16 or fp16")
    parse_augments(s.augments)
    parse_negative(s.negative)
    parse_contrast(s.contrast)
    for path, what in [(s.init_image, "init image")] + [(p.rsplit(":", 1)[0] if _weighted(p) else p, "image prompt")
                                                       for p in s.image_prompts]:
        if path is not None and not Path(path).is_file():
            raise UserError(f"{what} not found: {path}", "check the path")


def _weighted(spec: str) -> bool:
    head, _, tail = spec.rpartition(":")
    try:
        float(tail)
        return bool(head)
    except ValueError:
        return False


def split_image_prompt(spec: str) -> tuple[str, float]:
    """'path.png:0.5' -> ('path.png', 0.5); 'path.png' -> ('path.png', 1.0)."""
    if _weighted(spec):
        head, _, tail = spec.rpartition(":")
        return head, float(tail)
    return spec, 1.0


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"unknown device {spec!r}", "use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec}: no CUDA GPU is available here", "use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {spec}: only {torch.cuda.device_count()} GPU(s) here", "use cuda:0 ...")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"--device {spec}: MPS is not available here", "use --device cpu (or auto)")
    return device


def autocast_dtype(precision: str, device: torch.device):
    """Mixed precision for CLIP and the decoder: bf16 by default on CUDA, fp32 elsewhere."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
