"""A fit whose loss turns NaN stops with one line naming the step, exits non-zero and writes no checkpoint."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO

from bloodcls.callbacks.finite_loss import FiniteLoss, NonFiniteLossError, training_loss
from bloodcls.cli import main

TINY = [
    "--config",
    str(REPO / "configs" / "quickstart.yaml"),
    "--data.init_args.source.init_args.per_class",
    "12",
    "--data.init_args.batch_size",
    "8",
    "--data.init_args.num_workers",
    "0",
    "--trainer.max_epochs",
    "1",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--model.init_args.optimizer.init_args.lr",
    "1e30",  # the second step's loss is NaN
]


def test_training_loss_forms() -> None:
    assert training_loss({"loss": torch.tensor(1.0)}) is not None
    assert training_loss(torch.tensor(2.0)) is not None
    assert training_loss(None) is None and training_loss({"x": 1}) is None


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_callback_raises_on_non_finite(value: float) -> None:
    trainer = SimpleNamespace(global_step=7)
    with pytest.raises(NonFiniteLossError, match=f"loss is {value} at global step 7"):
        FiniteLoss().on_train_batch_end(trainer, None, {"loss": torch.tensor(value)}, None, 0)  # type: ignore[arg-type]
    FiniteLoss().on_train_batch_end(trainer, None, {"loss": torch.tensor(0.5)}, None, 0)  # type: ignore[arg-type]


def test_nan_fit_stops_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BLOODCLS_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["fit", *TINY])
    assert exc.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "the training loss is nan at global step" in errors[0], errors
    assert not list(tmp_path.rglob("*.ckpt"))
    assert not (tmp_path / "runs" / "quickstart" / "version_0").exists()  # the failed start left no folder


def test_opt_out_trains_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    main(["fit", *TINY, "--stop_on_nonfinite_loss", "false", "--trainer.max_steps", "3"])
    assert (tmp_path / "runs" / "quickstart" / "version_0" / "checkpoints" / "last.ckpt").is_file()
