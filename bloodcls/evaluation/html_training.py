"""The semi-supervised panel of the HTML report: pseudo-label acceptance and accuracy per class over training, read
from the fit run's metrics.csv (the columns ``train/accepted/<class>``, ``train/pseudo_acc/<class>``, ...)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps

from bloodcls.evaluation.html_page import figure_img, new_figure, note

ACCEPTED = "train/accepted/"
PSEUDO_ACC = "train/pseudo_acc/"
OVERALL = ("train/mask_ratio", "train/pseudo_acc", "train/unlabeled_acc")


def read_columns(path: Path) -> dict[str, np.ndarray]:
    """Every column of a Lightning metrics.csv as float arrays (empty cells: NaN)."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {}

    def number(text: str | None) -> float:
        try:
            return float(text) if text not in (None, "") else math.nan
        except ValueError:
            return math.nan

    return {key: np.array([number(row.get(key)) for row in rows]) for key in rows[0]}


def _smooth(values: np.ndarray) -> np.ndarray:
    """A trailing moving average over about a twentieth of the points, ignoring NaN: per-step counts are noisy."""
    window = max(1, len(values) // 20)
    out = np.full(len(values), np.nan)
    for i in range(len(values)):
        part = values[max(0, i - window + 1) : i + 1]
        part = part[~np.isnan(part)]
        if len(part):
            out[i] = part.mean()
    return out


def has_pseudo_label_columns(columns: dict[str, np.ndarray]) -> bool:
    return any(key.startswith(ACCEPTED) for key in columns) or "train/mask_ratio" in columns


def pseudo_label_section(metrics_csv: Path | None, class_names: Sequence[str]) -> str | None:
    """The panel's HTML, or None for a run that logged no pseudo-label statistics (a supervised run)."""
    if metrics_csv is None:
        return None
    columns = read_columns(metrics_csv)
    if not has_pseudo_label_columns(columns):
        return None
    step = columns.get("step", np.arange(len(next(iter(columns.values())))))
    names = [n for n in class_names if f"{ACCEPTED}{n}" in columns]
    has_acc = [n for n in class_names if f"{PSEUDO_ACC}{n}" in columns]
    panels = 1 + bool(names) + bool(has_acc)
    fig = new_figure(5.2 * panels, 3.8)
    cmap = colormaps["tab10" if len(class_names) <= 10 else "tab20"]  # the report's class colours
    colors = {name: cmap(i % cmap.N) for i, name in enumerate(class_names)}
    axes = iter(fig.subplots(1, panels, squeeze=False)[0])
    if names:
        ax = next(axes)
        for name in names:
            rows = ~np.isnan(columns[f"{ACCEPTED}{name}"])
            ax.plot(step[rows], _smooth(columns[f"{ACCEPTED}{name}"][rows]), color=colors[name], label=name)
        ax.set_title("Accepted pseudo-labels per step, by class")
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    if has_acc:
        ax = next(axes)
        for name in has_acc:
            rows = ~np.isnan(columns[f"{PSEUDO_ACC}{name}"])
            ax.plot(step[rows], _smooth(columns[f"{PSEUDO_ACC}{name}"][rows]), color=colors[name], label=name)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("Accuracy of accepted pseudo-labels, by class")
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    ax = next(axes)
    for key in OVERALL:
        if key in columns:
            rows = ~np.isnan(columns[key])
            ax.plot(step[rows], _smooth(columns[key][rows]), label=key.removeprefix("train/"))
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Overall: acceptance (mask ratio) and accuracy")
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    parts = [figure_img(fig, "pseudo-label acceptance and accuracy over training")]
    if not has_acc:
        parts.append(
            note("Per-class pseudo-label accuracy was not logged by this run (the unlabeled pool's truth was unknown).")
        )
    parts.append(note(f"From {metrics_csv.name} of the fit run; lines are trailing moving averages of logged steps."))
    return "\n".join(parts)
