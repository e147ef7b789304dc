"""DDP helpers shared by callbacks and strategies: the run directory (a broadcast), per-rank rows gathered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist


def run_dir(trainer: L.Trainer) -> Path:
    """The directory a stage's outputs belong in: the logger's directory, else ``default_root_dir``.
    Under DDP ``trainer.log_dir`` is a broadcast: call this on every rank, never on rank 0 alone (rank 0 would
    wait forever for the others)."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def gather_rows(trainer: L.Trainer, local: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    """Concatenate every rank's rows (shards of any length; ``None`` = no rows) and keep the first row of each
    ``index``, dropping the repeats a padding DistributedSampler adds. Collective under DDP: call on every rank.
    Single process: ``local`` unchanged."""
    if trainer.world_size == 1 or not dist.is_available() or not dist.is_initialized():
        return local
    parts: list[Any] = [None] * trainer.world_size
    dist.all_gather_object(parts, None if local is None else {k: v.cpu() for k, v in local.items()})
    present = [p for p in parts if p is not None and len(p["index"])]
    if not present:
        return None
    rows = {k: torch.cat([p[k] for p in present]) for k in present[0]}
    first = {int(i): pos for pos, i in reversed(list(enumerate(rows["index"].tolist())))}
    keep = torch.tensor(sorted(first.values()), dtype=torch.long)
    return {k: v[keep] for k, v in rows.items()}
