"""A quiet console: one-line warnings, SIGUSR1 outside Slurm, one results table, no v_num, W&B version routing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import REPO

import bloodcls
from bloodcls.callbacks.console import CompactProgressBar
from bloodcls.callbacks.wandb import route_run_version
from bloodcls.cli import main
from bloodcls.commands.common import parse_fit_config
from bloodcls.console import format_warning

OWN = os.path.join(os.path.dirname(bloodcls.__file__), "data", "loading.py")


def test_own_warnings_are_one_line() -> None:
    text = format_warning(UserWarning("3 files\n skipped"), UserWarning, OWN, 12, "rank_zero_warn(...)")
    assert text == "bloodcls: warning: 3 files skipped\n"
    lib = "/venv/lib/python3.11/site-packages/lightning/pytorch/trainer/trainer.py"
    text = format_warning(UserWarning("slow"), UserWarning, lib, 1, "code")
    assert text == "warning: slow (UserWarning from lightning)\n" and "trainer.py" not in text


SIGNAL_CHILD = """
import os, signal, time
from bloodcls.console import ignore_sigusr1_outside_slurm
ignore_sigusr1_outside_slurm()
os.kill(os.getpid(), signal.SIGUSR1)
time.sleep(0.2)
print("alive")
"""


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 on this platform")
def test_sigusr1_outside_slurm_does_not_kill() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = subprocess.run(
        [sys.executable, "-c", SIGNAL_CHILD], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "alive" in result.stdout
    assert result.stderr.strip() == "bloodcls: SIGUSR1 ignored (not in a Slurm job; stop a run with Ctrl-C or SIGTERM)"
    # Inside a Slurm job the handler is Lightning's business: bloodcls installs none (the default kills).
    inside = subprocess.run(
        [sys.executable, "-c", SIGNAL_CHILD],
        cwd=REPO,
        env={**env, "SLURM_JOB_ID": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert inside.returncode == -signal.SIGUSR1


def test_progress_bar_has_no_v_num(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.callbacks import RichProgressBar

    monkeypatch.setattr(RichProgressBar, "get_metrics", lambda self, t, m: {"v_num": 0, "train/loss": 1.0})
    assert CompactProgressBar().get_metrics(SimpleNamespace(), SimpleNamespace()) == {"train/loss": 1.0}  # type: ignore[arg-type]


def test_test_prints_one_table_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["test", "--config", str(REPO / "configs/quickstart.yaml"), "--print_config"])
    assert "\nverbose: false\n" in capsys.readouterr().out  # Lightning's raw results table is off
    with pytest.raises(SystemExit):
        main(["validate", "--config", str(REPO / "configs/quickstart.yaml"), "--print_config"])
    assert "\nverbose: true\n" in capsys.readouterr().out  # validate has no report: Lightning's table is its output


def test_version_on_the_wandb_logger_names_the_run_folder() -> None:
    config = parse_fit_config(
        [
            "--config",
            str(REPO / "configs/quickstart.yaml"),
            "--config",
            str(REPO / "configs/loggers/wandb.yaml"),
            "--trainer.logger.init_args.version",
            "demo",
        ]
    ).config
    csv, wandb = config.trainer.logger
    assert wandb.init_args.version is None  # parse_fit_config ran bloodcls's before-instantiation fixes
    assert csv.init_args.version == "demo"
    route_run_version(config)  # idempotent
    assert csv.init_args.version == "demo"
