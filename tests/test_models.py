from pathlib import Path

import pytest
import torch
import yaml

from clipguide.errors import UserError
from clipguide.models.checkpoint import load_weights
from clipguide.models.clip import load_clip
from clipguide.models.registry import HERE, load_table, resolve_preset, resolve_vqgan
from clipguide.models.vqgan import load_vqgan, read_config, vqgan_from_config
from models import lightning_ckpt, make_net2net, make_vqgan, vqgan_config


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


def test_registry_entries_name_taming_configs_and_https_or_hub_sources():
    table = load_table()
    downloadable = {name: e for name, e in table["vqgan"].items() if "path" not in e}
    assert len(downloadable) >= 8
    for name, entry in downloadable.items():
        cfg = yaml.safe_load((HERE / entry["config"]).read_text())
        assert cfg["model"]["target"].split(".")[-1] in ("VQModel", "GumbelVQ", "Net2NetTransformer"), name
        assert entry["sources"], name
        for source in entry["sources"]:
            assert source.get("hub") or source["url"].startswith("https://"), (name, source)
    text = (HERE / "registry.json").read_text()
    assert "mirror.io.community" not in text and "eaidata.bmk.sh" not in text


def test_transformer_checkpoint_loads_its_first_stage(tmp_path):
    """S-FLCKR/FacesHQ files are whole Net2NetTransformers: the VQGAN is first_stage_model.* of them."""
    cfg = vqgan_config("VQModel")
    net2net = {"model": {"target": "taming.models.cond_transformer.Net2NetTransformer",
                         "params": {"first_stage_config": cfg["model"], "cond_stage_key": "coord"}}}
    (tmp_path / "project.yaml").write_text(yaml.safe_dump(net2net))
    vqgan = vqgan_from_config(cfg)
    sd = {f"first_stage_model.{k}": v for k, v in vqgan.state_dict().items()}
    sd["transformer.tok_emb.weight"] = torch.zeros(4, 4)
    sd["cond_stage_model.weight"] = torch.zeros(2)
    lightning_ckpt(sd, tmp_path / "last.ckpt")
    loaded = load_vqgan(tmp_path / "project.yaml", tmp_path / "last.ckpt")
    assert all(torch.equal(v, vqgan.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_published_transformer_configs_name_their_first_stage():
    """The shipped S-FLCKR/FacesHQ configs build the f16 VQGAN with 1024 codes their first stage is."""
    for name in ("sflckr-1024", "faceshq-1024"):
        cfg = read_config(HERE / load_table()["vqgan"][name]["config"])
        params = cfg.model.params.first_stage_config.params
        assert (params.n_embed, params.embed_dim, list(params.ddconfig.ch_mult)) == (1024, 256, [1, 1, 2, 2, 4])


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


def test_coco_config_is_the_architecture_of_the_published_first_stage_file():
    """The mirrored coco_first_stage.ckpt is 296,030,214 bytes: these weights in float32 plus a pickle's
    overhead (about 0.1 MB); with 1024 or 16384 codes the weights alone would be 7 MB off."""
    entry = load_table()["vqgan"]["coco-8192"]
    published = {s.get("size") for s in entry["sources"]} - {None}
    model = vqgan_from_config(read_config(HERE / entry["config"]))
    weights = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    assert published == {296_030_214} and 0 < 296_030_214 - weights < 200_000


def test_every_source_of_a_pinned_file_carries_its_pins_and_the_table_says_where_each_was_published():
    """All sources of an entry are copies of one file: a pin on one source is a pin on all (plain URLs too),
    and `published` names where each pin comes from (null: nowhere, and then no source pins it)."""
    downloadable = {name: e for name, e in load_table()["vqgan"].items() if "sources" in e}
    for name, entry in downloadable.items():
        for key in ("sha256", "size"):
            pins = [source.get(key) for source in entry["sources"]]
            assert len(set(pins)) == 1, (name, key, pins)  # no source of a pinned file is unpinned
            assert bool(pins[0]) == bool(entry["published"][key]), (name, key)
    gumbel = {s.get("hub"): s for s in downloadable["gumbel-8192"]["sources"]}
    assert gumbel["neggles/vaedump"]["sha256"].startswith("5cd6c748")  # its LFS pointer shows the pinned sha256
    small = downloadable["imagenet-1024"]
    assert {s.get("size") for s in small["sources"]} == {957_954_257} and small["published"]["sha256"] is None
    assert "issue #38" in small["published"]["size"]


def test_list_models_says_for_each_file_where_its_pins_come_from(tmp_path):
    from clipguide.listing import model_listing

    lines = model_listing(load_table(), tmp_path).splitlines()
    table = load_table()["vqgan"]
    for name, entry in table.items():
        if "sources" not in entry:
            continue
        row = next(i for i, line in enumerate(lines) if line.startswith(f"  {name} "))
        pins = lines[row + 1].strip()
        assert pins.startswith("pins: "), (name, pins)
        for where in filter(None, entry["published"].values()):
            assert where in pins, (name, where)
        assert ("unpinned" in pins) == (None in entry["published"].values()), (name, pins)
    assert "pins: unpinned: no sha256 or size is published" in "\n".join(lines)  # vq-f8


def _vqgan_state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return vqgan_from_config(vqgan_config("VQModel")).state_dict()


def _config(tmp_path) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(vqgan_config("VQModel")))
    return path


def test_extra_keys_are_ignored_as_taming_does_and_missing_ones_are_still_an_error(tmp_path):
    """taming's init_from_ckpt loads with strict=False; e.g. an EMA copy or a remapping buffer is not an error."""
    sd = _vqgan_state()
    lightning_ckpt(sd | {"model_ema.decay": torch.tensor(0.999), "quantize.used": torch.arange(4)},
                   tmp_path / "extra.ckpt")
    model = load_vqgan(_config(tmp_path), tmp_path / "extra.ckpt")
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())
    lightning_ckpt({k: v for k, v in sd.items() if k != "decoder.conv_out.bias"}, tmp_path / "short.ckpt")
    with pytest.raises(UserError, match=r"does not fit .*1 missing keys e\.g\. \['decoder\.conv_out\.bias'\]"):
        load_vqgan(_config(tmp_path), tmp_path / "short.ckpt")


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_a_lightning_checkpoint_with_callbacks_and_optimiser_states_loads_in_either_file_format(tmp_path, legacy):
    sd = _vqgan_state()
    lightning_ckpt(sd, tmp_path / "last.ckpt", legacy=legacy)
    raw = load_weights(tmp_path / "last.ckpt")
    assert len(raw["optimizer_states"]) == 2 and raw["optimizer_states"][0]["state"][0]["exp_avg"].numel() > 0
    assert type(raw["hparams"]).__qualname__ == "ModelCheckpoint"  # the callback object, as an inert placeholder
    model = load_vqgan(_config(tmp_path), tmp_path / "last.ckpt")
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())


def _bytes_read() -> int:
    """Bytes this process has read with read() and its kin so far (Linux)."""
    return int(dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())["rchar"])


def test_a_transformer_file_gives_its_vqgan_without_its_gpt_and_optimiser_states_being_read(tmp_path):
    """S-FLCKR's file is 4.26 GB, its VQGAN 288 MB: the zip format is memory-mapped, so only what is used is read."""
    cfg, ckpt, vqgan = make_net2net(tmp_path, transformer_floats=4 * 2**20)  # a 16 MB "GPT"
    before = _bytes_read()
    model = load_vqgan(cfg, ckpt)
    read = _bytes_read() - before
    assert all(torch.equal(v, vqgan[k]) for k, v in model.state_dict().items())
    assert read < ckpt.stat().st_size / 10, (read, ckpt.stat().st_size)


def test_a_checkpoint_with_compressed_records_is_read_whole_not_mapped(tmp_path):
    """torch would map the deflated bytes as they lie and give wrong numbers without an error."""
    from clipguide.models.checkpoint import save_weights

    sd = _vqgan_state()
    save_weights({"state_dict": sd}, tmp_path / "deflated.ckpt", deflate=True)
    model = load_vqgan(_config(tmp_path), tmp_path / "deflated.ckpt")
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())


class _RunsCode:
    """Unpickling this runs a shell command: what a hostile checkpoint would carry."""

    def __reduce__(self):
        import os

        return os.system, ("touch ran-the-payload",)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_a_vqgan_checkpoint_whose_pickle_would_run_code_is_refused_and_nothing_runs(tmp_path, legacy):
    torch.save({"state_dict": _vqgan_state(), "callbacks": _RunsCode()}, tmp_path / "last.ckpt",
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UserError) as e:
        load_vqgan(_config(tmp_path), tmp_path / "last.ckpt")
    assert "holds code: unpickling it would call posix.system" in e.value.problem and "not loaded" in e.value.problem
    assert "corrupt" not in e.value.line()
    assert not Path("ran-the-payload").exists()


def _hostile_clip(tiny, tmp_path) -> Path:
    """An open_clip model folder whose weights file also pickles a shell command."""
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_bytes((tiny["clip"] / "open_clip_config.json").read_bytes())
    torch.save({"visual.proj": torch.zeros(2), "x": _RunsCode()}, folder / "open_clip_pytorch_model.bin")
    return folder


@pytest.mark.parametrize("how", ["local-dir", "path"])
def test_clip_weights_whose_pickle_would_run_code_are_refused(tiny, tmp_path, how):
    folder = _hostile_clip(tiny, tmp_path)
    spec = f"local-dir:{folder}" if how == "local-dir" else f"RN50:{folder / 'open_clip_pytorch_model.bin'}"
    with pytest.raises(UserError, match="CLIP weights .* holds code: unpickling it would call posix.system"):
        load_clip(spec)
    assert not Path("ran-the-payload").exists()


def test_hostile_weights_get_one_line_and_exit_code_2_from_the_command_line(tiny, tmp_path):
    from cli_run import run

    cfg, ckpt = tiny["vq"]
    hostile_clip, clip = f"local-dir:{_hostile_clip(tiny, tmp_path)}", f"local-dir:{tiny['clip']}"
    torch.save({"state_dict": _vqgan_state(), "callbacks": _RunsCode()}, tmp_path / "last.ckpt")
    for vqgan, clip, what in [(ckpt, hostile_clip, "CLIP weights"), (tmp_path / "last.ckpt", clip, "VQGAN checkpoint")]:
        code, _, err = run("a dog", "--vqgan", vqgan, "--vqgan-config", cfg, "--clip", clip, "--width", 32,
                           "--height", 32, "--steps", 1, "-q")
        assert code == 2 and f"{what} " in err and "holds code" in err, err
        assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert not Path("ran-the-payload").exists()
