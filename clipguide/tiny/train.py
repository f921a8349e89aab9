"""Train the tiny VQGAN and tiny CLIP on the tiny world and write them where `--model tiny` finds them.

    python -m clipguide.tiny.train --out clipguide/weights/tiny [--seed 0] [--vqgan-steps N] [--clip-steps N]

The CLIP is trained from scratch (`--clip-steps`), then fine-tuned in the stages of `CLIP_FINETUNES`
(`--clip-finetunes K` runs the first K), each starting from the CLIP the one before saved.  A step
count of 0 skips that part (its files are left as they are, and fine-tuning starts from them).
Everything is seeded and runs on a CPU; files are written atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import world
from ..models.registry import sha256_of

VQGAN_CONFIG = {
    "model": {
        "target": "taming.models.vqgan.VQModel",
        "params": {
            "embed_dim": 16,
            "n_embed": 512,
            "ddconfig": {
                "double_z": False, "z_channels": 32, "resolution": world.SIZE, "in_channels": 3, "out_ch": 3,
                "ch": 32, "ch_mult": [1, 1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
            },
            "lossconfig": {"target": "taming.modules.losses.vqperceptual.DummyLoss"},
        },
    }
}

CLIP_IMAGE_SIZE = 32
CLIP_MEAN = (0.5, 0.5, 0.5)
CLIP_STD = (0.25, 0.25, 0.25)
CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": CLIP_IMAGE_SIZE, "patch_size": 4, "width": 96, "head_width": 32, "layers": 4},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
}

# Fine-tuning stages after the CLIP's training from scratch.  Whole-shape crops and blob negatives
# (irregular, scattered and oversized regions, see world.make_blobs) teach it that a shape is one
# region with background all round it; `vqgan_p` mixes in the tiny VQGAN's reconstructions.  The last
# stage is adversarial (`adv_eps`, see `attack`): it makes the CLIP robust, so that what guidance finds
# to please it is a shape rather than a pattern only the CLIP sees.  Several radii make a "soup": one
# fine-tune per radius from the same start, their weights averaged (see `run_clip_stage`).
CLIP_FINETUNES = (
    {"steps": 600, "lr": 3e-4, "blobs": 0.4, "whole": True},
    {"steps": 800, "lr": 3e-4, "blobs": 0.5, "whole": True, "vqgan_p": 0.3},
    {"steps": 600, "lr": 2e-4, "blobs": 0.5, "whole": True, "vqgan_p": 0.3, "adv_eps": (0.5, 1.0)},
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def lr_at(step: int, steps: int, peak: float, warmup: int = 100) -> float:
    """Linear warm-up (at most a tenth of the run) then cosine decay to 5% of the peak."""
    warmup = max(1, min(warmup, steps // 10))
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


# ----------------------------------------------------------------------------------------- VQGAN


def vqgan_config(ch: int | None = None, n_embed: int | None = None) -> dict:
    """A copy of the tiny VQGAN config, optionally smaller (for tests)."""
    cfg = json.loads(json.dumps(VQGAN_CONFIG))
    if ch is not None:
        cfg["model"]["params"]["ddconfig"]["ch"] = ch
    if n_embed is not None:
        cfg["model"]["params"]["n_embed"] = n_embed
    return cfg


def vqgan_losses(model, images: torch.Tensor):
    """(total loss, reconstruction loss, code indices) for a batch of images in [0, 1]."""
    h = model.quant_conv(model.encoder(images * 2 - 1))
    zq, q_loss, (_, _, idx) = model.quantize(h)
    rec = model.decode(zq)
    rec_loss = (rec - images).abs().mean() + (rec - images).pow(2).mean()
    return rec_loss + q_loss, rec_loss, idx.view(-1)


@torch.no_grad()
def restart_codes(model, images: torch.Tensor, dead: torch.Tensor, generator: torch.Generator) -> int:
    """Move unused codes onto encoder outputs of `images` (random positions, slightly jittered)."""
    n = int(dead.sum())
    if n == 0:
        return 0
    h = model.quant_conv(model.encoder(images * 2 - 1)).movedim(1, -1).reshape(-1, model.codebook.shape[1])
    pick = torch.randint(len(h), (n,), generator=generator)
    noise = torch.randn(n, h.shape[1], generator=generator) * 0.01 * h.std()
    model.codebook.data[dead] = h[pick] + noise
    return n


def train_vqgan(steps: int, seed: int = 0, batch: int = 16, lr: float = 2e-3, config: dict | None = None,
                restart_every: int = 50, log_every: int = 50, image_size: int = world.SIZE):
    """Train a VQGAN on world pictures; returns (model, config, history of reconstruction losses)."""
    from ..models.vqgan import vqgan_from_config

    config = config or vqgan_config()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    model = vqgan_from_config(config).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99))
    n_codes = model.codebook.shape[0]
    used = torch.zeros(n_codes, dtype=torch.bool)
    # start the codebook on encoder outputs so every code is reachable
    restart_codes(model, world.make_batch(batch, g, image_size).images, torch.ones(n_codes, dtype=torch.bool), g)
    history, t0 = [], time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr)
        images = world.make_batch(batch, g, image_size).images
        loss, rec_loss, idx = vqgan_losses(model, images)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        used[idx] = True
        history.append(rec_loss.item())
        restarted = 0
        if (step + 1) % restart_every == 0 and step < 0.8 * steps:
            restarted = restart_codes(model, images, ~used, g)
            used.zero_()
        if (step + 1) % log_every == 0 or step == steps - 1:
            recent = sum(history[-log_every:]) / len(history[-log_every:])
            log(f"vqgan step {step + 1}/{steps} rec(L1+MSE) {recent:.4f} q {(loss - rec_loss).item():.4f} "
                f"restarted {restarted} {time.time() - t0:.0f}s")
    return model.eval().requires_grad_(False), config, history


@torch.no_grad()
def vqgan_eval(model, n: int = 64, seed: int = 12345) -> dict:
    """Held-out reconstruction error, codebook usage and colour accuracy of reconstructions."""
    b = world.make_batch(n, seed)
    h = model.quant_conv(model.encoder(b.images * 2 - 1))
    zq, _, (_, _, idx) = model.quantize(h)
    rec = model.decode(zq)
    palette = torch.tensor(list(world.COLOURS.values()))
    # nearest palette colour of each reconstructed pixel vs the true one
    near = ((rec.movedim(1, -1)[..., None, :] - palette).pow(2).sum(-1)).argmin(-1)
    true = ((b.images.movedim(1, -1)[..., None, :] - palette).pow(2).sum(-1)).argmin(-1)
    return {"l1": float((rec - b.images).abs().mean()), "mse": float((rec - b.images).pow(2).mean()),
            "pixel_colour_acc": float((near == true).float().mean()), "codes_used": int(idx.unique().numel())}


# ------------------------------------------------------------------------------------------ CLIP


def clip_config(**vision) -> dict:
    cfg = json.loads(json.dumps(CLIP_CONFIG))
    cfg["vision_cfg"].update(vision)
    return cfg


def random_crops(images: torch.Tensor, labels: world.Batch, size: int, generator: torch.Generator,
                 min_frac: float = 0.6, whole: bool = False) -> torch.Tensor:
    """Square crops of 60-100% of each picture's side, resized to `size`.

    They keep the shape's centre in view, or with `whole` the shape's whole box plus a margin (a
    crop never cuts the shape, so every view shows background all round it)."""
    n, _, H, W = images.shape
    out = []
    for i in range(n):
        cx, cy, r = float(labels.cx[i]), float(labels.cy[i]), float(labels.radius[i])
        least = min(H, math.ceil(2 * r) + 4) if whole else 0
        s = max(least, int(round(H * (min_frac + (1 - min_frac) * float(torch.rand((), generator=generator))))))
        keep = r + 2 if whole else 2  # how far round the centre the crop must reach
        lo_x, hi_x = max(0, math.ceil(cx + keep) - s), min(W - s, int(cx - keep))
        lo_y, hi_y = max(0, math.ceil(cy + keep) - s), min(H - s, int(cy - keep))
        x0 = int(torch.randint(lo_x, max(lo_x, hi_x) + 1, (), generator=generator))
        y0 = int(torch.randint(lo_y, max(lo_y, hi_y) + 1, (), generator=generator))
        out.append(images[i:i + 1, :, y0:y0 + s, x0:x0 + s])
    return torch.cat([resize(c, size) for c in out])


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN)[:, None, None]
    std = torch.tensor(CLIP_STD)[:, None, None]
    return (images - mean) / std


def soft_targets(b: world.Batch) -> torch.Tensor:
    """[T, I] targets: caption t is a positive for picture i when it is true of it."""
    return world.caption_matches(b.template, b.shape, b.colour, b.background,
                                 b.shape, b.colour, b.background).float()


def clip_loss(model, tokenizer, b: world.Batch, images: torch.Tensor) -> torch.Tensor:
    """Symmetric contrastive loss where every true caption counts as a positive (soft targets)."""
    img = F.normalize(model.encode_image(normalize(images)), dim=-1)
    txt = F.normalize(model.encode_text(tokenizer(b.captions)), dim=-1)
    logits = model.logit_scale.exp().clamp(max=100) * txt @ img.T  # [T, I]
    match = soft_targets(b)
    t2i = -(F.log_softmax(logits, 1) * match / match.sum(1, keepdim=True)).sum(1).mean()
    i2t = -(F.log_softmax(logits.T, 1) * match.T / match.T.sum(1, keepdim=True)).sum(1).mean()
    return (t2i + i2t) / 2


def attack(model, tokenizer, b: world.Batch, images: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """The pictures moved, each within an L2 ball of radius `eps`, so as to raise the contrastive loss.

    Training on these (with their true captions) makes the CLIP robust, and a robust model's
    gradients point at changes a person would see, which is what guidance follows."""
    delta = torch.zeros_like(images, requires_grad=True)
    for _ in range(steps):
        (g,) = torch.autograd.grad(clip_loss(model, tokenizer, b, (images + delta).clamp(0, 1)), delta)
        with torch.no_grad():
            delta += 1.25 * eps / steps * g / g.flatten(1).norm(dim=1).clamp(min=1e-12)[:, None, None, None]
            delta *= (eps / delta.flatten(1).norm(dim=1).clamp(min=1e-12)).clamp(max=1)[:, None, None, None]
    return (images + delta.detach()).clamp(0, 1)


def train_clip(steps: int, seed: int = 0, batch: int = 128, lr: float = 1e-3, config: dict | None = None,
               log_every: int = 50, init: str | Path | None = None, blobs: float = 0.0, vqgan=None,
               vqgan_p: float = 0.5, warmup: int = 100, whole: bool = False,
               adv_eps: float = 0.0, adv_steps: int = 2):
    """Train a small open_clip CLIP on world pictures and captions; returns (model, config, history).

    init: a saved CLIP folder to fine-tune from (its config is used).  blobs: share of each batch
    that is irregular blob pictures (hard negatives for the shape words, see `world.make_blobs`).
    vqgan: a VQGAN whose reconstructions replace a share `vqgan_p` of the pictures (world and blob
    alike), so the CLIP also sees its textures and an artefact is not a cue for either kind.
    whole: crops never cut the shape (see `random_crops`).  adv_eps: train on `attack`ed crops."""
    import open_clip

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 2)
    if init is not None:
        config = json.loads((Path(init) / "open_clip_config.json").read_text())["model_cfg"]
        model = open_clip.create_model(f"local-dir:{init}").float().train()
    else:
        config = config or clip_config()
        model = open_clip.CLIP(**config).train()
    tokenizer = open_clip.SimpleTokenizer(context_length=config["text_cfg"]["context_length"])
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98))
    size = config["vision_cfg"]["image_size"]
    n_blobs = int(round(batch * blobs))
    history, t0 = [], time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        b = world.make_batch(batch - n_blobs, g)
        if n_blobs:
            b = world.concat(b, world.make_blobs(n_blobs, g))
        images = b.images
        if vqgan is not None and vqgan_p > 0:
            pick = torch.rand(len(images), generator=g) < vqgan_p
            if pick.any():
                with torch.no_grad():
                    images = images.clone()
                    images[pick] = vqgan.decode(vqgan.encode(images[pick]))
        crops = random_crops(images, b, size, g, whole=whole)
        if adv_eps:
            crops = attack(model, tokenizer, b, crops, adv_eps, adv_steps)
        loss = clip_loss(model, tokenizer, b, crops)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history.append(loss.item())
        if (step + 1) % log_every == 0 or step == steps - 1:
            recent = sum(history[-log_every:]) / len(history[-log_every:])
            log(f"clip step {step + 1}/{steps} loss {recent:.4f} scale {model.logit_scale.exp().item():.1f} "
                f"{time.time() - t0:.0f}s")
    return model.eval().requires_grad_(False), config, history


@torch.no_grad()
def zero_shot(model, tokenizer, n: int = 512, seed: int = 54321, crops: bool = False) -> dict:
    """Zero-shot accuracy on held-out pictures: pick the best of all full captions, score each label."""
    size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    b = world.make_batch(n, seed)
    images = random_crops(b.images, b, size, torch.Generator().manual_seed(seed)) if crops \
        else resize(b.images, size)
    captions, rows = world.all_full_captions()
    img = F.normalize(model.encode_image(normalize(images)), dim=-1)
    txt = F.normalize(model.encode_text(tokenizer(captions)), dim=-1)
    pred = rows[(img @ txt.T).argmax(1)]
    shape, colour, bg = pred[:, 0] == b.shape, pred[:, 1] == b.colour, pred[:, 2] == b.background
    return {"shape": float(shape.float().mean()), "colour": float(colour.float().mean()),
            "background": float(bg.float().mean()), "all": float((shape & colour & bg).float().mean())}


# ------------------------------------------------------------------------------------------ files


def save_clip(model, config: dict, folder: str | Path) -> None:
    """Write open_clip_config.json + open_clip_model.safetensors (fp16) for `local-dir:` loading."""
    from safetensors.torch import save_file

    from ..outputs import atomic_write

    folder = Path(folder)
    meta = {"model_cfg": config,
            "preprocess_cfg": {"mean": list(CLIP_MEAN), "std": list(CLIP_STD), "interpolation": "bilinear",
                               "resize_mode": "squash"}}
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    with atomic_write(folder / "open_clip_model.safetensors", overwrite=True) as tmp:
        save_file(state, str(tmp))
    with atomic_write(folder / "open_clip_config.json", overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2) + "\n")


def save_grid(path: str | Path, rows: list[torch.Tensor], scale: int = 4) -> None:
    """Save rows of [N, 3, H, W] images as one PNG (for looking at reconstructions)."""
    from ..outputs import save_png

    grid = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)
    grid = F.interpolate(grid[None], scale_factor=scale, mode="nearest")[0]
    save_png(path, grid, overwrite=True)


def average_weights(models) -> dict:
    """The element-wise mean of same-shaped models' weights (a "model soup": fine-tunes of one start
    that learnt different things, here robustness at different radii, average into one model that
    guides better than either, at the size and speed of one)."""
    states = [m.state_dict() for m in models]
    return {k: torch.stack([s[k].float() for s in states]).mean(0).to(states[0][k].dtype) for k in states[0]}


def run_clip_stage(stage: dict, seed: int, out: Path, scratch: bool) -> list[Path]:
    """Train the CLIP from scratch, or fine-tune the one in `out/clip`, as `stage` says; save it there.
    A tuple of `adv_eps` radii fine-tunes once per radius, from the same start and seed, and saves the
    average of their weights."""
    import open_clip

    stage = dict(stage)
    if stage.get("vqgan_p"):  # reconstructions by the VQGAN in `out`
        from ..models.vqgan import load_vqgan

        stage["vqgan"] = load_vqgan(out / "vqgan.yaml", out / "vqgan.ckpt")
    steps, radii = stage.pop("steps"), stage.pop("adv_eps", 0.0)
    models = [train_clip(steps, seed, init=None if scratch else out / "clip", adv_eps=eps, **stage)
              for eps in (radii if isinstance(radii, (tuple, list)) else [radii])]
    model, cfg, _ = models[0]
    if len(models) > 1:
        model.load_state_dict(average_weights([m for m, _, _ in models]))
    tok = open_clip.SimpleTokenizer(context_length=cfg["text_cfg"]["context_length"])
    log(f"clip zero-shot full pictures: {zero_shot(model, tok)}")
    log(f"clip zero-shot crops: {zero_shot(model, tok, crops=True)}")
    save_clip(model, cfg, out / "clip")
    return [out / "clip" / "open_clip_config.json", out / "clip" / "open_clip_model.safetensors"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clipguide.tiny.train", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for vqgan.yaml, vqgan.ckpt and clip/")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vqgan-steps", type=int, default=2000)
    p.add_argument("--clip-steps", type=int, default=2000)
    p.add_argument("--clip-finetunes", type=int, default=len(CLIP_FINETUNES),
                   help=f"how many of the {len(CLIP_FINETUNES)} CLIP fine-tuning stages to run after --clip-steps")
    p.add_argument("--first-finetune", type=int, default=1,
                   help="start at this fine-tuning stage (1-based): the CLIP in --out has had the ones before")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--preview", help="write a PNG of reconstructions / random-code decodes here")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    t0 = time.time()
    written = []
    if a.vqgan_steps > 0:
        from ..models.vqgan import save_vqgan

        model, cfg, _ = train_vqgan(a.vqgan_steps, a.seed)
        log(f"vqgan held-out: {vqgan_eval(model)}")
        save_vqgan(model, cfg, out / "vqgan.yaml", out / "vqgan.ckpt", dtype=torch.float16)
        written += [out / "vqgan.yaml", out / "vqgan.ckpt"]
        if a.preview:
            b = world.make_batch(8, 999)
            with torch.no_grad():
                rec = model.decode(model.encode(b.images))
                rnd = model.decode(model.random_latent(16, 16, 8, torch.Generator().manual_seed(0)))
            save_grid(a.preview, [b.images, rec, rnd])
    stages = (([{"steps": a.clip_steps}] if a.clip_steps > 0 else [])
              + list(CLIP_FINETUNES[a.first_finetune - 1:a.clip_finetunes]))
    for k, stage in enumerate(stages):
        written += run_clip_stage(stage, a.seed, out, scratch=k == 0 and a.clip_steps > 0)
    for f in written:
        log(f"{sha256_of(f)}  {f}  ({f.stat().st_size} bytes)")
    log(f"done in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
