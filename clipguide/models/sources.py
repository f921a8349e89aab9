"""Where a model file can be downloaded from, as data: the `sources` lists of registry.json.

A VQGAN entry lists its sources in order; each is either a file in a Hugging Face Hub repository
(`hub` + `path`, optional `revision`) or a plain URL (`url`, optional `member` when the URL serves a zip
holding the file).  All sources of an entry are copies of one file: `sha256` pins its published checksum
and `size` its published size in bytes, on every source alike (absent where none is published), and the
entry's `published` says where each pin was published (null: nowhere, so that pin is absent).  CLIP weights
come from the Hub repositories open_clip names for its pretrained tags, or from an `hf-hub:ORG/REPO` spec.
Nothing here touches the network.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from dataclasses import dataclass

from ..errors import UserError

SHA256 = re.compile(r"[0-9a-f]{64}")
SOURCE_KEYS = {"hub", "path", "revision", "url", "member", "sha256", "size"}
CLIP_CONFIG = "open_clip_config.json"
CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class SourceFailed(Exception):
    """One source could not give the file; the message is a short reason (the caller names the source)."""


class Unreachable(SourceFailed):
    """The host could not be reached at all (no network, DNS, refused, timed out)."""


class Missing(SourceFailed):
    """The source answered that it does not have the file (404)."""


class Mismatch(SourceFailed):
    """A source gave (or lists) a file whose sha256 or size is not the expected one (nothing was kept)."""


class NotCheckpoint(SourceFailed):
    """A source sent something that is not a checkpoint at all, e.g. a web page (nothing was kept)."""


CHECKPOINT_MAGIC = (b"PK\x03\x04",) + tuple(b"\x80" + bytes([p]) for p in range(2, 6))  # zip; pickle protocol 2-5


def not_a_checkpoint(head: bytes) -> str | None:
    """Why the bytes a file starts with are not a PyTorch checkpoint (a zip or a pickle), or None if they may be."""
    if head.startswith(CHECKPOINT_MAGIC):
        return None
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<"):  # <!DOCTYPE html>, <html>, <?xml ...>: an error, login or share page
        return "sent a web page, not the checkpoint (a dead or expired link?)"
    if text.startswith((b"{", b"[")):
        return "sent a JSON document, not the checkpoint (an error message?)"
    return f"sent a file that is not a checkpoint (it starts with {head[:8]!r}: neither a zip nor a pickle)"


@dataclass(frozen=True)
class Source:
    hub: str | None = None
    path: str | None = None
    revision: str | None = None
    url: str | None = None
    member: str | None = None
    sha256: str | None = None
    size: int | None = None

    @property
    def label(self) -> str:
        """How messages name this source: hf:ORG/REPO/FILE, or host/path of a URL."""
        if self.hub:
            return f"hf:{self.hub}/{self.path}"
        parts = urllib.parse.urlsplit(self.url)
        return (parts.hostname or "") + parts.path.rstrip("/")


def parse_source(data: dict) -> Source:
    """One item of an entry's `sources` list; a malformed item is a bug in the table (ValueError)."""
    unknown = set(data) - SOURCE_KEYS
    if unknown:
        raise ValueError(f"unknown source keys {sorted(unknown)} in {data}")
    source = Source(**data)
    if bool(source.hub) == bool(source.url):
        raise ValueError(f"a source needs exactly one of 'hub' or 'url': {data}")
    if source.hub and (not source.path or source.member):
        raise ValueError(f"a hub source needs 'path' (and takes no 'member'): {data}")
    if source.url and (source.path or source.revision or not source.url.startswith(("https://", "http://"))):
        raise ValueError(f"a url source takes an http(s) 'url' and no 'path'/'revision': {data}")
    if source.sha256 is not None and not SHA256.fullmatch(source.sha256):
        raise ValueError(f"sha256 must be 64 lowercase hex digits: {data}")
    if source.size is not None and (type(source.size) is not int or source.size <= 0):
        raise ValueError(f"size must be a whole number of bytes > 0: {data}")
    return source


def entry_sources(entry: dict) -> list[Source]:
    return [parse_source(item) for item in entry.get("sources", ())]


def pinned_hashes(entry: dict) -> set[str]:
    """Every sha256 the table pins for this entry (any source): a cached copy matching one is verified."""
    return {s.sha256 for s in entry_sources(entry) if s.sha256}


def expected_size(entry: dict) -> int | None:
    return next((s.size for s in entry_sources(entry) if s.size), None)


@dataclass(frozen=True)
class Pins:
    """What the table pins for an entry's file, and where each pin was published (None: not recorded)."""

    sha256: str | None
    size: int | None
    sha256_from: str | None
    size_from: str | None

    def describe(self) -> str:
        """One line: where the pins come from, or that there are none."""
        if self.sha256 is None and self.size is None:
            return "unpinned: no sha256 or size is published for this file"
        where = {k: f"from {v}" if v else "(where it was published is not recorded)"
                 for k, v in (("sha256", self.sha256_from), ("size", self.size_from))}
        if self.sha256 and self.size and self.sha256_from == self.size_from:
            return f"sha256 and size {where['sha256']}"
        sha = f"sha256 {where['sha256']}" if self.sha256 else "sha256 unpinned (none published)"
        size = f"size {where['size']}" if self.size else "size unpinned (none published)"
        return f"{sha}; {size}"


def file_pins(entry: dict) -> Pins:
    """The pins of an entry's file, with where each was published (the entry's `published`).  Sources that
    disagree, or a `published` for a pin that is not there, are a bug in the table (ValueError)."""
    sources = entry_sources(entry)
    published = entry.get("published") or {}
    values = {}
    for key in ("sha256", "size"):
        found = {getattr(s, key) for s in sources}
        if len(found) > 1:
            raise ValueError(f"the sources of one file must all carry the same {key} (or none): {sorted(map(str, found))}")
        values[key] = found.pop() if found else None
        if values[key] is None and published.get(key):
            raise ValueError(f"'published' names where the {key} was published, but no source pins one: {published}")
    return Pins(values["sha256"], values["size"], published.get("sha256"), published.get("size"))


@dataclass(frozen=True)
class HubFiles:
    """The Hub files a CLIP spec needs: all of `required`, and the first of `weights` the repo has."""

    repo: str
    required: tuple[str, ...]
    weights: tuple[str, ...]


def _weight_names(filename: str) -> tuple[str, ...]:
    """open_clip looks for a safetensors twin of a .bin/.pth file first; so do we."""
    if filename in ("", CLIP_WEIGHTS[1]):
        return CLIP_WEIGHTS
    if filename.endswith((".bin", ".pth")):
        return (filename[:-4] + ".safetensors", filename)
    return (filename,)


def hub_repo(spec: str) -> str:
    """`hf-hub:ORG/REPO` -> `ORG/REPO`, checked by huggingface_hub's own rules (no `..`, no path tricks)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    repo = spec.removeprefix("hf-hub:").strip("/")
    try:
        validate_repo_id(repo)
    except HFValidationError:
        repo = ""
    if repo.count("/") != 1:
        raise UserError(f"{spec!r} does not name a Hub repository", "write hf-hub:ORG/REPO, e.g. "
                        "hf-hub:timm/vit_base_patch32_clip_224.openai")
    return repo


def clip_hub_files(spec: str) -> HubFiles | None:
    """`hf-hub:ORG/REPO` or `ARCH:TAG` (an open_clip pretrained tag) -> its Hub files; None otherwise."""
    import open_clip  # only here: the table and the cache do not need it

    if spec.startswith("hf-hub:"):
        return HubFiles(hub_repo(spec), (CLIP_CONFIG,), CLIP_WEIGHTS)
    if ":" not in spec or spec.startswith("local-dir:"):
        return None
    arch, tag = spec.split(":", 1)
    if arch not in open_clip.list_models() or tag not in open_clip.list_pretrained_tags_by_model(arch):
        return None
    hub = open_clip.get_pretrained_cfg(arch, tag).get("hf_hub", "")
    repo, filename = posixpath.split(hub)  # 'org/name/' -> ('org/name', ''), as open_clip reads it
    return HubFiles(repo, (), _weight_names(filename)) if repo.count("/") == 1 else None
