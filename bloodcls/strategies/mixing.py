"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of labeled batches through ``timm.data.Mixup``.

A batch is mixed with its own reverse (image i with image B-1-i, one lambda per batch) and the targets become the
same mixture of one-hot labels, so the supervised loss is a cross-entropy against soft targets. Label smoothing is
left to the loss (``F.cross_entropy`` smooths soft targets the way timm does), so it is not applied twice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.data import Mixup

from bloodcls.errors import UserInputError


def check_mixing(mixup_alpha: float, cutmix_alpha: float, prob: float, switch_prob: float) -> None:
    """One-line errors for impossible mixing settings (checked whether or not mixing is on)."""
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise UserInputError(f"model.mixup_alpha={mixup_alpha} and model.cutmix_alpha={cutmix_alpha} must be >= 0")
    if not 0 <= prob <= 1 or not 0 <= switch_prob <= 1:
        raise UserInputError(f"model.mix_prob={prob} and model.mix_switch_prob={switch_prob} must be in [0, 1]")


class LabelMixer:
    """Mixes a labeled batch: uint8 (or [0, 1] float) images -> float images in [0, 1] and (B, K) soft targets.

    Args:
        num_classes: K.
        mixup_alpha: Beta(alpha, alpha) of the mixup lambda; 0 turns mixup off.
        cutmix_alpha: Beta(alpha, alpha) of the CutMix box area; 0 turns CutMix off.
        prob: probability that a batch is mixed at all.
        switch_prob: with both on, the probability of CutMix instead of mixup for a batch.
    """

    def __init__(
        self, num_classes: int, mixup_alpha: float, cutmix_alpha: float, prob: float = 1.0, switch_prob: float = 0.5
    ) -> None:
        check_mixing(mixup_alpha, cutmix_alpha, prob, switch_prob)
        if mixup_alpha == 0 and cutmix_alpha == 0:
            raise UserInputError("LabelMixer needs model.mixup_alpha or model.cutmix_alpha > 0")
        self.num_classes = num_classes
        self.mixup = Mixup(
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            prob=prob,
            switch_prob=switch_prob,
            mode="batch",
            label_smoothing=0.0,
            num_classes=num_classes,
        )

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float().clone()
        soft = F.one_hot(labels, self.num_classes).float()
        # timm pairs image i with B-1-i and asserts an even batch; an odd last image stays as it is.
        even = len(x) - len(x) % 2
        if even >= 2:
            _, soft[:even] = self.mixup(x[:even], labels[:even])  # mixes the view x[:even] in place
        return x, soft
