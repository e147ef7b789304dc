"""Online pseudo-labeling (Lee, "Pseudo-Label", ICML-W 2013) with confidence and entropy thresholds.

The network's own prediction on a weakly augmented unlabeled image becomes its target when the maximum
probability reaches ``confidence_threshold`` and the normalised prediction entropy stays under
``entropy_threshold``; the unlabeled loss weight ramps up (sigmoid) so early, noisy predictions count little.
"""

from __future__ import annotations

from typing import Any

import torch

from bloodcls.data.interface import LoaderRequest
from bloodcls.strategies.base import Batch
from bloodcls.strategies.ssl_base import PseudoLabelSkeleton
from bloodcls.strategies.ssl_losses import sigmoid_rampup


class PseudoLabel(PseudoLabelSkeleton):
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
        super().__init__(confidence_threshold, entropy_threshold, lambda_u, **kwargs)
        self.rampup_epochs = rampup_epochs

    def loader_request(self) -> LoaderRequest:
        return LoaderRequest(unlabeled_views={"image": "weak"})

    def predict_unlabeled(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["image"])  # (B, K); the same forward yields target and prediction (Lee 2013)
        return logits, logits.detach().float().softmax(dim=-1)

    def unlabeled_weight(self) -> float:
        return self.lambda_u * sigmoid_rampup(self.progress_epochs(), self.rampup_epochs)
