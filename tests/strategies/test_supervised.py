"""The supervised strategy: one optimisation step, class weights, normalisation, checkpoint round trip."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from strategy_fakes import FakeTrainingData

from bloodcls.data import BloodCellDataModule, SyntheticSource
from bloodcls.strategies import Supervised


def _batch(n: int = 8, k: int = 5, size: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
        "label": torch.randint(0, k, (n,), generator=g),
        "index": torch.arange(n),
    }


@pytest.mark.parametrize("backbone", ["bloodcls_cnn_tiny", "test_resnet"])
def test_training_step_is_finite_and_updates_backbone(backbone: str) -> None:
    model = Supervised(num_classes=5, backbone=backbone)
    batch = _batch()
    loss = model.training_step(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_preprocess_normalises_uint8_with_backbone_stats() -> None:
    model = Supervised(num_classes=3, backbone="test_resnet")  # pretrained cfg mean = std = 0.5
    x = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    assert torch.allclose(model.preprocess(x), torch.ones(1, 3, 4, 4))
    assert torch.allclose(model.preprocess(torch.ones(1, 3, 4, 4)), torch.ones(1, 3, 4, 4))


@pytest.mark.parametrize("loss", ["ce", "focal"])
def test_class_weights_come_from_imbalanced_training_counts_and_reach_the_loss(loss: str) -> None:
    # 8 / 2 / 2 images: inverse weights 1/8, 1/2, 1/2 normalised so the mean weight over images is 1 -> 0.5, 2, 2.
    model = Supervised(num_classes=3, backbone="bloodcls_cnn_tiny", class_weighting="inverse", loss=loss)
    model._trainer = SimpleNamespace(datamodule=FakeTrainingData(counts=[8, 2, 2]))  # type: ignore[assignment]
    model.setup("fit")
    torch.testing.assert_close(model.class_weight, torch.tensor([0.5, 2.0, 2.0]))
    logits, target = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.0, 1.0]]), torch.tensor([0, 0, 2])
    if loss == "ce":
        expected = F.cross_entropy(logits, target, weight=torch.tensor([0.5, 2.0, 2.0]))
        torch.testing.assert_close(model.supervised_loss(logits, target), expected)
    unweighted = Supervised(num_classes=3, backbone="bloodcls_cnn_tiny", loss=loss).supervised_loss(logits, target)
    assert not torch.isclose(model.supervised_loss(logits, target), unweighted)


def test_class_weights_from_datamodule_and_checkpoint_round_trip(tmp_path: Path) -> None:
    dm = BloodCellDataModule(image_size=32, batch_size=16, num_workers=0, cache="memory", source=SyntheticSource(12))
    model = Supervised(
        num_classes=dm.num_classes,
        class_names=dm.class_names,
        backbone="bloodcls_cnn_tiny",
        class_weighting="inverse",
        loss="focal",
        label_smoothing=0.1,
    )
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
    )
    trainer.fit(model, dm)
    assert torch.allclose(model.class_weight, torch.ones(5))  # balanced synthetic data -> equal weights
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    restored = Supervised.load_from_checkpoint(ckpt)
    assert restored.class_names == dm.class_names
    for a, b in zip(model.state_dict().values(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_class_names_must_match_num_classes() -> None:
    with pytest.raises(ValueError, match="class_names has 2 names but model.num_classes=3"):
        Supervised(num_classes=3, class_names=["a", "b"], backbone="bloodcls_cnn_tiny")
