"""`python -m clipguide.bench`: the classic VQGAN+CLIP loop against clipguide's engine, same models, same run.

(a) classic: the loop as the field has run it -- fp32, cutouts cut one by one in a Python loop and
    pooled to CLIP's size, Kornia augments and noise on the stacked batch, `loss.item()` every step,
    a synchronous PNG per saved frame, Adam, latent clamp; B images are B separate loops.
(b) engine: `engine.optimize` on an `Objective` built as `Session.objective` builds it (batched
    cutouts, B images in one batch, callbacks, frames through `FrameWriter`), with the models passed
    through `speed.prepare_clip` / `speed.prepare_vqgan`.

Both use the same random weights of the real architectures (open_clip ViT-B-32, the shipped VQGAN
f16-16384 config) unless --clip/--vqgan-config say otherwise.  Nothing is downloaded.
The loops themselves are in `clipguide.bench.loops`; this module measures them and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..models import fast as speed
from ..models.factory import autocast_dtype, resolve_device
from .loops import Config, Models, run_classic, run_engine, summarise

# preset -> (settings, rows: (name, overrides))
PRESETS = {
    "cpu": (dict(width=64, height=64, cutn=4, steps=10, warmup=3),
            [("B=1", {}), ("save-every-1", {"save_every": 1})]),
    "gpu": (dict(width=512, height=512, cutn=32, steps=20, warmup=5, compile=True),
            [("B=1", {}), ("B=8 vs 8 runs", {"batch": 8}), ("save-every-1", {"save_every": 1})]),
}


def _read_status() -> dict:
    with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) / 1024 for k, v in (line.split(":", 1) for line in f) if k in ("VmRSS", "VmHWM")}


def child_memory(kind: str, cfg: Config) -> dict:
    """Run one variant alone (in this process, which should be fresh); its peak RSS in MiB."""
    device = resolve_device(cfg.device)
    m = Models(cfg, device)
    if kind == "engine":
        m.prepare(cfg, copy_first=False)
    cfg = dataclasses.replace(cfg, warmup=1, steps=min(cfg.steps, 2), memory=False)
    try:  # reset the high-water mark to the current RSS (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
        base, kind_of = _read_status()["VmRSS"], "peak RSS over the loop (VmHWM reset after loading)"
    except OSError:
        base, kind_of = None, "peak RSS of the process (ru_maxrss)"
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "classic":
            run_classic(m, cfg, Path(tmp))
        else:
            run_engine(m, cfg, Path(tmp), autocast_dtype(cfg.precision, device))
    peak = _read_status()["VmHWM"] if base is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_mb": peak, "models_mb": base, "kind": kind_of}


def measure_memory(kind: str, cfg: Config) -> dict:
    """CPU: the peak RSS of this variant run alone in a fresh subprocess."""
    cmd = [sys.executable, "-m", "clipguide.bench", "--child", kind, "--child-config",
           json.dumps(dataclasses.asdict(cfg))]
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode:
        raise RuntimeError(f"memory subprocess failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def benchmark(cfg: Config, rows: list[tuple[str, dict]] | None = None, log=print) -> dict:
    """Run every row (classic, then engine) in this process; returns the results table as a dict."""
    rows = rows or [("run", {})]
    device = resolve_device(cfg.device)
    autocast = autocast_dtype(cfg.precision, device)
    m = Models(cfg, device)  # the classic loop runs these as loaded
    configs = [(name, dataclasses.replace(cfg, **over)) for name, over in rows]
    results = {name: {"config": dataclasses.asdict(c)} for name, c in configs}
    quality, load = {}, _load()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        base_name, base = configs[0]
        log("engine fp32 reference (models as loaded) ...")
        reference = run_engine(m, base, out, None)["losses"]
        fast = m.prepare(cfg)
        for name, c in configs:  # each row's two variants back to back, so a change of load hits both
            log(f"classic {name} ...")
            results[name]["classic"] = _timed(c, m, lambda: run_classic(m, c, out))
            log(f"engine {name} ...")
            results[name]["engine"] = _timed(c, fast, lambda: run_engine(fast, c, out, autocast))
    load += _load()
    for name, c in configs:
        r = results[name]
        if c.memory and device.type != "cuda":
            log(f"peak memory {name} (subprocesses) ...")
            for kind in ("classic", "engine"):
                mem = measure_memory(kind, c)
                r[kind].update(peak_mb=mem["peak_mb"], models_mb=mem["models_mb"], peak_kind=mem["kind"])
        r["ratio"] = r["classic"]["step_ms"] / r["engine"]["step_ms"]
        r["loss_rel_diff"] = abs(r["classic"]["loss_mean"] - r["engine"]["loss_mean"]) / abs(r["classic"]["loss_mean"])
    fast_losses = results[base_name]["engine"]["losses"]
    quality["fast_vs_reference_max_rel"] = max(abs(a - b) / abs(b) for a, b in zip(fast_losses, reference))
    quality["classic_vs_engine_rel"] = results[base_name]["loss_rel_diff"]
    classic = results[base_name]["classic"]["losses"]
    quality["classic_vs_engine_max_step_rel"] = max(abs(a - b) / abs(a) for a, b in zip(classic, fast_losses))
    return {"device": str(device), "precision": str(autocast or torch.float32).replace("torch.", ""),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "clip": cfg.clip,
            "vqgan_config": Path(cfg.vqgan_config).name, "rows": results, "quality": quality,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": load}


def _timed(cfg: Config, models: Models, fn) -> dict:
    cuda = models.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(models.device)
    row = summarise(cfg, fn())
    row.update(peak_mb=None, models_mb=None, peak_kind=None)
    if cfg.memory and cuda:  # both sets of models stay allocated: count only this variant's
        other = models.nbytes()
        row.update(peak_mb=(torch.cuda.max_memory_allocated(models.device) - other) / 2**20,
                   models_mb=(torch.cuda.memory_allocated(models.device) - other) / 2**20,
                   peak_kind="torch.cuda.max_memory_allocated, less the other variant's copy of the models")
    return row


def _load() -> list[float | None]:
    return [os.getloadavg()[0] if hasattr(os, "getloadavg") else None]


def ablation(cfg: Config, reps: int = 5) -> dict[str, float]:
    """Each change of the fast path alone: median ms of a CLIP image-tower / decoder forward+backward."""
    device = resolve_device(cfg.device)
    m = Models(cfg, device)
    size = m.clip.image_size
    x = torch.rand(cfg.cutn * cfg.batch, 3, size, size, device=device)
    z = torch.cat(m.latents(cfg))
    plain, vq = m.clip.model, m.vqgan
    attn = speed.prepare_clip(copy.deepcopy(plain), device, first_token=False, patch_embed=False)
    first = speed.prepare_clip(copy.deepcopy(plain), device, patch_embed=False)
    every = speed.prepare_clip(copy.deepcopy(plain), device, patch_embed=True)
    vq_cl = copy.deepcopy(vq).to(memory_format=torch.channels_last)

    def clip_pass(model):
        xx = x.clone().requires_grad_(True)
        model.encode_image(xx).sum().backward()

    def decoder_pass(model, layout):
        zq = model.quantize_st(z.clone().requires_grad_(True)).contiguous(memory_format=layout)
        model.decode(zq).sum().backward()

    tasks = {f"CLIP fwd+bwd, {cfg.cutn * cfg.batch} cutouts: open_clip as loaded": lambda: clip_pass(plain),
             "  + contiguous attention": lambda: clip_pass(attn),
             "  + class-token-only last block": lambda: clip_pass(first),
             "  + patch-embed matmul": lambda: clip_pass(every),
             f"decoder fwd+bwd, {cfg.width}x{cfg.height}: NCHW": lambda: decoder_pass(vq, torch.contiguous_format),
             "  channels_last": lambda: decoder_pass(vq_cl, torch.channels_last)}
    times: dict[str, list[float]] = {name: [] for name in tasks}
    for _ in range(reps + 1):  # interleaved, so a change in load hits every variant alike
        for name, fn in tasks.items():
            t = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t)
    return {name: 1000 * statistics.median(ts[1:]) for name, ts in times.items()}


def format_table(res: dict) -> str:
    head = ("| run | classic ms/step | engine ms/step | ratio | classic img/h | engine img/h "
            "| classic peak MiB | engine peak MiB | mean-loss diff |")
    load = f", 1-min load {res['load'][0]:.2f} at start, {res['load'][1]:.2f} at end" if res["load"][0] is not None else ""
    lines = [f"{res['date']}, {res['device']} ({res['threads']} threads{load}), torch {res['torch']}, "
             f"engine {res['precision']}, CLIP {res['clip']}, VQGAN {res['vqgan_config']}", "", head,
             "|" + "---|" * 9]

    def mem(v):
        if v.get("peak_mb") is None:
            return "-"
        over = f" (+{v['peak_mb'] - v['models_mb']:.0f})" if v.get("models_mb") is not None else ""
        return f"{v['peak_mb']:.0f}{over}"

    for name, r in res["rows"].items():
        c, e, cfg = r["classic"], r["engine"], r["config"]
        label = f"{name}: {cfg['width']}x{cfg['height']} cutn {cfg['cutn']} B={cfg['batch']}"
        lines.append(f"| {label} | {c['step_ms']:.0f} | {e['step_ms']:.0f} | {r['ratio']:.2f}x "
                     f"| {c['images_per_hour']:.1f} | {e['images_per_hour']:.1f} | {mem(c)} | {mem(e)} "
                     f"| {100 * r['loss_rel_diff']:.2f}% |")
    first = next(iter(res["rows"].values()))
    q = res["quality"]
    lines += ["", f"per-step times: median of {first['engine']['timed_steps']} steps after "
              f"{first['config']['warmup']} warm-up; img/h for {first['config']['image_steps']} steps per image",
              f"peak memory: {first['engine'].get('peak_kind') or 'not measured'}; (+N) = over the loaded models",
              f"quality: engine loss curve vs the fp32 engine on unprepared models, same seed: max relative "
              f"difference {q['fast_vs_reference_max_rel']:.2e}; classic vs engine (other cutout sampling): mean loss "
              f"{100 * q['classic_vs_engine_rel']:.2f}% apart, at most {100 * q['classic_vs_engine_max_step_rel']:.2f}% "
              "at any step"]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m clipguide.bench", description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS))
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            p.add_argument(flag, type={"int": int, "float": float}.get(f.type, str), default=None)
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--ablation", action="store_true", help="time each change of speed.py alone instead")
    p.add_argument("--child", choices=("classic", "engine"), help=argparse.SUPPRESS)
    p.add_argument("--child-config", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def configure(args) -> tuple[Config, list[tuple[str, dict]]]:
    """The preset's settings and rows, with every flag given on the command line on top."""
    base, rows = PRESETS[args.preset] if args.preset else ({}, [("run", {})])
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}
    return Config(**(base | given)), rows


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child_memory(args.child, Config(**json.loads(args.child_config)))))
        return None
    cfg, rows = configure(args)
    if args.ablation:
        for name, ms in ablation(cfg).items():
            print(f"{name:<60} {ms:8.1f} ms")
        return None
    res = benchmark(cfg, rows, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(format_table(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return res
