"""`python -m clipguide.bench`: the classic VQGAN+CLIP loop, as its users run it, against clipguide.

The classic loop runs OpenAI's own CLIP code (`pip install 'clipguide[bench]'` brings it:
clip-anytorch) and clipguide runs through its Python API, both on the same random weights of the
real architectures (ViT-B-32 + VQGAN f16-16384 unless told otherwise), each variant alone in a fresh
process, in interleaved pairs.  See docs/benchmark.md for the method and the figures.

    python -m clipguide.bench --preset cpu              # 64x64 cutn 4 and 256x256 cutn 8, 5 pairs each
    python -m clipguide.bench --preset gpu --all        # every GPU target in one table (CUDA, < 5 min)
    python -m clipguide.bench --preset cpu --profile    # where a step's time goes, op by op
    python -m clipguide.bench --startup                 # the README's first command, phase by phase
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from ..errors import UserError
from .loops import Config

# preset -> (rows: name -> settings, pairs, shared settings)
PRESETS = {
    "cpu": ({"64x64 cutn 4": dict(width=64, height=64, cutn=4, steps=20, warmup=3),
             "256x256 cutn 8": dict(width=256, height=256, cutn=8, steps=6, warmup=2)}, 5, dict(device="cpu")),
    "gpu": ({"512x512 cutn 32": dict(width=512, height=512, cutn=32, steps=30, warmup=5)}, 3, dict(device="cuda")),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m clipguide.bench", description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS))
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            p.add_argument(flag, type={"int": int, "float": float}.get(f.type, str), default=None)
    p.add_argument("--pairs", type=int, help="interleaved pairs of processes per row (preset: 5 on CPU, 3 on GPU)")
    p.add_argument("--row", action="append", help="only the preset's rows of these names (repeatable)")
    p.add_argument("--image-steps", type=int, default=500, help="steps per finished image, for images/hour")
    p.add_argument("--weights-dir", help="write (or reuse) the random weights here instead of a temporary folder")
    p.add_argument("--json", help="also write every measurement to this file")
    p.add_argument("--all", action="store_true", help="with --preset gpu: every GPU target in one table")
    p.add_argument("--profile", action="store_true", help="profile one step of each loop instead (torch.profiler)")
    p.add_argument("--startup", action="store_true", help="time the README's first command phase by phase instead")
    p.add_argument("--child", choices=("classic", "engine", "auto"), help=argparse.SUPPRESS)
    p.add_argument("--child-config", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def configure(args) -> tuple[dict[str, Config], int]:
    """The rows to run (name -> Config) and the number of pairs: the preset's, with the given flags on top."""
    rows, pairs, shared = PRESETS[args.preset] if args.preset else ({"run": {}}, 3, {})
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}
    if args.row:
        unknown = set(args.row) - set(rows)
        if unknown:
            raise UserError(f"--row {sorted(unknown)[0]!r}: the preset has no such row", f"use {', '.join(rows)}")
        rows = {k: v for k, v in rows.items() if k in args.row}
    return {name: Config(**(shared | over | given)) for name, over in rows.items()}, args.pairs or pairs


def preflight(configs) -> None:
    """What would make every child process fail, said once before any weights are written."""
    import importlib.util

    from ..models.factory import resolve_device

    for cfg in configs:
        resolve_device(cfg.device)  # e.g. --device cuda on a machine without one
    if importlib.util.find_spec("clip") is None:
        raise UserError("the classic loop needs OpenAI's CLIP code (the clip-anytorch package)",
                        "pip install -e '.[bench]'")


def benchmark(rows: dict[str, Config], n_pairs: int, weights_dir: str | None = None, image_steps: int = 500,
              log=print) -> dict:
    """Every row's pairs; the results as a dict (see `measure.table` for the printed form)."""
    from . import measure, weights

    keep: list = []
    first = next(iter(rows.values()))
    root = measure.weights_for(first, weights_dir, keep)
    agree = weights.check_clip(weights.Files(root))
    log(f"weights in {root}; OpenAI's and open_clip's CLIP agree to {agree:.1e} (max relative difference)")
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": measure.machine(),
           "clip_agreement": agree, "image_steps": image_steps, "rows": {}}
    for name, cfg in rows.items():
        log(f"{name}: {n_pairs} pairs ...")
        out["rows"][name] = measure.pairs(cfg, root, n_pairs, image_steps, log=log)
    for tmp in keep:
        tmp.cleanup()
    return out


def format_results(res: dict) -> str:
    from . import measure

    first = next(iter(res["rows"].values()))
    run = first["runs"]["engine"][0]
    cfg = first["config"]
    header = (f"{res['date']}; {res['machine']}; device {run['device']}, {run['threads']} threads; "
              f"CLIP {Path(cfg['clip']).name} + VQGAN {Path(cfg['vqgan_config']).name} (random weights; OpenAI's "
              f"and open_clip's CLIP agree to {res['clip_agreement']:.0e}); engine precision {cfg['precision']}; "
              f"img/h for {res['image_steps']} steps per image")
    return measure.table(res["rows"], header)


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if args.child:
        from .measure import child

        cfg = Config(**json.loads(args.child_config))
        print(json.dumps(child(args.child, cfg, Path(args.weights_dir))))
        return None
    if args.startup:
        from .startup import main as startup

        return startup(args)
    rows, n_pairs = configure(args)
    preflight(rows.values())
    if args.profile:
        from .profile import profile

        return profile(next(iter(rows.values())), args.weights_dir)
    if args.all:
        from .gpu import run_all

        return run_all(args, rows)
    res = benchmark(rows, n_pairs, args.weights_dir, args.image_steps,
                    log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(format_results(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return res
