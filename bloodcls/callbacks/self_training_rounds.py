"""The rounds of self-training: relabel the unlabeled pool at each round's end, stop on patience or max rounds."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from bloodcls.data.interface import training_data
from bloodcls.strategies.self_training import SelfTraining


class SelfTrainingRounds(Callback):
    """Runs the rounds of a ``SelfTraining`` module: relabel at each round end, stop on patience / max."""

    def __init__(self) -> None:
        self.round = 0
        self.best: float | None = None
        self.stale = 0
        self.history: list[dict[str, Any]] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # New pseudo-labels mean new loaders; reloading each epoch is cheap with the decoded cache. The attribute
        # is set by Lightning's data connector, outside Trainer's typed interface.
        trainer.reload_dataloaders_every_n_epochs = 1  # type: ignore[attr-defined]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, SelfTraining)
        if (trainer.current_epoch + 1) % pl_module.epochs_per_round != 0:
            return
        score = trainer.callback_metrics.get(pl_module.monitor)
        value = float(score) if score is not None else None
        if value is not None and (self.best is None or value > self.best):
            self.best, self.stale = value, 0
        else:
            self.stale += 1
        if self.round >= pl_module.max_rounds or self.stale >= pl_module.patience:
            rank_zero_info(f"self-training: stopping after round {self.round} ({pl_module.monitor} best {self.best})")
            trainer.should_stop = True
            return
        result = pl_module.relabel()  # identical on every rank (rank 0's, broadcast)
        training_data(trainer).set_pseudo_labels(
            result["positions"], result["labels"], result["weights"], labeled_ratio=pl_module.labeled_ratio
        )
        self.round += 1
        stats = result["stats"]
        self.history.append({"round": self.round, **stats, "val": value})
        pl_module.log_dict(
            {
                "round/index": float(self.round),
                "round/mask_ratio": stats["mask_ratio"],
                "round/accepted": float(stats["accepted"]),
                "round/pseudo_acc": stats["pseudo_acc"],
                "round/pool_acc": stats["pool_acc"],
            },
            sync_dist=True,  # identical on every rank (broadcast): the mean changes nothing, and Lightning knows
        )
        counts = np.bincount(result["labels"], minlength=pl_module.num_classes)
        rank_zero_info(
            f"self-training round {self.round}: accepted {stats['accepted']}/{stats['pool']} "
            f"(mask ratio {stats['mask_ratio']:.3f}, pseudo-label accuracy {stats['pseudo_acc']:.3f}); per class "
            + ", ".join(f"{n} {c}" for n, c in zip(pl_module.class_names, counts.tolist(), strict=True))
        )

    def state_dict(self) -> dict[str, Any]:
        return {"round": self.round, "best": self.best, "stale": self.stale, "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.round = state_dict["round"]
        self.best = state_dict["best"]
        self.stale = state_dict["stale"]
        self.history = state_dict["history"]
