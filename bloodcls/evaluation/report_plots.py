"""The test report's figures: confusion matrix, one-vs-rest ROC and reliability diagram.

Plots are drawn on ``matplotlib.figure.Figure`` objects with an explicit Agg canvas instead of through
``pyplot``: no display is needed, no global backend is switched under a user's notebook, and no figure is
left registered in pyplot's global state when a long test run writes many reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import auc, roc_curve

from bloodcls.evaluation.metrics import calibration_bins, roc_curves
from bloodcls.io import atomic_path

DPI = 150


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas
    return fig


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], path: Path) -> None:
    """Counts and row-normalised (% of the true class, i.e. recall on the diagonal) side by side."""
    k = len(class_names)
    support = cm.sum(axis=1, keepdims=True)
    norm = np.divide(100.0 * cm, support, out=np.zeros(cm.shape), where=support > 0)  # (K, K)
    cell = 0.62  # inches per cell keeps 8 classes with 2-3 digit counts legible
    side = max(3.5, cell * k)
    label_room = 0.09 * max(len(n) for n in class_names) + 1.2  # long names are rotated below the axis
    fig = new_figure(2 * (side + label_room) + 1.2, side + label_room + 0.6)
    font = 9.0  # cells have a fixed size (the figure grows with K), so "100.0" always fits at 9 pt
    panels = [(cm, "Counts", "d"), (norm, "Row-normalised (% of true class)", ".1f")]
    for i, (values, title, fmt) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        vmax = 100.0 if i == 1 else max(float(values.max()), 1.0)
        im = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        for r in range(k):
            for c in range(k):
                v = values[r, c]
                if v == 0:  # zeros are noise for the eye; the colour already says "empty"
                    continue
                ax.text(
                    c,
                    r,
                    format(int(v) if fmt == "d" else v, fmt),
                    ha="center",
                    va="center",
                    fontsize=font,
                    color="white" if v > 0.55 * vmax else "black",
                )
        ax.set_xticks(range(k), class_names, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(k), class_names)
        ax.set_xlabel("Predicted")
        ax.set_ylabel("True")
        ax.set_title(title)
    fig.suptitle(f"Confusion matrix (n = {int(cm.sum())})")
    save_figure(fig, path)


def class_colors(k: int) -> list[Any]:
    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(k)]


def plot_roc(
    probs: np.ndarray,
    targets: np.ndarray,
    class_names: Sequence[str],
    macro_auroc: float | None,
    path: Path,
) -> None:
    """One-vs-rest ROC per class plus micro/macro averages; right panel zooms on the top-left corner."""
    k = len(class_names)
    curves = roc_curves(probs, targets, k)
    onehot = np.eye(k, dtype=bool)[targets]  # (N, K)
    micro_fpr, micro_tpr, _ = roc_curve(onehot.ravel(), probs.ravel())
    defined = [c for c in range(k) if curves[c][2] is not None]
    grid = np.linspace(0.0, 1.0, 501)
    # Macro curve: mean TPR of the defined classes on a common FPR grid (as in sklearn's ROC example).
    macro_tpr = np.mean([np.interp(grid, *curves[c][:2]) for c in defined], axis=0) if defined else None
    if macro_auroc is not None:
        macro_label = f"macro-average (AUC {macro_auroc:.3f})"
    elif defined:
        mean_auc = float(np.mean([curves[c][2] for c in defined]))
        macro_label = f"macro-average of {len(defined)}/{k} classes (AUC {mean_auc:.3f})"
    else:
        macro_label = ""

    fig = new_figure(13.0, 6.0)
    colors = class_colors(k)
    for i, (xlim, ylim, title) in enumerate(
        [((0.0, 1.0), (0.0, 1.0), "ROC, one-vs-rest"), ((0.0, 0.2), (0.8, 1.0), "Zoom: top-left corner")]
    ):
        ax = fig.add_subplot(1, 2, i + 1)
        for c in range(k):
            fpr, tpr, a = curves[c]
            if a is None:
                ax.plot([], [], color=colors[c], label=f"{class_names[c]} (AUC n/a)")
                continue
            ax.plot(fpr, tpr, color=colors[c], lw=1.4, label=f"{class_names[c]} (AUC {a:.3f})")
        ax.plot(
            micro_fpr,
            micro_tpr,
            color="black",
            ls="--",
            lw=1.6,
            label=f"micro-average (AUC {auc(micro_fpr, micro_tpr):.3f})",
        )
        if macro_tpr is not None:
            ax.plot(grid, macro_tpr, color="dimgray", ls=":", lw=2.0, label=macro_label)
        ax.plot([0, 1], [0, 1], color="lightgray", lw=1.0, ls="-")
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.set_xlabel("False positive rate (1 - specificity)")
        ax.set_ylabel("True positive rate (sensitivity)")
        ax.set_title(title)
        if i == 1:
            ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=9, frameon=False)
    save_figure(fig, path)


def plot_calibration(probs: np.ndarray, targets: np.ndarray, ece: float, path: Path) -> None:
    """Reliability diagram (accuracy per confidence bin vs the diagonal) over a histogram of confidences."""
    bins = calibration_bins(probs, targets)
    center = np.asarray(bins["center"])
    acc = np.asarray(bins["accuracy"])
    conf = np.asarray(bins["confidence"])
    count = np.asarray(bins["count"])
    width = 1.0 / center.size
    filled = count > 0

    fig = new_figure(6.0, 7.0)
    gs = fig.add_gridspec(2, 1, height_ratios=[3, 1])
    ax = fig.add_subplot(gs[0])
    ax.set_axisbelow(True)
    ax.bar(
        center[filled],
        acc[filled],
        width=width,
        color="tab:blue",
        alpha=0.75,
        edgecolor="black",
        lw=0.6,
        label="Accuracy",
    )
    # Unfilled hatched box from accuracy to mean confidence: its height is the bin's calibration gap, above
    # the blue bar when over-confident and inside it when under-confident, without hiding the bar's colour.
    ax.bar(
        center[filled],
        conf[filled] - acc[filled],
        bottom=acc[filled],
        width=width,
        fill=False,
        edgecolor="tab:red",
        hatch="///",
        lw=0.8,
        label="Gap to mean confidence",
    )
    # A tick at the mean confidence makes the gap's direction (over- vs under-confident) unambiguous.
    ax.plot(
        center[filled],
        conf[filled],
        ls="none",
        marker="_",
        markersize=22,
        mew=2.0,
        color="black",
        label="Mean confidence",
    )
    ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=1.0, label="Perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Accuracy")
    fig.suptitle(f"Reliability diagram (ECE {100 * ece:.2f}%, {center.size} bins)")
    # Above the axes: any corner inside can hold a tall bar (a lone low-confidence sample that was right).
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01, 1.0, 0.1), ncol=2, mode="expand", fontsize=9)
    ax.grid(alpha=0.3)

    hist = fig.add_subplot(gs[1], sharex=ax)
    hist.bar(center, count / count.sum(), width=width, color="gray", edgecolor="black", lw=0.6)
    hist.set_xlabel("Confidence (max probability)")
    hist.set_ylabel("Share of samples")
    hist.grid(alpha=0.3)
    save_figure(fig, path)


def save_figure(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI)
