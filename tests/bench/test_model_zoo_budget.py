"""bench/model_zoo.py's --time-budget-min: the same training wall time for every model, whole epochs when they fit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.model_zoo import MIN_TRAIN_FRACTION, BudgetPlan, plan_budget  # noqa: E402

# 1,000 training + 100 validation images: at 100 / 100 img/s an epoch costs 10 + 1 = 11 s.
N_TRAIN, N_VAL = 1000, 100


def test_whole_epochs_that_fit_the_budget_counting_validation() -> None:
    plan = plan_budget(60.0, N_TRAIN, N_VAL, 100.0, 100.0, max_epochs=15, warmup_epochs=1.0)
    # 60 s // 11 s = 5 (without validation it would read 6)
    assert plan == BudgetPlan(max_epochs=5, train_fraction=1.0, warmup_epochs=1.0, epochs=5.0)
    assert plan.fit_args() == ["--trainer.max_epochs", "5", "--model.init_args.warmup_epochs", "1"]


def test_the_epoch_cap_and_a_short_run_s_warm_up() -> None:
    assert plan_budget(1e6, N_TRAIN, N_VAL, 100.0, 100.0, max_epochs=15, warmup_epochs=1.0).max_epochs == 15
    two = plan_budget(25.0, N_TRAIN, N_VAL, 100.0, 100.0, max_epochs=15, warmup_epochs=1.0)
    assert (two.max_epochs, two.warmup_epochs) == (2, pytest.approx(0.4))  # a fifth of the run, not all of it


def test_a_model_too_slow_for_one_epoch_trains_on_the_fraction_that_fits() -> None:
    plan = plan_budget(6.0, N_TRAIN, N_VAL, 100.0, 100.0, max_epochs=15, warmup_epochs=1.0)
    # 6 s - 1 s of validation leaves 5 s of the 10 s epoch
    assert (plan.max_epochs, plan.train_fraction, plan.epochs) == (1, pytest.approx(0.5), 0.5)
    assert plan.warmup_epochs == pytest.approx(0.2)
    assert plan.fit_args()[-2:] == ["--trainer.limit_train_batches", "0.5000"]
    hopeless = plan_budget(0.5, N_TRAIN, N_VAL, 100.0, 100.0, max_epochs=15, warmup_epochs=1.0)
    assert hopeless.train_fraction == MIN_TRAIN_FRACTION  # it overruns rather than not train


def test_the_table_says_which_rows_ran_on_a_wall_time_budget() -> None:
    from bench.model_zoo import budget_note

    assert budget_note([{"budget_min": ""}]) == []  # epoch-budget rows: nothing to say
    assert "Budget: 3 min of training wall time per model" in budget_note([{"budget_min": "3"}, {"budget_min": ""}])[1]
