"""VGG-10: a VGG-style network with ten weight layers (8 conv + 2 dense) for 64x64 white-cell crops.

The architecture follows the small VGG feature extractors used in semi-supervised white-blood-cell
classification (a VGG trunk trained with pseudo-labels on unlabeled crops), built from the VGG recipe of
Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition" (ICLR 2015):
conv blocks 64-64-M-128-128-M-256-256-M-512-512-M (BatchNorm after every conv), global average pooling, a
dense hidden layer and the classifier. Global pooling (instead of flattening) lets it run at any size >= 16 px.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from bloodcls.models.common import TimmHeadMixin, linear_or_identity, zoo_cfg


def _stage(c_in: int, c_out: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [
            nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class VGG10(TimmHeadMixin, nn.Module):
    """``len(widths) * convs_per_stage`` conv layers (8 by default), a dense ``hidden`` layer and the classifier.

    ``forward_head(..., pre_logits=True)`` returns the hidden dense layer's output, so ``num_features == hidden``.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: tuple[int, ...] = (64, 128, 256, 512),
        convs_per_stage: int = 2,
        hidden: int = 256,
        drop_rate: float = 0.0,
        **_: object,  # timm passes pretrained_cfg etc.; they do not apply here
    ) -> None:
        super().__init__()
        channels = (in_chans, *widths)
        self.features = nn.Sequential(
            *[_stage(a, b, convs_per_stage) for a, b in zip(channels[:-1], channels[1:], strict=True)]
        )
        self.hidden = nn.Sequential(nn.Linear(widths[-1], hidden), nn.ReLU(inplace=True))
        self.drop = nn.Dropout(drop_rate)
        self.num_features = self.head_hidden_size = hidden
        self.num_classes = num_classes
        self.fc = linear_or_identity(hidden, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 512, H/16, W/16)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.hidden(x.mean(dim=(2, 3)))  # (B, hidden)
        x = self.drop(x)
        return x if pre_logits else self.fc(x)  # (B, K)


default_cfgs = generate_default_cfgs(
    {"bloodcls_vgg10.untrained": zoo_cfg(input_size=64, min_input_size=16, first_conv="features.0.0")}
)


@register_model
def bloodcls_vgg10(pretrained: bool = False, **kwargs: Any) -> VGG10:
    """~5 M parameters: VGG-style 64-64-M-128-128-M-256-256-M-512-512-M, GAP, dense 256, classifier."""
    return build_model_with_cfg(VGG10, "bloodcls_vgg10", pretrained, **kwargs)
