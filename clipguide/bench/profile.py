"""`python -m clipguide.bench --profile`: where a step's time goes in both loops, and the floor.

In this process, on the benchmark's weights:

1. whole steps of each loop and each part of a step alone (CLIP image tower forward and
   forward+backward on the cutouts, decoder, cutouts, quantiser), interleaved, the minimum over the
   repeats (load only ever slows a run down).  With one thread the clock is the process's CPU time,
   which another process on the same cores disturbs far less than wall time;
2. the floating-point work of each (torch.utils.flop_counter) and the rate a bare matrix product of
   CLIP's shapes reaches here: the floor of a step is its work at that rate;
3. torch.profiler's table of the operators of whole steps of each loop (self CPU time).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from .loops import Classic, Config, classic_cutouts, classic_quantize, engine_settings


def _clock():
    return time.process_time if torch.get_num_threads() == 1 else time.perf_counter


def gemm_rate(reps: int = 10) -> float:
    """GFLOP/s of the best of `reps` [200, 768] x [768, 3072] products (CLIP's MLP on 4 cutouts)."""
    a, b = torch.randn(200, 768), torch.randn(768, 3072)
    clock, best = _clock(), float("inf")
    for _ in range(reps):
        t = clock()
        a @ b
        best = min(best, clock() - t)
    return 2 * 200 * 768 * 3072 / best / 1e9


def _flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def _tasks(classic: Classic, session, cfg: Config) -> dict:
    """name -> (classic callable, engine callable) of each part of a step."""
    from ..guide.augments import DEFAULT_AUGMENTS
    from ..guide.cutouts import Cutouts

    clip, vq = session.models.clips[0], session.models.vqgan
    size = clip.image_size
    x = torch.rand(cfg.cutn, 3, size, size, generator=torch.Generator().manual_seed(0))
    z = classic.z.detach().clone()
    image = classic.synth(z).detach()
    cut = Cutouts(size, cfg.cutn, 1.0, DEFAULT_AUGMENTS, 0.1)

    def grad_of(f, t):
        def run():
            tt = t.clone().requires_grad_(True)
            f(tt).float().sum().backward()
        return run

    def no_grad(f):
        def run():
            with torch.no_grad():
                f()
        return run

    return {
        "CLIP forward": (no_grad(lambda: classic.perceptor.encode_image(x)), no_grad(lambda: clip.model.encode_image(x))),
        "CLIP forward+backward": (grad_of(classic.perceptor.encode_image, x), grad_of(clip.model.encode_image, x)),
        "decoder forward": (no_grad(lambda: classic.vqgan.decode(z)), no_grad(lambda: vq.decode(z))),
        "decoder forward+backward": (grad_of(classic.vqgan.decode, z), grad_of(vq.decode, z)),
        "cutouts forward+backward": (
            grad_of(lambda im: classic_cutouts(im, size, cfg.cutn, classic.augment), image), grad_of(cut, image)),
        "quantiser forward+backward": (grad_of(lambda t: classic_quantize(t, classic.vqgan.codebook), z),
                                       grad_of(vq.quantize_st, z)),
    }


def _engine_step(session, cfg: Config):
    """A callable taking one engine step (the Session's own objective, optimiser and clamp)."""
    from ..engine import make_optimizer, optimize

    jobs = session.plan.single_jobs(cfg.seed)
    objective = session.objective(jobs)
    pipe = session.pipeline(jobs)
    z = pipe.drawing.z
    opt = make_optimizer(session.settings.optimizer, [z], session.settings.lr)
    rng = session.vqgan.latent_range()
    return lambda: optimize(objective, z, opt, 1, latent_range=rng, callback=lambda info: info.loss.sum().item())


def measure(classic: Classic, session, cfg: Config, out: Path, reps: int) -> dict:
    """name -> {classic ms, engine ms, classic GFLOP, engine GFLOP}, the whole steps included."""
    tasks = _tasks(classic, session, cfg)
    steps = iter(range(10**9))
    tasks["whole step"] = (lambda: classic.step(next(steps) + 1, out), _engine_step(session, cfg))
    flops = {name: [_flops(f) for f in fns] for name, fns in tasks.items()}
    best = {name: [float("inf")] * 2 for name in tasks}
    clock = _clock()
    for _ in range(reps):  # interleaved: a change of load hits every part alike
        for name, fns in tasks.items():
            for i, fn in enumerate(fns):
                t = clock()
                fn()
                best[name][i] = min(best[name][i], 1000 * (clock() - t))
    return {name: {"classic_ms": best[name][0], "engine_ms": best[name][1], "classic_gflop": flops[name][0],
                   "engine_gflop": flops[name][1]} for name in tasks}


def report(parts: dict, rate: float, cfg: Config) -> str:
    clock = "CPU time of this process" if torch.get_num_threads() == 1 else "wall time"
    lines = [f"{cfg.width}x{cfg.height} cutn {cfg.cutn}, {torch.get_num_threads()} threads, {clock}; a bare matrix "
             f"product of CLIP's shapes: {rate:.0f} GFLOP/s", "",
             "| part | classic ms | engine ms | classic GFLOP | engine GFLOP | engine GFLOP/s | engine floor ms |",
             "|---|---|---|---|---|---|---|"]
    for name, p in parts.items():
        lines.append(f"| {name} | {p['classic_ms']:.1f} | {p['engine_ms']:.1f} | {p['classic_gflop']:.2f} "
                     f"| {p['engine_gflop']:.2f} | {p['engine_gflop'] / p['engine_ms'] * 1000:.0f} "
                     f"| {p['engine_gflop'] / rate * 1000:.0f} |")
    whole = parts["whole step"]
    floor = whole["engine_gflop"] / rate * 1000
    lines += ["", f"floor: the engine's {whole['engine_gflop']:.1f} GFLOP a step at {rate:.0f} GFLOP/s take {floor:.0f} ms; "
              f"the classic step takes {whole['classic_ms']:.0f} ms, so no engine doing this work can be more than "
              f"{whole['classic_ms'] / floor:.2f}x faster here (now {whole['classic_ms'] / whole['engine_ms']:.2f}x)"]
    return "\n".join(lines)


def _op_table(step, n: int = 3, rows: int = 18) -> str:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48)


def profile(cfg: Config, weights_dir: str | None = None, reps: int = 5, log=print, ops: bool = True) -> dict:
    from ..models.factory import resolve_device
    from ..run import Session
    from . import weights

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(weights_dir) if weights_dir else Path(tmp) / "weights"
        files = weights.write(root, cfg.clip, cfg.vqgan_config, cfg.seed)
        classic = Classic(files, cfg, resolve_device(cfg.device))
        classic.start(cfg.seed)
        session = Session(engine_settings(files, dataclasses.replace(cfg, warmup=0, steps=1), Path(tmp)),
                          log=lambda msg: None)
        parts = measure(classic, session, cfg, Path(tmp), reps)
        rate = gemm_rate()
        log(report(parts, rate, cfg))
        if ops:
            steps = iter(range(1, 10**9))
            log("\nclassic loop, 3 steps:\n" + _op_table(lambda: classic.step(next(steps), Path(tmp))))
            log("\nengine, 3 steps:\n" + _op_table(_engine_step(session, cfg)))
    return {"parts": parts, "gemm_gflops": rate}
