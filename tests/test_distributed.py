"""Batches split across ranks (torchrun, gloo on the CPU) and shards: every line once, one manifest."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipguide.cli import app
from clipguide.plan import Shard, parse_shard
from clipguide.plan import shard_from_env as from_env
from clipguide.errors import UserError

LINES = ["a dog", "a cat", "bad:abc", "a cow", "a hen", "a fox"]


@pytest.fixture
def args(tiny):
    cfg, ckpt = tiny["vq"]
    Path("p.txt").write_text("\n".join(LINES) + "\n")
    return ["--batch", "p.txt", "--output-dir", "out", "--vqgan", str(ckpt), "--vqgan-config", str(cfg),
            "--clip", f"local-dir:{tiny['clip']}", "--width", "32", "--height", "32", "--cutn", "2", "-q"]


def manifest(path):
    return [json.loads(l) for l in Path(path).read_text().splitlines()]


def test_shard_spec_and_torchrun_environment():
    assert parse_shard("1/4") == Shard(1, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(UserError):
            parse_shard(bad)
    assert from_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == Shard(3, 8, 1, True)
    assert from_env({}) is None


def test_shards_together_do_every_line_once(args):
    for k in range(3):
        r = CliRunner().invoke(app, [*args, "--steps", "2", "--shard", f"{k}/3"])
        assert r.exit_code in (0, 2), r.stderr  # the shard holding the bad line exits 2
    rows = [row for k in range(3) for row in manifest(f"out/manifest-{k}-of-3.jsonl")]
    assert sorted(r["line"] for r in rows) == [1, 2, 3, 4, 5, 6]
    assert {r["line"]: r["status"] for r in rows}[3] == "bad"
    assert len(list(Path("out").glob("*.png"))) == 5


def torchrun(args, restarts=0):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", f"--max-restarts={restarts}",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0", "--monitor-interval", "0.2",
           "-m", "clipguide", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_torchrun_two_cpu_ranks_do_each_line_once_and_gather_one_manifest(args):
    Path("p.txt").write_text("\n".join(l for l in LINES if "bad" not in l) + "\n")
    proc = torchrun([*args, "--steps", "2"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    rows = manifest("out/manifest.jsonl")
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5]
    assert {r["rank"] for r in rows} == {0, 1} and {r["status"] for r in rows} == {"done"}
    assert sorted(p.name for p in Path("out").glob("*.png")) == sorted(Path(r["output"]).name for r in rows)


def test_a_killed_rank_is_restarted_and_redoes_no_finished_line(args):
    Path("p.txt").write_text("\n".join(l for l in LINES if "bad" not in l) + "\n")
    proc = torchrun([*args, "--steps", "60"], restarts=1)
    end = time.time() + 240
    while not list(Path("out").glob("*.png")):
        assert proc.poll() is None and time.time() < end, proc.communicate()
        time.sleep(0.05)
    finished = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in Path("out").glob("*.png")}
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    os.kill(int(workers[-1]), signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    for p, stamp in finished.items():
        if stamp[1] and p.exists():
            assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp, f"{p} was made twice"
    rows = manifest("out/manifest.jsonl")
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(r["status"] in ("done", "exists") for r in rows)
    assert any(r["status"] == "exists" for r in rows)
    assert len(list(Path("out").glob("*.png"))) == 5
