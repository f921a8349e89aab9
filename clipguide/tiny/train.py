"""Train the tiny VQGAN and tiny CLIP on the tiny world and write them where `--model tiny` finds them.

    python -m clipguide.tiny.train --out clipguide/weights/tiny [--seed 0] [--vqgan-steps N] [--clip-steps N]

The CLIP is trained from scratch (`--clip-steps`), then fine-tuned in the stages of `CLIP_FINETUNES`
(`--clip-finetunes K` runs the first K), each starting from the CLIP the one before saved.  A step
count of 0 skips that part (its files are left as they are, and fine-tuning starts from them).
Everything is seeded and runs on a CPU; files are written atomically.  The two trainers are
`vqgan_training` and `clip_training`; this module runs them in order.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import world
from ..models.registry import sha256_of
from .clip_training import average_weights, clip_files, save_clip, train_clip, zero_shot
from .schedule import log
from .vqgan_training import train_vqgan, vqgan_eval

# Fine-tuning stages after the CLIP's training from scratch.  Whole-shape crops and blob negatives
# (irregular, scattered and oversized regions, see world.make_blobs) teach it that a shape is one
# region with background all round it; `vqgan_p` mixes in the tiny VQGAN's reconstructions.  The last
# stage is adversarial (`adv_eps`, see `attack`): it makes the CLIP robust, so that what guidance finds
# to please it is a shape rather than a pattern only the CLIP sees.  Several radii make a "soup": one
# fine-tune per radius from the same start, their weights averaged (see `run_clip_stage`).
CLIP_FINETUNES = (
    {"steps": 600, "lr": 3e-4, "blobs": 0.4, "whole": True},
    {"steps": 800, "lr": 3e-4, "blobs": 0.5, "whole": True, "vqgan_p": 0.3},
    {"steps": 600, "lr": 2e-4, "blobs": 0.5, "whole": True, "vqgan_p": 0.3, "adv_eps": (0.5, 1.0)},
)


def save_grid(path: str | Path, rows: list[torch.Tensor], scale: int = 4) -> None:
    """Save rows of [N, 3, H, W] images as one PNG (for looking at reconstructions)."""
    from ..outputs.pictures import save_png

    grid = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)
    grid = F.interpolate(grid[None], scale_factor=scale, mode="nearest")[0]
    save_png(path, grid, overwrite=True)


def run_clip_stage(stage: dict, seed: int, out: Path, scratch: bool) -> list[Path]:
    """Train the CLIP from scratch, or fine-tune the one in `out/clip`, as `stage` says; save it there.
    A tuple of `adv_eps` radii fine-tunes once per radius, from the same start and seed, and saves the
    average of their weights."""
    import open_clip

    stage = dict(stage)
    if stage.get("vqgan_p"):  # reconstructions by the VQGAN in `out`
        from ..models.vqgan import load_vqgan

        stage["vqgan"] = load_vqgan(out / "vqgan.yaml", out / "vqgan.ckpt")
    steps, radii = stage.pop("steps"), stage.pop("adv_eps", 0.0)
    models = [train_clip(steps, seed, init=None if scratch else out / "clip", adv_eps=eps, **stage)
              for eps in (radii if isinstance(radii, (tuple, list)) else [radii])]
    model, cfg, _ = models[0]
    if len(models) > 1:
        model.load_state_dict(average_weights([m for m, _, _ in models]))
    tok = open_clip.SimpleTokenizer(context_length=cfg["text_cfg"]["context_length"])
    log(f"clip zero-shot full pictures: {zero_shot(model, tok)}")
    log(f"clip zero-shot crops: {zero_shot(model, tok, crops=True)}")
    save_clip(model, cfg, out / "clip")
    return clip_files(out / "clip")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clipguide.tiny.train", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for vqgan.yaml, vqgan.ckpt and clip/")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vqgan-steps", type=int, default=2000)
    p.add_argument("--clip-steps", type=int, default=2000)
    p.add_argument("--clip-finetunes", type=int, default=len(CLIP_FINETUNES),
                   help=f"how many of the {len(CLIP_FINETUNES)} CLIP fine-tuning stages to run after --clip-steps")
    p.add_argument("--first-finetune", type=int, default=1,
                   help="start at this fine-tuning stage (1-based): the CLIP in --out has had the ones before")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--preview", help="write a PNG of reconstructions / random-code decodes here")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    t0 = time.time()
    written = []
    if a.vqgan_steps > 0:
        from ..models.vqgan import save_vqgan

        model, cfg, _ = train_vqgan(a.vqgan_steps, a.seed)
        log(f"vqgan held-out: {vqgan_eval(model)}")
        save_vqgan(model, cfg, out / "vqgan.yaml", out / "vqgan.ckpt", dtype=torch.float16)
        written += [out / "vqgan.yaml", out / "vqgan.ckpt"]
        if a.preview:
            b = world.make_batch(8, 999)
            with torch.no_grad():
                rec = model.decode(model.encode(b.images))
                rnd = model.decode(model.random_latent(16, 16, 8, torch.Generator().manual_seed(0)))
            save_grid(a.preview, [b.images, rec, rnd])
    stages = (([{"steps": a.clip_steps}] if a.clip_steps > 0 else [])
              + list(CLIP_FINETUNES[a.first_finetune - 1:a.clip_finetunes]))
    for k, stage in enumerate(stages):
        written += run_clip_stage(stage, a.seed, out, scratch=k == 0 and a.clip_steps > 0)
    for f in dict.fromkeys(written):  # each stage rewrites the same CLIP files
        log(f"{sha256_of(f)}  {f}  ({f.stat().st_size} bytes)")
    log(f"done in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
