"""FixMatch (Sohn et al., NeurIPS 2020): hard pseudo-labels from a weak view supervise a strong view.

For each unlabeled image the prediction on the weakly augmented view is turned into a hard label when its
confidence reaches ``threshold`` (tau); the loss is cross-entropy of the strongly augmented view against it,
weighted by ``lambda_u``, with ``mu`` unlabeled images per labeled image. Optional distribution alignment
(Berthelot et al. 2020) rescales weak-view predictions by target / running model class distribution, which
helps on class-imbalanced pools such as peripheral blood smears.
"""

from __future__ import annotations

from typing import Any

import torch

from bloodcls.data.interface import LoaderRequest
from bloodcls.strategies.base import Batch
from bloodcls.strategies.ssl_base import PseudoLabelSkeleton
from bloodcls.strategies.ssl_losses import distribution_alignment


class FixMatch(PseudoLabelSkeleton):
    """Args:
    threshold: confidence tau for accepting a weak-view pseudo-label.
    entropy_threshold: optional extra filter on normalised entropy (1.0 = off).
    lambda_u: unlabeled loss weight.
    mu: unlabeled images per labeled image in a step.
    temperature: softmax temperature of the weak-view prediction.
    distribution_alignment: align weak-view predictions to the labeled class distribution.
    da_momentum: EMA momentum of the model's running class distribution.
    **kwargs: the ``Classifier`` arguments (backbone, optimizer, loss, ...).
    """

    model_dist: torch.Tensor
    target_dist: torch.Tensor

    def __init__(
        self,
        threshold: float = 0.95,
        entropy_threshold: float = 1.0,
        lambda_u: float = 1.0,
        mu: int = 7,
        temperature: float = 1.0,
        distribution_alignment: bool = False,
        da_momentum: float = 0.999,
        **kwargs: Any,
    ) -> None:
        super().__init__(threshold, entropy_threshold, lambda_u, **kwargs)
        self.mu = mu
        self.temperature = temperature
        self.use_distribution_alignment = distribution_alignment
        self.da_momentum = da_momentum
        k = self.num_classes
        self.register_buffer("model_dist", torch.full((k,), 1.0 / k))
        self.register_buffer("target_dist", torch.full((k,), 1.0 / k))

    def loader_request(self) -> LoaderRequest:
        return LoaderRequest(
            unlabeled_views={"image_weak": "weak", "image_strong": "strong"}, unlabeled_ratio=float(self.mu)
        )

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.use_distribution_alignment:
            counts = torch.as_tensor(self.training_data().train_class_counts(), dtype=torch.float32)
            self.target_dist.copy_(counts / counts.sum())

    def predict_unlabeled(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():  # the weak view only gives targets; it runs first, as in the paper's code
            probs = (self(batch["image_weak"]).float() / self.temperature).softmax(dim=-1)  # (B, K)
            if self.use_distribution_alignment:
                self.model_dist.mul_(self.da_momentum).add_((1 - self.da_momentum) * probs.mean(dim=0))
                probs = distribution_alignment(probs, self.model_dist, self.target_dist)
        return self(batch["image_strong"]), probs
