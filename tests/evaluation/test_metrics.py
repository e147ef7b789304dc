"""Reference tests for bloodcls.evaluation.metrics: hand-computed values, sklearn cross-checks, edge cases."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from torchmetrics.functional.classification import multiclass_calibration_error

from bloodcls.evaluation.metrics import calibration_bins, classification_metrics, roc_curves

NAMES3 = ["a", "b", "c"]

# 6 samples, 3 classes. Confidences avoid the 15-bin edges (multiples of 1/15) so the ECE bins are obvious.
HAND_PROBS = np.array(
    [
        [0.70, 0.20, 0.10],  # true 0, pred 0, conf 0.70 -> bin 10
        [0.30, 0.55, 0.15],  # true 0, pred 1, conf 0.55 -> bin 8
        [0.20, 0.70, 0.10],  # true 1, pred 1, conf 0.70 -> bin 10
        [0.05, 0.90, 0.05],  # true 1, pred 1, conf 0.90 -> bin 13
        [0.05, 0.05, 0.90],  # true 2, pred 2, conf 0.90 -> bin 13
        [0.50, 0.10, 0.40],  # true 2, pred 0, conf 0.50 -> bin 7
    ]
)
HAND_TARGETS = np.array([0, 0, 1, 1, 2, 2])


def _random_case(n: int = 300, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Informative but imperfect probabilities with every class present."""
    rng = np.random.default_rng(seed)
    targets = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    logits = rng.normal(0.0, 1.0, (n, k))
    logits[np.arange(n), targets] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, targets


def test_hand_example_per_class_and_macro() -> None:
    # Confusion matrix (rows true, cols pred): [[1, 1, 0], [0, 2, 0], [1, 0, 1]].
    m = classification_metrics(HAND_PROBS, HAND_TARGETS, NAMES3)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["n"] == 6

    precision = [1 / 2, 2 / 3, 1 / 1]  # TP / predicted: 1/2, 2/3, 1/1
    recall = [1 / 2, 2 / 2, 1 / 2]  # TP / support
    f1 = [0.5, 0.8, 2 / 3]  # 2PR/(P+R): 0.5; (4/3)/(5/3); 1/1.5
    specificity = [3 / 4, 3 / 4, 4 / 4]  # TN / (TN + FP), 4 negatives each
    auroc = [7 / 8, 1.0, 1.0]  # class 0: positive 0.3 ranks below negative 0.5, 7 of 8 pairs right
    for c, row in enumerate(m["per_class"]):
        assert row["class"] == NAMES3[c]
        assert row["support"] == 2
        assert row["precision"] == pytest.approx(precision[c])
        assert row["recall"] == pytest.approx(recall[c])
        assert row["f1"] == pytest.approx(f1[c])
        assert row["specificity"] == pytest.approx(specificity[c])
        assert row["auroc"] == pytest.approx(auroc[c])

    assert m["acc"] == pytest.approx(4 / 6)
    assert m["balanced_acc"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["macro_precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["macro_recall"] == pytest.approx(2 / 3)
    assert m["macro_specificity"] == pytest.approx((0.75 + 0.75 + 1.0) / 3)
    assert m["auroc"] == pytest.approx((7 / 8 + 1 + 1) / 3)
    assert m["nll"] == pytest.approx(-np.log([0.7, 0.3, 0.7, 0.9, 0.9, 0.4]).mean())


def test_hand_example_ece_and_bins() -> None:
    bins = calibration_bins(HAND_PROBS, HAND_TARGETS, n_bins=15)
    count = np.array(bins["count"])
    assert count.sum() == 6
    assert {i: int(c) for i, c in enumerate(count) if c} == {7: 1, 8: 1, 10: 2, 13: 2}
    assert bins["accuracy"][10] == 1.0 and bins["confidence"][10] == pytest.approx(0.7)
    assert bins["accuracy"][8] == 0.0 and bins["confidence"][8] == pytest.approx(0.55)
    assert bins["center"][0] == pytest.approx(1 / 30)
    # ECE = sum(count/N * |acc - conf|) = (2*0.3 + 0.55 + 2*0.1 + 0.5) / 6
    ece = classification_metrics(HAND_PROBS, HAND_TARGETS, NAMES3)["ece"]
    assert ece == pytest.approx(1.85 / 6)


def test_confidence_one_goes_to_last_bin() -> None:
    probs = np.array([[1.0, 0.0], [0.0, 1.0]])
    bins = calibration_bins(probs, np.array([0, 0]), n_bins=10)
    assert bins["count"][-1] == 2.0
    assert bins["accuracy"][-1] == 0.5


def test_matches_sklearn_on_random_data() -> None:
    probs, targets = _random_case()
    names = [f"c{i}" for i in range(probs.shape[1])]
    m = classification_metrics(probs, targets, names)
    pred = probs.argmax(axis=1)
    assert m["acc"] == pytest.approx(accuracy_score(targets, pred))
    assert m["balanced_acc"] == pytest.approx(balanced_accuracy_score(targets, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(targets, pred, average="macro"))
    assert m["macro_precision"] == pytest.approx(precision_score(targets, pred, average="macro"))
    assert m["macro_recall"] == pytest.approx(recall_score(targets, pred, average="macro"))
    assert m["auroc"] == pytest.approx(roc_auc_score(targets, probs, multi_class="ovr"))
    assert m["nll"] == pytest.approx(log_loss(targets, probs))
    assert m["confusion_matrix"] == confusion_matrix(targets, pred).tolist()
    per_class_f1 = f1_score(targets, pred, average=None)
    assert [r["f1"] for r in m["per_class"]] == pytest.approx(per_class_f1.tolist())


def test_per_class_scores_match_sklearn_on_random_data() -> None:
    probs, targets = _random_case(k=6, seed=3)
    m = classification_metrics(probs, targets, [f"c{i}" for i in range(6)])
    pred = probs.argmax(axis=1)
    rows = m["per_class"]
    assert [r["precision"] for r in rows] == pytest.approx(precision_score(targets, pred, average=None).tolist())
    assert [r["recall"] for r in rows] == pytest.approx(recall_score(targets, pred, average=None).tolist())
    assert [r["support"] for r in rows] == np.bincount(targets, minlength=6).tolist()
    # Specificity of class c is the recall of "not c" in the one-vs-rest problem.
    specificity = [recall_score(targets != c, pred != c) for c in range(6)]
    assert [r["specificity"] for r in rows] == pytest.approx(specificity)
    assert m["macro_specificity"] == pytest.approx(np.mean(specificity))
    assert [r["auroc"] for r in rows] == pytest.approx([roc_auc_score(targets == c, probs[:, c]) for c in range(6)])


def test_class_predicted_but_absent_counts_in_macro_but_not_in_balanced_acc() -> None:
    # Class 2 is never true but predicted once: its false positive lowers macro precision/recall/F1 (sklearn's
    # label set), while balanced accuracy averages recall over the classes present only (sklearn again).
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    targets = np.array([0, 0, 1, 1])
    pred = probs.argmax(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the predicted-but-absent class
        ref_balanced = balanced_accuracy_score(targets, pred)
        ref = {
            "macro_precision": precision_score(targets, pred, average="macro", zero_division=0),
            "macro_recall": recall_score(targets, pred, average="macro", zero_division=0),
            "macro_f1": f1_score(targets, pred, average="macro", zero_division=0),
        }
    m = classification_metrics(probs, targets, NAMES3)
    assert m["balanced_acc"] == pytest.approx(ref_balanced) == pytest.approx(0.75)
    for key, value in ref.items():
        assert m[key] == pytest.approx(value), key
    assert m["macro_recall"] == pytest.approx(0.5)  # (1/2 + 1 + 0) / 3: class 2 counts with recall 0
    row = m["per_class"][2]
    assert (row["support"], row["precision"], row["recall"], row["f1"]) == (0, 0.0, 0.0, 0.0)
    assert row["specificity"] == pytest.approx(3 / 4) and row["auroc"] is None


def test_scores_are_written_without_float32_noise() -> None:
    m = classification_metrics(HAND_PROBS, HAND_TARGETS, NAMES3)
    assert m["per_class"][1]["precision"] == 0.6666667  # not 0.6666666865348816
    assert m["acc"] == 0.6666667 and m["per_class"][0]["auroc"] == 0.875


def test_ece_matches_torchmetrics() -> None:
    probs, targets = _random_case(seed=1)
    ours = classification_metrics(probs, targets, [str(i) for i in range(probs.shape[1])])["ece"]
    ref = multiclass_calibration_error(
        torch.from_numpy(probs), torch.from_numpy(targets), num_classes=probs.shape[1], n_bins=15
    )
    assert ours == pytest.approx(float(ref), abs=1e-6)


def test_ece_folds_confidence_one_into_the_last_bin_where_torchmetrics_adds_a_bin() -> None:
    # Why the ECE is binned here and not by MulticlassCalibrationError: torchmetrics gives a confidence of
    # exactly 1.0 a 16th bin of its own. Here the 1.0 (right) and the 0.95 (wrong) share the last bin:
    # |1/2 - 0.975| * 2/3 + |1 - 0.7| * 1/3; torchmetrics: (|1 - 1| + |0 - 0.95| + |1 - 0.7|) / 3.
    probs = np.array([[1.0, 0.0], [0.95, 0.05], [0.7, 0.3]])
    targets = np.array([0, 1, 0])
    ours = classification_metrics(probs, targets, ["x", "y"])["ece"]
    assert ours == pytest.approx(0.475 * 2 / 3 + 0.3 / 3)
    ref = multiclass_calibration_error(torch.from_numpy(probs), torch.from_numpy(targets), num_classes=2, n_bins=15)
    assert float(ref) == pytest.approx((0.95 + 0.3) / 3, abs=1e-6)


def test_roc_curves_match_sklearn_and_mark_undefined() -> None:
    probs, targets = _random_case(k=4, seed=2)
    curves = roc_curves(probs, targets, 4)
    for c, (fpr, tpr, a) in curves.items():
        assert fpr[0] == 0.0 and tpr[-1] == 1.0
        assert a == pytest.approx(roc_auc_score(targets == c, probs[:, c]))
    # Class 3 never occurs: no positives, so no curve.
    fpr, tpr, a = roc_curves(probs, np.minimum(targets, 2), 4)[3]
    assert a is None and fpr.size == 0 and tpr.size == 0


def test_torch_inputs_give_same_result() -> None:
    expected = classification_metrics(HAND_PROBS, HAND_TARGETS, NAMES3)
    got = classification_metrics(torch.tensor(HAND_PROBS, dtype=torch.float64), torch.tensor(HAND_TARGETS), NAMES3)
    assert got == expected
    low = classification_metrics(torch.tensor(HAND_PROBS, dtype=torch.float32), torch.tensor(HAND_TARGETS), NAMES3)
    assert low["acc"] == expected["acc"] and low["nll"] == pytest.approx(expected["nll"], rel=1e-5)


def _assert_finite_json(m: dict) -> None:
    json.dumps(m, allow_nan=False)  # raises on NaN / inf / numpy scalars
    for key in ("acc", "balanced_acc", "macro_f1", "macro_precision", "macro_recall", "macro_specificity", "nll"):
        assert np.isfinite(m[key]), key


def test_single_class_present_is_finite_without_warnings() -> None:
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.9, 0.05, 0.05]])
    targets = np.zeros(4, dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(probs, targets, NAMES3)
        bins = calibration_bins(probs, targets)
    _assert_finite_json(m)
    assert sum(bins["count"]) == 4
    assert m["auroc"] is None
    assert all(r["auroc"] is None for r in m["per_class"])  # class 0 has no negatives, 1 and 2 no positives
    assert m["balanced_acc"] == pytest.approx(3 / 4)  # only class 0 is present in targets
    # Active classes: 0 (true) and 1 (predicted once, all wrong); class 2 is absent from both.
    assert m["macro_f1"] == pytest.approx(f1_score(targets, probs.argmax(1), average="macro"))
    assert m["per_class"][0]["specificity"] == 0.0  # no negatives: 0/0 -> 0.0 by convention


def test_class_never_predicted_scores_zero() -> None:
    # Class 2 is present but never predicted: precision 0/0 -> 0, recall 0, F1 0; macro still over all 3.
    probs = HAND_PROBS.copy()
    probs[4] = [0.1, 0.8, 0.1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(probs, HAND_TARGETS, NAMES3)
    _assert_finite_json(m)
    row = m["per_class"][2]
    assert (row["precision"], row["recall"], row["f1"]) == (0.0, 0.0, 0.0)
    assert row["specificity"] == 1.0
    pred = probs.argmax(1)
    assert m["macro_f1"] == pytest.approx(f1_score(HAND_TARGETS, pred, average="macro", zero_division=0))
    assert m["balanced_acc"] == pytest.approx(balanced_accuracy_score(HAND_TARGETS, pred))
    assert m["auroc"] is not None


def test_class_absent_from_targets_and_predictions_is_left_out_of_macro() -> None:
    # A 4th class that nobody has and nobody predicts must not pull macro scores down by a quarter.
    probs = np.hstack([HAND_PROBS * 0.99, np.full((6, 1), 0.01)])
    m4 = classification_metrics(probs, HAND_TARGETS, [*NAMES3, "d"])
    m3 = classification_metrics(HAND_PROBS, HAND_TARGETS, NAMES3)
    for key in ("balanced_acc", "macro_f1", "macro_precision", "macro_recall"):
        assert m4[key] == pytest.approx(m3[key]), key
    assert m4["auroc"] is None  # undefined for "d": no positives
    assert m4["per_class"][3]["support"] == 0


def test_argmax_ties_go_to_lowest_index() -> None:
    m = classification_metrics(np.array([[0.5, 0.5], [0.5, 0.5]]), np.array([0, 1]), ["x", "y"])
    assert m["confusion_matrix"] == [[1, 0], [1, 0]]


@pytest.mark.parametrize(
    ("probs", "targets", "names", "match"),
    [
        (HAND_PROBS * 5, HAND_TARGETS, NAMES3, "logits"),
        (HAND_PROBS * 0.5, HAND_TARGETS, NAMES3, "sum to 1"),
        (HAND_PROBS, HAND_TARGETS[:5], NAMES3, "6 rows"),
        (HAND_PROBS, HAND_TARGETS + 1, NAMES3, r"\[0, 2\]"),
        (HAND_PROBS, HAND_TARGETS, ["a", "b"], "3 columns but there are 2 classes"),
        (HAND_PROBS[0], HAND_TARGETS, NAMES3, r"shape \(N, K\)"),
        (np.zeros((0, 3)), np.zeros(0, dtype=int), NAMES3, "zero samples"),
        (HAND_PROBS, HAND_TARGETS + 0.5, NAMES3, "integer"),
    ],
)
def test_bad_input_is_a_clear_error(probs: np.ndarray, targets: np.ndarray, names: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        classification_metrics(probs, targets, names)
