"""Two compact CNNs from the white-blood-cell classification literature.

``bloodcls_cnn7``: seven 3x3 conv blocks (32-64-64-64-128-256-256 filters, ReLU, dropout 0.25), 2x2 max-pooling,
dense 128 and the classifier, published for 100x100 RGB crops. Pooling all seven blocks would shrink 100 px to
zero (100 -> 50 -> 25 -> 12 -> 6 -> 3 -> 1 -> 0), so only the first five blocks pool: 100 px ends at 3x3,
64 px at 2x2, and the smallest input is 32 px (1x1).

``bloodcls_cnn3``: the small CNN for 128x128 crops: conv 64 -> pool -> conv 256 -> pool -> conv 128 -> pool ->
dense 256 -> classes.

Both replace the papers' flatten-into-dense with global average pooling, so the dense layers do not depend on
the input size (for cnn3 at 128 px this also drops the 16*16*128 x 256 = 8.4 M-weight dense layer).
BatchNorm is off by default (as published) and available with ``batch_norm=True``.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from bloodcls.models.common import TimmHeadMixin, linear_or_identity, zoo_cfg


def _conv_block(c_in: int, c_out: int, pool: bool, drop: float, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU(inplace=True))
    if pool:
        layers.append(nn.MaxPool2d(2))
    if drop > 0:
        layers.append(nn.Dropout(drop))
    return nn.Sequential(*layers)


class PaperCNN(TimmHeadMixin, nn.Module):
    """Plain 3x3 conv blocks (``pools[i]``: whether block ``i`` max-pools), GAP, one dense layer, classifier.

    ``forward_head(..., pre_logits=True)`` returns the dense layer's output, so ``num_features == hidden``.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: tuple[int, ...] = (32, 64, 64, 64, 128, 256, 256),
        pools: tuple[bool, ...] = (True, True, True, True, True, False, False),
        block_drop_rate: float = 0.25,
        hidden: int = 128,
        drop_rate: float = 0.0,
        batch_norm: bool = False,
        **_: object,  # timm passes pretrained_cfg etc.; they do not apply here
    ) -> None:
        super().__init__()
        if len(pools) != len(widths):
            raise ValueError(f"pools has {len(pools)} entries but widths has {len(widths)}; give one per block")
        channels = (in_chans, *widths)
        self.features = nn.Sequential(
            *[
                _conv_block(a, b, pool, block_drop_rate, batch_norm)
                for a, b, pool in zip(channels[:-1], channels[1:], pools, strict=True)
            ]
        )
        self.hidden = nn.Sequential(nn.Linear(widths[-1], hidden), nn.ReLU(inplace=True))
        self.drop = nn.Dropout(drop_rate)
        self.num_features = self.head_hidden_size = hidden
        self.num_classes = num_classes
        self.fc = linear_or_identity(hidden, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He init: without BatchNorm the default init trains 7 layers slowly
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, C_last, H / 2**pools, W / 2**pools)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.hidden(x.mean(dim=(2, 3)))  # (B, hidden)
        x = self.drop(x)
        return x if pre_logits else self.fc(x)  # (B, K)


default_cfgs = generate_default_cfgs(
    {
        "bloodcls_cnn7.untrained": zoo_cfg(input_size=100, min_input_size=32, first_conv="features.0.0"),
        "bloodcls_cnn3.untrained": zoo_cfg(input_size=128, min_input_size=8, first_conv="features.0.0"),
    }
)


@register_model
def bloodcls_cnn7(pretrained: bool = False, **kwargs: Any) -> PaperCNN:
    """~1.1 M parameters: seven conv blocks 32-64-64-64-128-256-256 (first five pool), dense 128, classifier."""
    return build_model_with_cfg(PaperCNN, "bloodcls_cnn7", pretrained, **kwargs)


@register_model
def bloodcls_cnn3(pretrained: bool = False, **kwargs: Any) -> PaperCNN:
    """~0.48 M parameters: conv 64 -> pool -> conv 256 -> pool -> conv 128 -> pool -> dense 256 -> classes."""
    kwargs.setdefault("widths", (64, 256, 128))
    kwargs.setdefault("pools", (True, True, True))
    kwargs.setdefault("block_drop_rate", 0.0)
    kwargs.setdefault("hidden", 256)
    return build_model_with_cfg(PaperCNN, "bloodcls_cnn3", pretrained, **kwargs)
