"""U-Net classifier: a small U-Net encoder-decoder whose bottleneck and decoder features feed a classifier.

Encoder-decoder with skip connections after Ronneberger et al., "U-Net: Convolutional Networks for Biomedical
Image Segmentation" (MICCAI 2015). For classification, the bottleneck (context) and every decoder stage (the
progressively sharper, skip-fused maps that a segmentation U-Net would use to outline nucleus and cytoplasm)
are globally average-pooled and concatenated before a linear classifier. Decoder stages upsample bilinearly
to their skip connection's size, so any input >= 8 px (three 2x poolings) works, not only multiples of 8.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from bloodcls.models.common import TimmHeadMixin, linear_or_identity, zoo_cfg


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNetClassifier(TimmHeadMixin, nn.Module):
    """Encoder ``widths`` (one 2x pooling between stages), mirrored decoder, multi-scale pooled head.

    ``forward_features`` returns the bottleneck concatenated with every decoder stage average-pooled to the
    bottleneck's grid, (B, sum(widths), H/8, W/8) by default; global pooling of that map equals pooling each
    stage separately (exactly so when H and W are multiples of 8). ``num_features == sum(widths)``.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        drop_rate: float = 0.0,
        **_: object,  # timm passes pretrained_cfg etc.; they do not apply here
    ) -> None:
        super().__init__()
        self.stem = _double_conv(in_chans, widths[0])
        self.down = nn.ModuleList(_double_conv(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        # Decoder stage i fuses the coarser map (widths[i + 1] channels) with the encoder skip (widths[i]).
        self.up = nn.ModuleList(_double_conv(widths[i + 1] + widths[i], widths[i]) for i in range(len(widths) - 1))
        self.drop = nn.Dropout(drop_rate)
        self.num_features = self.head_hidden_size = sum(widths)
        self.num_classes = num_classes
        self.fc = linear_or_identity(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]  # (B, w0, H, W)
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))  # (B, w_i, H / 2**i, W / 2**i)
        bottleneck = y = skips.pop()  # (B, w_last, H/8, W/8)
        grid = bottleneck.shape[-2:]
        pooled = [bottleneck]
        for i in reversed(range(len(self.up))):
            skip = skips[i]
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = self.up[i](torch.cat([y, skip], dim=1))  # (B, w_i, H / 2**i, W / 2**i)
            pooled.append(F.adaptive_avg_pool2d(y, grid))  # (B, w_i, H/8, W/8)
        return torch.cat(pooled, dim=1)  # (B, sum(widths), H/8, W/8)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.mean(dim=(2, 3)))  # (B, sum(widths))
        return x if pre_logits else self.fc(x)  # (B, K)


default_cfgs = generate_default_cfgs(
    {"bloodcls_unet_cls.untrained": zoo_cfg(input_size=64, min_input_size=8, first_conv="stem.0")}
)


@register_model
def bloodcls_unet_cls(pretrained: bool = False, **kwargs: Any) -> UNetClassifier:
    """~1.9 M parameters: U-Net 32-64-128-256, bottleneck + decoder stages pooled (480 features), classifier."""
    return build_model_with_cfg(UNetClassifier, "bloodcls_unet_cls", pretrained, **kwargs)
