"""Supervised losses and LR schedules as plain functions (no Lightning), with reference tests."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bloodcls.errors import UserInputError


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Multi-class focal loss (Lin et al. 2017): the per-sample cross-entropy scaled by (1 - p_y)^gamma.

    Class weights and label smoothing follow ``F.cross_entropy`` exactly (so gamma=0 reproduces it): the
    smoothing term weights each class's log-probability by that class's weight, and the batch mean divides by
    the summed weights of the targets.
    """
    log_probs = F.log_softmax(logits, dim=-1)  # (B, K)
    log_p_true = log_probs.gather(1, target[:, None]).squeeze(1)  # (B,)
    num_classes = logits.shape[-1]
    w = torch.ones(num_classes, dtype=log_probs.dtype, device=logits.device) if weight is None else weight
    nll = -w[target] * log_p_true  # (B,)
    per_sample = nll
    if label_smoothing > 0:
        smooth = -(log_probs * w).sum(dim=1) / num_classes  # (B,)
        per_sample = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    focus = (1.0 - log_p_true.exp()).clamp(min=0.0).pow(gamma)
    return (focus * per_sample).sum() / w[target].sum().clamp(min=torch.finfo(w.dtype).tiny)


def classification_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    kind: str = "ce",
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    focal_gamma: float = 2.0,
) -> torch.Tensor:
    """Cross-entropy (``ce``) or focal loss, with optional class weights and label smoothing. ``target``: class
    indices (B,), or soft targets (B, K) (mixup / CutMix; ``ce`` only)."""
    if kind == "ce" and target.ndim == 2 and weight is not None:
        # PyTorch divides a weighted soft-target loss by B, an index-target one by the summed weights of the targets;
        # dividing by the targets' expected weight keeps one normalisation (identical for one-hot targets).
        total = F.cross_entropy(logits, target, weight=weight, label_smoothing=label_smoothing, reduction="sum")
        return total / (target.float() @ weight.float()).sum().clamp(min=torch.finfo(torch.float32).tiny)
    if kind == "ce":
        return F.cross_entropy(logits, target, weight=weight, label_smoothing=label_smoothing)
    if kind == "focal" and target.ndim == 2:
        raise UserInputError("model.loss=focal takes class indices; soft targets (mixup / CutMix) need model.loss=ce")
    if kind == "focal":
        return focal_loss(logits, target, focal_gamma, weight, label_smoothing)
    raise UserInputError(f"model.loss: unknown loss '{kind}', expected ce|focal")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int = 0, min_factor: float = 0.0) -> float:
    """LR multiplier: linear warm-up from ~0 to 1 over ``warmup_steps``, then cosine decay to ``min_factor``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_restarts(step: int, period: int, warmup_steps: int = 0, min_factor: float = 0.0) -> float:
    """LR multiplier with warm restarts (SGDR, Loshchilov & Hutter 2017): a cosine from 1 to ``min_factor`` over
    every ``period`` steps, restarting at 1; the linear warm-up applies to the first period only."""
    period = max(1, period)
    if step < period:
        return warmup_cosine(step, period, warmup_steps, min_factor)
    return warmup_cosine(step % period, period, 0, min_factor)
