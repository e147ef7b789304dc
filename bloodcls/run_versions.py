"""Run folders (``runs/<name>/<version>``): no empty one left by a failed start, no two runs mixed in one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser

from bloodcls.callbacks.wandb import logger_specs
from bloodcls.errors import UserInputError

OVERWRITE_KEY = "overwrite_run"
# What a start writes before anything worth keeping: a folder holding only these (and empty folders) is empty.
START_FILES = frozenset({"config.yaml", "hparams.yaml", "split.csv", "data_report.json"})


def is_left_empty(directory: Path) -> bool:
    """Whether ``directory`` holds nothing but ``START_FILES`` and empty folders (no checkpoint, no metrics)."""
    for path in directory.rglob("*"):
        if path.is_file() and (path.parent != directory or path.name not in START_FILES):
            return False
    return True


def remove_if_left_empty(trainer: Any) -> bool:
    """After a failed run: remove its run folder when the failure left nothing worth keeping in it, so the next
    run gets the same ``version_N`` (rank 0 only). Returns whether it removed one."""
    if trainer is None or not getattr(trainer, "is_global_zero", False) or trainer.logger is None:
        return False
    try:
        log_dir = trainer.log_dir
    except Exception:  # noqa: BLE001 -- a half-built trainer: nothing to clean
        return False
    if log_dir is None or not os.path.isdir(log_dir):
        return False
    directory = Path(log_dir)
    if not is_left_empty(directory):
        return False
    shutil.rmtree(directory, ignore_errors=True)
    return True


def holds_a_run(directory: Path) -> bool:
    """Whether ``directory`` already holds another run's results (a checkpoint or logged metrics)."""
    return any(directory.glob("checkpoints/*.ckpt")) or (directory / "metrics.csv").is_file()


def explicit_run_dir(config: Any) -> Path | None:
    """``save_dir/name/version`` of the config's CSV logger when the version is given explicitly, else None."""
    for spec in logger_specs(config):
        args = spec.get("init_args")
        if "CSVLogger" not in str(spec.get("class_path")) or args is None or args.get("version") in (None, ""):
            continue
        version = args.get("version")
        version = f"version_{version}" if isinstance(version, int) else str(version)
        return Path(args.get("save_dir") or ".") / str(args.get("name") or "") / version
    return None


def _is_rank_zero() -> bool:
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))


def check_run_dir(config: Any, overwrite: bool) -> None:
    """Refuse a fit into an explicit ``version`` folder that holds another run, unless it resumes a checkpoint of
    that folder (``--ckpt_path``) or ``--overwrite_run true`` asks to replace it (its contents are removed first)."""
    directory = explicit_run_dir(config)
    if directory is None or not directory.is_dir() or not holds_a_run(directory):
        return
    if int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0 or any(directory.glob("hpc_ckpt_*.ckpt")):
        return  # a requeued Slurm job: the same run again, which Lightning resumes from its hpc checkpoint
    ckpt_path = config.get("ckpt_path")
    if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
        if Path(ckpt_path).resolve().is_relative_to(directory.resolve()):
            return  # resuming that run
    elif ckpt_path == "last":
        return  # resuming that folder's last.ckpt
    if overwrite:
        if _is_rank_zero():
            shutil.rmtree(directory)
        return
    raise UserInputError(
        f"trainer.logger version: {directory} already holds another run; resume it with --ckpt_path "
        f"{directory / 'checkpoints' / 'last.ckpt'}, choose another version, or pass --{OVERWRITE_KEY} true "
        "to replace it"
    )


def add_overwrite_argument(parser: LightningArgumentParser) -> None:
    parser.add_argument(
        f"--{OVERWRITE_KEY}",
        type=bool,
        default=False,
        help="fit: replace the run folder of an explicit trainer.logger version that holds another run",
    )
