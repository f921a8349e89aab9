"""The benchmark at tiny sizes (behaviour of its tables, not timings) and the fast path's equivalence."""

import copy
import json
import math
import subprocess
import sys
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
    rows, pairs = bench.configure(bench.parse_args(["--preset", "cpu", "--steps", "3"]))
    assert list(rows) == ["64x64 cutn 4", "256x256 cutn 8"] and pairs == 5
    first = rows["64x64 cutn 4"]
    assert (first.width, first.cutn, first.steps, first.device) == (64, 4, 3, "cpu")
    rows, pairs = bench.configure(bench.parse_args(["--preset", "cpu", "--row", "256x256 cutn 8", "--pairs", "2"]))
    assert list(rows) == ["256x256 cutn 8"] and pairs == 2 and rows["256x256 cutn 8"].cutn == 8
    rows, _ = bench.configure(bench.parse_args(["--preset", "gpu", "--compile"]))
    cfg = rows["512x512 cutn 32"]
    assert (cfg.width, cfg.cutn, cfg.compile, cfg.device) == (512, 32, True, "cuda")


def test_bad_requests_are_one_line_and_exit_2_before_any_work(tmp_path):
    """A row the preset lacks, or CUDA where there is none: one line, exit 2, no weights written."""
    cases = [["--preset", "cpu", "--row", "nope"]]
    if not torch.cuda.is_available():
        cases.append(["--preset", "gpu", "--all"])
    for args in cases:
        done = subprocess.run([sys.executable, "-m", "clipguide.bench", *args, "--weights-dir", str(tmp_path / "w")],
                              capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "w").exists()


# OpenAI's code infers heads as width // 64: a tiny architecture both implementations read alike
TINY_OPENAI = {"embed_dim": 32, "quick_gelu": True,
               "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 64},
               "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}}


@pytest.fixture(scope="module")
def bench_weights(tmp_path_factory):
    pytest.importorskip("clip", reason="the classic loop needs OpenAI's CLIP code: pip install 'clipguide[bench]'")
    from models import vqgan_config
    import yaml

    root = tmp_path_factory.mktemp("bench")
    (root / "clip.json").write_text(json.dumps(TINY_OPENAI))
    (root / "vq.yaml").write_text(yaml.safe_dump(vqgan_config()))
    args = ["--clip", str(root / "clip.json"), "--vqgan-config", str(root / "vq.yaml"), "--width", "32",
            "--height", "32", "--cutn", "2", "--steps", "2", "--warmup", "1", "--device", "cpu",
            "--weights-dir", str(root / "w")]
    return root, args


def test_openai_and_open_clip_read_the_same_weights_alike(bench_weights):
    from clipguide.bench import weights

    root, args = bench_weights
    files = weights.write(root / "w", str(root / "clip.json"), str(root / "vq.yaml"))
    assert weights.check_clip(files) < 1e-5
    oai, _ = weights.load_openai(files, "cpu")
    assert type(oai).__module__ == "clip.model" and oai.visual.conv1.weight.dtype == torch.float32


def test_classic_pieces():
    from clipguide.bench import loops

    flat = torch.full((1, 3, 40, 40), 0.25)
    assert torch.allclose(loops.resample(flat, 16), torch.full((1, 3, 16, 16), 0.25), atol=1e-6)  # shrinks
    assert loops.resample(flat, 64).shape == (1, 3, 64, 64)  # grows (bicubic only)
    k = loops._lanczos_kernel(0.5)
    assert math.isclose(float(k.sum()), 1.0, rel_tol=1e-6) and torch.equal(k, k.flip(0))
    cb = torch.randn(10, 4)
    z = cb[torch.tensor([3, 7, 1, 1])].T.reshape(1, 4, 2, 2).clone().requires_grad_(True)
    q = loops.classic_quantize(z + 1e-3, cb)
    torch.testing.assert_close(q, z.detach())
    q.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))  # straight through


def test_bench_pairs_table_and_memory(bench_weights, capsys):
    root, args = bench_weights
    res = bench.main(args + ["--pairs", "2", "--save-every", "1", "--json", str(root / "r.json")])
    row = res["rows"]["run"]
    assert len(row["ratios"]) == 2 and all(r > 0 for r in row["ratios"])
    for kind in ("classic", "engine"):
        for run in row["runs"][kind]:
            assert run["timed_steps"] == 2 and math.isfinite(run["loss_mean"])
            assert run["peak_mb"] >= run["models_mb"] > 0 and run["threads"] >= 1
    assert json.loads((root / "r.json").read_text())["rows"].keys() == {"run"}
    printed = capsys.readouterr().out
    assert "| run |" in printed and "agree to" in printed


def test_gpu_table_runs_its_variants_on_cpu_at_a_tiny_size(bench_weights):
    """The --all variants that change code paths (autocast bf16/fp16, B images, auto batch) at a tiny size."""
    from clipguide.bench import gpu, weights
    from clipguide.bench.loops import Config

    root, _ = bench_weights
    files = weights.write(root / "w", str(root / "clip.json"), str(root / "vq.yaml"))
    cfg = Config(width=32, height=32, cutn=2, steps=2, warmup=1, device="cpu", clip=str(root / "clip.json"),
                 vqgan_config=str(root / "vq.yaml"))
    variants = {k: v for k, v in gpu.VARIANTS.items() if k != "engine compiled"}
    variants["engine bf16"] = ("engine", {"precision": "bf16"})
    res = gpu.measure_all(cfg, files.root, log=lambda msg: None, variants=variants)
    assert all(math.isfinite(r["loss"]) and r["step_ms"] > 0 for r in res.values())
    assert res["engine B=8"]["batch"] == 8 and 1 <= res["engine auto"]["batch"] <= 8
    res["engine compiled"] = res["engine bf16"]
    table = gpu.format_table(res, "header")
    assert table.count("\n|") == 9 and "chose B=" in table


def test_startup_splits_the_first_command(monkeypatch):
    from clipguide.bench import startup

    monkeypatch.setattr(startup, "COMMAND", startup.COMMAND + ["--steps", "2", "--candidates", "1"])
    runs = startup.measure(1, log=lambda msg: None)
    phases = runs[0]["phases"]
    assert {"imports for a run", "model loading", "checksums", "memory probe", "the run"} <= set(phases)
    assert all(wall >= -0.05 for wall, _ in phases.values())
    assert abs(sum(wall for wall, _ in phases.values()) - runs[0]["wall"]) < 0.05
    assert "| **total** |" in startup.table(runs)
