"""The rounds of self-training: relabel the unlabeled pool at each round's end, stop on patience or max rounds."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
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
        # The installed pseudo-labels of a restored checkpoint, until on_fit_start hands them back to the data.
        self._restored: dict[str, Any] | None = None
        self._trainer: L.Trainer | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # New pseudo-labels mean new loaders; reloading each epoch is cheap with the decoded cache. The attribute
        # is set by Lightning's data connector, outside Trainer's typed interface.
        trainer.reload_dataloaders_every_n_epochs = 1  # type: ignore[attr-defined]
        # Checkpoint state is restored before on_fit_start: a requeued run mid-round trains on the same pseudo-labels.
        if self._restored is not None:
            pseudo = self._restored
            training_data(trainer).set_pseudo_labels(
                pseudo["positions"].numpy(),
                pseudo["labels"].numpy(),
                pseudo["weights"].numpy(),
                labeled_ratio=float(pseudo["labeled_ratio"]),
            )
            self._restored = None

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
        state: dict[str, Any] = {"round": self.round, "best": self.best, "stale": self.stale, "history": self.history}
        trainer = self._trainer
        pseudo = training_data(trainer).pseudo_labels if trainer is not None else None
        if pseudo is not None:  # tensors, not numpy arrays: checkpoints load with weights_only=True
            state["pseudo"] = {
                "positions": torch.as_tensor(pseudo.positions),
                "labels": torch.as_tensor(pseudo.labels),
                "weights": torch.as_tensor(pseudo.weights),
                "labeled_ratio": float(pseudo.labeled_ratio),
            }
        return state

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer  # state_dict() has no trainer argument

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.round = state_dict["round"]
        self.best = state_dict["best"]
        self.stale = state_dict["stale"]
        self.history = state_dict["history"]
        self._restored = state_dict.get("pseudo")
