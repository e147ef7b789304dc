"""Checkpoints of a fit: best.ckpt on the validation metric, last.ckpt the latest epoch even when the metric peaked
earlier, resuming from last.ckpt (by path or as ``ckpt_path="last"``), and the CLI keys that configure them."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import REPO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel

from bloodcls.callbacks.checkpointing import best_checkpoint, last_checkpoint
from bloodcls.cli import BloodCLI


class PeaksFirst(BoringModel):
    """A model whose validation score is best at epoch 0 and worse every epoch after."""

    def on_validation_epoch_end(self) -> None:
        self.log("val/score", -float(self.current_epoch))


def _trainer(epochs: int, callbacks: list[ModelCheckpoint]) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=list(callbacks),
        enable_checkpointing=bool(callbacks),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _callbacks(directory: Path) -> list[ModelCheckpoint]:
    return [best_checkpoint(str(directory), monitor="val/score"), last_checkpoint(str(directory))]


def _fit(tmp_path: Path, epochs: int) -> None:
    _trainer(epochs, _callbacks(tmp_path)).fit(PeaksFirst())


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
    trainer = _trainer(3, [])
    trainer.fit(PeaksFirst(), ckpt_path=tmp_path / "last.ckpt")
    assert trainer.global_step == 6  # 4 restored + 2 new: no epoch was repeated


def test_ckpt_path_last_finds_last_ckpt_and_keeps_the_best(tmp_path: Path) -> None:
    """``fit --ckpt_path last`` in a new process: Lightning looks for last*.ckpt in the callbacks' directory."""
    _fit(tmp_path, epochs=2)
    trainer = _trainer(3, _callbacks(tmp_path))
    trainer.fit(PeaksFirst(), ckpt_path="last")
    assert trainer.global_step == 6
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["epoch"] == 2
    # The best epoch (0) survives the resume: the restored callback state knows its score.
    assert torch.load(tmp_path / "best.ckpt", weights_only=False)["epoch"] == 0
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]


def test_cli_keys_configure_both_callbacks(tmp_path: Path) -> None:
    args = ["--config", str(REPO / "configs/quickstart.yaml"), "--data.source.per_class", "4"]
    args += ["--checkpoint.dirpath", str(tmp_path), "--checkpoint.monitor", "val/macro_f1"]
    args += ["--trainer.logger", "false"]
    cli = BloodCLI(args=args, run=False)
    best, last = [c for c in cli.trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert (best.monitor, best.mode, best.filename, best.save_top_k) == ("val/macro_f1", "max", "best", 1)
    assert (last.monitor, last.filename, last.save_last) == (None, "last", None)
    assert best.dirpath == last.dirpath == str(tmp_path)  # one key moves both
    assert cli.trainer.checkpoint_callback is best  # ckpt_path="best" means the validation-selected one


@pytest.mark.parametrize("save_last", ["true", "false"])
def test_old_configs_with_save_last_write_no_second_last_file(save_last: str) -> None:
    args = ["--config", str(REPO / "configs/quickstart.yaml"), "--data.source.per_class", "4"]
    cli = BloodCLI(args=[*args, "--checkpoint.save_last", save_last, "--trainer.logger", "false"], run=False)
    best = next(c for c in cli.trainer.callbacks if isinstance(c, ModelCheckpoint))
    assert not best.save_last
