"""Batches across GPUs and machines: torchrun's ranks, or `--shard K/N` without it.

Lines are split round-robin by position (rank r takes lines r, r+N, ...), so every line is done
exactly once; a restarted rank skips the images that already exist.  Under torchrun, each rank
works on `cuda:LOCAL_RANK` (or the CPU), and rank 0 gathers one JSONL manifest through
torch.distributed's store.  The ranks share no tensors, so no collective backend (NCCL/gloo) is
needed: a slow or restarted rank never stalls the others."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch

from .errors import UserError
from .outputs import atomic_write


@dataclass(frozen=True)
class Shard:
    rank: int
    world: int
    local_rank: int = 0
    torchrun: bool = False


def from_env(env=os.environ) -> Shard | None:
    """The shard torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK, if any."""
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    return Shard(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), True)


def parse_shard(spec: str) -> Shard:
    """'K/N' (0 <= K < N) -> Shard."""
    try:
        k, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise UserError(f"--shard {spec!r} is not K/N", "write e.g. --shard 0/4 (K from 0 to N-1)") from None
    if not (n >= 1 and 0 <= k < n):
        raise UserError(f"--shard {spec}: need 0 <= K < N", "write e.g. --shard 0/4 (K from 0 to N-1)")
    return Shard(k, n)


def device_for(shard: Shard, device: str) -> str:
    """Under torchrun, 'auto' and 'cuda' mean this rank's own GPU."""
    if shard.torchrun and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{shard.local_rank}"
    return device


def start(shard: Shard) -> None:
    if shard.torchrun and torch.cuda.is_available():
        torch.cuda.set_device(shard.local_rank)


def _store(shard: Shard):
    """torch.distributed's key-value store of this torchrun job (the agent's, when it serves one).

    Keys carry the restart count: a restarted group must not read what a killed one wrote."""
    store, _, _ = next(torch.distributed.rendezvous("env://", shard.rank, shard.world))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return torch.distributed.PrefixStore(f"clipguide/manifest/{attempt}/", store)


def finish(shard: Shard, records: list[dict], output_dir: str | Path) -> Path | None:
    """Gather every rank's records; rank 0 (or each --shard) writes the manifest. Returns its path."""
    out = Path(output_dir)
    if shard.torchrun and shard.world > 1:
        store = _store(shard)
        store.set(str(shard.rank), json.dumps(records))
        if shard.rank != 0:
            return None
        keys = [str(r) for r in range(shard.world)]
        store.wait(keys, timedelta(hours=24))  # ranks finish their shares at different times
        records = [r for key in keys for r in json.loads(store.get(key))]
        path = out / "manifest.jsonl"
    else:
        path = out / ("manifest.jsonl" if shard.world == 1 else f"manifest-{shard.rank}-of-{shard.world}.jsonl")
    records = sorted(records, key=lambda r: r["line"])
    with atomic_write(path, overwrite=True) as tmp:
        Path(tmp).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    return path
