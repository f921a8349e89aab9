"""`python -m clipguide.bench --profile`: where a step's time goes, in both loops.

Two views, in this process, on the benchmark's weights:

1. the parts of a step alone, interleaved, minimum over the repeats (load only ever slows a run
   down, so the minimum is the least disturbed): CLIP image tower forward / forward+backward on the
   cutouts, decoder forward / forward+backward, cutouts forward+backward, quantiser, optimiser step;
2. torch.profiler's table of the operators of whole steps of each loop (self CPU time).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from .loops import Classic, Config, classic_cutouts, classic_quantize, engine_settings
from .weights import Files


def _min_ms(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return 1000 * best


def _parts(classic: Classic, session, cfg: Config, reps: int) -> dict[str, tuple[float, float]]:
    """name -> (classic ms, engine ms) of each part of a step alone."""
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

    tasks = {
        "CLIP forward": (lambda: classic.perceptor.encode_image(x), lambda: clip.model.encode_image(x)),
        "CLIP forward+backward": (grad_of(classic.perceptor.encode_image, x), grad_of(clip.model.encode_image, x)),
        "decoder forward": (lambda: classic.vqgan.decode(z), lambda: vq.decode(z)),
        "decoder forward+backward": (grad_of(classic.vqgan.decode, z), grad_of(vq.decode, z)),
        "cutouts forward+backward": (
            grad_of(lambda im: classic_cutouts(im, size, cfg.cutn, classic.augment), image), grad_of(cut, image)),
        "quantiser forward+backward": (grad_of(lambda t: classic_quantize(t, classic.vqgan.codebook), z),
                                       grad_of(vq.quantize_st, z)),
    }
    out = {name: [float("inf"), float("inf")] for name in tasks}
    with torch.no_grad():
        for f in (lambda: classic.perceptor.encode_image(x), lambda: clip.model.encode_image(x)):
            f()  # first calls allocate
    for _ in range(reps):  # interleaved: a change of load hits every part alike
        for name, fns in tasks.items():
            for i, fn in enumerate(fns):
                if "backward" in name:
                    out[name][i] = min(out[name][i], _min_ms(fn, 1))
                else:
                    with torch.no_grad():
                        out[name][i] = min(out[name][i], _min_ms(fn, 1))
    return {k: tuple(v) for k, v in out.items()}


def _op_table(step, n: int = 3, rows: int = 18) -> str:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(n):
            step(i)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48)


def profile(cfg: Config, weights_dir: str | None = None, reps: int = 5, log=print) -> dict:
    from ..run import Session
    from . import weights

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(weights_dir) if weights_dir else Path(tmp) / "weights"
        files = weights.write(root, cfg.clip, cfg.vqgan_config, cfg.seed)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        from ..models.factory import resolve_device

        device = resolve_device(cfg.device)
        classic = Classic(files, cfg, device)
        classic.start(cfg.seed)
        cfg = dataclasses.replace(cfg, warmup=2, steps=3)
        session = Session(engine_settings(files, cfg, Path(tmp)), log=lambda msg: None)
        parts = _parts(classic, session, cfg, reps)
        log(f"{cfg.width}x{cfg.height} cutn {cfg.cutn}, {torch.get_num_threads()} threads; each part alone, "
            f"min of {reps} (ms):")
        log(f"{'part':<30} {'classic':>9} {'engine':>9}")
        for name, (a, b) in parts.items():
            log(f"{name:<30} {a:9.1f} {b:9.1f}")
        for i in range(2):
            classic.step(i, Path(tmp))  # warm
        log("\nclassic loop, 3 steps:\n" + _op_table(lambda i: classic.step(i, Path(tmp))))
        log("\nengine (Session.run), 3 steps after 2:\n" + _engine_ops(session, cfg, Path(tmp)))
    return {"parts": parts}


def _engine_ops(session, cfg: Config, out: Path) -> str:
    from torch.profiler import ProfilerActivity, profile as torch_profile, schedule

    sched = schedule(wait=0, warmup=2, active=3, repeat=1)
    with torch_profile(activities=[ProfilerActivity.CPU], schedule=sched) as prof:
        session.run(session.plan.single_jobs(cfg.seed), progress=False, replace=True, on_step=lambda info: prof.step())
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=48)
