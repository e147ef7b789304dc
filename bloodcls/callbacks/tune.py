"""Ray Tune reporting: a trial's validation metric handed to Ray after every validation run."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from bloodcls.errors import UserInputError


class ReportToTune(Callback):
    """Hands ``metric`` (and the epoch count ASHA schedules on) to Ray Tune after each validation run."""

    def __init__(self, metric: str) -> None:
        self.metric = metric

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        value = trainer.callback_metrics.get(self.metric)
        if value is None:
            logged = sorted(k for k in trainer.callback_metrics if k.startswith("val/"))
            raise UserInputError(f"sweep metric {self.metric} is not logged by this run (logged: {', '.join(logged)})")
        from ray import tune

        tune.report({self.metric: float(value), "epoch": trainer.current_epoch + 1})
