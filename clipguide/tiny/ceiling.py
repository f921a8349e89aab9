"""What a VQGAN draws when the critic is perfect: the ceiling of what guidance can reach with it.

    python -m clipguide.tiny.ceiling [--vqgan tiny] [--pictures 150] [--steps 150] [--lr 0.01]

Guidance moves a latent through the VQGAN's quantiser with Adam, scored by CLIP.  Here the score is
the pixel distance (L1 + MSE) to a true world picture instead: the latent starts at the encoder's
own for that picture and takes the engine's own steps (`engine.optimize`: straight-through
quantiser, clamp to the codebook's range, Adam), and the lowest-loss step of each picture is kept.
The strict judge then says how many of those pictures pass, raw and with the two-colour finish
(`--colours 2`), by shape and by size.  Where guidance with CLIP falls short of these figures, the
critic is what fails; where these figures fall short of a target, the generator is.
"""

from __future__ import annotations

import argparse
import sys

import torch

from ..outputs.pictures import to_uint8
from . import evaluate, world

SMALL = 12.0  # px: shapes of a smaller radius are reported apart (the VQGAN's 4-px codes round their corners)


def fit_latents(vqgan, targets: torch.Tensor, steps: int, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(the closest picture to each target that the optimiser reached, its loss at the start and at
    that step [2, B]).  The steps are the engine's (`engine.optimize`, Adam, the latent clamped to
    the codebook's range); every picture it scores is seen by a callback, and the latent after the
    last step is scored too.  The start is the encoder's own code map, so the result is never worse."""
    from ..engine import optimize

    z = vqgan.encode_unsnapped(targets).requires_grad_(True)
    norms = vqgan.codebook_norms()

    def objective(latent: torch.Tensor, step: int):
        picture = vqgan.decode(vqgan.quantize_st(latent, norms))
        diff = (picture - targets).flatten(1)
        return diff.abs().mean(1) + diff.pow(2).mean(1), picture

    best, best_loss, first = targets.clone(), torch.full((len(targets),), float("inf")), []

    def keep(loss: torch.Tensor, picture: torch.Tensor) -> None:
        nonlocal best_loss
        if not first:  # the encoder's code map, scored first
            first.append(loss)
        better = loss < best_loss
        best_loss = torch.where(better, loss, best_loss)
        best[better] = picture[better]

    optimize(objective, z, torch.optim.Adam([z], lr=lr), steps, latent_range=vqgan.latent_range(),
             callback=lambda info: keep(info.loss, info.decoded))
    with torch.no_grad():
        keep(*objective(z, steps))
    return best, torch.stack([first[0], best_loss])


def judge_batch(pictures: torch.Tensor, batch: world.Batch) -> list[dict]:
    """The strict verdict on each picture against its world labels, with its "shape" and "size" band."""
    out = []
    for i, picture in enumerate(pictures):
        rgb = to_uint8(picture)  # as a PNG of it would hold it
        shape = world.SHAPES[int(batch.shape[i])]
        verdict = evaluate.judge_strict(rgb, shape, world.COLOUR_NAMES[int(batch.colour[i])],
                                        world.COLOUR_NAMES[int(batch.background[i])])
        small = float(batch.radius[i]) < SMALL
        out.append(verdict | {"shape": shape, "size": f"radius {'<' if small else '>='} {SMALL:g} px"})
    return out


def report(verdicts: list[dict]) -> str:
    """The strict table for all pictures, then for each size band."""
    parts = [evaluate.strict_table(verdicts)]
    for band in sorted({v["size"] for v in verdicts}):
        parts.append(f"Shapes of {band}:\n\n" + evaluate.strict_table([v for v in verdicts if v["size"] == band]))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    from ..errors import UserError
    from ..guide.finish import finish_colours
    from ..models.registry import resolve_vqgan
    from ..models.vqgan import load_vqgan

    p = argparse.ArgumentParser(prog="python -m clipguide.tiny.ceiling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vqgan", default="tiny", help="a registry name or a .ckpt path (its .yaml beside it)")
    p.add_argument("--pictures", type=int, default=150, help="world pictures to fit (held out: seed 4242)")
    p.add_argument("--steps", type=int, default=150, help="Adam steps (the tiny preset's run is 150)")
    p.add_argument("--lr", type=float, default=0.01,
                   help="Adam's step size (the tiny preset's is 0.1; 0.01 came closest of 0.005-0.1 on 24 pictures)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        files = resolve_vqgan(a.vqgan, fetch=False)
    except UserError as e:
        print(f"error: {e.line()}", file=sys.stderr)
        return 2
    vqgan = load_vqgan(files.config, files.checkpoint).requires_grad_(False)
    batch = world.make_batch(a.pictures, 4242)
    pictures, losses = fit_latents(vqgan, batch.images, a.steps, a.lr)
    with torch.no_grad():
        finished = finish_colours(pictures, 2)
    print(f"loss (L1 + MSE to the true picture): encoder's codes {losses[0].mean():.4f}, "
          f"best step {losses[1].mean():.4f}\n\nRaw:\n")
    print(report(judge_batch(pictures, batch)))
    print("\nWith the two-colour finish (--colours 2):\n")
    print(report(judge_batch(finished, batch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
