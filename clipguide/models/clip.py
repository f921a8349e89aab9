"""CLIP models through open_clip: `ARCH:PRETRAINED` tags, `ARCH:/path/to/weights`, `local-dir:`/`hf-hub:`
schemas, and names from our own table (the built-in tiny model is a `local-dir`).

Weights of tags and `hf-hub:` specs are looked up in the cache first; only a missing file makes a request
(prefetch.clip_weights), and open_clip itself then runs with the Hub offline, so a cached model loads with
no network call at all.  `ARCH:random` builds the architecture with random weights (for benchmarks and
tests only).

The activation is the one the weights were trained with: for a tag, what open_clip's pretrained config
says (`quick_gelu`: OpenAI's weights use QuickGELU); a `local-dir:`/`hf-hub:` folder's own
open_clip_config.json (its `model_cfg.quick_gelu`); `ARCH:/path/to/weights` builds ARCH as named
(`ViT-B-32-quickgelu:/path` for OpenAI-trained weights).
"""

from __future__ import annotations

import contextlib
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import open_clip
import torch

from ..errors import UserError
from .checkpoint import holds_code
from .prefetch import clip_weights
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


@contextlib.contextmanager
def _offline_hub():
    """Run open_clip with the Hub offline (it finds files in the cache only) and its retry chatter silenced."""
    import huggingface_hub.constants as hub

    saved = hub.HF_HUB_OFFLINE
    loggers = [logging.getLogger(n) for n in ("", "huggingface_hub", "huggingface_hub.utils._http")]
    levels = [lg.level for lg in loggers]
    hub.HF_HUB_OFFLINE = True
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = saved
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _local_dir(folder: Path, cache: Path):
    """(model, sha256 of its weights file) from an open_clip model folder."""
    if not (folder / "open_clip_config.json").is_file():
        raise UserError(f"CLIP folder {folder} has no open_clip_config.json", "point local-dir: at an open_clip model folder")
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) + sorted(folder.glob("*.pt*"))
    with _offline_hub():
        try:
            model = open_clip.create_model(f"local-dir:{folder}")
        except pickle.UnpicklingError as e:  # torch's weights-only unpickler refused a global
            raise (weights and holds_code(weights[0], "CLIP weights")) or UserError(
                f"cannot load the CLIP weights in {folder} ({str(e).splitlines()[0][:120]})",
                "point local-dir: at an open_clip model folder") from e
    return model, checksum(weights[0], cache) if weights else None


def trained_with_quick_gelu(arch: str, pretrained: str) -> bool:
    """Whether open_clip's own pretrained config says the tag's weights were trained with QuickGELU.

    OpenAI's weights (and some others) were; open_clip >= 2.29 still builds the architecture's own
    config (nn.GELU for ViT-B-32) for such a tag and only warns 'QuickGELU mismatch'.  Older versions
    have no `quick_gelu` key and build the openai tag through OpenAI's code, QuickGELU included."""
    return bool((open_clip.get_pretrained_cfg(arch, pretrained) or {}).get("quick_gelu", False))


def _pretrained(spec: str, arch: str, pretrained: str, cache: Path):
    """(model, sha256) for an open_clip pretrained tag, with the activation its weights were trained
    with: weights from the cache, else downloaded first."""
    got, root = clip_weights(f"{arch}:{pretrained}", cache)
    quick = trained_with_quick_gelu(arch, pretrained)
    with _offline_hub():
        try:
            return (open_clip.create_model(arch, pretrained=pretrained, cache_dir=str(root), force_quick_gelu=quick),
                    got.sha256)
        except Exception as e:  # open_clip wraps every loading problem in RuntimeError or worse
            raise holds_code(got.path, f"CLIP weights {spec}") or UserError(
                f"cannot load CLIP weights {spec} from {got.path} ({str(e).splitlines()[0][:120]})",
                f"delete {got.path} and run `clipguide --download {arch}:{pretrained}`") from e


def _create(spec: str, arch: str, pretrained: str | None, cache: Path):
    """(model, sha256 of the weights file or None, the name open_clip builds its tokenizer from)."""
    if arch.startswith("local-dir:"):
        return (*_local_dir(Path(arch.removeprefix("local-dir:")).expanduser(), cache), arch)
    if arch.startswith("hf-hub:"):
        got, _ = clip_weights(arch, cache)  # config + weights in the cache; then it is a local folder
        return (*_local_dir(got.path.parent, cache), f"local-dir:{got.path.parent}")
    if arch not in open_clip.list_models():
        raise UserError(f"unknown CLIP architecture {arch!r}",
                        f"{suggest(arch, open_clip.list_models())}see clipguide --list-models")
    if pretrained in (None, "", "random"):
        if pretrained is None:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            raise UserError(f"CLIP spec {spec!r} names no weights",
                            f"write ARCH:PRETRAINED, e.g. {arch}:{tags[0] if tags else 'openai'}, or {arch}:/path/to/weights")
        with _offline_hub():
            return open_clip.create_model(arch, pretrained=None), None, arch
    path = Path(pretrained).expanduser()
    if path.is_file():
        with _offline_hub():
            try:
                return open_clip.create_model(arch, pretrained=str(path)), checksum(path, cache), arch
            except (RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as e:
                raise holds_code(path, "CLIP weights") or UserError(
                    f"CLIP weights {path} do not fit architecture {arch} ({str(e).splitlines()[0][:120]})",
                    "check ARCH matches the file") from e
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained not in tags:
        if "/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
            raise UserError(f"CLIP weights not found: {pretrained}", "check the path")
        raise UserError(f"unknown weights {pretrained!r} for CLIP {arch}",
                        f"{suggest(pretrained, tags)}choose from: {', '.join(tags[:8])}")
    return (*_pretrained(spec, arch, pretrained, cache), arch)


def load_clip(spec: str, device="cpu", table: dict | None = None, cache: Path | None = None) -> Clip:
    table = table or load_table()
    cache = cache_dir(cache)
    found = find_entry(table.get("clip", {}), spec)
    if found:
        name, entry = found
        folder = HERE / entry["local_dir"]
        for file, sha in entry.get("sha256", {}).items():
            verify_builtin(folder / file, sha, f"the built-in CLIP {name!r}")
        arch, pretrained = f"local-dir:{folder}", None
    else:
        arch, pretrained = split_spec(spec)
    model, sha, tokenizer_name = _create(spec, arch, pretrained, cache)
    model = model.eval().requires_grad_(False).to(device)
    pre = open_clip.get_model_preprocess_cfg(model)
    size = pre.get("size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else size
    tokenizer = open_clip.get_tokenizer(tokenizer_name)
    mean = torch.tensor(pre.get("mean", (0.5, 0.5, 0.5)), device=device).view(1, 3, 1, 1)
    std = torch.tensor(pre.get("std", (0.5, 0.5, 0.5)), device=device).view(1, 3, 1, 1)
    return Clip(spec, model, tokenizer, int(size), mean, std, sha, getattr(tokenizer, "context_length", 77))
