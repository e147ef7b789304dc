"""The test report: metrics.json, per-class CSV, confusion matrix / ROC / reliability plots, console table.

Plots are drawn on ``matplotlib.figure.Figure`` objects with an explicit Agg canvas instead of through
``pyplot``: no display is needed, no global backend is switched under a user's notebook, and no figure is
left registered in pyplot's global state when a long test run writes many reports.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table
from sklearn.metrics import auc, roc_curve

from bloodcls.evaluation.calibration_report import CALIBRATION_REPORT_FILES, write_calibration_report
from bloodcls.evaluation.html_report import HTML_REPORT
from bloodcls.evaluation.metrics import (
    ArrayLike,
    _to_numpy,
    calibration_bins,
    classification_metrics,
    roc_curves,
    validate_inputs,
)
from bloodcls.io import atomic_open, atomic_path, path_text, remove_outputs, write_json

PER_CLASS_FIELDS = ("class", "support", "precision", "recall", "f1", "specificity", "auroc")
_DPI = 150
REPORT_FILES = (
    "metrics.json",
    "per_class.csv",
    "confusion_matrix.png",
    "roc.png",
    "calibration.png",
    "test_predictions.csv",
)


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas
    return fig


def _plot_confusion(cm: np.ndarray, class_names: Sequence[str], path: Path) -> None:
    """Counts and row-normalised (% of the true class, i.e. recall on the diagonal) side by side."""
    k = len(class_names)
    support = cm.sum(axis=1, keepdims=True)
    norm = np.divide(100.0 * cm, support, out=np.zeros(cm.shape), where=support > 0)  # (K, K)
    cell = 0.62  # inches per cell keeps 8 classes with 2-3 digit counts legible
    side = max(3.5, cell * k)
    label_room = 0.09 * max(len(n) for n in class_names) + 1.2  # long names are rotated below the axis
    fig = _new_figure(2 * (side + label_room) + 1.2, side + label_room + 0.6)
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
    _save_figure(fig, path)


def _class_colors(k: int) -> list[Any]:
    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(k)]


def _plot_roc(
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

    fig = _new_figure(13.0, 6.0)
    colors = _class_colors(k)
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
    _save_figure(fig, path)


def _plot_calibration(probs: np.ndarray, targets: np.ndarray, ece: float, path: Path) -> None:
    """Reliability diagram (accuracy per confidence bin vs the diagonal) over a histogram of confidences."""
    bins = calibration_bins(probs, targets)
    center = np.asarray(bins["center"])
    acc = np.asarray(bins["accuracy"])
    conf = np.asarray(bins["confidence"])
    count = np.asarray(bins["count"])
    width = 1.0 / center.size
    filled = count > 0

    fig = _new_figure(6.0, 7.0)
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
    _save_figure(fig, path)


def _save_figure(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=_DPI)


def _write_per_class_csv(per_class: list[dict[str, Any]], path: Path) -> None:
    with atomic_open(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PER_CLASS_FIELDS)
        writer.writeheader()
        for row in per_class:
            # An undefined AUROC is an empty cell: "None" would be read back as a string.
            writer.writerow({key: ("" if row[key] is None else row[key]) for key in PER_CLASS_FIELDS})


def _write_predictions_csv(
    probs: np.ndarray, targets: np.ndarray, class_names: Sequence[str], paths: Sequence[str], path: Path
) -> None:
    pred = probs.argmax(axis=1)
    with atomic_open(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "pred", "confidence", *(f"prob_{name}" for name in class_names)])
        for i, p in enumerate(paths):
            writer.writerow(
                [
                    path_text(p),
                    class_names[targets[i]],
                    class_names[pred[i]],
                    f"{probs[i, pred[i]]:.6f}",
                    *(f"{v:.6f}" for v in probs[i]),
                ]
            )


def clear_report(out_dir: str | Path) -> None:
    """Remove the files of an earlier report in ``out_dir`` (before a new test writes its own)."""
    files = (*REPORT_FILES, *CALIBRATION_REPORT_FILES, HTML_REPORT)
    remove_outputs(*(Path(out_dir) / name for name in files))


def write_report(
    out_dir: str | Path,
    probs: ArrayLike,
    targets: ArrayLike,
    class_names: Sequence[str],
    *,
    paths: Sequence[str] | None = None,
    extra: dict[str, Any] | None = None,
    sections: dict[str, Any] | None = None,
    logits: ArrayLike | None = None,
    temperature: float = 1.0,
    review_threshold: float | None = None,
) -> dict[str, Any]:
    """Write the full test report into ``out_dir`` (created if needed) and return what went into metrics.json.

    Files: ``metrics.json`` (:func:`classification_metrics`, ``sections`` as top-level keys, ``extra`` under ``"run"``),
    ``per_class.csv``, ``confusion_matrix.png``, ``roc.png``, ``calibration.png`` and, when ``paths`` is
    given (one per sample, in the order of ``probs``), ``test_predictions.csv`` with class names in the
    ``label`` / ``pred`` columns.

    Calibration and referral (``bloodcls.evaluation.calibration_report``): ``coverage.png`` and metrics.json's
    ``referral`` (coverage and accuracy at ``review_threshold``) always; with the plain ``logits`` of the same samples
    and a ``temperature`` other than 1, metrics.json's ``calibration`` (NLL / ECE / Brier of softmax(logits) and of
    ``probs``) and ``reliability_before_after.png``.
    """
    class_names = [str(c) for c in class_names]
    metrics = classification_metrics(probs, targets, class_names)  # validates before anything is written
    p, t = validate_inputs(probs, targets, len(class_names))
    if paths is not None and len(paths) != t.size:
        raise ValueError(f"paths has {len(paths)} entries but there are {t.size} samples")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clear_report(out)  # no file of an earlier report (e.g. its test_predictions.csv) may sit beside this one
    plain = None if logits is None else _to_numpy(logits, np.float64)
    if plain is not None and plain.shape != p.shape:
        raise ValueError(f"logits has shape {plain.shape} but probs has {p.shape}")
    result = {**metrics, **write_calibration_report(out, p, t, plain, temperature, review_threshold)}
    result.update({**(sections or {}), "run": dict(extra or {})})
    write_json(out / "metrics.json", result)  # Path values in the run info (checkpoint) become strings
    _write_per_class_csv(metrics["per_class"], out / "per_class.csv")
    _plot_confusion(np.asarray(metrics["confusion_matrix"]), class_names, out / "confusion_matrix.png")
    _plot_roc(p, t, class_names, metrics["auroc"], out / "roc.png")
    _plot_calibration(p, t, metrics["ece"], out / "calibration.png")
    if paths is not None:
        _write_predictions_csv(p, t, class_names, paths, out / "test_predictions.csv")
    return result


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def print_report(metrics: dict[str, Any], console: Console | None = None, title: str = "Test report") -> None:
    """Print the headline numbers and the per-class table (percentages, 2 decimals) with rich."""
    # Logs and CI are not terminals; rich would fall back to 80 columns and truncate class names.
    console = console or (Console() if Console().is_terminal else Console(width=110))
    head = Table(title=title, show_header=False, title_justify="left")
    head.add_column("Metric", style="bold")
    head.add_column("Value", justify="right")
    head.add_row("Samples", str(metrics["n"]))
    head.add_row("Accuracy", _pct(metrics["acc"]))
    head.add_row("Balanced accuracy", _pct(metrics["balanced_acc"]))
    head.add_row("Macro-F1", _pct(metrics["macro_f1"]))
    head.add_row("AUROC (macro, one-vs-rest)", _pct(metrics["auroc"]))
    head.add_row("ECE (15 bins)", _pct(metrics["ece"]))
    calibration = metrics.get("calibration")
    if calibration:
        head.add_row("ECE before calibration", _pct(calibration["before"]["ece"]))
        head.add_row("Temperature", f"{calibration['temperature']:.3f}")
    referral = metrics.get("referral") or {}
    if referral.get("review_threshold") is not None:
        head.add_row(f"Accepted (confidence >= {referral['review_threshold']:.3f})", _pct(referral["coverage"]))
        head.add_row("Accuracy of accepted", _pct(referral["accuracy"]))
    console.print(head)

    per = Table(title="Per class", title_justify="left")
    per.add_column("Class", style="bold")
    per.add_column("Support", justify="right")
    for name in ("Precision", "Recall", "F1", "Specificity", "AUROC"):
        per.add_column(name, justify="right")
    for row in metrics["per_class"]:
        per.add_row(
            row["class"],
            str(row["support"]),
            *(_pct(row[key]) for key in ("precision", "recall", "f1", "specificity", "auroc")),
        )
    console.print(per)
