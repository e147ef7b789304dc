"""FreeMatch (Wang et al., ICLR 2023): FixMatch with self-adaptive thresholds and the self-adaptive fairness term.

The global threshold tau_t is an EMA (momentum ``ema_p``) of the mean max-probability on weak views; the local
(per-class) scale is an EMA p~_t of the mean class probabilities, normalised by its maximum; an image predicted as
class c is accepted when its confidence reaches tau_t * p~_t(c) / max p~_t. All three start at 1/K, so early
training accepts almost everything and the thresholds rise with the model's confidence. The fairness term
(``lambda_e``) compares the class distribution of accepted strong-view predictions, each normalised by its
histogram, with the EMA distribution, encouraging diverse pseudo-labels (USB's form: sum p log q, minimised).

The EMAs (``time_p``, ``p_model``, ``label_hist``) are buffers (in the checkpoint), updated from batch statistics
averaged over the DDP ranks so every rank holds the same thresholds.
"""

from __future__ import annotations

from typing import Any

import torch

from bloodcls.strategies.base import Batch, UnlabeledOutput
from bloodcls.strategies.ema import all_reduce_mean
from bloodcls.strategies.fixmatch import FixMatch


def freematch_mask(probs: torch.Tensor, time_p: torch.Tensor, p_model: torch.Tensor) -> torch.Tensor:
    """Boolean (B,): max probability >= time_p * p_model[argmax] / max(p_model)."""
    confidence, labels = probs.max(dim=-1)
    return confidence >= time_p * (p_model / p_model.max())[labels]


def fairness_loss(
    strong_logits: torch.Tensor, mask: torch.Tensor, p_model: torch.Tensor, label_hist: torch.Tensor
) -> torch.Tensor:
    """FreeMatch's self-adaptive fairness term on the accepted images: sum_c SumNorm(p_model / label_hist)_c *
    log SumNorm(mean strong probability / strong-prediction histogram)_c (0 when none is accepted)."""
    if not bool(mask.any()):
        return strong_logits.sum() * 0.0
    probs = strong_logits[mask].float().softmax(dim=-1)  # (M, K)
    hist = torch.bincount(probs.argmax(dim=-1), minlength=probs.shape[1]).float()
    hist = hist / hist.sum()
    model = p_model * torch.nan_to_num(1 / label_hist, posinf=0.0)
    model = model / model.sum()
    mean = probs.mean(dim=0) * torch.nan_to_num(1 / hist, posinf=0.0)
    mean = mean / mean.sum()
    return (model * torch.log(mean + 1e-12)).sum()


class FreeMatch(FixMatch):
    """Args:
    ema_p: momentum of the confidence, class-probability and histogram EMAs.
    lambda_e: weight of the fairness term.
    **kwargs: the ``FixMatch`` arguments (``threshold`` is unused: thresholds are self-adaptive) and the
        ``Classifier`` ones.
    """

    time_p: torch.Tensor
    p_model: torch.Tensor
    label_hist: torch.Tensor

    ignored_arguments = ("threshold", "entropy_threshold")  # self-adaptive thresholds

    def __init__(self, ema_p: float = 0.999, lambda_e: float = 0.01, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ema_p = ema_p
        self.lambda_e = lambda_e
        k = self.num_classes
        self.register_buffer("time_p", torch.tensor(1.0 / k))
        self.register_buffer("p_model", torch.full((k,), 1.0 / k))
        self.register_buffer("label_hist", torch.full((k,), 1.0 / k))

    def observe(self, probs: torch.Tensor, batch: Batch) -> None:
        confidence, labels = probs.max(dim=-1)
        hist = torch.bincount(labels, minlength=self.num_classes).float() / max(len(labels), 1)
        stats = torch.cat([confidence.float().mean().reshape(1), probs.float().mean(dim=0), hist])
        stats = all_reduce_mean(stats, self._trainer).to(self.p_model)  # one all-reduce for all three
        m = self.ema_p
        self.time_p.mul_(m).add_(stats[0], alpha=1 - m)
        self.p_model.mul_(m).add_(stats[1 : 1 + self.num_classes], alpha=1 - m)
        self.label_hist.mul_(m).add_(stats[1 + self.num_classes :], alpha=1 - m)

    def mask(self, probs: torch.Tensor) -> torch.Tensor:
        return freematch_mask(probs, self.time_p.to(probs.device), self.p_model.to(probs.device))

    def unlabeled_output(self, logits: torch.Tensor, probs: torch.Tensor, batch: Batch) -> UnlabeledOutput:
        out = super().unlabeled_output(logits, probs, batch)  # updates the EMAs (observe) before masking
        with torch.no_grad():
            mask = self.mask(probs)
        fair = fairness_loss(logits, mask, self.p_model, self.label_hist)
        out.stats["loss_fairness"] = fair.detach()
        # Two terms with their own weights: the returned loss carries them, its weight is 1.
        return UnlabeledOutput(out.weight * out.loss + self.lambda_e * fair, 1.0, out.stats, logged_weight=out.weight)
