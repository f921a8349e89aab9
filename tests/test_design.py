"""The shape of the code the issues ask for, checked: the README's options table and --help come
from the one declaration of the options; the command line answers without importing torch; no
import cycles or upward imports; no module past ~400 lines, no function past ~60."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipguide.cli import app
from clipguide.models.registry import load_table
from clipguide.options import OPTIONS, markers, with_tables

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "clipguide"


@pytest.mark.parametrize("doc, kind", [("README.md", "main options table"), ("docs/options.md", "options table")])
def test_the_options_tables_of_the_docs_are_the_declarations(doc, kind):
    """`python -m clipguide.options README.md docs/options.md` rewrites the tables (the README's: the options
    declared main; docs/options.md's: every option); each file must hold what it writes."""
    text = (ROOT / doc).read_text()
    assert markers(kind)[0] in text
    assert with_tables(text, load_table()["presets"]) == text


def test_every_declared_option_is_on_the_command_line_with_its_help():
    out = CliRunner().invoke(app, ["--help"], terminal_width=400).stdout
    for o in OPTIONS:
        if not o.positional:
            assert re.search(rf"(^|[ ,]){re.escape(o.flag)}\b", out, re.M), o.flag
    assert "[default: 500 (tiny: 150)]" in out  # a default and a preset's, from the declaration and the table


def test_importing_the_command_line_imports_no_model_library():
    code = ("import sys, clipguide.cli, clipguide.plan, clipguide.options; "
            "print(sorted(m for m in ('torch', 'open_clip', 'kornia', 'taming') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bad_input_is_answered_before_torch_is_loaded(tmp_path):
    code = ("import sys; from clipguide.cli import main_command; "
            "rc = main_command({'prompt': 'a dog', 'steps': -1}); "
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.split() == ["2", "False"] and "--steps must be" in out.stderr


def test_a_vqgan_missing_offline_is_answered_before_torch_is_loaded(tmp_path):
    """Each kind of run looks its VQGAN up (no torch needed) before it imports torch and open_clip, so
    without network a missing model is one line at once, not after seconds of imports."""
    (tmp_path / "lines.txt").write_text("a dog\n")
    (tmp_path / "in.mp4").write_bytes(b"")
    runs = [{"prompt": "a dog"}, {"prompt": "a dog", "preview": 2}, {"batch": "lines.txt"},
            {"prompt": "a dog", "restyle_video": "in.mp4"}]
    code = ("import sys; from clipguide.cli import main_command\n"
            f"for given in {runs!r}:\n"
            "    print(main_command(dict(given)), 'torch' in sys.modules or 'open_clip' in sys.modules)")
    env = os.environ | {"HF_HUB_OFFLINE": "1", "CLIPGUIDE_CACHE": str(tmp_path / "cache"),
                        "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
                         env=env)
    assert out.stdout.split("\n")[:-1] == ["2 False"] * len(runs)
    assert out.stderr.count("VQGAN 'imagenet-16384' is not in the cache") == len(runs)


def modules() -> dict[str, ast.Module]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts): ast.parse(p.read_text())
            for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, tree: ast.Module) -> set[str]:
    """The clipguide modules `name` imports (at any depth, lazily or not)."""
    package = name if name.endswith("__init__") else name.rsplit(".", 1)[0]
    package = package.removesuffix(".__init__")
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("clipguide"):
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    out.add(full if (PACKAGE.parent / (full.replace(".", "/") + ".py")).exists()
                            or (PACKAGE.parent / full.replace(".", "/")).is_dir() else target)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("clipguide")}
    return {m.removesuffix(".__init__") for m in out}


def test_no_import_cycles():
    mods = modules()
    graph = {n.removesuffix(".__init__"): {i for i in imports_of(n, t) if i != n.removesuffix(".__init__")}
             for n, t in mods.items()}
    graph = {n: {i for i in deps if i in graph and i != "clipguide"} for n, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(n, path):
        state[n] = 1
        for m in graph[n]:
            assert state.get(m) != 1, "import cycle: " + " -> ".join(path + [n, m])
            if m not in state:
                visit(m, path + [n])
        state[n] = 2

    for n in graph:
        if n not in state:
            visit(n, [])


def test_modules_and_functions_stay_small():
    for p in PACKAGE.rglob("*.py"):
        lines = p.read_text().splitlines()
        assert len(lines) <= 420, f"{p.relative_to(ROOT)} has {len(lines)} lines"
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.end_lineno - node.body[0].lineno + 1
                assert body <= 62, f"{p.relative_to(ROOT)}:{node.lineno} {node.name} has a {body}-line body"


# Each module's layer: a module imports only from its own layer or below.
LAYERS = [
    ("clipguide", "clipguide.errors", "clipguide.values", "clipguide.files", "clipguide.options", "clipguide.prompts",
     "clipguide.guide", "clipguide.guide.augments", "clipguide.guide.palette", "clipguide.models",
     "clipguide.models.table"),
    ("clipguide.settings", "clipguide.plan", "clipguide.images", "clipguide.models.*"),
    ("clipguide.guide.*",),
    ("clipguide.engine", "clipguide.motion", "clipguide.memory"),
    ("clipguide.callbacks", "clipguide.pipeline"),
    ("clipguide.outputs", "clipguide.outputs.*"),
    ("clipguide.run", "clipguide.restyle", "clipguide.batch", "clipguide.preview"),
    ("clipguide.cli", "clipguide.listing", "clipguide.ui", "clipguide.ui.*", "clipguide.__main__"),
]
TOOLS = ("clipguide.bench", "clipguide.tiny")  # tools beside the pipeline: they may use all of it


def layer(name: str) -> int:
    for depth, names in enumerate(LAYERS):
        if name in names:
            return depth
    for depth, names in enumerate(LAYERS):
        if any(n.endswith(".*") and name.startswith(n[:-1]) for n in names):
            return depth
    raise AssertionError(f"{name} has no layer in tests/test_design.py")


def test_no_upward_imports():
    for name, tree in modules().items():
        name = name.removesuffix(".__init__")
        if name.startswith(TOOLS):
            continue
        for target in imports_of(name, tree):
            if target.startswith(TOOLS):
                raise AssertionError(f"{name} imports the tool {target}")
            assert layer(target) <= layer(name), f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
