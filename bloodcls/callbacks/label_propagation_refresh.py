"""Renews a Mean Teacher's label-propagation pseudo-labels over the teacher's embeddings on schedule."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from bloodcls.strategies.mean_teacher import MeanTeacher


class LabelPropagationRefresh(Callback):
    """Relabels the pool for a ``MeanTeacher`` with ``lp_weight > 0`` at the start of the scheduled epochs
    (from ``lp_start_epoch``, every ``lp_every_n_epochs``); the module adds them to its student's loss."""

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, MeanTeacher)
        epoch = trainer.current_epoch
        due = (
            epoch >= pl_module.lp_start_epoch and (epoch - pl_module.lp_start_epoch) % pl_module.lp_every_n_epochs == 0
        )
        # A run resumed from a checkpoint has no labels in memory: relabel at once rather than train without them.
        if not due and not (pl_module.lp_labels is None and epoch > pl_module.lp_start_epoch):
            return
        result = pl_module.refresh_propagated_labels()  # collective under DDP; reads the data via TrainingData
        stats = result["stats"]
        self.history.append({"epoch": epoch, **stats})
        counts = np.bincount(result["labels"], minlength=pl_module.num_classes)
        rank_zero_info(
            f"mean teacher, epoch {epoch}: label propagation accepted {stats['accepted']}/{stats['pool']} "
            f"(pseudo-label accuracy {stats['pseudo_acc']:.3f}, pool accuracy {stats['pool_acc']:.3f}); per class "
            + ", ".join(f"{n} {c}" for n, c in zip(pl_module.class_names, counts.tolist(), strict=True))
        )
