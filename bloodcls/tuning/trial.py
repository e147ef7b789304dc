"""One trial inside a Ray worker: the normal ``bloodcls fit`` (same BloodCLI, same configs) plus sampled values,
reporting the validation metric to Ray Tune after every validation run so ASHA can stop it early.

In-process rather than a ``bloodcls`` subprocess: the Lightning callback can hand each validation result to
``ray.tune.report`` directly, and Ray's resource accounting (CPUs, GPUs) applies to the process doing the work.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from bloodcls.callbacks.tune import ReportToTune
from bloodcls.tuning.config import overrides

# Loggers whose run directory is save_dir/name/version: a trial's goes to <output>/trials/<trial id>.
_DIR_LOGGERS = ("CSVLogger", "TensorBoardLogger")


@dataclass(frozen=True)
class TrialPlan:
    """What every trial shares (sent once to the workers): the resolved base config and where to write."""

    base_config: str  # absolute path of the resolved, absolute-path config
    fixed_args: list[str]  # the sweep's plain (non-searched) values as --key value overrides
    trials_dir: str  # absolute; each trial's Lightning run dir is trials_dir/<trial id>
    metric: str
    logger: Any  # the resolved trainer.logger (a class_path mapping, a list of them, or a bool / None)
    threads: int = 1
    env: dict[str, str] = field(default_factory=dict)  # BLOODCLS_* variables of the driver (cache dir, debug)


def _logger_in(logger: Any, trials_dir: str, trial_id: str) -> Any:
    """``logger`` (resolved config value) writing into the trial's own run directory."""
    if isinstance(logger, list):
        return [_logger_in(item, trials_dir, trial_id) for item in logger]
    if not isinstance(logger, dict) or not isinstance(logger.get("init_args"), dict):
        return logger
    init_args = dict(logger["init_args"])
    if str(logger.get("class_path", "")).endswith(_DIR_LOGGERS):
        # The trial id as the *name* (a str), not the version: an all-digit id (Optuna's are hex) given as the
        # version would be read back as an int and become "version_<id>".
        init_args.update(save_dir=trials_dir, name=trial_id, version="")
    elif "save_dir" in init_args:
        init_args["save_dir"] = str(Path(trials_dir) / trial_id)
    return {**logger, "init_args": init_args}


def trial_args(plan: TrialPlan, sampled: dict[str, Any], trial_id: str) -> list[str]:
    """The ``bloodcls fit`` arguments of one trial: base config, fixed values, sampled values, its own dirs."""
    run_dir = str(Path(plan.trials_dir) / trial_id)
    own = {
        "trainer.default_root_dir": run_dir,
        "trainer.enable_progress_bar": False,  # progress bars in a worker's log file are noise
        "checkpoint.dirpath": str(Path(run_dir) / "checkpoints"),
    }
    if plan.logger not in (None, True, False):
        own["trainer.logger"] = _logger_in(plan.logger, plan.trials_dir, trial_id)
    return ["fit", "--config", plan.base_config, *plan.fixed_args, *overrides(sampled), *overrides(own)]


def run_trial(sampled: dict[str, Any], plan: TrialPlan) -> None:
    """Ray Tune function trainable: ``sampled`` maps dotted config keys to this trial's values."""
    import torch
    from ray import tune

    from bloodcls.cli import BloodCLI
    from bloodcls.commands.common import quiet_third_party_noise

    for key, value in plan.env.items():
        os.environ.setdefault(key, value)
    torch.set_num_threads(plan.threads)
    quiet_third_party_noise()
    # The run dir already holds trial.log when the CSV logger starts; its "will be deleted" notice is about
    # metrics.csv only (and there is none yet), so it would only mislead a reader of the log.
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    metric = plan.metric

    class TrialCLI(BloodCLI):
        def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> L.Trainer:
            return super()._instantiate_trainer(config, [*callbacks, ReportToTune(metric)])

    trial_id = tune.get_context().get_trial_id()
    args = trial_args(plan, sampled, trial_id)
    saved_argv = sys.argv
    sys.argv = ["bloodcls"]  # LightningCLI warns when it is given args while sys.argv has some too
    try:
        with _output_to(Path(plan.trials_dir) / trial_id / "trial.log"):
            print("bloodcls " + " ".join(args), flush=True)  # the trial's command line, at the top of its log
            try:
                TrialCLI(args=args)
            except Exception:
                traceback.print_exc()  # into trial.log; Ray records the error for trials.csv
                raise
    finally:
        sys.argv = saved_argv


@contextlib.contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors, so C++ and logging output too) into ``log``,
    which sits in the trial's run dir; Ray would otherwise keep it in a temporary session directory."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log.open("a") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
