"""`python -m clipguide.bench --preset gpu --all`: every GPU target of issue 18 in one table.

Each variant runs alone in a fresh process (its own peak memory, no compiled state carried over)
on the same weights, at the preset's size (512x512, cutn 32):

| variant | what it is |
|---|---|
| classic | OpenAI's CLIP as `clip.load` gives it on CUDA (fp16 weights), fp32 VQGAN, the classic loop |
| engine | clipguide, `--precision auto` (bf16 autocast), no frames, compile off |
| engine B=8 | the same with `--n-images 8`: eight images in one batch |
| engine frames | a frame every step (`--save-every 1 --frames-dir`) |
| engine fp16 / fp32 | `--precision fp16` / `fp32` |
| engine compiled | the image tower and the decoder through torch.compile (its compile time is the first step) |
| engine auto | eight images with `--batch-size auto`'s choice (`Session.fitting_batch(8)`) |

On a machine without CUDA it runs the same table on the CPU at whatever size the flags give
(that is how the tests exercise it); its figures then mean nothing for a GPU.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time

from .loops import Config

VARIANTS = {  # name -> (kind, changes to the preset's config)
    "classic": ("classic", {}),
    "engine": ("engine", {}),
    "engine B=8": ("engine", {"batch": 8}),
    "engine frames": ("engine", {"save_every": 1}),
    "engine fp16": ("engine", {"precision": "fp16"}),
    "engine fp32": ("engine", {"precision": "fp32"}),
    "engine compiled": ("engine", {"compile": True}),
    "engine auto": ("auto", {"batch": 8}),
}


def measure_all(cfg: Config, root, log=print, variants: dict = VARIANTS) -> dict:
    """name -> one process's results (median step ms, peak MiB, batch, first-step seconds)."""
    from .measure import spawn

    out = {}
    for name, (kind, over) in variants.items():
        c = dataclasses.replace(cfg, **over)
        t = time.perf_counter()
        res = spawn(kind, c, root)
        n = res["steps_per_image"]
        runs = [res["seconds"][i:i + n] for i in range(0, len(res["seconds"]), n)]
        timed = [s for r in runs for s in r[cfg.warmup:]]
        out[name] = {"step_ms": 1000 * statistics.median(timed), "first_s": res["seconds"][0],
                     "peak_mb": res["peak_mb"], "batch": res.get("batch", c.batch), "loss": statistics.fmean(res["losses"]),
                     "device": res["device"], "wall_s": time.perf_counter() - t, "kind": kind,
                     "compile_failed": res.get("compile_failed", False)}
        log(f"  {name}: {out[name]['step_ms']:.1f} ms/step, peak {out[name]['peak_mb'] or 0:.0f} MiB, "
            f"{out[name]['wall_s']:.0f} s")
    return out


def _yes(ok: bool) -> str:
    return "**yes**" if ok else "**no**"


def targets(r: dict, size: str = "512x512 cutn 32") -> list[tuple[str, str, str, str]]:
    """(target, goal, measured, met) rows from `measure_all`'s results."""
    c, e = r["classic"], r["engine"]
    per_step = c["step_ms"] / e["step_ms"]
    b8 = r["engine B=8"]
    img_b8 = b8["batch"] / b8["step_ms"]  # images per ms of a step, B images a step
    vs_single, vs_classic = img_b8 / (1 / e["step_ms"]), img_b8 / (1 / c["step_ms"])
    frames = r["engine frames"]["step_ms"] / e["step_ms"] - 1
    mem_ok = None not in (c["peak_mb"], e["peak_mb"]) and e["peak_mb"] <= c["peak_mb"]
    prec = {"auto (bf16 on CUDA)": e} | {p: r[f"engine {p}"] for p in ("fp16", "fp32")}
    comp = r["engine compiled"]
    auto = r["engine auto"]
    mem = f"classic {c['peak_mb'] or 0:.0f} MiB, clipguide {e['peak_mb'] or 0:.0f} MiB"
    return [
        (f"per step vs classic, {size}", ">= 4x",
         f"classic {c['step_ms']:.1f} ms, clipguide {e['step_ms']:.1f} ms: {per_step:.2f}x", _yes(per_step >= 4)),
        ("B=8 in one batch vs 8 single runs", ">= 3x images/hour",
         f"{b8['step_ms']:.1f} ms/step for 8: {vs_single:.2f}x 8 clipguide runs, {vs_classic:.2f}x 8 classic runs",
         _yes(vs_single >= 3)),
        ("a frame every step", "< 5 % per step", f"{frames * 100:+.1f} %", _yes(frames < 0.05)),
        ("peak memory", "<= classic", mem, _yes(mem_ok)),
        ("precision", "-", ", ".join(f"{k} {v['step_ms']:.1f} ms (loss {100 * (v['loss'] / prec['fp32']['loss'] - 1):+.2f} % "
                                     "vs fp32)" for k, v in prec.items()), "-"),
        ("torch.compile", "-", ("compiling failed, ran eagerly (see its warning)" if comp["compile_failed"] else
                                f"on {comp['step_ms']:.1f} ms, off {e['step_ms']:.1f} ms ({e['step_ms'] / comp['step_ms']:.2f}x); "
                                f"compiling: first step {comp['first_s']:.0f} s"), "-"),
        ("--batch-size auto", "fits and runs", f"chose B={auto['batch']}: {auto['step_ms']:.1f} ms/step, peak "
                                               f"{auto['peak_mb'] or 0:.0f} MiB", _yes(auto["batch"] >= 1)),
    ]


def format_table(r: dict, header: str, size: str = "512x512 cutn 32") -> str:
    lines = [header, "", "| target | goal | measured | met |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in targets(r, size)]
    return "\n".join(lines)


def run_all(args, rows: dict[str, Config]) -> dict:
    from .measure import machine, weights_for

    cfg = next(iter(rows.values()))
    keep: list = []
    t0 = time.perf_counter()
    root = weights_for(cfg, args.weights_dir, keep)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    log(f"weights ready ({time.perf_counter() - t0:.0f} s); {len(VARIANTS)} variants, one process each ...")
    res = measure_all(cfg, root, log)
    header = (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}; {cfg.width}x{cfg.height}, "
              f"cutn {cfg.cutn}, median of {cfg.steps} steps after {cfg.warmup}; whole check "
              f"{time.perf_counter() - t0:.0f} s")
    print(format_table(res, header, f"{cfg.width}x{cfg.height} cutn {cfg.cutn}"))
    for tmp in keep:
        tmp.cleanup()
    return res
