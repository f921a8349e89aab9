"""`clipguide PROMPT [options]`: a thin Typer shell over `clipguide.api`.

Exit codes: 0 done, 1 failed while running, 2 bad input, 130 interrupted (state saved)."""

from __future__ import annotations

import sys
import traceback
from typing import List, Optional

import typer

from .errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Interrupted, RunFailed, UserError

EPILOG = ("Prompt syntax: text[:weight[:stop]] joined with '|'; story stages joined with '^'. "
          "Exit codes: 0 done, 1 failed while running, 2 bad input, 130 interrupted (resume with --resume).")

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


@app.command(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
def command(
    prompt: Optional[str] = typer.Argument(None, help="What to draw, e.g. 'a painting of a dog:1 | blurry:-0.5'."),
    steps: Optional[int] = typer.Option(None, help="Optimisation steps [default: 500; tiny: preset]."),
    width: Optional[int] = typer.Option(None, help="Width in pixels, rounded down to the VQGAN's factor [256]."),
    height: Optional[int] = typer.Option(None, help="Height in pixels, rounded down to the VQGAN's factor [256]."),
    negative: Optional[str] = typer.Option(None, help="Push every image away from this text, TEXT[:STRENGTH], '|' for several; 'none' drops a preset's [none]."),
    contrast: Optional[str] = typer.Option(None, help="Also push each prompt away from itself with words swapped, WORD[,WORD]=REPLACEMENT[:STRENGTH], '|' for several; 'none' drops a preset's [tiny: circle,square,triangle=blob:0.3]."),
    seed: Optional[int] = typer.Option(None, help="Random seed (random if not given; recorded in the PNG)."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output PNG [outputs/<prompt>-<seed>.png]."),
    overwrite: bool = typer.Option(False, help="Replace existing output files."),
    save_every: Optional[int] = typer.Option(None, help="Save a progress frame every N steps [10 with --video/--frames-dir]."),
    video: Optional[str] = typer.Option(None, help="Render progress frames to this .mp4 or .gif."),
    fps: float = typer.Option(25.0, help="Frame rate of --video."),
    frames_dir: Optional[str] = typer.Option(None, help="Write progress frames as PNGs into this folder."),
    batch: Optional[str] = typer.Option(None, help="Prompt file: one prompt per line, '#' comments."),
    batch_size: str = typer.Option("1", help="With --batch: images optimised together, or 'auto' (most that fit, up to 8)."),
    output_dir: str = typer.Option("outputs", help="Folder for default outputs and --batch images."),
    clip: Optional[List[str]] = typer.Option(None, help="CLIP model ARCH:PRETRAINED, ARCH:/path, local-dir:PATH; repeat for an ensemble."),
    vqgan: Optional[str] = typer.Option(None, help="VQGAN name from --list-models, or a .ckpt path."),
    vqgan_config: Optional[str] = typer.Option(None, help="The model.yaml of a --vqgan checkpoint path."),
    model: str = typer.Option("default", help="Preset pair of models and settings: default, tiny, ..."),
    cutn: Optional[int] = typer.Option(None, help="Cutouts per step [32]."),
    cut_pow: Optional[float] = typer.Option(None, help="Cutout size power: >1 favours small cutouts [1.0]."),
    cut_min: Optional[float] = typer.Option(None, help="Smallest cutout as a fraction of the short side [CLIP size]."),
    augments: Optional[str] = typer.Option(None, help="Comma list of affine,shift,perspective,jitter,erasing,flip,sharpness,gray or none [tiny: affine]."),
    noise: Optional[float] = typer.Option(None, help="Max noise added to cutouts [0.1]."),
    lr: Optional[float] = typer.Option(None, help="Learning rate [0.1]."),
    optimizer: Optional[str] = typer.Option(None, help="adam, adamw, adagrad, adamax, radam, nadam, rmsprop, sgd [adam]."),
    init_image: Optional[str] = typer.Option(None, help="Start from this picture instead of random codes."),
    init_weight: Optional[float] = typer.Option(None, help="Pull toward the init image's latent [0]."),
    tv_weight: Optional[float] = typer.Option(None, help="Smoothness: weight of the image's total variation [0; tiny: 2]."),
    candidates: Optional[int] = typer.Option(None, help="Random starts per image; the best after --candidate-steps goes on [1; tiny: 3]."),
    candidate_steps: Optional[int] = typer.Option(None, help="Steps before the best of --candidates is kept [steps / 5; tiny: 90]."),
    image_prompt: Optional[List[str]] = typer.Option(None, help="Picture to steer toward, PATH[:WEIGHT]; repeatable."),
    change_every: Optional[int] = typer.Option(None, help="Steps per story stage ('a ^ b') [steps / stages]."),
    blend_steps: Optional[int] = typer.Option(None, help="Steps to blend from one story stage to the next [0]."),
    n_images: int = typer.Option(1, help="Images of the prompt (seeds seed..seed+N-1), optimised as one batch."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch [torch's default; tiny: 1]."),
    precision: str = typer.Option("auto", help="auto (bf16 autocast on CUDA, fp32 elsewhere), fp32, bf16, fp16."),
    resume: Optional[str] = typer.Option(None, help="Continue an interrupted run from its .state.pt file."),
    state_every: Optional[int] = typer.Option(None, help="Write a resumable .state.pt every N steps (0 = off) [100]."),
    zoom: float = typer.Option(1.0, help="Zoom video: scale the picture by this every --save-every steps (>1 moves in)."),
    pan_x: float = typer.Option(0.0, help="Zoom video: move the picture right by this many pixels every --save-every steps."),
    pan_y: float = typer.Option(0.0, help="Zoom video: move the picture down by this many pixels every --save-every steps."),
    rotate: float = typer.Option(0.0, help="Zoom video: rotate by this many degrees every --save-every steps."),
    video_length: Optional[float] = typer.Option(None, help="Seconds of --video at --fps; sets --steps to fit."),
    restyle_video: Optional[str] = typer.Option(None, help="Restyle this video frame by frame toward the prompt."),
    smooth: float = typer.Option(0.5, help="Restyle: EMA weight of the previous frame's latent, in [0, 1)."),
    cache_dir: Optional[str] = typer.Option(None, help="Model cache [$CLIPGUIDE_CACHE or ~/.cache/clipguide]."),
    shard: Optional[str] = typer.Option(None, help="With --batch: do only shard K of N (K/N, 0 <= K < N), e.g. SLURM arrays."),
    list_models: bool = typer.Option(False, "--list-models", help="List model names and presets, then exit."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bar."),
    debug: bool = typer.Option(False, help="Show tracebacks."),
):
    """Make a picture from text by CLIP-guided VQGAN."""
    from .settings import Settings

    options = dict(
        negative=negative, contrast=contrast, steps=steps, width=width, height=height, seed=seed, output=output, overwrite=overwrite,
        save_every=save_every, video=video, fps=fps, frames_dir=frames_dir, batch=batch, output_dir=output_dir,
        clip=list(clip or []), vqgan=vqgan, vqgan_config=vqgan_config, model=model, cutn=cutn, cut_pow=cut_pow,
        cut_min=cut_min, augments=augments, noise=noise, lr=lr, optimizer=optimizer, init_image=init_image,
        init_weight=init_weight, tv_weight=tv_weight, candidates=candidates,
        candidate_steps=candidate_steps, image_prompts=list(image_prompt or []), change_every=change_every,
        blend_steps=blend_steps, n_images=n_images, device=device, precision=precision, resume=resume, threads=threads,
        state_every=state_every, cache_dir=cache_dir, zoom=zoom, pan_x=pan_x, pan_y=pan_y, rotate=rotate,
        video_length=video_length, restyle_video=restyle_video, smooth=smooth)
    try:
        code = _run(prompt, Settings(prompt=prompt, **options), list_models, quiet, shard, batch_size)
    except UserError as e:
        if debug:
            traceback.print_exc()
        _err(f"error: {e.line()}")
        code = EXIT_BAD_INPUT
    except RunFailed as e:
        if debug:
            traceback.print_exc()
        _err(f"failed: {e}")
        code = EXIT_FAILED
    except Interrupted as e:
        _err(f"interrupted: image so far in {e.image_path}; continue with: clipguide --resume {e.state_path}")
        code = EXIT_INTERRUPTED
    except KeyboardInterrupt:
        _err("interrupted")
        code = EXIT_INTERRUPTED
    except Exception as e:  # a bug or an environment failure: one line unless --debug
        if debug:
            traceback.print_exc()
        _err(f"failed: {type(e).__name__}: {e} (run with --debug for the traceback)")
        code = EXIT_FAILED
    raise typer.Exit(code)


def _parse_batch_size(spec: str) -> int:
    if spec == "auto":
        return 0
    try:
        size = int(spec)
    except ValueError:
        size = -1
    if size < 1:
        raise UserError(f"--batch-size {spec!r} is not a positive number", "use e.g. --batch-size 4, or auto")
    return size


def _run(prompt, s, list_models: bool, quiet: bool, shard_spec: str | None = None, batch_size: str = "1") -> int:
    from . import api, batch as batches, distributed
    from .listing import model_listing

    if list_models:
        print(model_listing())
        return EXIT_OK
    progress = False if quiet else None
    if s.resume:
        given = {k: getattr(s, k) for k in ("steps",) if getattr(s, k) is not None}
        rs, jobs, state = batches.resume_settings(s.resume, given)
        session = api.Session(rs)
        flag = api.StopFlag()
        with flag.installed():
            result = session.run(jobs, resume=state, stop=flag, progress=progress)
        _report(result)
        return EXIT_OK
    shard = distributed.from_env()
    if shard and shard_spec:
        raise UserError("--shard cannot be used under torchrun", "torchrun already splits the batch; drop --shard")
    shard = shard or (distributed.parse_shard(shard_spec) if shard_spec else distributed.Shard(0, 1))
    if shard.world > 1 and not s.batch:
        raise UserError("splitting work across ranks or shards needs --batch FILE", "give a prompt file with --batch")
    if s.batch:
        if prompt:
            raise UserError("give either a PROMPT or --batch FILE, not both", "drop one of them")
        s = s.replace(device=distributed.device_for(shard, s.device))
        distributed.start(shard)
        summary = batches.run_batch(s, rank=shard.rank, world=shard.world, batch_size=_parse_batch_size(batch_size))
        manifest = distributed.finish(shard, summary.records, s.output_dir)
        _err(summary.line() + (f"; manifest {manifest}" if manifest else ""))
        for f in summary.done:
            print(f)
        return EXIT_BAD_INPUT if summary.bad_lines else EXIT_FAILED if summary.failed else EXIT_OK
    if s.restyle_video:
        return _restyle(prompt, s, progress)
    if prompt is None:
        raise UserError("no prompt given", "write clipguide \"a painting of a dog\" (or --batch FILE, --resume STATE)")
    from .prompts import parse_story

    parse_story(prompt)
    session = api.Session(s)
    seed = s.seed if s.seed is not None else api.new_seed()
    flag = api.StopFlag()
    with flag.installed():
        result = session.run(api.default_jobs(session.settings, seed), stop=flag, progress=progress)
    _report(result)
    return EXIT_OK


def _restyle(prompt, s, progress) -> int:
    from pathlib import Path

    from . import api
    from .animate import restyle
    from .outputs import check_writable
    from .prompts import parse_story, slug

    if prompt is None:
        raise UserError("--restyle-video needs a PROMPT", "write clipguide \"an oil painting\" --restyle-video IN.mp4")
    parse_story(prompt)
    out = Path(s.video or Path(s.output_dir) / f"{Path(s.restyle_video).stem}-{slug(prompt, 40)}.mp4")
    check_writable(out, s.overwrite)
    session = api.Session(s)
    path, frames = restyle(session, prompt, s.restyle_video, out, session.settings.steps, s.smooth,
                           session.settings.init_weight, s.seed or 0, s.overwrite, progress)
    print(path)
    _err(f"done: {frames} frames restyled")
    return EXIT_OK


def _report(result) -> None:
    for path in result.outputs + result.videos:
        print(path)
    loss = f", loss {sum(result.loss) / len(result.loss):.4f}" if result.loss else ""
    _err(f"done: {result.steps} steps in {result.seconds:.1f}s{loss}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
