"""A hostile-input sweep as a table: each row is what a careless or hostile user types, the exit code
and a phrase of the one line they must get, and -- checked by snapshotting the folder before and
after -- that no file was written or changed.  The data-loss cases below the table each failed on
main 0aac3c8 (before issue 23)."""

import os
import shutil
import stat
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from cli_run import run
from clipguide.errors import Interrupted
from clipguide.outputs.pictures import read_recipe, save_png




def snapshot(root=Path(".")) -> dict:
    """Every file under `root` (the model cache aside) with its kind, size and content."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.parts[0] == "cache":
            continue
        st = os.lstat(p)
        data = p.read_bytes() if stat.S_ISREG(st.st_mode) else None
        out[str(p)] = (stat.S_IFMT(st.st_mode), st.st_size, data)
    return out


def png_claiming(path: Path, width: int, height: int) -> None:
    """A tiny PNG file whose header claims a huge picture (a decompression bomb as far as Pillow can tell)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
                     + chunk(b"IEND", b""))


@pytest.fixture(scope="session")
def left_state(tiny, tmp_path_factory):
    """The state file an interrupted run left (step 1 of 3, `base`'s settings) beside its partial picture,
    in a folder of its own."""
    from clipguide import Session, Settings

    folder = tmp_path_factory.mktemp("interrupted")
    cfg, ckpt = tiny["vq"]
    session = Session(Settings(prompt="a dog", vqgan=str(ckpt), vqgan_config=str(cfg), clip=[f"local-dir:{tiny['clip']}"],
                               width=32, height=32, cutn=2, steps=3, cache_dir=str(folder / "cache")), log=lambda m: None)
    with pytest.raises(Interrupted):
        session.run([session.plan.job("a dog", 3, folder / "out.png")], stop=lambda: True, progress=False)
    return folder / "out.state.pt"


def png_with_recipe(path: str, text: str) -> None:
    """A picture whose recipe chunk holds `text`, as a hand-edited or hostile PNG would."""
    info = PngInfo()
    info.add_text("clipguide", text)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)


def edited_state(source: Path, path: str, top: dict | None = None, **settings) -> None:
    """A copy of the state file `source` with some of its run's settings (and `top`: its own fields)
    changed, as by hand."""
    state = torch.load(source, weights_only=True)
    state["settings"].update(settings)
    state.update(top or {})
    torch.save(state, path)


@pytest.fixture
def inputs(tiny, left_state):
    """The files the rows name, made before the snapshot."""
    Image.new("RGB", (16, 16), (200, 30, 30)).save("pic.png")
    png_claiming(Path("bomb.png"), 20000, 20000)
    Path("notes.txt").write_text("not a picture")
    Path("adir").mkdir()
    Path("adir.png").mkdir()
    Path("batch.txt").write_text("a dog\n")
    Path("binary.txt").write_bytes(b"\xff\xfe\x00bad")
    save_png("mine.png", torch.zeros(3, 8, 8))
    Path("frames").mkdir()
    save_png("frames/00000.png", torch.ones(3, 8, 8))
    save_png("taken.png", torch.zeros(3, 8, 8))
    Path("stale.state.pt").write_bytes(b"a state left by another run")
    Path("clip.mp4").write_bytes(b"")
    shutil.copy(left_state, "copied.state.pt")  # a copy of another folder's state
    os.symlink("missing/picture.png", "dangling.png")
    here = str(Path("pic.png").absolute())  # a picture drawn from pic.png as it was before it changed
    save_png("drawn.png", torch.zeros(3, 8, 8), {"prompt": "a", "steps": 3, "init_image": here,
                                                 "input_sha256": {here: "0" * 64}})
    png_with_recipe("string.png", '"prompt steps"')  # a JSON string, not an object
    png_with_recipe("typed.png", '{"prompt": "a", "steps": "abc"}')
    png_with_recipe("clips.png", '{"prompt": "a", "steps": 3, "clip": "ViT-B-32"}')
    png_with_recipe("models.png", '{"prompt": "a", "steps": 3, "vqgan": "x"}')
    png_with_recipe("long.png", '{"prompt": "a", "steps": 1000000000000000}')
    edited_state(left_state, "lr.state.pt", lr=float("nan"))
    edited_state(left_state, "cutn.state.pt", cutn=-5)
    edited_state(left_state, "steps.state.pt", steps="abc")
    edited_state(left_state, "step.state.pt", {"step": "abc"})
    edited_state(left_state, "jobs.state.pt", {"jobs": "a dog"})
    return tiny


# (arguments, exit code, a phrase of the one line on stderr)
ROWS = [
    # the sweep's thirteen findings
    (["a", "--frames-dir", "frames", "--save-every", "1", "-o", "o.png"], 2, "frames/00000.png already exists"),
    (["a", "-o", "taken.png"], 2, "taken.png already exists"),
    (["a", "--rotate", "nan", "--save-every", "2"], 2, "--rotate must be a number >= -360"),
    (["a", "--zoom", "inf", "--save-every", "2"], 2, "--zoom must be a number > 0"),
    (["a", "--image-prompt", "pic.png:nan"], 2, "weight must be a number >= -1e+06 and <= 1e+06"),
    (["a", "--init-weight", "nan"], 2, "--init-weight must be a number >= 0"),
    (["a", "-o", "adir.png", "--overwrite"], 2, "adir.png is a folder, not a file"),
    (["a", "--noise", "-1"], 2, "--noise must be a number >= 0"),
    (["a", "--noise", "nan"], 2, "--noise must be a number >= 0"),
    (["a", "--seed", "99999999999999999999"], 2, "--seed must be a whole number >= 0 and <= 4294967295"),
    (["a", "--init-image", "bomb.png"], 2, "too large to decode safely"),
    (["a", "--image-prompt", "bomb.png"], 2, "too large to decode safely"),
    (["a", "--vqgan", "/etc/passwd"], 2, "VQGAN"),
    (["a", "--lr", "1e38"], 2, "--lr must be a number > 0 and <= 1000"),
    (["a", "--frames-dir", "notes.txt"], 2, "--frames-dir notes.txt is not a folder"),
    (["a", "--image-prompt", "pic.png:abc"], 2, "weight 'abc' is not a number"),
    (["-a dog"], 2, "after '--'"),
    (["--batch", "batch.txt", "-o", "x.png"], 2, "-o names one picture"),
    # the second sweep's (issue 35), by its numbers
    (["--resume", "copied.state.pt", "-o", "taken.png"], 2, "taken.png already exists"),  # 1
    (["--resume", "copied.state.pt"], 2, "out.state.pt already exists"),  # 1: not over the original's files
    (["a", "-o", "dangling.png"], 2, "dangling.png is a symbolic link to nothing"),  # 3: before the first step
    (["a", "-o", "dangling.png", "--overwrite"], 2, "dangling.png is a symbolic link to nothing"),  # 3
    (["a", "--frames-dir", "dangling.png", "--save-every", "1"], 2, "--frames-dir dangling.png is not a folder"),  # 3
    (["--from", "drawn.png"], 2, "pic.png is not the picture it was drawn from"),  # 4
    (["--from", "string.png"], 2, "--from string.png: its recipe is not a JSON object"),  # 9
    (["--from", "typed.png"], 2, "--from typed.png: field 'steps': --steps must be a whole number"),  # 9
    (["--from", "clips.png"], 2, "--from clips.png: field 'clip' of its recipe"),  # 9
    (["--from", "models.png"], 2, "--from models.png: field 'vqgan' of its recipe"),  # 9
    (["--resume", "lr.state.pt"], 2, "lr.state.pt: field 'lr': --lr must be a number > 0"),  # 9
    (["--resume", "cutn.state.pt"], 2, "cutn.state.pt: field 'cutn': --cutn must be a whole number >= 1"),  # 9
    (["--resume", "steps.state.pt"], 2, "steps.state.pt: field 'steps': --steps must be a whole number"),  # 9
    (["--resume", "step.state.pt"], 2, "step.state.pt: field 'step' is not what clipguide writes"),  # 9
    (["--resume", "jobs.state.pt"], 2, "jobs.state.pt: field 'jobs' is not what clipguide writes"),  # 9
    (["a red circle:1e39"], 2, "prompt 'a red circle:1e39': weight must be a number >= -1e+06 and <= 1e+06"),  # 10
    (["a", "--negative", "blur:1e39"], 2, "strength must be a number >= 0 and <= 1e+06"),  # 10
    (["a", "--palette", "red:1e39"], 2, "--palette 'red:1e39': weight must be a number >= 0 and <= 1e+06"),  # 10
    (["a", "--palette", "red:1:1e39"], 2, "--palette 'red:1:1e39': end must be a number >= 0 and <= 1e+06"),  # 10
    (["a", "--noise-prompt", "1:1e39"], 2, "--noise-prompt '1:1e39': weight must be a number >= -1e+06"),  # 10
    (["a", "--image-prompt", "pic.png:1e39"], 2, "image prompt 'pic.png:1e39': weight must be a number"),  # 10
    (["a", "--seed", "4294967295", "--n-images", "2"], 2, "--n-images 2 is too many here"),  # 11
    (["a", "--seed", "4294967290", "--preview", "7"], 2, "--preview 7 is too many here"),  # 11
    (["--batch", "batch.txt", "--seed", "4294967295"], 2, "batch.txt:1: its seed --seed + 1 is past 4294967295"),  # 11
    (["a", "--steps", "2000000000", "--save-every", "1", "--frames-dir", "f"], 2,
     "--steps must be a whole number >= 1 and <= 1000000"),  # 13
    (["--from", "long.png"], 2, "--from long.png: field 'steps': --steps must be a whole number >= 1 and <= 1000000"),
    (["a", "--cache-dir", "notes.txt"], 2, "the model cache notes.txt is not a folder"),  # 12
    (["--download", "hf-hub:../evil"], 2, "'hf-hub:../evil' does not name a Hub repository"),  # 12
    (["a", "--clip", "hf-hub:../evil"], 2, "'hf-hub:../evil' does not name a Hub repository"),  # 12
    # more of our own
    (["a", "--steps", "1e3"], 2, "Invalid value for '--steps'"),
    (["a", "--steps", "0"], 2, "--steps must be a whole number >= 1"),
    (["a", "--seed", "-1"], 2, "--seed must be a whole number >= 0"),
    (["a", "--n-images", "0"], 2, "--n-images must be a whole number >= 1"),
    (["a", "--threads", "0"], 2, "--threads must be a whole number >= 1"),
    (["a", "--cut-min", "0"], 2, "--cut-min must be a number > 0 and <= 1"),
    (["a", "--cut-min", "1.5"], 2, "--cut-min must be a number > 0 and <= 1"),
    (["a", "--cut-pow", "-2"], 2, "--cut-pow must be a number > 0"),
    (["a", "--smooth", "1"], 2, "--smooth must be a number >= 0 and < 1"),
    (["a", "--fps", "0"], 2, "--fps must be a number > 0"),
    (["a", "--fps", "inf"], 2, "--fps must be a number > 0"),
    (["a", "--pan-x", "-inf", "--save-every", "2"], 2, "--pan-x must be a number"),
    (["a", "--video-length", "1", "--steps", "5"], 2, "--video-length sets --steps"),
    (["a", "--video", "v.mp4", "--save-every", "0"], 2, "need progress frames"),
    (["a", "--video", "v.avi"], 2, "use a .mp4 or .gif"),
    (["a", "--video", "mine.png"], 2, "use a .mp4 or .gif"),
    (["a", "--device", "tpu"], 2, "unknown device 'tpu'"),
    (["a", "--optimizer", ""], 2, "unknown optimizer ''"),
    (["a", "--precision", "fp8"], 2, "unknown precision 'fp8'"),
    (["a", "--candidates", "2", "--init-image", "pic.png"], 2, "--candidates tries several random starts"),
    (["a", "--negative", ":"], 2, "empty prompt"),
    (["a", "--contrast", "=x"], 2, "is not WORDS=REPLACEMENT"),
    (["a", "--image-prompt", "adir"], 2, "image prompt not found"),
    (["a", "--init-image", "notes.txt"], 2, "is not a readable image"),
    (["a", "-o", "out.jpg"], 2, "must end in .png"),
    (["a", "-o", "stale.png"], 2, "stale.state.pt already exists"),
    (["a", "--output-dir", "notes.txt"], 2, "--output-dir notes.txt is not a folder"),
    (["--batch", "adir"], 2, "batch file not found"),
    (["--batch", "binary.txt"], 2, "cannot read batch file"),
    (["--batch", "batch.txt", "--batch-size", "0"], 2, "--batch-size '0'"),
    (["--batch", "batch.txt", "--shard", "3/2"], 2, "need 0 <= K < N"),
    (["a", "--shard", "0/2"], 2, "needs --batch"),
    (["a", "--resume", "pic.png"], 2, "unreadable"),
    (["a", "--restyle-video", "clip.mp4"], 2, "cannot read video"),
    (["a", "--restyle-video", "missing.mp4"], 2, "video not found"),
    # options that would change nothing in the run given: refused, never silently ignored
    (["a", "--fps", "5"], 2, "--fps has no effect in this run: it needs a video of a drawn picture"),
    (["a", "--save-every", "5"], 2, "--save-every has no effect in this run"),
    (["a", "--init-weight", "0.5"], 2, "--init-weight has no effect in this run: it needs --init-image"),
    (["a", "--candidate-steps", "5"], 2, "--candidate-steps has no effect in this run: it needs --candidates"),
    (["a", "--batch-size", "2"], 2, "--batch-size has no effect in this run: it needs --batch FILE"),
    (["a", "--preview-steps", "2"], 2, "--preview-steps has no effect in this run: it needs --preview N"),
    (["a", "--smooth", "0.9"], 2, "--smooth has no effect in this run: it needs --restyle-video"),
    (["--batch", "batch.txt", "--n-images", "2"], 2, "--n-images has no effect in this run"),
    (["--batch", "batch.txt", "--video", "v.mp4"], 2, "--video has no effect in this run"),
    (["--batch", "batch.txt", "--restyle-video", "clip.mp4"], 2, "--restyle-video has no effect in this run"),
    (["a", "--restyle-video", "clip.mp4", "-o", "r.png"], 2, "-o/--output has no effect in this run"),
    (["a", "--restyle-video", "clip.mp4", "--frames-dir", "fr"], 2, "--frames-dir has no effect in this run"),
    (["a", "--restyle-video", "clip.mp4", "--init-image", "pic.png"], 2, "--init-image has no effect in this run"),
    (["a", "--restyle-video", "clip.mp4", "--zoom", "1.1"], 2, "--zoom has no effect in this run"),
    (["a", "--restyle-video", "clip.mp4", "--n-images", "2"], 2, "--n-images has no effect in this run"),
    (["a", "--restyle-video", "clip.mp4", "--fps", "5"], 2, "--fps has no effect in this run"),
    (["a", "--restyle-video", "clip.mp4", "--state-every", "5"], 2, "--state-every has no effect in this run"),
    (["a", "--change-every", "5"], 2, "--change-every has no effect in this run: it needs a story"),
    (["a", "--blend-steps", "2"], 2, "--blend-steps has no effect in this run: it needs a story"),
]


@pytest.mark.parametrize("args,code,phrase", ROWS, ids=[" ".join(r[0])[:60] for r in ROWS])
def test_hostile_input_gets_one_line_and_changes_nothing(base, inputs, args, code, phrase):
    before = snapshot()
    got, out, err = run(*base, *args) if args[0] not in ("-a dog",) else run(*args, *base)
    assert got == code, err
    assert phrase in err
    assert err.strip().count("\n") == 0 and err.startswith("error: ") and "Traceback" not in err
    assert snapshot() == before


# -- data-loss cases: each replaced or destroyed a file on main 0aac3c8 ---------------------------
def test_frames_of_an_earlier_run_are_never_replaced_without_overwrite(base):
    assert run("a dog", *base, "--seed", 1, "--frames-dir", "fr", "--save-every", 1, "-o", "one.png")[0] == 0
    first = snapshot(Path("fr"))
    code, _, err = run("a dog", *base, "--seed", 2, "--frames-dir", "fr", "--save-every", 1, "-o", "two.png")
    assert code == 2 and "fr/00000.png already exists" in err
    assert snapshot(Path("fr")) == first and not Path("two.png").exists()
    code, _, err = run("a dog", *base, "--seed", 2, "--frames-dir", "fr", "--save-every", 1, "-o", "two.png",
                       "--overwrite")
    assert code == 0, err
    assert snapshot(Path("fr")) != first  # --overwrite replaces them, as asked


def test_resume_writes_where_the_run_was_started_not_into_the_current_folder(base, tiny_args):
    from clipguide import Session, Settings

    Path("a").mkdir()
    Path("b").mkdir()
    os.chdir("a")
    session = Session(Settings(prompt="a dog", **(tiny_args | {"steps": 6})), log=lambda m: None)
    with pytest.raises(Interrupted):
        session.run([session.plan.job("a dog", 3, Path("out.png"))], stop=lambda: True, progress=False)
    os.chdir("../b")
    save_png("out.png", torch.zeros(3, 8, 8))  # the user's own file of that name in another folder
    mine = Path("out.png").read_bytes()
    code, out, err = run("--resume", "../a/out.state.pt", "-q")
    assert code == 0, err
    assert Path("out.png").read_bytes() == mine
    assert out.strip() == str(Path("../a/out.png").resolve())
    assert "steps_done" not in read_recipe("../a/out.png")


def test_a_million_steps_of_frames_are_checked_with_one_look_at_the_folder(base):
    """Issue 35 case 13: each frame name of the run was checked for a file in the way, one by one (72 s
    for 10^6 steps on the shared 2-core machine); the folder is now listed once."""
    Path("fr").mkdir()
    save_png("fr/999999.png", torch.zeros(3, 8, 8))
    before, start = snapshot(), time.perf_counter()
    code, _, err = run("a dog", *base, "--steps", 1000000, "--save-every", 1, "--frames-dir", "fr", "-o", "o.png")
    assert code == 2 and "fr/999999.png already exists" in err, err
    assert time.perf_counter() - start < 10
    assert snapshot() == before


def test_a_step_count_set_by_other_options_is_refused_naming_where_it_came_from():
    """--steps not given but derived past its bound (a day of video): the line says the value was set,
    not typed."""
    code, _, err = run("a", "--video", "v.mp4", "--video-length", 86400, "-q")
    assert code == 2 and "--steps must be a whole number >= 1 and <= 1000000 (got 21599991), as the other " \
                         "options or the preset set it" in err, err
    assert not Path("v.mp4").exists()


def test_a_resume_replaces_only_what_its_own_run_left_there(base, tiny_args):
    """Issue 35 case 1: -o naming an existing picture, a copied state, and the user's own file where the
    partial picture was are refused (even when the interrupted run had --overwrite); its own partial
    picture and state are not."""
    from clipguide import Session, Settings

    session = Session(Settings(prompt="a dog", overwrite=True, **(tiny_args | {"steps": 6})), log=lambda m: None)
    with pytest.raises(Interrupted):
        session.run([session.plan.job("a dog", 3, Path("out.png"))], stop=lambda: True, progress=False)
    save_png("keep.png", torch.zeros(3, 8, 8))
    shutil.copy("out.state.pt", "copy.state.pt")
    before = snapshot()
    for args, phrase in [(["out.state.pt", "-o", "keep.png"], "keep.png already exists"),
                         (["copy.state.pt"], "out.state.pt already exists")]:
        code, _, err = run("--resume", *args, "-q")
        assert code == 2 and phrase in err, err
        assert snapshot() == before
    save_png("out.png", torch.ones(3, 8, 8), overwrite=True)  # the user's own picture where the partial one was
    theirs = snapshot()
    code, _, err = run("--resume", "out.state.pt", "-q")
    assert code == 2 and "out.png already exists" in err, err
    assert snapshot() == theirs
    code, _, err = run("--resume", "out.state.pt", "-q", "--overwrite")  # asked for: replaced
    assert code == 0, err
    assert "steps_done" not in read_recipe("out.png") and not Path("out.state.pt").exists()
    code, _, err = run("--resume", "copy.state.pt", "-q")  # the copy's run left no finished picture
    assert code == 2 and "out.png already exists" in err, err


def test_resume_honours_o_and_refuses_what_would_change_the_picture(base, tiny_args):
    from clipguide import Session, Settings

    session = Session(Settings(prompt="a dog", **(tiny_args | {"steps": 6})), log=lambda m: None)
    with pytest.raises(Interrupted):
        session.run([session.plan.job("a dog", 3, Path("out.png"))], stop=lambda: True, progress=False)
    before = snapshot()
    for args, phrase in [(["a cat"], "a prompt cannot change on --resume"), (["--lr", 0.5], "--lr cannot change"),
                         (["--seed", 9], "--seed cannot change"), (["--cutn", 8], "--cutn cannot change")]:
        code, _, err = run("--resume", "out.state.pt", *args)
        assert code == 2 and phrase in err, err
        assert snapshot() == before
    code, out, err = run("--resume", "out.state.pt", "-o", "moved.png", "--steps", 8, "-q")
    assert code == 0, err
    assert out.strip() == "moved.png" and read_recipe("moved.png")["steps"] == 8


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_a_device_node_is_never_replaced_even_with_overwrite(base):
    os.mknod("dev.png", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a copy of /dev/null
    code, _, err = run("a dog", *base, "-o", "dev.png", "--overwrite")
    assert code == 2 and "is a device, pipe or socket, not a file" in err
    assert stat.S_ISCHR(os.stat("dev.png").st_mode)


def test_a_16_bit_picture_is_read_at_its_own_scale():
    from clipguide.images import load_image

    ramp = (np.linspace(0, 1, 64).reshape(8, 8) * 65535).astype(np.uint16)
    Image.fromarray(ramp).save("grey16.png")
    assert Image.open("grey16.png").mode.startswith("I")
    pic = load_image("grey16.png")
    assert abs(pic.mean().item() - 0.5) < 0.01  # it read as 0.98 (almost white) before


def test_a_byte_order_mark_does_not_turn_the_first_comment_into_a_prompt():
    from clipguide.prompts import read_batch

    Path("p.txt").write_bytes("# my prompts\na dog\n".encode("utf-8-sig"))
    assert [line.text for line in read_batch("p.txt")] == ["a dog"]
