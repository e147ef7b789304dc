"""FixMatch and pseudo-labeling through their shared skeleton, against hand-written losses.

The backbone is swapped for a linear map of the channel means, so which class an image gets is known: a red
image is class 0, a green one class 1, a grey one is uncertain (rejected at threshold 0.9)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bloodcls.strategies import FixMatch, PseudoLabel, PseudoLabelSkeleton

K = 3


def _channel_net() -> nn.Module:
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, K))
    with torch.no_grad():
        net[2].weight.copy_(2.0 * torch.eye(3))  # logits = 2 x normalised channel means
        net[2].bias.zero_()
    return net


def _solid(colors: list[tuple[int, int, int]]) -> torch.Tensor:
    """(N, 3, 8, 8) uint8 images of one colour each."""
    return torch.tensor(colors, dtype=torch.uint8)[:, :, None, None].expand(-1, -1, 8, 8).contiguous()


RED, GREEN, GREY = (255, 0, 0), (0, 255, 0), (128, 128, 128)


def test_fixmatch_targets_come_from_the_weak_view_and_the_mean_is_over_the_whole_batch() -> None:
    model = FixMatch(num_classes=K, backbone="bloodcls_cnn_tiny", threshold=0.9, mu=1)
    model.net = _channel_net()
    weak = _solid([RED, RED, GREY, GREEN])
    strong = _solid([GREEN, RED, GREEN, RED])  # differs from the weak view: the targets must not come from here
    out = model.unlabeled_loss(
        {"image_weak": weak, "image_strong": strong, "true_label": torch.tensor([0, 0, 1, 1])}, 0
    )
    # By hand: weak-view argmax where confident (red -> 0, red -> 0, grey rejected, green -> 1).
    probs = model(weak).softmax(dim=1)
    assert probs.max(dim=1).values.tolist()[2] < 0.9 < min(probs.max(dim=1).values[[0, 1, 3]].tolist())
    targets, accepted = torch.tensor([0, 0, 1]), [0, 1, 3]
    ce = F.cross_entropy(model(strong)[accepted], targets, reduction="sum") / 4  # rejected images count as zeros
    torch.testing.assert_close(out.loss, ce)
    assert float(out.stats["mask_ratio"]) == 0.75 and out.weight == model.lambda_u
    assert float(out.stats["pseudo_acc"]) == 1.0 and out.stats["accepted/0"] == 2.0


def test_pseudo_label_loss_is_averaged_over_the_whole_batch() -> None:
    model = PseudoLabel(num_classes=K, backbone="bloodcls_cnn_tiny", confidence_threshold=0.9, rampup_epochs=0)
    model.net = _channel_net()
    images = _solid([RED, GREY, GREY, GREEN])
    out = model.unlabeled_loss({"image": images}, 0)
    logits = model(images)
    ce = F.cross_entropy(logits[[0, 3]], torch.tensor([0, 1]), reduction="sum") / 4
    torch.testing.assert_close(out.loss, ce)
    assert float(out.stats["mask_ratio"]) == 0.5
    out.loss.backward()
    assert model.net[2].weight.grad is not None and model.net[2].weight.grad.abs().sum() > 0


def test_pseudo_label_weight_ramps_up() -> None:
    model = PseudoLabel(num_classes=K, backbone="bloodcls_cnn_tiny", lambda_u=2.0, rampup_epochs=4)
    assert 0 < model.unlabeled_weight() < 2.0 * 0.01  # exp(-5) at epoch 0


def test_an_adaptive_threshold_is_one_override_of_mask() -> None:
    # What FlexMatch / FreeMatch will do: replace mask() only; the rest of the step is the skeleton's.
    class AcceptTopHalf(FixMatch, register=False):
        def mask(self, probs: torch.Tensor) -> torch.Tensor:
            confidence = probs.max(dim=1).values
            return confidence > confidence.median()  # (B,): the two confident of four

    model = AcceptTopHalf(num_classes=K, backbone="bloodcls_cnn_tiny", mu=1)
    model.net = _channel_net()
    assert isinstance(model, PseudoLabelSkeleton)
    weak = _solid([RED, GREY, GREY, GREEN])
    out = model.unlabeled_loss({"image_weak": weak, "image_strong": weak}, 0)
    assert float(out.stats["mask_ratio"]) == 0.5 and out.loss.item() > 0
