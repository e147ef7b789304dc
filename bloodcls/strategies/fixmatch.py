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

from bloodcls.strategies.base import Batch, Classifier, UnlabeledOutput
from bloodcls.strategies.ssl_losses import distribution_alignment, masked_cross_entropy, select_pseudo_labels


class FixMatch(Classifier):
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
        super().__init__(**kwargs)
        self.threshold = threshold
        self.entropy_threshold = entropy_threshold
        self.lambda_u = lambda_u
        self.mu = mu
        self.temperature = temperature
        self.use_distribution_alignment = distribution_alignment
        self.da_momentum = da_momentum
        k = self.num_classes
        self.register_buffer("model_dist", torch.full((k,), 1.0 / k))
        self.register_buffer("target_dist", torch.full((k,), 1.0 / k))

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        if stage == "fit" and self.use_distribution_alignment and datamodule is not None:
            counts = torch.as_tensor(datamodule.train_class_counts(), dtype=torch.float32)
            self.target_dist.copy_(counts / counts.sum())

    def unlabeled_views(self) -> dict[str, str | None]:
        return {"image_weak": "weak", "image_strong": "strong"}

    def unlabeled_ratio(self) -> float:
        return float(self.mu)

    def unlabeled_loss(self, batch: Batch, batch_idx: int) -> UnlabeledOutput:
        with torch.no_grad():
            probs = (self(batch["image_weak"]).float() / self.temperature).softmax(dim=-1)  # (B, K)
            if self.use_distribution_alignment:
                self.model_dist.mul_(self.da_momentum).add_((1 - self.da_momentum) * probs.mean(dim=0))
                probs = distribution_alignment(probs, self.model_dist, self.target_dist)
            pseudo, mask = select_pseudo_labels(probs, self.threshold, self.entropy_threshold)
        logits_strong = self(batch["image_strong"])
        loss = masked_cross_entropy(logits_strong, pseudo, mask)
        return UnlabeledOutput(loss, self.lambda_u, self.pseudo_label_stats(pseudo, mask, batch.get("true_label")))
