"""ModelCheckpoint whose ``last.ckpt`` really holds the latest epoch, so resuming never loses epochs."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class BestAndLastCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` with ``save_last`` refreshed after every validation (or training epoch).

    Lightning 2.6 rewrites ``last.ckpt`` only in a step where a top-k checkpoint was saved too, so with a
    ``monitor`` it is silently the *best* epoch rather than the last one; resuming a run from it would repeat
    epochs. Here ``last.ckpt`` is saved whenever the stock callback would have considered saving and did not
    already write it for this step.
    """

    def _refresh_last(self, trainer: L.Trainer) -> None:
        # Lightning's own skip rule: not fitting, sanity check, fast_dev_run, or already saved at this step (every
        # save -- top-k, and the last.ckpt that follows it in the same hook -- records its step; it starts at 0).
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)
