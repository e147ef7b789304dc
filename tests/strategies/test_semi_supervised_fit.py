"""Strategies through a real Trainer and the datamodule's labeled + unlabeled loaders (tiny, synthetic); the
multi-epoch fits (self-training rounds, Mean Teacher with label propagation) are marked slow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch

from bloodcls.data import BloodCellDataModule, SyntheticSource
from bloodcls.errors import UserInputError
from bloodcls.strategies import ContrastivePretrain, FixMatch, MeanTeacher, PseudoLabel, SelfTraining, Supervised


def _dm(**kwargs: Any) -> BloodCellDataModule:
    defaults: dict[str, Any] = {
        "image_size": 32,
        "batch_size": 16,
        "num_workers": 0,
        "cache": "memory",
        "source": SyntheticSource(30),
        "labels_per_class": 4,
        "steps_per_epoch": 3,
    }
    return BloodCellDataModule(**{**defaults, **kwargs})


def _trainer(tmp_path: Path, **kwargs: Any) -> L.Trainer:
    defaults: dict[str, Any] = {
        "max_epochs": 1,
        "limit_val_batches": 1,
        "default_root_dir": tmp_path,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
    }
    return L.Trainer(**{**defaults, **kwargs})


@pytest.mark.parametrize(
    "make",
    [
        lambda dm: PseudoLabel(
            num_classes=5, class_names=dm.class_names, backbone="bloodcls_cnn_tiny", confidence_threshold=0.3
        ),
        lambda dm: FixMatch(
            num_classes=5, class_names=dm.class_names, backbone="bloodcls_cnn_tiny", mu=2, threshold=0.3
        ),
        lambda dm: MeanTeacher(num_classes=5, class_names=dm.class_names, backbone="bloodcls_cnn_tiny"),
        lambda dm: ContrastivePretrain(num_classes=5, class_names=dm.class_names, backbone="bloodcls_cnn_tiny"),
    ],
    ids=["pseudo_label", "fixmatch", "mean_teacher", "contrastive"],
)
def test_strategy_fits_with_unlabeled_loader(tmp_path: Path, make: Any) -> None:
    dm = _dm()
    model = make(dm)
    trainer = _trainer(tmp_path)
    trainer.fit(model, dm)
    metrics = trainer.callback_metrics
    assert "train/loss_unsup" in metrics and "val/balanced_acc" in metrics
    if not isinstance(model, ContrastivePretrain):
        assert "train/mask_ratio" in metrics and "train/accepted/monocyte" in metrics
    assert trainer.global_step == 3  # steps_per_epoch fixes the epoch length


def test_fixmatch_unlabeled_batch_is_mu_times_labeled(tmp_path: Path) -> None:
    dm = _dm()
    model = FixMatch(num_classes=5, backbone="bloodcls_cnn_tiny", mu=3)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    dm.trainer = trainer
    dm.setup("fit")
    dm.request_loaders(model.loader_request())  # what the model's setup("fit") does through TrainingData
    loaders = dm.train_dataloader()
    batch, _, _ = next(iter(loaders))
    assert batch["labeled"]["image"].shape[0] == 16
    assert batch["unlabeled"]["image_weak"].shape[0] == 48 and "image_strong" in batch["unlabeled"]
    assert "label" not in batch["unlabeled"] and "true_label" in batch["unlabeled"]


def test_supervised_ignores_the_unlabeled_pool(tmp_path: Path) -> None:
    dm = _dm()
    trainer = _trainer(tmp_path)
    trainer.fit(Supervised(num_classes=5, backbone="bloodcls_cnn_tiny"), dm)
    assert "train/loss_unsup" not in trainer.callback_metrics


@pytest.mark.slow
def test_self_training_rounds_raise_pool_accuracy_and_mask_ratio(tmp_path: Path) -> None:
    L.seed_everything(0)
    # 4 labels per class: round 0 leaves ~7 % of the pool wrong, room to show the rounds' gain (with 8 it had left
    # 4 %, and on an Intel AMX CPU the gain was within the noise of the third round).
    dm = _dm(source=SyntheticSource(60), labels_per_class=4, steps_per_epoch=12, batch_size=20)
    model = SelfTraining(
        num_classes=5,
        class_names=dm.class_names,
        backbone="bloodcls_cnn_small",
        pseudo_label_source="both",
        confidence_threshold=0.6,
        epochs_per_round=3,
        max_rounds=3,
        patience=5,
        labeled_ratio=0.5,
        optimizer=lambda params: torch.optim.AdamW(params, lr=0.003),
        lr_schedule="cosine",
    )
    trainer = _trainer(tmp_path, max_epochs=12, limit_val_batches=None)
    trainer.fit(model, dm)
    rounds = next(cb for cb in trainer.callbacks if type(cb).__name__ == "SelfTrainingRounds")
    history = rounds.history
    assert [h["round"] for h in history] == [1, 2, 3]
    # Relabeling after rounds trained on pseudo-labels beats the relabeling after the labels-only round 0: more of
    # the pool is labeled right and more is accepted, while the accepted pseudo-labels stay as accurate (they start
    # near 98 %, so "strictly more accurate" would test noise in the third decimal).
    first, last = history[0], history[-1]
    # Pool accuracy after round 0 depends on the augmentation draws (95 % with per-dataset seed streams): ask for a
    # quarter of the remaining pool errors to go, not a fixed gain that a good round 0 leaves no room for.
    # The best relabeling after a pseudo-label round (the last round may overshoot by a few images).
    assert min(1 - h["pool_acc"] for h in history[1:]) < 0.75 * (1 - first["pool_acc"])
    assert last["pseudo_acc"] >= first["pseudo_acc"] - 0.02
    assert last["mask_ratio"] > first["mask_ratio"]
    assert last["accepted_correct"] > first["accepted_correct"]
    assert dm.pseudo_labels is not None and len(dm.pseudo_labels.positions) == last["accepted"]
    assert np.isfinite(float(trainer.callback_metrics["val/balanced_acc"]))


def test_contrastive_backbone_starts_another_strategy(tmp_path: Path) -> None:
    dm = _dm()
    pre = ContrastivePretrain(num_classes=5, backbone="bloodcls_cnn_tiny", mode="supcon")
    trainer = _trainer(tmp_path, limit_val_batches=0)
    trainer.fit(pre, dm)
    ckpt = tmp_path / "pre.ckpt"
    trainer.save_checkpoint(ckpt)
    student = FixMatch(num_classes=5, backbone="bloodcls_cnn_tiny", backbone_checkpoint=str(ckpt))
    for (name, a), b in zip(student.net.state_dict().items(), pre.net.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(UserInputError, match="backbone_checkpoint: .*missing.ckpt does not exist"):
        FixMatch(num_classes=5, backbone="bloodcls_cnn_tiny", backbone_checkpoint=str(tmp_path / "missing.ckpt"))


@pytest.mark.slow
def test_mean_teacher_with_label_propagation_relabels_the_pool_with_the_teacher(tmp_path: Path) -> None:
    L.seed_everything(0)
    dm = _dm(source=SyntheticSource(40), labels_per_class=6, steps_per_epoch=8, batch_size=16)
    model = MeanTeacher(
        num_classes=5,
        class_names=dm.class_names,
        backbone="bloodcls_cnn_small",
        ema_decay=0.9,
        rampup_epochs=1,
        lp_weight=1.0,
        lp_start_epoch=1,
        lp_every_n_epochs=2,
        lp_confidence_threshold=0.5,
        optimizer=lambda params: torch.optim.AdamW(params, lr=0.003),
    )
    trainer = _trainer(tmp_path, max_epochs=4)
    trainer.fit(model, dm)
    lp = next(cb for cb in trainer.callbacks if type(cb).__name__ == "LabelPropagationRefresh")
    assert [h["epoch"] for h in lp.history] == [1, 3]
    pool = len(dm.unlabeled_dataset())
    assert model.lp_labels is not None and model.lp_labels.shape == (pool,)
    last = lp.history[-1]
    assert int((model.lp_labels >= 0).sum()) == last["accepted"] > 0
    # The synthetic cells are easy: propagated labels are far better than chance (0.2) over the whole pool.
    assert last["pool_acc"] > 0.6
    assert {"train/loss_lp", "train/lp_mask_ratio", "train/loss_consistency"} <= set(trainer.callback_metrics)
