"""Training the tiny VQGAN (taming's Encoder/Decoder/VectorQuantizer2 at small widths) on the tiny world."""

from __future__ import annotations

import json
import time

import torch

from . import world
from .schedule import lr_at, report

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
        report("vqgan", "rec(L1+MSE)", step, steps, history, log_every, t0,
               lambda: f"q {(loss - rec_loss).item():.4f} restarted {restarted}")
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
