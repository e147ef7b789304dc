"""ModelCheckpoint whose ``last.ckpt`` really holds the latest epoch, so resuming never loses epochs."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor


class BestAndLastCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` with ``save_last`` refreshed after every validation (or training epoch).

    Lightning 2.6 rewrites ``last.ckpt`` only in a step where a top-k checkpoint was saved too, so with a
    ``monitor`` it is silently the *best* epoch rather than the last one; resuming a run from it would repeat
    epochs. Here ``last.ckpt`` is saved whenever the stock callback would have considered saving and did not
    already write it for this step.
    """

    # A class-level default instead of an __init__ override keeps the constructor signature Lightning's own, which
    # is what the CLI exposes as the `checkpoint.*` options.
    _last_written_at_step: int | None = None

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_written_at_step = trainer.global_step

    def _refresh_last(self, trainer: L.Trainer) -> None:
        if (
            not self.save_last
            or trainer.fast_dev_run
            or trainer.state.fn != TrainerFn.FITTING
            or trainer.sanity_checking
            or self._last_written_at_step == trainer.global_step
            or trainer.global_step == 0
        ):
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)
