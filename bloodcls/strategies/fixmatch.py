"""FixMatch (Sohn et al., NeurIPS 2020): hard pseudo-labels from a weak view supervise a strong view.

For each unlabeled image the prediction on the weakly augmented view is turned into a hard label when its
confidence reaches ``threshold`` (tau); the loss is cross-entropy of the strongly augmented (RandAugment + Cutout)
view against it, weighted by ``lambda_u``, with ``mu`` unlabeled images per labeled image. As in the paper's code,
labeled, weak and strong images go through the network in ONE forward, so BatchNorm sees one batch.

Optional distribution alignment (Berthelot et al. 2020, ``distribution_alignment``; off by default) rescales
weak-view predictions by target / running model class distribution. The target is the class distribution of the
unlabeled pool estimated from the labeled-data prior the user gives (``da_target``: ``uniform``, or a list of class
shares, e.g. the pool's known composition); the labeled counts are no estimate under ``labels_per_class`` (uniform
by construction). The running model distribution is a bias-corrected EMA (Adam's correction: no uniform start
value lingers) of the weak-view class means averaged over the DDP ranks.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from bloodcls.data.interface import LoaderRequest
from bloodcls.errors import UserInputError
from bloodcls.strategies.base import Batch, UnlabeledOutput
from bloodcls.strategies.ema import all_reduce_mean
from bloodcls.strategies.ssl_base import PseudoLabelSkeleton
from bloodcls.strategies.ssl_losses import distribution_alignment

DEFAULTS = {"threshold": 0.95, "entropy_threshold": 1.0}


class FixMatch(PseudoLabelSkeleton):
    """Args:
    threshold: confidence tau for accepting a weak-view pseudo-label.
    entropy_threshold: optional extra filter on normalised entropy (1.0 = off).
    lambda_u: unlabeled loss weight.
    mu: unlabeled images per labeled image in a step.
    temperature: divides the weak-view logits before the softmax whose confidence the threshold (and the adaptive
        thresholds of the subclasses) see; hard pseudo-labels do not change. USB uses T only for soft labels, which
        bloodcls does not make: keep 1 to compare with the papers.
    strong_view: augmentation preset of the strong view (``randaugment``: RandAugment + Cutout).
    distribution_alignment: align weak-view predictions to ``da_target``.
    da_target: ``uniform`` or one share per class (normalised here) -- the expected pool class distribution.
    da_momentum: EMA momentum of the model's running class distribution (bias-corrected).
    **kwargs: the ``Classifier`` arguments (backbone, optimizer, loss, ...).
    """

    model_dist: torch.Tensor
    target_dist: torch.Tensor
    da_updates: torch.Tensor
    # FixMatch arguments a subclass's own mask replaces: setting them away from their default warns (not silent).
    ignored_arguments: tuple[str, ...] = ()

    def __init__(
        self,
        threshold: float = DEFAULTS["threshold"],
        entropy_threshold: float = DEFAULTS["entropy_threshold"],
        lambda_u: float = 1.0,
        mu: int = 7,
        temperature: float = 1.0,
        strong_view: str = "randaugment",
        distribution_alignment: bool = False,
        da_target: str | list[float] = "uniform",
        da_momentum: float = 0.999,
        **kwargs: Any,
    ) -> None:
        super().__init__(threshold, entropy_threshold, lambda_u, **kwargs)
        given = {"threshold": threshold, "entropy_threshold": entropy_threshold}
        for name in self.ignored_arguments:
            if given[name] != DEFAULTS[name]:
                warnings.warn(
                    f"{type(self).__name__} ignores model.{name}={given[name]}: its own thresholds replace it",
                    stacklevel=2,
                )
        self.mu = mu
        self.temperature = temperature
        self.strong_view = strong_view
        self.use_distribution_alignment = distribution_alignment
        self.da_momentum = da_momentum
        k = self.num_classes
        if isinstance(da_target, str):
            if da_target != "uniform":
                raise UserInputError(f"model.da_target={da_target!r}: expected 'uniform' or a list of {k} shares")
            target = torch.full((k,), 1.0 / k)
        else:
            target = torch.as_tensor(da_target, dtype=torch.float32)
            if target.shape != (k,) or bool((target <= 0).any()):
                raise UserInputError(f"model.da_target needs {k} positive class shares, got {da_target}")
            target = target / target.sum()
        # Buffers: in the checkpoint, so a resumed run keeps aligning with the same running estimate.
        self.register_buffer("target_dist", target)
        self.register_buffer("model_dist", torch.zeros(k))  # biased EMA accumulator; see aligned_model_dist
        self.register_buffer("da_updates", torch.zeros((), dtype=torch.long))

    def loader_request(self) -> LoaderRequest:
        views: dict[str, str | None] = {"image_weak": "weak", "image_strong": self.strong_view}
        return LoaderRequest(unlabeled_views=views, unlabeled_ratio=float(self.mu))

    @torch.no_grad()
    def update_model_dist(self, probs: torch.Tensor) -> torch.Tensor:
        """Fold this step's mean weak-view distribution (averaged over ranks) into the EMA; the bias-corrected
        running distribution (K,)."""
        batch_mean = all_reduce_mean(probs.float().mean(dim=0), self._trainer).to(self.model_dist)
        self.model_dist.mul_(self.da_momentum).add_(batch_mean, alpha=1 - self.da_momentum)
        self.da_updates += 1
        return self.model_dist / (1 - self.da_momentum ** int(self.da_updates))

    def weak_targets(self, weak_logits: torch.Tensor) -> torch.Tensor:
        """Target probabilities (B, K) from the weak view: tempered softmax, aligned when asked."""
        with torch.no_grad():
            probs = (weak_logits.detach().float() / self.temperature).softmax(dim=-1)
            if self.use_distribution_alignment:
                probs = distribution_alignment(probs, self.update_model_dist(probs), self.target_dist)
        return probs

    def predict_unlabeled(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(batch["image_weak"])
        logits = self(torch.cat([batch["image_weak"], batch["image_strong"]]))  # one forward: shared BN batch
        return logits[n:], self.weak_targets(logits[:n])

    def labeled_logits_and_unlabeled(
        self, labeled: Batch, unlabeled: Batch | None, batch_idx: int
    ) -> tuple[torch.Tensor, UnlabeledOutput | None]:
        if unlabeled is None:
            return super().labeled_logits_and_unlabeled(labeled, unlabeled, batch_idx)
        n, u = len(labeled["image"]), len(unlabeled["image_weak"])
        # Labeled, weak and strong images in one forward, as the paper's code (BatchNorm statistics shared).
        logits = self(torch.cat([labeled["image"], unlabeled["image_weak"], unlabeled["image_strong"]]))
        return logits[:n], self.unlabeled_output(logits[n + u :], self.weak_targets(logits[n : n + u]), unlabeled)
