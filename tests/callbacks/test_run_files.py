"""RunFiles: split.csv and data_report.json written into the run directory when fit starts, on rank 0 only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import pytest
from lightning.pytorch.demos.boring_classes import BoringDataModule, BoringModel

from bloodcls.callbacks.run_files import RunFiles, split_summary


class RecordedData(BoringDataModule):
    """A datamodule with the EvaluationData interface that records where it was asked to write."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[Path] = []

    def sample_ids(self) -> list[str]:
        return []

    def predict_paths(self) -> list[str]:
        return []

    def predict_skipped(self) -> list[tuple[str, str]]:
        return []

    def data_report(self) -> dict[str, Any]:
        return {"subset_counts": {"train": [3, 4], "unlabeled": [5, 5], "val": [1, 2], "excluded": [9, 9]}}

    def write_split(self, directory: str | Path) -> Path:
        self.written.append(Path(directory))
        path = Path(directory) / "split.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("path,hash,label,subset\n")
        (Path(directory) / "data_report.json").write_text(json.dumps(self.data_report()))
        return path


def test_split_summary_counts_images_per_subset_without_excluded_rows() -> None:
    assert split_summary({"train": [3, 4], "val": [1, 2], "excluded": [9]}) == "train 7, val 3"


def test_run_files_are_written_into_the_log_dir_before_training(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = RecordedData()
    seen_at_train_start: list[bool] = []

    class Probe(L.Callback):  # what the W&B callback relies on: the files exist when training starts
        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            seen_at_train_start.append((Path(trainer.log_dir or "") / "split.csv").is_file())

    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        callbacks=[Probe(), RunFiles()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with caplog.at_level("INFO"):
        trainer.fit(BoringModel(), datamodule=data)
    run_dir = Path(trainer.log_dir or "")
    assert data.written == [run_dir] and run_dir != tmp_path  # the logger's version dir, written once
    assert (run_dir / "data_report.json").is_file() and seen_at_train_start == [True]
    assert f"split written to {run_dir / 'split.csv'}: train 7, unlabeled 10, val 3" in caplog.text


def test_no_evaluation_data_no_files(tmp_path: Path) -> None:
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        callbacks=[RunFiles()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(BoringModel(), datamodule=BoringDataModule())
    assert not list(tmp_path.rglob("split.csv"))
