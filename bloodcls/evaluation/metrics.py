"""Test-set metrics for a K-class classifier: per-class and macro scores, AUROC, NLL and calibration.

Everything here is a pure function of ``probs`` (N, K) and ``targets`` (N,); no Lightning imports, so the
same numbers come out of ``bloodcls test``, a notebook, or a unit test. Per-class and macro precision, recall,
F1, specificity, accuracy, AUROC and the confusion matrix come from torchmetrics' functional metrics (the code
behind ``torchmetrics.classification.Multiclass*``); NLL, balanced accuracy and the calibration bins are
computed here, for the reasons given where they are.

Conventions (chosen so a hematology reader is never surprised by a NaN or a silently diluted average):

- The prediction is ``argmax(probs)``; ties go to the lowest class index.
- Ratios with a zero denominator are 0.0, never NaN (precision of a class never predicted, recall of a
  class with no support, specificity when every sample belongs to the class): torchmetrics'
  ``zero_division=0``.
- ``balanced_acc`` is the mean recall over classes *present in targets* (as sklearn's
  ``balanced_accuracy_score``).
- ``macro_precision`` / ``macro_recall`` / ``macro_f1`` / ``macro_specificity`` average over classes present
  in targets *or* predictions (sklearn's default label set; torchmetrics' ``average="macro"`` leaves out the
  classes with TP + FP + FN = 0, the same set). A class absent from both has nothing to score and is left out;
  a class predicted but never true still counts (with F1 = 0) because those false positives are real errors.
  In the normal case every class is present and all K classes are averaged.
- ``auroc`` is the unweighted mean of the one-vs-rest AUROCs and is ``None`` unless every one of the K
  classes has both positives and negatives — a partial average would not be comparable across runs.
  Per-class AUROCs are reported wherever they are defined (``None`` elsewhere).
- ``ece`` uses equal-width bins on the max probability, ``[lo, hi)`` with 1.0 folded into the last bin.
- Scores from torchmetrics are float32; they are written as the shortest decimal that is the same float32
  (``0.6666667``, not ``0.6666666865348816``), so ``metrics.json`` carries no false digits.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import auc, roc_curve
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
    multiclass_specificity,
)

ArrayLike = np.ndarray | torch.Tensor

# Clamp for log(p_target): a confidently wrong zero probability would otherwise make the NLL infinite,
# which is neither JSON nor comparable. -log(1e-12) ≈ 27.6 nats caps a single sample's contribution.
_NLL_EPS = 1e-12
# Rows of a softmax sum to 1 up to float32 rounding (~1e-6); anything far off is probably logits.
_ROW_SUM_TOL = 1e-3


def _to_numpy(x: ArrayLike, dtype: type) -> np.ndarray:
    """Detach/CPU/cast a tensor or array; bfloat16 has no numpy dtype, so cast in torch first."""
    if isinstance(x, torch.Tensor):
        torch_dtype = torch.float64 if dtype is np.float64 else torch.int64
        return x.detach().cpu().to(torch_dtype).numpy()
    return np.asarray(x).astype(dtype, copy=False)


def validate_inputs(probs: ArrayLike, targets: ArrayLike, num_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes and values; return ``probs`` as float64 (N, K) and ``targets`` as int64 (N,).

    ``num_classes=None`` takes K from ``probs``.
    """
    p = _to_numpy(probs, np.float64)
    t_raw = targets.detach().cpu().numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    if p.ndim != 2:
        raise ValueError(f"probs must have shape (N, K); got shape {p.shape}")
    if t_raw.ndim != 1:
        raise ValueError(f"targets must have shape (N,); got shape {t_raw.shape}")
    if p.shape[0] != t_raw.shape[0]:
        raise ValueError(f"probs has {p.shape[0]} rows but targets has {t_raw.shape[0]} entries")
    if p.shape[0] == 0:
        raise ValueError("cannot compute metrics on zero samples")
    if num_classes is None:
        num_classes = p.shape[1]
    elif p.shape[1] != num_classes:
        raise ValueError(f"probs has {p.shape[1]} columns but there are {num_classes} classes")
    if t_raw.dtype.kind not in "iu" and not (
        t_raw.dtype.kind == "f" and np.all(np.isfinite(t_raw)) and np.all(t_raw == np.round(t_raw))
    ):
        raise ValueError(f"targets must be integer class indices; got dtype {t_raw.dtype}")
    t = t_raw.astype(np.int64)
    if t.min() < 0 or t.max() >= num_classes:
        raise ValueError(f"targets must lie in [0, {num_classes - 1}]; got min {t.min()}, max {t.max()}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contains NaN or inf")
    if p.min() < 0.0 or p.max() > 1.0 + _ROW_SUM_TOL:
        raise ValueError(
            f"probs must be probabilities in [0, 1]; got range [{p.min():.4g}, {p.max():.4g}] "
            "(did you pass logits? apply softmax first)"
        )
    sums = p.sum(axis=1)
    worst = float(np.abs(sums - 1.0).max())
    if worst > _ROW_SUM_TOL:
        raise ValueError(f"each row of probs must sum to 1; worst row is off by {worst:.4g}")
    return p, t


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise num/den with 0.0 where den == 0 (see module docstring)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _roc_one_vs_rest(scores: np.ndarray, is_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, float | None]:
    """ROC of one binary problem; empty curve and ``None`` AUC when positives or negatives are missing."""
    n_pos = int(is_pos.sum())
    if n_pos == 0 or n_pos == is_pos.size:
        # sklearn would warn and return NaN TPR/FPR here; an explicit "undefined" is clearer.
        return np.empty(0), np.empty(0), None
    fpr, tpr, _ = roc_curve(is_pos, scores)
    return fpr, tpr, float(auc(fpr, tpr))


def roc_curves(
    probs: ArrayLike, targets: ArrayLike, num_classes: int
) -> dict[int, tuple[np.ndarray, np.ndarray, float | None]]:
    """One-vs-rest ROC per class: ``{k: (fpr, tpr, auc)}``; empty arrays and ``None`` where undefined."""
    p, t = validate_inputs(probs, targets, num_classes)
    return {k: _roc_one_vs_rest(p[:, k], t == k) for k in range(num_classes)}


def calibration_bins(probs: ArrayLike, targets: ArrayLike, n_bins: int = 15) -> dict[str, list[float]]:
    """Reliability-diagram bins on the max probability.

    Returns lists of length ``n_bins`` under ``center``, ``accuracy`` (fraction of argmax predictions that
    are right), ``confidence`` (mean max probability) and ``count``. Empty bins have count 0 and accuracy
    and confidence 0.0, so callers should weight or mask by ``count``.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1; got {n_bins}")
    p, t = validate_inputs(probs, targets, None)
    conf = p.max(axis=1)  # (N,)
    correct = (p.argmax(axis=1) == t).astype(np.float64)  # (N,)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # [lo, hi) bins like torchmetrics, but conf == 1.0 goes into the last bin instead of an extra one.
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    acc = _safe_div(np.bincount(idx, weights=correct, minlength=n_bins), count)
    mean_conf = _safe_div(np.bincount(idx, weights=conf, minlength=n_bins), count)
    return {
        "center": ((edges[:-1] + edges[1:]) / 2).tolist(),
        "accuracy": acc.tolist(),
        "confidence": mean_conf.tolist(),
        "count": count.tolist(),
    }


def expected_calibration_error(bins: dict[str, list[float]]) -> float:
    """ECE = sum over bins of (count / N) * |accuracy - confidence|, from :func:`calibration_bins`."""
    count = np.asarray(bins["count"])
    gap = np.abs(np.asarray(bins["accuracy"]) - np.asarray(bins["confidence"]))
    return float((count * gap).sum() / count.sum())


def _scores(x: torch.Tensor) -> list[float]:
    """A float32 tensor of scores as Python floats, each the shortest decimal that is the same float32."""
    return [float(str(v)) for v in x.detach().cpu().to(torch.float32).reshape(-1).numpy()]


def _score(x: torch.Tensor) -> float:
    return _scores(x)[0]


def _per_class_auroc(p: np.ndarray, t: np.ndarray, k: int) -> list[float | None]:
    """One-vs-rest AUROC per class; ``None`` for a class without positives or without negatives.

    torchmetrics returns 0.0 with a warning for such a class; 0.0 would read as "perfectly wrong", so it is
    replaced by ``None`` here and the warning (which says the same) is silenced.
    """
    # torchmetrics softmaxes preds outside [0, 1] as logits, which would reorder the samples' scores; the
    # validation tolerates rows a rounding error above 1, so clip them back instead.
    scores = torch.from_numpy(np.clip(p, 0.0, 1.0))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No (positive|negative) samples in targets")
        values = _scores(multiclass_auroc(scores, torch.from_numpy(t), num_classes=k, average=None))
    n_pos = np.bincount(t, minlength=k)
    return [values[c] if 0 < n_pos[c] < t.size else None for c in range(k)]


def classification_metrics(probs: ArrayLike, targets: ArrayLike, class_names: Sequence[str]) -> dict[str, Any]:
    """All headline, per-class and calibration numbers for one evaluation, as a JSON-serialisable dict.

    Keys: ``n``, ``acc``, ``balanced_acc``, ``macro_f1``, ``macro_precision``, ``macro_recall``,
    ``macro_specificity``, ``auroc``, ``nll``, ``ece``, ``per_class`` (list of dicts with ``class``,
    ``support``, ``precision``, ``recall``, ``f1``, ``specificity``, ``auroc``) and ``confusion_matrix``
    (K x K, rows = true class, columns = predicted class). Fractions are in [0, 1].
    """
    k = len(class_names)
    if k < 2:
        raise ValueError(f"need at least 2 class names; got {list(class_names)}")
    p, t = validate_inputs(probs, targets, k)
    n = t.size
    # Hard predictions go to torchmetrics as class indices: argmax here keeps the lowest-index tie rule explicit.
    pred, target = torch.from_numpy(p.argmax(axis=1)), torch.from_numpy(t)
    cm = multiclass_confusion_matrix(pred, target, num_classes=k).numpy().astype(np.int64)  # rows true, cols pred
    support = cm.sum(axis=1)

    stat_metrics = {
        "precision": multiclass_precision,
        "recall": multiclass_recall,
        "f1": multiclass_f1_score,
        "specificity": multiclass_specificity,
    }
    per: dict[str, list[float]] = {}
    macro: dict[str, float] = {}
    for key, fn in stat_metrics.items():
        per[key] = _scores(fn(pred, target, num_classes=k, average=None))
        macro[key] = _score(fn(pred, target, num_classes=k, average="macro"))
    # Not torchmetrics' MulticlassAccuracy(average="macro"): that also averages classes predicted but absent
    # from the targets (recall 0), so it is below sklearn's balanced accuracy whenever such a class exists.
    balanced_acc = float(np.mean([r for r, s in zip(per["recall"], support, strict=True) if s > 0]))

    aurocs = _per_class_auroc(p, t, k)
    defined = [a for a in aurocs if a is not None]
    # The mean of the per-class values is what MulticlassAUROC(average="macro") computes when all are defined.
    macro_auroc = float(np.mean(defined)) if len(defined) == k else None

    p_target = p[np.arange(n), t]
    nll = float(-np.log(np.clip(p_target, _NLL_EPS, None)).mean())

    per_class = [
        {
            "class": str(class_names[c]),
            "support": int(support[c]),
            **{key: per[key][c] for key in stat_metrics},
            "auroc": aurocs[c],
        }
        for c in range(k)
    ]
    return {
        "n": int(n),
        "acc": _score(multiclass_accuracy(pred, target, num_classes=k, average="micro")),
        "balanced_acc": balanced_acc,
        "macro_f1": macro["f1"],
        "macro_precision": macro["precision"],
        "macro_recall": macro["recall"],
        "macro_specificity": macro["specificity"],
        "auroc": macro_auroc,
        "nll": nll,
        # Hand-binned, not MulticlassCalibrationError: torchmetrics casts confidences to float32 and puts a
        # confidence of exactly 1.0 (common for a confident float32 softmax) into an extra 16th bin of its own,
        # so its ECE differs from the reliability diagram's, which folds 1.0 into the last bin. Elsewhere the
        # two agree (tests/evaluation/test_metrics.py checks both the agreement and the difference).
        "ece": expected_calibration_error(calibration_bins(p, t, n_bins=15)),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }
