"""SoftMatch (Chen et al., ICLR 2023): FixMatch with soft per-sample weights instead of a hard threshold.

The weight of an unlabeled image whose weak-view confidence is p is 1 when p >= mu_t and
exp(-(p - mu_t)^2 / (2 sigma_t^2 / n_sigma^2)) below it: a truncated Gaussian over confidence, so uncertain
pseudo-labels still teach a little (quantity) while the confident ones dominate (quality). mu_t and sigma_t^2 are
EMAs (momentum ``ema_p``) of the batch mean and unbiased variance of the weak-view confidence, starting at 1/K and
1 as in USB's reference code; they are buffers (in the checkpoint), averaged over the DDP ranks.

The paper's uniform alignment is FixMatch's distribution alignment towards a uniform target
(``distribution_alignment: true``); it stays off by default for the reason given in ``fixmatch.py`` (the PBC pool is
not uniform). When on, it shapes the weights only: the pseudo-labels stay the argmax of the raw weak-view prediction,
as in USB's SoftMatch ("uniform alignment in softmatch do not use aligned probs for generating pseudo labels").
"""

from __future__ import annotations

from typing import Any

import torch

from bloodcls.strategies.base import Batch, UnlabeledOutput
from bloodcls.strategies.ema import all_reduce_mean
from bloodcls.strategies.fixmatch import FixMatch
from bloodcls.strategies.ssl_losses import pseudo_label_stats


def softmatch_weights(probs: torch.Tensor, mu: torch.Tensor, var: torch.Tensor, n_sigma: float) -> torch.Tensor:
    """Float (B,): 1 at confidence >= mu, the truncated Gaussian exp(-(p - mu)^2 / (2 var / n_sigma^2)) below."""
    confidence = probs.max(dim=-1).values.float()
    below = torch.clamp(confidence - mu, max=0.0)
    return torch.exp(-(below**2) / (2 * var / n_sigma**2))


def confidence_mean_and_variance(
    probs: torch.Tensor, trainer: Any, shift: float | torch.Tensor = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased variance of the max probability over this step's images of every DDP rank -- from the
    ranks' sums (one all-reduce), as USB gathers all confidences: averaging per-rank variances would miss the spread
    between the ranks' means. The sums are of ``confidence - shift`` (the same on every rank; near the mean, float32
    sums of squares lose no digits to cancellation)."""
    centred = probs.max(dim=-1).values.float() - shift
    local = torch.stack([centred.sum(), (centred**2).sum(), centred.new_tensor(float(len(centred)))])
    world = trainer.world_size if trainer is not None else 1
    total, total_sq, n = all_reduce_mean(local, trainer) * world  # mean over ranks x ranks = sums
    offset = total / n
    var = (total_sq - n * offset**2).clamp_min(0.0) / (n - 1) if float(n) > 1 else offset.new_zeros(())
    return offset + shift, var


class SoftMatch(FixMatch):
    """Args:
    ema_p: momentum of the confidence mean / variance EMAs.
    n_sigma: width of the Gaussian in standard deviations (the paper's lambda_max = 1 weight at mu - 0 sigma,
        exp(-n_sigma^2 / 2) at mu - sigma).
    **kwargs: the ``FixMatch`` arguments (``threshold`` is unused: weights are soft) and the ``Classifier`` ones.
    """

    conf_mean: torch.Tensor
    conf_var: torch.Tensor
    ignored_arguments = ("threshold", "entropy_threshold")  # soft weights instead of thresholds

    def __init__(self, ema_p: float = 0.999, n_sigma: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= ema_p < 1.0:
            raise ValueError(f"model.ema_p={ema_p} must be in [0, 1)")
        self.ema_p = ema_p
        self.n_sigma = n_sigma
        self.register_buffer("conf_mean", torch.tensor(1.0 / self.num_classes))
        self.register_buffer("conf_var", torch.tensor(1.0))
        # Pseudo-labels of the current step when distribution alignment is on (set by weak_targets, read in the same
        # step by unlabeled_output): the argmax before alignment.
        self._raw_pseudo_labels: torch.Tensor | None = None

    def weak_targets(self, weak_logits: torch.Tensor) -> torch.Tensor:
        if self.use_distribution_alignment:
            self._raw_pseudo_labels = weak_logits.detach().argmax(dim=-1)
        return super().weak_targets(weak_logits)

    def pseudo_targets(self, probs: torch.Tensor) -> torch.Tensor:
        raw, self._raw_pseudo_labels = self._raw_pseudo_labels, None
        return raw if raw is not None else super().pseudo_targets(probs)

    def observe(self, probs: torch.Tensor, batch: Batch) -> None:
        mean, var = confidence_mean_and_variance(
            probs, self._trainer, shift=self.conf_mean.to(probs.device)
        )  # no host sync
        self.conf_mean.mul_(self.ema_p).add_(mean.to(self.conf_mean), alpha=1 - self.ema_p)
        self.conf_var.mul_(self.ema_p).add_(var.to(self.conf_var), alpha=1 - self.ema_p)

    def mask(self, probs: torch.Tensor) -> torch.Tensor:
        """Soft weights (B,) in (0, 1]; ``masked_cross_entropy`` takes them as per-sample weights."""
        mean, var = self.conf_mean.to(probs.device), self.conf_var.to(probs.device)
        return softmatch_weights(probs, mean, var.clamp_min(1e-12), self.n_sigma)

    def unlabeled_output(self, logits: torch.Tensor, probs: torch.Tensor, batch: Batch) -> UnlabeledOutput:
        with torch.no_grad():
            self.observe(probs, batch)
            targets, weights = self.pseudo_targets(probs), self.mask(probs)
        loss = self.masked_loss(logits, targets, weights)
        # "Accepted" for the logged counts: weight of at least one half (the weights themselves are soft).
        stats = pseudo_label_stats(targets, weights >= 0.5, batch.get("true_label"), self.class_names)
        stats["mean_weight"] = weights.float().mean()
        stats["conf_mean"], stats["conf_var"] = self.conf_mean.clone(), self.conf_var.clone()
        return UnlabeledOutput(loss, self.unlabeled_weight(), stats)
