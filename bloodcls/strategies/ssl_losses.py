"""Pure building blocks of the semi-supervised strategies: pseudo-label selection and statistics, normalised
entropy, the masked cross-entropy, ramp-ups, consistency, NT-Xent (SimCLR) and SupCon losses. No Lightning imports;
reference-tested. Every strategy uses these (one masked cross-entropy, one normalised entropy)."""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F


def normalized_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of each row divided by log(K): 0 = one-hot, 1 = uniform; independent of class count."""
    k = probs.shape[-1]
    ent = -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1)
    return ent / math.log(k)


def entropy_bound(confidence: float, num_classes: int) -> float:
    """The largest normalised entropy a distribution over ``num_classes`` classes can have when its maximum
    probability is at least ``confidence``: H(c, (1-c)/(K-1), ..., (1-c)/(K-1)) / log K (the rest spread evenly).

    An entropy threshold at or above this bound never rejects what the confidence test accepts (0.142 for 0.95
    over 8 classes, 0.250 for 0.9); below it the entropy test binds and rejects confident predictions whose
    remaining mass is spread out rather than on one rival class.
    """
    k, c = num_classes, min(max(confidence, 1.0 / num_classes), 1.0)  # below 1/K no distribution can miss it
    rest = (1.0 - c) / (k - 1)
    ent = -sum(p * math.log(p) for p in (c, *([rest] * (k - 1))) if p > 0)
    return ent / math.log(k)


def warn_if_entropy_filter_is_idle(confidence: float, entropy_threshold: float, num_classes: int, name: str) -> None:
    """Warn when ``entropy_threshold`` lies above ``entropy_bound(confidence, K)``: the entropy filter never binds."""
    bound = entropy_bound(confidence, num_classes)
    if bound <= entropy_threshold < 1.0:
        warnings.warn(
            f"{name}: entropy_threshold={entropy_threshold} is above {bound:.3f}, the largest normalised entropy a "
            f"prediction with confidence >= {confidence} over {num_classes} classes can have; the entropy filter "
            "never rejects anything (lower it, or set 1.0 to say so)",
            stacklevel=3,
        )


def select_pseudo_labels(
    probs: torch.Tensor, confidence_threshold: float, entropy_threshold: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard pseudo-labels (argmax) and the acceptance mask: max prob >= confidence AND normalised entropy <=
    entropy threshold (1.0 disables the entropy test)."""
    confidence, labels = probs.max(dim=-1)
    mask = (confidence >= confidence_threshold) & (normalized_entropy(probs) <= entropy_threshold)
    return labels, mask


def sigmoid_rampup(current: float, length: float) -> float:
    """exp(-5 (1 - t)^2) with t = current / length clipped to [0, 1] (Laine & Aila 2017; Mean Teacher)."""
    if length <= 0:
        return 1.0
    t = min(max(current / length, 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the whole batch of mask * CE (FixMatch's normalisation: rejected samples count as zeros, so few
    accepted images give a small loss). ``mask`` is boolean (accepted) or float per-sample weights."""
    per_sample = F.cross_entropy(logits, targets, reduction="none")  # (B,)
    return (per_sample * mask.float()).mean()


def softmax_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean Teacher consistency: squared difference of the softmax outputs, summed over classes, mean over batch.
    Gradient flows into the student only (the teacher's logits are detached here). Computed in float32 outside
    autocast: squared differences of bf16 probabilities lose most of their bits."""
    with torch.autocast(student_logits.device.type, enabled=False):
        student, teacher = student_logits.float().softmax(dim=-1), teacher_logits.detach().float().softmax(dim=-1)
        return ((student - teacher) ** 2).sum(dim=-1).mean()


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent over 2B views: each view's positive is its pair, the other 2B-2 views are negatives."""
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)  # (2B, D)
    n = z.shape[0]
    sim = z @ z.T / temperature  # (2B, 2B)
    sim = sim.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
    b = z1.shape[0]
    positives = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, positives)


def supcon(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) for features (B, V, D) and labels (B,).

    Every other view with the same label is a positive; anchors without positives are ignored.
    """
    b, v, _ = features.shape
    z = F.normalize(features.reshape(b * v, -1), dim=1)  # (BV, D), view-major within sample
    y = labels.repeat_interleave(v)  # (BV,)
    sim = z @ z.T / temperature
    self_mask = torch.eye(b * v, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positive = (y[:, None] == y[None, :]) & ~self_mask
    n_pos = positive.sum(dim=1)
    valid = n_pos > 0
    mean_log_prob_pos = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1) / n_pos.clamp_min(1)
    return -(mean_log_prob_pos[valid]).mean()


def distribution_alignment(probs: torch.Tensor, model_dist: torch.Tensor, target_dist: torch.Tensor) -> torch.Tensor:
    """ReMixMatch-style alignment used with FixMatch on imbalanced data: p * target / model, renormalised."""
    aligned = probs * (target_dist / model_dist.clamp_min(1e-6))
    return aligned / aligned.sum(dim=-1, keepdim=True)


def pseudo_label_stats(
    pseudo: torch.Tensor, mask: torch.Tensor, true_label: torch.Tensor | None, class_names: list[str]
) -> dict[str, float | torch.Tensor]:
    """Mask ratio, per-class accepted counts and -- where the pool's truth is known (benchmarks; -1 elsewhere) --
    accuracy of the accepted pseudo-labels (``pseudo_acc``) and of all of them (``unlabeled_acc``)."""
    stats: dict[str, float | torch.Tensor] = {"mask_ratio": mask.float().mean()}
    accepted = pseudo[mask]  # (M,)
    counts = torch.bincount(accepted, minlength=len(class_names))
    for name, count in zip(class_names, counts.tolist(), strict=True):
        stats[f"accepted/{name}"] = float(count)
    if true_label is not None:
        known = mask & (true_label >= 0)
        if known.any():
            stats["pseudo_acc"] = (pseudo[known] == true_label[known]).float().mean()
        known_all = true_label >= 0
        if known_all.any():
            stats["unlabeled_acc"] = (pseudo[known_all] == true_label[known_all]).float().mean()
    return stats
