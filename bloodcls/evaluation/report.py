"""The test report: metrics.json, per-class CSV, confusion matrix / ROC / reliability plots, console table.

The figures are drawn by ``bloodcls.evaluation.report_plots``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bloodcls.evaluation.calibration_report import CALIBRATION_REPORT_FILES, write_calibration_report
from bloodcls.evaluation.html_report import HTML_REPORT
from bloodcls.evaluation.metrics import (
    ArrayLike,
    _to_numpy,
    classification_metrics,
    validate_inputs,
)
from bloodcls.evaluation.report_plots import plot_calibration, plot_confusion, plot_roc
from bloodcls.io import atomic_open, path_text, remove_outputs, write_json

PER_CLASS_FIELDS = ("class", "support", "precision", "recall", "f1", "specificity", "auroc")
REPORT_FILES = (
    "metrics.json",
    "per_class.csv",
    "confusion_matrix.png",
    "roc.png",
    "calibration.png",
    "test_predictions.csv",
)


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
    plot_confusion(np.asarray(metrics["confusion_matrix"]), class_names, out / "confusion_matrix.png")
    plot_roc(p, t, class_names, metrics["auroc"], out / "roc.png")
    plot_calibration(p, t, metrics["ece"], out / "calibration.png")
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
