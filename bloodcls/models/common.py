"""Small helpers shared by the model-zoo networks: timm pretrained-config entries and classifier heads."""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def zoo_cfg(
    input_size: int,
    min_input_size: int,
    first_conv: str | tuple[str, ...] | None,
    classifier: str = "fc",
    **overrides: object,
) -> dict[str, object]:
    """A timm pretrained-config entry for an untrained bloodcls network.

    ``min_input_size`` is the smallest square input the network runs at (networks that resize internally give a
    nominal 8 px); tests and model configs read it from ``model.pretrained_cfg["min_input_size"]``.
    ``first_conv``: the stem conv(s) timm adapts when pretrained weights meet another channel count; ``None``
    for networks without an input convolution.
    """
    cfg: dict[str, object] = {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, input_size, input_size),
        "min_input_size": (3, min_input_size, min_input_size),
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "classifier": classifier,
        "first_conv": first_conv,
    }
    cfg.update(overrides)
    return cfg


def linear_or_identity(in_features: int, num_classes: int) -> nn.Module:
    """timm convention: ``num_classes=0`` means no classifier (the head returns features)."""
    return nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()


class TimmHeadMixin:
    """The classifier-facing part of timm's interface, shared by bloodcls networks that keep their head in
    ``self.fc`` and define ``forward_features`` / ``forward_head`` / ``num_features``."""

    fc: nn.Module
    num_features: int
    num_classes: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # type: ignore[attr-defined]

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = linear_or_identity(self.num_features, num_classes)
