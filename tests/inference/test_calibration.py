"""Temperature scaling, NLL / Brier / ECE and the referral threshold against brute-force references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bloodcls.evaluation.metrics import classification_metrics
from bloodcls.inference.calibration import (
    T_MAX,
    T_MIN,
    brier_score,
    calibration_summary,
    choose_review_threshold,
    coverage_curve,
    ece,
    fit_temperature,
    nll,
    referral_at,
    temperature_nll,
    tempered_probabilities,
)


def _overconfident(n: int = 400, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose argmax is right ~70 % of the time but scaled to look certain: the fitted T must be > 1."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(0.0, 1.0, (n, k))
    logits[np.arange(n), labels] += 1.5
    return 6.0 * logits, labels


def _grid_minimum(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Brute force: the best of 161 log-spaced temperatures over the whole range, then of 201 around it."""
    coarse = np.linspace(math.log(T_MIN), math.log(T_MAX), 161)
    i = int(np.argmin([temperature_nll(logits, labels, float(math.exp(x))) for x in coarse]))
    step = coarse[1] - coarse[0]
    fine = np.exp(np.linspace(coarse[i] - step, coarse[i] + step, 201))
    values = [temperature_nll(logits, labels, float(t)) for t in fine]
    j = int(np.argmin(values))
    return float(fine[j]), float(values[j])


def test_fitted_temperature_is_the_nll_minimum_of_a_brute_force_grid() -> None:
    logits, labels = _overconfident()
    t = fit_temperature(logits, labels)
    t_grid, nll_grid = _grid_minimum(logits, labels)
    assert t > 1.5  # over-confident logits are softened (a multiply-instead-of-divide bug would give T < 1)
    assert t == pytest.approx(t_grid, rel=5e-3)
    assert temperature_nll(logits, labels, t) <= nll_grid + 1e-9


def test_temperature_divides_the_logits() -> None:
    logits = np.array([[2.0, 0.0, -2.0]])
    expected = torch.tensor(logits / 4.0).softmax(dim=1).numpy()
    np.testing.assert_allclose(tempered_probabilities(logits, 4.0), expected, rtol=1e-12)
    # The NLL at T is -log of that probability of the true class.
    assert temperature_nll(logits, np.array([1]), 4.0) == pytest.approx(-math.log(expected[0, 1]))


def test_an_underconfident_model_gets_a_temperature_below_one() -> None:
    logits, labels = _overconfident(seed=3)
    t = fit_temperature(logits / 40.0, labels)
    assert t < 1.0
    assert t == pytest.approx(_grid_minimum(logits / 40.0, labels)[0], rel=5e-3)


def test_temperature_fit_over_tta_views_minimises_the_nll_of_the_averaged_softmax() -> None:
    logits, labels = _overconfident(n=200)
    rng = np.random.default_rng(1)
    views = np.stack([logits + rng.normal(0, 3.0, logits.shape) for _ in range(4)])  # (V, N, K)
    t = fit_temperature(views, labels)
    t_grid, nll_grid = _grid_minimum(views, labels)
    assert t == pytest.approx(t_grid, rel=5e-3)
    assert temperature_nll(views, labels, t) <= nll_grid + 1e-9
    # Averaging softmaxes is not the softmax of averaged logits: the fit must use the former.
    assert not math.isclose(t, fit_temperature(views.mean(axis=0), labels), rel_tol=1e-3)


def test_a_perfectly_separated_validation_set_keeps_a_finite_temperature() -> None:
    logits = np.array([[5.0, 0.0], [0.0, 5.0]] * 10)
    labels = np.array([0, 1] * 10)
    t = fit_temperature(logits, labels)
    assert T_MIN <= t < 0.2  # sharper is always better here; the search stops where the NLL is flat at ~0
    assert temperature_nll(logits, labels, t) < 1e-9


def test_nll_brier_and_ece_against_hand_computed_values() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    labels = np.array([0, 1])
    assert nll(probs, labels) == pytest.approx(-(math.log(0.7) + math.log(0.3)) / 2)
    # Brier: per image, summed over classes; then the mean over images (not over images x classes).
    first = 0.3**2 + 0.2**2 + 0.1**2
    second = 0.1**2 + 0.7**2 + 0.6**2
    assert brier_score(probs, labels) == pytest.approx((first + second) / 2)
    # ECE with both cells in different bins: |1 - 0.7| and |0 - 0.6|, each weighing a half.
    assert ece(probs, labels) == pytest.approx((0.3 + 0.6) / 2)
    assert ece(probs, labels) == pytest.approx(classification_metrics(probs, labels, ["a", "b", "c"])["ece"])
    summary = calibration_summary(probs, labels)
    assert summary == pytest.approx({"acc": 0.5, "nll": nll(probs, labels), "ece": 0.45, "brier": (first + second) / 2})


def test_temperature_scaling_lowers_nll_and_ece_of_overconfident_logits() -> None:
    logits, labels = _overconfident()
    before = calibration_summary(tempered_probabilities(logits, 1.0), labels)
    after = calibration_summary(tempered_probabilities(logits, fit_temperature(logits, labels)), labels)
    assert after["nll"] < before["nll"] and after["ece"] < before["ece"] and after["brier"] < before["brier"]
    assert after["acc"] == before["acc"]  # temperature never changes a decision


def _probs(conf: list[float], correct: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Two-class probabilities with the given top confidence; the label is the argmax when ``correct``."""
    probs = np.array([[c, 1.0 - c] for c in conf])
    labels = np.array([0 if ok else 1 for ok in correct])
    return probs, labels


def test_coverage_curve_accepts_ties_together() -> None:
    probs, labels = _probs([0.9, 0.8, 0.8, 0.6], [True, True, False, True])
    curve = coverage_curve(probs, labels)
    np.testing.assert_allclose(curve.threshold, [0.9, 0.8, 0.6])
    np.testing.assert_allclose(curve.coverage, [0.25, 0.75, 1.0])
    np.testing.assert_allclose(curve.accuracy, [1.0, 2 / 3, 0.75])


def test_review_threshold_is_the_largest_coverage_that_reaches_the_target() -> None:
    # Accuracy of the top-k: 1, 1, 2/3, 3/4, 4/5, 5/6 -- 0.8 is first reached at k=2 and again at k=5 and 6;
    # the threshold with the most coverage (k=6, all cells) is the one to choose, not the first one found.
    probs, labels = _probs([0.99, 0.95, 0.9, 0.8, 0.7, 0.6], [True, True, False, True, True, True])
    choice = choose_review_threshold(probs, labels, 0.8)
    assert choice is not None
    assert choice.threshold == pytest.approx(0.6) and choice.coverage == 1.0 and choice.n_accepted == 6
    assert choice.accuracy == pytest.approx(5 / 6)
    choice = choose_review_threshold(probs, labels, 0.9)
    assert choice is not None
    assert choice.threshold == pytest.approx(0.95) and choice.coverage == pytest.approx(2 / 6)
    assert choice.accuracy == 1.0 and choice.n == 6


def test_review_threshold_reaches_an_exact_target_despite_float_rounding() -> None:
    conf = [0.99 - i * 1e-3 for i in range(100)]
    probs, labels = _probs(conf, [True] * 99 + [False])
    choice = choose_review_threshold(probs, labels, 0.99)
    assert choice is not None and choice.n_accepted == 100  # 99/100 counts as 0.99


def test_an_unreachable_target_gives_none() -> None:
    probs, labels = _probs([0.9, 0.8], [False, True])
    assert choose_review_threshold(probs, labels, 0.99) is None
    with pytest.raises(ValueError, match="target_accuracy"):
        choose_review_threshold(probs, labels, 1.5)


def test_referral_at_a_stored_threshold() -> None:
    probs, labels = _probs([0.9, 0.8, 0.7, 0.6], [True, False, True, False])
    got = referral_at(probs, labels, 0.7)
    assert got["coverage"] == 0.75 and got["n_referred"] == 1 and got["n_accepted"] == 3
    assert got["accuracy"] == pytest.approx(2 / 3) and got["accuracy_of_referred"] == 0.0
    assert referral_at(probs, labels, 0.95)["accuracy"] is None
