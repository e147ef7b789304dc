"""Checkpoints of a fit run, from two stock ``ModelCheckpoint`` callbacks: ``best.ckpt`` on a validation metric and
``last.ckpt``, really the latest epoch (so resuming from it never repeats epochs).

One ``ModelCheckpoint`` with ``save_last=True`` cannot do both: Lightning 2.6 rewrites ``last.ckpt`` only in a step
where a top-k checkpoint was saved too, so with a ``monitor`` it is silently the *best* epoch. A second callback
without a monitor saves every epoch instead; ``fit --ckpt_path last`` finds its ``last.ckpt`` (Lightning looks for
``last*.ckpt`` in every ModelCheckpoint's directory). ``best.ckpt`` holds no optimizer state; ``last.ckpt`` does,
and the random number generators' states too, so a resumed run draws the same numbers (e.g. the shuffled order of the
next epoch) as an uninterrupted one.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser

BEST_KEY, LAST_KEY = "checkpoint", "last_checkpoint"  # the CLI keys: --checkpoint.monitor, --last_checkpoint.*
# best.ckpt is for evaluating and exporting: weights, hyperparameters and the datamodule's state (split, class names)
# but no optimizer state, a third of the size with Adam (--checkpoint.save_weights_only false keeps it). Resuming
# uses last.ckpt, which keeps everything.
BEST_DEFAULTS: dict[str, Any] = {
    "monitor": "val/balanced_acc",
    "mode": "max",
    "filename": "best",
    "save_top_k": 1,
    "save_weights_only": True,
}
# No monitor + save_top_k=1: saved every epoch over the same file; no version counter, so an earlier attempt's
# last.ckpt in the same directory (a resumed or requeued run) is overwritten, never shadowed by last-v1.ckpt.
LAST_DEFAULTS: dict[str, Any] = {"monitor": None, "filename": "last", "save_top_k": 1, "enable_version_counter": False}


class LastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose state also holds the process's RNG states (torch, CUDA, numpy, Python), restored on
    resume: Lightning re-seeds a resumed fit with the start-of-run seed, which would replay epoch 0's random draws
    (the shuffled order, dropout masks) instead of continuing the interrupted run's stream. Stored as tensors and
    plain data, so ``weights_only`` loading still reads it."""

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
        rng: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, gauss],
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {**super().state_dict(), "rng": rng}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        rng = state_dict.get("rng")
        # Restored while Lightning restores the checkpoint: before the resumed epoch's loader is iterated (Lightning
        # iterates the first epoch's loader, drawing its shuffle seed and first batch, before any fit/train hook).
        # Single process only: DDP ranks each have their own streams, and the checkpoint holds rank 0's.
        if rng is None or (torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1):
            return
        torch.set_rng_state(rng["torch"])
        kind, keys, pos, has_gauss, gauss = rng["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, state, gauss_next = rng["python"]
        random.setstate((version, tuple(state), gauss_next))
        if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])


def best_checkpoint(dirpath: str | None = None, **overrides: Any) -> ModelCheckpoint:
    """``best.ckpt``: the epoch with the highest ``val/balanced_acc`` (bloodcls's defaults, any overridden)."""
    return ModelCheckpoint(dirpath=dirpath, **{**BEST_DEFAULTS, **overrides})


def last_checkpoint(dirpath: str | None = None) -> LastCheckpoint:
    """``last.ckpt``: the latest epoch, rewritten after every one."""
    return LastCheckpoint(dirpath=dirpath, **LAST_DEFAULTS)


def add_checkpoint_arguments(parser: LightningArgumentParser) -> None:
    """``--checkpoint.*`` (the best checkpoint, selected on validation) and ``--last_checkpoint.*``; the last one
    follows ``checkpoint.dirpath``, so one key moves both."""
    parser.add_lightning_class_args(ModelCheckpoint, BEST_KEY)
    parser.set_defaults({f"{BEST_KEY}.{k}": v for k, v in BEST_DEFAULTS.items()})
    parser.add_lightning_class_args(LastCheckpoint, LAST_KEY)
    parser.set_defaults({f"{LAST_KEY}.{k}": v for k, v in LAST_DEFAULTS.items()})
    parser.link_arguments(f"{BEST_KEY}.dirpath", f"{LAST_KEY}.dirpath")
