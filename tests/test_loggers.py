"""bloodcls.loggers.CSVLogger: the same metrics.csv as Lightning's, but never cut mid-line (kill, full disk)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import lightning as L
import pytest
from conftest import REPO
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger

from bloodcls import io as bio
from bloodcls.errors import DiskFullError
from bloodcls.loggers import CSVLogger


class LoggingModel(BoringModel):
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        out = super().training_step(batch, batch_idx)
        self.log("train/loss", out["loss"])
        return out


def _log(logger: LightningCSVLogger) -> Path:
    """Rows whose keys change between flushes (Lightning then rewrites the header), flushed every 2 rows."""
    logger.log_hyperparams({"lr": 0.1, "name": "x"})
    for step in range(5):
        metrics: dict[str, float] = {"train/loss": 1.0 / (step + 1)}
        if step % 2:
            metrics["val/acc"] = step / 10
        if step == 4:
            metrics["epoch"] = 1
        logger.log_metrics(metrics, step=step)
    logger.save()
    return Path(logger.log_dir)


def test_same_files_as_lightnings_csv_logger(tmp_path: Path) -> None:
    ours = _log(CSVLogger(tmp_path / "ours", name="q", flush_logs_every_n_steps=2))
    theirs = _log(LightningCSVLogger(tmp_path / "theirs", name="q", flush_logs_every_n_steps=2))
    assert ours.relative_to(tmp_path / "ours") == theirs.relative_to(tmp_path / "theirs")
    for name in ("metrics.csv", "hparams.yaml"):
        assert (ours / name).read_text() == (theirs / name).read_text(), name
    assert sorted(p.name for p in ours.iterdir()) == ["hparams.yaml", "metrics.csv"]  # no temp files


def test_full_disk_keeps_the_last_complete_metrics_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logger = CSVLogger(tmp_path, name="q")
    logger.log_metrics({"train/loss": 0.5}, step=0)
    logger.save()
    metrics_csv = Path(logger.log_dir) / "metrics.csv"
    before = metrics_csv.read_text()

    def full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(bio.os, "replace", full)
    logger.log_metrics({"train/loss": 0.25, "val/acc": 0.75}, step=1)
    with pytest.raises(DiskFullError, match=f"^disk full while writing {metrics_csv}$"):
        logger.save()
    assert metrics_csv.read_text() == before and before.endswith("\n")
    assert sorted(p.name for p in metrics_csv.parent.iterdir()) == ["metrics.csv"]

    monkeypatch.undo()  # space again: the rows that could not be written are not lost
    logger.save()
    assert metrics_csv.read_text().splitlines() == ["step,train/loss,val/acc", "0,0.5,", "1,0.25,0.75"]


def test_full_disk_during_fit_is_one_line_and_checkpoints_survive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills up after the first checkpoint: a DiskFullError naming metrics.csv, the checkpoint intact
    and loadable, metrics.csv whole."""
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        if Path(dst).name == "metrics.csv" and list(tmp_path.rglob("*.ckpt")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(src, dst)

    monkeypatch.setattr(bio.os, "replace", replace)
    logger = CSVLogger(tmp_path, name="q", flush_logs_every_n_steps=2)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        logger=logger,
        max_epochs=3,
        limit_train_batches=4,
        limit_val_batches=1,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(DiskFullError, match="disk full while writing .*metrics.csv"):
        trainer.fit(LoggingModel())
    run = Path(logger.log_dir)
    lines = (run / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,") and all(len(line.split(",")) == len(lines[0].split(",")) for line in lines)
    checkpoints = list((run / "checkpoints").glob("*.ckpt"))
    assert checkpoints, "the checkpoint written before the disk filled up is kept"
    BoringModel.load_from_checkpoint(checkpoints[0], weights_only=False)


@pytest.mark.slow  # a two-epoch fit through the CLI
def test_fit_on_a_full_disk_is_one_cli_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``bloodcls fit`` whose disk fills up after the checkpoint: ``disk full while writing PATH`` and exit 2."""
    from bloodcls.cli import main

    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        if Path(dst).name == "metrics.csv" and list(tmp_path.rglob("best.ckpt")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(src, dst)

    monkeypatch.setattr(bio.os, "replace", replace)
    monkeypatch.chdir(tmp_path)
    args = ["--data.source.per_class", "20", "--data.image_size", "32", "--data.num_workers", "0"]
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(REPO / "configs/quickstart.yaml"), *args, "--trainer.max_epochs", "2"])
    run = tmp_path / "runs" / "quickstart" / "version_0"
    assert exc.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert errors == [f"bloodcls fit: error: disk full while writing {Path('runs/quickstart/version_0/metrics.csv')}"]
    assert (run / "checkpoints" / "best.ckpt").stat().st_size > 0
    assert not [p for p in run.iterdir() if ".tmp" in p.name]
