"""The two loops `python -m clipguide.bench` times, each run alone in its own process.

(a) classic: the VQGAN+CLIP loop as its users run it (Katherine Crowson's notebook and nerdyrodent's
    `generate.py`, which most people ran): OpenAI's CLIP code (`clip.load(..., jit=False)`: fp32 on
    the CPU, fp16 weights on CUDA), fp32 VQGAN; cutouts cut one by one in a Python loop, each resampled
    to CLIP's size (Lanczos prefilter when shrinking, then bicubic), Kornia augments and noise on the
    stacked batch; quantisation by a one-hot matmul, gradient straight through; the loss read on the
    host every step (the log line: a host sync); a synchronous PNG per saved frame; every 50 steps
    the check-in (decode again, write the output PNG); Adam; the latent clamped to the codebook's
    range.  B images are B separate runs.  The code is written for this benchmark from the published
    description of that loop; only the models are loaded as its users load them.
(b) engine: clipguide itself, through the Python API a user calls (`run.Session`), so everything the
    product does per step is in the time: the fast path applied by the model factory, batched
    cutouts, callbacks (progress, finite check, frames encoded off-thread).

Both load the same weights (bench.weights) and time each step from its end to the next one's end.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .weights import OPENAI_MEAN, OPENAI_STD, SHIPPED_VQGAN, Files


@dataclass
class Config:
    width: int = 64
    height: int = 64
    cutn: int = 4
    steps: int = 20  # timed steps
    warmup: int = 3  # untimed steps before them
    save_every: int = 0  # a frame every N steps (0: none)
    batch: int = 1  # images optimised together (the classic loop: B separate runs)
    device: str = "auto"
    precision: str = "auto"  # the engine's; the classic loop runs as clip.load gives it
    threads: int = 0  # torch intra-op threads (0: torch's default)
    seed: int = 0
    lr: float = 0.1
    prompt: str = "a watercolour painting of a lighthouse at dawn"
    clip: str = "ViT-B-32-quickgelu"  # open_clip architecture (name or JSON config) of the random weights
    vqgan_config: str = str(SHIPPED_VQGAN)
    compile: bool = False  # the engine's models through torch.compile


class Clock:
    """Step boundaries: CUDA events on a GPU (no host sync), perf_counter elsewhere."""

    def __init__(self, device: torch.device):
        self.cuda, self.marks = device.type == "cuda", []

    def mark(self) -> None:
        if self.cuda:
            self.marks.append(torch.cuda.Event(enable_timing=True))
            self.marks[-1].record()
        else:
            self.marks.append(time.perf_counter())

    def seconds(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1000 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


# -- (a) the classic loop ---------------------------------------------------------------------------
class _StraightThrough(torch.autograd.Function):
    """Forward the first argument, hand the gradient to the second (the notebooks' replace_grad)."""

    @staticmethod
    def forward(ctx, forward_value, backward_value):
        ctx.shape = backward_value.shape
        return forward_value

    @staticmethod
    def backward(ctx, grad):
        return None, grad.sum_to_size(ctx.shape)


def classic_quantize(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Nearest code by distance matrix, argmin and a one-hot matmul; gradient straight through."""
    flat = z.movedim(1, 3)
    d = flat.pow(2).sum(-1, keepdim=True) + codebook.pow(2).sum(1) - 2 * flat @ codebook.T
    q = F.one_hot(d.argmin(-1), codebook.shape[0]).to(d.dtype) @ codebook
    return _StraightThrough.apply(q, flat).movedim(3, 1)


def _lanczos_kernel(scale: float, lobes: int = 2) -> torch.Tensor:
    """A normalised Lanczos-`lobes` low-pass kernel for shrinking by `scale` (< 1)."""
    half = math.ceil(lobes / scale)
    x = torch.arange(-half + 1, half, dtype=torch.float64) * scale
    k = torch.sinc(x) * torch.sinc(x / lobes) * (x.abs() < lobes)
    return (k / k.sum()).float()


def resample(image: torch.Tensor, size: int) -> torch.Tensor:
    """Lanczos prefilter along each axis that shrinks, then bicubic (align_corners) to size x size."""
    n, c, h, w = image.shape
    x = image.reshape(n * c, 1, h, w)
    if size < h:
        k = _lanczos_kernel(size / h).to(x)
        x = F.conv2d(F.pad(x, (0, 0, len(k) // 2, len(k) // 2), "reflect"), k[None, None, :, None])
    if size < w:
        k = _lanczos_kernel(size / w).to(x)
        x = F.conv2d(F.pad(x, (len(k) // 2, len(k) // 2, 0, 0), "reflect"), k[None, None, None, :])
    return F.interpolate(x.reshape(n, c, h, w), (size, size), mode="bicubic", align_corners=True)


def classic_cutouts(image: torch.Tensor, size: int, cutn: int, augment: nn.Module, noise: float = 0.1,
                    cut_pow: float = 1.0) -> torch.Tensor:
    side_y, side_x = image.shape[2:4]
    max_size, min_size = min(side_x, side_y), min(side_x, side_y, size)
    cuts = []
    for _ in range(cutn):  # one cutout at a time, as the notebooks did
        s = int(torch.rand([]) ** cut_pow * (max_size - min_size) + min_size)
        ox = int(torch.randint(0, side_x - s + 1, ()))
        oy = int(torch.randint(0, side_y - s + 1, ()))
        cuts.append(resample(image[:, :, oy:oy + s, ox:ox + s], size))
    batch = augment(torch.cat(cuts))
    facs = batch.new_empty([cutn, 1, 1, 1]).uniform_(0, noise)
    return batch + facs * torch.randn_like(batch)


def spherical_loss(emb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    x = F.normalize(emb.unsqueeze(1), dim=2)
    y = F.normalize(target.unsqueeze(0), dim=2)
    return (x - y).norm(dim=2).div(2).arcsin().pow(2).mul(2).mean()


class Classic:
    """One classic run: the models as its users load them, one latent, Adam."""

    def __init__(self, files: Files, cfg: Config, device: torch.device):
        from ..guide.augments import DEFAULT_AUGMENTS, build  # the notebooks' four augments
        from ..models.vqgan import load_vqgan
        from .weights import load_openai

        self.cfg, self.device = cfg, device
        self.perceptor, tokenize = load_openai(files, device)
        self.vqgan = load_vqgan(files.vqgan_config, files.vqgan_ckpt).to(device)  # taming's modules
        self.augment = nn.Sequential(*(build(name) for name in DEFAULT_AUGMENTS))
        self.mean = torch.tensor(OPENAI_MEAN, device=device)[:, None, None]
        self.std = torch.tensor(OPENAI_STD, device=device)[:, None, None]
        tokens = tokenize([cfg.prompt], context_length=self.perceptor.context_length, truncate=True).to(device)
        self.target = self.perceptor.encode_text(tokens).float()
        cb = self.vqgan.codebook
        self.z_min, self.z_max = cb.min(0).values[None, :, None, None], cb.max(0).values[None, :, None, None]

    def start(self, seed: int) -> None:
        """A new run: random codes from `seed`, a fresh Adam."""
        cb, f = self.vqgan.codebook, self.vqgan.factor
        h, w = self.cfg.height // f, self.cfg.width // f
        torch.manual_seed(seed)
        one_hot = F.one_hot(torch.randint(cb.shape[0], [h * w], device=self.device), cb.shape[0]).float()
        self.z = (one_hot @ cb).view(1, h, w, -1).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
        self.opt = torch.optim.Adam([self.z], lr=self.cfg.lr)

    def synth(self, z: torch.Tensor) -> torch.Tensor:
        return self.vqgan.decode(classic_quantize(z, self.vqgan.codebook))  # decode ends in clamp_with_grad

    def step(self, i: int, out: Path) -> float:
        self.opt.zero_grad(set_to_none=True)
        image = self.synth(self.z)
        cuts = classic_cutouts(image, self.perceptor.visual.input_resolution, self.cfg.cutn, self.augment)
        emb = self.perceptor.encode_image((cuts - self.mean) / self.std).float()
        loss = spherical_loss(emb, self.target)
        value = loss.item()  # the log line: a host sync every step
        if self.cfg.save_every and i % self.cfg.save_every == 0:
            _png(image, out / f"classic-{i:05d}.png")  # a frame, written before the loop goes on
        if i % 50 == 0:  # the check-in: decode again and write the output picture
            with torch.inference_mode():
                _png(self.synth(self.z), out / "classic-output.png")
        loss.backward()
        self.opt.step()
        with torch.inference_mode():
            self.z.copy_(self.z.maximum(self.z_min).minimum(self.z_max))
        return value


def _png(image: torch.Tensor, path: Path) -> None:
    import imageio.v2 as imageio

    pixels = image[0].detach().mul(255).clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()
    imageio.imwrite(path, pixels)


def run_classic(files: Files, cfg: Config, device: torch.device, out: Path, loaded=lambda: None) -> dict:
    """B separate classic runs one after another on the models loaded once; each step is timed."""
    run = Classic(files, cfg, device)
    loaded()
    seconds, losses = [], []
    for b in range(cfg.batch):
        run.start(cfg.seed + b)
        clock = Clock(device)
        clock.mark()
        for i in range(cfg.warmup + cfg.steps):
            losses.append(run.step(i, out))
            clock.mark()
        seconds += clock.seconds()
    return {"seconds": seconds, "losses": losses, "steps_per_image": cfg.warmup + cfg.steps}


# -- (b) the engine: clipguide's own API -------------------------------------------------------------
def engine_settings(files: Files, cfg: Config, out: Path, **extra):
    from ..settings import Settings

    frames = {"frames_dir": str(out / "frames")} if cfg.save_every else {}
    return Settings(prompt=cfg.prompt, clip=[f"local-dir:{files.clip_dir}"], vqgan=str(files.vqgan_ckpt),
                    vqgan_config=str(files.vqgan_config), width=cfg.width, height=cfg.height, cutn=cfg.cutn,
                    steps=cfg.warmup + cfg.steps, seed=cfg.seed, lr=cfg.lr, n_images=cfg.batch, candidates=1,
                    save_every=cfg.save_every, output=str(out / "engine.png"), overwrite=True, device=cfg.device,
                    precision=cfg.precision, quiet=True, state_every=0, cache_dir=str(out / "cache"),
                    threads=cfg.threads or None, **frames, **extra)


def run_engine(files: Files, cfg: Config, device: torch.device, out: Path, loaded=lambda: None,
               auto: bool = False) -> dict:
    """One clipguide run of B images (`Session.run`, as `generate` does it); each step is timed.

    `auto`: as many of the B images as `--batch-size auto` would put in one batch."""
    from ..models import fast
    from ..run import Session

    session = Session(engine_settings(files, cfg, out), log=lambda msg: None)
    jobs = session.plan.single_jobs(cfg.seed)
    if auto:
        jobs = jobs[:session.fitting_batch(len(jobs))]
    compiled = []
    if cfg.compile:
        for clip in session.models.clips:
            fast.compile_forward(clip.model.visual, "the CLIP image tower")
            compiled.append(clip.model.visual.forward)
        fast.compile_forward(session.models.vqgan.decoder, "the VQGAN decoder")
        compiled.append(session.models.vqgan.decoder.forward)
    loaded()
    clock, losses = Clock(device), []

    def mark(info) -> None:
        clock.mark()
        losses.append(info.loss.detach())

    clock.mark()
    session.run(jobs, progress=False, on_step=mark)
    values = torch.stack(losses).float().mean(1).tolist()
    return {"seconds": clock.seconds(), "losses": values, "steps_per_image": cfg.warmup + cfg.steps,
            "batch": len(jobs), "compile_failed": any(getattr(f, "failed", True) for f in compiled)}
