"""The README is true: every code block in it that runs offline is run here (the rest are named below, each with
the reason it is not), and every relative link in the README and docs/ leads to a file that exists."""

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from PIL import Image

import clipguide
from cli_run import run
from clipguide.outputs.pictures import read_recipe

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()

# Small settings for runs whose own settings would take minutes on a 2-core CPU: the same commands and calls,
# fewer steps and one random start (the tiny preset's search of three starts is most of its run).
SMALL = {"steps": 6, "candidates": 1}
SMALL_ARGS = ["--steps", "6", "--candidates", "1", "-q"]

# Every code block of the README, by its first line: the test that runs it ...
RUN = {
    'pip install -e . && clipguide "a red circle on a blue background" --model tiny':
        "test_the_first_command_as_written",
    "from clipguide import generate, Session, Settings": "test_the_python_api_example",
    'clipguide "a red circle on a blue background" --model tiny --seed 1 -o circle.png': "test_the_offline_examples",
    "pip install -e '.[test]' && python -m pytest -q": "test_the_test_command_is_the_one_ci_runs",
}
# ... or why it is not run.
NOT_RUN = {
    'clipguide "a watercolor of a fox | blurry:-0.5" --seed 1 --steps 300 -o fox.png':
        "needs network: the default pair (~1.3 GB) and ViT-B-16's weights are downloaded on first use, and "
        "photo.jpg, style.png and a state file stand for the user's own; practical only with a GPU",
    "pip install -e '.[ui]' && clipguide-ui":
        "starts a server that runs until it is stopped; tests/test_ui_browser.py starts `clipguide-ui --model tiny` "
        "and drives it in a browser",
}


def blocks(text: str) -> list[str]:
    """The fenced code blocks of a Markdown text, in order."""
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)


def block(first_line: str) -> str:
    found = [b for b in blocks(README) if b.splitlines()[0] == first_line]
    assert len(found) == 1, first_line
    return found[0]


def test_every_block_of_the_readme_is_run_or_named_with_its_reason():
    firsts = [b.splitlines()[0] for b in blocks(README)]
    assert sorted(firsts) == sorted([*RUN, *NOT_RUN])
    assert all(name in globals() for name in RUN.values())


@pytest.mark.parametrize("first_line", list(NOT_RUN))
def test_blocks_not_run_offline(first_line):
    block(first_line)
    pytest.skip(NOT_RUN[first_line])


def test_the_first_command_as_written():
    """Run as written (about half a minute on a 2-core CPU), in-process; `pip install -e .` is not run again:
    the tests run in that installation."""
    setup, command = block(next(k for k, v in RUN.items() if v == "test_the_first_command_as_written")).split("&&")
    assert setup.split() == ["pip", "install", "-e", "."]
    args = shlex.split(command)
    assert args[0] == "clipguide"
    code, out, err = run(*args[1:])
    assert code == 0, err
    printed = out.split()[-1]
    assert re.fullmatch(r"outputs/a-red-circle-on-a-blue-background-\d+\.png", printed)  # as the README says
    assert "(`outputs/a-red-circle-on-a-blue-background-<seed>.png`)" in README
    recipe = read_recipe(printed)
    assert (recipe["model"], recipe["steps"], recipe["width"]) == ("tiny", 150, 64)
    assert Image.open(printed).size == (64, 64)


def test_the_python_api_example(monkeypatch, capsys):
    """Every line of the block, with SMALL settings added to its `generate` and `Settings` (as written it draws
    three pictures of the tiny preset, over a minute on a 2-core CPU)."""
    generate, settings = clipguide.generate, clipguide.Settings
    monkeypatch.setattr(clipguide, "generate", lambda prompt, **kw: generate(prompt, **(kw | SMALL)))
    monkeypatch.setattr(clipguide, "Settings", lambda **kw: settings(**(kw | SMALL)))
    names = {}
    exec(block("from clipguide import generate, Session, Settings"), names)
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("[PosixPath('outputs/a-red-circle-on-a-blue-background-1.png')]")
    assert Image.open("outputs/a-red-circle-on-a-blue-background-1.png").size == (64, 64)
    result = names["result"]
    assert result.outputs == [Path("outputs/a-red-circle-on-a-blue-background-7.png"), Path("square.png")]
    assert [read_recipe(p)["prompt"] for p in result.outputs] == ["a red circle on a blue background",
                                                                   "a green square"]
    assert result.steps == SMALL["steps"] and len(result.loss) == 2


def test_the_offline_examples(capsys):
    """Each line in-process, with SMALL_ARGS added (the tiny preset's own settings take about half a minute a
    picture); what each line makes is checked."""
    shutil.copytree(ROOT / "prompts", "prompts")
    lines = block('clipguide "a red circle on a blue background" --model tiny --seed 1 -o circle.png').splitlines()
    outs = []
    for line in lines:
        args = shlex.split(line, comments=True)
        assert args[0] == "clipguide"
        code, out, err = run(*args[1:], *([] if "--list-models" in args else SMALL_ARGS))
        assert code == 0, (line, err)
        outs.append(out)
    assert read_recipe("circle.png")["prompt"] == "a red circle on a blue background"
    assert read_recipe("longer.png")["prompt"] == "a red circle on a blue background"  # --from: its recipe again
    assert read_recipe("longer.png")["seed"] == read_recipe("circle.png")["seed"] == 1
    sheet, states = Path(outs[2].split()[0]), list(Path("outputs").glob("a-blue-square-*.state.pt"))
    assert Image.open(sheet).size[0] > 64 and len(states) == 4  # a contact sheet of 4, a state per seed
    assert Path("story.mp4").stat().st_size > 0
    manifest = [json.loads(x) for x in Path("outputs/shapes/manifest.jsonl").read_text().splitlines()]
    assert [m["status"] for m in manifest] == ["done"] * 5
    assert "tiny" in outs[-1] and "imagenet-16384" in outs[-1]


def test_the_test_command_is_the_one_ci_runs():
    """Not run here (it is this suite): the README's command is the one `.ci/run` runs (pip's -q aside, and the
    `|| exit` that makes a failed install stop CI: `set -e` does not stop at the first command of an `&&` list)."""
    want = block("pip install -e '.[test]' && python -m pytest -q").strip()
    ci = [line.strip().replace("pip install -q ", "pip install ").removesuffix(" || exit")
          for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert want in ci


LINK = re.compile(r"\]\(([^)\s]+)\)")


DOCS = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_leads_to_a_file(doc):
    path = ROOT / doc
    targets = [t.split("#")[0] for t in LINK.findall(path.read_text()) if not re.match(r"[a-z]+:", t)]
    assert targets or doc != "README.md"
    missing = [t for t in targets if t and not (path.parent / t).exists()]
    assert missing == []
