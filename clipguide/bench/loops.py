"""The two loops `python -m clipguide.bench` times, on the same models: the classic VQGAN+CLIP loop
as the field has run it, and clipguide's engine.  See `clipguide.bench` for what differs and how
they are measured."""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..callbacks import FiniteCheck, Frames, Progress, chain
from ..engine import make_optimizer, optimize
from ..guide.augments import DEFAULT_AUGMENTS, build
from ..guide.cutouts import Cutouts
from ..guide.objective import Member, Objective
from ..models import fast as speed
from ..models.clip import load_clip
from ..models.vqgan import read_config, vqgan_from_config
from ..outputs.frames import FrameWriter
from ..outputs.pictures import to_uint8

SHIPPED_VQGAN = Path(__file__).parent.parent / "models" / "configs" / "vqgan_imagenet_f16_16384.yaml"


@dataclass
class Config:
    width: int = 64
    height: int = 64
    cutn: int = 4
    steps: int = 10  # timed steps
    warmup: int = 3  # untimed steps before them
    save_every: int = 0
    batch: int = 1
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    image_steps: int = 500  # steps per finished image, for images/hour
    lr: float = 0.1
    cut_pow: float = 1.0
    noise: float = 0.1
    clip: str = "ViT-B-32:random"
    vqgan_config: str = str(SHIPPED_VQGAN)
    prompt: str = "a watercolour painting of a lighthouse at dawn"
    compile: bool = False
    memory: bool = True  # peak memory (CPU: peak RSS of each variant in its own subprocess)


class Models:
    """The models and prompt embedding shared by every variant."""

    def __init__(self, cfg: Config, device: torch.device):
        torch.manual_seed(cfg.seed)
        self.device = device
        self.clip = load_clip(cfg.clip, device)
        self.vqgan = vqgan_from_config(read_config(cfg.vqgan_config)).eval().requires_grad_(False).to(device)
        del self.vqgan.encoder  # never used by guidance from random codes
        self.targets = self.clip.encode_text([cfg.prompt])  # [1, D]

    def latents(self, cfg: Config) -> list[torch.Tensor]:
        f = self.vqgan.factor
        return [self.vqgan.random_latent(cfg.height // f, cfg.width // f,
                                         generator=torch.Generator().manual_seed(cfg.seed + i))
                for i in range(cfg.batch)]

    def prepare(self, cfg: Config, copy_first: bool = True) -> "Models":
        """The same weights passed through the fast path; a copy unless `copy_first` is False."""
        fast = copy.copy(self) if copy_first else self
        if copy_first:
            fast.clip = dataclasses.replace(self.clip, model=copy.deepcopy(self.clip.model))
            fast.vqgan = copy.deepcopy(self.vqgan)
        speed.prepare_clip(fast.clip, self.device, compile=cfg.compile)
        speed.prepare_vqgan(fast.vqgan, self.device, compile=cfg.compile)
        return fast

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for mod in (self.clip.model, self.vqgan)
                   for t in [*mod.parameters(), *mod.buffers()])


class Clock:
    """Marks step boundaries: CUDA events on a GPU (no host sync), perf_counter elsewhere."""

    def __init__(self, device: torch.device):
        self.cuda, self.marks = device.type == "cuda", []

    def mark(self) -> None:
        self.marks.append(torch.cuda.Event(enable_timing=True) if self.cuda else time.perf_counter())
        if self.cuda:
            self.marks[-1].record()

    def seconds(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
        pairs = zip(self.marks, self.marks[1:])
        return [a.elapsed_time(b) / 1000 for a, b in pairs] if self.cuda else [b - a for a, b in pairs]


# -- (a) the classic loop -------------------------------------------------------------------------
def classic_quantize(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Nearest code by one-hot matmul, gradient straight through (as the notebooks did it)."""
    flat = z.movedim(1, 3)
    d = flat.pow(2).sum(-1, keepdim=True) + codebook.pow(2).sum(1) - 2 * flat @ codebook.T
    q = F.one_hot(d.argmin(-1), codebook.shape[0]).to(d.dtype) @ codebook
    return (flat + (q - flat).detach()).movedim(3, 1)


def classic_cutouts(image: torch.Tensor, size: int, cutn: int, cut_pow: float, augment: nn.Module,
                    noise: float) -> torch.Tensor:
    side_y, side_x = image.shape[2:4]
    max_size = min(side_x, side_y)
    min_size = min(side_x, side_y, size)
    cuts = []
    for _ in range(cutn):
        s = int(torch.rand([]) ** cut_pow * (max_size - min_size) + min_size)
        ox = int(torch.randint(0, side_x - s + 1, ()))
        oy = int(torch.randint(0, side_y - s + 1, ()))
        cuts.append(F.adaptive_avg_pool2d(image[:, :, oy:oy + s, ox:ox + s], size))
    batch = augment(torch.cat(cuts))
    if noise:
        facs = batch.new_empty([batch.shape[0], 1, 1, 1]).uniform_(0, noise)
        batch = batch + facs * torch.randn_like(batch)
    return batch


def classic_loss(emb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    x = F.normalize(emb.unsqueeze(1), dim=2)
    y = F.normalize(target.unsqueeze(0), dim=2)
    return (x - y).norm(dim=2).div(2).arcsin().pow(2).mul(2).mean(0).sum()


def run_classic(m: Models, cfg: Config, out: Path) -> dict:
    torch.manual_seed(cfg.seed)
    zs = [z.requires_grad_(True) for z in m.latents(cfg)]
    opts = [torch.optim.Adam([z], lr=cfg.lr) for z in zs]
    augment = nn.Sequential(*(build(name) for name in DEFAULT_AUGMENTS))
    lo, hi = m.vqgan.latent_range()
    clip, clock, losses = m.clip, Clock(m.device), []
    clock.mark()
    for step in range(cfg.warmup + cfg.steps):
        values = []
        for i, (z, opt) in enumerate(zip(zs, opts)):
            opt.zero_grad()
            image = m.vqgan.decode(classic_quantize(z, m.vqgan.codebook))
            cuts = classic_cutouts(image, clip.image_size, cfg.cutn, cfg.cut_pow, augment, cfg.noise)
            emb = clip.model.encode_image((cuts - clip.mean) / clip.std).float()
            loss = classic_loss(emb, m.targets)
            values.append(loss.item())  # the log line: a host sync every step
            if cfg.save_every and step % cfg.save_every == 0:
                Image.fromarray(to_uint8(image[0])).save(out / f"classic-{i}-{step:05d}.png")
            loss.backward()
            opt.step()
            with torch.no_grad():
                z.copy_(z.maximum(lo).minimum(hi))
        losses.append(sum(values) / len(values))
        clock.mark()
    return {"seconds": clock.seconds(), "losses": losses}


# -- (b) the engine -----------------------------------------------------------------------------
def run_engine(m: Models, cfg: Config, out: Path, autocast) -> dict:
    torch.manual_seed(cfg.seed)
    b = cfg.batch
    z = torch.cat(m.latents(cfg)).requires_grad_(True)
    cut = Cutouts(m.clip.image_size, cfg.cutn, cfg.cut_pow, DEFAULT_AUGMENTS, cfg.noise)
    targets = m.targets[None].expand(b, -1, -1).contiguous()  # [B, P, D]
    weights = torch.ones(b, targets.shape[1], device=m.device)
    stops = torch.full((b, targets.shape[1]), -float("inf"), device=m.device)
    objective = Objective(m.vqgan, [Member(m.clip, cut, targets)], lambda step: weights, stops, None, 0.0, autocast)
    opt = make_optimizer("adam", [z], cfg.lr)
    total = cfg.warmup + cfg.steps
    writers = [FrameWriter(out / f"engine-{i}", overwrite=True) for i in range(b)] if cfg.save_every else []
    sync_every = 1 if m.device.type == "cpu" else 25  # as Session.run does
    clock, losses = Clock(m.device), []

    def record(info) -> None:
        losses.append(info.loss.mean())
        clock.mark()

    callback = chain(Progress(total, every=sync_every, enabled=False), FiniteCheck(sync_every),
                     Frames(writers, cfg.save_every) if writers else None, record)
    clock.mark()
    optimize(objective, z, opt, total, latent_range=m.vqgan.latent_range(), callback=callback)
    for w in writers:
        w.close()
    return {"seconds": clock.seconds(), "losses": torch.stack(losses).tolist()}


# -- measuring ----------------------------------------------------------------------------------
def summarise(cfg: Config, run: dict) -> dict:
    timed = run["seconds"][cfg.warmup:]
    step_s = statistics.median(timed)
    return {"step_ms": step_s * 1000, "images_per_hour": 3600 * cfg.batch / (step_s * cfg.image_steps),
            "loss_mean": sum(run["losses"][cfg.warmup:]) / len(timed), "losses": run["losses"],
            "timed_steps": len(timed)}
