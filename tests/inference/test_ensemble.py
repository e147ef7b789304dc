"""Ensembles: averaging members' probabilities, refusing members of other classes or image sizes."""

from __future__ import annotations

import pytest
import torch

from bloodcls.errors import UserInputError
from bloodcls.inference import InferenceSettings
from bloodcls.inference.ensemble import Ensemble, check_compatible


class _Member(torch.nn.Module):
    """A stand-in classifier: fixed logits per member, with its own temperature."""

    def __init__(self, logits: list[float], temperature: float = 1.0) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)
        self.inference = InferenceSettings(temperature=temperature)

    def eval_probabilities(self, images: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        return (self.logits.expand(len(images), -1) / self.inference.temperature).softmax(1)


def test_ensemble_is_the_mean_of_each_members_own_probabilities() -> None:
    a, b = _Member([2.0, 0.0, 0.0]), _Member([0.0, 3.0, 0.0], temperature=2.0)
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    got = Ensemble([a, b])(images)
    expected = (torch.tensor([2.0, 0.0, 0.0]).softmax(0) + torch.tensor([0.0, 1.5, 0.0]).softmax(0)) / 2
    torch.testing.assert_close(got, expected.expand(4, -1))
    torch.testing.assert_close(Ensemble([a])(images), a.eval_probabilities(images))


def test_members_of_other_classes_or_sizes_are_refused_in_one_line() -> None:
    names = ["a", "b"]
    check_compatible(["x", "y"], [names, names], [32, 32])
    with pytest.raises(UserInputError, match="y has classes") as err:
        check_compatible(["x", "y"], [names, ["b", "a"]], [32, 32])  # same classes, other order: still refused
    assert "\n" not in str(err.value)
    with pytest.raises(UserInputError, match="image_size 64"):
        check_compatible(["x", "y"], [names, names], [32, 64])
    with pytest.raises(UserInputError):
        Ensemble([])
