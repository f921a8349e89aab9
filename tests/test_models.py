import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch
import yaml

from clipguide.errors import UserError
from clipguide.models.checkpoint import load_weights
from clipguide.models.clip import load_clip
from clipguide.models.registry import download, load_table, resolve_preset, resolve_vqgan
from clipguide.models.vqgan import load_vqgan
from models import make_vqgan, vqgan_config


@pytest.mark.parametrize("kind", ["vq", "gumbel"])
def test_published_format_loads_with_loss_keys_ignored(tiny, kind):
    cfg, ckpt = tiny[kind]
    raw = load_weights(ckpt)
    assert any(k.startswith("loss.") for k in raw["state_dict"])  # the file really has them
    model = load_vqgan(cfg, ckpt)
    assert model.kind == kind and model.factor == 4
    for k, v in model.state_dict().items():
        assert torch.equal(v, raw["state_dict"][k])
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("kind", ["vq", "gumbel"])
def test_vqgan_decodes_to_unit_range_and_encodes_back_to_codes(tiny, kind):
    model = load_vqgan(*tiny[kind])
    z = model.random_latent(3, 5, generator=torch.Generator().manual_seed(0))
    assert z.shape == (1, 8, 3, 5)
    image = model.decode(model.quantize_st(z))
    assert image.shape == (1, 3, 12, 20) and image.min() >= 0 and image.max() <= 1
    codes = model.encode(image)
    dist = torch.cdist(codes.movedim(1, -1).reshape(-1, 8), model.codebook)
    assert dist.min(1).values.max() < 1e-3  # every encoded vector is a code (up to float error)


def test_straight_through_quantisation_passes_gradients(tiny):
    model = load_vqgan(*tiny["vq"])
    z = torch.randn(1, 8, 2, 2, requires_grad=True)
    q = model.quantize_st(z)
    assert not torch.equal(q, z)
    q.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_random_latent_is_seeded(tiny):
    model = load_vqgan(*tiny["vq"])
    a = model.random_latent(4, 4, generator=torch.Generator().manual_seed(1))
    b = model.random_latent(4, 4, generator=torch.Generator().manual_seed(1))
    c = model.random_latent(4, 4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_checkpoint_that_does_not_fit_its_config_is_a_user_error(tiny, tmp_path):
    cfg = vqgan_config("VQModel", n_embed=128)
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(UserError, match="tensors of other shapes|does not fit"):
        load_vqgan(path, tiny["vq"][1])
    with pytest.raises(UserError, match="does not fit"):
        load_vqgan(tiny["gumbel"][0], tiny["vq"][1])


def test_truncated_checkpoint_is_a_user_error(tiny, tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(Path(tiny["vq"][1]).read_bytes()[:5000])
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_vqgan(tiny["vq"][0], bad)


def test_vqgan_path_finds_its_config_beside_it(tiny):
    files = resolve_vqgan(str(tiny["vq"][1]))
    assert files.config == tiny["vq"][0]


def test_unknown_vqgan_name_suggests_close_ones():
    with pytest.raises(UserError) as e:
        resolve_vqgan("imagenet-16348")
    assert "did you mean imagenet-16384" in str(e.value)


def test_unknown_preset_suggests_close_ones():
    with pytest.raises(UserError, match="did you mean default"):
        resolve_preset("defualt")


def test_registry_entries_name_real_configs():
    table = load_table()
    for name, entry in table["vqgan"].items():
        if "path" in entry:
            continue
        cfg = yaml.safe_load((Path(__import__("clipguide").__file__).parent / "models" / entry["config"]).read_text())
        assert cfg["model"]["target"].split(".")[-1] in ("VQModel", "GumbelVQ"), name
        assert entry["urls"] and all(u.startswith("http") for u in entry["urls"])


def test_clip_local_dir_loads_with_its_preprocessing(tiny):
    clip = load_clip(f"local-dir:{tiny['clip']}")
    assert clip.image_size == 32 and clip.context_length == 16
    assert torch.allclose(clip.std.flatten(), torch.tensor([0.25] * 3))
    emb = clip.encode_text(["a red circle", "a blue square"])
    assert emb.shape == (2, 32)
    assert clip.sha256 and len(clip.sha256) == 64


@pytest.mark.parametrize("spec,words", [
    ("ViT-B-33:openai", "did you mean ViT-B-32"), ("ViT-B-32:opnai", "did you mean openai"),
    ("ViT-B-32", "names no weights"), ("ViT-B-32:/no/such/file.pt", "not found"),
])
def test_bad_clip_specs_are_user_errors(spec, words):
    with pytest.raises(UserError, match=words):
        load_clip(spec)


# -- downloads: a loopback server that honours Range requests ------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    payload = b""
    cut_after = None  # drop the connection after this many bytes (once)
    hits = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        _Handler.hits.append(self.headers.get("Range"))
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
        else:
            self.send_response(200)
        body = self.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if _Handler.cut_after is not None:
            n, _Handler.cut_after = _Handler.cut_after, None
            self.wfile.write(body[:n])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    _Handler.payload = bytes(range(256)) * 4096
    _Handler.hits = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/file.ckpt"
    httpd.shutdown()


def test_download_verifies_checksum_and_publishes_atomically(server, tmp_path):
    sha = hashlib.sha256(_Handler.payload).hexdigest()
    dest = download([server], tmp_path / "w.ckpt", sha, "test weights")
    assert dest.read_bytes() == _Handler.payload
    assert not (tmp_path / "w.ckpt.part").exists()


def test_download_resumes_a_partial_file(server, tmp_path):
    sha = hashlib.sha256(_Handler.payload).hexdigest()
    part = tmp_path / "w.ckpt.part"
    part.write_bytes(_Handler.payload[:1000])
    download([server], tmp_path / "w.ckpt", sha, "test weights")
    assert _Handler.hits == ["bytes=1000-"]
    assert (tmp_path / "w.ckpt").read_bytes() == _Handler.payload


def test_checksum_mismatch_is_a_user_error_and_leaves_nothing(server, tmp_path):
    with pytest.raises(UserError, match="checksum mismatch"):
        download([server], tmp_path / "w.ckpt", "0" * 64, "test weights")
    assert not (tmp_path / "w.ckpt").exists() and not (tmp_path / "w.ckpt.part").exists()


def test_no_network_names_the_offline_way_out(tmp_path):
    with pytest.raises(UserError) as e:
        download(["http://127.0.0.1:9/x.ckpt"], tmp_path / "w.ckpt", None, "VQGAN 'x'")
    assert "--model tiny" in str(e.value) and str(tmp_path / "w.ckpt") in str(e.value)


def test_two_processes_share_the_cache_without_corrupting_it(server, tmp_path):
    sha = hashlib.sha256(_Handler.payload).hexdigest()
    results = []
    threads = [threading.Thread(target=lambda: results.append(download([server], tmp_path / "w.ckpt", sha, "w")))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and (tmp_path / "w.ckpt").read_bytes() == _Handler.payload
    assert len(_Handler.hits) == 1  # the lock made the others wait and reuse the file
