"""Reference tests for semi-supervised building blocks: thresholds, entropy, ramp-ups, NT-Xent, SupCon, LP."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bloodcls.strategies.label_propagation import label_propagation
from bloodcls.strategies.ssl_losses import (
    distribution_alignment,
    masked_cross_entropy,
    normalized_entropy,
    nt_xent,
    select_pseudo_labels,
    sigmoid_rampup,
    softmax_mse,
    supcon,
)


def test_normalized_entropy_by_hand() -> None:
    probs = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]])
    np.testing.assert_allclose(normalized_entropy(probs).numpy(), [0.0, 1.0, math.log(2) / math.log(4)], atol=1e-6)


def test_select_pseudo_labels_confidence_and_entropy() -> None:
    probs = torch.tensor([[0.96, 0.02, 0.02], [0.90, 0.10, 0.00], [0.50, 0.49, 0.01], [0.01, 0.01, 0.98]])
    labels, mask = select_pseudo_labels(probs, confidence_threshold=0.9)
    assert labels.tolist() == [0, 0, 0, 2] and mask.tolist() == [True, True, False, True]
    # H([.96,.02,.02])/log3 = 0.2276, H([.9,.1,0])/log3 = 0.2959, H([.01,.01,.98])/log3 = 0.1021
    _, mask = select_pseudo_labels(probs, confidence_threshold=0.9, entropy_threshold=0.25)
    assert mask.tolist() == [True, False, False, True]


def test_sigmoid_rampup_values() -> None:
    assert sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(5, 10) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(10, 10) == 1.0 and sigmoid_rampup(20, 10) == 1.0 and sigmoid_rampup(3, 0) == 1.0


def test_masked_cross_entropy_counts_rejected_as_zero() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    targets = torch.tensor([0, 0])
    mask = torch.tensor([True, False])
    expected = -math.log(math.exp(2) / (math.exp(2) + 1)) / 2
    assert masked_cross_entropy(logits, targets, mask).item() == pytest.approx(expected, rel=1e-6)


def test_softmax_mse_sends_gradient_to_student_only() -> None:
    student = torch.tensor([[1.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 1.0]], requires_grad=True)
    loss = softmax_mse(student, teacher)
    p, q = torch.softmax(torch.tensor([1.0, 0.0]), 0), torch.softmax(torch.tensor([0.0, 1.0]), 0)
    assert loss.item() == pytest.approx(((p - q) ** 2).sum().item())
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0 and teacher.grad is None


def _nt_xent_reference(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """Straight from the SimCLR paper's algorithm: loop over all 2N anchors."""
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        num = math.exp(float(z[i] @ z[j]) / t)
        den = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(2 * n) if k != i)
        total += -math.log(num / den)
    return total / (2 * n)


def test_nt_xent_matches_loop_reference() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    assert nt_xent(z1, z2, 0.5).item() == pytest.approx(_nt_xent_reference(z1, z2, 0.5), rel=1e-5)


def _supcon_reference(features: torch.Tensor, labels: torch.Tensor, t: float) -> float:
    b, v, _ = features.shape
    z = torch.nn.functional.normalize(features.reshape(b * v, -1), dim=1)
    y = labels.repeat_interleave(v)
    losses = []
    for i in range(b * v):
        positives = [p for p in range(b * v) if p != i and y[p] == y[i]]
        if not positives:
            continue
        den = sum(math.exp(float(z[i] @ z[a]) / t) for a in range(b * v) if a != i)
        losses.append(-sum(math.log(math.exp(float(z[i] @ z[p]) / t) / den) for p in positives) / len(positives))
    return sum(losses) / len(losses)


def test_supcon_matches_loop_reference() -> None:
    g = torch.Generator().manual_seed(1)
    features = torch.randn(6, 2, 4, generator=g)
    labels = torch.tensor([0, 1, 0, 2, 1, 3])  # class 3 has a positive only in its other view
    assert supcon(features, labels, 0.1).item() == pytest.approx(_supcon_reference(features, labels, 0.1), rel=1e-5)


def test_distribution_alignment_by_hand() -> None:
    probs = torch.tensor([[0.5, 0.5]])
    out = distribution_alignment(probs, model_dist=torch.tensor([0.8, 0.2]), target_dist=torch.tensor([0.5, 0.5]))
    # 0.5*0.5/0.8 = 0.3125, 0.5*0.5/0.2 = 1.25 -> normalised 0.2, 0.8
    np.testing.assert_allclose(out.numpy(), [[0.2, 0.8]], atol=1e-6)


def test_label_propagation_recovers_two_clusters() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal([5.0, 0.0], 0.5, size=(60, 2))
    b = rng.normal([0.0, 5.0], 0.5, size=(60, 2))
    features = np.concatenate([a, b])
    truth = np.array([0] * 60 + [1] * 60)
    labels = np.full(120, -1)
    labels[[0, 1, 60, 61]] = truth[[0, 1, 60, 61]]  # two labels per cluster
    probs, weights = label_propagation(features, labels, num_classes=2, k=8)
    assert (probs.argmax(axis=1) == truth).mean() == 1.0
    assert probs[0].tolist() == [1.0, 0.0]  # labeled nodes clamped
    assert weights.min() >= 0 and weights.max() <= 1.0 + 1e-9 and weights[labels == -1].mean() > 0.5
