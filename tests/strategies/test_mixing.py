"""Mixup / CutMix of labeled batches: images and soft targets mixed with the same partner and the same lambda, and
the supervised strategy training on those soft targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bloodcls.errors import UserInputError
from bloodcls.strategies import Supervised
from bloodcls.strategies.losses import classification_loss
from bloodcls.strategies.mixing import LabelMixer

K = 4


def _constant_images(values: list[int], size: int = 8) -> torch.Tensor:
    """One flat uint8 image per value, so a mixed pixel tells which images were mixed and how."""
    return torch.tensor(values, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, size, size).contiguous()


def test_mixup_pairs_image_and_target_with_the_reversed_batch_and_one_lambda() -> None:
    np.random.seed(0)
    labels = torch.tensor([0, 1, 2, 3])
    images, soft = LabelMixer(K, mixup_alpha=0.4, cutmix_alpha=0.0)(_constant_images([0, 60, 120, 240]), labels)
    lam = float(soft[0, 0])  # image 0 (class 0) is mixed with image 3 (class 3)
    assert 0 < lam < 1
    partner = labels.flip(0)
    expected_soft = lam * F.one_hot(labels, K) + (1 - lam) * F.one_hot(partner, K)
    torch.testing.assert_close(soft, expected_soft.float())
    pixels = torch.tensor([0, 60, 120, 240], dtype=torch.float32) / 255
    torch.testing.assert_close(images[:, 0, 0, 0], lam * pixels + (1 - lam) * pixels.flip(0))
    assert images.dtype == torch.float32 and float(images.max()) <= 1.0  # [0, 1], as preprocess accepts


def test_cutmix_target_share_is_the_pasted_area() -> None:
    labels, shares = torch.tensor([0, 1]), []
    for seed in range(6):
        np.random.seed(seed)
        images, soft = LabelMixer(K, mixup_alpha=0.0, cutmix_alpha=1.0)(_constant_images([0, 255], size=16), labels)
        pasted = float((images[0, 0] > 0.5).float().mean())  # image 0 is black; the box comes from image 1
        torch.testing.assert_close(soft[0], torch.tensor([1 - pasted, pasted, 0.0, 0.0]))
        shares.append(pasted)
    assert any(0 < share < 1 for share in shares)


def test_an_odd_last_image_keeps_its_pixels_and_label() -> None:
    np.random.seed(0)
    labels = torch.tensor([0, 1, 2])
    images, soft = LabelMixer(K, mixup_alpha=1.0, cutmix_alpha=0.0)(_constant_images([0, 100, 200]), labels)
    torch.testing.assert_close(images[2], torch.full((3, 8, 8), 200 / 255))
    torch.testing.assert_close(soft[2], F.one_hot(torch.tensor(2), K).float())
    assert 0 < float(soft[0, 0]) < 1  # the even part was mixed


def test_mix_prob_zero_leaves_the_batch_alone() -> None:
    labels = torch.tensor([0, 1, 2, 3])
    images, soft = LabelMixer(K, mixup_alpha=1.0, cutmix_alpha=0.0, prob=0.0)(_constant_images([0, 1, 2, 3]), labels)
    torch.testing.assert_close(soft, F.one_hot(labels, K).float())
    torch.testing.assert_close(images[:, 0, 0, 0], torch.tensor([0.0, 1.0, 2.0, 3.0]) / 255)


def test_supervised_with_mixup_trains_on_the_mixed_images_against_soft_targets() -> None:
    np.random.seed(0)
    torch.manual_seed(0)
    model = Supervised(num_classes=K, backbone="bloodcls_cnn_tiny", mixup_alpha=0.4, label_smoothing=0.1)
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=g),
        "label": torch.tensor([0, 1, 2, 3, 0, 1]),
        "index": torch.arange(6),
    }
    np.random.seed(3)
    mixed, soft = model.labeled_inputs(batch)
    lam = float(soft[0, 0])  # image 0 (class 0) mixed with image 5 (class 1)
    plain = batch["image"].float() / 255
    one_hot = F.one_hot(batch["label"], K).float()
    torch.testing.assert_close(soft, lam * one_hot + (1 - lam) * one_hot.flip(0))  # unsmoothed: the loss smooths once
    torch.testing.assert_close(mixed["image"], lam * plain + (1 - lam) * plain.flip(0))
    np.random.seed(3)
    loss = model.training_step(batch, 0)
    expected = F.cross_entropy(model(mixed["image"]), soft, label_smoothing=0.1)
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, F.cross_entropy(model(batch["image"]), batch["label"], label_smoothing=0.1))
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.net.parameters())


def test_mixing_is_off_by_default_and_refuses_focal_loss_and_bad_values() -> None:
    assert Supervised(num_classes=K, backbone="bloodcls_cnn_tiny").mixer is None
    with pytest.raises(UserInputError, match="soft targets"):
        Supervised(num_classes=K, backbone="bloodcls_cnn_tiny", loss="focal", cutmix_alpha=1.0)
    with pytest.raises(UserInputError, match=">= 0"):
        Supervised(num_classes=K, backbone="bloodcls_cnn_tiny", mixup_alpha=-0.1)
    with pytest.raises(UserInputError, match=r"\[0, 1\]"):
        Supervised(num_classes=K, backbone="bloodcls_cnn_tiny", mixup_alpha=0.2, mix_prob=1.5)
    with pytest.raises(UserInputError, match=r"\[0, 1\]"):  # checked even with mixing off
        Supervised(num_classes=K, backbone="bloodcls_cnn_tiny", mix_switch_prob=-0.5)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_weighted_loss_on_one_hot_soft_targets_equals_the_class_index_loss(smoothing: float) -> None:
    # PyTorch normalises weighted soft targets by B, class indices by the summed target weights: one rule here.
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(6, K, generator=g), torch.tensor([0, 0, 1, 2, 3, 3])
    weight = torch.tensor([0.5, 2.0, 1.0, 3.0])
    by_index = classification_loss(logits, labels, "ce", weight, smoothing)
    by_soft = classification_loss(logits, F.one_hot(labels, K).float(), "ce", weight, smoothing)
    torch.testing.assert_close(by_soft, by_index)
    with pytest.raises(UserInputError, match="soft targets"):
        classification_loss(logits, F.one_hot(labels, K).float(), "focal", weight)
