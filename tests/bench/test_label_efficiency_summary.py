"""bench/label_efficiency.py's table: mean +- std over seeds, and variants chosen on validation, never on test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.label_efficiency import ALL, chosen_on_validation, summarize, write_markdown  # noqa: E402


def _row(strategy: str, budget: str, seed: int, acc: float, val: float) -> dict[str, str]:
    return {
        "strategy": strategy,
        "labels_per_class": budget,
        "seed": str(seed),
        "acc": str(acc),
        "balanced_acc": str(acc),
        "macro_f1": str(acc),
        "n_test": "100",
        "epochs": "12",
        "wall_s": "60",
        "val_balanced_acc": str(val),
        "labeled_seen": "76800",
        "labels_used": "240",
    }


ROWS = [
    _row("fixmatch", "10", 0, 0.90, 0.80),
    _row("fixmatch", "10", 1, 0.94, 0.82),
    # the variant is better on test and worse on validation: validation must choose the plain one
    _row("fixmatch-mu3", "10", 0, 0.99, 0.70),
    _row("fixmatch-mu3", "10", 1, 0.99, 0.72),
    _row("supervised", ALL, 0, 0.97, 0.96),
]


def test_mean_and_sample_std_over_seeds_in_percent() -> None:
    fixmatch = next(e for e in summarize(ROWS) if e["strategy"] == "fixmatch")
    assert fixmatch["seeds"] == 2
    mean, std = fixmatch["acc"]
    assert mean == pytest.approx(92.0) and std == pytest.approx(2.8284, abs=1e-4)  # sample std: sqrt(8 / 1)
    assert next(e for e in summarize(ROWS) if e["budget"] == ALL)["acc"] == (pytest.approx(97.0), 0.0)


def test_the_full_label_row_sorts_after_every_budget() -> None:
    assert [e["budget"] for e in summarize(ROWS)][-1] == ALL


def test_variants_are_chosen_on_validation_not_test(tmp_path: Path) -> None:
    assert chosen_on_validation(summarize(ROWS))[("fixmatch", "10")] == "fixmatch"
    write_markdown(summarize(ROWS), tmp_path / "t.md")
    text = (tmp_path / "t.md").read_text()
    assert "| 10 | fixmatch ✓ | 2 | 92.00 ± 2.83 |" in text and "| 10 | fixmatch-mu3 | 2 |" in text
    assert "| all | supervised | 1 |" in text  # one variant: nothing was chosen, nothing is ticked
