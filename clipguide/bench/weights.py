"""The benchmark's models: random weights of the real architectures, written once in the real file formats.

Both loops load the same numbers:

- CLIP: an open_clip architecture (default ViT-B-32 with QuickGELU, the activation of OpenAI's
  ViT-B/32) with seeded random weights, rounded to fp16 as OpenAI's released checkpoints are.  One
  state dict in OpenAI's key layout serves both: `clip.load(path, jit=False)` (OpenAI's own code, what
  the classic loop uses) and an open_clip `local-dir:` folder (config json + safetensors, what
  clipguide loads).  `check_clip` confirms that the two implementations give the same embeddings.
- VQGAN: the shipped f16-16384 config with seeded random weights (codebook spread like a trained
  one's), as a yaml + Lightning-style checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

SHIPPED_VQGAN = Path(__file__).parent.parent / "models" / "configs" / "vqgan_imagenet_f16_16384.yaml"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Files:
    """Where a benchmark's weights are; every variant loads from here."""

    root: Path

    @property
    def openai(self) -> Path:  # OpenAI's format: what clip.load reads
        return self.root / "clip" / "openai.pt"

    @property
    def clip_dir(self) -> Path:  # open_clip's local-dir format
        return self.root / "clip"

    @property
    def vqgan_config(self) -> Path:
        return self.root / "vqgan" / "model.yaml"

    @property
    def vqgan_ckpt(self) -> Path:
        return self.root / "vqgan" / "last.ckpt"


def clip_config(arch: str) -> dict:
    """An open_clip model config: a built-in name (e.g. ViT-B-32-quickgelu) or a JSON file of one."""
    import open_clip

    path = Path(arch)
    cfg = json.loads(path.read_text()) if path.suffix == ".json" and path.is_file() else open_clip.get_model_config(arch)
    if cfg is None:
        raise ValueError(f"unknown open_clip architecture {arch!r}")
    return dict(cfg.get("model_cfg", cfg))


def write_clip(files: Files, arch: str, seed: int) -> None:
    """Seeded random CLIP weights, rounded to fp16, in OpenAI's format and as an open_clip local-dir."""
    import open_clip
    from safetensors.torch import save_file

    cfg = clip_config(arch)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg)
    sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    files.clip_dir.mkdir(parents=True, exist_ok=True)
    torch.save(sd, files.openai)
    save_file(sd, str(files.clip_dir / "open_clip_model.safetensors"))
    pre = {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic", "resize_mode": "shortest"}
    (files.clip_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": pre}))


def write_vqgan(files: Files, config: str | Path, seed: int) -> None:
    """Seeded random VQGAN weights of `config` as yaml + checkpoint (codebook spread like a trained one)."""
    from ..models.vqgan import read_config, save_vqgan, vqgan_from_config

    cfg = read_config(config)
    torch.manual_seed(seed)
    model = vqgan_from_config(cfg)
    with torch.no_grad():
        model.codebook.normal_()
    files.vqgan_config.parent.mkdir(parents=True, exist_ok=True)
    save_vqgan(model, cfg, files.vqgan_config, files.vqgan_ckpt)


def write(root: Path, arch: str = "ViT-B-32-quickgelu", vqgan_config: str | Path = SHIPPED_VQGAN,
          seed: int = 0) -> Files:
    """Write both models under `root` (kept if already there, e.g. a reused --weights-dir)."""
    files = Files(Path(root))
    marker = files.root / "made-from.json"
    made = {"arch": str(arch), "vqgan_config": str(vqgan_config), "seed": seed}
    if marker.is_file() and json.loads(marker.read_text()) == made and files.openai.is_file():
        return files
    write_clip(files, arch, seed)
    write_vqgan(files, vqgan_config, seed)
    marker.write_text(json.dumps(made))
    return files


def load_openai(files: Files, device):
    """OpenAI's CLIP as its users load it: `clip.load(file, device, jit=False)` (fp16 weights on CUDA)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pkg_resources' deprecation, jit-archive fallback
        import clip

        model, _ = clip.load(str(files.openai), device=device, jit=False)
    return model.eval().requires_grad_(False), clip.tokenize


def check_clip(files: Files, n: int = 2) -> float:
    """Max relative difference of the image embeddings of OpenAI's and open_clip's CLIP on the same input."""
    from ..models.clip import load_clip

    oai, _ = load_openai(files, "cpu")
    ours = load_clip(f"local-dir:{files.clip_dir}", "cpu")
    size = oai.visual.input_resolution
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = oai.encode_image(x).float(), ours.model.encode_image(x).float()
    return float((a - b).abs().max() / b.abs().max())
