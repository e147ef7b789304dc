"""Calibration and referral as pure functions: temperature scaling fitted on validation logits, NLL / Brier / ECE, and
the confidence threshold below which a cell goes to a human (selective prediction) with its coverage curve."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from bloodcls.evaluation.metrics import ArrayLike, calibration_bins, expected_calibration_error, validate_inputs

# Search range of the temperature. A validation set the model separates perfectly drives the NLL-optimal temperature
# towards 0 (ever sharper softmax); the bounds keep the fit finite and the checkpoint usable.
T_MIN, T_MAX = 0.01, 100.0
_NLL_EPS = 1e-12  # the same clamp as the test report's NLL (bloodcls.evaluation.metrics)
_ACC_TOL = 1e-12  # 99 / 100 must count as reaching a target of 0.99 despite float rounding


def _logit_views(logits: ArrayLike) -> torch.Tensor:
    """Logits as float64 (V, N, K): one view (N, K) or V test-time augmentation views."""
    x = torch.as_tensor(np.asarray(logits.detach().cpu() if isinstance(logits, torch.Tensor) else logits))
    x = x.to(torch.float64)
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.ndim != 3 or x.shape[1] == 0:
        raise ValueError(f"logits must have shape (N, K) or (V, N, K) with N > 0; got {tuple(x.shape)}")
    return x


def tempered_probabilities(logits: ArrayLike, temperature: float) -> np.ndarray:
    """softmax(logits / T), averaged over views for (V, N, K) logits -- what ``eval_probabilities`` computes."""
    views = _logit_views(logits)
    return (views / temperature).softmax(dim=2).mean(dim=0).numpy()


def temperature_nll(logits: ArrayLike, labels: ArrayLike, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under :func:`tempered_probabilities` (natural log, per image)."""
    views = _logit_views(logits)
    target = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    return _nll_of(views, target, math.log(temperature))


def _nll_of(views: torch.Tensor, target: torch.Tensor, log_t: float) -> float:
    # log of the mean over views of softmax, computed as logsumexp(log_softmax) - log V: no underflow for confident
    # views, where exp(log_softmax) would round a wrong class's probability to 0.
    log_p = (views / math.exp(log_t)).log_softmax(dim=2)  # (V, N, K)
    log_mean = torch.logsumexp(log_p, dim=0) - math.log(views.shape[0])  # (N, K)
    return float(-log_mean[torch.arange(target.numel()), target].mean())


def fit_temperature(logits: ArrayLike, labels: ArrayLike) -> float:
    """The temperature T in [T_MIN, T_MAX] minimising the validation NLL of softmax(logits / T).

    ``logits``: (N, K), or (V, N, K) for test-time augmentation (the probabilities are then the mean over the V views,
    as at inference). The NLL of one view is convex in 1/T, so unimodal in log T: a bounded Brent search on log T
    finds the minimum without a learning rate or a start value to tune.
    """
    views = _logit_views(logits)
    target = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if target.ndim != 1 or target.numel() != views.shape[1]:
        raise ValueError(f"labels must have shape ({views.shape[1]},); got {tuple(target.shape)}")
    result = minimize_scalar(
        lambda log_t: _nll_of(views, target, float(log_t)),
        bounds=(math.log(T_MIN), math.log(T_MAX)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(math.exp(float(result.x)))


def nll(probs: ArrayLike, labels: ArrayLike) -> float:
    """Mean -log p(true class) over images; probabilities clamped at 1e-12 (as in the test report)."""
    p, t = validate_inputs(probs, labels, None)
    return float(-np.log(np.clip(p[np.arange(t.size), t], _NLL_EPS, None)).mean())


def brier_score(probs: ArrayLike, labels: ArrayLike) -> float:
    """Multiclass Brier score: the squared distance to the one-hot label summed over classes, averaged over images
    (0 is perfect, 2 the worst)."""
    p, t = validate_inputs(probs, labels, None)
    onehot = np.eye(p.shape[1])[t]
    return float(((p - onehot) ** 2).sum(axis=1).mean())


def ece(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """Expected calibration error, binned exactly as in the test report's reliability diagram."""
    return expected_calibration_error(calibration_bins(probs, labels, n_bins=n_bins))


def calibration_summary(probs: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Accuracy, NLL, ECE (15 bins) and Brier score of ``probs``."""
    p, t = validate_inputs(probs, labels, None)
    return {
        "acc": float((p.argmax(axis=1) == t).mean()),
        "nll": nll(p, t),
        "ece": ece(p, t),
        "brier": brier_score(p, t),
    }


@dataclass(frozen=True)
class CoverageCurve:
    """Selective prediction: accepting the cells with confidence >= ``threshold[i]`` covers ``coverage[i]`` of them
    with accuracy ``accuracy[i]``. One point per distinct confidence, from the most confident down (coverage rises)."""

    threshold: np.ndarray
    coverage: np.ndarray
    accuracy: np.ndarray
    n_accepted: np.ndarray


def coverage_curve(probs: ArrayLike, labels: ArrayLike) -> CoverageCurve:
    """Accuracy of the accepted cells against the share accepted, for every confidence threshold."""
    p, t = validate_inputs(probs, labels, None)
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == t
    order = np.argsort(-conf, kind="stable")
    conf_sorted, correct_sorted = conf[order], correct[order]
    # A threshold accepts all cells of equal confidence or none: curve points sit at the end of each tie group.
    ends = np.flatnonzero(np.r_[conf_sorted[1:] != conf_sorted[:-1], True])
    n_accepted = ends + 1
    return CoverageCurve(
        threshold=conf_sorted[ends],
        coverage=n_accepted / conf.size,
        accuracy=np.cumsum(correct_sorted)[ends] / n_accepted,
        n_accepted=n_accepted,
    )


@dataclass(frozen=True)
class ReviewThreshold:
    """The referral threshold chosen for a target accuracy, and what it gave on the cells it was chosen on."""

    threshold: float
    target_accuracy: float
    coverage: float
    accuracy: float
    n_accepted: int
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_target(target_accuracy: float) -> None:
    if not 0.0 < target_accuracy <= 1.0:
        raise ValueError(f"target_accuracy={target_accuracy} must be in (0, 1]")


def choose_review_threshold(probs: ArrayLike, labels: ArrayLike, target_accuracy: float) -> ReviewThreshold | None:
    """The lowest confidence threshold whose accepted cells (confidence >= threshold) reach ``target_accuracy``, i.e.
    the largest coverage at that accuracy; ``None`` when even the most confident cells miss it.

    The threshold is the confidence of the least confident accepted cell: any lower value would accept the next cell
    down too. When every cell is accepted that is the lowest confidence seen; new cells below it are referred.
    """
    _check_target(target_accuracy)
    curve = coverage_curve(probs, labels)
    reached = np.flatnonzero(curve.accuracy >= target_accuracy - _ACC_TOL)
    if reached.size == 0:
        return None
    i = int(reached[-1])  # coverage grows along the curve: the last point that reaches the target covers most
    return ReviewThreshold(
        threshold=float(curve.threshold[i]),
        target_accuracy=float(target_accuracy),
        coverage=float(curve.coverage[i]),
        accuracy=float(curve.accuracy[i]),
        n_accepted=int(curve.n_accepted[i]),
        n=int(round(curve.n_accepted[i] / curve.coverage[i])),
    )


def best_accuracy_point(probs: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    """(accuracy, coverage) of the most accurate point of the coverage curve (largest coverage among ties): what a
    report says when a target accuracy is out of reach."""
    curve = coverage_curve(probs, labels)
    best = float(curve.accuracy.max())
    i = int(np.flatnonzero(curve.accuracy == best)[-1])
    return best, float(curve.coverage[i])


def referral_at(probs: ArrayLike, labels: ArrayLike, threshold: float) -> dict[str, Any]:
    """What a stored threshold does on labelled cells: coverage, accuracy of the accepted ones (``None`` when none is
    accepted), and the counts."""
    p, t = validate_inputs(probs, labels, None)
    accepted = p.max(axis=1) >= threshold
    n_accepted = int(accepted.sum())
    correct = p.argmax(axis=1) == t
    return {
        "review_threshold": float(threshold),
        "coverage": n_accepted / t.size,
        "accuracy": float(correct[accepted].mean()) if n_accepted else None,
        "n_accepted": n_accepted,
        "n_referred": int(t.size - n_accepted),
        "accuracy_of_referred": float(correct[~accepted].mean()) if n_accepted < t.size else None,
    }
