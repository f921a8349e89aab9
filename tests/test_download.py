"""Downloads against loopback servers (no network): a Hub at HF_ENDPOINT, its CDN, and plain HTTP hosts."""

import multiprocessing
import time
from pathlib import Path

import open_clip
import pytest

from clipguide.errors import UserError
from clipguide.listing import model_listing
from clipguide.models.clip import _offline_hub, load_clip
from clipguide.models.inventory import model_rows
from clipguide.models.prefetch import clip_weights, download_models
from clipguide.models.registry import resolve_vqgan
from clipguide.models.sources import parse_source
from clipguide.models.vqgan import load_vqgan
from loopback import closed_port, sha256

REPO, FILE = "org/vqgans", "v/v.ckpt"


def table(cfg, sources) -> dict:
    return {"vqgan": {"v": {"config": str(cfg), "file": "v.ckpt", "sources": sources}},
            "clip": {}, "presets": {"pair": {"vqgan": "v", "clip": ["hf-hub:org/tiny-clip"], "settings": {}}}}


def hub_source(sha=None, repo=REPO, path=FILE, **extra) -> dict:
    return {"hub": repo, "path": path, **({"sha256": sha} if sha else {}), **extra}


def cache_files(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() or p.is_symlink())


def test_hub_file_lands_in_the_hub_cache_verified_with_the_token_kept_on_the_hub(net, ckpt, tmp_path, monkeypatch):
    data, cfg = ckpt
    net.hub_files[(REPO, FILE)] = data
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.delenv("HF_HUB_DISABLE_IMPLICIT_TOKEN")
    t = table(cfg, [hub_source(sha256(data), size=len(data))])
    before = {r.name: r for r in model_rows(t, tmp_path)}["v"]
    assert (before.cached, before.size, before.pinned, before.verified) == (False, len(data), True, "")

    files = resolve_vqgan("v", table=t, cache=tmp_path)
    assert files.checkpoint.read_bytes() == data and files.sha256 == sha256(data)
    assert "hub/models--org--vqgans/snapshots/" in str(files.checkpoint)
    assert load_vqgan(files.config, files.checkpoint).kind == "vq"
    assert {h.auth for h in net.hits if h.role == "hub"} == {"Bearer hf_secret"}
    assert {h.auth for h in net.hits if h.role == "cdn"} == {None}  # the token never leaves the Hub
    after = {r.name: r for r in model_rows(t, tmp_path)}["v"]
    assert (after.cached, after.size, after.verified) == (True, len(data), "verified: pinned sha256")
    assert "verified: pinned sha256" in model_listing(t, tmp_path)


def test_unpinned_hub_file_is_checked_against_the_hubs_lfs_sha256(net, ckpt, tmp_path):
    data, cfg = ckpt
    net.hub_files[(REPO, FILE)] = data
    files = resolve_vqgan("v", table=table(cfg, [hub_source()]), cache=tmp_path)
    assert files.sha256 == sha256(data)
    row = {r.name: r for r in model_rows(table(cfg, [hub_source()]), tmp_path)}["v"]
    assert row.verified == "verified: Hub sha256" and not row.pinned


def test_redirects_are_followed_on_the_hub_and_on_plain_hosts(net, ckpt, tmp_path):
    data, cfg = ckpt
    net.hub_files[("org/new-name", FILE)] = data
    net.moved["org/old-name"] = "org/new-name"
    files = resolve_vqgan("v", table=table(cfg, [hub_source(repo="org/old-name")]), cache=tmp_path / "a")
    assert files.checkpoint.read_bytes() == data
    assert [h.path.split("/resolve")[0] for h in net.hits if h.role == "hub"] == ["/org/old-name", "/org/new-name"] * 2

    net.plain["v.ckpt"] = data
    files = resolve_vqgan("v", table=table(cfg, [{"url": f"{net.cdn}/moved/v.ckpt"}]), cache=tmp_path / "b")
    assert files.checkpoint.read_bytes() == data and files.checkpoint == tmp_path / "b" / "vqgan" / "v.ckpt"


def test_a_cut_hub_download_resumes_where_it_stopped(net, ckpt, tmp_path):
    data = bytes(range(256)) * 45_000  # 11.5 MB: huggingface_hub writes (and resumes) in 10 MiB chunks
    net.hub_files[(REPO, FILE)] = data
    net.cut[sha256(data)] = 10_500_000
    files = resolve_vqgan("v", table=table(ckpt[1], [hub_source(sha256(data))]), cache=tmp_path)
    assert files.checkpoint.read_bytes() == data
    assert [h.range for h in net.hits if h.role == "cdn"] == [None, f"bytes={10 * 2**20}-"]


def test_a_cut_url_download_resumes_and_so_does_a_partial_file_left_by_an_earlier_run(net, ckpt, tmp_path):
    data, cfg = ckpt
    net.plain["v.ckpt"] = data
    net.cut["v.ckpt"] = 70_000
    t = table(cfg, [{"url": f"{net.cdn}/files/v.ckpt", "sha256": sha256(data)}])
    assert resolve_vqgan("v", table=t, cache=tmp_path / "a").checkpoint.read_bytes() == data
    assert [h.range for h in net.hits] == [None, "bytes=70000-"]

    net.hits.clear()
    (tmp_path / "b" / "vqgan").mkdir(parents=True)
    partial = [p for p in (tmp_path / "a" / "vqgan").iterdir()]
    assert [p.name for p in partial] == ["v.ckpt"]  # nothing else was left behind
    tag = __import__("hashlib").sha1(f"{net.cdn}/files/v.ckpt".encode()).hexdigest()[:8]
    (tmp_path / "b" / "vqgan" / f"v.ckpt.{tag}.part").write_bytes(data[:5000])  # as a killed run leaves it
    assert resolve_vqgan("v", table=t, cache=tmp_path / "b").checkpoint.read_bytes() == data
    assert [h.range for h in net.hits] == ["bytes=5000-"]


def test_missing_and_dead_sources_fall_through_with_one_line_each(net, ckpt, tmp_path):
    data, cfg = ckpt
    net.hub_files[(REPO, "other.ckpt")] = b"x"
    net.plain["v.ckpt"] = data
    dead = f"http://127.0.0.1:{closed_port()}/v.ckpt"
    sources = [hub_source(repo="org/gone"), hub_source(), {"url": dead}, {"url": f"{net.cdn}/files/v.ckpt"}]
    lines = []
    files = resolve_vqgan("v", table=table(cfg, sources), cache=tmp_path, log=lines.append)
    assert files.checkpoint.read_bytes() == data
    host = net.cdn.removeprefix("http://").split(":")[0]
    assert lines == [
        "VQGAN 'v': hf:org/gone/v/v.ckpt: repository not found (or private: set HF_TOKEN); trying the next source",
        "VQGAN 'v': hf:org/vqgans/v/v.ckpt: file not found (404); trying the next source",
        f"VQGAN 'v': got it from {host}/files/v.ckpt ({host}/v.ckpt could not be reached)",
    ]


def test_a_file_that_does_not_match_its_sha256_is_deleted_and_the_error_names_its_source(net, ckpt, tmp_path):
    data, cfg = ckpt
    net.hub_files[(REPO, FILE)] = data
    net.lies[sha256(data)] = data[:-10] + b"tampered!!"  # the Hub lists the right sha256, the CDN sends other bytes
    with pytest.raises(UserError) as e:
        resolve_vqgan("v", table=table(cfg, [hub_source(sha256(data))]), cache=tmp_path)
    assert "hf:org/vqgans/v/v.ckpt: gave a file with sha256" in e.value.problem
    assert "nothing was kept" in e.value.fix
    assert not [f for f in cache_files(tmp_path) if "/blobs/" in f or "/snapshots/" in f or f.startswith("vqgan")]

    net.plain["v.ckpt"] = data[:-10] + b"tampered!!"
    with pytest.raises(UserError) as e:
        resolve_vqgan("v", table=table(cfg, [{"url": f"{net.cdn}/files/v.ckpt", "sha256": sha256(data)}]),
                      cache=tmp_path)
    assert "/files/v.ckpt: gave a file with sha256" in e.value.problem
    assert not (tmp_path / "vqgan").exists() or not list((tmp_path / "vqgan").iterdir())


def test_a_hub_file_listed_with_another_sha256_is_not_downloaded_and_the_next_source_is_used(net, ckpt, tmp_path):
    data, cfg = ckpt
    net.hub_files[(REPO, FILE)] = data[:-1]  # the mirror holds some other file
    net.plain["v.ckpt"] = data
    lines = []
    sources = [hub_source(sha256(data)), {"url": f"{net.cdn}/files/v.ckpt", "sha256": sha256(data)}]
    files = resolve_vqgan("v", table=table(cfg, sources), cache=tmp_path, log=lines.append)
    assert files.checkpoint.read_bytes() == data
    assert not [h for h in net.hits if "/blobs/" in h.path]  # not one byte fetched from the mirror
    assert len(lines) == 1 and "hf:org/vqgans/v/v.ckpt: lists sha256" in lines[0] and "not downloaded" in lines[0]


def _download(table_, cache):
    download_models(["v"], cache, log=lambda line: None, table=table_)


@pytest.mark.parametrize("kind", ["hub", "url"])
def test_two_processes_sharing_the_cache_download_the_file_once(net, ckpt, tmp_path, kind):
    data, cfg = ckpt
    net.hub_files[(REPO, FILE)] = data
    net.plain["v.ckpt"] = data
    net.chunk_delay = 0.02  # the download lasts long enough for the second process to find it under way
    source = hub_source(sha256(data)) if kind == "hub" else {"url": f"{net.cdn}/files/v.ckpt"}
    t = table(cfg, [source])
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_download, args=(t, tmp_path)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len([h for h in net.hits if h.method == "GET"]) == 1
    files = resolve_vqgan("v", table=t, cache=tmp_path)
    assert files.checkpoint.read_bytes() == data
    assert not [f for f in cache_files(tmp_path) if f.endswith((".part", ".incomplete"))]


def test_with_a_warm_cache_no_request_is_made_online_or_offline(net, ckpt, tmp_path, monkeypatch):
    data, cfg = ckpt
    net.hub_files[(REPO, FILE)] = data
    t = table(cfg, [hub_source(sha256(data))])
    first = resolve_vqgan("v", table=t, cache=tmp_path)
    net.hits.clear()
    assert resolve_vqgan("v", table=t, cache=tmp_path).checkpoint == first.checkpoint
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_vqgan("v", table=t, cache=tmp_path).checkpoint == first.checkpoint
    assert download_models(["v"], tmp_path, log=lambda line: None, table=t) == [first.checkpoint]
    model_rows(t, tmp_path)
    assert net.hits == []


def test_offline_without_the_file_says_what_to_do_at_once_and_asks_nothing(net, ckpt, tmp_path, monkeypatch):
    data, cfg = ckpt
    net.hub_files[(REPO, FILE)] = data
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(UserError) as e:
        resolve_vqgan("v", table=table(cfg, [hub_source(), {"url": f"{net.cdn}/files/v.ckpt"}]), cache=tmp_path)
    assert time.monotonic() - started < 1
    assert "HF_HUB_OFFLINE is set" in e.value.problem and "clipguide --download v" in e.value.fix
    assert net.hits == []


def test_without_network_one_line_at_once(ckpt, tmp_path, monkeypatch):
    data, cfg = ckpt
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    lines = []
    started = time.monotonic()
    with pytest.raises(UserError) as e:
        resolve_vqgan("v", table=table(cfg, [hub_source(), {"url": f"http://127.0.0.1:{closed_port()}/v.ckpt"}]),
                      cache=tmp_path, log=lines.append)
    assert time.monotonic() - started < 1
    assert lines == []  # the error is the only line
    assert e.value.problem.startswith("cannot download VQGAN 'v' (no source could be reached: cannot connect")
    assert e.value.problem.endswith("tried hf:org/vqgans/v/v.ckpt, 127.0.0.1/v.ckpt)")
    assert "clipguide --download v" in e.value.fix and "--model tiny" in e.value.fix
    assert "\n" not in e.value.line()


def test_zip_member_source(net, ckpt, tmp_path):
    import io
    import zipfile

    data, cfg = ckpt
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("config.yaml", "model: {}")
        zf.writestr("model.ckpt", data)
    net.plain["vq.zip"] = buf.getvalue()
    t = table(cfg, [{"url": f"{net.cdn}/files/vq.zip", "member": "model.ckpt", "sha256": sha256(data)}])
    files = resolve_vqgan("v", table=t, cache=tmp_path)
    assert files.checkpoint.read_bytes() == data
    assert cache_files(tmp_path / "vqgan") == ["v.ckpt"]


def serve_tiny_clip(net, tiny):
    net.hub_files[("org/tiny-clip", "open_clip_config.json")] = (tiny["clip"] / "open_clip_config.json").read_bytes()
    weights = (tiny["clip"] / "open_clip_model.safetensors").read_bytes()
    net.hub_files[("org/tiny-clip", "open_clip_model.safetensors")] = weights
    return weights


def test_hub_clip_downloads_once_then_loads_with_no_request(net, tiny, tmp_path, monkeypatch):
    weights = serve_tiny_clip(net, tiny)
    clip = load_clip("hf-hub:org/tiny-clip", cache=tmp_path)
    assert clip.sha256 == sha256(weights) and clip.encode_text(["a red circle"]).shape == (1, 32)
    net.hits.clear()
    again = load_clip("hf-hub:org/tiny-clip", cache=tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = load_clip("hf-hub:org/tiny-clip", cache=tmp_path)
    assert again.sha256 == offline.sha256 == clip.sha256
    assert net.hits == []


def test_pretrained_tag_weights_fall_back_to_the_bin_quietly_and_open_clip_finds_them_offline(net, tmp_path):
    repo = "timm/vit_base_patch32_clip_224.openai"  # where open_clip fetches ViT-B-32:openai
    net.hub_files[(repo, "open_clip_pytorch_model.bin")] = b"weights of ViT-B-32:openai"
    lines = []
    got, root = clip_weights("ViT-B-32:openai", tmp_path, log=lines.append)
    assert lines == [] and got.path.name == "open_clip_pytorch_model.bin" and got.how == "hub"
    assert [h.path.rsplit("/", 1)[1] for h in net.hits if h.method == "HEAD"][:2] == [
        "open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    net.hits.clear()
    with _offline_hub():  # what load_clip does around open_clip.create_model
        found = open_clip.pretrained.download_pretrained(open_clip.get_pretrained_cfg("ViT-B-32", "openai"),
                                                         cache_dir=str(root))
    assert Path(found) == got.path and net.hits == []


def test_download_expands_presets_and_rejects_unknown_names(net, ckpt, tiny, tmp_path):
    data, cfg = ckpt
    net.hub_files[(REPO, FILE)] = data
    weights = serve_tiny_clip(net, tiny)
    lines = []
    t = table(cfg, [hub_source(sha256(data))])
    paths = download_models(["pair", "v"], tmp_path, log=lines.append, table=t)
    assert [p.read_bytes() for p in paths] == [data, weights]
    assert len(lines) == 2 and lines[0].startswith("vqgan v: ") and lines[1].startswith("clip hf-hub:org/tiny-clip: ")
    rows = {r.name: r for r in model_rows(t, tmp_path)}
    assert rows["pair"].cached and rows["pair"].size == len(data) + len(weights)
    with pytest.raises(UserError, match="did you mean pair"):
        download_models(["piar"], tmp_path, table=t)


@pytest.mark.parametrize("bad", [
    {"hub": "org/x"}, {"url": "ftp://x/y"}, {"hub": "org/x", "path": "f", "url": "https://x/y"},
    {"url": "https://x/y", "sha256": "ABC"}, {"url": "https://x/y", "md5": "0"},
])
def test_malformed_sources_are_rejected(bad):
    with pytest.raises(ValueError):
        parse_source(bad)


def test_a_file_of_another_size_than_the_published_one_is_refused_before_it_is_hashed(net, ckpt, tmp_path,
                                                                                    monkeypatch):
    import io
    import zipfile

    import clipguide.models.download as download

    data, cfg = ckpt
    monkeypatch.setattr(download, "sha256_of", lambda path: pytest.fail(f"{path} was hashed"))
    net.plain["v.ckpt"] = data + b"more"  # the server's Content-Length says so before the body is read
    net.hub_files[(REPO, FILE)] = data + b"more"  # the Hub lists the size (X-Linked-Size)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model.ckpt", data + b"more")  # a zip member's size is known only once it is unpacked
    net.plain["vq.zip"] = buf.getvalue()
    pins = {"size": len(data)}  # the size alone (as imagenet-1024's): a sha256 pin would refuse it first
    sources = [hub_source(**pins), {"url": f"{net.cdn}/files/v.ckpt", **pins},
               {"url": f"{net.cdn}/files/vq.zip", "member": "model.ckpt", **pins}]
    lines = []
    with pytest.raises(UserError) as e:
        resolve_vqgan("v", table=table(cfg, sources), cache=tmp_path, log=lines.append)
    size, published = f"{len(data) + 4:,}", f"{len(data):,}"
    assert lines == [
        f"VQGAN 'v': hf:org/vqgans/v/v.ckpt: lists {size} bytes, not the published {published} (not downloaded); "
        "trying the next source",
        f"VQGAN 'v': 127.0.0.1/files/v.ckpt: serves {size} bytes, not the published {published} "
        "(not downloaded); trying the next source"]
    assert f"vq.zip: gave {size} bytes, not the published {published} (deleted)" in e.value.problem
    assert not [h for h in net.hits if "/blobs/" in h.path]
    assert cache_files(tmp_path / "vqgan") == []


def test_a_cached_plain_url_file_is_checked_against_its_pins_before_it_is_used(net, ckpt, tmp_path):
    data, cfg = ckpt
    net.plain["v.ckpt"] = data
    (tmp_path / "vqgan").mkdir()
    (tmp_path / "vqgan" / "v.ckpt").write_bytes(b"<html>an error page an earlier version kept</html>")
    lines = []
    t = table(cfg, [{"url": f"{net.cdn}/files/v.ckpt", "sha256": sha256(data), "size": len(data)}])
    files = resolve_vqgan("v", table=t, cache=tmp_path, log=lines.append)
    assert files.checkpoint.read_bytes() == data and files.sha256 == sha256(data)
    assert len(lines) == 1 and "is 50 bytes, not the published" in lines[0] and lines[0].endswith("removed it")


HTML = b"<!DOCTYPE html>\n<html><head><title>Link expired</title></head><body>This share has expired.</body></html>"


def test_a_web_page_instead_of_the_checkpoint_is_refused_in_one_line_naming_its_source_and_not_kept(net, ckpt,
                                                                                                    tmp_path):
    """Where nothing is pinned (vq-f8's zip), a dead link's HTML page must not become 'the checkpoint'."""
    data, cfg = ckpt
    net.plain["expired"] = HTML
    net.plain["v.ckpt"] = data
    host = net.cdn.removeprefix("http://")
    lines = []
    t = table(cfg, [{"url": f"{net.cdn}/files/expired"}, {"url": f"{net.cdn}/files/v.ckpt"}])
    files = resolve_vqgan("v", table=t, cache=tmp_path / "a", log=lines.append)
    assert files.checkpoint.read_bytes() == data
    assert lines == [f"VQGAN 'v': {host.split(':')[0]}/files/expired: sent a web page, not the checkpoint "
                     "(a dead or expired link?); trying the next source"]

    lines.clear()
    with pytest.raises(UserError) as e:
        resolve_vqgan("v", table=table(cfg, [{"url": f"{net.cdn}/files/expired"}]), cache=tmp_path / "b",
                      log=lines.append)
    assert lines == [] and "\n" not in e.value.line()  # the error is the one line
    assert "/files/expired: sent a web page, not the checkpoint" in e.value.problem
    assert "nothing was kept" in e.value.fix and "again" not in e.value.fix.replace("trying again will not", "")
    assert not (tmp_path / "b" / "vqgan").exists() or cache_files(tmp_path / "b" / "vqgan") == []
