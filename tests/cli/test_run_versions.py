"""Run folders: a failed start leaves none behind; an explicit version never mixes two runs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO

from bloodcls.commands.common import parse_fit_config
from bloodcls.errors import UserInputError
from bloodcls.run_versions import check_run_dir, is_left_empty, remove_if_left_empty

BASE = str(REPO / "configs" / "quickstart.yaml")


def _run(tmp_path: Path, *files: str) -> Path:
    run = tmp_path / "runs" / "quickstart" / "demo"
    (run / "checkpoints").mkdir(parents=True)
    for name in files:
        (run / name).write_text("x")
    return run


def test_only_start_files_count_as_empty(tmp_path: Path) -> None:
    run = _run(tmp_path, "config.yaml", "hparams.yaml", "split.csv")
    assert is_left_empty(run)
    (run / "checkpoints" / "last.ckpt").write_text("x")
    assert not is_left_empty(run)


def test_remove_if_left_empty(tmp_path: Path) -> None:
    run = _run(tmp_path, "config.yaml")
    trainer = SimpleNamespace(is_global_zero=True, logger=object(), log_dir=str(run))
    assert remove_if_left_empty(trainer) and not run.exists()
    kept = _run(tmp_path, "config.yaml", "metrics.csv")
    assert not remove_if_left_empty(SimpleNamespace(is_global_zero=True, logger=object(), log_dir=str(kept)))
    assert kept.is_dir()


def _config(tmp_path: Path, ckpt_path: str | None = None) -> object:
    args = ["--config", BASE, "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")]
    config = parse_fit_config([*args, "--trainer.logger.init_args.version", "demo"]).config
    config.ckpt_path = ckpt_path  # a fit subcommand key; the fit-only parser has none
    return config


def test_explicit_version_with_another_run_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    run = _run(tmp_path, "config.yaml")
    check_run_dir(_config(tmp_path), overwrite=False)  # nothing kept there yet: fine
    (run / "checkpoints" / "best.ckpt").write_text("x")
    with pytest.raises(UserInputError, match="already holds another run.*--overwrite_run true"):
        check_run_dir(_config(tmp_path), overwrite=False)
    check_run_dir(_config(tmp_path, str(run / "checkpoints" / "best.ckpt")), overwrite=False)
    check_run_dir(_config(tmp_path, "last"), overwrite=False)
    with pytest.raises(UserInputError):  # a checkpoint of another folder does not resume this one
        check_run_dir(_config(tmp_path, str(tmp_path / "other.ckpt")), overwrite=False)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # a requeued Slurm job goes on in its own folder
    check_run_dir(_config(tmp_path), overwrite=False)
    monkeypatch.delenv("SLURM_RESTART_COUNT")
    check_run_dir(_config(tmp_path), overwrite=True)
    assert not run.exists()  # replaced: the new run starts in an empty folder
