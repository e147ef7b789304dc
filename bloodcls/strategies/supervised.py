"""Supervised-only training on the labeled set: the reference every semi-supervised strategy is compared with."""

from __future__ import annotations

from typing import Any

import torch

from bloodcls.errors import UserInputError
from bloodcls.strategies.base import Batch, Classifier
from bloodcls.strategies.mixing import LabelMixer, check_mixing


class Supervised(Classifier):
    """Plain supervised learning (cross-entropy / focal, optional class weights) on the labeled images only, with
    optional mixup / CutMix of each batch (``bloodcls.strategies.mixing``; off by default).

    Args:
        mixup_alpha: Beta(alpha, alpha) of the mixup lambda (0.2 is a common choice; 0 = off).
        cutmix_alpha: Beta(alpha, alpha) of the CutMix box (1.0 is common; 0 = off). A PBC cell fills the centre of
            its frame, so a box pasted from another image often covers the cell: mixup is the gentler choice.
        mix_prob: probability that a batch is mixed.
        mix_switch_prob: with both alphas above 0, the probability of CutMix instead of mixup for a batch.
        **kwargs: the ``Classifier`` arguments (backbone, optimizer, loss, ...).
    """

    def __init__(
        self,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
        mix_switch_prob: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_mixing(mixup_alpha, cutmix_alpha, mix_prob, mix_switch_prob)
        self.mixer: LabelMixer | None = None
        if mixup_alpha > 0 or cutmix_alpha > 0:
            if self.loss_name != "ce":
                raise UserInputError("mixup / CutMix train on soft targets: they need model.loss=ce, not focal")
            self.mixer = LabelMixer(self.num_classes, mixup_alpha, cutmix_alpha, mix_prob, mix_switch_prob)

    def labeled_inputs(self, labeled: Batch) -> tuple[Batch, torch.Tensor]:
        if self.mixer is None:
            return labeled, labeled["label"]
        images, soft = self.mixer(labeled["image"], labeled["label"])
        return {**labeled, "image": images}, soft
