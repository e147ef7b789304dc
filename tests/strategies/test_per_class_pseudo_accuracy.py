"""Per-class accuracy of accepted pseudo-labels (what the HTML report plots over training for semi-supervised runs)."""

from __future__ import annotations

import pytest
import torch

from bloodcls.strategies.ssl_base import per_class_pseudo_accuracy

NAMES = ["a", "b", "c"]


def test_per_class_accuracy_of_accepted_pseudo_labels() -> None:
    pseudo = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    mask = torch.tensor([True, True, True, True, False, False, True])
    truth = torch.tensor([0, 1, 0, 1, 1, 2, -1])  # the last accepted image's truth is unknown
    stats = per_class_pseudo_accuracy(pseudo, mask, truth, NAMES)
    assert stats == {"pseudo_acc/a": pytest.approx(2 / 3), "pseudo_acc/b": 1.0}  # c: no accepted known image
    assert per_class_pseudo_accuracy(pseudo, mask, None, NAMES) == {}
