"""BestAndLastCheckpoint: last.ckpt is the latest epoch even when the monitored metric peaked earlier."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from bloodcls.checkpointing import BestAndLastCheckpoint


class PeaksFirst(BoringModel):
    """A model whose validation score is best at epoch 0 and worse every epoch after."""

    def on_validation_epoch_end(self) -> None:
        self.log("val/score", -float(self.current_epoch))


def _fit(tmp_path: Path, epochs: int) -> BestAndLastCheckpoint:
    checkpoint = BestAndLastCheckpoint(
        dirpath=tmp_path, filename="best", monitor="val/score", mode="max", save_last=True
    )
    trainer = L.Trainer(
        max_epochs=epochs,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=[checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(PeaksFirst())
    return checkpoint


def test_last_checkpoint_is_the_final_epoch_and_best_the_best(tmp_path: Path) -> None:
    _fit(tmp_path, epochs=3)
    last = torch.load(tmp_path / "last.ckpt", weights_only=False)
    best = torch.load(tmp_path / "best.ckpt", weights_only=False)
    assert last["epoch"] == 2 and last["global_step"] == 6
    assert best["epoch"] == 0
    # Exactly one "last" file: it is overwritten, not versioned.
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]


def test_resuming_from_last_continues_after_the_final_epoch(tmp_path: Path) -> None:
    _fit(tmp_path, epochs=2)
    trainer = L.Trainer(
        max_epochs=3,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(PeaksFirst(), ckpt_path=tmp_path / "last.ckpt")
    assert trainer.global_step == 6  # 4 restored + 2 new: no epoch was repeated
