"""Online pseudo-labeling (Lee, "Pseudo-Label", ICML-W 2013) with confidence and entropy thresholds.

The network's own prediction on a weakly augmented unlabeled image becomes its target when the maximum
probability reaches ``confidence_threshold`` and the normalised prediction entropy stays under
``entropy_threshold``; the unlabeled loss weight ramps up (sigmoid) so early, noisy predictions count little.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from bloodcls.strategies.base import Batch, Classifier, UnlabeledOutput
from bloodcls.strategies.ssl_losses import select_pseudo_labels, sigmoid_rampup


class PseudoLabel(Classifier):
    """Args:
    confidence_threshold: minimum max-probability to accept a pseudo-label.
    entropy_threshold: maximum prediction entropy / log(K) to accept (1.0 = no entropy test).
    lambda_u: weight of the unlabeled loss after ramp-up.
    rampup_epochs: length of the sigmoid ramp-up of ``lambda_u`` (in epochs, fractional allowed).
    **kwargs: the ``Classifier`` arguments (backbone, optimizer, loss, ...).
    """

    def __init__(
        self,
        confidence_threshold: float = 0.95,
        entropy_threshold: float = 1.0,
        lambda_u: float = 1.0,
        rampup_epochs: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.confidence_threshold = confidence_threshold
        self.entropy_threshold = entropy_threshold
        self.lambda_u = lambda_u
        self.rampup_epochs = rampup_epochs

    def unlabeled_views(self) -> dict[str, str | None]:
        return {"image": "weak"}

    def unlabeled_loss(self, batch: Batch, batch_idx: int) -> UnlabeledOutput:
        logits = self(batch["image"])  # (B, K); the same forward yields target and prediction (Lee 2013)
        with torch.no_grad():
            pseudo, mask = select_pseudo_labels(
                logits.float().softmax(dim=-1), self.confidence_threshold, self.entropy_threshold
            )
        per_sample = F.cross_entropy(logits, pseudo, reduction="none")
        loss = (per_sample * mask.float()).mean()
        weight = self.lambda_u * sigmoid_rampup(self.progress_epochs(), self.rampup_epochs)
        return UnlabeledOutput(loss, weight, self.pseudo_label_stats(pseudo, mask, batch.get("true_label")))
