"""Test-time augmentation and the checkpoint's inference settings."""

from __future__ import annotations

import pytest
import torch

from bloodcls.errors import UserInputError
from bloodcls.inference import InferenceSettings, tta_probabilities, tta_views


def test_d4_views_are_the_eight_distinct_symmetries_of_the_square() -> None:
    image = torch.arange(9.0).view(1, 1, 3, 3)
    views = tta_views(image, "d4")
    assert len(views) == 8
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8  # a repeated view would be a missing symmetry
    assert torch.equal(views[0], image)
    assert torch.equal(tta_views(image, "none")[0], image)


def test_tta_probabilities_average_the_tempered_softmax_of_each_view() -> None:
    torch.manual_seed(0)
    images = torch.rand(2, 3, 4, 4)
    weight = torch.randn(3 * 16, 5)

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ weight

    got = tta_probabilities(logits_of, images, "d4", temperature=2.0)
    expected = torch.stack([(logits_of(v) / 2.0).softmax(1) for v in tta_views(images, "d4")]).mean(0)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, (logits_of(images) / 2.0).softmax(1))  # the views did change something
    torch.testing.assert_close(got.sum(1), torch.ones(2))


def test_unknown_tta_mode_is_a_one_line_error() -> None:
    with pytest.raises(UserInputError, match="tta"):
        tta_views(torch.zeros(1, 3, 2, 2), "d8")


def test_settings_round_trip_and_reject_bad_values() -> None:
    settings = InferenceSettings(temperature=1.7, review_threshold=0.9, target_accuracy=0.99, tta="d4")
    assert InferenceSettings.from_dict(settings.to_dict()) == settings
    assert InferenceSettings.from_dict(None) == InferenceSettings()
    for bad in ({"temperature": 0.0}, {"temperature": float("nan")}, {"review_threshold": 1.5}, {"tta": "x"}):
        with pytest.raises(UserInputError):
            InferenceSettings(**bad)  # type: ignore[arg-type]


def test_d4_reuses_the_plain_forward_for_the_identity_view() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    images = torch.rand(2, 3, 8, 8)
    calls: list[torch.Tensor] = []

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        calls.append(x)
        return net(x)

    full = tta_probabilities(logits_of, images, "d4", temperature=1.5)
    calls.clear()
    reused = tta_probabilities(logits_of, images, "d4", temperature=1.5, plain_logits=net(images))
    assert len(calls) == 7 and all(not torch.equal(c, images) for c in calls)  # the 7 other views only
    assert torch.allclose(full, reused, atol=1e-6)
