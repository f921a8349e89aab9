"""Short training runs of the tiny models lower their losses, and what is saved loads back."""

import json

import open_clip
import pytest
import torch

from clipguide.models.vqgan import load_vqgan, save_vqgan
from clipguide.tiny import clip_training as ct
from clipguide.tiny import schedule, train, world
from clipguide.tiny import vqgan_training as vt


@pytest.fixture
def one_thread():
    """Small models train fastest on one thread, and stay fast when other processes share the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_clip_config():
    cfg = ct.clip_config(width=32, head_width=16, layers=1, patch_size=8, image_size=16)
    cfg["text_cfg"].update(width=16, heads=2, layers=1, context_length=12)
    cfg["embed_dim"] = 16
    return cfg


def test_lr_schedule_warms_up_and_decays():
    lrs = [schedule.lr_at(s, 2000, 1.0) for s in range(2000)]
    assert lrs[0] < lrs[50] < lrs[99] <= 1.0
    assert lrs[1999] < 0.1 and min(lrs[100:]) >= 0.05 - 1e-9
    assert schedule.lr_at(2, 30, 1.0) == 1.0  # short runs warm up over a tenth of their steps


def test_progress_lines_come_every_n_steps_and_at_the_end_with_the_recent_mean(capsys):
    history = []
    for step in range(5):
        history.append(float(step))
        schedule.report("clip", "loss", step, 5, history, 2, 0.0, lambda: "scale 9.0")
    lines = capsys.readouterr().err.splitlines()
    assert [line.rsplit(" ", 1)[0] for line in lines] == [
        "clip step 2/5 loss 0.5000 scale 9.0", "clip step 4/5 loss 2.5000 scale 9.0", "clip step 5/5 loss 3.5000 scale 9.0"]
    assert all(line.endswith("s") for line in lines)  # and the seconds so far


def test_vqgan_short_training_lowers_loss_and_round_trips(tmp_path, one_thread):
    cfg = vt.vqgan_config(ch=32, n_embed=32)
    cfg["model"]["params"]["ddconfig"]["ch_mult"] = [1, 2]
    model, cfg, hist = vt.train_vqgan(80, seed=0, batch=8, lr=3e-3, config=cfg, restart_every=10,
                                         log_every=1000, image_size=16)
    assert sum(hist[-5:]) / 5 < 0.85 * sum(hist[:5]) / 5
    save_vqgan(model, cfg, tmp_path / "vqgan.yaml", tmp_path / "vqgan.ckpt")
    ck = torch.load(tmp_path / "vqgan.ckpt", weights_only=True)
    assert set(ck) == {"state_dict"} and "quantize.embedding.weight" in ck["state_dict"]
    back = load_vqgan(tmp_path / "vqgan.yaml", tmp_path / "vqgan.ckpt")
    x = world.make_batch(2, 1, 32).images
    with torch.no_grad():
        assert torch.equal(back.decode(back.encode(x)), model.decode(model.encode(x)))
    assert back.codebook.shape == (32, 16)
    # stored in half precision (how the shipped one is saved): half the file, loaded as float32, same pictures
    save_vqgan(model, cfg, tmp_path / "half.yaml", tmp_path / "half.ckpt", dtype=torch.float16)
    half = torch.load(tmp_path / "half.ckpt", weights_only=True)["state_dict"]
    assert {v.dtype for v in half.values() if v.is_floating_point()} == {torch.float16}
    assert (tmp_path / "half.ckpt").stat().st_size < 0.6 * (tmp_path / "vqgan.ckpt").stat().st_size
    back = load_vqgan(tmp_path / "half.yaml", tmp_path / "half.ckpt")
    assert back.codebook.dtype == torch.float32
    # the same model saved again, under another name, is the same bytes (the registry pins a sha256)
    save_vqgan(model, cfg, tmp_path / "again.yaml", tmp_path / "other-name.ckpt", dtype=torch.float16)
    assert (tmp_path / "other-name.ckpt").read_bytes() == (tmp_path / "half.ckpt").read_bytes()
    # what a user sees: the same codes draw the same picture, to well under one 8-bit level (a run
    # decodes codes; it never encodes unless given an init image) ...
    with torch.no_grad():
        z = model.encode(x)
        codes = code_indices(model, z)
        same_codes = back.codebook[codes].movedim(-1, 1)
        assert (back.decode(same_codes) - model.decode(z)).abs().max() < 1 / 255
        # ... and encoding picks the same code almost everywhere: rounding the weights can tip a cell
        # whose two nearest codes are all but equally near (1 of 512 cells here, on some CPUs)
        assert (code_indices(back, back.encode(x)) == codes).float().mean() >= 0.99
        assert (back.decode(back.encode(x)) - model.decode(z)).abs().mean() < 2e-3


def code_indices(model, z):
    """[B, h, w] index of the code at each cell of a quantised latent."""
    flat = z.movedim(1, -1)
    return torch.cdist(flat.reshape(-1, flat.shape[-1]), model.codebook).argmin(1).view(flat.shape[:-1])


def test_code_restart_moves_only_dead_codes():
    model = __import__("clipguide.models.vqgan", fromlist=["x"]).vqgan_from_config(vt.vqgan_config(n_embed=8))
    before = model.codebook.detach().clone()
    dead = torch.tensor([True, False] * 4)
    n = vt.restart_codes(model, world.make_batch(1, 0).images, dead, torch.Generator().manual_seed(0))
    assert n == 4
    assert torch.equal(model.codebook[~dead], before[~dead]) and not torch.equal(model.codebook[dead], before[dead])


def test_soft_targets_count_true_captions_as_positives():
    b = world.make_batch(32, 3)
    t = ct.soft_targets(b)
    assert t.diagonal().eq(1).all()
    i, j = next((i, j) for i in range(32) for j in range(32) if i != j and b.captions[i] == b.captions[j]) \
        if len(set(b.captions)) < 32 else (0, 0)
    assert t[i, j] == 1


def test_random_crops_keep_the_shape_centre():
    b = world.make_batch(16, 4)
    g = torch.Generator().manual_seed(0)
    crops = ct.random_crops(b.images, b, 32, g)
    assert crops.shape == (16, 3, 32, 32)
    fg = torch.tensor(list(world.COLOURS.values()))[b.colour]  # the shape's colour is in every crop
    dist = (crops.movedim(1, -1).reshape(16, -1, 3) - fg[:, None]).abs().sum(-1).min(1).values
    assert (dist < 0.05).all()


def test_whole_crops_never_cut_the_shape():
    b = world.make_batch(32, 5)
    g = torch.Generator().manual_seed(0)
    whole = ct.random_crops(b.images, b, 64, g, whole=True)
    fg = torch.tensor(list(world.COLOURS.values()))[b.colour]
    near = lambda x: ((x.movedim(1, -1) - fg[:, None, None]).abs().sum(-1) < 0.3)  # noqa: E731
    def on_border(crops):  # [N] does the shape colour reach the crop's outermost pixels?
        m = near(crops)
        return torch.cat([m[:, 0], m[:, -1], m[:, :, 0], m[:, :, -1]], 1).any(1)

    # the shape never touches the crop's border (world shapes keep 1 px from the picture's edge)
    assert not on_border(whole).any()
    assert near(whole).flatten(1).sum(1).gt(0).all()
    centre = ct.random_crops(b.images, b, 64, torch.Generator().manual_seed(0))
    assert on_border(centre).sum() > 4  # without `whole`, crops do cut big shapes


def test_clip_short_training_lowers_loss_and_loads_via_local_dir(tmp_path, one_thread):
    cfg = small_clip_config()
    model, cfg, hist = ct.train_clip(40, seed=0, batch=32, lr=2e-3, config=cfg, log_every=100)
    assert sum(hist[-5:]) / 5 < sum(hist[:5]) / 5 - 0.2
    ct.save_clip(model, cfg, tmp_path / "clip")
    meta = json.loads((tmp_path / "clip" / "open_clip_config.json").read_text())
    assert meta["preprocess_cfg"]["mean"] == list(ct.CLIP_MEAN)
    loaded = open_clip.create_model(f"local-dir:{tmp_path / 'clip'}").eval()
    tok = open_clip.get_tokenizer(f"local-dir:{tmp_path / 'clip'}")
    assert tok.context_length == 12 and tok(["a red circle"]).shape == (1, 12)
    with torch.no_grad():
        a = model.encode_text(tok(["a red circle on a blue background"]))
        b = loaded.encode_text(tok(["a red circle on a blue background"]))
    assert torch.allclose(a, b, atol=2e-2)  # stored in fp16


def test_saved_clip_keeps_the_worlds_tokens_and_is_small(tmp_path):
    """Rows of tokens no world caption uses are stored as zeros, in a deflated file that open_clip
    loads as it is: what the world's captions encode to is unchanged, and the file is a fraction of
    the table's size."""
    torch.manual_seed(0)
    cfg = small_clip_config()
    model = open_clip.CLIP(**cfg).eval()
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "open_clip_model.safetensors").write_bytes(b"stale")  # an older save's file
    ct.save_clip(model, cfg, tmp_path / "clip")
    assert sorted(f.name for f in (tmp_path / "clip").iterdir()) == ["open_clip_config.json",
                                                                      "open_clip_pytorch_model.bin"]
    weights = tmp_path / "clip" / "open_clip_pytorch_model.bin"
    table = torch.load(weights, weights_only=True)["token_embedding.weight"]
    tok = open_clip.SimpleTokenizer(context_length=12)
    used = ct.world_tokens(tok)
    assert {int(t) for t in tok(["a photo of a red blob on a blue background", "white background"]).unique()} \
        <= set(used.tolist())
    assert 10 < len(used) < 40 and table[used].abs().sum(1).gt(0).all()
    assert table.abs().sum(1).gt(0).sum() == len(used)
    assert weights.stat().st_size < 0.3 * table.numel() * 2  # deflated: far below the fp16 table alone
    loaded = open_clip.create_model(f"local-dir:{tmp_path / 'clip'}").eval()
    captions = world.all_captions()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(tok(captions)), model.encode_text(tok(captions)),
                                   atol=2e-2, rtol=0)
    before = weights.read_bytes()
    ct.save_clip(model, cfg, tmp_path / "clip")
    assert weights.read_bytes() == before  # the same model always gives the same file (and sha256)


def test_zero_shot_scores_are_fractions_and_perfect_for_an_oracle():
    class Oracle(torch.nn.Module):
        """Encodes pictures and full captions as one-hot labels: the zero-shot check must score it 1.0."""

        class visual:
            image_size = 64

        def encode_image(self, x):
            x = x * torch.tensor(ct.CLIP_STD)[:, None, None] + torch.tensor(ct.CLIP_MEAN)[:, None, None]
            palette = torch.tensor(list(world.COLOURS.values()))
            out = []
            for img in x:
                px = img.reshape(3, -1).T
                idx = ((px[:, None] - palette).abs().sum(-1)).argmin(1)
                counts = torch.bincount(idx, minlength=6)
                bg, fg = counts.argsort(descending=True)[:2]
                m = (idx == fg).view(64, 64)
                ys, xs = torch.nonzero(m, as_tuple=True)
                fill = m.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
                shape = 1 if fill > 0.95 else (0 if fill > 0.7 else 2)
                out.append(torch.cat([torch.eye(3)[shape], torch.eye(6)[fg], torch.eye(6)[bg]]))
            return torch.stack(out)

        def encode_text(self, captions):
            return torch.stack([torch.cat([torch.eye(3)[s], torch.eye(6)[c], torch.eye(6)[b]]) for s, c, b in captions])

    caps, rows = world.all_full_captions()
    lookup = dict(zip(caps, rows.tolist()))
    acc = ct.zero_shot(Oracle(), lambda cs: [lookup[c] for c in cs], n=24)
    assert acc == {"shape": 1.0, "colour": 1.0, "background": 1.0, "all": 1.0}


def test_shipped_weights_load_and_work(one_thread):
    """The committed tiny pair loads through the public loaders and does its job on held-out pictures."""
    from pathlib import Path

    import clipguide

    folder = Path(clipguide.__file__).parent / "weights" / "tiny"
    vq = load_vqgan(folder / "vqgan.yaml", folder / "vqgan.ckpt")
    ev = vt.vqgan_eval(vq, n=16)
    assert ev["l1"] < 0.04 and ev["pixel_colour_acc"] > 0.97
    clip = open_clip.create_model(f"local-dir:{folder / 'clip'}").eval()
    tok = open_clip.get_tokenizer(f"local-dir:{folder / 'clip'}")
    assert tok.context_length == 16
    acc = ct.zero_shot(clip, tok, n=64)
    assert min(acc.values()) > 0.9


def test_clip_fine_tunes_from_a_saved_one_with_blobs_and_reconstructions(tmp_path, one_thread):
    cfg = small_clip_config()
    model, cfg, _ = ct.train_clip(2, seed=0, batch=16, config=cfg, log_every=100)
    ct.save_clip(model, cfg, tmp_path / "clip")
    from clipguide.models.vqgan import vqgan_from_config

    vq = vqgan_from_config(vt.vqgan_config(ch=32, n_embed=16)).eval().requires_grad_(False)
    tuned, cfg2, hist = ct.train_clip(6, seed=1, batch=12, lr=1e-3, init=tmp_path / "clip", blobs=0.5,
                                         vqgan=vq, vqgan_p=0.5, log_every=100)
    assert cfg2 == cfg and len(hist) == 6 and all(h == h for h in hist)
    a = dict(model.named_parameters())["visual.conv1.weight"].half().float()
    assert not torch.equal(a, dict(tuned.named_parameters())["visual.conv1.weight"])  # it trained


def test_clip_stage_fine_tunes_the_saved_clip_in_place_with_the_folders_vqgan(tmp_path, one_thread):
    from clipguide.models.registry import sha256_of
    from clipguide.models.vqgan import save_vqgan, vqgan_from_config

    cfg = small_clip_config()
    model, cfg, _ = ct.train_clip(2, seed=0, batch=16, config=cfg, log_every=100)
    ct.save_clip(model, cfg, tmp_path / "clip")
    vcfg = vt.vqgan_config(ch=32, n_embed=16)
    save_vqgan(vqgan_from_config(vcfg), vcfg, tmp_path / "vqgan.yaml", tmp_path / "vqgan.ckpt")
    weights = tmp_path / "clip" / "open_clip_pytorch_model.bin"
    before = sha256_of(weights)
    stage = {"steps": 2, "lr": 1e-3, "batch": 12, "blobs": 0.5, "whole": True, "vqgan_p": 0.5, "log_every": 100}
    written = train.run_clip_stage(stage, 0, tmp_path, scratch=False)
    assert weights in written and sha256_of(weights) != before
    assert stage["vqgan_p"] == 0.5 and "vqgan" not in stage  # the table's entry is left as it was


def test_attack_raises_the_clip_loss_within_its_radius(one_thread):
    torch.manual_seed(0)
    model = open_clip.CLIP(**small_clip_config()).eval()
    tok = open_clip.SimpleTokenizer(context_length=12)
    b = world.make_batch(8, 3)
    images = ct.resize(b.images, 16)
    moved = ct.attack(model, tok, b, images, eps=0.5, steps=2)
    with torch.no_grad():
        assert ct.clip_loss(model, tok, b, moved) > ct.clip_loss(model, tok, b, images) + 1e-3
    assert (moved - images).flatten(1).norm(dim=1).max() <= 0.5 + 1e-4
    assert moved.min() >= 0 and moved.max() <= 1
    assert torch.equal(ct.attack(model, tok, b, images, eps=0.0, steps=2), images)


def test_adversarial_fine_tuning_runs_on_attacked_crops(tmp_path, one_thread, monkeypatch):
    assert min(train.CLIP_FINETUNES[-1]["adv_eps"]) > 0  # the shipped CLIP's last stage is adversarial
    seen = []
    real = ct.attack
    monkeypatch.setattr(ct, "attack", lambda *a, **k: seen.append(a[4]) or real(*a, **k))
    ct.train_clip(2, seed=0, batch=12, config=small_clip_config(), log_every=100, adv_eps=0.3)
    ct.train_clip(2, seed=0, batch=12, config=small_clip_config(), log_every=100)
    assert seen == [0.3, 0.3]


def test_a_stage_with_several_radii_saves_the_mean_of_one_fine_tune_per_radius(tmp_path, one_thread):
    model, cfg, _ = ct.train_clip(2, seed=0, batch=16, config=small_clip_config(), log_every=100)
    ct.save_clip(model, cfg, tmp_path / "start")
    ct.save_clip(model, cfg, tmp_path / "clip")
    stage = {"steps": 2, "lr": 1e-3, "batch": 12, "whole": True, "adv_eps": (0.3, 0.6), "log_every": 100}
    train.run_clip_stage(stage, 0, tmp_path, scratch=False)
    saved = torch.load(tmp_path / "clip" / "open_clip_pytorch_model.bin", weights_only=True)
    alone = [ct.train_clip(2, 0, batch=12, lr=1e-3, whole=True, adv_eps=eps, init=tmp_path / "start",
                              log_every=100)[0].state_dict() for eps in (0.3, 0.6)]
    key = "visual.conv1.weight"
    assert not torch.allclose(alone[0][key], alone[1][key])  # the radii trained different models ...
    rows = ct.world_tokens(open_clip.SimpleTokenizer(context_length=12))
    for k in (key, "text_projection", "token_embedding.weight"):  # ... and the saved one is their mean
        mean = (alone[0][k] + alone[1][k]) / 2
        if k == "token_embedding.weight":  # (the rows of the world's tokens: the others are stored as zeros)
            saved[k], mean = saved[k][rows], mean[rows]
        torch.testing.assert_close(saved[k].float(), mean.half().float())
    assert stage["adv_eps"] == (0.3, 0.6)


def test_average_weights_is_the_elementwise_mean():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    mean = ct.average_weights([a, b])
    torch.testing.assert_close(mean["weight"], (a.weight + b.weight).detach() / 2)
    torch.testing.assert_close(mean["bias"], (a.bias + b.bias).detach() / 2)
