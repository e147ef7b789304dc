"""Hybrid Inception-v3 + Xception: two ImageNet trunks read the same image and their pooled features are fused.

After the hybrid WBC classifiers that concatenate the global-average-pooled features of Inception-v3
(Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016) and Xception (Chollet, "Xception: Deep
Learning with Depthwise Separable Convolutions", CVPR 2017), then classify with dense 512 + dropout 0.5.

The Xception trunk is timm's ``legacy_xception``: the original Chollet/Keras architecture (the one the hybrid
papers used through Keras), with ImageNet weights ``legacy_xception.tf_in1k``; timm's ``xception41/65/71`` are
the deeper "aligned" DeepLab variants. Inception-v3 needs >= 75 px (Xception runs from 29 px), so the hybrid's
minimum input is 75 px.

``pretrained=True`` loads each trunk's own ImageNet weights; a weights file or URL given through
``pretrained_cfg_overlay`` (``model.pretrained_weights``) is a checkpoint of the whole hybrid instead.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from bloodcls.models.common import TimmHeadMixin, linear_or_identity, zoo_cfg


class HybridInceptionXception(TimmHeadMixin, nn.Module):
    """``cat(GAP(inception_v3(x)), GAP(xception(x)))`` (B, 4096) -> dense ``hidden`` + ReLU -> dropout -> fc.

    ``forward_features`` already returns the fused, pooled vector (the two trunks' maps have different
    spatial sizes); ``forward_head(..., pre_logits=True)`` returns the dense layer, ``num_features == hidden``.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        hidden: int = 512,
        drop_rate: float = 0.5,
        xception_name: str = "legacy_xception",
        pretrained_trunks: bool = False,
        **_: object,  # timm passes pretrained_cfg etc.; they do not apply here
    ) -> None:
        super().__init__()
        trunk_args: dict[str, Any] = {"pretrained": pretrained_trunks, "num_classes": 0, "in_chans": in_chans}
        # Typed Any: timm trunks expose forward_head / num_features, which nn.Module's typing does not know.
        inception: Any = timm.create_model("inception_v3", **trunk_args)
        xception: Any = timm.create_model(xception_name, **trunk_args)
        self.inception, self.xception = inception, xception
        fused = int(inception.num_features) + int(xception.num_features)
        self.hidden = nn.Sequential(nn.Linear(fused, hidden), nn.ReLU(inplace=True))
        self.drop = nn.Dropout(drop_rate)
        self.num_features = self.head_hidden_size = hidden
        self.num_classes = num_classes
        self.fc = linear_or_identity(hidden, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        a = self.inception.forward_head(self.inception.forward_features(x), pre_logits=True)  # (B, 2048)
        b = self.xception.forward_head(self.xception.forward_features(x), pre_logits=True)  # (B, 2048)
        return torch.cat([a, b], dim=1)  # (B, 4096)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.hidden(x))  # (B, hidden)
        return x if pre_logits else self.fc(x)  # (B, K)


default_cfgs = generate_default_cfgs(
    {
        # Both trunks' ImageNet weights expect [-1, 1] inputs (mean = std = 0.5).
        "bloodcls_hybrid_inception_xception.untrained": zoo_cfg(
            input_size=299,
            min_input_size=75,
            first_conv=("inception.Conv2d_1a_3x3.conv", "xception.conv1"),
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
        )
    }
)


@register_model
def bloodcls_hybrid_inception_xception(pretrained: bool = False, **kwargs: Any) -> HybridInceptionXception:
    """~45 M parameters: Inception-v3 + Xception trunks, pooled features concatenated, dense 512, dropout 0.5."""
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    whole_checkpoint = pretrained and isinstance(overlay, dict) and bool(overlay.get("file") or overlay.get("url"))
    kwargs.setdefault("pretrained_trunks", pretrained and not whole_checkpoint)
    return build_model_with_cfg(
        HybridInceptionXception, "bloodcls_hybrid_inception_xception", whole_checkpoint, **kwargs
    )
