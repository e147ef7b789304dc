"""The shared skeleton of pseudo-label strategies (USB's split of an unlabeled step, done with plain methods).

One unlabeled step is four overridable pieces, each small enough to replace alone:

    logits, probs = self.predict_unlabeled(batch)   # the prediction that learns; the one targets come from
    targets = self.pseudo_targets(probs)            # hard labels (argmax); soft-label methods return probs
    self.observe(probs, batch)                      # adaptive thresholds update their state (no-op here)
    mask = self.mask(probs)                         # which images count: fixed thresholds here
    loss = self.masked_loss(logits, targets, mask)  # masked cross-entropy, averaged over the whole batch

Pseudo-labeling (one forward gives target and prediction) and FixMatch (weak view -> targets, strong view
learns) override ``predict_unlabeled`` only; adaptive-threshold methods (FlexMatch, FreeMatch) override ``mask``.
"""

from __future__ import annotations

from typing import Any

import torch

from bloodcls.strategies.base import Batch, Classifier, UnlabeledOutput
from bloodcls.strategies.ssl_losses import (
    masked_cross_entropy,
    pseudo_label_stats,
    select_pseudo_labels,
    warn_if_entropy_filter_is_idle,
)


class PseudoLabelSkeleton(Classifier, register=False):
    """Base of thresholded pseudo-label strategies; not a strategy itself.

    Args:
        confidence_threshold: minimum max-probability to accept a pseudo-label.
        entropy_threshold: maximum normalised prediction entropy to accept (1.0 = no entropy test).
        lambda_u: weight of the unlabeled loss.
        **kwargs: the ``Classifier`` arguments.
    """

    # Whether this step's predictions update the adaptive state before (FreeMatch, SoftMatch: USB's order) or after
    # (FlexMatch: USB and TorchSSL mask with the previous step's class effects) the mask is computed.
    observe_after_mask = False

    def __init__(
        self, confidence_threshold: float, entropy_threshold: float = 1.0, lambda_u: float = 1.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.confidence_threshold = confidence_threshold
        self.entropy_threshold = entropy_threshold
        self.lambda_u = lambda_u
        warn_if_entropy_filter_is_idle(confidence_threshold, entropy_threshold, self.num_classes, type(self).__name__)

    def predict_unlabeled(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, K) that learn, with gradient; probabilities (B, K) the targets come from, without)."""
        raise NotImplementedError

    def pseudo_targets(self, probs: torch.Tensor) -> torch.Tensor:
        """Hard pseudo-labels (B,) from the target probabilities."""
        return probs.argmax(dim=-1)

    def observe(self, probs: torch.Tensor, batch: Batch) -> None:
        """Update adaptive-threshold state from this step's target probabilities (no-op for fixed thresholds)."""

    def mask(self, probs: torch.Tensor) -> torch.Tensor:
        """Boolean (B,): max probability >= confidence AND normalised entropy <= entropy threshold."""
        return select_pseudo_labels(probs, self.confidence_threshold, self.entropy_threshold)[1]

    def masked_loss(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the accepted images, rejected ones counting as zeros in the batch mean."""
        return masked_cross_entropy(logits, targets, mask)

    def unlabeled_weight(self) -> float:
        """Weight of the unlabeled loss at this point of training."""
        return self.lambda_u

    def unlabeled_loss(self, batch: Batch, batch_idx: int) -> UnlabeledOutput:
        logits, probs = self.predict_unlabeled(batch)
        return self.unlabeled_output(logits, probs, batch)

    def unlabeled_output(self, logits: torch.Tensor, probs: torch.Tensor, batch: Batch) -> UnlabeledOutput:
        """The unlabeled term from the learning logits and the target probabilities (rows aligned with ``batch``)."""
        with torch.no_grad():
            if not self.observe_after_mask:
                self.observe(probs, batch)
            targets, mask = self.pseudo_targets(probs), self.mask(probs)
            if self.observe_after_mask:
                self.observe(probs, batch)
        loss = self.masked_loss(logits, targets, mask)
        stats = pseudo_label_stats(targets, mask, batch.get("true_label"), self.class_names)
        stats.update(per_class_pseudo_accuracy(probs.argmax(dim=-1), mask, batch.get("true_label"), self.class_names))
        return UnlabeledOutput(loss, self.unlabeled_weight(), stats)


def per_class_pseudo_accuracy(
    pseudo: torch.Tensor, mask: torch.Tensor, true_label: torch.Tensor | None, class_names: list[str]
) -> dict[str, float | torch.Tensor]:
    """``pseudo_acc/<class>``: the share of accepted pseudo-labels of each class that are right, for the classes
    with accepted images of known truth in this batch (benchmark pools; the report plots them over training)."""
    if true_label is None:
        return {}
    known = mask & (true_label >= 0)
    k = len(class_names)
    accepted = torch.bincount(pseudo[known], minlength=k)  # (K,) one sync below, not one per class
    right = torch.bincount(pseudo[known], weights=(pseudo[known] == true_label[known]).float(), minlength=k)
    return {
        f"pseudo_acc/{name}": float(r) / n
        for name, n, r in zip(class_names, accepted.tolist(), right.tolist(), strict=True)
        if n > 0
    }
