"""slurm/pin_run_dir.py: a resolved fit config pinned to one run directory (single logger, CSV + W&B, none)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from typing import Any

import pytest
import yaml

from .slurm_jobs import REPO

SCRIPT = REPO / "slurm" / "pin_run_dir.py"
_spec = importlib.util.spec_from_file_location("pin_run_dir", SCRIPT)
assert _spec and _spec.loader
pin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pin)


def _csv() -> dict[str, Any]:
    return {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs", "name": "q"}}


def _wandb(**init_args: Any) -> dict[str, Any]:
    return {
        "class_path": "bloodcls.callbacks.wandb.WandbLogger",
        "init_args": {"project": "bloodcls", "id": None, **init_args},
    }


def _config(logger: Any) -> dict[str, Any]:
    return {"seed_everything": 0, "trainer": {"devices": "2", "logger": logger}, "model": {"class_path": "m"}}


def test_single_csv_logger_gets_the_run_directory() -> None:
    config = _config(_csv())
    run_dir = pin.pin_run_dir(config, "/r", "quickstart", "job7", "quickstart-job7")
    assert run_dir == "/r/quickstart/job7"
    assert config["trainer"]["default_root_dir"] == run_dir
    assert config["trainer"]["logger"]["init_args"] == {"save_dir": "/r", "name": "quickstart", "version": "job7"}


def test_logger_list_pins_the_csv_logger_and_gives_wandb_a_stable_id() -> None:
    config = _config([_csv(), _wandb()])
    pin.pin_run_dir(config, "runs/cv", "kfold12", "fold0", "cv/kfold12 fold0")
    csv_logger, wandb_logger = config["trainer"]["logger"]
    assert (csv_logger["init_args"]["name"], csv_logger["init_args"]["version"]) == ("kfold12", "fold0")
    assert wandb_logger["init_args"]["id"] == "cv-kfold12-fold0"  # characters W&B refuses become "-"


def test_an_existing_wandb_id_is_kept() -> None:
    config = _config([_csv(), _wandb(id="mine")])
    pin.pin_run_dir(config, "runs", "q", "job1", "q-job1")
    assert config["trainer"]["logger"][1]["init_args"]["id"] == "mine"


@pytest.mark.parametrize("logger", [None, False, [_wandb()]], ids=["none", "false", "wandb-only"])
def test_config_without_csv_logger_is_refused(logger: Any) -> None:
    with pytest.raises(ValueError, match="trainer.logger has no CSVLogger"):
        pin.pin_run_dir(_config(logger), "runs", "q", "job1", "q-job1")


def test_command_line_filters_yaml_and_errors_in_one_line() -> None:
    text = yaml.safe_dump(_config([_csv(), _wandb()]), sort_keys=False)
    args = [
        sys.executable,
        str(SCRIPT),
        "--save_dir",
        "runs",
        "--name",
        "q",
        "--version",
        "job3",
        "--wandb_id",
        "q-job3",
    ]
    out = subprocess.run(args, input=text, capture_output=True, text=True, check=True).stdout
    pinned = yaml.safe_load(out)
    assert pinned["trainer"]["default_root_dir"] == "runs/q/job3"
    assert list(pinned) == ["seed_everything", "trainer", "model"]  # order kept: diffs against config.yaml read well
    bad = subprocess.run(args, input=yaml.safe_dump(_config(None)), capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("pin_run_dir.py: error: trainer.logger has no CSVLogger")
