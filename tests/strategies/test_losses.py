"""Losses and schedules against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bloodcls.strategies.losses import classification_loss, cosine_restarts, focal_loss, warmup_cosine


def test_focal_loss_hand_computed() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([0, 0])
    p = torch.softmax(logits, dim=1)[:, 0]  # probability of the true class
    expected = (-((1 - p) ** 2) * torch.log(p)).mean()
    assert focal_loss(logits, target, gamma=2.0).item() == pytest.approx(expected.item(), rel=1e-6)


def test_focal_gamma_zero_is_cross_entropy_with_weights_and_smoothing() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(16, 4), torch.randint(0, 4, (16,))
    weight = torch.tensor([1.0, 2.0, 0.5, 1.5])
    for smoothing in (0.0, 0.1):
        ref = F.cross_entropy(logits, target, weight=weight, label_smoothing=smoothing)
        ours = focal_loss(logits, target, gamma=0.0, weight=weight, label_smoothing=smoothing)
        assert ours.item() == pytest.approx(ref.item(), rel=1e-5)


def test_focal_down_weights_easy_examples() -> None:
    easy = torch.tensor([[5.0, 0.0]])
    hard = torch.tensor([[0.0, 0.5]])
    t = torch.tensor([0])
    ratio_focal = focal_loss(easy, t) / focal_loss(hard, t)
    ratio_ce = F.cross_entropy(easy, t) / F.cross_entropy(hard, t)
    assert ratio_focal < ratio_ce


def test_classification_loss_dispatch() -> None:
    logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    assert classification_loss(logits, target, "ce").item() == pytest.approx(F.cross_entropy(logits, target).item())
    with pytest.raises(ValueError, match="unknown loss"):
        classification_loss(logits, target, "hinge")


def test_warmup_cosine_values() -> None:
    assert warmup_cosine(0, 100, warmup_steps=10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, warmup_steps=10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, warmup_steps=10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, warmup_steps=10) == pytest.approx(0.5)  # halfway through the decay
    assert warmup_cosine(100, 100, warmup_steps=10) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(50, 100, min_factor=0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))


def test_cosine_restarts_by_hand() -> None:
    # period 4, warm-up 2 in the first period only: 0.5, 1.0, then cosine over the remaining 2 steps; restarts at 1.
    assert cosine_restarts(0, 4, 2) == pytest.approx(0.5)
    assert cosine_restarts(1, 4, 2) == pytest.approx(1.0)
    assert cosine_restarts(2, 4, 2) == pytest.approx(1.0)
    assert cosine_restarts(3, 4, 2) == pytest.approx(0.5)
    assert [cosine_restarts(s, 4) for s in range(4, 8)] == pytest.approx([1.0, 0.853553, 0.5, 0.146447], abs=1e-6)
    assert cosine_restarts(8, 4) == pytest.approx(1.0)
