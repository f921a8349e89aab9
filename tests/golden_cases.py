"""Golden runs: the same seeds and settings must draw the same pixels across refactors.

Each case is a command line (run in-process through the CLI) and the files whose pixels are
compared.  The reference PNGs in tests/golden/ were drawn by main 0aac3c8 (before the redesign
of issue 17) on the 2-core CI machine, every case with --threads 1; the `tiny` case was redrawn on
2026-11-30, when the tiny preset gained its late palette pull, and again when it gained `--colours 2`
(changes meant to change its picture; with `--colours 0` it still draws the earlier picture pixel for pixel).
To redraw them (only after a change that is *meant* to change pictures, said so in the commit):

    python tests/golden_cases.py tests/golden
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from models import make_clip, make_vqgan  # noqa: E402


def inputs(root: Path) -> dict:
    """Tiny random models and the input files the cases use, made deterministically under `root`."""
    vq_cfg, vq_ckpt = make_vqgan(root / "vq", "VQModel")
    clip = make_clip(root / "clip")
    y, x = np.mgrid[0:48, 0:40]
    pic = np.stack([x * 6, y * 5, 255 - x * 3], -1).clip(0, 255).astype(np.uint8)
    Image.fromarray(pic).save(root / "init.png")
    frames = [np.roll(pic, 4 * k, axis=1) for k in range(3)]
    import imageio.v2 as iio

    with iio.get_writer(root / "clip.mp4", format="FFMPEG", fps=8, codec="libx264", macro_block_size=1) as w:
        for f in frames:
            w.append_data(f)
    (root / "batch.txt").write_text("# two lines\na dog\na cat:2 | a red cow:-1\n")
    base = ["--vqgan", str(vq_ckpt), "--vqgan-config", str(vq_cfg), "--clip", f"local-dir:{clip}",
            "--width", "32", "--height", "32", "--cutn", "4", "--steps", "6", "--threads", "1", "-q"]
    return {"base": base, "root": root}


def cases(env: dict) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (arguments, output files to compare, relative to the run's folder)."""
    b, r = env["base"], env["root"]
    return {
        "plain": (["a dog", *b, "--seed", "3", "-o", "plain.png"], ["plain.png"]),
        "story": (["a dog ^ a cat:2 | a cow:-0.5", *b, "--steps", "8", "--blend-steps", "2", "--seed", "5",
                   "-o", "story.png"], ["story.png"]),
        "negative": (["a dog in snow", *b, "--negative", "a cat:0.5", "--contrast", "dog=wolf:0.3", "--seed", "7",
                      "-o", "negative.png"], ["negative.png"]),
        "zoom": (["a tunnel", *b, "--steps", "7", "--zoom", "1.1", "--rotate", "5", "--pan-x", "1",
                  "--save-every", "2", "--frames-dir", "zf", "--seed", "9", "-o", "zoom.png"],
                 ["zoom.png", "zf/00006.png"]),
        "batch": (["--batch", str(r / "batch.txt"), *b, "--batch-size", "2", "--seed", "11", "--output-dir", "bo"],
                  ["bo/0002-a-dog-13.png", "bo/0003-a-cat-2-a-red-cow-1-14.png"]),
        "init": (["a dog", *b, "--init-image", str(r / "init.png"), "--init-weight", "0.5", "--image-prompt",
                  f"{r / 'init.png'}:0.5", "--seed", "13", "-o", "init.png"], ["init.png"]),
        "search": (["a dog", *b, "--candidates", "3", "--candidate-steps", "3", "--n-images", "2", "--seed", "17",
                    "--tv-weight", "1", "--augments", "affine,jitter", "--optimizer", "adamw", "--lr", "0.05",
                    "--cut-pow", "2", "--cut-min", "0.5", "--noise", "0.2", "-o", "search.png"],
                   ["search-0.png", "search-1.png"]),
        "restyle": (["an oil painting", *b, "--restyle-video", str(r / "clip.mp4"), "--steps", "3", "--smooth",
                     "0.5", "--seed", "19", "--video", "restyled.gif"], ["restyled.gif"]),
        "tiny": (["a red circle on a blue background", "--model", "tiny", "--steps", "40", "--candidate-steps", "20",
                  "--seed", "0", "-q", "-o", "tiny.png"], ["tiny.png"]),
    }


def pixels(path: Path) -> list[np.ndarray]:
    """Every frame of a PNG or GIF as an RGB uint8 array."""
    with Image.open(path) as im:
        frames = []
        for k in range(getattr(im, "n_frames", 1)):
            im.seek(k)
            frames.append(np.asarray(im.convert("RGB")))
    return frames


def golden_name(case: str, file: str) -> str:
    return f"{case}--{file.replace('/', '_').rsplit('.', 1)[0]}.png"


def run_case(args: list[str]) -> None:
    from typer.testing import CliRunner

    from clipguide.cli import app

    res = CliRunner().invoke(app, args)
    if res.exit_code != 0:
        raise RuntimeError(f"{args}: exit {res.exit_code}: {res.stderr}")


def main(out: str) -> None:
    import os
    import tempfile

    dest = Path(out).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = inputs(Path(tmp) / "in")
        for name, (args, files) in cases(env).items():
            work = Path(tmp) / name
            work.mkdir()
            os.chdir(work)
            run_case(args)
            for f in files:
                frames = pixels(work / f)
                strip = np.concatenate(frames, axis=1)  # a GIF's frames side by side
                Image.fromarray(strip).save(dest / golden_name(name, f))
                print(name, f, len(frames), "frame(s)")


if __name__ == "__main__":
    main(sys.argv[1])
