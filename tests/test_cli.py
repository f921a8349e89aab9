"""The command line: outputs, exit codes, and one clear line for every mistake a user can make."""

from pathlib import Path

import pytest
from PIL import Image

from cli_run import run
from clipguide.outputs.pictures import read_recipe




def files(root="."):
    """User-visible files (the model cache under ./cache is clipguide's own)."""
    return sorted(str(p) for p in Path(root).rglob("*") if p.is_file() and p.parts[0] != "cache")


def test_a_run_prints_its_output_and_exits_0(base):
    code, out, err = run("a dog", *base, "--seed", 4)
    assert code == 0, err
    assert out.strip() == "outputs/a-dog-4.png"
    assert read_recipe("outputs/a-dog-4.png")["seed"] == 4
    assert "done: 3 steps" in err


def test_existing_output_is_never_overwritten_without_the_flag(base):
    Image.new("RGB", (8, 8), (1, 2, 3)).save("mine.png")
    before = Path("mine.png").read_bytes()
    code, out, err = run("a dog", *base, "-o", "mine.png")
    assert code == 2 and "mine.png already exists" in err and "--overwrite" in err
    assert Path("mine.png").read_bytes() == before
    code, _, err = run("a dog", *base, "-o", "mine.png", "--overwrite")
    assert code == 0, err
    assert Path("mine.png").read_bytes() != before
    assert read_recipe("mine.png")["prompt"] == "a dog"  # replaced by the new picture


def test_batch_makes_one_image_per_good_line_and_reports_bad_ones(base):
    Path("p.txt").write_text("# prompts\na dog\n\nbad:abc\na cat:2\n")
    code, out, err = run("--batch", "p.txt", "--output-dir", "out", *base)
    made = sorted(p.name for p in Path("out").glob("*.png"))
    assert made == ["0002-a-dog-2.png", "0005-a-cat-2-5.png"]
    assert "p.txt:4" in err and "'abc' is not a number" in err
    assert "2 made, 0 already done, 1 bad lines, 0 failed" in err
    assert code == 2  # the bad line makes the batch exit non-zero, after the rest ran


def test_batch_rerun_does_only_the_missing_work(base):
    Path("p.txt").write_text("a dog\na cat\na cow\n")
    assert run("--batch", "p.txt", "--output-dir", "out", *base)[0] == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in Path("out").glob("*.png")}
    Path("out/0002-a-cat-2.png").unlink()
    code, out, err = run("--batch", "p.txt", "--output-dir", "out", *base)
    assert code == 0 and "1 made, 2 already done" in err
    assert out.split() == ["out/0002-a-cat-2.png"]
    for name in ("0001-a-dog-1.png", "0003-a-cow-3.png"):
        assert Path("out", name).stat().st_mtime_ns == stamps[name]


def test_list_models_shows_presets_vqgans_and_clips():
    code, out, _ = run("--list-models")
    assert code == 0
    assert "imagenet-16384" in out and "gumbel-8192" in out and "ViT-B-32:openai" in out and "default" in out


def test_help_documents_exit_codes():
    code, out, _ = run("--help")
    assert code == 0 and "130 interrupted" in out and "2 bad input" in out


BAD = [
    (["", ], "empty prompt"),
    (["dog:abc"], "'abc' is not a number"),
    (["a:0 | b:0"], "all prompt weights are zero"),
    (["a dog", "--steps", "0"], "--steps must be a whole number >= 1"),
    (["a dog", "--steps", "-3"], "--steps must be a whole number >= 1"),
    (["a dog", "--width", "2"], "smaller than the VQGAN's factor 4"),
    (["a dog", "--width", "16000", "--height", "16000"], "GiB of cpu memory"),
    (["a dog", "--width", "40000"], "--width must be a whole number >= 1 and <= 16384"),
    (["a dog", "--model", "tinny"], "unknown model 'tinny'"),
    (["a dog", "--init-image", "nope.png"], "init image not found"),
    (["a dog", "--init-image", "notes.txt"], "is not a readable image"),
    (["a dog", "--image-prompt", "nope.png:0.5"], "image prompt not found"),
    (["a dog", "--image-prompt", "notes.txt"], "is not a readable image"),
    (["a dog", "--augments", "affine,blur"], "unknown augment 'blur'"),
    (["a dog", "--optimizer", "adamm"], "unknown optimizer 'adamm'"),
    (["a dog", "--tv-weight", "-1"], "--tv-weight must be a number >= 0"),
    (["a dog", "--negative", "blurry:-1"], "--negative 'blurry:-1': strength must be a number >= 0 and <= 1e+06 (got -1)"),
    (["a dog", "--contrast", "dog"], "is not WORDS=REPLACEMENT"),
    (["a dog", "--candidates", "0"], "--candidates must be a whole number >= 1"),
    (["a dog", "--candidates", "3", "--zoom", "1.1", "--save-every", "2"], "--candidates tries several random starts"),
    (["a dog", "--device", "cuda"], "no CUDA GPU"),
    (["a dog", "-o", "notes.txt/out.png"], "not a writable folder"),
    (["--batch", "missing.txt"], "batch file not found"),
    (["--batch", "empty.txt"], "has no prompts"),
    ([], "no prompt given"),
    (["a dog", "--video", "v.avi"], "use a .mp4 or .gif"),
    (["a dog", "--resume", "nope.state.pt"], "state file not found"),
    (["a dog", "--resume", "notes.txt"], "unreadable"),
]


@pytest.mark.parametrize("args,words", BAD, ids=[w for _, w in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(base, args, words):
    Path("notes.txt").write_text("not a picture")
    Path("empty.txt").write_text("# nothing\n")
    before = files()
    code, out, err = run(*base, *args)
    assert code == 2, err
    assert words in err
    assert err.strip().count("\n") == 0 and err.startswith("error: ") and "Traceback" not in err
    assert files() == before


def test_unknown_vqgan_name_suggests_and_offline_download_points_at_tiny(base):
    code, _, err = run("a dog", "--vqgan", "imagenet-16348", "--clip", base[5])
    assert code == 2 and "did you mean imagenet-16384" in err
    code, _, err = run("a dog", "--vqgan", "gumbel-8192", "--clip", base[5], "--steps", 1)
    assert code == 2 and "cannot download VQGAN 'gumbel-8192'" in err and "--model tiny" in err


def test_corrupt_checkpoint_and_mismatched_config_are_bad_input(base, tiny, tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(Path(tiny["vq"][1]).read_bytes()[:4000])
    args = list(base)
    args[1] = bad
    code, _, err = run("a dog", *args)
    assert code == 2 and "corrupt or truncated" in err
    args[1], args[3] = tiny["vq"][1], tiny["gumbel"][0]
    code, _, err = run("a dog", *args)
    assert code == 2 and "does not fit config" in err


def test_debug_shows_the_traceback(base):
    code, _, err = run("dog:abc", *base, "--debug")
    assert code == 2 and "Traceback" in err


def test_batch_size_optimises_lines_together_with_their_own_prompts_and_seeds(base):
    Path("p.txt").write_text("a dog\na cat\na cow\n")
    code, out, err = run("--batch", "p.txt", "--output-dir", "out", "--batch-size", 2, *base)
    assert code == 0, err
    assert [(read_recipe(p)["prompt"], read_recipe(p)["seed"]) for p in sorted(Path("out").glob("*.png"))] == [
        ("a dog", 1), ("a cat", 2), ("a cow", 3)]
    assert "[2/3] a cat" in err


def test_a_partial_image_from_an_interrupted_run_is_not_taken_as_finished(base):
    from clipguide.outputs.pictures import save_png
    import torch

    Path("p.txt").write_text("a dog\n")
    save_png("out/0001-a-dog-1.png", torch.zeros(3, 32, 32), {"prompt": "a dog", "steps_done": 1})
    code, out, err = run("--batch", "p.txt", "--output-dir", "out", *base)
    assert code == 0 and "1 made, 0 already done" in err
    assert "steps_done" not in read_recipe("out/0001-a-dog-1.png")


def test_bad_batch_size_is_bad_input(base):
    Path("p.txt").write_text("a dog\n")
    code, _, err = run("--batch", "p.txt", "--batch-size", "zero", *base)
    assert code == 2 and "--batch-size 'zero'" in err


def test_download_and_list_models_from_the_command_line():
    code, out, err = run("--download", "tiny")
    assert code == 0, err
    paths = out.split()
    assert any(p.endswith("vqgan.ckpt") for p in paths) and all(Path(p).exists() for p in paths)
    code, out, _ = run("--list-models")
    assert code == 0 and "tiny" in out and "imagenet-16384" in out
    code, _, err = run("--download", "imagenet-16348")
    assert code == 2 and "did you mean imagenet-16384" in err


def test_progress_outside_a_terminal_is_a_plain_line_every_few_percent_and_q_silences_it(base):
    code, _, err = run("a dog", *[a for a in base if a != "-q"], "--steps", 40, "--seed", 1)
    assert code == 0, err
    lines = [line for line in err.splitlines() if "step " in line and "it/s" in line]
    assert len(lines) == 20 and "step 40/40 (100%)" in lines[-1] and "\r" not in err
    code, _, err = run("a dog", *base, "--steps", 40, "--seed", 2)
    assert code == 0 and not [line for line in err.splitlines() if "it/s" in line]


def test_q_silences_the_progress_of_a_batch_too(base):
    Path("p.txt").write_text("a dog\na cat\n")
    loud = [a for a in base if a != "-q"]
    code, _, err = run("--batch", "p.txt", "--output-dir", "loud", *loud, "--steps", 20)
    assert code == 0, err
    assert [line for line in err.splitlines() if "it/s" in line]
    code, _, err = run("--batch", "p.txt", "--output-dir", "quiet", *base, "--steps", 20)
    assert code == 0, err
    assert not [line for line in err.splitlines() if "it/s" in line]
    assert "2 made" in err  # the summary line still comes
