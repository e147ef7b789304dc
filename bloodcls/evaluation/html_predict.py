"""``predict.html``: the lighter self-contained page of a ``bloodcls predict`` run, from its predictions.csv: counts
per predicted class, the confidence histogram, cells flagged for review, and thumbnails of the least confident."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from bloodcls.evaluation.html_page import array_img, esc, figure_img, new_figure, note, page, table
from bloodcls.io import write_text

PREDICT_HTML = "predict.html"
REVIEW_COLUMN = "needs_review"
LOW_CONFIDENCE_SHOWN = 24
THUMBNAIL = 112


def _flag(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes")


def _thumbnail(path: Path) -> np.ndarray | None:
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        image.thumbnail((THUMBNAIL, THUMBNAIL))
        return np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def _histogram(confidence: np.ndarray, threshold: float | None) -> str:
    fig = new_figure(6.0, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(confidence, bins=[i / 20 for i in range(21)], color="tab:blue", edgecolor="black", lw=0.5)
    if threshold is not None:
        ax.axvline(threshold, color="tab:red", ls="--", label=f"review below {threshold:.3f}")
        ax.legend(fontsize=8)
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("images")
    ax.set_title("Confidence of the predictions")
    return figure_img(fig, "confidence histogram")


def build_predict_html(csv_path: Path, skipped: int = 0, threshold: float | None = None) -> str:
    """The page for a predictions.csv (``path``, ``pred``, ``confidence``[, ``needs_review``], probabilities)."""
    with csv_path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    confidence = np.array([float(r["confidence"]) for r in rows])
    counts = Counter(r["pred"] for r in rows)
    count_rows = [(name, n, f"{100 * n / len(rows):.1f}%") for name, n in counts.most_common()]
    summary: list[tuple[str, object]] = [("images classified", len(rows)), ("images skipped (unreadable)", skipped)]
    if rows and REVIEW_COLUMN in rows[0]:
        flagged = sum(_flag(r[REVIEW_COLUMN]) for r in rows)
        summary.append(("flagged for review (needs_review)", f"{flagged} ({100 * flagged / len(rows):.1f}%)"))
    if len(confidence):
        summary.append(("median confidence", f"{100 * float(np.median(confidence)):.1f}%"))
    sections = [
        ("summary", "Summary", table(["", "value"], summary, 2)),
        ("classes", "Predicted classes", table(["class", "images", "share"], count_rows)),
    ]
    if len(confidence):
        sections.append(("confidence", "Confidence", _histogram(confidence, threshold)))
    order = np.argsort(confidence, kind="stable")[:LOW_CONFIDENCE_SHOWN]
    figures = []
    for i in order.tolist():
        file = rows[i]["path"]
        pixels = _thumbnail(Path(file) if Path(file).is_absolute() else csv_path.parent / file)
        pixels = pixels if pixels is not None else _thumbnail(Path(file))
        if pixels is None:
            continue
        caption = f"{rows[i]['pred']} ({100 * confidence[i]:.1f}%)"
        figures.append(
            f'<figure class="thumb">{array_img(pixels, caption)}<figcaption>{esc(caption)}<br>'
            f"{esc(Path(file).name)}</figcaption></figure>"
        )
    gallery = (
        f'<div class="gallery">{"".join(figures)}</div>'
        if figures
        else note("The images could not be read from their paths in predictions.csv: no thumbnails.")
    )
    sections.append(("low-confidence", f"Least confident cells (up to {LOW_CONFIDENCE_SHOWN})", gallery))
    return page("bloodcls predictions", f"{len(rows)} images; {csv_path}", sections)


def write_predict_html(csv_path: str | Path, skipped: int = 0, threshold: float | None = None) -> Path:
    """Write ``predict.html`` beside ``csv_path`` (atomically) and return its path."""
    csv_path = Path(csv_path)
    return write_text(csv_path.with_name(PREDICT_HTML), build_predict_html(csv_path, skipped, threshold))
