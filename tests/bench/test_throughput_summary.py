"""bench/throughput.py gives no speed figure (and no ratio) for a configuration whose training loss was not finite."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.throughput import Phase, Window, summarize  # noqa: E402


def _phase(name: str, losses: list[float], rate: float) -> Phase:
    phase = Phase(name, name, lambda warmup, steps: Window(0, 0, 0, 0, 0, 0))
    phase.windows = [Window(rate, rate / 2, 1.0, 100.0, 200.0, 0.0, loss) for loss in losses]
    return phase


def test_a_configuration_with_a_nan_loss_is_refused_and_left_out_of_the_ratios() -> None:
    phases = [
        _phase("a", [2.0, 1.9], 100.0),
        _phase("c", [1.8, 1.7], 150.0),
        _phase("c_compile", [1.8, float("nan")], 400.0),
    ]
    args = argparse.Namespace(rounds=2, steps=3)
    summary, rows = summarize(phases, args)
    assert summary["configs"]["c_compile"]["refused"] and summary["configs"]["c_compile"]["images_per_s_median"] is None
    assert summary["configs"]["c"]["refused"] is None
    assert summary["ratios"] == {"c/a": 1.5}
    assert len(rows) == 6
