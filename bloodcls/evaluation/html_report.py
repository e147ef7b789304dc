"""``report.html``: one self-contained page per ``bloodcls test`` (images inline as base64, inline CSS, no script,
no network) built from the files the test report wrote, plus provenance and the CAM galleries."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bloodcls.evaluation.calibration_report import COVERAGE_PNG, RELIABILITY_BEFORE_AFTER_PNG
from bloodcls.evaluation.cam_gallery import Gallery
from bloodcls.evaluation.html_page import array_img, esc, figure_img, file_img, new_figure, note, page, pct, table
from bloodcls.evaluation.html_provenance import data_section, find_file, fit_run_dir, read_json, run_section
from bloodcls.evaluation.html_training import pseudo_label_section
from bloodcls.io import write_text

HTML_REPORT = "report.html"
# The calibration step's files and metrics.json key; each panel is shown when its file / key exists.
CALIBRATION_KEY = "calibration"
RELIABILITY_PNG = "calibration.png"
HEADLINE = (
    ("n", "Images", None),
    ("acc", "Accuracy", pct),
    ("balanced_acc", "Balanced accuracy", pct),
    ("macro_f1", "Macro-F1", pct),
    ("auroc", "AUROC (macro, one-vs-rest)", pct),
    ("nll", "NLL", lambda v: f"{float(v):.4f}"),
    ("ece", "ECE (15 bins)", pct),
    ("brier", "Brier score", lambda v: f"{float(v):.4f}"),
)
MAX_PAIR_HEIGHT = 160  # gallery pairs of large images are shrunk: 32 of them must not make the page heavy


def metrics_table(metrics: dict[str, Any]) -> str:
    rows = []
    for key, label, fmt in HEADLINE:
        if metrics.get(key) is not None or key in ("auroc",):
            value = metrics.get(key)
            rows.append((label, "n/a" if value is None else (fmt(value) if fmt else value)))
    return table(["metric", "value"], rows)


def confusion_table(cm: np.ndarray, names: Sequence[str]) -> str:
    """Counts with the row percentage (share of the true class) in every cell, shaded by that percentage."""
    support = cm.sum(axis=1)
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    body = []
    for r, name in enumerate(names):
        cells = []
        for c in range(len(names)):
            share = cm[r, c] / support[r] if support[r] else 0.0
            alpha = 0.08 + 0.8 * share if cm[r, c] else 0.0
            style = f' style="background: rgba(47, 109, 181, {alpha:.2f})' + ('; color: #fff"' if share > 0.55 else '"')
            css = ' class="diag"' if r == c else ""
            cells.append(f"<td{css}{style}>{int(cm[r, c])}<br><small>{100 * share:.1f}%</small></td>")
        body.append(f'<tr><th class="l">{esc(name)}</th>{"".join(cells)}<td>{int(support[r])}</td></tr>')
    return (
        f'<table><thead><tr><th class="l">true \\ predicted</th>{head}<th>support</th></tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def per_class_table(metrics: dict[str, Any]) -> str:
    keys = ("precision", "recall", "f1", "specificity", "auroc")
    rows = [[row["class"], row["support"], *(pct(row.get(k)) for k in keys)] for row in metrics["per_class"]]
    return table(["class", "support", *keys], rows)


def calibration_table(calibration: dict[str, Any]) -> str:
    """metrics.json's calibration entry: a metric x (before, after, ...) table when its values are dicts of numbers,
    else one row per key."""
    columns = [k for k, v in calibration.items() if isinstance(v, dict)]
    if columns:
        metric_names = list(dict.fromkeys(m for c in columns for m in calibration[c]))
        rows = [[m, *(_value(calibration[c].get(m)) for c in columns)] for m in metric_names]
        scalar = [(k, _value(v)) for k, v in calibration.items() if not isinstance(v, dict)]
        return table(["metric", *columns], rows) + (table(["setting", "value"], scalar, 2) if scalar else "")
    return table(["setting", "value"], [(k, _value(v)) for k, v in calibration.items()], 2)


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def read_predictions(path: Path | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(confidence, correct) per image of test_predictions.csv, or None."""
    if path is None or not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None
    confidence = np.array([float(r["confidence"]) for r in rows])
    correct = np.array([r["label"] == r["pred"] for r in rows])
    return confidence, correct


def coverage_curve(confidence: np.ndarray, correct: np.ndarray) -> str:
    """Accuracy of the images kept when the least confident are referred to a person, against the share kept."""
    order = np.argsort(-confidence, kind="stable")
    kept = np.arange(1, len(order) + 1)
    accuracy = np.cumsum(correct[order]) / kept
    fig = new_figure(6.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(kept / len(order), accuracy, color="tab:blue")
    ax.set_xlabel("coverage (share of images kept, most confident first)")
    ax.set_ylabel("accuracy on the kept images")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title("Accuracy vs coverage")
    return figure_img(fig, "accuracy vs coverage curve")


def _small(pair: np.ndarray) -> np.ndarray:
    if pair.shape[0] <= MAX_PAIR_HEIGHT:
        return pair
    width = round(pair.shape[1] * MAX_PAIR_HEIGHT / pair.shape[0])
    return np.asarray(Image.fromarray(pair).resize((width, MAX_PAIR_HEIGHT), Image.Resampling.BILINEAR))


def gallery_section(gallery: Gallery | None, names: Sequence[str]) -> str:
    if gallery is None:
        return note("The CAM gallery is off for this run (--report.cam_gallery false).")
    if gallery.message:
        return note(gallery.message, warn=True)
    parts = [
        note(
            "Each pair: the test image and its Grad-CAM for the predicted class (red: the regions that raised that "
            "class's score). Per class, the most confident correct cells and the most confident mistakes."
            + (f" Cells {gallery.scope}." if gallery.scope else "")
        )
    ]
    for k, name in enumerate(names):
        for kind, title in (("correct", "most confident correct"), ("mistake", "most confident mistakes")):
            cells = [c for c in gallery.cells if c.label == k and c.kind == kind]
            if not cells:
                continue
            figures = []
            for c in cells:
                caption = f"true {names[c.label]} → predicted {names[c.pred]} ({100 * c.confidence:.1f}%)"
                figures.append(
                    f"<figure>{array_img(_small(c.pair), caption)}<figcaption>{esc(caption)}"
                    f"<br>{esc(c.sample)}</figcaption></figure>"
                )
            parts.append(f'<h3>{esc(name)}: {title}</h3><div class="gallery">{"".join(figures)}</div>')
    return "\n".join(parts)


def build_test_html(out_dir: Path, gallery: Gallery | None = None, title: str = "bloodcls test report") -> str:
    """The page for the test report files in ``out_dir`` (metrics.json is required; every other file optional)."""
    metrics = read_json(out_dir / "metrics.json")
    if metrics is None:
        raise FileNotFoundError(f"{out_dir / 'metrics.json'}: no test report to render")
    names = [str(row["class"]) for row in metrics["per_class"]]
    run_info = metrics.get("run") or {}
    run_dir = fit_run_dir(out_dir, run_info.get("ckpt_path"))
    sections: list[tuple[str, str, str]] = [
        ("metrics", "Metrics", metrics_table(metrics)),
        (
            "confusion",
            "Confusion matrix",
            confusion_table(np.asarray(metrics["confusion_matrix"]), names)
            + note("Each cell: count, and below it the share of the true class (row); the diagonal is the recall."),
        ),
        ("per-class", "Per class", per_class_table(metrics)),
    ]
    roc = file_img(out_dir / "roc.png", "ROC curves")
    if roc:
        sections.append(("roc", "ROC", roc))
    reliability = [file_img(out_dir / RELIABILITY_BEFORE_AFTER_PNG, "reliability before and after calibration")]
    if not reliability[0]:
        reliability = [file_img(out_dir / RELIABILITY_PNG, "reliability diagram", "plot narrow")]
    if isinstance(metrics.get(CALIBRATION_KEY), dict):
        reliability.insert(0, calibration_table(metrics[CALIBRATION_KEY]))
    if any(reliability):
        sections.append(("calibration", "Calibration", "\n".join(reliability)))
    coverage = file_img(out_dir / COVERAGE_PNG, "accuracy vs coverage", "plot narrow")
    predictions = read_predictions(out_dir / "test_predictions.csv")
    if not coverage and predictions is not None:
        coverage = coverage_curve(*predictions)
    if coverage:
        sections.append(("coverage", "Coverage (refer the least confident to a person)", coverage))
    sections.append(("cams", "CAM galleries", gallery_section(gallery, names)))
    ssl = pseudo_label_section(find_file("metrics.csv", run_dir), names)
    if ssl is not None:
        sections.append(("pseudo-labels", "Pseudo-labels over training", ssl))
    data_report = read_json(find_file("data_report.json", run_dir, out_dir))
    sections.append(("data", "Data", data_section(data_report)))
    sections.append(("run", "Run", run_section(run_info, find_file("config.yaml", run_dir, out_dir))))
    subtitle = f"{metrics['n']} test images, {len(names)} classes; run {run_dir}"
    return page(title, subtitle, sections)


def write_test_html(out_dir: str | Path, gallery: Gallery | None = None) -> Path:
    """Write ``report.html`` into ``out_dir`` (atomically) and return its path."""
    return write_text(Path(out_dir) / HTML_REPORT, build_test_html(Path(out_dir), gallery))
