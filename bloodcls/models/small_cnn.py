"""A small, fast CNN for quick experiments, CPU demos and tests, registered into timm's model registry."""

from __future__ import annotations

from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from bloodcls.models.common import TimmHeadMixin, linear_or_identity


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(TimmHeadMixin, nn.Module):
    """Conv-BN-ReLU x2 + max-pool blocks, global average pooling, dropout and a linear classifier.

    Exposes timm's interface (``forward_features`` / ``forward_head`` / ``get_classifier`` /
    ``reset_classifier`` / ``num_features``) so strategies treat it like any timm backbone.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        drop_rate: float = 0.0,
        **_: object,  # timm passes pretrained_cfg etc.; they do not apply here
    ) -> None:
        super().__init__()
        channels = (in_chans, *widths)
        self.features = nn.Sequential(*[_block(a, b) for a, b in zip(channels[:-1], channels[1:], strict=True)])
        self.num_features = widths[-1]
        self.head_hidden_size = widths[-1]
        self.drop = nn.Dropout(drop_rate)
        self.fc: nn.Module = linear_or_identity(self.num_features, num_classes)
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, C, H/16, W/16)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))  # (B, C)
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


def _cfg(**overrides: object) -> dict[str, object]:
    cfg: dict[str, object] = {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 64, 64),
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "classifier": "fc",
        "first_conv": "features.0.0",
    }
    cfg.update(overrides)
    return cfg


# timm's register_model reads this module-level table; an untrained tag keeps pretrained=True well-defined
# (it then needs a local weights file via pretrained_cfg_overlay).
default_cfgs = generate_default_cfgs({"bloodcls_cnn_small.untrained": _cfg(), "bloodcls_cnn_tiny.untrained": _cfg()})


@register_model
def bloodcls_cnn_small(pretrained: bool = False, **kwargs: Any) -> SmallCNN:
    """~0.3 M parameters: four blocks of 16-32-64-128 channels; trains on 64 px crops in seconds per epoch."""
    return build_model_with_cfg(SmallCNN, "bloodcls_cnn_small", pretrained, **kwargs)


@register_model
def bloodcls_cnn_tiny(pretrained: bool = False, **kwargs: Any) -> SmallCNN:
    """~25 k parameters (8-16-32 channels): for tests and smoke runs."""
    kwargs.setdefault("widths", (8, 16, 32))
    return build_model_with_cfg(SmallCNN, "bloodcls_cnn_tiny", pretrained, **kwargs)
