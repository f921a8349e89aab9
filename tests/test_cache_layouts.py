"""The Hub cache as huggingface_hub 2.4 itself lays it out, Xet shared store included (the loopback Hub serves
Xet files from hf_xet's own local store), then copied, touched and made read-only: the good cached weights are
found and used with no request, and nothing is removed because a record is stale.  A damaged file is
re-checked on its bytes before anything is removed, and a file another repo shares is never removed.  The
user's own huggingface_hub cache is used before the network, and never written."""

import ctypes
import json
import multiprocessing
import os
import shutil
import stat
import subprocess
import sys
import time
import traceback
from pathlib import Path

import open_clip
import pytest
from huggingface_hub import constants as hub_constants
from huggingface_hub import hf_hub_download

from clipguide.errors import UserError
from clipguide.models.clip import _offline_hub, load_clip
from clipguide.models.hashing import remember
from clipguide.models.inventory import model_rows
from clipguide.models.prefetch import clip_weights
from clipguide.models.registry import resolve_vqgan
from loopback import sha256
from test_download import FILE, REPO, hub_source, serve_tiny_clip, table

MIRROR, MIRROR_FILE = "org/mirror", "w.ckpt"  # another repo holding the same bytes: they share one store file
OPENAI = "timm/vit_base_patch32_clip_224.openai"  # where open_clip fetches ViT-B-32:openai


@pytest.fixture
def xet(net, tmp_path, monkeypatch):
    """The loopback Hub serving LFS files through Xet, from a local store that hf_xet itself writes and reads."""
    net.cas = f"local://{tmp_path / 'xet-store'}"
    monkeypatch.setenv("HF_XET_CACHE", str(tmp_path / "xet-cache"))
    return net


def hf_download(root: Path, *files: tuple[str, str]) -> None:
    """Fill the hub cache folder `root` with huggingface_hub's own download, as any other tool would."""
    for repo, path in files:
        hf_hub_download(repo, path, cache_dir=root, endpoint=os.environ["HF_ENDPOINT"])


def listing(root: Path) -> dict[str, tuple]:
    """Every entry under `root`: a link's target, a file's bytes' sha256 and mtime, or a folder."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = ("link", os.readlink(p), p.exists())
        elif p.is_file():
            out[str(p.relative_to(root))] = ("file", sha256(p.read_bytes()), p.stat().st_mtime_ns)
        else:
            out[str(p.relative_to(root))] = ("dir",)
    return out


def store_file(root: Path, data: bytes, served) -> Path:
    """Where huggingface_hub 2.4 keeps these bytes: its shared store, named by their Xet hash."""
    xet_hash = served.xet_hashes[sha256(data)]
    return root / "blobs" / xet_hash[:2] / xet_hash


@pytest.fixture
def warm(xet, ckpt, tmp_path):
    """clipguide's cache after `v` was downloaded once (records written) and another repo, downloaded by
    huggingface_hub itself, shares its bytes; (bytes, table with v unpinned, the cache)."""
    data, cfg = ckpt
    xet.hub_files[(REPO, FILE)] = data
    xet.hub_files[(MIRROR, MIRROR_FILE)] = data
    t = table(cfg, [hub_source()])  # unpinned, like every CLIP's weights: checked against the Hub's sha256
    cache = tmp_path / "cache"
    assert resolve_vqgan("v", table=t, cache=cache, log=print).sha256 == sha256(data)
    hf_download(cache / "hub", (MIRROR, MIRROR_FILE))
    xet.hits.clear()
    return data, t, cache


def test_huggingface_hub_keeps_xet_files_in_its_shared_store_behind_sha256_links(warm, xet):
    data, t, cache = warm
    hub = cache / "hub"
    store = store_file(hub, data, xet)
    ours = resolve_vqgan("v", table=t, cache=cache).checkpoint
    blob = hub / "models--org--vqgans" / "blobs" / sha256(data)
    assert Path(os.path.realpath(ours)) == store and store.name != sha256(data)  # named by Xet hash, not sha256
    assert blob.is_symlink() and Path(os.path.realpath(blob)) == store
    assert Path(os.path.realpath(hub / "models--org--mirror" / "blobs" / sha256(data))) == store
    assert stat.S_IMODE(store.stat().st_mode) & 0o222 == 0  # huggingface_hub makes store files read-only
    assert (hub / "blobs" / ".huggingface-shared-blobs").is_file()
    assert xet.hits == []


def copy_a(cache: Path, tmp: Path) -> Path:
    subprocess.run(["cp", "-a", str(cache), str(tmp / "copy")], check=True)
    return tmp / "copy"


def copy_r(cache: Path, tmp: Path) -> Path:
    """A plain copy: links kept, every mtime new."""
    subprocess.run(["cp", "-r", str(cache), str(tmp / "copy")], check=True)
    return tmp / "copy"


def copy_dereferenced(cache: Path, tmp: Path) -> Path:
    """A copy that follows links (rsync without -l, a filesystem without symlinks), every mtime new."""
    shutil.copytree(cache, tmp / "copy", copy_function=shutil.copy)
    return tmp / "copy"


def touched(cache: Path, tmp: Path) -> Path:
    """mtimes changed in place (a restore from a backup, a sync tool)."""
    for p in cache.rglob("*"):
        if p.is_file() and not p.is_symlink():
            os.utime(p, (time.time() - 3600, time.time() - 3600))
    return cache


def no_records(cache: Path, tmp: Path) -> Path:
    """As huggingface_hub alone leaves it: no record of clipguide's."""
    shutil.rmtree(cache / "verified")
    shutil.rmtree(cache / "checksums")
    return cache


@pytest.mark.parametrize("move", [copy_a, copy_r, copy_dereferenced, touched, no_records])
def test_a_copied_or_touched_cache_is_used_as_it_is(warm, xet, tmp_path, move):
    data, t, cache = warm
    used = move(cache, tmp_path)
    before = listing(used / "hub")
    lines = []
    files = resolve_vqgan("v", table=t, cache=used, log=lines.append)
    assert files.checkpoint.read_bytes() == data and files.checkpoint.is_relative_to(used / "hub")
    assert files.sha256 == sha256(data)  # still verified: against the Hub's sha256, or as verified before
    assert listing(used / "hub") == before and lines == [] and xet.hits == []


def _drop_root_override() -> None:
    """Make this process obey file permissions even as root (drop CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)."""
    if os.geteuid() != 0:
        return

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
    assert libc.capget(ctypes.byref(header), data) == 0
    data[0].effective &= ~0b110
    data[0].permitted &= ~0b110
    assert libc.capset(ctypes.byref(header), data) == 0


def _reader(queue, fn, args):
    try:
        _drop_root_override()
        queue.put((True, fn(*args)))
    except BaseException:
        queue.put((False, traceback.format_exc()))


def as_reader(fn, *args):
    """fn(*args) in a child process to which a read-only file or folder is read-only, even when run as root."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.SimpleQueue()
    child = ctx.Process(target=_reader, args=(queue, fn, args))
    child.start()
    ok, value = queue.get()
    child.join(60)
    assert ok, value
    return value


@pytest.fixture
def read_only():
    """make(folder): take write permission off the folder and all in it (given back after the test)."""
    made = []

    def make(root: Path) -> None:
        for p in [root, *root.rglob("*")]:
            if not p.is_symlink():
                p.chmod(stat.S_IMODE(p.stat().st_mode) & ~0o222)
                made.append(p)

    yield make
    for p in made:
        p.chmod(stat.S_IMODE(p.stat().st_mode) | 0o200)


def resolve(t: dict, cache: Path) -> tuple:
    """(checkpoint, sha256, lines logged, the UserError's line or None) of resolving VQGAN `v`."""
    lines = []
    try:
        files = resolve_vqgan("v", table=t, cache=cache, log=lines.append)
        return str(files.checkpoint), files.sha256, lines, None
    except UserError as e:
        return None, None, lines, e.line()


@pytest.mark.parametrize("part", ["verified", "."])
def test_a_read_only_cache_or_records_folder_is_used_without_writing(warm, xet, tmp_path, read_only, part):
    data, t, cache = warm
    used = copy_r(cache, tmp_path)  # every record stale: the file is checked again, and nothing can be written
    before = listing(used)
    read_only(used / part)
    path, sha, lines, error = as_reader(resolve, t, used)
    assert error is None and Path(path).read_bytes() == data and sha == sha256(data)
    after = listing(used)
    assert {k: v for k, v in after.items() if k.startswith("hub")} == {k: v for k, v in before.items()
                                                                       if k.startswith("hub")}
    assert (after == before) == (part == ".")  # only a writable checksums/ remembered the new hash
    assert lines == [] and xet.hits == []


def damage(path: Path) -> None:
    """Other bytes of the same size (bit rot): what only hashing the bytes can tell."""
    path.chmod(0o644)
    path.write_bytes(bytes(path.stat().st_size))


def test_a_damaged_shared_file_is_never_removed_and_huggingface_hub_replaces_it(warm, xet, monkeypatch):
    data, t, cache = warm
    hub = cache / "hub"
    store = store_file(hub, data, xet)
    mirror = next((hub / "models--org--mirror" / "snapshots").rglob(MIRROR_FILE))
    damage(store)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lines = []
    with pytest.raises(UserError, match="HF_HUB_OFFLINE is set"):
        resolve_vqgan("v", table=t, cache=cache, log=lines.append)
    assert store.is_file() and mirror.exists()  # the shared file and the other repo's link to it stay
    assert len(lines) == 1 and f"not the Hub's {sha256(data)[:12]}" in lines[0] and lines[0].endswith("removed it")
    assert not (hub / "models--org--vqgans" / "blobs" / sha256(data)).is_symlink()  # only our repo's link went

    monkeypatch.delenv("HF_HUB_OFFLINE")
    lines.clear()
    files = resolve_vqgan("v", table=t, cache=cache, log=lines.append)
    assert files.checkpoint.read_bytes() == data and files.sha256 == sha256(data) and lines == []
    assert mirror.read_bytes() == data  # huggingface_hub's force_download replaced the store file, for both repos


def test_a_damaged_blob_with_other_hard_links_is_not_removed(net, ckpt, tmp_path, monkeypatch):
    data, cfg = ckpt
    net.hub_files[(REPO, FILE)] = data  # a plain (not Xet) Hub file: the repo's blob is a regular file
    t = table(cfg, [hub_source()])
    resolve_vqgan("v", table=t, cache=tmp_path / "cache")
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-al", str(tmp_path / "cache"), str(copy)], check=True)  # a copy made of hard links
    blob = copy / "hub" / "models--org--vqgans" / "blobs" / sha256(data)
    damage(blob)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lines = []
    with pytest.raises(UserError, match="HF_HUB_OFFLINE is set"):
        resolve_vqgan("v", table=t, cache=copy, log=lines.append)
    assert blob.is_file() and blob.stat().st_nlink == 2  # the blob stays
    assert len(lines) == 1 and lines[0].endswith("removed it")  # the snapshot link went

    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert resolve_vqgan("v", table=t, cache=copy).checkpoint.read_bytes() == data
    assert (tmp_path / "cache" / blob.relative_to(copy)).read_bytes() == bytes(len(data))  # the other one's, as it was


def test_a_wrong_remembered_checksum_is_rechecked_on_the_bytes_before_anything_is_removed(warm, xet, ckpt):
    data, _, cache = warm
    t = table(ckpt[1], [hub_source(sha256(data))])  # pinned: the pin is the judge
    path = resolve_vqgan("v", table=t, cache=cache).checkpoint
    shutil.rmtree(cache / "verified")
    remember(path, "0" * 64, cache)  # a remembered sha256 that is not the bytes' (same size, same mtime)
    before = listing(cache / "hub")
    lines = []
    files = resolve_vqgan("v", table=t, cache=cache, log=lines.append)
    assert files.checkpoint == path and files.sha256 == sha256(data)
    assert listing(cache / "hub") == before and lines == [] and xet.hits == []


def test_a_damaged_file_in_a_read_only_cache_is_one_line_and_nothing_is_removed(warm, xet, read_only):
    data, t, cache = warm
    damage(store_file(cache / "hub", data, xet))
    before = listing(cache)
    read_only(cache)
    path, _, lines, error = as_reader(resolve, t, cache)
    assert path is None and error.startswith(f"cannot write the model cache {cache} (Permission denied")
    assert len(lines) == 1 and "cannot be removed (Permission denied: is the cache read-only?)" in lines[0]
    assert listing(cache) == before


@pytest.fixture
def user_hub(xet, ckpt, tiny):
    """The user's own huggingface_hub cache (conftest points huggingface_hub's HF_HUB_CACHE at a folder of the
    test), filled by huggingface_hub itself: a VQGAN, an hf-hub: CLIP, and ViT-B-32:openai's weights."""
    data, cfg = ckpt
    xet.hub_files[(REPO, FILE)] = data
    weights = serve_tiny_clip(xet, tiny)
    xet.hub_files[(OPENAI, "open_clip_pytorch_model.bin")] = b"weights of ViT-B-32:openai"
    root = Path(hub_constants.HF_HUB_CACHE)
    hf_download(root, (REPO, FILE), ("org/tiny-clip", "open_clip_config.json"),
                ("org/tiny-clip", "open_clip_model.safetensors"), (OPENAI, "open_clip_pytorch_model.bin"))
    xet.hits.clear()
    return data, weights, table(cfg, [hub_source()]), root


def test_the_users_own_hub_cache_is_used_before_the_network_and_never_written(user_hub, xet, tmp_path):
    data, weights, t, root = user_hub
    cache = tmp_path / "cache"
    before = listing(root)
    files = resolve_vqgan("v", table=t, cache=cache)
    assert files.checkpoint.is_relative_to(root) and files.sha256 == sha256(data)
    assert load_clip("hf-hub:org/tiny-clip", cache=cache).sha256 == sha256(weights)
    got, found_in = clip_weights("ViT-B-32:openai", cache)
    assert found_in == root and got.path.read_bytes() == b"weights of ViT-B-32:openai"
    with _offline_hub():  # what load_clip does around open_clip.create_model
        found = open_clip.pretrained.download_pretrained(open_clip.get_pretrained_cfg("ViT-B-32", "openai"),
                                                         cache_dir=str(found_in))
    assert Path(found) == got.path
    assert {r.name: r for r in model_rows(t, cache)}["v"].cached
    assert xet.hits == [] and listing(root) == before and not (cache / "hub").exists()


def test_a_read_only_users_cache_is_enough(user_hub, xet, tmp_path, read_only):
    data, _, t, root = user_hub
    read_only(root)
    path, sha, lines, error = as_reader(resolve, t, tmp_path / "cache")
    assert error is None and Path(path).is_relative_to(root) and sha == sha256(data) and lines == []
    assert xet.hits == []


def test_a_damaged_file_in_the_users_cache_is_left_there_and_downloaded_into_ours(user_hub, xet, tmp_path):
    data, _, t, root = user_hub
    damage(store_file(root, data, xet))
    before = listing(root)
    cache = tmp_path / "cache"
    lines = []
    files = resolve_vqgan("v", table=t, cache=cache, log=lines.append)
    assert files.checkpoint.is_relative_to(cache / "hub") and files.checkpoint.read_bytes() == data
    assert len(lines) == 1 and str(root) in lines[0] and lines[0].endswith("not used, left in place (not "
                                                                          "clipguide's cache)")
    assert listing(root) == before


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HF_HOME", "HOME"])
def test_the_users_hub_cache_is_found_where_huggingface_hub_puts_it(xet, ckpt, tmp_path, variable):
    """A fresh process, the user's cache named the ways huggingface_hub reads it: $HF_HUB_CACHE, else
    $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    data, cfg = ckpt
    xet.hub_files[(REPO, FILE)] = data
    home = tmp_path / "home"
    root = {"HF_HUB_CACHE": tmp_path / "hub-cache", "HF_HOME": tmp_path / "hf-home" / "hub",
            "HOME": home / ".cache" / "huggingface" / "hub"}[variable]
    hf_download(root, (REPO, FILE))
    xet.hits.clear()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME")}
    env.update({"HOME": str(home), variable: str({"HF_HUB_CACHE": root, "HF_HOME": root.parent}.get(variable, home))})
    code = ("import json, sys; from clipguide.models.registry import resolve_vqgan; "
            "print(resolve_vqgan('v', table=json.loads(sys.argv[1])).checkpoint)")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(table(cfg, [hub_source()]))], env=env,
                         capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()).is_relative_to(root) and xet.hits == []
