"""The benchmark at tiny sizes (behaviour of its table, not timings) and the fast path's equivalence."""

import copy
import json
import math
import warnings

import open_clip
import pytest
import torch
from torch import nn

from clipguide import bench
from clipguide.models import fast as speed

CLIP_CFG = dict(embed_dim=32, vision_cfg={"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
                text_cfg={"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1})


def _tiny_clip(seed=0):
    torch.manual_seed(seed)
    return open_clip.CLIP(**CLIP_CFG).eval()


def _image_pass(model, images):
    x = images.clone().requires_grad_(True)
    emb = model.encode_image(x)
    (emb * torch.linspace(-1, 1, emb.shape[-1])).sum().backward()  # a gradient that is not all ones
    return emb.detach(), x.grad


def test_prepare_clip_keeps_outputs_and_gradients():
    plain = _tiny_clip()
    fast = speed.prepare_clip(copy.deepcopy(plain), "cpu")  # on CPU: attention and patch embedding
    assert any(isinstance(m, speed.FastAttention) for m in fast.modules())
    assert isinstance(fast.visual.conv1, speed.PatchEmbed)
    assert isinstance(fast.visual.transformer, speed.FirstTokenTransformer)
    assert not isinstance(fast.transformer, speed.FirstTokenTransformer)  # the text tower pools another token
    assert fast.state_dict().keys() == plain.state_dict().keys()
    assert not any(p.requires_grad for p in fast.parameters())
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    emb0, grad0 = _image_pass(plain.requires_grad_(False), images)
    emb1, grad1 = _image_pass(fast, images)
    torch.testing.assert_close(emb1, emb0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad1, grad0, rtol=1e-5, atol=1e-7)
    assert grad0.abs().max() > 0
    tokens = torch.randint(1, 1000, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # the text tower goes through the causal-mask path
        torch.testing.assert_close(fast.encode_text(tokens), plain.encode_text(tokens), rtol=1e-5, atol=1e-6)


def test_prepare_clip_keeps_outputs_with_more_layers_and_leaves_token_outputs_alone():
    cfg = dict(CLIP_CFG, vision_cfg=dict(CLIP_CFG["vision_cfg"], layers=3))
    torch.manual_seed(0)
    plain = open_clip.CLIP(**cfg).eval().requires_grad_(False)
    fast = speed.prepare_clip(copy.deepcopy(plain), "cpu")
    images = torch.rand(2, 3, 32, 32)
    emb0, grad0 = _image_pass(plain, images)
    emb1, grad1 = _image_pass(fast, images)
    torch.testing.assert_close(emb1, emb0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad1, grad0, rtol=1e-5, atol=1e-7)
    tokens = copy.deepcopy(plain)
    tokens.visual.output_tokens = True  # a model whose callers read every token keeps its full last block
    speed.prepare_clip(tokens, "cpu")
    assert not isinstance(tokens.visual.transformer, speed.FirstTokenTransformer)


def test_prepare_clip_accepts_the_clip_wrapper(tiny):
    from clipguide.models.clip import load_clip

    clip = load_clip(f"local-dir:{tiny['clip']}")
    assert speed.prepare_clip(clip, "cpu") is clip
    assert isinstance(clip.model.visual.conv1, speed.PatchEmbed)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("mask", [None, "float", "bool"])
def test_fast_attention_equals_multihead_attention(batch_first, mask, monkeypatch):
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    fast = copy.deepcopy(ref)
    fast.__class__ = speed.FastAttention
    x = torch.randn(3, 5, 16) if batch_first else torch.randn(5, 3, 16)
    m = None
    if mask == "bool":
        m = torch.ones(5, 5, dtype=torch.bool).triu(1)
    elif mask == "float":
        m = torch.full((5, 5), float("-inf")).triu(1)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    outs = [ref(xs[0], xs[0], xs[0], need_weights=False, attn_mask=m)[0]]

    def original(*args, **kwargs):
        raise AssertionError("the fast path fell back to nn.MultiheadAttention")

    monkeypatch.setattr(nn.MultiheadAttention, "forward", original)
    outs.append(fast(xs[1], xs[1], xs[1], need_weights=False, attn_mask=m)[0])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
    for o in outs:
        o.pow(2).sum().backward()
    torch.testing.assert_close(xs[1].grad, xs[0].grad, rtol=1e-5, atol=1e-6)


def test_fast_attention_hands_what_it_does_not_cover_to_the_original():
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    fast = copy.deepcopy(ref)
    fast.__class__ = speed.FastAttention
    q, kv = torch.randn(2, 3, 16), torch.randn(2, 7, 16)
    torch.testing.assert_close(fast(q, kv, kv)[1], ref(q, kv, kv)[1])  # cross-attention with weights
    assert fast(q, q, q, need_weights=True)[1] is not None


@pytest.mark.parametrize("size", [32, 35])
def test_patch_embed_equals_the_convolution(size):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 12, 8, stride=8, bias=False)
    fast = copy.deepcopy(conv)
    fast.__class__ = speed.PatchEmbed
    x = torch.rand(2, 3, size, size)
    torch.testing.assert_close(fast(x), conv(x), rtol=1e-5, atol=1e-6)
    assert fast(x).shape == (2, 12, 4, 4)


def test_compile_falls_back_to_eager_when_it_fails(monkeypatch):
    def broken(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("no compiler here")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    lin = nn.Linear(4, 2)
    x = torch.rand(3, 4)
    expected = lin(x)
    assert speed.compile_forward(lin, "a linear")
    with pytest.warns(RuntimeWarning, match="running it eagerly"):
        torch.testing.assert_close(lin(x), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warns once, then stays eager quietly
        torch.testing.assert_close(lin(x), expected)


def test_compile_is_only_used_on_cuda():
    model = _tiny_clip()
    speed.prepare_clip(model, "cpu", compile=True)
    assert not isinstance(model.visual.forward, speed._CompiledForward)


def test_presets_and_flags_compose():
    cfg, rows = bench.configure(bench.parse_args(["--preset", "cpu", "--steps", "3"]))
    assert (cfg.width, cfg.height, cfg.cutn, cfg.steps) == (64, 64, 4, 3)
    assert rows[0][1] == {}
    cfg, rows = bench.configure(bench.parse_args(["--preset", "gpu", "--no-compile"]))
    assert (cfg.width, cfg.cutn, cfg.compile) == (512, 32, False)
    assert {"batch": 8} in [over for _, over in rows] and {"save_every": 1} in [over for _, over in rows]


def _check_table(res, batch, steps, warmup):
    for name, row in res["rows"].items():
        for kind in ("classic", "engine"):
            v = row[kind]
            assert v["timed_steps"] == steps and len(v["losses"]) == warmup + steps
            assert all(math.isfinite(x) for x in v["losses"])
            assert math.isclose(v["images_per_hour"], 3600 * batch / (v["step_ms"] / 1000 * 500), rel_tol=1e-9)
        assert math.isclose(row["ratio"], row["classic"]["step_ms"] / row["engine"]["step_ms"], rel_tol=1e-9)
    # same seed, fp32: the fast path's loss curve is the unprepared engine's up to float noise
    assert res["quality"]["fast_vs_reference_max_rel"] < 1e-4
    assert 0 <= res["quality"]["classic_vs_engine_rel"] < 0.2


def test_bench_tiny_models_table_and_memory(tiny, tmp_path, capsys):
    cfg, _ = tiny["vq"]
    out = tmp_path / "r.json"
    res = bench.main(["--clip", f"local-dir:{tiny['clip']}", "--vqgan-config", str(cfg), "--width", "32",
                      "--height", "32", "--cutn", "2", "--steps", "2", "--warmup", "1", "--batch", "2",
                      "--save-every", "1", "--device", "cpu", "--json", str(out)])
    _check_table(res, batch=2, steps=2, warmup=1)
    assert json.loads(out.read_text())["rows"].keys() == res["rows"].keys()
    for kind in ("classic", "engine"):
        v = res["rows"]["run"][kind]
        assert v["peak_mb"] >= v["models_mb"] > 0  # peak RSS of the variant's own subprocess
    printed = capsys.readouterr().out
    assert "| run: 32x32 cutn 2 B=2 |" in printed and f"{res['rows']['run']['ratio']:.2f}x" in printed


def test_bench_real_architectures_short():
    """ViT-B-32 and the shipped VQGAN f16-16384 config (random weights), at the smallest size."""
    res = bench.main(["--width", "32", "--height", "32", "--cutn", "1", "--steps", "1", "--warmup", "1",
                      "--device", "cpu", "--no-memory"])
    _check_table(res, batch=1, steps=1, warmup=1)
    assert res["clip"] == "ViT-B-32:random" and res["vqgan_config"] == "vqgan_imagenet_f16_16384.yaml"
    assert res["rows"]["run"]["engine"]["peak_mb"] is None


def test_ablation_times_each_change(tiny):
    cfg, _ = tiny["vq"]
    args = bench.parse_args(["--clip", f"local-dir:{tiny['clip']}", "--vqgan-config", str(cfg), "--width", "32",
                             "--height", "32", "--cutn", "2", "--device", "cpu", "--ablation"])
    times = bench.ablation(bench.configure(args)[0], reps=1)
    assert len(times) == 6 and all(ms > 0 for ms in times.values())
    assert any("patch-embed" in name for name in times) and any("channels_last" in name for name in times)
