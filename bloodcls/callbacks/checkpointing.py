"""Checkpoints of a fit run, from two stock ``ModelCheckpoint`` callbacks: ``best.ckpt`` on a validation metric and
``last.ckpt``, really the latest epoch (so resuming from it never repeats epochs).

One ``ModelCheckpoint`` with ``save_last=True`` cannot do both: Lightning 2.6 rewrites ``last.ckpt`` only in a step
where a top-k checkpoint was saved too, so with a ``monitor`` it is silently the *best* epoch. A second callback
without a monitor saves every epoch instead; ``fit --ckpt_path last`` finds its ``last.ckpt`` (Lightning looks for
``last*.ckpt`` in every ModelCheckpoint's directory). ``best.ckpt`` holds no optimizer state; ``last.ckpt`` does.
"""

from __future__ import annotations

from typing import Any

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


def best_checkpoint(dirpath: str | None = None, **overrides: Any) -> ModelCheckpoint:
    """``best.ckpt``: the epoch with the highest ``val/balanced_acc`` (bloodcls's defaults, any overridden)."""
    return ModelCheckpoint(dirpath=dirpath, **{**BEST_DEFAULTS, **overrides})


def last_checkpoint(dirpath: str | None = None) -> ModelCheckpoint:
    """``last.ckpt``: the latest epoch, rewritten after every one."""
    return ModelCheckpoint(dirpath=dirpath, **LAST_DEFAULTS)


def add_checkpoint_arguments(parser: LightningArgumentParser) -> None:
    """``--checkpoint.*`` (the best checkpoint, selected on validation) and ``--last_checkpoint.*``; the last one
    follows ``checkpoint.dirpath``, so one key moves both."""
    parser.add_lightning_class_args(ModelCheckpoint, BEST_KEY)
    parser.set_defaults({f"{BEST_KEY}.{k}": v for k, v in BEST_DEFAULTS.items()})
    parser.add_lightning_class_args(ModelCheckpoint, LAST_KEY)
    parser.set_defaults({f"{LAST_KEY}.{k}": v for k, v in LAST_DEFAULTS.items()})
    parser.link_arguments(f"{BEST_KEY}.dirpath", f"{LAST_KEY}.dirpath")
