"""Trial summaries: one row per trial (sampled values, best / last metric, epochs, status), the best trial, CSV."""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bloodcls.io import atomic_open
from bloodcls.tuning.config import cli_value

Status = Literal["completed", "stopped_early", "error"]
_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$")


@dataclass(frozen=True)
class TrialRow:
    """One trial of a sweep, as written to trials.csv."""

    trial_id: str
    params: dict[str, Any]
    best: float | None
    last: float | None
    epochs: int
    status: Status
    run_dir: str
    error: str = ""


def summarize_trial(
    trial_id: str,
    params: dict[str, Any],
    values: list[float],
    epochs: list[int],
    mode: Literal["max", "min"],
    max_epochs: int | None,
    run_dir: str,
    error: str = "",
) -> TrialRow:
    """A trial's row from its reported metric ``values`` and ``epochs`` (one per validation run, in order).

    ``stopped_early``: no error, but fewer epochs than ``max_epochs`` (ASHA, or the strategy's own stopping).
    """
    finite = [v for v in values if not math.isnan(v)]
    best = (max(finite) if mode == "max" else min(finite)) if finite else None
    ran = max(epochs) if epochs else 0
    status: Status = "error" if error else "completed"
    if not error and max_epochs is not None and ran < max_epochs:
        status = "stopped_early"
    return TrialRow(trial_id, params, best, values[-1] if values else None, ran, status, run_dir, error)


def best_trial(rows: list[TrialRow], mode: Literal["max", "min"]) -> TrialRow | None:
    """The trial with the best metric over its epochs (errors and trials without a value excluded)."""
    scored = [r for r in rows if r.best is not None and r.status != "error"]
    return max(scored, key=lambda r: _goodness(r, mode)) if scored else None


def _goodness(row: TrialRow, mode: Literal["max", "min"]) -> float:
    """Larger is better, whatever the mode; trials without a value rank below all others."""
    if row.best is None:
        return -math.inf
    return row.best if mode == "max" else -row.best


def error_summary(text: str) -> str:
    """The last ``SomeError: message`` line of a worker's traceback (Ray wraps the trial's own error)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        match = _EXCEPTION_LINE.match(line)
        if match and match.group(1) not in ("RayTaskError", "TuneError"):
            return f"{match.group(1)}: {match.group(2)}"
    return lines[-1] if lines else ""


def rank(rows: list[TrialRow], mode: Literal["max", "min"]) -> list[TrialRow]:
    """Best first; trials without a value (errors) last, in their original order."""
    scored = sorted((r for r in rows if r.best is not None), key=lambda r: -_goodness(r, mode))
    return scored + [r for r in rows if r.best is None]


def write_trials_csv(rows: list[TrialRow], keys: list[str], metric: str, path: Path) -> Path:
    """trials.csv: trial_id, every searched key, <metric>_best, <metric>_last, epochs, status, run_dir, error."""
    header = ["trial_id", *keys, f"{metric}_best", f"{metric}_last", "epochs", "status", "run_dir", "error"]
    with atomic_open(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in rows:
            values = [cli_value(r.params[k]) if k in r.params else "" for k in keys]
            scores = ["" if v is None else repr(v) for v in (r.best, r.last)]
            writer.writerow([r.trial_id, *values, *scores, r.epochs, r.status, r.run_dir, r.error])
    return path
