"""Checkpoints of a fit: best.ckpt on the validation metric, last.ckpt the latest epoch even when the metric peaked
earlier, resuming from last.ckpt (by path or as ``ckpt_path="last"``), and the CLI keys that configure them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import REPO, bloodcls_exe
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel

from bloodcls.callbacks.checkpointing import best_checkpoint, last_checkpoint
from bloodcls.cli import BloodCLI


class PeaksFirst(BoringModel):
    """A model whose validation score is best at epoch 0 and worse every epoch after."""

    def on_validation_epoch_end(self) -> None:
        self.log("val/score", -float(self.current_epoch))


def _trainer(epochs: int, callbacks: list[ModelCheckpoint]) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=list(callbacks),
        enable_checkpointing=bool(callbacks),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _callbacks(directory: Path) -> list[ModelCheckpoint]:
    return [best_checkpoint(str(directory), monitor="val/score"), last_checkpoint(str(directory))]


def _fit(tmp_path: Path, epochs: int) -> None:
    _trainer(epochs, _callbacks(tmp_path)).fit(PeaksFirst())


def test_last_checkpoint_is_the_final_epoch_and_best_the_best(tmp_path: Path) -> None:
    _fit(tmp_path, epochs=3)
    last = torch.load(tmp_path / "last.ckpt", weights_only=False)
    best = torch.load(tmp_path / "best.ckpt", weights_only=False)
    assert last["epoch"] == 2 and last["global_step"] == 6
    assert best["epoch"] == 0
    # Exactly one "last" file: it is overwritten, not versioned.
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]


def test_resuming_from_last_continues_after_the_final_epoch(tmp_path: Path) -> None:
    _fit(tmp_path, epochs=2)
    trainer = _trainer(3, [])
    trainer.fit(PeaksFirst(), ckpt_path=tmp_path / "last.ckpt")
    assert trainer.global_step == 6  # 4 restored + 2 new: no epoch was repeated


def test_ckpt_path_last_finds_last_ckpt_and_keeps_the_best(tmp_path: Path) -> None:
    """``fit --ckpt_path last`` in a new process: Lightning looks for last*.ckpt in the callbacks' directory."""
    _fit(tmp_path, epochs=2)
    trainer = _trainer(3, _callbacks(tmp_path))
    trainer.fit(PeaksFirst(), ckpt_path="last")
    assert trainer.global_step == 6
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["epoch"] == 2
    # The best epoch (0) survives the resume: the restored callback state knows its score.
    assert torch.load(tmp_path / "best.ckpt", weights_only=False)["epoch"] == 0
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]


def test_cli_keys_configure_both_callbacks(tmp_path: Path) -> None:
    args = ["--config", str(REPO / "configs/quickstart.yaml"), "--data.source.per_class", "4"]
    args += ["--checkpoint.dirpath", str(tmp_path), "--checkpoint.monitor", "val/macro_f1"]
    args += ["--trainer.logger", "false"]
    cli = BloodCLI(args=args, run=False)
    best, last = [c for c in cli.trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert (best.monitor, best.mode, best.filename, best.save_top_k) == ("val/macro_f1", "max", "best", 1)
    assert (last.monitor, last.filename, last.save_last) == (None, "last", None)
    assert best.dirpath == last.dirpath == str(tmp_path)  # one key moves both
    assert cli.trainer.checkpoint_callback is best  # ckpt_path="best" means the validation-selected one


@pytest.mark.parametrize("save_last", ["true", "false"])
def test_old_configs_with_save_last_write_no_second_last_file(save_last: str) -> None:
    args = ["--config", str(REPO / "configs/quickstart.yaml"), "--data.source.per_class", "4"]
    cli = BloodCLI(args=[*args, "--checkpoint.save_last", save_last, "--trainer.logger", "false"], run=False)
    best = next(c for c in cli.trainer.callbacks if isinstance(c, ModelCheckpoint))
    assert not best.save_last


def _fit_command(save_dir: Path, transform: str) -> list[str]:
    """A tiny deterministic fit: 4 epochs, 32 px, bloodcls_cnn_tiny, one process (no loader workers)."""
    args = ["fit", "--config", str(REPO / "configs/quickstart.yaml"), "--data.source.per_class", "60"]
    args += ["--model.init_args.backbone", "bloodcls_cnn_tiny", "--data.init_args.image_size", "32"]
    args += ["--data.init_args.batch_size", "16", "--data.init_args.num_workers", "0"]
    args += ["--data.init_args.train_transform", transform, "--trainer.max_epochs", "4"]
    args += ["--trainer.deterministic", "true", "--trainer.enable_progress_bar", "false"]
    return [*args, "--trainer.logger.init_args.save_dir", str(save_dir)]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 3
    return checkpoint["state_dict"]


def _kill_after_first_epoch(command: list[str], last: Path, cwd: Path) -> int:
    """Start ``command``, SIGKILL it as soon as ``last`` (the first epoch's last.ckpt) exists; the epoch it holds."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the fit ended before it could be killed"
    return int(torch.load(last, weights_only=True)["epoch"])


@pytest.mark.slow  # two 4-epoch fits and a resume, in subprocesses
def test_kill_9_then_resume_reaches_the_uninterrupted_weights(tmp_path: Path) -> None:
    """Bit-equal final weights: last.ckpt restores weights, optimizer, scheduler, loops and the RNG states (so the
    resumed epoch is shuffled as the uninterrupted run shuffled it). Without augmentation (``eval`` transform):
    the albumentations pipelines are seeded once per process from torch's initial seed (data/datasets.py), so a
    resumed process replays the augmentation stream from its start and only the data order, not the augmented
    pixels, can match an uninterrupted run."""
    transform = "eval"
    exe = bloodcls_exe()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    whole = subprocess.run(
        [exe, *_fit_command(tmp_path / "whole", transform)], cwd=tmp_path, env=env, capture_output=True
    )
    assert whole.returncode == 0, whole.stderr[-2000:]

    run = tmp_path / "killed" / "quickstart" / "version_0"
    killed_at = _kill_after_first_epoch(
        [exe, *_fit_command(tmp_path / "killed", transform)], run / "checkpoints" / "last.ckpt", tmp_path
    )
    assert killed_at < 3  # interrupted before the end
    resume = [exe, *_fit_command(tmp_path / "killed", transform), "--ckpt_path", "last"]
    resumed = subprocess.run(
        [*resume, "--trainer.logger.init_args.version", "0"], cwd=tmp_path, env=env, capture_output=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    expected, actual = _weights(tmp_path / "whole" / "quickstart" / "version_0"), _weights(run)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
