"""VQGAN as a plain `nn.Module` built from taming's modules, reading the published checkpoint format.

A published VQGAN is an OmegaConf yaml (`model.target` is taming's `VQModel` or `GumbelVQ`, with
`model.params`) plus a Lightning `.ckpt` whose `state_dict` also holds the training loss (`loss.*`),
which is ignored, as is any other key the model does not have (taming itself loads with strict=False).
A published transformer (`Net2NetTransformer`: S-FLCKR, FacesHQ, COCO) holds its VQGAN as
`first_stage_config` and `first_stage_model.*` weights; only that part is built and loaded.
`taming.models` itself is never imported: it needs an old pytorch-lightning.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from taming.modules.diffusionmodules.model import AttnBlock, Decoder, Encoder
from taming.modules.vqvae.quantize import GumbelQuantize, VectorQuantizer2

from ..errors import UserError
from .checkpoint import cast_floats, load_weights, save_weights, state_dict_of

KINDS = {"VQModel": "vq", "GumbelVQ": "gumbel"}


class _ClampWithGrad(torch.autograd.Function):
    """Clamp to [0, 1]; let gradients through unless they push a value further out of range."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(0, 1)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (grad * (x - x.clamp(0, 1)) >= 0)


class Attention(AttnBlock):
    """taming's AttnBlock -- the same weights under the same names, the same softmax(q k / sqrt(c)) v -- through
    `F.scaled_dot_product_attention`, which never holds the cells x cells matrix (taming's forward does: 256 GiB
    for a 512 x 512 latent); forward and backward memory grow with the cells, not their square."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, height, width = x.shape
        # [b, 1, cells, c], contiguous: strided inputs send CPU attention down the path that keeps the matrix
        q, k, v = (f(h).reshape(b, 1, c, -1).transpose(-1, -2).contiguous() for f in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # [b, 1, cells, c]
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, height, width))


def flat_attention(module: nn.Module) -> nn.Module:
    """Every taming AttnBlock in `module` computes through `Attention` (it adds no parameters, so the class is
    swapped in place and checkpoints load as before)."""
    for m in module.modules():
        if type(m) is AttnBlock:
            m.__class__ = Attention
    return module


class VQGAN(nn.Module):
    """Encoder, decoder and codebook of a taming VQGAN; attribute names match the checkpoints."""

    def __init__(self, kind: str, ddconfig: dict, n_embed: int, embed_dim: int, kl_weight: float = 1e-8):
        super().__init__()
        if kind not in KINDS.values():
            raise ValueError(f"unknown VQGAN kind {kind!r}")
        self.kind = kind
        ddconfig = dict(ddconfig)
        self.encoder = flat_attention(Encoder(**ddconfig))
        with contextlib.redirect_stdout(io.StringIO()):  # taming's Decoder prints its z shape
            self.decoder = flat_attention(Decoder(**ddconfig))
        z = ddconfig["z_channels"]
        self.quant_conv = nn.Conv2d(z, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z, 1)
        if kind == "gumbel":
            self.quantize = GumbelQuantize(z, embed_dim, n_embed=n_embed, kl_weight=kl_weight, temp_init=1.0)
        else:
            self.quantize = VectorQuantizer2(n_embed, embed_dim, beta=0.25)
        self.factor = 2 ** (len(ddconfig["ch_mult"]) - 1)

    @property
    def codebook(self) -> torch.Tensor:
        """[n_embed, embed_dim] code vectors."""
        return self.quantize.embed.weight if self.kind == "gumbel" else self.quantize.embedding.weight

    def latent_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel min and max of the codebook, shaped [1, C, 1, 1] for clamping a latent."""
        cb = self.codebook.detach()
        return cb.min(0).values[None, :, None, None], cb.max(0).values[None, :, None, None]

    def codebook_norms(self) -> torch.Tensor:
        """[n_embed] squared lengths of the code vectors (for `quantize_st`, while the codebook is fixed)."""
        return self.codebook.detach().pow(2).sum(-1)

    def quantize_st(self, z: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
        """Snap each latent vector to its nearest code; the gradient passes straight through.

        `norms`: `codebook_norms()` computed once by a caller that snaps many latents to the same
        codebook (the guidance loop), instead of again on each call."""
        cb = self.codebook
        flat = z.movedim(1, -1)
        with torch.no_grad():  # only the argmin is used: nothing here needs a gradient
            norms = self.codebook_norms() if norms is None else norms
            d = flat.pow(2).sum(-1, keepdim=True) - 2 * flat @ cb.T + norms
        q = cb[d.argmin(-1)].movedim(-1, 1)
        return z + (q - z).detach()

    def decode(self, zq: torch.Tensor) -> torch.Tensor:
        """Quantised latent [B, C, h, w] -> image [B, 3, h*f, w*f] in [0, 1]."""
        x = self.decoder(self.post_quant_conv(zq))
        return _ClampWithGrad.apply(x.add(1).div(2))

    @torch.no_grad()
    def encode_unsnapped(self, image: torch.Tensor) -> torch.Tensor:
        """Image in [0, 1] -> the latent before `quantize_st` snaps it to codes (a Gumbel VQGAN picks
        its codes from logits, so for it these are codes already)."""
        h = self.quant_conv(self.encoder(image * 2 - 1))
        if self.kind == "gumbel":
            return self.quantize.embed(self.quantize.proj(h).argmax(1)).movedim(-1, 1)
        return h

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Image in [0, 1] -> quantised latent (deterministic for both kinds)."""
        z = self.encode_unsnapped(image)
        return z if self.kind == "gumbel" else self.quantize_st(z)

    def random_latent(self, h: int, w: int, batch: int = 1, generator: torch.Generator | None = None):
        """Random code vectors on an h x w grid: the classic starting point."""
        cb = self.codebook.detach()
        idx = torch.randint(cb.shape[0], (batch, h, w), generator=generator, device="cpu").to(cb.device)
        return cb[idx].movedim(-1, 1).contiguous()


FIRST_STAGE = "first_stage_model."


def _first_stage(model: dict) -> dict:
    """The VQGAN part of a config's `model`: itself, or a transformer's `first_stage_config`."""
    if model["target"].rsplit(".", 1)[-1] == "Net2NetTransformer":
        return model["params"]["first_stage_config"]
    return model


def first_stage_weights(sd: dict) -> dict:
    """A transformer checkpoint's VQGAN weights (first_stage_model.*, prefix dropped); others unchanged."""
    if any(k.startswith(FIRST_STAGE) for k in sd):
        return {k[len(FIRST_STAGE):]: v for k, v in sd.items() if k.startswith(FIRST_STAGE)}
    return sd


def vqgan_from_config(config) -> VQGAN:
    """Build (random-weight) VQGAN from a taming config mapping (the yaml's top level)."""
    cfg = OmegaConf.to_container(OmegaConf.create(config), resolve=True)
    try:
        model = _first_stage(cfg["model"])
        target = model["target"].rsplit(".", 1)[-1]
        params = model["params"]
        kind = KINDS[target]
        return VQGAN(kind, params["ddconfig"], int(params["n_embed"]), int(params["embed_dim"]),
                     float(params.get("kl_weight", 1e-8)))
    except (KeyError, TypeError, AttributeError) as e:
        raise UserError(f"VQGAN config is not a taming VQModel/GumbelVQ config (missing {e})",
                        "pass the model.yaml published with the checkpoint via --vqgan-config") from e


def read_config(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"VQGAN config not found: {path}", "pass the model.yaml that belongs to the checkpoint")
    try:
        return OmegaConf.load(path)
    except Exception as e:  # yaml errors come in many types
        raise UserError(f"VQGAN config {path} is not valid YAML ({type(e).__name__})",
                        "pass the model.yaml that belongs to the checkpoint") from e


def load_vqgan(config_path: str | Path, ckpt_path: str | Path) -> VQGAN:
    """Read a published (or clipguide-trained) VQGAN: yaml + Lightning ckpt.

    As taming's own `init_from_ckpt` (which loads with strict=False), keys the model does not have are
    ignored: the training loss (`loss.*`), or whatever else a checkpoint carries; a key the model needs
    that the checkpoint lacks is an error.  The model is built on the meta device (no memory, no random
    initialisation to throw away) and takes copies of the checkpoint's tensors (memory-mapped from the
    file, so the rest of a big file is never read): the same numbers, in the same layout, as building it
    and copying them in, without the ~1 s of random init of a 16384-code VQGAN."""
    config = read_config(config_path)
    with torch.device("meta"):
        model = vqgan_from_config(config)
    sd = first_stage_weights(state_dict_of(load_weights(ckpt_path, "VQGAN checkpoint")))
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    if missing:
        extra = [k for k in sd if k not in own and not k.startswith("loss.")]
        raise UserError(
            f"VQGAN checkpoint {ckpt_path} does not fit config {config_path} "
            f"({len(missing)} missing keys e.g. {missing[:2]}, {len(extra)} unexpected e.g. {extra[:2]})",
            "pass the config published with this checkpoint via --vqgan-config",
        )
    wrong = [k for k, v in own.items() if v.shape != sd[k].shape]
    if wrong:
        raise UserError(f"VQGAN checkpoint {ckpt_path} has tensors of other shapes than config {config_path} "
                        f"(e.g. {wrong[0]}: {tuple(sd[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)})",
                        "pass the config published with this checkpoint via --vqgan-config")
    sd = {k: sd[k].to(dtype=v.dtype, memory_format=torch.contiguous_format, copy=True) for k, v in own.items()}
    model.load_state_dict(sd, assign=True)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):  # a buffer no checkpoint holds
        model = vqgan_from_config(config)
        model.load_state_dict(sd)
    return model.eval().requires_grad_(False)


def save_vqgan(model: VQGAN, config, config_path: str | Path, ckpt_path: str | Path, extra: dict | None = None,
               dtype: torch.dtype | None = None):
    """Write yaml + ckpt in the published format (each atomically), e.g. for a trained tiny model;
    `dtype` (e.g. torch.float16, half the file) is what floating-point weights are stored as."""
    from ..files import atomic_write

    text = OmegaConf.to_yaml(OmegaConf.create(config))
    with atomic_write(config_path, overwrite=True) as tmp:
        Path(tmp).write_text(text)
    save_weights({"state_dict": cast_floats(model.state_dict(), dtype), **(extra or {})}, ckpt_path)
