"""`clipguide PROMPT [options]`: a thin Typer shell over `clipguide.run`.

Its options are made from the declarations in options.py (flags, help, defaults with each preset's
value); it turns what was typed into a plan (plan.py), dispatches, and maps errors to exit codes:
0 done, 1 failed while running, 2 bad input, 130 interrupted (state saved).  It imports no torch:
`--help`, `--version` and bad input answer before any model library is loaded."""

from __future__ import annotations

import atexit
import inspect
import os
import sys
import traceback
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperCommand

from . import __version__
from .errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Interrupted, RunFailed, UserError
from .options import OPTIONS, Option, default_text

EPILOG = ("Prompt syntax: text[:weight[:stop]] joined with '|'; story stages joined with '^'. "
          "Exit codes: 0 done, 1 failed while running, 2 bad input, 130 interrupted (resume with --resume).")
TYPES = {int: Optional[int], float: Optional[float], str: Optional[str], list: Optional[List[str]], bool: bool}


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def _presets() -> dict:
    from .models.table import load_table

    return load_table()["presets"]


def _parameter(o: Option, presets: dict) -> inspect.Parameter:
    default = default_text(o, presets)
    help_text = o.help + (f" [default: {default}]" if default and o.type is not bool else "")
    if o.positional:
        info = typer.Argument(None, help=help_text, metavar=o.metavar, show_default=False)
    else:
        info = typer.Option(False if o.type is bool else None, o.flag, *o.flags, help=help_text, metavar=o.metavar,
                            show_default=False)
    return inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=TYPES[o.type])


class Command(TyperCommand):
    """The command, with a mistake in the arguments answered like any bad input: one line, exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as e:  # Typer's own: an unknown option, a value of the wrong type ...
            fix = "see clipguide --help"
            name = getattr(e, "option_name", "") or ""
            if type(e).__name__ == "NoSuchOption" and not name.startswith("--"):
                fix += f"; a prompt that starts with '-' goes last, after '--': clipguide [OPTIONS] -- '{name} ...'"
            message = e.format_message() if hasattr(e, "format_message") else str(e)
            _err(f"error: {' '.join(message.split())} -- {fix}")
            code = EXIT_BAD_INPUT
        except typer.Abort:
            _err("interrupted")
            code = EXIT_INTERRUPTED
        if standalone_mode:
            sys.exit(code or 0)
        return code


def build_app() -> typer.Typer:
    """The Typer app: one command whose options are the declarations."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)

    def command(**given):
        """Make a picture from text by CLIP-guided VQGAN."""
        raise typer.Exit(main_command(given))

    command.__signature__ = inspect.Signature([_parameter(o, _presets()) for o in OPTIONS])
    app.command(cls=Command, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})(command)
    return app


def main_command(values: dict) -> int:
    """Run what the command line asked for; returns the exit code."""
    debug = values.pop("debug", False)
    try:
        return _dispatch(values)
    except UserError as e:
        if debug:
            traceback.print_exc()
        _err(f"error: {e.line()}")
        return EXIT_BAD_INPUT
    except RunFailed as e:
        if debug:
            traceback.print_exc()
        _err(f"failed: {e}")
        return EXIT_FAILED
    except Interrupted as e:
        others = f" (or {', '.join(map(str, e.others))})" if e.others else ""
        _err(f"interrupted: work so far in {e.image_path}; continue with: clipguide --resume {e.state_path}{others}")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug or an environment failure: one line unless --debug
        if debug:
            traceback.print_exc()
        _err(f"failed: {type(e).__name__}: {e} (run with --debug for the traceback)")
        return EXIT_FAILED


def _dispatch(values: dict) -> int:
    if values.pop("version", False):
        print(f"clipguide {__version__}")
        return EXIT_OK
    cache = Path(values["cache_dir"]) if values.get("cache_dir") else None
    if values.pop("list_models", False):
        from .listing import model_listing

        print(model_listing(cache=cache))
        return EXIT_OK
    if values.get("download"):
        from .models.prefetch import download_models

        for path in download_models(values.pop("download"), cache):
            print(path)
        return EXIT_OK
    values.pop("download", None)
    from .settings import unset

    given = {k: v for k, v in values.items() if not unset(v)}
    typed = frozenset(given) - {"replay"}  # what the user typed, not what a --from recipe adds
    if "replay" in given:
        given = _replay(given.pop("replay"), given)
    progress = False if given.get("quiet") else None
    if "resume" in given:
        return _resume(given.pop("resume"), given, progress)
    from .plan import make_plan
    from .settings import Settings, check_needs

    plan = make_plan(Settings(**given))
    check_needs(plan.settings, typed)
    if plan.settings.batch:
        return _batch(plan, progress)
    if plan.shard is not None:
        raise UserError("splitting work into shards needs --batch FILE", "give a prompt file with --batch")
    if plan.settings.prompt is None:
        raise UserError("no prompt given", "write clipguide \"a painting of a dog\" (or --batch FILE, --resume STATE)")
    if plan.settings.restyle_video:
        return _restyle(plan, progress)
    if plan.settings.preview:
        return _preview(plan, progress)
    return _single(plan, progress)


def _replay(png: str, given: dict) -> dict:
    """--from PNG: the options of its recipe, under those given on the command line."""
    from .outputs.pictures import read_recipe
    from .settings import check_inputs, from_recipe

    try:
        recipe = read_recipe(png)
    except (OSError, ValueError) as e:
        raise UserError(f"--from {png}: cannot read it ({type(e).__name__})", "give a PNG clipguide made") from None
    if recipe is not None and not isinstance(recipe, dict):
        raise UserError(f"--from {png}: its recipe is not a JSON object", "give a PNG clipguide made, unedited")
    if not recipe or "prompt" not in recipe or "steps" not in recipe:
        raise UserError(f"--from {png}: it holds no clipguide recipe", "give a PNG clipguide made (not a sheet)")
    if "quality" in given:
        raise UserError("--quality scales only the options a run is not given, and a recipe gives them all",
                        "drop --quality; give --steps, --cutn, --width, --height or --clip to change those")
    values = from_recipe(recipe, f"--from {png}") | given
    if recipe.get("batch", 1) > 1:
        _err(f"note: {png} was drawn in a batch of {recipe['batch']}; drawn alone it comes out different")
    check_inputs(recipe, values, png)
    return values


def _preview(plan, progress) -> int:
    s = plan.settings
    session = _session(plan)
    from .plan import new_seed
    from .preview import preview
    from .run import StopFlag

    flag = StopFlag()
    with flag.installed():
        done = preview(session, s.seed if s.seed is not None else new_seed(), s.preview, s.preview_steps,
                       stop=flag, progress=progress)
    print(done.sheet)
    for k, (seed, state) in enumerate(zip(done.seeds, done.states), 1):
        _err(f"{k}: seed {seed}: go on with: clipguide --resume {state}")
    return EXIT_OK


def _session(plan):
    """The run's Session, its VQGAN looked up (or fetched) first: that needs no torch, so a VQGAN missing
    offline is answered before torch and open_clip are imported (docs/models.md has the times)."""
    s = plan.settings
    _vqgan_at_hand(s)
    from .run import Session

    return Session(plan)


def _vqgan_at_hand(s) -> None:
    from .models.registry import resolve_vqgan

    resolve_vqgan(s.vqgan, s.vqgan_config, cache=Path(s.cache_dir) if s.cache_dir else None)


def _single(plan, progress) -> int:
    from .plan import check_outputs, new_seed

    s = plan.settings
    jobs = plan.single_jobs(s.seed if s.seed is not None else new_seed())
    check_outputs(jobs, s, s.overwrite)  # before anything is loaded
    session = _session(plan)
    from .run import StopFlag

    flag = StopFlag()
    with flag.installed():
        result = session.run(jobs, stop=flag, progress=progress)
    _report(result)
    return EXIT_OK


def _resume(path: str, given: dict, progress) -> int:
    from .batch import resume_plan
    from .run import Session, StopFlag

    plan, jobs, state = resume_plan(path, given)
    session = Session(plan)
    flag = StopFlag()
    with flag.installed():
        if state.get("kind") == "restyle":
            from .restyle import restyle

            done = restyle(session, jobs[0], stop=flag, progress=progress, resume=state)
            return _report_restyle(done)
        result = session.run(jobs, resume=state, stop=flag, progress=progress)
    _report(result)
    return EXIT_OK


def _batch(plan, progress) -> int:
    from .plan import Shard, shard_from_env

    s = plan.settings
    shard = shard_from_env()
    if shard and plan.shard:
        raise UserError("--shard cannot be used under torchrun", "torchrun already splits the batch; drop --shard")
    if s.output:
        raise UserError("-o names one picture; a batch names its pictures after their lines",
                        "drop -o; use --output-dir DIR for where they go")
    _vqgan_at_hand(s)
    from .batch import device_for, gather, manifest_path, run_batch

    shard = shard or plan.shard or Shard(0, 1)
    if shard.torchrun:
        from dataclasses import replace

        plan = replace(plan, settings=s.replace(device=device_for(shard, s.device)))
    from .files import check_writable

    manifest = check_writable(manifest_path(s.output_dir, shard), True, "manifest")
    summary = run_batch(plan, shard=shard, manifest=manifest, progress=progress)
    manifest = gather(shard, summary.records, s.output_dir)
    _err(summary.line() + (f"; manifest {manifest}" if manifest else ""))
    for f in summary.done:
        print(f)
    return EXIT_BAD_INPUT if summary.bad_lines else EXIT_FAILED if summary.failed else EXIT_OK


def _restyle(plan, progress) -> int:
    from .files import check_writable
    from .plan import restyle_output, state_path_for

    s = plan.settings
    out = restyle_output(s)
    job = plan.job(s.prompt, s.seed or 0, out, video=out, stages=plan.stages)
    from .plan import check_video_name

    check_video_name(out)
    check_writable(out, s.overwrite, "video")
    check_writable(state_path_for(out), s.overwrite, "state file")
    session = _session(plan)
    from .restyle import restyle
    from .run import StopFlag

    flag = StopFlag()
    with flag.installed():
        return _report_restyle(restyle(session, job, stop=flag, progress=progress))


def _report_restyle(done) -> int:
    print(done.path)
    _err(f"done: {done.frames} frames restyled")
    return EXIT_OK


def _report(result) -> None:
    for path in result.outputs + result.videos:
        print(path)
    loss = f", loss {sum(result.loss) / len(result.loss):.4f}" if result.loss else ""
    _err(f"done: {result.steps} steps in {result.seconds:.1f}s{loss}")


app = build_app()


def main() -> None:
    """The console script (and `python -m clipguide`)."""
    try:
        app()
        code = EXIT_OK
    except SystemExit as e:
        code = e.code
    leave(code)


def leave(code) -> None:
    """Exit with `code`.  A run that ended well leaves without tearing the interpreter down: by then every
    file is written, closed and renamed into place and every writer thread joined, and the teardown of
    torch's, torchvision's and open_clip's modules took 1.3-1.7 s of the README's first command on a
    2-core CPU.  The exit handlers still run and the output streams are flushed; any other exit (an
    error, an interrupt) leaves the ordinary way."""
    if code not in (EXIT_OK, None):
        raise SystemExit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more to say there
            pass
    os._exit(EXIT_OK)


if __name__ == "__main__":
    main()
