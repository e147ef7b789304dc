"""Recurrent classifier: an LSTM / GRU reads the image as a sequence of rows or of patches.

Sequential reading of an image as in the sequential-MNIST RNN classifiers (e.g. Le, Jaitly & Hinton, "A Simple
Way to Initialize Recurrent Networks of Rectified Linear Units", 2015) and the LSTM/GRU cell classifiers that
feed image rows to the recurrent cell. ``mode="rows"``: one step per image row (C*S features); ``mode="patches"``:
one step per ``patch_size`` square patch in raster order (C*p*p features), a shorter sequence. Cells:
Hochreiter & Schmidhuber's LSTM or Cho et al.'s GRU, optionally bidirectional. The features are the final
hidden state of the last layer (both directions concatenated when bidirectional).

The input layer's width depends on the image size, so images are resized internally (bilinear, antialiased)
to ``img_size``; any input size works.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from bloodcls.models.common import TimmHeadMixin, linear_or_identity, zoo_cfg


class RecurrentClassifier(TimmHeadMixin, nn.Module):
    """``forward_features``: per-step outputs (B, T, dirs*hidden); ``forward_head`` takes the final states.

    ``num_features == hidden_size * (2 if bidirectional else 1)``.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 64,
        mode: Literal["rows", "patches"] = "rows",
        patch_size: int = 8,
        cell: Literal["lstm", "gru"] = "lstm",
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = True,
        drop_rate: float = 0.0,
        **_: object,  # timm passes pretrained_cfg etc.; they do not apply here
    ) -> None:
        super().__init__()
        if mode not in ("rows", "patches"):
            raise ValueError(f"mode must be 'rows' or 'patches', got {mode!r}")
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', got {cell!r}")
        if mode == "patches" and img_size % patch_size:
            raise ValueError(f"img_size={img_size} must be a multiple of patch_size={patch_size}")
        self.img_size, self.mode, self.patch_size = img_size, mode, patch_size
        step_features = in_chans * (img_size if mode == "rows" else patch_size * patch_size)
        rnn_cls = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn_cls(
            step_features,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=drop_rate if num_layers > 1 else 0.0,
        )
        self.hidden_size, self.bidirectional = hidden_size, bidirectional
        self.drop = nn.Dropout(drop_rate)
        self.num_features = self.head_hidden_size = hidden_size * (2 if bidirectional else 1)
        self.num_classes = num_classes
        self.fc = linear_or_identity(self.num_features, num_classes)

    def to_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, T, F): rows (T = S, F = C*S) or raster-order patches (T = (S/p)^2, F = C*p*p)."""
        s = self.img_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)  # (B, C, S, S)
        if self.mode == "rows":
            return x.permute(0, 2, 1, 3).flatten(2)  # (B, S, C*S)
        return F.unfold(x, self.patch_size, stride=self.patch_size).transpose(1, 2)  # (B, (S/p)^2, C*p*p)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.to_sequence(x))
        return out  # (B, T, dirs*hidden)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        h = self.hidden_size
        # Final hidden state of the last layer: forward direction after the last step, backward after the first.
        final = torch.cat([x[:, -1, :h], x[:, 0, h:]], dim=1) if self.bidirectional else x[:, -1]  # (B, F)
        final = self.drop(final)
        return final if pre_logits else self.fc(final)  # (B, K)


default_cfgs = generate_default_cfgs(
    {"bloodcls_rnn.untrained": zoo_cfg(input_size=64, min_input_size=8, first_conv=None)}
)


@register_model
def bloodcls_rnn(pretrained: bool = False, **kwargs: Any) -> RecurrentClassifier:
    """~0.33 M parameters: bidirectional LSTM (128 per direction) over the 64 rows of a 64x64 RGB image."""
    return build_model_with_cfg(RecurrentClassifier, "bloodcls_rnn", pretrained, **kwargs)
