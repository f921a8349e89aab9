"""Training the tiny CLIP (an open_clip ViT from a small config, with its real BPE tokenizer) on the tiny world."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import world
from .schedule import lr_at, report

CLIP_IMAGE_SIZE = 32
CLIP_MEAN = (0.5, 0.5, 0.5)
CLIP_STD = (0.25, 0.25, 0.25)
CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": CLIP_IMAGE_SIZE, "patch_size": 4, "width": 96, "head_width": 32, "layers": 4},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
}


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
        report("clip", "loss", step, steps, history, log_every, t0,
               lambda: f"scale {model.logit_scale.exp().item():.1f}")
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


def average_weights(models) -> dict:
    """The element-wise mean of same-shaped models' weights (a "model soup": fine-tunes of one start
    that learnt different things, here robustness at different radii, average into one model that
    guides better than either, at the size and speed of one)."""
    states = [m.state_dict() for m in models]
    return {k: torch.stack([s[k].float() for s in states]).mean(0).to(states[0][k].dtype) for k in states[0]}


WEIGHTS_FILE = "open_clip_pytorch_model.bin"


def world_tokens(tokenizer) -> torch.Tensor:
    """The token ids that occur in some caption of the world (padding, start and end included): the
    only rows of the token embedding that training ever moves."""
    return tokenizer(world.all_captions()).unique()


def clip_files(folder: str | Path) -> list[Path]:
    return [Path(folder) / "open_clip_config.json", Path(folder) / WEIGHTS_FILE]


def save_clip(model, config: dict, folder: str | Path) -> None:
    """Write open_clip_config.json + open_clip_pytorch_model.bin for `local-dir:` loading.

    Weights are stored in half precision, in a deflated PyTorch file (`save_weights`).  The token
    embedding has a row for each of the tokenizer's 49,408 tokens, but the world's captions use a
    couple of dozen; the other rows never got a gradient (they hold their random start), so they are
    stored as zeros: a word the world lacks means nothing to the model, and the file is ~1 MB, not 7."""
    import open_clip

    from ..models.checkpoint import cast_floats, save_weights
    from ..files import atomic_write

    folder = Path(folder)
    meta = {"model_cfg": config,
            "preprocess_cfg": {"mean": list(CLIP_MEAN), "std": list(CLIP_STD), "interpolation": "bilinear",
                               "resize_mode": "squash"}}
    state = cast_floats(model.state_dict(), torch.float16)
    table = state["token_embedding.weight"] = state["token_embedding.weight"].clone()  # not the model's own
    unused = torch.ones(len(table), dtype=torch.bool)
    unused[world_tokens(open_clip.SimpleTokenizer(context_length=config["text_cfg"]["context_length"]))] = False
    table[unused] = 0
    save_weights(state, folder / WEIGHTS_FILE, deflate=True)
    with atomic_write(folder / "open_clip_config.json", overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2) + "\n")
    for stale in folder.glob("*.safetensors"):  # open_clip would load one of these first
        stale.unlink()
