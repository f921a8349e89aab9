"""Tiny random-weight models in the real file formats, for the tests."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

from clipguide.models.vqgan import vqgan_from_config

CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def vqgan_config(target: str = "VQModel", n_embed: int = 64, embed_dim: int = 8) -> dict:
    params = {
        "embed_dim": embed_dim, "n_embed": n_embed,
        "ddconfig": {"double_z": False, "z_channels": embed_dim, "resolution": 32, "in_channels": 3, "out_ch": 3,
                     "ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0},
        "lossconfig": {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator"},
    }
    if target == "GumbelVQ":
        params["kl_weight"] = 1e-8
    return {"model": {"base_learning_rate": 4.5e-6, "target": f"taming.models.vqgan.{target}", "params": params}}


def _adam_state(tensors: list) -> dict:
    """The state dict of an Adam optimiser that has taken a step over copies of `tensors` (as Lightning saves it)."""
    params = [torch.nn.Parameter(t.detach().clone().float()) for t in tensors]
    opt = torch.optim.Adam(params, lr=4.5e-6, betas=(0.5, 0.9))
    for q in params:
        q.grad = torch.ones_like(q)
    opt.step()
    return opt.state_dict()


def lightning_ckpt(state_dict: dict, path: Path, legacy: bool = False) -> None:
    """Save like a Lightning checkpoint: loss.* keys, pickled Lightning callback classes and objects, and the
    states of the two optimisers taming trains a VQGAN with; `legacy`: in PyTorch's pre-1.6 (non-zip) format."""
    mod = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:
        def __init__(self):
            self.best_model_score = torch.tensor(0.5)

    ModelCheckpoint.__module__ = mod.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    mod.ModelCheckpoint = ModelCheckpoint
    saved = sys.modules.get(mod.__name__)
    sys.modules[mod.__name__] = mod
    try:
        sd = dict(state_dict)
        sd["loss.discriminator.main.0.weight"] = torch.randn(4, 3, 4, 4)
        sd["loss.logvar"] = torch.zeros(())
        weights = [v for v in state_dict.values() if v.is_floating_point()]
        torch.save({"epoch": 3, "global_step": 1000, "pytorch-lightning_version": "1.0.8", "state_dict": sd,
                    "callbacks": {ModelCheckpoint: {"best_model_score": 0.5}}, "hparams": ModelCheckpoint(),
                    "optimizer_states": [_adam_state(w) for w in (weights[:6], weights[6:8]) if w], "lr_schedulers": []},
                   path, _use_new_zipfile_serialization=not legacy)
    finally:
        if saved is None:
            del sys.modules[mod.__name__]
        else:
            sys.modules[mod.__name__] = saved


def make_net2net(folder: Path, transformer_floats: int = 4096) -> tuple[Path, Path, dict]:
    """(yaml, ckpt, the VQGAN's state dict) of a random tiny `Net2NetTransformer` as taming publishes one
    (S-FLCKR, FacesHQ): its VQGAN as first_stage_model.*, a GPT of `transformer_floats` float32 numbers as
    transformer.*, a conditioning stage, the permuter, and the optimiser states of all of it."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    cfg = vqgan_config("VQModel")
    net2net = {"model": {"target": "taming.models.cond_transformer.Net2NetTransformer",
                         "params": {"first_stage_config": cfg["model"], "cond_stage_config": "__is_first_stage__",
                                    "transformer_config": {"target": "taming.modules.transformer.mingpt.GPT"}}}}
    (folder / "project.yaml").write_text(yaml.safe_dump(net2net))
    torch.manual_seed(1)
    vqgan = vqgan_from_config(cfg).state_dict()
    sd = {f"first_stage_model.{k}": v for k, v in vqgan.items()}
    sd |= {f"cond_stage_model.{k}": v for k, v in vqgan.items()}  # "__is_first_stage__": the same VQGAN again
    sd["transformer.tok_emb.weight"] = torch.randn(transformer_floats // 64, 64)
    sd["transformer.blocks.0.attn.mask"] = torch.ones(1, 1, 8, 8)
    sd["permuter.forward_shuffle_idx"] = torch.arange(16)
    lightning_ckpt(sd, folder / "last.ckpt")
    return folder / "project.yaml", folder / "last.ckpt", vqgan


def make_vqgan(folder: Path, target: str = "VQModel", seed: int = 0) -> tuple[Path, Path]:
    """(yaml, ckpt) of a random tiny VQGAN (factor 4) in the published format."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = vqgan_config(target)
    model = vqgan_from_config(cfg)
    with torch.no_grad():  # spread the codebook so random codes decode to varied images
        model.codebook.normal_()
    cfg_path, ckpt_path = folder / "model.yaml", folder / "last.ckpt"
    cfg_path.write_text(yaml.safe_dump(cfg))
    lightning_ckpt(model.state_dict(), ckpt_path)
    return cfg_path, ckpt_path


def make_clip(folder: Path, seed: int = 0) -> Path:
    """A random tiny open_clip model saved as a local-dir (config json + safetensors)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": CLIP_CFG,
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }))
    torch.manual_seed(seed)
    model = open_clip.CLIP(**CLIP_CFG)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder
