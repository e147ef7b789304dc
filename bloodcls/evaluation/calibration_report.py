"""The test report's calibration and referral parts: NLL / ECE / Brier before and after temperature scaling with the
reliability diagram of both, and the accuracy-vs-coverage curve with the stored review threshold on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bloodcls.evaluation.metrics import calibration_bins
from bloodcls.evaluation.report_plots import new_figure, save_figure
from bloodcls.inference import calibration as C

RELIABILITY_BEFORE_AFTER_PNG = "reliability_before_after.png"  # only when the checkpoint's temperature is not 1
COVERAGE_PNG = "coverage.png"  # always
CALIBRATION_REPORT_FILES = (RELIABILITY_BEFORE_AFTER_PNG, COVERAGE_PNG)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (the "before calibration" probabilities of the plain forward)."""
    x = np.asarray(logits, dtype=np.float64)
    x = np.exp(x - x.max(axis=1, keepdims=True))
    return x / x.sum(axis=1, keepdims=True)


def calibration_section(
    logits: np.ndarray, probs: np.ndarray, targets: np.ndarray, temperature: float
) -> dict[str, Any]:
    """metrics.json's ``calibration``: NLL, ECE, Brier and accuracy of softmax(logits) (``before``) and of the
    reported probabilities (``after``: temperature, and test-time augmentation when on)."""
    return {
        "temperature": float(temperature),
        "before": C.calibration_summary(softmax(logits), targets),
        "after": C.calibration_summary(probs, targets),
    }


def referral_section(probs: np.ndarray, targets: np.ndarray, review_threshold: float | None) -> dict[str, Any]:
    """metrics.json's ``referral``: coverage and accuracy of the accepted cells at the stored threshold
    (``review_threshold`` ``None``: the checkpoint has none, nothing else is reported)."""
    if review_threshold is None:
        return {"review_threshold": None}
    return C.referral_at(probs, targets, review_threshold)


def plot_reliability_before_after(
    before: np.ndarray, after: np.ndarray, targets: np.ndarray, section: dict[str, Any], path: Path
) -> None:
    """Accuracy per confidence bin before and after calibration, against the diagonal, over both histograms."""
    fig = new_figure(6.0, 7.0)
    grid = fig.add_gridspec(2, 1, height_ratios=[3, 1])
    ax = fig.add_subplot(grid[0])
    hist = fig.add_subplot(grid[1], sharex=ax)
    ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=1.0, label="Perfect calibration")
    for probs, key, color, marker in ((before, "before", "tab:red", "o"), (after, "after", "tab:blue", "s")):
        bins = calibration_bins(probs, targets)
        count = np.asarray(bins["count"])
        filled = count > 0
        conf, acc = np.asarray(bins["confidence"])[filled], np.asarray(bins["accuracy"])[filled]
        m = section[key]
        label = f"{key} (ECE {100 * m['ece']:.2f}%, NLL {m['nll']:.3f}, Brier {m['brier']:.3f})"
        # Mean confidence on x: a calibrated bin sits on the diagonal wherever its cells fall inside the bin.
        ax.plot(conf, acc, color=color, marker=marker, lw=1.5, label=label)
        center = np.asarray(bins["center"])
        hist.step(center, count / count.sum(), where="mid", color=color, label=key)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("Mean confidence in bin")
    ax.set_ylabel("Accuracy in bin")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Reliability before / after temperature scaling (T = {section['temperature']:.3f})")
    hist.set_xlabel("Confidence (max probability)")
    hist.set_ylabel("Share of cells")
    hist.grid(alpha=0.3)
    save_figure(fig, path)


def plot_coverage(probs: np.ndarray, targets: np.ndarray, referral: dict[str, Any], path: Path) -> None:
    """Accuracy of the accepted cells against the share accepted (most confident first), with the stored review
    threshold marked when there is one."""
    curve = C.coverage_curve(probs, targets)
    fig = new_figure(6.5, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(np.r_[0.0, curve.coverage], np.r_[curve.accuracy[0], curve.accuracy], color="tab:blue", lw=1.6)
    title = "Accuracy vs coverage (cells accepted from the most confident down)"
    if referral.get("review_threshold") is not None and referral.get("accuracy") is not None:
        cov, acc = referral["coverage"], referral["accuracy"]
        ax.axvline(cov, color="tab:red", ls="--", lw=1.0)
        ax.plot([cov], [acc], "o", color="tab:red", label=f"review threshold {referral['review_threshold']:.3f}")
        ax.annotate(
            f"{100 * cov:.1f}% accepted, {100 * acc:.2f}% accurate",
            (cov, acc),
            textcoords="offset points",
            xytext=(-10, -18),
            ha="right",
            fontsize=8,
        )
        ax.legend(loc="lower left", fontsize=8)
    ax.set_xlim(0, 1.01)
    low = float(curve.accuracy.min())
    ax.set_ylim(max(0.0, low - 0.05), 1.005)
    ax.set_xlabel("Coverage (share of cells accepted)")
    ax.set_ylabel("Accuracy of accepted cells")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def write_calibration_report(
    out: Path,
    probs: np.ndarray,
    targets: np.ndarray,
    logits: np.ndarray | None,
    temperature: float,
    review_threshold: float | None,
) -> dict[str, Any]:
    """Write the coverage plot (always) and the before / after reliability diagram (temperature != 1 and logits
    given); return the metrics.json sections (``referral``, and ``calibration`` when the diagram is drawn)."""
    sections: dict[str, Any] = {"referral": referral_section(probs, targets, review_threshold)}
    plot_coverage(probs, targets, sections["referral"], out / COVERAGE_PNG)
    if logits is not None and temperature != 1.0:
        section = calibration_section(logits, probs, targets, temperature)
        sections["calibration"] = section
        plot_reliability_before_after(softmax(logits), probs, targets, section, out / RELIABILITY_BEFORE_AFTER_PNG)
    return sections
