"""CLIP models through open_clip: `ARCH:PRETRAINED` tags, `ARCH:/path/to/weights`, `local-dir:`/`hf-hub:`
schemas, and names from our own table (the built-in tiny model is a `local-dir`).

`ARCH:random` builds the architecture with random weights (for benchmarks and tests only).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import open_clip
import torch

from ..errors import UserError
from .registry import HERE, cache_dir, checksum, find_entry, load_table, suggest, verify_builtin

SCHEMAS = ("local-dir:", "hf-hub:")


@dataclass
class Clip:
    """A frozen CLIP model with what guidance needs from it."""

    spec: str
    model: torch.nn.Module
    tokenizer: object
    image_size: int
    mean: torch.Tensor
    std: torch.Tensor
    sha256: str | None = None
    context_length: int = 77
    extra: dict = field(default_factory=dict)

    def to(self, device):
        self.model.to(device)
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def token_count(self, text: str) -> int:
        encode = getattr(self.tokenizer, "encode", None)
        return len(encode(text)) + 2 if encode else 0

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        device = self.mean.device
        tokens = self.tokenizer(texts).to(device)
        return self.model.encode_text(tokens).float()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """images in [0, 1] at `image_size` -> embeddings (differentiable)."""
        return self.model.encode_image((images - self.mean) / self.std)

    @torch.no_grad()
    def embed_picture(self, image: torch.Tensor) -> torch.Tensor:
        """A whole picture [1, 3, H, W] in [0, 1] as one embedding (for image prompts)."""
        x = torch.nn.functional.interpolate(image, size=(self.image_size, self.image_size), mode="bicubic",
                                            antialias=True, align_corners=False).clamp(0, 1)
        return self.encode_image(x).float()


def split_spec(spec: str) -> tuple[str, str | None]:
    """'ViT-B-32:openai' -> ('ViT-B-32', 'openai'); schemas and bare names keep their whole text."""
    if spec.startswith(SCHEMAS) or ":" not in spec:
        return spec, None
    arch, pretrained = spec.split(":", 1)
    return arch, pretrained


def _reachable(url: str, timeout: float = 5.0) -> bool:
    host = urllib.parse.urlparse(url).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _quiet_hub(offline: bool):
    """Silence the hub's retry chatter; when offline, only look in the local hub cache."""
    import huggingface_hub.constants as hub

    saved = hub.HF_HUB_OFFLINE
    loggers = [logging.getLogger(n) for n in ("", "huggingface_hub", "huggingface_hub.utils._http")]
    levels = [lg.level for lg in loggers]
    hub.HF_HUB_OFFLINE = saved or offline
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = saved
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _create(spec: str, arch: str, pretrained: str | None, cache: Path):
    """(model, sha256 of the weights file or None)."""
    if arch.startswith("local-dir:"):
        folder = Path(arch.removeprefix("local-dir:")).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise UserError(f"CLIP folder {folder} has no open_clip_config.json", "point local-dir: at an open_clip model folder")
        with _quiet_hub(True):
            model = open_clip.create_model(f"local-dir:{folder}")
        weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) + sorted(folder.glob("*.pt*"))
        return model, checksum(weights[0], cache) if weights else None
    if arch.startswith("hf-hub:"):
        online = _reachable("https://huggingface.co")
        try:
            with _quiet_hub(not online):
                return open_clip.create_model(arch, cache_dir=str(cache / "open_clip")), None
        except Exception as e:
            raise UserError(f"cannot load CLIP {spec} ({str(e).splitlines()[0][:160]})",
                            "no network? use --model tiny, or download the model and pass local-dir:PATH") from e
    if arch not in open_clip.list_models():
        raise UserError(f"unknown CLIP architecture {arch!r}",
                        f"{suggest(arch, open_clip.list_models())}see clipguide --list-models")
    if pretrained in (None, "", "random"):
        if pretrained is None:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            raise UserError(f"CLIP spec {spec!r} names no weights",
                            f"write ARCH:PRETRAINED, e.g. {arch}:{tags[0] if tags else 'openai'}, or {arch}:/path/to/weights")
        with _quiet_hub(True):
            return open_clip.create_model(arch, pretrained=None), None
    path = Path(pretrained).expanduser()
    if path.is_file():
        with _quiet_hub(True):
            try:
                return open_clip.create_model(arch, pretrained=str(path)), checksum(path, cache)
            except (RuntimeError, KeyError, ValueError) as e:
                raise UserError(f"CLIP weights {path} do not fit architecture {arch} ({str(e).splitlines()[0][:120]})",
                                "check ARCH matches the file") from e
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained not in tags:
        if "/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
            raise UserError(f"CLIP weights not found: {pretrained}", "check the path")
        raise UserError(f"unknown weights {pretrained!r} for CLIP {arch}",
                        f"{suggest(pretrained, tags)}choose from: {', '.join(tags[:8])}")
    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    online = _reachable(cfg.get("url") or "https://huggingface.co")
    with _quiet_hub(not online):
        try:
            model = open_clip.create_model(arch, pretrained=pretrained, cache_dir=str(cache / "open_clip"))
            weights = open_clip.pretrained.download_pretrained(cfg, cache_dir=str(cache / "open_clip"))
        except Exception as e:
            raise UserError(f"cannot download CLIP weights {spec}" + ("" if online else " (no network)"),
                            "run offline with --model tiny, or pass a local file: --clip "
                            f"{arch}:/path/to/weights") from e
    return model, checksum(weights, cache) if weights else None


def load_clip(spec: str, device="cpu", table: dict | None = None, cache: Path | None = None) -> Clip:
    table = table or load_table()
    cache = cache or cache_dir()
    found = find_entry(table.get("clip", {}), spec)
    if found:
        name, entry = found
        folder = HERE / entry["local_dir"]
        for file, sha in entry.get("sha256", {}).items():
            verify_builtin(folder / file, sha, f"the built-in CLIP {name!r}", cache)
        arch, pretrained = f"local-dir:{folder}", None
    else:
        arch, pretrained = split_spec(spec)
    model, sha = _create(spec, arch, pretrained, cache)
    model = model.eval().requires_grad_(False).to(device)
    pre = open_clip.get_model_preprocess_cfg(model)
    size = pre.get("size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else size
    tokenizer = open_clip.get_tokenizer(arch if arch.startswith(SCHEMAS) else arch)
    mean = torch.tensor(pre.get("mean", (0.5, 0.5, 0.5)), device=device).view(1, 3, 1, 1)
    std = torch.tensor(pre.get("std", (0.5, 0.5, 0.5)), device=device).view(1, 3, 1, 1)
    return Clip(spec, model, tokenizer, int(size), mean, std, sha, getattr(tokenizer, "context_length", 77))
